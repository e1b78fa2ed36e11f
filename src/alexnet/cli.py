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

# --decode's values: alexnet.data.loader.DECODES, spelled here so that building the
# parser imports no torch (a test holds the two equal)
DECODES = ("auto", "workers", "device")


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


# ---------------------------------------------------------------- prepare
def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="turn an image collection into a store (PAPER.md §2)")
    p.add_argument(
        "src",
        help="image folder (class sub-folders), ILSVRC-2012 root, or the "
        "root of torchvision MNIST / Fashion-MNIST / CIFAR-10 files",
    )
    p.add_argument("out", help="the store directory to create")
    p.add_argument("--val", dest="val_src", help="validation images (class sub-folders or flat)")
    p.add_argument("--val-labels", help="labels of a flat validation folder")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="held out per class when there is no --val (default 0.1)",
    )
    p.add_argument("--class-names", help="synset mapping file (wnid name) for human names")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--format", default="auto", choices=("auto", "raw", "jpeg"))
    p.add_argument("--shard-size", type=_positive_int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args) -> int:
    from .data.prepare import PrepareConfig, format_summary, prepare

    cfg = PrepareConfig(
        src=args.src, out=args.out, val_src=args.val_src, val_labels=args.val_labels,
        class_names=args.class_names, val_fraction=args.val_fraction, workers=args.workers,
        size=args.size, format=args.format, shard_size=args.shard_size, seed=args.seed,
        overwrite=args.overwrite, progress=not args.json and sys.stderr.isatty(),
    )  # fmt: skip
    summary = prepare(cfg)
    _print_json(summary) if args.json else print(format_summary(summary))
    return 0


# ---------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train (default: the paper's net on the embedded demo)")
    p.add_argument("--data", help="a prepared store (default: build and use the demo dataset)")
    p.add_argument("--out", help="run directory (default: runs/<date-time>)")
    p.add_argument("--variant", default="paper")
    p.add_argument(
        "--recipe", help="paper (default on real data), torchvision, demo (default without --data)"
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", help="plateau, step, warmup-cosine or constant")
    p.add_argument("--patience", type=int, help="plateau: epochs without improvement")
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--init", choices=("paper", "torch", "kaiming"))
    p.add_argument("--dropout", type=float, help="on fc6/fc7 outputs (paper: 0.5)")
    p.add_argument("--input-scale", type=float,
                   help="multiply the mean-subtracted 0..255 pixels by this (paper: 1)")  # fmt: skip
    p.add_argument("--no-lrn", dest="lrn", action="store_false")
    p.add_argument("--no-overlap-pool", dest="overlap_pool", action="store_false")
    p.add_argument("--activation", default="relu", choices=("relu", "tanh"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--model-parallel", type=int, default=1, metavar="2",
                   help="split the paper net's two towers over 2 processes (§3.2); "
                   "run under torchrun with 2 (or 2xR) processes")  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="data loading processes")
    p.add_argument("--decode", default="auto", choices=DECODES,
                   help="where a JPEG store is decoded (auto: on a GPU, by nvjpeg)")  # fmt: skip
    p.add_argument("--max-steps", type=int, help="stop after this many steps (checkpointed)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps")
    p.add_argument("--eval-batch-size", type=_positive_int, default=128)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run where it stopped")
    p.add_argument("--no-report", dest="report", action="store_false")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from .train.loop import TrainConfig, TrainingDiverged, train

    names = {f for f in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    cfg.progress = sys.stderr.isatty() and not args.json
    try:
        summary = train(cfg, resume=args.resume)
    except TrainingDiverged as e:
        print(f"alexnet: error: {e}", file=sys.stderr)
        return 3
    if summary["rank"] != 0:
        return 0
    if args.json:
        _print_json(summary)
        return 0
    last = summary["history"][-1] if summary["history"] else None
    if last:
        print(
            f"final: val top-1 error {last['val_top1_error']:.3f}, "
            f"top-5 error {last['val_top5_error']:.3f} after {last['epoch']} epoch(s)"
        )
    print(f"run directory: {summary['run_dir']}")
    print(f"metrics:       {summary['metrics']}")
    print(f"checkpoint:    {summary['checkpoint']}")
    if summary.get("report"):
        print(f"report:        {summary['report']}")
    return 0


# ---------------------------------------------------------------- bench
def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="throughput against baselines measured in the same run")
    what = p.add_subparsers(dest="what", required=True, parser_class=_Parser)
    d = what.add_parser("data", help="our loader vs torchvision's usual pipeline")
    d.add_argument("--data", required=True, help="a prepared store")
    d.add_argument("--source", required=True, help="the original image folder of that store")
    d.add_argument("--workers", type=int, default=1)
    d.add_argument("--batch-size", type=_positive_int, default=64)
    d.add_argument("--batches", type=_positive_int, default=20)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_cmd_bench_data)
    t = what.add_parser("train", help="training img/s: ours vs naive eager vs torchvision")
    t.add_argument("--device", default="auto")
    t.add_argument("--batch-size", type=_positive_int, default=64)
    t.add_argument("--steps", type=_positive_int,
                   help="steps per timed pass (default 2; end to end: 20 in one pass)")  # fmt: skip
    t.add_argument(
        "--rounds",
        type=_positive_int,
        default=3,
        help="round-robin passes over the models; each keeps its best",
    )
    t.add_argument("--precision", default="auto")
    t.add_argument("--compile", action="store_true")
    t.add_argument("--profile", action="store_true", help="name the top operators")
    t.add_argument("--model-parallel", type=int, default=1, metavar="2",
                   help="the paper's two towers on two processes vs one device")  # fmt: skip
    e2e = t.add_argument_group("end to end, from a prepared store")
    e2e.add_argument("--data", metavar="STORE",
                     help="time the whole path from this store, with the feed alone and the "
                     "step alone as its bounds")  # fmt: skip
    e2e.add_argument("--source", metavar="FOLDER",
                     help="the store's original image folder: adds torchvision's alexnet fed "
                     "by the pytorch/examples pipeline")  # fmt: skip
    e2e.add_argument("--workers", type=int, default=2, help="loader processes (both pipelines)")
    e2e.add_argument("--decode", default="auto", choices=DECODES)
    e2e.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_cmd_bench_train)


