"""The paper's two-GPU model parallelism (§3.2), for real, over torch.distributed.

Rank r of a pair holds tower r: half the kernels of every conv layer and half the
neurons of every fully connected layer. conv1-conv2 and conv4-conv5 run locally; the
inputs of conv3 and of each fully connected layer are gathered from both towers. fc6,
fc7 and fc8 are split by output neurons. With the same weights and batch it computes
what the single-device grouped model computes (groups=2 is the same split; LRN is per
tower in both).

Every tower parameter is the tower's slice of the full parameter along dim 0 (output
kernels or neurons; conv1 and conv3 keep all their input channels, conv2/4/5 are
grouped already), so one rule (`shard`) slices weights and optimiser state alike, and
one gather reassembles them: checkpoints stay single-device checkpoints.

Model x data parallelism: 2·R processes form R pairs. Ranks 2i and 2i+1 are the two
towers of replica i and see the same batch; the ranks that hold the same tower in
different replicas average their gradients (DDP over that group).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .lrn import LocalResponseNorm
from .net import TOWERS, AlexNet, _activation

# tower module -> its name in the single-device `paper` model, in parameter order
FULL_NAMES = {
    "conv1": "features.conv1",
    "conv2": "features.conv2",
    "conv3": "features.conv3",
    "conv4": "features.conv4",
    "conv5": "features.conv5",
    "fc6": "classifier.fc6",
    "fc7": "classifier.fc7",
    "fc8": "classifier.fc8",
}


def shard(t: torch.Tensor, tower: int) -> torch.Tensor:
    """Tower `tower`'s slice of a full parameter (or of its optimiser state): dim 0,
    split in half, the first tower taking the odd one out (fc8 with an odd class count)."""
    n = t.shape[0]
    bounds = [0, (n + 1) // 2, n]
    return t[bounds[tower] : bounds[tower + 1]]


@dataclass
class Layout:
    """Where this process sits in a model x data parallel job."""

    tower: int  # which tower this rank holds
    replica: int  # which copy of the two-tower model
    replicas: int
    pair: object  # process group of this replica's two towers
    same_tower: object  # process group of the ranks holding this tower (one per replica)


def make_layout(rank: int, world: int) -> Layout:
    """Create the process groups (every rank creates every group, in one order)."""
    if world % TOWERS:
        raise ValueError(
            f"model parallelism over {TOWERS} towers needs an even number of processes, not {world}"
        )
    replicas = world // TOWERS
    pair = same_tower = None
    for i in range(replicas):
        g = dist.new_group([TOWERS * i + t for t in range(TOWERS)])
        if rank // TOWERS == i:
            pair = g
    for t in range(TOWERS):
        g = dist.new_group([TOWERS * i + t for i in range(replicas)])
        if rank % TOWERS == t:
            same_tower = g
    return Layout(rank % TOWERS, rank // TOWERS, replicas, pair, same_tower)


class _Gather(torch.autograd.Function):
    """Concatenate both towers' tensors along `dim`.

    Backward: if the towers use the gathered tensor for different work (tower layers),
    each one's gradient is a partial sum, so the gradients are summed across the pair
    and each rank keeps its own slice. If the use downstream is replicated (the logits,
    on which both towers compute the same loss), each rank keeps its slice as it is.
    """

    @staticmethod
    def forward(ctx, x, dim: int, replicated: bool, group):
        rank = dist.get_rank(group)
        parts = _all_gather_uneven(x.contiguous(), dim, group)
        sizes = [p.shape[dim] for p in parts]
        ctx.dim, ctx.replicated, ctx.group = dim, replicated, group
        ctx.offset, ctx.size = sum(sizes[:rank]), sizes[rank]
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        if not ctx.replicated:
            dist.all_reduce(grad, group=ctx.group)
        return grad.narrow(ctx.dim, ctx.offset, ctx.size).contiguous(), None, None, None


def _all_gather_uneven(x: torch.Tensor, dim: int, group=None) -> list[torch.Tensor]:
    """all_gather of tensors that may differ in size along `dim` (fc8 with an odd count)."""
    world = dist.get_world_size(group)
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([x.shape[dim]], device=x.device), group=group)
    sizes = [int(s.item()) for s in sizes]
    top = max(sizes)
    if top != x.shape[dim]:
        pad = list(x.shape)
        pad[dim] = top - x.shape[dim]
        x = torch.cat([x, x.new_zeros(pad)], dim=dim)
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x, group=group)
    return [p.narrow(dim, 0, n) for p, n in zip(parts, sizes, strict=True)]


def unshard(t: torch.Tensor, group=None) -> torch.Tensor:
    """The full tensor from both towers' slices (the inverse of `shard`)."""
    return torch.cat(_all_gather_uneven(t.contiguous(), 0, group))


def _tower_conv(full: nn.Conv2d) -> nn.Conv2d:
    # conv1 and conv3 (groups=1) see every input channel; conv2/4/5 (groups=2) their own
    in_channels = full.in_channels // full.groups
    return nn.Conv2d(
        in_channels,
        full.out_channels // TOWERS,
        full.kernel_size,
        full.stride,
        full.padding,
        device="meta",
    )


