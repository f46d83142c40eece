"""End to end with a model that has learnt the anatomy (slow: trains a tiny model first)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from transunet_app.checkpoint import save_checkpoint
from transunet_app.data.phantom import CLASSES, make_phantom
from transunet_app.inference import Segmenter

from .conftest import save_nifti

pytestmark = pytest.mark.slow

BIG_ORGANS = ("liver", "spleen", "left kidney", "right kidney", "stomach")


def _dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * (a & b).sum() / s


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory):
    from .phantom_training import train_tiny

    _, ck = train_tiny(steps=300)
    path = tmp_path_factory.mktemp("trained") / "tiny_trained.pt"
    save_checkpoint(path, ck)
    return path


@pytest.mark.parametrize("orientation", ["LPS", "PSL", "RAI"])
def test_trained_model_finds_organs_on_the_right_side_in_any_orientation(tmp_path, trained_ckpt, orientation):
    ph = make_phantom(201, orientation=orientation)
    src = save_nifti(tmp_path / "ct.nii.gz", ph.image, ph.affine)
    labels = {}
    for prec in ("fp32", "bf16"):
        out = tmp_path / f"seg_{prec}.nii.gz"
        Segmenter(trained_ckpt, precision=prec, batch_size=8).run(src, out)
        labels[prec] = np.asarray(nib.load(str(out)).dataobj)
    for k, name in enumerate(CLASSES):
        if name in BIG_ORGANS:
            # A mirrored or transposed mapping would put the liver where the spleen is.
            assert _dice(labels["fp32"] == k, ph.labels == k) > 0.5, name
        if k:
            assert _dice(labels["bf16"] == k, labels["fp32"] == k) > 0.98, name
