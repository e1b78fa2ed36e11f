"""`alexnet export`: a trained net in the forms the ecosystem loads.

- onnx: checked against PyTorch's own outputs when onnxruntime is installed;
- torch-export: a torch.export program (.pt2), checked the same way (the plain net also
  scripts and traces with torch.jit, for those who still load TorchScript);
- safetensors: the weights alone, with the classes and normalisation, for `alexnet.load`
  and every verb that takes a checkpoint (a third of a training checkpoint's size).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from ..data.augment import BatchTransform
from ..kernels.onnx import onnx_ready
from ..model.info import layer_table
from ..model.net import input_crop
from ..options import EXPORT_FORMATS, EXPORT_PRECISIONS, check_choice
from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_bytes, check_output_file
from ..runtime.printed import Printed
from ..weights.checkpoint import Checkpoint, is_finite, model_options, save_safetensors
from ..weights.load import load_for_inference

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# how far an exported program's outputs may be from PyTorch's, relative to the largest
# logit (a few units of the type's last place). onnxruntime's kernels sum in other
# orders, and stay well inside it (docs/benchmarks.md, "ONNX in onnxruntime")
TOLERANCE = {"fp32": 1e-4, "bf16": 1e-2, "fp16": 2e-3}


def _net_and_input(ckpt: str, input_size: int | None, precision: str):
    """(loaded weights, the net in eval mode and `precision`, a fixed random batch of 2)."""
    check_choice("--precision", precision, EXPORT_PRECISIONS)
    loaded = load_for_inference(ckpt)
    input_size = input_size or input_crop(loaded.model.variant)
    layer_table(loaded.model, input_size)  # a too-small input: the same one line as `info`
    dtype = DTYPES[precision]
    model = loaded.model.to(dtype).eval().to(memory_format=torch.contiguous_format)
    return loaded, model, _check_batch(loaded, input_size).to(dtype)


def _check_batch(loaded, input_size: int) -> torch.Tensor:
    """Two images of random pixels as the net sees them (its centring, scale and channel
    order; the mean image as its per-channel mean, for any input size). At that scale the
    LRN's window sums move the outputs: with a standard normal batch the LRN was nearly
    the identity, and an ONNX graph that had lost its windows passed the check."""
    mean = loaded.norm["mean"]
    per_channel = mean.mean((0, 1)) if mean.dim() == 3 else mean
    norm = {**loaded.norm, "mean": per_channel, "eigval": None, "eigvec": None}
    transform = BatchTransform(**norm, crop=input_size)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, input_size, input_size, 3), dtype=torch.uint8, generator=g)
    return transform(images, transform.views(2, size=input_size)).contiguous()


def _check_close(got: torch.Tensor, expected: torch.Tensor, precision: str, what: str) -> float:
    """The largest difference; UsageError when it is beyond the type's rounding."""
    diff = float((got.float() - expected.float()).abs().max())
    limit = TOLERANCE[precision] * max(1.0, float(expected.float().abs().max()))
    if not diff <= limit:
        raise UsageError(
            f"{what} outputs differ from PyTorch's by {diff:.3g} in {precision}, beyond "
            f"{limit:.3g}: nothing written"
        )
    return diff


def export_onnx(
    ckpt: str,
    out: str,
    input_size: int | None = None,
    check: bool = True,
    opset: int = 17,
    precision: str = "fp32",
) -> dict:
    """Write the net as ONNX (a dynamic batch axis) and, with onnxruntime installed,
    compare its outputs with PyTorch's on the same random batch."""
    check_output_file(out, reads=[ckpt])
    if precision == "bf16":
        raise UsageError(
            "ONNX in bf16 does not run: onnxruntime has no bf16 convolution; export "
            "--precision fp16 or fp32, or bf16 as .pt2 or .safetensors"
        )
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise UsageError('ONNX export needs the onnx extra: pip install "alexnet[onnx]"') from None
    loaded, model, x = _net_and_input(ckpt, input_size, precision)
    out_path = Path(out)
    buf = io.BytesIO()  # serialised in memory first: a full disk fails in Python, cleanly
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer's notes on shape arithmetic and constant folding: about its own
        # work, nothing for the user to act on (the outputs are compared below)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            onnx_ready(model),  # the LRN and the pooling in the forms ONNX runs well
            (x,),
            buf,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        expected = model(x)
    result = {
        "onnx": str(out_path),
        "out": str(out_path),
        "format": "onnx",
        "precision": precision,
        "classes": loaded.num_classes,
        "checked": False,
    }
    if check:  # before it is written: a file whose outputs are wrong never reaches `out`
        diff = _onnxruntime_diff(buf.getvalue(), x, expected, precision)
        if diff is None:
            result["note"] = "onnxruntime not installed: outputs not compared"
        else:
            result.update(checked=True, max_abs_diff=diff)
    atomic_write_bytes(out_path, buf.getvalue())
    return result


