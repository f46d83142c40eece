"""Scan and dataset HTML reports, and the ``transunet report`` command."""
from __future__ import annotations

import html
import json
import re

import nibabel as nib
import numpy as np
import pytest

import transunet_app
from transunet_app.cli import main
from transunet_app.errors import UserError
from transunet_app.report import write_dataset_report, write_scan_report
from transunet_app.report.html import NOT_A_DIAGNOSIS

from .conftest import AFFINE, make_phantom

SYNAPSE = ["aorta", "gallbladder", "left kidney", "right kidney", "liver", "pancreas", "spleen",
           "stomach"]


def _embedded(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    assert m, "report data block missing"
    return json.loads(m.group(1).replace("<\\/", "</"))


def _assert_self_contained(text: str):
    assert "<img" in text
    for src in re.findall(r'src="([^"]*)"', text):
        assert src.startswith("data:image/png;base64,"), src[:40]
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "@import" not in text


def test_scan_report_contains_every_organ_flag_and_provenance(phantom_files, tmp_path):
    ct, labels = phantom_files
    out = tmp_path / "report.html"
    sha = "ab" * 32
    res = write_scan_report(ct, labels, out, provenance={"model": "transunet-r50-vit-b16",
                                                         "checkpoint": "model.pt",
                                                         "checkpoint_sha256": sha})
    text = out.read_text(encoding="utf-8")
    _assert_self_contained(text)
    assert NOT_A_DIAGNOSIS in text
    for organ in SYNAPSE:
        assert f"{organ}</td>" in text, organ
    assert res["flags"], "the tiny phantom's organs are below the adult ranges"
    for flag in res["flags"]:
        assert html.escape(flag["message"]) in text
    assert any(f["code"] == "volume_out_of_range" for f in res["flags"])
    assert "transunet-r50-vit-b16" in text and sha in text
    assert f"transunet-app {transunet_app.__version__}" in text
    assert "W 400 / L 40" in text and "&ge;" in text  # window stated, cut-off volume marked
    data = _embedded(text)
    assert set(data["statistics"]) == set(SYNAPSE)
    assert data["statistics"]["liver"]["side"] == "right"
    assert data["reference_metrics"] is None


def test_scan_report_with_reference_and_sidecar_names(phantom_files, tmp_path):
    ct, labels = phantom_files
    _, lab = make_phantom()
    ref = lab.copy()
    ref[ref == 6] = 0  # pancreas absent in the reference
    ref_path = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(ref, AFFINE), str(ref_path))
    (tmp_path / "scan_labels.json").write_text(json.dumps({"labels": {
        "0": "background", "1": "aorta", "2": "gallbladder", "3": "left kidney",
        "4": "right kidney", "5": "liver", "6": "pancreas", "7": "spleen", "8": "stomach"},
        "model": {"name": "sidecar-model"}, "checkpoint_sha256": "cd" * 32}))
    out = tmp_path / "r.html"
    res = write_scan_report(ct, labels, out, reference_path=ref_path)
    text = out.read_text(encoding="utf-8")
    assert "Dice</th>" in text and "HD95 (mm)</th>" in text
    assert "not in reference" in text
    assert res["reference_metrics"]["liver"]["dice"] == 1.0
    assert any(f["code"] == "reference_disagreement" and f["organ"] == "pancreas"
               for f in res["flags"])
    assert "scan_labels.json" in text  # label names source recorded
    assert "sidecar-model" in text and "cd" * 32 in text  # provenance recorded by segment


def test_scan_report_flags_swapped_kidneys_as_alert(tmp_path):
    ct, lab = make_phantom()
    lab = np.where(lab == 3, 4, np.where(lab == 4, 3, lab)).astype(np.uint8)
    nib.save(nib.Nifti1Image(ct, AFFINE), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(lab, AFFINE), str(tmp_path / "lab.nii.gz"))
    res = write_scan_report(tmp_path / "ct.nii.gz", tmp_path / "lab.nii.gz", tmp_path / "r.html")
    assert res["flags"][0]["code"] == "kidney_side" and res["flags"][0]["severity"] == "alert"
    assert 'class="alert"' in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_scan_report_errors(phantom_files, tmp_path):
    ct, labels = phantom_files
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(make_phantom()[1][:30], AFFINE), str(other))
    with pytest.raises(UserError, match="other.nii.gz.*shape"):
        write_scan_report(ct, other, tmp_path / "x.html")
    out = tmp_path / "exists.html"
    out.write_text("old")
    with pytest.raises(UserError, match="already exists"):
        write_scan_report(ct, labels, out, overwrite=False)
    assert out.read_text(encoding="utf-8") == "old"


