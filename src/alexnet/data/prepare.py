"""`alexnet prepare`: a source of images -> a store of 256x256 RGB shards (§2, docs/paper.md).

Safety: everything is built in OUT.partial/ and renamed to OUT only once complete, so
a finished store is never half-written. Work is cut into fixed shards, decided up
front from the sorted file list; a shard counts as done when its .json exists (written
last, atomically). A re-run after an interruption finds the same plan, keeps the done
shards and makes the rest, and ends with exactly the bytes an uninterrupted run writes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..runtime.errors import UsageError
from ..runtime.files import (
    atomic_save_npz,
    atomic_write_json,
    check_name_fits,
    check_writable_folder,
)
from ..runtime.printed import Printed
from .config import PrepareConfig
from .shards import ShardJob, StatSums, make_shards, worker_init
from .sources import Item, Source, discover, stratified_split
from .store import RAW_LIMIT_BYTES, STORE_VERSION, foreign_files, is_store

__all__ = ["PrepareConfig", "format_summary", "prepare"]


def _plan(source: Source, cfg: PrepareConfig) -> dict[str, list[list[Item]]]:
    splits = dict(source.splits)
    held_out = "val" not in splits
    if held_out:
        splits["train"], splits["val"] = stratified_split(
            splits["train"], cfg.val_fraction, cfg.seed
        )
    for name, items in splits.items():
        items.sort(key=lambda it: it.key)
        # a folder of one image per class holds none out: its store is still whole for
        # what reads every image (evaluate, predict --data, features), and train refuses
        # it, naming the empty validation split
        if not items and not (held_out and name == "val"):
            raise UsageError(f"the {name} split has no images{_why_empty(source, name)}")
    return {
        name: [items[i : i + cfg.shard_size] for i in range(0, len(items), cfg.shard_size)]
        for name, items in splits.items()
    }


def _why_empty(source: Source, split: str) -> str:
    """Why a split found files but kept none, when the files were skipped for a reason."""
    skipped = [s for s in source.skipped if s.get("split") == split]
    if not skipped:
        return ""
    first = skipped[0]
    if first["reason"].startswith("the same file as"):
        return (
            f": all {len(skipped)} of its files are the same files as images of another "
            f"split (links; e.g. {first['path']} is {first['reason'][17:]}), and an image "
            "is kept in one split only"
        )
    return f": all {len(skipped)} of its files were skipped ({first['path']}: {first['reason']})"


def _plan_digest(plan, cfg: PrepareConfig, fmt: str) -> str:
    h = hashlib.sha256(json.dumps([cfg.size, fmt, STORE_VERSION]).encode())
    for name, shards in plan.items():
        for shard in shards:
            h.update(name.encode())
            for it in shard:
                # the archive too: an image a patch archive replaces is another image
                archive = Path(it.member[0]).name if it.member else ""
                h.update(f"{it.key}\0{it.label}\0{archive}\n".encode())
    return h.hexdigest()


def _choose_format(fmt: str, n_images: int, size: int) -> str:
    if fmt not in ("auto", "raw", "jpeg"):
        raise UsageError(f"--format must be auto, raw or jpeg, not {fmt!r}")
    if fmt != "auto":
        return fmt
    return "raw" if n_images * size * size * 3 <= RAW_LIMIT_BYTES else "jpeg"


def _check_out(out: Path, overwrite: bool, sources: list[str | None]) -> None:
    """Refuse any OUT whose writing could touch what the user did not make with us: the
    sources themselves (OUT equal to, inside or around one), or a folder that is not a
    store (--overwrite replaces a store, and only a store)."""
    _check_apart(out, sources)
    if out.is_symlink() and not out.exists():
        raise UsageError(
            f"output {out} is a link to {os.readlink(out)}, which does not exist: remove "
            "the link, or name another OUT"
        )
    parent = out.parent if out.parent != Path("") else Path(".")
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as e:
            raise UsageError(f"cannot create {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output {out} is not writable (no write permission on {parent})")
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not is_store(out):
            raise UsageError(
                f"{out} exists, is not empty and is not a store: choose another "
                "OUT (--overwrite replaces only a store)"
            )
        if not overwrite:
            raise UsageError(f"{out} already holds a store; pass --overwrite to rebuild it")
        if os.path.ismount(out):
            raise UsageError(
                f"{out} is a mount point holding a store, which --overwrite cannot swap "
                "whole: empty it first, or prepare into a folder inside it"
            )
        foreign = foreign_files(out)
        if foreign:
            raise UsageError(
                f"{foreign[0]} is in the store {out} but was not written by alexnet "
                "prepare: move it away before --overwrite replaces the store"
            )
    for side in (_work_dir(out), _old_dir(out)):
        if side.exists() and not (_is_ours(side) or is_store(side)):
            raise UsageError(
                f"{side} exists and was not made by alexnet prepare: move it away first"
            )


def _check_apart(out: Path, sources: list[str | None]) -> None:
    out_real = out.resolve()
    for src in filter(None, sources):
        real = Path(src).resolve()
        for path in (out_real, _work_dir(out_real), _old_dir(out_real)):
            if path == real or real in path.parents or path in real.parents:
                raise UsageError(
                    f"output {out} overlaps the source {src}: the store must be "
                    "written outside the images it is made from, and not around them"
                )


def _work_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _old_dir(out: Path) -> Path:
    return out.with_name(out.name + ".old")


def _is_ours(work: Path) -> bool:
    """A work folder an interrupted prepare left (its plan file, or nothing yet)."""
    return (work / "plan.json").is_file() or not any(work.iterdir())


def _finish_stats(work: Path, shards: list[str], size: int) -> None:
    """The mean image and the RGB PCA (eigenvalues of 0..1 pixel values, §4.1) from the
    shards' exact integer sums."""
    total = StatSums.zeros(size)
    for name in shards:
        with np.load(work / "train" / f"{name}.stats.npz") as z:
            total.add(StatSums.from_arrays(z))
    pixels = total.count * size * size
    mu = total.rgb_sum / pixels / 255.0
    cov = total.rgb_outer / pixels / 255.0**2 - np.outer(mu, mu)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    # Fix each eigenvector's sign so that the store does not depend on LAPACK's choice.
    eigvec = eigvec[:, order]
    eigvec *= np.where(eigvec.sum(axis=0) < 0, -1.0, 1.0)
    atomic_save_npz(
        work / "stats.npz",
        mean=(total.image_sum / total.count).astype(np.float32),
        eigval=eigval[order].astype(np.float32),
        eigvec=eigvec.astype(np.float32),
        rgb_mean=mu.astype(np.float32),
    )


