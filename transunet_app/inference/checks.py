"""Look at an input before inference: HU range, spacing, orientation; warn when it is not CT.

The model was trained on CT in Hounsfield units. An MR scan, or a CT already normalised to
[0, 1], still "runs" and yields confident nonsense; these checks say so before the output is
trusted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Voxels sampled for the intensity percentiles (a regular sub-grid: fast on 512^3).
_SAMPLE_VOXELS = 2_000_000
#: Air in CT is about -1000 HU; a scan whose 0.5th percentile is above this holds no air and
#: no fat, so it is unlikely to be CT in HU (or it is cropped very tightly).
_CT_AIR_PERCENTILE_MAX = -200.0
#: Slices thicker than this (mm) lose small organs (gallbladder, pancreas) between slices.
THICK_SLICE_MM = 6.0
#: Obliquity (degrees) above which axis-aligned slicing is noticeably off the true axial plane.
OBLIQUE_DEG = 5.0


@dataclass
class InputCheck:
    """What was found in an input volume.

    Attributes:
        shape: (I, J, K) voxels in file order.
        orientation: axis codes of the file's voxel axes (e.g. "LPS").
        spacing_mm: (slice, row, column) spacing in mm in the canonical frame.
        slices: number of axial slices; ``slice_size``: (rows, columns) per slice.
        obliquity_deg: angle between the voxel axes and the nearest world axes.
        intensity: min, max and 0.5/50/99.5 percentiles of the voxel values (HU for CT).
        modality: DICOM modality when known.
        warnings: human-readable problems (empty when all looks like CT in HU).
    """

    shape: tuple
    orientation: str
    spacing_mm: tuple
    slices: int
    slice_size: tuple
    obliquity_deg: float
    intensity: dict
    modality: str | None = None
    warnings: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"shape": list(self.shape), "orientation": self.orientation,
                "spacing_mm": [round(float(s), 4) for s in self.spacing_mm],
                "slices": self.slices, "slice_size": list(self.slice_size),
                "obliquity_deg": round(float(self.obliquity_deg), 3),
                "intensity": self.intensity, "modality": self.modality,
                "warnings": list(self.warnings)}

    def summary(self) -> str:
        """One line for the console."""
        i = self.intensity
        sp = self.spacing_mm
        return (f"{'x'.join(map(str, self.shape))} {self.orientation}, {self.slices} axial slices of "
                f"{self.slice_size[0]}x{self.slice_size[1]}, spacing {sp[1]:.3g}x{sp[2]:.3g} mm "
                f"in-plane, {sp[0]:.3g} mm between slices, values {i['min']:.0f}..{i['max']:.0f} "
                f"(p0.5 {i['p0.5']:.0f}, median {i['p50']:.0f}, p99.5 {i['p99.5']:.0f})"
                + (f", oblique {self.obliquity_deg:.1f} deg" if self.obliquity_deg > 0.05 else ""))


def _sample(array: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil((array.size / _SAMPLE_VOXELS) ** (1 / 3))))
    return np.asarray(array[::step, ::step, ::step])


def check_input(image, reorientation) -> InputCheck:
    """Inspect an :class:`~transunet_app.data.io.Image` and its planned reorientation.

    Args:
        image: the volume as read.
        reorientation: :class:`~transunet_app.data.geometry.Reorientation` for its grid.

    Returns:
        The :class:`InputCheck` with ``warnings`` filled in.
    """
    arr = image.array
    sample = _sample(arr).astype(np.float32, copy=False)
    p05, p50, p995 = (float(v) for v in np.percentile(sample, [0.5, 50, 99.5]))
    intensity = {"min": float(arr.min()), "max": float(arr.max()), "p0.5": p05, "p50": p50,
                 "p99.5": p995}
    sp = tuple(float(s) for s in reorientation.canonical_spacing)
    check = InputCheck(shape=tuple(arr.shape), orientation=reorientation.original_orientation,
                       spacing_mm=sp, slices=int(reorientation.canonical_shape[0]),
                       slice_size=tuple(int(s) for s in reorientation.canonical_shape[1:]),
                       obliquity_deg=float(reorientation.obliquity_deg), intensity=intensity,
                       modality=image.meta.get("modality") or None)
    w = check.warnings
    if check.modality and check.modality.upper() != "CT":
        w.append(f"DICOM modality is {check.modality}, not CT: the model expects CT in HU")
    if intensity["max"] - intensity["min"] <= 2.0 and intensity["min"] >= -1.0:
        w.append(f"values span only {intensity['min']:.3g}..{intensity['max']:.3g}: the image "
                 f"looks already normalised, not CT in Hounsfield units")
    elif p05 > _CT_AIR_PERCENTILE_MAX:
        w.append(f"no air or fat values (0.5th percentile {p05:.0f}; CT air is about -1000 HU): "
                 f"this does not look like CT in Hounsfield units (MR? rescaled?)")
    elif p995 > 4000:
        w.append(f"99.5th percentile is {p995:.0f}: beyond the CT range, wrong rescale "
                 f"slope/intercept?")
    if sp[0] > THICK_SLICE_MM:
        w.append(f"slices are {sp[0]:.3g} mm apart: small organs may be missed")
    if check.obliquity_deg > OBLIQUE_DEG:
        w.append(f"the scan is oblique by {check.obliquity_deg:.1f} deg: slices are taken along "
                 f"the nearest axis")
    if min(check.slice_size) < 32:
        w.append(f"axial slices are only {check.slice_size[0]}x{check.slice_size[1]} voxels")
    return check
