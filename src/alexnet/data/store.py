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
import re
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..runtime.errors import UsageError

STORE_VERSION = 1
JPEG_QUALITY = 95
RAW_LIMIT_BYTES = 8 << 30  # "auto" picks raw below this many bytes of pixels


def encode_jpeg(image: np.ndarray) -> bytes:
    """A uint8 image -> JPEG bytes at the store's quality."""
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
    """A store's statistics: the mean image (§2) and the RGB PCA (§4.1)."""

    mean: np.ndarray  # (256, 256, 3) float32, 0..255: the per-pixel mean image (§2)
    eigval: np.ndarray  # (3,) descending, covariance of RGB in 0..1 units (§4.1)
    eigvec: np.ndarray  # (3, 3), columns are the eigenvectors


class DamagedStore(UsageError):
    """A store file that is missing, truncated or inconsistent: named, with the fix."""

    def __init__(self, root: Path | str, what: str | None = None):
        # one argument: a message as it is (how DataLoader re-raises it from a worker)
        msg = (
            str(root)
            if what is None
            else f"damaged store {root}: {what}; run alexnet prepare again"
        )
        super().__init__(msg)


class SplitView:
    """What every view on a split offers: its images, labels and keys by index."""

    def __init__(self, name: str, fmt: str, size: int):
        self.name, self.format, self.size = name, fmt, size

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, index: int) -> np.ndarray:
        """One stored image, (size, size, 3) uint8."""
        raise NotImplementedError

    def encoded(self, index: int) -> np.ndarray:
        """The stored JPEG bytes of one image (jpeg stores only), for GPU decoding."""
        raise NotImplementedError

    def encoded_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """The stored JPEGs of `indices` back to back, and their lengths (jpeg stores):
        one buffer, so a worker hands over a batch in one piece."""
        parts = [self.encoded(int(i)) for i in indices]
        return np.concatenate(parts), np.asarray([len(b) for b in parts], dtype=np.int64)

    def batch(self, indices) -> np.ndarray:
        """(B, size, size, 3) uint8 for a list of indices."""
        out = np.empty((len(indices), *self.image_shape), dtype=np.uint8)
        for k, i in enumerate(indices):
            out[k] = self.image(int(i))
        return out

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of every stored image."""
        return (self.size, self.size, 3)

    def subset(self, indices) -> SplitView:
        """A view on some of this split's images, in the given order."""
        return SubsetView(self, np.asarray(indices, dtype=np.int64))