MIN_SIZE, MAX_SIZE = 8, 4096  # a store image's side: 4096^2 x 3 bytes is 48 MiB an image


def prepare(cfg: PrepareConfig) -> dict:
    """Build the store; returns the summary ({written: {split: n}, skipped: [...]})."""
    out = Path(cfg.out)
    if not MIN_SIZE <= cfg.size <= MAX_SIZE:  # before anything is made or read
        raise UsageError(f"--size must be between {MIN_SIZE} and {MAX_SIZE}, not {cfg.size}")
    for flag, value, low, meaning in (
        ("--workers", cfg.workers, 0, "0 for one per core, or a count of processes"),
        ("--shard-size", cfg.shard_size, 1, "a count of images per shard"),
        ("--seed", cfg.seed, 0, "a non-negative integer"),
    ):
        if value < low:
            raise UsageError(f"{flag} must be {meaning}, not {value}")
    for src in filter(None, (cfg.src, cfg.val_src)):
        try:
            os.stat(src)  # a link loop, or no permission: said before any path is resolved
        except FileNotFoundError:
            raise UsageError(f"source {src} does not exist") from None
        except OSError as e:
            raise UsageError(f"source {src}: {e.strerror}") from None
    check_name_fits(out, extra=len(".partial"))
    _check_out(out, cfg.overwrite, [cfg.src, cfg.val_src])
    check_writable_folder(out.parent)
    source = discover(cfg.src, cfg.val_src, cfg.val_labels, cfg.class_names)
    plan = _plan(source, cfg)
    fmt = _choose_format(cfg.format, sum(len(s) for sh in plan.values() for s in sh), cfg.size)
    digest = _plan_digest(plan, cfg, fmt)

    work = _work_dir(out)
    plan_file = work / "plan.json"
    if work.exists():
        try:
            resumable = json.loads(plan_file.read_text()).get("digest") == digest
        except (OSError, ValueError):
            resumable = False
        if not resumable:
            shutil.rmtree(work)
    for split in plan:
        (work / split).mkdir(parents=True, exist_ok=True)
    for stray in work.rglob(".*.tmp"):  # a write cut short by the interruption
        stray.unlink()
    atomic_write_json(plan_file, {"digest": digest})

    jobs = [
        ShardJob(split, i, shard)
        for split, shards in plan.items()
        for i, shard in enumerate(shards)
        if not (work / split / f"{i:05d}.json").exists()
    ]
    workers = cfg.workers or os.cpu_count() or 1
    n_todo = sum(len(job.items) for job in jobs)
    with tqdm(total=n_todo, unit="img", desc="prepare", disable=not cfg.progress) as bar:
        ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
        with ctx.Pool(workers, initializer=worker_init) as pool:
            make_shards(pool, workers, jobs, work, cfg.size, fmt, bar.update)

    try:
        return _finalize(work, out, plan, source, cfg, fmt)
    except UsageError:  # nothing usable came of it: nothing left behind either
        shutil.rmtree(work, ignore_errors=True)
        raise


