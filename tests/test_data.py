import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.data.augment import (
    BatchTransform,
    CropParams,
    crop_flip,
    draw_train_params,
    lighting_shift,
    ten_crop_params,
)
from alexnet.data.images import BadImage, load_for_store
from alexnet.data.loader import EpochSampler, TrainFeed
from alexnet.data.prepare import PrepareConfig, prepare
from alexnet.data.store import Store
from alexnet.runtime.errors import UsageError
from conftest import run_cli, run_here, write_image


def _prepare(src, out, **kw):
    return prepare(PrepareConfig(src=str(src), out=str(out), workers=2, progress=False, **kw))


# ------------------------------------------------------------------ conversions
def test_every_mode_becomes_rgb(tmp_path):
    cases = {
        "grey.jpg": dict(mode="L"),
        "cmyk.jpg": dict(mode="CMYK", fmt="JPEG"),
        "palette.png": dict(mode="P"),
        "alpha.png": dict(mode="RGBA"),
        "la.png": dict(mode="LA"),
        "png_named.JPEG": dict(fmt="PNG"),
        "bitmap.BMP": dict(fmt="BMP"),
        "web.webp": dict(fmt="WEBP"),
    }
    for name, kw in cases.items():
        out = load_for_store(write_image(tmp_path / name, size=(300, 280), **kw))
        assert out.shape == (256, 256, 3) and out.dtype == np.uint8, name
    grey = load_for_store(tmp_path / "grey.jpg")
    assert np.abs(grey[..., 0].astype(int) - grey[..., 2]).max() <= 1


