"""Fixtures for metric tests: the real CT sample and random blob masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` with the real CT sample; skips when it is not there."""
    if not (SHARED_DATA / "ct_abdomen_3mm_labels.nii.gz").is_file():
        pytest.skip(f"real CT sample not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_labels(shared_data):
    """(labels (122, 101, 30) uint8, affine (4, 4), spacing (3,)) of the real sample."""
    import nibabel as nib

    img = nib.load(str(shared_data / "ct_abdomen_3mm_labels.nii.gz"))
    return np.asanyarray(img.dataobj), img.affine, tuple(float(z) for z in img.header.get_zooms()[:3])


def _random_blob(shape, seed, sigma=2.0, threshold=0.5):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), sigma) > threshold


@pytest.fixture(scope="session")
def blob():
    """``blob(shape, seed, sigma=2, threshold=0.5)``: a smooth random binary mask with several
    irregular components (reproducible from the seed)."""
    return _random_blob
