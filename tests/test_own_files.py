"""Where users bring their own things: a bare state_dict from another training loop, a
run killed and resumed at once, a folder of one image per class, the fast kernels from
Python, and files that claim more than they hold."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import alexnet
from alexnet.cli import main
from alexnet.runtime.errors import Notice, UsageError
from alexnet.weights.rundir import RunDir
from conftest import EVAL_FAST, TRAIN_TINY, lock_held_by_another_process, prepare_store, write_image

COLORS = {"apple": (220, 40, 40), "leaf": (40, 200, 60), "sky": (40, 80, 230)}
TRAIN = TRAIN_TINY


def _folder(root, per_class: int):
    for name, color in COLORS.items():
        for i in range(per_class):
            write_image(root / name / f"{name}{i}.jpg", size=(60 + 7 * i, 50), color=color)
    return root


@pytest.fixture(scope="module")
def store(module_dir):
    prepare_store(_folder(module_dir / "src", 8), module_dir / "store")
    return module_dir / "store"


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _paper_net(classes: int = 3):
    torch.manual_seed(0)
    return alexnet.create_model("paper", num_classes=classes, init="kaiming")


# --- a crash, then an immediate resume ---------------------------------------------

HOLDER = """
import os, signal, sys, time
from alexnet.weights.rundir import RunDir
RunDir(sys.argv[1]).lock()
child = os.fork()
if child == 0:  # a DataLoader worker, which outlives its killed parent for a while
    os.close(1); os.close(2)
    time.sleep(60)
    os._exit(0)
print(os.getpid(), child, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_surviving_workers_do_not_hold_its_directory(tmp_path):
    """kill -9 of a run leaves its forked workers alive for a few seconds: the next run
    takes the directory at once, and says whose lock it took over."""
    run = tmp_path / "run"
    run.mkdir()
    p = subprocess.run(
        [sys.executable, "-c", HOLDER, str(run)], capture_output=True, text=True, timeout=120
    )
    dead, worker = map(int, p.stdout.split())
    try:
        os.kill(worker, 0)  # the worker still lives
        lines = []
        rd = RunDir(run)
        rd.lock(say=lines.append)
        rd.unlock()
        assert lines == [
            f"{run}: taking over the lock of pid {dead}, which ended without releasing it"
        ]
    finally:
        os.kill(worker, signal.SIGKILL)


def test_a_live_run_still_keeps_its_directory(tmp_path):
    (tmp_path / "run").mkdir()
    with lock_held_by_another_process(tmp_path / "run" / ".lock") as pid:
        with pytest.raises(UsageError, match=f"pid {pid}"):
            RunDir(tmp_path / "run").lock()


def _unstarted_run(store, run) -> None:
    """What a run killed before its first checkpoint leaves: its config, environment and
    step log, no checkpoint, no finished epoch."""
    assert main(["train", "--data", str(store), "--out", str(run), "--max-steps", "1", *TRAIN]) == 0
    for name in ("checkpoints/last.pt", "metrics.jsonl"):
        (run / name).unlink()
    (run / ".lock").write_text("999999")  # the killed process's pid, never released


@pytest.mark.parametrize("how", ["again", "resume"])
def test_a_run_killed_before_its_first_checkpoint_starts_afresh(store, tmp_path, capsys, how):
    run = tmp_path / "run"
    _unstarted_run(store, run)
    capsys.readouterr()
    again = ["train", "--data", store, "--out", run, "--max-steps", "1", *TRAIN]
    resume = ["train", "--resume", run, "--max-steps", "1", "--device", "cpu", "--workers", "0"]
    code, _, err = cli(capsys, *(again if how == "again" else resume))
    assert code == 0, err
    assert f"{run}: its run stopped before its first checkpoint; starting it afresh" in err
    assert (run / "checkpoints" / "last.pt").is_file()
    assert json.loads((run / "config.json").read_text())["batch_size"] == 4


def test_a_checkpoint_without_its_config_is_not_resumed_with_defaults(store, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(store), "--out", str(run), "--max-steps", "1", *TRAIN]) == 0
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    ckpt["config"] = {}
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    capsys.readouterr()
    code, _, err = cli(capsys, "train", "--resume", run, "--device", "cpu", "--workers", "0")
    assert code == 2 and "last.pt: damaged checkpoint: its training config has no 'data'" in err


