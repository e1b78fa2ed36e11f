"""Loading any checkpoint for inference: one of ours, or torchvision's pretrained file.

A torchvision AlexNet pretrained file (alexnet-owt-7be5be79.pth) is a bare state_dict
of the "one weird trick" net. It loads into our `torchvision` variant with ImageNet's
class names, and its images get the preprocessing it was trained with:
AlexNet_Weights.IMAGENET1K_V1.transforms() (resize 256, centre crop 224, ImageNet
mean/std on 0..1 values). Ours carry their own class list and normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import load
from .data.augment import Normalizer, center_params, ten_crop_params
from .data.images import STORE_SIZE, load_for_store
from .errors import UsageError
from .model import AlexNet, create_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Loaded:
    model: AlexNet
    classes: list[str]
    kind: str  # "alexnet" (ours) or "torchvision" (a pretrained state_dict)
    norm: dict = field(default_factory=dict)  # what Normalizer needs, on the CPU
    path: str = ""

    def normalizer(self, device="cpu") -> Normalizer:
        return Normalizer(device=device, **self.norm)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device) -> Loaded:
        self.model = self.model.to(device, memory_format=torch.channels_last)
        return self

    def preprocess_files(self, paths, crops: int = 1) -> torch.Tensor:
        """Image files -> network input, as this checkpoint's training preprocessed."""
        if self.kind == "torchvision":
            from torchvision.models import AlexNet_Weights

            from .data.images import open_rgb

            tf = AlexNet_Weights.IMAGENET1K_V1.transforms()
            if crops != 1:
                raise UsageError("ten crops are not defined for torchvision's preprocessing")
            return torch.stack([tf(open_rgb(p)) for p in paths])
        images = torch.stack([torch.from_numpy(load_for_store(p, STORE_SIZE)) for p in paths])
        params = center_params(len(paths)) if crops == 1 else ten_crop_params(len(paths))
        return self.normalizer()(images, params)


def _is_torchvision_state(obj: dict) -> bool:
    return "features.0.weight" in obj and "classifier.6.weight" in obj


def load_for_inference(path: str | Path, device="cpu") -> Loaded:
    obj = load(path)
    if obj.get("format") == "alexnet-checkpoint-1":
        model = create_model(obj["variant"], num_classes=obj["num_classes"],
                             **obj.get("model_options", {}))  # fmt: skip
        model.load_state_dict(obj["model"])
        n = obj["normalization"]
        norm = {"mean": n["mean"], "eigval": None, "eigvec": None,
                "scale": float(n.get("scale", 1.0))}  # fmt: skip
        classes = [c["name"] for c in obj["classes"]]
        kind = "alexnet"
    elif _is_torchvision_state(obj):
        model = create_model("torchvision", num_classes=obj["classifier.6.weight"].shape[0])
        try:
            model.load_state_dict(obj)
        except RuntimeError as e:
            raise UsageError(f"{path}: not a torchvision AlexNet state_dict ({e})") from None
        n = model.classifier[6].out_features
        if n == 1000:
            from torchvision.models import AlexNet_Weights

            classes = list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
        else:
            classes = [str(i) for i in range(n)]
        norm = {"mean": torch.tensor(IMAGENET_MEAN) * 255, "std": torch.tensor(IMAGENET_STD) * 255}
        kind = "torchvision"
    else:
        raise UsageError(f"{path} is neither an alexnet checkpoint nor a torchvision AlexNet file")
    model.eval()
    return Loaded(model, classes, kind, norm, str(path)).to(device)
