"""What alexnet promises: it never destroys what it did not create, and every fault the
user can fix is one line on stderr with exit code 2 (a diverged run: 3).

Driven through the command line (alexnet.cli.main, in this process) wherever the exit
code is the point."""

import errno
import json
import os
import shutil

import numpy as np
import pytest
import torch

from alexnet.cli import main
from alexnet.data.store import Store
from alexnet.runtime.errors import UsageError
from alexnet.train.config import TrainConfig
from alexnet.train.loop import train
from alexnet.weights.checkpoint import CHECKPOINT_FORMAT, is_finite
from conftest import EVAL_FAST, TRAIN_TINY, lock_held_by_another_process, prepare_store, write_image

FAST = TRAIN_TINY


def cli(capsys, *args) -> tuple[int, str]:
    """Run `alexnet ARGS` here; returns (exit code, stderr), checking that a failure says
    one line (after the lines a run that started says of its execution plan and recipe)."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    if code != 0:
        started = ("plan: ", "recipe: ")
        err = "".join(ln for ln in err.splitlines(True) if not ln.startswith(started))
        assert err.strip() and err.strip().count("\n") == 0, err
        assert "Traceback" not in err and "internal error" not in err, err
    return code, err


def _folder(root, classes=("apple", "leaf", "sky"), n=8):
    colors = [(220, 40, 40), (40, 200, 60), (40, 80, 230), (200, 200, 40)]
    for ci, name in enumerate(classes):
        for i in range(n):
            write_image(
                root / name / f"{name}{i}.jpg",
                size=(60 + 7 * i, 50),
                color=colors[ci % len(colors)],
            )
    return root


@pytest.fixture(scope="module")
def world(module_dir):
    """A store, another with the same number of classes but other ones, and a run
    stopped after one step (its checkpoint mid-epoch)."""
    root = module_dir / "world"
    prepare_store(_folder(root / "src"), root / "store")
    prepare_store(_folder(root / "other-src", ("cat", "dog", "fox")), root / "other")
    _one_step_run(root / "store", root / "run")
    return root


def _one_step_run(store, out) -> None:
    """A run of the demo recipe stopped after one step (its checkpoint mid-epoch)."""
    cfg = TrainConfig(
        data=str(store),
        out=str(out),
        recipe="demo",
        batch_size=4,
        max_steps=1,
        workers=0,
        device="cpu",
        report=False,
        progress=False,
        eval_batch_size=8,
    )
    train(cfg)


@pytest.fixture
def query(tmp_path):
    return write_image(tmp_path / "q.jpg", size=(90, 80), color=(40, 200, 60))


# ------------------------------------------------------------ never destroys
def _bytes(paths):
    return {p: p.read_bytes() for p in paths}


def test_an_output_never_lands_on_an_input_or_in_a_store_or_run(world, tmp_path, capsys):
    """Each output named as a file the command reads, or inside a store or a run
    directory, is refused in one line, and every input keeps its bytes."""
    run, store = world / "run", world / "store"
    last = run / "checkpoints" / "last.pt"
    victim = write_image(tmp_path / "victim" / "q.jpg", size=(90, 80))
    w = tmp_path / "w.safetensors"
    assert cli(capsys, "export", last, "--out", w)[0] == 0
    shard = next((store / "train").iterdir())
    kept = _bytes([victim, w, last, shard, store / "meta.json", run / "metrics.jsonl"])
    cases = [
        (["predict", last, victim, "--figure", victim], "which this command reads"),
        (["predict", w, victim, "--figure", w], "which this command reads"),
        (["kernels", w, "--out", w], "which this command reads"),
        (["export", last, "--out", last, "--format", "torch-export"], "which this command"),
        (["export", w, "--out", w], "which this command reads"),
        (["neighbors", last, "--gallery", store, "--query", victim, "--out", victim], "reads"),
        (
            ["neighbors", last, "--gallery", store, "--query", victim, "--out", shard],
            "inside the store",
        ),
        (["kernels", w, "--out", store / "meta.json"], "inside the store"),
        (["report", run, "--out", run / "checkpoints" / "best.pt"], "inside the run directory"),
        (["report", run, "--out", run / "metrics.jsonl"], "inside the run directory"),
        (["features", w, victim, "--layers", "fc8", "--out", store / "f.npz"], "inside the store"),
    ]
    for args, message in cases:
        code, err = cli(capsys, *args)
        assert code == 2 and message in err, (args, err)
    assert _bytes(kept) == kept
    # an explicitly named file elsewhere is replaced, as a Unix tool replaces it
    other = tmp_path / "k.png"
    other.write_bytes(b"old")
    assert cli(capsys, "kernels", w, "--out", other)[0] == 0 and other.read_bytes() != b"old"


def test_results_folders_are_new_or_the_verbs_own(world, tmp_path, capsys):
    """train --out and ablate --out refuse a folder holding the user's files; prepare
    --overwrite refuses a store holding a file it did not write; each file kept."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "environment.json").write_text("my notes")
    (mine / "report.html").write_text("<p>mine</p>")
    (mine / "summary.json").write_text("{}")
    args = ["--data", world / "store", "--out", mine, "--device", "cpu", "--batch-size", "4"]
    code, err = cli(capsys, "train", *args)
    assert code == 2 and "holds files of its own" in err
    code, err = cli(capsys, "ablate", "pca", "--data", world / "store", "--out", mine)
    assert code == 2 and "ablate did not write" in err
    assert (mine / "environment.json").read_text() == "my notes"
    assert (mine / "report.html").read_text() == "<p>mine</p>"
    store = tmp_path / "store"
    shutil.copytree(world / "store", store)
    (store / "NOTES.txt").write_text("keep me")
    code, err = cli(capsys, "prepare", _folder(tmp_path / "src"), store, "--overwrite")
    assert code == 2 and "NOTES.txt" in err and "was not written by alexnet prepare" in err
    assert (store / "NOTES.txt").read_text() == "keep me" and (store / "meta.json").is_file()


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_prepare_never_writes_over_inside_or_around_its_source(tmp_path, capsys, where):
    src = _folder(tmp_path / "photos")
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    out = {"same": src, "inside": src / "store", "around": tmp_path}[where]
    code, err = cli(capsys, "prepare", src, out, "--overwrite")
    assert code == 2 and "overlaps the source" in err
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before


