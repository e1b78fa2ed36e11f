import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from alexnet import create_model
from alexnet.model import BIAS_ONE_LAYERS, INIT_STD, count_parameters, learned_layers
from alexnet.model.info import model_info

PAPER_SHAPES = {
    "conv1": [96, 55, 55],
    "pool1": [96, 27, 27],
    "conv2": [256, 27, 27],
    "pool2": [256, 13, 13],
    "conv3": [384, 13, 13],
    "conv4": [384, 13, 13],
    "conv5": [256, 13, 13],
    "pool5": [256, 6, 6],
    "fc6": [4096],
    "fc7": [4096],
    "fc8": [1000],
}


@pytest.mark.parametrize("size", [224, 227])
def test_stage_shapes_meta_and_real(size):
    info = model_info("paper", size)
    shapes = {r["name"].split(".")[-1]: r["output_shape"] for r in info["layers"]}
    for name, shape in PAPER_SHAPES.items():
        assert shapes[name] == shape, name
    # and the real modules agree with the meta pass
    model = create_model("paper").eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        for name, module in model.features.named_children():
            x = module(x)
            if name in PAPER_SHAPES:
                assert list(x.shape[1:]) == PAPER_SHAPES[name]


def test_227_never_touches_the_conv1_padding():
    model = create_model("paper").eval()
    x = torch.randn(1, 3, 227, 227)
    conv1 = model.features.conv1
    with torch.no_grad():
        assert torch.equal(model.features[:2](x), conv1(x))


@pytest.mark.parametrize(
    "variant,params",
    [("paper", 60_965_224), ("torchvision", 61_100_840), ("one-tower", 59_798_312)],
)
def test_parameter_counts(variant, params):
    assert count_parameters(create_model(variant)) == params
    assert model_info(variant)["params"] == params


def test_towers_groups():
    f = create_model("paper").features
    assert [f.conv1.groups, f.conv2.groups, f.conv3.groups, f.conv4.groups, f.conv5.groups] == [
        1,
        2,
        1,
        2,
        2,
    ]
    one = create_model("one-tower").features
    assert [
        one.conv1.out_channels,
        one.conv2.out_channels,
        one.conv3.out_channels,
        one.conv4.out_channels,
        one.conv5.out_channels,
    ] == [48, 128, 192, 192, 256]
    assert all(m.groups == 1 for m in one if isinstance(m, nn.Conv2d))


def test_paper_layer_order():
    names = [n for n, _ in create_model("paper").features.named_children()]
    assert names == [
        "pad1",
        "conv1",
        "relu1",
        "norm1",
        "pool1",
        "conv2",
        "relu2",
        "norm2",
        "pool2",
        "conv3",
        "relu3",
        "conv4",
        "relu4",
        "conv5",
        "relu5",
        "pool5",
    ]
    f = create_model("paper").features
    # alpha / n, as cuda-convnet computed it (docs/paper.md §3.3)
    assert (f.norm1.size, f.norm1.alpha, f.norm1.beta, f.norm1.k) == (5, 1e-4 / 5, 0.75, 2.0)
    assert f.norm1.groups == f.norm2.groups == 2  # each tower normalises its own maps
    assert create_model("one-tower").features.norm1.groups == 1
    assert f.pool1.kernel_size == 3 and f.pool1.stride == 2
    cls = [n for n, _ in create_model("paper").classifier.named_children()]
    assert cls == ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]


def test_torchvision_state_dict_loads_and_matches():
    torch.manual_seed(0)
    tv = torchvision.models.alexnet().eval()
    ours = create_model("torchvision")
    ours.load_state_dict(tv.state_dict())
    ours.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), tv(x))


def test_paper_init_pattern():
    torch.manual_seed(0)
    model = create_model("paper")
    for name, layer in learned_layers(model):
        w = layer.weight.detach()
        assert abs(w.mean().item()) < 1e-3, name
        assert w.std().item() == pytest.approx(INIT_STD, rel=0.05), name
        expected = 1.0 if name in BIAS_ONE_LAYERS else 0.0
        assert torch.all(layer.bias == expected), name


def test_dropout_positions_train_vs_eval():
    torch.manual_seed(0)
    model = create_model("paper", num_classes=10)
    x = torch.randn(2, 3, 224, 224)
    model.eval()
    with torch.no_grad():
        h1, h2 = model.last_hidden(x), model.last_hidden(x)
        assert torch.equal(h1, h2) and (h1 >= 0).all()
        # last_hidden is fc7 after its ReLU, before drop7
        y = torch.flatten(model.avgpool(model.features(x)), 1)
        for name in ("fc6", "relu6", "drop6", "fc7", "relu7"):
            y = getattr(model.classifier, name)(y)
        assert torch.equal(h1, y)
    model.train()
    with torch.no_grad():
        h = model.classifier.relu6(model.classifier.fc6(torch.ones(1, 9216)))
        dropped = model.classifier.drop6(h.repeat(64, 1))
        frac = (dropped == 0).float().mean().item()
        assert 0.4 < frac < 0.6  # dropout acts on fc6's output
        alive = h.expand_as(dropped) > 0
        assert set(torch.unique(dropped[alive] / h.expand_as(dropped)[alive]).tolist()) <= {
            0.0,
            2.0,
        }


def test_every_parameter_gets_a_gradient_and_loss_drops():
    torch.manual_seed(0)
    model = create_model("paper", num_classes=4, dropout=0.0)
    x = torch.randn(8, 3, 224, 224)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if not losses:
            for name, p in model.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.3, losses


