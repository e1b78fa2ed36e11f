"""`alexnet microscope`: a net whose conv1 unit 5 is planted to answer red, its site
read back and rendered in a browser, a stopped run resumed, bad requests refused."""

import json
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.microscope.visualize import Recipe, unit_seed, visualize
from conftest import chromium, red_detector, red_square_pictures, run_here

SMALL = ["--steps", "24", "--size", "48", "--top", "4", "--device", "cpu", "--vis-batch", "2"]


@pytest.fixture(scope="module")
def detector(module_dir):
    (module_dir / "pics").mkdir()
    squares = red_square_pictures(module_dir / "pics")
    return red_detector(module_dir / "red.pt"), module_dir / "pics", squares


@pytest.fixture(scope="module")
def scope(detector, module_dir):
    """The site of units 4 and 5 of conv1 and conv5, and its manifest."""
    ckpt, pics, _ = detector
    out = module_dir / "scope"
    args = ["--layers", "conv1,conv5", "--units", "4-5", *SMALL]
    r = run_here("microscope", ckpt, "--data", pics, "--out", out, *args, "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout), args


def _rgb_means(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).mean(axis=0)


def test_the_red_unit_shows_the_red_squares_and_draws_red(detector, scope):
    _, _, squares = detector
    out, manifest, _ = scope
    units = {(u["layer"], u["unit"]): u for u in manifest["units"]}
    assert sorted(units) == [("conv1", 4), ("conv1", 5), ("conv5", 4), ("conv5", 5)]
    red = units[("conv1", 5)]
    assert {t["image"] for t in red["top"]} <= set(squares) and len(red["top"]) == 4
    for t in red["top"]:
        patch = np.asarray(Image.open(out / t["patch"]).convert("RGB"))
        assert ((patch[..., 0] > 200) & (patch[..., 1] < 60)).any(), t  # red under its field
        assert t["activation"] > 0
    r, g, b = _rgb_means(out / red["visualization"])
    assert r > g + 5 and r > b + 5, (r, g, b)
    # a unit whose kernel is zero has no gradient: its image stays the grey it began as
    silent = _rgb_means(out / units[("conv1", 4)]["visualization"])
    assert np.abs(silent - 127.5).max() < 3
    for u in manifest["units"]:
        assert (out / u["page"]).is_file() and (out / u["visualization"]).is_file()
        assert all((out / t["patch"]).is_file() for t in u["top"])
    page = (out / red["page"]).read_text()
    assert "kernel.png" in page and "<svg" in page and "Top 4 of 12 images" in page


def test_a_units_image_is_its_own_whatever_its_batch():
    torch.manual_seed(0)
    import alexnet

    net = alexnet.create_model("paper", num_classes=3, init="kaiming")
    norm, recipe = {"mean": torch.zeros(3) + 120}, Recipe(size=40, steps=5)
    seeds = [unit_seed(0, "conv2", u) for u in (3, 9)]
    both = visualize(net, net.features.conv2, [3, 9], seeds, norm, recipe)
    alone = visualize(net, net.features.conv2, [9], seeds[1:], norm, recipe)
    again = visualize(net, net.features.conv2, [3, 9], seeds, norm, recipe)
    assert torch.equal(both, again)  # a rerun draws the same images
    assert torch.allclose(both[1], alone[0], atol=1e-4)  # the batch does not change it
    assert not torch.allclose(both[0], both[1], atol=1e-2)


def test_the_site_renders_with_every_image_loaded(scope, tmp_path):
    browser = chromium()
    out, manifest, _ = scope
    pages = ["index.html", "layers/conv1.html", "layers/conv5.html"]
    pages += [u["page"] for u in manifest["units"]]
    for page in pages:
        proc = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=5000",
                "--dump-dom",
                (out / page).as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        body = proc.stdout[proc.stdout.find("<body") :].split(">", 1)[0]
        assert 'data-broken="0"' in body, (page, body, proc.stderr[-1500:])
        assert 'data-images="0"' not in body, page
        errors = [
            line
            for line in proc.stderr.splitlines()
            if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)
        ]
        assert errors == [], (page, errors)


def test_a_stopped_run_resumes_and_draws_the_same(detector, scope, tmp_path):
    ckpt, pics, _ = detector
    out, manifest, args = scope
    copy = tmp_path / "scope"
    subprocess.run(["cp", "-a", str(out), str(copy)], check=True)
    # what a run stopped during conv5's visualisations leaves: some images, not all
    before = (copy / "img/conv5/5/vis.png").read_bytes()
    (copy / "img/conv5/5/vis.png").unlink()
    (copy / "img/conv1/5/top-2.png").unlink()
    r = run_here("microscope", ckpt, "--data", pics, "--out", copy, *args)
    assert r.returncode == 0, r.stderr
    assert "scan: as" in r.stderr  # the scan was not done again
    drawn = [line for line in r.stderr.splitlines() if "visualised" in line]
    assert drawn == [drawn[0]] and drawn[0].startswith("conv5: units 5-5 visualised")
    assert (copy / "img/conv5/5/vis.png").read_bytes() == before
    assert (copy / "img/conv1/5/top-2.png").is_file()
    assert "4 units of 2 layer(s)" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "conv9"], "--layers: no layer 'conv9' in the paper net"),
        (["--layers", "fc8", "--units", "0-5"], "--units 0-5: the layer has units 0-1 (fc8 has 2)"),
        (["--units", "7-3"], "--units 7-3: the layer has units 0-95"),
        (["--top", "0"], "--top must be at least 1"),
        (["--size", "8"], "--size must be at least 32"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(detector, tmp_path, args, message):
    ckpt, pics, _ = detector
    out = tmp_path / "scope"
    r = run_here("microscope", ckpt, "--data", pics, "--out", out, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_bad_data_and_folders_are_one_line(detector, scope, tmp_path):
    ckpt, pics, _ = detector
    out, _, _ = scope
    cases = [
        (["--data", tmp_path / "none"], tmp_path / "a", "neither a prepared store nor a folder"),
        (["--data", tmp_path], tmp_path / "b", "no image files below it"),
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    cases.append((["--data", pics], tmp_path / "full", "the folder holds other files"))
    other = red_detector(tmp_path / "other.pt")
    for extra, where, message in cases:
        r = run_here("microscope", ckpt, "--out", where, *extra, *SMALL)
        assert r.returncode == 2 and message in r.stderr, r.stderr
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    r = run_here("microscope", other, "--data", pics, "--out", out, *SMALL)
    assert r.returncode == 2 and "holds the microscope of" in r.stderr, r.stderr
