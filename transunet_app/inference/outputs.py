"""Files ``segment`` writes for one input, all next to the label map and all atomic.

For a label map ``case.nii.gz``:

* ``case.nii.gz``: uint8 class ids on the input's voxel grid (shape, affine, qform/sform and
  spacing of the input; for DICOM the series' geometry),
* ``case.json``: sidecar with the class names (``{"labels": {"0": "background", ...}}``),
  model, checkpoint and its SHA-256, settings and the input check (read by ``report`` and
  ``evaluate``); with ``segment --model`` also ``model_card`` (the package's name, version,
  weights and card SHA-256, licence, intended use),
* ``case_probabilities.nii.gz`` (``--probabilities``): 4D (I, J, K, C) probabilities stored as
  uint8 with ``scl_slope = 1/255`` (NIfTI readers return floats in [0, 1]; a quarter of float32),
* ``case_statistics.json`` (``--statistics``): per-organ volume, HU, status, confidence,
* ``case_report.html`` (``--report``): the clinician report,
* ``--output-type``: ``case_seg.dcm`` (DICOM SEG), ``case_rtstruct.dcm`` (RT Structure Set),
  ``case.seg.nrrd`` (3D Slicer); ``--preview``: ``case_preview.png`` (writers in
  :mod:`transunet_app.outputs`).

They are one unit (:mod:`transunet_app.outputs.staging`): staged under temporary names and
renamed together, the label map last; the sidecar lists them all (``"outputs"``), so
``--skip-existing`` takes a case as done only when every listed file exists
(:func:`outputs_complete`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.files import atomic_write, atomic_write_json, case_name, sidecar_path
from ..data.io import Image, write_nifti
from ..data.nifti_files import save_nifti
from ..errors import UserError

#: ``segment --output-type`` values (the first is the default).
OUTPUT_TYPES = ("nifti", "dicom-seg", "rtstruct", "seg-nrrd")
#: Types that reference the source DICOM instances (need a DICOM series as input).
DICOM_REFERENCING_TYPES = ("dicom-seg", "rtstruct")


@dataclass(frozen=True)
class OutputPaths:
    """Every file written for one input."""

    labels: Path
    sidecar: Path
    probabilities: Path
    statistics: Path
    report: Path
    dicom_seg: Path | None = None
    rtstruct: Path | None = None
    seg_nrrd: Path | None = None
    preview: Path | None = None

    @classmethod
    def for_label_map(cls, path: str | Path) -> "OutputPaths":
        path = Path(path)
        stem = case_name(path)
        folder = path.parent
        return cls(labels=path, sidecar=sidecar_path(path),
                   probabilities=folder / f"{stem}_probabilities.nii.gz",
                   statistics=folder / f"{stem}_statistics.json",
                   report=folder / f"{stem}_report.html",
                   dicom_seg=folder / f"{stem}_seg.dcm", rtstruct=folder / f"{stem}_rtstruct.dcm",
                   seg_nrrd=folder / f"{stem}.seg.nrrd", preview=folder / f"{stem}_preview.png")

    def wanted(self, probabilities: bool, statistics: bool, report: bool,
               output_types=OUTPUT_TYPES[:1], preview: bool = False) -> list[Path]:
        out = [self.labels] if "nifti" in output_types else []
        out.append(self.sidecar)
        out += self.hospital(output_types, preview)
        if probabilities:
            out.append(self.probabilities)
        if statistics:
            out.append(self.statistics)
        if report:
            out.append(self.report)
        return out

    def hospital(self, output_types, preview: bool) -> list[Path]:
        """The ``--output-type`` files other than NIfTI, and the ``--preview`` PNG."""
        by_type = {"dicom-seg": self.dicom_seg, "rtstruct": self.rtstruct, "seg-nrrd": self.seg_nrrd}
        out = [by_type[t] for t in output_types if t in by_type]
        return out + ([self.preview] if preview else [])


def parse_output_types(text: str | None) -> tuple[str, ...]:
    """``--output-type nifti,dicom-seg`` -> ``("nifti", "dicom-seg")``; unknown names refused."""
    if text is None:
        return OUTPUT_TYPES[:1]
    out = []
    for raw in str(text).split(","):
        t = raw.strip().lower().replace("_", "-")
        if not t:
            continue
        if t not in OUTPUT_TYPES:
            raise UserError(f"--output-type: unknown type {raw.strip()!r} (valid: {', '.join(OUTPUT_TYPES)})")
        if t not in out:
            out.append(t)
    if not out:
        raise UserError(f"--output-type: no type given (valid: {', '.join(OUTPUT_TYPES)})")
    return tuple(out)


#: bytes written besides the volumes: JSON files, the HTML report's images (generous)
_SMALL_FILES_BYTES = 2_000_000
_REPORT_BYTES = 20_000_000


def estimate_output_bytes(shape, num_classes: int, probabilities: bool, statistics: bool,
                          report: bool) -> int:
    """An upper bound on what ``segment`` writes for a volume of ``shape`` (I, J, K).

    The label map and the probabilities are gzip-compressed uint8, one byte a voxel (and one
    per class a voxel) before compression; compression is not counted on, so the bound holds
    for noisy probabilities too. Staged files exist next to the old ones during an
    ``--overwrite``, so the old ones are not counted as reclaimable either.
    """
    voxels = int(np.prod([int(s) for s in shape], dtype=np.int64))
    total = voxels + _SMALL_FILES_BYTES  # labels + sidecar
    if probabilities:
        total += voxels * int(num_classes)
    if statistics:
        total += _SMALL_FILES_BYTES
    if report:
        total += _REPORT_BYTES + voxels * 2  # a NIfTI copy of a DICOM series (int16)
    return int(total * 1.01) + 65536


def outputs_complete(paths: "OutputPaths", wanted) -> bool:
    """True when the outputs of an earlier run form a complete set for ``--skip-existing``:
    the sidecar exists and parses, and every output it lists and every output ``wanted`` now
    (the label map among them unless only other types are asked for) exists."""
    if not paths.sidecar.is_file():
        return False
    try:
        listed = json.loads(paths.sidecar.read_text(encoding="utf-8")).get("outputs")
    except (OSError, ValueError, AttributeError):
        return False
    folder = paths.labels.parent
    names = set(listed) if isinstance(listed, list) else set()
    names.update(Path(p).name for p in wanted)
    return all((folder / str(n)).is_file() for n in names)


def check_writable(paths, overwrite: bool) -> None:
    """Fail before any work when an output exists (without ``overwrite``) or has no folder.

    Raises:
        UserError: naming the first offending path.
    """
    for p in paths:
        p = Path(p)
        if p.is_dir():
            raise UserError(f"{p}: is a folder, expected a file name")
        if p.exists() and not overwrite:
            raise UserError(f"{p}: already exists (use --overwrite to replace it)")
        if not p.parent.is_dir():
            if p.parent.exists():  # a file where the folder should be: a file-system fault
                import errno

                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(p.parent))
            raise UserError(f"{p.parent}: output folder does not exist")


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, data: dict, overwrite: bool) -> Path:
    """A sidecar or statistics JSON (indent 2), atomically."""
    return atomic_write_json(path, data, overwrite=overwrite)


def write_label_map(path: Path, labels: np.ndarray, image: Image, overwrite: bool) -> Path:
    """uint8 labels with the input's geometry (its NIfTI header when it was NIfTI)."""
    return write_nifti(path, labels, like=image, dtype=np.uint8, overwrite=overwrite,
                       description="transunet_app segment labels")


def write_probabilities(path: Path, probabilities: np.ndarray, image: Image, overwrite: bool) -> Path:
    """(I, J, K, C) uint8 probabilities x 255 as a 4D NIfTI scaled back to [0, 1] by its slope."""
    import nibabel as nib

    if probabilities.shape[:3] != image.array.shape:
        raise ValueError(f"probabilities {probabilities.shape} do not match the image {image.array.shape}")
    header = image.header
    if isinstance(header, nib.Nifti1Header) and not isinstance(header, nib.Nifti2Header):
        hdr = header.copy()
        hdr.set_data_dtype(np.uint8)
        img = nib.Nifti1Image(probabilities, None, header=hdr)
    else:
        img = nib.Nifti1Image(probabilities, image.affine)
        img.header.set_qform(image.affine, code=1)
        img.header.set_sform(image.affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0 / 255.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0.0, 1.0
    img.header["intent_code"] = 0
    img.header["descrip"] = b"transunet_app class probabilities (C last)"
    return atomic_write(path, lambda tmp: save_nifti(img, tmp), overwrite=overwrite)
