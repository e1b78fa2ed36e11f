"""The plain model composes with the tools researchers plug an AlexNet into: autograd
to any order, torch.func, TorchScript, torch.fx, torch.export, ONNX, torch.compile and
torchlens, in every variant. And the planned model (the fast kernels in place) never
gives a wrong second derivative: it computes the formula's, or hands over to it."""

import io
import warnings

import pytest
import torch
from torch.func import functional_call, grad, jacrev, vmap

from alexnet import create_model
from alexnet.kernels.plan import resolve_plan
from alexnet.model.info import min_input_size
from alexnet.options import VARIANTS

CLASSES = 3


def _net(variant: str, dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    init = "kaiming" if variant != "caffe" else "caffe"
    return create_model(variant, num_classes=CLASSES, init=init).eval().to(dtype)


def _images(variant: str, n: int = 2, dtype=torch.float64, size: int | None = None):
    g = torch.Generator().manual_seed(1)
    side = size or min_input_size(variant) + 3
    # scaled as the net's inputs are, so that the LRN's window sums matter
    return torch.randn(n, 3, side, side, generator=g, dtype=dtype) * 50


def _planned(net: torch.nn.Module) -> torch.nn.Module:
    """The net as `train` runs it on a CPU: every kernel the project has, in place."""
    return resolve_plan(torch.device("cpu"), "fp32", "lrn,linear").apply(net)


def _through_few_inputs(net, x0):
    """net as a function of 3 numbers moving x0 along fixed directions: gradgradcheck's
    cost grows with the inputs, and 3 still reach every pixel."""
    g = torch.Generator().manual_seed(2)
    directions = torch.randn(3, *x0.shape, generator=g, dtype=x0.dtype)
    return lambda z: net(x0 + torch.einsum("k,k...->...", z, directions))


@pytest.mark.parametrize("variant", VARIANTS)
def test_second_derivatives_of_every_variant_pass_gradgradcheck(variant):
    net = _net(variant)
    f = _through_few_inputs(net, _images(variant, n=1))
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    # fast_mode: checks the derivatives' products with random vectors, not each entry
    assert torch.autograd.gradcheck(f, (z,), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (z,), fast_mode=True)


def _hvp(net, x, v):
    x = x.clone().requires_grad_()
    loss = net(x).logsumexp(1).sum()
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    (h,) = torch.autograd.grad((g * v).sum(), x)
    return h


def _gradient(net, x):
    x = x.clone().requires_grad_()
    return torch.autograd.grad(net(x).logsumexp(1).sum(), x)[0]


@pytest.mark.parametrize("planned", [False, True], ids=["plain", "planned"])
def test_an_input_hessian_vector_product_equals_finite_differences(planned):
    """The LRN's part included (the earlier fast LRN dropped it: exactly 0); through the
    kernels, the formula's derivative takes over when a graph of the gradient is asked for."""
    net = _net("paper")
    net = _planned(net) if planned else net
    x = _images("paper", n=1)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    h = _hvp(net, x, v)
    eps = 1e-4  # small against the inputs' scale of 50: few ReLUs change sides
    fd = (_gradient(net, x + eps * v) - _gradient(net, x - eps * v)) / (2 * eps)
    assert h.abs().max() > 0
    assert (h - fd).norm() / fd.norm() < 1e-5


def test_the_planned_net_has_the_plain_nets_second_derivatives():
    plain = _net("paper")
    fast = _planned(_net("paper"))
    assert type(fast.features.norm1).__name__ == "FastLRN"
    assert type(fast.classifier.fc6).__name__ == "OneDNNLinear"
    x = _images("paper", n=1)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    assert torch.allclose(_hvp(fast, x, v), _hvp(plain, x, v), rtol=1e-9, atol=1e-18)


def _loss(net):
    def loss(params, x, y):
        logits = functional_call(net, params, (x[None],))
        return torch.nn.functional.cross_entropy(logits, y[None])

    return loss


@pytest.mark.parametrize(
    "variant,planned",
    [(v, False) for v in VARIANTS] + [("paper", True)],  # the kernels are the same modules
    ids=[*VARIANTS, "paper-planned"],
)
def test_torch_func_vmap_grad_jacrev_and_per_sample_gradients(variant, planned):
    net = _net(variant, torch.float32)
    net = _planned(net) if planned else net
    x = _images(variant, n=3, dtype=torch.float32)
    y = torch.tensor([0, 2, 1])
    batched = vmap(lambda one: net(one[None])[0])(x)
    assert torch.allclose(batched, net(x), rtol=1e-4, atol=1e-4)
    params = {k: v.detach() for k, v in net.named_parameters()}
    per_sample = vmap(grad(_loss(net)), in_dims=(None, 0, 0))(params, x, y)
    for i in range(len(x)):  # a Python loop of plain autograd, sample by sample
        loss = torch.nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1])
        names = [n for n, p in net.named_parameters()]
        grads = torch.autograd.grad(loss, list(net.parameters()))
        for name, g in zip(names, grads, strict=True):
            assert (per_sample[name][i] - g).norm() <= 1e-4 * g.norm() + 1e-6, name
    jac = jacrev(lambda one: net(one[None])[0])(x[0])
    assert jac.shape == (CLASSES, *x[0].shape)
    xr = x[:1].clone().requires_grad_()
    (expected,) = torch.autograd.grad(net(xr)[0].sum(), xr)
    assert torch.allclose(jac.sum(0), expected[0], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_torchscript_scripts_and_traces_every_variant(variant):
    net = _net(variant, torch.float32)
    x = _images(variant, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's own deprecation note
        scripted = torch.jit.script(net)
        traced = torch.jit.trace(net, (x,))  # check_trace on: reruns and compares
    expected = net(x)
    assert torch.allclose(scripted(x), expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(traced(x), expected, rtol=1e-5, atol=1e-5)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    assert torch.allclose(torch.jit.load(buf)(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fx_export_compile_and_onnx_of_every_variant(variant, tmp_path):
    from torchvision.models.feature_extraction import create_feature_extractor

    net = _net(variant, torch.float32)
    x = _images(variant, dtype=torch.float32, size=224)
    expected = net(x)
    last = "classifier.6" if variant == "torchvision" else "classifier.fc8"
    out = create_feature_extractor(net, {last: "logits"})(x)["logits"]
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5)
    program = torch.export.export(net, (x,))
    assert torch.allclose(program.module()(x), expected, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    assert torch.allclose(compiled(x), expected, rtol=1e-5, atol=1e-5)
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: the onnx extra")
    pytest.importorskip("onnx", reason="onnx is not installed: the onnx extra")
    # no skip for onnxscript: the onnx extra must bring it, as torch.onnx's exporter needs it
    # as a user calls it, on the plain model (PyTorch's default exporter, from its
    # torch.export graph); `alexnet export` and onnx_ready serve older exporters
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own work
        torch.onnx.export(net, (x,), tmp_path / "net.onnx", input_names=["x"])
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


TORCHLENS_CHECK = """
import sys, torch
from torchlens.validation import validate_forward_pass
from alexnet import create_model
from alexnet.model.info import min_input_size
failed = []
for variant in sys.argv[1:]:
    torch.manual_seed(0)
    init = "caffe" if variant == "caffe" else "kaiming"
    net = create_model(variant, num_classes=3, init=init).eval()
    side = min_input_size(variant) + 3
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1)) * 50
    if not validate_forward_pass(net, x, random_seed=0):
        failed.append(variant)
print("failed:", failed, file=sys.stderr)
sys.exit(1 if failed else 0)
"""


def test_torchlens_validates_the_forward_pass_of_every_variant():
    """In a process of its own: torchlens wraps torch's functions for good once it has
    traced, which would reach every later test of this worker (torch.compile among them)."""
    import subprocess
    import sys

    pytest.importorskip("torchlens", reason="torchlens is not installed (pip install torchlens)")
    r = subprocess.run(
        [sys.executable, "-c", TORCHLENS_CHECK, *VARIANTS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
