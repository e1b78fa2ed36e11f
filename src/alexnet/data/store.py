"""The prepared store: 256x256 RGB images in shards, the class list and the statistics.

Layout (all written through a temp file and os.replace):

    STORE/meta.json            format, size, classes, splits and their shards
    STORE/stats.npz            mean image (256x256x3, 0..255), PCA eigval/eigvec (0..1 units)
    STORE/skipped.json         every file left out, with its reason
    STORE/<split>/NNNNN.npy    format "raw": uint8 (n, 256, 256, 3), memory-mapped on read
    STORE/<split>/NNNNN.jpg    format "jpeg": the n JPEG files back to back
    STORE/<split>/NNNNN.json   labels, keys, byte offsets (jpeg); its presence marks the shard done

Why two formats: see docs/benchmarks.md. Raw arrays read at memory speed and need no
decoding, which wins whenever the set fits on disk (196,608 bytes an image); ImageNet's
1.28M images would take 252 GB raw, so large sets are stored as quality-95 JPEGs
(4:2:0, about 6x smaller) and decoded by the loader's workers, or on the GPU.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..runtime.errors import UsageError

STORE_VERSION = 1
JPEG_QUALITY = 95
RAW_LIMIT_BYTES = 8 << 30  # "auto" picks raw below this many bytes of pixels


def encode_jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def decode_jpeg(data) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8, through torchvision's libjpeg-turbo decoder."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return decode_jpeg(t, mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()


def decode_jpeg_batch(data, lengths, device="cpu"):
    """The JPEGs of one batch, back to back in `data` (1-D uint8 tensor), -> (B, H, W, 3)
    uint8 on `device`. On a GPU this is torchvision's batched nvjpeg decode, so workers
    only read bytes and the host never touches a pixel; on a CPU, libjpeg-turbo.

    nvjpeg's IDCT is not libjpeg-turbo's: GPU-decoded pixels may differ from the CPU's
    by a level or two, which the augmentation's lighting noise (§4.1) dwarfs."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    parts = list(torch.split(data, [int(n) for n in lengths]))
    images = decode_jpeg(parts, mode=ImageReadMode.RGB, device=torch.device(device))
    return torch.stack(images).permute(0, 2, 3, 1)


@dataclass
class Stats:
    mean: np.ndarray  # (256, 256, 3) float32, 0..255: the per-pixel mean image (§2)
    eigval: np.ndarray  # (3,) descending, covariance of RGB in 0..1 units (§4.1)
    eigvec: np.ndarray  # (3, 3), columns are the eigenvectors


class StoreSplit:
    def __init__(self, root: Path, name: str, meta: dict, fmt: str):
        self.root, self.name, self.format = root, name, fmt
        self.shards = meta["shards"]
        counts = [s["count"] for s in self.shards]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._open: dict[int, object] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    @cached_property
    def labels(self) -> np.ndarray:
        parts = [self._shard_meta(i)["labels"] for i in range(len(self.shards))]
        return np.asarray([x for p in parts for x in p], dtype=np.int64)

    @cached_property
    def keys(self) -> list[str]:
        return [k for i in range(len(self.shards)) for k in self._shard_meta(i)["keys"]]

    def _shard_meta(self, i: int) -> dict:
        return json.loads((self.root / self.name / f"{self.shards[i]['name']}.json").read_text())

    def _shard(self, i: int):
        # Opened lazily so that each DataLoader worker maps the files itself.
        if i not in self._open:
            base = self.root / self.name / self.shards[i]["name"]
            if self.format == "raw":
                self._open[i] = np.load(f"{base}.npy", mmap_mode="r")
            else:
                offsets = np.asarray(self._shard_meta(i)["offsets"], dtype=np.int64)
                self._open[i] = (np.memmap(f"{base}.jpg", dtype=np.uint8, mode="r"), offsets)
        return self._open[i]

    def locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name} ({len(self)} images)")
        shard = int(np.searchsorted(self.starts, index, side="right") - 1)
        return shard, index - int(self.starts[shard])

    def encoded(self, index: int) -> np.ndarray:
        """The stored JPEG bytes of one image (jpeg stores only), for GPU decoding."""
        shard, j = self.locate(index)
        data, offsets = self._shard(shard)
        return data[offsets[j] : offsets[j + 1]]

    def image(self, index: int) -> np.ndarray:
        """One stored image, (256, 256, 3) uint8."""
        if self.format == "raw":
            shard, j = self.locate(index)
            return np.asarray(self._shard(shard)[j])
        return decode_jpeg(self.encoded(index))

    def encoded_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """The stored JPEGs of `indices` back to back, and their lengths (jpeg stores):
        one buffer, so a worker hands over a batch in one piece."""
        parts = [self.encoded(int(i)) for i in indices]
        return np.concatenate(parts), np.asarray([len(b) for b in parts], dtype=np.int64)

    def batch(self, indices) -> np.ndarray:
        """(B, 256, 256, 3) uint8 for a list of indices."""
        out = np.empty((len(indices), *self.image_shape), dtype=np.uint8)
        for k, i in enumerate(indices):
            out[k] = self.image(int(i))
        return out

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 3)

    def subset(self, indices) -> StoreSplit:
        """A view on some of this split's images, in the given order."""
        return _Subset(self, np.asarray(indices, dtype=np.int64))

    def __getstate__(self):  # memmaps are reopened in the receiving process
        state = self.__dict__.copy()
        state["_open"] = {}
        return state


class _Subset(StoreSplit):
    def __init__(self, parent: StoreSplit, indices: np.ndarray):
        self.parent, self.indices = parent, indices
        self.name, self.format, self.size = parent.name, parent.format, parent.size

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.parent.labels[self.indices]

    @property
    def keys(self) -> list[str]:
        return [self.parent.keys[i] for i in self.indices]

    def image(self, index: int) -> np.ndarray:
        return self.parent.image(int(self.indices[index]))

    def encoded(self, index: int) -> np.ndarray:
        return self.parent.encoded(int(self.indices[index]))

    def __getstate__(self):
        return self.__dict__.copy()


class Store:
    def __init__(self, path: str | Path):
        self.root = Path(path)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise UsageError(f"{path} is not a prepared store (no meta.json); run alexnet prepare")
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"{meta_path} is unreadable: {e}") from None
        if self.meta.get("version") != STORE_VERSION:
            raise UsageError(f"{path}: store version {self.meta.get('version')} is not supported")
        self.format = self.meta["format"]
        self.size = int(self.meta["size"])
        self.classes = self.meta["classes"]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.classes]

    def split(self, name: str) -> StoreSplit:
        if name not in self.meta["splits"]:
            have = ", ".join(self.meta["splits"])
            raise UsageError(f"{self.root} has no split {name!r} (it has: {have})")
        s = StoreSplit(self.root, name, self.meta["splits"][name], self.format)
        s.size = self.size
        return s

    @cached_property
    def stats(self) -> Stats:
        with np.load(self.root / "stats.npz") as z:
            return Stats(z["mean"], z["eigval"], z["eigvec"])
