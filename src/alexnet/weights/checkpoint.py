"""The checkpoint format: one owner for what a training run writes and every verb reads.

A checkpoint is a plain dict of state dicts, tensors and primitives, written
atomically and read with weights_only=True, so loading one never runs code. Its
fields are checked before anything is built from them: a file that claims a billion
classes is refused, not allocated.

Layout (CHECKPOINT_FORMAT; every field at the top level):
    format, model (state_dict), variant, num_classes, model_options, classes,
    normalization, config, optimizer, schedule, and the TrainState fields
    (epoch, step, global_step, history, best_val_top1_error, running).
"""

from __future__ import annotations

import base64
import json
import math
import re
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..model.net import MAX_CLASSES, ModelOptions, options_of
from ..options import VARIANTS
from ..runtime.errors import UsageError
from ..runtime.files import atomic_duplicate, atomic_write

CHECKPOINT_FORMAT = "alexnet-checkpoint-1"
# what a checkpoint's config must hold to be resumed as the run it was
RESUME_NEEDS = ("data", "recipe", "epochs", "batch_size", "lr", "seed")
TRAIN_STATE_KEYS = ("epoch", "step", "global_step", "history", "best_val_top1_error", "running")
# the output layer's weight in each variant's state_dict
FC8_KEYS = {
    "paper": "classifier.fc8.weight",
    "one-tower": "classifier.fc8.weight",
    "torchvision": "classifier.6.weight",
    "caffe": "classifier.fc8.weight",
    "six-conv": "classifier.fc8.weight",
}


@dataclass
class Checkpoint:
    """A trained (or training) net with what is needed to use it and to resume it."""

    model: dict  # the single-device model's state_dict
    variant: str
    classes: list[dict]  # the store's classes: {"index", "id", "name"}
    normalization: dict  # {"kind": "mean-image", "mean", "eigval", "eigvec", "scale"}
    model_options: dict = field(default_factory=dict)  # ModelOptions fields
    config: dict = field(default_factory=dict)  # the resolved TrainConfig
    optimizer: dict | None = None
    schedule: dict | None = None
    train_state: dict | None = None  # TrainState.state_dict()

    @property
    def num_classes(self) -> int:
        """How many classes the net predicts."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """The class names, by output index."""
        return [c["name"] for c in self.classes]

    def to_dict(self) -> dict:
        """The dict that is saved: every field at the top level (the module docstring)."""
        d = {"format": CHECKPOINT_FORMAT, "num_classes": self.num_classes}
        d.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "train_state"})
        d.update(self.train_state or {})
        return d

    @classmethod
    def from_dict(cls, obj: dict, source: str = "checkpoint") -> Checkpoint:
        """Check every field, then build; raises UsageError naming the file and field."""
        _validate(obj, source)
        state = {k: obj.get(k) for k in TRAIN_STATE_KEYS} if "epoch" in obj else None
        return cls(
            model=obj["model"],
            variant=obj["variant"],
            classes=list(obj["classes"]),
            normalization=obj["normalization"],
            model_options=_with_old_defaults(obj.get("model_options") or {}),
            config=dict(obj.get("config") or {}),
            optimizer=obj.get("optimizer"),
            schedule=obj.get("schedule"),
            train_state=state,
        )

    def check_resumable(self, source: str) -> None:
        """Raise UsageError unless the training state is whole and of its types: what
        --resume reads (inference needs none of it)."""
        if self.train_state is None:
            raise UsageError(f"{source} holds weights only, no training state to resume")
        state = {**self.train_state, "optimizer": self.optimizer, "schedule": self.schedule}
        _validate_train_state(
            state, lambda what: UsageError(f"{source}: damaged checkpoint: {what}")
        )
        lacking = [k for k in RESUME_NEEDS if k not in self.config]
        if lacking:  # resumed with today's defaults, it would be another run
            raise UsageError(
                f"{source}: damaged checkpoint: its training config has no {lacking[0]!r} "
                f"({len(lacking)} of the options a run resumes with missing)"
            )

    def all_finite(self) -> bool:
        """Whether every floating-point weight is finite."""
        return first_non_finite(self.model) is None


def first_non_finite(state: dict) -> str | None:
    """The name of the first floating-point tensor with a NaN or an infinity, or None:
    weights like that are refused wherever weights are loaded."""
    for name, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point() and not is_finite(t):
            return name
    return None


def is_finite(t: torch.Tensor) -> bool:
    """Whether a floating-point tensor holds no NaN and no infinity. Its least and
    greatest values say it (a NaN anywhere makes both NaN) in one pass, where
    isfinite().all() builds four full-size temporaries: every save and load checks the
    paper net's 61M weights."""
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def _with_old_defaults(saved: dict) -> dict:
    # one saved before lrn_alpha_over_n existed was trained with alpha undivided
    return {"lrn_alpha_over_n": False, **saved}


