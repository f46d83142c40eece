"""Find, order and check the slices of a DICOM series from their headers (pydicom).

SimpleITK reads the pixels; this module decides *which* files in *which* order, and refuses
or warns about geometry that a volume cannot represent, in the tool's own words (ITK's
multi-line messages never reach the user):

* files are grouped by SeriesInstanceUID (non-image objects such as SEG, RTSTRUCT, SR and
  files that are not DICOM are ignored); the largest series, or the one asked for, is read;
* slices are sorted by their position along the slice normal (the cross product of the
  ImageOrientationPatient row and column directions), never by file name or InstanceNumber;
* refused: several orientations, gantry tilt (slice positions not along the normal),
  several files at one position, a single slice, slices of different sizes;
* warned: a missing slice or uneven slice spacing (naming the gap).

The result also keeps what a DICOM writer needs to reference the source: the ordered files,
their SOP Class / Instance UIDs (filled from the file meta information when anonymisation
emptied them), Study, Series and Frame of Reference UIDs, and the voxel -> patient geometry.
Slice ``k`` of the volume SimpleITK reads from :attr:`DicomSeries.files` is ``files[k]``; its
pixel ``(row r, column c)`` is voxel ``(i, j, k) = (c, r, k)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError

#: Orientation cosines that differ by more than this count as another orientation.
_ORIENTATION_TOL = 1e-4
#: Sine of the largest angle between the slice-to-slice direction and the slice normal that is
#: still "no tilt" (0.06 degrees; scanners write positions with ~1e-3 mm precision).
_TILT_SIN_TOL = 1e-3
#: Relative deviation of one slice gap from the median gap that is reported as uneven.
_GAP_REL_TOL = 0.01

#: Modalities of objects that hold no image slices (never part of a volume).
_NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG"}


#: Type 2 attributes of the Patient and General Study modules that SEG/RTSTRUCT copy.
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                 "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


@dataclass
class DicomSeries:
    """One series, its slices in volume order, and its geometry.

    Attributes:
        folder: the folder scanned.
        series_uid: SeriesInstanceUID.
        files: (K,) slice files sorted by position along the slice normal (ascending).
        sop_instance_uids, sop_class_uids: (K,) per file, in the same order ("" when unknown).
        study_uid, frame_of_reference_uid: "" when the files do not carry them.
        modality: Modality of the first file ("" when absent).
        rows, columns: pixels per slice.
        affine_lps: (4, 4) voxel (i = column, j = row, k = slice) -> LPS patient mm (DICOM).
        series_count: image series found in the folder.
        warnings: problems that do not stop reading (missing slice, uneven spacing).
    """

    folder: Path
    series_uid: str
    files: list
    sop_instance_uids: list
    sop_class_uids: list
    study_uid: str
    frame_of_reference_uid: str
    modality: str
    rows: int
    columns: int
    affine_lps: np.ndarray
    series_count: int = 1
    series_description: str = ""
    warnings: list = field(default_factory=list)
    #: (K,) the pydicom headers read while scanning, in volume order (no pixel data)
    headers: list = field(default_factory=list, repr=False)

    @property
    def affine_ras(self) -> np.ndarray:
        """(4, 4) voxel -> RAS+ mm (nibabel's convention, the project's :class:`Image`)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps

    def datasets(self) -> list:
        """The slice headers (pydicom, without pixel data) in volume order, with SOP Class /
        Instance UIDs filled from the file meta where the data set left them empty and the
        Type 2 patient/study attributes that anonymisation dropped present but empty (what a
        derived object copies must exist, empty is valid)."""
        out = []
        headers = self.headers if len(self.headers) == len(self.files) else [None] * len(self.files)
        for path, sop_uid, class_uid, ds in zip(self.files, self.sop_instance_uids,
                                                self.sop_class_uids, headers):
            ds = ds if ds is not None else _read_header(path)
            if ds is None:
                raise UserError(f"{path}: no longer readable as DICOM")
            ds.SOPInstanceUID = sop_uid
            ds.SOPClassUID = class_uid
            for keyword in _TYPE2_COPIED:
                if keyword not in ds:
                    setattr(ds, keyword, None)
            out.append(ds)
        return out

    def reference_problem(self) -> str | None:
        """Why a SEG or RTSTRUCT cannot reference this series (``None`` when it can)."""
        if not self.study_uid:
            return "StudyInstanceUID is empty or missing (anonymised?)"
        if not self.series_uid:
            return "SeriesInstanceUID is empty or missing"
        if not self.frame_of_reference_uid:
            return "FrameOfReferenceUID is empty or missing"
        missing = [Path(f).name for f, u in zip(self.files, self.sop_instance_uids) if not u]
        if missing:
            return f"SOPInstanceUID is empty in {len(missing)} file(s), e.g. {missing[0]}"
        if len(set(self.sop_instance_uids)) != len(self.sop_instance_uids):
            return "several slices share one SOPInstanceUID"
        missing = [Path(f).name for f, u in zip(self.files, self.sop_class_uids) if not u]
        if missing:
            return f"SOPClassUID is unknown in {len(missing)} file(s), e.g. {missing[0]}"
        return None