def test_overwrite_replaces_a_store_and_nothing_else(tmp_path, capsys):
    src = _folder(tmp_path / "src")
    mine = tmp_path / "mine"
    write_image(mine / "holiday.jpg")
    (mine / "notes.txt").write_text("keep me")
    code, err = cli(capsys, "prepare", src, mine, "--overwrite")
    assert code == 2 and "not a store" in err
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "holiday.jpg").is_file()
    # a folder beside OUT that prepare would use for its work: not ours, not touched
    (tmp_path / "s.partial").mkdir()
    (tmp_path / "s.partial" / "x.txt").write_text("mine")
    code, err = cli(capsys, "prepare", src, tmp_path / "s")
    assert code == 2 and "not made by alexnet prepare" in err
    assert (tmp_path / "s.partial" / "x.txt").read_text() == "mine"
    shutil.rmtree(tmp_path / "s.partial")
    assert cli(capsys, "prepare", src, tmp_path / "s")[0] == 0
    assert cli(capsys, "prepare", src, tmp_path / "s", "--overwrite")[0] == 0  # a store: fine
    assert Store(tmp_path / "s").num_classes == 3


def test_a_failed_prepare_leaves_nothing_behind(tmp_path, capsys):
    src = tmp_path / "broken"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for i in range(3):
            (src / c / f"x{i}.jpg").write_bytes(b"not a jpeg at all")
    code, err = cli(capsys, "prepare", src, tmp_path / "s")
    assert code == 2 and "no usable training images" in err
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()


def test_symlink_loop_counts_each_file_once_and_no_file_in_two_splits(tmp_path):
    src = _folder(tmp_path / "src", n=8)
    (src / "apple" / "loop").symlink_to(".")
    (src / "leaf" / "more-apples").symlink_to(src / "apple")
    summary = prepare_store(src, tmp_path / "s")
    assert sum(summary["written"].values()) == 24  # 3 classes x 8 files, each once
    store = Store(tmp_path / "s")
    keys = [store.split(n).keys for n in ("train", "val")]
    reals = [{os.path.realpath(src.parent / k) for k in ks} for ks in keys]
    assert not reals[0] & reals[1]
    assert len(reals[0]) + len(reals[1]) == 24


def test_train_refuses_a_directory_that_holds_a_run(world, capsys):
    before = (world / "run" / "config.json").read_bytes()
    code, err = cli(capsys, "train", "--data", world / "store", "--out", world / "run", *FAST)
    assert code == 2 and "--resume" in err and "already holds a run" in err
    assert (world / "run" / "config.json").read_bytes() == before


def test_two_runs_never_write_one_directory_at_once(world, capsys):
    lock = world / "run" / ".lock"
    with lock_held_by_another_process(lock) as pid:
        code, err = cli(capsys, "train", "--resume", world / "run", *FAST)
        assert code == 2 and f"in use by another alexnet train (pid {pid})" in err
    lock.unlink()