def _cmd_bench_data(args) -> int:
    from .bench import bench_data

    r = bench_data(args.data, args.source, args.workers, args.batch_size, args.batches)
    if args.json:
        _print_json(r)
    else:
        print(f"workers {r['workers']}, batch {r['batch_size']}, store {r['store_format']}")
        print(f"  ours (store + batched augmentation):   {r['ours_img_s']:8.1f} img/s")
        print(f"  torchvision ImageFolder pipeline:      {r['baseline_img_s']:8.1f} img/s")
        print(f"  ratio: {r['ratio']:.2f}x")
    return 0


# ---------------------------------------------------------------- results (§6)
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="top-1/top-5 error, 1 or 10 crops, per class")
    p.add_argument("ckpt", help="our checkpoint, or a torchvision AlexNet .pth")
    p.add_argument("--data", required=True, help="a prepared store")
    p.add_argument("--split", default="val")
    p.add_argument("--crops", type=int, default=10, choices=(1, 10))
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from .data.store import Store
    from .evaluate import evaluate_split
    from .inference import load_for_inference
    from .train.loop import pick_device

    device = pick_device(args.device)
    loaded = load_for_inference(args.ckpt, device)
    store = Store(args.data)
    if store.num_classes != loaded.num_classes:
        raise UsageError(f"the checkpoint has {loaded.num_classes} classes, the store "
                         f"{store.num_classes}")  # fmt: skip
    r = evaluate_split(loaded.model, store.split(args.split), loaded.normalizer(device),
                       loaded.num_classes, crops=args.crops, batch_size=args.batch_size,
                       workers=args.workers, progress=sys.stderr.isatty())  # fmt: skip
    r["per_class"] = {c["name"]: a for c, a in zip(store.classes, r["per_class"], strict=True)}
    if args.json:
        _print_json(r)
        return 0
    print(f"{r['images']} images, {r['crops']} crop(s): top-1 error {r['top1_error']:.4f}, "
          f"top-5 error {r['top5_error']:.4f}")  # fmt: skip
    for name, acc in r["per_class"].items():
        print(f"  {name:<30} {'-' if acc is None else f'{acc:.3f}'}")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="the five most probable classes of images (Figure 4)")
    p.add_argument("ckpt")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=_positive_int, default=5)
    p.add_argument("--figure", help="draw the predictions with bars into this PNG")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    from .inference import load_for_inference
    from .predict import display_image, predict_files

    loaded = load_for_inference(args.ckpt, args.device)
    results = predict_files(loaded, args.images, args.top)
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"alexnet: error: {r['image']}: {r['error']}", file=sys.stderr)
    if args.json:
        _print_json(results)
    else:
        for r in results:
            if "top" in r:
                print(r["image"])
                for t in r["top"]:
                    print(f"  {t['prob']:6.1%}  {t['name']}")
    ok = [r for r in results if "top" in r]
    if args.figure and ok:
        from .figures import predictions_png
        from .files import atomic_write_bytes

        png = predictions_png([display_image(r["image"]) for r in ok], [r["top"] for r in ok])
        atomic_write_bytes(args.figure, png)
    return 0 if not failed else (1 if ok else 2)