def model_options(source) -> dict:
    """The ModelOptions a checkpoint keeps, whole, from a TrainConfig or a net's options
    (one saved before `init` was kept loads with ModelOptions' default)."""
    return asdict(options_of(source))


def _validate(obj: dict, source: str) -> None:
    def bad(what: str):
        return UsageError(f"{source}: damaged checkpoint: {what}")

    for key in ("model", "variant", "num_classes", "classes", "normalization"):
        if key not in obj:
            raise bad(f"no {key!r} field")
    if obj["variant"] not in VARIANTS:
        raise bad(f"unknown variant {obj['variant']!r}")
    n = obj["num_classes"]
    if not isinstance(n, int) or not 1 <= n <= MAX_CLASSES:
        raise bad(f"num_classes {n!r} is not a class count")
    if not isinstance(obj["classes"], list) or len(obj["classes"]) != n:
        raise bad(f"{len(obj['classes'])} class entries for num_classes {n}")
    if not all(isinstance(c, dict) and "name" in c for c in obj["classes"]):
        raise bad("class entries without names")
    model = obj["model"]
    if not isinstance(model, dict) or not all(torch.is_tensor(v) for v in model.values()):
        raise bad("'model' is not a state_dict")
    fc8 = model.get(FC8_KEYS[obj["variant"]])
    if fc8 is None or fc8.dim() != 2 or fc8.shape[0] != n:
        raise bad(f"the output layer does not have {n} classes")
    try:
        options = ModelOptions(**_with_old_defaults(obj.get("model_options") or {}))
    except (TypeError, ValueError) as e:
        raise bad(f"model_options: {e}") from None
    _validate_normalization(obj["normalization"], bad)
    check_shapes(model, obj["variant"], n, options, bad)  # before any pass over the values
    name = first_non_finite(model)
    if name:
        raise bad(f"tensor {name} holds NaN or infinite values")


def check_shapes(state: dict, variant: str, num_classes: int, options, bad) -> None:
    """Every tensor of a state_dict has the shape the net gives its name (the net built
    on the meta device), so that no check or copy ever touches a tensor whose size a
    damaged or hostile file made up. `bad(what)` makes the error raised."""
    expected = expected_shapes(variant, num_classes, options)
    for key, tensor in state.items():
        if key not in expected:
            raise bad(f"tensor {key!r} is not a weight of the {variant} net")
        if not tensor.is_floating_point():
            raise bad(f"tensor {key} holds {tensor.dtype}, not weights (floating-point numbers)")
        if tuple(tensor.shape) != expected[key]:
            shape = "x".join(map(str, tensor.shape))
            want = "x".join(map(str, expected[key]))
            raise bad(f"tensor {key} is {shape}, where the {variant} net has {want}")
    missing = sorted(set(expected) - set(state))
    if missing:
        raise bad(
            f"no tensor {missing[0]!r} ({len(missing)} weight(s) of the {variant} net missing)"
        )


