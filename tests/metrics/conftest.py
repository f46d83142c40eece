"""Fixtures for metric tests: the real CT sample and random blob masks."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def real_labels(shared_ct):
    """(labels (122, 101, 30) uint8, affine (4, 4), spacing (3,)) of the real sample
    (``shared_ct``: root conftest; skips when ../shared/data is absent)."""
    import nibabel as nib

    img = nib.load(str(shared_ct[1]))
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
