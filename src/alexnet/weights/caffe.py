"""Caffe's .caffemodel files, read into the `caffe` variant (docs/paper.md, "Caffe's AlexNet").

A .caffemodel is a protobuf NetParameter. Both of its encodings are read:
    2014's V1: NetParameter.layers = 2, V1LayerParameter (name = 4, blobs = 6), blobs
               sized by num/channels/height/width (1-4);
    current:   NetParameter.layer = 100, LayerParameter (name = 1, blobs = 7), blobs
               sized by BlobShape (7, its dim = 1).
BlobProto's values are `data` = 5 (float32, packed or not) or `double_data` = 8.

Why a reader of protobuf's wire format and not the protobuf package: only those few
fields matter, and this reader takes every blob's values as a view of the memory-mapped
file (numpy.frombuffer), with no per-value Python object (see docs/benchmarks.md for
the two measured). It is bounded by construction: every length is checked against the
bytes that remain, only the fields above are descended into, and nothing is allocated
beyond the tensors whose shapes the `caffe` net expects. Nothing in the file is
executed; it holds numbers and names only.

A converted file is cached as our safetensors weights (keyed by the source's path,
size and modification time), so the second load reads 233 MB of tensors and no protobuf.
"""

from __future__ import annotations

import hashlib
import mmap
from pathlib import Path

import numpy as np
import torch

from ..data.imagenet import imagenet_classes
from ..model.net import CAFFE_MEAN_BGR, HIDDEN, LAYER_NAMES, PAPER_CONVS, POOLED_SIZE
from ..runtime.errors import UsageError
from ..runtime.files import cache_dir
from .checkpoint import MAX_CLASSES, Checkpoint, model_options, save_safetensors

SUFFIX = ".caffemodel"
MAX_FILE_BYTES = 4 << 30  # bvlc_alexnet is 233 MB; a larger file is not an AlexNet

# wire types
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
# field numbers (caffe.proto)
NET_LAYERS_V1, NET_LAYER = 2, 100
V1_NAME, V1_BLOBS = 4, 6
LAYER_NAME, LAYER_BLOBS = 1, 7
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1


