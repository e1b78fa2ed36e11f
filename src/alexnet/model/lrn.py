"""Local response normalisation exactly as §3.3 of the paper writes it (docs/paper.md),
and fast.

    b[i] = a[i] / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a[j]^2) ** beta

`alpha` is the coefficient on the sum as given: the paper net passes 1e-4 / n, as
cuda-convnet computed it, or 1e-4 as the paper prints it (model/net.py chooses;
nn.LocalResponseNorm and Caffe take alpha and divide it by n themselves).

Why a custom autograd function: nn.LocalResponseNorm builds the window sum with
avg_pool3d over a padded copy and lets autograd record every intermediate, which
made LRN about 43% of a CPU training step (docs/benchmarks.md). Here the forward computes the
window sum of squares once, keeps the denominator, and the backward reuses it:

    dL/da[j] = g[j] * s[j]^-beta
               - 2 * alpha * beta * a[j] * sum_{i in window(j)} g[i] * b[i] / s[i]

with s = k + alpha * window_sum(a^2). s^-0.75 is taken as 1 / (sqrt(s) * sqrt(sqrt(s)))
(rsqrt and sqrt, no exp/log).

bf16 computes in bf16, and the window sum is a matrix product: over the channels-last
view (N·H·W, C), the sum of each map's window is a^2 @ W, with W the C x C band of ones
(|i - j| <= n/2, block-diagonal per tower). Most of W is zero, so above 128 channels
the product runs per block of b output channels (b up to 32), each over its b + n - 1
inputs: a batched product over overlapping views of a zero-edged copy of a^2, a seventh
of the full product's work for conv2's 256 maps, with the same sums. On a CPU with AMX
or AVX512-BF16 that product costs about one pass over the maps, and every other pass
moves 2 bytes a value instead of 4 with no cast to float32 and back. The passes run
chunk by chunk of rows, so that what one pass writes the next reads from the cache.
s^-beta is exp and log of s / k (see _bf16_forward), and the result stays within
bf16's own rounding of the float64 formula (tests/test_lrn.py). fp16 computes in
float32 internally and casts back: a^2 would overflow fp16 above 256.

Under torch.compile a CPU runs the same passes as custom operators (alexnet::lrn,
lrn_forward, lrn_backward), so that a compiled net is one graph calling them; a GPU
traces fused_formula, plain ops for the compiler to fuse, and so do torch.export and
TorchScript's tracer with autograd on. ONNX export takes onnx_formula, whose window sums
are one convolution; torch.fx records local_response_norm as one call.
"""

from __future__ import annotations

import torch
from torch import nn


def window_sum(t: torch.Tensor, size: int, groups: int = 1) -> torch.Tensor:
    """Sum of t over the channel window [i - size//2, i + size//2], clipped at the ends
    of each group of channels (a tower's maps, §3.2).

    Shifted in-place adds over channel slices into one buffer: no padded copy, no
    pooling kernel. Groups are a view (N, G, C/G, ...), in either memory format.
    """
    half = size // 2
    out = t.clone(memory_format=torch.preserve_format)
    if groups > 1:
        t, o = t.unflatten(1, (groups, -1)), out.unflatten(1, (groups, -1))
    else:
        t, o = t.unsqueeze(1), out.unsqueeze(1)
    for d in range(1, half + 1):
        o[:, :, d:] += t[:, :, :-d]
        o[:, :, :-d] += t[:, :, d:]
    return out


def _inv_pow_(t: torch.Tensor, beta: float) -> torch.Tensor:
    """t <- t^-beta in place; for 0.75 as rsqrt(t) * sqrt(rsqrt(t)), with no exp/log.
    In-place methods on a whole tensor (not out=), which ONNX's tracer follows."""
    if beta != 0.75:
        return t.pow_(-beta)
    t.rsqrt_()
    return t.mul_(t.sqrt())


# Why so few buffers: on a CPU, writing a freshly allocated 74 MB tensor costs several
# times an in-place pass over an existing one (first-touch page faults). The forward
# allocates s, the scale and y (x*x is reused for the scale); the backward three.


