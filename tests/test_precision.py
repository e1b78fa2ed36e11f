"""The precision a run computes in: "auto" resolved by the CPU's bf16 units and
recorded, never written as "auto"; bf16 runs resume bit-identical; fp16 training refused."""

import json
import warnings

import pytest
import torch

from alexnet.runtime import device as dev
from alexnet.runtime.errors import Notice
from alexnet.train.loop import _run_precision
from conftest import TRAIN_FAST, prepare_store, run_here, stopped_and_resumed, write_image

FAST = TRAIN_FAST


@pytest.mark.parametrize(
    "flags, expected",
    [({"amx_bf16", "avx2"}, "bf16"), ({"avx512_bf16"}, "bf16"), ({"avx2", "avx512f"}, "fp32")],
)
def test_auto_is_bf16_only_where_the_cpu_computes_bf16(monkeypatch, flags, expected):
    monkeypatch.setattr(dev, "cpu_flags", lambda: flags)
    cpu = torch.device("cpu")
    assert dev.resolve_precision("auto", cpu) == expected
    assert dev.resolve_precision("fp32", cpu) == "fp32"  # an explicit choice insists
    assert dev.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert dev.autocast_dtype("auto", cpu) == (torch.bfloat16 if expected == "bf16" else None)
    info = dev.cpu_info()
    assert info["amx_bf16"] == ("amx_bf16" in flags) and "cpu_model" in info


@pytest.mark.parametrize(
    "flags, precision, noted",
    [
        ({"avx2"}, "bf16", True),
        ({"avx2"}, "fp16", True),
        ({"avx512_bf16"}, "fp16", True),
        ({"avx512_bf16"}, "bf16", False),
        ({"amx_bf16", "amx_fp16"}, "fp16", False),
        ({"avx2"}, "auto", False),  # auto never picks an emulated type
        ({"avx2"}, "fp32", False),
        (set(), "bf16", False),  # flags unknown (not Linux on x86): nothing claimed
    ],
)
def test_a_precision_the_cpu_only_emulates_is_noted(monkeypatch, flags, precision, noted):
    monkeypatch.setattr(dev, "cpu_flags", lambda: flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dev.resolve_precision(precision, torch.device("cpu"))
        dev.resolve_precision(precision, torch.device("cuda"))  # a GPU: never noted
    notes = [str(w.message) for w in caught if issubclass(w.category, Notice)]
    assert len(notes) == noted, notes
    if noted:
        assert f"{precision} is emulated" in notes[0] and "auto chooses fp32" in notes[0]


def test_the_cli_says_the_note_once_in_one_line(store, tmp_path, monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"avx2"})
    args = ["--data", store, "--epochs", "1", "--batch-size", "1", "--max-steps", "1", *FAST]
    r = run_here("train", *args, "--precision", "bf16", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if line.startswith("alexnet: note: ")]
    assert len(notes) == 1 and "bf16 is emulated" in notes[0], r.stderr
    r = run_here("train", *args, "--out", tmp_path / "auto")  # auto: fp32 here, nothing said
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr


def test_a_run_saved_as_auto_resumes_as_auto_then_meant(monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"amx_bf16"})
    cpu = torch.device("cpu")
    assert _run_precision("auto", cpu, resumed=True) == "fp32"  # the old rule: fp32 on CPUs
    assert _run_precision("auto", cpu, resumed=False) == "bf16"
    assert _run_precision("bf16", cpu, resumed=True) == "bf16"


@pytest.fixture
def store(image_folder, tmp_path):
    prepare_store(image_folder, tmp_path / "store", workers=1)
    return tmp_path / "store"


def test_the_run_records_the_resolved_precision(store, tmp_path, monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"amx_bf16"})
    # one step of one image: bf16 is emulated (slow) on a CPU without bf16 units
    args = ["--data", store, "--epochs", "1", "--batch-size", "1", "--max-steps", "1", *FAST]
    r = run_here("train", *args, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    env = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert config["precision"] == env["precision"] == "bf16"
    assert {"cpu_model", "cpu_capability", "amx_bf16", "avx512_bf16"} <= env.keys()


def test_fp16_training_is_refused_in_one_line(store, tmp_path):
    r = run_here("train", "--data", store, "--precision", "fp16", *FAST, "--out", tmp_path / "r")
    assert r.returncode == 2
    assert "gradient scaler" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_bf16_run_stopped_and_resumed_ends_bit_identical(tmp_path):
    # three training images, one epoch of 3 steps of 1, stopped after 2: bf16 is
    # emulated, 15x slower than fp32, where the CPU has no bf16 units (AVX2), and the
    # resume across an epoch's end is the float32 tests' (test_train.py)
    for c, color in enumerate(((200, 40, 40), (40, 200, 60), (40, 80, 230))):
        for i in range(2):
            write_image(tmp_path / "src" / f"c{c}" / f"{i}.jpg", (60 + 9 * i, 50), color)
    store = prepare_store(tmp_path / "src", tmp_path / "store", val_fraction=0.5)
    assert store["written"]["train"] == 3, store
    common = ["--data", tmp_path / "store", "--epochs", "1", "--batch-size", "1"]
    common += ["--precision", "bf16", "--recipe", "demo", *FAST]
    a, b = stopped_and_resumed(common, tmp_path, stop_after=2)
    assert a["config"]["precision"] == b["config"]["precision"] == "bf16"
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["val_top1_error"] for h in a["history"]] == [
        h["val_top1_error"] for h in b["history"]
    ]


