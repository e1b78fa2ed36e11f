"""`alexnet bench train`: training and inference img/s of our paper net against the
naive eager paper net and torchvision's alexnet, interleaved in one run."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..model import create_model
from ..model.net import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE
from ..runtime.allocator import allocator_tuned
from ..runtime.device import autocast_dtype, cpu_info, pick_device, precision_name
from .common import BenchResult, Runner, check_counts, check_fits, interleaved

MODELS = {  # name -> label in the printed table
    "ours": "ours (fast LRN)",
    "naive": "naive (nn.LocalResponseNorm)",
    "torchvision": "torchvision.models.alexnet",
    "no_lrn": "paper net without LRN (bound)",
}
# timed beside the others when the bench's precision is a low one: its float32 baseline
FP32_MODELS = {"ours_fp32": "ours in fp32", "no_lrn_fp32": "paper net without LRN, fp32"}


@dataclass
class StepBench(BenchResult):
    device: str
    batch_size: int
    steps: int
    rounds: int
    precision: str
    compile: bool
    threads: int
    malloc_tuned: bool
    gpu: str | None
    ours_img_s: float
    naive_img_s: float
    torchvision_img_s: float
    no_lrn_img_s: float
    ours_infer_img_s: float
    naive_infer_img_s: float
    torchvision_infer_img_s: float
    no_lrn_infer_img_s: float
    ratio_vs_naive: float
    ratio_vs_torchvision: float
    lrn_overhead: float  # time per image spent in LRN, relative to the net without it
    lrn_overhead_infer: float  # the same at inference, where LRN is a larger share
    cpu: dict = field(default_factory=dict)  # model, ISA, native bf16 units (runtime.device)
    # with a low precision: float32 runs in the same rounds, and the speed-ups over them
    fp32: dict = field(default_factory=dict)
    top_operators: list[dict] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"{self.device}, batch {self.batch_size}, best of {self.rounds} interleaved "
            f"rounds, {self.precision}, channels_last, {self.threads} threads"
            f"{', compiled' if self.compile else ''}",
            f"{'model':<34}{'train img/s':>12}{'infer img/s':>13}",
        ]
        for name, label in MODELS.items():
            out.append(
                f"{label:<34}{getattr(self, name + '_img_s'):>12.2f}"
                f"{getattr(self, name + '_infer_img_s'):>13.2f}"
            )
        for name, label in FP32_MODELS.items() if self.fp32 else ():
            out.append(
                f"{label:<34}{self.fp32[name + '_img_s']:>12.2f}"
                f"{self.fp32[name + '_infer_img_s']:>13.2f}"
            )
        out.append(
            f"ours / naive: {self.ratio_vs_naive:.2f}x, ours / torchvision: "
            f"{self.ratio_vs_torchvision:.2f}x, LRN overhead {self.lrn_overhead:.1%} "
            f"of the no-LRN net ({self.lrn_overhead_infer:.1%} at inference)"
        )
        if self.fp32:
            out.append(
                f"ours in {self.precision} / ours in fp32: training "
                f"{self.fp32['speedup_train']:.2f}x, inference {self.fp32['speedup_infer']:.2f}x"
            )
        if self.cpu:
            c = self.cpu
            units = [f for f in ("amx_bf16", "avx512_bf16") if c.get(f)] or ["no native bf16"]
            out.append(f"cpu: {c['cpu_model']}, {c['cpu_capability']}, {', '.join(units)}")
        out += [
            f"  {op['self_ms']:>9.1f} ms  {op['calls']:>5}  {op['op']}" for op in self.top_operators
        ]
        return out


def naive_paper_model(num_classes: int = 1000) -> nn.Module:
    """The paper net as most reimplementations write it: nn.LocalResponseNorm (with
    alpha multiplied by n to undo its division, over all maps at once) and
    nn.Conv2d(groups=2)."""
    model = create_model("paper", num_classes=num_classes)
    for name in ("norm1", "norm2"):
        lrn = nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)
        setattr(model.features, name, lrn)
    return model


def _builders(amp) -> dict:
    """name -> (build, autocast dtype); with a low precision, float32 baselines too."""
    import torchvision

    builders = {
        "ours": (lambda: create_model("paper"), amp),
        "naive": (naive_paper_model, amp),
        "torchvision": (lambda: torchvision.models.alexnet(), amp),
        "no_lrn": (lambda: create_model("paper", lrn=False), amp),  # the bound for any LRN
    }
    if amp is not None:
        builders["ours_fp32"] = (lambda: create_model("paper"), None)
        builders["no_lrn_fp32"] = (lambda: create_model("paper", lrn=False), None)
    return builders


def bench_step(
    device: str = "auto",
    batch_size: int = 64,
    steps: int = 2,
    precision: str = "auto",
    compile: bool = False,
    profile: bool = False,
    rounds: int = 3,
) -> StepBench:
    """Every model with the same settings, round-robin, each keeping its best pass."""
    check_counts({"batch-size": batch_size, "steps": steps, "rounds": rounds})
    dev = pick_device(device)
    amp = autocast_dtype(precision, dev)
    builders = _builders(amp)
    check_fits(batch_size, dev, models=len(builders))
    torch.manual_seed(0)
    rates = {}
    for train in (True, False):
        runners = {
            # nn.LocalResponseNorm has no bf16 CPU kernel: the naive net stays under autocast
            name: Runner(build(), dev, batch_size, dtype, train, name != "naive", compile)
            for name, (build, dtype) in builders.items()
        }
        suffix = "_img_s" if train else "_infer_img_s"
        for name, rate in interleaved(runners, steps, rounds).items():
            rates[name + suffix] = round(rate, 2)
        del runners
    fp32 = {k: rates.pop(k) for k in list(rates) if "_fp32_" in k}
    if fp32:
        fp32["speedup_train"] = round(rates["ours_img_s"] / fp32["ours_fp32_img_s"], 3)
        fp32["speedup_infer"] = round(rates["ours_infer_img_s"] / fp32["ours_fp32_infer_img_s"], 3)
    return StepBench(
        device=str(dev),
        batch_size=batch_size,
        steps=steps,
        rounds=rounds,
        precision=precision_name(amp),
        compile=compile,
        threads=torch.get_num_threads(),
        malloc_tuned=allocator_tuned(),
        gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        **rates,
        ratio_vs_naive=round(rates["ours_img_s"] / rates["naive_img_s"], 3),
        ratio_vs_torchvision=round(rates["ours_img_s"] / rates["torchvision_img_s"], 3),
        lrn_overhead=round(rates["no_lrn_img_s"] / rates["ours_img_s"] - 1, 3),
        lrn_overhead_infer=round(rates["no_lrn_infer_img_s"] / rates["ours_infer_img_s"] - 1, 3),
        cpu=cpu_info() if dev.type == "cpu" else {},
        fp32=fp32,
        top_operators=_profile(dev, batch_size, amp) if profile else [],
    )


def _profile(dev, batch_size, amp, top: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    runner = Runner(create_model("paper"), dev, batch_size, amp, True)
    runner.step()
    with profile(activities=acts) as prof:
        runner.step()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    return [
        {"op": e.key, "self_ms": round(getattr(e, key, 0) / 1000, 1), "calls": e.count}
        for e in events[:top]
    ]
