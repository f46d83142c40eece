"""Validation: slice-wise prediction of whole volumes, per-organ Dice and HD95.

A volume (D, H, W) is cut into axial slices, resized to the network size, predicted in
batches, and the logits are resized back to (H, W) (bilinear) before the argmax, so the label
map is on the volume's own grid. Dice per organ and case follows
:func:`transunet_app.metrics.overlap.dice` (nan when the organ is absent from both; such
cases do not enter the organ's mean).

HD95 per organ and case follows :func:`transunet_app.metrics.surface.hd95` (medpy's
definition, the ``strict`` convention of :mod:`transunet_app.metrics.evaluate`): in mm when
the volume carries its spacing, in voxels when it does not (the official Synapse download),
and nan when the organ is missing from the prediction or the reference (a distance to nothing
is undefined; Dice already scores those cases as 0). The organ's mean skips those cases and
:data:`HD95_CONVENTION` says so, so a model card never mixes conventions silently.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import resize_batch
from ..metrics.overlap import dice
from ..metrics.surface import hd95

#: How the validation HD95 is measured; ``{unit}`` is "mm" or "voxels".
HD95_CONVENTION = ("strict: 95th percentile of the concatenated symmetric surface distances "
                   "(medpy hd95), in {unit}, per case where the organ is in both prediction and "
                   "reference, mean over those cases")

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


def organ_scores(pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray, classes: list[str],
                 spacing_mm=None, with_hd95: bool = True) -> tuple[dict[str, float], dict[str, float] | None]:
    """Dice and HD95 of every foreground class ``classes[1:]``, each organ's masks built once.

    Args:
        pred, label: (D, H, W) class ids.
        spacing_mm: (3,) voxel size in mm for (D, H, W): HD95 in mm; None: in voxels.
        with_hd95: also measure HD95 (else the second item is None).

    Returns:
        ``(dice, hd95)``: {organ: value}; Dice nan where the organ is absent from both, HD95 nan
        where it is missing from either.
    """
    p = np.asarray(pred)
    g = np.asarray(label)
    dices, hds = {}, {}
    for k, name in enumerate(classes):
        if k == 0:
            continue
        pm, gm = p == k, g == k
        dices[name] = dice(pm, gm)
        if with_hd95:
            hds[name] = hd95(pm, gm, spacing_mm)
    return dices, (hds if with_hd95 else None)


def _mean_per_organ(per_case: dict[str, dict[str, float]], classes: list[str]) -> dict[str, float]:
    out = {}
    for name in classes[1:]:
        vals = [v[name] for v in per_case.values() if not math.isnan(v[name])]
        out[name] = float(np.mean(vals)) if vals else float("nan")
    return out


def _mean(values) -> float:
    valid = [v for v in values if not math.isnan(v)]
    return float(np.mean(valid)) if valid else float("nan")


def summarize(per_case: dict[str, dict[str, float]], classes: list[str],
              hd95_per_case: dict[str, dict[str, float]] | None = None,
              hd95_units: set[str] | frozenset = frozenset()) -> dict:
    """``{"per_organ": {organ: mean Dice over cases}, "mean_dice": mean over organs, "cases": ...}``.

    With ``hd95_per_case`` also ``"hd95"`` ({organ: mean HD95 over cases}), ``"mean_hd95"`` and
    ``"hd95_convention"``. ``hd95_units`` holds the unit of each case's values ("mm" or
    "voxels"); when both occur the means would mix units, so they are nan and the convention
    says why. Means skip nan; an organ absent from every case is nan and left out of the means.
    """
    per_organ = _mean_per_organ(per_case, classes)
    out = {"per_organ": per_organ, "mean_dice": _mean(per_organ.values()), "cases": per_case}
    if hd95_per_case is not None:
        if len(hd95_units) > 1:
            per_hd = {name: float("nan") for name in classes[1:]}
            convention = ("not averaged: some validation volumes have their spacing (mm) and "
                          "others do not (voxels)")
        else:
            per_hd = _mean_per_organ(hd95_per_case, classes)
            convention = HD95_CONVENTION.format(unit=next(iter(hd95_units), "voxels"))
        out.update({"hd95": per_hd, "mean_hd95": _mean(per_hd.values()), "hd95_convention": convention,
                    "hd95_cases": hd95_per_case})
    return out


def validate(model: torch.nn.Module, volumes, classes: list[str], img_size: int, batch_size: int = 16,
             device: torch.device = _CPU, amp_dtype: torch.dtype | None = None,
             interpolation: str = "bilinear", channels_last: bool = False, keep_prediction_of: int | None = 0,
             with_hd95: bool = True):
    """Predict every volume and score it.

    Args:
        volumes: iterable of dicts with ``case``, ``image`` (D, H, W), ``label`` (D, H, W) and
            optionally ``spacing`` (3,) mm for (D, H, W) with ``spacing_known`` (HD95 in mm;
            without them HD95 is in voxels).
        keep_prediction_of: index of a volume whose (image, label, prediction) is returned for
            a TensorBoard panel (None = none).
        with_hd95: also measure HD95 per organ (see the module docstring).

    Returns:
        ``(summary, example)``: :func:`summarize` output and ``(image, label, pred)`` or None.
    """
    per_case, hd_case, units, example = {}, {}, set(), None
    for i, vol in enumerate(volumes):
        pred = predict_volume(model, vol["image"], img_size, batch_size, device, amp_dtype, interpolation,
                              channels_last)
        case = str(vol["case"])
        spacing = vol.get("spacing") if bool(vol.get("spacing_known", False)) else None
        if spacing is not None:
            spacing = np.asarray(spacing, dtype=np.float64)
        per_case[case], hd = organ_scores(pred, vol["label"], classes, spacing, with_hd95)
        if with_hd95:
            units.add("mm" if spacing is not None else "voxels")
            hd_case[case] = hd
        if keep_prediction_of is not None and i == keep_prediction_of:
            example = (vol["image"], vol["label"], pred)
    return summarize(per_case, classes, hd_case if with_hd95 else None, units), example
