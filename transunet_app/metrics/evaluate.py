"""Per-case multi-label evaluation and dataset summaries, in two conventions.

``strict`` (default): distances in mm (and also in voxels), every empty case explicit.

=====================  ============  ==================================  =========
status                 Dice          HD95 / ASSD (mm and voxels)          NSD
=====================  ============  ==================================  =========
``both_present``       computed      computed                            computed
``both_empty``         nan           nan                                 nan
``missed``             0.0           nan (distance to nothing undefined)  0.0
(gt present, pred
empty)
``false_positive``     0.0           nan                                 0.0
(pred present, gt
empty)
=====================  ============  ==================================  =========

Summaries skip ``nan`` values and say how many were skipped (``n`` and ``n_undefined`` per
metric, ``status_counts`` per organ): a ``nan`` is never averaged in as zero.

``transunet``: reproduces the official TransUNet ``calculate_metric_percase`` (``utils.py`` of
Beckschen/TransUNet) so numbers compare with the papers:

* prediction and reference both non-empty: Dice and HD95 **in voxel units** (no spacing);
* prediction non-empty, reference empty: ``(dice, hd95) = (1, 0)``;
* otherwise (prediction empty): ``(0, 0)``.

``hd95`` then holds the voxel-unit value; ``hd95_mm`` and ``assd_mm`` are still given for
``both_present`` and follow the same (1, 0) / (0, 0) rule otherwise (0), NSD follows Dice's rule.
The official test averages each class over all cases, then the classes: :func:`summarize` does
the same, and with this convention nothing is ``nan``, so the means equal the official ones.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .overlap import dice, volume_ml
from .surface import distances_between_surfaces, mask_surfaces, normalize_spacing

CONVENTIONS = ("strict", "transunet")
METRICS = ("dice", "hd95", "hd95_mm", "hd95_vox", "assd_mm", "nsd")
STATUSES = ("both_present", "both_empty", "missed", "false_positive")
DEFAULT_NSD_TOLERANCE_MM = 2.0

def _nan() -> float:
    return float("nan")


def evaluate_organ(pred, gt, spacing_mm, convention: str = "strict",
                   nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> dict:
    """Metrics for one organ of one case.

    Args:
        pred: (D, H, W) (or any shape) binary prediction mask.
        gt: reference mask of the same shape.
        spacing_mm: voxel size per axis in mm (``None``: 1 mm, i.e. voxel units).
        convention: ``"strict"`` or ``"transunet"`` (see module docstring).
        nsd_tolerance_mm: tolerance of the normalised surface Dice, mm.

    Returns:
        dict with ``status`` (one of :data:`STATUSES`), ``dice``, ``hd95`` (mm for strict,
        voxels for transunet), ``hd95_mm``, ``hd95_vox``, ``assd_mm``, ``nsd`` (floats, ``nan``
        where undefined), ``pred_volume_ml``, ``ref_volume_ml``, ``pred_voxels``, ``ref_voxels``.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    p = np.asarray(pred).astype(bool, copy=False)
    g = np.asarray(gt).astype(bool, copy=False)
    sp_mm = normalize_spacing(spacing_mm, p.ndim)
    n_p, n_g = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    status = ("both_present" if n_p and n_g else "both_empty" if not (n_p or n_g)
              else "missed" if n_g else "false_positive")
    out = {
        "status": status,
        "pred_voxels": n_p, "ref_voxels": n_g,
        "pred_volume_ml": volume_ml(p, sp_mm) if n_p else 0.0,
        "ref_volume_ml": volume_ml(g, sp_mm) if n_g else 0.0,
    }
    if status == "both_present":
        ps, gs, _ = mask_surfaces(p, g)
        d_mm = distances_between_surfaces(ps, gs, sp_mm).symmetric
        if np.allclose(sp_mm, sp_mm[0]):
            d_vox = d_mm / sp_mm[0]
        else:
            d_vox = distances_between_surfaces(ps, gs, np.ones(p.ndim)).symmetric
        m = {
            "dice": dice(p, g),
            "hd95_mm": float(np.percentile(d_mm, 95)),
            "hd95_vox": float(np.percentile(d_vox, 95)),
            "assd_mm": float(d_mm.mean()),
            "nsd": float(np.count_nonzero(d_mm <= nsd_tolerance_mm) / d_mm.size),
        }
    elif convention == "transunet":
        v = 1.0 if status == "false_positive" else 0.0
        m = {"dice": v, "hd95_mm": 0.0, "hd95_vox": 0.0, "assd_mm": 0.0, "nsd": v}
    else:
        both_empty = status == "both_empty"
        m = {"dice": _nan() if both_empty else 0.0, "hd95_mm": _nan(), "hd95_vox": _nan(),
             "assd_mm": _nan(), "nsd": _nan() if both_empty else 0.0}
    m["hd95"] = m["hd95_vox"] if convention == "transunet" else m["hd95_mm"]
    out.update(m)
    return out


