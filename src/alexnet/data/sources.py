"""Finding the images and labels of what users bring: an image folder (class
sub-folders), ILSVRC-2012 extracted or as its published archives, ILSVRC-2010's
archives, MNIST / Fashion-MNIST idx files, CIFAR-10/100 python batches (formats.py
reads the published forms)."""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime.errors import UsageError
from . import formats
from .images import is_image_name

WNID = re.compile(r"^n\d{8}$")


@dataclass
class ClassInfo:
    """A class: its index, its id (folder name or wnid) and its human name."""

    index: int
    id: str  # folder name or wnid
    name: str  # human name where known, else the id


@dataclass
class Item:
    """One image to prepare: its key and label, and where its bytes are (a file, an array, or a file inside a tar)."""

    key: str  # stable identity, e.g. the path relative to the source root
    label: int
    path: str | None = None
    array: np.ndarray | None = None  # in-memory sources (idx, CIFAR, torchvision datasets)
    member: tuple[str, int, int] | None = None  # (archive, offset, size): a file inside a tar


@dataclass
class Source:
    """What a source holds: its kind, classes, items per split, and the files found unusable."""

    kind: str
    classes: list[ClassInfo]
    splits: dict[str, list[Item]]
    skipped: list[dict] = field(default_factory=list)  # found but unusable: {path, reason}
    patched: int = 0  # images read from the release's patch archive instead


def read_member(member: tuple[str, int, int]) -> bytes:
    """The bytes of a file stored uncompressed inside a tar archive, read in place."""
    archive, offset, size = member
    with open(archive, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def _walk_images(root: Path) -> list[Path]:
    """Image files below root, links followed, each folder visited once (by its real
    path): a link back up the tree (`loop -> .`) cannot multiply the files."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if is_image_name(f)]
    return found


def _drop_repeats(splits: dict[str, list[Item]], skipped: list) -> None:
    """One file, one image: a file reached twice (links, or a val folder inside the
    training one) is kept where it is first met, so no image is in two splits."""
    seen: dict[str, str] = {}
    for name in ("train", *[n for n in splits if n != "train"]):
        kept = []
        for it in splits.get(name, []):
            real = os.path.realpath(it.path) if it.path else None
            if real is not None and real in seen:
                reason = f"the same file as {seen[real]}"
                skipped.append({"path": it.path, "reason": reason, "split": name})
                continue
            if real is not None:
                seen[real] = it.path
            kept.append(it)
        if name in splits:
            splits[name] = kept


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _folder_items(root: Path, class_ids: list[str], base: Path, skipped: list) -> list[Item]:
    index = {c: i for i, c in enumerate(class_ids)}
    items = []
    for d in _class_dirs(root):
        files = _walk_images(d)
        if d.name not in index:
            skipped += [{"path": str(f), "reason": "class not in the training set"} for f in files]
            continue
        items += [Item(str(f.relative_to(base)), index[d.name], path=str(f)) for f in files]
    return items


def read_class_names(path: str | Path) -> dict[str, str]:
    """wnid -> name from a synset mapping ("n01440764 tench, Tinca tinca" per line)
    or a class index JSON ({"0": ["n01440764", "tench"], ...}). Raises UsageError
    naming the file when it is neither."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--class-names {path}: unreadable ({e})") from None
    if text.lstrip().startswith("{"):
        try:
            return {wnid: name for wnid, name in json.loads(text).values()}
        except (ValueError, TypeError, AttributeError):
            raise UsageError(
                f'--class-names {path}: not a class index JSON ({{"0": ["wnid", "name"], ...}})'
            ) from None
    names = {}
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 1:
            raise UsageError(f"--class-names {path}, line {number}: expected 'wnid name'")
        if len(parts) == 2:
            names[parts[0]] = parts[1].split(",")[0].strip()
    if not names:
        raise UsageError(f"--class-names {path}: no 'wnid name' lines")
    return names


def _names_for(ids: list[str], class_names: dict[str, str] | None) -> list[str]:
    if class_names:
        return [class_names.get(i, i) for i in ids]
    if len(ids) == 1000 and all(WNID.match(i) for i in ids):
        # The full ILSVRC-2012 set: the names the pretrained nets' classes carry
        from .imagenet import imagenet_classes

        names = {c["id"]: c["name"] for c in imagenet_classes()}
        return [names.get(i, i) for i in ids]
    return list(ids)


