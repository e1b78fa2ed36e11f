"""torch.distributed set-up from torchrun's environment: NCCL on GPUs, gloo on CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process sits in a torchrun job (rank 0 of 1 outside one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world > 1


def init_from_env(device_type: str) -> DistInfo:
    """Join the job torchrun describes (NCCL on GPUs, gloo on CPU); a no-op outside one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank)


def shutdown() -> None:
    """Leave the job, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    """Sum a small host tensor (counters) over `group`; a no-op outside a job. NCCL
    reduces device tensors only, so it travels through this rank's GPU there."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    on = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    t = t.to(on)
    dist.all_reduce(t, group=group)
    return t.cpu()
