"""Figures for the reports, as PNG bytes: CT overlays and per-organ box plots.

Matplotlib is imported lazily and used through its object API with the Agg canvas (no pyplot,
no global backend switch), so importing this module is instant and thread-safe.

Display conventions (what a radiologist expects):

* arrays are first reoriented to RAS (nibabel), then shown in **radiological convention**: the
  patient's right on the left of the image, anterior at the top of axial slices, superior at
  the top of coronal slices; the sides are labelled (R/L, A/P, S/I) on every image;
* pixels are drawn at their physical size (mm extent), so anisotropic voxels are not distorted;
* soft-tissue window: width 400 HU, level 40 HU.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np

WINDOW_WIDTH_HU = 400.0
WINDOW_LEVEL_HU = 40.0


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorient a 3D array to RAS axis order (nearest canonical orientation, no resampling).

    Args:
        array: (I, J, K) volume.
        affine: (4, 4) voxel -> RAS+ mm.

    Returns:
        ``(array_ras, spacing_ras, affine_ras)``: axis 0 grows towards the patient's right,
        1 anterior, 2 superior; spacing in mm per RAS axis; the matching affine.
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    ornt = io_orientation(affine)
    arr = apply_orientation(np.asarray(array), ornt)
    zooms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    spacing = np.empty(3)
    for src, (dst, _flip) in enumerate(ornt):
        spacing[int(dst)] = zooms[src]
    aff = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, np.asarray(array).shape)
    return arr, spacing, aff


def choose_axial_slices(labels_ras: np.ndarray, label_ids: Sequence[int], n: int = 4) -> list[int]:
    """Up to ``n`` axial slice indices (RAS z) that together show every organ well.

    Greedy cover: an organ is "shown" on a slice holding at least 40% of its largest axial
    cross-section; each pick is the slice showing the most organs not yet shown (ties: more
    labelled area). Remaining picks go to well-filled slices far from those already chosen.
    Returned sorted from superior to inferior, like scrolling down in a viewer.
    """
    ids = [int(i) for i in label_ids]
    if not ids:
        return []
    # area[o, z]: voxels of organ o on slice z
    area = np.stack([(labels_ras == i).sum(axis=(0, 1)) for i in ids])
    best = area.max(axis=1, keepdims=True)
    shows = (area >= 0.4 * np.maximum(best, 1)) & (area > 0)
    total = area.sum(axis=0)
    chosen: list[int] = []
    covered = np.zeros(len(ids), dtype=bool)
    while len(chosen) < n and (shows & ~covered[:, None]).any():
        gain = (shows & ~covered[:, None]).sum(axis=0)
        score = gain * (total.max() + 1) + total
        score[chosen] = -1
        z = int(np.argmax(score))
        chosen.append(z)
        covered |= shows[:, z]
    # Fill up to n with well-filled slices (>= 25% of the fullest) far from those chosen, so
    # the set spans the organs from top to bottom instead of repeating one level.
    candidates = np.array([], dtype=int)
    if total.any():
        fg = np.flatnonzero(total)
        lo, hi = np.percentile(fg, [10, 90])  # keep away from the thin first/last slices
        candidates = np.flatnonzero((total >= 0.25 * total.max()) & (np.arange(total.size) >= lo)
                                    & (np.arange(total.size) <= hi))
    while len(chosen) < n and candidates.size > len(set(chosen) & set(candidates.tolist())):
        if chosen:
            dist = np.min(np.abs(candidates[:, None] - np.asarray(chosen)[None, :]), axis=1)
        else:
            dist = total[candidates].astype(float)
        z = int(candidates[int(np.argmax(dist))])
        if z in chosen:
            break
        chosen.append(z)
    return sorted(chosen, reverse=True)


def choose_coronal_slice(labels_ras: np.ndarray) -> int:
    """The coronal (RAS y) index with the largest labelled area (the image centre if none)."""
    area = (labels_ras > 0).sum(axis=(0, 2))
    return int(np.argmax(area)) if area.any() else labels_ras.shape[1] // 2


def _axial(vol: np.ndarray, z: int) -> np.ndarray:
    # rows: anterior -> posterior; columns: patient's right -> left (radiological)
    return vol[:, :, z].T[::-1, ::-1]


def _coronal(vol: np.ndarray, y: int) -> np.ndarray:
    # rows: superior -> inferior; columns: patient's right -> left
    return vol[:, y, :].T[::-1, ::-1]


def _hex_to_rgb(color: str) -> tuple[float, float, float]:
    c = color.lstrip("#")
    return tuple(int(c[i:i + 2], 16) / 255.0 for i in (0, 2, 4))


def _draw_panel(ax, img2d, lab2d, ref2d, organs, extent, title, corners):
    lo = WINDOW_LEVEL_HU - WINDOW_WIDTH_HU / 2
    ax.imshow(img2d, cmap="gray", vmin=lo, vmax=lo + WINDOW_WIDTH_HU, extent=extent,
              interpolation="bilinear")
    fill = np.zeros(img2d.shape + (4,), dtype=np.float32)
    for lab, _name, color in organs:
        m = lab2d == lab
        if m.any():
            fill[m] = (*_hex_to_rgb(color), 0.28)
    ax.imshow(fill, extent=extent, interpolation="nearest")
    h, w = img2d.shape
    # contour coordinates at pixel centres, in mm
    xs = np.linspace(extent[0], extent[1], w, endpoint=False) + (extent[1] - extent[0]) / w / 2
    ys = np.linspace(extent[3], extent[2], h, endpoint=False) + (extent[2] - extent[3]) / h / 2
    for lab, _name, color in organs:
        for plane, style in ((lab2d, "solid"), (ref2d, "dashed")):
            if plane is None:
                continue
            m = (plane == lab).astype(np.float32)
            if m.any() and m.min() == 0:
                ax.contour(xs, ys, m, levels=[0.5], colors=[color], linewidths=1.3,
                           linestyles=style)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    style = dict(color="white", fontsize=10, fontweight="bold", ha="center", va="center",
                 bbox=dict(boxstyle="round,pad=0.15", fc="black", ec="none", alpha=0.6))
    top, bottom, left, right = corners
    ax.text(0.5, 0.96, top, transform=ax.transAxes, **style)
    ax.text(0.5, 0.04, bottom, transform=ax.transAxes, **style)
    ax.text(0.04, 0.5, left, transform=ax.transAxes, **style)
    ax.text(0.96, 0.5, right, transform=ax.transAxes, **style)


def _png(fig, dpi: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    return buf.getvalue()


def _legend(fig, organs, with_reference: bool):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c, edgecolor=c, label=n) for _l, n, c in organs]
    if with_reference:
        handles += [Line2D([], [], color="black", lw=1.3, label="automated (solid)"),
                    Line2D([], [], color="black", lw=1.3, ls="--", label="reference (dashed)")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, -0.01))


def overlay_pngs(image_ras: np.ndarray, labels_ras: np.ndarray, spacing_ras, affine_ras,
                 organs: Sequence[tuple[int, str, str]], reference_ras: np.ndarray | None = None,
                 n_axial: int = 4, dpi: int = 110) -> dict:
    """Axial and coronal overlays of the organ contours on the CT.

    Args:
        image_ras: (X, Y, Z) CT in HU, RAS order (see :func:`to_ras`).
        labels_ras: (X, Y, Z) label map, same grid.
        spacing_ras: (3,) mm.
        affine_ras: (4, 4) for the slice positions printed in the titles.
        organs: ``(label, name, colour)`` for the organs to draw (legend in this order).
        reference_ras: optional reference label map on the same grid (dashed contours).
        n_axial: number of axial slices (at most).
        dpi: resolution of the PNGs.

    Returns:
        ``{"axial": png bytes, "coronal": png bytes, "axial_slices": [k...],
        "coronal_slice": j}``.
    """
    from matplotlib.figure import Figure

    sx, sy, sz = (float(v) for v in spacing_ras)
    X, Y, Z = labels_ras.shape
    present = [o for o in organs if (labels_ras == o[0]).any()
               or (reference_ras is not None and (reference_ras == o[0]).any())]
    zs = choose_axial_slices(labels_ras, [o[0] for o in present], n_axial)
    if not zs:
        zs = [Z // 2]
    cols = 2 if len(zs) > 1 else 1
    rows = int(np.ceil(len(zs) / cols))
    ext_ax = [0.0, X * sx, Y * sy, 0.0]
    panel_w = 4.2
    fig = Figure(figsize=(panel_w * cols, panel_w * rows * (Y * sy) / (X * sx) + 0.7))
    for k, z in enumerate(zs):
        ax = fig.add_subplot(rows, cols, k + 1)
        z_mm = float((affine_ras @ np.array([0, 0, z, 1.0]))[2])
        _draw_panel(ax, _axial(image_ras, z), _axial(labels_ras, z),
                    None if reference_ras is None else _axial(reference_ras, z), present, ext_ax,
                    f"Axial, slice {z + 1} of {Z} (z = {z_mm:+.0f} mm)", ("A", "P", "R", "L"))
    _legend(fig, present, reference_ras is not None)
    fig.subplots_adjust(wspace=0.04, hspace=0.12)
    axial_png = _png(fig, dpi)

    y = choose_coronal_slice(labels_ras if labels_ras.any() or reference_ras is None
                             else reference_ras)
    ext_co = [0.0, X * sx, Z * sz, 0.0]
    fig = Figure(figsize=(7.0, min(7.0 * (Z * sz) / (X * sx), 9.0) + 0.7))
    ax = fig.add_subplot(1, 1, 1)
    y_mm = float((affine_ras @ np.array([0, y, 0, 1.0]))[1])
    _draw_panel(ax, _coronal(image_ras, y), _coronal(labels_ras, y),
                None if reference_ras is None else _coronal(reference_ras, y), present, ext_co,
                f"Coronal, slice {y + 1} of {Y} (y = {y_mm:+.0f} mm)", ("S", "I", "R", "L"))
    _legend(fig, present, reference_ras is not None)
    coronal_png = _png(fig, dpi)
    return {"axial": axial_png, "coronal": coronal_png, "axial_slices": zs, "coronal_slice": y}


def _sagittal(vol: np.ndarray, x: int) -> np.ndarray:
    # rows: superior -> inferior; columns: anterior -> posterior (viewer from the patient's left)
    return vol[x, :, :].T[::-1, ::-1]


def three_plane_png(image_ras: np.ndarray, labels_ras: np.ndarray, spacing_ras, affine_ras,
                    organs: Sequence[tuple[int, str, str]], dpi: int = 110) -> bytes:
    """One axial, one coronal and one sagittal overlay side by side, with the organ legend.

    Same panels, window, colours and legend as :func:`overlay_pngs` (``segment --preview``).
    The axial slice is the one showing most organs (:func:`choose_axial_slices`), the coronal
    and sagittal ones cut through the largest labelled area.

    Args:
        image_ras, labels_ras: (X, Y, Z) CT in HU and labels in RAS order (:func:`to_ras`).
        spacing_ras: (3,) mm; affine_ras: (4, 4) for the positions in the titles.
        organs: ``(label, name, colour)`` to draw.
    """
    from matplotlib.figure import Figure

    sx, sy, sz = (float(v) for v in spacing_ras)
    X, Y, Z = labels_ras.shape
    present = [o for o in organs if (labels_ras == o[0]).any()]
    zs = choose_axial_slices(labels_ras, [o[0] for o in present], 1) or [Z // 2]
    z = zs[0]
    y = choose_coronal_slice(labels_ras)
    area = (labels_ras > 0).sum(axis=(1, 2))
    x = int(np.argmax(area)) if area.any() else X // 2
    widths = [X * sx, X * sx, Y * sy]
    heights = [Y * sy, Z * sz, Z * sz]
    scale = 3.6 / max(heights)
    fig = Figure(figsize=(sum(w * scale for w in widths) + 0.6, 3.6 + 1.0))
    grid = fig.add_gridspec(1, 3, width_ratios=widths)
    pos = affine_ras @ np.array([x, y, z, 1.0])
    panels = [
        (_axial, z, [0.0, X * sx, Y * sy, 0.0], f"Axial (z = {pos[2]:+.0f} mm)", ("A", "P", "R", "L")),
        (_coronal, y, [0.0, X * sx, Z * sz, 0.0], f"Coronal (y = {pos[1]:+.0f} mm)", ("S", "I", "R", "L")),
        (_sagittal, x, [0.0, Y * sy, Z * sz, 0.0], f"Sagittal (x = {pos[0]:+.0f} mm)", ("S", "I", "A", "P")),
    ]
    for col, (cut, index, extent, title, corners) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        _draw_panel(ax, cut(image_ras, index), cut(labels_ras, index), None, present, extent,
                    title, corners)
    _legend(fig, present, False)
    fig.subplots_adjust(wspace=0.05)
    return _png(fig, dpi)


def box_plot_png(values: dict[str, list[float]], colors: dict[str, str], ylabel: str,
                 title: str, ylim: tuple[float, float] | None = None, dpi: int = 110) -> bytes:
    """One box per organ (cases as dots), organs in the given order; NaN values are left out.

    Args:
        values: organ -> per-case values (NaN = undefined for that case, not drawn).
        colors: organ -> hex colour.
        ylabel: axis label with unit.
        title: figure title (says how many cases and what was left out).
        ylim: optional fixed y range (e.g. (0, 1) for Dice).
    """
    from matplotlib.figure import Figure

    names = list(values)
    data = [np.asarray([v for v in values[n] if v is not None and np.isfinite(v)], dtype=float)
            for n in names]
    fig = Figure(figsize=(max(4.0, 0.85 * len(names) + 1.2), 3.3))
    ax = fig.add_subplot(1, 1, 1)
    pos = np.arange(1, len(names) + 1)
    non_empty = [i for i, d in enumerate(data) if d.size]
    if non_empty:
        bp = ax.boxplot([data[i] for i in non_empty], positions=pos[non_empty], widths=0.6,
                        patch_artist=True, showfliers=False, medianprops=dict(color="black"))
        for patch, i in zip(bp["boxes"], non_empty):
            patch.set_facecolor(colors.get(names[i], "#999999"))
            patch.set_alpha(0.55)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data):
        if d.size:
            ax.scatter(pos[i] + rng.uniform(-0.15, 0.15, d.size), d, s=10, color="black",
                       alpha=0.7, zorder=3, linewidths=0)
        else:
            ax.text(pos[i], 0.5, "no data", transform=ax.get_xaxis_transform(), ha="center",
                    fontsize=7, color="#666666", rotation=90)
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=9)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig, dpi)
