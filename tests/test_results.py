import argparse
import importlib.util
import json
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from alexnet.data.augment import TEN_CROP_VIEWS, crop_flip, ten_crop_params
from alexnet.data.store import Store
from alexnet.evaluation.metrics import Tally, topk_correct
from alexnet.evaluation.split import evaluate_split
from alexnet.results.pretrained import load as alexnet_load
from alexnet.runtime.errors import UsageError
from alexnet.train.config import TrainConfig
from alexnet.train.loop import train
from alexnet.weights.checkpoint import read_file
from alexnet.weights.load import load_for_inference
from conftest import EVAL_FAST, chromium, prepare_store, run_here, write_image


@pytest.fixture(scope="module")
def trained(module_dir):
    """A tiny store and a run on it: 3 classes, one short epoch of the paper net."""
    root = module_dir / "results"
    colors = [(220, 40, 40), (40, 200, 60), (40, 80, 230)]
    for c, name in enumerate(["apple", "leaf", "sky"]):
        for i in range(6):
            write_image(root / "src" / name / f"{i}.jpg", size=(80 + i, 70), color=colors[c])
    prepare_store(root / "src", root / "store", val_fraction=0.34)
    cfg = TrainConfig(
        data=str(root / "store"),
        out=str(root / "run"),
        epochs=1,
        batch_size=4,
        recipe="paper",
        lr=1e-3,
        device="cpu",
        workers=0,
        progress=False,
        report=False,
        eval_batch_size=8,
    )
    train(cfg)
    return root


# ------------------------------------------------------------------ metrics
def test_topk_hand_computed_with_ties():
    scores = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.7, 0.2], [0.3, 0.3, 0.3]])
    labels = torch.tensor([1, 0, 2])
    # a tie with the top counts as a hit: no class scores strictly higher
    assert topk_correct(scores, labels, 1).tolist() == [True, False, True]
    assert topk_correct(scores, labels, 2).tolist() == [True, False, True]
    assert topk_correct(scores, labels, 3).tolist() == [True, True, True]


def test_top5_with_fewer_than_five_classes_is_always_right():
    scores = torch.randn(10, 3)
    labels = torch.randint(0, 3, (10,))
    assert topk_correct(scores, labels, 5).all()


def test_tally_per_class():
    t = Tally(3)
    t.update(
        torch.tensor([[2.0, 1, 0], [0, 2, 1], [0, 2, 1], [1, 0, 2]]), torch.tensor([0, 1, 2, 2])
    )
    r = t.result()
    assert r["images"] == 4 and r["top1_error"] == pytest.approx(0.25)
    assert r["per_class"] == [1.0, 1.0, 0.5]


def test_ten_crop_averages_softmax(trained):
    loaded = load_for_inference(trained / "run" / "checkpoints" / "last.pt")
    store = Store(trained / "store")
    val = store.split("val")
    norm = loaded.transform()
    r = evaluate_split(loaded.model, val, norm, 3, crops=10, batch_size=4)
    images = torch.from_numpy(val.batch(range(len(val))))
    with torch.no_grad():
        probs = loaded.model(norm(images, ten_crop_params(len(val)))).softmax(1)
    avg = probs.view(len(val), 10, 3).mean(1)
    expected_err = 1 - (avg.argmax(1) == torch.from_numpy(val.labels)).float().mean().item()
    assert r["top1_error"] == pytest.approx(expected_err)
    assert r["crops"] == 10 and r["images"] == len(val)
    # each view's own error, named in ten_crop_params's order
    labels = torch.from_numpy(val.labels)
    view_errors = [
        1 - (probs.view(len(val), 10, 3)[:, i].argmax(1) == labels).float().mean().item()
        for i in range(10)
    ]
    assert list(r["views"]) == list(TEN_CROP_VIEWS)
    assert list(r["views"].values()) == pytest.approx(view_errors)
    assert r["views"]["centre flipped"] == pytest.approx(view_errors[9])
    assert "views" not in evaluate_split(loaded.model, val, norm, 3, crops=1)
    # the ten crops really are the corner/centre patches and their mirrors
    x = crop_flip(images, ten_crop_params(len(val)))
    assert torch.equal(x[5], x[0].flip(1))


