"""NIfTI files through ISA-L's gzip: the same bytes and the same errors as nibabel's own path."""
import gzip

import nibabel as nib
import numpy as np
import pytest

from transunet_app.data import nifti_files
from transunet_app.data.io import read_image, write_nifti
from transunet_app.errors import UserError


@pytest.fixture(params=["isal", "zlib"])
def backend(request, monkeypatch):
    if request.param == "isal":
        pytest.importorskip("isal")
    else:
        monkeypatch.setattr(nifti_files, "_igzip", lambda: None)
    return request.param


def _image(klass, shape=(7, 6, 5)):
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, shape).astype(np.int16)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = (-10, 20, 5)
    return klass(data, affine)


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
def test_save_writes_the_bytes_nibabel_writes(tmp_path, backend, klass):
    img = _image(klass)
    nib.save(img, str(tmp_path / "ref.nii.gz"))
    nifti_files.save_nifti(img, tmp_path / "ours.nii.gz")
    ref = gzip.decompress((tmp_path / "ref.nii.gz").read_bytes())
    ours = gzip.decompress((tmp_path / "ours.nii.gz").read_bytes())
    assert ours == ref


def test_written_files_are_deterministic_without_a_name_in_the_gzip_header(tmp_path, backend):
    img = _image(nib.Nifti1Image)
    first, second = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    nifti_files.save_nifti(img, first)
    nifti_files.save_nifti(img, second)
    raw = first.read_bytes()
    assert raw == second.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and not raw[3] & 0x08       # gzip, FNAME flag clear
    assert raw[4:8] == b"\0\0\0\0"                          # mtime 0


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_open_reads_what_nibabel_reads(tmp_path, backend, klass, suffix):
    path = tmp_path / f"img{suffix}"
    nib.save(_image(klass), str(path))
    with nifti_files.open_nifti(path) as img:
        assert type(img) is klass
        data = np.asanyarray(img.dataobj)
        np.testing.assert_array_equal(img.affine, nib.load(str(path)).affine)
    np.testing.assert_array_equal(data, np.asanyarray(nib.load(str(path)).dataobj))


def test_write_then_read_round_trip(tmp_path, backend):
    src = tmp_path / "ct.nii.gz"
    nib.save(_image(nib.Nifti1Image), str(src))
    image = read_image(src)
    out = write_nifti(tmp_path / "labels.nii.gz", (image.array > 0).astype(np.uint8), like=image)
    back = read_image(out)
    np.testing.assert_array_equal(back.array, image.array > 0)
    np.testing.assert_array_equal(back.affine, image.affine)


def test_damaged_gzip_files_are_one_line_errors(tmp_path, backend):
    src = tmp_path / "ct.nii.gz"
    nib.save(_image(nib.Nifti1Image, (64, 64, 16)), str(src))  # cut in the data, not the header
    raw = src.read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match=r"truncated\.nii\.gz: (truncated|unreadable) or corrupt"):
        read_image(truncated)
    not_nifti = tmp_path / "text.nii.gz"
    not_nifti.write_bytes(gzip.compress(b"hello, this is not an image" * 20))
    with pytest.raises(UserError, match=r"text\.nii\.gz: not a NIfTI image"):
        read_image(not_nifti)
    not_gzip = tmp_path / "plain.nii.gz"
    not_gzip.write_bytes(b"\x00" * 400)
    with pytest.raises(UserError, match=r"plain\.nii\.gz: (not a NIfTI image|unreadable or corrupt)"):
        read_image(not_gzip)
