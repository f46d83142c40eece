"""The `transunet prepare` command: exit codes, messages, refusal to overwrite."""
import subprocess
import sys

import numpy as np

from transunet_app.cli import main

from .conftest import btcv_case, save_nifti


def test_prepare_phantom_cli(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["prepare", "phantom", "--out", str(out), "--cases", "2", "--seed", "3", "--quiet"]) == 0
    assert "1 training cases" in capsys.readouterr().out
    assert (out / "dataset.yaml").exists() and (out / "raw" / "imagesTr" / "phantom_0002.nii.gz").exists()
    assert main(["prepare", "phantom", "--out", str(out), "--cases", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["prepare", "phantom", "--out", str(out), "--cases", "2", "--seed", "4", "--overwrite", "--quiet"]) == 0


def test_prepare_synapse_cli_reports_skips(tmp_path, capsys):
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    aff = np.diag([-0.8, -0.8, 2.5, 1.0])
    for n in (1, 5):
        img, lab = btcv_case(rng, (8, 8, 3))
        save_nifti(raw / "img" / f"img{n:04d}.nii.gz", img, aff)
        save_nifti(raw / "label" / f"label{n:04d}.nii.gz", lab if n == 1 else lab[:, :, :2], aff)
    code = main(["prepare", "synapse", "--raw", str(raw), "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "skipped case0005" in captured.err and "shapes differ" in captured.err
    assert "0 training cases" in captured.out and "1 test volumes" in captured.out
    assert main(["prepare", "synapse", "--raw", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2
    assert "no such folder" in capsys.readouterr().err
    # an empty HU window is one error before any case is read, not a skip of every case
    assert main(["prepare", "synapse", "--raw", str(raw), "--out", str(tmp_path / "o3"),
                 "--hu-window", "275", "-125", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "HU window [275.0, -125.0] is empty" in err and err.count("\n") == 1 and "skipped" not in err
    assert not (tmp_path / "o3").exists()


def test_help_is_fast_and_lists_sources():
    code = ("import sys, time; t = time.time(); from transunet_app.cli import main\n"
            "try:\n    main(['prepare', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'SimpleITK' not in sys.modules and 'torch' not in sys.modules, 'heavy import'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "synapse" in result.stdout and "folder" in result.stdout and "phantom" in result.stdout