# ------------------------------------------------------------------ commands
def test_evaluate_cli_json(trained):
    r = run_here(
        "evaluate",
        trained / "run" / "checkpoints" / "last.pt",
        "--data",
        trained / "store",
        "--crops",
        "10",
        "--json",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"top1_error", "top5_error", "crops", "images", "per_class"}
    assert out["crops"] == 10 and out["top5_error"] == 0.0  # 3 classes: always in the top 5
    assert set(out["per_class"]) == {"apple", "leaf", "sky"}
    assert len(out["views"]) == 10 and all(0 <= e <= 1 for e in out["views"].values())


def test_predict_cli_handles_bad_files_and_draws(trained, tmp_path):
    good = write_image(tmp_path / "a.png", size=(300, 120), color=(220, 40, 40), fmt="PNG")
    grey = write_image(tmp_path / "g.jpg", size=(50, 90), mode="L")
    corrupt = tmp_path / "c.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    fig = tmp_path / "pred.png"
    r = run_here(
        "predict",
        trained / "run" / "checkpoints" / "last.pt",
        good,
        tmp_path / "nope.jpg",
        corrupt,
        grey,
        "--json",
        "--figure",
        fig,
    )
    assert r.returncode == 2  # some failed (a line each), the others ran
    assert r.stderr.count("\n") == 2 and "nope.jpg" in r.stderr and "c.jpg" in r.stderr
    out = json.loads(r.stdout)
    assert [("top" in x) for x in out] == [True, False, False, True]
    top = out[0]["top"]
    assert len(top) == 3 and abs(sum(t["prob"] for t in top) - 1) < 1e-5
    assert {t["name"] for t in top} == {"apple", "leaf", "sky"}
    assert Image.open(fig).size[0] > 200


def test_kernels_cli_two_tower_blocks(trained, tmp_path):
    out = tmp_path / "k.png"
    r = run_here("kernels", trained / "run" / "checkpoints" / "last.pt", "--out", out)
    assert r.returncode == 0, r.stderr
    img = np.asarray(Image.open(out))
    # 2 blocks of 3 rows x 16 columns of 11x11 kernels, each with its colour-index bar
    # under it (pad 1, bar 2, scale 4), and an 18-pixel summary line over each block
    assert img.shape == (2 * (18 + 4 * (3 * (11 + 1 + 2 + 1) + 1)), 4 * (16 * 12 + 1), 3)
    r = run_here("kernels", trained / "run" / "checkpoints" / "last.pt", "--out", out, "--json")
    index = json.loads(r.stdout)["colour_index"]
    assert index["tower0"]["kernels"] == index["tower1"]["kernels"] == 48
    assert 0 <= index["tower0"]["mean"] <= 1 and len(index["per_kernel"]) == 96


def test_neighbors_cli_cache_and_codes(trained, tmp_path):
    query = write_image(tmp_path / "q.jpg", size=(100, 100), color=(40, 200, 60))
    out = tmp_path / "nn.png"
    args = [
        "neighbors",
        trained / "run" / "checkpoints" / "last.pt",
        "--gallery",
        trained / "store",
        "--query",
        query,
        "--k",
        "3",
        "--out",
        out,
        "--json",
    ]
    r = run_here(*args, "--codes", "16")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    nbrs = res["queries"][0]["neighbors"]
    assert len(nbrs) == 3 and nbrs[0]["distance"] <= nbrs[-1]["distance"]
    euclid = {n["index"] for n in nbrs}
    hamming = set(res["codes"]["hamming_neighbors"][0])
    assert len(hamming) == 3
    assert res["codes"]["agreement"] == pytest.approx(len(euclid & hamming) / 3)
    # the cache lives under the user's cache directory; the gallery store is never written
    assert not (trained / "store" / "features").exists()
    cache = list((tmp_path / "cache" / "alexnet" / "features").glob("*-train-*.npy"))
    assert len(cache) == 1
    feats = np.load(cache[0])
    assert feats.shape == (len(Store(trained / "store").split("train")), 4096)
    mtime = cache[0].stat().st_mtime_ns
    r = run_here(*args)
    assert r.returncode == 0 and cache[0].stat().st_mtime_ns == mtime  # reused


