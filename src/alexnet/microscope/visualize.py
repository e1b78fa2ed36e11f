"""Feature visualisation: the image a unit answers most, found by gradient ascent as Olah,
Mordvintsev and Schubert do it ("Feature Visualization", Distill 2017) and their library
Lucid does by default.

- The image is not a grid of free pixels but a spectrum (a Fourier basis) whose high
  frequencies are scaled down as 1/f, so the ascent does not fill it with the
  high-frequency noise a net answers to; and its three channels live in a decorrelated
  colour space (the square root of natural images' colour covariance), mapped to RGB and
  squashed into 0..1 by a sigmoid.
- Each step shows the net a randomly padded, jittered, scaled and rotated copy (Lucid's
  standard transforms: pad 12 grey, jitter 8, scale 0.9-1.1, rotate -10..10 degrees,
  jitter 4, here as one affine resampling): what survives them is what the unit wants,
  not a pattern that fools it at one pixel phase.
- The objective is the unit's mean response over positions before its ReLU (Lucid's
  "channel" objective at a "pre_relu" layer): a unit silent on the start image still
  has a gradient.

Many units are optimised together, one image each, in one batch. Every random draw of
a unit (its start, its transforms) comes from its own generator, seeded by the run's
seed, the layer and the unit: a rerun draws the same image, whatever else is in its
batch. The net's weights are frozen; nothing but the images takes gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.device import autocast

# The square root of ImageNet's RGB covariance, as Lucid decorrelates with it.
COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
ANGLES = tuple(range(-10, 11)) + (0,) * 5
PAD, JITTER1, JITTER2 = 12, 8, 4
VIEW_MARGIN = 4  # the views are the image's side plus this on each side (jitter's reach)


@dataclass(frozen=True)
class Recipe:
    """How an image is optimised: its side, the steps and rate of Adam, the seed."""

    size: int = 128
    steps: int = 256
    lr: float = 0.05
    seed: int = 0
    decay: float = 1.0  # the spectrum's 1/f^decay scaling
    start_sd: float = 0.01


def unit_seed(seed: int, layer: str, unit: int) -> int:
    """A unit's own seed: the run's seed, its layer and its index, stable across runs
    and Python processes (not hash(), which is salted per process)."""
    text = f"{seed}:{layer}:{unit}".encode()
    value = 0
    for byte in text:
        value = (value * 131 + byte) % (2**61 - 1)
    return value


class FourierImages(nn.Module):
    """n images (n, 3, size, size) in 0..1, parameterised by their scaled spectra in a
    decorrelated colour space."""

    def __init__(self, generators: list[torch.Generator], size: int, decay: float, sd: float):
        super().__init__()
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freqs = (fy**2 + fx**2).sqrt()
        self.register_buffer("scale", 1.0 / freqs.clamp(min=1.0 / size) ** decay)
        shape = (2, 3, size, size // 2 + 1)
        start = [sd * torch.randn(shape, generator=g) for g in generators]
        self.spectrum = nn.Parameter(torch.stack(start))  # (n, 2: real, imag, 3, h, w/2+1)
        self.size = size
        colour = COLOUR_SQRT / COLOUR_SQRT.norm(dim=0).max()
        self.register_buffer("colour", colour)

    def forward(self) -> torch.Tensor:
        spectrum = torch.complex(self.spectrum[:, 0], self.spectrum[:, 1]) * self.scale
        # "ortho": the transform is unitary, so the rate means what it means for pixels
        img = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4
        rgb = torch.einsum("nchw,dc->ndhw", img, self.colour)
        return torch.sigmoid(rgb)


def random_views(images: torch.Tensor, generators: list[torch.Generator], out: int) -> torch.Tensor:
    """Each image padded with grey, then jittered, scaled and rotated by its own
    generator's draws, resampled once to out x out (bilinear)."""
    n, _, size, _ = images.shape
    padded = F.pad(images, (PAD,) * 4, value=0.5)
    side = size + 2 * PAD
    thetas = []
    for g in generators:
        shift = torch.randint(-JITTER1, JITTER1 + 1, (2,), generator=g) + torch.randint(
            -JITTER2, JITTER2 + 1, (2,), generator=g
        )
        scale, angle = _pick(SCALES, g), math.radians(_pick(ANGLES, g))
        a = (out / side) / scale  # output pixels at the input's pitch, then scaled
        cos, sin = a * math.cos(angle), a * math.sin(angle)
        tx, ty = (2 * shift.float() / side).tolist()
        thetas.append([[cos, -sin, tx], [sin, cos, ty]])
    theta = torch.tensor(thetas, dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta, [n, 3, out, out], align_corners=False)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _pick(options: tuple, g: torch.Generator):
    return options[int(torch.randint(len(options), (1,), generator=g))]


class _Reached(Exception):
    def __init__(self, out):
        self.out = out


def response_at(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of `module` for input x, the forward stopped there (the layers above
    it cost nothing, and an in-place ReLU after it never runs)."""

    def stop(mod, inputs, out):
        raise _Reached(out)

    handle = module.register_forward_hook(stop)
    try:
        model(x)
    except _Reached as reached:
        return reached.out
    finally:
        handle.remove()
    raise RuntimeError("the module was not reached by the forward pass")


def to_net_input(rgb: torch.Tensor, norm: dict) -> torch.Tensor:
    """Images in 0..1 RGB -> the net's input, preprocessed as its weights were trained
    (data/augment.py's BatchTransform): channel order, the mean (a mean image's mean
    colour: the images are of any size), the optional std, the input scale."""
    x = rgb * 255
    if norm.get("channels", "rgb") == "bgr":
        x = x.flip(1)
    mean = torch.as_tensor(norm["mean"], dtype=x.dtype, device=x.device)
    mean = mean.mean(dim=(0, 1)) if mean.dim() == 3 else mean
    x = x - mean[:, None, None]
    if norm.get("std") is not None:
        x = x / torch.as_tensor(norm["std"], dtype=x.dtype, device=x.device)[:, None, None]
    return x * float(norm.get("scale", 1.0))


def visualize(
    model: nn.Module,
    module: nn.Module,
    channels: list[int],
    seeds: list[int],
    norm: dict,
    recipe: Recipe = Recipe(),
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One image per channel of `module`'s output (a map's channel or a vector's neuron),
    each maximising that channel's mean response: (n, 3, size, size) in 0..1, float32,
    on the CPU. seeds: each image's own (unit_seed)."""
    device = next(model.parameters()).device
    starts = [torch.Generator().manual_seed(s) for s in seeds]
    draws = [torch.Generator().manual_seed(s + 1) for s in seeds]
    images = FourierImages(starts, recipe.size, recipe.decay, recipe.start_sd).to(device)
    optimiser = torch.optim.Adam(images.parameters(), lr=recipe.lr)
    index = torch.tensor(channels, device=device)
    rows = torch.arange(len(channels), device=device)
    frozen = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval().requires_grad_(False)
    try:
        for _ in range(recipe.steps):
            x = to_net_input(random_views(images(), draws, recipe.size + 2 * VIEW_MARGIN), norm)
            with autocast(device, autocast_dtype):
                out = response_at(model, module, x)
            out = out.float()
            response = out[rows, index]
            response = response.flatten(1).mean(dim=1) if response.dim() > 1 else response
            optimiser.zero_grad(set_to_none=True)
            (-response.sum()).backward()
            optimiser.step()
    finally:
        for p, g in zip(model.parameters(), frozen):
            p.requires_grad_(g)
        model.train(was_training)
    with torch.no_grad():
        return images().float().cpu()
