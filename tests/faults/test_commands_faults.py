"""Every command meets an unwritable target with one line naming the path and the reason,
exit code 3, no traceback: a read-only file system, and a file where a folder should be."""
from __future__ import annotations

import shutil

import pytest

from .conftest import REPO_ROOT, assert_one_line_error, mounted_tmpfs, run_cli


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, fault_ckpt, small_ct):
    """A CT, its label map (segment), a pred/gt pair of folders and a raw training folder."""
    from transunet_app.data.phantom import prepare_phantom

    root = tmp_path_factory.mktemp("cmd_inputs")
    res = run_cli(["segment", small_ct, "-o", root / "labels.nii.gz", "--checkpoint", fault_ckpt, "--quiet"])
    assert res.returncode == 0, res.stderr
    for sub in ("pred", "gt"):
        (root / sub).mkdir()
        shutil.copy(root / "labels.nii.gz", root / sub / "case01.nii.gz")
    prepare_phantom(root / "phantom", cases=2, seed=1, matrix=32, slices=4, test_fraction=0.5)
    return root


def _commands(inputs, small_ct, fault_ckpt, target):
    return {
        "segment": ["segment", small_ct, "-o", target / "seg", "--checkpoint", fault_ckpt, "--quiet"],
        "report": ["report", "--image", small_ct, "--labels", inputs / "labels.nii.gz", "-o", target / "r.html"],
        "evaluate": ["evaluate", "--pred", inputs / "pred", "--gt", inputs / "gt", "-o", target / "m.json"],
        "prepare": ["prepare", "folder", "--src", inputs / "phantom" / "raw", "--out", target / "prep"],
        "train": ["train", "--config", REPO_ROOT / "configs" / "tiny.yaml", "--output", target / "run",
                  f"data.root={inputs / 'phantom'}", "log.tensorboard=False", "log.progress=False"],
    }


COMMANDS = ["segment", "report", "evaluate", "prepare", "train"]


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_target(tmp_path, inputs, small_ct, fault_ckpt, command):
    with mounted_tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        res = run_cli(_commands(inputs, small_ct, fault_ckpt, ro)[command])
        assert res.returncode == 3, res.stderr[-2000:]
        assert_one_line_error(res.stderr, str(ro), "read-only file system")


@pytest.mark.parametrize("command", ["segment", "prepare", "train"])
def test_file_in_place_of_a_folder(tmp_path, inputs, small_ct, fault_ckpt, command):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    res = run_cli(_commands(inputs, small_ct, fault_ckpt, blocker / "deeper")[command])
    assert res.returncode == 3, res.stderr[-2000:]
    assert_one_line_error(res.stderr, str(blocker), "a component of the path is a file")
