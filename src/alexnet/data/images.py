"""Reading any image a user has and turning it into the paper's 256x256 RGB (§2,
docs/paper.md)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .config import STORE_SIZE

# Decompression bombs: PIL warns above MAX_IMAGE_PIXELS and raises above twice that.
# We refuse at the warning level, and also refuse shapes no photograph has.
MAX_PIXELS = 89_478_485
MAX_ASPECT = 50
MIN_SIDE = 4

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class BadImage(Exception):
    """A file that cannot become a training image; str() is the reason we report."""


def is_image_name(path: str | Path) -> bool:
    """Whether a file name has an image extension (any case)."""
    return str(path).lower().endswith(EXTENSIONS)


def open_rgb(source: str | Path | bytes) -> Image.Image:
    """Decode to an RGB PIL image: EXIF orientation applied, every mode converted.

    Greyscale, CMYK, palette, 16-bit and alpha images all become 8-bit RGB; the
    format is sniffed from the content, so PNG data under a .JPEG name works.
    """
    try:
        if isinstance(source, bytes):
            if not source:
                raise BadImage("empty file")
            fp = io.BytesIO(source)
        else:
            path = Path(source)
            if path.stat().st_size == 0:
                raise BadImage("empty file")
            fp = path.open("rb")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with fp, Image.open(fp) as img:
                w, h = img.size
                _check_dimensions(w, h)
                img.load()
                return to_rgb(img)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("decompression bomb (too many pixels)") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image") from None
    except PermissionError:
        raise BadImage("unreadable: permission denied") from None
    except IsADirectoryError:
        raise BadImage("a directory, not an image file") from None
    except FileNotFoundError:
        if "://" in str(source):
            raise BadImage("a URL: alexnet reads local files, download it first") from None
        if Path(source).is_symlink():
            raise BadImage("unreadable: a link to a file that is not there") from None
        raise BadImage("unreadable: no such file") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in msg.lower():
            raise BadImage("truncated image") from None
        raise BadImage(f"corrupt image ({msg})") from None


def _check_dimensions(w: int, h: int) -> None:
    if w * h > MAX_PIXELS:
        raise BadImage(f"decompression bomb ({w}x{h} pixels)")
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_ASPECT * min(w, h):
        raise BadImage(f"absurd dimensions ({w}x{h})")


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB, upright: EXIF orientation applied, every mode converted (alpha over
    white, 16-bit scaled by the range its format holds)."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits by the range the format can hold
        arr = np.asarray(img, dtype=np.uint32)
        top = 65535 if arr.max() > 255 else 255
        img = Image.fromarray((arr * 255 // top).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int = STORE_SIZE) -> np.ndarray:
    """§2: shorter side to `size` (antialiased), then the central size x size patch."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8).copy()


def center_view(img: np.ndarray, crop: int = 224) -> np.ndarray:
    """The centre crop x crop patch of a stored image: what the net sees at test time."""
    top = (img.shape[0] - crop) // 2
    left = (img.shape[1] - crop) // 2
    return img[top : top + crop, left : left + crop]


def load_for_store(source: str | Path | bytes, size: int = STORE_SIZE) -> np.ndarray:
    """A file (or its bytes) -> the store's size x size x 3 uint8 image (§2). Raises BadImage."""
    return resize_center_crop(open_rgb(source), size)