def test_no_checkpoint_ever_holds_non_finite_weights(world, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(world / "store"),
            "--out",
            str(run),
            "--lr",
            "3e38",
            "--recipe",
            "paper",
            "--checkpoint-every",
            "1",
            "--epochs",
            "1",
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    # the first step makes every weight infinite, and the checkpoint after it (every step)
    # is refused: the run stops there, and no file holds those weights
    assert code == 3 and "the weights became non-finite by global step 1" in err, err
    assert not (run / "checkpoints" / "last.pt").exists()
    assert not list((run / "checkpoints").glob("*.tmp"))


# ------------------------------------------------------------ damaged stores
def _damage(store, how):
    meta = json.loads((store / "meta.json").read_text())
    shard = store / "train" / "00000"
    if how == "stats":
        (store / "stats.npz").write_bytes((store / "stats.npz").read_bytes()[:200])
    elif how == "meta-key":
        del meta["classes"]
        (store / "meta.json").write_text(json.dumps(meta))
    elif how == "label":
        sm = json.loads(shard.with_suffix(".json").read_text())
        sm["labels"][0] = 7
        shard.with_suffix(".json").write_text(json.dumps(sm))
    elif how == "count":
        meta["splits"]["train"]["shards"][0]["count"] += 5
        meta["splits"]["train"]["count"] += 5
        (store / "meta.json").write_text(json.dumps(meta))
    elif how == "jpeg":
        data = shard.with_suffix(".jpg")
        data.write_bytes(np.random.default_rng(0).bytes(data.stat().st_size))
    elif how == "raw":
        npy = shard.with_suffix(".npy")
        npy.write_bytes(npy.read_bytes()[:5000])
    elif how == "shard-json":
        shard.with_suffix(".json").write_text("{garbage")
    elif how in ("class-int", "class-no-id", "version-string"):
        if how == "version-string":
            meta["version"] = str(meta["version"])
        else:
            meta["classes"][0] = 0 if how == "class-int" else {"index": 0, "name": "apple"}
        (store / "meta.json").write_text(json.dumps(meta))
    elif how == "eigval":
        with np.load(store / "stats.npz") as z:
            stats = dict(z)
        np.savez(store / "stats.npz", **{**stats, "eigval": np.ones(5, np.float32)})
    elif how == "empty-npy":
        np.save(shard.with_suffix(".npy"), np.zeros((0, 256, 256, 3), np.uint8))
    elif how == "zero-bytes-npy":
        shard.with_suffix(".npy").write_bytes(b"")
    elif how == "offsets":
        sm = json.loads(shard.with_suffix(".json").read_text())
        sm["offsets"][1], sm["offsets"][2] = sm["offsets"][2], sm["offsets"][1]
        shard.with_suffix(".json").write_text(json.dumps(sm))
    elif how == "stats-objects":
        with np.load(store / "stats.npz") as z:
            stats = dict(z)
        np.savez(store / "stats.npz", **{**stats, "mean": np.array([object()], dtype=object)})
    elif how in ("labels-null", "labels-float"):
        sm = json.loads(shard.with_suffix(".json").read_text())
        sm["labels"] = None if how == "labels-null" else [x + 0.5 for x in sm["labels"]]
        shard.with_suffix(".json").write_text(json.dumps(sm))


@pytest.mark.parametrize(
    "how",
    [
        "stats",
        "meta-key",
        "label",
        "count",
        "jpeg",
        "raw",
        "shard-json",
        "class-int",
        "class-no-id",
        "version-string",
        "eigval",
        "empty-npy",
        "labels-null",
        "labels-float",
        "zero-bytes-npy",
        "offsets",
        "stats-objects",
    ],
)
def test_a_damaged_store_is_named_with_its_file(world, tmp_path, capsys, how):
    store = tmp_path / "s"
    fmt = "jpeg" if how in ("jpeg", "offsets") else "raw"
    prepare_store(world / "src", store, format=fmt)
    _damage(store, how)
    code, err = cli(
        capsys, "train", "--data", store, "--out", tmp_path / "r", "--max-steps", "1", *FAST
    )
    assert code == 2 and f"damaged store {store}" in err and "alexnet prepare" in err


def test_a_store_without_validation_images_is_refused(world, tmp_path, capsys):
    store = tmp_path / "s"
    shutil.copytree(world / "store", store)
    meta = json.loads((store / "meta.json").read_text())
    meta["splits"]["val"] = {"count": 0, "shards": []}
    (store / "meta.json").write_text(json.dumps(meta))
    code, err = cli(capsys, "train", "--data", store, "--out", tmp_path / "r", *FAST)
    assert code == 2 and "no validation images" in err


# ------------------------------------------------------------ checkpoints
def _neighbors(ckpt, gallery, query, out) -> list:
    return ["neighbors", ckpt, "--gallery", gallery, "--query", query, "--out", out]


def _fake_checkpoint(path, **fields):
    obj = {
        "format": CHECKPOINT_FORMAT,
        "variant": "paper",
        "num_classes": 2,
        "classes": [{"index": 0, "id": "a", "name": "a"}, {"index": 1, "id": "b", "name": "b"}],
        "model": {"classifier.fc8.weight": torch.zeros(2, 4096)},
        "normalization": {"kind": "mean-image", "mean": torch.zeros(256, 256, 3)},
        **fields,
    }
    obj = {k: v for k, v in obj.items() if v is not None}
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"variant": None}, "no 'variant' field"),
        ({"num_classes": 10**9}, "is not a class count"),
        ({"classes": "abc"}, "class entries"),
        ({"model": {"classifier.fc8.weight": torch.zeros(3, 4096)}}, "does not have 2 classes"),
        ({"normalization": {"kind": "mean-image", "mean": torch.zeros(5, 7)}}, "not a square RGB"),
        (
            {"normalization": {"kind": "mean-image", "mean": torch.zeros(3), "scale": "abc"}},
            "the input scale is 'abc', not a number",
        ),
        (
            {"normalization": {"kind": "channel", "mean": torch.zeros(3), "std": "abc"}},
            "the normalisation std is not 3 values",
        ),
        (
            {"normalization": {"kind": "mean-image", "mean": torch.zeros(3, dtype=torch.int64)}},
            "holds torch.int64",
        ),
        ({"model_options": {"dropout": "abc"}}, "dropout must be a number, not 'abc'"),
    ],
)
def test_a_malformed_checkpoint_is_refused_before_anything_is_built(
    tmp_path, capsys, query, fields, message
):
    ckpt = _fake_checkpoint(tmp_path / "c.pt", **fields)
    code, err = cli(capsys, "predict", ckpt, query)
    assert code == 2 and "damaged checkpoint" in err and message in err


