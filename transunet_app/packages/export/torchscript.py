"""TorchScript export: a file ``torch.jit.load`` runs without transunet_app installed.

The plain NCHW float32 model is traced (``torch.jit.trace``; its forward has Python-level
shape checks that scripting cannot compile) on a batch of 2; the trace is checked on a batch
of 3 before the file is renamed into place. Input (batch, C, H, W) float32 in [0, 1] at the
model's img_size; output logits (batch, K, H, W).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from ...errors import UserError

MAX_RELATIVE_ERROR = 1e-5


def trace(model, example):
    """``torch.jit.trace`` of the plain model (no gradients)."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on Python-level shape checks
        return torch.jit.trace(model, example, check_trace=False)


def export_torchscript(source, out: Path, overwrite: bool = False) -> Path:
    import torch

    from ...data.io import atomic_write
    from . import relative_error

    traced = trace(source.model, source.example(batch=2))
    x = source.example(batch=3, seed=1)
    with torch.no_grad():
        err = relative_error(traced(x), source.model(x))
    if not err <= MAX_RELATIVE_ERROR:
        raise UserError(f"{out}: the traced model's logits differ from eager by {err:.2e}: not written")
    return atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp)), overwrite=overwrite)