class CaffeFormatError(Exception):
    """The bytes are not a well-formed caffemodel; str() says where."""


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise CaffeFormatError(f"a truncated or overlong varint at byte {pos}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, value) of one message's bytes; a LENGTH value is its
    (start, end) offsets, a FIXED32 one its offset."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == LENGTH:
            n, pos = _varint(buf, pos, end)
            if n > end - pos:
                raise CaffeFormatError(f"field {number} at byte {pos} runs past its message")
            value, pos = (pos, pos + n), pos + n
        elif wire in (FIXED32, FIXED64):
            width = 4 if wire == FIXED32 else 8
            if width > end - pos:
                raise CaffeFormatError(f"field {number} at byte {pos} runs past its message")
            value, pos = pos, pos + width
        else:
            raise CaffeFormatError(f"wire type {wire} (field {number}) at byte {pos}")
        yield number, wire, value


def _packed_ints(buf, value, wire: int) -> list[int]:
    if wire == VARINT:
        return [value]
    start, end = value
    out = []
    while start < end:
        v, start = _varint(buf, start, end)
        out.append(v)
    return out


class _Blob:
    """A blob's declared shape and where its values lie in the file."""

    def __init__(self, buf, start: int, end: int):
        self.buf, self.dims, self.legacy = buf, [], {}
        self.float_runs: list[tuple[int, int]] = []  # (offset, count) of float32 values
        self.double_runs: list[tuple[int, int]] = []
        for number, wire, value in _fields(buf, start, end):
            if number == BLOB_SHAPE and wire == LENGTH:
                for n, w, v in _fields(buf, *value):
                    if n == SHAPE_DIM:
                        self.dims += _packed_ints(buf, v, w)
            elif number in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and wire == VARINT:
                self.legacy[number] = value
            elif number == BLOB_DATA:
                self._run(self.float_runs, wire, value, 4)
            elif number == BLOB_DOUBLE_DATA:
                self._run(self.double_runs, wire, value, 8)

    @staticmethod
    def _run(runs, wire: int, value, width: int) -> None:
        if wire == LENGTH:
            start, end = value
            if (end - start) % width:
                raise CaffeFormatError(f"packed values at byte {start} are not whole")
            runs.append((start, (end - start) // width))
        elif wire == (FIXED32 if width == 4 else FIXED64):
            if runs and runs[-1][0] + runs[-1][1] * width == value:  # adjacent: extend
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((value, 1))

    @property
    def shape(self) -> tuple[int, ...]:
        """The declared shape: BlobShape's dims, else the legacy num/channels/height/width."""
        if self.dims:
            return tuple(self.dims)
        return tuple(self.legacy.get(k, 0) for k in (1, 2, 3, 4)) if self.legacy else ()

    def count(self) -> int:
        """How many values the blob holds."""
        return sum(n for _, n in self.float_runs) + sum(n for _, n in self.double_runs)

    def values(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The values as a float32 tensor of `shape` (checked by the caller)."""
        runs, dtype = (self.float_runs, "<f4") if self.float_runs else (self.double_runs, "<f8")
        parts = [np.frombuffer(self.buf, dtype, n, off) for off, n in runs]
        arr = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return torch.from_numpy(arr.astype(np.float32)).reshape(shape)


def _layers(buf) -> dict[str, list[_Blob]]:
    """Layer name -> its blobs, for the layers that have blobs, in either encoding."""
    layers: dict[str, list[_Blob]] = {}
    for number, wire, value in _fields(buf, 0, len(buf)):
        if wire != LENGTH or number not in (NET_LAYER, NET_LAYERS_V1):
            continue
        name_field, blobs_field = (
            (LAYER_NAME, LAYER_BLOBS) if number == NET_LAYER else (V1_NAME, V1_BLOBS)
        )
        name, blobs = None, []
        for n, w, v in _fields(buf, *value):
            if n == name_field and w == LENGTH:
                name = bytes(buf[v[0] : v[1]]).decode("utf-8", "replace")
            elif n == blobs_field and w == LENGTH:
                blobs.append(_Blob(buf, *v))
        if name is not None and blobs:
            layers[name] = blobs
    return layers


def expected_shapes(num_classes: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Layer name -> (weight shape, bias shape) of the `caffe` net (PyTorch's layout,
    which is Caffe's: out, in/groups, kh, kw; and out, in for inner products)."""
    shapes, in_ch = {}, 3
    for name, out_ch, size, _, _, groups in PAPER_CONVS:
        shapes[name] = ((out_ch, in_ch // groups, size, size), (out_ch,))
        in_ch = out_ch
    shapes["fc6"] = ((HIDDEN, in_ch * POOLED_SIZE * POOLED_SIZE), (HIDDEN,))
    shapes["fc7"] = ((HIDDEN, HIDDEN), (HIDDEN,))
    shapes["fc8"] = ((num_classes, HIDDEN), (num_classes,))
    return shapes


def _strip_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    # V1 blobs are always 4-D: an inner product's weight is (1, 1, out, in)
    i = 0
    while i < len(shape) - 1 and shape[i] == 1:
        i += 1
    return tuple(shape[i:])


def _state_dict(layers: dict[str, list[_Blob]], path: Path) -> dict[str, torch.Tensor]:
    missing = [n for n in LAYER_NAMES if n not in layers]
    if missing:
        raise UsageError(f"{path}: not Caffe's AlexNet: no layer {', '.join(missing)} with weights")
    fc8 = layers["fc8"][0].shape
    num_classes = _strip_ones(fc8)[0] if fc8 else 0
    if not 1 <= num_classes <= MAX_CLASSES:
        raise UsageError(f"{path}: layer fc8 has weights of shape {fc8}, not (classes, 4096)")
    state = {}
    for name, (w_shape, b_shape) in expected_shapes(num_classes).items():
        blobs = layers[name]
        if len(blobs) != 2:
            raise UsageError(f"{path}: layer {name} has {len(blobs)} blobs, not 2 (weights, bias)")
        for blob, shape, kind in zip(blobs, (w_shape, b_shape), ("weight", "bias"), strict=True):
            if _strip_ones(blob.shape) != _strip_ones(shape) or blob.count() != np.prod(shape):
                raise UsageError(
                    f"{path}: layer {name} {kind} has shape {blob.shape} and "
                    f"{blob.count()} values; the caffe net needs {shape}"
                )
            prefix = "features" if name.startswith("conv") else "classifier"
            state[f"{prefix}.{name}.{kind}"] = blob.values(shape)
    return state


def read_caffemodel(path: str | Path) -> dict[str, torch.Tensor]:
    """A .caffemodel of AlexNet -> the `caffe` variant's state_dict; UsageError, naming
    the layer and the shapes, for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"caffemodel {path} does not exist")
    size = path.stat().st_size
    if not 0 < size <= MAX_FILE_BYTES:
        raise UsageError(f"{path}: {size} bytes is not a caffemodel of AlexNet")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        try:
            return _state_dict(_layers(mm), path)  # values() copied out of the map
        except CaffeFormatError as e:
            raise UsageError(f"{path} is not a readable caffemodel ({e})") from None


def caffe_checkpoint(state: dict[str, torch.Tensor], source: str) -> Checkpoint:
    """The converted weights in our checkpoint format: ILSVRC-2012's classes (wnid and
    name) for a 1,000-way fc8, the per-channel BGR mean Caffe's classifier subtracts."""
    from ..model.net import ModelOptions

    n = state["classifier.fc8.weight"].shape[0]
    classes = (
        imagenet_classes()
        if n == 1000
        else [{"index": i, "id": str(i), "name": str(i)} for i in range(n)]
    )
    return Checkpoint(
        model=state,
        variant="caffe",
        classes=classes,
        normalization={
            "kind": "channel",
            "mean": torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32),
            "scale": 1.0,
            "channels": "bgr",
        },
        model_options=model_options(ModelOptions()),
        config={"converted_from": source},
    )


def converted_path(path: Path) -> Path:
    """Where the conversion of a .caffemodel is cached: keyed by its real path, size and
    modification time (a replaced file converts again)."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return cache_dir() / "converted" / f"{path.stem}-{key.hexdigest()[:16]}.safetensors"


def read_converted(path: str | Path) -> dict:
    """A .caffemodel as our checkpoint dict, converted once and cached (when the cache
    folder can be written; else converted each time)."""
    from .checkpoint import read_file

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"caffemodel {path} does not exist")
    out = converted_path(path)
    if out.is_file():
        return read_file(out)
    ckpt = caffe_checkpoint(read_caffemodel(path), path.name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(ckpt, out)
    except (OSError, UsageError):
        pass  # a read-only or full cache: the conversion is used once, from memory
    return ckpt.to_dict()
