"""The paper net's training step in a plain Python process, as a user's own loop runs it:
`alexnet.create_model(...)` (the plain model) against `create_model(..., kernels="auto")`,
in interleaved rounds (each model keeps its best), first with the allocator as Python
left it, then after `alexnet.tune_cpu_allocator()` (what the command line does at its
start). Prints img/s and the ratios; docs/benchmarks.md, "Kernels from Python".

    python scripts/bench_python.py [--precision fp32|bf16] [--batch-size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

import alexnet


def rate(model, opt, x, y, steps: int, amp) -> float:
    """img/s of `steps` training steps (forward, loss, backward, SGD step)."""
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", torch.bfloat16) if amp else contextlib.nullcontext():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * len(x) / (time.perf_counter() - start)


def rounds(models: dict, x, y, steps: int, n: int, amp) -> dict:
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
    for k, m in models.items():  # warm-up: first-touch allocations, oneDNN's primitives
        rate(m, opts[k], x, y, 1, amp)
    best = {k: 0.0 for k in models}
    for _ in range(n):
        for k, m in models.items():
            best[k] = max(best[k], rate(m, opts[k], x, y, steps, amp))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    amp = args.precision == "bf16"
    models = {
        "plain": alexnet.create_model("paper", num_classes=1000),
        "kernels": alexnet.create_model(
            "paper", num_classes=1000, kernels="auto", precision=args.precision
        ),
    }
    for m in models.values():
        m.train().to(memory_format=torch.channels_last)
    x = torch.randn(args.batch_size, 3, 224, 224).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,))
    kernels = sorted(
        {type(m).__name__ for m in models["kernels"].modules()}
        - {type(m).__name__ for m in models["plain"].modules()}
    )
    print(
        f"{torch.get_num_threads()} threads, batch {args.batch_size}, {args.precision}; "
        f"kernels: {', '.join(kernels) or 'none'}"
    )
    for label in ("allocator as Python left it", "after alexnet.tune_cpu_allocator()"):
        if label.startswith("after"):
            alexnet.tune_cpu_allocator()
        best = rounds(models, x, y, args.steps, args.rounds, amp)
        print(
            f'{label}: plain {best["plain"]:.1f} img/s, kernels="auto" {best["kernels"]:.1f} '
            f"img/s ({best['kernels'] / best['plain']:.2f}x)"
        )


if __name__ == "__main__":
    main()
