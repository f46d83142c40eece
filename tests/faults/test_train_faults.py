"""``train`` under faults: full disk at a checkpoint, a corrupt last checkpoint, NaN losses."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from .conftest import REPO_ROOT, assert_one_line_error, mounted_tmpfs, run_cli

CONFIG = str(REPO_ROOT / "configs" / "tiny.yaml")
CKPT_BYTES = 6_281_791  # last.pt of the run below (weights + SGD momentum, 0.79 M parameters)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from transunet_app.data.phantom import prepare_phantom

    out = tmp_path_factory.mktemp("faults_phantom") / "data"
    prepare_phantom(out, cases=4, seed=3, matrix=48, slices=6, test_fraction=0.25)
    return out


def _overrides(root, **extra):
    values = {"data.root": root, "data.img_size": 32, "train.batch_size": 4, "train.max_iterations": 8,
              "train.checkpoint_every_iterations": 2, "train.deterministic": True, "train.cpu_threads": 1,
              "val.source": "none", "log.progress": False, "log.tensorboard": False, "train.amp": "off",
              "model.overrides.dropout": 0.1}
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def _losses(run) -> dict[int, float]:
    out = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["iteration"]] = rec["loss"]
    return out


def _iteration(path) -> int:
    from transunet_app.checkpoint import load_checkpoint

    return load_checkpoint(path)["training"]["iteration"]


def test_full_disk_at_a_checkpoint_stops_cleanly_and_resumes_exactly(phantom, tmp_path):
    """16 MB hold last.pt and previous.pt (6.3 MB each) but not a third file while saving
    (saves at iterations 2, 4 and 5, the epoch's end): the run stops at that save with one line, last.pt stays the previous valid checkpoint, and a
    resume on a disk with room repeats the same losses."""
    with mounted_tmpfs(tmp_path / "disk", "16m") as disk:
        run = disk / "run"
        res = run_cli(["train", "--config", CONFIG, "--output", run, *_overrides(phantom)])
        assert res.returncode == 3, res.stderr[-2000:]
        assert_one_line_error(res.stderr, "not enough free space for the checkpoint last.pt",
                              "training stopped at iteration 5", "resume continues from iteration 4")
        ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert ckpts == ["last.pt", "previous.pt"], ckpts  # no temporary left
        assert _iteration(run / "checkpoints" / "last.pt") == 4
        before = _losses(run)
        moved = tmp_path / "run"
        shutil.copytree(run, moved)
    res = run_cli(["train", "--output", moved, "--resume"])
    assert res.returncode == 0, res.stderr[-2000:]
    after = _losses(moved)
    assert sorted(after) == list(range(1, 9))
    assert after[5] == before[5]  # recomputed bit for bit
    assert _iteration(moved / "checkpoints" / "last.pt") == 8


def test_write_failure_during_first_checkpoint(phantom, tmp_path):
    """A file-size limit below the checkpoint: the write itself fails (EFBIG), one line, exit 3,
    no temporary in checkpoints/."""
    run = tmp_path / "run"
    res = run_cli(["train", "--config", CONFIG, "--output", run, *_overrides(phantom)],
                  file_size_limit=CKPT_BYTES // 2)
    assert res.returncode == 3, res.stderr[-2000:]
    assert_one_line_error(res.stderr, "last.pt", "file too large", "no checkpoint of this run yet")
    assert list((run / "checkpoints").iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_resume_falls_back_past_a_corrupt_last_checkpoint(phantom, tmp_path, damage):
    run = tmp_path / "run"
    res = run_cli(["train", "--config", CONFIG, "--output", run, *_overrides(phantom)])
    assert res.returncode == 0, res.stderr[-2000:]
    before = _losses(run)
    last, previous = run / "checkpoints" / "last.pt", run / "checkpoints" / "previous.pt"
    assert _iteration(previous) == 6
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 3] if damage == "truncated" else b"\x00garbage" * 100)
    res = run_cli(["train", "--output", run, "--resume"])
    assert res.returncode == 0, res.stderr[-2000:]
    warning = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert warning and str(last) in warning[0] and str(previous) in warning[0], res.stderr
    after = _losses(run)
    assert after[7] == before[7] and after[8] == before[8]
    import io

    import torch

    from transunet_app.checkpoint import load_checkpoint

    a = torch.load(io.BytesIO(good), weights_only=True)["state_dict"]
    b = load_checkpoint(last)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_every_checkpoint_corrupt_is_one_line(phantom, tmp_path):
    run = tmp_path / "run"
    assert run_cli(["train", "--config", CONFIG, "--output", run,
                    *_overrides(phantom, **{"train.max_iterations": 4})]).returncode == 0
    for name in ("last.pt", "previous.pt"):
        (run / "checkpoints" / name).write_bytes(b"PK\x03\x04 broken")
    res = run_cli(["train", "--output", run, "--resume"])
    assert res.returncode == 2
    assert_one_line_error(res.stderr, "no valid checkpoint to resume from", "last.pt", "previous.pt")


def test_nan_loss_stops_naming_step_slices_and_checkpoint(phantom, tmp_path):
    """A training slice with NaN voxels (a broken file): the run stops at that step with the
    slice's name and the last good checkpoint; no checkpoint holds NaN weights."""
    data = tmp_path / "data"
    shutil.copytree(phantom, data)
    slices = sorted((data / "train_npz").glob("*.npz"))
    bad = slices[len(slices) // 2]
    with np.load(bad) as f:
        image, label = f["image"].copy(), f["label"]
    image[5:9, 5:9] = np.nan
    np.savez(bad, image=image, label=label)
    run = tmp_path / "run"
    res = run_cli(["train", "--config", CONFIG, "--output", run,
                   *_overrides(data, **{"train.max_iterations": 12, "model.overrides.dropout": 0.0})])
    assert res.returncode == 2, res.stderr[-2000:]
    assert_one_line_error(res.stderr, "training stopped: loss is nan at iteration", bad.stem)
    line = next(ln for ln in res.stderr.splitlines() if "loss is nan" in ln)
    import re

    step = int(re.search(r"at iteration (\d+)", line).group(1))
    last = run / "checkpoints" / "last.pt"
    if step > 2:
        assert f"last good checkpoint: {last}" in line
        import torch

        from transunet_app.checkpoint import load_checkpoint

        ck = load_checkpoint(last)
        assert ck["training"]["iteration"] < step
        assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    else:
        assert "no checkpoint saved yet" in line
