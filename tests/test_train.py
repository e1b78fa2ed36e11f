import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from alexnet.data.demo import CLASSES, build_demo_dataset, ensure_demo_store
from alexnet.train.optim import PaperSGD, PlateauSchedule, WarmupCosineSchedule, build_schedule
from conftest import EVAL_FAST, TRAIN_FAST, prepare_store, run_here, stopped_and_resumed

FAST = TRAIN_FAST


@pytest.fixture
def tiny_store(image_folder, tmp_path):
    out = tmp_path / "store"
    prepare_store(image_folder, out, workers=2)
    return out


def test_paper_sgd_is_the_papers_rule():
    torch.manual_seed(0)
    w0 = torch.randn(5)
    w = w0.clone().requires_grad_()
    opt = PaperSGD([w], lr=0.1, momentum=0.9, weight_decay=5e-4)
    v, wr = torch.zeros(5), w0.clone()
    for step, lr in enumerate([0.1, 0.1, 0.01, 0.01]):  # a cut in lr mid-way
        for g in opt.param_groups:
            g["lr"] = lr
        grad = torch.randn(5, generator=torch.Generator().manual_seed(step))
        w.grad = grad.clone()
        opt.step()
        v = 0.9 * v - 0.0005 * lr * wr - lr * grad
        wr = wr + v
        assert torch.allclose(w.detach(), wr, atol=1e-7)
    # and it is not torch's SGD once lr changes
    w2 = w0.clone().requires_grad_()
    sgd = torch.optim.SGD([w2], lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step, lr in enumerate([0.1, 0.1, 0.01, 0.01]):
        sgd.param_groups[0]["lr"] = lr
        w2.grad = torch.randn(5, generator=torch.Generator().manual_seed(step))
        sgd.step()
    assert not torch.allclose(w2.detach(), wr, atol=1e-6)


def test_paper_sgd_in_cache_sized_chunks_matches_whole_tensors(monkeypatch):
    """The CPU update runs per chunk of each parameter (any layout): the same bits as
    the rule applied to whole tensors."""
    from alexnet.train import optim

    g = torch.Generator().manual_seed(0)
    shapes = [(8, 3, 5, 5), (6, 10), (7,)]
    params = [torch.randn(s, generator=g) for s in shapes]
    params[0] = params[0].contiguous(memory_format=torch.channels_last)
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(3)]
    for gs in grads:
        gs[0] = gs[0].contiguous(memory_format=torch.channels_last)

    def run(chunk):
        monkeypatch.setattr(optim, "CHUNK", chunk)
        ws = [p.clone().requires_grad_() for p in params]
        opt = PaperSGD(ws, lr=0.1, momentum=0.9, weight_decay=5e-4)
        for gs in grads:
            for w, gr in zip(ws, gs):
                w.grad = gr.clone()
            opt.step()
        return ws, [opt.state[w]["velocity"] for w in ws]

    whole = run(10**9)
    chunked = run(7)  # ragged chunks that cut across rows and channels
    for a, b in zip(whole[0] + whole[1], chunked[0] + chunked[1]):
        assert torch.equal(a, b) and a.stride() == b.stride()
    assert not torch.equal(whole[0][0], params[0])


def test_plateau_divides_by_ten_at_most_three_times():
    s = PlateauSchedule(0.01, 90, 10, patience=1)
    lrs = []
    for epoch, err in enumerate([0.9, 0.8, 0.8, 0.8] + [0.8] * 20):
        s.end_epoch(epoch, err)
        lrs.append(s.lr_at(epoch + 1, 0))
    assert lrs[1] == 0.01 and lrs[3] == pytest.approx(0.001)
    assert min(lrs) == pytest.approx(1e-5) and s.reductions == 3
    state = s.state_dict()
    s2 = PlateauSchedule(0.01, 90, 10, patience=1)
    s2.load_state_dict(state)
    assert s2.lr_at(0, 0) == s.lr_at(0, 0)


def test_warmup_cosine_shape():
    s = WarmupCosineSchedule(0.1, epochs=4, steps_per_epoch=10, warmup_epochs=1)
    assert s.lr_at(0, 0) == pytest.approx(0.01) and s.lr_at(0, 9) == pytest.approx(0.1)
    assert s.lr_at(3, 9) < 0.01