class StoreSplit(SplitView):
    """One split of a store, its shards opened lazily (each DataLoader worker maps the
    files itself). Every shard is checked against meta.json as it is opened."""

    def __init__(self, root: Path, name: str, meta: dict, fmt: str, size: int, num_classes: int):
        super().__init__(name, fmt, size)
        self.root, self.num_classes = root, num_classes
        self.shards = meta["shards"]
        counts = [s["count"] for s in self.shards]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._open: dict[int, object] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    @cached_property
    def labels(self) -> np.ndarray:
        """Every image's class index, in store order (checked against the class count)."""
        parts = [self._shard_meta(i)["labels"] for i in range(len(self.shards))]
        for i, part in enumerate(parts):
            if not isinstance(part, list) or not all(type(x) is int for x in part):
                raise DamagedStore(
                    self.root,
                    f"{self.shards[i]['name']}.json of {self.name} holds labels that are not "
                    "a list of class indices",
                )
        labels = np.asarray([x for p in parts for x in p], dtype=np.int64)
        if len(labels) != len(self):
            raise DamagedStore(
                self.root, f"{self.name} has {len(labels)} labels for {len(self)} images"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DamagedStore(
                self.root, f"{self.name} has a label outside its {self.num_classes} classes"
            )
        return labels

    @cached_property
    def keys(self) -> list[str]:
        """Every image's key (its source path or id), in store order."""
        return [k for i in range(len(self.shards)) for k in self._shard_meta(i)["keys"]]

    def _shard_meta(self, i: int) -> dict:
        path = self.root / self.name / f"{self.shards[i]['name']}.json"
        try:
            meta = json.loads(path.read_text())
            meta["labels"], meta["keys"]  # noqa: B018 (both must be there)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DamagedStore(
                self.root, f"{path.name} of {self.name} is unreadable ({e})"
            ) from None
        return meta

    def _shard(self, i: int):
        if i not in self._open:
            self._open[i] = self._open_shard(i)
        return self._open[i]

    def _open_shard(self, i: int):
        base = self.root / self.name / self.shards[i]["name"]
        count = self.shards[i]["count"]
        try:
            if self.format == "raw":
                data = np.load(f"{base}.npy", mmap_mode="r")
                ok = (
                    data.ndim == 4 and data.shape[0] >= count and data.shape[1:] == self.image_shape
                )
                if not ok:
                    raise ValueError(f"shape {data.shape} for {count} images")
                return data
            offsets = np.asarray(self._shard_meta(i)["offsets"], dtype=np.int64)
            data = np.memmap(f"{base}.jpg", dtype=np.uint8, mode="r")
            if len(offsets) < count + 1 or offsets[count] > len(data):
                raise ValueError(f"{len(data)} bytes for {count} images")
            if offsets.ndim != 1 or offsets[0] < 0 or (np.diff(offsets[: count + 1]) <= 0).any():
                raise ValueError("its image offsets do not increase: the index is garbled")
            return data, offsets
        except (OSError, ValueError, KeyError, EOFError, TypeError) as e:
            name = f"{base.name}.{'npy' if self.format == 'raw' else 'jpg'}"
            raise DamagedStore(self.root, f"shard {self.name}/{name} is unreadable ({e})") from None

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, position in it) of an image index."""
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
        """One stored image, (size, size, 3) uint8."""
        if self.format == "raw":
            shard, j = self.locate(index)
            return np.asarray(self._shard(shard)[j])
        try:
            return decode_jpeg(self.encoded(index))
        except RuntimeError as e:
            shard, j = self.locate(index)
            raise DamagedStore(
                self.root,
                f"image {j} of shard {self.name}/"
                f"{self.shards[shard]['name']}.jpg does not decode ({e})",
            ) from None

    def __getstate__(self):  # memmaps are reopened in the receiving process
        state = self.__dict__.copy()
        state["_open"] = {}
        return state


class SubsetView(SplitView):
    """Some of a split's images, in a given order."""

    def __init__(self, parent: SplitView, indices: np.ndarray):
        super().__init__(parent.name, parent.format, parent.size)
        self.parent, self.indices = parent, indices

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


ALL_SPLITS = "all"


