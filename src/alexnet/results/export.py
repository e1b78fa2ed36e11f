"""ONNX export, checked against PyTorch's own outputs when onnxruntime is installed."""

from __future__ import annotations

from pathlib import Path

import torch

from ..model.info import layer_table
from ..runtime.errors import UsageError
from ..runtime.files import check_output_file
from .inference import load_for_inference


def export_onnx(
    ckpt: str, out: str, input_size: int = 224, check: bool = True, opset: int = 17
) -> dict:
    """Write the net as ONNX (a dynamic batch axis) and, with onnxruntime installed,
    compare its outputs with PyTorch's on the same random batch."""
    check_output_file(out)
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise UsageError('ONNX export needs the onnx extra: pip install "alexnet[onnx]"') from None
    loaded = load_for_inference(ckpt)
    layer_table(loaded.model, input_size)  # a too-small input: the same one line as `info`
    model = loaded.model.float().eval().to(memory_format=torch.contiguous_format)
    x = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    out_path = Path(out)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        expected = model(x).numpy()
    tmp.replace(out_path)
    result = {"onnx": str(out_path), "classes": loaded.num_classes, "checked": False}
    if check:
        try:
            import onnxruntime as ort
        except ImportError:
            result["note"] = "onnxruntime not installed: outputs not compared"
            return result
        sess = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
        got = sess.run(["logits"], {"image": x.numpy()})[0]
        diff = float(abs(got - expected).max())
        if diff > 1e-3 * max(1.0, float(abs(expected).max())):
            raise UsageError(f"ONNX outputs differ from PyTorch's by {diff}")
        result.update(checked=True, max_abs_diff=diff)
    return result
