"""The forms ONNX files carry: the LRN's window sums as one convolution, and the
adaptive pooling as two averaging matrices. `onnx_ready` puts them in a copy of a net
for torch.onnx.export; the net itself never asks whether it is being exported.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..model.lrn import LocalResponseNorm, local_response_norm
from .lrn import band
from .plan import replace_modules


def onnx_formula(x, size: int, alpha: float, beta: float, k: float, groups: int = 1):
    """§3.3's formula with the window sums as a 1x1 convolution by the band matrix,
    alpha in its weights and k its bias: onnxruntime runs it faster than shifted slices
    or ONNX's own LRN operator (docs/benchmarks.md, "ONNX in onnxruntime").
    In float32 at least, as the formula is."""
    if x.dim() != 4:
        return local_response_norm(x, size, alpha, beta, k, groups)
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    c = xf.shape[1]
    weight = (band(c, size, groups, xf.dtype, xf.device) * alpha)[:, :, None, None]
    s = nn.functional.conv2d(xf * xf, weight, torch.full((c,), k, dtype=xf.dtype))
    return (xf * s.pow(-beta)).to(x.dtype)


class OnnxLRN(LocalResponseNorm):
    """LocalResponseNorm as onnx_formula computes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onnx_formula(x, self.size, self.alpha, self.beta, self.k, self.groups)


class MatrixAvgPool(nn.Module):
    """nn.AdaptiveAvgPool2d's windows as two averaging matrices, for ONNX, which has no
    adaptive pooling (torch's exporter stops at it): output row i averages input rows
    floor(i H / n) to ceil((i + 1) H / n) - 1, as adaptive_avg_pool2d does. The sizes
    are the export's fixed input size."""

    def __init__(self, output_size: int):
        super().__init__()
        self.output_size = output_size

    def _averaging(self, n: int, dtype) -> torch.Tensor:
        m = self.output_size
        i, j = torch.arange(m), torch.arange(n)
        lo, hi = i * n // m, -(-(i + 1) * n // m)
        inside = ((j >= lo[:, None]) & (j < hi[:, None])).to(dtype)
        return inside / inside.sum(1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = (int(n) for n in x.shape[-2:])
        return self._averaging(h, x.dtype) @ x @ self._averaging(w, x.dtype).T


def onnx_ready(model: nn.Module) -> nn.Module:
    """A copy of `model` with the ONNX forms in place of the LRN and adaptive pooling
    modules: the same function, in ops ONNX runs well."""

    def onnx_form(module: nn.Module) -> nn.Module | None:
        if isinstance(module, LocalResponseNorm):
            return OnnxLRN.like(module)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            size = module.output_size
            return MatrixAvgPool(size if isinstance(size, int) else size[0])
        return None

    return replace_modules(copy.deepcopy(model), onnx_form)
