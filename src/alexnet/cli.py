"""The `alexnet` command: argument wiring over the library's functions, nothing else.

`VERBS` is the table: each verb's name, its config dataclass (whose fields are its
flags, so that each option's default, choices and help are defined once) and the
library function it calls, which returns a result that prints itself (text, or one
JSON object with --json). torch is imported only inside the verbs that need it:
`--version` and `--help` answer at once.

User mistakes surface as UsageError/ValueError and become one line on stderr with exit
code 2; a diverged run exits 3.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import inspect
import json
import math
import os
import sys
import warnings
from dataclasses import MISSING, dataclass, fields

from . import __version__
from .runtime.errors import Notice, UsageError
from .runtime.printed import Printed


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


# ---------------------------------------------------------------- the verbs
@dataclass(frozen=True)
class Verb:
    """A verb: its config dataclass and the function it calls, as "module:name" under
    alexnet (imported when the verb runs or its flags are built)."""

    name: str
    help: str
    config: str
    run: str
    epilog: str | None = None
    json: str | None = "the result"


def _is(verb: Verb, config: str) -> bool:
    """Whether the verb is the one configured by `config` (train and features take a
    flag or two beyond their configs' fields)."""
    return verb.config.endswith(f":{config}")


def _load(where: str):
    module, name = where.split(":")
    return getattr(importlib.import_module(f"alexnet.{module}"), name)


EVALUATE_EXAMPLES = """examples:
  alexnet evaluate caffe --data VAL_STORE --crops 1
  alexnet evaluate A.pt B.pt C.pt D.pt E.pt --data STORE --crops 10   # 5 CNNs
"""
PREDICT_EXAMPLES = """examples:
  alexnet predict caffe cat.jpg dog.jpg --figure top5.png
  alexnet predict A.pt B.pt C.pt cat.jpg --json   # the mean of three nets
"""
FEATURES_EXAMPLES = """examples:
  alexnet features caffe --images stimuli/ --layers conv1,fc7 --out f.h5
  alexnet features torchvision a.jpg b.jpg --layers conv2:pre,conv2 --out f.npz
  alexnet features runs/x/checkpoints/best.pt --data STORE --split val --layers all --pooling mean --out f.h5
"""
UNITS_EXAMPLES = """examples:
  alexnet units caffe --data STORE --layer conv5 --out u.png
  alexnet units runs/x/checkpoints/best.pt --data photos/ --layer conv2.tower1 --units 0-7 --top 6 --whole --out u.html
"""
EXPLAIN_EXAMPLES = """examples:
  alexnet explain caffe photo.jpg --method occlusion --out o.png
  alexnet explain best.pt a.jpg b.jpg --method gradcam --target cat --out g.png
"""
MICROSCOPE_EXAMPLES = """examples:
  alexnet microscope runs/x/checkpoints/best.pt --data STORE --out scope   # the conv stack
  alexnet microscope caffe --data photos/ --layers conv5,fc8 --units 0-63 --out scope
  open scope/index.html   # or: python -m http.server -d scope
"""
EXPORT_EXAMPLES = """examples:
  alexnet export runs/x/checkpoints/best.pt --out model.onnx
  alexnet export runs/x/checkpoints/best.pt --out model.pt2
  alexnet export runs/x/checkpoints/best.pt --out weights.safetensors
"""
ABLATE_EXAMPLES = """examples:
  alexnet ablate relu lrn-cifar --data STORE32 --out ablations --seeds 3
  alexnet ablate towers lrn overlap augment pca dropout ten-crop --data STORE --out ablations --train-images 5000 --epochs 5
"""
PREPARE_EXAMPLES = """examples:
  alexnet prepare ~/photos ~/stores/photos            # class sub-folders, 10% held out
  alexnet prepare /data/ILSVRC2012 /data/ilsvrc --workers 16 \\
      --val-labels /data/LOC_val_solution.csv --class-names /data/LOC_synset_mapping.txt
"""
TRAIN_EXAMPLES = """examples:
  alexnet train                                   # the paper net on the embedded demo data
  alexnet train --data STORE --recipe paper --out runs/paper   # as printed (docs/paper.md §5)
  alexnet train --resume runs/paper               # continue where it stopped, bit for bit
  torchrun --nproc-per-node 8 -m alexnet train --data STORE --batch-size 16
"""


VERBS = (
    Verb(
        "info",
        "layer table of a variant (the paper's Figure 2 in text)",
        "results.configs:InfoConfig",
        "weights.hub:info_command",
    ),
    Verb(
        "prepare",
        "turn an image collection into a store (docs/paper.md §2)",
        "data.config:PrepareConfig",
        "data.prepare:prepare_command",
        PREPARE_EXAMPLES,
        "the summary",
    ),
    Verb(
        "train",
        "train (default: the paper's net on the embedded demo)",
        "train.config:TrainConfig",
        "train.command:train_command",
        TRAIN_EXAMPLES,
        "the summary",
    ),
    Verb(
        "evaluate",
        "top-1/top-5 error, 1 or 10 crops, per class; of one net or an ensemble",
        "results.configs:EvaluateConfig",
        "results.evaluate:evaluate_command",
        EVALUATE_EXAMPLES,
    ),
    Verb(
        "predict",
        "the five most probable classes of images (Figure 4); of one net or an ensemble",
        "results.configs:PredictConfig",
        "results.predict:predict_command",
        PREDICT_EXAMPLES,
    ),
    Verb(
        "features",
        "activations of any layers for any images, to .npz or HDF5",
        "results.features_config:FeaturesConfig",
        "results.feature_files:features_command",
        FEATURES_EXAMPLES,
    ),
    Verb(
        "units",
        "the top images and patches of a layer's units (Zeiler and Fergus's Figure 2)",
        "results.configs:UnitsConfig",
        "results.units:units_command",
        UNITS_EXAMPLES,
        "each unit's top images, positions, boxes and activations",
    ),
    Verb(
        "explain",
        "a heat map per image of where the answer comes from: occlusion, GradCAM, "
        "integrated gradients",
        "results.configs:ExplainConfig",
        "results.explain:explain_command",
        EXPLAIN_EXAMPLES,
        "each image's target, probability, map and its peak",
    ),
    Verb(
        "microscope",
        "every unit of a net, its top dataset patches and feature visualisation, as a "
        "static site to browse",
        "microscope.config:MicroscopeConfig",
        "microscope.build:microscope_command",
        MICROSCOPE_EXAMPLES,
        "the manifest: each unit's page, visualisation and top patches (paths under --out)",
    ),
    Verb(
        "kernels",
        "the conv1 kernels as a grid, with each tower's colour index (Figure 3)",
        "results.configs:KernelsConfig",
        "results.figures:kernels_command",
        json="the figure's path and each tower's colour index",
    ),
    Verb(
        "neighbors",
        "nearest gallery images in fc7 space (Figure 4)",
        "results.configs:NeighborsConfig",
        "results.retrieval:neighbors_command",
    ),
    Verb(
        "report",
        "one self-contained HTML report of a run",
        "results.configs:ReportConfig",
        "results.report:report_command",
        json=None,
    ),
    Verb(
        "export",
        "the net as ONNX, a torch.export program or safetensors weights",
        "results.configs:ExportConfig",
        "results.export:export_command",
        EXPORT_EXAMPLES,
    ),
    Verb(
        "ablate",
        "the paper's claimed effects, measured on your data",
        "studies.design:AblateConfig",
        "studies.ablate:ablate_command",
        ABLATE_EXAMPLES,
        "the summary",
    ),
)
BENCH_VERBS = (
    Verb(
        "prepare",
        "prepare's img/s and the CPU per image of its coordinator and workers",
        "bench.configs:BenchPrepareConfig",
        "bench.commands:prepare_command",
    ),
    Verb(
        "data",
        "our loader vs torchvision's usual pipeline",
        "bench.configs:BenchDataConfig",
        "bench.commands:data_command",
    ),
    Verb(
        "train",
        "training img/s: ours vs plain, naive eager and torchvision",
        "bench.configs:BenchTrainConfig",
        "bench.commands:train_command",
    ),
)


def _add_verb(sub, verb: Verb) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb.name, help=verb.help, description=verb.help, epilog=verb.epilog, formatter_class=_Help
    )
    p.set_defaults(verb_entry=verb, parser=p)
    config = _load(verb.config)
    add_config_flags(p, config, _recipe_defaults() if _is(verb, "TrainConfig") else None)
    if _is(verb, "TrainConfig"):
        p.add_argument("--resume", metavar="RUN_DIR", help="continue a run where it stopped")
    if _is(verb, "FeaturesConfig"):
        p.add_argument("images", nargs="*", help="image files (or --images FOLDER, --data STORE)")
    if verb.json:
        _add_json(p, verb.json)
    return p