def test_exact_euclidean_search():
    from alexnet.results.retrieval import nearest

    g = torch.randn(50, 8)
    q = torch.randn(3, 8)
    d, i = nearest(q, g, 4, chunk=7)
    ref = torch.cdist(q, g).topk(4, largest=False)
    assert torch.equal(i, ref.indices) and torch.allclose(d, ref.values, atol=1e-4)


@pytest.mark.parametrize("size", [None, 256])
def test_export_onnx_matches(trained, tmp_path, size):
    """At 224 the pooling to 6x6 is the identity; at 256 it averages 7x7 maps, which
    ONNX has no adaptive pooling for (its exporter refused; now two averaging products)."""
    pytest.importorskip("onnxruntime")
    import onnx

    sized = ["--input-size", str(size)] if size else []
    ckpt = trained / "run" / "checkpoints" / "last.pt"
    r = run_here("export", ckpt, "--onnx", tmp_path / "m.onnx", *sized, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["checked"] and out["max_abs_diff"] < 1e-3
    image = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in image[1:]] == [3, size or 224, size or 224]


# ------------------------------------------------------------------ torchvision weights
def test_torchvision_pretrained_file_matches_torchvision(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.alexnet().eval()
    pth = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(tv.state_dict(), pth)
    img = write_image(tmp_path / "cat.jpg", size=(333, 250), color=(120, 90, 60))
    r = run_here("predict", pth, img, "--json")
    assert r.returncode == 0, r.stderr
    top = json.loads(r.stdout)[0]["top"]
    tf = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
    with torch.no_grad():
        probs = tv(tf(Image.open(img).convert("RGB"))[None]).softmax(1)[0]
    ref_p, ref_i = probs.topk(5)
    assert [t["index"] for t in top] == ref_i.tolist()
    assert np.allclose([t["prob"] for t in top], ref_p.tolist(), atol=1e-6)
    names = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    assert top[0]["name"] == names[top[0]["index"]]
    r = run_here("kernels", pth, "--out", tmp_path / "k.png")
    assert r.returncode == 0, r.stderr


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run_here("evaluate", bad, "--data", tmp_path)
    assert r.returncode == 2 and "checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_an_unreadable_checkpoint_says_why_in_one_line(tmp_path):
    torch.save({"w": torch.ones(1000)}, tmp_path / "good.pt")
    torch.save({"args": argparse.Namespace(lr=0.01)}, tmp_path / "code.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "half.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:600])
    (tmp_path / "frame.pt").write_bytes(pickle.dumps({"w": 1}, protocol=4))
    reasons = {
        "empty.pt": "the file is empty",
        "text.pt": "neither a torch.save file nor .safetensors",
        "half.pt": "a torch.save archive that is truncated or damaged",
        "frame.pt": "a pickle that torch's weights-only loader cannot read",
        "code.pt": "it holds objects of type argparse.Namespace, which a weights-only load refuses",
    }
    for name, why in reasons.items():
        with pytest.raises(UsageError) as e:
            read_file(tmp_path / name)
        assert str(e.value) == f"{tmp_path / name} is not a readable checkpoint ({why})"


