"""Datasets as their publishers ship them: idx files, CIFAR python tarballs, ILSVRC-2012
archives (tars of tars, a flat val tar and the devkit), built here in their real layouts
from generated images; and bench prepare."""

import gzip
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from alexnet.data.store import Store
from conftest import run_here

COLORS = [(220, 40, 40), (40, 200, 60), (40, 80, 230), (230, 200, 40)]


def _jpeg(color, seed, size=(70, 50)) -> bytes:
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(color) + rng.integers(-15, 15, (size[1], size[0], 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_files_gzipped_in_a_plain_folder(tmp_path, capsys):
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        labels = np.arange(n) % 10
        images = (labels[:, None, None] * 25 + rng.integers(0, 5, (n, 28, 28))).astype(np.uint8)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(labels))  # one not gzipped
    r = run_here("prepare", root, tmp_path / "s", "--json", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["written"] == {"train": 30, "val": 10}
    store = Store(tmp_path / "s")
    assert store.meta["source_kind"] == "fashion-mnist"
    assert [c["name"] for c in store.classes][:2] == ["T-shirt/top", "Trouser"]
    val = store.split("val")
    assert list(val.labels) == list(range(10))
    # greyscale 28x28 became RGB 256x256; a brighter class stays brighter
    assert val.image(9).mean() > val.image(1).mean() + 100
    (root / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01garbage")
    r = run_here("prepare", root, tmp_path / "s2")
    assert r.returncode == 2 and "t10k-labels-idx1-ubyte" in r.stderr


def _cifar_batch(n, seed, label_key="labels"):
    rng = np.random.default_rng(seed)
    labels = [int(x) for x in rng.integers(0, 10, n)]
    data = np.stack([np.full(3072, 20 * lab, np.uint8) for lab in labels])
    return pickle.dumps({b"batch_label": b"x", label_key.encode(): labels, b"data": data}, 2)


def test_cifar10_python_tarball(tmp_path):
    root = tmp_path / "cifar"
    root.mkdir()
    names = [f"class{i}" for i in range(10)]
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        for i in range(1, 6):
            _add(tar, f"cifar-10-batches-py/data_batch_{i}", _cifar_batch(6, i))
        _add(tar, "cifar-10-batches-py/test_batch", _cifar_batch(5, 9))
        meta = pickle.dumps({b"label_names": [n.encode() for n in names]}, 2)
        _add(tar, "cifar-10-batches-py/batches.meta", meta)
    r = run_here("prepare", root, tmp_path / "s", "--json", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["written"] == {"train": 30, "val": 5}
    store = Store(tmp_path / "s")
    assert store.meta["source_kind"] == "cifar10" and store.classes[3]["name"] == "class3"
    val = store.split("val")
    for i in range(5):  # each image's grey level says its label
        assert abs(val.image(i).mean() - 20 * val.labels[i]) < 3


def test_a_cifar_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    root = tmp_path / "cifar"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (root / "cifar-10-batches-py" / name).write_bytes(pickle.dumps({b"x": Evil()}))
    r = run_here("prepare", root, tmp_path / "s")
    assert r.returncode == 2 and "not allowed" in r.stderr and "owned" not in r.stdout


# ---------------------------------------------------------------- ILSVRC-2012
WNIDS = ["n01440764", "n01443537", "n02085620"]


def _train_tar(path, per_class=4):
    with tarfile.open(path, "w") as outer:
        for c, wnid in enumerate(WNIDS):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as t:
                for i in range(per_class):
                    _add(t, f"{wnid}_{i}.JPEG", _jpeg(COLORS[c], 10 * c + i))
            _add(outer, f"{wnid}.tar", inner.getvalue())


def _meta_mat(ids: dict, id_field: str) -> bytes:
    """meta.mat's synsets: the leaves under the given IDs, then one non-leaf root."""
    import scipy.io

    dtype = [(id_field, "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    rows = [(ids[w], w, f"name of {w}, more", 0) for w in WNIDS] + [
        (1001, "n00001740", "entity", 3)
    ]
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"synsets": np.array(rows, dtype=dtype)})
    return mat.getvalue()


def _numbered_tar(path, prefix: str, classes: list[int], folder: str = "", seed: int = 100):
    with tarfile.open(path, "w") as t:
        for i, c in enumerate(classes):
            _add(t, f"{folder}{prefix}_{i + 1:08d}.JPEG", _jpeg(COLORS[c], seed + i))


def _truth(ids: dict, classes: list[int]) -> bytes:
    return "".join(f"{ids[WNIDS[c]]}\n" for c in classes).encode()


def _ilsvrc(root, per_class=4, val=6, truth_len=None, meta=True, devkit=True):
    """The three published archives, small. meta.mat holds the leaf synsets under shuffled
    ILSVRC2012_IDs and one non-leaf synset; the ground truth is in those IDs."""
    root.mkdir(parents=True, exist_ok=True)
    _train_tar(root / "ILSVRC2012_img_train.tar", per_class)
    ids = {"n02085620": 1, "n01440764": 2, "n01443537": 3}  # not the sorted-wnid order
    val_classes = [i % 3 for i in range(val)]
    _numbered_tar(root / "ILSVRC2012_img_val.tar", "ILSVRC2012_val", val_classes)
    if not devkit:
        return val_classes
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as t:
        if meta:
            _add(t, "ILSVRC2012_devkit_t12/data/meta.mat", _meta_mat(ids, "ILSVRC2012_ID"))
        text = _truth(ids, val_classes[: truth_len or val])
        _add(t, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", text)
    return val_classes


def test_ilsvrc_archives_as_downloaded(tmp_path):
    pytest.importorskip("scipy")
    val_classes = _ilsvrc(tmp_path / "imagenet")
    r = run_here("prepare", tmp_path / "imagenet", tmp_path / "s", "--json", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["written"] == {"train": 12, "val": 6}
    store = Store(tmp_path / "s")
    assert store.meta["source_kind"] == "ilsvrc2012-archives"
    assert [c["id"] for c in store.classes] == WNIDS  # indices: the sorted wnids
    assert store.classes[0]["name"] == "name of n01440764"
    val = store.split("val")
    assert list(val.labels) == val_classes  # through the devkit's IDs, not their order
    for i, c in enumerate(val_classes):  # and the pixels are those of the right files
        assert np.abs(val.image(i).reshape(-1, 3).mean(0) - COLORS[c]).max() < 12
    assert not list(tmp_path.rglob("*.JPEG"))  # nothing was extracted


@pytest.mark.parametrize(
    "fault, message",
    [
        ("truncated", "truncated"),
        ("no-meta", "no data/meta.mat"),
        ("truth-length", "5 labels for the 6 images"),
        ("no-devkit", "put ILSVRC2012_devkit_t12.tar.gz (or its folder"),
    ],
)
def test_ilsvrc_archive_faults(tmp_path, fault, message):
    pytest.importorskip("scipy")
    root = tmp_path / "imagenet"
    _ilsvrc(
        root,
        meta=fault != "no-meta",
        truth_len=5 if fault == "truth-length" else None,
        devkit=fault != "no-devkit",
    )
    if fault == "truncated":
        _truncate(root / "ILSVRC2012_img_train.tar")
    _refused_in_one_line(root, tmp_path / "s", message)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _refused_in_one_line(root, out, message):
    r = run_here("prepare", root, out)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and not out.exists()


# ---------------------------------------------------------------- ILSVRC-2010
IDS_2010 = {"n02085620": 2, "n01440764": 3, "n01443537": 1}  # not the sorted-wnid order
PATCH_COLOR = COLORS[3]  # no class's colour: a patched image is told apart by it


def _ilsvrc2010(root, devkit="archive", test_truth=True, patch=True):
    """ILSVRC-2010 as published: the train tar of per-wnid tars, val/ and test/ inside
    their flat tars, the devkit (archive or extracted) with meta.mat and the validation
    ground truth, the test ground truth beside the archives, and patch_images.tar
    replacing one training and one test image (and naming one image that does not exist)."""
    root.mkdir(parents=True, exist_ok=True)
    _train_tar(root / "ILSVRC2010_images_train.tar")
    val_classes, test_classes = [2, 0, 1, 1, 0], [1, 2, 2, 0, 1, 0, 2]
    _numbered_tar(root / "ILSVRC2010_images_val.tar", "ILSVRC2010_val", val_classes, "val/")
    _numbered_tar(
        root / "ILSVRC2010_images_test.tar", "ILSVRC2010_test", test_classes, "test/", 200
    )
    files = {
        "devkit-1.0/data/meta.mat": _meta_mat(IDS_2010, "ILSVRC2010_ID"),
        "devkit-1.0/data/ILSVRC2010_validation_ground_truth.txt": _truth(IDS_2010, val_classes),
    }
    if devkit == "archive":
        with tarfile.open(root / "ILSVRC2010_devkit-1.0.tar.gz", "w:gz") as t:
            for name, data in files.items():
                _add(t, name, data)
    elif devkit == "folder":
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    if test_truth:
        (root / "ILSVRC2010_test_ground_truth.txt").write_bytes(_truth(IDS_2010, test_classes))
    if patch:
        with tarfile.open(root / "patch_images.tar", "w") as t:
            _add(t, "patch_images/train/n01443537_2.JPEG", _jpeg(PATCH_COLOR, 1))
            _add(t, "patch_images/test/ILSVRC2010_test_00000004.JPEG", _jpeg(PATCH_COLOR, 2))
            _add(t, "patch_images/val/ILSVRC2010_val_00000099.JPEG", _jpeg(PATCH_COLOR, 3))
    return val_classes, test_classes


def _colour_of(split, i):
    mean = split.image(i).reshape(-1, 3).mean(0)
    return min(range(len(COLORS)), key=lambda c: np.abs(mean - COLORS[c]).max())


@pytest.mark.parametrize("devkit", ["archive", "folder"])
def test_ilsvrc2010_prepares_into_train_val_and_test(tmp_path, devkit):
    pytest.importorskip("scipy")
    val_classes, test_classes = _ilsvrc2010(tmp_path / "ilsvrc2010", devkit=devkit)
    r = run_here("prepare", tmp_path / "ilsvrc2010", tmp_path / "s", "--json", "--workers", "2")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["written"] == {"train": 12, "val": 5, "test": 7}
    assert summary["patched"] == 2
    assert [s["reason"] for s in summary["skipped"]] == ["replaces no image of the archives"]
    store = Store(tmp_path / "s")
    assert store.meta["source_kind"] == "ilsvrc2010-archives"
    assert [c["id"] for c in store.classes] == WNIDS  # the sorted wnids, not the IDs' order
    assert store.classes[2]["name"] == "name of n02085620"
    for name, classes in (("val", val_classes), ("test", test_classes)):
        split = store.split(name)
        assert list(split.labels) == classes, name  # image by image, through the IDs
        assert split.keys == [
            f"{name}/ILSVRC2010_{name}_{i + 1:08d}.JPEG" for i in range(len(classes))
        ]
        patched = {3} if name == "test" else set()
        for i, c in enumerate(classes):  # each label sits on its own image's pixels
            assert _colour_of(split, i) == (3 if i in patched else c), (name, i)
    train = store.split("train")
    replaced = train.keys.index("train/n01443537/n01443537_2.JPEG")
    colours = [_colour_of(train, i) for i in range(len(train))]
    assert colours[replaced] == 3
    assert np.delete(colours, replaced).tolist() == np.delete(train.labels, replaced).tolist()


@pytest.mark.parametrize(
    "fault, message",
    [
        (
            "no-test-truth",
            "ILSVRC2010_images_test.tar needs its labels: ILSVRC2010_test_ground_truth.txt",
        ),
        ("no-devkit", "put ILSVRC2010_devkit-1.0.tar.gz (or its folder devkit-1.0) beside it"),
        ("no-train", "but no ILSVRC2010_images_train.tar"),
        ("truncated-test", "ILSVRC2010_images_test.tar is truncated"),
        ("truncated-patch", "patch_images.tar is truncated"),
        ("non-leaf", "names ILSVRC2010_ID 1001, which is no leaf synset"),
        ("short-truth", "ILSVRC2010_test_ground_truth.txt has 6 labels for the 7 images"),
    ],
)
def test_ilsvrc2010_faults_name_the_piece(tmp_path, fault, message):
    pytest.importorskip("scipy")
    root = tmp_path / "ilsvrc2010"
    _ilsvrc2010(
        root,
        devkit="none" if fault == "no-devkit" else "archive",
        test_truth=fault != "no-test-truth",
    )
    truth = root / "ILSVRC2010_test_ground_truth.txt"
    if fault == "no-train":
        (root / "ILSVRC2010_images_train.tar").unlink()
    if fault == "truncated-test":
        _truncate(root / "ILSVRC2010_images_test.tar")
    if fault == "truncated-patch":
        _truncate(root / "patch_images.tar")
    if fault == "non-leaf":
        truth.write_text(truth.read_text().replace("3\n", "1001\n", 1))
    if fault == "short-truth":
        truth.write_text("".join(truth.read_text().splitlines(keepends=True)[:6]))
    _refused_in_one_line(root, tmp_path / "s", message)


def test_bench_prepare_reports_the_coordinator_and_the_workers(image_folder):
    r = run_here("bench", "prepare", image_folder, "--workers", "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["images"] == 24 and out["img_s"] > 0
    assert out["coordinator_cpu_ms_per_image"] > 0 and out["workers_cpu_ms_per_image"] > 0
    ratio = out["workers_cpu_ms_per_image"] / out["coordinator_cpu_ms_per_image"]
    assert out["workers_per_coordinator"] == pytest.approx(ratio, rel=0.02, abs=0.06)
    assert out["coordinator_peak_rss_mib"] > 0


def test_idx_sets_are_told_apart_by_their_labels_not_their_folder(tmp_path):
    from alexnet.data.formats import IDX_SIGNATURES, _idx_kind

    fashion = np.array([*IDX_SIGNATURES["fashion-mnist"], 1, 2])
    assert _idx_kind(fashion, tmp_path / "data" / "train-images-idx3-ubyte") == "fashion-mnist"
    digits = np.array(IDX_SIGNATURES["mnist"])
    assert _idx_kind(digits, tmp_path / "fashion" / "train-images-idx3-ubyte") == "mnist"
    other = np.arange(10) % 10  # a subset or another set: its folder's name decides
    assert _idx_kind(other, tmp_path / "my-fashion" / "train-images-idx3-ubyte") == "fashion-mnist"
    assert _idx_kind(other, tmp_path / "data" / "train-images-idx3-ubyte") == "mnist"
