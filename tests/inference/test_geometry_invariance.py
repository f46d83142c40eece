"""Labels land on the same anatomy whatever the file's orientation, spacing or format."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from transunet_app.data.io import Image, read_image
from transunet_app.inference import Segmenter, SlicePredictor, segment_image

from .conftest import save_nifti, sitk_from_ras, small_phantom, write_dicom_series

ORIENTATIONS = ("RAS", "LPS", "PSL", "LIP", "AIR")


def _to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Resample (exactly: permutations/flips) an array into the RAS voxel order."""
    img = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    return np.asarray(img.dataobj)


def test_same_labels_on_same_anatomy_in_every_orientation(tmp_path, tiny_ckpt):
    seg = Segmenter(tiny_ckpt, precision="fp32", batch_size=4)
    results = {}
    for code in ORIENTATIONS:
        ph = small_phantom(orientation=code)
        src = save_nifti(tmp_path / f"ct_{code}.nii.gz", ph.image, ph.affine)
        out = tmp_path / f"seg_{code}.nii.gz"
        seg.run(src, out)
        lab = nib.load(str(out))
        assert lab.shape == ph.image.shape
        np.testing.assert_array_equal(lab.affine, nib.load(str(src)).affine)
        results[code] = _to_ras(np.asarray(lab.dataobj), lab.affine)
    ref = results["RAS"]
    assert len(np.unique(ref)) >= 3, "the model must produce several classes for this test to mean anything"
    for code, lab in results.items():
        np.testing.assert_array_equal(lab, ref, err_msg=f"{code} differs from RAS")


def test_anisotropic_slices_keep_labels_of_the_kept_slices(tmp_path, tiny_ckpt):
    """Dropping every other axial slice (double slice spacing) must not change the others."""
    seg = Segmenter(tiny_ckpt, precision="fp32", batch_size=3)
    ph = small_phantom(orientation="RAS")
    full = save_nifti(tmp_path / "full.nii.gz", ph.image, ph.affine)
    aff2 = ph.affine.copy()
    aff2[:3, 2] *= 2
    thick = save_nifti(tmp_path / "thick.nii.gz", np.ascontiguousarray(ph.image[:, :, ::2]), aff2)
    seg.run(full, tmp_path / "full_seg.nii.gz")
    seg.run(thick, tmp_path / "thick_seg.nii.gz")
    a = np.asarray(nib.load(str(tmp_path / "full_seg.nii.gz")).dataobj)
    b = nib.load(str(tmp_path / "thick_seg.nii.gz"))
    assert b.header.get_zooms()[2] == pytest.approx(2 * ph.affine[2, 2])
    np.testing.assert_array_equal(np.asarray(b.dataobj), a[:, :, ::2])


