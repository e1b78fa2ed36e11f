"""`alexnet ablate` on tiny generated data: the arms differ in their one switch only,
the summary carries its fields, a killed ablate resumes, the figures are drawn."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import prepare_store, run_here

TINY = ["--seeds", "1", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def store(module_dir):
    root = module_dir / "ablate"
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / "src" / f"c{c}").mkdir(parents=True)
        for i in range(8):
            a = rng.integers(0, 256, (40, 48, 3)).astype(np.uint8)
            a[..., c] = 255
            Image.fromarray(a).save(root / "src" / f"c{c}" / f"{i}.jpg")
    prepare_store(root / "src", root / "store")
    return root / "store"


def _rows(out):
    return {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def test_alexnet_scale_arms_differ_in_their_one_switch(store, tmp_path):
    out = tmp_path / "abl"
    r = run_here("ablate", "towers", "dropout", "ten-crop", "--data", store, "--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    assert set(rows) == {
        "alexnet:paper:seed0",
        "alexnet:one-tower:seed0",
        "alexnet:no-dropout:seed0",
        "ten-crop:ten-crops:seed0",
        "ten-crop:one-crop:seed0",
    }
    paper = {k: v for k, v in rows["alexnet:paper:seed0"]["config"].items() if k != "out"}
    for rid, switch in (
        ("alexnet:one-tower:seed0", {"variant"}),
        ("alexnet:no-dropout:seed0", {"dropout"}),
    ):
        other = {k: v for k, v in rows[rid]["config"].items() if k != "out"}
        assert {k for k in paper if paper[k] != other[k]} == switch, rid
    summary = json.loads((out / "summary.json").read_text())["studies"]
    towers = summary["towers"]
    assert set(towers["top1_error"]) == {"paper", "one-tower"}
    assert towers["paper_top1_delta"] == 0.017 and towers["paper_top5_delta"] == 0.012
    t1 = towers["top1_error"]
    assert towers["top1_delta"][0] == pytest.approx(t1["one-tower"][0] - t1["paper"][0])
    assert towers["same_sign"] == (towers["top1_delta"][0] > 0)
    assert set(towers["generalisation_gap"]) == {"paper", "one-tower"}
    dropout = summary["dropout"]
    assert dropout["epochs_to_converge"] == {"paper": [1], "no-dropout": [1]}  # one epoch
    assert dropout["convergence_ratio"] == 1.0 and dropout["paper_convergence_ratio"] == 2.0
    assert dropout["epochs_to_common_error"] == {"paper": [1], "no-dropout": [1]}
    assert "epochs to within 1 point of its final error" in (out / "ablations.md").read_text()
    ten = summary["ten-crop"]["top1_error"]
    assert set(ten) == {"ten-crops", "one-crop"}
    views = summary["ten-crop"]["view_top1_error"]
    assert len(views) == 10 and views == {
        v: [e] for v, e in rows["ten-crop:ten-crops:seed0"]["views"].items()
    }
    table = (out / "ablations.md").read_text()
    assert "each patch alone: centre " in table
    assert "| towers (§3.2) |" in table and "(paper: +1.7)" in table and "bars.png" in table
    assert (out / "bars.png").read_bytes()[:4] == b"\x89PNG" and "<table>" in (
        out / "report.html"
    ).read_text()


def test_relu_study_times_both_arms_and_draws_figure_1(store, tmp_path):
    out = tmp_path / "abl"
    r = run_here(
        "ablate",
        "relu",
        "--data",
        store,
        "--out",
        out,
        *TINY,
        "--epochs",
        "3",
        "--target-error",
        "0.7",
        "--targets",
        "0.5",
        "0.6",
        "--lrs",
        "0.01",
        "0.1",
        "1",
    )
    assert r.returncode == 0, r.stderr
    relu = json.loads((out / "summary.json").read_text())["studies"]["relu"]
    assert set(relu["epochs_to_target"]) == {"relu", "tanh"} and relu["paper_speedup"] == 6.0
    assert set(relu["chosen_lr"]) == {"relu", "tanh"} and relu["lr_grid"] == [0.01, 0.1, 1]
    assert set(relu["epochs_by_target"]) == {"0.7", "0.6", "0.5"}
    assert relu["epochs_by_target"]["0.7"] == relu["epochs_to_target"]
    rows = _rows(out)
    for target, by_arm in relu["epochs_by_target"].items():  # read off each run's curve
        for arm, (epochs,) in by_arm.items():
            curve = rows[f"relu:{arm}:seed0:best"]["curve"]
            assert epochs == next((at for at, e in curve if e <= float(target)), None)
        expected = (
            None
            if None in by_arm["relu"] + by_arm["tanh"]
            else by_arm["tanh"][0] / by_arm["relu"][0]
        )
        assert relu["speedup_by_target"][target] == pytest.approx(expected)
    table = (out / "ablations.md").read_text()
    at = [table.index(f"| relu (§3.1, Figure 1) to {t} |") for t in ("70%", "60%", "50%")]
    assert at == sorted(at)  # a row per target, the paper's first
    sweep = [r for r in rows.values() if r["config"].get("sweep")]
    assert len(sweep) == 2 * 3  # both arms, the whole grid, on seed 0
    for arm in ("relu", "tanh"):  # the chosen rate is the arm's fastest
        reached = {
            r["config"]["lr"]: r["final"]["epochs_to_target"] for r in sweep if r["arm"] == arm
        }
        best = min(reached, key=lambda lr: 1e9 if reached[lr] is None else reached[lr])
        assert rows[f"relu:{arm}:seed0:best"]["config"]["lr"] == best
        assert rows[f"relu:{arm}:seed0:best"]["config"]["activation"] == arm
    img = np.asarray(Image.open(out / "figure1.png").convert("RGB")).reshape(-1, 3).astype(int)
    blue = ((img[:, 2] > 150) & (img[:, 0] < 80)).sum()
    red = ((img[:, 0] > 180) & (img[:, 2] < 80)).sum()
    assert blue > 50 and red > 50  # a ReLU line and a tanh line


def test_a_killed_ablate_resumes_and_keeps_what_finished(store, tmp_path):
    out = tmp_path / "abl"
    args = [
        sys.executable,
        "-m",
        "alexnet",
        "ablate",
        "lrn",
        "--data",
        str(store),
        "--out",
        str(out),
        *TINY,
        "--epochs",
        "2",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    results, deadline = out / "results.jsonl", time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if results.is_file() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "ablate ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _rows(out)
    assert len(first) == 1
    r = run_here("ablate", "lrn", "--data", store, "--out", out, *TINY, "--epochs", "2")
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    assert set(rows) == {
        "alexnet:paper:seed0",
        "alexnet:no-lrn:seed0",
        "alexnet:alpha-undivided:seed0",
    }
    for rid, row in first.items():
        assert rows[rid] == row  # finished runs are kept as they were
    assert all(len(r["curve"]) == 2 for r in rows.values())
    paper = rows["alexnet:paper:seed0"]["config"]
    other = rows["alexnet:alpha-undivided:seed0"]["config"]  # the other LRN convention
    assert {k for k in paper if k != "out" and paper[k] != other[k]} == {"lrn_alpha_over_n"}
    assert paper["lrn_alpha_over_n"] is True
    lrn = json.loads((out / "summary.json").read_text())["studies"]["lrn"]
    assert set(lrn["top1_delta_by_arm"]) == {"no-lrn", "alpha-undivided"}
    table = (out / "ablations.md").read_text()
    assert "no-lrn " in table and "alpha-undivided " in table


def test_epochs_to_converge_is_the_first_epoch_within_a_point_of_the_last():
    from alexnet.studies.ablate import epochs_to_converge

    errors = [0.5, 0.3, 0.205, 0.25, 0.2]  # epoch 3 is within a point, epoch 4 is not
    history = [{"epoch": i + 1, "val_top1_error": e} for i, e in enumerate(errors)]
    assert epochs_to_converge(history) == 3
    assert epochs_to_converge(history[:1]) == 1


def test_dropouts_iterations_are_counted_to_an_error_every_run_reaches():
    from alexnet.studies.ablate import _to_common_error

    def run(errors):
        return {"curve": [{"epoch": i + 1, "val_top1_error": e} for i, e in enumerate(errors)]}

    # no dropout: fast, then overfits (best 0.12); dropout: slow, ends lower
    rows = {"paper": [run([0.4, 0.2, 0.15, 0.12, 0.1])], "no-dropout": [run([0.2, 0.12, 0.13])]}
    r = _to_common_error(rows)
    assert r["common_error"] == 0.12
    assert r["epochs_to_common_error"] == {"paper": [4], "no-dropout": [2]}
    assert r["common_error_ratio"] == 2.0


def test_the_runs_spread_over_gpus_are_each_needed_run_once(tmp_path):
    from alexnet.studies.design import AblateConfig, Results
    from alexnet.studies.runs import pending_trains

    cfg = AblateConfig(["towers", "ten-crop", "relu", "dropout"], "S", str(tmp_path), seeds=2)
    results = Results(tmp_path)
    jobs = pending_trains(cfg, results)
    assert sorted((arm, seed) for arm, _, seed in jobs) == sorted(
        (arm, seed) for arm in ("paper", "one-tower", "no-dropout") for seed in (0, 1)
    )  # the paper arm once per seed, shared by every study; no small-net run
    results.rows["alexnet:paper:seed0"] = {"id": "alexnet:paper:seed0"}
    assert ("paper", {}, 0) not in pending_trains(cfg, results)


def test_arms_picks_the_arms_a_claim_needs(tmp_path):
    from alexnet.runtime.errors import UsageError
    from alexnet.studies.design import AblateConfig, Results
    from alexnet.studies.runs import pending_trains

    cfg = AblateConfig(["lrn", "overlap"], "S", str(tmp_path), seeds=2, arms="paper,no-lrn")
    jobs = pending_trains(cfg, Results(tmp_path))
    assert sorted((arm, seed) for arm, _, seed in jobs) == [
        ("no-lrn", 0),
        ("no-lrn", 1),
        ("paper", 0),
        ("paper", 1),
    ]  # no alpha-undivided, no no-overlap
    for arms in ("paper,no-pca", ","):
        with pytest.raises(UsageError, match="the studies asked have the arms alpha-undivided"):
            AblateConfig(["lrn", "overlap"], "S", str(tmp_path), arms=arms).check()


def test_a_schedule_given_to_ablate_reaches_every_run(tmp_path, monkeypatch):
    """--schedule constant (dropout's convergence claim needs a run that is not stopped
    by its schedule) is what each AlexNet-scale run trains with; left out, the recipe's.
    So is --checkpoint-every, which keeps a stopped full-size arm's steps."""
    from alexnet.studies import runs
    from alexnet.studies.design import AblateConfig, Results
    from alexnet.train import loop

    seen = []

    def fake_train(cfg, resume=None):
        seen.append(cfg)
        return {
            "history": [
                {
                    "epoch": 1,
                    "train_top1_error": 0.5,
                    "val_top1_error": 0.5,
                    "val_top5_error": 0.1,
                    "train_loss": 1.0,
                }
            ]
        }

    monkeypatch.setattr(loop, "train", fake_train)
    for schedule in ("constant", None):
        out = tmp_path / str(schedule)
        out.mkdir()
        cfg = AblateConfig(
            studies=["dropout"],
            data="unused",
            out=str(out),
            recipe="fast",
            schedule=schedule,
            checkpoint_every=0 if schedule else 150,
        )
        row = runs.run_train(cfg, "paper", {}, 0, Results(out), lambda *a: None)
        assert row["config"]["schedule"] == schedule
    assert [c.schedule for c in seen] == ["constant", None]
    assert [c.checkpoint_every for c in seen] == [0, 150]


