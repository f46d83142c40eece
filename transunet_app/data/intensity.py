"""The one CT intensity transform: an HU window scaled to [0, 1].

Training data preparation (numpy, :mod:`.synapse`) and inference (torch, the slice
predictor) both call :func:`window_to_unit`, so a model sees at inference exactly the values
it was trained on: both paths do the same float32 operations in the same order (clip, subtract
the low end, multiply by the float32 reciprocal of the width) and give bit-identical results
(``tests/data/test_intensity.py``).
"""
from __future__ import annotations

import sys

import numpy as np

from ..errors import UserError

#: Default HU window of the TransUNet preprocessing (low, high).
HU_WINDOW = (-125.0, 275.0)


def check_window(hu_window) -> tuple[float, float]:
    """``(low, high)`` as floats.

    Raises:
        UserError: not two numbers with ``high > low``.
    """
    try:
        lo, hi = (float(v) for v in hu_window)
    except (TypeError, ValueError):
        raise UserError(f"HU window {hu_window!r}: expected two numbers (low, high)") from None
    if not hi > lo:
        raise UserError(f"HU window [{lo}, {hi}] is empty")
    return lo, hi


def window_to_unit(hu, hu_window=HU_WINDOW):
    """Clip HU to ``hu_window`` and scale linearly to [0, 1]: ``(clip(hu, lo, hi) - lo) / (hi - lo)``.

    Args:
        hu: Hounsfield units, any shape and real dtype: a numpy array (or anything
            ``np.asarray`` takes) or a torch tensor (on any device).
        hu_window: ``(low, high)`` in HU.

    Returns:
        float32 values in [0, 1], a numpy array for numpy input, a tensor on the input's
        device for a tensor. The input is never modified.

    Raises:
        UserError: an empty window.
    """
    lo, hi = check_window(hu_window)
    # one float32 reciprocal for both paths (torch casts a Python scalar to the tensor's dtype)
    scale = np.float32(1.0 / (hi - lo))
    torch = sys.modules.get("torch")  # a tensor implies torch is imported; never import it here
    if torch is not None and isinstance(hu, torch.Tensor):
        x = hu.to(torch.float32)
        # out of place first: the float32 input (or a CPU tensor sharing a numpy volume's memory)
        # stays untouched
        return x.clamp(lo, hi).sub_(lo).mul_(float(scale))
    out = np.clip(np.asarray(hu, dtype=np.float32), np.float32(lo), np.float32(hi))
    out -= np.float32(lo)
    out *= scale
    return out
