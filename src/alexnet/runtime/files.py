"""Writing files so that a reader never sees half of one: a temp file in the same
directory, flushed to disk, then os.replace over the target."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_dir() -> Path:
    """Where alexnet keeps what it can rebuild (the demo data, feature caches)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet"


def check_output_file(path: str | Path, reads=(), own_dir: str | Path | None = None) -> Path:
    """An output file path the user named, checked before any work is done: not a
    directory, in a folder that exists, not a file this command reads (`reads`: the
    same file by real path or inode, as cp refuses "are the same file"), and not inside
    a store or a run directory (unless `own_dir`, the one this verb writes into).
    Raises UsageError."""
    from .errors import UsageError

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory: name a file to write")
    if not path.parent.is_dir() and str(path.parent) != "":
        raise UsageError(f"cannot write {path}: no folder {path.parent}")
    check_writable_folder(path.parent, path.name)
    for read in reads:
        if path.exists() and Path(read).exists() and os.path.samefile(path, read):
            raise UsageError(
                f"{path} is {read}, which this command reads: name another file to write"
            )
    owner = owning_directory(path)
    if owner and (own_dir is None or Path(owner[1]).resolve() != Path(own_dir).resolve()):
        raise UsageError(f"{path} is inside the {owner[0]} {owner[1]}: write it elsewhere")
    return path


TEMP_NAME_EXTRA = 16  # what atomic_write's temp file adds to a name: ".", ".", "XXXXXXXX.tmp"


def check_writable_folder(
    folder: str | Path, name: str | None = None, extra: int = TEMP_NAME_EXTRA
) -> None:
    """Refuse, in one line, a folder this process cannot create files in (read-only,
    no permission), or a file name longer than its file system allows."""
    from .errors import UsageError

    folder = Path(folder) if str(folder) else Path(".")
    try:  # by trying: permissions say nothing to root, nor of a read-only mount
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".alexnet-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"cannot write into {folder}: {e.strerror}") from None
    if name is not None:
        check_name_fits(folder / name, extra)


def check_name_fits(path: str | Path, extra: int = TEMP_NAME_EXTRA) -> None:
    """Refuse a file name that, with the `extra` bytes alexnet adds to it (a temp
    file's, a work folder's suffix), is longer than its file system allows."""
    from .errors import UsageError

    path = Path(path)
    where = next((d for d in path.absolute().parents if d.is_dir()), Path("/"))
    limit = _name_max(where)
    if len(path.name.encode()) + extra > limit:
        raise UsageError(
            f"the name {path.name[:40]}... is too long: {len(path.name.encode())} bytes where "
            f"{where}'s file system allows {limit - extra} here"
        )


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def holds_store(folder: str | Path) -> bool:
    """Whether a folder holds a store (its meta.json says so)."""
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "version" in meta and "splits" in meta


def holds_run(folder: str | Path) -> bool:
    """Whether a folder is a training run's directory (its config and checkpoints)."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and (folder / "checkpoints").is_dir()


def owning_directory(path: str | Path) -> tuple[str, Path] | None:
    """("store" | "run directory", folder) when `path` lies inside one, else None."""
    folder = Path(path).resolve().parent
    for d in (folder, *folder.parents):
        if holds_store(d):
            return "store", d
        if holds_run(d):
            return "run directory", d
    return None


def atomic_write(path: str | Path, write: Callable[[object], None]) -> None:
    """Call write(binary file object) into a temp file, then move it over `path`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        from .errors import UsageError

        raise UsageError(f"cannot write {path}: {e.strerror} (in {path.parent})") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC
        # torch.save reports a full disk as a RuntimeError of its zip writer: look
        full = full or (isinstance(e, RuntimeError) and _free_bytes(path.parent) < 64 << 20)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if full:
            from .errors import UsageError

            raise UsageError(
                f"no space left on the device holding {path.parent}: {path.name} was not written"
            ) from None
        raise


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62


def atomic_duplicate(src: str | Path, dst: str | Path) -> None:
    """Make `dst` a copy of the file `src`, whole or not at all: a hard link where the file
    system allows one (a checkpoint's second name costs no disk; our files are only ever
    replaced, never rewritten in place, so the two names cannot drift), else a copy."""
    src, dst = Path(src), Path(dst)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.link"
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(src, tmp)
        os.replace(tmp, dst)
        if tmp.exists():  # rename between two links of one file does nothing (POSIX)
            tmp.unlink()
    except OSError:
        if tmp.exists():
            tmp.unlink()
        with open(src, "rb") as fh:
            atomic_write(dst, lambda out: shutil.copyfileobj(fh, out, 1 << 20))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to `path` whole or not at all."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path: str | Path, obj) -> None:
    """Write an object as JSON to `path` whole or not at all."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save an array as .npy (no pickles) whole or not at all."""
    atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def atomic_save_npz(path: str | Path, **arrays) -> None:
    """Save arrays as .npz whole or not at all."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