def band(channels: int, size: int, groups: int, dtype, device) -> torch.Tensor:
    """The C x C matrix whose product with a channels-last row sums each map's window:
    ones where |i - j| <= size // 2 and i, j are in the same group."""
    i = torch.arange(channels, device=device)
    per = channels // groups
    near = (i[:, None] - i[None, :]).abs() <= size // 2
    return (near & (i[:, None] // per == i[None, :] // per)).to(dtype)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> its (N·H·W, C) channels-last rows; a view when t is channels_last."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def _unrows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The inverse of _rows, in `like`'s channels-last layout."""
    shape = (like.shape[0], *like.shape[2:], like.shape[1])
    return rows.view(shape).movedim(-1, 1)


# Most output channels per block of the banded product, and up to how many channels
# the band stays whole. Cutting conv1's 96 maps into two blocks measured slower (40 vs
# 36 ms forward and backward, AVX512-BF16 EPYC, 2026-12-02), into three blocks of 32
# no faster (40-42 vs 39 ms); conv2's 256 in four blocks of 64 faster than whole (25
# vs 30 ms), in eight of 32 faster again (23.9 vs 26.0-26.1 ms forward and backward,
# 12.8-13.1 vs 14.4-14.6 at inference; Zen 5 EPYC, ten alternating rounds twice,
# 2026-12-03).
BLOCK = 32
WHOLE_BAND = 128


def band_blocks(channels: int, size: int, groups: int, dtype, device) -> torch.Tensor:
    """The band cut into blocks: (C / b, b + 2h, b), h = size // 2, where block j holds
    the rows of W for inputs jb - h .. jb + b + h - 1 (zero outside the channels) and
    its columns for outputs jb .. jb + b - 1; b is the largest divisor of C up to BLOCK.
    Up to WHOLE_BAND channels, one block: the whole band, (1, C, C)."""
    if channels <= WHOLE_BAND:
        return band(channels, size, groups, dtype, device)[None]
    h = size // 2
    b = max(d for d in range(1, BLOCK + 1) if channels % d == 0)
    padded = torch.zeros(channels + 2 * h, channels, dtype=dtype, device=device)
    padded[h : h + channels] = band(channels, size, groups, dtype, device)
    return torch.stack([padded[j : j + b + 2 * h, j : j + b] for j in range(0, channels, b)])


# Rows per chunk of the bf16 passes on a CPU: a chunk's intermediates (a^2, the sums,
# their logarithm; 0.8-2 MB) stay in the cache from one pass to the next, and no
# map-sized temporary is allocated. conv1's LRN forward and backward 37-40 ms against
# 42-48, conv2's 26-28 against 29-35, on a cold cache (AVX512-BF16 EPYC, 2026-12-03;
# within that shared machine's noise in a whole training step). A GPU takes the rows
# whole: there a chunk would be a kernel launch per pass.
CHUNK_ROWS = 4096


def _whole(rows, device: torch.device) -> bool:
    # traced (torch.export, torch.compile): whole rows, so that the graph does not
    # depend on the batch size and the compiler fuses the passes itself
    return (
        device.type != "cpu"
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or not isinstance(rows, int)
        or rows <= CHUNK_ROWS
    )


def _chunk_len(rows: int, device: torch.device) -> int:
    return rows if _whole(rows, device) else CHUNK_ROWS


def _chunks(rows: int, device: torch.device):
    if _whole(rows, device):
        yield slice(0, rows)
        return
    for i in range(0, rows, CHUNK_ROWS):
        yield slice(i, min(i + CHUNK_ROWS, rows))


def _edged(n: int, c: int, blocks: torch.Tensor, like: torch.Tensor):
    """An (n, C + 2h) buffer with zeroed edge columns, and its middle (n, C) view, into
    which the caller writes what the window sums are taken over."""
    h = (blocks.shape[1] - blocks.shape[2]) // 2
    buf = like.new_empty(n, c + 2 * h)
    if h:
        buf[:, :h].zero_()
        buf[:, h + c :].zero_()
    return buf, buf.narrow(1, h, c)


def _window_sums(buf: torch.Tensor, blocks, out: torch.Tensor, scale=1.0, add=0.0):
    """out <- add + scale * (each row's window sums) over the first len(out) rows of an
    _edged buffer, as one batched product of overlapping views of it (no copies) with
    the band's blocks, written straight into out's (n, C) rows."""
    nb, span, b = blocks.shape
    n, width = out.shape[0], buf.shape[1]
    views = buf.as_strided((nb, n, span), (b, width, 1), buf.storage_offset())
    per_block = out.view(n, nb, b).transpose(0, 1)
    if add:
        torch.baddbmm(buf.new_full((1,), add), views, blocks, alpha=scale, out=per_block)
    else:
        torch.bmm(views, blocks, out=per_block)
    return out


def _bf16_forward(x: torch.Tensor, size, alpha, beta, k, groups, keep: bool):
    """(y, r, r^-beta) for a bf16 x, chunk by chunk, where y = x * s^-beta and r = s / k,
    so that s^-beta = k^-beta * r^-beta; r and r^-beta (for the backward) only with keep.

    r^-beta is exp(-beta * log r): torch's CPU pow is not vectorised (16 ms on a batch
    of conv2's maps, against 6 for log, a product and exp; log1p is not either), and
    log r is near 0, where bf16's absolute step is fine. k^-beta is applied inside the
    one product that uses it (addcmul computes in float32 and rounds once)."""
    blocks = band_blocks(x.shape[1], size, groups, x.dtype, x.device)
    xr = _rows(x)
    n, c = xr.shape
    y = torch.empty_like(xr)
    r, e = (torch.empty_like(xr), torch.empty_like(xr)) if keep else (None, None)
    buf, sq = _edged(_chunk_len(n, xr.device), c, blocks, xr)
    rc, ec = (None, None) if keep else (torch.empty_like(sq), torch.empty_like(sq))
    zero = xr.new_zeros(())
    for rows in _chunks(n, xr.device):
        m = rows.stop - rows.start
        xc = xr[rows]
        torch.mul(xc, xc, out=sq[:m])
        rk = r[rows] if keep else rc[:m]
        _window_sums(buf, blocks, rk, scale=alpha / k, add=1.0)  # 1 + alpha/k * sums
        ek = e[rows] if keep else ec[:m]
        torch.log(rk, out=ek).mul_(-beta).exp_()
        torch.addcmul(zero, xc, ek, value=k**-beta, out=y[rows])
    if not keep:
        return _unrows(y, x), None, None
    return _unrows(y, x), _unrows(r, x), _unrows(e, x)


def _bf16_backward(grad, x, r, e, size, alpha, beta, k, groups) -> torch.Tensor:
    """dL/da for a bf16 x from _bf16_forward's r and r^-beta, every pass in bf16."""
    blocks = band_blocks(x.shape[1], size, groups, x.dtype, x.device)
    xr, gr, r, e = _rows(x), _rows(grad.to(x.dtype)), _rows(r), _rows(e)
    n, c = xr.shape
    dx = torch.empty_like(xr)
    buf, t = _edged(_chunk_len(n, xr.device), c, blocks, xr)
    inner = torch.empty_like(t)
    zero = xr.new_zeros(())
    for rows in _chunks(n, xr.device):
        m = rows.stop - rows.start
        xc, dc = xr[rows], dx[rows]
        torch.addcmul(zero, gr[rows], e[rows], value=k**-beta, out=dc)  # g * s^-beta
        torch.mul(dc, xc, out=t[:m])
        t[:m].div_(r[rows])  # k * g[i] * b[i] / s[i], as r = s / k
        # the band is symmetric: sums over each map's neighbours
        _window_sums(buf, blocks, inner[:m])
        dc.addcmul_(inner[:m], xc, value=-2.0 * alpha * beta / k)
    return _unrows(dx, x).to(grad.dtype)


def _fp32_forward(xf: torch.Tensor, size, alpha, beta, k, groups):
    """(s, s^-beta, y) for float32 maps, whole (N, C, ...) or a chunk of (n, C) rows."""
    sq = xf * xf
    s = window_sum(sq, size, groups)
    s.mul_(alpha).add_(k)
    scale = _inv_pow_(sq.copy_(s), beta)  # sq is no longer needed: reuse its memory
    return s, scale, xf * scale


def _fp32_backward(g, xf, s, scale, size, alpha, beta, groups) -> torch.Tensor:
    """dL/da from the saved terms, whole maps or a chunk of rows."""
    dx = g * scale  # g * s^-beta, the first term of the result
    # g[i] * b[i] / s[i] == (g * s^-beta)[i] * a[i] / s[i]
    t = dx * xf
    t.div_(s)
    # saved tensors stay intact: a graph may be walked backward more than once
    inner = window_sum(t, size, groups)
    return dx.sub_(inner.mul_(xf).mul_(2.0 * alpha * beta))


def _in_rows(x: torch.Tensor) -> bool:
    """Whether float32 maps take the chunked path: channels-last (N, C, H, W) maps
    of more than one chunk of rows, on a CPU, in eager mode. The passes are the
    same per chunk, so the bits are too; conv1's LRN forward and backward took 45 ms
    in chunks against 74 ms whole, conv2's 26-27 against 40-46, at inference 21 against
    40 and 14-17 against 24-25 (cold cache, AVX512-BF16 EPYC, 2026-12-03)."""
    return (
        x.dtype == torch.float32
        and x.dim() == 4
        and x.numel() > 0
        and x.is_contiguous(memory_format=torch.channels_last)
        and not _whole(x.numel() // x.shape[1], x.device)
    )


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _forward_saving(x, size, alpha, beta, k, groups):
    """(y, u, v) for training: the output, and beside x what the backward needs, shaped
    like x: for bf16, r = s / k and r^-beta in bf16; otherwise s and s^-beta (float32
    for fp16 maps)."""
    if x.dtype == torch.bfloat16:
        return _bf16_forward(x, size, alpha, beta, k, groups, keep=True)
    if _in_rows(x):
        xr = _rows(x)
        s, scale, y = (torch.empty_like(xr) for _ in range(3))
        for rows in _chunks(xr.shape[0], x.device):
            s[rows], scale[rows], y[rows] = _fp32_forward(xr[rows], size, alpha, beta, k, groups)
        return _unrows(y, x), _unrows(s, x), _unrows(scale, x)
    s, scale, y = _fp32_forward(_float(x), size, alpha, beta, k, groups)
    return y.to(x.dtype), s, scale


def _backward(grad, x, u, v, size, alpha, beta, k, groups) -> torch.Tensor:
    """dL/da from x and _forward_saving's u and v, on the path the forward took."""
    if x.dtype == torch.bfloat16:
        return _bf16_backward(grad, x, u, v, size, alpha, beta, k, groups)
    if _in_rows(x):
        xr, gr, s, scale = _rows(x), _rows(grad.to(x.dtype)), _rows(u), _rows(v)
        dx = torch.empty_like(xr)
        for rows in _chunks(xr.shape[0], x.device):
            dx[rows] = _fp32_backward(
                gr[rows], xr[rows], s[rows], scale[rows], size, alpha, beta, groups
            )
        return _unrows(dx, x).to(grad.dtype)
    xf = _float(x)
    dx = _fp32_backward(grad.to(xf.dtype), xf, u, v, size, alpha, beta, groups)
    return dx.to(grad.dtype)


def _inference(x, size, alpha, beta, k, groups) -> torch.Tensor:
    """The output alone, nothing saved. The float product stays out of place: with the
    tuned allocator a fresh buffer is cheap, and writing it into s in place measured
    slower (conv1 maps, no grad: 47 vs 33 ms on the 2-core CPU box, 2026-11-25)."""
    if x.dtype == torch.bfloat16:
        return _bf16_forward(x, size, alpha, beta, k, groups, keep=False)[0]
    if _in_rows(x):  # the same passes per chunk of rows: conv1's 21 ms against 40
        xr = _rows(x)
        y = torch.empty_like(xr)
        for rows in _chunks(xr.shape[0], x.device):
            torch.mul(xr[rows], _fp32_scale(xr[rows], size, alpha, beta, k, groups), out=y[rows])
        return _unrows(y, x)
    xf = _float(x)
    return xf.mul(_fp32_scale(xf, size, alpha, beta, k, groups)).to(x.dtype)


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float, groups: int):
        y, u, v = _forward_saving(x, size, alpha, beta, k, groups)
        ctx.save_for_backward(x, u, v)
        ctx.params = (size, alpha, beta, k, groups)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, u, v = ctx.saved_tensors
        return _backward(grad, x, u, v, *ctx.params), None, None, None, None, None


# torch.compile on a CPU: the same passes as custom operators, which the compiler calls
# as they are. Traced as plain ops instead, the bf16 passes (products into strided views)
# broke the graph at every LRN, and the compiler's own CPU code for the formula ran 6-20x
# slower than these passes (conv1's maps in bf16, forward and backward: 441-1329 ms
# against 71-77; Zen 5 EPYC, 2026-12-03). Outputs take x's memory format, as the
# operators' shape functions promise the compiler.
_PARAMS = "int size, float alpha, float beta, float k, int groups"


def _layout(x: torch.Tensor) -> torch.memory_format:
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


def _saved_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype == torch.float16 else x.dtype


def _empty(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(x.shape, dtype=dtype, device=x.device, memory_format=_layout(x))


@torch.library.custom_op("alexnet::lrn", mutates_args=(), schema=f"(Tensor x, {_PARAMS}) -> Tensor")
def _lrn_op(x, size, alpha, beta, k, groups):
    return _inference(x, size, alpha, beta, k, groups).contiguous(memory_format=_layout(x))


@torch.library.custom_op(
    "alexnet::lrn_forward",
    mutates_args=(),
    schema=f"(Tensor x, {_PARAMS}) -> (Tensor, Tensor, Tensor)",
)
def _lrn_forward_op(x, size, alpha, beta, k, groups):
    fmt = _layout(x)
    return tuple(
        t.contiguous(memory_format=fmt) for t in _forward_saving(x, size, alpha, beta, k, groups)
    )


@torch.library.custom_op(
    "alexnet::lrn_backward",
    mutates_args=(),
    schema=f"(Tensor grad, Tensor x, Tensor u, Tensor v, {_PARAMS}) -> Tensor",
)
def _lrn_backward_op(grad, x, u, v, size, alpha, beta, k, groups):
    dx = _backward(grad, x, u, v, size, alpha, beta, k, groups)
    return dx.contiguous(memory_format=_layout(x))


@_lrn_op.register_fake
def _(x, size, alpha, beta, k, groups):
    return _empty(x, x.dtype)


@_lrn_forward_op.register_fake
def _(x, size, alpha, beta, k, groups):
    return _empty(x, x.dtype), _empty(x, _saved_dtype(x)), _empty(x, _saved_dtype(x))


@_lrn_backward_op.register_fake
def _(grad, x, u, v, size, alpha, beta, k, groups):
    return _empty(x, grad.dtype)


def _setup_context(ctx, inputs, output):
    x, *params = inputs
    ctx.save_for_backward(x, output[1], output[2])
    ctx.params = params


def _op_backward(ctx, grad, _u, _v):
    x, u, v = ctx.saved_tensors
    dx = torch.ops.alexnet.lrn_backward(grad, x, u, v, *ctx.params)
    return dx, None, None, None, None, None


_lrn_forward_op.register_autograd(_op_backward, setup_context=_setup_context)


def _exporting() -> bool:
    # Traced inside torch.compile, torch 2.11's is_exporting() is True too: there a
    # compiled CPU graph takes fused_formula, slower but the same function.
    return getattr(torch.compiler, "is_exporting", lambda: False)()


def fused_formula(x, size: int, alpha: float, beta: float, k: float, groups: int = 1):
    """The formula as plain differentiable ops in float32, for torch.compile on a GPU to
    fuse with its neighbours (autograd derives the backward), and for torch.export: the
    window sums as the sum of `size` shifted slices of the zero-edged squares, which the
    compiler reads as one pass with neighbouring loads."""
    xf = _float(x)
    sq = (xf * xf).unflatten(1, (groups, -1))
    h, c = size // 2, sq.shape[2]
    edged = torch.nn.functional.pad(sq, (0, 0) * (sq.dim() - 3) + (h, h))
    s = edged.narrow(2, 0, c)
    for i in range(1, size):
        s = s + edged.narrow(2, i, c)
    scale = (s.flatten(1, 2) * alpha + k).pow(-beta)
    return (xf * scale).to(x.dtype)


def onnx_formula(x, size: int, alpha: float, beta: float, k: float, groups: int = 1):
    """The formula for ONNX's exporter, which loses our passes' in-place adds into channel
    slices (its graph squared each map alone: 24 off on outputs of 48) but follows
    out-of-place ops. The window sums are a 1x1 convolution by the band matrix, alpha in
    its weights and k its bias: onnxruntime runs it 1.6-2.3x faster than shifted slices
    and 3.9-5.9x faster than ONNX's own LRN operator (docs/benchmarks.md). In float32."""
    if x.dim() != 4:
        return fused_formula(x, size, alpha, beta, k, groups)
    xf = _float(x)
    c = xf.shape[1]
    weight = (band(c, size, groups, xf.dtype, xf.device) * alpha)[:, :, None, None]
    s = torch.nn.functional.conv2d(xf * xf, weight, torch.full((c,), k, dtype=xf.dtype))
    return (xf * _inv_pow_(s, beta)).to(x.dtype)


def local_response_norm(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int = 1
) -> torch.Tensor:
    """§3.3's normalisation of an (N, C, ...) tensor, per group of channels; autograd through our own backward."""
    if x.dim() < 2:
        raise ValueError(f"LRN needs a (N, C, ...) tensor, got shape {tuple(x.shape)}")
    if x.shape[1] % groups:
        raise ValueError(f"{x.shape[1]} channels do not split into {groups} groups")
    if x.device.type == "meta":
        # Shape inference (alexnet info) only: no autograd function needed.
        return torch.empty_like(x)
    training = torch.is_grad_enabled() and x.requires_grad
    if torch.compiler.is_compiling():
        # torch.compile on a CPU: our passes, as custom operators. A GPU's compiler, and
        # torch.export, whose programs must stand alone: the formula as plain ops.
        if x.device.type == "cpu" and not _exporting():
            if training:
                return torch.ops.alexnet.lrn_forward(x, size, alpha, beta, k, groups)[0]
            return torch.ops.alexnet.lrn(x, size, alpha, beta, k, groups)
        return fused_formula(x, size, alpha, beta, k, groups)
    if torch.onnx.is_in_onnx_export():
        return onnx_formula(x, size, alpha, beta, k, groups)
    if training:
        if torch.jit.is_tracing():  # TorchScript's tracer cannot record a Python autograd
            return fused_formula(x, size, alpha, beta, k, groups)  # function: plain ops
        return _LRNFunction.apply(x, size, alpha, beta, k, groups)
    return _inference(x, size, alpha, beta, k, groups)  # nothing saved for backward


# torch.fx (torchvision's create_feature_extractor) records the LRN as one call, as it
# does nn.LocalResponseNorm, rather than tracing into its branches on shape and dtype
torch.fx.wrap("local_response_norm")


def _fp32_scale(xf: torch.Tensor, size, alpha, beta, k, groups) -> torch.Tensor:
    """s^-beta for inference, whole maps or a chunk of rows (nothing kept for backward)."""
    return _inv_pow_(window_sum(xf * xf, size, groups).mul_(alpha).add_(k), beta)


class LocalResponseNorm(nn.Module):
    """§3.3's LRN (docs/paper.md): `alpha` is the coefficient on the window's sum of
    squares as given (a caller following Caffe passes alpha / size); with groups, the
    window stays inside each group of channels (each tower's maps)."""

    def __init__(self, size: int, alpha: float, beta: float, k: float, groups: int = 1):
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.groups)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"groups={self.groups} (alpha multiplies the window sum)"
        )
