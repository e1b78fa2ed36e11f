"""Two-tower model parallelism (§3.2) against the single-device grouped model."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from alexnet import create_model
from conftest import TRAIN_FAST, prepare_store, run_here

HIDDEN = 256  # fc6 and fc7 narrowed from 4096: the slicing is by shape, and 4 float64
# workers of the full-width net held 13 GB between them


def _full(num_classes=7):
    torch.manual_seed(0)
    model = create_model("paper", num_classes=num_classes, dropout=0.0)
    c = model.classifier
    c.fc6 = torch.nn.Linear(c.fc6.in_features, HIDDEN)
    c.fc7 = torch.nn.Linear(HIDDEN, HIDDEN)
    c.fc8 = torch.nn.Linear(HIDDEN, num_classes)
    model = model.double()
    for p in model.parameters():  # random biases too, so that a mis-sliced one shows
        p.data.normal_(0, 0.02)
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 224, 224, generator=g, dtype=torch.float64) * 40, torch.tensor(
        [1, 4, 6, 2]
    )


def _worker(rank, store_dir, out_path):
    from alexnet.model.towers import (
        TowerParallelAlexNet,
        full_optimizer_state,
        load_full_optimizer_state,
        make_layout,
        unshard,
    )

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store_dir}/rendezvous", rank=rank, world_size=4
    )
    layout = make_layout(rank, 4)  # 2 towers x 2 replicas
    tower = TowerParallelAlexNet(_full(), layout.tower, layout.pair)
    net = torch.nn.parallel.DistributedDataParallel(tower, process_group=layout.same_tower)
    x, y = _batch()
    half = slice(2 * layout.replica, 2 * layout.replica + 2)  # each replica half the batch
    logits = net(x[half])
    torch.nn.functional.cross_entropy(logits, y[half]).backward()
    grads = {
        n: unshard(p.grad, layout.pair)
        for n, p in zip(tower.full_names(), tower.parameters(), strict=True)
    }
    opt = torch.optim.AdamW(tower.parameters(), lr=1e-3)
    opt.step()
    opt_state = full_optimizer_state(opt, layout.pair)
    fresh = torch.optim.AdamW(tower.parameters(), lr=1e-3)  # the state goes back in, sliced
    load_full_optimizer_state(fresh, opt_state, layout.tower)
    same = all(
        torch.equal(fresh.state_dict()["state"][i][k], v)
        for i, s in opt.state_dict()["state"].items()
        for k, v in s.items()
    )
    state = tower.full_state_dict(keep=layout.tower == 0)  # the writer's partner keeps none
    assert bool(state) == (layout.tower == 0)
    all_logits = [torch.empty_like(logits) for _ in range(4)]
    dist.all_gather(all_logits, logits.detach().contiguous())
    if rank == 0:
        torch.save(
            {
                "logits": torch.cat(all_logits[::2]),
                "grads": grads,
                "state": state,
                "opt": opt_state,
                "reloaded": same,
                "bytes": tower.exchanged_bytes,
            },
            out_path,
        )
    dist.destroy_process_group()


def test_two_towers_times_two_replicas_equal_the_grouped_model(tmp_path):
    # 7 classes: fc8 splits 4 + 3, which the gathers must handle too
    out = tmp_path / "mp.pt"
    mp.spawn(_worker, args=(str(tmp_path), str(out)), nprocs=4, join=True)
    got = torch.load(out, weights_only=True)
    full = _full()
    x, y = _batch()
    logits = full(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert torch.allclose(got["logits"], logits, rtol=1e-10, atol=1e-12)
    for name, p in full.named_parameters():
        assert torch.allclose(got["grads"][name], p.grad, rtol=1e-9, atol=1e-12), name
    opt = torch.optim.AdamW(full.parameters(), lr=1e-3)
    opt.step()
    for name, p in full.named_parameters():  # checkpoints interchangeable, optimiser too
        # (Adam divides by sqrt(v): tiny gradients carry their 1e-9 error into the step)
        assert torch.allclose(got["state"][name], p.detach(), rtol=1e-9, atol=1e-10), name
    for i, s in opt.state_dict()["state"].items():
        for k, v in s.items():
            assert torch.allclose(got["opt"]["state"][i][k], v, rtol=1e-9, atol=1e-15), (i, k)
    assert got["reloaded"]
    # activations rank 0 sends per image: pool2 128x13x13, pool5 128x6x6, its half of
    # fc6 and of fc7, and its 4 of the 7 logits, in float64; 2 images per replica
    per_image = (128 * 13 * 13 + 128 * 6 * 6 + HIDDEN // 2 * 2 + 4) * 8
    assert got["bytes"] == per_image * 2


# ---------------------------------------------------------------- alexnet train --model-parallel
FAST = TRAIN_FAST
# He init and unit-scale inputs: under the paper's N(0, 0.01) init float32 gradients of
# conv1-3 are only good to a few percent (measured against float64), too loose to compare;
# float32 throughout (auto is bf16 on a CPU with AMX), whose sums agree to 1e-4 in any order
COMMON = [
    "--precision",
    "fp32",
    "--epochs",
    "1",
    "--recipe",
    "paper",
    "--lr",
    "0.001",
    "--dropout",
    "0",
    "--init",
    "kaiming",
    "--input-scale",
    "0.015625",
    *FAST,
]


def _torchrun(nproc, *args):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            "-m",
            "alexnet",
            "train",
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]


def _ckpt(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def _assert_same_training(a, b):
    # float32: rounding differs between one device and two, and flips a few ReLU gates
    # and pooling maxima near ties, so the check is on norms; slicing, sampling or
    # optimiser-state mistakes show as errors of order 1 (float64 equality is above)
    assert a["global_step"] == b["global_step"]
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5), k
    for i, s in a["optimizer"]["state"].items():
        u, v = s["velocity"], b["optimizer"]["state"][i]["velocity"]
        assert (u - v).norm() <= 1e-2 * u.norm(), i
    assert a["history"][0]["val_top1_error"] == b["history"][0]["val_top1_error"]


@pytest.fixture(scope="module")
def store(module_dir):
    root = module_dir / "mp"
    rng = np.random.default_rng(0)
    # textured images: on flat ones max-pooling windows hold near-ties, and float32
    # rounding (which differs between one device and two) flips where gradients go
    for c in range(3):
        (root / "src" / f"c{c}").mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (50, 60 + 5 * i, 3)).astype(np.uint8)
            pixels[..., c] //= 2
            Image.fromarray(pixels).save(root / "src" / f"c{c}" / f"{i}.jpg", quality=95)
    prepare_store(root / "src", root / "store", val_fraction=0.34)
    return root / "store"


@pytest.fixture(scope="module")
def reference(store, module_dir):
    """One process, batch 4, all 3 steps of the epoch; and the same stopped after 1 step."""
    root = module_dir / "ref"
    for name, extra in (("full", []), ("half", ["--max-steps", "1"])):
        r = run_here(
            "train", "--data", store, "--out", root / name, "--batch-size", "4", *COMMON, *extra
        )
        assert r.returncode == 0, r.stderr
    return root


def test_model_parallel_checkpoints_resume_either_way(store, reference, tmp_path):
    # two towers, stopped after 1 step, resumed to the end on one device
    mp = tmp_path / "mp"
    _torchrun(
        2,
        "--data",
        store,
        "--out",
        mp,
        "--batch-size",
        "4",
        "--model-parallel",
        "2",
        "--max-steps",
        "1",
        *COMMON,
    )
    half = _ckpt(mp)
    assert half["config"]["model_parallel"] == 2 and half["global_step"] == 1
    assert set(half["model"]) == set(_ckpt(reference / "half")["model"])  # a full state dict
    r = run_here("train", "--resume", mp, *FAST)
    assert r.returncode == 0, r.stderr
    _assert_same_training(_ckpt(reference / "full"), _ckpt(mp))
    # and a one-device checkpoint resumed on two towers
    _torchrun(2, "--resume", reference / "half", "--model-parallel", "2", *FAST)
    _assert_same_training(_ckpt(reference / "full"), _ckpt(reference / "half"))


def test_two_gloo_processes_equal_one_with_the_global_batch(store, reference, tmp_path):
    # plain data parallelism: 2 processes x 2 images against 1 process x 4
    run = tmp_path / "dp"
    _torchrun(2, "--data", store, "--out", run, "--batch-size", "2", *COMMON)
    _assert_same_training(_ckpt(reference / "full"), _ckpt(run))


def test_model_times_data_parallel_equals_one_process(store, reference, tmp_path):
    # 4 processes = 2 towers x 2 replicas, each replica half of the global batch of 4
    run = tmp_path / "mpdp"
    _torchrun(
        4, "--data", store, "--out", run, "--batch-size", "2", "--model-parallel", "2", *COMMON
    )
    _assert_same_training(_ckpt(reference / "full"), _ckpt(run))


def test_model_parallel_refusals(store, tmp_path):
    cases = [
        (["--model-parallel", "2"], "needs a multiple of 2 processes"),
        (["--model-parallel", "3"], "invalid choice"),
        (["--model-parallel", "2", "--variant", "one-tower"], "has none"),
    ]
    for args, message in cases:
        r = run_here("train", "--data", store, "--out", tmp_path / "r", *args, *FAST)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