def test_every_schedule_can_start_with_a_warm_up():
    # a fixed rate after a warm-up: runs that are not ended by their schedule
    s = build_schedule("constant", 0.1, 90, 10, patience=5, warmup_epochs=0.5)
    assert [s.lr_at(0, i) for i in range(6)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])
    assert s.lr_at(50, 3) == 0.1
    assert build_schedule("constant", 0.1, 90, 10, 5, warmup_epochs=0).lr_at(0, 0) == 0.1
    p = build_schedule("plateau", 0.01, 90, 10, patience=0, warmup_epochs=1)
    assert p.lr_at(0, 4) == pytest.approx(0.005) and p.lr_at(1, 0) == 0.01
    p.end_epoch(0, 0.5)
    p.end_epoch(1, 0.5)  # no better: divided by ten
    assert p.lr_at(2, 0) == pytest.approx(0.001)
    step = build_schedule("step", 0.1, 90, 10, 5, warmup_epochs=0.2)
    assert step.lr_at(0, 0) == pytest.approx(0.05) and step.lr_at(30, 0) == pytest.approx(0.01)


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def test_train_writes_the_run_directory(tiny_store, tmp_path):
    run = tmp_path / "run"
    r = run_here(
        "train",
        "--data",
        tiny_store,
        "--out",
        run,
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--recipe",
        "paper",
        *FAST,
    )
    assert r.returncode == 0, r.stderr
    assert f"run directory: {run}" in r.stdout and "metrics.jsonl" in r.stdout
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    for key in ("epoch", "train_loss", "val_top1_error", "val_top5_error", "lr"):
        assert all(key in x for x in lines)
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "paper" and config["lr"] == 0.01 and config["batch_size"] == 4
    env = json.loads((run / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    # the CLI tunes glibc malloc, unless ALEXNET_MALLOC=default (as this suite sets it)
    tuned = sys.platform == "linux" and os.environ.get("ALEXNET_MALLOC") != "default"
    assert env["malloc_tuned"] is tuned
    assert (run / "checkpoints" / "best.pt").is_file()
    state = _state(run)
    assert state["epoch"] == 2 and state["step"] == 0 and state["num_classes"] == 3
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])


def test_tensorboard_events_carry_each_epoch(tiny_store, tmp_path):
    pytest.importorskip("tensorboard")  # an optional extra; scripts/test installs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    r = run_here(
        "train",
        "--data",
        tiny_store,
        "--out",
        run,
        "--epochs",
        "2",
        "--batch-size",
        "6",
        "--recipe",
        "paper",
        *FAST,
    )
    assert r.returncode == 0, r.stderr
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "val_top1_error", "val_top5_error", "lr"):
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert got == [(m["epoch"], pytest.approx(m[key])) for m in metrics], key


def test_sigkill_then_resume_is_bit_identical(tiny_store, tmp_path):
    args = [
        "--data",
        tiny_store,
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "1",
        "--recipe",
        "paper",
        "--lr",
        "0.001",
        *FAST,
    ]
    ref = tmp_path / "ref"
    r = run_here("train", "--out", ref, *args)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alexnet", "train", "--out", str(run), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    last = run / "checkpoints" / "last.pt"
    deadline, seen = time.time() + 300, set()
    while len(seen) < 3 and time.time() < deadline and proc.poll() is None:
        if last.exists():
            seen.add(last.stat().st_mtime_ns)
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    time.sleep(0.3)  # land somewhere inside a step, not on a checkpoint boundary
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _state(run)["global_step"]
    assert 0 < killed_at < 8
    r = run_here("train", "--resume", run, *FAST)
    assert r.returncode == 0, r.stderr
    a, b = _state(ref), _state(run)
    assert b["global_step"] == a["global_step"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["velocity"], b["optimizer"]["state"][k]["velocity"])
    clock = lambda k: "second" in k or k == "time"  # noqa: E731  (when it ran, not what)
    strip = lambda rows: [{k: v for k, v in x.items() if not clock(k)} for x in rows]
    assert strip(a["history"]) == strip(b["history"])


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(tiny_store, tmp_path):
    run = tmp_path / "run"
    r = run_here(
        "train",
        "--data",
        tiny_store,
        "--out",
        run,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--lr",
        "1e12",
        "--recipe",
        "paper",
        "--checkpoint-every",
        "1",
        *FAST,
    )
    assert r.returncode == 3
    assert "non-finite loss" in r.stderr and "step" in r.stderr and "Traceback" not in r.stderr
    state = _state(run)  # the last good one: finite weights
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_bad_arguments_exit_2(tiny_store, tmp_path):
    cases = [
        (["--data", tiny_store, "--lr", "-1"], "--lr"),
        (["--data", tiny_store, "--batch-size", "1000"], "larger than"),
        (["--data", tmp_path / "no-such-folder"], "neither a prepared store nor a folder"),
        (["--data", tmp_path / "empty"], "neither a prepared store nor a folder of images"),
        (["--resume", tmp_path], "no checkpoint"),
        (["--data", tiny_store, "--recipe", "nope"], "invalid choice"),
        (["--data", tiny_store, "--variant", "vgg"], "invalid choice"),
    ]
    (tmp_path / "empty").mkdir()
    for args, message in cases:
        r = run_here("train", "--out", tmp_path / "r", *args, *FAST)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.strip().count("\n") == 0, r.stderr


