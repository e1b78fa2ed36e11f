"""Published weights by name and Caffe's .caffemodel files (docs/paper.md, "Caffe's AlexNet").

The .caffemodel files here are written by this test's own protobuf encoder, in both of
Caffe's encodings, from random weights; their logits are checked against a float64
numpy reference of Caffe's layers written below from Caffe's layer semantics (it never
calls the project's model). Downloads are served by a loopback HTTP server.
"""

import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alexnet
from alexnet.runtime.errors import UsageError
from alexnet.weights import caffe, hub
from conftest import run_here, write_image

MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434])
# bvlc_alexnet's deploy.prototxt: (name, out, kernel, stride, pad, group)
CONVS = [
    ("conv1", 96, 11, 4, 0, 1),
    ("conv2", 256, 5, 1, 2, 2),
    ("conv3", 384, 3, 1, 1, 1),
    ("conv4", 384, 3, 1, 1, 2),
    ("conv5", 256, 3, 1, 1, 2),
]
CLASSES = 10


# ------------------------------------------------------------ a protobuf encoder
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # length-delimited
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _blob(arr: np.ndarray, v1: bool, packed: bool = True) -> bytes:
    data = arr.astype("<f4").tobytes()
    if packed:
        values = _field(5, data)
    else:  # one fixed32 field per value, as a non-packed writer emits
        values = b"".join(_varint(5 << 3 | 5) + data[i : i + 4] for i in range(0, len(data), 4))
    if v1:  # num, channels, height, width: always 4-D, leading ones
        dims = (1,) * (4 - arr.ndim) + arr.shape
        return b"".join(_int_field(i + 1, d) for i, d in enumerate(dims)) + values
    shape = _field(1, b"".join(_varint(d) for d in arr.shape))  # BlobShape.dim, packed
    return _field(7, shape) + values


def _layer(name: str, kind: str, blobs: list, v1: bool, packed: bool = True) -> bytes:
    if v1:  # V1LayerParameter: name 4, type 5 (an enum), blobs 6; NetParameter.layers 2
        body = _field(4, name.encode()) + _int_field(5, 4 if kind == "Convolution" else 14)
        body += b"".join(_field(6, _blob(b, True, packed)) for b in blobs)
        return _field(2, body)
    body = _field(1, name.encode()) + _field(2, kind.encode())  # LayerParameter
    body += b"".join(_field(7, _blob(b, False, packed)) for b in blobs)
    return _field(100, body)


def write_caffemodel(path: Path, weights: dict, v1: bool, unpacked=()) -> Path:
    """The layers named in `unpacked` hold their values as one field per value."""
    parts = [_field(1, b"AlexNet"), _layer("data", "Input", [], v1)]
    for name, (w, b) in weights.items():
        kind = "Convolution" if name.startswith("conv") else "InnerProduct"
        parts.append(_layer(name, kind, [w, b], v1, name not in unpacked))
        parts.append(_layer(f"relu{name[-1]}", "ReLU", [], v1))
    path.write_bytes(b"".join(parts))
    return path