def test_a_resumed_run_keeps_how_it_ran_unless_told(store, tmp_path, capsys):
    run = tmp_path / "run"
    first = ["--max-steps", "1", "--checkpoint-every", "1", "--log-every", "1", *TRAIN]
    assert main(["train", "--data", str(store), "--out", str(run), *first]) == 0

    def resumed(*flags) -> dict:
        capsys.readouterr()
        code, _, err = cli(capsys, "train", "--resume", run, *flags)
        assert code == 0, err
        return json.loads((run / "config.json").read_text())

    cfg = resumed("--max-steps", "2")  # after a crash: the same command, nothing else
    assert (cfg["checkpoint_every"], cfg["log_every"], cfg["report"]) == (1, 1, False)
    assert (cfg["workers"], cfg["device"], cfg["model_parallel"]) == (2, "auto", 1)  # here
    assert cfg["max_steps"] == 2  # this command's own limit
    cfg = resumed("--max-steps", "3", "--checkpoint-every", "0", "--log-every", "5")
    assert (cfg["checkpoint_every"], cfg["log_every"], cfg["report"]) == (0, 5, False)
    cfg = resumed("--max-steps", "4")
    assert (cfg["checkpoint_every"], cfg["log_every"]) == (0, 5)


# --- bare state_dicts ----------------------------------------------------------------


def test_a_bare_state_dict_is_evaluated_with_the_stores_classes(store, tmp_path, capsys):
    torch.save(_paper_net().state_dict(), tmp_path / "mine.pth")
    code, out, err = cli(
        capsys, "evaluate", tmp_path / "mine.pth", "--data", store, *EVAL_FAST, "--json"
    )
    assert code == 0, err
    assert sorted(json.loads(out)["per_class"]) == sorted(COLORS)
    assert "a bare state_dict, read as the paper net with 3 classes" in err


def test_a_bare_state_dict_takes_the_stores_mean_image(store, tmp_path):
    """The paper's preprocessing: the store's mean image subtracted, as our runs do."""
    from alexnet.data.store import Store

    torch.save(_paper_net().state_dict(), tmp_path / "mine.pth")
    with pytest.warns(Notice):
        loaded = alexnet.load(tmp_path / "mine.pth").loaded
    assert loaded.norm["mean"].shape == (3,)  # ImageNet's channel means, until a store
    loaded.check_store(Store(store))
    assert torch.equal(loaded.norm["mean"], torch.from_numpy(Store(store).stats.mean))
    assert loaded.classes == [c["name"] for c in Store(store).classes]


def test_wrapped_and_prefixed_state_dicts_are_read(tmp_path, capsys):
    """A LightningModule's checkpoint ({"state_dict": {"model.KEY": ...}}), DDP's and
    torch.compile's prefixes; the variant from the shapes."""
    net = alexnet.create_model("one-tower", num_classes=5)
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "lightning.ckpt")
    six = alexnet.create_model("six-conv", num_classes=4).state_dict()
    torch.save({f"module._orig_mod.{k}": v for k, v in six.items()}, tmp_path / "six.pt")
    with pytest.warns(Notice):
        one = alexnet.load(tmp_path / "lightning.ckpt")
        grown = alexnet.load(tmp_path / "six.pt")
    assert (one.meta["variant"], len(one.meta["categories"])) == ("one-tower", 5)
    assert (grown.meta["variant"], len(grown.meta["categories"])) == ("six-conv", 4)
    x = torch.randn(1, 3, 224, 224)
    assert torch.allclose(one.model(x), net.eval()(x), rtol=1e-4, atol=1e-6)


def test_a_safetensors_header_gives_classes_and_inputs(tmp_path, capsys):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in _paper_net().state_dict().items()}
    header = {"format": "pt", "classes": '["cat", "dog", "fox"]', "mean": "[0.5, 0.4, 0.3]"}
    header["std"] = "[0.25, 0.25, 0.2]"
    save_file(state, tmp_path / "mine.safetensors", metadata=header)
    image = write_image(tmp_path / "x.jpg", size=(80, 60))
    code, out, err = cli(capsys, "predict", tmp_path / "mine.safetensors", image, "--json")
    assert code == 0, err
    assert {t["name"] for t in json.loads(out)[0]["top"]} == {"cat", "dog", "fox"}
    with pytest.warns(Notice):
        loaded = alexnet.load(tmp_path / "mine.safetensors").loaded
    assert torch.allclose(loaded.norm["mean"], torch.tensor([0.5, 0.4, 0.3]) * 255)
    assert torch.allclose(loaded.norm["std"], torch.tensor([0.25, 0.25, 0.2]) * 255)


def test_a_state_dict_that_fits_no_net_is_refused_naming_the_nearest(tmp_path, capsys):
    state = alexnet.create_model("one-tower", num_classes=3).state_dict()
    state["classifier.fc7.weight"] = torch.zeros(10, 4096)
    torch.save(state, tmp_path / "odd.pth")
    image = write_image(tmp_path / "x.jpg")
    code, _, err = cli(capsys, "predict", tmp_path / "odd.pth", image)
    assert code == 2 and err.count("\n") == 1
    assert (
        "fits none of alexnet's nets" in err
        and "as the one-tower net: tensor classifier.fc7" in err
    )


