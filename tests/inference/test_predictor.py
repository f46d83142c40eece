"""Predictor internals: resizing, batching, precision, TTA, post-processing, input checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from transunet_app.checkpoint import model_from_checkpoint
from transunet_app.data.geometry import plan_reorientation
from transunet_app.data.io import Image
from transunet_app.errors import CheckpointError
from transunet_app.inference import (
    SlicePredictor,
    check_input,
    fold_batch_norm,
    fold_weight_standardization,
    keep_largest_component,
    segment_image,
)

from .conftest import IMG_SIZE, small_phantom, tiny_checkpoint_dict

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ckpt():
    return tiny_checkpoint_dict()


def _predictor(ckpt, precision="fp32", batch_size=4, tta=False):
    return SlicePredictor(model_from_checkpoint(ckpt), ckpt["preprocessing"], CPU, precision,
                          batch_size=batch_size, tta=tta)


def test_folding_weight_standardisation_keeps_outputs(ckpt):
    model = model_from_checkpoint(ckpt).eval().double()
    x = torch.rand(2, 1, IMG_SIZE, IMG_SIZE, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        after = fold_weight_standardization(model)(x)
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["tiny", "CvT-13"])
def test_folding_batch_norm_keeps_outputs(name):
    """Decoder conv-BN-ReLU units (and CvT's depthwise projections) folded into their
    convolutions give the same logits; BN statistics are made non-trivial first."""
    from transunet_app.models import build_model

    torch.manual_seed(0)
    model = build_model(name, 9, img_size=64).eval().double()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
        torch.nn.init.uniform_(bn.bias, -0.2, 0.2)
    x = torch.rand(2, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        after = fold_batch_norm(model)(x)
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert left < len(bns)  # something was folded ...
    decoder_bns = [m for m in model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not decoder_bns  # ... including every decoder unit
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)


def test_scores_are_resized_logits_at_the_slice_size(ckpt):
    pred = _predictor(ckpt)
    ph = small_phantom()
    slab = np.ascontiguousarray(ph.image[:, :, :3].transpose(2, 1, 0))  # (B, H, W), non-square
    s, is_prob = pred.scores(slab)
    assert not is_prob and s.shape == (3, 9, slab.shape[1], slab.shape[2]) and s.dtype == torch.float32
    # logits, not one-hot labels: many distinct values per class map
    assert len(torch.unique(s[0, 1])) > 50
    # corners of the resized logits equal the model-grid corners (align_corners geometry)
    with torch.inference_mode():
        raw = pred.model(pred.normalize(slab)).float()
    torch.testing.assert_close(s[:, :, 0, 0], raw[:, :, 0, 0])
    torch.testing.assert_close(s[:, :, -1, -1], raw[:, :, -1, -1])


def test_batch_size_does_not_change_labels(ckpt):
    ph = small_phantom()
    image = Image(ph.image, ph.affine, (1, 1, 1), source="phantom")
    a = segment_image(image, _predictor(ckpt, batch_size=1), ckpt["classes"]).labels
    b = segment_image(image, _predictor(ckpt, batch_size=7), ckpt["classes"]).labels
    np.testing.assert_array_equal(a, b)


def test_bf16_labels_agree_with_fp32_on_most_voxels(ckpt):
    ph = small_phantom()
    image = Image(ph.image, ph.affine, (1, 1, 1), source="phantom")
    a = segment_image(image, _predictor(ckpt, "fp32"), ckpt["classes"]).labels
    b = segment_image(image, _predictor(ckpt, "bf16"), ckpt["classes"]).labels
    assert (a == b).mean() > 0.95  # random weights; the trained-model check is in the benchmark


def test_tta_probabilities_and_confidence(ckpt):
    ph = small_phantom()
    image = Image(ph.image, ph.affine, (1, 1, 1), source="phantom")
    seg = segment_image(image, _predictor(ckpt, tta=True), ckpt["classes"], probabilities=True,
                        confidence=True)
    assert seg.probabilities.shape == ph.image.shape + (9,) and seg.probabilities.dtype == np.uint8
    top = np.take_along_axis(seg.probabilities, seg.labels[..., None].astype(np.int64), -1)[..., 0]
    assert (top >= seg.probabilities.max(-1) - 1).all()  # the label is the most probable class
    present = [n for k, n in enumerate(ckpt["classes"][1:], 1) if (seg.labels == k).any()]
    assert present
    for name in present:
        c = seg.confidence[name]
        assert 1 / 9 <= c["confidence"] <= 1 and 0 <= c["tta_agreement"] <= 1


def test_keep_largest_component():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[1:4, 1:4, 1:4] = 2  # 27 voxels
    lab[7:9, 7:9, 7:9] = 2  # 8 voxels, separate
    lab[6, 6, 6] = 2  # touches the small block only at a corner: same component (26-conn.)
    lab[0, 9, 0] = 5
    out = keep_largest_component(lab.copy(), 9)
    assert (out == 2).sum() == 27 and out[7, 7, 7] == 0 and out[0, 9, 0] == 5
    lab2 = lab.copy()
    lab2[1:4, 1:4, 1:4] = 0
    out2 = keep_largest_component(lab2, 9)
    assert (out2 == 2).sum() == 9  # the corner-touching voxel stays with its block


def test_unknown_normalisation_is_a_checkpoint_error(ckpt):
    prep = dict(ckpt["preprocessing"], normalization="zscore")
    with pytest.raises(CheckpointError, match="zscore"):
        SlicePredictor(model_from_checkpoint(ckpt), prep, CPU, "fp32")


def _check(array, affine=None):
    affine = np.diag([0.8, 0.8, 2.5, 1.0]) if affine is None else affine
    image = Image(array, affine, (0.8, 0.8, 2.5), source="x")
    return check_input(image, plan_reorientation(affine, array.shape))


def test_input_check_reports_ct_and_warns_otherwise():
    ph = small_phantom()
    ok = _check(ph.image, ph.affine)
    assert ok.warnings == [] and ok.intensity["min"] <= -900 and ok.orientation == "LPS"
    assert ok.slices == 10 and "axial slices" in ok.summary()
    unit = _check(np.linspace(0, 1, 4000, dtype=np.float32).reshape(20, 20, 10))
    assert any("normalised" in w for w in unit.warnings)
    mr = _check(np.linspace(0, 1500, 4000).astype(np.int16).reshape(20, 20, 10))
    assert any("does not look like CT" in w for w in mr.warnings)
    thick = _check(ph.image, ph.affine @ np.diag([1, 1, 4, 1]))
    assert any("apart" in w for w in thick.warnings)


def test_tta_swaps_left_and_right_organs_after_a_mirror_flip():
    from transunet_app.data.phantom import CLASSES
    from transunet_app.inference.predictor import lateral_swap

    order = lateral_swap(CLASSES)
    assert CLASSES[order[CLASSES.index("left kidney")]] == "right kidney"
    assert CLASSES[order[CLASSES.index("right kidney")]] == "left kidney"
    assert all(order[i] == i for i, n in enumerate(CLASSES) if "kidney" not in n)