def _finalize(work: Path, out: Path, plan, source: Source, cfg: PrepareConfig, fmt: str) -> dict:
    splits_meta, written, skipped = {}, {}, list(source.skipped)
    for split, shards in plan.items():
        entries = []
        for i in range(len(shards)):
            name = f"{i:05d}"
            meta = json.loads((work / split / f"{name}.json").read_text())
            skipped += meta["skipped"]
            if meta["labels"]:
                entries.append({"name": name, "count": len(meta["labels"])})
        written[split] = sum(e["count"] for e in entries)
        splits_meta[split] = {"count": written[split], "shards": entries}
    if written.get("train", 0) == 0:
        raise UsageError(f"no usable training images in {cfg.src} ({len(skipped)} skipped)")
    _finish_stats(work, [e["name"] for e in splits_meta["train"]["shards"]], cfg.size)
    for e in splits_meta["train"]["shards"]:
        os.unlink(work / "train" / f"{e['name']}.stats.npz")
    atomic_write_json(work / "skipped.json", skipped)
    atomic_write_json(
        work / "meta.json",
        {
            "version": STORE_VERSION,
            "format": fmt,
            "size": cfg.size,
            "source_kind": source.kind,
            "classes": [asdict(c) for c in source.classes],
            "splits": splits_meta,
            "written_by": f"alexnet {__version__}",
        },
    )
    os.unlink(work / "plan.json")
    if out.exists() and any(out.iterdir()):  # a store: swapped whole
        old = _old_dir(out)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(work, out)
        shutil.rmtree(old)
    else:
        _into_place(work, out)
    summary = {"store": str(out), "format": fmt, "written": written, "skipped": skipped}
    if source.patched:
        summary["patched"] = source.patched
    return summary


def _into_place(work: Path, out: Path) -> None:
    """The finished store renamed to OUT; into OUT when OUT is an empty folder that
    cannot be renamed over (a mount point: EBUSY, or another file system: EXDEV), moved
    entry by entry with meta.json last, so OUT is a store only once it is whole."""
    try:
        os.replace(work, out)
        return
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.EXDEV) or not out.is_dir():
            raise
    for entry in sorted(work.iterdir(), key=lambda p: p.name == "meta.json"):
        shutil.move(str(entry), str(out / entry.name))
    work.rmdir()


def format_summary(summary: dict) -> str:
    """The summary `prepare` returns, as the lines the command prints."""
    lines = [f"store {summary['store']} ({summary['format']})"]
    lines += [f"  {split}: {n} images written" for split, n in summary["written"].items()]
    if summary.get("patched"):
        lines.append(f"  patched: {summary['patched']} image(s) read from the patch archive")
    skipped = summary["skipped"]
    lines.append(f"  skipped: {len(skipped)} file(s)" + (" (see skipped.json)" if skipped else ""))
    lines += [f"    {s['path']}: {s['reason']}" for s in skipped[:20]]
    if len(skipped) > 20:
        lines.append(f"    ... and {len(skipped) - 20} more")
    return "\n".join(lines)


def prepare_command(cfg: PrepareConfig) -> Printed:
    """`alexnet prepare`: the store written, summarised."""
    summary = prepare(cfg)
    return Printed(summary, [format_summary(summary)])