def _add_kernels(sub) -> None:
    p = sub.add_parser("kernels", help="the conv1 kernels as a grid (Figure 3)")
    p.add_argument("ckpt")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=_cmd_kernels)


def _cmd_kernels(args) -> int:
    from .figures import kernels_png
    from .files import atomic_write_bytes
    from .inference import load_for_inference

    atomic_write_bytes(args.out, kernels_png(load_for_inference(args.ckpt).model))
    print(args.out)
    return 0


def _add_neighbors(sub) -> None:
    p = sub.add_parser("neighbors", help="nearest gallery images in fc7 space (Figure 4)")
    p.add_argument("ckpt")
    p.add_argument("--gallery", required=True, help="a prepared store")
    p.add_argument("--split", default="train", help="gallery split (default train)")
    p.add_argument("--query", nargs="+", required=True, help="query image files")
    p.add_argument("--k", type=_positive_int, default=5)
    p.add_argument(
        "--codes",
        type=_positive_int,
        metavar="BITS",
        help="also search binary codes from an auto-encoder, and compare",
    )
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_neighbors)


def _cmd_neighbors(args) -> int:
    from .retrieval import neighbors

    r = neighbors(args.ckpt, args.gallery, args.query, k=args.k, split=args.split,
                  out=args.out, codes=args.codes, device=args.device,
                  progress=sys.stderr.isatty())  # fmt: skip
    if args.json:
        _print_json(r)
    else:
        for q in r["queries"]:
            names = ", ".join(f"{n['name']} ({n['distance']:.1f})" for n in q["neighbors"])
            print(f"{q['image']}: {names}")
        if "codes" in r:
            c = r["codes"]
            print(f"{c['bits']}-bit codes: top-{args.k} agreement with Euclidean "
                  f"{c['agreement']:.1%}")  # fmt: skip
        print(r["figure"])
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report of a run")
    p.add_argument("run_dir")
    p.add_argument("--out", help="default RUN_DIR/report.html")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    from .report import build_report

    print(build_report(args.run_dir, args.out, device=args.device))
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX, checked against PyTorch")
    p.add_argument("ckpt")
    p.add_argument("--onnx", required=True, help="the .onnx file to write")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from .export import export_onnx

    r = export_onnx(args.ckpt, args.onnx, args.input_size)
    if args.json:
        _print_json(r)
    else:
        state = (f"outputs match PyTorch (max abs diff {r['max_abs_diff']:.2e})" if r["checked"]
                 else r.get("note", "not checked"))  # fmt: skip
        print(f"{r['onnx']}: {state}")
    return 0


