"""``segment``'s hospital outputs for one case: DICOM SEG, RTSTRUCT, Slicer ``.seg.nrrd``,
preview PNG, and the ``--roi-subset`` organ selection they all share.

The checks run before any inference (a NIfTI input cannot be referenced by a SEG; a DICOM
series whose UIDs anonymisation emptied cannot either); the files join the case's
:class:`~transunet_app.outputs.staging.OutputSet` (temporary names, renamed together at the end).
The writers themselves live in :mod:`transunet_app.outputs`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.dicom_series import is_multiframe_file
from ..errors import UserError
from .outputs import DICOM_REFERENCING_TYPES, OUTPUT_TYPES, OutputPaths


def refuse_unreferencable_input(input_path, referencing) -> None:
    """Refuse a file input when ``referencing`` output types (SEG, RTSTRUCT) need the source's
    DICOM instances: only a series folder or one Enhanced CT file has them."""
    path = Path(input_path)
    if referencing and path.exists() and not path.is_dir() and not is_multiframe_file(path):
        raise UserError(f"{path}: --output-type {','.join(referencing)} needs a DICOM series "
                        f"folder as input (this file has no DICOM instances to reference)")


class HospitalOutputs:
    """What to write besides the NIfTI outputs, and the checks that must pass first.

    Args:
        paths: the case's output paths.
        output_types: ``--output-type`` names (subset of :data:`OUTPUT_TYPES`).
        preview: write ``<case>_preview.png``.
        roi_subset: organ names to keep (``None``: all the model's organs).
        dicom_compress: JPEG 2000 lossless SEG pixel data.
    """

    def __init__(self, paths: OutputPaths, output_types=OUTPUT_TYPES[:1], preview: bool = False,
                 roi_subset=None, dicom_compress: bool = False):
        self.paths = paths
        self.types = tuple(output_types)
        self.preview = bool(preview)
        self.roi_subset = list(roi_subset) if roi_subset is not None else None
        self.dicom_compress = bool(dicom_compress)
        self.series = None

    @property
    def nifti(self) -> bool:
        return "nifti" in self.types

    @property
    def referencing(self) -> list[str]:
        return [t for t in self.types if t in DICOM_REFERENCING_TYPES]

    def settings(self) -> dict:
        return {"output_types": list(self.types), "roi_subset": self.roi_subset,
                "preview": self.preview, "dicom_compress": self.dicom_compress}

    def check_input(self, input_path: Path) -> None:
        """A SEG / RTSTRUCT needs source DICOM instances: refuse other inputs before reading."""
        refuse_unreferencable_input(input_path, self.referencing)

    def check_image(self, image) -> None:
        """After reading, before inference: the series must be referencable."""
        if not self.referencing:
            return
        series = image.meta.get("dicom_series")
        if series is None:
            raise UserError(f"{image.source}: --output-type {','.join(self.referencing)} needs a "
                            f"DICOM series as input")
        problem = series.reference_problem()
        if problem:
            raise UserError(f"{image.source}: cannot write {'/'.join(self.referencing)} referencing "
                            f"this series: {problem}")
        self.series = series

    def select(self, labels: np.ndarray, class_names) -> dict[int, str]:
        """Apply ``--roi-subset`` to ``labels`` (in place) and return the kept id -> name map
        (background included)."""
        from ..outputs.organs import apply_roi_subset

        apply_roi_subset(labels, class_names, self.roi_subset)
        return {i: str(n) for i, n in enumerate(class_names)
                if i == 0 or self.roi_subset is None or n in self.roi_subset}

    def write(self, out, image, labels: np.ndarray, classes: dict[int, str], provenance) -> None:
        """Write the requested files into the case's :class:`~transunet_app.outputs.staging.OutputSet`
        ``out`` (temporary names, renamed with the case's other outputs)."""
        wanted = [t for t in self.types if t != "nifti"]
        if not wanted and not self.preview:
            return
        from ..outputs.organs import organs_present

        organs = organs_present(labels, classes)
        if self.referencing and not organs:
            raise UserError(f"{image.source}: no organ found; a DICOM SEG/RTSTRUCT needs at least one")
        for kind, final in (("dicom-seg", self.paths.dicom_seg), ("rtstruct", self.paths.rtstruct),
                            ("seg-nrrd", self.paths.seg_nrrd), ("preview", self.paths.preview)):
            if kind in wanted or (kind == "preview" and self.preview):
                # an OSError (disk full, permissions) names the final file: the CLI's one line
                out.write(final, lambda tmp, kind=kind: self._write_one(kind, tmp, image, labels,
                                                                        organs, provenance))

    def _write_one(self, kind: str, path: Path, image, labels, organs, provenance) -> None:
        if kind == "dicom-seg":
            from ..outputs import dicom_seg

            dicom_seg.write_dicom_seg(path, labels, self.series, organs, provenance,
                                      compress=self.dicom_compress)
        elif kind == "rtstruct":
            from ..outputs import rtstruct

            rtstruct.write_rtstruct(path, labels, self.series, organs, provenance)
        elif kind == "seg-nrrd":
            from ..outputs import seg_nrrd

            seg_nrrd.write_seg_nrrd(path, labels, image.affine, organs)
        else:
            from ..outputs import preview

            preview.write_preview(path, image.array, labels, image.affine, organs)

