"""The recipes on data that looks like photographs: the one `train` picks for an
ImageNet-sized store must not diverge over its first steps; the paper's as printed
does, on few classes (docs/paper.md §5), which is what the first check would miss
without it."""

import json

import pytest

from alexnet.data.demo import build_demo_dataset
from alexnet.train.recipes import choose_recipe
from conftest import prepare_store, run_here

STEPS = 6


@pytest.fixture(scope="module")
def photo_store(tmp_path_factory):
    """Ten classes of drawn photographs (the demo's generator), 12 per class, prepared."""
    root = tmp_path_factory.mktemp("photos")
    build_demo_dataset(root / "src", per_class=12, seed=3, workers=1)
    prepare_store(root / "src", root / "store", val_fraction=0.2)
    return root / "store"


def step_losses(store, out, recipe: str) -> list[float]:
    """Each step's own loss over the first STEPS steps of a seeded float32 run."""
    r = run_here(
        "train",
        "--data",
        store,
        "--out",
        out,
        "--recipe",
        recipe,
        "--batch-size",
        "32",
        "--max-steps",
        STEPS,
        "--log-every",
        "1",
        "--log-updates",
        "--precision",
        "fp32",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-report",
        "--seed",
        "1",
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    assert [x["global_step"] for x in lines] == list(range(1, STEPS + 1))
    assert all(0 < v < 10 for x in lines for v in x["update_ratio"].values())
    return [x["step_loss"] for x in lines]


def test_the_recipe_for_large_stores_does_not_diverge_where_the_papers_does(photo_store, tmp_path):
    large, _ = choose_recipe(None, demo_data=False, starting_weights=False, train_images=1_200_000)
    assert large != "paper"
    chosen = step_losses(photo_store, tmp_path / "chosen", large)
    # ln(10) = 2.30 at the start; noise of a batch of 32 aside, never far above it
    assert max(chosen) < chosen[0] + 0.5, chosen
    paper = step_losses(photo_store, tmp_path / "paper", "paper")
    assert max(paper[1:]) > paper[0] + 3, paper  # the second step's jump, and on


def test_the_first_steps_script_runs_its_arms(photo_store):
    """scripts/first_steps.py, docs/paper.md §5's table, runs its arms."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "first_steps.py"
    spec = importlib.util.spec_from_file_location("first_steps", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    # the arms that change the built net (the others are flags, tested with train), a step
    arms = ("paper", "caffe-init", "bias-0.1", "fc-0.005", "conv345-0.03")
    assert set(arms) <= set(script.ARMS)
    rows = {arm: script.first_steps(str(photo_store), arm, 1, batch_size=8) for arm in arms}
    assert all(len(r["loss"]) == 1 and len(r["update_ratio_steps_1_2"]) == 1 for r in rows.values())
    # the paper's first step moves fc8 by far more than Caffe's init does
    ratio = lambda arm: float(rows[arm]["update_ratio_steps_1_2"][0]["fc8"])  # noqa: E731
    assert ratio("paper") > 5 * ratio("caffe-init")


def test_the_first_steps_script_runs_a_first_epoch(photo_store):
    """--epoch: the arm's first epoch as train runs it, stopped there, then the test split."""
    import importlib.util
    from pathlib import Path

    from alexnet.data.store import Store

    path = Path(__file__).resolve().parent.parent / "scripts" / "first_steps.py"
    spec = importlib.util.spec_from_file_location("first_steps", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    row = script.first_epoch(str(photo_store), "bias-0.1", batch_size=8, precision="fp32")
    epoch = row["epoch"]
    steps = len(Store(photo_store).split("train")) // 8
    assert epoch["epoch"] == 1 and epoch["step"] == steps  # one epoch of the 90, no more
    assert 0 <= epoch["val_top1_error"] <= 1 and epoch["train_loss"] > 0
    assert row["precision"] == "fp32"
