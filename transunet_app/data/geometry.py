"""The canonical slice frame: the one place that decides how volumes are oriented.

Models see every volume as an array ``(D, H, W)``:

* D runs inferior -> superior (axial slices, slice 0 is the most inferior),
* H runs anterior -> posterior (row 0 of a slice is anterior: the top of the image),
* W runs from the patient's right to the patient's left (column 0 is the patient's right,
  shown on the image's left: the radiological display convention).

In nibabel's axis codes (the direction each array axis points towards) that is ``"SPL"``,
recorded as :data:`CANONICAL_ORIENTATION` in prepared datasets and checkpoints. It should
also be the frame of the TransUNet preprocessed Synapse data (BTCV volumes carry LPS-like
affines; their arrays transposed to (z, y, x) are SPL), not verified against that download.

Going to this frame uses only axis permutations and flips chosen from the affine: no
resampling, so :func:`from_canonical` restores the original voxel grid exactly. An oblique
scan is mapped by its nearest axes; :attr:`Reorientation.obliquity_deg` says how far off
that is, so callers can warn.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Axis codes of the canonical (D, H, W) frame: Superior, Posterior, Left.
CANONICAL_ORIENTATION = "SPL"


@dataclass(frozen=True)
class Reorientation:
    """How a volume was turned into the canonical frame, and how to turn it back.

    Attributes:
        transform: (3, 2) nibabel orientation transform from the original voxel axes to the
            canonical ones (row = original axis; columns: target axis, flip +1/-1).
        original_shape: spatial shape (I, J, K) of the original array.
        original_affine: (4, 4) voxel -> RAS mm affine of the original array.
        original_orientation: axis codes of the original array, e.g. "RAS", "LPS", "PSL".
        canonical_shape: (D, H, W).
        canonical_affine: (4, 4) voxel -> RAS mm affine of the canonical array (same world
            positions as the original voxels).
        canonical_spacing: mm per canonical axis (slice spacing, row spacing, column spacing).
        axial_axis: the original array axis that became D (the slice axis).
        obliquity_deg: largest angle between an original voxel axis and the world axis it was
            mapped to (0 for a non-oblique scan).
    """

    transform: tuple
    original_shape: tuple
    original_affine: np.ndarray
    original_orientation: str
    canonical_shape: tuple
    canonical_affine: np.ndarray
    canonical_spacing: tuple
    axial_axis: int
    obliquity_deg: float

    def as_dict(self) -> dict:
        """Plain-Python summary (for YAML/JSON records)."""
        return {
            "original_orientation": self.original_orientation,
            "original_shape": list(self.original_shape),
            "canonical_orientation": CANONICAL_ORIENTATION,
            "canonical_shape": list(self.canonical_shape),
            "canonical_spacing": [float(s) for s in self.canonical_spacing],
            "axial_axis": int(self.axial_axis),
            "obliquity_deg": float(self.obliquity_deg),
        }


def orientation_code(affine: np.ndarray) -> str:
    """Axis codes of a voxel->RAS affine, e.g. ``"RAS"``, ``"LPS"`` or ``"SPL"``."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """mm between voxel centres along each array axis (column norms of the affine)."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.sqrt((a ** 2).sum(axis=0)))  # type: ignore[return-value]


def plan_reorientation(affine: np.ndarray, shape: tuple) -> Reorientation:
    """Work out the permutation/flips that bring a volume of ``shape`` into the canonical frame.

    Args:
        affine: (4, 4) voxel -> RAS mm affine.
        shape: spatial shape (I, J, K) (extra trailing entries are ignored).

    Returns:
        The :class:`Reorientation`; nothing is computed on voxel data.
    """
    import nibabel as nib
    from nibabel import orientations as ornt

    affine = np.asarray(affine, dtype=np.float64)
    shape = tuple(int(s) for s in shape[:3])
    src = ornt.io_orientation(affine)
    dst = ornt.axcodes2ornt(tuple(CANONICAL_ORIENTATION))
    transform = ornt.ornt_transform(src, dst)
    # inv_ornt_aff maps canonical voxel indices back to original ones.
    canon_affine = affine @ ornt.inv_ornt_aff(transform, shape)
    canon_shape = tuple(shape[int(np.flatnonzero(transform[:, 0] == t)[0])] for t in range(3))
    axial_axis = int(np.flatnonzero(transform[:, 0] == 0)[0])
    # Obliquity: angle between each voxel axis and the world axis io_orientation chose for it.
    cols = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0, keepdims=True)
    cosines = [abs(cols[int(src[i, 0]), i]) for i in range(3)]
    obliquity = float(np.degrees(np.arccos(np.clip(min(cosines), -1.0, 1.0))))
    return Reorientation(
        transform=tuple(map(tuple, transform.tolist())),
        original_shape=shape,
        original_affine=affine.copy(),
        original_orientation="".join(nib.aff2axcodes(affine)),
        canonical_shape=canon_shape,
        canonical_affine=canon_affine,
        canonical_spacing=voxel_spacing(canon_affine),
        axial_axis=axial_axis,
        obliquity_deg=obliquity,
    )


