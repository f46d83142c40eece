"""Figures: reorientation to RAS, slice choice, and that PNGs are produced."""
from __future__ import annotations

import numpy as np

from transunet_app.report.colors import ORGAN_COLORS, organ_color
from transunet_app.report.figures import (
    _axial,
    box_plot_png,
    choose_axial_slices,
    choose_coronal_slice,
    overlay_pngs,
    to_ras,
)

from .conftest import AFFINE, make_phantom

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_to_ras_undoes_flips_and_permutations():
    ct, lab = make_phantom()
    ras, sp, aff = to_ras(lab, AFFINE)
    assert np.array_equal(ras, lab) and np.allclose(sp, [4, 4, 5])
    # the same volume stored as (z, y, x) with x and y reversed (LPS-like)
    stored = np.ascontiguousarray(lab[::-1, ::-1, :].transpose(2, 1, 0))
    A = np.zeros((4, 4))
    A[3, 3] = 1
    A[:3, 0] = [0, 0, 5.0]   # axis 0 = z
    A[:3, 1] = [0, -4.0, 0]  # axis 1 = y reversed
    A[:3, 2] = [-4.0, 0, 0]  # axis 2 = x reversed
    A[:3, 3] = AFFINE[:3, 3] + [4.0 * (lab.shape[0] - 1), 4.0 * (lab.shape[1] - 1), 0]
    ras2, sp2, aff2 = to_ras(stored, A)
    assert np.array_equal(ras2, lab)
    assert np.allclose(sp2, [4, 4, 5]) and np.allclose(aff2, AFFINE)


def test_axial_display_is_radiological():
    vol = np.zeros((5, 4, 1))
    vol[4, 3, 0] = 1  # most right (x max) and most anterior (y max)
    shown = _axial(vol, 0)
    # patient's right appears on the image's left, anterior at the top
    assert shown[0, 0] == 1 and shown.sum() == 1


def test_slice_choice_covers_every_organ():
    _, lab = make_phantom()
    zs = choose_axial_slices(lab, range(1, 9), n=4)
    assert 1 <= len(zs) <= 4 and zs == sorted(zs, reverse=True)
    for organ in range(1, 9):
        assert any((lab[:, :, z] == organ).any() for z in zs), organ
    assert choose_axial_slices(np.zeros((3, 3, 3), np.uint8), [1]) == []
    y = choose_coronal_slice(lab)
    assert (lab[:, y, :] > 0).sum() == (lab > 0).sum(axis=(0, 2)).max()


def test_overlay_and_box_plot_pngs():
    ct, lab = make_phantom()
    organs = [(i, n, organ_color(n, i)) for i, n in enumerate(ORGAN_COLORS, start=1)]
    figs = overlay_pngs(ct.astype(np.float32), lab, (4, 4, 5), AFFINE, organs, reference_ras=lab)
    assert figs["axial"].startswith(PNG_MAGIC) and figs["coronal"].startswith(PNG_MAGIC)
    png = box_plot_png({"liver": [0.9, 0.95, float("nan")], "spleen": []},
                       {"liver": "#CC79A7"}, "Dice", "t", ylim=(0, 1))
    assert png.startswith(PNG_MAGIC)


def test_colours_fixed_and_distinct():
    assert organ_color("Liver") == organ_color("liver") == ORGAN_COLORS["liver"]
    assert len(set(ORGAN_COLORS.values())) == len(ORGAN_COLORS)
    assert organ_color("tumour", 11) == organ_color("tumour", 11)