def test_resume_with_a_moved_store_and_with_another_one(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    moved = tmp_path / "moved-store"
    shutil.copytree(world / "store", moved)
    stray = run / "checkpoints" / ".last.pt.abc.tmp"
    stray.write_bytes(b"half a checkpoint")
    code, err = cli(capsys, "train", "--resume", run, "--data", world / "other", *FAST)
    assert code == 2 and "does not hold the classes" in err
    # the same classes at a new path: taken (--max-steps 1 is already spent: no step runs)
    code, _ = cli(capsys, "train", "--resume", run, "--data", moved, "--max-steps", "1", *FAST)
    assert code == 0
    assert json.loads((run / "config.json").read_text())["data"] == str(moved)
    assert not stray.exists()  # a resumed run cleans what a killed write left


def test_evaluate_compares_class_lists_not_counts(world, capsys):
    ckpt = world / "run" / "checkpoints" / "last.pt"
    code, err = cli(
        capsys,
        "evaluate",
        ckpt,
        "--data",
        world / "other",
        *EVAL_FAST,
    )
    assert code == 2 and "other classes" in err


# ------------------------------------------------------------ devices and outputs
@pytest.mark.parametrize("device", ["bogus", "cuda:7"])
def test_one_device_check_for_every_verb(world, tmp_path, capsys, query, device):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    ckpt = world / "run" / "checkpoints" / "last.pt"
    for args in (
        ["predict", ckpt, query],
        ["report", world / "run", "--out", tmp_path / "r.html"],
        _neighbors(ckpt, world / "store", query, tmp_path / "n.png"),
    ):
        code, err = cli(capsys, *args, "--device", device)
        assert code == 2 and "--device" in err, args


def test_an_output_path_that_is_a_directory(world, tmp_path, capsys, query):
    ckpt = world / "run" / "checkpoints" / "last.pt"
    for args in (
        ["predict", ckpt, query, "--figure", tmp_path],
        ["neighbors", ckpt, "--gallery", world / "store", "--query", query, "--out", tmp_path],
        ["kernels", ckpt, "--out", tmp_path],
        ["export", ckpt, "--onnx", tmp_path],
    ):
        code, err = cli(capsys, *args)
        assert code == 2 and "is a directory" in err, args


def test_a_full_disk_is_named(world, tmp_path, capsys, monkeypatch):
    import alexnet.runtime.files as files

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    code, err = cli(capsys, "prepare", world / "src", tmp_path / "s")
    assert code == 2 and "no space left on the device" in err
    monkeypatch.undo()
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------ neighbors
def test_neighbors_checks_queries_gallery_and_bounds_first(world, tmp_path, capsys, query):
    ckpt = world / "run" / "checkpoints" / "last.pt"
    base = ["neighbors", ckpt, "--gallery", world / "store", "--out", tmp_path / "n.png"]
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    for q, message in ((bad, "not an image"), (tmp_path / "none.jpg", "none.jpg")):
        code, err = cli(capsys, *base, "--query", q)
        assert code == 2 and message in err and str(q) in err
    for flag, value in (("--k", "100000"), ("--codes", "100000")):
        code, err = cli(capsys, *base, "--query", query, flag, value)
        assert code == 2 and flag in err
    assert not list((tmp_path / "cache").rglob("*.npy"))  # nothing computed on the way
    code, err = cli(
        capsys,
        "neighbors",
        ckpt,
        "--gallery",
        world / "other",
        "--query",
        query,
        "--out",
        tmp_path / "n.png",
    )
    assert code == 0, err  # any gallery: fc7 retrieval needs no classes, it names its own


# ------------------------------------------------------------ export, prepare, bench
def test_export_faults(world, tmp_path, capsys, monkeypatch):
    ckpt = world / "run" / "checkpoints" / "last.pt"
    code, err = cli(capsys, "export", ckpt, "--onnx", tmp_path / "m.onnx", "--input-size", "40")
    assert code == 2 and "too small" in err
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    code, err = cli(capsys, "export", ckpt, "--onnx", tmp_path / "m.onnx")
    assert code == 2 and 'pip install "alexnet[onnx]"' in err


def test_prepare_input_faults(world, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("n01440764 tench\nn01443537\n")
    code, err = cli(capsys, "prepare", world / "src", tmp_path / "s", "--class-names", names)
    assert code == 2 and "line 2" in err
    flat = tmp_path / "flatval"
    write_image(flat / "v1.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("Name,Label\nv1,apple\n")
    code, err = cli(
        capsys, "prepare", world / "src", tmp_path / "s", "--val", flat, "--val-labels", labels
    )
    assert code == 2 and "ImageId" in err
    idx = tmp_path / "mnist" / "FashionMNIST" / "raw"
    idx.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (idx / name).write_bytes(b"\x00garbage" * 10)
    code, err = cli(capsys, "prepare", tmp_path / "mnist", tmp_path / "s")
    assert code == 2 and "train-images-idx3-ubyte: not an idx file" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--precision", "fp8"], "invalid choice"),
        (["--batch-size", "100000000"], "needs about"),
        (["--warmup", "-5", "--data", "STORE"], "--warmup must be non-negative"),
    ],
)
def test_bench_refuses_what_would_make_meaningless_figures(world, capsys, args, message):
    args = [str(world / "store") if a == "STORE" else a for a in args]
    code, err = cli(capsys, "bench", "train", "--device", "cpu", "--steps", "1", *args)
    assert code == 2 and message in err


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--input-scale", "nan"),
        ("--weight-decay", "inf"),
        ("--momentum", "inf"),
        ("--warmup-epochs", "nan"),
        ("--lr", "-inf"),
    ],
)
def test_non_finite_flags_are_refused_at_parse_time(capsys, flag, value):
    code, err = cli(capsys, "train", f"{flag}={value}")
    assert code == 2 and flag in err and "finite" in err


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_the_finite_check_finds_one_nan_or_infinity_anywhere(dtype):
    x = torch.randn(64, 300, dtype=torch.float64).to(dtype)
    assert is_finite(x) and is_finite(x[:, ::7]) and is_finite(x[:0])
    for value in (float("nan"), float("inf"), -float("inf")):
        for where in ((0, 0), (17, 123), (63, 299)):
            y = x.clone()
            y[where] = value
            assert not is_finite(y), (value, where)
            assert not is_finite(y.t()) and not is_finite(y.requires_grad_())
    if dtype == torch.float16:  # a float32 weight past fp16's range becomes inf
        assert not is_finite(torch.tensor([1.0, 7e4]).to(dtype))


