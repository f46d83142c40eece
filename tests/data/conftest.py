"""Helpers for the data tests: small NIfTI/BTCV writers."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..volume_files import save_nifti  # noqa: F401 (the data tests import it from here)

REPO_ROOT = Path(__file__).resolve().parents[2]


def btcv_case(rng: np.random.Generator, shape=(20, 16, 6)) -> tuple[np.ndarray, np.ndarray]:
    """A tiny CT (int16 HU spanning far beyond the window) and BTCV labels 0-13."""
    image = rng.integers(-1024, 1500, size=shape).astype(np.int16)
    labels = rng.integers(0, 14, size=shape).astype(np.uint8)
    return image, labels
