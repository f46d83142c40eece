"""Fixtures for the data tests: the real CT sample and small NIfTI/BTCV writers."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]




def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray, qform_code: int = 1, sform_code: int = 1) -> Path:
    img = nib.Nifti1Image(array, affine)
    img.header.set_qform(affine, code=qform_code)
    img.header.set_sform(affine, code=sform_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def btcv_case(rng: np.random.Generator, shape=(20, 16, 6)) -> tuple[np.ndarray, np.ndarray]:
    """A tiny CT (int16 HU spanning far beyond the window) and BTCV labels 0-13."""
    image = rng.integers(-1024, 1500, size=shape).astype(np.int16)
    labels = rng.integers(0, 14, size=shape).astype(np.uint8)
    return image, labels