def _flat_val_labels(val_dir: Path, labels_file: Path, class_ids: list[str]) -> dict[str, str]:
    """File name -> wnid for a flat ILSVRC val folder.

    Accepts LOC_val_solution.csv (ImageId,PredictionString), "name wnid" lines, or the
    devkit's ILSVRC2012_validation_ground_truth.txt with meta.mat beside it.
    """
    if labels_file.name == "ILSVRC2012_validation_ground_truth.txt":
        meta = labels_file.parent / "meta.mat"
        try:
            import scipy.io as sio
        except ImportError:
            raise UsageError(
                "reading the devkit's meta.mat needs scipy: pip install scipy"
            ) from None
        synsets = sio.loadmat(meta, squeeze_me=True)["synsets"]
        id_to_wnid = {int(s[0]): str(s[1]) for s in synsets if int(s[4]) == 0}
        truth = [int(x) for x in labels_file.read_text().split()]
        files = sorted(f.name for f in val_dir.iterdir() if is_image_name(f.name))
        return {f: id_to_wnid[t] for f, t in zip(files, truth, strict=False)}
    mapping = {}
    with labels_file.open() as fh:
        if labels_file.suffix == ".csv":
            reader = csv.DictReader(fh)
            if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or ()):
                raise UsageError(
                    f"{labels_file}: a labels CSV needs the columns ImageId and "
                    "PredictionString (as LOC_val_solution.csv has)"
                )
            for row in reader:
                mapping[row["ImageId"]] = (row["PredictionString"] or "?").split()[0]
        else:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2:
                    mapping[Path(parts[0]).stem] = parts[1]
    return {f.name: mapping[f.stem] for f in val_dir.iterdir() if f.stem in mapping}


def _array_source(kind: str, names, splits: dict) -> Source:
    """A source whose images are arrays in memory (idx files, CIFAR batches)."""
    items = {
        split: [
            Item(f"{kind}:{split}:{i:06d}", int(t), array=a)
            for i, (a, t) in enumerate(zip(images, labels, strict=True))
        ]
        for split, (images, labels) in splits.items()
    }
    return Source(kind, [ClassInfo(i, str(i), n) for i, n in enumerate(names)], items)


def _published_source(root: Path) -> Source | None:
    """MNIST / Fashion-MNIST idx files, CIFAR python batches, or ILSVRC-2012 archives."""
    release = formats.find_release(root)
    if release is not None:
        return _ilsvrc_archives(root, release)
    found = formats.find_idx(root)
    if found:
        kind, names, splits = formats.idx_arrays(found)
        return _array_source(kind, names, splits)
    cifar = formats.find_cifar(root)
    if cifar:
        names, splits = formats.cifar_arrays(*cifar)
        return _array_source(cifar[0], names, splits)
    return None


def _ilsvrc_archives(root: Path, release: formats.Release) -> Source:
    """A release's archives, indexed in place: train from its tar of per-wnid tars,
    each labelled split (val; test for ILSVRC-2010) through the devkit's IDs, and the
    patch archive's replacements standing in for the images they replace."""
    train_tar = root / release.train
    present = [s for s, tar in release.labelled.items() if (root / tar).is_file()]
    if not train_tar.is_file():
        raise UsageError(f"{root} has {release.labelled[present[0]]} but no {release.train}")
    by_wnid = formats.ilsvrc_train(train_tar)
    wnids = sorted(by_wnid)
    index = {w: i for i, w in enumerate(wnids)}
    patch_tar = root / release.patch if release.patch else None
    patches = formats.patch_files(patch_tar) if patch_tar and patch_tar.is_file() else {}
    patched = 0

    def member(tar: Path, name: str, offset: int, size: int) -> tuple[str, int, int]:
        nonlocal patched
        replacement = patches.pop(Path(name).name, None)
        patched += replacement is not None
        return (str(patch_tar), *replacement) if replacement else (str(tar), offset, size)

    splits = {
        "train": [
            Item(f"train/{w}/{name}", index[w], member=member(train_tar, name, off, size))
            for w in wnids
            for name, off, size in by_wnid[w]
        ]
    }
    names: dict[str, str] = {}
    if present:
        id_to_wnid, names, truths = formats.read_devkit(root, release, present)
        for split in present:
            tar = root / release.labelled[split]
            labelled = formats.ilsvrc_labelled(tar, release, split, id_to_wnid, truths[split])
            unknown = [w for *_, w in labelled if w not in index]
            if unknown:
                raise UsageError(
                    f"{split} images of {len(set(unknown))} classes have no "
                    f"training images in {train_tar} (e.g. {unknown[0]})"
                )
            splits[split] = [
                Item(f"{split}/{Path(name).name}", index[w], member=member(tar, name, off, size))
                for name, off, size, w in labelled
            ]
    classes = [
        ClassInfo(i, w, n)
        for i, (w, n) in enumerate(zip(wnids, _names_for(wnids, names or None), strict=True))
    ]
    skipped = [
        {"path": f"{patch_tar}:{name}", "reason": "replaces no image of the archives"}
        for name in sorted(patches)
    ]
    return Source(f"ilsvrc{release.year}-archives", classes, splits, skipped, patched)


