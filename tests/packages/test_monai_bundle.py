"""``transunet export --format monai-bundle``: the real ``python -m monai.bundle run`` gives
``segment``'s labels (Dice >= 0.99 per organ present) on the input's grid and affine."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from transunet_app.data.phantom import make_phantom

from ..outputs.dicom_builder import write_ct_series


def _dice(a, b):
    s = a.sum() + b.sum()
    return 2.0 * np.logical_and(a, b).sum() / s if s else 1.0


@pytest.mark.slow  # a trained tiny model, then monai.bundle run in a fresh process per scan
def test_bundle_run_matches_segment(cli, trained_ckpt, shared_ct, tmp_path, home):
    pytest.importorskip("ignite", reason="pytorch-ignite comes with the [export] extra")
    pytest.importorskip("fire", reason="fire comes with the [export] extra")
    pkg = tmp_path / "trained.zip"
    assert cli("package", trained_ckpt, "-o", pkg)[0] == 0
    bundle = tmp_path / "bundle"
    code, _, err = cli("export", pkg, "-o", bundle, "--format", "monai-bundle")
    assert code == 0, err
    for f in ("configs/metadata.json", "configs/inference.json", "models/model.ts", "docs/README.md"):
        assert (bundle / f).is_file(), f
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["pred_classes"]["5"] == "liver" and meta["monai_version"]
    # inputs: the real CT, a phantom stored in another orientation (LPS), and the real CT as a
    # DICOM series folder (MONAI picks its DICOM reader; the geometry must still agree)
    ph = make_phantom(21, orientation="LPS")
    phantom = tmp_path / "phantom_lps.nii.gz"
    nib.save(nib.Nifti1Image(ph.image.astype(np.float32), ph.affine), phantom)
    real = nib.load(shared_ct[0])
    series = tmp_path / "ct_series"
    write_ct_series(series, np.asarray(real.dataobj).astype(np.int16),
                    np.zeros(real.shape, np.uint8), real.affine)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # runs without transunet_app
    for ct, name, grid in ((shared_ct[0], shared_ct[0].name[:-7], shared_ct[0]),
                           (phantom, phantom.name[:-7], phantom), (series, series.name, shared_ct[0])):
        out_dir = tmp_path / f"bundle_out_{name}"
        res = subprocess.run([sys.executable, "-m", "monai.bundle", "run",
                              "--config_file", str(bundle / "configs" / "inference.json"),
                              "--meta_file", str(bundle / "configs" / "metadata.json"),
                              "--input_image", str(ct), "--output_dir", str(out_dir)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
        by_bundle = nib.load(out_dir / f"{name}_seg.nii.gz")
        seg = tmp_path / f"seg_{name}.nii.gz"
        code, _, err = cli("segment", ct, "-o", seg, "--model", pkg, "--precision", "fp32", "--quiet")
        assert code == 0, err
        by_segment = nib.load(seg)
        scan = nib.load(grid)
        assert by_bundle.shape == scan.shape == by_segment.shape
        assert np.allclose(by_bundle.affine, scan.affine, atol=1e-4)  # overlays on the scan
        a, b = np.asarray(by_bundle.dataobj), np.asarray(by_segment.dataobj)
        present = [k for k in np.unique(b) if k > 0]
        assert present, "the trained model finds organs"
        for k in present:
            assert _dice(a == k, b == k) >= 0.99, (name, k, _dice(a == k, b == k))
