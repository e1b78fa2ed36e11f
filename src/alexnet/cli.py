"""The `alexnet` command: argument wiring over the library's functions, nothing else.

Every verb parses its flags, calls one library function with explicit arguments and
prints the result (text, or one JSON object with --json). The flags of `train` and
`prepare` are built from their config dataclasses, so each option (its default, its
choices, its help) is defined once. torch is imported only inside the verbs that need
it: `--version` and `--help` answer at once.

User mistakes surface as UsageError/ValueError and become one line on stderr with exit
code 2; a diverged run exits 3.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
import warnings
from dataclasses import MISSING, fields
from pathlib import Path

from . import __version__
from .options import DEVICE_HELP
from .runtime.errors import Notice, UsageError


def say_error(message: str) -> None:
    """The one-line error every failure the user can act on ends in, on stderr."""
    print(f"alexnet: error: {message}", file=sys.stderr)


def _say_notices(show=warnings.showwarning):
    """A showwarning that prints each of the library's Notices once, as one line
    (`alexnet: note: ...`), and hands every other warning to Python's own."""
    said = set()

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, Notice):
            if str(message) not in said:
                said.add(str(message))
                print(f"alexnet: note: {message}", file=sys.stderr, flush=True)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: one line, exit 2
        raise UsageError(f"{message} (see: {self.prog} --help)")


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown where there is one worth showing."""

    def _get_help_string(self, action):
        if any(action.default is v for v in (None, False, True, argparse.SUPPRESS)):
            return action.help
        return super()._get_help_string(action)


def _add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default, help=DEVICE_HELP)


def _add_json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


_TYPES = {"int": int, "float": _finite_float, "str": str}


def add_config_flags(parser, config_cls, extra_help=None) -> None:
    """One flag per field of a config dataclass (alexnet.options.option fields): its
    type from the annotation, its default, choices and help from the field."""
    for f in fields(config_cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        kind = f.type.replace(" | None", "")
        help_text = meta["help"] + ((extra_help or {}).get(f.name, ""))
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        if kind == "tuple[float, ...]":  # one or more numbers
            kind, many = "float", {"nargs": "+"}
        else:
            many = {"nargs": "+"} if kind == "list[str]" else {}  # one or more
        if f.default is MISSING and meta.get("flag"):  # a flag the user must give
            parser.add_argument(
                flag,
                dest=f.name,
                required=True,
                help=help_text,
                metavar=meta.get("metavar"),
                **many,
            )
            continue
        if f.default is MISSING:  # a positional argument
            choices = meta.get("choices")
            parser.add_argument(
                f.name, help=help_text, metavar=meta.get("metavar"), choices=choices, **many
            )
            continue
        if kind == "bool":
            on = not f.default
            name = flag if on else "--no-" + flag[2:]
            parser.add_argument(
                name,
                dest=f.name,
                action="store_true" if on else "store_false",
                help=help_text if on else f"turn off what is on by default: {help_text}",
            )
            continue
        parser.add_argument(
            flag,
            dest=f.name,
            type=_TYPES[kind],
            default=f.default,
            choices=meta.get("choices"),
            metavar=meta.get("metavar"),
            help=help_text,
            **many,
        )


def _checked(cfg):
    """A verb's config, its values checked against their choices and ranges."""
    cfg.check()
    return cfg