class _PositionModel(nn.Module):
    """A stand-in 'model' whose classes depend only on where a pixel sits in the slice.

    Class 1 on the image's right half (canonical W high = the patient's left), class 2 on
    the top-left quarter (anterior, patient's right). Labels are then checkable in world
    coordinates without any training.
    """

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, _, h, w = x.shape
        out = torch.zeros(b, 3, h, w, dtype=x.dtype)
        out[:, 1, :, w // 2:] = 10
        out[:, 2, : h // 2, : w // 2] = 10
        return out


@pytest.mark.parametrize("code", ORIENTATIONS)
def test_slices_are_taken_axially_with_patient_left_right_and_front_back(code):
    ph = small_phantom(orientation=code, noise=False)
    image = Image(ph.image, ph.affine, (1.0, 1.0, 1.0), source="phantom")
    pred = SlicePredictor(_PositionModel(), {"img_size": [16, 16]}, torch.device("cpu"), "fp32")
    seg = segment_image(image, pred, ["background", "left", "anterior right"])
    ijk = np.indices(ph.image.shape).reshape(3, -1)
    xyz = ph.affine[:3, :3] @ ijk + ph.affine[:3, 3:4]
    lab = seg.labels.reshape(-1)
    cx, cy = np.median(xyz[0]), np.median(xyz[1])
    # Class boundaries blur by about one model pixel (48 -> 16 -> 48 voxels of ~0.8 mm).
    tol = 2 * 3 * max(np.linalg.norm(ph.affine[:3, :3], axis=0))
    # RAS+: x grows to the patient's right, y to anterior.
    assert (xyz[0][lab == 1] < cx + tol).all() and (lab == 1).mean() > 0.3
    assert (xyz[0][lab == 1] < cx).mean() > 0.85
    assert (xyz[0][lab == 2] > cx - tol).all() and (xyz[1][lab == 2] > cy - tol).all()
    assert ((xyz[0][lab == 2] > cx) & (xyz[1][lab == 2] > cy)).mean() > 0.85
    # Every axial slice gets the same pattern (slices are along z, whatever the file axes).
    for z in np.unique(xyz[2]):
        assert set(np.unique(lab[xyz[2] == z])) == {0, 1, 2}


def test_output_keeps_the_nifti_header_geometry(tmp_path, tiny_ckpt):
    ph = small_phantom(orientation="LPS")
    img = nib.Nifti1Image(ph.image, ph.affine)
    img.header.set_qform(ph.affine, code=1)
    sform = ph.affine.copy()
    sform[:3, 3] += [0.25, -0.5, 1.0]  # a different sform: both must survive untouched
    img.header.set_sform(sform, code=2)
    img = nib.Nifti1Image(ph.image, None, header=img.header)  # affine=None: keep both forms
    src = tmp_path / "ct.nii"
    nib.save(img, str(src))
    hdr = nib.load(str(src)).header
    assert int(hdr.get_qform(coded=True)[1]) == 1 and int(hdr.get_sform(coded=True)[1]) == 2
    before = src.read_bytes()
    Segmenter(tiny_ckpt, precision="fp32").run(src, tmp_path / "seg.nii.gz")
    assert src.read_bytes() == before
    out = nib.load(str(tmp_path / "seg.nii.gz"))
    assert out.get_data_dtype() == np.uint8 and out.shape == ph.image.shape
    q, qc = out.header.get_qform(coded=True)
    s, sc = out.header.get_sform(coded=True)
    assert (int(qc), int(sc)) == (1, 2)
    np.testing.assert_allclose(q, ph.affine, atol=1e-5)
    np.testing.assert_allclose(s, sform, atol=1e-5)
    np.testing.assert_allclose(out.header.get_zooms(), img.header.get_zooms())


@pytest.mark.parametrize("fmt", ["dicom", ".nrrd", ".mha"])
def test_dicom_and_sitk_inputs_give_nifti_with_their_geometry(tmp_path, tiny_ckpt, fmt):
    ph = small_phantom(orientation="LPS")
    ref_src = save_nifti(tmp_path / "ref.nii.gz", ph.image, ph.affine)
    seg = Segmenter(tiny_ckpt, precision="fp32")
    seg.run(ref_src, tmp_path / "ref_seg.nii.gz")
    simg = sitk_from_ras(ph.image, ph.affine)
    if fmt == "dicom":
        src = write_dicom_series(simg, tmp_path / "series", "1.2.3.4.99")
    else:
        src = tmp_path / f"ct{fmt}"
        sitk.WriteImage(simg, str(src))
    seg.run(src, tmp_path / "seg.nii.gz")
    out = nib.load(str(tmp_path / "seg.nii.gz"))
    np.testing.assert_allclose(out.affine, read_image(src).affine, atol=1e-4)
    np.testing.assert_allclose(out.affine, ph.affine, atol=1e-3)
    assert out.header.get_qform(coded=True)[1] == 1 and out.header.get_sform(coded=True)[1] == 1
    np.testing.assert_array_equal(np.asarray(out.dataobj),
                                  np.asarray(nib.load(str(tmp_path / "ref_seg.nii.gz")).dataobj))
