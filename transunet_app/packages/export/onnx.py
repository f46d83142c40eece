"""ONNX export: opset 17, dynamic batch axis, checked against torch with onnxruntime.

The graph is traced from the plain NCHW float32 model (the package docstring says which former
fast paths exported as constants) by torch's TorchScript-based exporter, which then gives the eager
logits to ~4e-7 on the tiny model and exports quickly (the dynamo exporter gives the same
accuracy, much slower). Before the file is renamed into place, onnxruntime runs
it on a batch of another size than the one traced, and an export whose logits differ from
torch's by more than :data:`MAX_RELATIVE_ERROR` is refused.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from ...errors import UserError

OPSET = 17
MAX_RELATIVE_ERROR = 1e-4
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def _require():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UserError(f"--format onnx needs onnx and onnxruntime ({exc.name} is missing): "
                        f"pip install 'transunet-app[export]'") from None


def export_onnx(source, out: Path, overwrite: bool = False) -> Path:
    """Write ``source.model`` as ONNX to ``out`` (atomically), verified with onnxruntime.

    Input ``image`` (batch, C, H, W) float32 in [0, 1] at the model's img_size; output
    ``logits`` (batch, K, H, W).
    """
    import torch

    from ...data.io import atomic_write

    _require()
    model = source.model
    example = source.example(batch=2)

    def write(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings on Python-level shape checks
            torch.onnx.export(model, (example,), str(tmp), opset_version=OPSET, dynamo=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True)
        err = check_onnx(tmp, model, source.example(batch=3, seed=1))
        if not err <= MAX_RELATIVE_ERROR:
            raise UserError(f"{out}: the ONNX graph's logits differ from torch's by {err:.2e} "
                            f"(relative; at most {MAX_RELATIVE_ERROR:g} accepted): not written")

    return atomic_write(out, write, overwrite=overwrite)


def run_onnx(path, x):
    """Logits of an ONNX file for a (B, C, H, W) float32 tensor, with onnxruntime (CPU)."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {INPUT_NAME: x.contiguous().numpy()})[0])


def check_onnx(path, model, x) -> float:
    """Relative error of the ONNX file's logits against ``model``'s on ``x``."""
    import torch

    from . import relative_error

    with torch.no_grad():
        ref = model(x)
    return relative_error(run_onnx(path, x), ref)
