"""fc6-fc8's float32 products through oneDNN rather than the BLAS: `OneDNNLinear`, a
drop-in for nn.Linear that the execution plan (kernels/plan.py) uses on AMD CPUs with
AVX-512.

PyTorch multiplies float32 matrices on the CPU with MKL, which runs its AVX2 code on
AMD CPUs even where they have AVX-512; oneDNN, which PyTorch already uses for every
convolution, runs AVX-512 there. `torch.ops.mkldnn._linear_pointwise` is its matmul as
torch.compile's CPU backend calls it. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def available() -> bool:
    """Whether this PyTorch build has oneDNN's matmul."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class OneDNNLinear(nn.Linear):
    """nn.Linear (the same parameters and state dict, the same results within float32's
    rounding) whose float32 CPU products go to oneDNN. Anything else (another dtype,
    autocast, code being traced or transformed) is nn.Linear's own F.linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _takes(x, self.weight):
            return _OneDNNLinear.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    @classmethod
    def like(cls, linear: nn.Linear) -> OneDNNLinear:
        """The fast module in place of a plain one, holding the same Parameters."""
        return sharing(cls, linear)


def sharing(cls, linear: nn.Linear) -> nn.Linear:
    """A `cls` (nn.Linear or a subclass) holding `linear`'s own Parameters: the same
    state dict, the same tensors for an optimiser."""
    out = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
    out.weight, out.bias = linear.weight, linear.bias
    return out


def _takes(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        not isinstance(x, torch.fx.Proxy)
        and x.device.type == "cpu"
        and x.dim() == 2
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch._C._are_functorch_transforms_active()
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
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        if torch.is_grad_enabled():
            # create_graph: plain products, which autograd differentiates again
            dx = grad @ weight if need_x else None
            dw = grad.t() @ x if need_w else None
        else:
            grad = grad.contiguous()
            dx = _matmul(grad, weight.t()) if need_x else None
            # dW = g^T x as a product over the batch: both operands transposed into small
            # contiguous copies (batch x features), the big result written once in place
            dw = _matmul(grad.t().contiguous(), x.t().contiguous()) if need_w else None
        db = grad.sum(0) if need_b else None  # False for a layer without bias
        return dx, dw, db