def _run_verb(args) -> int:
    """Build the verb's config from its flags, call its function, print what it returns."""
    verb = args.verb_entry
    json_out = getattr(args, "json", False)
    progress = sys.stderr.isatty() and not json_out
    config = _load(verb.config)
    overrides = {}
    if "progress" in {f.name for f in fields(config)}:
        overrides["progress"] = progress
    if _is(verb, "FeaturesConfig"):
        overrides["images"] = list(args.images)
    train = _is(verb, "TrainConfig")
    kwargs = {}
    if train:
        from_file = _config_file_values(args)
        overrides.update(from_file)
        # what a resumed run changes: the options this command sets, nothing it defaults
        kwargs = {
            "resume": args.resume,
            "given": _given_options(args.parser, args.argv) | set(from_file),
        }
    cfg = config_from_args(config, args, **overrides)
    if not train and hasattr(cfg, "check"):  # a run's config is checked as it resolves
        cfg.check()
    run = _load(verb.run)
    if "progress" in inspect.signature(run).parameters:
        kwargs["progress"] = progress
    return _emit(run(cfg, **kwargs), json_out)


def _emit(result: Printed, as_json: bool) -> int:
    for note in result.notes:
        print(note, file=sys.stderr)
    if result.data is not None or result.lines:
        if as_json:
            _print_json(result.data)
        else:
            for line in result.lines:
                print(line)
    return result.code


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


def _bench_what(args) -> int:
    """`alexnet bench` without what to measure."""
    raise UsageError("bench what? one of: prepare, data, train (alexnet bench train --help)")


def build_parser() -> argparse.ArgumentParser:
    """The `alexnet` command's argument parser, every verb included."""
    parser = _Parser(
        prog="alexnet",
        description="AlexNet as published (Krizhevsky et al., NIPS 2012): prepare data, "
        "train, evaluate, predict and draw the paper's figures.",
    )
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    for verb in VERBS:
        _add_verb(sub, verb).set_defaults(func=_run_verb)
    bench_help = "throughput against baselines measured in the same run"
    bench = sub.add_parser("bench", help=bench_help, description=bench_help, formatter_class=_Help)
    bench.set_defaults(func=_bench_what)
    what = bench.add_subparsers(dest="what", parser_class=_Parser)
    for verb in BENCH_VERBS:
        _add_verb(what, verb).set_defaults(func=_run_verb)
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
