"""The first steps of the paper's recipe, one change at a time (docs/paper.md §5).

    .venv/bin/python scripts/first_steps.py STORE [--steps 20] [--arms paper,bias-0.1,...]
    .venv/bin/python scripts/first_steps.py STORE --epoch --precision bf16 [--arms ...]

For each arm: the loss of each of the first steps and each layer's update against its
weights (|dw| / |w|) at the first two, in float32, seed 0, batch 128, through the
library's own training step. With --epoch, each arm's whole first epoch instead, as
`alexnet train` runs it (the recipe's schedule over its 90 epochs, stopped after the
first): the running training loss every 25 steps, the epoch's training loss and error,
and the test (val) split's top-1 and top-5 error with one centre crop. Most arms are flags
of `alexnet train`; three change the init in ways no flag does (the biases alone,
fc6/fc7 alone, cuda-convnet2's conv3-5 scale), which is why this is a script. Prints a
JSON line per arm.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace

import torch

from alexnet.model.net import learned_layers
from alexnet.runtime.distributed import init_from_env
from alexnet.train import loop
from alexnet.train.config import TrainConfig


def _biases(value: float):
    def change(model):
        for _, m in learned_layers(model):
            if float(m.bias.abs().max()) == 1.0:  # the paper's biases of 1
                m.bias.fill_(value)

    return change


def _redrawn(std: float, layers: tuple[str, ...]):
    """Those layers' weights drawn again from N(0, std^2), each with a generator seeded 1."""

    def change(model):
        for name, m in learned_layers(model):
            if name in layers:
                m.weight.normal_(0.0, std, generator=torch.Generator().manual_seed(1))

    return change


def _scaled(factor: float, layers: tuple[str, ...]):
    """Those layers' weights, as the paper's init drew them, times factor."""

    def change(model):
        for name, m in learned_layers(model):
            if name in layers:
                m.weight.mul_(factor)

    return change


# arm -> (train flags as TrainConfig fields, a change to the built model)
ARMS = {
    "paper": ({}, None),
    "alpha-printed": ({"lrn_alpha_over_n": False}, None),
    "pixels/64": ({"input_scale": 1 / 64}, None),
    "fc-0.005": ({}, _redrawn(0.005, ("fc6", "fc7"))),
    "lr-0.001": ({"lr": 0.001}, None),
    "warm-up": ({"schedule": "warmup-cosine", "warmup_epochs": 1.0}, None),
    "bias-0.1": ({}, _biases(0.1)),
    "caffe-init": ({"init": "caffe"}, None),
    "caffe-init-alpha-printed": ({"init": "caffe", "lrn_alpha_over_n": False}, None),
    "conv345-0.03": ({}, _scaled(3.0, ("conv3", "conv4", "conv5"))),
}


def _trainer(store: str, arm: str, out: str, batch_size: int, precision: str, **more):
    """The arm's trainer, set up as `alexnet train` would, with its change made."""
    fields, change = ARMS[arm]
    cfg = TrainConfig(
        data=store,
        out=out,
        recipe="paper",
        precision=precision,
        report=False,
        progress=False,
        seed=0,
        batch_size=batch_size,
        **fields,
        **more,
    ).resolved()
    t = loop.setup(cfg, None, torch.device("cpu"), init_from_env("cpu"))
    if change is not None:
        with torch.no_grad():
            change(t.model)
    return t


def first_epoch(
    store: str, arm: str, batch_size: int = 128, precision: str = "bf16", images: int | None = None
) -> dict:
    with tempfile.TemporaryDirectory() as out:
        subset = {"train_images": images, "val_images": images}
        t = _trainer(store, arm, out, batch_size, precision, log_every=25, **subset)
        t.cfg = replace(t.cfg, max_steps=t.feed.sampler.steps_per_epoch())
        try:
            epoch = loop.fit(t)["history"][0]
        except loop.TrainingDiverged as e:
            epoch = {"diverged": str(e)}
        finally:
            loop.close(t)
        logged = t.run.steps.read_text().splitlines() if t.run.steps.is_file() else []
        steps = [json.loads(line) for line in logged]
    return {
        "arm": arm,
        "precision": precision,
        "running_loss": {r["global_step"]: round(r["train_loss"], 3) for r in steps},
        "epoch": {k: v for k, v in epoch.items() if k != "time"},
    }


def first_steps(
    store: str, arm: str, steps: int, batch_size: int = 128, precision: str = "fp32"
) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t = _trainer(store, arm, out, batch_size, precision)
        layers = learned_layers(t.model)
        losses, updates = [], []
        batches = t.feed.epoch(0, 0)
        for i in range(steps):
            x, y, step = next(batches)
            before = {n: m.weight.detach().clone() for n, m in layers}
            loop.train_step(t, x, y, step)
            losses.append(round(float(t.last_loss), 3))
            if i < 2:
                updates.append(
                    {
                        n: f"{float((m.weight.detach() - before[n]).norm() / before[n].norm()):.2e}"
                        for n, m in layers
                    }
                )
        loop.close(t)
    return {"arm": arm, "loss": losses, "update_ratio_steps_1_2": updates}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("store")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--epoch", action="store_true", help="the whole first epoch, then the test split"
    )
    p.add_argument(
        "--precision", default=None, help="fp32 (the steps' default) or bf16 (--epoch's)"
    )
    p.add_argument("--images", type=int, default=None, help="train and test on this many (a check)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"of: {', '.join(ARMS)}")
    a = p.parse_args(argv)
    for arm in a.arms.split(","):
        if arm not in ARMS:
            print(f"first_steps: no arm {arm!r} ({', '.join(ARMS)})", file=sys.stderr)
            return 2
        if a.epoch:
            row = first_epoch(a.store, arm, a.batch_size, a.precision or "bf16", a.images)
        else:
            row = first_steps(a.store, arm, a.steps, a.batch_size, a.precision or "fp32")
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
