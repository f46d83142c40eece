"""``segment`` under file-system faults and signals: one line, a documented exit code, and an
output folder holding either the complete set of a case or nothing of it (no temporaries)."""
from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from .conftest import assert_one_line_error, mounted_tmpfs, partial_files, run_cli, start_cli, wait_for

FULL_SET = ("case01.nii.gz", "case01.json", "case01_probabilities.nii.gz", "case01_statistics.json",
            "case01_report.html")
ALL_OUTPUTS = ("--probabilities", "--statistics", "--report")


def test_full_disk_is_refused_before_inference(tmp_path, large_ct, fault_ckpt):
    """A 1 MB file system cannot hold the probabilities: refused up front, nothing written."""
    with mounted_tmpfs(tmp_path / "small", "1m") as small:
        res = run_cli(["segment", large_ct, "-o", small / "big.nii.gz", "--checkpoint", fault_ckpt,
                       "--probabilities", "--quiet"])
        assert res.returncode == 3, res.stderr
        assert_one_line_error(res.stderr, str(small), "not enough free space", "MB free")
        assert list(small.iterdir()) == []


def test_disk_full_while_writing_leaves_nothing(tmp_path, large_ct, fault_ckpt):
    """The estimate passes but writes fail (file-size limit, as a disk filling up meanwhile):
    one line naming the output, exit 3, no label map, no sidecar, no temporaries."""
    out = tmp_path / "out"
    out.mkdir()
    res = run_cli(["segment", large_ct, "-o", out / "big.nii.gz", "--checkpoint", fault_ckpt,
                   *ALL_OUTPUTS, "--quiet"], file_size_limit=20_000)
    assert res.returncode == 3, res.stderr
    assert_one_line_error(res.stderr, str(out), "file too large")
    assert list(out.iterdir()) == []


def test_disk_full_on_probabilities_only_leaves_nothing(tmp_path, large_ct, fault_ckpt):
    """Labels (59 kB) and sidecar fit, the 4D probabilities (159 kB) do not: the label map must not appear
    without them (the gzip 'No space left' case of the issue)."""
    out = tmp_path / "out"
    out.mkdir()
    res = run_cli(["segment", large_ct, "-o", out / "big.nii.gz", "--checkpoint", fault_ckpt,
                   "--probabilities", "--quiet"], file_size_limit=100_000)
    assert res.returncode == 3, res.stderr
    assert_one_line_error(res.stderr, "big_probabilities.nii.gz", "file too large")
    assert list(out.iterdir()) == []


def test_read_only_output_folder(tmp_path, small_ct, fault_ckpt):
    with mounted_tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        for target in (ro / "case01.nii.gz", ro / "sub"):
            res = run_cli(["segment", small_ct, "-o", target, "--checkpoint", fault_ckpt, "--quiet"])
            assert res.returncode == 3, res.stderr
            assert_one_line_error(res.stderr, str(ro), "read-only file system")


@pytest.mark.parametrize("kind", ["file_in_path", "name_too_long", "missing_drive"])
def test_unwritable_targets(tmp_path, small_ct, fault_ckpt, kind):
    if kind == "file_in_path":
        (tmp_path / "afile").write_text("x")
        target, reason = tmp_path / "afile" / "labels", "a component of the path is a file"
    elif kind == "name_too_long":
        target, reason = tmp_path / ("n" * 300 + ".nii.gz"), "file name too long"
    else:
        target, reason = tmp_path / "not_mounted" / "case.nii.gz", "output folder does not exist"
    res = run_cli(["segment", small_ct, "-o", target, "--checkpoint", fault_ckpt, "--quiet"])
    assert res.returncode == (2 if kind == "missing_drive" else 3), res.stderr
    assert_one_line_error(res.stderr, reason)


