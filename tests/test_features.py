"""`alexnet features` and `Pretrained.extract`: activations by layer name, before or
after the ReLU, per tower, streamed to HDF5 or gathered in .npz."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import alexnet
from alexnet.results import feature_files
from alexnet.weights.checkpoint import Checkpoint, save_atomic
from conftest import run_here, write_image

h5py = pytest.importorskip("h5py")  # the features extra


@pytest.fixture(scope="module")
def ckpt(module_dir):
    """A paper-net checkpoint with He-initialised weights (activations of both signs)."""
    torch.manual_seed(0)
    net = alexnet.create_model("paper", num_classes=4, init="kaiming")
    path = module_dir / "paper.pt"
    save_atomic(
        Checkpoint(
            model=net.state_dict(),
            variant="paper",
            classes=[{"index": i, "id": str(i), "name": f"c{i}"} for i in range(4)],
            normalization={"kind": "mean-image", "mean": torch.full((256, 256, 3), 120.0)},
            model_options={"dropout": 0.5, "lrn": True, "overlap_pool": True, "activation": "relu"},
        ).to_dict(),
        path,
    )
    return path


@pytest.fixture(scope="module")
def stimuli(module_dir):
    folder = module_dir / "stimuli"
    for i in range(5):
        write_image(
            folder / ("sub" if i % 2 else "") / f"img{i}.jpg",
            size=(70 + 9 * i, 64),
            color=(40 * i, 90, 200 - 30 * i),
        )
    return folder


def _batch(weights, n=2):
    torch.manual_seed(1)
    images = [torch.randint(0, 256, (3, 260, 300), dtype=torch.uint8) for _ in range(n)]
    return torch.stack([weights.transforms()(im) for im in images])


def test_pre_and_post_relu_are_the_hand_computed_forward(ckpt):
    w = alexnet.load(ckpt)
    x = _batch(w)
    got = w.extract(x, ["conv1:pre", "conv1", "fc6:pre", "fc6"])
    f = w.model.features
    pre = F.conv2d(F.pad(x, (0, 3, 0, 3)), f.conv1.weight, f.conv1.bias, stride=4)
    assert torch.allclose(got["conv1:pre"], pre, atol=1e-4, rtol=1e-5)
    assert torch.allclose(got["conv1"], pre.clamp_min(0), atol=1e-4, rtol=1e-5)
    assert (got["conv1:pre"] < 0).any() and not (got["conv1"] < 0).any()
    with torch.no_grad():
        fc6 = F.linear(f(x).flatten(1), w.model.classifier.fc6.weight, w.model.classifier.fc6.bias)
    assert torch.allclose(got["fc6:pre"], fc6, atol=1e-3, rtol=1e-4)
    assert torch.allclose(got["fc6"], fc6.clamp_min(0), atol=1e-3, rtol=1e-4)
    # pre_relu=True reads every named layer before its ReLU, keyed as asked
    assert torch.equal(w.extract(x, ["conv1"], pre_relu=True)["conv1"], got["conv1:pre"])


def test_several_layers_in_one_pass_equal_each_alone_and_towers_are_halves(ckpt):
    w = alexnet.load(ckpt)
    x = _batch(w)
    names = ["conv2", "norm1", "pool5", "features.relu3", "fc7", "fc8", "conv2.tower1"]
    together = w.extract(x, names)
    for name in names:
        assert torch.equal(together[name], w.extract(x, [name])[name]), name
    assert torch.equal(together["conv2.tower1"], together["conv2"][:, 128:])
    pooled = w.extract(x, ["conv5"], pooling="max")["conv5"]
    assert torch.equal(pooled, w.extract(x, ["conv5"])["conv5"].amax(dim=(2, 3)))


def _rows_written(monkeypatch, writer, layer: str) -> list[int]:
    """The number of images in each batch `writer` is given, as it is given them."""
    rows, write = [], writer.write
    monkeypatch.setattr(
        writer, "write", lambda self, s, b: (rows.append(len(b[layer])), write(self, s, b))
    )
    return rows


def test_hdf5_streams_a_set_larger_than_a_batch_and_equals_the_npz(
    ckpt, stimuli, tmp_path, monkeypatch
):
    rows = _rows_written(monkeypatch, feature_files.H5Writer, "conv1")
    args = [ckpt, "--images", stimuli, "--layers", "conv1,fc7:pre,conv3.tower0", "--device", "cpu"]
    r = run_here("features", *args, "--batch-size", "2", "--out", tmp_path / "f.h5")
    assert r.returncode == 0, r.stderr
    assert rows == [2, 2, 1]  # written batch by batch: nothing holds the whole set
    r = run_here("features", *args, "--batch-size", "5", "--out", tmp_path / "f.npz")
    assert r.returncode == 0, r.stderr
    h5, npz = h5py.File(tmp_path / "f.h5"), np.load(tmp_path / "f.npz")
    ids = [s.decode() for s in h5["image_ids"][:]]
    assert (
        ids
        == list(npz["image_ids"])
        == ["img0.jpg", "img2.jpg", "img4.jpg", "sub/img1.jpg", "sub/img3.jpg"]
    )
    for name in ("conv1", "fc7:pre", "conv3.tower0"):
        # batches of 2 and of 5 take different float32 kernels on some CPUs: equal to
        # within float32 rounding carried through the layers, relative to the layer's scale
        a, b = h5[name][:], npz[name]
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), name
    assert h5["conv3.tower0"].shape == (5, 192, 13, 13)
    meta = json.loads(h5.attrs["meta"])
    assert meta["weights"]["file"] == "paper.pt" and len(meta["weights"]["sha256"]) == 64
    assert meta["layers"]["fc7:pre"]["module"] == "classifier.fc7"
    assert meta["preprocessing"]["crop"] == 224 and json.loads(str(npz["meta"]))["shapes"][
        "fc7:pre"
    ] == [4096]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5", "f.npz"]


def test_ten_crops_and_a_store_split(ckpt, image_folder, tmp_path, monkeypatch):
    from conftest import prepare_store

    rows = _rows_written(monkeypatch, feature_files.NpzWriter, "fc8")
    prepare_store(image_folder, tmp_path / "store")
    args = [
        ckpt,
        "--data",
        tmp_path / "store",
        "--split",
        "val",
        "--layers",
        "fc8",
        "--device",
        "cpu",
    ]
    r = run_here(
        "features", *args, "--crops", "10", "--batch-size", "20", "--out", tmp_path / "ten.npz"
    )
    assert r.returncode == 0, r.stderr
    assert rows == [2, 2, 2]  # 20 patches a pass: 2 images of ten crops, not 20 (200 patches)
    ten = np.load(tmp_path / "ten.npz")
    from alexnet.data.store import Store

    split = Store(tmp_path / "store").split("val")
    assert list(ten["image_ids"]) == list(split.keys)
    w = alexnet.load(ckpt)
    t = w.loaded.transform("cpu")
    images = torch.from_numpy(np.stack([split.image(i) for i in range(2)]))
    x = t(images, t.views(2, 10))
    want = w.extract(x, ["fc8"])["fc8"].view(2, 10, -1).mean(1)
    assert np.allclose(ten["fc8"][:2], want.numpy(), atol=1e-4)


def test_bad_layers_images_and_outputs_are_one_line_and_leave_no_file(ckpt, stimuli, tmp_path):
    good = [ckpt, "--images", stimuli, "--device", "cpu"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        write_image(broken / f"{i}.jpg")
    (broken / "2.jpg").write_bytes(b"not a jpeg")  # in the second batch: fails mid-run
    cases = [
        ([*good, "--layers", "conv9", "--out", tmp_path / "a.h5"], "no layer 'conv9'"),
        ([*good, "--layers", "pool5:pre", "--out", tmp_path / "a.h5"], "only a convolution"),
        ([*good, "--out", tmp_path / "a.txt"], "name it .npz or .h5"),
        ([*good, "--out", tmp_path / "nowhere" / "a.h5"], "no folder"),
        ([ckpt, "--device", "cpu", "--out", tmp_path / "a.h5"], "give the images"),
        (
            [
                ckpt,
                "--images",
                broken,
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--out",
                tmp_path / "a.h5",
            ],
            "2.jpg",
        ),
        (
            [ckpt, tmp_path / "missing.jpg", "--device", "cpu", "--out", tmp_path / "a.npz"],
            "missing.jpg",
        ),
    ]
    for args, message in cases:
        r = run_here("features", *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (message, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]  # no file, no temp file


@pytest.mark.parametrize("variant", ["paper", "caffe"])
def test_torchvision_feature_extraction_traces_every_layer(variant):
    """torchvision's create_feature_extractor (torch.fx) traces the nets whole: the LRN
    is one recorded call, the pooling to 6x6 no branch on the maps' size. Its norm1,
    norm2 and pool5 are the modules' own outputs, its logits the net's."""
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    net = alexnet.create_model(variant, num_classes=10, init="kaiming").eval()
    side = 227 if variant == "caffe" else 224
    x = torch.randn(2, 3, side, side) * 50  # inputs at the nets' scale: the LRN bites
    names = ["features.norm1", "features.norm2", "features.pool5", "classifier.fc8"]
    got = create_feature_extractor(net, return_nodes=names)(x)
    seen, modules = {}, dict(net.named_modules())
    for name in names:
        modules[name].register_forward_hook(
            lambda m, i, out, name=name: seen.__setitem__(name, out.clone())
        )
    with torch.no_grad():
        net(x)
    for name in names:
        assert torch.allclose(got[name], seen[name], rtol=1e-4, atol=1e-4), name


def _readme() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("variant", ["paper", "caffe"])
def test_the_readme_lists_the_fx_node_names_torchvision_gives(variant):
    from torchvision.models.feature_extraction import get_graph_node_names

    block = _readme().split("get_graph_node_names(model)[1]` lists these", 1)[1]
    listed = block.split("```text", 1)[1].split("```", 1)[0].split()
    _, nodes = get_graph_node_names(alexnet.create_model(variant))
    nodes = [
        n for n in nodes if n not in ("x", "features.pad1") and not n.endswith(("_weight", "_bias"))
    ]
    assert nodes == listed


def test_rsatoolbox_as_the_readme_shows(ckpt, stimuli):
    rsatoolbox = pytest.importorskip("rsatoolbox", reason="rsatoolbox is not installed")
    from PIL import Image

    w = alexnet.load(ckpt)
    paths = sorted(stimuli.rglob("*.jpg"))[:3]
    x = torch.stack([w.transforms()(Image.open(p)) for p in paths])
    block = _readme().split("With rsatoolbox", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    names = {"w": w, "x": x}
    exec(compile(block, "README.md", "exec"), names)
    pattern = w.extract(x, ["conv5"])["conv5"].flatten(1).numpy()
    assert isinstance(names["rdm"], rsatoolbox.rdm.RDMs)
    # rsatoolbox sums float32 products over 43,264 units (np.corrcoef: float64); such a sum
    # was 1.1e-4 off on one fixture net, so 1e-3, against distances of 0.1 to 0.5 here
    assert np.allclose(names["rdm"].get_matrices()[0], 1 - np.corrcoef(pattern), atol=1e-3)


def test_thingsvision_as_the_readme_shows(ckpt, stimuli):
    """thingsvision's extractor over our net, as the README says to use it: a module name
    from `alexnet info`, whose output is the layer's before its ReLU."""
    pytest.importorskip(
        "thingsvision",
        reason="thingsvision is not importable here (it needs tensorflow, timm and open_clip: "
        "pip install --no-deps thingsvision, then its dependencies by hand)",
    )
    from PIL import Image
    from thingsvision import get_extractor_from_model

    w = alexnet.load(ckpt)
    paths = sorted(stimuli.rglob("*.jpg"))[:3]
    x = torch.stack([w.transforms()(Image.open(p)) for p in paths])
    extractor = get_extractor_from_model(model=w.model, device="cpu", backend="pt")
    theirs = extractor.extract_features(
        batches=[x], module_name="classifier.fc7", flatten_acts=True, output_type="ndarray"
    )
    ours = w.extract(x, ["fc7"], pre_relu=True)["fc7"].numpy()
    assert theirs.shape == ours.shape
    assert np.allclose(theirs, ours, rtol=1e-5, atol=1e-5)