def _read_header(path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except InvalidDicomError:
        return None
    except Exception:  # noqa: BLE001 (a corrupt file raises many types, e.g. BytesLengthException)
        return None


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def _meta_text(ds, keyword: str) -> str:
    meta = getattr(ds, "file_meta", None)
    return _text(meta, keyword) if meta is not None else ""


def _floats(ds, keyword: str, n: int, path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise UserError(f"{path}: {keyword} is missing or invalid; cannot place the slice in space")
    return arr


def scan_dicom_folder(folder: str | os.PathLike, series_uid: str | None = None) -> DicomSeries:
    """Pick one image series in a folder, sort its slices and check its geometry.

    Args:
        folder: folder holding the series' files (not searched recursively; other series,
            non-image objects and non-DICOM files may be present).
        series_uid: the SeriesInstanceUID to read; default: the series with the most slices.

    Returns:
        The :class:`DicomSeries`.

    Raises:
        UserError: no DICOM image series, unknown ``series_uid``, or a geometry that is not one
            regular volume (several orientations, gantry tilt, duplicate positions, a single
            slice, slices of different sizes, missing position/orientation/spacing).
    """
    folder = Path(folder)
    groups: dict[str, list] = {}
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        ds = _read_header(entry)
        if ds is None or "Rows" not in ds or "Columns" not in ds:
            continue  # not DICOM, or no image (SEG/RTSTRUCT hold no Rows in a slice sense)
        if _text(ds, "Modality").upper() in _NON_IMAGE_MODALITIES:
            continue
        groups.setdefault(_text(ds, "SeriesInstanceUID"), []).append((entry, ds))
    if not groups:
        raise UserError(f"{folder}: no DICOM series found in this folder")
    if series_uid is not None:
        if series_uid not in groups:
            raise UserError(f"{folder}: no DICOM series with UID {series_uid} "
                            f"(found: {', '.join(sorted(groups))})")
        chosen = series_uid
    else:
        chosen = max(groups, key=lambda uid: (len(groups[uid]), uid))
    series = _order_and_check(folder, chosen, groups[chosen])
    series.series_count = len(groups)
    return series


def _order_and_check(folder: Path, uid: str, members: list) -> DicomSeries:
    label = f"{folder}: DICOM series {uid or '(no SeriesInstanceUID)'}"
    if len(members) < 2:
        raise UserError(f"{label} has a single slice; a 3D volume needs at least 2")
    first_path, first = members[0]
    size = (int(first.Rows), int(first.Columns))
    iop0 = _floats(first, "ImageOrientationPatient", 6, first_path)
    for path, ds in members:
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise UserError(f"{label}: slices of different sizes ({size[0]}x{size[1]} in "
                            f"{first_path.name}, {int(ds.Rows)}x{int(ds.Columns)} in {path.name})")
        iop = _floats(ds, "ImageOrientationPatient", 6, path)
        if np.max(np.abs(iop - iop0)) > _ORIENTATION_TOL:
            raise UserError(f"{label} mixes several slice orientations ({first_path.name}: "
                            f"{_fmt(iop0)}, {path.name}: {_fmt(iop)}); split it into one series "
                            f"per orientation")
    row_dir, col_dir = iop0[:3], iop0[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3 \
            or abs(row_dir @ col_dir) > 1e-3:
        raise UserError(f"{first_path}: ImageOrientationPatient {_fmt(iop0)} is not two "
                        f"orthogonal unit vectors")
    normal = np.cross(row_dir, col_dir)
    positions = np.stack([_floats(ds, "ImagePositionPatient", 3, p) for p, ds in members])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    members = [members[i] for i in order]
    positions, along = positions[order], along[order]

    gaps = np.diff(along)
    dup = np.flatnonzero(gaps < 1e-3)
    if dup.size:
        a, b = members[dup[0]][0].name, members[dup[0] + 1][0].name
        raise UserError(f"{label}: several files share a slice position ({a} and {b} at "
                        f"{along[dup[0]]:.2f} mm along the "
                        f"normal); duplicate or multi-phase series, pass --series or remove them")
    extent = positions[-1] - positions[0]
    sin_tilt = np.linalg.norm(np.cross(extent / np.linalg.norm(extent), normal))
    if sin_tilt > _TILT_SIN_TOL:
        deg = float(np.degrees(np.arcsin(min(sin_tilt, 1.0))))
        raise UserError(f"{label}: slices are tilted {deg:.2f} degrees against their plane "
                        f"(gantry tilt or sheared series); resample it to an orthogonal grid first")

    warnings = []
    step = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - step) > _GAP_REL_TOL * step + 1e-3)
    if uneven.size:
        i = int(uneven[0])
        ratio = gaps[i] / step
        if abs(ratio - round(ratio)) < 0.05 and round(ratio) >= 2:
            what = (f"{int(round(ratio)) - 1} missing slice(s) between {members[i][0].name} and "
                    f"{members[i + 1][0].name} (gap {gaps[i]:.2f} mm, slices {step:.2f} mm apart)")
        else:
            what = (f"uneven slice spacing: {gaps[i]:.2f} mm between {members[i][0].name} and "
                    f"{members[i + 1][0].name}, {step:.2f} mm elsewhere")
        more = f" and {uneven.size - 1} more gap(s)" if uneven.size > 1 else ""
        warnings.append(f"{what}{more}; the volume assumes even spacing, so positions past the "
                        f"gap are off by up to {abs(along[-1] - along[0] - step * (len(along) - 1)):.1f} mm")
    modality = _text(first, "Modality")  # a non-CT modality is warned by inference/checks.py

    spacing = _floats(first, "PixelSpacing", 2, first_path)  # (between rows, between columns)
    if np.any(spacing <= 0):
        raise UserError(f"{first_path}: PixelSpacing {_fmt(spacing)} must be positive")
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing[1]        # i = column index: along a row
    affine[:3, 1] = col_dir * spacing[0]        # j = row index: down a column
    affine[:3, 2] = extent / (len(members) - 1)  # k = slice index, ascending along the normal
    affine[:3, 3] = positions[0]

    sop_uids, class_uids = [], []
    for _path, ds in members:
        sop_uids.append(_text(ds, "SOPInstanceUID") or _meta_text(ds, "MediaStorageSOPInstanceUID"))
        class_uids.append(_text(ds, "SOPClassUID") or _meta_text(ds, "MediaStorageSOPClassUID"))
    frames = {_text(ds, "FrameOfReferenceUID") for _p, ds in members}
    studies = {_text(ds, "StudyInstanceUID") for _p, ds in members}
    return DicomSeries(
        folder=folder, series_uid=uid, files=[p for p, _ in members],
        sop_instance_uids=sop_uids, sop_class_uids=class_uids,
        study_uid=studies.pop() if len(studies) == 1 else "",
        frame_of_reference_uid=frames.pop() if len(frames) == 1 else "",
        modality=modality, rows=size[0], columns=size[1], affine_lps=affine,
        series_description=_text(first, "SeriesDescription"), warnings=warnings,
        headers=[ds for _p, ds in members])


def _fmt(values) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"
