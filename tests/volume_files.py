"""Small CT files written by tests: NIfTI with chosen qform/sform codes, and DICOM series.

Shared by the data, inference and README tests (tests/ is on ``sys.path`` under pytest).
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray, qform_code: int = 1,
               sform_code: int = 1) -> Path:
    """Write ``array`` (I, J, K) with ``affine`` (4, 4, voxel -> RAS mm) as both qform and sform;
    creates the folder."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_qform(affine, code=qform_code)
    img.header.set_sform(affine, code=sform_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def sitk_from_ras(vol: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """The SimpleITK image (LPS) of a volume in nibabel (i, j, k) order with a RAS affine."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol.transpose(2, 1, 0)))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img


def write_dicom_series(img: sitk.Image, folder: Path, series_uid: str, n_first: int | None = None) -> Path:
    """One CT DICOM file per axial slice of ``img`` (the first ``n_first`` slices when given).

    Files are named ``<UID with _ for .>_<slice>.dcm`` so several series can share a folder;
    position, orientation, rescale (0, 1) and slice thickness tags as a scanner writes them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    tags = [("0008|0060", "CT"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"), ("0020|000e", series_uid),
            ("0020|0037", "\\".join(f"{x:.10f}" for x in (d[0], d[3], d[6], d[1], d[4], d[7]))),
            ("0028|1052", "0"), ("0028|1053", "1"), ("0018|0050", str(img.GetSpacing()[2]))]
    for k in range(img.GetDepth() if n_first is None else n_first):
        sl = img[:, :, k]
        for tag, value in tags:
            sl.SetMetaData(tag, value)
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{x:.10f}" for x in pos))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"{series_uid.replace('.', '_')}_{k:03d}.dcm"))
        writer.Execute(sl)
    return folder
