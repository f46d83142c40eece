"""tools/bench/bench_segment.py at its smallest: the interleaved pipelines on a tiny model.

Runs the tool as a user does (a subprocess; tests never import tools/) with ``--checkpoint`` and
``--ct``, and checks the machinery, not speed: every pipeline runs in its own process, they take
turns in chunks, every slice is done exactly once, the outputs are real label maps on the
input's grid, and segment's fp32 labels match the reference loop's where the model is confident.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from transunet_app.checkpoint import save_checkpoint

from ..inference.conftest import save_nifti, small_phantom, tiny_checkpoint_dict

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ("reference", "segment fp32", "segment bf16")


def test_interleaved_pipelines_share_the_work_in_turns(tmp_path):
    tiny_ckpt = tmp_path / "tiny.pt"
    save_checkpoint(tiny_ckpt, tiny_checkpoint_dict())
    ph = small_phantom()
    src = save_nifti(tmp_path / "ct.nii.gz", ph.image, ph.affine)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench" / "bench_segment.py"),
                        "--parts", "speed", "--checkpoint", str(tiny_ckpt), "--ct", str(src),
                        "--chunk", "4", "--batch-size", "4", "--threads", "1",
                        "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "r.json").read_text())["speed"]["rows"]
    slices = ph.image.shape[2]  # LPS phantom: the last axis is axial
    assert set(rows) == set(PIPELINES)
    labels = {}
    for name, row in rows.items():
        log = row["turn_log"]
        # 10 slices in chunks of 4: turns after 4, 8 and 10 slices, in successive rounds.
        assert [t[1] for t in log] == [4, 8, slices], (name, log)
        assert [t[0] for t in log] == sorted({t[0] for t in log}), (name, log)
        assert row["run_seconds"] == pytest.approx(sum(t[2] for t in log), abs=1e-3 * len(log))
        assert row["model_seconds"] <= row["run_seconds"]
        out = nib.load(row["output"])
        assert out.shape == ph.image.shape and np.allclose(out.affine, nib.load(str(src)).affine)
        labels[name] = np.asarray(out.dataobj)
    # Same weights, different resizing (cubic vs bilinear, labels vs logits): most voxels agree.
    assert (labels["segment fp32"] == labels["reference"]).mean() > 0.8
