"""Local response normalisation, §3.3 of the paper (docs/paper.md):

    b[i] = a[i] / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a[j]^2) ** beta

`alpha` is the coefficient on the window's sum as given: the paper net passes 1e-4 / n,
as cuda-convnet computed it, or 1e-4 as the paper prints it (model/net.py chooses;
nn.LocalResponseNorm and Caffe take alpha and divide it by n themselves). With groups
the window stays inside each group of channels: each tower's maps (§3.2).

One formula in plain differentiable ops, so that autograd (to any order), torch.func,
TorchScript, torch.fx, torch.export, ONNX, torch.compile and torchlens all see what it
computes. It runs in the maps' own dtype, with sqrt(alpha) applied before squaring:
alpha * a^2 stays in fp16's range where a^2 alone overflows it (above 256). The fast
CPU passes that replace it in training and inference live in kernels/lrn.py, tested
against it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def local_response_norm(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int = 1
) -> torch.Tensor:
    """§3.3's normalisation of an (N, C, ...) tensor, per group of channels."""
    return x * (k + window_sum((x * alpha**0.5).square(), size, groups)).pow(-beta)


def window_sum(squares: torch.Tensor, size: int, groups: int = 1) -> torch.Tensor:
    """The sum in §3.3's denominator: each map's value summed with its size - 1 nearest
    maps' (size // 2 on each side) within its group of channels, for an (N, C, ...)
    tensor of squares."""
    squares = squares.unflatten(1, (groups, -1))  # (N, groups, C/groups, ...)
    half, channels = size // 2, squares.shape[2]
    # zeros beyond each group's first and last maps: the window is clipped there
    edged = F.pad(squares, [0, 0] * (squares.dim() - 3) + [half, half])
    window = edged.narrow(2, 0, channels)
    for i in range(1, size):
        window = window + edged.narrow(2, i, channels)
    return window.flatten(1, 2)


# torch.fx (torchvision's create_feature_extractor) records the LRN as one call, as it
# does nn.LocalResponseNorm's, rather than the ops inside it
torch.fx.wrap("local_response_norm")


class LocalResponseNorm(nn.Module):
    """§3.3's LRN (docs/paper.md): `alpha` is the coefficient on the window's sum of
    squares as given (a caller following Caffe passes alpha / size); with groups, the
    window stays inside each group of channels (each tower's maps)."""

    def __init__(self, size: int, alpha: float, beta: float, k: float, groups: int = 1):
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.groups)

    @classmethod
    def like(cls, lrn: LocalResponseNorm) -> LocalResponseNorm:
        """This class's module with `lrn`'s constants (a kernel in place of the plain
        module, or the plain one back)."""
        return cls(lrn.size, lrn.alpha, lrn.beta, lrn.k, lrn.groups)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"groups={self.groups} (alpha multiplies the window sum)"
        )
