"""Validation: slice-wise prediction of whole volumes and per-organ Dice.

A volume (D, H, W) is cut into axial slices, resized to the network size, predicted in
batches, and the logits are resized back to (H, W) (bilinear) before the argmax, so the label
map is on the volume's own grid. Dice per organ and case follows
:func:`transunet_app.metrics.overlap.dice` (nan when the organ is absent from both; such
cases do not enter the organ's mean).
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import resize_batch
from ..metrics.overlap import dice

_CPU = torch.device("cpu")


@torch.no_grad()
def predict_volume(model: torch.nn.Module, image: torch.Tensor, img_size: int, batch_size: int = 16,
                   device: torch.device = _CPU, amp_dtype: torch.dtype | None = None,
                   interpolation: str = "bilinear", channels_last: bool = False) -> torch.Tensor:
    """Label map (D, H, W) int64 of a volume (D, H, W) with intensities in [0, 1]."""
    was_training = model.training
    model.eval()
    d, h, w = image.shape
    out = torch.empty((d, h, w), dtype=torch.int64)
    # One autocast context for the whole volume: autocast caches the low-precision copy of each
    # weight for the life of its context, so the weights are cast once, not once per batch.
    ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    try:
        with ctx:
            for start in range(0, d, batch_size):
                out[start:start + batch_size] = _predict_batch(
                    model, image[start:start + batch_size], img_size, (h, w), device, interpolation,
                    channels_last)
    finally:
        model.train(was_training)
    return out


def _predict_batch(model, slab, img_size, out_size, device, interpolation, channels_last):
    """Labels (B, H, W) int64 on the CPU of slices (B, H, W) in [0, 1] (resizing in float32:
    autocast leaves interpolation of float32 tensors in float32)."""
    x = resize_batch(slab.unsqueeze(1).to(device, torch.float32), img_size, interpolation)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    logits = model(x).float()
    if tuple(logits.shape[-2:]) != out_size:
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=True)
    return logits.argmax(1).cpu()


def organ_dice(pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray,
               classes: list[str]) -> dict[str, float]:
    """Dice of every foreground class ``classes[1:]`` (nan where absent from both)."""
    p = np.asarray(pred)
    g = np.asarray(label)
    return {name: dice(p == k, g == k) for k, name in enumerate(classes) if k > 0}


def summarize(per_case: dict[str, dict[str, float]], classes: list[str]) -> dict:
    """``{"per_organ": {organ: mean over cases}, "mean_dice": mean over organs, "cases": ...}``.

    Means skip nan; an organ absent from every case is nan and left out of ``mean_dice``.
    """
    per_organ = {}
    for name in classes[1:]:
        vals = [v[name] for v in per_case.values() if not math.isnan(v[name])]
        per_organ[name] = float(np.mean(vals)) if vals else float("nan")
    valid = [v for v in per_organ.values() if not math.isnan(v)]
    return {"per_organ": per_organ, "mean_dice": float(np.mean(valid)) if valid else float("nan"),
            "cases": per_case}


def validate(model: torch.nn.Module, volumes, classes: list[str], img_size: int, batch_size: int = 16,
             device: torch.device = _CPU, amp_dtype: torch.dtype | None = None,
             interpolation: str = "bilinear", channels_last: bool = False, keep_prediction_of: int | None = 0):
    """Predict every volume and score it.

    Args:
        volumes: iterable of dicts with ``case``, ``image`` (D, H, W), ``label`` (D, H, W).
        keep_prediction_of: index of a volume whose (image, label, prediction) is returned for
            a TensorBoard panel (None = none).

    Returns:
        ``(summary, example)``: :func:`summarize` output and ``(image, label, pred)`` or None.
    """
    per_case, example = {}, None
    for i, vol in enumerate(volumes):
        pred = predict_volume(model, vol["image"], img_size, batch_size, device, amp_dtype, interpolation,
                              channels_last)
        per_case[str(vol["case"])] = organ_dice(pred, vol["label"], classes)
        if keep_prediction_of is not None and i == keep_prediction_of:
            example = (vol["image"], vol["label"], pred)
    return summarize(per_case, classes), example
