"""Loading any checkpoint for inference: one of ours, torchvision's pretrained file,
Caffe's bvlc_alexnet, or either of the last two by name ("torchvision", "caffe").

A torchvision AlexNet pretrained file (alexnet-owt-7be5be79.pth) is a bare state_dict
of the "one weird trick" net. It loads into our `torchvision` variant with ImageNet's
classes, and its images get the preprocessing it was trained with:
AlexNet_Weights.IMAGENET1K_V1.transforms() (resize 256, centre crop 224, ImageNet
mean/std on 0..1 values). A .caffemodel loads into the `caffe` variant (227 crops, BGR,
per-channel mean). Ours carry their own class list and normalisation.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.augment import BatchTransform
from ..data.imagenet import imagenet_classes, imagenet_indices, imagenet_wnids
from ..data.images import STORE_SIZE, load_for_store
from ..data.store import class_ids
from ..kernels.plan import Plan, resolve_plan
from ..model import AlexNet, create_model
from ..model.net import ModelOptions, input_crop
from ..runtime.device import model_device, pick_device
from ..runtime.errors import Notice, UsageError
from . import caffe, hub
from .checkpoint import (
    CHECKPOINT_FORMAT,
    FC8_KEYS,
    HEADER_KEY,
    MAX_CLASSES,
    Checkpoint,
    check_shapes,
    expected_shapes,
    first_non_finite,
    read_file,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Loaded:
    """A checkpoint loaded for inference: the model, its classes, and how its inputs are normalised."""

    model: AlexNet
    classes: list[str]
    kind: str  # "alexnet" (ours), "torchvision" (its state_dict) or "caffe" (a .caffemodel)
    norm: dict = field(default_factory=dict)  # what BatchTransform needs, on the CPU
    path: str = ""  # the file the weights were read from
    class_ids: list[str] = field(default_factory=list)  # the store's class ids, when known
    source: str = ""  # what the user named: a path, or "torchvision" / "caffe"
    plan: Plan | None = None  # how its forwards run: precision, weights, kernels

    @property
    def amp(self) -> torch.dtype | None:
        """The autocast dtype its forwards run in (None: float32)."""
        return self.plan.amp if self.plan else None

    about: dict = field(default_factory=dict)  # what the file says of its training (ours)

    def transform(self, device=None) -> BatchTransform:
        """Stored uint8 images -> this model's input, on `device` (default: the model's)."""
        crop = input_crop(self.model.variant)
        return BatchTransform(device=device or self.device, crop=crop, **self.norm)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        return model_device(self.model)

    @property
    def num_classes(self) -> int:
        """How many classes the model predicts."""
        return len(self.classes)

    @property
    def image_size(self) -> int:
        """The side of the store images this net was trained on (its mean image's); 256
        for a per-channel mean, which fits any size."""
        mean = self.norm.get("mean")
        return int(mean.shape[0]) if mean is not None and mean.dim() == 3 else STORE_SIZE

    def check_store(self, store, classes: bool = True) -> list[int] | None:
        """Which outputs score the store's classes, refusing in one line a store of
        images of another size than this net's (and, with `classes`, one of other
        classes): None when the classes are the net's own; for a 1,000-class ImageNet
        net and a store of some ILSVRC-2012 classes (by wnid, or by a name that belongs
        to one class), the index of each store class among the net's outputs."""
        name = self.source or self.path
        mean = self.norm.get("mean")
        if mean is not None and mean.dim() == 3 and store.size != self.image_size:
            raise UsageError(
                f"{name} was trained on {self.image_size}-pixel images and {store.root} "
                f"holds {store.size}-pixel ones: prepare them with --size {self.image_size}"
            )
        if "classes_named" in self.about:  # a bare state_dict: the store's inputs, names
            self._take_from(store, names=store.num_classes == self.num_classes)
        ids = class_ids(store.classes)
        same = store.num_classes == self.num_classes and (
            not self.class_ids or self.class_ids == ids
        )
        if not classes or same:
            return None
        subset = imagenet_indices(store.classes) if self.class_ids == imagenet_wnids() else None
        if subset is None:
            raise UsageError(
                f"{store.root} holds other classes than {name} was trained on "
                f"({store.num_classes} vs {self.num_classes} classes)"
            )
        return subset

    def _take_from(self, store, names: bool) -> None:
        """A bare state_dict's inputs and classes as the store has them: its mean image
        for the paper's preprocessing (unless the header gave a mean), and, with `names`
        (as many classes as outputs), its class names unless the file's header named them."""
        if names and not self.about.get("classes_named"):
            self.classes = [c["name"] for c in store.classes]
            self.class_ids = class_ids(store.classes)
        if self.about.get("preprocessing") == "paper":
            self.norm = {**self.norm, "mean": torch.from_numpy(store.stats.mean).float()}

    def to(self, device) -> Loaded:
        """The model moved to `device` (channels_last); returns self."""
        self.model = self.model.to(device, memory_format=torch.channels_last)
        return self

    def preprocess_files(self, paths, crops: int = 1) -> torch.Tensor:
        """Image files -> network input, as this checkpoint's training preprocessed."""
        if self.kind == "torchvision":
            from torchvision.models import AlexNet_Weights

            from ..data.images import open_rgb

            tf = AlexNet_Weights.IMAGENET1K_V1.transforms()
            if crops != 1:
                raise UsageError("ten crops are not defined for torchvision's preprocessing")
            return torch.stack([tf(open_rgb(p)) for p in paths])
        size = self.image_size
        images = torch.stack([torch.from_numpy(load_for_store(p, size)) for p in paths])
        transform = self.transform("cpu")
        return transform(images, transform.views(len(paths), crops))


