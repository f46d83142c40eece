"""Fixtures for the inference tests: a tiny checkpoint, small phantom scans, CLI runner."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transunet_app.checkpoint import make_checkpoint, save_checkpoint
from transunet_app.data.phantom import CLASSES, make_phantom
from transunet_app.models import build_model

from ..volume_files import save_nifti, sitk_from_ras, write_dicom_series  # noqa: F401 (the tests import them from here)

IMG_SIZE = 32


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
