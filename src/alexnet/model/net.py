"""The network of §3 of the paper (docs/paper.md), in torchvision's shape (features / avgpool / classifier).

Read top to bottom it follows the paper: the constants of each section, then the
layer table of Figure 2, then the initialisation of §5.

Input size. The paper says 224x224, but an 11x11 stride-4 kernel over 224 pixels
gives 54.25 positions. cuda-convnet, which the authors used, fed 224 and rounded the
output size up, which is the same as 3 pixels of zero padding on the right and
bottom. We do exactly that (`pad1`), so a 224 crop gives the paper's 55x55 conv1
maps. A 227 crop (Caffe's choice) also gives 55x55 and never reaches the padding,
so it computes what Caffe computes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields

import torch
from torch import nn

from ..options import ACTIVATIONS, INITS, VARIANTS, check_choice
from .lrn import LocalResponseNorm

# §3.3 Local response normalisation: k, n, alpha, beta. The paper prints alpha on the
# sum undivided; cuda-convnet, which trained the paper's net, divides it by n, and so do
# we by default (docs/paper.md §3.3): ModelOptions.lrn_alpha_over_n chooses.
LRN_K = 2.0
LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75


def lrn_coefficient(alpha_over_n: bool) -> float:
    """The coefficient on LRN's window sum: alpha / n (cuda-convnet) or alpha (as printed)."""
    return LRN_ALPHA / LRN_SIZE if alpha_over_n else LRN_ALPHA


# §3.2 + §3.3: the GPUs communicate only at conv3 and the fully connected layers, so
# each tower normalises over its own maps: the window never crosses the tower boundary
# (as in cuda-convnet's two-GPU layer definitions, one response-norm layer per GPU).
TOWERS = 2  # towers.py splits the net along the same line

# §3.4 Overlapping pooling: z=3, s=2 (the ablation uses z=2, s=2).
POOL_SIZE = 3
POOL_STRIDE = 2

# §4.2 Dropout on the outputs of fc6 and fc7.
DROPOUT_P = 0.5

# §5 Initialisation: N(0, 0.01^2) weights; bias 1 in conv2, conv4, conv5, fc6, fc7.
INIT_STD = 0.01
BIAS_ONE_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")

# §3.5 / Figure 2: the layer table. (name, kernels, kernel size, stride, padding, groups)
# groups=2 is the two towers of §3.2: conv2, conv4, conv5 see only their own tower.
PAPER_CONVS = (
    ("conv1", 96, 11, 4, 0, 1),
    ("conv2", 256, 5, 1, 2, 2),
    ("conv3", 384, 3, 1, 1, 1),
    ("conv4", 384, 3, 1, 1, 2),
    ("conv5", 256, 3, 1, 1, 2),
)
# §3.2's comparison net: one GPU, half the kernels in conv1-conv4, conv5 and the
# fully connected layers kept at full size.
ONE_TOWER_CONVS = (
    ("conv1", 48, 11, 4, 0, 1),
    ("conv2", 128, 5, 1, 2, 1),
    ("conv3", 192, 3, 1, 1, 1),
    ("conv4", 192, 3, 1, 1, 1),
    ("conv5", 256, 3, 1, 1, 1),
)
# §6 "1 CNN*": "an extra sixth convolutional layer over the last pooling layer". The
# paper gives no size; ours keeps the towers and fc6's 9,216 inputs: 256 3x3 kernels,
# pad 1, groups 2, ReLU, over pool5's 256 x 6 x 6 maps (docs/paper.md §6).
CONV6 = ("conv6", 256, 3, 1, 1, 2)
HIDDEN = 4096
MAX_CLASSES = 1_000_000  # a sanity bound: fc8 alone would hold 4 G parameters
POOLED_SIZE = 6  # 256 x 6 x 6 = 9216 inputs to fc6
CONV1_PAD = (0, 3, 0, 3)  # cuda-convnet's round-up for 224 inputs (see module docstring)
INPUT_CROP = 224  # §4.1: the patches the net is trained and tested on