def random_weights(seed: int = 0, classes: int = CLASSES) -> dict:
    """He-scaled weights, so that activations stay O(1..100) and LRN matters."""
    rng = np.random.default_rng(seed)
    out, in_ch = {}, 3
    for name, o, k, _, _, g in CONVS:
        fan_in = in_ch // g * k * k
        w = rng.standard_normal((o, in_ch // g, k, k), dtype=np.float32) * np.float32(
            np.sqrt(2 / fan_in)
        )
        out[name] = (w, rng.standard_normal(o, dtype=np.float32) * 0.1)
        in_ch = o
    for name, i, o in (("fc6", 9216, 4096), ("fc7", 4096, 4096), ("fc8", 4096, classes)):
        w = rng.standard_normal((o, i), dtype=np.float32) * np.float32(np.sqrt(2 / i))
        out[name] = (w, rng.standard_normal(o, dtype=np.float32) * 0.1)
    return out


# ------------------------------------------------------- Caffe's layers in float64
def ref_conv(x, w, b, stride, pad, group):
    c, h, wd = x.shape
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    o, cg, k, _ = w.shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.empty((o, oh, ow))
    og = o // group
    for g in range(group):
        xs = x[g * cg : (g + 1) * cg]
        cols = np.lib.stride_tricks.sliding_window_view(xs, (k, k), axis=(1, 2))
        cols = cols[:, ::stride, ::stride][:, :oh, :ow]  # (cg, oh, ow, k, k)
        cols = cols.transpose(1, 2, 0, 3, 4).reshape(oh * ow, -1)
        wg = w[g * og : (g + 1) * og].reshape(og, -1)
        out[g * og : (g + 1) * og] = (cols @ wg.T).T.reshape(og, oh, ow)
    return out + b[:, None, None]


def ref_lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's ACROSS_CHANNELS LRN: scale = k + alpha / size * sum of squares over the
    zero-padded window of `size` maps centred on each map."""
    sq = np.pad(x * x, (((size - 1) // 2, size // 2), (0, 0), (0, 0)))
    window = sum(sq[i : i + x.shape[0]] for i in range(size))
    return x * (k + alpha / size * window) ** -beta


def ref_maxpool(x, k=3, s=2):
    """Caffe's pooling: the output size rounds up; the last window is clipped."""
    c, h, w = x.shape
    oh, ow = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    out = np.empty((c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i * s : min(i * s + k, h), j * s : min(j * s + k, w)].max(
                axis=(1, 2)
            )
    return out


def ref_forward(image_256: np.ndarray, weights: dict) -> np.ndarray:
    """A 256x256 RGB uint8 image -> bvlc_alexnet's fc8 in float64: centre 227 crop, BGR,
    minus the per-channel mean, then deploy.prototxt's layers."""
    crop = image_256[14 : 14 + 227, 14 : 14 + 227, ::-1].astype(np.float64) - MEAN_BGR
    x = crop.transpose(2, 0, 1)
    w = {n: (a.astype(np.float64), b.astype(np.float64)) for n, (a, b) in weights.items()}
    for name, _, _, stride, pad, group in CONVS:
        x = np.maximum(ref_conv(x, *w[name], stride, pad, group), 0)
        if name in ("conv1", "conv2"):
            x = ref_lrn(x)
        if name in ("conv1", "conv2", "conv5"):
            x = ref_maxpool(x)
    x = x.reshape(-1)
    for name in ("fc6", "fc7"):
        x = np.maximum(w[name][0] @ x + w[name][1], 0)
    return w["fc8"][0] @ x + w["fc8"][1]


@pytest.fixture(scope="module")
def weights():
    return random_weights()


@pytest.fixture(scope="module")
def photo(module_dir):
    """A 256x256 image with structure at every scale (a smooth field plus noise)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:256, 0:256] / 256
    base = np.stack([np.sin(6 * xx + c) * np.cos(5 * yy - c) for c in range(3)], -1)
    arr = np.clip(128 + 90 * base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    path = module_dir / "photo.png"
    Image.fromarray(arr).save(path)
    return path, arr


@pytest.mark.parametrize("v1", [True, False], ids=["v1-encoding", "current-encoding"])
def test_caffemodel_logits_equal_a_float64_reference(tmp_path, weights, photo, v1):
    path = write_caffemodel(tmp_path / "net.caffemodel", weights, v1)
    w = alexnet.load(path)
    assert w.model.variant == "caffe" and w.meta["kind"] == "caffe"
    x = w.transforms()(Image.open(photo[0]))
    assert x.shape == (3, 227, 227)
    with torch.no_grad():
        got = w.model(x[None]).double()[0].numpy()
    want = ref_forward(photo[1], weights)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel
    assert list(np.argsort(-got)[:5]) == list(np.argsort(-want)[:5])
    path.unlink()


def test_unpacked_values_and_a_cached_second_load(tmp_path, weights, monkeypatch):
    path = write_caffemodel(tmp_path / "net.caffemodel", weights, False, unpacked=("conv1", "fc8"))
    first = alexnet.load(path).model.state_dict()
    for key, (name, i) in {
        "features.conv1.weight": ("conv1", 0),
        "classifier.fc8.bias": ("fc8", 1),
    }.items():
        assert torch.equal(first[key], torch.from_numpy(weights[name][i]))
    assert caffe.converted_path(path).is_file()
    # the second load reads the cached conversion, not the caffemodel
    monkeypatch.setattr(caffe, "read_caffemodel", lambda p: pytest.fail("converted again"))
    second = alexnet.load(path).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def _mutated(weights, name, shape):
    w = dict(weights)
    w[name] = (np.zeros(shape, np.float32), w[name][1])
    return w


def test_caffemodels_that_are_not_alexnet_are_refused_in_one_line(tmp_path, weights):
    cases = {
        "wrong-shape": (_mutated(weights, "conv2", (256, 96, 5, 5)), "conv2 weight has shape"),
        "missing-layer": ({k: v for k, v in weights.items() if k != "fc7"}, "no layer fc7"),
    }
    for name, (w, message) in cases.items():
        path = write_caffemodel(tmp_path / f"{name}.caffemodel", w, v1=False)
        with pytest.raises(UsageError, match=message):
            alexnet.load(path)
        path.unlink()
    good = write_caffemodel(tmp_path / "good.caffemodel", weights, v1=True).read_bytes()
    damaged = {
        "truncated": good[: len(good) // 2],
        # a length prefix claiming far more bytes than the file has: refused, not allocated
        "huge-length": _varint(2 << 3 | 2) + _varint(1 << 40) + b"\0" * 16,
        "garbage": bytes(range(256)) * 4,
        "group-wire-type": _varint(2 << 3 | 3) + b"\0" * 8,
    }
    img = write_image(tmp_path / "q.jpg", size=(64, 64))
    for name, data in damaged.items():
        path = tmp_path / f"{name}.caffemodel"
        path.write_bytes(data)
        r = run_here("predict", path, img, "--device", "cpu")
        assert r.returncode == 2, (name, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, name


# ------------------------------------------------------------------ names, cache
def _torchvision_state(seed=0):
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.alexnet().state_dict()


def test_torchvision_by_name_equals_torchvision(tmp_path, monkeypatch):
    import torchvision
    from torchvision.models import AlexNet_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    state = _torchvision_state()
    torch.save(state, folder / "alexnet-owt-7be5be79.pth")  # a cached file is trusted
    w = alexnet.load("torchvision")
    ref = torchvision.models.alexnet()
    ref.load_state_dict(state)
    ref.eval()
    img = Image.open(write_image(tmp_path / "q.jpg", size=(300, 260), color=(90, 140, 30)))
    ours_x, ref_x = w.transforms()(img), AlexNet_Weights.IMAGENET1K_V1.transforms()(img)
    assert torch.allclose(ours_x, ref_x, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(w.model(ours_x[None]), ref(ref_x[None]), atol=1e-5, rtol=1e-5)
    assert w.meta["categories"] == AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    assert w.meta["class_ids"][:2] == ["n01440764", "n01443537"]
    assert w.meta["source"] == "torchvision"


def test_loading_weights_draws_nothing_and_holds_them_in_float32(tmp_path):
    from alexnet.weights.checkpoint import Checkpoint, save_safetensors
    from alexnet.weights.load import load_for_inference

    tv = _torchvision_state(1)
    torch.save(tv, tmp_path / "tv.pth")
    half = {
        k: v.to(torch.bfloat16) for k, v in alexnet.create_model(num_classes=3).state_dict().items()
    }
    names = [{"name": c} for c in "abc"]
    norm = {"mean": torch.zeros(3), "scale": 1.0}
    save_safetensors(Checkpoint(half, "paper", names, norm, {}, {}), tmp_path / "half.safetensors")
    torch.manual_seed(5)
    expected = torch.rand(4)
    for path, state in ((tmp_path / "tv.pth", tv), (tmp_path / "half.safetensors", half)):
        torch.manual_seed(5)
        got = load_for_inference(path).model.state_dict()
        assert torch.equal(torch.rand(4), expected)  # no init drawn, only to be overwritten
        assert got.keys() == state.keys()
        for k, v in state.items():
            assert got[k].dtype == torch.float32 and torch.equal(got[k], v.float()), k


class _Server:
    """A loopback HTTP server: each path a behaviour."""

    def __init__(self, files: dict):
        files = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = files.get(self.path.rsplit("/", 1)[-1])
                if self.path.startswith("/missing/") or body is None:
                    self.send_error(404)
                    return
                if self.path.startswith("/silent/"):
                    time.sleep(5)  # never answers within the client's timeout
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path.startswith("/truncated/"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A torchvision-layout file served over loopback, the registry's hash set to it."""
    import io

    buf = io.BytesIO()
    torch.save(_torchvision_state(), buf)
    body = buf.getvalue()
    spec = hub.NAMED["torchvision"]
    digest = hashlib.sha256(body).hexdigest()[:8]
    monkeypatch.setitem(hub.NAMED, "torchvision", type(spec)(**{**spec.__dict__, "digest": digest}))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hub, "TIMEOUT_S", 1.0)
    server = _Server({spec.file_name: body})
    yield server, tmp_path / "torch" / "hub" / "checkpoints" / spec.file_name
    server.close()


def test_download_checks_the_hash_and_renames(served, monkeypatch):
    server, cached = served
    monkeypatch.setenv(hub.BASE_URL_ENV, server.url + "/ok")
    lines = []
    assert hub.resolve("torchvision", log=lines.append) == cached
    assert cached.is_file() and any("downloading" in line for line in lines)
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temp left
    assert alexnet.load("torchvision").model.variant == "torchvision"


@pytest.mark.parametrize(
    "base, message",
    [
        ("/missing", "HTTP 404"),
        ("/truncated", "could not be downloaded"),
        ("/silent", "timed out"),
        ("http://127.0.0.1:9/x", "could not be downloaded"),  # nothing listens: refused
    ],
)
def test_failed_downloads_leave_nothing_and_say_where_to_put_the_file(
    served, monkeypatch, base, message
):
    server, cached = served
    url = base if base.startswith("http") else server.url + base
    monkeypatch.setenv(hub.BASE_URL_ENV, url)
    start = time.monotonic()
    r = run_here("predict", "torchvision", "x.jpg", "--device", "cpu")
    assert time.monotonic() - start < 30
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert message in err and str(cached.parent) in err and cached.name in err, err
    assert not cached.parent.exists() or list(cached.parent.iterdir()) == []


def test_a_wrong_hash_keeps_nothing(served, monkeypatch):
    server, cached = served
    spec = hub.NAMED["torchvision"]
    monkeypatch.setitem(
        hub.NAMED, "torchvision", type(spec)(**{**spec.__dict__, "digest": "00000000"})
    )
    monkeypatch.setenv(hub.BASE_URL_ENV, server.url + "/ok")
    with pytest.raises(UsageError, match="do not have the published sha256-prefix 00000000"):
        hub.resolve("torchvision", log=lambda line: None)
    assert list(cached.parent.iterdir()) == []


def _two_class_store(root: Path, per_class: int, val_fraction: float) -> Path:
    """root/store: two classes of small JPEGs (root/src), prepared."""
    from conftest import prepare_store

    for c, name in enumerate(["a", "b"]):
        for i in range(per_class):
            write_image(root / "src" / name / f"{i}.jpg", size=(90, 80), color=(200 * c, 90, 40))
    prepare_store(root / "src", root / "store", val_fraction=val_fraction)
    return root / "store"


def test_caffe_by_name_predicts_and_fine_tunes(tmp_path, weights, monkeypatch):
    """`predict caffe` from a cached file, and `train --weights caffe` on a small store."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    write_caffemodel(folder / "bvlc_alexnet.caffemodel", weights, v1=True)
    img = write_image(tmp_path / "q.jpg", size=(280, 256), color=(30, 90, 200))
    r = run_here("predict", "caffe", img, "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    (result,) = json.loads(r.stdout)
    assert len(result["top"]) == 5 and {t["name"] for t in result["top"]} <= {
        str(i) for i in range(CLASSES)
    }
    _two_class_store(tmp_path, per_class=6, val_fraction=0.34)
    args = ["--data", tmp_path / "store", "--out", tmp_path / "run", "--weights", "caffe"]
    args += ["--epochs", "1", "--batch-size", "4", "--device", "cpu", "--workers", "0"]
    r = run_here("train", *args, "--freeze", "features", "--no-report")
    assert r.returncode == 0, r.stderr
    from alexnet.weights.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt.variant == "caffe" and ckpt.normalization["channels"] == "bgr"
    assert ckpt.model["classifier.fc8.weight"].shape == (2, 4096)
    # the conv layers are the file's, frozen; fc6 started from it and moved
    for name in ("conv1", "conv2", "conv5"):
        assert torch.equal(
            ckpt.model[f"features.{name}.weight"], torch.from_numpy(weights[name][0])
        )
    assert not torch.equal(ckpt.model["classifier.fc6.weight"], torch.from_numpy(weights["fc6"][0]))
    assert "loaded conv1" in r.stderr + r.stdout


def test_the_caffe_net_trains_from_scratch_with_its_own_lrn(tmp_path):
    _two_class_store(tmp_path, per_class=4, val_fraction=0.25)
    args = ["--data", tmp_path / "store", "--out", tmp_path / "run", "--variant", "caffe"]
    args += ["--max-steps", "1", "--batch-size", "2", "--device", "cpu", "--workers", "0"]
    r = run_here("train", *args, "--recipe", "demo", "--no-report")
    assert r.returncode == 0, r.stderr
    w = alexnet.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert w.model.variant == "caffe" and w.model.options.lrn_alpha_over_n
    assert w.model.features.norm1.alpha == pytest.approx(1e-4 / 5) and w.model.features.norm1.k == 1
    assert w.transforms()(Image.new("RGB", (300, 256))).shape == (3, 227, 227)


def _cached_published(tmp_path, monkeypatch, weights) -> None:
    """Both published nets in torch.hub's cache (a cached file is trusted: no network)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(_torchvision_state(), folder / "alexnet-owt-7be5be79.pth")
    write_caffemodel(folder / "bvlc_alexnet.caffemodel", weights, v1=False)


def _our_checkpoint(path: Path, classes: int = 4) -> Path:
    from alexnet.weights.checkpoint import Checkpoint, save_safetensors

    torch.manual_seed(2)
    net = alexnet.create_model("paper", num_classes=classes, init="kaiming")
    names = [{"name": f"c{i}"} for i in range(classes)]
    norm = {"mean": torch.zeros(3), "scale": 1.0}
    save_safetensors(Checkpoint(net.state_dict(), "paper", names, norm, {}, {}), path)
    return path


@pytest.mark.parametrize("name", ["torchvision", "caffe", "ours"])
def test_create_model_with_weights_and_other_classes_gets_a_fresh_head(
    name, tmp_path, monkeypatch, weights
):
    _cached_published(tmp_path, monkeypatch, weights)
    spec = str(_our_checkpoint(tmp_path / "ours.safetensors")) if name == "ours" else name
    full = alexnet.create_model(weights=spec)
    with pytest.warns(UserWarning, match="fc8 starts afresh"):
        net = alexnet.create_model(weights=spec, num_classes=5)
    assert net.variant == full.variant and net.classifier[-1].out_features == 5
    old, new = full.state_dict(), net.state_dict()
    head = [k for k in new if k.startswith("classifier.fc8") or k == "classifier.6.weight"]
    for k in new:
        if new[k].shape == old[k].shape and "fc8" not in k and not k.startswith("classifier.6"):
            assert torch.equal(new[k], old[k]), k  # every other layer is the file's
    assert head and not net.training
    # the file's own class count: the file's net, as it is; so through torch.hub
    same = alexnet.create_model(weights=spec, num_classes=full.classifier[-1].out_features)
    assert all(torch.equal(v, old[k]) for k, v in same.state_dict().items())
    hub_net = torch.hub.load(
        str(Path(__file__).resolve().parent.parent),
        "alexnet",
        source="local",
        weights=spec,
        num_classes=5,
    )
    assert hub_net.classifier[-1].out_features == 5


def test_create_model_refuses_what_the_weights_cannot_hold(tmp_path, monkeypatch, weights):
    _cached_published(tmp_path, monkeypatch, weights)
    with pytest.raises(ValueError, match="'torchvision' net: variant='paper'"):
        alexnet.create_model("paper", weights="torchvision")
    with pytest.raises(ValueError, match="overlap_pool=True: overlap_pool=False"):
        alexnet.create_model(weights="caffe", overlap_pool=False)
    ours = _our_checkpoint(tmp_path / "ours.safetensors")
    with pytest.raises(ValueError, match="activation='relu': activation='tanh'"):
        alexnet.create_model(weights=ours, activation="tanh")
    # what the weights do not fix may change: dropout, and a sixth layer over a paper net
    assert alexnet.create_model(weights=ours, dropout=0.2).options.dropout == 0.2
    with pytest.warns(UserWarning, match="conv6"):
        grown = alexnet.create_model("six-conv", weights=ours)
    assert grown.variant == "six-conv"


def test_the_weights_registry_agrees_with_the_nets_it_names(tmp_path, monkeypatch, weights):
    from alexnet.model.info import min_input_size

    entries = alexnet.list_weights()
    assert [w["name"] for w in entries] == ["torchvision", "caffe"]
    keys = {"metrics", "protocol", "num_params", "file_name", "file_size_mb", "hash", "url"}
    keys |= {"min_size", "channels", "recipe", "docs", "variant"}
    for w in entries:
        assert keys <= set(w), w["name"]
        with torch.device("meta"):
            net = alexnet.create_model(w["variant"])
        assert w["num_params"] == sum(p.numel() for p in net.parameters())
        assert w["min_size"] == min_input_size(w["variant"])
        assert 50 < w["metrics"]["top1_accuracy"] < w["metrics"]["top5_accuracy"] < 100
    r = run_here("info", "--weights", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == entries
    assert "top-1 57.1%" in run_here("info", "--weights").stdout
    # load(name).meta carries the registry's entry; our checkpoint, what it knows
    _cached_published(tmp_path, monkeypatch, weights)
    loaded = alexnet.load("caffe")
    meta = loaded.meta
    assert meta["metrics"] == {"top1_accuracy": 57.1, "top5_accuracy": 80.2}
    assert meta["channels"] == "bgr" and meta["url"].endswith("bvlc_alexnet.caffemodel")
    # the loaded net's own count (this test's stand-in file has 10 classes)
    assert meta["num_params"] == sum(p.numel() for p in loaded.model.parameters())
    ours = alexnet.load(_our_checkpoint(tmp_path / "ours.safetensors")).meta
    assert ours["num_params"] == 60_965_224 - 996 * 4097 and ours["min_size"] == 64
    assert "metrics" not in ours


def test_info_refuses_an_input_size_below_one():
    r = run_here("info", "--input-size", "0")
    assert r.returncode == 2 and "--input-size must be at least 1" in r.stderr


def test_an_imagenet_net_on_a_store_of_some_imagenet_classes(tmp_path, monkeypatch, weights):
    """By wnid or by a name that is one class's: the softmax over the store's classes,
    top-1 over them, said in one line; another class set is refused as before."""
    from alexnet.data.store import Store
    from alexnet.evaluation.split import split_probabilities
    from alexnet.weights.load import load_for_inference
    from conftest import prepare_store

    _cached_published(tmp_path, monkeypatch, weights)
    folders = {"n01440764": (200, 60, 30), "goldfish": (230, 140, 20), "n01484850": (90, 90, 200)}
    for name, color in folders.items():
        for i in range(4):
            write_image(tmp_path / "src" / name / f"{i}.jpg", size=(90 + 5 * i, 80), color=color)
    prepare_store(tmp_path / "src", tmp_path / "store", val_fraction=0.5)
    evaluate = ["evaluate", "torchvision", "--crops", "1", "--device", "cpu", "--workers", "0"]
    r = run_here(*evaluate, "--data", tmp_path / "store", "--precision", "fp32", "--json")
    assert r.returncode == 0, r.stderr
    assert "the store holds 3 of ImageNet's 1,000 classes" in r.stderr
    result = json.loads(r.stdout)
    assert result["class_subset"]["classes"] == 3
    # the same top-1, computed from the full softmax restricted to the three classes
    store = Store(tmp_path / "store")
    loaded = load_for_inference("torchvision")
    names = [c["name"] for c in store.classes]  # sorted folder names
    index = {"n01440764": 0, "goldfish": 1, "n01484850": 2}
    outputs = [index[n] for n in names]
    wrong = total = 0
    for probs, y in split_probabilities(loaded.model, store.split("val"), loaded.transform()):
        wrong += int((probs[:, outputs].argmax(1) != y).sum())
        total += len(y)
    assert result["top1_error"] == pytest.approx(wrong / total)
    assert result["top5_error"] == 0.0  # five guesses among three classes
    # predict among the store's classes: the same restricted softmax, named by the store
    photo = tmp_path / "src" / "goldfish" / "0.jpg"
    r = run_here(
        "predict",
        "torchvision",
        photo,
        "--data",
        tmp_path / "store",
        "--json",
        "--device",
        "cpu",
        "--precision",
        "fp32",
    )
    assert r.returncode == 0, r.stderr
    assert "holds 3 of ImageNet's 1,000 classes" in r.stderr
    (pred,) = json.loads(r.stdout)
    assert {t["name"] for t in pred["top"]} == set(names) and pred["class_subset"]["of"] == 1000
    x = loaded.preprocess_files([photo])
    with torch.no_grad():
        want = loaded.model(x)[0, outputs].softmax(0)
    got = {t["name"]: t["prob"] for t in pred["top"]}
    assert [got[n] for n in names] == pytest.approx(want.tolist(), abs=1e-5)
    # a class that is not ImageNet's: refused as before
    for name in ("teapot-from-my-lab", "tench"):
        for i in range(2):
            write_image(tmp_path / "src2" / name / f"{i}.jpg")
    prepare_store(tmp_path / "src2", tmp_path / "store2", val_fraction=0.5)
    r = run_here(*evaluate, "--data", tmp_path / "store2")
    assert r.returncode == 2 and "holds other classes than torchvision" in r.stderr


def test_units_and_explain_on_caffe_by_name(tmp_path, monkeypatch, weights):
    """Both commands on the published two-tower net from torch.hub's cache (here a
    stand-in .caffemodel of random weights: the commands, not the weights, are tested)."""
    from conftest import prepare_store

    _cached_published(tmp_path, monkeypatch, weights)
    for c, color in (("a", (200, 40, 40)), ("b", (40, 60, 200))):
        for i in range(3):
            write_image(tmp_path / "src" / c / f"{i}.jpg", size=(260, 256), color=color)
    prepare_store(tmp_path / "src", tmp_path / "store", val_fraction=0.34)
    r = run_here(
        "units",
        "caffe",
        "--data",
        tmp_path / "store",
        "--layer",
        "conv5",
        "--top",
        "2",
        "--units",
        "0-3",
        "--out",
        tmp_path / "u.png",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "u.png").read_bytes()[:4] == b"\x89PNG"
    photo = tmp_path / "src" / "a" / "0.jpg"
    r = run_here(
        "explain",
        "caffe",
        photo,
        "--method",
        "occlusion",
        "--size",
        "76",
        "--stride",
        "76",
        "--out",
        tmp_path / "o.png",
        "--device",
        "cpu",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    (item,) = json.loads(r.stdout)["images"]
    assert len(item["map"]) == 3  # 227 = 0, 76, 151 (the last touching the border)
