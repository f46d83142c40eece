"""Overlap metrics on binary masks: Dice and volumes.

Empty-mask rules of :func:`dice`:

* both masks empty -> ``nan``: agreement on an absent structure says nothing about segmentation
  quality, so it must not be averaged in as a perfect 1 (medpy's ``dc`` returns 1.0 here) or as a
  0; the evaluation layer counts such cases separately;
* exactly one mask empty -> ``0.0`` (no overlap, by the formula).
"""
from __future__ import annotations

import numpy as np

from .surface import as_bool_mask


def dice(pred, gt) -> float:
    """Dice similarity coefficient ``2|P & G| / (|P| + |G|)``.

    Args:
        pred: (...) binary mask, any dtype (nonzero = foreground).
        gt: reference mask of the same shape.

    Returns:
        A value in [0, 1]; ``nan`` when both masks are empty (see module docstring).
    """
    p, g = as_bool_mask(pred), as_bool_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {g.shape}")
    n_p, n_g = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    if n_p + n_g == 0:
        return float("nan")
    inter = int(np.count_nonzero(p & g)) if n_p and n_g else 0
    return 2.0 * inter / (n_p + n_g)


def volume_ml(mask, spacing_mm) -> float:
    """Volume of a mask in millilitres (1 mL = 1000 mm^3).

    Args:
        mask: (...) binary mask.
        spacing_mm: voxel size per axis in mm (sequence with one value per axis).
    """
    sp = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    m = as_bool_mask(mask)
    if sp.size == 1:
        sp = np.repeat(sp, m.ndim)
    return float(np.count_nonzero(m)) * float(np.prod(sp)) / 1000.0
