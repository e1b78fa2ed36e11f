"""The `alexnet` command: a thin layer of argparse over the library's functions.

Every verb parses its flags, calls one library function with explicit arguments and
prints the result (text, or one JSON object with --json). User mistakes surface as
UsageError/ValueError and become one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: one line, exit 2
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=None, default=str))


# ---------------------------------------------------------------- info
def _add_info(sub) -> None:
    p = sub.add_parser("info", help="layer table of a variant (the paper's Figure 2 in text)")
    p.add_argument("--variant", default="paper")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-classes", type=_positive_int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    from .info import format_info, model_info

    info = model_info(args.variant, args.input_size, args.num_classes)
    _print_json(info) if args.json else print(format_info(info))
    return 0


VERBS = (_add_info,)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="alexnet", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    for add in VERBS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        if os.environ.get("ALEXNET_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"alexnet: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alexnet: interrupted", file=sys.stderr)
        return 130