def config_from_args(config_cls, args, **overrides):
    """A config dataclass from parsed arguments (its fields' flags), plus overrides."""
    names = {f.name for f in fields(config_cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return config_cls(**{**values, **overrides})


def _for_people(obj):
    """Floats at 12 significant digits: 0.3, not 0.30000000000000004 (what is printed
    is read; the files a verb writes keep every digit)."""
    if isinstance(obj, float):
        return float(f"{obj:.12g}")
    if isinstance(obj, dict):
        return {k: _for_people(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_for_people(v) for v in obj]
    return obj


def _print_json(obj) -> None:
    print(json.dumps(_for_people(obj), indent=None, default=str))


def _add(sub, name: str, help: str, func, epilog: str | None = None):
    p = sub.add_parser(name, help=help, description=help, epilog=epilog, formatter_class=_Help)
    p.set_defaults(func=func)
    return p


# ---------------------------------------------------------------- info
def _add_info(sub) -> None:
    from .results.configs import InfoConfig

    p = _add(sub, "info", "layer table of a variant (the paper's Figure 2 in text)", _cmd_info)
    add_config_flags(p, InfoConfig)
    _add_json(p)


def _cmd_info(args) -> int:
    from .model.info import format_info, model_info
    from .results.configs import InfoConfig

    cfg = _checked(config_from_args(InfoConfig, args))
    if cfg.weights:
        from .weights.hub import format_weights, list_weights

        _print_json(list_weights()) if args.json else print(format_weights(list_weights()))
        return 0
    info = model_info(cfg.variant, cfg.input_size, cfg.num_classes)
    _print_json(info) if args.json else print(format_info(info))
    return 0


# ---------------------------------------------------------------- prepare
PREPARE_EXAMPLES = """examples:
  alexnet prepare ~/photos ~/stores/photos            # class sub-folders, 10% held out
  alexnet prepare /data/ILSVRC2012 /data/ilsvrc --workers 16 \\
      --val-labels /data/LOC_val_solution.csv --class-names /data/LOC_synset_mapping.txt
"""


def _add_prepare(sub) -> None:
    from .data.config import PrepareConfig

    p = _add(
        sub,
        "prepare",
        "turn an image collection into a store (docs/paper.md §2)",
        _cmd_prepare,
        PREPARE_EXAMPLES,
    )
    add_config_flags(p, PrepareConfig)
    _add_json(p, "the summary")


def _cmd_prepare(args) -> int:
    from .data.config import PrepareConfig
    from .data.prepare import format_summary, prepare

    progress = not args.json and sys.stderr.isatty()
    summary = prepare(config_from_args(PrepareConfig, args, progress=progress))
    _print_json(summary) if args.json else print(format_summary(summary))
    return 0


# ---------------------------------------------------------------- train
TRAIN_EXAMPLES = """examples:
  alexnet train                                   # the paper net on the embedded demo data
  alexnet train --data STORE --out runs/paper     # the paper's recipe (docs/paper.md §5)
  alexnet train --resume runs/paper               # continue where it stopped, bit for bit
  torchrun --nproc-per-node 8 -m alexnet train --data STORE --batch-size 16
"""


def _recipe_defaults() -> dict[str, str]:
    from .train.recipes import RECIPE_FIELDS, RECIPES

    return {
        name: " (recipe default: "
        + ", ".join(
            f"{r.name} {getattr(r, name):g}"
            if isinstance(getattr(r, name), float)
            else f"{r.name} {getattr(r, name)}"
            for r in RECIPES.values()
        )
        + ")"
        for name in RECIPE_FIELDS
    }


def _add_train(sub) -> None:
    from .train.config import TrainConfig

    p = _add(
        sub,
        "train",
        "train (default: the paper's net on the embedded demo)",
        _cmd_train,
        TRAIN_EXAMPLES,
    )
    add_config_flags(p, TrainConfig, _recipe_defaults())
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run where it stopped")
    p.set_defaults(parser=p)  # --config: which options were written as flags
    _add_json(p, "the summary")


def _cmd_train(args) -> int:
    from .train.config import TrainConfig
    from .train.loop import TrainingDiverged, train

    from_file = _config_file_values(args)
    cfg = config_from_args(
        TrainConfig, args, **from_file, progress=sys.stderr.isatty() and not args.json
    )
    try:
        summary = train(cfg, resume=args.resume)
    except TrainingDiverged as e:
        say_error(str(e))
        return 3
    if summary["rank"] != 0:
        return 0
    if args.json:
        _print_json(summary)
        return 0
    for line in _train_summary_lines(summary):
        print(line)
    return 0


def _config_file_values(args) -> dict:
    """--config FILE's options, less those given as flags (flags win)."""
    if not args.config:
        return {}
    from .train.config import read_config_file

    given = _given_options(args.parser, args.argv)
    return {k: v for k, v in read_config_file(args.config).items() if k not in given}


def _given_options(parser, argv: list[str]) -> set[str]:
    """The dests of the options written on the command line, argparse's unambiguous
    abbreviations (--epoch for --epochs) included."""
    strings = {s: a.dest for a in parser._actions for s in a.option_strings}
    given = set()
    for token in argv:
        name = token.split("=", 1)[0]
        if not name.startswith("--") or name == "--":
            continue
        matches = [name] if name in strings else [s for s in strings if s.startswith(name)]
        if len(matches) == 1:
            given.add(strings[matches[0]])
    return given


def _train_summary_lines(summary: dict) -> list[str]:
    lines = []
    last = summary["history"][-1] if summary["history"] else None
    if last:
        lines.append(
            f"final: val top-1 error {last['val_top1_error']:.3f}, "
            f"top-5 error {last['val_top5_error']:.3f} after {last['epoch']} epoch(s)"
        )
    if summary["stopped_mid_epoch"]:
        lines.append(
            f"stopped by --max-steps at step {summary['step_in_epoch']} of epoch "
            f"{summary['epochs_done'] + 1} (global step {summary['global_step']}); "
            f"continue with --resume {summary['run_dir']}"
        )
    lines.append(f"run directory: {summary['run_dir']}")
    lines.append(f"metrics:       {summary['metrics']}")
    lines.append(f"checkpoint:    {summary['checkpoint']}")
    if Path(summary["best_checkpoint"]).is_file():
        lines.append(f"best:          {summary['best_checkpoint']}")
    lines.append(f"store:         {summary['store']}")
    if summary.get("report"):
        lines.append(f"report:        {summary['report']}")
    return lines


# ---------------------------------------------------------------- results (§6)
def _add_evaluate(sub) -> None:
    from .results.configs import EvaluateConfig

    p = _add(
        sub,
        "evaluate",
        "top-1/top-5 error, 1 or 10 crops, per class; of one net or an ensemble",
        _cmd_evaluate,
        "examples:\n  alexnet evaluate caffe --data VAL_STORE --crops 1\n"
        "  alexnet evaluate A.pt B.pt C.pt D.pt E.pt --data STORE --crops 10   # 5 CNNs\n",
    )
    add_config_flags(p, EvaluateConfig)
    _add_json(p)


def _cmd_evaluate(args) -> int:
    from .results.configs import EvaluateConfig
    from .results.evaluate import evaluate_checkpoint, evaluate_ensemble

    cfg = _checked(config_from_args(EvaluateConfig, args))
    options = {k: v for k, v in vars(cfg).items() if k != "ckpts"}
    if len(cfg.ckpts) > 1:
        r = evaluate_ensemble(cfg.ckpts, **options, progress=sys.stderr.isatty())
    else:
        r = evaluate_checkpoint(cfg.ckpts[0], **options, progress=sys.stderr.isatty())
    subset = r.get("class_subset")
    if subset:
        of = subset["nets"][0]["of"]
        print(
            f"evaluate: the store holds {subset['classes']} of ImageNet's {of:,} classes; "
            "the softmax is over those alone",
            file=sys.stderr,
        )
    if args.json:
        _print_json(r)
        return 0
    for m in r.get("members", []):
        print(
            f"{m['checkpoint']}: top-1 error {m['top1_error']:.4f}, top-5 error {m['top5_error']:.4f}"
        )
    nets = f"the mean of {r['nets']} nets, " if "nets" in r else ""
    print(
        f"{r['images']} images, {r['crops']} crop(s), {r['precision']}, {nets}"
        f"top-1 error {r['top1_error']:.4f}, "
        f"top-5 error {r['top5_error']:.4f}"
    )
    for row in r["paper"]:
        top1 = "-" if row["top1_error"] is None else f"{row['top1_error']:.3f}"
        print(
            f"  beside {row['source']}, {row['model']} ({row['dataset']} {row['split']}): "
            f"top-1 error {top1}, top-5 error {row['top5_error']:.3f}"
        )
    print("per-class top-1 accuracy (the share of each class's images whose first guess is right):")
    for name, acc in r["per_class"].items():
        print(f"  {name:<30} {'-' if acc is None else f'{acc:.3f}'}")
    return 0


def _add_predict(sub) -> None:
    from .results.configs import PredictConfig

    p = _add(
        sub,
        "predict",
        "the five most probable classes of images (Figure 4); of one net or an ensemble",
        _cmd_predict,
        "examples:\n  alexnet predict caffe cat.jpg dog.jpg --figure top5.png\n"
        "  alexnet predict A.pt B.pt C.pt cat.jpg --json   # the mean of three nets\n",
    )
    add_config_flags(p, PredictConfig)
    _add_json(p)


def _cmd_predict(args) -> int:
    from .results.configs import PredictConfig
    from .results.predict import predict_ensemble, write_predictions_figure
    from .runtime.files import check_output_file
    from .weights.load import names_weights

    cfg = _checked(config_from_args(PredictConfig, args))
    ckpts, images = [cfg.ckpt], list(cfg.images)
    while len(images) > 1 and names_weights(images[0]):
        ckpts.append(images.pop(0))
    if cfg.figure:
        check_output_file(cfg.figure, reads=[*ckpts, *images])
    results = predict_ensemble(
        ckpts,
        images,
        top=cfg.top,
        batch_size=cfg.batch_size,
        device=cfg.device,
        precision=cfg.precision,
        data=cfg.data,
    )
    if len(ckpts) == 1:
        for r in results:
            r.pop("members", None)
    failed = [r for r in results if "error" in r]
    subset = next((r["class_subset"] for r in results if "class_subset" in r), None)
    if subset:
        print(
            f"predict: {cfg.data} holds {subset['classes']} of ImageNet's {subset['of']:,} "
            "classes; the softmax is over those alone",
            file=sys.stderr,
        )
    for r in failed:
        say_error(f"{r['image']}: {r['error']}")
    if args.json:
        _print_json(results)
    else:
        mean = f" (the mean of {len(ckpts)} nets)" if len(ckpts) > 1 else ""
        for r in results:
            if "top" in r:
                print(r["image"] + mean)
                for t in r["top"]:
                    print(f"  {t['prob']:6.1%}  {t['name']}")
    ok = [r for r in results if "top" in r]
    if cfg.figure and ok:
        write_predictions_figure(cfg.figure, ok)
        if not args.json:
            print(f"figure: {cfg.figure}")
    return 2 if failed else 0  # each bad image said in its line; the others predicted


def _add_features(sub) -> None:
    from .results.features_config import FeaturesConfig

    p = _add(
        sub,
        "features",
        "activations of any layers for any images, to .npz or HDF5",
        _cmd_features,
        "examples:\n  alexnet features caffe --images stimuli/ --layers conv1,fc7 --out f.h5\n"
        "  alexnet features torchvision a.jpg b.jpg --layers conv2:pre,conv2 --out f.npz\n"
        "  alexnet features runs/x/checkpoints/best.pt --data STORE --split val "
        "--layers all --pooling mean --out f.h5\n",
    )
    add_config_flags(p, FeaturesConfig)
    p.add_argument("images", nargs="*", help="image files (or --images FOLDER, --data STORE)")
    _add_device(p, "auto")
    _add_json(p)


def _cmd_features(args) -> int:
    from .results.feature_files import write_features
    from .results.features_config import FeaturesConfig

    cfg = config_from_args(FeaturesConfig, args, images=list(args.images), progress=True)
    r = write_features(cfg, args.device)
    if args.json:
        _print_json(r)
    else:
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in r["shapes"].items())
        print(f"{r['out']}: {r['images']} images; {shapes}")
    return 0


def _add_units(sub) -> None:
    from .results.configs import UnitsConfig

    p = _add(
        sub,
        "units",
        "the top images and patches of a layer's units (Zeiler and Fergus's Figure 2)",
        _cmd_units,
        "examples:\n  alexnet units caffe --data STORE --layer conv5 --out u.png\n"
        "  alexnet units runs/x/checkpoints/best.pt --data photos/ --layer conv2.tower1 "
        "--units 0-7 --top 6 --whole --out u.html\n",
    )
    add_config_flags(p, UnitsConfig)
    _add_json(p, "each unit's top images, positions, boxes and activations")


def _cmd_units(args) -> int:
    from .results.configs import UnitsConfig
    from .results.units import check_units_output, public, top_units, write_units

    cfg = _checked(config_from_args(UnitsConfig, args))
    check_units_output(cfg.out, reads=[cfg.weights])
    options = {k: getattr(cfg, k) for k in ("units", "top", "split", "batch_size", "device")}
    r = top_units(cfg.weights, cfg.data, cfg.layer, precision=cfg.precision, **options)
    out = write_units(r, cfg.out, cfg.whole)
    if args.json:
        _print_json({**public(r), "out": str(out)})
        return 0
    print(f"{out}: {len(r['units'])} units of {r['layer']}, top {cfg.top} of {r['images']} images")
    return 0


def _add_explain(sub) -> None:
    from .results.configs import ExplainConfig

    p = _add(
        sub,
        "explain",
        "a heat map per image of where the answer comes from: occlusion, GradCAM, "
        "integrated gradients",
        _cmd_explain,
        "examples:\n  alexnet explain caffe photo.jpg --method occlusion --out o.png\n"
        "  alexnet explain best.pt a.jpg b.jpg --method gradcam --target cat --out g.png\n",
    )
    add_config_flags(p, ExplainConfig)
    _add_json(p, "each image's target, probability, map and its peak")


def _cmd_explain(args) -> int:
    from .results.configs import ExplainConfig
    from .results.explain import explain_images, public, write_explanations
    from .runtime.files import check_output_file

    cfg = _checked(config_from_args(ExplainConfig, args))
    check_output_file(cfg.out, reads=[cfg.weights, *cfg.images])
    if not cfg.out.lower().endswith(".png"):
        raise UsageError(f"--out {cfg.out}: name it .png")
    options = {k: getattr(cfg, k) for k in ("method", "target", "layer", "size", "stride")}
    results = explain_images(cfg.weights, cfg.images, device=cfg.device, **options)
    write_explanations(results, cfg.out)
    if args.json:
        _print_json({"out": cfg.out, "images": public(results)})
        return 0
    for r in public(results):
        print(f"{r['image']}: {r['target']} ({r['probability']:.1%}), peak at {r['peak']}")
    print(f"figure: {cfg.out}")
    return 0


def _add_kernels(sub) -> None:
    from .results.configs import KernelsConfig

    p = _add(
        sub,
        "kernels",
        "the conv1 kernels as a grid, with each tower's colour index (Figure 3)",
        _cmd_kernels,
    )
    add_config_flags(p, KernelsConfig)
    _add_json(p, "the figure's path and each tower's colour index")


def _cmd_kernels(args) -> int:
    from .results.configs import KernelsConfig
    from .results.figures import colour_index, colour_lines, kernels_png
    from .runtime.files import atomic_write_bytes, check_output_file
    from .weights.load import load_for_inference

    cfg = _checked(config_from_args(KernelsConfig, args))
    check_output_file(cfg.out, reads=[cfg.ckpt])
    model = load_for_inference(cfg.ckpt).model
    atomic_write_bytes(cfg.out, kernels_png(model))
    index = colour_index(model)
    if args.json:
        _print_json({"out": str(cfg.out), "colour_index": index})
        return 0
    print(cfg.out)
    for line in colour_lines(index):
        print(f"  {line}")
    return 0


def _add_neighbors(sub) -> None:
    from .results.configs import NeighborsConfig

    p = _add(sub, "neighbors", "nearest gallery images in fc7 space (Figure 4)", _cmd_neighbors)
    add_config_flags(p, NeighborsConfig)
    _add_json(p)


def _cmd_neighbors(args) -> int:
    from .results.configs import NeighborsConfig
    from .results.retrieval import neighbors

    cfg = _checked(config_from_args(NeighborsConfig, args))
    r = neighbors(**vars(cfg), progress=sys.stderr.isatty())
    if args.json:
        _print_json(r)
        return 0
    for q in r["queries"]:
        names = ", ".join(f"{n['name']} ({n['distance']:.1f})" for n in q["neighbors"])
        print(f"{q['image']}: {names}")
    if "codes" in r:
        c = r["codes"]
        print(f"{c['bits']}-bit codes: top-{cfg.k} agreement with Euclidean {c['agreement']:.1%}")
    print(r["figure"])
    return 0


def _add_report(sub) -> None:
    from .results.configs import ReportConfig

    p = _add(sub, "report", "one self-contained HTML report of a run", _cmd_report)
    add_config_flags(p, ReportConfig)


def _cmd_report(args) -> int:
    from .results.configs import ReportConfig
    from .results.report import build_report

    cfg = _checked(config_from_args(ReportConfig, args))
    print(build_report(cfg.run_dir, cfg.out, device=cfg.device))
    return 0


def _add_export(sub) -> None:
    from .results.configs import ExportConfig

    p = _add(
        sub,
        "export",
        "the net as ONNX, a torch.export program or safetensors weights",
        _cmd_export,
        "examples:\n  alexnet export runs/x/checkpoints/best.pt --out model.onnx\n"
        "  alexnet export runs/x/checkpoints/best.pt --out model.pt2\n"
        "  alexnet export runs/x/checkpoints/best.pt --out weights.safetensors\n",
    )
    add_config_flags(p, ExportConfig)
    _add_json(p)


def _cmd_export(args) -> int:
    from .results.configs import ExportConfig
    from .results.export import export

    cfg = _checked(config_from_args(ExportConfig, args))
    fmt = "onnx" if cfg.onnx else cfg.format
    r = export(cfg.ckpt, cfg.out or cfg.onnx, fmt, cfg.input_size, cfg.precision)
    if args.json:
        _print_json(r)
        return 0
    if r["checked"]:
        state = (
            f"outputs match PyTorch's in {r['precision']} (max abs diff {r['max_abs_diff']:.2e})"
        )
    else:
        state = r.get("note", f"{r.get('bytes', 0) / 2**20:.0f} MiB of {r['precision']} weights")
    print(f"{r.get('out', r.get('onnx'))}: {state}")
    return 0


# ---------------------------------------------------------------- ablate
def _add_ablate(sub) -> None:
    from .studies.design import AblateConfig

    p = _add(
        sub,
        "ablate",
        "the paper's claimed effects, measured on your data",
        _cmd_ablate,
        "examples:\n  alexnet ablate relu lrn-cifar --data STORE32 --out ablations --seeds 3\n"
        "  alexnet ablate towers lrn overlap augment pca dropout ten-crop --data STORE "
        "--out ablations --train-images 5000 --epochs 5\n",
    )
    add_config_flags(p, AblateConfig)
    _add_json(p, "the summary")


def _cmd_ablate(args) -> int:
    from .studies.ablate import AblateConfig, ablate
    from .studies.report import table_rows

    cfg = config_from_args(AblateConfig, args)
    summary = ablate(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        _print_json(summary)
        return 0
    for row in table_rows(summary):
        print(" | ".join(row))
    print(f"results: {args.out}/ablations.md, {args.out}/report.html")
    return 0


# ---------------------------------------------------------------- bench
def _add_bench(sub) -> None:
    p = _add(sub, "bench", "throughput against baselines measured in the same run", _cmd_bench)
    what = p.add_subparsers(dest="what", parser_class=_Parser)
    _add_bench_prepare(what)
    _add_bench_data(what)
    _add_bench_train(what)


def _cmd_bench(args) -> int:
    """`alexnet bench` without what to measure (each verb sets its own function)."""
    raise UsageError("bench what? one of: prepare, data, train (alexnet bench train --help)")


def _add_bench_prepare(what) -> None:
    from .bench.configs import BenchPrepareConfig

    pp = _add(
        what,
        "prepare",
        "prepare's img/s and the CPU per image of its coordinator and workers",
        _cmd_bench_prepare,
    )
    add_config_flags(pp, BenchPrepareConfig)
    _add_json(pp)


def _add_bench_data(what) -> None:
    from .bench.configs import BenchDataConfig

    d = _add(what, "data", "our loader vs torchvision's usual pipeline", _cmd_bench_data)
    add_config_flags(d, BenchDataConfig)
    _add_json(d)


def _add_bench_train(what) -> None:
    from .bench.configs import BenchTrainConfig

    t = _add(what, "train", "training img/s: ours vs naive eager vs torchvision", _cmd_bench_train)
    add_config_flags(t, BenchTrainConfig)
    _add_json(t)


def _print_result(r, as_json: bool) -> int:
    if as_json:
        _print_json(r.to_dict())
    else:
        print("\n".join(r.lines()))
    return 0


def _cmd_bench_data(args) -> int:
    from .bench.configs import BenchDataConfig
    from .bench.data import bench_data

    cfg = _checked(config_from_args(BenchDataConfig, args))
    r = bench_data(
        cfg.data, cfg.source, workers=cfg.workers, batch_size=cfg.batch_size, batches=cfg.batches
    )
    return _print_result(r, args.json)


def _cmd_bench_prepare(args) -> int:
    from .bench.configs import BenchPrepareConfig
    from .bench.prepare import bench_prepare

    cfg = _checked(config_from_args(BenchPrepareConfig, args))
    return _print_result(bench_prepare(cfg.src, workers=cfg.workers, fmt=cfg.format), args.json)


def _cmd_bench_train(args) -> int:
    from .bench.configs import BenchTrainConfig

    cfg = _checked(config_from_args(BenchTrainConfig, args))
    common = {"device": cfg.device, "batch_size": cfg.batch_size, "precision": cfg.precision}
    if cfg.model_parallel == 2:
        from .bench.model_parallel import bench_model_parallel

        r = bench_model_parallel(**common, steps=cfg.steps or 2, rounds=cfg.rounds)
    elif cfg.data:
        from .bench.end_to_end import bench_end_to_end

        r = bench_end_to_end(
            cfg.data,
            cfg.source,
            **common,
            steps=cfg.steps or 20,
            warmup=cfg.warmup,
            workers=cfg.workers,
            compile=cfg.compile,
            decode=cfg.decode,
        )
    else:
        from .bench.step import bench_step

        r = bench_step(
            **common,
            steps=cfg.steps or 2,
            compile=cfg.compile,
            profile=cfg.profile,
            rounds=cfg.rounds,
            kernels=cfg.kernels,
        )
    return _print_result(r, args.json)


VERBS = (
    _add_info,
    _add_prepare,
    _add_train,
    _add_evaluate,
    _add_predict,
    _add_features,
    _add_units,
    _add_explain,
    _add_kernels,
    _add_neighbors,
    _add_report,
    _add_export,
    _add_ablate,
    _add_bench,
)


def build_parser() -> argparse.ArgumentParser:
    """The `alexnet` command's argument parser, every verb included."""
    parser = _Parser(
        prog="alexnet",
        description="AlexNet as published (Krizhevsky et al., NIPS 2012): prepare data, "
        "train, evaluate, predict and draw the paper's figures.",
    )
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    for add in VERBS:
        add(sub)
    return parser


def _one_line(e: BaseException) -> str:
    """The message's first line; for an error a DataLoader worker raised (re-raised as
    "Caught X in DataLoader worker process N." and its traceback), the original's."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    if lines[0].startswith("Caught ") and len(lines) > 1:
        return lines[-1].split(": ", 1)[-1]
    return lines[0]


# The machine's fault, not ours: a read-only or full file system, a name too long for it,
# a link loop, no permission. Exit 2 with the file and the reason.
ENVIRONMENT_ERRNOS = {
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENAMETOOLONG,
    errno.ELOOP,
    errno.EACCES,
    errno.EPERM,
}


def main(argv: list[str] | None = None) -> int:
    """Run `alexnet ARGV`; returns the exit code (0, 1 for a bug, 2 for a usage error, 3 for a diverged run)."""
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        from .runtime.allocator import tune_cpu_allocator

        tune_cpu_allocator()  # before the first big tensor; see runtime/allocator.py
        with warnings.catch_warnings():
            warnings.simplefilter("always", Notice)  # _say_notices says each once
            warnings.showwarning = _say_notices()
            return args.func(args)
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
    except (
        UsageError,
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    ) as e:
        if os.environ.get("ALEXNET_DEBUG"):
            raise
        say_error(_one_line(e))
        return 2
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS or os.environ.get("ALEXNET_DEBUG"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        say_error(f"{where}{e.strerror or _one_line(e)}")
        return 2
    except KeyboardInterrupt as e:
        print(f"alexnet: {e or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours: still one line, with a way to see more
        if os.environ.get("ALEXNET_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(
            f"alexnet: internal error: {type(e).__name__}: {msg} "
            "(set ALEXNET_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
