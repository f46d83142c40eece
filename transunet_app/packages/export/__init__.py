"""``transunet export MODEL -o OUT --format onnx|torchscript|monai-bundle``.

MODEL is an installed model name, a package file or a checkpoint. Every format is exported
from a *plain* model: built from the weights (``model_from_checkpoint``), eval mode, float32,
contiguous (NCHW) parameters and inputs, never one prepared for inference (oneDNN packed
weights, folded BatchNorms and the C kernels are not exportable).

Two fast paths of the model layers export wrongly through torch's TorchScript-based ONNX
exporter: each is recorded as a **Constant** (its output for the example input; the layer's
ONNX graph has no input at all), found by exporting module by module and comparing with
onnxruntime (tiny model, trained weights):

* ``models.layers.Attention`` without autograd writes the heads into a ``new_empty`` buffer
  through an ``out=`` view (``dot_product_attention(..., out=...)`` -> ``copy_``): the exporter
  loses the in-place write, so the attention output is the empty buffer. This is the path of
  any export under ``torch.no_grad()`` or of frozen weights: logits 0.12 relative to eager
  (one block alone: 0.87). ``torch.jit.trace`` keeps the aliasing and is exact.
* ``models.layers.GroupNorm`` on channels-last maps (<= 8 channels per group, < 1024 pixels)
  runs the ``_ChannelsLastGroupNorm`` autograd Function: a channels-last model (as training
  leaves it with ``train.channels_last``) gave 0.42.

Both fast paths (and StdConv2d's weight cache) have since left the model layers: a model built
by :func:`~transunet_app.models.build_model` is plain torch, and the fast variants are swapped
in only by the training and inference passes (:mod:`transunet_app.fast_layers`), which export
never runs. The export gives the eager logits to ~4e-7; ``tests/packages/test_export.py``
keeps the frozen channels-last case that exposed the constants.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import UserError

FORMATS = ("onnx", "torchscript", "monai-bundle")


@dataclass
class ExportSource:
    """A plain model and what describes it.

    Attributes:
        model: eval-mode float32 NCHW ``TransUNet`` (no gradients).
        checkpoint: the checkpoint dict it stands for (classes, preprocessing, model spec).
        card: the model card (a package's, or one built from the checkpoint).
        origin: the path or name it came from.
    """

    model: object
    checkpoint: dict
    card: dict
    origin: str

    @property
    def img_size(self) -> tuple[int, int]:
        s = self.checkpoint["preprocessing"].get("img_size", 224)
        return (int(s), int(s)) if isinstance(s, (int, float)) else (int(s[0]), int(s[1]))

    @property
    def in_channels(self) -> int:
        return int(self.checkpoint["preprocessing"].get("in_channels", 1))

    def example(self, batch: int = 2, seed: int = 0):
        """A (batch, C, H, W) float32 input in [0, 1] (the model's normalised CT range)."""
        import torch

        g = torch.Generator().manual_seed(seed)
        return torch.rand((batch, self.in_channels, *self.img_size), generator=g)


def plain_model(checkpoint: dict, origin: str = "checkpoint"):
    """The model of ``checkpoint`` as exporters need it: eval, float32, contiguous NCHW."""
    import torch

    from ...checkpoint import model_from_checkpoint

    model = model_from_checkpoint(checkpoint, origin)
    model = model.to(dtype=torch.float32, memory_format=torch.contiguous_format).eval()
    model.requires_grad_(False)
    return model


def load_source(spec) -> ExportSource:
    """An installed model name, a package (.zip or folder) or a checkpoint (.pt), as a plain model."""
    from ..card import build_card

    p = Path(str(spec))
    if p.is_file() and not p.name.lower().endswith(".zip"):
        from ...checkpoint import load_checkpoint

        ckpt = load_checkpoint(p)
        card = build_card(ckpt, user={"name": _safe_name(p.stem)}, source=str(p.resolve()))
    else:
        from ..store import resolve_model

        pkg = resolve_model(spec)
        ckpt, card = pkg.checkpoint(), pkg.card
    return ExportSource(model=plain_model(ckpt, str(spec)), checkpoint=ckpt, card=card,
                        origin=str(spec))


def _safe_name(stem: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "-", stem)[:64] or "model"


def relative_error(a, b) -> float:
    """||a - b|| / ||b|| (float64)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def export(spec, output, fmt: str, overwrite: bool = False) -> Path:
    """Export MODEL ``spec`` to ``output`` in ``fmt``; returns the written path."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    out = Path(output)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (use --overwrite to replace it)")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: output folder does not exist")
    source = load_source(spec)
    if fmt == "onnx":
        from .onnx import export_onnx

        return export_onnx(source, out, overwrite=overwrite)
    if fmt == "torchscript":
        from .torchscript import export_torchscript

        return export_torchscript(source, out, overwrite=overwrite)
    from .monai_bundle import export_monai_bundle

    return export_monai_bundle(source, out, overwrite=overwrite)
