"""The one-call API: `alexnet.load(path)` -> a `Pretrained`, shaped like torchvision's
`Weights`: the eval-ready model, `transforms()` (what to do to an image before the
model sees it), `meta["categories"]`, and fc7 features.

    import alexnet
    weights = alexnet.load("runs/demo/checkpoints/best.pt")     # or a .safetensors file,
    model, preprocess = weights.model, weights.transforms()     # or torchvision's .pth
    batch = torch.stack([preprocess(img) for img in pil_images])
    probs = model(batch).softmax(1)
    names = [weights.meta["categories"][i] for i in probs.argmax(1)]
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.augment import CROP, BatchTransform
from ..data.images import STORE_SIZE, resize_center_crop, to_rgb
from ..model.info import min_input_size
from ..model.net import ARCHITECTURE_OPTIONS, input_crop, output_layer
from ..model.net import create_model as fresh_model
from ..weights.hub import NAMED
from ..weights.load import Loaded, load_for_inference
from ..weights.transfer import load_matching


class ImageTransform:
    """One image -> the network's (3, 224, 224) float input (227 for Caffe's net), as
    training preprocessed it: shorter side to 256, the central 256x256 patch (§2), its
    central crop, minus the
    mean image (or per-channel mean / std), times the input scale. Takes a PIL image, a
    uint8 tensor (C, H, W) as torchvision's readers return, or a uint8 array (H, W, C)."""

    def __init__(self, norm: dict, crop: int = CROP):
        self.batch_transform = BatchTransform(device="cpu", crop=crop, **norm)

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        if torch.is_tensor(image):
            image = image.permute(1, 2, 0).cpu().numpy() if image.dim() == 3 else image.numpy()
        if isinstance(image, np.ndarray):
            image = Image.fromarray(np.asarray(image, np.uint8).squeeze())
        bt = self.batch_transform
        stored = torch.from_numpy(resize_center_crop(to_rgb(image), bt.image_size or STORE_SIZE))
        return bt(stored[None], bt.views(1))[0].contiguous()


@dataclass
class Pretrained:
    """A trained AlexNet with what it needs to be used: see the module docstring."""

    loaded: Loaded

    @property
    def model(self) -> torch.nn.Module:
        """The network, in eval mode."""
        return self.loaded.model

    @property
    def meta(self) -> dict:
        """categories (class names, by output index), class_ids (wnids for ImageNet
        weights), variant, kind ("alexnet" for our checkpoints, "torchvision" for its
        state_dict files, "caffe" for Caffe's), source (what was named), path (the file
        read), num_params and min_size; for a published net by name, the registry's
        entry too (metrics and their protocol, file, hash, URL, channels, recipe, docs:
        `alexnet.list_weights()`); for our checkpoints, what they know of their training
        (store, recipe, seed, epochs, final validation errors)."""
        loaded = self.loaded
        meta = {
            "categories": list(loaded.classes),
            "class_ids": list(loaded.class_ids),
            "variant": loaded.model.variant,
            "kind": loaded.kind,
            "source": loaded.source or loaded.path,
            "path": loaded.path,
            "num_params": sum(p.numel() for p in loaded.model.parameters()),
            "min_size": min_input_size(loaded.model.variant, loaded.model.options),
        }
        named = NAMED.get(loaded.source)
        if named is not None:
            meta.update({k: v for k, v in named.meta().items() if k not in meta})
        meta.update(loaded.about)
        return meta

    def transforms(self):
        """The preprocessing these weights were trained with, as a callable on one image
        (PIL image or uint8 tensor): torchvision's own for its weights, ours for ours."""
        if self.loaded.kind == "torchvision":
            from torchvision.models import AlexNet_Weights

            return AlexNet_Weights.IMAGENET1K_V1.transforms()
        return ImageTransform(self.loaded.norm, input_crop(self.model.variant))

    @torch.no_grad()
    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """fc7 activations (4096-d, after its ReLU) of a preprocessed batch: the
        representation §6.1 retrieves with, and the usual one for transfer."""
        return self.model.last_hidden(batch.to(self.loaded.device)).float()

    def extract(
        self, batch: torch.Tensor, layers, pre_relu: bool = False, pooling: str = "none"
    ) -> dict[str, torch.Tensor]:
        """Activations of named layers for a preprocessed batch, in one forward pass, as
        float32 tensors keyed by the names given (the shape of torchvision's
        create_feature_extractor). Names are those `alexnet info` lists or conv1..fc8
        (after their ReLU); pre_relu=True reads every conv and fc layer before its ReLU
        (or mark single ones NAME:pre); conv2.tower0 is a tower's half; pooling: "none",
        "mean" or "max" over the positions of each map."""
        from .features import extract, parse_layers

        names = [layers] if isinstance(layers, str) else list(layers)
        asked = [n if not pre_relu or n.endswith(":pre") else f"{n}:pre" for n in names]
        requests = parse_layers(self.model, asked)
        out = extract(self.model, batch, requests, pooling)
        return {name: out[a] for name, a in zip(names, asked, strict=True)}

    @torch.no_grad()
    def predict(self, batch: torch.Tensor, top: int = 5) -> list[list[tuple[str, float]]]:
        """The `top` most probable classes of each image of a preprocessed batch."""
        probs = self.model(batch.to(self.loaded.device)).float().softmax(1).cpu()
        p, idx = probs.topk(min(top, probs.shape[1]), dim=1)
        return [
            [(self.loaded.classes[int(i)], float(q)) for q, i in zip(pr, ix, strict=True)]
            for pr, ix in zip(p, idx, strict=True)
        ]


