"""The ``segment`` command: outputs, safety (no overwrite, no partial files), bad inputs."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from transunet_app.checkpoint import save_checkpoint

from .conftest import save_nifti, small_phantom, tiny_checkpoint_dict


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_single_file_writes_labels_and_sidecar(tmp_path, tiny_ckpt, ct_file, run_segment):
    out = tmp_path / "out" / "seg.nii.gz"
    out.parent.mkdir()
    before = _sha(ct_file)
    code, stdout, err = run_segment(ct_file, "-o", out, "--checkpoint", tiny_ckpt, "--precision", "fp32")
    assert code == 0, err
    assert _sha(ct_file) == before  # input untouched
    assert _files(out.parent) == ["seg.json", "seg.nii.gz"]
    lab = nib.load(str(out))
    src = nib.load(str(ct_file))
    assert lab.shape == src.shape and lab.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(lab.affine, src.affine)
    side = json.loads((out.parent / "seg.json").read_text())
    assert side["labels"]["0"] == "background" and side["labels"]["5"] == "liver"
    assert side["model"] == "tiny" and side["checkpoint_sha256"] == _sha(tiny_ckpt)
    assert side["input_check"]["orientation"] == "LPS"
    assert "axial slices" in stdout  # the input check is reported


def test_existing_output_is_never_replaced_without_overwrite(tmp_path, tiny_ckpt, ct_file, run_segment):
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(b"precious")
    code, _, err = run_segment(ct_file, "-o", out, "--checkpoint", tiny_ckpt, "--quiet")
    assert code == 2 and out.read_bytes() == b"precious"
    assert err.strip().count("\n") == 0 and "already exists" in err and str(out) in err
    code, _, _ = run_segment(ct_file, "-o", out, "--checkpoint", tiny_ckpt, "--quiet", "--overwrite")
    assert code == 0 and nib.load(str(out)).shape == nib.load(str(ct_file)).shape
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    code, stdout, _ = run_segment(ct_file, "-o", out, "--checkpoint", tiny_ckpt, "--skip-existing")
    assert code == 0 and "skipped" in stdout


def test_output_may_not_be_the_input(tmp_path, tiny_ckpt, ct_file, run_segment):
    before = _sha(ct_file)
    code, _, err = run_segment(ct_file, "-o", ct_file, "--checkpoint", tiny_ckpt, "--overwrite", "--quiet")
    assert code == 2 and "input" in err and _sha(ct_file) == before


def _bad_inputs(tmp_path: Path):
    d = tmp_path / "bad"
    d.mkdir()
    yield "missing", d / "nope.nii.gz", "no such file"
    (d / "text.nii.gz").write_text("not an image")
    yield "not an image", d / "text.nii.gz", "not a NIfTI|corrupt"
    ph = small_phantom()
    full = save_nifti(d / "full.nii.gz", ph.image, ph.affine).read_bytes()
    (d / "truncated.nii.gz").write_bytes(full[: len(full) // 2])
    yield "truncated", d / "truncated.nii.gz", "truncated or corrupt"
    yield "2D", save_nifti(d / "flat.nii.gz", np.zeros((8, 8), np.int16), np.eye(4)), "2D image"
    yield "4D", save_nifti(d / "multi.nii.gz", np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), "3 volumes"
    nan = ph.image.astype(np.float32)
    nan[2, 3, 4] = np.nan
    yield "NaN", save_nifti(d / "nan.nii.gz", nan, ph.affine), "NaN or infinite"
    yield "zero axis", save_nifti(d / "zero.nii.gz", np.zeros((4, 0, 4), np.int16), np.eye(4)), "zero-length"


def test_bad_inputs_give_one_line_exit_2_and_no_output(tmp_path, tiny_ckpt, run_segment):
    import re

    for what, path, pattern in _bad_inputs(tmp_path):
        out_dir = tmp_path / f"out_{what.replace(' ', '_')}"
        out_dir.mkdir()
        code, _, err = run_segment(path, "-o", out_dir / "seg.nii.gz", "--checkpoint", tiny_ckpt)
        assert code == 2, what
        lines = err.strip().splitlines()
        assert len(lines) == 1, (what, err)
        assert str(path) in lines[0] and re.search(pattern, lines[0]), (what, lines[0])
        assert "Traceback" not in err
        assert _files(out_dir) == [], what


def _bad_checkpoints(tmp_path: Path):
    good = tiny_checkpoint_dict()
    p = tmp_path / "corrupt.pt"
    p.write_bytes(b"\x80\x02garbage" * 10)
    yield "corrupt", p, ()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p = tmp_path / "pickled.pt"
    torch.save({"format": good["format"], "payload": Evil()}, p)
    yield "pickled code", p, ()
    p = tmp_path / "five.pt"
    save_checkpoint(p, tiny_checkpoint_dict(classes=["background", "a", "b", "c", "d"]))
    yield "class count", p, ("--num-classes", "9")
    bad = dict(good)
    bad["state_dict"] = {k: v for k, v in good["state_dict"].items() if "segmentation_head" not in k}
    p = tmp_path / "missing_weights.pt"
    save_checkpoint(p, bad)
    yield "weights", p, ()


def test_bad_checkpoints_give_one_line_exit_2(tmp_path, ct_file, run_segment):
    for what, ckpt, extra in _bad_checkpoints(tmp_path):
        out = tmp_path / f"seg_{what.replace(' ', '_')}.nii.gz"
        code, _, err = run_segment(ct_file, "-o", out, "--checkpoint", ckpt, *extra)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and str(ckpt) in lines[0], (what, err)
        assert "Traceback" not in err and not out.exists(), what


def test_class_count_message(tmp_path, ct_file, run_segment):
    p = tmp_path / "five.pt"
    save_checkpoint(p, tiny_checkpoint_dict(classes=["background", "a", "b", "c", "d"]))
    code, _, err = run_segment(ct_file, "-o", tmp_path / "s.nii.gz", "--checkpoint", p, "--num-classes", "9")
    assert code == 2 and "predicts 5 classes" in err and "expected 9" in err


def test_folder_mode_continues_after_a_bad_file_and_exits_1(tmp_path, tiny_ckpt, run_segment):
    src = tmp_path / "scans"
    for i, code in enumerate(("LPS", "RAS")):
        ph = small_phantom(seed=20 + i, orientation=code)
        save_nifti(src / f"case{i}.nii.gz", ph.image, ph.affine)
    (src / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    out = tmp_path / "labels"
    code, stdout, err = run_segment(src, "-o", out, "--checkpoint", tiny_ckpt, "--quiet")
    assert code == 1
    assert _files(out) == ["case0.json", "case0.nii.gz", "case1.json", "case1.nii.gz"]
    assert "2 segmented, 0 skipped, 1 failed" in err and "broken.nii.gz" in err
    # A rerun skips what is done and still reports the broken file.
    code, stdout, err = run_segment(src, "-o", out, "--checkpoint", tiny_ckpt, "--quiet", "--skip-existing")
    assert code == 1 and "0 segmented, 2 skipped, 1 failed" in err


def test_shards_split_a_folder_without_overlap(tmp_path, tiny_ckpt, run_segment):
    src = tmp_path / "scans"
    for i in range(3):
        ph = small_phantom(seed=30 + i)
        save_nifti(src / f"c{i}.nii.gz", ph.image, ph.affine)
    out = tmp_path / "labels"
    seen = []
    for shard in ("1/2", "2/2"):
        before = set(p.name for p in out.iterdir()) if out.exists() else set()
        code, _, err = run_segment(src, "-o", out, "--checkpoint", tiny_ckpt, "--quiet", "--shard", shard)
        assert code == 0, err
        seen.append(sorted(set(p.name for p in out.glob("*.nii.gz")) - before))
    assert seen == [["c0.nii.gz", "c2.nii.gz"], ["c1.nii.gz"]]
    code, _, err = run_segment(src, "-o", out, "--checkpoint", tiny_ckpt, "--shard", "3/2")
    assert code == 2 and "--shard" in err


def test_statistics_probabilities_and_confidence(tmp_path, tiny_ckpt, ct_file, run_segment):
    out = tmp_path / "seg.nii.gz"
    code, _, err = run_segment(ct_file, "-o", out, "--checkpoint", tiny_ckpt, "--quiet",
                               "--statistics", "--probabilities", "--keep-largest", "--tta")
    assert code == 0, err
    lab = np.asarray(nib.load(str(out)).dataobj)
    stats = json.loads((tmp_path / "seg_statistics.json").read_text())
    organs = stats["organs"]
    assert set(organs) == {"aorta", "gallbladder", "left kidney", "right kidney", "liver",
                           "pancreas", "spleen", "stomach"}
    spacing = nib.load(str(ct_file)).header.get_zooms()
    for _name, o in organs.items():
        assert o["status"] in ("complete", "touches_image_edge", "absent")
        n = int((lab == o["label"]).sum())
        assert o["voxels"] == n and o["volume_ml"] == pytest.approx(n * np.prod(spacing) / 1000)
        if n:
            assert 0 < o["confidence"] <= 1 and 0 <= o["tta_agreement"] <= 1
            assert o["n_components"] == 1  # --keep-largest
            assert o["hu"]["p5"] <= o["hu"]["p50"] <= o["hu"]["p95"]
        else:
            assert o["status"] == "absent" and o["confidence"] is None
    probs = nib.load(str(tmp_path / "seg_probabilities.nii.gz"))
    assert probs.shape == lab.shape + (9,)
    p = probs.get_fdata(dtype=np.float32)
    assert 0 <= p.min() and p.max() <= 1
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=9 / 255 + 1e-3)


def test_non_hu_input_gets_a_warning(tmp_path, tiny_ckpt, run_segment):
    ph = small_phantom()
    unit = ((np.clip(ph.image, -125, 275) + 125) / 400).astype(np.float32)
    src = save_nifti(tmp_path / "normalised.nii.gz", unit, ph.affine)
    code, _, err = run_segment(src, "-o", tmp_path / "s.nii.gz", "--checkpoint", tiny_ckpt, "--quiet")
    assert code == 0 and "warning" in err and "normalised" in err and str(src) in err
    mr = np.clip(ph.image + 1000, 0, None).astype(np.int16)  # MR-like: no negative values
    src = save_nifti(tmp_path / "mr.nii.gz", mr, ph.affine)
    code, _, err = run_segment(src, "-o", tmp_path / "m.nii.gz", "--checkpoint", tiny_ckpt, "--quiet")
    assert code == 0 and "does not look like CT" in err


def test_report_for_a_dicom_series(tmp_path, tiny_ckpt, run_segment):
    from .conftest import sitk_from_ras, write_dicom_series

    ph = small_phantom()
    series = write_dicom_series(sitk_from_ras(ph.image, ph.affine), tmp_path / "series", "1.2.3.9")
    out = tmp_path / "out"
    code, _, err = run_segment(series, "-o", out, "--checkpoint", tiny_ckpt, "--quiet", "--report")
    assert code == 0, err
    assert _files(out) == ["series.json", "series.nii.gz", "series_report.html"]
    html = (out / "series_report.html").read_text(encoding="utf-8")
    assert "tiny" in html and "<html" in html.lower()


def test_console_script_help_is_complete():
    proc = subprocess.run(["segment", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--checkpoint", "--device", "--precision", "--batch-size", "--tta", "--keep-largest",
                 "--probabilities", "--statistics", "--overwrite", "--skip-existing", "--quiet",
                 "--series", "--jobs", "--shard", "--report", "--threads", "--streams"):
        assert flag in proc.stdout, flag


def test_streams_option(run_segment, ct_file, tiny_ckpt, tmp_path):
    import json

    code, _, err = run_segment(ct_file, "-o", tmp_path / "bad.nii.gz", "--checkpoint", tiny_ckpt,
                               "--streams", "0", "--quiet")
    assert code == 2 and "--streams 0: must be at least 1" in err and "Traceback" not in err
    assert not (tmp_path / "bad.nii.gz").exists()
    code, _, _ = run_segment(ct_file, "-o", tmp_path / "two.nii.gz", "--checkpoint", tiny_ckpt,
                             "--streams", "2", "--quiet")
    assert code == 0
    assert json.loads((tmp_path / "two.json").read_text())["settings"]["streams"] == 2


@pytest.mark.slow
def test_parallel_jobs_through_the_transunet_command(tmp_path, tiny_ckpt):
    src = tmp_path / "scans"
    for i in range(2):
        ph = small_phantom(seed=40 + i)
        save_nifti(src / f"p{i}.nii.gz", ph.image, ph.affine)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "labels"
    proc = subprocess.run([sys.executable, "-m", "transunet_app", "segment", str(src), "-o", str(out),
                           "--checkpoint", str(tiny_ckpt), "--jobs", "2", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert _files(out) == ["p0.json", "p0.nii.gz", "p1.json", "p1.nii.gz"]