def _with_weights(state: dict, variant: str, num_classes: int, **options) -> AlexNet:
    """A net of `variant` holding these weights (float32), or RuntimeError when they do
    not fit it. Built on the meta device and handed the loaded tensors themselves: no
    init drawn only to be overwritten, and no second copy of 61M weights. PyTorch's own
    init there, since normal_ on meta tensors imports torch._dynamo (a second)."""
    with torch.device("meta"):
        model = create_model(variant, num_classes=num_classes, **{**options, "init": "torch"})
    model.load_state_dict(state, assign=True)
    return model.float()  # a bf16 or fp16 export computes in float32 as it always did


def _ours(ckpt: Checkpoint, path) -> Loaded:
    try:
        model = _with_weights(ckpt.model, ckpt.variant, ckpt.num_classes, **ckpt.model_options)
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        raise UsageError(
            f"{path}: damaged checkpoint: its weights do not fit the {ckpt.variant} net ({msg})"
        ) from None
    n = ckpt.normalization
    norm = {
        "mean": n["mean"],
        "eigval": None,
        "eigvec": None,
        "scale": float(n.get("scale", 1.0)),
        "std": n.get("std"),
        "channels": n.get("channels", "rgb"),
    }
    return Loaded(
        model,
        ckpt.class_names,
        "caffe" if "converted_from" in ckpt.config else "alexnet",
        norm,
        str(path),
        class_ids(ckpt.classes),
        about=_training_facts(ckpt),
    )


def _training_facts(ckpt: Checkpoint) -> dict:
    """What one of our checkpoints knows of its training: its store, recipe and seed, the
    epochs it ran and its last epoch's validation errors (a weights-only export keeps
    the config but not the history)."""
    cfg, history = ckpt.config, (ckpt.train_state or {}).get("history") or []
    facts = {k: cfg[k] for k in ("data", "recipe", "seed", "precision") if k in cfg}
    if "data" in facts:
        facts["store"] = facts.pop("data")
    if history:
        last = history[-1]
        facts["epochs_trained"] = last["epoch"]
        facts["final"] = {k: last[k] for k in ("val_top1_error", "val_top5_error") if k in last}
    return facts


WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", caffe.SUFFIX)


def names_weights(arg: str) -> bool:
    """Whether a command-line word names weights rather than an image: a published
    net's name or a weights file's suffix."""
    return arg in hub.NAMED or Path(arg).suffix.lower() in WEIGHT_SUFFIXES


