"""Where in an image the net's answer comes from: `alexnet explain`, a heat map per image.

- occlusion (Zeiler and Fergus, 2014, their Figure 7): a grey square slid over the
  input; at each position, how far the target class's probability falls. Ours, batched
  (many occluded copies a forward pass), with no extra dependency. Grey is the
  normalisation's mean: 0 in the net's input.
- gradcam (Selvaraju et al., 2017) on a convolutional layer, and integrated gradients
  (Sundararajan et al., 2017) from the grey image: captum's, the field's library, as the
  optional extra `alexnet[explain]`.

The target is the net's top class for each image, or a class named by name or index.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from ..runtime.device import autocast
from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_bytes
from ..runtime.printed import Printed

METHODS = ("occlusion", "gradcam", "integrated-gradients")
CAPTUM_MISSING = (
    "--method {method} needs captum: pip install 'alexnet[explain]' "
    "(or --method occlusion, which needs nothing)"
)


@torch.no_grad()
def probabilities(model, x: torch.Tensor, autocast_dtype=None) -> torch.Tensor:
    """Softmax of the net's outputs for a preprocessed batch, float32."""
    with autocast(x.device, autocast_dtype):
        return model(x).float().softmax(dim=1)


@torch.no_grad()
def occlusion_map(
    model,
    x: torch.Tensor,
    target: int,
    size: int = 32,
    stride: int = 16,
    batch_size: int = 64,
    autocast_dtype=None,
) -> torch.Tensor:
    """How far the target's probability falls with a grey size x size square at each
    position (stride apart; the last row and column touch the border) of one
    preprocessed image x (3, H, W): a (rows, cols) map, high where hiding that part of
    the image costs the answer most, that is, where its evidence is."""
    _, h, w = x.shape
    if not 1 <= size <= min(h, w):
        raise UsageError(f"--size must be between 1 and {min(h, w)}, not {size}")
    tops = _positions(h, size, stride)
    lefts = _positions(w, size, stride)
    base = probabilities(model, x[None], autocast_dtype)[0, target]
    spots = [(t, left) for t in tops for left in lefts]
    drops = []
    for start in range(0, len(spots), batch_size):
        chunk = spots[start : start + batch_size]
        batch = x.expand(len(chunk), -1, -1, -1).clone()
        for i, (t, left) in enumerate(chunk):
            batch[i, :, t : t + size, left : left + size] = 0.0  # the mean: grey
        drops.append(base - probabilities(model, batch, autocast_dtype)[:, target])
    return torch.cat(drops).view(len(tops), len(lefts)).cpu()


def _positions(side: int, size: int, stride: int) -> list[int]:
    out = list(range(0, side - size + 1, stride))
    if out[-1] != side - size:
        out.append(side - size)  # the border is covered too
    return out


def _captum(method: str):
    try:
        import captum.attr as attr
    except ImportError:
        raise UsageError(CAPTUM_MISSING.format(method=method)) from None
    return attr


def gradcam_map(model, x: torch.Tensor, target: int, layer) -> torch.Tensor:
    """captum's LayerGradCam on `layer` (a conv module), upsampled to the input, ReLU'd."""
    attr = _captum("gradcam")
    cam = attr.LayerGradCam(model, layer).attribute(x[None], target=target, relu_attributions=True)
    up = attr.LayerAttribution.interpolate(cam, tuple(x.shape[1:]), interpolate_mode="bilinear")
    return up[0, 0].detach().cpu()


def integrated_gradients_map(model, x: torch.Tensor, target: int, steps: int = 32) -> torch.Tensor:
    """captum's IntegratedGradients from the grey image (the mean), summed over colours."""
    attr = _captum("integrated-gradients")
    ig = attr.IntegratedGradients(model).attribute(
        x[None], baselines=torch.zeros_like(x[None]), target=target, n_steps=steps
    )
    return ig[0].sum(dim=0).detach().cpu()


def resolve_target(target: str, classes: list[str], probs: torch.Tensor) -> int:
    """'top' (the net's first guess), a class name, or an index."""
    if target == "top":
        return int(probs.argmax())
    if target in classes:
        return classes.index(target)
    if target.isdigit() and int(target) < len(classes):
        return int(target)
    raise UsageError(f"--target {target}: not 'top', a class name or an index below {len(classes)}")


