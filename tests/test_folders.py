"""An image folder wherever a store is asked for: prepared once into the cache, reused
while unchanged, prepared again when a file changes; evaluate and features read all of it."""

import json
import os

import numpy as np

from alexnet.data.folders import store_for
from alexnet.data.store import Store
from conftest import EVAL_FAST, TRAIN_TINY, run_here

FAST_TRAIN = [*TRAIN_TINY, "--max-steps", "1"]


def test_train_on_a_folder_prepares_it_once_and_again_when_it_changes(image_folder, tmp_path):
    r = run_here("train", "--data", image_folder, "--out", tmp_path / "a", *FAST_TRAIN)
    assert r.returncode == 0, r.stderr
    assert f"--data {image_folder}: preparing it once into" in r.stderr
    cached = json.loads((tmp_path / "a" / "config.json").read_text())["data"]
    assert Store(cached).num_classes == 3
    r = run_here("train", "--data", image_folder, "--out", tmp_path / "b", *FAST_TRAIN)
    assert r.returncode == 0 and "the store prepared from it earlier, unchanged" in r.stderr
    # a file changes (its modification time): prepared again, into the same place
    some = next(image_folder.rglob("*.jpg"))
    os.utime(some, ns=(some.stat().st_atime_ns, some.stat().st_mtime_ns + 10**9))
    said = []
    assert store_for(image_folder, say=said.append) == cached
    assert "preparing it again, as its files changed" in said[0]


def test_evaluate_and_features_read_every_image_of_a_folder(image_folder, tmp_path):
    run = tmp_path / "run"
    assert run_here("train", "--data", image_folder, "--out", run, *FAST_TRAIN).returncode == 0
    ckpt = run / "checkpoints" / "last.pt"
    images = len([p for p in image_folder.rglob("*") if p.is_file()])
    r = run_here("evaluate", ckpt, "--data", image_folder, *EVAL_FAST, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["images"] == images == 24  # train and val alike
    out = tmp_path / "f.npz"
    r = run_here("features", ckpt, "--data", image_folder, "--layers", "fc7", "--out", out)
    assert r.returncode == 0, r.stderr
    with np.load(out) as f:
        assert f["fc7"].shape == (images, 4096)
    query = next(image_folder.rglob("*.png"))
    r = _neighbors(ckpt, image_folder, query, tmp_path / "n.png")
    assert r.returncode == 0, r.stderr


def _neighbors(ckpt, gallery, query, out, *extra):
    """`alexnet neighbors` over a gallery folder, on the CPU, answering in JSON."""
    args = ("--gallery", gallery, "--query", query, *extra, "--out", out)
    return run_here("neighbors", ckpt, *args, "--device", "cpu", "--json")


def test_a_path_that_is_neither_store_nor_folder_is_one_line(tmp_path):
    r = run_here("train", "--data", tmp_path / "nothing", "--out", tmp_path / "r", *FAST_TRAIN)
    assert r.returncode == 2 and "neither a prepared store nor a folder of images" in r.stderr
    assert not (tmp_path / "r").exists()


def test_a_flat_folder_where_no_labels_are_needed(image_folder, tmp_path):
    """features --data and neighbors --gallery take a folder of images without class
    sub-folders (one class, named after it); a net of other classes searches it."""
    flat = tmp_path / "stimuli"
    flat.mkdir()
    for i, p in enumerate(sorted(image_folder.rglob("*.jpg"))[:5]):
        (flat / f"s{i}.jpg").write_bytes(p.read_bytes())
    run = tmp_path / "run"
    assert run_here("train", "--data", image_folder, "--out", run, *FAST_TRAIN).returncode == 0
    ckpt = run / "checkpoints" / "last.pt"
    out = tmp_path / "f.npz"
    r = run_here("features", ckpt, "--data", flat, "--layers", "fc7", "--out", out)
    assert r.returncode == 0, r.stderr
    with np.load(out) as f:
        assert f["fc7"].shape == (5, 4096)
    query = flat / "s0.jpg"
    r = _neighbors(ckpt, flat, query, tmp_path / "n.png", "--k", "3")
    assert r.returncode == 0, r.stderr
    (found,) = json.loads(r.stdout)["queries"]
    assert [n["name"] for n in found["neighbors"]] == ["stimuli"] * 3
    assert found["neighbors"][0]["key"].endswith("s0.jpg")  # the query itself is in it
    # training needs classes: a flat folder is refused there, in one line
    r = run_here("train", "--data", flat, "--out", tmp_path / "r2", *FAST_TRAIN)
    assert r.returncode == 2 and "no class sub-folders with images" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