def load(path: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """Load a checkpoint of ours (.pt or .safetensors), torchvision's AlexNet state_dict
    (alexnet-owt-7be5be79.pth), a .caffemodel, or the published ImageNet weights by name
    ("torchvision", "caffe": torch.hub's cache, downloaded once) into an eval-ready model,
    with its classes and its preprocessing. Loads no code from the file."""
    return Pretrained(load_for_inference(path, device))


def create_model(
    variant: str | None = None,
    num_classes: int | None = None,
    weights=None,
    kernels: str = "none",
    precision: str = "fp32",
    **options,
):
    """`alexnet.create_model`: a fresh net of a variant ("paper" by default, 1,000
    classes; model/net.py's create_model, whose options it passes on). `kernels="auto"`
    puts in the fast CPU kernels the command line trains with (the execution plan's
    choice for a CPU loop computing in `precision`, "fp32" or "bf16"; or a comma list,
    as `--kernels` takes), each proven equal to the plain module it replaces, gradients
    included; the default "none" is the plain model, to compose, trace or move to a GPU
    (`alexnet.plain(model)` puts the plain modules back). Or, with
    `weights` (a checkpoint path: ours, .pt or .safetensors, torchvision's AlexNet
    state_dict, a .caffemodel; or "torchvision" / "caffe", the published ImageNet nets),
    the file's trained net in eval mode. With weights, `num_classes` other than the
    file's gives a fresh fc8 for that many classes over the loaded layers (as `train
    --weights` does), with a warning; `variant` and the architecture options must be the
    file's (or "six-conv" over a paper net: conv6 starts afresh, §6's "1 CNN*"); dropout
    may change, and `init` draws what is not loaded. `alexnet.load(weights)` gives the
    classes and the preprocessing too."""
    model = _created(variant, num_classes, weights, options)
    if kernels != "none":
        from ..kernels.plan import resolve_plan

        resolve_plan(torch.device("cpu"), precision, kernels, train=True).apply(model)
    return model


def _created(variant: str | None, num_classes: int | None, weights, options: dict):
    if weights is None:
        n = 1000 if num_classes is None else num_classes
        return fresh_model(variant or "paper", num_classes=n, **options)
    model = load(weights).model
    _check_fits(weights, model, variant, options)
    same_classes = num_classes is None or num_classes == output_layer(model).out_features
    grows = variant == "six-conv" and model.variant == "paper"
    if same_classes and not grows and not options:
        return model
    kept = asdict(model.options)
    new = fresh_model(
        variant or model.variant,
        num_classes=output_layer(model).out_features if num_classes is None else num_classes,
        **{**kept, **options},
    )
    _, fresh = load_matching(new, model.state_dict(), keep_head=same_classes)
    if fresh:
        verb = "starts" if len(fresh) == 1 else "start"
        warnings.warn(
            f"create_model: {', '.join(fresh)} {verb} afresh over the weights of {weights} "
            f"({new.variant}, {output_layer(new).out_features} classes)",
            stacklevel=3,
        )
    return new.eval()


def _check_fits(weights, model, variant: str | None, options: dict) -> None:
    """Refuse, in one line naming both, a variant or an option the weights cannot hold."""
    if variant not in (None, model.variant) and not (
        variant == "six-conv" and model.variant == "paper"
    ):
        raise ValueError(
            f"weights {weights} are a {model.variant!r} net: variant={variant!r} cannot "
            "hold them (leave variant out to take the file's)"
        )
    moot = ("lrn", "lrn_alpha_over_n") if model.variant == "torchvision" else ()  # no LRN
    for key, value in options.items():
        if key in ARCHITECTURE_OPTIONS and key not in moot and value != getattr(model.options, key):
            raise ValueError(
                f"weights {weights} were trained with {key}={getattr(model.options, key)!r}: "
                f"{key}={value!r} would compute another function (leave it out)"
            )
