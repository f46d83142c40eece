"""Reading volumes with exact geometry and writing NIfTI atomically."""
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from transunet_app.data.io import read_image, write_nifti
from transunet_app.errors import UserError

from ..volume_files import save_nifti, sitk_from_ras, write_dicom_series

# Flips, an axis permutation and anisotropic spacing (voxel axes: i -> -y (P), j -> z (S), k -> -x (L)).
PERMUTED_AFFINE = np.array([
    [0.0, 0.0, -0.7, 120.5],
    [-0.9, 0.0, 0.0, 33.25],
    [0.0, 2.5, 0.0, -410.0],
    [0.0, 0.0, 0.0, 1.0],
])


def _volume(shape=(7, 5, 9), seed=0):
    return np.random.default_rng(seed).integers(-1000, 1200, size=shape).astype(np.int16)


def test_nifti_round_trip_keeps_geometry(tmp_path):
    vol = _volume()
    src = save_nifti(tmp_path / "ct.nii.gz", vol, PERMUTED_AFFINE, qform_code=1, sform_code=4)
    image = read_image(src)
    assert image.array.shape == vol.shape and np.array_equal(image.array, vol)
    assert image.array.dtype == np.int16
    np.testing.assert_allclose(image.affine, PERMUTED_AFFINE, atol=1e-4)
    np.testing.assert_allclose(image.spacing, (0.9, 2.5, 0.7), atol=1e-6)
    assert image.orientation == "PSL" and image.meta["format"] == "nifti"

    labels = (vol > 0).astype(np.uint8)
    out = write_nifti(tmp_path / "seg.nii.gz", labels, image)
    back = nib.load(str(out))
    src_hdr = nib.load(str(src)).header
    assert back.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(back.dataobj), labels)
    for coded in ("get_qform", "get_sform"):
        m_back, c_back = getattr(back.header, coded)(coded=True)
        m_src, c_src = getattr(src_hdr, coded)(coded=True)
        assert c_back == c_src and np.array_equal(m_back, m_src)
    assert np.array_equal(back.header["pixdim"], src_hdr["pixdim"])
    assert np.array_equal(back.header["quatern_b"], src_hdr["quatern_b"])
    assert read_image(out).orientation == "PSL"


def test_scaled_nifti_is_read_in_hu(tmp_path):
    raw = np.arange(24, dtype=np.uint16).reshape(2, 3, 4) + 1000
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_data_dtype(np.uint16)
    img.header.set_slope_inter(1, -1024)
    nib.save(img, str(tmp_path / "u16.nii.gz"))
    image = read_image(tmp_path / "u16.nii.gz")
    assert image.array.dtype == np.int16
    assert image.array.min() == 1000 - 1024


def test_write_refuses_existing_and_leaves_no_temp_files(tmp_path):
    vol = _volume()
    ref = read_image(save_nifti(tmp_path / "ct.nii.gz", vol, PERMUTED_AFFINE))
    target = tmp_path / "out.nii.gz"
    write_nifti(target, np.zeros(vol.shape, np.uint8), ref)
    before = target.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        write_nifti(target, np.ones(vol.shape, np.uint8), ref)
    assert target.read_bytes() == before
    write_nifti(target, np.ones(vol.shape, np.uint8), ref, overwrite=True)
    assert read_image(target).array.max() == 1
    assert sorted(os.listdir(tmp_path)) == ["ct.nii.gz", "out.nii.gz"]
    with pytest.raises(ValueError):
        write_nifti(tmp_path / "bad.nii.gz", np.full(vol.shape, 300), ref, dtype=np.uint8)
    with pytest.raises(ValueError):
        write_nifti(tmp_path / "bad.nii.gz", np.zeros((2, 2, 2)), ref)
    assert not (tmp_path / "bad.nii.gz").exists()


def test_write_with_bare_affine_sets_scanner_codes(tmp_path):
    out = write_nifti(tmp_path / "a.nii", np.zeros((3, 4, 5), np.float32), PERMUTED_AFFINE)
    hdr = nib.load(str(out)).header
    assert hdr.get_qform(coded=True)[1] == 1 and hdr.get_sform(coded=True)[1] == 1
    np.testing.assert_allclose(hdr.get_qform(), PERMUTED_AFFINE, atol=1e-4)


