"""A short run on the phantom: what it writes, what the checkpoints hold, validation."""
from __future__ import annotations

import json
import math

import pytest
import torch

from transunet_app.checkpoint import load_checkpoint, model_from_checkpoint
from transunet_app.config import load_config

from .conftest import REPO_ROOT, run_cli, tiny_overrides

CONFIG = REPO_ROOT / "configs" / "tiny.yaml"


def test_short_run_writes_self_describing_checkpoints(phantom_root, tmp_path):
    from transunet_app.engine import train

    out = tmp_path / "run"
    overrides = tiny_overrides(phantom_root, **{"train.max_epochs": 2, "log.tensorboard": True,
                                                "log.image_every": 2, "train.amp": "bf16"})
    best = train(CONFIG, out, overrides=overrides)
    assert best == out / "checkpoints" / "best.pt"

    # resolved config saved with the run, loadable as is
    saved = load_config(out / "config.yaml")
    assert saved.data.img_size == 32 and saved.train.amp == "bf16"

    ck = load_checkpoint(best)
    assert ck["classes"][0] == "background" and len(ck["classes"]) == 9
    assert ck["preprocessing"]["img_size"] == [32, 32]
    assert ck["preprocessing"]["hu_window"] == [-125.0, 275.0] and ck["preprocessing"]["orientation"] == "SPL"
    assert ck["config"]["model"]["name"] == "tiny" and ck["config"]["dataset"]["synthetic"] is True
    assert ck["training"] is None and 0.0 <= ck["metrics"]["mean_dice"] <= 1.0
    assert set(ck["metrics"]["per_organ"]) == set(ck["classes"][1:])
    # HD95 measured by the run's validation, in mm: the prepared phantom volumes carry spacing
    assert set(ck["metrics"]["hd95"]) == set(ck["classes"][1:])
    assert "in mm" in ck["metrics"]["hd95_convention"]
    # (ten iterations rarely find an organ: values are nan until prediction and reference meet)
    finite = [v for v in ck["metrics"]["hd95"].values() if math.isfinite(v)]
    assert all(v >= 0 for v in finite)
    mean = ck["metrics"]["mean_hd95"]
    assert mean == pytest.approx(sum(finite) / len(finite)) if finite else math.isnan(mean)
    model = model_from_checkpoint(ck)
    probs = model.predict(torch.rand(1, 1, 32, 32))
    assert probs.shape == (1, 9, 32, 32)

    last = load_checkpoint(out / "checkpoints" / "last.pt")
    st = last["training"]
    assert st["iteration"] == 10 and st["epoch"] == 2 and st["batch_in_epoch"] == 0
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(st)

    records = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in losses] == list(range(1, 11))
    assert all(math.isfinite(r["loss"]) for r in losses)
    assert losses[0]["lr"] == 0.05 and losses[-1]["lr"] < losses[0]["lr"]  # poly decay
    vals = [r for r in records if r.get("event") == "validation"]
    assert [v["epoch"] for v in vals] == [1, 2]
    assert all(set(v["hd95"]) == set(ck["classes"][1:]) for v in vals)
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 1000


def test_validation_on_training_slices_and_held_out_without_volumes(phantom_root, tmp_path):
    from transunet_app.engine import train

    out = tmp_path / "slices"
    train(CONFIG, out, overrides=tiny_overrides(phantom_root, **{
        "train.max_iterations": 3, "val.source": "slices", "val.split": "train"}))
    records = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    (val,) = [r for r in records if r.get("event") == "validation"]
    assert val["iteration"] == 3 and len(val["per_organ"]) == 8
    # the stacked training slices are consecutive and the dataset recorded each case's
    # spacing: HD95 in mm, and the convention says so
    assert len(val["hd95"]) == 8 and "in mm" in val["hd95_convention"]


def test_validation_without_hd95(phantom_root, tmp_path):
    from transunet_app.engine import train

    out = tmp_path / "nohd"
    best = train(CONFIG, out, overrides=tiny_overrides(phantom_root, **{
        "train.max_iterations": 3, "val.hd95": False}))
    assert "hd95" not in load_checkpoint(best)["metrics"]


def test_cli_errors_are_one_line(phantom_root, tmp_path):
    res = run_cli(["train", "--config", str(CONFIG), "--output", str(tmp_path / "x"), f"data.root={tmp_path}/none",
                   "train.batchsize=3"])
    assert res.returncode == 2 and "valid in train: batch_size" in res.stderr and "Traceback" not in res.stderr
    res = run_cli(["train", "--config", str(CONFIG), "--output", str(tmp_path / "y"), f"data.root={tmp_path}/none"])
    assert res.returncode == 2 and "no such folder" in res.stderr and "Traceback" not in res.stderr
    res = run_cli(["train", "--output", str(tmp_path / "z"), "--resume"])
    assert res.returncode == 2 and "no config.yaml" in res.stderr
