"""The paper's figures (§6.1): first-layer kernels (Figure 3), top-5 predictions and
nearest neighbours (Figure 4), plus the training curves. PNG bytes, drawn with Agg."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import warnings  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..model import AlexNet, learned_layers  # noqa: E402
from ..runtime.printed import Printed  # noqa: E402


def _png(fig) -> bytes:
    """The laid-out figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # a class name in a script the font lacks is drawn as boxes: the warning says
        # only that, once per glyph
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


BAR = 2  # rows under a kernel in the figure: its colour index, as a bar up to its width
BAR_COLOUR = (0.85, 0.33, 0.10)


def _tower_blocks(model: AlexNet, cols: int, pad: int, bars: bool) -> list[np.ndarray]:
    """One 0..1 RGB grid of conv1 kernels per tower (the blocks conv2's groups split
    conv1's maps into), each kernel min-max scaled on its own as in Figure 3; with
    bars, each kernel's colour index drawn under it."""
    layers = dict(learned_layers(model))
    w = layers["conv1"].weight.detach().float().cpu()
    index = colour_index(model)["per_kernel"] if bars else None
    k = w.shape[-1]
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()  # (N, k, k, 3)
    cell = k + pad + (BAR + pad if bars else 0)
    tiles = []
    for block in np.array_split(np.arange(len(w)), layers["conv2"].groups):
        rows = int(np.ceil(len(block) / cols))
        grid = np.ones((rows * cell + pad, cols * (k + pad) + pad, 3))
        for j, idx in enumerate(block):
            r, c = divmod(j, cols)
            y, x = pad + r * cell, pad + c * (k + pad)
            grid[y : y + k, x : x + k] = w[idx]
            if bars:
                bar = grid[y + k + pad : y + k + pad + BAR]
                bar[:, x : x + k] = 0.85
                bar[:, x : x + round(min(index[idx], 1.0) * k)] = BAR_COLOUR
        tiles.append(grid)
    return tiles


def _to_uint8(grid: np.ndarray, scale: int) -> np.ndarray:
    out = (grid * 255).round().astype(np.uint8)
    return out.repeat(scale, axis=0).repeat(scale, axis=1)


def kernel_grid(model: AlexNet, cols: int = 16, pad: int = 1, scale: int = 4) -> np.ndarray:
    """conv1's kernels as one RGB uint8 image. With two towers (the paper net) the first
    48 kernels (GPU 1) and the last 48 (GPU 2) are separate blocks, one above the other."""
    tiles = _tower_blocks(model, cols, pad, bars=False)
    gap = np.ones((3 * pad + 2, tiles[0].shape[1], 3))
    out = tiles[0]
    for t in tiles[1:]:
        out = np.concatenate([out, gap, t])
    return _to_uint8(out, scale)


COLOUR_THRESHOLD = 1 / 3  # halfway between a grey kernel (0) and one of iid channels (2/3)


def colour_index(model: AlexNet) -> dict:
    """Figure 3's claim in numbers (docs/paper.md §6.1): per conv1 kernel, the share of
    its energy outside its greyscale component, |w - mean_rgb(w)|^2 / |w|^2 (0: the same
    pattern in R, G and B; 2/3 for independent channels; 1 for opposite ones). Per tower
    (the blocks conv2's groups split conv1's maps into): mean, median and the share of
    kernels above COLOUR_THRESHOLD."""
    layers = dict(learned_layers(model))
    w = layers["conv1"].weight.detach().double().cpu()
    grey = w.mean(dim=1, keepdim=True)
    index = ((w - grey) ** 2).sum(dim=(1, 2, 3)) / (w**2).sum(dim=(1, 2, 3)).clamp_min(1e-30)
    towers = layers["conv2"].groups
    out = {"threshold": COLOUR_THRESHOLD, "per_kernel": [round(float(v), 6) for v in index]}
    for t, block in enumerate(index.tensor_split(towers)):
        out[f"tower{t}" if towers > 1 else "all"] = {
            "kernels": len(block),
            "mean": round(float(block.mean()), 4),
            "median": round(float(block.median()), 4),
            "share_above": round(float((block > COLOUR_THRESHOLD).double().mean()), 4),
        }
    return out


def colour_lines(index: dict) -> list[str]:
    """colour_index's summary, a line per tower (GPU 1, GPU 2 in the paper's words)."""
    towers = [name for name in index if name.startswith("tower") or name == "all"]
    return [
        (f"tower {int(name[5:]) + 1} (GPU {int(name[5:]) + 1})" if name != "all" else "all")
        + f": colour index mean {t['mean']:.3f}, median {t['median']:.3f}, "
        f"{t['share_above']:.0%} of {t['kernels']} kernels above {index['threshold']:.2f}"
        for name, t in ((n, index[n]) for n in towers)
    ]


