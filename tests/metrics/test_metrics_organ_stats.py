"""organ_statistics: volumes, HU statistics, completeness, fragments, world position and side."""
from __future__ import annotations

import json

import numpy as np
import pytest

from transunet_app.metrics.organ_stats import organ_statistics

RAS_5MM_X = np.diag([5.0, 1.0, 1.0, 1.0])  # 5 mm voxels across the body, so sides are clear


def _phantom():
    """(20, 30, 16) label map: organ 1 inside, organ 2 touching the last index of axis 2,
    organ 3 in two pieces; organ 4 absent. Axis 0 = RAS x (towards the patient's right)."""
    lab = np.zeros((20, 30, 16), np.uint8)
    lab[2:6, 5:10, 4:8] = 1        # on the low-x side = patient's left of the centre
    lab[14:18, 10:20, 10:16] = 2   # high x = patient's right; reaches the superior face
    lab[8:11, 2:4, 2:4] = 3
    lab[8:11, 25:27, 2:4] = 3
    img = np.full(lab.shape, -1000, np.int16)
    img[1:19, 1:29, :] = 30        # body
    img[lab == 1] = 50
    img[lab == 2] = np.arange(np.count_nonzero(lab == 2)) % 100
    return lab, img


def test_volumes_status_components_and_hu():
    lab, img = _phantom()
    names = {0: "background", 1: "one", 2: "two", 3: "three", 4: "four"}
    st = organ_statistics(lab, img, (2.0, 1.0, 1.5), names, None)
    assert list(st) == ["one", "two", "three", "four"]
    one, two, three, four = (st[k] for k in ("one", "two", "three", "four"))
    assert one["voxels"] == 4 * 5 * 4 and one["volume_ml"] == pytest.approx(80 * 3.0 / 1000)
    assert one["status"] == "complete" and one["edges_touched"] == []
    assert two["status"] == "touches_image_edge" and two["edges_touched"] == ["axis 2 end"]
    assert three["n_components"] == 2 and three["largest_component_fraction"] == pytest.approx(0.5)
    assert four["status"] == "absent" and four["volume_ml"] == 0.0 and four["hu"] is None
    assert four["centroid_mm"] is None and four["n_components"] == 0
    assert one["hu"] == {"mean": 50.0, "std": 0.0, "p5": 50.0, "p50": 50.0, "p95": 50.0}
    vals = img[lab == 2].astype(float)
    assert two["hu"]["mean"] == pytest.approx(vals.mean())
    assert two["hu"]["std"] == pytest.approx(vals.std())
    assert two["hu"]["p95"] == pytest.approx(np.percentile(vals, 95))
    # without an affine: array-frame centroid = index * spacing, no side
    assert one["centroid_frame"] == "array" and one["side"] is None
    assert one["centroid_mm"] == pytest.approx([3.5 * 2.0, 7.0 * 1.0, 5.5 * 1.5])
    json.dumps(st, allow_nan=False)


def test_sides_and_edge_names_follow_the_affine():
    lab, img = _phantom()
    st = organ_statistics(lab, img, None, {1: "one", 2: "two"}, RAS_5MM_X)
    assert st["one"]["side"] == "left" and st["two"]["side"] == "right"
    assert st["two"]["edges_touched"] == ["superior"]
    assert st["one"]["centroid_frame"] == "RAS"
    # The same anatomy stored flipped in x (LAS): voxels reversed, affine flipped -> same answer.
    flip = np.diag([-5.0, 1.0, 1.0, 1.0])
    flip[0, 3] = 5.0 * (lab.shape[0] - 1)
    st2 = organ_statistics(lab[::-1], img[::-1], None, {1: "one", 2: "two"}, flip)
    for k in ("one", "two"):
        assert st2[k]["side"] == st[k]["side"]
        assert st2[k]["centroid_mm"] == pytest.approx(st[k]["centroid_mm"])
    # spacing taken from the affine when not given
    st3 = organ_statistics(lab, None, None, {1: "one"}, np.diag([2.0, 1.0, 1.5, 1.0]))
    assert st3["one"]["volume_ml"] == pytest.approx(80 * 3.0 / 1000)
    assert st3["one"]["hu"] is None


def test_class_names_as_sequence_and_default_synapse():
    lab, _ = _phantom()
    st = organ_statistics(lab, None, (1, 1, 1), ["background", "one", "two"])
    assert list(st) == ["one", "two"]
    st = organ_statistics(lab, None, (1, 1, 1), None)
    assert list(st)[:2] == ["aorta", "gallbladder"] and len(st) == 8


def test_bad_input_raises():
    with pytest.raises(ValueError, match="3D"):
        organ_statistics(np.zeros((3, 3)), None, (1, 1, 1), None)
    with pytest.raises(ValueError, match="shape"):
        organ_statistics(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), (1, 1, 1), None)


def test_real_scan_anatomy(real_labels, shared_data):
    import nibabel as nib

    labels, affine, spacing = real_labels
    image = np.asanyarray(nib.load(str(shared_data / "ct_abdomen_3mm.nii.gz")).dataobj)
    st = organ_statistics(labels, image, spacing, None, affine)
    assert all(s["status"] != "absent" for s in st.values())
    assert st["liver"]["side"] == "right" and st["gallbladder"]["side"] == "right"
    assert st["spleen"]["side"] == "left"
    assert st["left kidney"]["side"] == "left" and st["right kidney"]["side"] == "right"
    assert st["left kidney"]["centroid_mm"][0] < st["right kidney"]["centroid_mm"][0]
    assert 20 < st["liver"]["hu"]["mean"] < 90  # soft tissue
    assert st["liver"]["volume_ml"] == pytest.approx(
        np.count_nonzero(labels == 5) * np.prod(spacing) / 1000)
    json.dumps(st, allow_nan=False)
