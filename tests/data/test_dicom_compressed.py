"""Compressed DICOM series, as PACS exports and scanners store them (RLE, JPEG Lossless
process 14, JPEG-LS, JPEG 2000 lossless), read to the same HU and geometry as uncompressed ones,
while a compressed file whose header declares gigabytes is still refused before allocating."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from transunet_app.data.io import read_image
from transunet_app.errors import UserError

from ..outputs.dicom_builder import write_ct_series


def _ct_like(shape=(96, 80, 6)) -> np.ndarray:
    """An abdomen-like slab in HU: air around a soft-tissue ellipse with a bright 'spine' and
    scanner noise; compresses as real CT does (the files end up far smaller than their pixels)."""
    rng = np.random.default_rng(7)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    body = ((i - shape[0] / 2) / (shape[0] * 0.42)) ** 2 + ((j - shape[1] / 2) / (shape[1] * 0.38)) ** 2 < 1
    spine = (np.abs(i - shape[0] / 2) < 5) & (np.abs(j - shape[1] * 0.7) < 5)
    ct = np.where(body, 40, -1000) + np.where(spine, 660, 0)
    ct = ct[..., None] + rng.normal(0, 8, size=shape) * body[..., None]
    return np.round(ct).astype(np.int16)


def _encoder_available(syntax) -> str | None:
    """Why this machine cannot write ``syntax`` (None when it can)."""
    if syntax == JPEGLosslessSV1:
        return None if shutil.which("dcmcjpeg") else "dcmcjpeg (Debian dcmtk) not installed"
    from pydicom.pixels import get_encoder

    return None if get_encoder(syntax).is_available else f"no pydicom encoder plugin for {syntax.name}"


SYNTAXES = [RLELossless, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless]


@pytest.fixture(scope="module")
def plain_series(tmp_path_factory):
    ct = _ct_like()
    folder = tmp_path_factory.mktemp("plain") / "series"
    write_ct_series(folder, ct, np.zeros(ct.shape, np.uint8), np.diag([-0.8, -0.8, 2.5, 1.0]))
    return folder, ct


def _compressed_copy(plain_folder, dest, syntax):
    reason = _encoder_available(syntax)
    if reason:
        pytest.skip(reason)
    dest.mkdir()
    for f in sorted(plain_folder.iterdir()):
        if syntax == JPEGLosslessSV1:  # pydicom has no JPEG Lossless encoder; dcmtk does
            subprocess.run(["dcmcjpeg", "+e1", str(f), str(dest / f.name)], check=True)
        else:
            ds = pydicom.dcmread(f)
            ds.compress(syntax, generate_instance_uid=False)
            ds.save_as(dest / f.name)
    return dest


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.keyword)
def test_compressed_series_reads_like_the_uncompressed_one(plain_series, tmp_path, syntax):
    plain_folder, ct = plain_series
    folder = _compressed_copy(plain_folder, tmp_path / "series", syntax)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == syntax
        # what made these files look truncated before: far fewer bytes than their pixels
        assert f.stat().st_size < ds.Rows * ds.Columns * 2
    plain, got = read_image(plain_folder), read_image(folder)
    np.testing.assert_array_equal(got.array, ct)
    np.testing.assert_array_equal(got.array, plain.array)
    np.testing.assert_array_equal(got.affine, plain.affine)


def test_compressed_file_declaring_gigabytes_is_refused(plain_series, tmp_path):
    plain_folder, _ = plain_series
    folder = _compressed_copy(plain_folder, tmp_path / "series", RLELossless)
    for f in folder.iterdir():  # every slice mutated alike, so the series checks agree
        ds = pydicom.dcmread(f)
        ds.Rows = ds.Columns = 60000
        ds.save_as(f)
    with pytest.raises(UserError, match=r"declares 60000x60000x1 pixels \(7200\.0 MB\).*corrupt header"):
        read_image(folder)
