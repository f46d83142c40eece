"""Fixtures for the inference tests: a tiny checkpoint, small phantom scans, CLI runner."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from transunet_app.checkpoint import make_checkpoint, save_checkpoint
from transunet_app.data.phantom import CLASSES, make_phantom
from transunet_app.models import build_model

IMG_SIZE = 32


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(array, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def small_phantom(seed: int = 7, orientation: str = "LPS", noise: bool = True):
    """A phantom small enough for unit tests: 48 voxels across, 10 slices, non-square."""
    return make_phantom(seed, matrix=48, slices=10, orientation=orientation, noise=noise)


def tiny_checkpoint_dict(seed: int = 0, classes=CLASSES, img_size: int = IMG_SIZE) -> dict:
    torch.manual_seed(seed)
    model = build_model("tiny", len(classes), img_size=img_size)
    with torch.no_grad():  # sharper logits: random heads would give near-ties everywhere
        model.segmentation_head.weight.mul_(30.0)
    return make_checkpoint(model, list(classes), {"img_size": [img_size, img_size]})


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, tiny_checkpoint_dict())
    return path


@pytest.fixture
def ct_file(tmp_path) -> Path:
    ph = small_phantom()
    return save_nifti(tmp_path / "in" / "case01.nii.gz", ph.image, ph.affine)


@pytest.fixture
def run_segment(capsys):
    """Run the ``segment`` console script in-process: returns (exit code, stdout, stderr)."""
    from transunet_app.cli import segment_main

    def run(*argv):
        code = segment_main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def sitk_from_ras(vol: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """The SimpleITK image (LPS) of a volume in nibabel (i, j, k) order with a RAS affine."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol.transpose(2, 1, 0)))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img


def write_dicom_series(img: sitk.Image, folder: Path, series_uid: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    tags = [("0008|0060", "CT"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
            ("0020|000e", series_uid),
            ("0020|0037", "\\".join(f"{x:.10f}" for x in (d[0], d[3], d[6], d[1], d[4], d[7]))),
            ("0028|1052", "0"), ("0028|1053", "1")]
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        for tag, value in tags:
            sl.SetMetaData(tag, value)
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{x:.10f}" for x in pos))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(sl)
    return folder
