"""tools/bench_segment.py at its smallest: the interleaved pipelines on a tiny model.

Checks the machinery, not speed: every pipeline runs in its own process, they take turns in
chunks, every slice is done exactly once, the outputs are real label maps on the input's grid,
and segment's fp32 labels match the reference loop's where the model is confident.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .conftest import save_nifti, small_phantom

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    # Imported by name (not from a file spec): the worker processes unpickle
    # bench_segment.pipeline_worker by name; spawn hands them this sys.path.
    if str(ROOT / "tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "tools"))
    return importlib.import_module("bench_segment")


def test_interleaved_pipelines_share_the_work_in_turns(bench, tiny_ckpt, tmp_path):
    ph = small_phantom()
    src = save_nifti(tmp_path / "ct.nii.gz", ph.image, ph.affine)
    rows = bench.run_interleaved(tiny_ckpt, src, tmp_path, chunk=4, batch=4, threads=1)
    slices = ph.image.shape[2]  # LPS phantom: the last axis is axial
    assert set(rows) == set(bench.PIPELINES)
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
