"""``transunet evaluate`` end to end on small NIfTI files written here."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medpy import metric

from transunet_app.cli import main

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _labels(shift=0):
    lab = np.zeros((24, 28, 10), np.uint8)
    lab[4 + shift:12 + shift, 5:15, 2:7] = 1
    lab[14:20, 8:20, 3:8] = 5
    return lab


def _save(path, arr, affine=AFFINE):
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


@pytest.fixture
def pair(tmp_path):
    pred = _save(tmp_path / "case01.nii.gz", _labels(shift=1))
    gt = _save(tmp_path / "gt_case01.nii.gz", _labels())
    return pred, gt


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_single_pair_default_synapse_labels(pair, tmp_path, capsys):
    pred, gt = pair
    out = tmp_path / "m.json"
    code, stdout, err = _run(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out),
                              "--csv", str(tmp_path / "m.csv")], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert doc["convention"] == "strict" and doc["hd95_unit"] == "mm"
    assert doc["organs"][:2] == ["aorta", "gallbladder"] and len(doc["organs"]) == 8
    case = doc["cases"][0]
    assert case["labels_source"].endswith(str(Path("datasets", "synapse", "labels.yaml")))
    aorta = case["organs"]["aorta"]
    p, g = _labels(1) == 1, _labels() == 1
    assert aorta["dice"] == pytest.approx(metric.binary.dc(p, g))
    assert aorta["hd95_mm"] == pytest.approx(metric.binary.hd95(p, g, voxelspacing=(0.8, 0.8, 2.5)))
    assert aorta["hd95_vox"] == pytest.approx(metric.binary.hd95(p, g))
    assert aorta["pred_volume_ml"] == pytest.approx(p.sum() * 0.8 * 0.8 * 2.5 / 1000)
    gall = case["organs"]["gallbladder"]
    assert gall["status"] == "both_empty" and gall["dice"] is None and gall["hd95"] is None
    summ = doc["summary"]
    assert summ["mean_organs_used"]["dice"] == ["aorta", "liver"]
    assert summ["mean"]["dice"] == pytest.approx((aorta["dice"] + 1.0) / 2)
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(rows) == 8 and rows[0]["organ"] == "aorta" and rows[1]["dice"] == ""
    assert "aorta" in stdout and "mean of organs" in stdout
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


def test_transunet_convention_in_voxels(pair, tmp_path, capsys):
    pred, gt = pair
    out = tmp_path / "m.json"
    code, _, err = _run(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out),
                         "--convention", "transunet", "--quiet"], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    org = doc["cases"][0]["organs"]
    assert doc["hd95_unit"] == "voxel"
    assert org["aorta"]["hd95"] == pytest.approx(metric.binary.hd95(_labels(1) == 1, _labels() == 1))
    assert org["gallbladder"]["dice"] == 0.0 and org["gallbladder"]["hd95"] == 0.0
    # official mean over the 8 classes, absent ones counted as 0
    assert doc["summary"]["mean"]["dice"] == pytest.approx((org["aorta"]["dice"] + 1.0) / 8)


def test_sidecar_labels_win_and_yaml_is_used_without_sidecar(pair, tmp_path, capsys):
    pred, gt = pair
    yml = tmp_path / "labels.yaml"
    yml.write_text("1: vessel\n5: big organ\n")
    out = tmp_path / "a.json"
    assert _run(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out), "--labels",
                 str(yml), "--quiet"], capsys)[0] == 0
    doc = json.loads(out.read_text())
    assert doc["organs"] == ["vessel", "big organ"]
    (tmp_path / "case01.json").write_text(json.dumps({"labels": {"0": "background", "1": "aorta",
                                                                 "5": "liver"}}))
    out2 = tmp_path / "b.json"
    assert _run(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out2), "--labels",
                 str(yml), "--quiet"], capsys)[0] == 0
    doc = json.loads(out2.read_text())
    assert doc["organs"] == ["aorta", "liver"]
    assert doc["cases"][0]["labels_source"].endswith("case01.json")


def test_folders_pair_by_case_name(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for i in range(3):
        _save(tmp_path / "pred" / f"case{i}.nii.gz", _labels(shift=i % 2))
        _save(tmp_path / "gt" / f"case{i}_gt.nii.gz", _labels())
    _save(tmp_path / "gt" / "orphan.nii.gz", _labels())
    out = tmp_path / "m.json"
    code, _, err = _run(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                         "-o", str(out), "--quiet", "--jobs", "2"], capsys)
    assert code == 0, err
    assert "orphan.nii.gz" in err
    doc = json.loads(out.read_text())
    assert [c["case"] for c in doc["cases"]] == ["case0", "case1", "case2"]
    assert doc["cases"][0]["organs"]["aorta"]["dice"] == 1.0
    assert doc["unpaired_files"] == ["orphan.nii.gz"]
    assert doc["summary"]["organs"]["aorta"]["dice"]["n"] == 3


def test_grid_mismatch_is_a_user_error_unless_resampled(tmp_path, capsys):
    gt = _save(tmp_path / "gt.nii.gz", _labels())
    # The same anatomy stored with axis 0 flipped: different affine, identical world positions.
    flipped = AFFINE.copy()
    flipped[0, 0] = -0.8
    flipped[0, 3] = 0.8 * (24 - 1)
    pred = _save(tmp_path / "pred.nii.gz", np.ascontiguousarray(_labels()[::-1]), flipped)
    out = tmp_path / "m.json"
    code, _, err = _run(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "pred.nii.gz" in err and "affine" in err and "--resample-pred" in err
    assert not out.exists()
    code, _, err = _run(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out),
                         "--resample-pred", "--quiet"], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["cases"][0]["resampled"] is True
    assert doc["cases"][0]["organs"]["aorta"]["dice"] == 1.0
    assert doc["cases"][0]["organs"]["liver"]["dice"] == 1.0
    # shape mismatch too
    small = _save(tmp_path / "small.nii.gz", _labels()[:20])
    code, _, err = _run(["evaluate", "--pred", str(small), "--gt", str(gt), "-o",
                         str(tmp_path / "x.json")], capsys)
    assert code == 2 and "shape" in err


def test_user_errors_exit_2_with_one_line(pair, tmp_path, capsys):
    pred, gt = pair
    out = tmp_path / "m.json"
    out.write_text("keep me")
    code, _, err = _run(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out)], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert out.read_text() == "keep me"
    assert _run(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out), "--overwrite",
                 "--quiet"], capsys)[0] == 0
    assert json.loads(out.read_text())["format"] == "transunet-app/metrics"
    cases = [
        (["--pred", str(tmp_path / "nope.nii.gz"), "--gt", str(gt)], "nope.nii.gz"),
        (["--pred", str(pred), "--gt", str(tmp_path)], "two files or two folders"),
        (["--pred", str(pred), "--gt", str(gt), "--labels", str(tmp_path / "l.yaml")], "l.yaml"),
        (["--pred", str(pred), "--gt", str(gt), "--jobs", "0"], "--jobs"),
    ]
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    cases.append((["--pred", str(bad), "--gt", str(gt)], "bad.nii.gz"))
    floaty = _save(tmp_path / "float.nii.gz", _labels().astype(np.float32) + 0.5)
    cases.append((["--pred", str(floaty), "--gt", str(gt)], "non-integer"))
    for argv, needle in cases:
        code, _, err = _run(["evaluate", *argv, "-o", str(tmp_path / "new.json")], capsys)
        assert code == 2, argv
        assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "new.json").exists()


def test_help_is_instant_no_heavy_imports():
    code = ("import sys, transunet_app.cli.evaluate, transunet_app.cli.report; "
            "heavy = [m for m in ('numpy', 'scipy', 'torch', 'matplotlib', 'nibabel') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_project_labels_yaml_format_is_accepted(tmp_path):
    from transunet_app.data.labels import read_labels_yaml

    yml = tmp_path / "labels.yaml"
    yml.write_text("name: x\nclasses:\n  0: background\n  1: aorta\n  2: liver\nsource_labels:\n  0: bg\n")
    assert read_labels_yaml(yml) == {0: "background", 1: "aorta", 2: "liver"}
    yml.write_text("labels: {1: aorta, 2: aorta}\n")
    from transunet_app.errors import UserError

    with pytest.raises(UserError, match="unique"):
        read_labels_yaml(yml)
