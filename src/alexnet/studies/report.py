"""What `alexnet ablate` writes from its results: summary.json, ablations.md (the table
then the figures), figure1.png, bars.png and report.html (the same, self-contained)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ..runtime.files import atomic_write_bytes, atomic_write_json
from .design import STUDIES, AblateConfig, Results, mean_sd


def _arm_cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m, sd = mean_sd(values)
    if len(values) == 1:  # no spread to show
        return f"{100 * m:.2f}"
    return f"{100 * m:.2f} ± {100 * sd:.2f}"


def _gaps(s: dict) -> str:
    """The overfitting gap of each arm (validation minus training error), when known."""
    gaps = s.get("generalisation_gap") or {}
    cells = [f"{a} {_arm_cell(v)}" for a, v in gaps.items() if any(x is not None for x in v)]
    return f"; val - train gap: {', '.join(cells)}" if cells else ""


def table_rows(summary: dict) -> list[list[str]]:
    """study | the paper's claim | ours, mean ± sd over seeds | delta | same sign?"""
    rows = []
    for name, s in summary["studies"].items():
        rows += _relu_rows(s) if name == "relu" else [_error_row(name, s)]
        if name == "activation":
            rows.append(_figure_1_row(s))
    return rows


def _figure_1_row(s: dict) -> list[str]:
    """The full-size Figure 1: epochs to the target training error, each arm."""
    target = s["target_error"]
    ours = "; ".join(f"{arm} {_epochs(v)}" for arm, v in s["epochs_to_target"].items())
    speedup = s["speedup"]
    return [
        f"activation ({s['section']}) to {target:.0%}",
        s["claim"],
        f"epochs to {target:.0%} running training error: {ours}",
        "speed-up " + ("-" if speedup is None else f"{speedup:.2f}x"),
        _sign(None if speedup is None else speedup > 1),
    ]


def _relu_rows(s: dict) -> list[list[str]]:
    """One row per training-error target; the paper's (the one choosing the rates) first."""
    rows = []
    for target, epochs in (s.get("epochs_by_target") or {}).items():
        ours = "; ".join(f"{arm} {_epochs(v)}" for arm, v in epochs.items())
        speedup = s["speedup_by_target"][target]
        is_paper = float(target) == s["target_error"]
        rows.append(
            [
                f"relu ({s['section']}) to {float(target):.0%}",
                s["claim"]
                if is_paper
                else f"(a lower target, of a {s['budget_epochs']:g}-epoch budget)",
                f"epochs to {float(target):.0%} training error: {ours}",
                "speed-up " + ("-" if speedup is None else f"{speedup:.2f}x"),
                _sign(None if speedup is None else speedup > 1),
            ]
        )
    return rows


def _error_row(name: str, s: dict) -> list[str]:
    arms = list(s["top1_error"])
    ours = "; ".join(f"{a} {_arm_cell(s['top1_error'][a])}" for a in arms)
    n = min(len(v) for v in s["top1_error"].values())
    paper = "" if s["paper_top1_delta"] is None else f" (paper: {100 * s['paper_top1_delta']:+.1f})"
    deltas = s.get("top1_delta_by_arm") or {}
    cells = [
        (f"{arm} " if len(deltas) > 1 else "") + _delta(d, n) + (paper if arm == arms[1] else "")
        for arm, d in deltas.items()
    ]
    return [
        f"{name} ({s['section']})",
        s["claim"],
        f"{'test' if name == 'lrn-cifar' else 'top-1'} error %: {ours}{_gaps(s)}{_converged(s)}"
        f"{_views(s)}",
        "; ".join(cells) or "-",
        _sign(s.get("same_sign")),
    ]


def _delta(d, n: int) -> str:
    return f"{100 * d[0]:+.2f}" + (f" ± {100 * d[1]:.2f}" if n > 1 else "")


def _converged(s: dict) -> str:
    """Epochs to within a point of each arm's own final error (dropout: their ratio)."""
    if "convergence_ratio" not in s:
        return ""
    cells = ", ".join(f"{a} {', '.join(map(str, v))}" for a, v in s["epochs_to_converge"].items())
    common = ", ".join(
        f"{a} {', '.join(map(str, v))}" for a, v in s.get("epochs_to_common_error", {}).items()
    )
    if common:
        common = (
            f"; epochs to {100 * s['common_error']:.2f}% (the worst run's best): {common} "
            f"(ratio {s['common_error_ratio']:.2f}x)"
        )
    return (
        f"; epochs to within {100 * s['converged_within']:g} point of its final error: {cells} "
        f"(ratio {s['convergence_ratio']:.2f}x; paper: about {s['paper_convergence_ratio']:g}x)"
        f"{common}"
    )