# Right-handed (det > 0) so the DICOM slice order equals the NIfTI k order: LPS storage.
LPS_AFFINE = np.array([[-0.75, 0, 0, 180.0], [0, -0.75, 0, 160.0], [0, 0, 3.0, -250.0], [0, 0, 0, 1.0]])


def test_dicom_series_gives_same_ras_affine_as_nifti(tmp_path):
    vol = _volume((12, 10, 6))
    nifti = read_image(save_nifti(tmp_path / "ct.nii.gz", vol, LPS_AFFINE))
    write_dicom_series(sitk_from_ras(vol, LPS_AFFINE), tmp_path / "dicom", "1.2.3.4.5.100")
    # A second, shorter series in the same folder: the longest one is read by default.
    write_dicom_series(sitk_from_ras(vol, LPS_AFFINE), tmp_path / "dicom", "1.2.3.4.5.200", n_first=3)
    dicom = read_image(tmp_path / "dicom")
    assert dicom.meta["format"] == "dicom" and dicom.meta["series_count"] == 2
    assert dicom.meta["series_uid"] == "1.2.3.4.5.100" and dicom.meta["modality"] == "CT"
    np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-4)
    assert np.array_equal(dicom.array, vol)
    assert dicom.orientation == "LPS"
    # the user learns that the folder held another series and how to read it
    note = [w for w in dicom.meta["warnings"] if "image series in this folder" in w]
    assert len(note) == 1 and "largest, 1.2.3.4.5.100" in note[0] and "6 slices" in note[0]
    assert "1.2.3.4.5.200" in note[0] and "3 slices" in note[0] and "--series UID" in note[0]
    short = read_image(tmp_path / "dicom", series_uid="1.2.3.4.5.200")
    assert short.array.shape == (12, 10, 3)
    assert not any("image series in this folder" in w for w in short.meta["warnings"])  # chosen
    with pytest.raises(UserError, match="no DICOM series with UID 9.9"):
        read_image(tmp_path / "dicom", series_uid="9.9")


def test_one_slice_of_a_series_names_the_folder(tmp_path):
    # one file dragged out of a series folder: segmenting that slice alone would pass silently
    vol = _volume((12, 10, 6))
    write_dicom_series(sitk_from_ras(vol, LPS_AFFINE), tmp_path / "dicom", "1.2.3.4.5.100")
    write_dicom_series(sitk_from_ras(vol, LPS_AFFINE), tmp_path / "dicom", "1.2.3.4.5.200", n_first=2)
    one = sorted((tmp_path / "dicom").iterdir())[0]
    uid = str(pydicom.dcmread(str(one), stop_before_pixels=True).SeriesInstanceUID)
    others = 5 if uid.endswith(".100") else 1  # the other series' files are not siblings
    with pytest.raises(UserError, match=rf"one slice of a DICOM series whose other {others} slice\(s\) "
                                        rf"are in .*dicom; give the folder"):
        read_image(one)
    lone = tmp_path / "lone" / one.name  # a slice without its series stays readable
    lone.parent.mkdir()
    lone.write_bytes(one.read_bytes())
    assert read_image(lone).shape == (12, 10, 1)

def test_dicom_of_left_handed_volume_matches_after_canonicalisation(tmp_path):
    from transunet_app.data.geometry import to_canonical

    vol = _volume((8, 6, 5), seed=3)
    nifti = read_image(save_nifti(tmp_path / "ct.nii.gz", vol, PERMUTED_AFFINE))
    write_dicom_series(sitk_from_ras(vol, PERMUTED_AFFINE), tmp_path / "dicom", "1.2.3.7")
    dicom = read_image(tmp_path / "dicom")
    a, ra = to_canonical(nifti.array, nifti.affine)
    b, rb = to_canonical(dicom.array, dicom.affine)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(ra.canonical_affine, rb.canonical_affine, atol=1e-3)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_sitk_formats_give_nifti_geometry(tmp_path, suffix):
    vol = _volume()
    sitk.WriteImage(sitk_from_ras(vol, PERMUTED_AFFINE), str(tmp_path / f"ct{suffix}"))
    image = read_image(tmp_path / f"ct{suffix}")
    np.testing.assert_allclose(image.affine, PERMUTED_AFFINE, atol=1e-6)
    assert np.array_equal(image.array, vol)
    assert image.orientation == "PSL"
    out = write_nifti(tmp_path / "seg.nii.gz", (vol > 0).astype(np.uint8), image)
    np.testing.assert_allclose(read_image(out).affine, PERMUTED_AFFINE, atol=1e-4)