def test_debug_shows_traceback(tmp_path, small_ct, fault_ckpt):
    (tmp_path / "afile").write_text("x")
    res = run_cli(["segment", small_ct, "-o", tmp_path / "afile" / "x", "--checkpoint", fault_ckpt,
                   "--quiet"], TRANSUNET_DEBUG="1")
    assert res.returncode == 3
    assert "Traceback" in res.stderr and "a component of the path is a file" in res.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_while_writing_leaves_nothing(tmp_path, large_ct, fault_ckpt, sig):
    """The signal arrives while the staged files are being written: exit 128+N, no
    temporaries, no final names."""
    out = tmp_path / "out"
    out.mkdir()
    proc = start_cli(["segment", large_ct, "-o", out / "big.nii.gz", "--checkpoint", fault_ckpt,
                      *ALL_OUTPUTS, "--quiet", "--threads", "1", "--streams", "1"])
    wait_for(lambda: any(n.startswith('.big') for n in partial_files(out)), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert f"stopped by {signal.Signals(sig).name}" in err or sig == signal.SIGINT and "interrupted" in err, err
    assert list(out.iterdir()) == [], "outputs or temporaries left behind"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_with_parallel_jobs_leaves_no_temporaries(tmp_path, large_ct, fault_ckpt):
    """--jobs 2: the parent forwards SIGTERM to its workers, each removes its staged files."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b"):
        os.link(large_ct, src / f"{name}.nii.gz")
    out = tmp_path / "out"
    proc = start_cli(["segment", src, "-o", out, "--checkpoint", fault_ckpt, *ALL_OUTPUTS, "--quiet",
                      "--jobs", "2", "--threads", "1", "--streams", "1"])
    wait_for(lambda: any(n[1:2] in 'ab' for n in partial_files(out)), proc, timeout=240)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert partial_files(out) == [], err
    for name in ("a", "b"):  # each case: the complete set (finished just before) or nothing
        present = [p.name for p in out.iterdir() if p.name.startswith(name)]
        assert len(present) in (0, 5), present


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_then_skip_existing_redoes_the_case(tmp_path, large_ct, fault_ckpt):
    """After SIGKILL the temporaries stay; the next run removes them and does not take the
    case for done (its label map was never renamed)."""
    out = tmp_path / "out"
    out.mkdir()
    args = ["segment", large_ct, "-o", out / "big.nii.gz", "--checkpoint", fault_ckpt, *ALL_OUTPUTS,
            "--quiet", "--threads", "1", "--streams", "1"]
    proc = start_cli(args)
    wait_for(lambda: any(n.startswith('.big') for n in partial_files(out)), proc)
    proc.kill()
    proc.communicate()
    assert partial_files(out), "SIGKILL should leave the staged files"
    assert not (out / "big.nii.gz").exists()
    res = run_cli(args + ["--skip-existing"])
    assert res.returncode == 0, res.stderr
    assert "skipped" not in res.stdout
    assert partial_files(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(n.replace("case01", "big") for n in FULL_SET)


def test_skip_existing_needs_the_complete_set(tmp_path, small_ct, fault_ckpt):
    """A set missing a listed output (removed, or from a run cut short between renames) is
    segmented again; a complete set is skipped."""
    out = tmp_path / "out"
    args = ["segment", small_ct, "-o", out, "--checkpoint", fault_ckpt, "--statistics"]
    res = run_cli(args)
    assert res.returncode == 0, res.stderr
    sidecar = json.loads((out / "case01.json").read_text())
    assert sidecar["outputs"] == ["case01.nii.gz", "case01.json", "case01_statistics.json"]
    res = run_cli(args + ["--skip-existing"])
    assert "skipped" in res.stdout, res.stdout
    (out / "case01_statistics.json").unlink()
    res = run_cli(args + ["--skip-existing"])
    assert res.returncode == 0, res.stderr
    assert "skipped" not in res.stdout and "-> " in res.stdout, res.stdout
    assert (out / "case01_statistics.json").is_file()
