"""The canonical SPL frame: every storage orientation maps to the same array, exactly."""
import itertools

import numpy as np
import pytest

from transunet_app.data import geometry
from transunet_app.data.geometry import CANONICAL_ORIENTATION, from_canonical, to_canonical
from transunet_app.data.io import read_image
from transunet_app.data.phantom import make_phantom

ORIENTATIONS = ["RAS", "LPS", "LAS", "PSL", "SRA", "IPR", "ALI"]


def _world_of(affine, index):
    return (affine @ np.array([*index, 1.0]))[:3]


@pytest.fixture(scope="module")
def phantoms():
    return {code: make_phantom(11, matrix=40, slices=10, orientation=code) for code in ORIENTATIONS}


def test_every_orientation_maps_to_the_same_canonical_array(phantoms):
    ref_img, ref_reo = to_canonical(phantoms["RAS"].image, phantoms["RAS"].affine)
    ref_lab, _ = to_canonical(phantoms["RAS"].labels, phantoms["RAS"].affine)
    assert geometry.orientation_code(ref_reo.canonical_affine) == CANONICAL_ORIENTATION == "SPL"
    for code, ph in phantoms.items():
        assert geometry.orientation_code(ph.affine) == code
        img, reo = to_canonical(ph.image, ph.affine)
        lab, _ = to_canonical(ph.labels, ph.affine)
        assert np.array_equal(img, ref_img), code
        assert np.array_equal(lab, ref_lab), code
        np.testing.assert_allclose(reo.canonical_affine, ref_reo.canonical_affine, atol=1e-9)
        assert reo.canonical_spacing == pytest.approx(ref_reo.canonical_spacing)
        assert reo.original_orientation == code
        # the slice axis is the original axis with the slice spacing
        assert ph.image.shape[reo.axial_axis] == 10
        # exact inverse
        assert np.array_equal(from_canonical(img, reo), ph.image)
        assert np.array_equal(from_canonical(lab, reo), ph.labels)


def test_canonical_axes_point_superior_posterior_left():
    affine = np.array([[0, 0, -0.8, 10], [0.7, 0, 0, -5], [0, -2.5, 0, 30], [0, 0, 0, 1.0]])  # (A, I, L)
    arr = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    canon, reo = to_canonical(arr, affine)
    A = reo.canonical_affine
    step_d = _world_of(A, (1, 0, 0)) - _world_of(A, (0, 0, 0))
    step_h = _world_of(A, (0, 1, 0)) - _world_of(A, (0, 0, 0))
    step_w = _world_of(A, (0, 0, 1)) - _world_of(A, (0, 0, 0))
    assert step_d[2] > 0 and step_h[1] < 0 and step_w[0] < 0  # S, P, L in RAS world
    assert reo.canonical_spacing == pytest.approx((2.5, 0.7, 0.8))
    assert canon.shape == (5, 4, 6)
    # each canonical voxel sits where its original voxel sat
    for d, h, w in itertools.product(range(5), range(4), range(6)):
        i, j, k = np.rint(np.linalg.solve(affine, np.append(_world_of(A, (d, h, w)), 1.0))[:3]).astype(int)
        assert canon[d, h, w] == arr[i, j, k]


def test_channels_ride_along_and_shapes_are_checked():
    arr = np.random.default_rng(0).random((3, 4, 5, 2))
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    canon, reo = to_canonical(arr, affine)
    assert canon.shape == (5, 4, 3, 2)
    assert np.array_equal(from_canonical(canon, reo), arr)
    with pytest.raises(ValueError):
        from_canonical(canon[:-1], reo)


def test_oblique_scan_reports_angle():
    angle = np.radians(10)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.8, 3.0])
    _, reo = to_canonical(np.zeros((4, 4, 4)), affine)
    assert reo.obliquity_deg == pytest.approx(10, abs=1e-6)
    assert reo.as_dict()["canonical_orientation"] == "SPL"


def test_same_grid():
    a = np.diag([0.8, 0.8, 3.0, 1.0])
    assert geometry.same_grid(a, (4, 4, 4), a + 1e-5, (4, 4, 4))[0]
    ok, why = geometry.same_grid(a, (4, 4, 4), a, (4, 4, 5))
    assert not ok and "shapes differ" in why
    flipped = np.diag([-0.8, 0.8, 3.0, 1.0])
    ok, why = geometry.same_grid(a, (4, 4, 4), flipped, (4, 4, 4))
    assert not ok and "affines differ" in why


def test_real_ct_canonical_anatomy(shared_ct):
    ct, lab = shared_ct
    image, labels = read_image(ct), read_image(lab)
    canon, reo = to_canonical(image.array, image.affine)
    canon_lab, _ = to_canonical(labels.array, labels.affine)
    assert canon.shape == (30, 101, 122) and reo.axial_axis == 2
    assert np.array_equal(from_canonical(canon, reo), image.array)
    centre = {k: np.argwhere(canon_lab == k).mean(axis=0) for k in range(1, 9)}
    W = canon.shape[2]
    assert centre[5][2] < W / 2 < centre[7][2]  # liver on the patient's right (image left), spleen left
    assert centre[4][2] < centre[3][2]  # right kidney right of the left kidney
    spine = np.argwhere(canon > 300)
    spine = spine[np.abs(spine[:, 2] - W / 2) < 15].mean(axis=0)  # midline bone: the vertebrae
    assert centre[1][1] < spine[1]  # aorta anterior to the spine (smaller row = anterior)
    assert centre[8][1] < centre[3][1] and centre[2][1] < centre[4][1]  # stomach, gallbladder anterior of kidneys