def evaluate_case(pred_labels, gt_labels, labels: Mapping[int, str], spacing_mm,
                  convention: str = "strict",
                  nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> dict[str, dict]:
    """Evaluate every organ of a multi-label prediction against its reference.

    Args:
        pred_labels: (D, H, W) integer label map (0 = background).
        gt_labels: reference label map of the same shape.
        labels: label id -> organ name; id 0 (background) is skipped.
        spacing_mm: voxel size per axis in mm.
        convention: ``"strict"`` or ``"transunet"``.
        nsd_tolerance_mm: NSD tolerance in mm.

    Returns:
        organ name -> :func:`evaluate_organ` dict with an added ``label`` (the id).
    """
    pl, gl = np.asarray(pred_labels), np.asarray(gt_labels)
    if pl.shape != gl.shape:
        raise ValueError(f"label maps differ in shape: {pl.shape} vs {gl.shape}")
    result = {}
    for lab, name in sorted(labels.items()):
        if int(lab) == 0:
            continue
        r = evaluate_organ(pl == int(lab), gl == int(lab), spacing_mm, convention,
                           nsd_tolerance_mm)
        result[name] = {"label": int(lab), **r}
    return result


def _stats(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    n_undef = int(arr.size - finite.size)
    if finite.size == 0:
        return {"mean": None, "std": None, "median": None, "n": 0, "n_undefined": n_undef}
    return {"mean": float(finite.mean()), "std": float(finite.std()),
            "median": float(np.median(finite)), "n": int(finite.size), "n_undefined": n_undef}


def summarize(cases: list[dict], organ_names: list[str]) -> dict:
    """Per-organ statistics over cases and the overall means as the papers compute them.

    Args:
        cases: list of ``{"case": name, "organs": {organ: metrics}}`` (from :func:`evaluate_case`).
        organ_names: organs to summarise, in table order.

    Returns:
        ``{"organs": {organ: {metric: {mean, std, median, n, n_undefined}, "status_counts": {...},
        "pred_volume_ml": {...}, "ref_volume_ml": {...}}}, "mean": {metric: value or None},
        "mean_organs_used": {metric: [organs]}}``. The overall mean of a metric is the mean over
        organs of each organ's mean over cases (TransUNet's ``np.mean(metric_list, axis=0)``);
        organs whose metric is undefined in every case are left out and listed as such.
    """
    organs: dict[str, dict] = {}
    for name in organ_names:
        rows = [c["organs"][name] for c in cases if name in c["organs"]]
        entry = {m: _stats([r[m] for r in rows]) for m in METRICS}
        entry["pred_volume_ml"] = _stats([r["pred_volume_ml"] for r in rows])
        entry["ref_volume_ml"] = _stats([r["ref_volume_ml"] for r in rows])
        entry["status_counts"] = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
        organs[name] = entry
    mean, used = {}, {}
    for m in METRICS:
        vals = [(n, organs[n][m]["mean"]) for n in organ_names if organs[n][m]["mean"] is not None]
        mean[m] = float(np.mean([v for _, v in vals])) if vals else None
        used[m] = [n for n, _ in vals]
    return {"organs": organs, "mean": mean, "mean_organs_used": used}


def json_safe(obj):
    """Replace nan/inf floats by ``None`` recursively (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating,)):
        return json_safe(float(obj))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
