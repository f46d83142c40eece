"""README "Share a trained model": its commands, run as printed in a folder holding inputs
under the README's names (``runs/r50`` a run folder, ``card.yaml`` the README's YAML block,
``scan.nii.gz`` a phantom CT)."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

PACKAGE = "transunet package runs/r50 -o abdomen-r50.zip --card card.yaml"
INSTALL = "transunet models install abdomen-r50.zip"
LIST = "transunet models list"
SHOW = "transunet models show abdomen-r50"
SEGMENT = "segment scan.nii.gz -o scan_labels.nii.gz --model abdomen-r50 --statistics --report"
REMOVE = "transunet models remove abdomen-r50"
EXPORT_ONNX = "transunet export abdomen-r50 -o abdomen-r50.onnx --format onnx"
EXPORT_TS = "transunet export abdomen-r50 -o abdomen-r50.ts --format torchscript"
EXPORT_BUNDLE = "transunet export abdomen-r50 -o abdomen-r50_bundle --format monai-bundle"
BUNDLE_RUN = ("python -m monai.bundle run --config_file abdomen-r50_bundle/configs/inference.json "
              "--meta_file abdomen-r50_bundle/configs/metadata.json --input_image scan.nii.gz "
              "--output_dir labels/")


def _readme_card() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Share a trained model"):]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def share_dir(tmp_path, run_dir, ct_file, home, monkeypatch):
    shutil.copytree(run_dir, tmp_path / "runs" / "r50")
    (tmp_path / "card.yaml").write_text(_readme_card())
    shutil.copy(ct_file, tmp_path / "scan.nii.gz")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(cli, command):
    argv = shlex.split(command)
    code, out, err = cli(*(argv[1:] if argv[0] == "transunet" else argv))
    assert code == 0, f"{command}\n{err}"
    return out, err


def test_share_a_trained_model_as_the_readme_shows(cli, share_dir, home):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in (PACKAGE, INSTALL, LIST, SHOW, SEGMENT, EXPORT_TS, REMOVE):
        assert command in readme, command
    card = yaml.safe_load(_readme_card())
    _run(cli, PACKAGE)
    _run(cli, INSTALL)
    assert (home / "abdomen-r50" / card["version"]).is_dir()
    out, _ = _run(cli, LIST)
    assert "abdomen-r50" in out
    out, err = _run(cli, SHOW)
    assert card["license"] in out and "unspecified" not in err
    _run(cli, SEGMENT)
    side = json.loads((share_dir / "scan_labels.json").read_text(encoding="utf-8"))
    assert side["model_card"]["name"] == "abdomen-r50"
    assert card["license"] in (share_dir / "scan_labels_report.html").read_text(encoding="utf-8")
    _run(cli, EXPORT_TS)
    assert (share_dir / "abdomen-r50.ts").is_file()
    _run(cli, REMOVE)
    assert not (home / "abdomen-r50").exists()


@pytest.mark.slow  # ONNX export and a MONAI bundle run in a fresh process
def test_export_for_deployment_as_the_readme_shows(cli, share_dir, home):
    pytest.importorskip("onnxruntime", reason="onnxruntime comes with the [export] extra")
    pytest.importorskip("ignite", reason="pytorch-ignite comes with the [export] extra")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in (EXPORT_ONNX, EXPORT_BUNDLE, BUNDLE_RUN):
        assert command in readme, command
    _run(cli, PACKAGE)
    _run(cli, INSTALL)
    _run(cli, EXPORT_ONNX)
    _run(cli, EXPORT_BUNDLE)
    argv = shlex.split(BUNDLE_RUN)
    argv[0] = sys.executable
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(argv, cwd=share_dir, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (share_dir / "labels" / "scan_seg.nii.gz").is_file()
