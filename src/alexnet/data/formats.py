"""Datasets in the form their publishers ship them, read in place: nothing is unpacked
to disk first.

- MNIST and Fashion-MNIST: the four idx files, gzipped or not, in a plain folder (as
  Debian's dataset-fashion-mnist installs them) or in torchvision's MNIST/raw or
  FashionMNIST/raw.
- CIFAR-10 and CIFAR-100: the python tarballs (cifar-10-python.tar.gz,
  cifar-100-python.tar.gz) or their extracted folders. Their batches are pickles: they
  are read with an unpickler that builds plain containers and numpy arrays only, so a
  crafted file cannot run code.
- ILSVRC-2012 as downloaded: ILSVRC2012_img_train.tar (one inner tar per wnid),
  ILSVRC2012_img_val.tar (flat) and ILSVRC2012_devkit_t12.tar.gz. The tars are indexed,
  not extracted: each image is an (archive, offset, size) that a worker reads in place.
  Validation labels come from the devkit's ground truth, whose values are
  ILSVRC2012_IDs; data/meta.mat maps them to wnids (its leaf synsets, num_children 0).
  Class indices are the ranks of the sorted wnids, as everywhere else in alexnet.

Every reader raises UsageError naming the file for anything malformed.
"""

from __future__ import annotations

import gzip
import io
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np

from ..runtime.errors import UsageError

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS = tuple(str(d) for d in range(10))

# ---------------------------------------------------------------- idx (MNIST)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (uint8 data), gzipped or not."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as e:
        raise UsageError(f"{path}: unreadable idx file ({e})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise UsageError(f"{path}: not an idx file of bytes (bad magic number)")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    if len(data) - start != int(np.prod(dims)):
        raise UsageError(f"{path}: idx file truncated ({len(data) - start} bytes for {dims})")
    return np.frombuffer(data, np.uint8, offset=start).reshape(dims)


def find_idx(root: Path) -> dict[str, tuple[Path, Path]] | None:
    """{"train": (images, labels), "val": ...} when root (or torchvision's raw folder
    under it) holds the four idx files."""
    for where in (root, root / "FashionMNIST" / "raw", root / "MNIST" / "raw"):
        found = {}
        for split, names in IDX_FILES.items():
            paths = [_with_or_without_gz(where / n) for n in names]
            if all(paths):
                found[split] = tuple(paths)
        if len(found) == 2:
            return found
    return None


def _with_or_without_gz(path: Path) -> Path | None:
    for p in (path, path.with_name(path.name + ".gz")):
        if p.is_file():
            return p
    return None


def idx_arrays(found: dict[str, tuple[Path, Path]]):
    """(kind, class names, {split: (images (N, H, W), labels (N,))})."""
    kind = "fashion-mnist" if "fashion" in str(found["train"][0]).lower() else "mnist"
    splits = {}
    for split, (images_path, labels_path) in found.items():
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UsageError(f"{images_path}: {images.shape} images for {labels.shape} labels")
        if labels.max(initial=0) > 9:
            raise UsageError(f"{labels_path}: labels outside 0..9")
        splits[split] = (images, labels.astype(np.int64))
    return kind, FASHION_CLASSES if kind == "fashion-mnist" else DIGITS, splits


# ---------------------------------------------------------------- CIFAR
class _ArraysOnly(pickle.Unpickler):
    """Containers, strings, numbers and numpy arrays; no other class, no code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001  (a malformed pickle raises anything)
        raise UsageError(f"{where}: not a CIFAR batch ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: not a CIFAR batch")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


CIFAR = {  # kind: (folder in the tarball, train files, test files, meta file, label key, names key)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        "meta",
        "fine_labels",
        "fine_label_names",
    ),
}


CIFAR_PLACES = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz"),
}


def find_cifar(root: Path) -> tuple[str, Path] | None:
    """(kind, tarball or extracted folder) when root holds CIFAR's python form."""
    for kind, names in CIFAR_PLACES.items():
        for name in names:
            if (root / name).exists():
                return kind, root / name
    return None


def cifar_arrays(kind: str, where: Path):
    """(class names, {split: (images (N, 32, 32, 3), labels (N,))}) from a tarball or folder."""
    folder, train, test, meta, label_key, names_key = CIFAR[kind]
    read = _tar_reader(where) if where.is_file() else (lambda name: (where / name).read_bytes())
    try:
        names = _unpickle(read(f"{folder}/{meta}" if where.is_file() else meta), str(where))
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names[names_key]]
        splits = {}
        for split, files in (("train", train), ("val", test)):
            batches = [_unpickle(read(f"{folder}/{f}" if where.is_file() else f), f) for f in files]
            data = np.concatenate([np.asarray(b["data"], np.uint8) for b in batches])
            labels = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
            splits[split] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)
    except UsageError:
        raise
    except (KeyError, OSError, ValueError, tarfile.TarError, EOFError) as e:
        raise UsageError(f"{where}: incomplete or corrupt {kind} files ({e})") from None
    return classes, splits


