"""``segment --model NAME|PKG.zip``: the same labels as ``--checkpoint`` on the same weights,
the card's identity in the sidecar, statistics and report."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np


def test_segment_model_matches_checkpoint_and_records_the_card(cli, tiny_ckpt, card_yaml, home,
                                                             tmp_path, ct_file):
    pkg = tmp_path / "abdomen-tiny.zip"
    assert cli("package", tiny_ckpt, "-o", pkg, "--card", card_yaml)[0] == 0
    assert cli("models", "install", pkg)[0] == 0
    by_ckpt = tmp_path / "ckpt" / "case01.nii.gz"
    by_ckpt.parent.mkdir()
    code, _, err = cli("segment", ct_file, "-o", by_ckpt, "--checkpoint", tiny_ckpt, "--quiet",
                       "--precision", "fp32")
    assert code == 0, err
    ref = np.asarray(nib.load(by_ckpt).dataobj)
    assert len(np.unique(ref)) > 1  # not a trivial map
    for spec, folder in ((pkg, "zip"), ("abdomen-tiny", "installed")):
        out = tmp_path / folder / "case01.nii.gz"
        out.parent.mkdir()
        code, _, err = cli("segment", ct_file, "-o", out, "--model", spec, "--quiet",
                           "--precision", "fp32", "--statistics", "--report")
        assert code == 0, err
        labels = nib.load(out)
        assert np.array_equal(np.asarray(labels.dataobj), ref)
        assert np.allclose(labels.affine, nib.load(ct_file).affine)
        side = json.loads((out.parent / "case01.json").read_text(encoding="utf-8"))
        card = side["model_card"]
        assert card["name"] == "abdomen-tiny" and card["version"] == "1.2.0"
        installed_card = json.loads((home / "abdomen-tiny" / "1.2.0" / "model.json").read_text(encoding="utf-8"))
        assert card["weights_sha256"] == installed_card["files"]["weights.safetensors"]
        assert side["checkpoint_sha256"] == card["weights_sha256"]
        assert side["labels"] == json.loads(by_ckpt.with_name("case01.json").read_text(encoding="utf-8"))["labels"]
        stats = json.loads((out.parent / "case01_statistics.json").read_text(encoding="utf-8"))
        assert stats["model_card"]["name"] == "abdomen-tiny"
        assert stats["model_card"]["weights_sha256"] == card["weights_sha256"]
        html = (out.parent / "case01_report.html").read_text(encoding="utf-8")
        assert "abdomen-tiny 1.2.0" in html
        assert "research on abdominal CT segmentation" in html and "CC-BY-NC-4.0" in html
        assert card["weights_sha256"] in html
        assert "validated: not measured" in html  # a bare checkpoint carries no validation


def test_report_states_the_models_validated_performance(cli, run_dir, card_yaml, home, tmp_path, ct_file):
    """The card's mean Dice/HD95 from the run's own validation reach the scan report."""
    pkg = tmp_path / "abdomen-tiny.zip"
    assert cli("package", run_dir, "-o", pkg, "--card", card_yaml)[0] == 0
    out = tmp_path / "seg" / "case01.nii.gz"
    out.parent.mkdir()
    code, _, err = cli("segment", ct_file, "-o", out, "--model", pkg, "--quiet", "--precision", "fp32", "--report")
    assert code == 0, err
    html = (out.parent / "case01_report.html").read_text(encoding="utf-8")
    # run_dir's metrics: Dice 0.50..0.85 (mean 0.675), HD95 2..9 mm without pancreas (mean 37/7)
    assert "validated: mean Dice 0.675, mean HD95 5.3 mm on the run&#x27;s own validation (2 cases, phantom)" in html


def test_segment_needs_exactly_one_model_source(cli, tiny_ckpt, tmp_path, ct_file, home, capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        cli("segment", ct_file, "-o", tmp_path / "o.nii.gz", "--model", "x", "--checkpoint", tiny_ckpt)
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        cli("segment", ct_file, "-o", tmp_path / "o.nii.gz")
    capsys.readouterr()  # argparse's usage lines
    code, _, err = cli("segment", ct_file, "-o", tmp_path / "o.nii.gz", "--model", "nonexistent")
    assert code == 2 and "no installed model" in err and len(err.strip().splitlines()) == 1