def explain_images(
    weights: str,
    images: list[str],
    method: str = "occlusion",
    target: str = "top",
    layer: str = "conv5",
    size: int = 32,
    stride: int = 16,
    device="cpu",
) -> list[dict]:
    """A heat map per image (see the module docstring), with the image as the net saw
    it, the target and its probability. Float32 throughout: attributions are gradients."""
    from ..data.images import BadImage
    from ..weights.load import load_for_inference
    from .features import parse_layers

    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    if method != "occlusion":
        _captum(method)
    loaded = load_for_inference(weights, device, "fp32", kernels="auto")
    model = loaded.model
    module = None
    if method == "gradcam":
        (request,) = parse_layers(model, [f"{layer}:pre" if ":" not in layer else layer])
        module = dict(model.named_modules())[request.module]
    out = []
    for path in images:
        try:
            x = loaded.preprocess_files([path])[0].to(loaded.device)
        except BadImage as e:
            raise UsageError(f"{path}: {e}") from None
        probs = probabilities(model, x[None])[0]
        t = resolve_target(target, loaded.classes, probs)
        if method == "occlusion":
            heat = occlusion_map(model, x, t, size, stride)
        elif method == "gradcam":
            heat = gradcam_map(model, x, t, module)
        else:
            heat = integrated_gradients_map(model, x, t)
        out.append(
            {
                "image": str(path),
                "target": loaded.classes[t],
                "target_index": t,
                "probability": float(probs[t]),
                "method": method,
                "map": heat,
                "seen": _as_seen(loaded, path),
            }
        )
    return out


def _as_seen(loaded, path) -> np.ndarray:
    """The image as the net saw it (its crop), 0..255 RGB, for drawing under the map."""
    from ..data.images import center_view, load_for_store

    crop = loaded.transform("cpu").crop
    return center_view(load_for_store(path, loaded.image_size), crop)


def peak(heat: torch.Tensor, side: int) -> list[int]:
    """The input pixel (y, x) at the centre of the map's strongest cell."""
    rows, cols = heat.shape
    i = int(heat.flatten().argmax())
    return [int((i // cols + 0.5) * side / rows), int((i % cols + 0.5) * side / cols)]


def public(results: list[dict]) -> list[dict]:
    """What --json prints: the maps as nested lists (occlusion's at its own resolution,
    the others pooled to 28 x 28), their peaks in input pixels."""
    out = []
    for r in results:
        heat = r["map"]
        side = r["seen"].shape[0]
        small = heat
        if heat.shape[0] > 28:
            small = torch.nn.functional.adaptive_avg_pool2d(heat[None, None], 28)[0, 0]
        out.append(
            {
                **{k: r[k] for k in ("image", "target", "target_index", "probability", "method")},
                "peak": peak(heat, side),
                "map": [[round(float(v), 6) for v in row] for row in small],
            }
        )
    return out


def draw(results: list[dict]) -> bytes:
    """Each image with its heat map over it, and the target in the title. PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.4), squeeze=False)
    for ax, r in zip(axes[0], results):
        seen = r["seen"]
        ax.imshow(seen)
        extent = (0, seen.shape[1], seen.shape[0], 0)
        ax.imshow(r["map"].numpy(), cmap="jet", alpha=0.45, extent=extent, interpolation="bilinear")
        ax.set_title(f"{r['target']} ({r['probability']:.1%}), {r['method']}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_explanations(results: list[dict], out: str) -> None:
    atomic_write_bytes(out, draw(results))


def explain_command(cfg) -> Printed:
    """`alexnet explain` (cfg: ExplainConfig): a map per image, drawn into one figure."""
    from ..runtime.files import check_output_file

    check_output_file(cfg.out, reads=[cfg.weights, *cfg.images])
    if not cfg.out.lower().endswith(".png"):
        raise UsageError(f"--out {cfg.out}: name it .png")
    options = {k: getattr(cfg, k) for k in ("method", "target", "layer", "size", "stride")}
    results = explain_images(cfg.weights, cfg.images, device=cfg.device, **options)
    write_explanations(results, cfg.out)
    shown = public(results)
    lines = [
        f"{r['image']}: {r['target']} ({r['probability']:.1%}), peak at {r['peak']}" for r in shown
    ]
    return Printed({"out": cfg.out, "images": shown}, [*lines, f"figure: {cfg.out}"])