def _onnxruntime_diff(data: bytes, x, expected, precision: str) -> float | None:
    """onnxruntime's outputs for `x` against PyTorch's `expected` (None without it)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(["logits"], {"image": x.numpy()})[0])
    return _check_close(got, expected, precision, "ONNX")


def export(
    ckpt: str,
    out: str,
    fmt: str = "auto",
    input_size: int | None = None,
    precision: str = "fp32",
) -> dict:
    """Export in `fmt` (one of EXPORT_FORMATS) and `precision` (one of
    EXPORT_PRECISIONS); "auto" goes by the file name (.onnx, .pt2, .safetensors)."""
    if fmt != "auto":
        check_choice("--format", fmt, EXPORT_FORMATS)
    if fmt == "auto":
        fmt = {".onnx": "onnx", ".pt2": "torch-export", ".safetensors": "safetensors"}.get(
            Path(out).suffix, ""
        )
        if not fmt:
            raise UsageError(
                f"cannot tell the format of {out}: name it .onnx, .pt2 or "
                ".safetensors, or give --format"
            )
    if fmt == "onnx":
        return export_onnx(ckpt, out, input_size, precision=precision)
    if fmt == "torch-export":
        return export_program(ckpt, out, input_size, precision)
    return export_safetensors(ckpt, out, precision)


def export_program(
    ckpt: str, out: str, input_size: int | None = None, precision: str = "fp32"
) -> dict:
    """torch.export with a dynamic batch, saved with torch.export.save and checked by
    running the saved program against the model."""
    check_output_file(out, reads=[ckpt])
    loaded, model, x = _net_and_input(ckpt, input_size, precision)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
        expected = model(x)
    # Serialised in memory, then written: torch.export.save's own writer aborts the
    # process (SIGABRT) when the disk fills under it; a Python write raises instead.
    buf = io.BytesIO()
    torch.export.save(program, buf)
    with torch.no_grad():  # the saved program, run before it is written
        got = torch.export.load(io.BytesIO(buf.getvalue())).module()(x)
    diff = _check_close(got, expected, precision, "the exported program's")
    atomic_write_bytes(out, buf.getvalue())
    return {
        "out": str(out),
        "format": "torch-export",
        "precision": precision,
        "classes": loaded.num_classes,
        "checked": True,
        "max_abs_diff": diff,
    }


def export_safetensors(ckpt: str, out: str, precision: str = "fp32") -> dict:
    """The weights with their classes and normalisation, from any checkpoint we load;
    in bf16 or fp16, half the file (the normalisation stays float32). Every loader of
    ours computes in float32 from them unless told otherwise (--precision)."""
    check_output_file(out, reads=[ckpt])
    check_choice("--precision", precision, EXPORT_PRECISIONS)
    loaded = load_for_inference(ckpt)
    model = loaded.model
    norm = {
        k: (torch.as_tensor(v, dtype=torch.float32) if k in ("mean", "std") else v)
        for k, v in loaded.norm.items()
        if v is not None
    }
    norm["kind"] = "mean-image" if norm["mean"].dim() == 3 else "channel"
    ids = loaded.class_ids or [str(i) for i in range(loaded.num_classes)]
    dtype = DTYPES[precision]
    state = {
        k: v.detach().cpu().to(dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    for k, v in state.items():  # fp16 tops out at 65504: a larger weight would load as inf
        if v.is_floating_point() and not is_finite(v):
            raise UsageError(f"{k} does not fit {precision}: export it as bf16 or fp32")
    save_safetensors(
        Checkpoint(
            model=state,
            variant=model.variant,
            classes=[
                {"index": i, "id": c, "name": n}
                for i, (c, n) in enumerate(zip(ids, loaded.classes, strict=True))
            ],
            normalization=norm,
            model_options=model_options(model.options),
        ),
        out,
    )
    return {
        "out": str(out),
        "format": "safetensors",
        "precision": precision,
        "classes": loaded.num_classes,
        "bytes": Path(out).stat().st_size,
        "checked": False,
    }


def export_command(cfg) -> Printed:
    """`alexnet export` (cfg: ExportConfig): the file written, and how it was checked."""
    fmt = "onnx" if cfg.onnx else cfg.format
    r = export(cfg.ckpt, cfg.out or cfg.onnx, fmt, cfg.input_size, cfg.precision)
    if r["checked"]:
        state = (
            f"outputs match PyTorch's in {r['precision']} (max abs diff {r['max_abs_diff']:.2e})"
        )
    else:
        state = r.get("note", f"{r.get('bytes', 0) / 2**20:.0f} MiB of {r['precision']} weights")
    return Printed(r, [f"{r.get('out', r.get('onnx'))}: {state}"])