# Caffe's bvlc_alexnet (docs/paper.md, "Caffe's AlexNet"): the only public trained net of
# the paper's two-tower layout. Its deploy.prototxt differs from the paper in what it
# normalises and how: conv1 is ungrouped, so its LRN window crosses the towers; Caffe's
# lrn_layer.cpp divides alpha by the window size and adds k = 1. Its images are 227x227
# crops in BGR order, 0..255 minus a per-channel mean; its pooling rounds up (ceil mode).
CAFFE_CROP = 227
CAFFE_LRN_K = 1.0
CAFFE_LRN_ALPHA = 1e-4 / LRN_SIZE  # Caffe's alpha / local_size
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)  # its ilsvrc_2012_mean.npy
# its training fillers (train_val.prototxt): N(0, 0.01^2), fc6-fc7 N(0, 0.005^2), and
# bias 0.1 where the paper has 1 (its readme: 1 "gave flat loss")
CAFFE_FC_STD = 0.005
CAFFE_BIAS = 0.1


@dataclass(frozen=True)
class ModelOptions:
    """Switches for the paper's ablations (§3.1, §3.3, §3.4)."""

    lrn: bool = True
    # the coefficient on LRN's window sum: alpha / n as cuda-convnet computed it (the net
    # behind the published errors), or the printed formula's alpha (False: every
    # checkpoint written before this option existed, which loads so)
    lrn_alpha_over_n: bool = True
    overlap_pool: bool = True
    activation: str = "relu"  # "relu" or "tanh" (§3.1, Figure 1)
    dropout: float = DROPOUT_P
    # "paper" (§5), "caffe" (bvlc_alexnet's fillers), "torch" (PyTorch's default) or "kaiming"
    init: str = "paper"

    def __post_init__(self):
        for name in ("lrn", "lrn_alpha_over_n", "overlap_pool"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool):
            raise ValueError(f"dropout must be a number, not {self.dropout!r}")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("init", self.init, INITS)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")


# the options that change what trained weights compute: a net built otherwise cannot hold them
ARCHITECTURE_OPTIONS = ("lrn", "lrn_alpha_over_n", "overlap_pool", "activation")


def options_of(source) -> ModelOptions:
    """The ModelOptions of anything that carries their fields by name (a TrainConfig, a
    net's options): the one list of the model's options is ModelOptions' fields."""
    return ModelOptions(**{f.name: getattr(source, f.name) for f in fields(ModelOptions)})


class AlexNet(nn.Module):
    """features -> avgpool -> classifier, as torchvision's AlexNet is laid out.

    `avgpool` is an AdaptiveAvgPool2d to 6x6, which is the identity at 224 and 227
    inputs (the paper's case); it lets larger images through, as in torchvision.
    """

    def __init__(
        self,
        features: nn.Sequential,
        classifier: nn.Sequential,
        hidden_end: int,
        variant: str = "paper",
        options: ModelOptions | None = None,
    ):
        super().__init__()
        self.variant = variant  # what create_model was asked for: checkpoints record it
        self.options = options or ModelOptions()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((POOLED_SIZE, POOLED_SIZE))
        self.classifier = classifier
        self._hidden_end = hidden_end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of (N, 3, 224, 224) normalised images."""
        return self.classifier(self._pooled(x))

    def last_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The 4096-d last hidden layer (fc7 after its ReLU), for retrieval (§6.1)."""
        return self.classifier[: self._hidden_end](self._pooled(x))

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        # at 224 px the maps are 6x6 already, and pooling them copies them bit for bit;
        # done always, with no branch on their size, so that torch.fx can trace the net
        x = self.features(x)
        x = self.avgpool(x)
        return torch.flatten(x, 1)


def _activation(options: ModelOptions) -> nn.Module:
    return nn.ReLU(inplace=True) if options.activation == "relu" else nn.Tanh()


def _six_conv_features(options: ModelOptions) -> nn.Sequential:
    """The paper's conv1-pool5, then conv6 and its ReLU over pool5 (§6's "1 CNN*")."""
    layers = OrderedDict(_paper_features(PAPER_CONVS, options, TOWERS).named_children())
    name, out_ch, size, stride, pad, groups = CONV6
    layers[name] = nn.Conv2d(PAPER_CONVS[-1][1], out_ch, size, stride, pad, groups=groups)
    layers[f"{options.activation}6"] = _activation(options)
    return nn.Sequential(layers)


