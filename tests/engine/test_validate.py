"""engine/validate.py: per-organ Dice and HD95 of whole volumes, the units and the means."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transunet_app.engine.validate import HD95_CONVENTION, organ_scores, summarize, validate
from transunet_app.metrics.evaluate import evaluate_organ

CLASSES = ["background", "a", "b", "c"]


def organ_hd95(pred, label, classes, spacing_mm=None):
    return organ_scores(pred, label, classes, spacing_mm)[1]
SIZE = 16


class IntensityToClass(torch.nn.Module):
    """Logits (B, 4, H, W) whose argmax is round(3 * x): an image ``label / 3`` is predicted
    exactly, so a test controls the prediction through the image."""

    def forward(self, x):
        k = torch.arange(len(CLASSES), dtype=x.dtype).view(1, -1, 1, 1)
        return -(3 * x - k) ** 2


def _volume(case, shift=0, spacing=None):
    label = torch.zeros(6, SIZE, SIZE, dtype=torch.int64)
    label[1:4, 2:8, 2:8] = 1
    label[2:5, 9:14, 9:13] = 2  # class 3 is absent from the reference
    pred = torch.roll(label, shifts=shift, dims=2)
    vol = {"case": case, "image": pred.float() / 3, "label": label}
    if spacing is not None:
        vol.update(spacing=torch.tensor(spacing, dtype=torch.float64), spacing_known=True)
    return vol, pred


def test_single_voxels_give_the_exact_distance_in_mm_and_voxels():
    p = np.zeros((5, 4, 4), np.int64)
    g = np.zeros_like(p)
    p[0, 1, 1] = 1
    g[2, 1, 1] = 1
    assert organ_hd95(p, g, ["bg", "x"], np.array([3.0, 0.7, 0.7])) == {"x": pytest.approx(6.0)}
    assert organ_hd95(p, g, ["bg", "x"]) == {"x": pytest.approx(2.0)}


def test_organ_hd95_is_the_strict_evaluation_hd95():
    _, pred = _volume("c", shift=2)
    label = _volume("c")[1]
    sp = np.array([2.5, 0.8, 0.6])
    got = organ_hd95(pred, label, CLASSES, sp)
    for k, name in enumerate(CLASSES[1:], start=1):
        ref = evaluate_organ(pred.numpy() == k, label.numpy() == k, sp, convention="strict")
        assert (math.isnan(got[name]) and math.isnan(ref["hd95_mm"])) or got[name] == ref["hd95_mm"]
    assert got["a"] > 0 and math.isnan(got["c"])  # c in neither map: undefined, not 0


def test_validate_measures_hd95_in_mm_when_the_volumes_carry_spacing():
    sp = (3.0, 0.75, 0.75)
    vols = [_volume("exact", spacing=sp)[0], _volume("shifted", shift=2, spacing=sp)[0]]
    summary, _ = validate(IntensityToClass(), vols, CLASSES, img_size=SIZE, batch_size=4)
    assert summary["cases"]["exact"]["a"] == 1.0 and summary["hd95_cases"]["exact"]["a"] == 0.0
    _, shifted_pred = _volume("shifted", shift=2)
    expected = organ_hd95(shifted_pred, _volume("x")[1], CLASSES, np.array(sp))
    assert summary["hd95_cases"]["shifted"]["a"] == pytest.approx(expected["a"])
    assert expected["a"] > 0
    assert summary["hd95"]["a"] == pytest.approx(expected["a"] / 2)  # mean of 0 and the shift
    assert math.isnan(summary["hd95"]["c"])  # never in both maps: left out of mean_hd95
    assert summary["mean_hd95"] == pytest.approx((summary["hd95"]["a"] + summary["hd95"]["b"]) / 2)
    assert summary["hd95_convention"] == HD95_CONVENTION.format(unit="mm")


def test_validate_without_spacing_is_in_voxels_and_mixed_units_are_not_averaged():
    summary, _ = validate(IntensityToClass(), [_volume("v", shift=1)[0]], CLASSES, img_size=SIZE)
    assert "in voxels" in summary["hd95_convention"]
    vol, pred = _volume("v", shift=1)
    assert summary["hd95"]["a"] == pytest.approx(organ_hd95(pred, vol["label"], CLASSES)["a"])

    vols = [_volume("mm", shift=1, spacing=(3.0, 1.0, 1.0))[0], _volume("vox", shift=1)[0]]
    summary, _ = validate(IntensityToClass(), vols, CLASSES, img_size=SIZE)
    assert all(math.isnan(v) for v in summary["hd95"].values())
    assert "not averaged" in summary["hd95_convention"]
    assert math.isfinite(summary["hd95_cases"]["mm"]["a"])  # per case still reported


def test_validate_can_skip_hd95():
    summary, _ = validate(IntensityToClass(), [_volume("v")[0]], CLASSES, img_size=SIZE, with_hd95=False)
    assert "hd95" not in summary and summary["mean_dice"] == 1.0


def test_summarize_without_hd95_keeps_its_old_shape():
    s = summarize({"x": {"a": 0.5, "b": float("nan"), "c": 1.0}}, CLASSES)
    assert set(s) == {"per_organ", "mean_dice", "cases"} and s["mean_dice"] == 0.75


class _Slices:
    """The parts of SynapseSlices that slice_volumes reads."""

    def __init__(self, index, spacing=(2.5, 0.7, 0.7)):
        self.cases = ["case0001"] * len(index)
        self.slice_index = list(index)
        self.info = {"cases": {"case0001": {"spacing": list(spacing)}}}

    def __getitem__(self, i):
        return {"image": torch.full((4, 4), float(self.slice_index[i])), "label": torch.zeros(4, 4, dtype=torch.int64)}


def test_stacked_training_slices_carry_spacing_only_when_consecutive():
    from transunet_app.engine.data import slice_volumes

    (vol,) = slice_volumes(_Slices([7, 5, 6]))
    assert vol["image"][:, 0, 0].tolist() == [5.0, 6.0, 7.0]
    assert vol["spacing_known"] and vol["spacing"].tolist() == [2.5, 0.7, 0.7]
    (gappy,) = slice_volumes(_Slices([5, 7, 8]))  # a gap: the recorded slice distance is wrong
    assert "spacing" not in gappy and "spacing_known" not in gappy
    summary, _ = validate(IntensityToClass(), [gappy], CLASSES, img_size=SIZE)
    assert "in voxels" in summary["hd95_convention"]
