"""The fast CPU passes for §3.3's LRN (model/lrn.py holds the formula), as a drop-in
for model.lrn.LocalResponseNorm: `FastLRN`, the same module with the same attributes,
which the execution plan (kernels/plan.py) puts in its place.

Why: autograd through the plain formula records every intermediate, which makes the LRN
a large share of a CPU training step (docs/benchmarks.md, "LRN alone"). Here the forward computes
the window sum of squares once, keeps the denominator, and the backward reuses it:

    dL/da[j] = g[j] * s[j]^-beta
               - 2 * alpha * beta * a[j] * sum_{i in window(j)} g[i] * b[i] / s[i]

with s = k + alpha * window_sum(a^2). Float32 runs the passes chunk by chunk of
channels-last rows, so that what one pass writes the next reads from the cache. bf16
computes in bf16 and the window sums are a banded matrix product (band_blocks), which a
CPU with AVX512-BF16 or AMX runs at about one pass over the maps.

Second derivatives: the backward is not itself differentiated. When a graph of the
gradient is asked for (create_graph=True) the backward hands over to the plain
formula's own derivative, and under a torch.func transform, torch.jit tracing,
torch.compile or torch.fx the forward is the plain formula: never silently wrong.
"""

from __future__ import annotations

import torch

from ..model.lrn import LocalResponseNorm, local_response_norm


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
# the band stays whole: the sizes that measured fastest for conv1's 96 maps and
# conv2's 256 (docs/benchmarks.md, "the bf16 LRN's band").
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


# Rows per chunk of the passes on a CPU: a chunk's intermediates (a^2, the sums, their
# logarithm; 0.8-2 MB) stay in the cache from one pass to the next, and no map-sized
# temporary is allocated. A GPU takes the rows whole: there a chunk would be a kernel
# launch per pass.
CHUNK_ROWS = 4096


def _whole(rows: int, device: torch.device) -> bool:
    return device.type != "cpu" or rows <= CHUNK_ROWS


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

    r^-beta is exp(-beta * log r): torch's CPU pow is not vectorised in bf16 (nor is
    log1p), and log r is near 0, where bf16's absolute step is fine. k^-beta is applied inside the
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
    """Whether float32 maps take the chunked path: channels-last (N, C, H, W) maps of
    more than one chunk of rows, on a CPU. The passes are the same per chunk, so the
    bits are too."""
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
    tuned allocator (runtime/allocator.py) a fresh buffer is cheaper than writing into s."""
    if x.dtype == torch.bfloat16:
        return _bf16_forward(x, size, alpha, beta, k, groups, keep=False)[0]
    if _in_rows(x):  # the same passes per chunk of rows
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
    def backward(ctx, grad):
        x, u, v = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the formula's derivative, differentiable
            dx = _formula_vjp(grad, x, *ctx.params)
        else:
            dx = _backward(grad, x, u, v, *ctx.params)
        return dx, None, None, None, None, None


def _formula_vjp(grad, x, size, alpha, beta, k, groups) -> torch.Tensor:
    """grad's product with the plain formula's Jacobian at x, as a graph autograd can
    differentiate again (a Hessian-vector product, a gradient penalty)."""
    with torch.enable_grad():
        y = local_response_norm(x, size, alpha, beta, k, groups)
        (dx,) = torch.autograd.grad(y, x, grad, create_graph=True)
    return dx


def _fp32_scale(xf: torch.Tensor, size, alpha, beta, k, groups) -> torch.Tensor:
    """s^-beta for inference, whole maps or a chunk of rows (nothing kept for backward)."""
    return _inv_pow_(window_sum(xf * xf, size, groups).mul_(alpha).add_(k), beta)


def _plain_wanted(x: torch.Tensor) -> bool:
    """Where the passes must not run: code being traced or transformed, which must see
    (and differentiate) the formula's plain ops."""
    return (
        isinstance(x, torch.fx.Proxy)
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or x.device.type == "meta"
    )


class FastLRN(LocalResponseNorm):
    """LocalResponseNorm through the fast passes: the same outputs within each dtype's
    rounding (float32: the formula's ops in the same order), its own first derivative,
    and the formula's for anything beyond (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _plain_wanted(x):
            return super().forward(x)
        params = (self.size, self.alpha, self.beta, self.k, self.groups)
        if torch.is_grad_enabled() and x.requires_grad:
            return _LRNFunction.apply(x, *params)
        return _inference(x, *params)  # nothing saved for a backward