def _tower_linear(full: nn.Linear, tower: int) -> nn.Linear:
    return nn.Linear(full.in_features, shard(full.weight, tower).shape[0], device="meta")


class TowerParallelAlexNet(nn.Module):
    """One tower of a `paper` AlexNet; both ranks of `group` call it on the same batch."""

    def __init__(self, full: AlexNet, tower: int, group=None):
        super().__init__()
        if full.variant != "paper":
            raise ValueError("model parallelism splits the paper net's two towers only")
        f, c = full.features, full.classifier
        self.tower, self.group = tower, group
        self.pad1 = f.pad1
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
            setattr(self, name, _tower_conv(getattr(f, name)))
        has_lrn = hasattr(f, "norm1")
        self.norm1 = _tower_lrn(f.norm1) if has_lrn else nn.Identity()
        self.norm2 = _tower_lrn(f.norm2) if has_lrn else nn.Identity()
        self.act = _activation(full.options)
        self.pool = f.pool1
        for name in ("fc6", "fc7", "fc8"):
            setattr(self, name, _tower_linear(getattr(c, name), tower))
        self.drop = nn.Dropout(c.drop6.p)
        self.num_classes = c.fc8.out_features
        self.exchanged_bytes = 0  # bytes this rank sent in the last forward
        self.reduced_bytes = 0  # size of the gradients its backward all-reduces
        # built on the meta device (no init draws from the global RNG), then filled
        w = f.conv1.weight
        self.to_empty(device=w.device).to(w.dtype)
        self.load_full_state_dict(full.state_dict())

    def _gather(self, x, replicated=False):
        self.exchanged_bytes += x.numel() * x.element_size() * (TOWERS - 1)
        if not replicated:
            self.reduced_bytes += x.numel() * x.element_size() * TOWERS
        return _Gather.apply(x, 1, replicated, self.group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.exchanged_bytes = self.reduced_bytes = 0
        a = self.act
        h = self.pool(self.norm1(a(self.conv1(self.pad1(x)))))
        h = self.pool(self.norm2(a(self.conv2(h))))
        h = a(self.conv3(self._gather(h)))  # §3.2: conv3 takes both towers' maps
        h = self.pool(a(self.conv5(a(self.conv4(h)))))
        h = self._gather(h).flatten(1)  # fc6 sees all 9216 inputs
        h = self._gather(self.drop(a(self.fc6(h))))
        h = self._gather(self.drop(a(self.fc7(h))))
        return self._gather(self.fc8(h), replicated=True)

    def full_names(self) -> list[str]:
        """The full model's name of each of this module's parameters, in order."""
        return [
            f"{FULL_NAMES[m]}.{p}" for m, p in (n.split(".") for n, _ in self.named_parameters())
        ]

    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take this tower's half of a single-device model's state_dict."""
        with torch.no_grad():
            for name, p in zip(self.full_names(), self.parameters(), strict=True):
                p.copy_(shard(state[name], self.tower))

    def full_state_dict(self, keep: bool = True) -> dict[str, torch.Tensor]:
        """The whole net's state_dict, as the single-device `paper` model names it,
        assembled from both towers (a collective: both ranks call it). keep=False: take
        part without holding the result (the rank that does not write it), so that a
        second full copy of the net is never held, one tensor at a time at most."""
        full = {}
        for name, p in zip(self.full_names(), self.parameters(), strict=True):
            t = unshard(p.detach(), self.group)
            if keep:
                full[name] = t
        return full


def full_optimizer_state(optimizer: torch.optim.Optimizer, group=None, keep: bool = True) -> dict:
    """The optimiser's state_dict as the single-device model's optimiser would hold it.

    The tower's parameters come in the full model's order (conv1..fc8, weight then
    bias), so parameter indices agree; per-parameter tensors are reassembled like the
    parameters and scalars (Adam's step) are the same on both towers. A collective;
    keep=False as for `full_state_dict`.
    """
    state = optimizer.state_dict()
    full = {}
    for idx in sorted(state["state"]):
        entry = {}
        for k, v in sorted(state["state"][idx].items()):
            t = unshard(v, group) if torch.is_tensor(v) and v.dim() > 0 else v
            if keep:
                entry[k] = t
        full[idx] = entry
    return {"state": full if keep else {}, "param_groups": state["param_groups"]}


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, tower: int) -> None:
    """Load this tower's half of a single-device optimiser state (full_optimizer_state's inverse)."""
    sliced = {
        idx: {k: shard(v, tower) if torch.is_tensor(v) and v.dim() > 0 else v for k, v in s.items()}
        for idx, s in state["state"].items()
    }
    optimizer.load_state_dict({"state": sliced, "param_groups": state["param_groups"]})


def _tower_lrn(full: LocalResponseNorm) -> LocalResponseNorm:
    return LocalResponseNorm(full.size, full.alpha, full.beta, full.k, groups=1)
