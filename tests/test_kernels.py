"""The fast kernels against the plain modules they replace, and the execution plan that
puts them in (kernels/). The LRN's passes are tested against the formula in test_lrn.py."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from alexnet import create_model
from alexnet.kernels import plan as plan_module
from alexnet.kernels.linear import OneDNNLinear, available
from alexnet.kernels.lrn import FastLRN
from alexnet.kernels.plan import plain, resolve_plan
from alexnet.model.lrn import LocalResponseNorm
from alexnet.runtime.errors import UsageError

CPU = torch.device("cpu")
ONEDNN = pytest.mark.skipif(not available(), reason="this PyTorch has no oneDNN matmul")


@ONEDNN
@pytest.mark.parametrize("batch", [1, 5])
def test_the_onednn_linear_computes_nn_linear(monkeypatch, batch):
    """Float32 products through oneDNN: nn.Linear's output and gradients within float32's
    rounding; under autocast and when exported, nn.Linear's F.linear exactly."""
    from alexnet.kernels import linear

    calls = []
    matmul = linear._matmul
    monkeypatch.setattr(linear, "_matmul", lambda *a: calls.append(1) or matmul(*a))
    torch.manual_seed(0)
    fc = OneDNNLinear.like(nn.Linear(37, 11))
    x = torch.randn(batch, 37, requires_grad=True)
    g = torch.randn(batch, 11)

    def grads(forward):
        x.grad = fc.weight.grad = fc.bias.grad = None
        y = forward(x)
        y.backward(g)
        return y.detach(), x.grad, fc.weight.grad, fc.bias.grad

    ours = grads(fc)
    assert len(calls) == 3  # forward, input gradient, weight gradient
    ref = grads(lambda t: F.linear(t, fc.weight, fc.bias))
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(fc(x), F.linear(x, fc.weight, fc.bias))
    exported = torch.export.export(fc, (x.detach(),))
    assert "mkldnn" not in str(exported.graph)


@ONEDNN
def test_the_onednn_linears_second_derivatives_are_plain_products():
    """With create_graph the backward is made of plain products, which autograd
    differentiates again: gradgradcheck in float64 would never reach oneDNN, so the
    float32 Hessian-vector product is compared with nn.Linear's."""
    torch.manual_seed(0)
    plain_fc = nn.Sequential(nn.Linear(9, 7), nn.Tanh(), nn.Linear(7, 3))
    fast_fc = nn.Sequential(
        OneDNNLinear.like(plain_fc[0]), nn.Tanh(), OneDNNLinear.like(plain_fc[2])
    )
    x, v = torch.randn(4, 9), torch.randn(4, 9)

    def hvp(net):
        xr = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(net(xr).square().sum(), xr, create_graph=True)
        hx, hw = torch.autograd.grad((g * v).sum(), (xr, net[0].weight))
        return hx, hw

    for a, b in zip(hvp(fast_fc), hvp(plain_fc), strict=True):
        assert b.abs().max() > 0
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max())


def test_the_plan_picks_kernels_by_device_precision_and_cpu(monkeypatch):
    monkeypatch.setattr(plan_module, "onednn_faster", lambda: True)
    assert resolve_plan(CPU, "fp32").kernels == ("lrn", "linear")
    assert resolve_plan(CPU, "bf16").kernels == ("lrn",)  # oneDNN runs bf16 products anyway
    assert resolve_plan(CPU, "fp32", compile=True).kernels == ()  # the compiler fuses the formula
    monkeypatch.setattr(plan_module, "onednn_faster", lambda: False)
    assert resolve_plan(CPU, "fp32").kernels == ("lrn",)
    assert resolve_plan(CPU, "fp32", "none").kernels == ()
    assert resolve_plan(CPU, "fp32", "linear, lrn").kernels == ("lrn", "linear")
    with pytest.raises(UsageError, match="unknown kernel 'lrm'"):
        resolve_plan(CPU, "fp32", "lrm")
    training, inference = resolve_plan(CPU, "bf16"), resolve_plan(CPU, "bf16", train=False)
    assert training.weights == "float32" and training.amp == torch.bfloat16
    assert inference.weights == "cast" and inference.weight_dtype == torch.bfloat16
    assert resolve_plan(CPU, "fp32", train=False).weights == "float32"
    line = resolve_plan(CPU, "fp32", "none").line()
    assert line.startswith("plan: cpu (") and "kernels: none (the plain model)" in line


@pytest.mark.parametrize("variant", ["paper", "one-tower", "caffe", "six-conv", "torchvision"])
def test_applying_the_plan_swaps_modules_and_keeps_the_state(variant):
    """The kernels share the plain modules' parameters: the same state dict, the same
    parameters for an optimiser; `plain` puts the plain modules back."""
    torch.manual_seed(0)
    net = create_model(variant, num_classes=5).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = list(net.parameters())
    plan = resolve_plan(CPU, "fp32", "lrn,linear" if available() else "lrn")
    plan.apply(net)
    kinds = {type(m) for m in net.modules()}
    assert LocalResponseNorm not in kinds  # every LRN went fast (the torchvision net has none)
    assert (FastLRN in kinds) == (variant != "torchvision")
    assert nn.Linear not in kinds or not available()
    assert list(net.parameters()) == params
    assert net.state_dict().keys() == before.keys()
    x = torch.randn(2, 3, 227, 227) * 50
    with torch.no_grad():
        fast = net(x)
    plain(net)
    assert {type(m) for m in net.modules()} & {FastLRN, OneDNNLinear} == set()
    assert list(net.parameters()) == params
    with torch.no_grad():
        assert torch.allclose(net(x), fast, rtol=1e-4, atol=1e-4 * fast.abs().max())


def test_the_fast_lrn_gives_the_formula_to_tracers_and_transforms():
    """Under torch.fx, torch.jit.trace and torch.func the fast module is the formula: no
    Python autograd function for them to lose, nothing inside vmap that queries strides."""
    lrn = FastLRN(5, 2e-5, 0.75, 2.0, groups=2)
    x = (torch.randn(3, 8, 6, 6) * 60).relu()
    traced = torch.fx.symbolic_trace(lrn)
    assert any(
        n.target.__name__ == "local_response_norm"
        for n in traced.graph.nodes
        if n.op == "call_function"
    )
    y = torch.func.vmap(lambda one: lrn(one[None])[0])(x)
    assert torch.allclose(y, lrn(x), rtol=1e-5)
    jac = torch.func.jacrev(lambda one: lrn(one[None])[0].sum())(x[0])
    xr = x[:1].clone().requires_grad_()
    (expected,) = torch.autograd.grad(lrn(xr).sum(), xr)
    assert torch.allclose(jac, expected[0], rtol=1e-5, atol=1e-7)


def test_the_model_options_are_listed_once():
    """ModelOptions' fields are the one list: the training config has a flag for each,
    a run builds its net from them, and a checkpoint keeps them whole."""
    from dataclasses import asdict, fields

    from alexnet.model import ModelOptions
    from alexnet.model.net import ARCHITECTURE_OPTIONS, options_of
    from alexnet.train.config import TrainConfig
    from alexnet.weights.checkpoint import model_options

    names = {f.name for f in fields(ModelOptions)}
    assert names <= {f.name for f in fields(TrainConfig)}
    assert set(ARCHITECTURE_OPTIONS) <= names
    cfg = TrainConfig(recipe="demo", dropout=0.25, activation="tanh").resolved()
    assert options_of(cfg) == ModelOptions(
        dropout=0.25, activation="tanh", init=cfg.init, lrn=True, overlap_pool=True
    )
    assert model_options(cfg) == asdict(options_of(cfg))
