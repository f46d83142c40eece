"""Surface metrics: exact agreement with medpy (definition) and MONAI (cross-check)."""
from __future__ import annotations

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary

from transunet_app.metrics.surface import (
    assd,
    hausdorff_distance,
    hd95,
    hd95_max_directed,
    mask_surfaces,
    normalized_surface_dice,
    surface_distances,
)

SPACINGS = [None, (1.0, 1.0, 1.0), (2.5, 0.7, 0.9), (0.8, 0.8, 5.0)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spacing", SPACINGS)
def test_hd95_and_assd_equal_medpy_on_random_blobs(blob, seed, spacing):
    pred = blob((18, 26, 22), seed)
    gt = blob((18, 26, 22), seed + 100)
    assert pred.any() and gt.any()
    expected = medpy_binary.hd95(pred, gt, voxelspacing=spacing)
    assert hd95(pred, gt, spacing) == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert assd(pred, gt, spacing) == pytest.approx(
        medpy_binary.assd(pred, gt, voxelspacing=spacing), rel=1e-6)
    assert hausdorff_distance(pred, gt, spacing) == pytest.approx(
        medpy_binary.hd(pred, gt, voxelspacing=spacing), rel=1e-6)


def test_masks_touching_the_array_border_have_surface_there_like_medpy(blob):
    # threshold low -> blobs fill most of the array and touch every face
    pred = blob((12, 14, 10), 7, threshold=0.45)
    gt = blob((12, 14, 10), 8, threshold=0.45)
    assert pred[0].any() and gt[:, :, -1].any()
    sp = (3.0, 0.75, 1.5)
    assert hd95(pred, gt, sp) == pytest.approx(medpy_binary.hd95(pred, gt, sp), rel=1e-6)


def test_2d_masks_and_integer_dtype_match_medpy(blob):
    pred = blob((40, 50), 1).astype(np.uint8) * 7  # any nonzero value is foreground
    gt = blob((40, 50), 2).astype(np.int16)
    sp = (0.6, 1.7)
    assert hd95(pred, gt, sp) == pytest.approx(medpy_binary.hd95(pred, gt, sp), rel=1e-6)


def test_kdtree_and_edt_methods_give_identical_distances(blob):
    pred, gt = blob((16, 20, 18), 3), blob((16, 20, 18), 4)
    sp = (2.0, 0.9, 1.1)
    a = surface_distances(pred, gt, sp, method="kdtree")
    b = surface_distances(pred, gt, sp, method="edt")
    np.testing.assert_allclose(a.pred_to_gt, b.pred_to_gt, rtol=1e-12)
    np.testing.assert_allclose(a.gt_to_pred, b.gt_to_pred, rtol=1e-12)


def test_hand_computed_two_cubes():
    # 3x3x3 cube vs the same cube moved by 2 voxels along axis 0 (spacing 2 mm there).
    pred = np.zeros((9, 7, 7), bool)
    gt = np.zeros_like(pred)
    pred[2:5, 2:5, 2:5] = True
    gt[4:7, 2:5, 2:5] = True
    # Surface = the whole 3x3x3 cube except its centre voxel (26 voxels each). Each cube's
    # layer 4 is shared (distance 0, 9 voxels per direction); the other 17 surface voxels per
    # direction lie 1 or 2 voxels (2 or 4 mm) from the nearest voxel of the other surface:
    # layers 3 (8 voxels, ring) -> 2 mm, layer 2 (9 voxels) -> 4 mm.
    d = surface_distances(pred, gt, (2.0, 1.0, 1.0))
    assert sorted(d.pred_to_gt.tolist()) == [0.0] * 9 + [2.0] * 8 + [4.0] * 9
    assert sorted(d.gt_to_pred.tolist()) == [0.0] * 9 + [2.0] * 8 + [4.0] * 9
    assert hausdorff_distance(pred, gt, (2.0, 1.0, 1.0)) == 4.0
    # 52 values, 18 of them 4 mm: the 95th percentile is 4 mm; the mean is (16*2+18*4)/52
    assert hd95(pred, gt, (2.0, 1.0, 1.0)) == 4.0
    assert assd(pred, gt, (2.0, 1.0, 1.0)) == pytest.approx((16 * 2 + 18 * 4) / 52)


def test_identical_masks_have_zero_distance_and_full_nsd(blob):
    m = blob((10, 12, 14), 5)
    assert hd95(m, m, (1, 2, 3)) == 0.0
    assert assd(m, m) == 0.0
    assert normalized_surface_dice(m, m, 0.0, (1, 2, 3)) == 1.0


def test_empty_mask_rules():
    empty = np.zeros((5, 5, 5), bool)
    full = empty.copy()
    full[1:4, 1:4, 1:4] = True
    for a, b in ((empty, full), (full, empty), (empty, empty)):
        assert np.isnan(hd95(a, b))
        assert np.isnan(assd(a, b))
        assert np.isnan(hausdorff_distance(a, b))
        d = surface_distances(a, b)
        assert d.pred_to_gt.size == 0 and d.gt_to_pred.size == 0
    assert np.isnan(normalized_surface_dice(empty, empty, 1.0))
    assert normalized_surface_dice(full, empty, 1.0) == 0.0
    assert normalized_surface_dice(empty, full, 1.0) == 0.0
    ps, gs, box = mask_surfaces(empty, empty)
    assert box is None


def test_bad_arguments_raise_value_error():
    a = np.ones((3, 3, 3), bool)
    with pytest.raises(ValueError, match="shape"):
        hd95(a, np.ones((3, 3, 4), bool))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1.0, 2.0))
    with pytest.raises(ValueError, match="positive"):
        hd95(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(a, a, -1.0)
    with pytest.raises(ValueError, match="method"):
        surface_distances(a, a, method="fast")


# --- MONAI cross-checks (MONAI's HD95 is the max of the two directed percentiles) -------------

def _monai_inputs(pred, gt):
    import torch

    return torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float()


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9)])
def test_cross_check_with_monai(blob, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    pred, gt = blob((16, 22, 20), 11), blob((16, 22, 20), 12)
    p, g = _monai_inputs(pred, gt)
    kw = dict(include_background=True, spacing=list(spacing))
    hd_max = float(compute_hausdorff_distance(p, g, **kw)[0, 0])
    hd95_monai = float(compute_hausdorff_distance(p, g, percentile=95, **kw)[0, 0])
    assd_monai = float(compute_average_surface_distance(p, g, symmetric=True, **kw)[0, 0])
    nsd_monai = float(compute_surface_dice(p, g, class_thresholds=[2.0], **kw)[0, 0])
    # MONAI computes in float32
    assert hausdorff_distance(pred, gt, spacing) == pytest.approx(hd_max, rel=1e-5)
    assert hd95_max_directed(pred, gt, spacing) == pytest.approx(hd95_monai, rel=1e-5)
    assert assd(pred, gt, spacing) == pytest.approx(assd_monai, rel=1e-5)
    assert normalized_surface_dice(pred, gt, 2.0, spacing) == pytest.approx(nsd_monai, rel=1e-5)


# --- real organ masks ------------------------------------------------------------------------

@pytest.mark.parametrize("organ", [1, 3, 5, 6, 7])
def test_real_organ_masks_match_medpy(real_labels, organ):
    from scipy import ndimage as ndi

    labels, _aff, spacing = real_labels
    gt = labels == organ
    # a realistic imperfect prediction: shifted one voxel, eroded in-plane, plus a speck
    pred = np.roll(gt, 1, axis=1) & ndi.binary_erosion(gt | np.roll(gt, 1, axis=1),
                                                       structure=np.ones((3, 3, 1)))
    pred[5, 5, 5] = True
    for sp in (spacing, (0.78, 0.78, 2.5)):
        expected = medpy_binary.hd95(pred, gt, voxelspacing=sp)
        assert hd95(pred, gt, sp) == pytest.approx(expected, rel=1e-6)


def test_memory_layouts_give_the_same_result(blob):
    # nibabel returns Fortran-ordered arrays; slicing gives strided views
    pred, gt = blob((14, 18, 16), 21), blob((14, 18, 16), 22)
    sp = (1.5, 0.8, 2.0)
    expected = medpy_binary.hd95(pred, gt, voxelspacing=sp)
    big_p = np.zeros((28, 18, 16), bool)
    big_p[::2] = pred
    for p, g in ((np.asfortranarray(pred), np.asfortranarray(gt)), (big_p[::2], gt),
                 (np.asfortranarray(pred), gt)):
        assert hd95(p, g, sp) == pytest.approx(expected, rel=1e-6)