def test_ablation_options():
    m = create_model("paper", lrn=False, overlap_pool=False, activation="tanh")
    names = [n for n, _ in m.features.named_children()]
    assert "norm1" not in names and "norm2" not in names
    assert m.features.pool1.kernel_size == 2 and isinstance(m.features.tanh1, nn.Tanh)
    assert "relu1" not in names and "relu6" not in dict(m.classifier.named_children())
    assert count_parameters(m) == 60_965_224  # 2/2 pooling keeps the 6x6 map
    out = m(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="unknown variant"):
        create_model("vgg")
    with pytest.raises(ValueError, match="activation"):
        create_model("paper", activation="gelu")
    with pytest.raises(ValueError, match="too small"):
        model_info("paper", 40)


def test_colour_index_scores_grey_kernels_below_coloured_ones_per_tower(tmp_path):
    """Figure 3's claim in numbers: tower 0 given grey kernels (the same pattern in R, G
    and B), tower 1 coloured ones (opposite patterns in R and G)."""
    from alexnet.results.figures import COLOUR_THRESHOLD, colour_index

    torch.manual_seed(0)
    model = create_model("paper", num_classes=3)
    w = model.features.conv1.weight
    with torch.no_grad():
        pattern = torch.randn(48, 1, 11, 11)
        w[:48] = pattern.expand(48, 3, 11, 11) + 0.01 * torch.randn(48, 3, 11, 11)
        w[48:] = torch.cat([pattern, -pattern, torch.zeros_like(pattern)], dim=1)
    index = colour_index(model)
    grey, colour = index["tower0"], index["tower1"]
    assert grey["mean"] < 0.01 and grey["share_above"] == 0
    assert colour["mean"] == pytest.approx(1.0) and colour["share_above"] == 1
    assert grey["median"] < COLOUR_THRESHOLD < colour["median"]
    assert len(index["per_kernel"]) == 96
    one = colour_index(create_model("one-tower", num_classes=3))  # one tower: one block
    assert set(one) == {"threshold", "per_kernel", "all"} and one["all"]["kernels"] == 48
    # the figure shows it: under each kernel a bar of its index, short in tower 1
    # (grey), full in tower 2; and a line per tower with its summary
    import io

    from PIL import Image

    from alexnet.results.figures import BAR_COLOUR, colour_lines, kernels_png

    fig = np.asarray(Image.open(io.BytesIO(kernels_png(model))).convert("RGB")).astype(int)
    is_bar = (np.abs(fig - np.array(BAR_COLOUR) * 255).sum(axis=2) < 4).sum(axis=1)
    top, bottom = is_bar[: len(is_bar) // 2].sum(), is_bar[len(is_bar) // 2 :].sum()
    assert top < 0.02 * bottom and bottom > 48 * 4 * 10 * 4 * 2  # 48 full bars, 4x scaled
    assert colour_lines(index)[1].startswith("tower 2 (GPU 2): colour index mean 1.000")


@pytest.mark.parametrize("variant", ["paper", "caffe"])
def test_the_net_compiles_as_one_graph_with_eager_modes_gradients(variant):
    """`--compile` of a net with LRN: one graph, forward and backward (fullgraph raises at a
    graph break), under bf16 autocast (a GPU's and a bf16 CPU's default); and in float64,
    where no rounding can hide a wrong path, the compiled net's gradients are eager mode's
    (torch 2.11 traced an autograd function with a zero gradient that `is not None`)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model(variant, num_classes=10).to(memory_format=torch.channels_last)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 227, 227).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(x)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16

    model.eval().double()  # eval: no dropout draws to tell the two runs apart
    grads = []
    for net in (model, compiled):
        model.zero_grad(set_to_none=True)
        net(x.double()).square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for eager, traced in zip(*grads):
        assert torch.allclose(traced, eager, rtol=1e-9, atol=1e-12 * eager.abs().max())


def test_onnx_pooling_averages_the_adaptive_windows():
    """ONNX has no adaptive pooling: its stand-in, two averaging products, takes the
    same windows as adaptive_avg_pool2d at every map size a larger input gives."""
    from alexnet.kernels.onnx import MatrixAvgPool

    for h, w in ((7, 7), (8, 9), (13, 13), (6, 20), (1, 1)):
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        want = torch.nn.functional.adaptive_avg_pool2d(x, 6)
        assert torch.allclose(MatrixAvgPool(6)(x), want, rtol=1e-12, atol=1e-15), (h, w)


def test_a_torchscript_trace_with_gradients_saves_and_learns(tmp_path):
    """torch.jit.trace with autograd on (its default) recorded the LRN's Python autograd
    function, which torch.jit.save refuses; it now records the formula's plain ops, so
    the trace saves, loads, computes the net and carries its gradients."""
    import warnings

    torch.manual_seed(0)
    net = create_model("paper", num_classes=10, init="kaiming").eval()
    x = torch.randn(2, 3, 224, 224) * 50  # the nets' input scale: the LRN bites
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic
        traced = torch.jit.trace(net, x, check_trace=False)
    torch.jit.save(traced, tmp_path / "net.pt")
    loaded = torch.jit.load(tmp_path / "net.pt")
    got, want = loaded(x), net(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    got.square().sum().backward()
    want.square().sum().backward()
    for (name, p), q in zip(net.named_parameters(), loaded.parameters(), strict=True):
        assert torch.allclose(q.grad, p.grad, rtol=1e-3, atol=1e-3 * p.grad.abs().max()), name