def read_weights(spec: str | Path) -> tuple[dict, Path]:
    """A weights argument -> (the file's dict, the file read): a name resolves to
    torch.hub's cache (downloaded once), a .caffemodel is converted (once, cached)."""
    path = hub.resolve(spec)
    if path.suffix == caffe.SUFFIX:
        return caffe.read_converted(path), path
    return read_file(path), path


def load_for_inference(
    path: str | Path, device="cpu", precision: str = "fp32", kernels: str = "none"
) -> Loaded:
    """Our checkpoint, a torchvision AlexNet state_dict, a .caffemodel, or "torchvision"
    / "caffe" by name, eval-ready on `device`; its forwards to run in `precision`
    ("auto": bf16 on CUDA and on CPUs with native bf16, as training resolves it).

    The model is the plain one (model/) unless `kernels` asks the execution plan for
    its fast kernels ("auto", or a comma list: kernels/plan.py). In a low precision its
    weights are held in it, cast once rather than by autocast at every batch: the same
    rounding, the same outputs bit for bit."""
    device = pick_device(device) if isinstance(device, str) else device
    loaded = _loaded(path, device)
    loaded.plan = resolve_plan(device, precision, kernels, train=False)
    loaded.plan.apply(loaded.model)
    return loaded


def _loaded(path: str | Path, device: torch.device) -> Loaded:
    source = str(path)
    obj, path = read_weights(path)
    if obj.get("format") == CHECKPOINT_FORMAT:
        loaded = _ours(Checkpoint.from_dict(obj, str(path)), path)
    else:
        loaded = _plain(obj, path)
    loaded.source = source
    loaded.model.eval()
    return loaded.to(device)


# the variants a bare state_dict is matched against, in order; the caffe net has the
# paper net's tensors, and is Caffe's only with its own preprocessing (a .caffemodel's)
PLAIN_VARIANTS = ("paper", "one-tower", "torchvision", "six-conv")
# where other training loops put the state_dict in a dict of their own
WRAPPERS = ("state_dict", "model_state_dict", "model", "net")


def plain_state(obj: dict) -> dict | None:
    """The weights of a dict that is (or wraps, under WRAPPERS) a bare state_dict, with
    a prefix every key shares before features./classifier. removed (DDP's "module.",
    torch.compile's "_orig_mod.", a LightningModule's attribute name); None when it holds
    no tensors."""
    for key in WRAPPERS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(torch.is_tensor(v) for v in inner.values()):
            obj = inner
            break
    state = {str(k): v for k, v in obj.items() if torch.is_tensor(v)}
    if not state:
        return None
    first = min(state)
    cut = min((first.find(p) for p in ("features.", "classifier.") if p in first), default=-1)
    prefix = first[:cut] if cut > 0 else ""
    if prefix and prefix.endswith(".") and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


class _Misfit(Exception):
    pass


def plain_variant(state: dict, path) -> tuple[str, int]:
    """(variant, classes) of the net a bare state_dict's keys and shapes fit, the class
    count from its output layer; UsageError in one line when they fit none."""
    fc8 = state.get(FC8_KEYS["paper"], state.get(FC8_KEYS["torchvision"]))
    if fc8 is None:
        raise UsageError(
            f"{path} is neither an alexnet checkpoint nor an AlexNet state_dict (no output "
            f"layer {FC8_KEYS['paper']} or {FC8_KEYS['torchvision']})"
        )
    if fc8.dim() != 2 or not 1 <= fc8.shape[0] <= MAX_CLASSES:
        raise UsageError(f"{path}: not an AlexNet state_dict (output layer {tuple(fc8.shape)})")
    n, misfits = fc8.shape[0], {}
    for variant in PLAIN_VARIANTS:
        try:
            check_shapes(state, variant, n, ModelOptions(), _Misfit)
            return variant, n
        except _Misfit as e:
            misfits[variant] = str(e)
    nearest = max(PLAIN_VARIANTS, key=lambda v: _shared_keys(state, v))
    raise UsageError(
        f"{path}: a state_dict that fits none of alexnet's nets ({', '.join(PLAIN_VARIANTS)}); "
        f"as the {nearest} net: {misfits[nearest]}"
    )


