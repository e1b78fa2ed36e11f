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
- ILSVRC-2010 (Table 1's data) the same way, with a third split: ILSVRC2010_images_
  {train,val,test}.tar, the devkit (ILSVRC2010_devkit-1.0.tar.gz or its devkit-1.0
  folder: data/meta.mat, whose IDs are ILSVRC2010_IDs, and the validation ground
  truth), ILSVRC2010_test_ground_truth.txt beside them, and patch_images.tar, whose
  images replace the broken ones of the same name where it is present.

Every reader raises UsageError naming the file for anything malformed.
"""

from __future__ import annotations

import gzip
import io
import pickle
import re
import tarfile
from dataclasses import dataclass
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
    splits = {}
    for split, (images_path, labels_path) in found.items():
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UsageError(f"{images_path}: {images.shape} images for {labels.shape} labels")
        if labels.max(initial=0) > 9:
            raise UsageError(f"{labels_path}: labels outside 0..9")
        splits[split] = (images, labels.astype(np.int64))
    kind = _idx_kind(splits["train"][1], found["train"][0])
    return kind, FASHION_CLASSES if kind == "fashion-mnist" else DIGITS, splits


# The first ten training labels of each published set: the files' own signature, where
# names on disk vary (train-images-idx3-ubyte is both sets' name)
IDX_SIGNATURES = {
    "fashion-mnist": (9, 0, 0, 3, 0, 2, 7, 2, 5, 5),
    "mnist": (5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
}


def _idx_kind(train_labels: np.ndarray, images_path: Path) -> str:
    """Fashion-MNIST or MNIST by the labels' signature; a subset or another idx set by
    its path ("fashion" in it), else digits."""
    first = tuple(int(x) for x in train_labels[:10])
    for kind, signature in IDX_SIGNATURES.items():
        if first == signature:
            return kind
    return "fashion-mnist" if "fashion" in str(images_path).lower() else "mnist"


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


# ---------------------------------------------------------------- ILSVRC archives
@dataclass(frozen=True)
class Release:
    """One ILSVRC release, in the files its organisers published."""

    year: int
    train: str  # a tar of per-wnid tars
    labelled: dict[str, str]  # split -> a flat tar of images the devkit labels
    devkit: str  # the devkit archive: data/meta.mat and the validation ground truth
    devkit_folder: str  # the same, extracted
    patch: str | None = None  # replacements for broken images, applied when present

    @property
    def id_field(self) -> str:
        return f"ILSVRC{self.year}_ID"

    def truth_name(self, split: str) -> str:
        return f"ILSVRC{self.year}_{'validation' if split == 'val' else split}_ground_truth.txt"

    def number(self, split: str) -> re.Pattern:
        return re.compile(rf"ILSVRC{self.year}_{split}_(\d+)\.")


ILSVRC2012 = Release(
    2012,
    "ILSVRC2012_img_train.tar",
    {"val": "ILSVRC2012_img_val.tar"},
    "ILSVRC2012_devkit_t12.tar.gz",
    "ILSVRC2012_devkit_t12",
)
# Table 1's data: the only release whose test labels were published (beside the
# archives, as ILSVRC2010_test_ground_truth.txt)
ILSVRC2010 = Release(
    2010,
    "ILSVRC2010_images_train.tar",
    {"val": "ILSVRC2010_images_val.tar", "test": "ILSVRC2010_images_test.tar"},
    "ILSVRC2010_devkit-1.0.tar.gz",
    "devkit-1.0",
    "patch_images.tar",
)
RELEASES = (ILSVRC2012, ILSVRC2010)


def find_release(root: Path) -> Release | None:
    """The release whose image archives root holds."""
    for release in RELEASES:
        if any((root / tar).is_file() for tar in (release.train, *release.labelled.values())):
            return release
    return None


BLOCK = tarfile.BLOCKSIZE


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
    if not _ends_cleanly(fileobj or path, members):
        raise UsageError(f"{path} is truncated: it stops after a member; download it again")
    return files


def _ends_cleanly(where, members) -> bool:
    """Whether a zero block follows the last member, as tar ends an archive: without it,
    an archive cut at a member's edge would read as a complete, shorter one."""
    end = max((m.offset_data + -(-m.size // BLOCK) * BLOCK for m in members), default=0)
    if isinstance(where, Path):
        with open(where, "rb") as fh:
            fh.seek(end)
            tail = fh.read(BLOCK)
    else:
        where.seek(end)
        tail = where.read(BLOCK)
    return len(tail) == BLOCK and not any(tail)


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


class Devkit:
    """A release's devkit files by name: from its archive, its extracted folder, or
    the folder of the archives (where ILSVRC-2010's test ground truth was published)."""

    def __init__(self, root: Path, release: Release):
        self.root, self.release = root, release
        self.archive = root / release.devkit
        self.folder = root / release.devkit_folder / "data"
        self._members: dict[str, bytes] | None = None

    def __str__(self) -> str:
        return str(self.archive if self.archive.is_file() else self.folder.parent)

    def exists(self) -> bool:
        return self.archive.is_file() or self.folder.is_dir()

    def read(self, name: str) -> bytes | None:
        for path in (self.folder / name, self.root / name):
            if path.is_file():
                return path.read_bytes()
        return self._archived().get(name) if self.archive.is_file() else None

    def _archived(self) -> dict[str, bytes]:
        if self._members is None:
            wanted = {"meta.mat", *map(self.release.truth_name, self.release.labelled)}
            try:
                with tarfile.open(self.archive) as tar:
                    self._members = {
                        Path(m.name).name: tar.extractfile(m).read()
                        for m in tar.getmembers()
                        if m.isfile() and Path(m.name).name in wanted
                    }
            except (tarfile.TarError, OSError, EOFError) as e:
                raise UsageError(f"{self.archive}: not a readable devkit archive ({e})") from None
        return self._members


def read_devkit(
    root: Path, release: Release, splits: list[str]
) -> tuple[dict[int, str], dict[str, str], dict[str, list[int]]]:
    """(ILSVRC ID -> wnid of the leaf synsets, wnid -> name, {split: its ground truth})."""
    devkit = Devkit(root, release)
    if not devkit.exists():
        raise UsageError(
            f"{root / release.labelled[splits[0]]} needs its labels: put "
            f"{release.devkit} (or its folder {release.devkit_folder}) beside it"
        )
    meta = devkit.read("meta.mat")
    if meta is None:
        raise UsageError(f"{devkit}: no data/meta.mat in the devkit")
    id_to_wnid, names = _synsets(meta, devkit, release.id_field)
    truths = {}
    for split in splits:
        name = release.truth_name(split)
        text = devkit.read(name)
        if text is None:
            raise UsageError(
                f"{root / release.labelled[split]} needs its labels: {name} is neither "
                f"in {devkit} nor beside the archives"
            )
        try:
            truths[split] = [int(x) for x in text.decode().split()]
        except (ValueError, UnicodeDecodeError):
            raise UsageError(f"{name}: not a list of {release.id_field}s") from None
    return id_to_wnid, names, truths


def _synsets(meta_bytes: bytes, devkit, id_field: str) -> tuple[dict[int, str], dict[str, str]]:
    try:
        import scipy.io
    except ImportError:
        raise UsageError(
            'reading the devkit\'s meta.mat needs scipy: pip install "alexnet[imagenet]"'
        ) from None
    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta_bytes), squeeze_me=True)["synsets"]
        leaves = [s for s in synsets if int(s["num_children"]) == 0]
        id_to_wnid = {int(s[id_field]): str(s["WNID"]) for s in leaves}
        names = {str(s["WNID"]): str(s["words"]).split(",")[0].strip() for s in leaves}
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise UsageError(f"{devkit}: meta.mat has no readable synsets ({e})") from None
    return id_to_wnid, names


def ilsvrc_labelled(tar: Path, release: Release, split: str, id_to_wnid, truth: list[int]):
    """[(name, offset, size, wnid)] of a flat tar of numbered images, labelled by the
    devkit's ground truth (one ID per image, in the images' numbered order)."""
    number = release.number(split)
    files = sorted(
        (f for f in tar_files(tar) if number.search(f[0])),
        key=lambda f: int(number.search(f[0]).group(1)),
    )
    if len(files) != len(truth):
        raise UsageError(
            f"{release.truth_name(split)} has {len(truth)} labels for the "
            f"{len(files)} images of {tar}"
        )
    out = []
    for (name, offset, size), ilsvrc_id in zip(files, truth, strict=True):
        if ilsvrc_id not in id_to_wnid:
            raise UsageError(
                f"{release.truth_name(split)} names {release.id_field} {ilsvrc_id}, "
                "which is no leaf synset of the devkit's meta.mat"
            )
        out.append((name, offset, size, id_to_wnid[ilsvrc_id]))
    return out


def patch_files(patch_tar: Path) -> dict[str, tuple[int, int]]:
    """File name -> (offset, size) of the replacement images of a patch archive. The
    releases' file names are unique across splits, so a patch is matched by name."""
    return {Path(name).name: (offset, size) for name, offset, size in tar_files(patch_tar)}
