"""Fixtures for the hospital-output tests: the shared CT written as DICOM series in several
layouts (pydicom, tests/outputs/dicom_builder.py), a tiny Synapse-class checkpoint, CLI runners."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from transunet_app.checkpoint import save_checkpoint
from transunet_app.data.labels import load_label_spec

from ..inference.conftest import run_segment  # noqa: F401 (the same in-process CLI fixture)
from .dicom_builder import write_ct_series

#: The geometry cases of the acceptance list: name -> builder options.
LAYOUTS = {
    "axial_hfs": {},
    "scrambled_files": {"scramble": True},
    "flipped_rows": {"flip_rows": True},
    "non_square_pixels": {"spacing_scale": (0.7, 1.0)},
    "second_series_in_folder": {"with_other_series": True},
    "jpeg2000_lossless_files": {"transfer_syntax": "1.2.840.10008.1.2.4.90"},
}


@pytest.fixture(scope="session")
def ct_volume(shared_ct):
    """(CT HU int16, labels uint8, RAS affine) of the shared CT's 16 lowest slices: (122, 101, 16)
    at 3 mm; all eight organs, the gallbladder starting on the third slice (empty frames)."""
    ct_path, lab_path = shared_ct
    ct, lab = nib.load(str(ct_path)), nib.load(str(lab_path))
    return (np.asarray(ct.dataobj)[:, :, :16].astype(np.int16),
            np.asarray(lab.dataobj)[:, :, :16].astype(np.uint8), np.asarray(ct.affine, dtype=float))


def build_layout(root: Path, name: str, ct_volume):
    """Write the layout ``name`` under ``root/name``; returns the :class:`WrittenSeries`."""
    ct, lab, affine = ct_volume
    opts = dict(LAYOUTS[name])
    other = opts.pop("with_other_series", False)
    folder = root / name
    written = write_ct_series(folder, ct, lab, affine, seed=len(name), **opts)
    if other:  # a shorter series of the same study (a scout-like reformat) in the same folder
        write_ct_series(folder, ct[:, :, :8], lab[:, :, :8], affine, study_uid=written.study_uid,
                        series_number=3, name_prefix="OTHER")
    return written


@pytest.fixture(scope="session", params=sorted(LAYOUTS))
def layout(request, tmp_path_factory, ct_volume):
    """(layout name, WrittenSeries) for every geometry case."""
    return request.param, build_layout(tmp_path_factory.mktemp("dicom"), request.param, ct_volume)


@pytest.fixture(scope="session")
def hfs_series(tmp_path_factory, ct_volume):
    return build_layout(tmp_path_factory.mktemp("hfs"), "axial_hfs", ct_volume)


@pytest.fixture(scope="session")
def synapse_ckpt(tmp_path_factory) -> Path:
    """A tiny random model with the 9 Synapse classes (organ names the SNOMED table knows)."""
    from ..inference.conftest import tiny_checkpoint_dict

    path = tmp_path_factory.mktemp("ckpt") / "tiny_synapse.pt"
    save_checkpoint(path, tiny_checkpoint_dict(seed=3, classes=load_label_spec()["classes"]))
    return path


@pytest.fixture
def run_transunet(capsys):
    from transunet_app.cli import main

    def run(*argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
