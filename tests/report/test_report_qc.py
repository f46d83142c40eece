"""QC flags: each kind fires on the situation it names, and stays quiet otherwise."""
from __future__ import annotations

import numpy as np
import pytest

from transunet_app.metrics.organ_stats import organ_statistics
from transunet_app.report.qc import Flag, ct_plausibility, scan_flags

from .conftest import AFFINE, make_phantom


def _codes(flags):
    return [(f.code, f.organ) for f in flags]


def test_clean_phantom_has_only_the_truncation_note():
    ct, lab = make_phantom()
    st = organ_statistics(lab, ct, None, None, AFFINE)
    flags = scan_flags(st, ct, volume_ranges={})
    assert _codes(flags) == [("organ_truncated", None)]
    msg = flags[0].message
    assert "liver (superior edge)" in msg and "aorta (inferior and superior edges)" in msg
    assert "lower bound" in msg


def test_ct_plausibility():
    ct, _ = make_phantom()
    assert ct_plausibility(ct) == []
    assert "normalised" in ct_plausibility((ct + 1000) / 3000.0)[0]
    eight_bit = np.clip((ct + 160) / 400 * 255, 0, 255).astype(np.uint8)
    reasons = ct_plausibility(eight_bit)
    assert any("no air" in r for r in reasons)
    no_bone = np.where(ct > 60, 60, ct)
    assert any("no bone" in r for r in ct_plausibility(no_bone))
    _, lab = make_phantom()
    st = organ_statistics(lab, ct, None, None, AFFINE)
    flags = scan_flags(st, (ct + 1000) / 3000.0, volume_ranges={})
    assert flags[0].code == "not_ct" and flags[0].severity == "alert"  # most severe first


def test_missing_volume_fragment_and_reference_flags():
    ct, lab = make_phantom()
    lab[lab == 2] = 0                           # gallbladder missing
    lab[(lab == 7) & (np.arange(lab.shape[2]) % 3 == 0)[None, None, :]] = 0  # spleen sliced up
    st = organ_statistics(lab, ct, None, None, AFFINE)
    ranges = {"left kidney": (60.0, 300.0), "stomach": None}
    ref = {"pancreas": {"status": "both_present", "dice": 0.4},
           "liver": {"status": "both_present", "dice": 0.95},
           "stomach": {"status": "false_positive", "dice": 0.0},
           "aorta": {"status": "both_empty", "dice": float("nan")}}
    flags = scan_flags(st, ct, ranges, ref)
    codes = _codes(flags)
    assert ("organ_missing", "gallbladder") in codes
    assert ("volume_out_of_range", "left kidney") in codes
    assert ("volume_out_of_range", "right kidney") not in codes  # no range given for it
    assert ("fragmented", "spleen") in codes
    assert ("reference_disagreement", "pancreas") in codes
    assert ("reference_disagreement", "stomach") in codes
    assert ("reference_disagreement", "liver") not in codes
    assert ("reference_disagreement", "aorta") not in codes
    vol = next(f for f in flags if f.code == "volume_out_of_range")
    assert "below" in vol.message and "60-300" in vol.message
    assert all(isinstance(f, Flag) and f.to_dict()["message"] for f in flags)


def test_volume_range_not_applied_to_cut_off_organs():
    ct, lab = make_phantom()
    st = organ_statistics(lab, ct, None, None, AFFINE)
    flags = scan_flags(st, ct, {"liver": (500.0, 3000.0)})
    assert ("volume_out_of_range", "liver") not in _codes(flags)  # liver touches the edge


@pytest.mark.parametrize("swap", ["labels", "orientation"])
def test_kidneys_on_the_wrong_side(swap):
    ct, lab = make_phantom()
    affine = AFFINE
    if swap == "labels":
        lab = np.where(lab == 3, 4, np.where(lab == 4, 3, lab)).astype(np.uint8)
    else:
        # header says x grows towards the patient's LEFT: the image is mirrored
        affine = AFFINE.copy()
        affine[0, 0] = -4.0
    st = organ_statistics(lab, ct, None, None, affine)
    flags = scan_flags(st, ct, {})
    side = [f for f in flags if f.code == "kidney_side"]
    assert side and side[0].severity == "alert"
    assert {f.organ for f in side} == {"left kidney", "right kidney"}


def test_kidneys_swapped_relative_to_each_other_near_midline():
    # both kidneys within the midline band but in the wrong order
    st = {"left kidney": {"status": "complete", "side": "midline", "centroid_frame": "RAS",
                          "centroid_mm": [5.0, 0, 0]},
          "right kidney": {"status": "complete", "side": "midline", "centroid_frame": "RAS",
                           "centroid_mm": [-5.0, 0, 0]}}
    flags = scan_flags(st, None, {})
    assert [f.code for f in flags] == ["kidney_side"]


def test_empty_segmentation_is_one_alert():
    ct, lab = make_phantom()
    st = organ_statistics(np.zeros_like(lab), ct, None, None, AFFINE)
    flags = scan_flags(st, ct, {})
    assert [(f.code, f.severity, f.organ) for f in flags] == [("organ_missing", "alert", None)]
