"""The embedded demo dataset: procedurally drawn JPEG photographs of ten kinds of object.

Nothing is downloaded. Each class is a shape with its own surface pattern (spots,
checks, stripes, ...), as real categories have both a form and a texture. Within a
class every image varies in position, scale, rotation, the object's colours and the
pattern's scale, and the background: a colour gradient with noise and clutter (lines
and blobs). Each class also has a typical hue, jittered so that neighbouring classes
overlap: colour is a first cue (it is what an un-normalised net learns first), and
shape and pattern settle the rest. Place carries no information. Images are drawn at
varied sizes and aspect ratios so that `prepare` does real resizing and cropping.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..runtime.files import cache_dir

CLASSES = (
    "disk",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "hexagon",
    "crescent",
    "arrow",
    "heart",
)
DEMO_VERSION = 5
# spread of a class's hue around its own (classes are 0.1 apart on the hue circle): wide
# enough that colour alone cannot tell neighbours apart, narrow enough that colour is a
# cue the net picks up within the demo's five minutes (0.035 in version 4 needed more)
HUE_JITTER = 0.025
PER_CLASS = 200


def _polygon(kind: str) -> list[tuple[float, float]]:
    """Unit-size outline centred on 0, for the polygonal classes."""
    if kind == "square":
        return [(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)]  # corners inside r
    if kind == "triangle":
        return [(math.cos(a), math.sin(a)) for a in np.radians([-90, 30, 150])]
    if kind == "hexagon":
        return [(math.cos(a), math.sin(a)) for a in np.radians(np.arange(0, 360, 60))]
    if kind == "star":
        pts = []
        for i in range(10):
            r = 1.0 if i % 2 == 0 else 0.42
            a = math.radians(-90 + 36 * i)
            pts.append((r * math.cos(a), r * math.sin(a)))
        return pts
    if kind == "cross":
        w = 0.33
        return [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    if kind == "arrow":
        return [(-1, -0.3), (0.2, -0.3), (0.2, -0.75), (1, 0), (0.2, 0.75), (0.2, 0.3), (-1, 0.3)]
    if kind == "heart":
        t = np.linspace(0, 2 * np.pi, 60)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(a / 17, b / 17) for a, b in zip(x, y, strict=True)]
    raise ValueError(kind)


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    arr = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    arr += rng.normal(0, rng.uniform(4, 20), (h, w, 3))  # sensor-like noise
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(4, 12)):  # clutter: strokes and small blobs
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            pts = [tuple(rng.uniform(0, [w, h])) for _ in range(2)]
            draw.line(pts, fill=col, width=int(rng.integers(1, 4)))
        else:
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, min(w, h) / 16)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
    return img


def _class_colour(rng: np.random.Generator, label: int, background: np.ndarray) -> np.ndarray:
    """The class's typical hue (jittered so that neighbouring classes overlap), with a
    random saturation, and a brightness that stands out from the background."""
    import colorsys

    hue = (label / len(CLASSES) + rng.normal(0, HUE_JITTER)) % 1.0
    sat = rng.uniform(0.45, 1.0)
    dark_bg = float(background.mean()) < 128
    val = rng.uniform(0.8, 1.0) if dark_bg else rng.uniform(0.2, 0.45)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255


def _pattern(
    label: int, u: np.ndarray, v: np.ndarray, freq: float, rng: np.random.Generator
) -> np.ndarray:
    """Each class's characteristic surface, as real categories have theirs (a zebra's
    stripes, a leopard's spots); it turns with the object and varies in scale."""
    fu, fv = u * freq, v * freq
    if label == 0:  # spots
        return (((fu % 1) - 0.5) ** 2 + ((fv % 1) - 0.5) ** 2 < 0.09).astype(float)
    if label == 1:  # checks
        return ((np.floor(fu) + np.floor(fv)) % 2).astype(float)
    if label == 2:  # stripes
        return (np.sin(2 * np.pi * fu) > 0).astype(float)
    if label == 3:  # fine speckle
        return (rng.random(u.shape) < 0.35).astype(float)
    if label == 4:  # concentric rings
        return (np.sin(2 * np.pi * np.hypot(u - 0.5, v - 0.5) * freq * 1.5) > 0).astype(float)
    if label == 5:  # grid lines
        return (((fu % 1) < 0.22) | ((fv % 1) < 0.22)).astype(float)
    if label == 6:  # fine stripes
        return (np.sin(2 * np.pi * fu * 2.2) > 0.3).astype(float)
    if label == 7:  # smooth shading
        return np.clip(u * 1.2 - 0.1, 0, 1)
    if label == 8:  # zigzag
        return (np.sin(2 * np.pi * fu + 2.5 * np.sin(2 * np.pi * fv)) > 0).astype(float)
    # blotches: smooth noise, thresholded
    coarse = rng.random((6, 6))
    big = (
        np.asarray(
            Image.fromarray((coarse * 255).astype(np.uint8)).resize(
                u.shape[::-1], Image.Resampling.BICUBIC
            )
        )
        / 255.0
    )
    return (big > 0.5).astype(float)