def expected_shapes(variant: str, num_classes: int, options) -> dict[str, tuple]:
    """Each tensor name of a variant's state_dict and its shape (the net built on the
    meta device: nothing allocated)."""
    from ..model.net import create_model

    with torch.device("meta"):
        net = create_model(variant, num_classes=num_classes, **{**asdict(options), "init": "torch"})
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _validate_normalization(norm, bad) -> None:
    if not isinstance(norm, dict) or not torch.is_tensor(norm.get("mean")):
        raise bad("no normalisation mean")
    shape = tuple(norm["mean"].shape)
    image = len(shape) == 3 and shape[0] == shape[1] and shape[2] == 3 and shape[0] <= 4096
    if not (image or shape == (3,)):
        raise bad(f"the normalisation mean is {shape}, not a square RGB image or 3 values")
    if not norm["mean"].is_floating_point():
        raise bad(f"the normalisation mean holds {norm['mean'].dtype}, not numbers with decimals")
    scale = norm.get("scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise bad(f"the input scale is {scale!r}, not a number")
    if not math.isfinite(scale):
        raise bad("non-finite input scale")
    std = norm.get("std")
    if std is not None and not (torch.is_tensor(std) and tuple(std.shape) == (3,)):
        raise bad("the normalisation std is not 3 values")
    if norm.get("channels", "rgb") not in ("rgb", "bgr"):
        raise bad(f"the input channel order is {norm.get('channels')!r}, not 'rgb' or 'bgr'")


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _validate_train_state(obj: dict, bad) -> None:
    """The fields a resumed run reads, each of its type: what a run resumes from."""
    for key in (*TRAIN_STATE_KEYS, "optimizer", "schedule"):
        if obj.get(key) is None:
            raise bad(f"no {key!r} field for resuming")
    for key in ("epoch", "step", "global_step"):
        if not _is_count(obj[key]):
            raise bad(f"{key} {obj[key]!r} is not a count")
    history = obj["history"]
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise bad("the history is not a list of epochs")
    best = obj["best_val_top1_error"]
    if not isinstance(best, (int, float)) or isinstance(best, bool):
        raise bad(f"best_val_top1_error {best!r} is not a number")
    running = obj["running"]
    if not isinstance(running, dict) or not all(
        isinstance(running.get(k), (int, float)) for k in ("loss_sum", "correct", "count")
    ):
        raise bad("the running epoch totals are not numbers")
    opt = obj["optimizer"]
    if not (
        isinstance(opt, dict)
        and isinstance(opt.get("state"), dict)
        and isinstance(opt.get("param_groups"), list)
        and opt["param_groups"]
    ):
        raise bad("the optimizer state is empty or not an optimizer's")
    if not isinstance(obj["schedule"], dict):
        raise bad("the schedule state is not a dict")


class Checkpointer:
    """Owns the writing of a run's checkpoints (after timm's CheckpointSaver): last.pt at
    every save, best.pt when the epoch is the best so far, each written whole (a temp
    file, then os.replace), and never one whose weights are not all finite."""

    def __init__(self, last: Path, best: Path):
        self.last, self.best = Path(last), Path(best)

    def save(self, ckpt: Checkpoint, is_best: bool = False) -> bool:
        """Write it; False (and nothing written) when a weight is not finite."""
        if not ckpt.all_finite():
            return False
        save_atomic(ckpt.to_dict(), self.last)
        if is_best:
            atomic_duplicate(self.last, self.best)
        return True


def save_atomic(obj: dict, path: str | Path) -> None:
    """torch.save whole or not at all."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(obj, fh))


def _why_unreadable(path: Path, error: Exception) -> str:
    """torch.load's error in a few words: its own are internal (a bare magic-number
    KeyError, miniz's) or a paragraph long."""
    if path.stat().st_size == 0:
        return "the file is empty"
    unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if unsupported:  # weights_only=True refuses it: loading it could run code
        return f"it holds objects of type {unsupported.group(1)}, which a weights-only load refuses"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PK\x03\x04":  # a zip archive, as torch.save writes
        return "a torch.save archive that is truncated or damaged"
    if head[:1] == b"\x80":  # the PROTO opcode every pickle since protocol 2 opens with
        return "a pickle that torch's weights-only loader cannot read"
    return "neither a torch.save file nor .safetensors"


def read_file(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint file as a dict: torch files loaded with weights_only=True (no code
    runs), .safetensors files through safetensors."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    if path.suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path)
    try:
        with warnings.catch_warnings():  # a pickle's protocol warning: the reason follows
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and unsafe-type errors alike
        raise UsageError(
            f"{path} is not a readable checkpoint ({_why_unreadable(path, e)})"
        ) from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path} is not a checkpoint (a {type(obj).__name__}, not a dict)")
    _check_held(obj, path)
    return obj


def _tensors(obj, name: str = "", depth: int = 0):
    """(dotted name, tensor) for every tensor in nested dicts, lists and tuples."""
    if torch.is_tensor(obj):
        yield name, obj
    elif depth < 8 and isinstance(obj, (dict, list, tuple)):
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in items:
            yield from _tensors(value, f"{name}.{key}" if name else str(key), depth + 1)


def _check_held(obj: dict, path: Path) -> None:
    """Refuse a file whose tensor claims more numbers than the file holds for it (a
    stride-0 view saved as a 16 GB weight from 4 bytes): torch.save writes weights
    whole, and anything that copied such a tensor, or summed over it, would allocate or
    read what the shape claims before any other check could run."""
    for name, t in _tensors(obj):
        if t.layout != torch.strided or t.device.type == "meta":
            kind = "a meta tensor" if t.device.type == "meta" else f"a {t.layout} tensor"
            raise UsageError(f"{path}: damaged checkpoint: tensor {name} is {kind}, not numbers")
        held = t.untyped_storage().nbytes() // max(1, t.element_size())
        if t.numel() > held:
            raise UsageError(
                f"{path}: damaged checkpoint: tensor {name} claims {t.numel():,} numbers "
                f"where the file holds {held:,} for it"
            )


SAFETENSORS_SUFFIX = ".safetensors"
# where read_file puts the header of a .safetensors file that is not one of ours
HEADER_KEY = "__metadata__"


def save_safetensors(ckpt: Checkpoint, path: str | Path) -> None:
    """The weights alone (no optimiser, no training state), under the model's own
    state_dict keys, so that `create_model(variant, num_classes).load_state_dict(
    safetensors.torch.load_file(path))` takes them as they are; the rest of the
    checkpoint (classes, options, the normalisation, its mean image included) goes in the
    header as JSON. About a third of a training checkpoint."""
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in ckpt.model.items()}
    norm = {k: v for k, v in ckpt.normalization.items() if torch.is_tensor(v)}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "variant": ckpt.variant,
        "classes": ckpt.classes,
        "model_options": ckpt.model_options,
        "config": ckpt.config,
        "normalization": {k: v for k, v in ckpt.normalization.items() if k not in norm},
        "normalization_tensors": {k: _tensor_to_json(v) for k, v in norm.items()},
    }
    data = save(tensors, metadata={"alexnet": json.dumps(meta)})
    atomic_write(path, lambda fh: fh.write(data))