class JoinedView(SplitView):
    """Several splits' images one after another, in split then store order."""

    def __init__(self, parts: list[SplitView]):
        super().__init__(ALL_SPLITS, parts[0].format, parts[0].size)
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _where(self, index: int) -> tuple[SplitView, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range ({len(self)} images)")
        k = int(np.searchsorted(self.starts, index, side="right") - 1)
        return self.parts[k], index - int(self.starts[k])

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([p.labels for p in self.parts])

    @property
    def keys(self) -> list[str]:
        return [k for p in self.parts for k in p.keys]

    def image(self, index: int) -> np.ndarray:
        part, j = self._where(index)
        return part.image(j)

    def encoded(self, index: int) -> np.ndarray:
        part, j = self._where(index)
        return part.encoded(j)


def fixed_subset(split: SplitView, n: int | None) -> SplitView:
    """The whole split, or n of its images: a fixed seeded choice (the same in every run
    and every arm of an ablation, whatever their seeds), kept in store order."""
    if n is None or n >= len(split):
        return split
    return split.subset(np.sort(np.random.default_rng(0).permutation(len(split))[:n]))


STORE_FILES = ("meta.json", "stats.npz", "skipped.json", "demo-source.txt")  # at its top
_SHARD_FILE = re.compile(r"^\d+\.(npy|jpg|json)$")


def foreign_files(path: str | Path) -> list[Path]:
    """What lies in a store that its writers did not put there (what --overwrite must
    not delete): anything but its top files, its split folders' shards, and temp files."""
    root = Path(path)
    splits = set(json.loads((root / "meta.json").read_text()).get("splits", {}))
    ours = lambda p, shard: (
        p.name.startswith(".")
        and p.name.endswith(".tmp")
        or (  # noqa: E731
            shard and p.is_file() and _SHARD_FILE.match(p.name)
        )
    )
    found = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and p.name in splits:
            found += [q for q in sorted(p.iterdir()) if not ours(q, True)]
        elif not (p.is_file() and p.name in STORE_FILES) and not ours(p, False):
            found.append(p)
    return found


def is_store(path: str | Path) -> bool:
    """Whether `path` holds a store (its meta.json says so): what prepare --overwrite may
    replace."""
    from ..runtime.files import holds_store

    return holds_store(path)


META_KEYS = ("version", "format", "size", "classes", "splits")


def class_ids(classes: list[dict]) -> list[str]:
    """The ids of a class list ({index, id, name} entries; an entry without an id, from
    an older checkpoint, by its name): what "the same classes" compares, everywhere."""
    return [str(c["id"] if "id" in c else c["name"]) for c in classes]


class Store:
    """A prepared store (see the module docstring for its files)."""

    def __init__(self, path: str | Path):
        self.root = Path(path)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise UsageError(f"{path} is not a prepared store (no meta.json); run alexnet prepare")
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise DamagedStore(self.root, f"meta.json is unreadable ({e})") from None
        missing = [k for k in META_KEYS if not isinstance(self.meta, dict) or k not in self.meta]
        if missing:
            raise DamagedStore(self.root, f"meta.json has no {missing[0]!r}")
        version = self.meta["version"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise DamagedStore(self.root, f"meta.json's version is {version!r}, not a number")
        if version != STORE_VERSION:
            raise UsageError(
                f"{path}: store version {version} is not supported (this alexnet reads "
                f"version {STORE_VERSION}): prepare the store again"
            )
        self.format = self.meta["format"]
        if self.format not in ("raw", "jpeg"):
            raise DamagedStore(self.root, f"meta.json's format is {self.format!r}, not raw or jpeg")
        size = self.meta["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise DamagedStore(self.root, f"meta.json's size is {size!r}, not a pixel count")
        self.size = size
        self.classes = self.meta["classes"]
        self._check_classes()
        self._check_splits()

    def _check_classes(self) -> None:
        """Each class an {index, id, name} entry, indexed by its position."""
        classes = self.classes
        if not isinstance(classes, list) or not classes:
            raise DamagedStore(self.root, "meta.json's classes are not a list of classes")
        for i, c in enumerate(classes):
            ok = (
                isinstance(c, dict)
                and c.get("index") == i
                and isinstance(c.get("id"), str)
                and isinstance(c.get("name"), str)
            )
            if not ok:
                raise DamagedStore(
                    self.root, f"meta.json's class {i} is {c!r}, not an {{index, id, name}} entry"
                )

    def _check_splits(self) -> None:
        try:
            for split in self.meta["splits"].values():
                for shard in split["shards"]:
                    if not (isinstance(shard["name"], str) and int(shard["count"]) >= 0):
                        raise ValueError(shard)
        except (AttributeError, KeyError, TypeError, ValueError):
            raise DamagedStore(self.root, "meta.json lists its shards wrongly") from None

    @property
    def num_classes(self) -> int:
        """How many classes the store holds."""
        return len(self.classes)

    def require_crop(self, crop: int, variant: str) -> None:
        """Refuse, in one line, a store whose images are smaller than the net's crop."""
        if self.size < crop:
            raise UsageError(
                f"{self.root} holds {self.size}-pixel images, smaller than the {crop}-pixel "
                f"crops the {variant} net takes: prepare it with --size 256 (the paper's)"
            )

    def split(self, name: str) -> SplitView:
        """A split by name ('train', 'val'; 'all': every split one after another, as an
        image folder is evaluated whole); UsageError for one the store lacks."""
        if name == ALL_SPLITS:
            return JoinedView([self.split(n) for n in self.meta["splits"]])
        if name not in self.meta["splits"]:
            have = ", ".join([*self.meta["splits"], ALL_SPLITS])
            raise UsageError(f"{self.root} has no split {name!r} (it has: {have})")
        return StoreSplit(
            self.root, name, self.meta["splits"][name], self.format, self.size, self.num_classes
        )

    @cached_property
    def stats(self) -> Stats:
        """The mean image and RGB PCA, read (and checked) once."""
        try:
            with np.load(self.root / "stats.npz", allow_pickle=False) as z:
                stats = Stats(z["mean"], z["eigval"], z["eigvec"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            why = (
                "it holds Python objects, which are never loaded"
                if "Object arrays" in str(e)
                else e
            )
            raise DamagedStore(self.root, f"stats.npz is unreadable ({why})") from None
        if stats.mean.shape != (self.size, self.size, 3):
            raise DamagedStore(self.root, "stats.npz does not match the store's image size")
        if stats.eigval.shape != (3,) or stats.eigvec.shape != (3, 3):
            raise DamagedStore(
                self.root, "stats.npz's RGB PCA is not 3 eigenvalues and a 3x3 basis"
            )
        if not all(np.isfinite(a).all() for a in (stats.mean, stats.eigval, stats.eigvec)):
            raise DamagedStore(self.root, "stats.npz holds NaN or infinite values")
        return stats
