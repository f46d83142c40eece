"""The organs a case's outputs describe: label id, name, colour, SNOMED CT codes.

Organ names come from the model (its class list); ``--roi-subset`` narrows them; colours are
the report's (:mod:`transunet_app.report.colors`); the SNOMED CT codes are data
(``datasets/synapse/snomed.yaml``, read by :func:`transunet_app.data.labels.read_snomed`), so a
new organ needs a line of YAML, not code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..data.labels import read_snomed
from ..errors import UserError

#: Used for an organ the code table does not list (SCT "Anatomical structure", CID 7150/7151).
_GENERIC = {"code": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"}


@dataclass(frozen=True)
class Organ:
    """One output structure: ``label`` (class id in the label map), ``name``, ``color``
    (hex ``#RRGGBB``), ``category`` and ``type`` (``{code, scheme, meaning}``)."""

    label: int
    name: str
    color: str
    category: Mapping
    type: Mapping

    @property
    def rgb(self) -> tuple[int, int, int]:
        c = self.color.lstrip("#")
        return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


@dataclass(frozen=True)
class Provenance:
    """What made a segmentation, written into every DICOM object (algorithm identification)."""

    model: str
    checkpoint_sha256: str
    software_version: str
    algorithm_name: str = "TransUNet App"


def parse_roi_subset(text: str | None, class_names: Sequence[str]) -> list[str] | None:
    """``--roi-subset aorta,liver`` -> the names, checked against the model's classes.

    Raises:
        UserError: an unknown name (the message lists the valid names).
    """
    if text is None:
        return None
    valid = [str(n) for n in class_names[1:]]
    by_key = {n.strip().lower().replace("_", " "): n for n in valid}
    chosen = []
    for raw in text.split(","):
        key = raw.strip().lower().replace("_", " ")
        if not key:
            continue
        if key not in by_key:
            raise UserError(f"--roi-subset: unknown organ {raw.strip()!r} (valid: {', '.join(valid)})")
        if by_key[key] not in chosen:
            chosen.append(by_key[key])
    if not chosen:
        raise UserError(f"--roi-subset: no organ named (valid: {', '.join(valid)})")
    return chosen


def apply_roi_subset(labels: np.ndarray, class_names: Sequence[str], subset: Sequence[str] | None) -> np.ndarray:
    """Labels with every organ outside ``subset`` set to background (in place; ids unchanged)."""
    if subset is None:
        return labels
    keep = np.zeros(max(len(class_names), int(labels.max(initial=0)) + 1), dtype=bool)
    for i, name in enumerate(class_names):
        keep[i] = i > 0 and name in subset
    lut = np.where(keep, np.arange(keep.size), 0).astype(labels.dtype)
    labels[...] = lut[labels]
    return labels


def organs_present(labels: np.ndarray, class_names: Sequence[str] | Mapping[int, str]) -> list[Organ]:
    """The organs with at least one voxel, in label order, with colours and codes."""
    from ..report.colors import organ_color

    names = dict(class_names) if isinstance(class_names, Mapping) else dict(enumerate(class_names))
    counts = np.bincount(labels.ravel(), minlength=max(names) + 1) if labels.size else np.zeros(1)
    table = read_snomed()
    out = []
    for label in sorted(names):
        if label == 0 or label >= counts.size or counts[label] == 0:
            continue
        name = str(names[label])
        codes = table.get(name.strip().lower().replace("_", " "))
        out.append(Organ(label=int(label), name=name, color=organ_color(name, label),
                         category=codes["category"] if codes else dict(_GENERIC),
                         type=codes["type"] if codes else dict(_GENERIC)))
    return out