def _tensor_to_json(t: torch.Tensor) -> dict:
    """A float32 tensor as JSON, exactly: its shape and its bytes in base64."""
    array = t.detach().to("cpu", torch.float32).contiguous().numpy()
    return {"shape": list(array.shape), "float32_base64": base64.b64encode(array).decode()}


def _tensor_from_json(obj: dict) -> torch.Tensor:
    data = base64.b64decode(obj["float32_base64"], validate=True)
    array = np.frombuffer(data, dtype=np.float32)
    if array.size != math.prod(obj["shape"]):
        raise ValueError(f"a header tensor of shape {obj['shape']} holds {array.size} numbers")
    return torch.from_numpy(array.copy()).reshape(obj["shape"])


def _read_safetensors(path: Path) -> dict:
    """A .safetensors file of ours, in the checkpoint's dict layout. Files written before
    the weights took their own keys hold them as `model.KEY`, the normalisation's
    tensors as `normalization.KEY`: both read."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise UsageError(
            "reading .safetensors needs the safetensors package: pip install safetensors"
        ) from None
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if "alexnet" not in header:  # another program's weights: a bare state_dict
            return {**tensors, HEADER_KEY: header}
        meta = json.loads(header["alexnet"])
        norm = {k: _tensor_from_json(v) for k, v in meta.pop("normalization_tensors", {}).items()}
    except Exception as e:  # noqa: BLE001  (a damaged file raises many kinds)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{path} is not an alexnet safetensors file ({msg})") from None
    if any(k.startswith("model.") for k in tensors):  # the earlier layout
        norm.update({k[14:]: v for k, v in tensors.items() if k.startswith("normalization.")})
        tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    classes = meta.get("classes", [])
    return {
        **meta,
        "model": tensors,
        "num_classes": len(classes),
        "normalization": {**meta.get("normalization", {}), **norm},
    }


def load_checkpoint(path: str | Path) -> Checkpoint:
    """One of our checkpoints, every field checked."""
    obj = read_file(path)
    if obj.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not an alexnet checkpoint (format {obj.get('format')!r})")
    return Checkpoint.from_dict(obj, str(path))
