"""The CUDA path: what the CPU suite cannot show. Skipped cleanly without a GPU.

Tolerances: float32 on a GPU as on a CPU, except where cuDNN's convolution algorithms
(TF32 off here) reorder sums; bf16/fp16 as stated in test_lrn.py; nvjpeg's decoder
against libjpeg-turbo's by mean and max level differences (its IDCT and chroma
upsampling are not libjpeg-turbo's).
"""

import json

import pytest
import torch

from alexnet.data.augment import BatchTransform, crop_flip, draw_train_params
from alexnet.data.store import Store, decode_jpeg_batch
from alexnet.model import create_model
from alexnet.model.lrn import LocalResponseNorm
from conftest import prepare_store, run_cli
from test_lrn import ALPHA, BETA, K, N, assert_follows_formula

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


def _store(image_folder, out, fmt):
    prepare_store(image_folder, out, workers=2, format=fmt)
    return Store(out)


@pytest.mark.parametrize(
    "dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)]
)
@pytest.mark.parametrize("groups", [1, 2])
def test_lrn_on_cuda_matches_the_formula(dtype, rtol, groups):
    lrn = LocalResponseNorm(N, ALPHA, BETA, K, groups=groups)
    assert_follows_formula(lrn, dtype, rtol, groups, device="cuda", fmt=torch.channels_last)


def test_augmentation_gather_on_cuda_equals_cpu_slicing():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 256, 256, 3), dtype=torch.uint8, generator=g)
    p = draw_train_params(6, g)
    assert torch.equal(crop_flip(images.cuda(), p).cpu(), crop_flip(images, p))
    mean = torch.rand(256, 256, 3) * 255
    eigval, eigvec = torch.tensor([0.2, 0.02, 0.005]), torch.linalg.qr(torch.randn(3, 3))[0]
    cpu = BatchTransform(mean, eigval, eigvec)(images, p)
    gpu = BatchTransform(mean, eigval, eigvec, device="cuda")(images, p)
    assert gpu.is_cuda and gpu.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-3)


def test_nvjpeg_decoding_close_to_libjpeg_turbo(image_folder, tmp_path):
    split = _store(image_folder, tmp_path / "store", "jpeg").split("train")
    data, lengths = split.encoded_batch(range(len(split)))
    cpu = decode_jpeg_batch(torch.from_numpy(data), torch.from_numpy(lengths))
    gpu = decode_jpeg_batch(torch.from_numpy(data), torch.from_numpy(lengths), device="cuda")
    assert gpu.is_cuda and gpu.shape == cpu.shape == (len(split), 256, 256, 3)
    diff = (gpu.cpu().int() - cpu.int()).abs()
    assert diff.float().mean() < 1.0 and diff.max() <= 32, (diff.float().mean(), diff.max())


def test_paper_model_bf16_channels_last_close_to_fp32():
    torch.manual_seed(0)
    model = create_model("paper", num_classes=10).eval()
    x = torch.randn(4, 3, 224, 224) * 50
    with torch.no_grad():
        ref = model.double()(x.double())
        m = model.float().cuda().to(memory_format=torch.channels_last)
        xc = x.cuda().contiguous(memory_format=torch.channels_last)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        fp32 = m(xc).double().cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = m(xc).double().cpu()
    scale = ref.abs().max()
    assert (fp32 - ref).abs().max() < 1e-4 * scale
    assert (bf16 - ref).abs().max() < 5e-2 * scale


@pytest.mark.parametrize("fmt,extra", [("raw", []), ("jpeg", ["--compile"])])
def test_train_on_cuda_and_the_checkpoint_loads_on_cpu(image_folder, tmp_path, fmt, extra):
    _store(image_folder, tmp_path / "store", fmt)
    run = tmp_path / "run"
    r = run_cli(
        "train",
        "--data",
        tmp_path / "store",
        "--out",
        run,
        "--device",
        "cuda",
        "--precision",
        "bf16",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--workers",
        "1",
        "--no-report",
        "--recipe",
        "demo",
        *extra,
    )
    assert r.returncode == 0, r.stderr
    env = json.loads((run / "environment.json").read_text())
    assert "cuda" in json.dumps(env)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(s)["train_loss"] > 0 for s in lines)
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    model = create_model("paper", num_classes=3)
    model.load_state_dict(ckpt["model"])  # plain names: compile's wrapper unwrapped
    r = run_cli(
        "evaluate",
        run / "checkpoints" / "last.pt",
        "--data",
        tmp_path / "store",
        "--device",
        "cpu",
        "--json",
    )
    assert r.returncode == 0, r.stderr


def test_bench_end_to_end_on_cuda_decodes_on_the_gpu(image_folder, tmp_path):
    _store(image_folder, tmp_path / "store", "jpeg")
    r = run_cli(
        "bench",
        "train",
        "--data",
        tmp_path / "store",
        "--source",
        image_folder,
        "--device",
        "cuda",
        "--batch-size",
        "4",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["decode"] == "device" and out["precision"] == "bfloat16" and "gpu" in out
    assert out["ours_img_s"] > 0 and out["torchvision_img_s"] > 0


@two_gpus
def test_model_parallel_on_two_gpus_over_nccl():
    r = run_cli(
        "bench",
        "train",
        "--model-parallel",
        "2",
        "--device",
        "cuda",
        "--batch-size",
        "8",
        "--steps",
        "2",
        "--rounds",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["backend"] == "nccl" and len(out["gpus"]) == 2 and out["model_parallel_img_s"] > 0
