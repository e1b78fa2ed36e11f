"""`alexnet bench train`: training and inference img/s of our paper net (as the
execution plan runs it) against the same net with no kernels, the naive eager paper
net and torchvision's alexnet, interleaved in one run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..kernels.plan import resolve_plan
from ..model import create_model
from ..model.net import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE
from ..runtime.allocator import allocator_tuned
from ..runtime.device import cpu_info, pick_device, precision_name
from .common import BenchResult, Runner, check_counts, check_fits, interleaved

MODELS = {  # name -> label in the printed table
    "ours": "ours (the plan's kernels)",
    "plain": "ours, plain model (no kernels)",
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
    kernels: list[str]  # what the plan put into ours (and the no-LRN net)
    ours_img_s: float
    plain_img_s: float
    naive_img_s: float
    torchvision_img_s: float
    no_lrn_img_s: float
    ours_infer_img_s: float
    plain_infer_img_s: float
    naive_infer_img_s: float
    torchvision_infer_img_s: float
    no_lrn_infer_img_s: float
    ratio_vs_plain: float  # what the kernels buy in training
    ratio_vs_plain_infer: float  # and at inference
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
            f"{', compiled' if self.compile else ''}, kernels: {', '.join(self.kernels) or 'none'}",
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
            f"ours / plain: {self.ratio_vs_plain:.3f}x training, "
            f"{self.ratio_vs_plain_infer:.3f}x inference"
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


def _builders(dev, precision: str, kernels: str, compile: bool, train: bool) -> dict:
    """name -> (build, plan); in a low precision, float32 baselines too."""
    import torchvision

    ours = resolve_plan(dev, precision, kernels, train, compile)
    plain = resolve_plan(dev, precision, "none", train, compile)
    builders = {
        "ours": (lambda: create_model("paper"), ours),
        "plain": (lambda: create_model("paper"), plain),
        # nn.LocalResponseNorm has no bf16 CPU kernel: the naive net's weights stay float32
        "naive": (naive_paper_model, replace(plain, weights="float32")),
        "torchvision": (lambda: torchvision.models.alexnet(), plain),
        "no_lrn": (lambda: create_model("paper", lrn=False), ours),  # the bound for any LRN
    }
    if ours.precision != "fp32":
        fp32 = resolve_plan(dev, "fp32", kernels, train, compile)
        builders["ours_fp32"] = (lambda: create_model("paper"), fp32)
        builders["no_lrn_fp32"] = (lambda: create_model("paper", lrn=False), fp32)
    return builders


def bench_step(
    device: str = "auto",
    batch_size: int = 64,
    steps: int = 2,
    precision: str = "auto",
    compile: bool = False,
    profile: bool = False,
    rounds: int = 3,
    kernels: str = "auto",
) -> StepBench:
    """Every model with the same settings, round-robin, each keeping its best pass."""
    check_counts({"batch-size": batch_size, "steps": steps, "rounds": rounds})
    dev = pick_device(device)
    plan = resolve_plan(dev, precision, kernels, compile=compile)
    amp = plan.amp
    check_fits(batch_size, dev, models=len(_builders(dev, precision, kernels, compile, True)))
    torch.manual_seed(0)
    rates = {}
    for train in (True, False):
        runners = {
            name: Runner(build(), model_plan, batch_size, train, compile)
            for name, (build, model_plan) in _builders(
                dev, precision, kernels, compile, train
            ).items()
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
        kernels=list(plan.kernels),
        **rates,
        ratio_vs_plain=round(rates["ours_img_s"] / rates["plain_img_s"], 3),
        ratio_vs_plain_infer=round(rates["ours_infer_img_s"] / rates["plain_infer_img_s"], 3),
        ratio_vs_naive=round(rates["ours_img_s"] / rates["naive_img_s"], 3),
        ratio_vs_torchvision=round(rates["ours_img_s"] / rates["torchvision_img_s"], 3),
        lrn_overhead=round(rates["no_lrn_img_s"] / rates["ours_img_s"] - 1, 3),
        lrn_overhead_infer=round(rates["no_lrn_infer_img_s"] / rates["ours_infer_img_s"] - 1, 3),
        cpu=cpu_info() if dev.type == "cpu" else {},
        fp32=fp32,
        top_operators=_profile(plan, batch_size) if profile else [],
    )


def _profile(plan, batch_size, top: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device(plan.device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    runner = Runner(create_model("paper"), plan, batch_size, True)
    runner.step()
    with profile(activities=acts) as prof:
        runner.step()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    return [
        {"op": e.key, "self_ms": round(getattr(e, key, 0) / 1000, 1), "calls": e.count}
        for e in events[:top]
    ]
