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

An Enhanced or Legacy Converted Enhanced CT (one multi-frame file: per-frame positions in
PerFrameFunctionalGroupsSequence, orientation, pixel spacing and rescale shared or per frame)
is one series whose slices are its frames, ordered and checked the same way.

The result also keeps what a DICOM writer needs to reference the source: the ordered files,
their SOP Class / Instance UIDs (filled from the file meta information when anonymisation
emptied them), Study, Series and Frame of Reference UIDs, and the voxel -> patient geometry.
Slice ``k`` of the volume SimpleITK reads from :attr:`DicomSeries.files` is ``files[k]`` (frame
``frame_numbers[k]`` of it for a multi-frame file); its pixel ``(row r, column c)`` is voxel
``(i, j, k) = (c, r, k)``.
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
    #: (K,) 1-based frame number of each slice in its multi-frame file (None: single-frame files)
    frame_numbers: list | None = None
    #: (K, 3) ImagePositionPatient of each slice, LPS mm, in volume order
    positions: np.ndarray | None = field(default=None, repr=False)
    #: (6,) ImageOrientationPatient (row direction, column direction) shared by every slice
    orientation: np.ndarray | None = field(default=None, repr=False)
    #: (2,) PixelSpacing (between rows, between columns) in mm
    pixel_spacing: np.ndarray | None = field(default=None, repr=False)
    #: (K, 2) (slope, intercept) to HU of each frame of a multi-frame file (None otherwise)
    rescale: np.ndarray | None = field(default=None, repr=False)

    @property
    def multiframe(self) -> bool:
        """Whether the slices are the frames of one multi-frame (Enhanced CT) file."""
        return self.frame_numbers is not None

    @property
    def affine_ras(self) -> np.ndarray:
        """(4, 4) voxel -> RAS+ mm (nibabel's convention, the project's :class:`Image`)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps

    def datasets(self) -> list:
        """The headers (pydicom, without pixel data) of the files in volume order (one per file:
        a multi-frame source gives one), with SOP Class /
        Instance UIDs filled from the file meta where the data set left them empty and the
        Type 2 patient/study attributes that anonymisation dropped present but empty (what a
        derived object copies must exist, empty is valid)."""
        out, seen = [], set()
        headers = self.headers if len(self.headers) == len(self.files) else [None] * len(self.files)
        for path, sop_uid, class_uid, ds in zip(self.files, self.sop_instance_uids,
                                                self.sop_class_uids, headers):
            if path in seen:  # a multi-frame file: one data set for all its frames
                continue
            seen.add(path)
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
        if len(set(self.sop_instance_uids)) != len(set(map(str, self.files))):
            return "several slices share one SOPInstanceUID"
        missing = [Path(f).name for f, u in zip(self.files, self.sop_class_uids) if not u]
        if missing:
            return f"SOPClassUID is unknown in {len(missing)} file(s), e.g. {missing[0]}"
        return None


def _read_header(path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        for _element in ds.iterall():  # pydicom parses values lazily: a damaged sequence
            pass                       # would raise later, outside this guard
        return ds
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
        series_uid: the SeriesInstanceUID to read; default: the series with the most slices
            (a multi-frame file counts its frames).

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
        chosen = max(groups, key=lambda uid: (sum(_frames(ds) for _p, ds in groups[uid]), uid))
    series = _order_and_check(folder, chosen, groups[chosen])
    series.series_count = len(groups)
    if series_uid is None and len(groups) > 1:
        # a study exported into one folder (phases, reconstructions): say which one is read
        def what(uid: str) -> str:
            desc = _text(groups[uid][0][1], "SeriesDescription")
            return (f"{uid}{f' ({desc})' if desc else ''}, "
                    f"{sum(_frames(ds) for _p, ds in groups[uid])} slices")

        others = sorted((u for u in groups if u != chosen), key=lambda u: -len(groups[u]))
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        series.warnings.append(f"{len(groups)} image series in this folder; reading the largest, "
                               f"{what(chosen)}; the others: {'; '.join(what(u) for u in others[:3])}"
                               f"{more} (--series UID reads another)")
    return series


def scan_dicom_file(path: str | os.PathLike) -> DicomSeries | None:
    """The series of one multi-frame (Enhanced CT) file; None when ``path`` is not one."""
    path = Path(path)
    ds = _read_header(path)
    if ds is None or "Rows" not in ds or _frames(ds) < 2:
        return None
    return _order_and_check(path.parent, _text(ds, "SeriesInstanceUID"), [(path, ds)])


def is_multiframe_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one multi-frame image file (an Enhanced CT: a whole series)."""
    ds = _read_header(Path(path))
    return ds is not None and "Rows" in ds and _frames(ds) > 1


