"""Dice, per-case evaluation and summaries in both conventions, with hand-computed expectations."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from medpy import metric

from transunet_app.metrics.evaluate import evaluate_case, evaluate_organ, json_safe, summarize
from transunet_app.metrics.overlap import dice, volume_ml


def official_calculate_metric_percase(pred, gt):
    """Verbatim logic of Beckschen/TransUNet utils.py calculate_metric_percase."""
    pred = pred.copy()
    gt = gt.copy()
    pred[pred > 0] = 1
    gt[gt > 0] = 1
    if pred.sum() > 0 and gt.sum() > 0:
        dice_ = metric.binary.dc(pred, gt)
        hd95_ = metric.binary.hd95(pred, gt)
        return dice_, hd95_
    elif pred.sum() > 0 and gt.sum() == 0:
        return 1, 0
    else:
        return 0, 0


# --- Dice ---------------------------------------------------------------------------------

def test_dice_hand_computed():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :3] = True  # 3 voxels
    b[0, 1:] = True  # 3 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(a, a) == 1.0


def test_dice_empty_rules():
    e = np.zeros((3, 3), bool)
    f = np.ones((3, 3), bool)
    assert math.isnan(dice(e, e))  # medpy says 1.0; we refuse to invent a score
    assert dice(e, f) == 0.0 and dice(f, e) == 0.0


def test_dice_equals_medpy(blob):
    a, b = blob((10, 11, 12), 1), blob((10, 11, 12), 2)
    assert dice(a, b) == pytest.approx(metric.binary.dc(a, b), rel=1e-12)


def test_volume_ml():
    m = np.zeros((10, 10, 10), bool)
    m[:5, :4, :2] = True  # 40 voxels of 2*3*0.5 = 3 mm^3
    assert volume_ml(m, (2.0, 3.0, 0.5)) == pytest.approx(40 * 3 / 1000)


# --- conventions ------------------------------------------------------------------------------

def _case(shape=(12, 16, 14), seed=0, blob=None):
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    gt[2:8, 3:10, 2:9] = 1
    pred[3:8, 3:11, 2:9] = 1                     # 1: both present
    gt[9:11, 2:6, 10:13] = 2                     # 2: missed (gt only)
    pred[9:11, 10:14, 10:13] = 3                 # 3: false positive (pred only)
    # 4: absent in both
    gt[1:4, 12:15, 1:4] = 5                      # 5: both present, partial overlap
    pred[2:4, 13:16, 1:5] = 5
    return pred, gt


LABELS = {1: "a", 2: "b", 3: "c", 4: "d", 5: "e"}


def test_transunet_convention_reproduces_official_function():
    pred, gt = _case()
    res = evaluate_case(pred, gt, LABELS, (2.0, 0.5, 1.0), convention="transunet")
    for lab, name in LABELS.items():
        d_off, h_off = official_calculate_metric_percase(pred == lab, gt == lab)
        assert res[name]["dice"] == pytest.approx(d_off, rel=1e-12), name
        assert res[name]["hd95"] == pytest.approx(h_off, rel=1e-12), name  # voxel units
    assert res["c"]["status"] == "false_positive" and (res["c"]["dice"], res["c"]["hd95"]) == (1.0, 0.0)
    assert res["b"]["status"] == "missed" and (res["b"]["dice"], res["b"]["hd95"]) == (0.0, 0.0)
    assert res["d"]["status"] == "both_empty" and (res["d"]["dice"], res["d"]["hd95"]) == (0.0, 0.0)


def test_strict_convention_units_and_empty_rules():
    pred, gt = _case()
    sp = (2.0, 0.5, 1.0)
    res = evaluate_case(pred, gt, LABELS, sp, convention="strict")
    a = res["a"]
    assert a["hd95"] == a["hd95_mm"] == pytest.approx(
        metric.binary.hd95(pred == 1, gt == 1, voxelspacing=sp), rel=1e-9)
    assert a["hd95_vox"] == pytest.approx(metric.binary.hd95(pred == 1, gt == 1), rel=1e-9)
    assert a["hd95_mm"] != a["hd95_vox"]  # anisotropic: the units really differ
    assert a["assd_mm"] == pytest.approx(metric.binary.assd(pred == 1, gt == 1, voxelspacing=sp))
    b, c, d = res["b"], res["c"], res["d"]
    assert b["status"] == "missed" and b["dice"] == 0.0 and math.isnan(b["hd95"]) and b["nsd"] == 0.0
    assert c["status"] == "false_positive" and c["dice"] == 0.0 and math.isnan(c["hd95_mm"])
    assert d["status"] == "both_empty" and math.isnan(d["dice"]) and math.isnan(d["nsd"])
    assert a["pred_volume_ml"] == pytest.approx(np.count_nonzero(pred == 1) * 1.0 / 1000)
    assert b["ref_volume_ml"] > 0 and b["pred_volume_ml"] == 0.0


def test_isotropic_spacing_voxel_and_mm_are_proportional():
    pred, gt = _case()
    r = evaluate_organ(pred == 5, gt == 5, (3.0, 3.0, 3.0))
    assert r["hd95_mm"] == pytest.approx(3.0 * r["hd95_vox"])
    assert r["hd95_vox"] == pytest.approx(metric.binary.hd95(pred == 5, gt == 5))


def test_unknown_convention_is_rejected():
    with pytest.raises(ValueError, match="convention"):
        evaluate_organ(np.ones((2, 2, 2)), np.ones((2, 2, 2)), None, convention="papers")


def test_summary_transunet_equals_official_aggregation():
    cases, metric_list = [], 0.0
    for seed in range(3):
        pred, gt = _case(seed=seed)
        if seed == 1:
            pred = np.where(pred == 5, 0, pred)  # organ e missed in one case
        cases.append({"case": f"c{seed}", "organs": evaluate_case(pred, gt, LABELS, None, "transunet")})
        metric_list += np.array([official_calculate_metric_percase(pred == i, gt == i)
                                 for i in sorted(LABELS)])
    metric_list = metric_list / 3
    s = summarize(cases, list(LABELS.values()))
    for i, name in enumerate(LABELS.values()):
        assert s["organs"][name]["dice"]["mean"] == pytest.approx(metric_list[i][0])
        assert s["organs"][name]["hd95"]["mean"] == pytest.approx(metric_list[i][1])
    assert s["mean"]["dice"] == pytest.approx(np.mean(metric_list, axis=0)[0])
    assert s["mean"]["hd95"] == pytest.approx(np.mean(metric_list, axis=0)[1])


def test_summary_strict_never_averages_nan_as_zero():
    pred, gt = _case()
    c1 = {"case": "1", "organs": evaluate_case(pred, gt, LABELS, (1, 1, 1))}
    c2 = {"case": "2", "organs": evaluate_case(gt, gt, LABELS, (1, 1, 1))}
    s = summarize([c1, c2], list(LABELS.values()))
    b = s["organs"]["b"]  # missed in case 1, perfect in case 2
    assert b["hd95"] == {"mean": 0.0, "std": 0.0, "median": 0.0, "n": 1, "n_undefined": 1}
    assert b["dice"]["mean"] == pytest.approx(0.5) and b["dice"]["n"] == 2
    d = s["organs"]["d"]  # absent everywhere: undefined, and left out of the overall mean
    assert d["dice"]["mean"] is None and d["dice"]["n_undefined"] == 2
    assert "d" not in s["mean_organs_used"]["dice"]
    used = [s["organs"][n]["dice"]["mean"] for n in s["mean_organs_used"]["dice"]]
    assert s["mean"]["dice"] == pytest.approx(np.mean(used))
    assert s["organs"]["c"]["status_counts"] == {"both_present": 0, "both_empty": 1, "missed": 0,
                                                 "false_positive": 1}
    json.dumps(json_safe(s), allow_nan=False)  # strict JSON


def test_synapse_default_labels_come_from_the_dataset_yaml():
    from transunet_app.data.labels import load_label_spec, synapse_organs

    assert synapse_organs() == {1: "aorta", 2: "gallbladder", 3: "left kidney", 4: "right kidney",
                                5: "liver", 6: "pancreas", 7: "spleen", 8: "stomach"}
    assert list(synapse_organs().values()) == load_label_spec()["classes"][1:]