def test_non_finite_weights_are_refused_wherever_weights_are_loaded(world, tmp_path, capsys):
    import torchvision

    last = world / "run" / "checkpoints" / "last.pt"
    obj = torch.load(last, weights_only=True)
    obj["model"]["features.conv2.weight"][0, 0, 0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(obj, bad)
    tv = torchvision.models.alexnet().state_dict()
    tv["classifier.1.bias"][3] = float("inf")
    torch.save(tv, tmp_path / "inf.pth")
    query = write_image(tmp_path / "q.jpg")
    for args in (
        ["predict", bad, query],
        ["evaluate", bad, "--data", world / "store", *EVAL_FAST],
        ["export", bad, "--out", tmp_path / "x.safetensors"],
        ["train", "--data", world / "store", "--weights", bad, "--out", tmp_path / "ft"],
        ["predict", tmp_path / "inf.pth", query],
    ):
        code, err = cli(capsys, *args)
        assert code == 2 and "NaN or infinite" in err, (args, err)
        assert ("conv2.weight" in err) or ("classifier.1.bias" in err), err
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    torch.save(obj, run / "checkpoints" / "last.pt")
    code, err = cli(capsys, "train", "--resume", run, "--device", "cpu", "--workers", "0")
    assert code == 2 and "features.conv2.weight" in err


def test_bad_arguments_from_python_and_sizes_are_value_errors_or_one_line(tmp_path, capsys):
    from alexnet import create_model

    for kwargs, name in (
        ({"num_classes": "10"}, "num_classes"),
        ({"num_classes": 10.0}, "num_classes"),
        ({"num_classes": 10**9}, "num_classes"),
        ({"lrn": "no"}, "lrn"),
        ({"dropout": "0.5"}, "dropout"),
    ):
        with pytest.raises(ValueError, match=name):
            create_model("paper", **kwargs)
    code, err = cli(
        capsys, "prepare", _folder(tmp_path / "src"), tmp_path / "out", "--size", "100000"
    )
    assert code == 2 and "--size must be between" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    code, err = cli(
        capsys,
        "ablate",
        "relu",
        "--data",
        tmp_path / "src",
        "--out",
        tmp_path / "ab",
        "--device",
        "bogus",
    )
    assert code == 2 and "bogus" in err


# ------------------------------------------------------------ damaged runs and reports
def _damaged_run(world, tmp_path, field, value):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    last = run / "checkpoints" / "last.pt"
    obj = torch.load(last, weights_only=True)
    obj[field] = value
    torch.save(obj, last)
    return run


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epoch", "1", "epoch '1' is not a count"),
        ("optimizer", {}, "the optimizer state is empty"),
        ("history", "abc", "the history is not a list of epochs"),
        ("global_step", None, "no 'global_step' field for resuming"),
        ("step", -1, "step -1 is not a count"),
    ],
)
def test_a_damaged_run_is_refused_on_resume(world, tmp_path, capsys, field, value, message):
    run = _damaged_run(world, tmp_path, field, value)
    code, err = cli(capsys, "train", "--resume", run, *FAST)
    assert code == 2 and "damaged checkpoint" in err and message in err