def _cmd_bench_train(args) -> int:
    from .bench import bench_end_to_end, bench_model_parallel, bench_train

    if args.model_parallel not in (1, 2):
        raise UsageError(f"--model-parallel must be 1 or 2, not {args.model_parallel}")
    if args.model_parallel == 2:
        return _print_bench_model_parallel(
            bench_model_parallel(
                args.device, args.batch_size, args.steps or 2, args.precision, args.rounds
            ),
            args.json,
        )

    if args.source and not args.data:
        raise UsageError("--source needs --data (the store prepared from it)")
    if args.data:
        return _print_bench_end_to_end(
            bench_end_to_end(args.data, args.source, args.device, args.batch_size,
                             args.steps or 20, args.warmup, args.workers, args.precision,
                             args.compile, args.decode),
            args.json,
        )  # fmt: skip
    r = bench_train(args.device, args.batch_size, args.steps or 2, args.precision, args.compile,
                    args.profile, args.rounds)  # fmt: skip
    if args.json:
        _print_json(r)
        return 0
    print(f"{r['device']}, batch {r['batch_size']}, best of {r['rounds']} interleaved rounds, "
          f"{r['precision']}, channels_last, "
          f"{r['threads']} threads{', compiled' if r['compile'] else ''}")  # fmt: skip
    print(f"{'model':<34}{'train img/s':>12}{'infer img/s':>13}")
    for name, label in (("ours", "ours (fast LRN)"), ("naive", "naive (nn.LocalResponseNorm)"),
                        ("torchvision", "torchvision.models.alexnet"),
                        ("no_lrn", "paper net without LRN (bound)")):  # fmt: skip
        print(f"{label:<34}{r[name + '_img_s']:>12.2f}{r[name + '_infer_img_s']:>13.2f}")
    print(f"ours / naive: {r['ratio_vs_naive']:.2f}x, ours / torchvision: "
          f"{r['ratio_vs_torchvision']:.2f}x, LRN overhead {r['lrn_overhead']:.1%} "
          "of the no-LRN net")  # fmt: skip
    for op in r.get("top_operators", []):
        print(f"  {op['self_ms']:>9.1f} ms  {op['calls']:>5}  {op['op']}")
    return 0


def _print_bench_end_to_end(r: dict, as_json: bool) -> int:
    if as_json:
        _print_json(r)
        return 0
    where = r.get("gpu", f"{r['threads']} threads")
    print(f"end to end from a {r['store_format']} store (decoded in the {r['decode']}), "
          f"{r['device']} ({where}), batch {r['batch_size']}, {r['precision']}, "
          f"{r['workers']} workers, {r['steps']} timed steps"
          f"{', compiled' if r['compile'] else ''}")  # fmt: skip
    print(f"  feed alone (read, decode, augment):  {r['feed_img_s']:10.2f} img/s")
    print(f"  step alone (data resident):          {r['step_img_s']:10.2f} img/s")
    print(f"  ours, end to end:                    {r['ours_img_s']:10.2f} img/s "
          f"({r['fraction_of_bound']:.0%} of the {r['bound']} bound)")  # fmt: skip
    if "torchvision_img_s" in r:
        print(f"  torchvision + examples pipeline:     {r['torchvision_img_s']:10.2f} img/s "
              f"(ours / it: {r['ratio_vs_torchvision']:.2f}x)")  # fmt: skip
    return 0


def _print_bench_model_parallel(r: dict, as_json: bool) -> int:
    if as_json:
        _print_json(r)
        return 0
    where = (
        " + ".join(r["gpus"])
        if "gpus" in r
        else (f"CPU: 2 processes x {r['tower_threads']} threads vs 1 x {r['single_threads']}")
    )
    print(
        f"model parallel (2 towers, {r['backend']}), batch {r['batch_size']}, "
        f"{r['precision']}, best of {r['rounds']} rounds; {where}"
    )
    mib = 2**20
    print(
        f"bytes sent per rank per step: {r['bytes_sent_per_rank_per_step'] / mib:.1f} MiB "
        f"(forward gathers {r['forward_bytes_sent_per_rank'] / mib:.1f} MiB, backward "
        f"all-reduce {r['backward_allreduce_bytes'] / mib:.1f} MiB); "
        f"{r['bytes_sent_per_image'] / 1024:.0f} KiB per image"
    )
    print(
        f"two towers: {r['model_parallel_img_s']:.2f} img/s, one device: "
        f"{r['single_img_s']:.2f} img/s, ratio {r['ratio_vs_single']:.2f}x"
    )
    return 0


VERBS = (
    _add_info,
    _add_prepare,
    _add_train,
    _add_evaluate,
    _add_predict,
    _add_kernels,
    _add_neighbors,
    _add_report,
    _add_export,
    _add_bench,
)


def build_parser() -> argparse.ArgumentParser:
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


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from .allocator import tune_cpu_allocator

        tune_cpu_allocator()  # before the first big tensor; see allocator.py
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
    except Exception as e:  # a bug of ours: still one line, with a way to see more
        if os.environ.get("ALEXNET_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"alexnet: internal error: {type(e).__name__}: {msg} "
              "(set ALEXNET_DEBUG=1 for the traceback)", file=sys.stderr)  # fmt: skip
        return 1