def _shared_keys(state: dict, variant: str) -> int:
    """How many of the state's tensors the variant has, by name and shape (fc8 aside)."""
    shapes = expected_shapes(variant, 1, ModelOptions())
    return sum(
        k in shapes and (tuple(t.shape) == shapes[k] or k.startswith("classifier.fc8"))
        for k, t in state.items()
    )


def _plain(obj: dict, path: Path) -> Loaded:
    """A bare state_dict of any variant, from another training loop (see the README's
    "Your own weights"): its net from its keys and shapes, its classes numbered until a
    store names them (Loaded.check_store), and the paper's preprocessing unless a
    .safetensors header gives its mean and std."""
    header = obj.get(HEADER_KEY) or {}
    state = plain_state(obj)
    if state is None:
        raise UsageError(f"{path} is neither an alexnet checkpoint nor an AlexNet state_dict")
    variant, n = plain_variant(state, path)
    bad = first_non_finite(state)
    if bad:
        raise UsageError(f"{path}: damaged weights: tensor {bad} holds NaN or infinite values")
    model = _with_weights(state, variant, n)
    torchvision_file = variant == "torchvision"
    entries = imagenet_classes() if torchvision_file and n == 1000 else []
    classes = header_classes(header, n, path) or [c["name"] for c in entries]
    ids = [c["id"] for c in entries]
    given = header_norm(header, path)
    if torchvision_file and given is None:  # torchvision's ImageNet file, or one of its layout
        kind, preprocessing = "torchvision", "torchvision"
        norm = {"mean": torch.tensor(IMAGENET_MEAN) * 255, "std": torch.tensor(IMAGENET_STD) * 255}
    else:
        warnings.warn(Notice(_plain_line(path, variant, n, classes, given)), stacklevel=4)
        kind, preprocessing = "state_dict", "header" if given else "paper"
        norm = given or {"mean": torch.tensor(IMAGENET_MEAN) * 255}  # until a store gives its own
    loaded = Loaded(model, classes or [str(i) for i in range(n)], kind, norm, str(path), ids)
    loaded.about = {"preprocessing": preprocessing, "classes_named": bool(classes)}
    return loaded


def _plain_line(path, variant: str, n: int, classes: list, norm: dict | None) -> str:
    named = "named by its header" if classes else f"named by --data's store, else 0..{n - 1}"
    inputs = (
        "its header's mean and std"
        if norm
        else "the paper's: 0..255 pixels minus the store's mean image (ImageNet's "
        "channel means without one)"
    )
    return (
        f"{path}: a bare state_dict, read as the {variant} net with {n} classes ({named}); "
        f"LRN, pooling and ReLU as the paper's (a state_dict does not record them); inputs "
        f"{inputs}"
    )


def header_classes(header: dict, n: int, path) -> list[str]:
    """A .safetensors header's "classes" (a JSON list of n names), or []."""
    if "classes" not in header:
        return []
    names = _header_json(header, "classes", path)
    if not (isinstance(names, list) and len(names) == n and all(isinstance(c, str) for c in names)):
        raise UsageError(f"{path}: the header's classes are not a list of {n} names")
    return names


def header_norm(header: dict, path) -> dict | None:
    """The inputs a .safetensors header gives: "mean" and "std", three numbers each on
    0..1 pixel values (torchvision's Normalize), and "channels" ("rgb" or "bgr"); None
    when it gives none."""
    if "mean" not in header:
        return None
    values = {k: _header_json(header, k, path) for k in ("mean", "std") if k in header}
    for k, v in values.items():
        if not (isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v)):
            raise UsageError(f"{path}: the header's {k} is not three numbers")
        if k == "std" and min(v) <= 0:
            raise UsageError(f"{path}: the header's std is not positive")
    channels = header.get("channels", "rgb")
    if channels not in ("rgb", "bgr"):
        raise UsageError(f"{path}: the header's channels is {channels!r}, not rgb or bgr")
    norm = {k: torch.tensor(v, dtype=torch.float32) * 255 for k, v in values.items()}
    return {**norm, "channels": channels}


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _header_json(header: dict, key: str, path):
    try:
        return json.loads(header[key])
    except (TypeError, ValueError):
        raise UsageError(f"{path}: the header's {key} is not JSON") from None