def _object_fill(
    rng: np.random.Generator, size: int, base: np.ndarray, label: int, angle: float
) -> Image.Image:
    """The object's surface: its colour, with the class's pattern in a second colour."""
    other = rng.integers(0, 256, 3).astype(np.float64)
    if np.abs(other - base).sum() < 150:
        other = 255 - base
    yy, xx = np.mgrid[0:size, 0:size] / size
    ca, sa = np.cos(angle), np.sin(angle)
    u = (xx - 0.5) * ca + (yy - 0.5) * sa + 0.5
    v = -(xx - 0.5) * sa + (yy - 0.5) * ca + 0.5
    mask = _pattern(label, u, v, rng.uniform(4, 8), rng)
    mix = rng.uniform(0.45, 0.8)
    arr = base * (1 - mix * mask[..., None]) + other * (mix * mask[..., None])
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def draw_example(label: int, rng: np.random.Generator) -> Image.Image:
    """One photograph of class `label`, every random choice drawn from `rng`."""
    w = int(rng.integers(256, 360))
    h = int(rng.integers(256, 360))
    img = _background(rng, w, h)
    s = min(w, h)
    radius = rng.uniform(0.24, 0.4) * s
    cx = rng.uniform(radius + 0.1 * s, w - radius - 0.1 * s) if w > 2 * radius + 0.2 * s else w / 2
    cy = rng.uniform(radius + 0.1 * s, h - radius - 0.1 * s) if h > 2 * radius + 0.2 * s else h / 2
    angle = rng.uniform(0, 2 * np.pi)
    box = int(2 * radius) + 4
    mask = Image.new("L", (box, box), 0)
    md = ImageDraw.Draw(mask)
    c, r = box / 2, radius
    kind = CLASSES[label]
    if kind == "disk":
        md.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif kind == "ring":
        md.ellipse([c - r, c - r, c + r, c + r], fill=255)
        md.ellipse([c - 0.55 * r, c - 0.55 * r, c + 0.55 * r, c + 0.55 * r], fill=0)
    elif kind == "crescent":
        md.ellipse([c - r, c - r, c + r, c + r], fill=255)
        off = 0.45 * r
        md.ellipse([c - r + off, c - r - 0.1 * r, c + r + off, c + r - 0.1 * r], fill=0)
    else:
        ca, sa = math.cos(angle), math.sin(angle)
        pts = [(c + r * (x * ca - y * sa), c + r * (x * sa + y * ca)) for x, y in _polygon(kind)]
        md.polygon(pts, fill=255)
    if kind in ("crescent", "ring", "disk"):
        mask = mask.rotate(math.degrees(angle), resample=Image.Resampling.BILINEAR)
    mask = mask.filter(ImageFilter.GaussianBlur(0.8))
    left, top = int(cx - box / 2), int(cy - box / 2)
    behind = np.asarray(img.crop((left, top, left + box, top + box)))
    img.paste(
        _object_fill(rng, box, _class_colour(rng, label, behind), label, angle), (left, top), mask
    )
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return img


def _draw_class(args) -> None:
    tmp, label, per_class, seed = args
    name = CLASSES[label]
    rng = np.random.default_rng([seed, label])
    for i in range(per_class):
        draw_example(label, rng).save(tmp / name / f"{name}_{i:04d}.jpg", quality=90)


def _stamp(per_class: int, seed: int) -> str:
    return f"{DEMO_VERSION} {per_class} {seed}\n"


def demo_dataset_ready(root: str | Path, per_class: int = PER_CLASS, seed: int = 0) -> bool:
    """Whether `root` holds a complete demo dataset drawn with these settings."""
    marker = Path(root) / ".complete"
    return marker.exists() and marker.read_text() == _stamp(per_class, seed)


def build_demo_dataset(
    root: str | Path, per_class: int = PER_CLASS, seed: int = 0, workers: int = 0
) -> Path:
    """Write CLASSES x per_class JPEGs into root/<class>/, once; returns root.

    The finished folder carries a marker with its parameters; a matching one is reused.
    """
    root = Path(root)
    stamp = _stamp(per_class, seed)
    if demo_dataset_ready(root, per_class, seed):
        return root
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    for name in CLASSES:
        (tmp / name).mkdir(parents=True)
    jobs = [(tmp, label, per_class, seed) for label in range(len(CLASSES))]
    with multiprocessing.get_context("fork").Pool(workers or os.cpu_count() or 1) as pool:
        pool.map(_draw_class, jobs)  # one seeded stream per class: same files for any pool
    (tmp / ".complete").write_text(stamp)
    if root.exists():
        import shutil

        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def ensure_demo_store(progress: bool = True, log=None, per_class: int = PER_CLASS) -> Path:
    """Build (once) the demo images and their store, through the normal prepare path.

    `log`, if given, is called with a line as each stage starts and ends (what a
    terminal-less log shows in place of the progress bars)."""
    from .prepare import PrepareConfig, prepare

    say = log or (lambda line: None)
    cache = cache_dir()
    images = cache / "demo-images"
    if not demo_dataset_ready(images, per_class):
        say(f"drawing the demo dataset into {images}")
        start = time.perf_counter()
        build_demo_dataset(images, per_class)
        say(f"drew {len(CLASSES) * per_class} images in {time.perf_counter() - start:.1f} s")
    store = cache / "demo-store"
    stamp = _stamp(per_class, seed=0)  # what the images' own marker now holds
    marker = store / "demo-source.txt"
    if not (marker.exists() and marker.read_text() == stamp):
        say(f"preparing them into the store {store}")
        start = time.perf_counter()
        prepare(
            PrepareConfig(
                src=str(images), out=str(store), val_fraction=0.2, overwrite=True, progress=progress
            )
        )
        marker.write_text(stamp)
        say(f"prepared in {time.perf_counter() - start:.1f} s")
    return store