@pytest.mark.slow
def test_scan_report_on_the_real_ct(shared_data, tmp_path):
    res = write_scan_report(shared_data / "ct_abdomen_3mm.nii.gz",
                            shared_data / "ct_abdomen_3mm_labels.nii.gz", tmp_path / "r.html")
    codes = {f["code"] for f in res["flags"]}
    assert "not_ct" not in codes and "kidney_side" not in codes and "organ_missing" not in codes
    assert "organ_truncated" in codes  # this 90 mm scan cuts the liver, spleen, aorta


def _evaluate(tmp_path, capsys):
    _, lab = make_phantom()
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for i in range(3):
        pred = lab.copy()
        if i == 1:
            pred[pred == 2] = 0                      # gallbladder missed
        if i == 2:
            pred = np.roll(pred, 1, axis=0)
        nib.save(nib.Nifti1Image(pred, AFFINE), str(tmp_path / "pred" / f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, AFFINE), str(tmp_path / "gt" / f"c{i}.nii.gz"))
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "-o", str(metrics), "--quiet"]) == 0
    capsys.readouterr()
    return metrics


def test_dataset_report(tmp_path, capsys):
    metrics = _evaluate(tmp_path, capsys)
    out = tmp_path / "ds.html"
    res = write_dataset_report(metrics, out, {"model": "my-model"})
    text = out.read_text(encoding="utf-8")
    _assert_self_contained(text)
    assert NOT_A_DIAGNOSIS in text
    assert text.count("<img") == 2  # Dice and HD95 box plots
    doc = json.loads(metrics.read_text(encoding="utf-8"))
    mean_dsc = f"{100 * doc['summary']['mean']['dice']:.2f}"
    assert f"<b>{mean_dsc}</b>" in text and "my-model" in text
    for organ in SYNAPSE:
        assert organ in text
    for flag in res["flags"]:
        assert html.escape(flag["message"]) in text
    codes = {f["code"] for f in res["flags"]}
    assert "organ_missed" in codes and "undefined_values" in codes
    assert "c1" in next(f["message"] for f in res["flags"] if f["code"] == "organ_missed")


def test_dataset_report_rejects_other_json(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(UserError, match="not a metrics file"):
        write_dataset_report(bad, tmp_path / "o.html")
    bad.write_text("{nope")
    with pytest.raises(UserError, match="not valid JSON"):
        write_dataset_report(bad, tmp_path / "o.html")


def test_report_cli(phantom_files, tmp_path, capsys):
    ct, labels = phantom_files
    ck = tmp_path / "model.pt"
    ck.write_bytes(b"weights")
    out = tmp_path / "r.html"
    code = main(["report", "--image", str(ct), "--labels", str(labels), "-o", str(out),
                 "--model", "m1", "--checkpoint", str(ck)])
    cap = capsys.readouterr()
    assert code == 0 and "wrote" in cap.out
    import hashlib

    assert hashlib.sha256(b"weights").hexdigest() in out.read_text(encoding="utf-8")
    before = out.read_text(encoding="utf-8")
    for argv, needle in [
        (["--image", str(ct), "--labels", str(labels), "-o", str(out)], "already exists"),
        (["--image", str(ct), "-o", str(tmp_path / "n.html")], "needs both"),
        (["-o", str(tmp_path / "n.html")], "--metrics"),
        (["--metrics", "m.json", "--image", str(ct), "-o", str(tmp_path / "n.html")], "cannot be combined"),
        (["--image", str(ct), "--labels", str(labels), "--checkpoint", str(tmp_path / "no.pt"),
          "-o", str(tmp_path / "n.html")], "no.pt"),
        (["--image", str(tmp_path / "missing.nii.gz"), "--labels", str(labels), "-o",
          str(tmp_path / "n.html")], "missing.nii.gz"),
    ]:
        code = main(["report", *argv])
        err = capsys.readouterr().err
        assert code == 2, argv
        assert needle in err and len(err.strip().splitlines()) == 1
    assert out.read_text(encoding="utf-8") == before
    assert not (tmp_path / "n.html").exists()
    assert main(["report", "--image", str(ct), "--labels", str(labels), "-o", str(out),
                 "--overwrite"]) == 0
    (tmp_path / "ev").mkdir()
    metrics = _evaluate(tmp_path / "ev", capsys)
    assert main(["report", "--metrics", str(metrics), "-o", str(tmp_path / "ds.html")]) == 0
    assert not [p for p in tmp_path.rglob("*.tmp")]
