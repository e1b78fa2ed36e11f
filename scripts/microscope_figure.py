"""A few units of a microscope site as one picture, a row each: the unit's feature
visualisation, then its top dataset patches, each labelled with its response.

    python scripts/microscope_figure.py SITE conv1:12 conv3:5 conv5:40 --top 6 --out fig.png

SITE is an `alexnet microscope --out` folder; each LAYER:UNIT must be on its pages.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

CELL, LABEL, GAP = 112, 14, 6


def _manifest(site: Path) -> dict:
    saved = json.loads((site / "microscope.json").read_text())
    return {(layer["layer"], u["unit"]): u for layer in saved["layers"] for u in layer["units"]}


def _tile(path: Path) -> Image.Image:
    img = Image.open(path).convert("RGB")
    scale = CELL / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.NEAREST if img.width < CELL else Image.BILINEAR)


def figure(site: Path, picks: list[str], top: int) -> Image.Image:
    units = _manifest(site)
    rows = []
    for pick in picks:
        layer, _, unit = pick.partition(":")
        record = units.get((layer, int(unit)))
        if record is None:
            raise SystemExit(f"{pick}: not on {site}'s pages")
        folder = site / "img" / layer / unit
        cells = [(_tile(folder / "vis.png"), f"{layer} unit {unit}")]
        fc = not (folder / "top-0.png").is_file()
        for k, t in enumerate(record["top"][:top]):
            path = site / "img" / "src" / f"{t['index']}.jpg" if fc else folder / f"top-{k}.png"
            cells.append((_tile(path), f"{t['activation']:.3g}"))
        rows.append(cells)
    width = (top + 1) * (CELL + GAP) + GAP
    height = len(rows) * (CELL + LABEL + GAP) + GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for r, cells in enumerate(rows):
        y = GAP + r * (CELL + LABEL + GAP)
        for c, (img, label) in enumerate(cells):
            x = GAP + c * (CELL + GAP) + (1 if c else 0) * GAP // 2
            canvas.paste(img, (x + (CELL - img.width) // 2, y + (CELL - img.height) // 2))
            draw.text((x + 2, y + CELL + 1), label, fill=(30, 30, 30))
    return canvas


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("site", type=Path)
    p.add_argument("units", nargs="+", metavar="LAYER:UNIT")
    p.add_argument("--top", type=int, default=6)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    figure(args.site, args.units, args.top).save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
