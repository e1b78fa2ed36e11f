"""`alexnet units`: what each unit sees, on nets whose answer is known."""

import json

import pytest

import alexnet
from alexnet.model.receptive import receptive_fields
from alexnet.results import units as units_module
from conftest import prepare_store, red_detector, red_square_pictures, run_here


def test_the_receptive_fields_of_the_paper_net_by_hand():
    """size r, stride j: a k x k layer of stride s adds (k - 1) j to r and multiplies j
    by s; padding p moves the first field p j pixels out of the image."""
    f = receptive_fields(alexnet.create_model("paper").features)
    by_hand = {  # name: (size, stride, offset)
        "conv1": (11, 4, 0),  # pad1 pads right and bottom only (cuda-convnet's round-up)
        "pool1": (19, 8, 0),
        "conv2": (51, 8, -16),
        "pool2": (67, 16, -16),
        "conv3": (99, 16, -32),
        "conv4": (131, 16, -48),
        "conv5": (163, 16, -64),
        "pool5": (195, 32, -64),
    }
    for name, (size, stride, offset) in by_hand.items():
        assert (f[name].size, f[name].stride, f[name].offset) == (size, stride, offset), name
    assert f["relu1"] == f["conv1"] and f["norm2"] == f["conv2"]
    # at the border a field is clipped, not shifted: conv2's first unit sees 35 x 35
    assert f["conv2"].box(0, 0, 224) == (0, 0, 35, 35)
    assert f["conv2"].box(26, 26, 224) == (192, 192, 224, 224)
    assert f["conv1"].box(3, 5, 224) == (12, 20, 23, 31)


@pytest.fixture(scope="module")
def detector(module_dir):
    (module_dir / "pics").mkdir()
    squares = red_square_pictures(module_dir / "pics")
    return red_detector(module_dir / "red.pt"), module_dir / "pics", squares


def _two_class_store(pics, n: int, root) -> None:
    """root/store: the first n pictures in each of two classes, half held out."""
    for c in ("a", "b"):
        (root / "src" / c).mkdir(parents=True)
        for p in sorted(pics.iterdir())[:n]:
            (root / "src" / c / p.name).write_bytes(p.read_bytes())
    prepare_store(root / "src", root / "store", val_fraction=0.5)


def test_a_red_unit_finds_the_red_squares_and_its_patches_hold_them(detector, tmp_path):
    ckpt, pics, squares = detector
    out = tmp_path / "u.png"
    r = run_here(
        "units",
        ckpt,
        "--data",
        pics,
        "--layer",
        "conv1",
        "--units",
        "5",
        "--top",
        "6",
        "--out",
        out,
        "--device",
        "cpu",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    (unit,) = json.loads(r.stdout)["units"]
    assert unit["unit"] == 5 and sorted(t["image"] for t in unit["top"]) == sorted(squares)
    for t in unit["top"]:
        sy, sx = squares[t["image"]]
        top, left, bottom, right = t["box"]
        # the patch holds red: the 11 x 11 field overlaps the 20 x 20 square
        assert top < sy + 20 and sy < bottom and left < sx + 20 and sx < right, (t, sy, sx)
        assert t["activation"] > 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # and in the patches drawn: red pixels in each
    result = units_module.top_units(str(ckpt), str(pics), "conv1", units="5", top=6)
    for patch in units_module.patches(result)[0]:
        assert ((patch[..., 0] > 200) & (patch[..., 1] < 60)).any()


def test_the_running_top_k_holds_k_per_unit_whatever_the_images(detector, tmp_path, monkeypatch):
    """Memory stays bounded: batches of 2 images through 12, the state K x units."""
    ckpt, pics, squares = detector
    sizes, update = [], units_module.TopK.update

    def spy(self, values, positions, first):
        update(self, values, positions, first)
        sizes.append((len(values), tuple(self.values.shape)))

    monkeypatch.setattr(units_module.TopK, "update", spy)
    units_module.top_units(str(ckpt), str(pics), "conv1", units="4-6", top=3, batch_size=2)
    assert [n for n, _ in sizes] == [2] * 6 and all(shape == (3, 3) for _, shape in sizes[1:])


def test_fully_connected_units_see_the_whole_image_and_a_store_works(detector, tmp_path):
    ckpt, pics, _ = detector
    _two_class_store(pics, 6, tmp_path)
    r = run_here(
        "units",
        ckpt,
        "--data",
        tmp_path / "store",
        "--layer",
        "fc7",
        "--units",
        "0-1",
        "--top",
        "2",
        "--out",
        tmp_path / "u.html",
        "--device",
        "cpu",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["receptive_field"] is None and len(result["units"]) == 2
    assert all(
        t["box"] == [0, 0, 224, 224] and t["position"] is None
        for u in result["units"]
        for t in u["top"]
    )
    assert "<img src='data:image/png;base64," in (tmp_path / "u.html").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layer", "conv9"], "no layer 'conv9'"),
        (["--layer", "conv1", "--units", "90-99"], "the layer has units 0-95"),
        (["--layer", "conv1", "--top", "0"], "--top must be at least 1"),
        (["--layer", "conv1", "--out", "u.jpg"], "name it .png or .html"),
        (["--layer", "conv1", "--data", "EMPTY"], "no image files below it"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(detector, tmp_path, args, message):
    ckpt, pics, _ = detector
    (tmp_path / "empty").mkdir()
    base = {"--data": str(pics), "--out": str(tmp_path / "u.png")}
    i = 0
    while i < len(args):
        base[args[i]] = args[i + 1].replace("EMPTY", str(tmp_path / "empty"))
        if args[i] == "--out":
            base["--out"] = str(tmp_path / args[i + 1])
        i += 2
    flat = [x for kv in base.items() for x in kv]
    r = run_here("units", ckpt, *flat, "--device", "cpu")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("u.*"))


def test_info_prints_each_layers_receptive_field():
    r = run_here("info", "--json")
    fields = {row["name"]: row["receptive_field"] for row in json.loads(r.stdout)["layers"]}
    assert fields["features.conv1"] == 11 and fields["features.pool5"] == 195
    assert fields["classifier.fc6"] is None
    assert "field: the side of the input square a unit sees" in run_here("info").stdout


def test_a_store_whose_split_is_empty_is_one_line(detector, tmp_path):
    ckpt, pics, _ = detector
    _two_class_store(pics, 4, tmp_path)
    meta = json.loads((tmp_path / "store" / "meta.json").read_text())
    meta["splits"]["val"] = {"count": 0, "shards": []}
    (tmp_path / "store" / "meta.json").write_text(json.dumps(meta))
    r = run_here(
        "units",
        ckpt,
        "--data",
        tmp_path / "store",
        "--layer",
        "conv1",
        "--out",
        tmp_path / "u.png",
        "--device",
        "cpu",
    )
    assert r.returncode == 2 and "the val split has no images" in r.stderr, r.stderr
    assert not (tmp_path / "u.png").exists()
