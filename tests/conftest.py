import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The suite's processes give freed memory back: the CLI's allocator tuning (keep freed
# blocks for speed, runtime/allocator.py) would let this one long process, and every
# process it starts, hold its peak heap for the rest of the run. Tests time nothing.
os.environ.setdefault("ALEXNET_MALLOC", "default")
# Under pytest-xdist (scripts/test runs two workers) the cores are shared out among the
# workers, before torch is imported: OpenMP threads beyond the cores spin against each
# other. The processes a test starts inherit it, so a run and its resumption (one in
# this process, one in a child) compute with the same threads, as bit-exact resumes need.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)

# The files whose tests hold several paper nets at once (multi-process training, the
# interleaved benchmarks, ablation arms) share one xdist group, so they run one after
# another on one worker and never beside each other; every other file is its own group
# (scripts/test: --dist loadgroup), so a module's fixtures are built once.
HEAVY = {"test_parallel.py", "test_bench.py", "test_ablate.py"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("heavy" if name in HEAVY else name))


def pytest_collection_finish(session):
    """Every test module is imported by now: freeze what the imports made (torch's
    hundreds of thousands of objects) out of the collector's sight, so that the
    gc.collect after each test scans only what the tests made: 0.2 s a scan otherwise,
    a minute over the suite."""
    import gc

    gc.collect()
    gc.freeze()


def _malloc_trim():
    """glibc's malloc_trim, or None (another C library, another system)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL("libc.so.6").malloc_trim
    return None


_MALLOC_TRIM = _malloc_trim() if sys.platform.startswith("linux") else None


@pytest.fixture(autouse=True)
def _give_memory_back():
    """After each test, hand the heap's freed pages back to the system: a worker runs a
    hundred tests, and glibc keeps what each one freed unless asked."""
    yield
    if _MALLOC_TRIM is not None:
        import gc

        gc.collect()
        _MALLOC_TRIM(0)


HOLDS_THE_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)  # as a live run holds it
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def lock_held_by_another_process(path: Path):
    """A live process holding `path` as a training run holds its RUN/.lock (a POSIX
    record lock, which no other process, a test's own included, can take meanwhile);
    yields its pid, and ends it on leaving."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDS_THE_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.communicate("")


def run_here(*args):
    """`alexnet ARGS` in this process (faster than a subprocess: torch is imported once),
    with the same result object as run_cli. For tests where the process itself is not
    the point (kills, environment variables, torchrun)."""
    from alexnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_cli(*args, env=None, timeout=600, cwd=None):
    """`alexnet ARGS` as a real process: for exit codes under a kill, environment
    variables, and anything whose process is the point."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "alexnet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )


def stopped_and_resumed(args, tmp_path, stop_after=3):
    """(uninterrupted, stopped after `stop_after` steps and resumed): the last.pt dicts of
    two runs of `alexnet train ARGS`, the second resumed in this process's CPU threads."""
    import torch

    assert run_here("train", *args, "--out", tmp_path / "full").returncode == 0
    r = run_here("train", *args, "--out", tmp_path / "half", "--max-steps", stop_after)
    assert r.returncode == 0, r.stderr
    r = run_here("train", "--resume", tmp_path / "half", "--device", "cpu", "--workers", "0")
    assert r.returncode == 0, r.stderr
    return tuple(
        torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True)
        for run in ("full", "half")
    )


# `alexnet evaluate` on one crop, in this process's CPU threads: what tests that only
# need an evaluation to run (not its numbers) pass
# evaluate, fast and exact: the centre crop, no loader processes, float32 (auto would be
# bf16 on a CPU with AMX, and the tests compare with float32 references)
EVAL_FAST = ("--crops", "1", "--workers", "0", "--device", "cpu", "--precision", "fp32")
# train on the CPU in this process's threads, no report, small validation batches
TRAIN_FAST = ["--device", "cpu", "--workers", "0", "--no-report", "--eval-batch-size", "8"]
# and the tiny stores' recipe: four images a step of the five-epoch AdamW preset
TRAIN_TINY = [*TRAIN_FAST, "--batch-size", "4", "--recipe", "demo"]


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    """A tmp dir shared by one module's tests and removed when they end (a run directory
    holds ~0.5 GB: the suite must fit a small disk)."""
    root = tmp_path_factory.mktemp("module")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def prepare_store(src, out, **config):
    """A store prepared from `src` through the library: one worker, no progress bar and a
    quarter of each class held out, unless `config` says otherwise (PrepareConfig's fields)."""
    from alexnet.data.config import PrepareConfig
    from alexnet.data.prepare import prepare

    config = {"val_fraction": 0.25, "workers": 1, "progress": False, **config}
    return prepare(PrepareConfig(src=str(src), out=str(out), **config))


def write_image(path: Path, size=(64, 48), color=(200, 30, 30), mode="RGB", fmt=None, **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8) + np.array(color, dtype=np.uint8)
    arr = np.clip(arr.astype(int) + rng.integers(-10, 10, arr.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt, **save)
    return path


@pytest.fixture
def image_folder(tmp_path):
    """Three classes of small real JPEG/PNG files, at varied depths and extension cases."""
    root = tmp_path / "src"
    colors = {"apple": (220, 40, 40), "leaf": (40, 200, 60), "sky": (40, 80, 230)}
    for ci, (name, color) in enumerate(colors.items()):
        for i in range(8):
            sub = root / name / ("nested" if i % 3 == 0 else "")
            ext = [".jpg", ".JPEG", ".png", ".Jpg"][i % 4]
            fmt = "PNG" if ext == ".png" else "JPEG"
            write_image(
                sub / f"{name}{i}{ext}", size=(60 + 7 * i, 40 + 5 * ci), color=color, fmt=fmt
            )
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# --- shared nets, pictures and the browser ------------------------------------------
RED, GREY = (255, 0, 0), (128, 128, 128)


def red_detector(path):
    """A paper net whose conv1 unit 5 answers red (R up, G and B down, over its 11 x 11)
    and stays silent on grey; the other conv1 units are zero. Raw 0..255 inputs."""
    import torch

    import alexnet
    from alexnet.weights.checkpoint import Checkpoint, save_atomic

    torch.manual_seed(0)
    net = alexnet.create_model("paper", num_classes=2, init="kaiming")
    with torch.no_grad():
        net.features.conv1.weight.zero_()
        net.features.conv1.bias.zero_()
        net.features.conv1.weight[5, 0] = 1.0
        net.features.conv1.weight[5, 1:] = -1.0
    save_atomic(
        Checkpoint(
            model=net.state_dict(),
            variant="paper",
            classes=[{"index": i, "id": str(i), "name": f"c{i}"} for i in range(2)],
            normalization={"kind": "mean-image", "mean": torch.zeros(256, 256, 3)},
            model_options={"init": "kaiming"},
        ).to_dict(),
        path,
    )
    return path


def red_square_pictures(root, n=12):
    """n grey 256 x 256 pictures; the odd ones hold a 20-pixel red square inside the
    central 224 crop. Returns the names of those with a square, and where it is."""
    rng = np.random.default_rng(0)
    squares = {}
    for i in range(n):
        arr = np.zeros((256, 256, 3), np.uint8) + np.array(GREY, np.uint8)
        if i % 2:
            y, x = (int(v) for v in rng.integers(16, 240 - 20, 2))
            arr[y : y + 20, x : x + 20] = RED
            squares[f"p{i:02d}.png"] = (y - 16, x - 16)  # in the 224 crop's coordinates
        Image.fromarray(arr).save(root / f"p{i:02d}.png")
    return squares


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is required in CI (installed by .ci/run)")
    pytest.skip("no chromium to render the page")