def _paper_features(convs, options: ModelOptions, towers: int) -> nn.Sequential:
    pool = (POOL_SIZE, POOL_STRIDE) if options.overlap_pool else (2, 2)
    layers: list[tuple[str, nn.Module]] = [("pad1", nn.ZeroPad2d(CONV1_PAD))]
    in_ch = 3
    for i, (name, out_ch, size, stride, pad, groups) in enumerate(convs, start=1):
        layers.append((name, nn.Conv2d(in_ch, out_ch, size, stride, pad, groups=groups)))
        layers.append((f"{options.activation}{i}", _activation(options)))
        if i in (1, 2) and options.lrn:  # §3.3: after the ReLU of layers 1 and 2
            alpha = lrn_coefficient(options.lrn_alpha_over_n)
            norm = LocalResponseNorm(LRN_SIZE, alpha, LRN_BETA, LRN_K, groups=towers)
            layers.append((f"norm{i}", norm))
        if i in (1, 2, 5):  # §3.4: after both normalisations and after conv5
            layers.append((f"pool{i}", nn.MaxPool2d(*pool)))
        in_ch = out_ch
    return nn.Sequential(OrderedDict(layers))


def _caffe_features() -> nn.Sequential:
    """bvlc_alexnet's conv1-pool5: the paper's kernels and groups, no conv1 padding (a
    227 crop needs none), LRN over all maps with Caffe's constants, ceil-mode pooling."""
    layers: list[tuple[str, nn.Module]] = []
    in_ch = 3
    for i, (name, out_ch, size, stride, pad, groups) in enumerate(PAPER_CONVS, start=1):
        layers.append((name, nn.Conv2d(in_ch, out_ch, size, stride, pad, groups=groups)))
        layers.append((f"relu{i}", nn.ReLU(inplace=True)))
        if i in (1, 2):
            norm = LocalResponseNorm(LRN_SIZE, CAFFE_LRN_ALPHA, LRN_BETA, CAFFE_LRN_K, groups=1)
            layers.append((f"norm{i}", norm))
        if i in (1, 2, 5):
            layers.append((f"pool{i}", nn.MaxPool2d(POOL_SIZE, POOL_STRIDE, ceil_mode=True)))
        in_ch = out_ch
    return nn.Sequential(OrderedDict(layers))


def _paper_classifier(num_classes: int, options: ModelOptions) -> tuple[nn.Sequential, int]:
    # §4.2: dropout acts on the *outputs* of fc6 and fc7 (torchvision puts it before them).
    layers = OrderedDict(
        fc6=nn.Linear(256 * POOLED_SIZE * POOLED_SIZE, HIDDEN),
        **{f"{options.activation}6": _activation(options)},
        drop6=nn.Dropout(options.dropout),
        fc7=nn.Linear(HIDDEN, HIDDEN),
        **{f"{options.activation}7": _activation(options)},
        drop7=nn.Dropout(options.dropout),
        fc8=nn.Linear(HIDDEN, num_classes),
    )
    return nn.Sequential(layers), 5  # last_hidden stops after relu7