def kernels_png(model: AlexNet, cols: int = 16, pad: int = 1, scale: int = 4) -> bytes:
    """Figure 3 as PNG bytes: conv1's kernels, one block per tower, a bar under each
    kernel for its colour index and a line over each block with the tower's summary."""
    from PIL import Image, ImageDraw

    blocks = [_to_uint8(b, scale) for b in _tower_blocks(model, cols, pad, bars=True)]
    caption_h = 18
    lines = colour_lines(colour_index(model))
    width = blocks[0].shape[1]
    canvas = Image.new("RGB", (width, sum(b.shape[0] + caption_h for b in blocks)), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for block, line in zip(blocks, lines, strict=True):
        draw.text((4, y + 3), line, fill=(40, 40, 40))
        canvas.paste(Image.fromarray(block), (0, y + caption_h))
        y += caption_h + block.shape[0]
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def predictions_png(
    images: list[np.ndarray],
    tops: list[list[dict]],
    truths: list[str | None] | None = None,
    titles: list[str] | None = None,
) -> bytes:
    """Figure 4, left: each image with its five most probable labels as bars, titled
    with its true class (its bar in red) or, for files, with `titles`."""
    n = len(images)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(
        rows * 2,
        cols,
        figsize=(3.2 * cols, 5.2 * rows),
        gridspec_kw={"height_ratios": [3, 2] * rows},
        squeeze=False,
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, (img, top) in enumerate(zip(images, tops, strict=True)):
        r, c = divmod(i, cols)
        ax_img, ax_bar = axes[2 * r, c], axes[2 * r + 1, c]
        ax_img.imshow(img)
        truth = truths[i] if truths else None
        if truth:
            ax_img.set_title(truth, fontsize=10, fontweight="bold")
        elif titles:
            ax_img.set_title(fit_title(titles[i]), fontsize=9)
        ax_bar.axis("on")
        names = [t["name"] for t in top][::-1]
        probs = [t["prob"] for t in top][::-1]
        colors = ["#d62728" if truth and nm == truth else "#1f77b4" for nm in names]
        ax_bar.barh(range(len(names)), probs, color=colors)
        ax_bar.set_yticks(range(len(names)), [nm[:22] for nm in names], fontsize=8)
        ax_bar.set_xlim(0, 1)
        ax_bar.tick_params(axis="x", labelsize=7)
        for side in ("top", "right"):
            ax_bar.spines[side].set_visible(False)
    return _png(fig)


def neighbors_png(
    queries: list[np.ndarray], rows: list[list[np.ndarray]], labels: list[list[str]] | None = None
) -> bytes:
    """Figure 4, right: each query (first column) with its nearest gallery images."""
    k = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(queries), k + 1, figsize=(1.6 * (k + 1), 1.7 * len(queries)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, (q, row) in enumerate(zip(queries, rows, strict=True)):
        axes[i, 0].imshow(q)
        axes[i, 0].set_title("query", fontsize=8, fontweight="bold")
        for j, img in enumerate(row):
            axes[i, j + 1].imshow(img)
            if labels:
                axes[i, j + 1].set_title(labels[i][j][:16], fontsize=7)
    return _png(fig)


def curves_png(history: list[dict]) -> bytes:
    """A run's training curves (loss, errors, learning rate) as PNG bytes."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    axes[0].set_title("training loss")
    axes[1].plot(epochs, [h["val_top1_error"] for h in history], "o-", label="val top-1 error")
    axes[1].plot(epochs, [h["val_top5_error"] for h in history], "s-", label="val top-5 error")
    if "train_top1_error" in history[0]:
        axes[1].plot(epochs, [h["train_top1_error"] for h in history], "--", label="train top-1")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("error")
    axes[1].legend(fontsize=8)
    axes[2].plot(epochs, [h["lr"] for h in history], "o-")
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return _png(fig)


def figure1_png(curves: dict[str, list[list[tuple[float, float]]]], target: float) -> bytes:
    """Figure 1 (§3.1): training error against epochs, ReLU solid, tanh dashed; one line
    per seed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, style, color in (("relu", "-", "#1f77b4"), ("tanh", "--", "#d62728")):
        for i, curve in enumerate(curves.get(arm, [])):
            if curve:
                xs, ys = zip(*curve, strict=True)
                ax.plot(
                    xs,
                    ys,
                    style,
                    color=color,
                    alpha=0.9 if i == 0 else 0.45,
                    label=("ReLU" if arm == "relu" else "tanh") if i == 0 else None,
                )
    ax.axhline(target, color="#777", lw=0.8, ls=":")
    ax.set_xlabel("epochs")
    ax.set_ylabel("training error rate")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def ablation_bars_png(rows: list[tuple[str, str, list[float]]]) -> bytes:
    """Top-1 error per (study, arm), the mean with its seeds as dots."""
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(rows)), 3.6))
    for i, (_, _, values) in enumerate(rows):
        ax.bar(i, np.mean(values), color="#9ecae1" if i % 2 else "#3182bd")
        ax.plot([i] * len(values), values, "k.", ms=4)
    ax.set_xticks(range(len(rows)), [f"{s}\n{a}" for s, a, _ in rows], fontsize=7)
    ax.set_ylabel("validation top-1 error")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def kernels_command(cfg) -> Printed:
    """`alexnet kernels` (cfg: KernelsConfig): Figure 3, and each tower's colour index."""
    from ..runtime.files import atomic_write_bytes, check_output_file
    from ..weights.load import load_for_inference

    check_output_file(cfg.out, reads=[cfg.ckpt])
    model = load_for_inference(cfg.ckpt).model
    atomic_write_bytes(cfg.out, kernels_png(model))
    index = colour_index(model)
    lines = [str(cfg.out), *(f"  {line}" for line in colour_lines(index))]
    return Printed({"out": str(cfg.out), "colour_index": index}, lines)


def fit_title(text: str, most: int = 28) -> str:
    """`text` in at most `most` characters: its start and end kept (a file name's wnid
    and its class and suffix), an ellipsis in the middle where characters were cut."""
    if len(text) <= most:
        return text
    head = (most - 1) // 2
    return text[:head] + "…" + text[len(text) - (most - 1 - head) :]