def _tar_reader(path: Path):
    try:
        tar = tarfile.open(path)
        members = {m.name: m for m in tar.getmembers()}
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UsageError(f"{path}: not a readable tar archive ({e})") from None

    def read(name: str) -> bytes:
        if name not in members:
            raise KeyError(f"{name} is not in the archive")
        return tar.extractfile(members[name]).read()

    return read


# ---------------------------------------------------------------- ILSVRC-2012 archives
TRAIN_TAR, VAL_TAR, DEVKIT = (
    "ILSVRC2012_img_train.tar",
    "ILSVRC2012_img_val.tar",
    "ILSVRC2012_devkit_t12.tar.gz",
)
VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d+)\.")


class _Window(io.RawIOBase):
    """A read-only, seekable view of [offset, offset + size) of a file: an inner tar."""

    def __init__(self, fh, offset: int, size: int):
        self.fh, self.offset, self.size, self.pos = fh, offset, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=io.SEEK_SET):
        self.pos = {io.SEEK_SET: pos, io.SEEK_CUR: self.pos + pos, io.SEEK_END: self.size + pos}[
            whence
        ]
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, buf):
        n = max(0, min(len(buf), self.size - self.pos))
        self.fh.seek(self.offset + self.pos)
        data = self.fh.read(n)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


def tar_files(path: Path, fileobj=None, base: int = 0) -> list[tuple[str, int, int]]:
    """(name, absolute offset, size) of every regular file of an uncompressed tar, checked
    to lie inside the archive (a truncated download fails here, named)."""
    total = path.stat().st_size
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r:") if fileobj else tarfile.open(path, "r:")
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UsageError(
            f"{path} is truncated or not an uncompressed tar ({e}): download it again"
        ) from None
    files = [(m.name, base + m.offset_data, m.size) for m in members if m.isfile()]
    for name, offset, size in files:
        if offset + size > total:
            raise UsageError(f"{path} is truncated: {name} runs past its end; download it again")
    return files


def ilsvrc_train(train_tar: Path) -> dict[str, list[tuple[str, int, int]]]:
    """wnid -> its images (name, offset, size), from the outer tar of per-class tars."""
    by_wnid = {}
    with open(train_tar, "rb") as fh:
        for name, offset, size in tar_files(train_tar):
            if not name.endswith(".tar"):
                continue
            wnid = Path(name).stem
            window = io.BufferedReader(_Window(fh, offset, size))
            by_wnid[wnid] = tar_files(train_tar, window, offset)
    if not by_wnid:
        raise UsageError(f"{train_tar}: no per-class tars inside")
    return by_wnid


def read_devkit(devkit: Path) -> tuple[dict[int, str], dict[str, str], list[int]]:
    """(ILSVRC2012_ID -> wnid of the leaf synsets, wnid -> name, validation ground truth)."""
    try:
        with tarfile.open(devkit) as tar:
            wanted = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            meta = wanted.get("meta.mat")
            truth = wanted.get("ILSVRC2012_validation_ground_truth.txt")
            if meta is None or truth is None:
                missing = "data/meta.mat" if meta is None else "the validation ground truth"
                raise UsageError(f"{devkit}: no {missing} in the devkit")
            meta_bytes = tar.extractfile(meta).read()
            truth_text = tar.extractfile(truth).read().decode()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UsageError(f"{devkit}: not a readable devkit archive ({e})") from None
    id_to_wnid, names = _synsets(meta_bytes, devkit)
    try:
        ground_truth = [int(x) for x in truth_text.split()]
    except ValueError:
        raise UsageError(f"{devkit}: the validation ground truth is not a list of IDs") from None
    return id_to_wnid, names, ground_truth


def _synsets(meta_bytes: bytes, devkit: Path) -> tuple[dict[int, str], dict[str, str]]:
    try:
        import scipy.io
    except ImportError:
        raise UsageError(
            'reading the devkit\'s meta.mat needs scipy: pip install "alexnet[imagenet]"'
        ) from None
    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta_bytes), squeeze_me=True)["synsets"]
        leaves = [s for s in synsets if int(s["num_children"]) == 0]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
        names = {str(s["WNID"]): str(s["words"]).split(",")[0].strip() for s in leaves}
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise UsageError(f"{devkit}: meta.mat has no readable synsets ({e})") from None
    return id_to_wnid, names


def ilsvrc_val(val_tar: Path, id_to_wnid: dict[int, str], truth: list[int]):
    """[(name, offset, size, wnid)] of the flat validation tar, labelled by the devkit."""
    files = sorted(
        (f for f in tar_files(val_tar) if VAL_NUMBER.search(f[0])),
        key=lambda f: int(VAL_NUMBER.search(f[0]).group(1)),
    )
    if len(files) != len(truth):
        raise UsageError(
            f"the devkit's ground truth has {len(truth)} labels for the "
            f"{len(files)} images of {val_tar}"
        )
    out = []
    for (name, offset, size), ilsvrc_id in zip(files, truth, strict=True):
        if ilsvrc_id not in id_to_wnid:
            raise UsageError(
                f"the devkit's ground truth names ILSVRC2012_ID {ilsvrc_id}, "
                "which is no leaf synset of its meta.mat"
            )
        out.append((name, offset, size, id_to_wnid[ilsvrc_id]))
    return out
