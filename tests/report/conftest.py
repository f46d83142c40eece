"""Fixtures for report tests: a tiny synthetic abdomen CT with Synapse labels (the real sample:
``shared_data`` in the root conftest)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

# 4 mm in-plane, 5 mm slices, RAS+: axis 0 grows towards the patient's right.
AFFINE = np.array([[4.0, 0, 0, -80.0], [0, 4.0, 0, -70.0], [0, 0, 5.0, 0.0], [0, 0, 0, 1.0]])


def make_phantom(shape=(40, 36, 12)):
    """(ct int16 HU, labels uint8) of a crude abdomen: body, spine, 8 Synapse organs.

    Liver, gallbladder and right kidney on the patient's right (high x), spleen, stomach and
    left kidney on the left; the liver reaches the top slice (cut off superiorly).
    """
    X, Y, Z = shape
    x, y, z = np.meshgrid(np.arange(X), np.arange(Y), np.arange(Z), indexing="ij")
    ct = np.full(shape, -1000, np.int16)
    body = ((x - X / 2) / (X * 0.45)) ** 2 + ((y - Y / 2) / (Y * 0.42)) ** 2 <= 1
    ct[body] = 30
    spine = ((x - X / 2) ** 2 + (y - Y * 0.25) ** 2) <= 9
    ct[spine] = 700
    lab = np.zeros(shape, np.uint8)

    def ball(cx, cy, cz, r, rz):
        return ((x - cx) / r) ** 2 + ((y - cy) / r) ** 2 + ((z - cz) / rz) ** 2 <= 1

    lab[ball(28, 22, 9, 8, 4) | ((x > 22) & (x < 34) & (y > 16) & (y < 28) & (z >= 8))] = 5  # liver
    lab[ball(25, 27, 4, 2.5, 1.5)] = 2   # gallbladder
    lab[ball(30, 11, 4, 3, 2.5)] = 4     # right kidney (patient's right = high x)
    lab[ball(10, 11, 4, 3, 2.5)] = 3     # left kidney
    lab[ball(9, 20, 8, 4, 3)] = 7        # spleen
    lab[ball(14, 26, 7, 4, 2.5)] = 8     # stomach
    lab[ball(20, 17, 5, 1.6, 6)] = 1     # aorta (long in z)
    lab[ball(19, 22, 4, 2.5, 1.5)] = 6   # pancreas
    ct[lab == 5] = 60
    ct[lab == 7] = 50
    ct[(lab == 3) | (lab == 4)] = 150
    ct[lab == 1] = 180
    ct[lab == 8] = 10
    return ct, lab


@pytest.fixture
def phantom_files(tmp_path):
    """(ct_path, labels_path) of the phantom written as NIfTI in tmp_path."""
    ct, lab = make_phantom()
    ct_path = tmp_path / "scan.nii.gz"
    lab_path = tmp_path / "scan_labels.nii.gz"
    nib.save(nib.Nifti1Image(ct, AFFINE), str(ct_path))
    nib.save(nib.Nifti1Image(lab, AFFINE), str(lab_path))
    return ct_path, lab_path