def apply_reorientation(array: np.ndarray, reo: Reorientation) -> np.ndarray:
    """Bring an array in the original voxel grid into the canonical frame.

    Args:
        array: (I, J, K, ...) in the original voxel order; trailing axes (e.g. channels)
            are carried along untouched.
        reo: from :func:`plan_reorientation` for this grid.

    Returns:
        (D, H, W, ...) view or copy (C-contiguous copy) in the canonical frame.
    """
    from nibabel.orientations import apply_orientation

    if tuple(array.shape[:3]) != tuple(reo.original_shape):
        raise ValueError(f"array shape {array.shape[:3]} does not match the planned grid {reo.original_shape}")
    return np.ascontiguousarray(apply_orientation(array, np.asarray(reo.transform)))


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, Reorientation]:
    """Reorient a volume to the canonical (D, H, W) = SPL frame by permutations/flips only.

    Args:
        array: (I, J, K) or (I, J, K, ...) voxel data in the order the affine describes.
        affine: (4, 4) voxel -> RAS mm affine.

    Returns:
        ``(canonical_array, reorientation)``: the (D, H, W, ...) array holding exactly the
        same voxel values, and the :class:`Reorientation` needed to map results back.
    """
    reo = plan_reorientation(affine, array.shape)
    return apply_reorientation(array, reo), reo


def from_canonical(canonical: np.ndarray, reo: Reorientation) -> np.ndarray:
    """Map a canonical (D, H, W, ...) array back to the original (I, J, K, ...) voxel grid.

    The exact inverse of :func:`to_canonical`: ``from_canonical(to_canonical(a, A)[0], reo)``
    equals ``a`` voxel for voxel.
    """
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    if tuple(canonical.shape[:3]) != tuple(reo.canonical_shape):
        raise ValueError(f"array shape {canonical.shape[:3]} does not match the canonical grid {reo.canonical_shape}")
    inverse = ornt_transform(axcodes2ornt(tuple(CANONICAL_ORIENTATION)), io_orientation(reo.original_affine))
    # A copy in the view's own memory order (positive strides): for the usual axial scan that
    # is Fortran order, which is also NIfTI's on-disk order, so neither this copy nor the write
    # transposes (a C-order copy here doubled nibabel's write time).
    return np.array(apply_orientation(canonical, inverse), order="K", copy=True)


def same_grid(affine_a: np.ndarray, shape_a: tuple, affine_b: np.ndarray, shape_b: tuple,
              tolerance: float = 0.1) -> tuple[bool, str]:
    """Whether two volumes share one voxel grid (e.g. an image and its label map).

    Args:
        affine_a, affine_b: (4, 4) voxel -> RAS mm affines.
        shape_a, shape_b: spatial shapes.
        tolerance: largest allowed displacement of any corner voxel, as a fraction of the
            smallest voxel spacing (0.1 = labels land within a tenth of a voxel).

    Returns:
        ``(ok, reason)``; ``reason`` is a short description of the difference ("" if ok).
    """
    shape_a = tuple(int(s) for s in shape_a[:3])
    shape_b = tuple(int(s) for s in shape_b[:3])
    if shape_a != shape_b:
        return False, f"shapes differ: {shape_a} vs {shape_b}"
    corners = np.array([[i, j, k, 1.0] for i in (0, shape_a[0] - 1) for j in (0, shape_a[1] - 1)
                        for k in (0, shape_a[2] - 1)])
    pa = corners @ np.asarray(affine_a, dtype=np.float64).T
    pb = corners @ np.asarray(affine_b, dtype=np.float64).T
    shift = float(np.abs(pa - pb)[:, :3].max())
    limit = tolerance * min(min(voxel_spacing(affine_a)), min(voxel_spacing(affine_b)))
    if shift > limit:
        return False, (f"affines differ: voxels {shift:.3g} mm apart "
                       f"({orientation_code(affine_a)} vs {orientation_code(affine_b)})")
    return True, ""


def resample_nearest(array: np.ndarray, affine: np.ndarray, ref_affine: np.ndarray,
                     ref_shape: tuple) -> np.ndarray:
    """Labels sampled on another voxel grid (nearest neighbour, 0 outside the volume).

    Args:
        array: (I, J, K) labels on the grid of ``affine``.
        affine: (4, 4) voxel -> RAS mm of ``array``.
        ref_affine, ref_shape: the grid to sample on.

    Returns:
        array of shape ``ref_shape`` with ``array``'s dtype.
    """
    from scipy.ndimage import affine_transform

    # reference voxel index -> world -> voxel index of ``array``
    m = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(ref_affine, dtype=np.float64)
    return affine_transform(array, m[:3, :3], offset=m[:3, 3], output_shape=tuple(ref_shape)[:3],
                            order=0, mode="constant", cval=0, prefilter=False)