def discover(
    src: str | Path,
    val_src: str | Path | None = None,
    val_labels: str | Path | None = None,
    class_names: str | Path | None = None,
) -> Source:
    """Find classes and items; splits holds "train", and "val" when the source has one."""
    root = Path(src)
    if not root.exists():
        raise UsageError(f"source {src} does not exist")
    if not root.is_dir():
        raise UsageError(f"source {src} is not a directory")
    if not any(root.iterdir()):
        raise UsageError(f"source {src} is empty")
    published = _published_source(root)
    if published is not None:
        return published
    names = read_class_names(class_names) if class_names else None
    skipped: list[dict] = []
    train_root = root / "train" if (root / "train").is_dir() else root
    kind = "ilsvrc" if train_root is not root else "folder"
    class_ids = [d.name for d in _class_dirs(train_root) if _walk_images(d)]
    if not class_ids:
        raise UsageError(f"source {src} has no class sub-folders with images in them")
    classes = [
        ClassInfo(i, c, n) for i, (c, n) in enumerate(zip(class_ids, _names_for(class_ids, names)))
    ]
    splits = {"train": _folder_items(train_root, class_ids, root, skipped)}
    val_root = Path(val_src) if val_src else (root / "val" if kind == "ilsvrc" else None)
    if val_root is not None:
        if not val_root.is_dir():
            raise UsageError(f"validation source {val_root} is not a directory")
        if _class_dirs(val_root):
            splits["val"] = _folder_items(val_root, class_ids, val_root.parent, skipped)
        else:
            splits["val"] = _flat_val_items(val_root, val_labels, class_ids, skipped)
    _drop_repeats(splits, skipped)
    return Source(kind, classes, splits, skipped)


def _flat_val_items(val_root: Path, val_labels, class_ids: list[str], skipped) -> list[Item]:
    labels_file = Path(val_labels) if val_labels else None
    if labels_file is not None and not labels_file.is_file():
        raise UsageError(f"--val-labels {labels_file}: no such file")
    if labels_file is None:
        for guess in ("LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt"):
            for where in (val_root.parent, val_root.parent / "ILSVRC2012_devkit_t12" / "data"):
                if (where / guess).exists():
                    labels_file = where / guess
    if labels_file is None or not labels_file.exists():
        raise UsageError(
            f"{val_root} is a flat folder: give its labels with --val-labels "
            "(LOC_val_solution.csv, or the devkit's ILSVRC2012_validation_ground_truth.txt)"
        )
    try:
        wnid_of = _flat_val_labels(val_root, labels_file, class_ids)
    except UnicodeDecodeError:
        raise UsageError(
            f"--val-labels {labels_file}: not a text file of labels (LOC_val_solution.csv, "
            "'name wnid' lines, or the devkit's ground truth)"
        ) from None
    index = {c: i for i, c in enumerate(class_ids)}
    items = []
    for f in sorted(val_root.iterdir()):
        if not is_image_name(f.name):
            continue
        wnid = wnid_of.get(f.name)
        if wnid is None or wnid not in index:
            skipped.append({"path": str(f), "reason": "no label for this file"})
            continue
        items.append(Item(f"{val_root.name}/{f.name}", index[wnid], path=str(f)))
    return items


def stratified_split(items: list[Item], fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic hold-out: per class, a seeded shuffle of the sorted keys."""
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--val-fraction must be between 0 and 1, not {fraction}")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Item]] = {}
    for it in sorted(items, key=lambda i: i.key):
        by_class.setdefault(it.label, []).append(it)
    train, val = [], []
    for label in sorted(by_class):
        group = by_class[label]
        order = rng.permutation(len(group))
        n_val = min(len(group) - 1, max(1, round(fraction * len(group)))) if len(group) > 1 else 0
        chosen = set(order[:n_val].tolist())
        for i, it in enumerate(group):
            (val if i in chosen else train).append(it)
    return train, val
