"""Surface-distance metrics on binary masks: HD95, Hausdorff, ASSD, normalised surface Dice.

Definitions follow ``medpy.metric.binary`` exactly, so numbers compare with the literature:

* **surface** of a mask ``M``: ``M XOR erosion(M)`` with the connectivity-1 structuring element
  (6-neighbourhood in 3D, 4 in 2D) and everything outside the array counted as background, so a
  mask touching the array border has a surface there;
* **directed surface distances** ``d(A -> B)``: for each surface voxel of ``A`` the Euclidean
  distance (in the units of ``spacing``) to the nearest surface voxel of ``B``;
* **HD95**: the 95th percentile (numpy's linear interpolation) of the *concatenation* of
  ``d(pred -> gt)`` and ``d(gt -> pred)``. MONAI instead takes the maximum of the two directed
  95th percentiles (:func:`hd95_max_directed` reproduces that for cross-checks);
* **ASSD**: the mean of that same concatenation;
* **NSD** (normalised surface Dice at tolerance ``tau``): the fraction of surface voxels of both
  masks lying within ``tau`` of the other surface, counted over voxels (MONAI's
  ``compute_surface_dice`` with ``use_subvoxels=False``).

Why it is fast (see ``tools/bench/bench_metrics.py``): everything is computed on the union bounding
box of both masks padded by one background voxel (the surface and all nearest neighbours lie
inside it, so the result is identical), the erosion is six shifted ANDs instead of
``scipy.ndimage.binary_erosion``, and distances are nearest-neighbour queries of surface voxels
in a KD-tree built on the other surface's voxels; surface voxels shared by both masks have
distance 0 and are not queried. A dense distance transform of the crop
(``method="edt"``, medpy's way) gives the same numbers and is kept for comparison.

Empty-mask rules (the pure functions never raise on empty masks; the evaluation layer decides
what an empty case means for a convention, see :mod:`transunet_app.metrics.evaluate`):

* either mask empty (or both): :func:`surface_distances` returns empty arrays for the
  direction(s) that have no surface to measure from or to;
  :func:`hd95`, :func:`hausdorff_distance`, :func:`assd` return ``nan`` (a distance to an
  empty set is undefined; medpy raises ``RuntimeError`` here);
* :func:`normalized_surface_dice`: both empty -> ``nan`` (nothing to agree on); exactly one
  empty -> ``0.0`` (no surface voxel of the present mask is near a surface of the empty one).

Spacing: a sequence with one physical size (mm) per array axis, a single number used for every
axis, or ``None`` for voxel units (spacing 1).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

_METHODS = ("kdtree", "edt")


class SurfaceDistances(NamedTuple):
    """Directed surface distances (units of the spacing; mm when spacing is in mm).

    Attributes:
        pred_to_gt: (N_pred_surface,) float64, for each predicted surface voxel the distance to
            the nearest reference surface voxel. Empty when either mask is empty.
        gt_to_pred: (N_gt_surface,) float64, the other direction. Empty when either mask is empty.
    """

    pred_to_gt: np.ndarray
    gt_to_pred: np.ndarray

    @property
    def symmetric(self) -> np.ndarray:
        """Concatenation of both directions, medpy's ``hstack((hd1, hd2))``."""
        return np.concatenate((self.pred_to_gt, self.gt_to_pred))


def as_bool_mask(mask) -> np.ndarray:
    """Any array-like -> bool ndarray (nonzero = foreground), without a copy when already bool."""
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return arr
    return arr != 0