def test_resume_from_a_file_says_what_it_takes(world, capsys):
    ckpt = world / "run" / "checkpoints" / "last.pt"
    code, err = cli(capsys, "train", "--resume", ckpt, *FAST)
    assert code == 2 and "takes the run directory" in err and "--weights" in err


@pytest.mark.parametrize(
    "damage, message",
    [
        ("metrics-keys", "an epoch's record without 'train_loss'"),
        ("metrics-garbage", "line 2: not a JSON record"),
        ("config-data", "config.json is damaged: it has no 'data'"),
    ],
)
def test_garbled_report_inputs_are_named(world, tmp_path, capsys, damage, message):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    if damage == "metrics-keys":
        (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    elif damage == "metrics-garbage":
        (run / "metrics.jsonl").write_text('{"epoch": 1, "partial": true}\ngarbage\n')
    else:
        config = json.loads((run / "config.json").read_text())
        del config["data"]
        (run / "config.json").write_text(json.dumps(config))
    code, err = cli(capsys, "report", run, "--out", tmp_path / "r.html")
    assert code == 2 and message in err and not (tmp_path / "r.html").exists()


def test_an_ablate_record_without_its_id_is_named(world, tmp_path, capsys):
    out = tmp_path / "abl"
    out.mkdir()
    (out / ".alexnet-ablate").write_text("")
    (out / "results.jsonl").write_text('{"study": "relu", "arm": "relu"}\n')  # no id
    code, err = cli(capsys, "ablate", "relu", "--data", world / "store", "--out", out)
    assert code == 2 and "results.jsonl, line 1: not a run's record" in err


# ------------------------------------------------------------ the machine's faults
def test_unwritable_folders_and_long_names_are_one_line(world, tmp_path, capsys, query):
    """A folder no file can be created in (/sys refuses even root), and names longer
    than the file system allows: exit 2 before any work, naming the folder or name."""
    ckpt = world / "run" / "checkpoints" / "last.pt"
    locked = "/sys" if os.path.isdir("/sys") and not _can_create_in("/sys") else None
    long_name = "x" * 250
    cases = [
        (["kernels", ckpt, "--out", tmp_path / f"{long_name}.png"], "is too long"),
        (["prepare", world / "src", tmp_path / long_name], "is too long"),
    ]
    if locked:
        cases += [
            (["kernels", ckpt, "--out", f"{locked}/k.png"], f"cannot write into {locked}"),
            (["predict", ckpt, query, "--figure", f"{locked}/p.png"], "cannot write into"),
            (["export", ckpt, "--out", f"{locked}/x.pt2"], "cannot write into"),
            (["report", world / "run", "--out", f"{locked}/r.html"], "cannot write into"),
        ]
    for args, message in cases:
        code, err = cli(capsys, *args)
        assert code == 2 and message in err, (args, err)
    assert not list(tmp_path.glob("x*"))


def _can_create_in(folder) -> bool:
    try:
        with open(os.path.join(folder, ".alexnet-probe"), "w"):
            pass
    except OSError:
        return False
    os.unlink(os.path.join(folder, ".alexnet-probe"))
    return True


def test_a_source_that_is_a_link_loop(tmp_path, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    code, err = cli(capsys, "prepare", tmp_path / "loop", tmp_path / "s")
    assert code == 2 and "symbolic links" in err


def test_stores_of_another_image_size(world, tmp_path, capsys, query):
    """A 64-pixel store is smaller than the net's crop; a net trained on 224-pixel
    images is refused 256-pixel stores, and predicts files at its own size."""
    small = tmp_path / "s64"
    prepare_store(world / "src", small, size=64)
    code, err = cli(capsys, "train", "--data", small, "--out", tmp_path / "r", *FAST)
    assert code == 2 and "64-pixel images, smaller than the 224-pixel crops" in err
    code, err = cli(capsys, "bench", "train", "--data", small, "--steps", "1")
    assert code == 2 and "smaller than the 224-pixel crops" in err
    s224 = tmp_path / "s224"
    prepare_store(world / "src", s224, size=224)
    run = tmp_path / "r224"
    code, _ = cli(capsys, "train", "--data", s224, "--out", run, "--max-steps", "1", *FAST)
    assert code == 0
    ckpt = run / "checkpoints" / "last.pt"
    for args in (
        ["evaluate", ckpt, "--data", world / "store", *EVAL_FAST],
        _neighbors(ckpt, world / "store", query, tmp_path / "n.png"),
    ):
        code, err = cli(capsys, *args)
        assert code == 2 and "trained on 224-pixel images" in err and "--size 224" in err
    assert cli(capsys, "predict", ckpt, query)[0] == 0
    assert cli(capsys, "evaluate", ckpt, "--data", s224, *EVAL_FAST)[0] == 0


def test_ctrl_c_checkpoints_where_the_run_stands_and_says_how_to_resume(world, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = ["train", "--data", world / "store", "--out", run, "--epochs", "2", "--log-every", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "alexnet", *map(str, args), *FAST],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    steps = run / "steps.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if steps.is_file() and steps.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 130, err
    last_line = err.strip().splitlines()[-1]  # after the step lines a run without a terminal logs
    assert last_line.startswith("alexnet: interrupted at step") and "Traceback" not in err, err
    assert last_line.endswith(f"continue with: alexnet train --resume {run}")
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["global_step"] >= 1  # the steps before Ctrl-C are kept, mid-epoch
    assert not (run / ".lock").exists()
    assert main(["train", "--resume", str(run), *FAST]) == 0
    history = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert not (run / ".lock").exists()  # a finished run leaves no lock naming a dead pid


@pytest.mark.parametrize("name", ["net.onnx", "net.pt2"])
def test_an_export_whose_outputs_are_off_writes_nothing(world, tmp_path, capsys, monkeypatch, name):
    """The exported file is run before it is written: beyond the tolerance (here none at
    all), one line, and the user's older file stays."""
    if name.endswith(".onnx"):
        pytest.importorskip("onnxruntime")
    import alexnet.results.export as export

    out = tmp_path / name
    out.write_bytes(b"the user's older export")
    monkeypatch.setitem(export.TOLERANCE, "fp32", -1.0)
    code, err = cli(capsys, "export", world / "run" / "checkpoints" / "last.pt", "--out", out)
    assert code == 2 and "outputs differ from PyTorch's by" in err and "nothing written" in err
    assert len(err.strip().splitlines()) == 1, err
    assert out.read_bytes() == b"the user's older export"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_under_export_keeps_the_old_file(world, tmp_path, capsys, monkeypatch):
    """torch.export.save's own writer aborts the process when the disk fills under it:
    the program is serialised in memory and written by us, so a full disk is one line."""
    import alexnet.runtime.files as files

    ckpt = world / "run" / "checkpoints" / "last.pt"
    out = tmp_path / "net.pt2"
    out.write_bytes(b"the user's older export")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    code, err = cli(capsys, "export", ckpt, "--out", out)
    assert code == 2 and "no space left on the device" in err
    assert out.read_bytes() == b"the user's older export"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "-1"], "--workers must be 0 for one per core"),
        (["--shard-size", "0"], "--shard-size must be a count of images per shard"),
        (["--seed", "-1"], "--seed must be a non-negative integer"),
        (["--val", "VAL", "--val-labels", "MISSING"], "no such file"),
        (["--val", "VAL", "--val-labels", "BINARY"], "not a text file of labels"),
    ],
)
def test_prepare_flags_say_what_to_fix(world, tmp_path, capsys, args, message):
    flat = tmp_path / "flat-val"
    flat.mkdir()
    write_image(flat / "x.jpg")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 4)
    where = {"VAL": flat, "MISSING": tmp_path / "missing.csv", "BINARY": tmp_path / "binary.txt"}
    args = [str(where.get(a, a)) for a in args]
    code, err = cli(capsys, "prepare", world / "src", tmp_path / "s", *args)
    assert code == 2 and message in err and not (tmp_path / "s").exists()


