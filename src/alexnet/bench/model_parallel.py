"""`alexnet bench train --model-parallel 2`: the paper's two-tower split (§3.2) on two
processes against one device training the whole net, with the bytes the towers
exchange per step.

With two GPUs: tower r on cuda:r (NCCL) vs the whole net on cuda:0. On a CPU: two gloo
processes sharing the cores vs one process using them all; a comparison of how the
split costs, not of devices.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch

from ..kernels.plan import resolve_plan
from ..model import create_model
from ..runtime.device import pick_device, precision_name
from .common import BenchResult, Runner, check_counts, interleaved


@dataclass
class ModelParallelBench(BenchResult):
    device: str
    backend: str
    batch_size: int
    steps: int
    rounds: int
    precision: str
    single_threads: int
    tower_threads: int
    model_parallel_img_s: float  # the slower tower sets the pace of both
    forward_bytes_sent_per_rank: int
    backward_allreduce_bytes: int
    bytes_sent_per_rank_per_step: int
    bytes_sent_per_image: int
    single_img_s: float
    ratio_vs_single: float
    gpus: list[str] | None = None

    def lines(self) -> list[str]:
        where = (
            " + ".join(self.gpus)
            if self.gpus
            else f"CPU: 2 processes x {self.tower_threads} threads vs 1 x {self.single_threads}"
        )
        mib = 2**20
        return [
            f"model parallel (2 towers, {self.backend}), batch {self.batch_size}, "
            f"{self.precision}, best of {self.rounds} rounds; {where}",
            f"bytes sent per rank per step: {self.bytes_sent_per_rank_per_step / mib:.1f} MiB "
            f"(forward gathers {self.forward_bytes_sent_per_rank / mib:.1f} MiB, backward "
            f"all-reduce {self.backward_allreduce_bytes / mib:.1f} MiB); "
            f"{self.bytes_sent_per_image / 1024:.0f} KiB per image",
            f"two towers: {self.model_parallel_img_s:.2f} img/s, one device: "
            f"{self.single_img_s:.2f} img/s, ratio {self.ratio_vs_single:.2f}x",
        ]


def bench_model_parallel(
    device: str = "auto",
    batch_size: int = 64,
    steps: int = 2,
    precision: str = "auto",
    rounds: int = 3,
) -> ModelParallelBench:
    """The paper net's step on two towers in two processes against one process, with the
    bytes the towers exchange per step."""
    import torch.multiprocessing as mp

    check_counts({"batch-size": batch_size, "steps": steps, "rounds": rounds})
    dev = pick_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--model-parallel 2 runs on cuda or cpu, not {dev.type}")
    if dev.type == "cuda" and torch.cuda.device_count() < 2:
        raise ValueError(
            "--model-parallel 2 on cuda needs two GPUs; this machine has "
            f"{torch.cuda.device_count()} (use --device cpu to measure the split "
            "on the CPU)"
        )
    plan = resolve_plan(dev, precision)
    amp = plan.amp
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    single = Runner(create_model("paper"), plan, batch_size, True)
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/result.pt"
        args = (tmp, out, dev.type, batch_size, steps, rounds, precision, max(1, threads // 2))
        mp.spawn(_worker, args=args, nprocs=2, join=True)
        towers = torch.load(out, weights_only=True)
    best = interleaved({"single": single}, steps, rounds)["single"]
    return ModelParallelBench(
        device=str(dev),
        backend="nccl" if dev.type == "cuda" else "gloo",
        batch_size=batch_size,
        steps=steps,
        rounds=rounds,
        precision=precision_name(amp),
        single_threads=threads,
        tower_threads=max(1, threads // 2),
        **towers,
        single_img_s=round(best, 2),
        ratio_vs_single=round(towers["model_parallel_img_s"] / best, 3),
        gpus=[torch.cuda.get_device_name(i) for i in range(2)] if dev.type == "cuda" else None,
    )


def _worker(rank, tmp, out, device_type, batch_size, steps, rounds, precision, threads):
    import torch.distributed as dist

    from ..model.towers import TowerParallelAlexNet

    torch.set_num_threads(threads)
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(
        backend, init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=2
    )
    try:
        torch.manual_seed(0)
        dev = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
        tower = TowerParallelAlexNet(create_model("paper"), rank)
        runner = Runner(tower, resolve_plan(dev, precision), batch_size, True)
        rate = interleaved({"towers": runner}, steps, rounds)["towers"]
        rates = [torch.zeros(1, dtype=torch.float64, device=dev) for _ in range(2)]
        dist.all_gather(rates, torch.tensor([rate], dtype=torch.float64, device=dev))
        if rank == 0:
            sent, reduced = tower.exchanged_bytes, tower.reduced_bytes
            torch.save(
                {
                    "model_parallel_img_s": round(min(float(r) for r in rates), 2),
                    "forward_bytes_sent_per_rank": sent,
                    "backward_allreduce_bytes": reduced,
                    # a two-rank ring all-reduce sends half the tensor in its reduce-scatter
                    # and half in its all-gather: the whole tensor's size
                    "bytes_sent_per_rank_per_step": sent + reduced,
                    "bytes_sent_per_image": (sent + reduced) // batch_size,
                },
                out,
            )
        dist.barrier()  # no rank leaves the job while rank 0 still writes (as train does)
    finally:
        dist.destroy_process_group()