def normalize_spacing(spacing, ndim: int) -> np.ndarray:
    """Spacing as a (ndim,) float64 array; ``None`` -> ones (voxel units).

    Raises:
        ValueError: wrong length, or a non-positive / non-finite value.
    """
    if spacing is None:
        return np.ones(ndim, dtype=np.float64)
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size == 1:
        sp = np.repeat(sp, ndim)
    if sp.size != ndim:
        raise ValueError(f"spacing has {sp.size} values but the masks have {ndim} axes")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be positive and finite, got {sp.tolist()}")
    return sp


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of a bool mask as slices, or ``None`` when it is empty.

    Reduces over contiguous memory first (one pass over the first axis, then only the slab that
    holds foreground), which is several times faster than ``np.any(mask, axis=(1, 2))`` style
    projections on a 512x512xN volume. Fortran-ordered arrays (what nibabel returns) are
    handled through their transpose, never copied.
    """
    if mask.ndim == 0:
        return () if bool(mask) else None
    if not mask.flags.c_contiguous:
        if mask.flags.f_contiguous:  # NIfTI arrays from nibabel: the transpose is C-ordered
            box = bounding_box(mask.T)
            return None if box is None else tuple(reversed(box))
        nz = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
              for ax in range(mask.ndim)]
        if nz[0].size == 0:
            return None
        return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in nz)
    flat = mask.reshape(mask.shape[0], -1)
    rows = np.flatnonzero(flat.any(axis=1))
    if rows.size == 0:
        return None
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if mask.ndim == 1:
        return (slice(lo, hi),)
    rest = bounding_box(mask[lo:hi].any(axis=0))
    assert rest is not None  # the slab holds foreground by construction
    return (slice(lo, hi),) + rest


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None):
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _padded_crop(mask: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """The box of ``mask`` with one voxel of background around it (scipy's border_value=0)."""
    out = np.zeros(tuple(s.stop - s.start + 2 for s in box), dtype=bool)
    out[tuple(slice(1, -1) for _ in box)] = mask[box]
    return out


def _surface_of_padded(padded: np.ndarray) -> np.ndarray:
    """Surface (mask XOR connectivity-1 erosion) of the interior of a zero-padded mask.

    Returns a bool array with the shape of the interior (padding removed). Equivalent to
    ``m ^ scipy.ndimage.binary_erosion(m)`` with the default structure and border_value 0.
    """
    nd = padded.ndim
    inner = tuple(slice(1, -1) for _ in range(nd))
    interior = padded[inner]
    eroded = interior.copy()
    for axis in range(nd):
        for lo, hi in ((0, -2), (2, None)):
            sl = list(inner)
            sl[axis] = slice(lo, hi)
            eroded &= padded[tuple(sl)]
    # interior ^ eroded == interior & ~eroded since eroded is a subset of interior
    return interior ^ eroded


def mask_surfaces(pred, gt) -> tuple[np.ndarray, np.ndarray, tuple[slice, ...] | None]:
    """Surfaces of both masks inside their common bounding box.

    Args:
        pred: (...) binary mask (nonzero = foreground).
        gt: same shape.

    Returns:
        ``(pred_surface, gt_surface, box)``: two bool arrays with the shape of the union bounding
        box, and the box (slices into the full array); ``box`` is ``None`` (and the surfaces are
        0-size arrays) when both masks are empty.
    """
    p, g = as_bool_mask(pred), as_bool_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {g.shape}")
    box = _union_box(bounding_box(p), bounding_box(g))
    if box is None:
        empty = np.zeros((0,) * p.ndim, dtype=bool)
        return empty, empty, None
    return _surface_of_padded(_padded_crop(p, box)), _surface_of_padded(_padded_crop(g, box)), box


def _directed_kdtree(src: np.ndarray, shared: np.ndarray, sp: np.ndarray, dst_tree) -> np.ndarray:
    """Distances from each voxel of surface ``src`` to the nearest point of ``dst_tree``.

    Voxels in ``shared`` (on both surfaces) have distance 0 and are not queried. The query first
    runs with a small upper bound, which prunes the tree walk for the many near voxels, then
    repeats without a bound for the few that found nothing within it: exact either way.
    """
    out = np.zeros(int(np.count_nonzero(src)), dtype=np.float64)
    # np.nonzero visits voxels in the same (C) order for src and for src & ~shared, so a boolean
    # index over src's voxels places the queried distances.
    need = ~shared[src]
    if not need.any():
        return out
    pts = np.stack(np.nonzero(src & ~shared), axis=1).astype(np.float64) * sp
    dist = dst_tree.query(pts, k=1, distance_upper_bound=8.0 * float(sp.max()))[0]
    far = ~np.isfinite(dist)
    if far.any():
        dist[far] = dst_tree.query(pts[far], k=1)[0]
    out[need] = dist
    return out


def surface_distances(pred, gt, spacing=None, method: str = "kdtree") -> SurfaceDistances:
    """Directed surface distances in both directions (medpy's ``__surface_distances``).

    Args:
        pred: (...) binary mask, any dtype (nonzero = foreground), 1 to 3 (or more) axes.
        gt: reference mask, same shape.
        spacing: voxel size per axis in mm (or one number for all axes); ``None`` = voxel units.
        method: ``"kdtree"`` (default, fastest measured) or ``"edt"`` (dense distance
            transform of the cropped surface, medpy's way). Same values.

    Returns:
        :class:`SurfaceDistances`; both arrays are empty when either mask is empty.
    """
    ps, gs, _ = mask_surfaces(pred, gt)
    return distances_between_surfaces(ps, gs, normalize_spacing(spacing, np.ndim(pred)), method)


def distances_between_surfaces(ps: np.ndarray, gs: np.ndarray, sp: np.ndarray,
                               method: str = "kdtree") -> SurfaceDistances:
    """Directed distances between two precomputed surfaces (see :func:`mask_surfaces`).

    Lets a caller measure the same pair of surfaces in mm and in voxels without redoing the
    crop and erosion.

    Args:
        ps: bool surface of the prediction (any shape, same as ``gs``).
        gs: bool surface of the reference.
        sp: (ndim,) float64 spacing from :func:`normalize_spacing`.
        method: ``"kdtree"`` or ``"edt"``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    empty = np.zeros(0, dtype=np.float64)
    if ps.size == 0 or not ps.any() or not gs.any():
        return SurfaceDistances(empty, empty.copy())
    if method == "edt":
        from scipy.ndimage import distance_transform_edt

        d_to_g = distance_transform_edt(~gs, sampling=sp)[ps]
        d_to_p = distance_transform_edt(~ps, sampling=sp)[gs]
        return SurfaceDistances(d_to_g, d_to_p)

    from scipy.spatial import cKDTree

    shared = ps & gs

    def tree(surface):
        pts = np.stack(np.nonzero(surface), axis=1).astype(np.float64) * sp
        # balanced_tree=False builds much faster (sliding-midpoint) and queries as fast here.
        return cKDTree(pts, leafsize=32, balanced_tree=False, compact_nodes=False)

    d_to_g = _directed_kdtree(ps, shared, sp, tree(gs))
    d_to_p = _directed_kdtree(gs, shared, sp, tree(ps))
    return SurfaceDistances(d_to_g, d_to_p)


def hd95(pred, gt, spacing=None) -> float:
    """95th percentile Hausdorff distance, identical to ``medpy.metric.binary.hd95``.

    Args:
        pred: (...) binary mask (nonzero = foreground).
        gt: reference mask of the same shape.
        spacing: voxel size per axis in mm (or one number); ``None`` = voxel units.

    Returns:
        The 95th percentile (linear interpolation) of the concatenated directed surface
        distances, in the units of ``spacing``. ``nan`` when either mask is empty (medpy raises).
    """
    return hausdorff_distance(pred, gt, spacing, percentile=95.0)


def hausdorff_distance(pred, gt, spacing=None, percentile: float | None = None) -> float:
    """Symmetric Hausdorff distance, or a percentile of the concatenated surface distances.

    Args:
        pred: (...) binary mask.
        gt: reference mask of the same shape.
        spacing: voxel size per axis (mm) or ``None`` for voxel units.
        percentile: ``None`` for the maximum (classic Hausdorff, = medpy ``hd``), else 0..100.

    Returns:
        Distance in the units of ``spacing``; ``nan`` when either mask is empty.
    """
    d = surface_distances(pred, gt, spacing).symmetric
    if d.size == 0:
        return float("nan")
    if percentile is None:
        return float(d.max())
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {percentile}")
    return float(np.percentile(d, percentile))


def hd95_max_directed(pred, gt, spacing=None) -> float:
    """MONAI's HD95: the larger of the two directed 95th percentiles (not medpy's definition).

    Provided to cross-check against ``monai.metrics.compute_hausdorff_distance(percentile=95)``.
    ``nan`` when either mask is empty.
    """
    d = surface_distances(pred, gt, spacing)
    if d.pred_to_gt.size == 0:
        return float("nan")
    return float(max(np.percentile(d.pred_to_gt, 95), np.percentile(d.gt_to_pred, 95)))


def assd(pred, gt, spacing=None) -> float:
    """Average symmetric surface distance, identical to ``medpy.metric.binary.assd``.

    The mean of the concatenated directed distances (so the larger surface weighs more, as in
    medpy and MONAI's symmetric ``compute_average_surface_distance``).

    Returns:
        Distance in the units of ``spacing``; ``nan`` when either mask is empty.
    """
    d = surface_distances(pred, gt, spacing).symmetric
    return float(d.mean()) if d.size else float("nan")


def normalized_surface_dice(pred, gt, tolerance_mm: float, spacing=None) -> float:
    """Normalised surface Dice (NSD) at a tolerance, counted over surface voxels.

    ``NSD = (#{p in S_pred: d(p, S_gt) <= tau} + #{g in S_gt: d(g, S_pred) <= tau})
    / (|S_pred| + |S_gt|)``, matching MONAI's ``compute_surface_dice`` with
    ``use_subvoxels=False``.

    Args:
        pred: (...) binary mask.
        gt: reference mask of the same shape.
        tolerance_mm: tolerance ``tau`` in the units of ``spacing`` (mm; voxels if spacing None).
        spacing: voxel size per axis in mm, or ``None``.

    Returns:
        A value in [0, 1]. Both masks empty -> ``nan``; exactly one empty -> ``0.0``.
    """
    if tolerance_mm < 0 or not np.isfinite(tolerance_mm):
        raise ValueError(f"tolerance_mm must be a finite value >= 0, got {tolerance_mm}")
    p, g = as_bool_mask(pred), as_bool_mask(gt)
    p_any, g_any = bool(p.any()), bool(g.any())
    if not p_any and not g_any:
        return float("nan")
    if not (p_any and g_any):
        return 0.0
    d = surface_distances(p, g, spacing)
    n = d.pred_to_gt.size + d.gt_to_pred.size
    within = np.count_nonzero(d.pred_to_gt <= tolerance_mm) + np.count_nonzero(
        d.gt_to_pred <= tolerance_mm)
    return float(within / n)