def test_a_garbled_steps_log_does_not_stop_a_resume(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    with (run / "steps.jsonl").open("a") as fh:
        fh.write('{"global_step": 1, "epo')  # a line a kill cut short
    assert cli(capsys, "train", "--resume", run, "--max-steps", "2", *FAST)[0] == 0
    lines = (run / "steps.jsonl").read_text().splitlines()
    assert all(json.loads(x)["global_step"] <= 2 for x in lines)


def test_a_run_is_never_written_inside_a_store_or_another_run(world, capsys):
    for inside in (world / "store" / "runs" / "x", world / "run" / "sub"):
        code, err = cli(capsys, "train", "--data", world / "store", "--out", inside, *FAST)
        assert code == 2 and "is inside the" in err, err
        assert not inside.exists()


def test_a_zero_byte_shard_is_one_line_for_every_verb_that_reads_it(world, tmp_path, capsys, query):
    store = tmp_path / "s"
    prepare_store(world / "src", store, format="raw")
    _damage(store, "zero-bytes-npy")
    last = world / "run" / "checkpoints" / "last.pt"
    for args in (
        ["evaluate", last, "--data", store, "--split", "train", *EVAL_FAST],
        _neighbors(last, store, query, tmp_path / "n.png"),
    ):
        code, err = cli(capsys, *args)
        assert code == 2 and "shard train/00000.npy is unreadable" in err, (args, err)


def test_a_tensor_of_absurd_size_is_refused_before_anything_allocates(tmp_path, capsys, query):
    """A hostile or damaged file may claim a tensor of any size (a stride-0 view costs a
    few bytes on disk): what it claims is checked against what the file holds before any
    pass over it (and its shape against the net's)."""
    import alexnet

    huge = torch.zeros(1).expand(100_000, 100_000, 3, 3)
    fc8 = torch.zeros(2, 4096)
    ours = _fake_checkpoint(
        tmp_path / "c.pt", model={"classifier.fc8.weight": fc8, "features.conv1.weight": huge}
    )
    tv = tmp_path / "tv.pth"
    torch.save({"features.0.weight": huge, "classifier.6.weight": torch.zeros(1000, 4096)}, tv)
    for args in (
        ["predict", ours, query],
        ["kernels", ours, "--out", tmp_path / "k.png"],
        ["export", ours, "--out", tmp_path / "m.onnx"],
        ["predict", tv, query],
    ):
        code, err = cli(capsys, *args)
        assert code == 2 and "claims 90,000,000,000 numbers where the file holds 1" in err, err
    with pytest.raises(UsageError, match="conv1.weight claims 90,000,000,000 numbers"):
        alexnet.load(ours)
    assert not (tmp_path / "k.png").exists() and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench"], "bench what? one of: prepare, data, train"),
        (["export", "W", "--out", "x.onnx", "--input-size", "100000"], "larger than 4096"),
        (["train", "--seed", "1000000000000000000000"], "--seed must be a whole number"),
    ],
)
def test_arguments_out_of_range_are_one_line(world, tmp_path, capsys, args, message):
    args = [world / "run" / "checkpoints" / "last.pt" if a == "W" else a for a in args]
    if args[0] == "train":
        args += ["--data", world / "store", "--out", tmp_path / "r", *FAST]
    code, err = cli(capsys, *args)
    assert code == 2 and message in err, err
    assert not (tmp_path / "r").exists()