def _torchvision_layout(num_classes: int, options: ModelOptions) -> AlexNet:
    """The "one weird trick" net, index for index the same as torchvision.models.alexnet
    (its outputs equal torchvision's bit for bit)."""
    act = lambda: _activation(options)  # noqa: E731
    pool = (POOL_SIZE, POOL_STRIDE) if options.overlap_pool else (2, 2)
    features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        act(),
        nn.MaxPool2d(*pool),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        act(),
        nn.MaxPool2d(*pool),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        act(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        act(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        act(),
        nn.MaxPool2d(*pool),
    )
    classifier = nn.Sequential(
        nn.Dropout(options.dropout),
        nn.Linear(256 * 6 * 6, HIDDEN),
        act(),
        nn.Dropout(options.dropout),
        nn.Linear(HIDDEN, HIDDEN),
        act(),
        nn.Linear(HIDDEN, num_classes),
    )
    return AlexNet(features, classifier, hidden_end=6, variant="torchvision", options=options)


def init_paper_(model: AlexNet) -> None:
    """§5: every weight ~ N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0
    (and in conv6, a tower layer after a ReLU as conv4 and conv5 are)."""
    for name, module in learned_layers(model):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        one = name in BIAS_ONE_LAYERS or name == CONV6[0]
        nn.init.constant_(module.bias, 1.0 if one else 0.0)


def init_caffe_(model: AlexNet) -> None:
    """bvlc_alexnet's fillers: N(0, 0.01^2) weights (fc6, fc7: 0.005^2); bias 0.1 in
    conv2, conv4, conv5, fc6, fc7 (and conv6), else 0: where the paper puts 1."""
    for name, module in learned_layers(model):
        std = CAFFE_FC_STD if name in ("fc6", "fc7") else INIT_STD
        nn.init.normal_(module.weight, mean=0.0, std=std)
        positive = name in BIAS_ONE_LAYERS or name == CONV6[0]
        nn.init.constant_(module.bias, CAFFE_BIAS if positive else 0.0)


def input_crop(variant: str) -> int:
    """The side of the square crop a variant sees: 227 for Caffe's net, else 224."""
    return CAFFE_CROP if variant == "caffe" else INPUT_CROP


def init_kaiming_(model: AlexNet) -> None:
    """He et al. (2015) N(0, 2/fan_in) for every ReLU layer, biases 0, and the output
    layer at the paper's N(0, 0.01^2). Meant for unit-variance inputs (input_scale 1/64).

    Not the paper's init: the paper's N(0, 0.01^2) with bias 1 is known to sit on a flat
    loss for a long time (docs/paper.md §5, "does not train"); this one lets small data
    train in a few epochs (the `demo` recipe).
    """
    layers = learned_layers(model)
    for _, module in layers:
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(module.bias)
    nn.init.normal_(layers[-1][1].weight, mean=0.0, std=INIT_STD)


LAYER_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def learned_layers(model: AlexNet) -> list[tuple[str, nn.Module]]:
    """The learned layers in order, named as the paper names them, in any variant: our
    variants' own names (conv1 ... conv5, conv6 in six-conv, fc6 ... fc8), and the eight
    names by position in torchvision's layout."""
    named = [
        (n, m)
        for n, m in (*model.features.named_children(), *model.classifier.named_children())
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    if all(n.startswith(("conv", "fc")) for n, _ in named):
        return named
    return list(zip(LAYER_NAMES, [m for _, m in named], strict=True))


def output_layer(model: nn.Module) -> nn.Linear:
    """fc8, the layer that scores the classes: the last linear layer, in any variant and
    in either tower of the model-parallel net."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def create_model(variant: str = "paper", num_classes: int = 1000, **options) -> AlexNet:
    """Build a variant by name: "paper", "one-tower", "torchvision", "caffe" or "six-conv"
    (the paper net with a sixth convolutional layer over pool5, §6's "1 CNN*").

    options: lrn, lrn_alpha_over_n, overlap_pool, activation, dropout, init (see ModelOptions).
    The torchvision layout has no LRN and keeps PyTorch's default init unless
    init="paper" is asked for. The caffe net is bvlc_alexnet's deploy.prototxt, fixed:
    of the options it takes dropout and init only ("paper" there means Caffe's fillers).
    A fresh net: `alexnet.create_model(weights=...)` builds a trained one.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise ValueError(f"num_classes must be an int, not {num_classes!r}")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be between 1 and {MAX_CLASSES:,}, not {num_classes}")
    if variant == "torchvision":
        opts = ModelOptions(**{"init": "torch", **options})
        model = _torchvision_layout(num_classes, opts)  # it has no LRN: `lrn` is moot
    elif variant == "caffe":
        opts = _caffe_options(options)
        classifier, hidden_end = _paper_classifier(num_classes, opts)
        model = AlexNet(_caffe_features(), classifier, hidden_end, variant, opts)
        if opts.init in ("paper", "caffe"):
            init_caffe_(model)
            return model
    elif variant == "six-conv":
        opts = ModelOptions(**options)
        classifier, hidden_end = _paper_classifier(num_classes, opts)
        model = AlexNet(_six_conv_features(opts), classifier, hidden_end, variant, opts)
    else:
        opts = ModelOptions(**options)
        convs = PAPER_CONVS if variant == "paper" else ONE_TOWER_CONVS
        classifier, hidden_end = _paper_classifier(num_classes, opts)
        towers = TOWERS if variant == "paper" else 1
        model = AlexNet(_paper_features(convs, opts, towers), classifier, hidden_end, variant, opts)
    if opts.init == "paper":
        init_paper_(model)
    elif opts.init == "caffe":
        init_caffe_(model)
    elif opts.init == "kaiming":
        init_kaiming_(model)
    return model


def _caffe_options(options: dict) -> ModelOptions:
    fixed = {"lrn": True, "overlap_pool": True, "activation": "relu"}
    for key, value in options.items():
        if key in fixed and value != fixed[key]:
            raise ValueError(f"the caffe net is fixed: {key}={value!r} is not bvlc_alexnet")
    # Caffe divides alpha by n: the variant implies it, whatever a config's default says
    return ModelOptions(**{**options, **fixed, "lrn_alpha_over_n": True})


def count_parameters(model: nn.Module) -> int:
    """Learned parameters of a model."""
    return sum(p.numel() for p in model.parameters())