def _views(s: dict) -> str:
    """The ten patches alone: the centre's error and the corners' range (where a dataset
    frames its objects decides how much the corners lose)."""
    views = s.get("view_top1_error")
    if not views:
        return ""
    m = {v: mean_sd(e)[0] for v, e in views.items()}
    corners = [e for v, e in m.items() if not v.startswith("centre")]
    return (
        f"; each patch alone: centre {100 * m['centre']:.2f} (flipped "
        f"{100 * m['centre flipped']:.2f}), corners {100 * min(corners):.2f}-"
        f"{100 * max(corners):.2f}"
    )


def _epochs(values: list) -> str:
    return ", ".join("not reached" if v is None else f"{v:.2f}" for v in values)


def _sign(same) -> str:
    return "-" if same is None else ("yes" if same else "no")


def write_outputs(out: Path, cfg: AblateConfig, summary: dict, results: Results) -> None:
    """summary.json, figure1.png, bars.png, ablations.md and report.html in `out`."""
    from ..results.figures import ablation_bars_png, figure1_png

    atomic_write_json(out / "summary.json", summary)
    figures = []
    if "relu" in summary["studies"]:
        curves = {
            arm: [
                r["curve"]
                for r in results.rows.values()
                if r.get("study") == "relu" and r["id"].endswith(":best") and r["arm"] == arm
            ]
            for arm in ("relu", "tanh")
        }
        atomic_write_bytes(out / "figure1.png", figure1_png(curves, cfg.target_error))
        figures.append(
            (
                "figure1.png",
                "Figure 1: training error against epochs, ReLU "
                "(solid) and tanh (dashed), one line per seed",
            )
        )
    bars = [
        (n, a, [v for v in vals if v is not None])
        for n, s in summary["studies"].items()
        if n != "relu"
        for a, vals in s["top1_error"].items()
    ]
    bars = [b for b in bars if b[2]]
    if bars:
        atomic_write_bytes(out / "bars.png", ablation_bars_png(bars))
        figures.append(("bars.png", "Top-1 error of every arm (bars: means; dots: seeds)"))
    rows = table_rows(summary)
    atomic_write_bytes(out / "ablations.md", _markdown(rows, figures, cfg).encode())
    atomic_write_bytes(out / "report.html", _html(rows, figures, out, cfg).encode())


HEADER = ["study", "the paper's claim", "ours, mean ± sd over seeds", "delta", "same sign?"]


def _setup_line(cfg: AblateConfig) -> str:
    return (
        f"Data `{cfg.data}`, {cfg.seeds} seed(s), {cfg.epochs:g} epoch(s)"
        f"{f', {cfg.train_images} training images' if cfg.train_images else ''}"
        f"{f', {cfg.val_images} validation images' if cfg.val_images else ''}; AlexNet-scale "
        f"runs: recipe {cfg.recipe}, batch {cfg.batch_size}. Deltas: the switched-off arm's "
        "error minus the other's, in points, paired by seed."
    )


def _markdown(rows, figures, cfg) -> str:
    lines = [
        "# Ablations",
        "",
        _setup_line(cfg),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    for name, caption in figures:
        lines += ["", f"![{caption}]({name})", "", caption]
    return "\n".join(lines) + "\n"


def _html(rows, figures, out: Path, cfg) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    imgs = "".join(
        f'<figure><img alt="{html.escape(c)}" src="data:image/png;base64,'
        f'{base64.b64encode((out / n).read_bytes()).decode()}"><figcaption>{html.escape(c)}'
        "</figcaption></figure>"
        for n, c in figures
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>alexnet "
        f"ablations</title><style>body{{font-family:system-ui,sans-serif;max-width:1100px;"
        f"margin:2em auto}}td,th{{padding:4px 10px;border-bottom:1px solid #eee;text-align:"
        f"left}}table{{border-collapse:collapse}}img{{max-width:100%}}</style></head><body>"
        f"<h1>The paper's effects, measured</h1><p>{html.escape(_setup_line(cfg))}</p>"
        f"<table><tr>{head}</tr>{body}</table>{imgs}</body></html>\n"
    )


__all__ = ["STUDIES", "table_rows", "write_outputs"]