def test_images_that_are_not_files_say_what_they_are(world, tmp_path, capsys, query):
    last = world / "run" / "checkpoints" / "last.pt"
    folder = tmp_path / "d.jpg"
    folder.mkdir()
    code, err = cli(capsys, "predict", last, folder)
    assert code == 2 and "a directory, not an image file" in err
    code, err = cli(capsys, "predict", last, "https://example.com/cat.jpg")
    assert code == 2 and "a URL: alexnet reads local files" in err
    code, err = cli(capsys, "predict", last, tmp_path / "gone.jpg")
    assert code == 2 and "no such file" in err


def test_a_val_folder_of_links_to_training_images_says_why_it_is_empty(world, tmp_path, capsys):
    val = tmp_path / "val"
    for c in ("apple", "leaf", "sky"):
        (val / c).mkdir(parents=True)
        (val / c / "x.jpg").symlink_to(world / "src" / c / f"{c}0.jpg")
    code, err = cli(capsys, "prepare", world / "src", tmp_path / "s", "--val", val)
    assert code == 2 and "the val split has no images: all 3 of its files are the same" in err
    assert not (tmp_path / "s").exists()


def test_prepare_into_a_dangling_link_is_refused_before_any_work(world, tmp_path, capsys):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "nowhere" / "store")
    code, err = cli(capsys, "prepare", world / "src", link)
    assert code == 2 and "is a link to" in err and "which does not exist" in err
    assert not (tmp_path / "out.partial").exists()


def test_prepare_into_an_empty_mount_point(world, tmp_path, capsys, monkeypatch):
    """A mount point cannot be renamed over (EBUSY): the store moves into it, meta.json
    last; simulated here by a rename that fails so on that one folder."""
    out = tmp_path / "mnt"
    out.mkdir()
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if os.path.abspath(dst) == str(out):
            raise OSError(errno.EBUSY, "Device or resource busy", str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    code, err = cli(capsys, "prepare", world / "src", out, "--workers", "1")
    assert code == 0, err
    store = Store(out)
    assert len(store.split("train")) + len(store.split("val")) == 24  # the 3 x 8 images
    assert not (tmp_path / "mnt.partial").exists()


def test_resume_whose_store_is_gone_says_to_point_at_it(world, tmp_path, capsys):
    run, store = tmp_path / "run", tmp_path / "store"
    shutil.copytree(world / "store", store)
    _one_step_run(store, run)
    shutil.rmtree(store)
    code, err = cli(capsys, "train", "--resume", run, "--device", "cpu", "--workers", "0")
    assert code == 2 and f"the store {store} is not there" in err and "--data" in err