def test_16bit_png(tmp_path):
    arr = np.full((40, 50), 40000, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    out = load_for_store(tmp_path / "deep.png")
    assert out.shape == (256, 256, 3)
    assert abs(int(out.mean()) - 40000 * 255 // 65535) <= 1


def test_exif_orientation_respected(tmp_path):
    arr = np.zeros((200, 300, 3), dtype=np.uint8)
    arr[:, :150] = (255, 0, 0)  # left half red
    arr[:, 150:] = (0, 0, 255)  # right half blue
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": left becomes top
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_for_store(tmp_path / "rot.jpg").astype(int)
    assert out[10, 128, 0] > 200 and out[10, 128, 2] < 60  # top red
    assert out[245, 128, 2] > 200 and out[245, 128, 0] < 60  # bottom blue


def test_resize_shorter_side_then_center(tmp_path):
    arr = np.zeros((100, 400, 3), dtype=np.uint8)
    arr[:, 150:250] = 255  # a white band in the middle third
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = load_for_store(tmp_path / "wide.png")
    # 100x400 -> 256x1024; the centre 256 columns are 384..640, the band is 384..640
    assert out[:, 5:-5].min() > 200


@pytest.mark.parametrize(
    "maker,reason",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, I am not a picture"), "not an image"),
        (lambda p: p.write_bytes(_jpeg_bytes()[: len(_jpeg_bytes()) // 2]), "truncated"),
        (lambda p: Image.new("RGB", (2, 300)).save(p, format="PNG"), "absurd dimensions"),
        (lambda p: Image.new("1", (9600, 9600)).save(p, format="PNG"), "decompression bomb"),
        (lambda p: p.symlink_to(p.parent / "nowhere.jpg"), "unreadable"),
    ],
)
def test_bad_files_raise_bad_image(tmp_path, maker, reason):
    path = tmp_path / "bad.jpg"
    maker(path)
    with pytest.raises(BadImage, match=reason):
        load_for_store(path)


def _jpeg_bytes():
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(
        buf, format="JPEG"
    )
    return buf.getvalue()


# ------------------------------------------------------------------ prepare
def _add_broken_files(root: Path) -> dict[str, str]:
    cls = root / "apple"
    (cls / "empty.jpg").write_bytes(b"")
    (cls / "text.jpg").write_text("not an image")
    (cls / "trunc.jpg").write_bytes(_jpeg_bytes()[:700])
    Image.new("RGB", (3, 500)).save(cls / "thin.png")
    Image.new("1", (9600, 9600)).save(cls / "bomb.png")
    (cls / "link.jpg").symlink_to(cls / "missing.jpg")
    return {
        "empty.jpg": "empty",
        "text.jpg": "not an image",
        "trunc.jpg": "truncated",
        "thin.png": "absurd",
        "bomb.png": "bomb",
        "link.jpg": "unreadable",
    }


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
def test_prepare_round_trip_with_broken_files(image_folder, tmp_path, fmt):
    broken = _add_broken_files(image_folder)
    summary = _prepare(image_folder, tmp_path / "store", format=fmt, val_fraction=0.25)
    # the split is drawn before decoding (stable across resumes), so the broken files
    # take places in it: only the total and the presence of every class are fixed
    assert summary["written"]["train"] + summary["written"]["val"] == 24
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == set(broken)
    for name, word in broken.items():
        assert word in reasons[name], (name, reasons[name])
    store = Store(tmp_path / "store")
    assert store.format == fmt
    assert [c["id"] for c in store.classes] == ["apple", "leaf", "sky"]
    assert json.loads((tmp_path / "store" / "skipped.json").read_text()) == summary["skipped"]
    assert not (tmp_path / "store.partial").exists()
    val = store.split("val")
    assert set(val.labels.tolist()) == {0, 1, 2}  # stratified
    train = store.split("train")
    for i in range(len(train)):
        img = train.image(i)
        assert img.shape == (256, 256, 3)
        # each class is a colour: the dominant channel matches the label
        assert int(np.argmax(img.reshape(-1, 3).mean(0))) == [0, 1, 2][train.labels[i]]
    keys = train.keys + val.keys
    assert len(set(keys)) == 24


def test_prepare_deterministic_split_and_bytes(image_folder, tmp_path):
    _prepare(image_folder, tmp_path / "a", format="jpeg")
    _prepare(image_folder, tmp_path / "b", format="jpeg")
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_statistics_match_numpy(image_folder, tmp_path):
    _prepare(image_folder, tmp_path / "store", format="raw", shard_size=5)
    store = Store(tmp_path / "store")
    train = store.split("train")
    images = np.stack([train.image(i) for i in range(len(train))]).astype(np.float64)
    assert np.allclose(store.stats.mean, images.mean(axis=0), atol=1e-3)
    pixels = images.reshape(-1, 3) / 255.0
    cov = np.cov(pixels, rowvar=False, bias=True)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    assert np.allclose(store.stats.eigval, vals[order], rtol=1e-4, atol=1e-7)
    for k in range(3):  # eigenvectors up to sign
        assert abs(abs(float(store.stats.eigvec[:, k] @ vecs[:, order[k]])) - 1) < 1e-4


def test_prepare_resumes_after_sigkill(image_folder, tmp_path):
    for i in range(20):  # enough work that the kill lands mid-way
        write_image(image_folder / "sky" / f"extra{i}.jpg", size=(900, 700), color=(30, 90, 240))
    reference = tmp_path / "ref"
    r = run_cli("prepare", image_folder, reference, "--shard-size", "3", "--workers", "1")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "store"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alexnet",
            "prepare",
            str(image_folder),
            str(out),
            "--shard-size",
            "3",
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    marker = tmp_path / "store.partial" / "train" / "00002.json"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "prepare finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "meta.json").exists()  # never a half-written store
    done_before = len(list((tmp_path / "store.partial" / "train").glob("*.json")))
    assert done_before >= 3
    r = run_cli("prepare", image_folder, out, "--shard-size", "3", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert _tree_bytes(out) == _tree_bytes(reference)


def test_prepare_bad_arguments(tmp_path):
    r = run_here("prepare", tmp_path / "missing", tmp_path / "out")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_here("prepare", tmp_path / "empty", tmp_path / "out")
    assert r.returncode == 2 and "empty" in r.stderr
    (tmp_path / "src" / "a").mkdir(parents=True)
    write_image(tmp_path / "src" / "a" / "x.jpg")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        r = run_here("prepare", tmp_path / "src", locked / "out")
        assert r.returncode == 2 and "not writable" in r.stderr
    r = run_here("prepare", tmp_path / "src", "/proc/alexnet-store")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_prepare_json_summary_and_existing_store(image_folder, tmp_path):
    r = run_here("prepare", image_folder, tmp_path / "s", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["written"]["train"] + summary["written"]["val"] == 24
    assert summary["skipped"] == []
    r = run_here("prepare", image_folder, tmp_path / "s")
    assert r.returncode == 2 and "--overwrite" in r.stderr


def test_ilsvrc_layout_with_flat_val(tmp_path):
    root = tmp_path / "ilsvrc"
    wnids = ["n01440764", "n01443537"]
    for k, w in enumerate(wnids):
        for i in range(3):
            write_image(root / "train" / w / f"{w}_{i}.JPEG", color=(50 + 100 * k, 80, 80))
    lines = ["ImageId,PredictionString"]
    for i in range(4):
        write_image(root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
        lines.append(f"ILSVRC2012_val_{i:08d},{wnids[i % 2]} 1 2 3 4")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "synsets.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n")
    summary = _prepare(root, tmp_path / "store", class_names=str(tmp_path / "synsets.txt"))
    assert summary["written"] == {"train": 6, "val": 4}
    store = Store(tmp_path / "store")
    assert [(c["id"], c["name"]) for c in store.classes] == [
        ("n01440764", "tench"),
        ("n01443537", "goldfish"),
    ]
    assert store.split("val").labels.tolist() == [0, 1, 0, 1]


def test_torchvision_mnist_files(tmp_path):
    from torchvision.datasets import MNIST

    raw = tmp_path / "mn" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 4)):
        images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 0x0803)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 0x0801)
    assert len(MNIST(str(tmp_path / "mn"), train=True, download=False)) == 12
    summary = _prepare(tmp_path / "mn", tmp_path / "store")
    assert summary["written"] == {"train": 12, "val": 4}
    store = Store(tmp_path / "store")
    assert store.num_classes == 10 and store.classes[3]["name"].startswith("3")


def _write_idx(path: Path, arr: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.tobytes())


# ------------------------------------------------------------------ augmentation
def _coded_images(n=2, size=256):
    """Pixel (y, x) of image b holds (y, x, b) so that any crop can be read back."""
    y, x = np.mgrid[0:size, 0:size]
    imgs = np.stack([np.stack([y, x, np.full_like(y, b)], -1) for b in range(n)])
    return torch.from_numpy(imgs.astype(np.uint8))


def test_crop_and_flip_positions_exact():
    imgs = _coded_images()
    p = CropParams(torch.tensor([3, 32]), torch.tensor([17, 0]), torch.tensor([False, True]))
    out = crop_flip(imgs, p).numpy()
    assert out.shape == (2, 224, 224, 3)
    ref0 = imgs[0, 3:227, 17:241].numpy()
    ref1 = imgs[1, 32:256, 0:224].numpy()[:, ::-1]
    assert np.array_equal(out[0], ref0) and np.array_equal(out[1], ref1)


def test_gather_path_equals_slicing_path():
    from alexnet.data.augment import crop_flip_gather

    imgs = _coded_images(n=3)
    for p in (draw_train_params(3, torch.Generator().manual_seed(4)), ten_crop_params(3)):
        assert torch.equal(crop_flip(imgs, p), crop_flip_gather(imgs, p))


def test_ten_crop_geometry():
    imgs = _coded_images(n=2)
    out = crop_flip(imgs, ten_crop_params(2)).numpy()
    assert out.shape == (20, 224, 224, 3)
    corners = [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]
    for b in range(2):
        for k, (t, l) in enumerate(corners):
            patch = imgs[b, t : t + 224, l : l + 224].numpy()
            assert np.array_equal(out[10 * b + k], patch)
            assert np.array_equal(out[10 * b + 5 + k], patch[:, ::-1])


def test_draws_cover_the_paper_ranges():
    p = draw_train_params(4000, torch.Generator().manual_seed(0))
    assert p.top.min() == 0 and p.top.max() == 32 and p.left.max() == 32
    assert 0.45 < p.flip.float().mean() < 0.55
    assert abs(p.alpha.std().item() - 0.1) < 0.01


def test_batch_transform_mean_and_lighting():
    imgs = _coded_images(n=1)
    mean = torch.rand(256, 256, 3) * 255
    eigval = torch.tensor([0.2, 0.02, 0.005])
    eigvec = torch.linalg.qr(torch.randn(3, 3))[0]
    alpha = torch.tensor([[0.1, -0.2, 0.05]])
    p = CropParams(torch.tensor([5]), torch.tensor([9]), torch.tensor([True]), alpha)
    out = BatchTransform(mean, eigval, eigvec)(imgs, p)
    assert out.shape == (1, 3, 224, 224) and out.is_contiguous(memory_format=torch.channels_last)
    shift = (eigvec @ (alpha[0] * eigval)) * 255
    expected = (imgs[0].float() - mean)[5:229, 9:233].flip(1) + shift
    assert torch.allclose(out[0].permute(1, 2, 0), expected, atol=1e-4)
    assert torch.allclose(lighting_shift(alpha, eigval, eigvec)[0], shift, atol=1e-5)


def test_seeded_pipeline_deterministic_and_resumable(image_folder, tmp_path):
    _prepare(image_folder, tmp_path / "store", val_fraction=0.25)
    store = Store(tmp_path / "store")
    split = store.split("train")
    norm = BatchTransform.from_stats(store.stats)

    def run(seed, epoch, start=0, world=1, rank=0, workers=0):
        s = EpochSampler(len(split), 4 // world, seed=seed, num_replicas=world, rank=rank)
        return [(x, y) for x, y, _ in TrainFeed(split, norm, s, workers).epoch(epoch, start)]

    a, b = run(0, 0), run(0, 0, workers=2)
    assert len(a) == 18 // 4
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][0], run(1, 0)[0][0])
    assert not torch.equal(a[0][0], run(0, 1)[0][0])
    resumed = run(0, 0, start=2)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a[2:], resumed))
    # two ranks of a two-process run together see exactly the one-process batch
    r0, r1 = run(0, 0, world=2, rank=0), run(0, 0, world=2, rank=1)
    for (x, y), (x0, y0), (x1, y1) in zip(a, r0, r1):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_device_decoding_equals_worker_decoding(image_folder, tmp_path):
    """A JPEG store decoded batch-wise in the main process (the GPU path's structure; on
    a CPU the same libjpeg-turbo decoder) feeds exactly what the workers' decoding feeds."""
    _prepare(image_folder, tmp_path / "store", format="jpeg", val_fraction=0.25)
    store = Store(tmp_path / "store")
    split, norm = store.split("train"), BatchTransform.from_stats(store.stats)

    def run(decode, workers):
        feed = TrainFeed(split, norm, EpochSampler(len(split), 4, seed=5), workers, decode=decode)
        return feed.decode, [(x, y) for x, y, _ in feed.epoch(1)]

    where, ref = run("auto", 1)
    assert where == "workers"  # auto on a CPU
    for decode, workers in (("device", 0), ("device", 1)):
        where, got = run(decode, workers)
        assert where == "device" and len(got) == len(ref) == 18 // 4
        assert all(
            torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(got, ref)
        )
    _prepare(image_folder, tmp_path / "raw", format="raw", val_fraction=0.25)
    raw = Store(tmp_path / "raw").split("train")
    feed = TrainFeed(raw, norm, EpochSampler(len(raw), 4), 0, decode="device")
    assert feed.decode == "workers"  # nothing to decode
    with pytest.raises(ValueError, match="decode must be one of"):
        TrainFeed(split, norm, EpochSampler(18, 4), 0, decode="gpu")


def test_store_errors(tmp_path):
    with pytest.raises(UsageError, match="not a prepared store"):
        Store(tmp_path)