def test_demo_dataset_is_built_once(tmp_path):
    root = build_demo_dataset(tmp_path / "demo", per_class=2)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == sorted(CLASSES) and len(CLASSES) >= 10
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == 2 * len(CLASSES)
    mtimes = [f.stat().st_mtime_ns for f in files]
    build_demo_dataset(tmp_path / "demo", per_class=2)
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_demo_store_is_prepared_once_and_says_so(tmp_path, monkeypatch):
    from alexnet.data.store import Store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lines: list[str] = []
    store = ensure_demo_store(progress=False, log=lines.append, per_class=5)
    assert [line.split()[0] for line in lines] == ["drawing", "drew", "preparing", "prepared"]
    assert f"drew {5 * len(CLASSES)} images" in lines[1]
    s = Store(store)
    assert s.num_classes == len(CLASSES)
    assert len(s.split("train")) + len(s.split("val")) == 5 * len(CLASSES)
    lines.clear()
    assert ensure_demo_store(progress=False, log=lines.append, per_class=5) == store
    assert lines == []


def test_config_for_resume_keeps_what_was_learned_and_takes_how_it_runs():
    from alexnet.train.config import RESUME_MAY_CHANGE, TrainConfig, config_for_resume

    saved = TrainConfig(data="/stores/a", out="runs/x", lr=0.02, epochs=7).resolved()
    asked = TrainConfig(lr=0.5, epochs=99, seed=3, workers=5, device="cpu", max_steps=11)
    cfg = config_for_resume(vars(saved), asked, "runs/y")
    assert (cfg.lr, cfg.epochs, cfg.seed) == (0.02, 7, 0)  # what the run learns with: saved
    assert (cfg.workers, cfg.device, cfg.max_steps) == (5, "cpu", 11)  # how it runs: asked
    assert cfg.out == "runs/y" and cfg.data == "/stores/a"
    ran = vars(replace(saved, checkpoint_every=150, report=False, workers=4, max_steps=9))
    kept = config_for_resume(ran, TrainConfig(), "runs/y")  # its bookkeeping: as it ran
    assert (kept.checkpoint_every, kept.report) == (150, False)
    assert kept.workers == 2 and kept.max_steps is None  # the machine's, the command's
    told = config_for_resume(ran, TrainConfig(), "runs/y", given={"checkpoint_every"})
    assert (told.checkpoint_every, told.report) == (0, False)
    moved = config_for_resume(vars(saved), TrainConfig(data="/stores/b"), "runs/y")
    assert moved.data == "/stores/b"  # a moved store (its classes are checked at setup)
    assert "lr" not in RESUME_MAY_CHANGE and "seed" not in RESUME_MAY_CHANGE
    # a fine-tuning run saved before --head-lr-mult existed goes on with fc8 at 1x (its
    # optimiser state has one group), not at the finetune recipe's 10x of today
    ft = vars(TrainConfig(data="/stores/a", weights="w.pt", recipe="finetune").resolved())
    assert ft["head_lr_mult"] == 10.0
    del ft["head_lr_mult"]
    assert config_for_resume(ft, TrainConfig(), "runs/y").head_lr_mult == 1.0


