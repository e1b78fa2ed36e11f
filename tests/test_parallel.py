"""Two-tower model parallelism (§3.2) against the single-device grouped model."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alexnet import create_model


def _full(num_classes=10):
    torch.manual_seed(0)
    model = create_model("paper", num_classes=num_classes, dropout=0.0).double()
    for p in model.parameters():  # random biases too, so that a mis-sliced one shows
        p.data.normal_(0, 0.02)
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 224, 224, generator=g, dtype=torch.float64) * 40, torch.tensor(
        [1, 4, 6]
    )


def _worker(rank, store_dir, out_path, num_classes):
    from alexnet.parallel import TowerParallelAlexNet, _gather_uneven

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_dir}/rendezvous", rank=rank,
                            world_size=2)  # fmt: skip
    full = _full(num_classes)
    x, y = _batch()
    tower = TowerParallelAlexNet(full, rank)
    logits = tower(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    state = tower.full_state_dict()
    grads = {}
    names = {"conv1": "features.conv1", "conv2": "features.conv2", "conv3": "features.conv3",
             "conv4": "features.conv4", "conv5": "features.conv5", "fc6": "classifier.fc6",
             "fc7": "classifier.fc7", "fc8": "classifier.fc8"}  # fmt: skip
    for short, long in names.items():
        for p in ("weight", "bias"):
            grads[f"{long}.{p}"] = _gather_uneven(getattr(getattr(tower, short), p).grad)
    if rank == 0:
        torch.save({"logits": logits.detach(), "grads": grads, "state": state,
                    "bytes": tower.exchanged_bytes}, out_path)  # fmt: skip
    dist.destroy_process_group()


def _run(tmp_path, num_classes):
    out = tmp_path / "mp.pt"
    mp.spawn(_worker, args=(str(tmp_path), str(out), num_classes), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def test_two_towers_equal_the_grouped_model(tmp_path):
    # 7 classes: fc8 splits 4 + 3, which the gathers must handle too
    got = _run(tmp_path, num_classes=7)
    full = _full(7)
    x, y = _batch()
    logits = full(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert torch.allclose(got["logits"], logits, rtol=1e-10, atol=1e-12)
    for name, p in full.named_parameters():
        assert torch.equal(got["state"][name], p.detach()), name  # checkpoints interchangeable
        assert torch.allclose(got["grads"][name], p.grad, rtol=1e-9, atol=1e-12), name
    # activations rank 0 sends per image: pool2 128x13x13, pool5 128x6x6, fc6 and fc7
    # 2048 each, and its 4 of the 7 logits, in float64
    per_image = (128 * 13 * 13 + 128 * 6 * 6 + 2048 + 2048 + 4) * 8
    assert got["bytes"] == per_image * len(y)
