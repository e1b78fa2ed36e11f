"""An image folder wherever a store is asked for: prepared once into the cache.

A folder of class sub-folders (ImageFolder's layout) given to `train --data`,
`evaluate --data`, `features --data`, `neighbors --gallery` or `ablate --data` is
prepared as `alexnet prepare FOLDER` would (256x256, a tenth of each class held out for
validation), into ~/.cache/alexnet/folders/, one store per folder. The store is keyed by
the folder's contents (each image file's path, size and modification time): reused
while they are unchanged, prepared again when one changes. The verb says which it did.
`alexnet prepare` stays for control over sizes, formats and workers.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_bytes, cache_dir
from .images import is_image_name
from .store import STORE_VERSION, is_store

KEY_FILE = "contents.sha256"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def contents_key(folder: Path) -> tuple[str, int]:
    """A digest of every image file below the folder (relative path, size, mtime) and of
    how it is prepared: what decides whether its cached store is still the folder's; and
    how many image files there are."""
    h = hashlib.sha256(f"store {STORE_VERSION}, 256 px, val 0.1, seed 0\n".encode())
    files = sorted(p for p in folder.rglob("*") if is_image_name(p))
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue  # a dangling link: prepare skips it, and says so
        h.update(f"{path.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest(), len(files)


def _has_class_folders(folder: Path) -> bool:
    """Whether any sub-folder holds an image (at any depth): ImageFolder's layout."""
    return any(d.is_dir() and any(is_image_name(f) for f in d.rglob("*")) for d in folder.iterdir())


def store_for(path: str | Path, flag: str = "--data", say=_say, labels: bool = True) -> str:
    """The store to read for `path`: itself when it is a store; for an image folder, its
    prepared copy in the cache (see the module docstring). Where no labels are needed
    (`labels=False`: features, a retrieval gallery), a flat folder of images is taken
    too, as one class named after it."""
    if is_store(path):
        return str(path)
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: neither a prepared store nor a folder of images")
    real = folder.resolve()
    key, count = contents_key(real)
    if count == 0:
        raise UsageError(f"{flag} {path}: neither a prepared store nor a folder of images")
    flat = not _has_class_folders(real)  # taken as one class, by a link to it
    if flat and labels:
        raise UsageError(
            f"{flag} {path}: no class sub-folders with images in them (one folder per class; "
            "a flat folder serves features --data and neighbors --gallery)"
        )
    name = f"{real} flat" if flat else str(real)  # a flat store never stands for a labelled one
    home = cache_dir() / "folders" / hashlib.sha256(name.encode()).hexdigest()[:16]
    store, key_file = home / "store", home / KEY_FILE
    if is_store(store) and key_file.is_file() and key_file.read_text().strip() == key:
        say(f"{flag} {path}: the store prepared from it earlier, unchanged ({store})")
        return str(store)
    from .config import PrepareConfig
    from .prepare import prepare

    again = "again, as its files changed" if key_file.is_file() else "once"
    say(f"{flag} {path}: preparing it {again} into {store} (alexnet prepare for control)")
    home.mkdir(parents=True, exist_ok=True)
    if key_file.exists():
        os.unlink(key_file)  # a store without its key is prepared again, never reused
    src = real
    if flat:
        src = home / "flat"
        link = src / (real.name or "images")
        if not link.is_symlink():
            src.mkdir(exist_ok=True)
            link.symlink_to(real, target_is_directory=True)
    prepare(PrepareConfig(src=str(src), out=str(store), overwrite=True, progress=False))
    atomic_write_bytes(key_file, (key + "\n").encode())
    return str(store)