@pytest.mark.parametrize(
    "odd, message",
    [
        (lambda t: t.to(torch.int64), "holds torch.int64, not weights"),
        (lambda t: t.to(torch.complex64), "holds torch.complex64, not weights"),
        (lambda t: t.to_sparse(), "is a torch.sparse_coo tensor, not numbers"),
        (lambda t: torch.empty(t.shape, device="meta"), "is a meta tensor, not numbers"),
    ],
    ids=["int", "complex", "sparse", "meta"],
)
def test_a_weight_that_is_not_numbers_is_refused_in_one_line(tmp_path, capsys, odd, message):
    state = _paper_net().state_dict()
    state["classifier.fc8.bias"] = odd(state["classifier.fc8.bias"])
    torch.save(state, tmp_path / "odd.pth")
    code, _, err = cli(capsys, "predict", tmp_path / "odd.pth", write_image(tmp_path / "x.jpg"))
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_a_tensor_claiming_more_than_its_file_holds_is_refused(store, tmp_path, capsys):
    """A stride-0 view passes every shape check and would be read or copied whole."""
    run = tmp_path / "run"
    assert main(["train", "--data", str(store), "--out", str(run), "--max-steps", "1", *TRAIN]) == 0
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    ckpt["model"]["classifier.fc7.weight"] = torch.zeros(1).expand(4096, 4096)
    torch.save(ckpt, tmp_path / "hollow.pt")
    capsys.readouterr()
    code, _, err = cli(capsys, "predict", tmp_path / "hollow.pt", write_image(tmp_path / "x.jpg"))
    assert code == 2
    assert (
        "tensor model.classifier.fc7.weight claims 16,777,216 numbers where the file holds 1" in err
    )


# --- folders, classes, kernels ----------------------------------------------------------


def test_a_folder_of_one_image_per_class_is_evaluated_whole(tmp_path, capsys):
    folder = _folder(tmp_path / "photos", 1)
    torch.save(_paper_net().state_dict(), tmp_path / "mine.pth")
    code, out, err = cli(
        capsys, "evaluate", tmp_path / "mine.pth", "--data", folder, *EVAL_FAST, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["images"] == 3


def test_no_net_of_zero_classes():
    with pytest.raises(ValueError, match="num_classes must be between 1"):
        alexnet.create_model("paper", num_classes=0)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import hubconf

    with pytest.raises(ValueError, match="num_classes must be between 1"):
        hubconf.alexnet(num_classes=0)


def test_create_model_puts_in_the_fast_kernels_when_asked():
    from alexnet.kernels.lrn import FastLRN
    from alexnet.model.lrn import LocalResponseNorm

    plain = _paper_net(10)
    fast = alexnet.create_model("paper", num_classes=10, kernels="auto")
    fast.load_state_dict(plain.state_dict())
    assert any(isinstance(m, FastLRN) for m in fast.modules())
    assert not any(type(m) is LocalResponseNorm for m in fast.modules())
    x = torch.randn(2, 3, 224, 224)
    plain.eval(), fast.eval()
    assert torch.allclose(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    alexnet.plain(fast)
    assert not any(isinstance(m, FastLRN) for m in fast.modules())


def test_a_long_file_name_is_cut_in_the_middle_with_an_ellipsis():
    from alexnet.results.figures import fit_title

    title = fit_title("n02110185_Siberian_husky.JPEG")
    assert len(title) == 28 and title.startswith("n0211") and title.endswith("husky.JPEG")
    assert "…" in title and fit_title("short.jpg") == "short.jpg"


def test_a_run_says_its_recipe_first_and_its_final_accuracy_last(store, tmp_path, capsys):
    args = ["--data", store, "--out", tmp_path / "run", "--epochs", "1", *TRAIN]
    code, out, err = cli(capsys, "train", *args)
    assert code == 0, err
    said = [line for line in err.splitlines() if not line.startswith("epoch")]
    assert said[:2] == [said[0], "recipe: demo, as asked"] and said[0].startswith("plan: ")
    last = out.strip().splitlines()[-1]
    error = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["val_top1_error"]
    assert last.startswith(f"final val accuracy {1 - error:.1%} (top-1 error {error:.3f}")


def test_a_batch_larger_than_the_data_names_the_flag(store, tmp_path, capsys):
    args = ["--data", store, "--out", tmp_path / "run", *TRAIN, "--batch-size", "500"]
    code, _, err = cli(capsys, "train", *args)
    assert code == 2 and "--batch-size 500" in err and "give a smaller --batch-size" in err
