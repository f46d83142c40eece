"""The README's "Hospital use: DICOM" commands, run as shown on a DICOM series written by the
test (``ct_series/``) with a tiny checkpoint (``model.pt``)."""
from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from ..readme_commands import ROOT, readme_commands, run_argv

SEGMENT_ALL = ("segment ct_series/ -o out/ --checkpoint model.pt --output-type "
               "nifti,dicom-seg,rtstruct,seg-nrrd --preview")
SEGMENT_SUBSET = ("segment ct_series/ -o out_subset/ --checkpoint model.pt --output-type "
                  "dicom-seg,rtstruct --roi-subset liver,spleen,aorta")
REPORT = "transunet report --image ct_series/ --labels out/ct_series_seg.dcm -o ct_series_report.html"


@pytest.mark.slow  # three CLI processes (torch import each); the same paths run in-process in test_cli_hospital
def test_readme_hospital_commands(tmp_path, hfs_series, synapse_ckpt):
    shown = {c.text: c.argv for c in readme_commands()[0]}
    shutil.copytree(hfs_series.folder, tmp_path / "ct_series")
    shutil.copy(synapse_ckpt, tmp_path / "model.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    for command in (SEGMENT_ALL, SEGMENT_SUBSET, REPORT):
        assert command in shown, f"README.md no longer shows {command!r}"
        r = run_argv(list(shown[command]), tmp_path, env=env)
        assert r.returncode == 0, f"{command}\n{r.stderr[-2000:]}"
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ct_series.nii.gz", "ct_series.json", "ct_series_seg.dcm", "ct_series_rtstruct.dcm",
         "ct_series.seg.nrrd", "ct_series_preview.png"])
    assert nib.load(str(out / "ct_series.nii.gz")).shape == (122, 101, 16)
    sub = tmp_path / "out_subset"
    assert sorted(p.name for p in sub.iterdir()) == sorted(
        ["ct_series.json", "ct_series_seg.dcm", "ct_series_rtstruct.dcm"])
    rt = pydicom.dcmread(str(sub / "ct_series_rtstruct.dcm"))
    assert {str(r.ROIName) for r in rt.StructureSetROISequence} <= {"liver", "spleen", "aorta"}
    html = (tmp_path / "ct_series_report.html").read_text()
    assert "Abdominal organ segmentation report" in html
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left anywhere
    assert np.asarray(nib.load(str(out / "ct_series.nii.gz")).dataobj).any()
