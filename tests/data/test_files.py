"""File names and the one atomic write (transunet_app.data.files)."""
import json
import os
import stat

import pytest

from transunet_app.data.files import (
    VOLUME_SUFFIXES,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    case_name,
    is_volume_path,
    list_volumes,
    pair_cases,
    sidecar_path,
)
from transunet_app.errors import UserError


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("suffix", VOLUME_SUFFIXES)
def test_case_name_strips_every_volume_suffix(tmp_path, suffix):
    for name in ("case0001", "img.v2_final"):
        assert case_name(tmp_path / f"{name}{suffix}") == name
        assert case_name(f"{name}{suffix.upper()}") == name  # case-insensitive, name kept as is
        assert is_volume_path(f"{name}{suffix.upper()}")
    assert sidecar_path(tmp_path / f"case0001{suffix}") == tmp_path / "case0001.json"


def test_case_name_of_folders_and_other_files(tmp_path):
    series = tmp_path / "series.1.2"
    series.mkdir()
    assert case_name(series) == "series.1.2"  # a DICOM folder keeps its whole name
    assert case_name(tmp_path / "scan.dcm") == "scan"
    assert case_name(tmp_path / "scan.nii.gz.bak") == "scan.nii.gz"
    assert case_name("a.nii.gz") == "a" and case_name("a.nii") == "a"  # .nii.gz stripped whole


def test_list_volumes_skips_hidden_and_other_files(tmp_path):
    for name in ("b.nii.gz", "a.NRRD", "c.mha", ".b.nii.gz.x.part.nii.gz", "notes.txt", "d.raw"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.nii.gz").mkdir()
    assert [p.name for p in list_volumes(tmp_path)] == ["a.NRRD", "b.nii.gz", "c.mha"]


def test_pair_cases_by_name_and_role_suffix(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    for p in (pred / "case01.nii.gz", pred / "case02_pred.nii.gz", pred / "lonely.nii.gz",
              gt / "case01.nii.gz", gt / "case02_gt.nrrd"):
        p.write_bytes(b"x")
    pairs, unpaired = pair_cases(pred, gt)
    assert [(c, p.name, g.name) for c, p, g in pairs] == [
        ("case01", "case01.nii.gz", "case01.nii.gz"), ("case02", "case02_pred.nii.gz", "case02_gt.nrrd")]
    assert unpaired == ["lonely.nii.gz"]


def test_atomic_write_never_replaces_an_existing_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("keep me")
    calls = []
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        atomic_write(target, lambda tmp: calls.append(tmp), overwrite=False)
    assert calls == [] and target.read_text() == "keep me" and not _leftovers(tmp_path)
    for write in (lambda: atomic_write_text(target, "new"), lambda: atomic_write_json(target, {"a": 1})):
        with pytest.raises(UserError, match="already exists"):
            write()
        assert target.read_text() == "keep me"
    atomic_write_json(target, {"a": 1}, overwrite=True)
    assert json.loads(target.read_text()) == {"a": 1} and not _leftovers(tmp_path)


def test_atomic_write_refuses_a_file_that_appears_while_writing(tmp_path):
    target = tmp_path / "labels.nii.gz"

    def write(tmp):
        tmp.write_bytes(b"mine")
        target.write_bytes(b"someone else's")  # another process wins the race

    with pytest.raises(UserError, match="already exists"):
        atomic_write(target, write)
    assert target.read_bytes() == b"someone else's" and not _leftovers(tmp_path)


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "model.pt"

    def write(tmp):
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, write)
    assert not target.exists() and os.listdir(tmp_path) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, write, overwrite=True)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.pt"]
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        atomic_write_json(tmp_path / "m.json", {"dice": float("nan")})
    assert os.listdir(tmp_path) == ["model.pt"]


def test_atomic_write_temp_name_keeps_the_extension_and_mode_applies(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_bytes(b"\x7fELF")

    out = atomic_write(tmp_path / "kernel-abc.so", write, mode=0o755)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".kernel-abc.so.")
    assert seen[0].name.endswith(".so") and stat.S_IMODE(out.stat().st_mode) == 0o755
    atomic_write(tmp_path / "scan.nii.gz", write)
    assert seen[1].name.endswith(".part.nii.gz")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "scan.nii.gz").stat().st_mode) == 0o666 & ~umask


def test_atomic_write_bad_targets_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(UserError, match="does not exist"):
        atomic_write_text(tmp_path / "missing" / "x.txt", "x")


def test_atomic_folder_swaps_in_a_complete_folder_and_keeps_the_old_one_on_failure(tmp_path):
    from transunet_app.data.files import atomic_folder

    dest = tmp_path / "bundle"

    def build_v1(tmp):
        (tmp / "a.txt").write_text("1")

    assert atomic_folder(dest, build_v1) == dest and (dest / "a.txt").read_text() == "1"

    for exc in (OSError("disk full"), KeyboardInterrupt()):
        def broken(tmp, exc=exc):
            (tmp / "a.txt").write_text("half")
            raise exc

        with pytest.raises(type(exc)):
            atomic_folder(dest, broken)
        assert sorted(p.name for p in dest.iterdir()) == ["a.txt"] and (dest / "a.txt").read_text() == "1"
        assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary folder left

    def build_v2(tmp):
        (tmp / "b.txt").write_text("2")

    atomic_folder(dest, build_v2)
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
