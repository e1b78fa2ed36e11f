"""LRN against the formula of §3.3 (docs/paper.md), written out here independently of the
library: the plain module (model/lrn.py) and the fast passes (kernels/lrn.py) alike."""

import io
import warnings

import pytest
import torch

from alexnet.kernels import lrn as lrn_module
from alexnet.kernels.lrn import FastLRN
from alexnet.kernels.onnx import OnnxLRN, onnx_formula
from alexnet.model.lrn import LocalResponseNorm, local_response_norm

BOTH = pytest.mark.parametrize("cls", [LocalResponseNorm, FastLRN], ids=["plain", "fast"])

K, N, ALPHA, BETA = 2.0, 5, 1e-4, 0.75


def reference_lrn(a: torch.Tensor, groups: int = 1) -> torch.Tensor:
    channels = a.shape[1]
    per = channels // groups
    out = torch.empty_like(a)
    for i in range(channels):
        first = (i // per) * per  # the window stays inside i's group (tower)
        lo, hi = max(first, i - N // 2), min(first + per - 1, i + N // 2)
        s = (a[:, lo : hi + 1] ** 2).sum(dim=1)
        out[:, i] = a[:, i] / (K + ALPHA * s) ** BETA
    return out


def _input(dtype=torch.float64, shape=(2, 11, 5, 4)):
    torch.manual_seed(0)
    # large activations so that alpha * sum is comparable with k and the test bites
    return (torch.randn(shape, dtype=dtype) * 60).relu()


@BOTH
def test_forward_matches_formula(cls):
    x = _input()
    assert torch.allclose(cls(N, ALPHA, BETA, K)(x), reference_lrn(x), rtol=1e-12)


@BOTH
def test_not_divided_by_n(cls):
    x = _input()
    ours = cls(N, ALPHA, BETA, K)(x)
    divided = torch.nn.LocalResponseNorm(N, alpha=ALPHA, beta=BETA, k=K)(x)
    equivalent = torch.nn.LocalResponseNorm(N, alpha=ALPHA * N, beta=BETA, k=K)(x)
    assert not torch.allclose(ours, divided, rtol=1e-3)
    assert torch.allclose(ours, equivalent, rtol=1e-10)


@BOTH
def test_gradient_gradcheck(cls):
    x = _input(shape=(2, 7, 3, 3)).requires_grad_()
    assert torch.autograd.gradcheck(cls(N, ALPHA, BETA, K), (x,))


@BOTH
def test_gradient_matches_autograd_of_formula(cls):
    x = _input().requires_grad_()
    g = torch.randn_like(x)
    (gx,) = torch.autograd.grad(cls(N, ALPHA, BETA, K)(x), x, g)
    (gr,) = torch.autograd.grad(reference_lrn(x), x, g)
    assert torch.allclose(gx, gr, rtol=1e-10, atol=1e-14)


@BOTH
@pytest.mark.parametrize(
    "dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)]
)
def test_low_precision_within_stated_tolerance(cls, dtype, rtol):
    assert_follows_formula(cls(N, ALPHA, BETA, K), dtype, rtol)


def assert_follows_formula(lrn, dtype, rtol, groups=1, device="cpu", fmt=torch.contiguous_format):
    """lrn's output and input gradient on a (4, 16, 6, 6) input of dtype against the float64
    formula, within rtol (the gradient within 4 rtol of its largest value)."""
    x64 = _input(shape=(4, 16, 6, 6))
    x = x64.to(device, dtype).contiguous(memory_format=fmt).requires_grad_()
    y = lrn(x)
    assert y.dtype == dtype and y.device == x.device
    ref = reference_lrn(x.detach().cpu().double(), groups)
    assert torch.allclose(y.detach().cpu().double(), ref, rtol=rtol, atol=rtol * 1e-2)
    g = torch.randn_like(x64)
    (gx,) = torch.autograd.grad(y, x, g.to(device, dtype))
    xr = x.detach().cpu().double().requires_grad_()
    (gr,) = torch.autograd.grad(reference_lrn(xr, groups), xr, g.to(dtype).double())
    assert torch.allclose(
        gx.cpu().double(), gr, rtol=rtol * 4, atol=rtol * 4 * gr.abs().max().item()
    )


@BOTH
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_per_tower_groups_forward_and_gradient(cls, fmt):
    x = _input(shape=(2, 12, 4, 3)).contiguous(memory_format=fmt).requires_grad_()
    lrn = cls(N, ALPHA, BETA, K, groups=2)
    y = lrn(x)
    assert torch.allclose(y, reference_lrn(x, groups=2), rtol=1e-12)
    assert not torch.allclose(y, reference_lrn(x, groups=1), rtol=1e-6)  # boundary differs
    g = torch.randn_like(x)
    (gx,) = torch.autograd.grad(y, x, g)
    xr = x.detach().clone().requires_grad_()
    (gr,) = torch.autograd.grad(reference_lrn(xr, groups=2), xr, g)
    assert torch.allclose(gx, gr, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(
        lambda t: lrn(t), (x[:1, :, :2, :2].detach().clone().requires_grad_(),)
    )


@BOTH
def test_channels_last_same_result(cls):
    x = _input(torch.float32, shape=(2, 12, 5, 5))
    lrn = cls(N, ALPHA, BETA, K)
    a = lrn(x)
    b = lrn(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, b)


@pytest.mark.parametrize("groups", [1, 2])
def test_inference_path_equals_training_path(groups):
    x = _input(torch.float32, shape=(2, 12, 5, 5))
    lrn = FastLRN(N, ALPHA, BETA, K, groups=groups)
    with torch.no_grad():
        fast = lrn(x)  # no autograd function: plain in-place ops
    train = lrn(x.clone().requires_grad_())
    assert torch.allclose(fast, train.detach(), rtol=1e-6)
    assert torch.allclose(fast.double(), reference_lrn(x.double(), groups), rtol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_bf16_band_matmul_path_per_tower_and_layouts(groups):
    """bf16 sums each window as a matrix product over channels-last rows; the towers'
    windows stay apart, and both memory formats give the formula within bf16's rounding."""
    x64 = _input(shape=(3, 12, 5, 4))
    ref = reference_lrn(x64.to(torch.bfloat16).double(), groups=groups)
    lrn = FastLRN(N, ALPHA, BETA, K, groups=groups)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = x64.to(torch.bfloat16).contiguous(memory_format=fmt).requires_grad_()
        y = lrn(x)
        assert y.dtype == torch.bfloat16 and y.shape == x.shape
        assert torch.allclose(y.double(), ref, rtol=1e-2, atol=1e-4)
        with torch.no_grad():
            assert torch.equal(lrn(x), y.detach())  # inference and training paths agree


@pytest.mark.parametrize("channels,groups,size", [(256, 2, 5), (150, 1, 5), (200, 4, 3)])
def test_bf16_band_in_blocks_sums_what_the_whole_band_sums(monkeypatch, channels, groups, size):
    """Above WHOLE_BAND channels the window sums run per block of output channels over
    overlapping views: the same sums as the whole band, bit for bit, forward and backward,
    with the windows clipped at the channels' ends and at the towers' edges."""
    torch.manual_seed(0)
    x64 = (torch.randn(2, channels, 3, 4, dtype=torch.float64) * 60).relu()
    g = torch.randn_like(x64).to(torch.bfloat16)
    lrn = FastLRN(size, ALPHA, BETA, K, groups=groups)

    def run():
        x = x64.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        y = lrn(x)
        return y, torch.autograd.grad(y, x, g)[0]

    assert lrn_module.band_blocks(channels, size, groups, torch.float32, "cpu").shape[0] > 1
    blocked = run()
    monkeypatch.setattr(lrn_module, "BLOCK", channels)  # one block: the whole band
    assert lrn_module.band_blocks(channels, size, groups, torch.float32, "cpu").shape[0] == 1
    whole = run()
    assert torch.equal(blocked[0], whole[0]) and torch.equal(blocked[1], whole[1])
    per = channels // groups
    ref = torch.empty_like(x64)
    for i in range(channels):  # the formula with this size, written out again
        first = (i // per) * per
        lo, hi = max(first, i - size // 2), min(first + per - 1, i + size // 2)
        s = (x64.to(torch.bfloat16).double()[:, lo : hi + 1] ** 2).sum(dim=1)
        ref[:, i] = x64.to(torch.bfloat16).double()[:, i] / (K + ALPHA * s) ** BETA
    assert torch.allclose(blocked[0].double(), ref, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("channels,groups", [(96, 1), (256, 2)])
def test_in_chunks_of_rows_computes_what_whole_rows_compute(monkeypatch, channels, groups, dtype):
    """On a CPU the bf16 passes, and float32's, run chunk by chunk of rows
    (ragged here: 105 rows in chunks of 8): the same bits as whole rows."""
    torch.manual_seed(0)
    x0 = (torch.randn(3, channels, 5, 7) * 60).relu().to(dtype)
    x0 = x0.contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x0)
    lrn = FastLRN(N, ALPHA, BETA, K, groups=groups)

    def run(rows):
        monkeypatch.setattr(lrn_module, "CHUNK_ROWS", rows)
        assert lrn_module._whole(105, x0.device) == (rows > 105)
        assert lrn_module._in_rows(x0) == (dtype == torch.float32 and rows < 105)
        x = x0.clone().requires_grad_()
        y = lrn(x)
        with torch.no_grad():
            inferred = lrn(x0)
        return y.detach(), torch.autograd.grad(y, x, g)[0], inferred

    chunked, whole = run(8), run(10**9)
    for a, b in zip(chunked, whole):
        assert torch.equal(a, b) and a.stride() == b.stride()


def test_both_conventions_reach_the_net_and_follow_the_formula():
    """lrn_alpha_over_n: the coefficient on the window sum is alpha / n (cuda-convnet's)
    or alpha as printed; each layer computes the formula with its coefficient."""
    from alexnet import create_model

    x = _input(shape=(2, 96, 5, 5))
    for over_n, coefficient in ((True, ALPHA / N), (False, ALPHA)):
        net = create_model("paper", lrn_alpha_over_n=over_n).double()
        for name in ("norm1", "norm2"):
            assert getattr(net.features, name).alpha == pytest.approx(coefficient)
        lrn = net.features.norm1
        ref = reference_lrn(x, groups=2)
        if over_n:  # the formula with alpha / n, written out again
            per, out = 48, torch.empty_like(x)
            for i in range(96):
                first = (i // per) * per
                lo, hi = max(first, i - N // 2), min(first + per - 1, i + N // 2)
                s = (x[:, lo : hi + 1] ** 2).sum(dim=1)
                out[:, i] = x[:, i] / (K + ALPHA / N * s) ** BETA
            ref = out
        assert torch.allclose(lrn(x), ref, rtol=1e-12)
    # the default is the authors' code, in the paper net and the small CIFAR net alike
    assert create_model("paper").features.norm1.alpha == pytest.approx(ALPHA / N)
    from alexnet.studies.cifar_net import four_layer_net

    for over_n, coefficient in ((True, ALPHA / N), (False, ALPHA)):
        small = four_layer_net(lrn=True, alpha_over_n=over_n)
        assert small.norm1.alpha == small.norm2.alpha == pytest.approx(coefficient)


def test_a_checkpoint_from_before_the_option_loads_undivided_with_identical_logits(tmp_path):
    from alexnet import create_model
    from alexnet.weights.checkpoint import Checkpoint, save_atomic
    from alexnet.weights.load import load_for_inference

    torch.manual_seed(0)  # the net as the code before the option built it: alpha undivided
    net = create_model("paper", num_classes=3, init="kaiming", lrn_alpha_over_n=False).eval()
    ckpt = Checkpoint(
        model=net.state_dict(),
        variant="paper",
        classes=[{"index": i, "id": str(i), "name": str(i)} for i in range(3)],
        normalization={"kind": "mean-image", "mean": torch.zeros(256, 256, 3), "scale": 1.0},
        model_options={"dropout": 0.5, "lrn": True, "overlap_pool": True, "activation": "relu"},
    )
    save_atomic(ckpt.to_dict(), tmp_path / "old.pt")  # model_options as they were saved before
    loaded = load_for_inference(tmp_path / "old.pt")
    assert loaded.model.options.lrn_alpha_over_n is False
    assert loaded.model.features.norm1.alpha == ALPHA
    x = torch.randn(2, 3, 224, 224) * 50
    net = net.to(memory_format=torch.channels_last)  # as loading lays a net out
    with torch.no_grad():
        assert torch.equal(loaded.model(x), net(x))
        divided = create_model("paper", num_classes=3, lrn_alpha_over_n=True).eval()
        divided.load_state_dict(net.state_dict())
        assert not torch.equal(divided(x), net(x))  # the convention matters to the logits


@pytest.mark.parametrize(
    "dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)]
)
def test_compiled_lrn_is_one_graph_and_follows_the_formula(dtype, rtol):
    """`--compile` traces the plain formula whole in every precision (fullgraph raises at
    a graph break), and the fast module hands the compiler that formula too; the traced
    forward and backward (AOTAutograd's, no code generation) keep to the formula."""
    for cls in (LocalResponseNorm, FastLRN):
        torch._dynamo.reset()
        compiled = torch.compile(
            cls(N, ALPHA, BETA, K, groups=2), backend="aot_eager", fullgraph=True
        )
        assert_follows_formula(compiled, dtype, rtol, groups=2, fmt=torch.channels_last)


def test_an_exported_program_stands_alone_with_the_formula():
    """torch.export traces plain ops, and the program computes what the eager LRN computes."""
    x = _input(torch.float32, shape=(2, 12, 5, 4)).contiguous(memory_format=torch.channels_last)
    lrn = LocalResponseNorm(N, ALPHA, BETA, K, groups=2)
    program = torch.export.export(lrn, (x,))
    assert "alexnet" not in str(program.graph)
    assert torch.allclose(program.module()(x), lrn(x), rtol=1e-6)


@pytest.mark.parametrize("cls", [LocalResponseNorm, OnnxLRN], ids=["plain", "onnx form"])
@pytest.mark.parametrize("groups", [1, 2])
def test_onnx_runs_the_formula_with_its_windows(cls, groups):
    """Both forms export with their windows (an earlier exporter run lost the window sums
    of in-place passes: 24 off on outputs of 48); onnxruntime's outputs follow the formula,
    at another batch size than the export's."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    x = _input(torch.float32, shape=(2, 12, 5, 4))
    lrn = cls(N, ALPHA, BETA, K, groups=groups).eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on its own work
        torch.onnx.export(
            lrn, (x,), buf, input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False
        )
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x3 = torch.cat([x, x[:1]])
    y = torch.from_numpy(session.run(None, {"x": x3.numpy()})[0])
    assert torch.allclose(y.double(), reference_lrn(x3.double(), groups), rtol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_the_onnx_form_is_the_formula(groups):
    """ONNX's form (the band as a 1x1 convolution, alpha in its weights, k its bias), at the
    paper's beta and another, and in fp16 (computed in float32)."""
    x = _input(shape=(2, 12, 5, 4))
    assert torch.allclose(onnx_formula(x, N, ALPHA, BETA, K, groups), reference_lrn(x, groups))
    other = onnx_formula(x, N, ALPHA, 0.5, K, groups)
    assert torch.allclose(other, local_response_norm(x, N, ALPHA, 0.5, K, groups), rtol=1e-12)
    half = onnx_formula(x.half(), N, ALPHA, BETA, K, groups)
    assert half.dtype == torch.float16
    assert torch.allclose(half.double(), reference_lrn(x.half().double(), groups), rtol=1e-3)


@pytest.mark.parametrize("over_n", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_second_derivatives_of_both_forms_pass_gradgradcheck(over_n, groups):
    """float64, both conventions for alpha, one window or one per tower; the fast module's
    backward hands a graph of the gradient to the formula's own derivative."""
    alpha = ALPHA / N if over_n else ALPHA
    x = _input(shape=(2, 8, 3, 3)).requires_grad_()
    for cls in (LocalResponseNorm, FastLRN):
        lrn = cls(N, alpha, BETA, K, groups=groups)
        assert torch.autograd.gradgradcheck(lrn, (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fast_passes_second_derivative_is_the_formulas(dtype):
    """A Hessian-vector product through the fast module, on the chunked float32 path and
    the bf16 band path: the formula's, where the earlier fast LRN gave exactly 0."""
    x0 = (
        (torch.randn(2, 96, 9, 9) * 60)
        .relu()
        .to(dtype)
        .contiguous(memory_format=torch.channels_last)
    )
    v = torch.randn_like(x0)

    def hvp(lrn, chunk_rows):
        lrn_module.CHUNK_ROWS = chunk_rows
        x = x0.clone().requires_grad_()
        (g,) = torch.autograd.grad((lrn(x).float() ** 2).sum(), x, create_graph=True)
        return torch.autograd.grad((g * v).sum(), x)[0]

    saved = lrn_module.CHUNK_ROWS
    try:
        fast = hvp(FastLRN(N, ALPHA, BETA, K, groups=2), 16)  # several chunks of rows
    finally:
        lrn_module.CHUNK_ROWS = saved
    plain = hvp(LocalResponseNorm(N, ALPHA, BETA, K, groups=2), saved)
    assert fast.abs().max() > 0
    # the outputs the loss squares differ in their last bits between the two forms
    tol = {torch.float32: 1e-4, torch.bfloat16: 3e-2}[dtype]
    assert (fast.double() - plain.double()).norm() <= tol * plain.double().norm()
