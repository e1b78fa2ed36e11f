"""The paper's two-GPU model parallelism (§3.2), for real, over torch.distributed.

Rank r of 2 holds tower r: half the kernels of every conv layer and half the neurons
of every fully connected layer. conv1-conv2 and conv4-conv5 run locally; the inputs of
conv3 and of each fully connected layer are gathered from both towers. fc6, fc7 and
fc8 are split by output neurons. With the same weights and batch it computes what the
single-device grouped model computes (groups=2 is the same split; LRN is per tower in
both).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .lrn import LocalResponseNorm
from .model import AlexNet

TOWERS = 2


class _Gather(torch.autograd.Function):
    """Concatenate every rank's tensor along `dim`.

    Backward: if the ranks use the gathered tensor for different work (tower layers),
    each one's gradient is a partial sum, so the gradients are summed across ranks and
    each rank keeps its own slice. If the use downstream is replicated (the logits,
    on which every rank computes the same loss), each rank keeps its slice as it is.
    """

    @staticmethod
    def forward(ctx, x, dim: int, replicated: bool):
        rank = dist.get_rank()
        parts = _all_gather_uneven(x.contiguous(), dim)
        sizes = [p.shape[dim] for p in parts]
        ctx.dim, ctx.replicated = dim, replicated
        ctx.offset, ctx.size = sum(sizes[:rank]), sizes[rank]
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        if not ctx.replicated:
            dist.all_reduce(grad)
        return grad.narrow(ctx.dim, ctx.offset, ctx.size).contiguous(), None, None


def _all_gather_uneven(x: torch.Tensor, dim: int) -> list[torch.Tensor]:
    """all_gather of tensors that may differ in size along `dim` (fc8 with an odd count)."""
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([x.shape[dim]]))
    sizes = [int(s.item()) for s in sizes]
    top = max(sizes)
    if top != x.shape[dim]:
        pad = list(x.shape)
        pad[dim] = top - x.shape[dim]
        x = torch.cat([x, x.new_zeros(pad)], dim=dim)
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return [p.narrow(dim, 0, n) for p, n in zip(parts, sizes, strict=True)]


def gather(x: torch.Tensor, dim: int = 1, replicated: bool = False) -> torch.Tensor:
    return _Gather.apply(x, dim, replicated)


def _slice_conv(full: nn.Conv2d, rank: int, in_slice: slice | None) -> nn.Conv2d:
    out = full.out_channels // TOWERS
    w = full.weight.detach()[rank * out : (rank + 1) * out]
    if in_slice is not None:  # a full conv (groups=1) that sees only its tower's input
        w = w[:, in_slice]
    conv = nn.Conv2d(w.shape[1], out, full.kernel_size, full.stride, full.padding)
    conv.weight = nn.Parameter(w.clone())
    conv.bias = nn.Parameter(full.bias.detach()[rank * out : (rank + 1) * out].clone())
    return conv.to(full.weight.dtype)


def _slice_linear(full: nn.Linear, rank: int) -> nn.Linear:
    bounds = [0, (full.out_features + 1) // 2, full.out_features]
    lo, hi = bounds[rank], bounds[rank + 1]
    lin = nn.Linear(full.in_features, hi - lo)
    lin.weight = nn.Parameter(full.weight.detach()[lo:hi].clone())
    lin.bias = nn.Parameter(full.bias.detach()[lo:hi].clone())
    return lin.to(full.weight.dtype)


class TowerParallelAlexNet(nn.Module):
    """This rank's tower of a `paper` AlexNet; call on the same batch on both ranks."""

    def __init__(self, full: AlexNet, rank: int):
        super().__init__()
        if getattr(full, "variant", None) != "paper":
            raise ValueError("model parallelism splits the paper net's two towers only")
        f, c = full.features, full.classifier
        self.rank = rank
        self.pad1 = f.pad1
        self.conv1 = _slice_conv(f.conv1, rank, slice(None))  # 48 kernels over the image
        self.conv2 = _slice_conv(f.conv2, rank, None)  # groups=2 already: own 48 maps
        self.conv3 = _slice_conv(f.conv3, rank, slice(None))  # sees both towers (gathered)
        self.conv4 = _slice_conv(f.conv4, rank, None)
        self.conv5 = _slice_conv(f.conv5, rank, None)
        has_lrn = hasattr(f, "norm1")
        self.norm1 = _tower_lrn(f.norm1) if has_lrn else nn.Identity()
        self.norm2 = _tower_lrn(f.norm2) if has_lrn else nn.Identity()
        self.act = f.relu1
        self.pool = f.pool1
        self.fc6, self.fc7, self.fc8 = (_slice_linear(c.fc6, rank), _slice_linear(c.fc7, rank),
                                        _slice_linear(c.fc8, rank))  # fmt: skip
        self.drop = nn.Dropout(c.drop6.p)
        self.num_classes = c.fc8.out_features
        self.exchanged_bytes = 0  # bytes this rank sent in the last forward

    def _gather(self, x, replicated=False):
        self.exchanged_bytes += x.numel() * x.element_size() * (TOWERS - 1)
        return gather(x, 1, replicated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.exchanged_bytes = 0
        a = self.act
        h = self.pool(self.norm1(a(self.conv1(self.pad1(x)))))
        h = self.pool(self.norm2(a(self.conv2(h))))
        h = a(self.conv3(self._gather(h)))  # §3.2: conv3 takes both towers' maps
        h = self.pool(a(self.conv5(a(self.conv4(h)))))
        h = self._gather(h).flatten(1)  # fc6 sees all 9216 inputs
        h = self._gather(self.drop(a(self.fc6(h))))
        h = self._gather(self.drop(a(self.fc7(h))))
        return self._gather(self.fc8(h), replicated=True)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole net's state_dict (as the single-device `paper` model names it),
        assembled from both towers: checkpoints stay interchangeable."""
        out = {}
        pairs = [("features.conv1", self.conv1), ("features.conv2", self.conv2),
                 ("features.conv3", self.conv3), ("features.conv4", self.conv4),
                 ("features.conv5", self.conv5), ("classifier.fc6", self.fc6),
                 ("classifier.fc7", self.fc7), ("classifier.fc8", self.fc8)]  # fmt: skip
        for name, module in pairs:
            for p in ("weight", "bias"):
                t = getattr(module, p).detach()
                out[f"{name}.{p}"] = _gather_uneven(t)
        return out


def _tower_lrn(full: LocalResponseNorm) -> LocalResponseNorm:
    return LocalResponseNorm(full.size, full.alpha, full.beta, full.k, groups=1)


def _gather_uneven(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0 (sizes may differ: fc8)."""
    return torch.cat(_all_gather_uneven(t.contiguous(), 0))
