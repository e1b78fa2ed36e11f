"""`alexnet features`: activations for a stimulus set, written to .npz or HDF5.

HDF5 (h5py, the `features` extra) is written batch by batch into datasets sized for
the whole set, so peak memory is one batch whatever the set's size; .npz holds the set
in memory and suits small ones. Either is written under a temp name and renamed when
complete: an interrupted run leaves no half file under the real name. Each file holds
`image_ids` (in the order of the rows), one array per layer, and `meta`: the weights
(what was named, the file read, its sha256), the preprocessing, the crops, the pooling
and each layer's module, so a result can be traced to what made it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..data.images import BadImage, is_image_name
from ..runtime.errors import UsageError
from ..runtime.files import atomic_save_npz, check_output_file
from ..runtime.printed import Printed
from .features import LayerRequest, batches_of, extract, parse_layers
from .features_config import FeaturesConfig

SUFFIXES = (".npz", ".h5", ".hdf5")
LOG_EVERY_S = 5.0


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class NpzWriter:
    """Rows gathered in memory, written whole at the end."""

    def __init__(self, path: Path, n: int, ids: list[str], meta: dict):
        self.path, self.ids, self.meta, self.parts = path, ids, meta, {}

    def write(self, start: int, batch: dict[str, torch.Tensor]) -> None:
        for name, t in batch.items():
            self.parts.setdefault(name, []).append(t.numpy())

    def close(self) -> None:
        arrays = {name: np.concatenate(parts) for name, parts in self.parts.items()}
        self.meta["shapes"] = {k: list(v.shape[1:]) for k, v in arrays.items()}
        atomic_save_npz(
            self.path,
            **arrays,
            image_ids=np.array(self.ids),
            meta=np.array(json.dumps(self.meta)),
        )

    def abort(self) -> None:
        self.parts.clear()


class H5Writer:
    """One dataset per layer, sized for the whole set at the first batch, filled in place."""

    def __init__(self, path: Path, n: int, ids: list[str], meta: dict):
        try:
            import h5py
        except ImportError:
            raise UsageError('HDF5 output needs h5py: pip install "alexnet[features]"') from None
        self.path, self.n, self.meta = path, n, meta
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.file = h5py.File(self.tmp, "w")
        self.file.create_dataset(
            "image_ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype()
        )

    def write(self, start: int, batch: dict[str, torch.Tensor]) -> None:
        for name, t in batch.items():
            if name not in self.file:
                shape = (self.n, *t.shape[1:])
                self.file.create_dataset(
                    name, shape=shape, dtype="float32", chunks=(1, *t.shape[1:])
                )
            self.file[name][start : start + len(t)] = t.numpy()

    def close(self) -> None:
        self.meta["shapes"] = {
            k: list(v.shape[1:]) for k, v in self.file.items() if k != "image_ids"
        }
        self.file.attrs["meta"] = json.dumps(self.meta)
        self.file.flush()
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.file.close()
        if self.tmp.exists():
            self.tmp.unlink()


def _stimuli(cfg: FeaturesConfig):
    """(ids, source): files (named or below a folder), or a store split."""
    given = [bool(cfg.images), cfg.folder is not None, cfg.data is not None]
    if sum(given) != 1:
        raise UsageError("give the images once: image files, --images FOLDER or --data STORE")
    if cfg.data is not None:
        from ..data.folders import store_for
        from ..data.store import ALL_SPLITS, Store, is_store

        name = cfg.split if is_store(cfg.data) else ALL_SPLITS  # a folder: every image
        split = Store(store_for(cfg.data, labels=False)).split(name)
        return list(split.keys), split
    if cfg.folder is not None:
        root = Path(cfg.folder)
        if not root.is_dir():
            raise UsageError(f"--images {root}: not a folder")
        files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_name(p))
        if not files:
            raise UsageError(f"--images {root}: no image files below it")
        return [str(p.relative_to(root)) for p in files], [str(p) for p in files]
    return [str(p) for p in cfg.images], [str(p) for p in cfg.images]


def preprocessed_batches(loaded, source, ids: list[str], batch_size: int, crops: int):
    """(start, preprocessed batch) for the stimuli, in order. batch_size counts patches,
    as evaluation's does: ten crops read a tenth as many images a pass, so the pass (and
    the hooks' copies of its maps) does not grow tenfold."""
    batch_size = max(1, batch_size // crops)
    if isinstance(source, list):
        for start, paths in zip(range(0, len(ids), batch_size), batches_of(source, batch_size)):
            yield start, torch.cat([_preprocessed(loaded, p, crops) for p in paths])
        return
    from ..data.loader import eval_batches

    transform, start = loaded.transform("cpu"), 0
    for images, _ in eval_batches(source, batch_size):
        yield start, transform(images, transform.views(len(images), crops, source.size))
        start += len(images)


def _preprocessed(loaded, path: str, crops: int) -> torch.Tensor:
    """One file's network input; a file that cannot be read is named in one line (a
    stimulus set with a hole would misalign every row after it)."""
    try:
        return loaded.preprocess_files([path], crops)
    except BadImage as e:
        raise UsageError(f"{path}: {e}") from None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UsageError(f"{path}: no such image file") from None


def _meta(cfg: FeaturesConfig, loaded, layers: list[LayerRequest]) -> dict:
    norm = loaded.norm
    mean = torch.as_tensor(norm["mean"])
    return {
        "weights": {
            "source": loaded.source or loaded.path,
            "file": Path(loaded.path).name,
            "sha256": _sha256(loaded.path),
            "variant": loaded.model.variant,
            "kind": loaded.kind,
        },
        "preprocessing": {
            "crop": loaded.transform("cpu").crop,
            "channels": norm.get("channels", "rgb"),
            "mean": "mean image" if mean.dim() == 3 else [float(v) for v in mean],
            "std": None if norm.get("std") is None else [float(v) for v in norm["std"]],
            "scale": float(norm.get("scale") or 1.0),
            "torchvision_transforms": loaded.kind == "torchvision",
        },
        "crops": cfg.crops,
        "pooling": cfg.pooling,
        "precision": cfg.precision,
        "layers": {r.name: {"module": r.module, "tower": r.tower} for r in layers},
    }


def write_features(cfg: FeaturesConfig, device="cpu") -> dict:
    """`alexnet features` as a function: returns what was written."""
    from ..weights.load import load_for_inference

    if cfg.out is None:
        raise UsageError("give the file to write: --out FILE.npz or FILE.h5")
    out = check_output_file(cfg.out, reads=[cfg.weights, *cfg.images])
    if out.suffix not in SUFFIXES:
        raise UsageError(f"--out {out}: name it .npz or .h5 (HDF5)")
    ids, source = _stimuli(cfg)
    loaded = load_for_inference(cfg.weights, device, cfg.precision, kernels="auto")
    layers = parse_layers(loaded.model, cfg.layers)
    meta = _meta(cfg, loaded, layers)
    writer = (NpzWriter if out.suffix == ".npz" else H5Writer)(out, len(ids), ids, meta)
    amp = loaded.amp
    try:
        for start, x in _progress(
            preprocessed_batches(loaded, source, ids, cfg.batch_size, cfg.crops), len(ids), cfg
        ):
            writer.write(start, extract(loaded.model, x, layers, cfg.pooling, cfg.crops, amp))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"out": str(out), "images": len(ids), **meta}


def _progress(batches, n: int, cfg: FeaturesConfig):
    """The batches, with a bar on a terminal and a line every few seconds without one."""
    from tqdm import tqdm

    bar = cfg.progress and sys.stderr.isatty()
    last, done = time.monotonic(), 0
    with tqdm(total=n, unit="img", desc="features", disable=not bar) as pbar:
        for start, x in batches:
            yield start, x
            step = len(x) // cfg.crops
            done += step
            pbar.update(step)
            if not bar and time.monotonic() - last >= LOG_EVERY_S:
                last = time.monotonic()
                print(f"features: {done} of {n} images", file=sys.stderr, flush=True)


def features_command(cfg: FeaturesConfig) -> Printed:
    """`alexnet features`: the activations written, and their shapes."""
    r = write_features(cfg, cfg.device)
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in r["shapes"].items())
    return Printed(r, [f"{r['out']}: {r['images']} images; {shapes}"])
