"""Quality-control flags a clinician should see before trusting automated organ measurements.

Every check is a pure function over :func:`~transunet_app.metrics.organ_stats.organ_statistics`
output (and the image) returning :class:`Flag` objects with a plain-language message.

Severity: ``"alert"`` (the result is probably wrong: do not use without checking the images),
``"warning"`` (check this organ), ``"info"`` (context for reading the numbers).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

#: An organ is "fragmented" with at least this many connected pieces ...
FRAGMENT_MIN_PIECES = 3
#: ... or with 2+ pieces when the largest holds less than this fraction of the volume.
FRAGMENT_MAX_LARGEST_FRACTION = 0.9
#: Dice below this against a given reference is flagged as a disagreement.
REFERENCE_MIN_DICE = 0.7

SEVERITY_ORDER = {"alert": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Flag:
    """One QC finding.

    Attributes:
        code: machine-readable kind: ``not_ct``, ``organ_missing``, ``kidney_side``,
            ``volume_out_of_range``, ``fragmented``, ``organ_truncated``,
            ``reference_disagreement``.
        severity: ``alert`` | ``warning`` | ``info``.
        message: one sentence for a clinician.
        organ: the organ concerned, or ``None`` for the whole scan.
    """

    code: str
    severity: str
    message: str
    organ: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def ct_plausibility(image) -> list[str]:
    """Reasons why an image does not look like a CT in Hounsfield units (empty list = plausible).

    A CT of the trunk always contains air (about -1000 HU outside the body and in the bowel) and
    bone (several hundred HU); normalised (0..1) or 8-bit (0..255) images, MR, or HU with a wrong
    rescale slope fail these checks.

    Args:
        image: (I, J, K) array of the scan as read from the file.
    """
    a = np.asarray(image)
    sample = a[::2, ::2, ::2] if a.ndim == 3 else a
    if sample.size == 0:
        return ["the image is empty"]
    sample = sample.astype(np.float32, copy=False)
    lo, hi = float(np.min(sample)), float(np.max(sample))
    p1, p99 = (float(v) for v in np.percentile(sample, [1, 99]))
    reasons = []
    if hi - lo <= 1.0 + 1e-6:
        reasons.append(f"intensities span only {lo:g}..{hi:g}: looks normalised, not Hounsfield units")
    else:
        if p1 > -500:
            reasons.append(f"no air: 1st percentile {p1:.0f} HU (a CT shows air near -1000 HU)")
        if p99 < 100:
            reasons.append(f"no bone or contrast: 99th percentile {p99:.0f} HU")
        if lo < -3100 or hi > 40000:
            reasons.append(f"values {lo:.0f}..{hi:.0f} lie outside the Hounsfield range")
    return reasons


def scan_flags(stats: Mapping[str, dict], image=None, volume_ranges: Mapping | None = None,
               reference_metrics: Mapping[str, dict] | None = None) -> list[Flag]:
    """All QC flags for one segmented scan, most severe first.

    Args:
        stats: organ name -> entry of ``organ_statistics`` (status, volume_ml, side, ...).
        image: the CT array (for the "does it look like CT" check), or ``None``.
        volume_ranges: organ name (lower case) -> ``(min_ml, max_ml)`` or ``None``;
            see :mod:`transunet_app.report.reference`. ``None``/empty: no volume check.
        reference_metrics: organ name -> metrics from ``evaluate_organ`` when a reference
            segmentation was given.
    """
    flags: list[Flag] = []
    if image is not None:
        reasons = ct_plausibility(image)
        if reasons:
            flags.append(Flag("not_ct", "alert",
                              "The input does not look like a CT scan in Hounsfield units ("
                              + "; ".join(reasons) + "). All results below are unreliable."))
    ranges = volume_ranges or {}
    truncated: list[str] = []
    if stats and all(s.get("status") == "absent" for s in stats.values()):
        flags.append(Flag("organ_missing", "alert",
                          "No organ was segmented: the segmentation failed, or the scan does not "
                          "show the abdomen."))
        stats = {}
    for name, s in stats.items():
        status = s.get("status")
        if status == "absent":
            flags.append(Flag("organ_missing", "warning",
                              f"{name.capitalize()} was not found in the scan (not segmented, "
                              f"outside the field of view, or surgically removed).", name))
            continue
        if status == "touches_image_edge":
            truncated.append(f"{name} ({_and(s.get('edges_touched') or ['image'])})")
        rng = ranges.get(name.lower())
        vol = float(s.get("volume_ml") or 0.0)
        if rng and status == "complete" and not rng[0] <= vol <= rng[1]:
            word = "below" if vol < rng[0] else "above"
            flags.append(Flag("volume_out_of_range", "warning",
                              f"{name.capitalize()} volume {vol:.0f} mL is {word} the adult "
                              f"screening range {rng[0]:.0f}-{rng[1]:.0f} mL: check the "
                              f"segmentation on the images.", name))
        pieces = int(s.get("n_components") or 0)
        largest = s.get("largest_component_fraction")
        if pieces >= FRAGMENT_MIN_PIECES or (
                pieces >= 2 and largest is not None and largest < FRAGMENT_MAX_LARGEST_FRACTION):
            flags.append(Flag("fragmented", "warning",
                              f"{name.capitalize()} is split into {pieces} separate pieces (the "
                              f"largest holds {100 * (largest or 0):.0f}% of the volume): possible "
                              f"segmentation error.", name))
    if truncated:
        # one line for all: being cut off by the field of view is context, not an error
        flags.append(Flag("organ_truncated", "info",
                          "Cut off by the edge of the scan, so the volume shown is a lower bound: "
                          + "; ".join(truncated) + "."))
    flags += _kidney_side_flags(stats)
    for name, m in (reference_metrics or {}).items():
        d, st = m.get("dice"), m.get("status")
        if st == "false_positive":
            msg = f"{name.capitalize()} was segmented but is absent from the reference segmentation."
        elif st == "missed":
            msg = f"{name.capitalize()} is in the reference segmentation but was not segmented."
        elif st == "both_present" and d is not None and d < REFERENCE_MIN_DICE:
            msg = (f"{name.capitalize()} agrees poorly with the reference segmentation "
                   f"(Dice {d:.2f} < {REFERENCE_MIN_DICE}).")
        else:
            continue
        flags.append(Flag("reference_disagreement", "warning", msg, name))
    flags.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return flags


def _and(words: list[str]) -> str:
    words = list(words)
    if len(words) == 1:
        return f"{words[0]} edge"
    return ", ".join(words[:-1]) + " and " + words[-1] + " edges"


def _kidney_side_flags(stats: Mapping[str, dict]) -> list[Flag]:
    """Left kidney on the patient's right (or vice versa), or the two kidneys swapped."""
    out = []
    lk, rk = stats.get("left kidney"), stats.get("right kidney")
    for name, s, expected in (("left kidney", lk, "left"), ("right kidney", rk, "right")):
        if s and s.get("status") != "absent" and s.get("side") not in (None, expected, "midline"):
            out.append(Flag("kidney_side", "alert",
                            f"The {name} label lies on the patient's {s['side']} side: left and "
                            f"right may be swapped (labels or image orientation).", name))
    if (not out and lk and rk and lk.get("centroid_frame") == "RAS"
            and lk.get("centroid_mm") and rk.get("centroid_mm")
            and lk["centroid_mm"][0] > rk["centroid_mm"][0]):
        # RAS+: x grows towards the patient's right, so the left kidney must have the smaller x.
        out.append(Flag("kidney_side", "alert",
                        "The left kidney label lies to the right of the right kidney label: left "
                        "and right are swapped (labels or image orientation).", "left kidney"))
    return out
