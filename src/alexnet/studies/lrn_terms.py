"""How much §3.3's LRN normalises in a trained net, on real images.

    python -m alexnet.studies.lrn_terms WEIGHTS --data STORE [--images 256] [--json]

The normalisation divides each unit by (k + s)^beta, where s = alpha times the sum of
squares over its window of maps (docs/paper.md §3.3). Where s is small beside k = 2 the
layer is a constant division by k^beta = 1.68 and the units do not compete; the paper's
constants were set for its input scale (raw pixels, the mean image subtracted), and a
recipe that scales the pixels down by 64 scales s down by 64^2 = 4096 in conv1. This
measures, for each LRN of the net over the centre crops of a store's images (chosen by a
seeded generator), the quantiles of s / k and the factor (1 + s / k)^-beta by which a
unit is damped beyond the constant, for alpha as the net has it and for the other
convention (the printed alpha, n times larger, or alpha / n): what an ablation of the
LRN or of its alpha can show on that net.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from ..data.store import Store
from ..model.lrn import LocalResponseNorm, window_sum
from ..runtime.errors import UsageError

QUANTILES = (0.5, 0.9, 0.99, 0.999)
# a unit damped by more than this beyond k^-beta counts as normalised
DAMPED = 0.99


def term_stats(s_over_k: np.ndarray, beta: float) -> dict:
    """Quantiles and maximum of s / k, and the damping factor (1 + s / k)^-beta: its mean,
    its minimum and the share of units it takes below DAMPED."""
    factor = np.power(1.0 + s_over_k, -beta)
    q = np.quantile(s_over_k, QUANTILES)
    return {
        "s_over_k": {f"q{p:g}": float(v) for p, v in zip(QUANTILES, q, strict=True)}
        | {"max": float(s_over_k.max())},
        "factor_mean": float(factor.mean()),
        "factor_min": float(factor.min()),
        "share_damped": float((factor < DAMPED).mean()),
    }


@torch.no_grad()
def lrn_terms(model: torch.nn.Module, batches, alpha_over_n: bool) -> dict:
    """For each LRN module of `model` (by name), the term statistics over every unit of
    `batches` (preprocessed inputs), with the module's alpha and with the other
    convention's: alpha times n where the net divides it by n (`alpha_over_n`), else
    alpha / n."""
    norms = {n: m for n, m in model.named_modules() if isinstance(m, LocalResponseNorm)}
    if not norms:
        raise UsageError("this net has no LRN (it was built with lrn off)")
    sums: dict[str, list[np.ndarray]] = {n: [] for n in norms}

    def keep(name, m):
        def hook(_module, inputs, _output):
            window = window_sum(inputs[0].float().square(), m.size, m.groups)
            sums[name].append((m.alpha / m.k * window).flatten().numpy())

        return hook

    handles = [m.register_forward_hook(keep(n, m)) for n, m in norms.items()]
    try:
        for batch in batches:
            model(batch)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, m in norms.items():
        s_over_k = np.concatenate(sums[name])
        other = m.size if alpha_over_n else 1 / m.size
        out[name] = {
            "size": m.size,
            "alpha": m.alpha,
            "beta": m.beta,
            "k": m.k,
            "as_built": term_stats(s_over_k, m.beta),
            "other_alpha": m.alpha * other,
            "other": term_stats(s_over_k * other, m.beta),
        }
    return out


def store_batches(pretrained, store: str, split: str, images: int, seed: int, batch: int):
    """Preprocessed centre crops of `images` images of a store's split, drawn without
    replacement by a seeded generator, in batches."""
    view = Store(store).split(split)
    if images < 1:
        raise UsageError("--images must be at least 1")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(view), min(images, len(view)), replace=False))
    transform = pretrained.transforms()
    for start in range(0, len(chosen), batch):
        yield torch.stack([transform(view.image(int(i))) for i in chosen[start : start + batch]])


def format_table(result: dict) -> str:
    lines = [
        "| LRN | alpha | s/k median | p99 | p99.9 | max | mean factor | min factor | units damped > 1% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result.items():
        for alpha, t in ((r["alpha"], r["as_built"]), (r["other_alpha"], r["other"])):
            q = t["s_over_k"]
            lines.append(
                f"| {name} | {alpha:.3g} | {q['q0.5']:.2e} | {q['q0.99']:.2e} | "
                f"{q['q0.999']:.2e} | {q['max']:.2e} | {t['factor_mean']:.4f} | "
                f"{t['factor_min']:.4f} | {100 * t['share_damped']:.1f}% |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m alexnet.studies.lrn_terms",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("weights", help="a checkpoint of a net with LRN (ours)")
    p.add_argument("--data", required=True, help="a prepared store")
    p.add_argument("--split", default="val", help="the store's split (default: val)")
    p.add_argument("--images", type=int, default=256, help="how many (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="draws the images (default: 0)")
    p.add_argument("--batch-size", type=int, default=32, help="per forward (default: 32)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    from ..results.pretrained import load

    try:
        net = load(a.weights)
        over_n = getattr(net.model.options, "lrn_alpha_over_n", True)
        batches = store_batches(net, a.data, a.split, a.images, a.seed, a.batch_size)
        result = lrn_terms(net.model, batches, over_n)
    except (UsageError, OSError, KeyError) as e:
        print(f"lrn_terms: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1) if a.json else format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
