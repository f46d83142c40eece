"""OutputSet: all of a case's files appear together or none does; stale temporaries."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from transunet_app.errors import UserError
from transunet_app.outputs.staging import OutputSet, is_staged, remove_stale, staged_name


def _write(text):
    return lambda tmp: tmp.write_text(text)


def test_commit_renames_all_label_map_last(tmp_path, monkeypatch):
    order = []
    real_link = os.link
    monkeypatch.setattr(os, "link", lambda a, b: (order.append(os.path.basename(b)), real_link(a, b))[1])
    labels, sidecar, stats = tmp_path / "c.nii.gz", tmp_path / "c.json", tmp_path / "c_statistics.json"
    with OutputSet(last=labels) as out:
        out.write(labels, _write("L"))
        out.write(sidecar, _write("S"))
        out.write(stats, _write("T"))
        assert not labels.exists() and all(is_staged(p.name) for p in tmp_path.iterdir())
    assert order == ["c.json", "c_statistics.json", "c.nii.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.nii.gz", "c_statistics.json"]


def test_failure_in_a_writer_removes_everything(tmp_path):
    labels = tmp_path / "c.nii.gz"

    def broken(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")  # as gzip raises it: no file name

    with pytest.raises(OSError) as info:
        with OutputSet(last=labels) as out:
            out.write(labels, _write("L"))
            out.write(tmp_path / "c_probabilities.nii.gz", broken)
    assert info.value.filename == str(tmp_path / "c_probabilities.nii.gz")  # the final name
    assert list(tmp_path.iterdir()) == []


def test_existing_files_kept_without_overwrite_and_replaced_with_it(tmp_path):
    labels = tmp_path / "c.nii.gz"
    labels.write_text("old")
    with pytest.raises(UserError, match="already exists"):
        with OutputSet(last=labels) as out:
            out.write(labels, _write("new"))
    assert labels.read_text() == "old" and len(list(tmp_path.iterdir())) == 1
    with OutputSet(overwrite=True, last=labels) as out:
        out.write(labels, _write("new"))
    assert labels.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_file_appearing_before_commit_is_not_clobbered(tmp_path):
    labels, sidecar = tmp_path / "c.nii.gz", tmp_path / "c.json"
    with pytest.raises(UserError, match="already exists"):
        with OutputSet(last=labels) as out:
            out.write(sidecar, _write("S"))
            out.write(labels, _write("L"))
            labels.write_text("someone else's")
    assert labels.read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.nii.gz"]  # the new sidecar rolled back


def test_scratch_folder_removed(tmp_path):
    with OutputSet() as out:
        scratch = out.scratch_dir(tmp_path)
        (scratch / "ct.nii.gz").write_text("x")
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_only_dead_and_old(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".c.nii.gz.{dead}.0123abcd.partial.nii.gz"
    nested = tmp_path / f"..c.json.{dead}.0123abcd.partial.json.x1y2.part.json"  # an atomic_write inside
    stale_dir = tmp_path / f".scratch.{dead}.0123abcd.partial"
    live = staged_name(tmp_path / "d.nii.gz")  # this process: alive
    user_file = tmp_path / ".hidden_note.txt"
    for p in (stale, nested, live, user_file):
        p.write_text("x")
    stale_dir.mkdir()
    old = time.time() - 3600
    for p in (stale, nested, stale_dir, live):
        os.utime(p, (old, old))
    removed = remove_stale(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale.name, nested.name, stale_dir.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, user_file.name])
    # a dead process's file written after this run started is left (another machine may own it)
    fresh = tmp_path / f".e.nii.gz.{dead}.0123abcd.partial.nii.gz"
    fresh.write_text("x")
    assert remove_stale(tmp_path, older_than=time.time() - 60) == []