def test_every_choice_is_spelled_once():
    from alexnet.options import OPTIMIZERS, SCHEDULES
    from alexnet.train.optim import SCHEDULE_CLASSES
    from alexnet.train.recipes import RECIPES

    assert set(SCHEDULE_CLASSES) == set(SCHEDULES)
    for r in RECIPES.values():
        assert r.optimizer in OPTIMIZERS and r.schedule in SCHEDULES, r.name


def test_checkpoints_written_before_the_checkpoint_class_still_load(tmp_path):
    """The dict, key for key, that train wrote before Checkpoint owned the format."""
    import math

    from alexnet import create_model
    from alexnet.weights.checkpoint import load_checkpoint
    from alexnet.weights.load import load_for_inference

    torch.manual_seed(0)
    # Saved before the LRN option: such a file was written by the undivided net.
    model = create_model(
        "paper", num_classes=3, init="kaiming", dropout=0.5, lrn_alpha_over_n=False
    )
    classes = [{"index": i, "id": f"c{i}", "name": f"class {i}"} for i in range(3)]
    old = {
        "format": "alexnet-checkpoint-1",
        "model": model.state_dict(),
        "optimizer": {},
        "schedule": {},
        "epoch": 1,
        "step": 2,
        "global_step": 7,
        "history": [{"epoch": 1}],
        "best_val_top1_error": math.inf,
        "running": {"loss_sum": 1.5, "correct": 2, "count": 4},
        "config": {"variant": "paper", "recipe": "demo"},
        "variant": "paper",
        "num_classes": 3,
        "model_options": {"dropout": 0.5, "lrn": True, "overlap_pool": True, "activation": "relu"},
        "classes": classes,
        "normalization": {
            "kind": "mean-image",
            "mean": torch.full((256, 256, 3), 100.0),
            "eigval": torch.ones(3),
            "eigvec": torch.eye(3),
            "scale": 1 / 64,
        },
    }
    torch.save(old, tmp_path / "old.pt")
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert ckpt.train_state["global_step"] == 7 and ckpt.class_names[2] == "class 2"
    assert set(ckpt.to_dict()) == set(old)
    loaded = load_for_inference(tmp_path / "old.pt")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), model.eval()(x), rtol=1e-4, atol=1e-5)
    assert loaded.class_ids == ["c0", "c1", "c2"]