def _truncated_gz(tmp_path):
    src = save_nifti(tmp_path / "full.nii.gz", _volume((30, 30, 30)), np.eye(4))
    data = src.read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _bad_files(tmp_path):
    yield "missing", tmp_path / "nope.nii.gz", "no such file"
    p = tmp_path / "text.nii.gz"
    p.write_text("this is not an image")
    yield "not an image", p, "not a NIfTI|corrupt"
    p = tmp_path / "text.mha"
    p.write_text("hello")
    yield "not an image (sitk)", p, "not an image this tool can read .unrecognised format"
    yield "truncated", _truncated_gz(tmp_path), "truncated or corrupt"
    yield "2D", save_nifti(tmp_path / "2d.nii.gz", np.zeros((8, 8), np.int16), np.eye(4)), "2D image"
    yield "4D", save_nifti(tmp_path / "4d.nii.gz", np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), "3 volumes"
    yield "zero axis", save_nifti(tmp_path / "zero.nii.gz", np.zeros((4, 0, 4), np.int16), np.eye(4)), "zero-length"
    nan = np.zeros((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    nan[0, 0, 0] = np.inf
    yield "nan", save_nifti(tmp_path / "nan.nii.gz", nan, np.eye(4)), "2 voxels are NaN or infinite"
    p = tmp_path / "2d.png"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkUInt8), str(p))
    yield "2D png", p, "2D image"
    yield "empty dir", _mkdir(tmp_path / "emptydir"), "no DICOM series"


def _mkdir(p):
    p.mkdir()
    return p


def test_bad_inputs_are_one_line_user_errors(tmp_path):
    seen = 0
    for what, path, pattern in _bad_files(tmp_path):
        with pytest.raises(UserError, match=pattern) as info:
            read_image(path)
        message = str(info.value)
        assert "\n" not in message, what
        assert str(path) in message, what
        seen += 1
    assert seen == 10


def test_4d_with_one_volume_is_squeezed(tmp_path):
    vol = _volume((4, 5, 6))[..., None]
    image = read_image(save_nifti(tmp_path / "one.nii.gz", vol, PERMUTED_AFFINE))
    assert image.array.shape == (4, 5, 6)
    out = write_nifti(tmp_path / "seg.nii.gz", np.zeros((4, 5, 6), np.uint8), image)
    assert nib.load(str(out)).shape == (4, 5, 6)


def test_real_ct_header(shared_ct):
    ct, lab = shared_ct
    image = read_image(ct)
    labels = read_image(lab)
    assert image.array.shape == (122, 101, 30) and image.array.dtype == np.int16
    assert image.orientation == "RAS"
    np.testing.assert_allclose(image.spacing, (3.0, 3.0, 3.0))
    assert -1100 <= image.array.min() and image.array.max() > 300  # HU with bone
    assert labels.array.shape == image.array.shape
    assert sorted(np.unique(labels.array).tolist()) == list(range(9))


def test_read_label_map_checks_values_and_names_the_file(tmp_path):
    from transunet_app.data.io import read_label_map

    labels = np.zeros((4, 5, 6), dtype=np.int16)
    labels[1:3, 2:4, 1:5] = 3
    src = save_nifti(tmp_path / "pred.nii.gz", labels, np.diag([0.8, 0.8, 2.5, 1.0]))
    image = read_label_map(src, "prediction")
    assert image.array.dtype == np.uint8 and np.array_equal(image.array, labels)
    assert image.source == src and image.spacing == pytest.approx((0.8, 0.8, 2.5))
    floats = save_nifti(tmp_path / "f.nii.gz", labels.astype(np.float32) + 0.5, np.eye(4))
    negative = save_nifti(tmp_path / "n.nii.gz", labels - 4, np.eye(4))
    other = tmp_path / "pred.txt"
    other.write_text("x")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    for path, needle in ((floats, "non-integer"), (negative, "negative"), (other, "unsupported file type"),
                         (tmp_path / "nope.nii.gz", "no such file"), (tmp_path, "no such file"),
                         (broken, "corrupt")):
        with pytest.raises(UserError) as info:
            read_label_map(path, "reference")
        msg = str(info.value)
        assert msg.startswith(f"reference {path}") and needle in msg and "\n" not in msg