def test_the_full_size_figure_1_is_read_off_each_runs_logged_steps(store, tmp_path):
    """`activation`: the paper net against tanh, timed as Figure 1 is (the fractional epoch
    at which the running training error first reaches the target), with the test accuracy
    at the end of that epoch."""
    out = tmp_path / "abl"
    r = run_here(
        "ablate", "activation", "--data", store, "--out", out, *TINY, "--target-error", "0.999"
    )
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    s = json.loads((out / "summary.json").read_text())["studies"]["activation"]
    assert rows["alexnet:tanh:seed0"]["config"]["activation"] == "tanh"
    for arm in ("paper", "tanh"):
        row = rows[f"alexnet:{arm}:seed0"]
        assert all(0 < at <= 1 and 0 <= err <= 1 for at, err in row["steps"])  # epoch 1's
        crossed = next((at for at, err in row["steps"] if err <= 0.999), None)
        assert s["epochs_to_target"][arm] == [crossed]
        accuracy = None if crossed is None else 1 - row["curve"][0]["val_top1_error"]
        assert s["test_accuracy_at_target"][arm] == [accuracy]
    epochs = s["epochs_to_target"]
    if None in epochs["paper"] + epochs["tanh"]:  # a tiny run may never cross: no speed-up
        assert s["speedup"] is None
    else:
        assert s["speedup"] == epochs["tanh"][0] / epochs["paper"][0]
    assert "activation (§3.1, Figure 1) to 100%" in (out / "ablations.md").read_text()