def test_the_command_line_answers_without_importing_torch():
    code = (
        "import sys; from alexnet.cli import main; rc = main(['--version']); "
        "main(['train', '--help']); print('torch' in sys.modules, rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False 0"


def test_a_job_without_a_terminal_logs_its_steps(tiny_store, tmp_path):
    run = tmp_path / "run"
    r = run_here(
        "train",
        "--data",
        tiny_store,
        "--out",
        run,
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--max-steps",
        "6",
        "--log-every",
        "2",
        *FAST,
    )
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if " step " in x]
    assert [x.split(":")[0] for x in lines] == [
        "epoch 1 step 2/4 (global 2)",
        "epoch 1 step 4/4 (global 4)",
        "epoch 2 step 2/4 (global 6)",
    ]
    assert all("img/s" in x and "lr " in x and "epoch ETA" in x and "run ETA" in x for x in lines)
    steps = [json.loads(x) for x in (run / "steps.jsonl").read_text().splitlines()]
    assert [s["global_step"] for s in steps] == [2, 4, 6]
    assert all(s["train_loss"] > 0 and s["images_per_second"] > 0 for s in steps)
    # stopped mid-epoch: the summary says so and the metrics file holds where it stopped
    assert "stopped by --max-steps at step 2 of epoch 2" in r.stdout
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics[-1]["partial"] is True
    # resumed, the run redoes nothing it logged and drops the partial record
    r = run_here("train", "--resume", run, "--log-every", "2", *FAST)
    assert r.returncode == 0, r.stderr
    steps = [json.loads(x)["global_step"] for x in (run / "steps.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and not any("partial" in m for m in metrics)


def test_a_small_store_without_recipe_trains_with_demo_and_says_why(tiny_store, tmp_path):
    run = tmp_path / "run"
    r = run_here(
        "train", "--data", tiny_store, "--out", run, "--max-steps", "1", "--batch-size", "4", *FAST
    )
    assert r.returncode == 0, r.stderr
    assert "recipe: demo" in r.stderr and "18 training images" in r.stderr
    assert json.loads((run / "config.json").read_text())["recipe"] == "demo"


def test_fine_tuning_from_a_torchvision_state_dict_with_frozen_features(tiny_store, tmp_path):
    import torchvision

    torch.manual_seed(0)
    pth = tmp_path / "alexnet-owt.pth"
    torch.save(torchvision.models.alexnet().state_dict(), pth)
    run = tmp_path / "run"
    r = run_here(
        "train",
        "--data",
        tiny_store,
        "--out",
        run,
        "--weights",
        pth,
        "--freeze",
        "features",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        *FAST,
    )
    assert r.returncode == 0, r.stderr
    assert "loaded conv1, conv2, conv3, conv4, conv5, fc6, fc7; initialised afresh: fc8" in r.stderr
    state, src = _state(run), torch.load(pth, weights_only=True)
    config = state["config"]
    assert config["variant"] == "torchvision" and config["recipe"] == "finetune"
    for k in src:  # the frozen features are bit-identical; the classifier moved
        if k.startswith("features."):
            assert torch.equal(state["model"][k], src[k]), k
    assert not torch.equal(state["model"]["classifier.1.weight"], src["classifier.1.weight"])
    assert state["model"]["classifier.6.weight"].shape == (3, 4096)
    norm = state["normalization"]  # ImageNet's per-channel mean and std, as torchvision's
    assert norm["kind"] == "channel" and torch.allclose(
        norm["std"], torch.tensor([0.229, 0.224, 0.225]) * 255
    )
    r = run_here(
        "evaluate",
        run / "checkpoints" / "last.pt",
        "--data",
        tiny_store,
        *EVAL_FAST,
        "--json",
    )
    assert r.returncode == 0, r.stderr


def test_a_linear_probe_trains_fc8_only(tiny_store, tmp_path):
    first = tmp_path / "first"
    assert (
        run_here(
            "train",
            "--data",
            tiny_store,
            "--out",
            first,
            "--max-steps",
            "2",
            "--recipe",
            "demo",
            "--batch-size",
            "4",
            *FAST,
        ).returncode
        == 0
    )
    src = _state(first)["model"]
    probe = tmp_path / "probe"
    r = run_here(
        "train",
        "--data",
        tiny_store,
        "--out",
        probe,
        "--weights",
        first / "checkpoints" / "last.pt",
        "--freeze",
        "fc7",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        *FAST,
    )
    assert r.returncode == 0, r.stderr
    state = _state(probe)
    moved = {k for k in src if not torch.equal(src[k], state["model"][k])}
    assert moved == {"classifier.fc8.weight", "classifier.fc8.bias"}
    assert state["config"]["input_scale"] == 1 / 64  # the weights' own normalisation
    assert set(state["optimizer"]["state"]) == {0, 1}  # an optimiser over fc8 alone


def test_fine_tuning_refusals(tiny_store, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    resnet = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, resnet)
    for args, message in (
        (["--weights", bad], "not a readable checkpoint"),
        (["--weights", resnet], "neither an alexnet checkpoint nor an AlexNet state_dict"),
        (["--weights", resnet, "--freeze", "conv9"], "invalid choice"),
        (["--freeze", "features"], "--freeze needs --weights"),
    ):
        r = run_here("train", "--data", tiny_store, "--out", tmp_path / "r", *args, *FAST)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert r.stderr.strip().count("\n") == 0


def test_the_checkpointer_writes_last_and_best_and_never_non_finite_weights(tmp_path):
    from alexnet.weights.checkpoint import Checkpoint, Checkpointer

    def ckpt(value):
        return Checkpoint(
            model={"w": torch.full((2,), value)},
            variant="paper",
            classes=[],
            normalization={"mean": torch.zeros(3)},
        )

    saver = Checkpointer(tmp_path / "last.pt", tmp_path / "best.pt")
    assert saver.save(ckpt(1.0), is_best=True)
    # the best epoch's file is a second name for last.pt, not a second copy on disk
    assert (tmp_path / "last.pt").stat().st_ino == (tmp_path / "best.pt").stat().st_ino
    assert saver.save(ckpt(2.0))
    load = lambda name: torch.load(tmp_path / name, weights_only=True)["model"]["w"][0].item()
    assert (load("last.pt"), load("best.pt")) == (2.0, 1.0)
    assert not saver.save(ckpt(float("nan")), is_best=True)
    assert (load("last.pt"), load("best.pt")) == (2.0, 1.0)  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
    # linking best.pt to the file it already names leaves no stray link behind (a rename
    # between two links of one file does nothing)
    from alexnet.runtime.files import atomic_duplicate

    atomic_duplicate(tmp_path / "last.pt", tmp_path / "best.pt")
    atomic_duplicate(tmp_path / "last.pt", tmp_path / "best.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_a_file_system_without_hard_links_gets_a_copy_of_the_best_checkpoint(tmp_path, monkeypatch):
    from alexnet.runtime import files

    (tmp_path / "last.pt").write_bytes(b"weights" * 1000)
    (tmp_path / "best.pt").write_bytes(b"older")

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(files.os, "link", no_links)
    files.atomic_duplicate(tmp_path / "last.pt", tmp_path / "best.pt")
    assert (tmp_path / "best.pt").read_bytes() == b"weights" * 1000
    assert (tmp_path / "last.pt").stat().st_ino != (tmp_path / "best.pt").stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_weights_for_other_classes_never_keep_their_output_layer():
    from alexnet import create_model
    from alexnet.weights.transfer import load_matching

    torch.manual_seed(0)
    src, model = create_model("paper", num_classes=3), create_model("paper", num_classes=3)
    fc8 = model.classifier.fc8.weight.clone()
    loaded, fresh = load_matching(model, src.state_dict())  # same count, other classes
    assert fresh == ["fc8"] and "fc7" in loaded
    assert torch.equal(model.classifier.fc8.weight, fc8)
    assert torch.equal(model.classifier.fc7.weight, src.classifier.fc7.weight)
    loaded, fresh = load_matching(model, src.state_dict(), keep_head=True)  # the same classes
    assert fresh == [] and torch.equal(model.classifier.fc8.weight, src.classifier.fc8.weight)


def test_a_full_disk_under_torch_save_is_named(tmp_path, monkeypatch):
    import shutil as sh

    from alexnet.runtime.errors import UsageError
    from alexnet.weights.checkpoint import save_atomic

    def zip_writer_fails(obj, fh):
        fh.write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")

    monkeypatch.setattr(torch, "save", zip_writer_fails)
    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(100, 100, 1000))
    with pytest.raises(UsageError, match="no space left on the device"):
        save_atomic({"a": 1}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temp file


def test_head_lr_mult_scales_only_the_output_layers_step(tiny_store, tmp_path):
    """One SGD step from the same start: with --head-lr-mult 10, fc8 moves as it would at
    ten times the rate, and every other layer exactly as without the multiplier."""

    def one_step(name, *args):
        r = run_here(
            "train",
            "--data",
            tiny_store,
            "--out",
            tmp_path / name,
            "--recipe",
            "finetune",
            "--batch-size",
            "4",
            "--max-steps",
            "1",
            *args,
            *FAST,
        )
        assert r.returncode == 0, r.stderr
        ckpt = torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)
        return ckpt["model"]

    base = one_step("base", "--lr", "0.001", "--head-lr-mult", "1")
    mult = one_step("mult", "--lr", "0.001", "--head-lr-mult", "10")
    fast = one_step("fast", "--lr", "0.01", "--head-lr-mult", "1")
    recipe = one_step("recipe", "--lr", "0.001")  # the finetune recipe's own multiplier
    assert all(torch.equal(recipe[k], mult[k]) for k in mult)
    head = [k for k in base if k.startswith("classifier.fc8.")]
    assert len(head) == 2
    for k in base:
        if k in head:
            assert not torch.equal(mult[k], base[k]), k
            assert torch.allclose(mult[k], fast[k], rtol=1e-5, atol=1e-7), k
        else:
            assert torch.equal(mult[k], base[k]), k
    r = run_here("train", "--data", tiny_store, "--out", tmp_path / "x", "--head-lr-mult", "0")
    assert r.returncode == 2 and "--head-lr-mult must be positive" in r.stderr


def test_a_run_with_a_faster_head_resumes_bit_identical(tiny_store, tmp_path):
    """Two optimiser groups (fc8 at 10x) survive a stop and a resume unchanged."""
    common = ["--data", tiny_store, "--epochs", "2", "--batch-size", "4"]
    common += ["--recipe", "finetune", "--head-lr-mult", "10", *FAST]
    a, b = stopped_and_resumed(common, tmp_path)
    assert len(a["optimizer"]["param_groups"]) == 2 and a["config"]["head_lr_mult"] == 10
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_six_conv_net_fine_tunes_from_a_five_conv_checkpoint(tiny_store, tmp_path):
    """§6's "1 CNN*": pre-train the paper net, then grow conv6 over pool5 and fine-tune;
    every fitting layer is loaded, conv6 and fc8 start afresh."""
    from alexnet import create_model
    from alexnet.model import count_parameters

    assert count_parameters(create_model("six-conv")) == 60_965_224 + 256 * 128 * 9 + 256
    base = ["--data", tiny_store, "--batch-size", "4", "--max-steps", "1", *FAST]
    assert run_here("train", *base, "--out", tmp_path / "five").returncode == 0
    five = tmp_path / "five" / "checkpoints" / "last.pt"
    args = [*base, "--out", tmp_path / "six", "--variant", "six-conv", "--weights", five]
    r = run_here("train", *args, "--freeze", "features")
    assert r.returncode == 0, r.stderr
    assert (
        "loaded conv1, conv2, conv3, conv4, conv5, fc6, fc7; initialised afresh: conv6, fc8"
        in r.stderr
    )
    a = torch.load(five, weights_only=True)
    b = torch.load(tmp_path / "six" / "checkpoints" / "last.pt", weights_only=True)
    assert b["variant"] == "six-conv" and b["model"]["features.conv6.weight"].shape == (
        256,
        128,
        3,
        3,
    )
    assert torch.equal(a["model"]["features.conv3.weight"], b["model"]["features.conv3.weight"])


def test_the_cli_tunes_the_allocator_unless_told_not_to():
    code = "from alexnet.runtime.allocator import tune_cpu_allocator as t; print(t())"
    for setting, expected in (("", sys.platform == "linux"), ("default", False)):
        env = {**os.environ, "ALEXNET_MALLOC": setting}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert r.stdout.strip() == str(expected), (setting, r.stderr)


def test_a_config_file_sets_the_options_and_flags_override_it(tiny_store, tmp_path):
    yaml = pytest.importorskip("yaml")  # the yaml extra
    given = tmp_path / "run.yaml"
    given.write_text(
        "recipe: paper\nepochs: 1\nbatch_size: 4\nlr: 1e-3\nseed: 3\nworkers: 0\n"
        "device: cpu\nreport: false\nlrn: false\n"
    )
    args = ["--max-steps", "1", "--data", tiny_store]
    r = run_here("train", "--config", given, *args, "--out", tmp_path / "a", "--se", "0")
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["lr"] == 1e-3 and saved["batch_size"] == 4 and saved["lrn"] is False
    assert saved["seed"] == 0  # the flag (abbreviated, as argparse allows) won
    assert saved["config"] == str(given)
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text()) == saved
    # a run's own config.json is a config: the same run again, elsewhere
    r = run_here("train", "--config", tmp_path / "a" / "config.json", "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "b" / "config.json").read_text())
    assert {k: v for k, v in again.items() if k not in ("out", "config")} == {
        k: v for k, v in saved.items() if k not in ("out", "config")
    }
    assert not (tmp_path / "b" / "config.yaml").exists()  # given as JSON, kept as JSON
    bad = tmp_path / "bad.json"
    for text, message in (
        (
            '{"lr": 0.01, "learning_rate": 0.1, "epochz": 1}',
            "unknown option(s): epochz, learning_rate",
        ),
        ('{"epochs": "ten"}', "epochs must be a whole number, not 'ten'"),
        ('{"lrn": "no"}', "lrn must be true or false, not 'no'"),
        ("[1, 2]", "not a mapping of option names to values"),
        ("{", "not JSON"),
    ):
        bad.write_text(text)
        r = run_here("train", "--config", bad, *args, "--out", tmp_path / "c")
        assert r.returncode == 2 and message in r.stderr, (text, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()
    r = run_here("train", "--config", tmp_path / "run.toml", *args, "--out", tmp_path / "c")
    assert r.returncode == 2 and "name a .json, .yaml or .yml file" in r.stderr
