"""`alexnet explain`: heat maps that must find what a net was built to answer to."""

import json
import sys

import pytest
import torch
from torch import nn

from alexnet.results import explain
from conftest import red_detector, red_square_pictures, run_here

SQUARE = (40, 136, 24)  # top, left, side of the red square in a 224 x 224 input


class RedClassifier(nn.Module):
    """Class 1's logit grows with the red in the image (R up, G and B down), class 0's
    stays 0: a 1x1 convolution, a ReLU, a mean over positions."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1))
            self.conv.bias.zero_()
        self.relu = nn.ReLU()

    def forward(self, x):
        red = self.relu(self.conv(x)).mean(dim=(2, 3))
        return torch.cat([torch.zeros_like(red), 400 * red - 10], dim=1)


def _red_input() -> torch.Tensor:
    x = torch.zeros(3, 224, 224)
    t, left, side = SQUARE
    x[0, t : t + side, left : left + side] = 1.0
    x[1:, t : t + side, left : left + side] = -1.0
    return x


def _inside_square(y: int, x: int, margin: int = 0) -> bool:
    t, left, side = SQUARE
    return t - margin <= y < t + side + margin and left - margin <= x < left + side + margin


def test_occlusion_falls_most_where_the_evidence_is():
    model, x = RedClassifier().eval(), _red_input()
    heat = explain.occlusion_map(model, x, target=1, size=16, stride=8)
    assert heat.shape == (27, 27)  # 0, 8, ..., 208: the last touches the border
    y, xx = explain.peak(heat, 224)
    assert _inside_square(y, xx, margin=8), (y, xx)
    assert heat.max() > 0.3 and heat.min() >= -1e-6  # hiding grey changes nothing
    # batched or one copy a pass: the same map
    one = explain.occlusion_map(model, x, target=1, size=16, stride=8, batch_size=1)
    assert torch.allclose(heat, one, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "integrated-gradients"])
def test_captums_maps_peak_on_the_square(method):
    pytest.importorskip("captum", reason="captum is not installed: the explain extra")
    model, x = RedClassifier().eval(), _red_input()
    if method == "gradcam":
        heat = explain.gradcam_map(model, x, 1, model.conv)
    else:
        heat = explain.integrated_gradients_map(model, x, 1)
    assert heat.shape == (224, 224)
    y, xx = explain.peak(heat, 224)
    assert _inside_square(y, xx), (method, y, xx)


def test_explain_from_the_command_line(module_dir_explain, tmp_path):
    ckpt, pics = module_dir_explain
    images = sorted(pics.iterdir())[:2]
    out = tmp_path / "o.png"
    args = ["--method", "occlusion", "--size", "64", "--stride", "32", "--out", out]
    r = run_here("explain", ckpt, *images, *args, "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert [i["image"] for i in result["images"]] == [str(p) for p in images]
    for item in result["images"]:
        assert len(item["map"]) == 6 and len(item["map"][0]) == 6  # 224: 0, 32, ..., 160
        assert item["target"] in ("c0", "c1") and 0 < item["probability"] <= 1
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def module_dir_explain(module_dir):
    (module_dir / "pics").mkdir()
    red_square_pictures(module_dir / "pics", n=2)
    return red_detector(module_dir / "red.pt"), module_dir / "pics"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "zebra"], "--target zebra: not 'top', a class name or an index"),
        (["--size", "0"], "--size must be at least 1"),
        (["--size", "500"], "--size must be between 1 and 224"),
        (["--out", "o.jpg"], "name it .png"),
    ],
)
def test_bad_requests_are_one_line(module_dir_explain, tmp_path, args, message):
    ckpt, pics = module_dir_explain
    image = sorted(pics.iterdir())[0]
    out = ["--out", tmp_path / "o.png"] if "--out" not in args else []
    fixed = [tmp_path / a if a == "o.jpg" else a for a in args]
    r = run_here("explain", ckpt, image, *out, *fixed, "--device", "cpu")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("o.*"))


def test_without_captum_its_methods_say_how_to_get_it(module_dir_explain, tmp_path, monkeypatch):
    ckpt, pics = module_dir_explain
    monkeypatch.setitem(sys.modules, "captum", None)  # an import of it fails
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    image = sorted(pics.iterdir())[0]
    r = run_here("explain", ckpt, image, "--method", "gradcam", "--out", tmp_path / "g.png")
    assert r.returncode == 2 and "pip install 'alexnet[explain]'" in r.stderr