# ------------------------------------------------------------------ report in a browser
@pytest.fixture(scope="module")
def report_html(trained):
    """The run's report, built once for the tests that read it and the one that renders it."""
    out = trained / "report.html"
    r = run_here("report", trained / "run", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_report_holds_every_section_and_nothing_outside_it(report_html):
    page = report_html.read_text()
    # curves, kernels, predictions, neighbours; conv1-conv5's units; occlusion
    assert page.count("data:image/png;base64,") == 10
    assert "What units see (Zeiler and Fergus, Figure 2)" in page and "<h3>conv5</h3>" in page
    assert "Occlusion (Zeiler and Fergus, Figure 7)" in page
    # the run is on no ILSVRC: no published row stands beside it, and the page says why
    words = " ".join(page.split())
    assert "No published row is shown" in words and "Table 2" not in words
    assert "tower 1 (GPU 1): colour index mean" in words and "largely colour-agnostic" in words
    # self-contained: every src/href/url() is a data: URI (base64 text may spell "http")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)|url\(\s*["']?([^"')]*)""", page)
    assert all(v.startswith("data:") for pair in refs for v in pair if v), refs


def test_report_renders_in_headless_chromium(tmp_path, request):
    browser = chromium()  # first: without one, the report is not built for nothing
    report = request.getfixturevalue("report_html")
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,3000",
            # wait for every data: image to decode and be composited before the shot:
            # on a busy machine a shot taken at first paint can miss images
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=10000",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), proc.stderr[-2000:]
    console_errors = [
        line
        for line in proc.stderr.splitlines()
        if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)
    ]
    assert console_errors == []
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert px.shape[0] >= 2000
    # not blank: the figures put many distinct colours on the page, well below the top
    body = px[400:]
    colours = len(np.unique(body.reshape(-1, 3) // 8, axis=0))
    assert colours > 200, colours
    assert (body.std(axis=(0, 1)) > 20).all()


def test_one_call_load_transforms_and_features(trained, tmp_path):
    import alexnet

    weights = alexnet.load(trained / "run" / "checkpoints" / "last.pt")
    assert weights.meta["categories"] == [c["name"] for c in Store(trained / "store").classes]
    preprocess = weights.transforms()
    img = write_image(tmp_path / "x.png", size=(90, 70), color=(40, 200, 60))
    pil = Image.open(img)
    x_pil = preprocess(pil)
    x_tensor = preprocess(torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1))
    assert x_pil.shape == (3, 224, 224) and torch.equal(x_pil, x_tensor)
    loaded = load_for_inference(trained / "run" / "checkpoints" / "last.pt")
    assert torch.allclose(x_pil[None], loaded.preprocess_files([img]))  # what predict sees
    batch = torch.stack([x_pil, x_tensor])
    assert weights.features(batch).shape == (2, 4096)
    top = weights.predict(batch, top=2)
    assert len(top) == 2 and top[0][0][0] in weights.meta["categories"]


def test_safetensors_round_trip_and_every_verb_takes_it(trained, tmp_path):
    ckpt = trained / "run" / "checkpoints" / "last.pt"
    out = tmp_path / "w.safetensors"
    r = run_here("export", ckpt, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size < 0.6 * ckpt.stat().st_size  # no optimiser state
    a, b = load_for_inference(ckpt), load_for_inference(out)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.classes == b.classes and a.class_ids == b.class_ids
    assert torch.equal(a.norm["mean"], b.norm["mean"]) and a.norm["scale"] == b.norm["scale"]
    r = run_here(
        "evaluate",
        out,
        "--data",
        trained / "store",
        *EVAL_FAST,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    r = run_here("predict", out, write_image(tmp_path / "q.jpg"), "--json")
    assert r.returncode == 0, r.stderr
    # the file's keys are the model's own: any safetensors reader, strict loading
    from safetensors.torch import load_file, save_file

    from alexnet import create_model

    net = create_model(a.model.variant, num_classes=len(a.classes))
    net.load_state_dict(load_file(out))
    assert all(torch.equal(v, a.model.state_dict()[k]) for k, v in net.state_dict().items())
    # a file of the earlier layout (model. and normalization. prefixes) still loads
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        header = json.loads(f.metadata()["alexnet"])
    old_norm = {"normalization.mean": a.norm["mean"].contiguous()}
    del header["normalization_tensors"]
    old = {f"model.{k}": v for k, v in load_file(out).items()} | old_norm
    save_file(old, tmp_path / "old.safetensors", metadata={"alexnet": json.dumps(header)})
    c = load_for_inference(tmp_path / "old.safetensors")
    assert all(torch.equal(v, c.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert torch.equal(c.norm["mean"], a.norm["mean"])


def test_torch_export_program_matches(trained, tmp_path):
    out = tmp_path / "m.pt2"
    r = run_here("export", trained / "run" / "checkpoints" / "last.pt", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["checked"] is True
    program = torch.export.load(str(out)).module()
    model = load_for_inference(trained / "run" / "checkpoints" / "last.pt").model.float()
    x = torch.randn(3, 3, 224, 224)  # another batch size than the export's
    with torch.no_grad():
        assert torch.allclose(program(x), model(x), atol=1e-4, rtol=1e-4)


def test_export_in_a_low_precision(trained, tmp_path):
    """bf16 / fp16 files: safetensors at half the size, the weights rounded once; a
    torch.export program computing in bf16; ONNX in fp16, checked against onnxruntime;
    ONNX in bf16 (which onnxruntime cannot run) refused in one line, writing nothing."""
    ckpt = trained / "run" / "checkpoints" / "last.pt"
    full, half = tmp_path / "w32.safetensors", tmp_path / "w16.safetensors"
    for out, p in ((full, "fp32"), (half, "bf16")):
        r = run_here("export", ckpt, "--out", out, "--precision", p, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["precision"] == p
    assert half.stat().st_size < 0.55 * full.stat().st_size
    a, b = load_for_inference(full), load_for_inference(half)
    for k, v in a.model.state_dict().items():
        assert torch.equal(b.model.state_dict()[k], v.to(torch.bfloat16).float()), k
    assert torch.equal(a.norm["mean"], b.norm["mean"])  # the normalisation stays float32
    r = run_here("predict", half, write_image(tmp_path / "q.jpg"), "--json")
    assert r.returncode == 0, r.stderr

    r = run_here("export", ckpt, "--out", tmp_path / "m.pt2", "--precision", "bf16", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["checked"] is True
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    model = load_for_inference(ckpt).model.to(torch.bfloat16).eval()
    x = torch.randn(3, 3, 224, 224, dtype=torch.bfloat16)  # another batch size than the export's
    with torch.no_grad():
        got, want = program(x), model(x)
    assert got.dtype == torch.bfloat16 and torch.allclose(got.float(), want.float(), atol=0.05)

    if importlib.util.find_spec("onnxruntime"):
        r = run_here("export", ckpt, "--onnx", tmp_path / "m.onnx", "--precision", "fp16", "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["checked"] and out["precision"] == "fp16"
    r = run_here("export", ckpt, "--onnx", tmp_path / "b.onnx", "--precision", "bf16")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no bf16 convolution" in r.stderr and not (tmp_path / "b.onnx").exists()
    big = torch.load(ckpt, weights_only=True)  # a weight beyond fp16's 65504
    big["model"]["features.conv1.weight"][0, 0, 0, 0] = 1e6
    torch.save(big, tmp_path / "big.pt")
    r = run_here(
        "export", tmp_path / "big.pt", "--out", tmp_path / "b.safetensors", "--precision", "fp16"
    )
    assert r.returncode == 2 and "features.conv1.weight does not fit fp16" in r.stderr, r.stderr
    r = run_here("export", ckpt, "--out", tmp_path / "b.safetensors", "--precision", "auto")
    assert r.returncode == 2 and "invalid choice" in r.stderr  # a file's type is named
    assert not (tmp_path / "b.safetensors").exists()


def test_torch_hub_loads_from_the_repository(trained):
    repo = Path(__file__).resolve().parent.parent
    fresh = torch.hub.load(str(repo), "alexnet", source="local", num_classes=7)
    assert fresh.classifier.fc8.out_features == 7
    ckpt = trained / "run" / "checkpoints" / "last.pt"
    model = torch.hub.load(str(repo), "alexnet", source="local", weights=str(ckpt))
    assert not model.training and model.classifier.fc8.out_features == 3
    weights = torch.hub.load(str(repo), "alexnet_pretrained", source="local", weights=str(ckpt))
    assert len(weights.meta["categories"]) == 3


def test_the_readme_python_section_runs(trained, tmp_path, monkeypatch):
    """The README's 'Use it from Python' block, run as written, on this test's files."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("## Use it from Python", 1)[1].split("```python", 1)[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "photos").mkdir(parents=True)
    shutil.copytree(trained / "run" / "checkpoints", tmp_path / "runs" / "photos" / "checkpoints")
    write_image(tmp_path / "cat.jpg", size=(120, 90))
    for c, color in (("apple", (220, 40, 40)), ("leaf", (40, 200, 60)), ("sky", (40, 80, 230))):
        for i in range(3):
            write_image(tmp_path / "photos" / c / f"{i}.jpg", size=(80 + i, 70), color=color)
    for wnid, color in (("n01440764", (200, 60, 30)), ("n02102040", (230, 140, 20))):
        for i in range(2):
            write_image(tmp_path / "imagenette" / wnid / f"{i}.jpg", size=(90, 80), color=color)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torchvision's file, cached
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(
        torchvision.models.alexnet().state_dict(),
        tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth",
    )
    shutil.copy(Path(__file__).resolve().parent.parent / "hubconf.py", tmp_path)  # "a clone"
    names = {}
    exec(compile(block, "README.md", "exec"), names)
    # what each line says it gives, checked against the checkpoint it was given
    (top,) = names["weights"].predict(names["batch"], top=3)
    assert len(top) == 3 and {n for n, _ in top} == {"apple", "leaf", "sky"}
    assert abs(sum(p for _, p in top) - 1) < 1e-4
    assert names["batch"].shape == (1, 3, 224, 224) and names["fc7"].shape == (1, 4096)
    assert names["names"] == ["apple", "leaf", "sky"]
    assert names["net"].classifier.fc8.out_features == 10 and not names["trained"].training
    ref = torch.load(trained / "run" / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert torch.equal(
        names["trained"].state_dict()["classifier.fc8.weight"], ref["classifier.fc8.weight"]
    )
    assert names["hub"].classifier.fc8.out_features == 10
    assert names["result"]["images"] == 9 and set(names["result"]["per_class"]) == set(
        names["names"]
    )
    assert names["subset"]["class_subset"]["classes"] == 2 and names["subset"]["images"] == 4


def test_an_ensemble_averages_its_members_probabilities(trained, tmp_path):
    from alexnet.evaluation.split import split_probabilities
    from alexnet.weights.checkpoint import save_atomic

    a = trained / "run" / "checkpoints" / "last.pt"
    obj = torch.load(a, weights_only=True)
    torch.manual_seed(3)
    obj["model"]["classifier.fc8.weight"] += torch.randn_like(obj["model"]["classifier.fc8.weight"])
    b = tmp_path / "b.pt"
    save_atomic(obj, b)
    store = trained / "store"
    r = run_here("evaluate", a, b, "--data", store, *EVAL_FAST, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    view = Store(store).split("val")
    probs = []
    for ckpt in (a, b):
        loaded = load_for_inference(ckpt)
        probs.append(
            torch.cat([p for p, _ in split_probabilities(loaded.model, view, loaded.transform())])
        )
        single = json.loads(
            run_here("evaluate", ckpt, "--data", store, *EVAL_FAST, "--json").stdout
        )
        member = next(m for m in out["members"] if m["checkpoint"] == str(ckpt))
        assert member["top1_error"] == single["top1_error"]
    tally = Tally(3)
    tally.update((probs[0] + probs[1]) / 2, torch.from_numpy(view.labels))
    assert out["nets"] == 2 and out["top1_error"] == pytest.approx(tally.result()["top1_error"])
    assert out["images"] == len(view)
    # nets trained on other classes are refused in one line
    other = dict(obj, classes=[{"index": i, "id": f"x{i}", "name": f"x{i}"} for i in range(3)])
    save_atomic(other, tmp_path / "other.pt")
    r = run_here("evaluate", a, tmp_path / "other.pt", "--data", store, *EVAL_FAST)
    assert r.returncode == 2 and "other classes" in r.stderr and r.stderr.count("\n") == 1


def _perturbed_copy(ckpt, out, seed, **fields):
    """Our checkpoint with fc8 moved by a seeded draw (another net of the same classes)."""
    from alexnet.weights.checkpoint import save_atomic

    obj = torch.load(ckpt, weights_only=True)
    torch.manual_seed(seed)
    obj["model"]["classifier.fc8.weight"] += torch.randn_like(obj["model"]["classifier.fc8.weight"])
    save_atomic({**obj, **fields}, out)
    return out


def test_predict_with_several_checkpoints_averages_their_softmax(trained, tmp_path):
    a = trained / "run" / "checkpoints" / "last.pt"
    b = _perturbed_copy(a, tmp_path / "b.pt", 5)
    image = write_image(tmp_path / "x.jpg", size=(90, 80), color=(40, 200, 60))
    missing = tmp_path / "missing.jpg"
    r = run_here("predict", a, b, image, missing, "--json", "--top", "3")
    assert r.returncode == 2 and "missing.jpg" in r.stderr  # one file bad, the other ran
    out = json.loads(r.stdout)
    assert "error" in out[1] and "members" not in out[1]
    got = {t["name"]: t["prob"] for t in out[0]["top"]}
    members = []
    for ckpt in (a, b):
        single = json.loads(run_here("predict", ckpt, image, "--json", "--top", "3").stdout)
        assert "members" not in single[0]  # one net: no ensemble fields
        members.append({t["name"]: t["prob"] for t in single[0]["top"]})
        mine = next(m for m in out[0]["members"] if m["checkpoint"] == str(ckpt))
        assert {t["name"]: t["prob"] for t in mine["top"]} == pytest.approx(members[-1])
    assert got == pytest.approx({k: (members[0][k] + members[1][k]) / 2 for k in got})
    # nets of other classes are refused in one line
    other = [{"index": i, "id": f"x{i}", "name": f"x{i}"} for i in range(3)]
    c = _perturbed_copy(a, tmp_path / "c.pt", 6, classes=other)
    r = run_here("predict", a, c, image)
    assert r.returncode == 2 and "predicts other classes than" in r.stderr
    assert "(the mean of 2 nets)" in run_here("predict", a, b, image, "--top", "1").stdout
    assert r.stderr.count("\n") == 1


def test_the_paper_rows_are_matched_by_dataset_split_crops_and_nets():
    from alexnet.results.paper_rows import matching_rows

    def names(*args):
        return [f"{r.source}: {r.model}" for r in matching_rows(*args)]

    assert names("ILSVRC-2012", "val", 10, ["paper"]) == [
        "Table 2: 1 CNN",
        "cuda-convnet2: one-GPU net, 90 epochs",
    ]
    assert names("ILSVRC-2012", "val", 1, ["caffe"]) == [
        "cuda-convnet2: one-GPU net, 90 epochs",
        "Caffe: bvlc_alexnet",
        "torchvision: alexnet",
    ]
    assert names("ILSVRC-2012", "val", 10, ["paper"] * 5) == ["Table 2: 5 CNNs"]
    assert names("ILSVRC-2012", "val", 10, ["six-conv"]) == ["Table 2: 1 CNN*"]
    assert names("ILSVRC-2012", "val", 10, ["six-conv"] * 2 + ["paper"] * 5) == ["Table 2: 7 CNNs*"]
    assert names("ILSVRC-2010", "test", 10, ["paper"]) == ["Table 1: 1 CNN"]
    assert [r.top1_error for r in matching_rows("ILSVRC-2010", "test", 1, ["paper"])] == [0.39]
    assert names("ILSVRC-2012", "val", 10, ["paper"] * 3) == []  # no 3-net row
    assert names("ILSVRC-2010", "val", 10, ["paper"]) == []  # Table 1 is on test
    assert names(None, "val", 10, ["paper"]) == []


def test_ilsvrc_2012_is_known_by_its_classes():
    from alexnet.data.imagenet import imagenet_classes
    from alexnet.results.paper_rows import store_dataset

    class Fake:
        def __init__(self, ids, kind="folder"):
            self.classes = [{"id": i} for i in ids]
            self.num_classes = len(ids)
            self.meta = {"source_kind": kind}

    wnids = [c["id"] for c in imagenet_classes()]
    assert store_dataset(Fake(wnids)) == "ILSVRC-2012"
    assert store_dataset(Fake(wnids[:-1] + ["n99999999"])) is None
    assert store_dataset(Fake(["a", "b"], "ilsvrc2010-archives")) == "ILSVRC-2010"
    assert store_dataset(Fake(["a", "b"])) is None


def test_evaluate_on_ilsvrc_2010_test_stands_beside_table_1(trained, tmp_path):
    """Table 1's protocol end to end: a tiny ILSVRC-2010 as published, prepared into
    train/val/test; a net of its classes evaluated on test with ten crops."""
    pytest.importorskip("scipy")
    from test_formats import WNIDS, _ilsvrc2010

    _ilsvrc2010(tmp_path / "src")
    r = run_here("prepare", tmp_path / "src", tmp_path / "store", "--workers", "1")
    assert r.returncode == 0, r.stderr
    classes = [{"index": i, "id": w, "name": w} for i, w in enumerate(WNIDS)]
    ckpt = _perturbed_copy(
        trained / "run" / "checkpoints" / "last.pt", tmp_path / "n.pt", 7, classes=classes
    )

    def paper(*args):
        r = run_here("evaluate", ckpt, "--data", tmp_path / "store", *EVAL_FAST, *args, "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["dataset"] == "ILSVRC-2010"
        return [(p["source"], p["top1_error"], p["top5_error"]) for p in out["paper"]]

    assert paper("--split", "test", "--crops", "10") == [("Table 1", 0.375, 0.17)]
    assert paper("--split", "test", "--crops", "1") == [("Table 1", 0.39, 0.183)]
    assert paper("--split", "val", "--crops", "10") == []
    text = run_here(
        "evaluate",
        ckpt,
        "--data",
        tmp_path / "store",
        *EVAL_FAST,
        "--crops",
        "10",
        "--split",
        "test",
    ).stdout
    assert "beside Table 1, 1 CNN (ILSVRC-2010 test): top-1 error 0.375" in text


def test_a_runs_checkpoint_says_what_it_knows_of_its_training(trained):
    meta = alexnet_load(trained / "run" / "checkpoints" / "last.pt").meta
    assert meta["store"] == str(trained / "store") and meta["recipe"] == "paper"
    assert meta["epochs_trained"] == 1 and set(meta["final"]) == {
        "val_top1_error",
        "val_top5_error",
    }
    assert meta["min_size"] == 64 and meta["num_params"] > 56_000_000
