"""The fully connected layers (fc6-fc8), with float32 products on AMD's AVX-512 CPUs
sent to oneDNN rather than to the BLAS.

PyTorch multiplies float32 matrices on the CPU with MKL, which runs its AVX2 code on
AMD CPUs even where they have AVX-512. fc6's forward, input gradient and weight
gradient (batch 64) took 31, 36 and 29 ms there, against 13, 17 and 11 ms through
oneDNN's matmul: 96 ms of a 800 ms float32 training step against 42 (2-core Zen 5
EPYC, 2026-12-03, docs/benchmarks.md). oneDNN is the library PyTorch already uses for
every convolution and for bf16 products; `torch.ops.mkldnn._linear_pointwise` is its
matmul as torch.compile's CPU backend calls it. On Intel CPUs MKL runs its own AVX-512
code, so they keep it, as do bf16, fp16, autocast and traced code (ONNX, torch.export,
torch.compile, torch.fx), for which the layer is nn.Linear exactly.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F


class Linear(nn.Linear):
    """nn.Linear (the same parameters, state dict and results within float32's
    rounding), whose float32 CPU products go to oneDNN where the BLAS is the slower
    (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _onednn(x, self.weight):
            return _OneDNNLinear.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


@functools.cache
def onednn_faster() -> bool:
    """Whether float32 products go to oneDNN on this machine's CPU: an AMD CPU with
    AVX-512, with PyTorch's oneDNN matmul present."""
    from ..runtime.device import cpu_flags, cpu_vendor

    return (
        cpu_vendor() == "AuthenticAMD"
        and "avx512f" in cpu_flags()
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def _onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        not isinstance(x, torch.fx.Proxy)  # torch.fx records F.linear
        and x.device.type == "cpu"
        and x.dim() == 2
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and onednn_faster()
    )


def _matmul(a: torch.Tensor, b_t: torch.Tensor, bias=None) -> torch.Tensor:
    """a @ b_t.T (+ bias) through oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        x = x.contiguous()
        ctx.save_for_backward(x, weight)
        return _matmul(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        need_x, need_w, need_b = ctx.needs_input_grad
        dx = _matmul(grad, weight.t()) if need_x else None
        # dW = g^T x as a product over the batch: both operands transposed into small
        # contiguous copies (batch x features), the big result written once in place
        dw = _matmul(grad.t().contiguous(), x.t().contiguous()) if need_w else None
        db = grad.sum(0) if need_b else None  # False for a layer without bias
        return dx, dw, db