def _frames(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


@dataclass
class _Slice:
    """One 2D image of a series: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    ds: object            # the file's pydicom header
    frame: int | None     # 1-based frame number in a multi-frame file
    iop: np.ndarray       # (6,)
    ipp: np.ndarray       # (3,) LPS mm
    spacing: np.ndarray   # (2,) between rows, between columns (mm)
    rescale: tuple = (1.0, 0.0)

    @property
    def name(self) -> str:
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame}"


def _drop_copies(members: list) -> tuple[list, list]:
    """Members without second files of one instance (an export copied twice into one folder:
    ``IM0001`` and ``IM0001 (1)``), and the (copy, kept) pairs dropped."""
    kept, first, copies = [], {}, []
    for path, ds in members:
        uid = _text(ds, "SOPInstanceUID")
        if uid and uid in first:
            copies.append((path, first[uid]))
            continue
        if uid:
            first[uid] = path
        kept.append((path, ds))
    return kept, copies


def _number(ds, keyword: str, default: float, where) -> float:
    """A finite number attribute, ``default`` when absent or empty."""
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise UserError(f"{where}: {keyword} {str(value)[:20]!r} is not a finite number")
    return number


def _natural(text: str):
    return (0, int(text)) if text.isdigit() else (1, text)


def _frame_item(ds, frame_groups, keyword: str, path, frame: int, required: bool = True):
    """The first item of functional group ``keyword`` for a frame: per frame, else shared
    (None when absent and not ``required``)."""
    for groups in (frame_groups, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if groups is not None and keyword in groups and len(groups.get(keyword)) > 0:
            return groups.get(keyword)[0]
    if not required:
        return None
    raise UserError(f"{path}: frame {frame} has no {keyword}; cannot place it in space")


def _multiframe_slices(path: Path, ds) -> list[_Slice]:
    """The frames of an Enhanced / Legacy Converted Enhanced CT file as slices."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    n = _frames(ds)
    if per_frame is None or len(per_frame) != n:
        raise UserError(f"{path}: multi-frame image with {n} frames but "
                        f"{0 if per_frame is None else len(per_frame)} per-frame functional groups; "
                        f"cannot place its frames in space")
    out = []
    for f, groups in enumerate(per_frame, start=1):
        what = f"{path} frame {f}"
        pos = _frame_item(ds, groups, "PlanePositionSequence", path, f)
        ori = _frame_item(ds, groups, "PlaneOrientationSequence", path, f)
        meas = _frame_item(ds, groups, "PixelMeasuresSequence", path, f)
        tr = _frame_item(ds, groups, "PixelValueTransformationSequence", path, f, required=False)
        tr = ds if tr is None else tr  # no functional group: the top-level attributes, if any
        rescale = (_number(tr, "RescaleSlope", 1.0, what), _number(tr, "RescaleIntercept", 0.0, what))
        out.append(_Slice(path, ds, f, _floats(ori, "ImageOrientationPatient", 6, what),
                          _floats(pos, "ImagePositionPatient", 3, what),
                          _floats(meas, "PixelSpacing", 2, what), rescale))
    return out


def _order_and_check(folder: Path, uid: str, members: list) -> DicomSeries:
    label = f"{folder}: DICOM series {uid or '(no SeriesInstanceUID)'}"
    warnings = []
    members, copies = _drop_copies(members)
    if copies:
        warnings.append(f"{len(copies)} file(s) are copies of another file's instance (same "
                        f"SOPInstanceUID), e.g. {copies[0][0].name} = {copies[0][1].name}; each "
                        f"instance is read once")
    multi = [(p, ds) for p, ds in members if _frames(ds) > 1]
    if multi and len(members) > 1:
        raise UserError(f"{label} has {len(members)} files of which {len(multi)} multi-frame "
                        f"({multi[0][0].name}); one series must be single-frame files or one "
                        f"multi-frame file: move the others out of the folder")
    if multi:
        slices = _multiframe_slices(*multi[0])
    else:
        slices = [_Slice(p, ds, None, _floats(ds, "ImageOrientationPatient", 6, p),
                         _floats(ds, "ImagePositionPatient", 3, p),
                         _floats(ds, "PixelSpacing", 2, p)) for p, ds in members]
    if len(slices) < 2:
        raise UserError(f"{label} has a single slice; a 3D volume needs at least 2")
    first = slices[0]
    size = (int(first.ds.Rows), int(first.ds.Columns))
    iop0 = first.iop
    for sl in slices:
        if (int(sl.ds.Rows), int(sl.ds.Columns)) != size:
            raise UserError(f"{label}: slices of different sizes ({size[0]}x{size[1]} in "
                            f"{first.name}, {int(sl.ds.Rows)}x{int(sl.ds.Columns)} in {sl.name})")
        if np.max(np.abs(sl.iop - iop0)) > _ORIENTATION_TOL:
            raise UserError(f"{label} mixes several slice orientations ({first.name}: "
                            f"{_fmt(iop0)}, {sl.name}: {_fmt(sl.iop)}); split it into one series "
                            f"per orientation")
    row_dir, col_dir = iop0[:3], iop0[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3 \
            or abs(row_dir @ col_dir) > 1e-3:
        raise UserError(f"{first.path}: ImageOrientationPatient {_fmt(iop0)} is not two "
                        f"orthogonal unit vectors")
    normal = np.cross(row_dir, col_dir)
    positions = np.stack([sl.ipp for sl in slices])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    positions, along = positions[order], along[order]

    gaps = np.diff(along)
    dup = np.flatnonzero(gaps < 1e-3)
    if dup.size:
        a, b = slices[dup[0]], slices[dup[0] + 1]
        acquisitions = sorted({_text(sl.ds, "AcquisitionNumber") for sl in slices} - {""}, key=_natural)
        why = (f"the series holds {len(acquisitions)} acquisitions (AcquisitionNumber "
               f"{', '.join(acquisitions)}): move the files of the ones not to segment out of the folder"
               if len(acquisitions) > 1 else
               "two images of one place (a repeated scan or a second phase in the same series): "
               "move the files not to segment out of the folder")
        raise UserError(f"{label}: several files share a slice position ({a.name} and {b.name} at "
                        f"{along[dup[0]]:.2f} mm along the normal); {why}")
    extent = positions[-1] - positions[0]
    sin_tilt = np.linalg.norm(np.cross(extent / np.linalg.norm(extent), normal))
    if sin_tilt > _TILT_SIN_TOL:
        deg = float(np.degrees(np.arcsin(min(sin_tilt, 1.0))))
        raise UserError(f"{label}: slices are tilted {deg:.2f} degrees against their plane "
                        f"(gantry tilt or sheared series); resample it to an orthogonal grid first")

    step = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - step) > _GAP_REL_TOL * step + 1e-3)
    if uneven.size:
        i = int(uneven[0])
        ratio = gaps[i] / step
        if abs(ratio - round(ratio)) < 0.05 and round(ratio) >= 2:
            what = (f"{int(round(ratio)) - 1} missing slice(s) between {slices[i].name} and "
                    f"{slices[i + 1].name} (gap {gaps[i]:.2f} mm, slices {step:.2f} mm apart)")
        else:
            what = (f"uneven slice spacing: {gaps[i]:.2f} mm between {slices[i].name} and "
                    f"{slices[i + 1].name}, {step:.2f} mm elsewhere")
        more = f" and {uneven.size - 1} more gap(s)" if uneven.size > 1 else ""
        warnings.append(f"{what}{more}; the volume assumes even spacing, so positions past the "
                        f"gap are off by up to {abs(along[-1] - along[0] - step * (len(along) - 1)):.1f} mm")
    modality = _text(first.ds, "Modality")  # a non-CT modality is warned by inference/checks.py

    spacing = first.spacing  # (between rows, between columns)
    if np.any(spacing <= 0):
        raise UserError(f"{first.path}: PixelSpacing {_fmt(spacing)} must be positive")
    odd = next((sl for sl in slices
                if np.max(np.abs(sl.spacing - spacing)) > 1e-4 * float(np.max(spacing))), None)
    if odd is not None:
        raise UserError(f"{label}: pixel spacing differs between slices ({first.name}: "
                        f"{_fmt(spacing)}, {odd.name}: {_fmt(odd.spacing)})")
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing[1]        # i = column index: along a row
    affine[:3, 1] = col_dir * spacing[0]        # j = row index: down a column
    affine[:3, 2] = extent / (len(slices) - 1)  # k = slice index, ascending along the normal
    affine[:3, 3] = positions[0]

    sop_uids, class_uids = [], []
    for sl in slices:
        sop_uids.append(_text(sl.ds, "SOPInstanceUID") or _meta_text(sl.ds, "MediaStorageSOPInstanceUID"))
        class_uids.append(_text(sl.ds, "SOPClassUID") or _meta_text(sl.ds, "MediaStorageSOPClassUID"))
    frames = {_text(sl.ds, "FrameOfReferenceUID") for sl in slices}
    studies = {_text(sl.ds, "StudyInstanceUID") for sl in slices}
    return DicomSeries(
        folder=folder, series_uid=uid, files=[sl.path for sl in slices],
        sop_instance_uids=sop_uids, sop_class_uids=class_uids,
        study_uid=studies.pop() if len(studies) == 1 else "",
        frame_of_reference_uid=frames.pop() if len(frames) == 1 else "",
        modality=modality, rows=size[0], columns=size[1], affine_lps=affine,
        series_description=_text(first.ds, "SeriesDescription"), warnings=warnings,
        headers=[sl.ds for sl in slices],
        frame_numbers=[sl.frame for sl in slices] if multi else None,
        positions=positions, orientation=iop0, pixel_spacing=spacing,
        rescale=np.asarray([sl.rescale for sl in slices]) if multi else None)


def _fmt(values) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"