def test_a_run_prints_and_records_its_execution_plan(store, tmp_path):
    """`train` resolves the plan once, says it in one line and records it whole in
    environment.json; --kernels none trains the plain model, and a bad name is one line."""
    import json

    common = ["--data", store, "--epochs", "1", "--max-steps", "1", "--batch-size", "2", *FAST]
    r = run_here("train", *common, "--precision", "fp32", "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("plan: ")]
    assert len(line) == 1 and "kernels: lrn" in line[0] and "no autocast" in line[0]
    plan = json.loads((tmp_path / "a" / "environment.json").read_text())["plan"]
    assert plan["precision"] == "fp32" and plan["weights"] == "float32"
    assert plan["kernels"][0] == "lrn"
    r = run_here("train", *common, "--kernels", "none", "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b" / "environment.json").read_text())["plan"]["kernels"] == []
    assert "kernels: none (the plain model)" in r.stderr
    r = run_here("train", *common, "--kernels", "lrn,fast", "--out", tmp_path / "c")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "unknown kernel 'fast'" in r.stderr


def test_the_inference_verbs_take_the_same_choice(store, tmp_path, monkeypatch, image_folder):
    """evaluate, predict, neighbors and features run in the precision asked for, auto as
    train resolves it (here: a CPU said to have AMX), and agree with float32 within
    bf16's rounding; evaluate records what it ran in."""
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"amx_bf16"})
    args = ["--data", store, "--epochs", "1", "--batch-size", "4", "--max-steps", "2", *FAST]
    # trained in fp32: how the weights were made is not the point, and bf16 is emulated
    # (slow) on a CPU without bf16 units
    r = run_here("train", *args, "--precision", "fp32", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    base = ["--data", store, "--crops", "1", "--workers", "0", "--device", "cpu", "--json"]
    runs = {
        p: json.loads(run_here("evaluate", ckpt, *base, "--precision", p).stdout)
        for p in ("fp32", "bf16", "auto")
    }
    assert [runs[p]["precision"] for p in runs] == ["fp32", "bfloat16", "bfloat16"]
    assert (
        abs(runs["bf16"]["top1_error"] - runs["fp32"]["top1_error"]) <= 2 / runs["fp32"]["images"]
    )
    image = next(image_folder.rglob("*.jpg"))
    probs = {}
    for p in ("fp32", "bf16"):
        out = json.loads(run_here("predict", ckpt, image, "--json", "--precision", p).stdout)
        probs[p] = {t["name"]: t["prob"] for t in out[0]["top"]}
    assert probs["bf16"] == pytest.approx(probs["fp32"], abs=0.03)
    for p in ("fp32", "bf16"):
        r = run_here(
            "features",
            ckpt,
            image,
            "--layers",
            "fc7",
            "--precision",
            p,
            "--out",
            tmp_path / f"f-{p}.npz",
        )
        assert r.returncode == 0, r.stderr
    import numpy as np

    with np.load(tmp_path / "f-fp32.npz") as a, np.load(tmp_path / "f-bf16.npz") as b:
        fa, fb = a["fc7"], b["fc7"]
    assert fa.dtype == fb.dtype == np.float32 and not np.array_equal(fa, fb)
    assert np.abs(fa - fb).max() <= 0.05 * max(1.0, np.abs(fa).max())
    r = run_here(
        "neighbors",
        ckpt,
        "--gallery",
        store,
        "--query",
        image,
        "--precision",
        "bf16",
        "--out",
        tmp_path / "n.png",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr


def test_inference_in_bf16_holds_the_weights_in_bf16_with_autocasts_outputs(tmp_path):
    """load_for_inference casts the weights once: the outputs are those of float32
    weights cast by autocast at every forward, bit for bit."""
    import torchvision

    from alexnet.runtime.device import autocast
    from alexnet.weights.load import load_for_inference

    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "tv.pth")
    low = load_for_inference(tmp_path / "tv.pth", "cpu", "bf16").model
    full = load_for_inference(tmp_path / "tv.pth", "cpu", "fp32").model
    assert {p.dtype for p in low.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), autocast(torch.device("cpu"), torch.bfloat16):
        assert torch.equal(low(x), full(x))
