"""DICOM RT Structure Set (RTSTRUCT): one ROI per organ, closed planar contours per slice.

Written with pydicom (rt-utils was not used: it has open orientation bugs, and what is needed
here is small). Contours come from scikit-image's marching squares at level 0.5 on each slice's
mask (padded so every contour closes): the polygon passes half-way between inside and outside
pixel centres, so rasterising it by pixel centres gives the mask back. Holes and separate
islands become separate contours on the same slice; readers combine the contours of one
plane by the even-odd rule (a contour inside another is a hole), as Eclipse, Slicer, OHIF and
plastimatch do.

Points are in patient coordinates (DICOM LPS, mm): pixel (row r, column c) of slice file k is
``IPP_k + c * Δc * row_dir + r * Δr * col_dir`` (``PixelSpacing = (Δr, Δc)``). Each contour
references the source slice it lies on; the structure set references the source series,
study and Frame of Reference.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError
from .organs import Organ, Provenance

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: The Study Component Management SOP Class that RT references use for a study.
_STUDY_REFERENCE_CLASS = "1.2.840.10008.3.1.2.3.1"


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Remove vertices that lie on the straight line through their neighbours (the polygon is
    unchanged; marching squares emits one vertex per pixel edge crossed)."""
    prev = points - np.roll(points, 1, axis=0)
    nxt = np.roll(points, -1, axis=0) - points
    cross = prev[:, 0] * nxt[:, 1] - prev[:, 1] * nxt[:, 0]
    keep = (np.abs(cross) > 1e-9) | ((prev * nxt).sum(axis=1) <= 0)
    return points[keep] if keep.sum() >= 3 else points


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours of a 2D mask as (N, 2) (row, column) pixel coordinates, no repeated end.

    Args:
        mask: (rows, columns) bool.
    """
    from skimage.measure import find_contours

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.zeros((r1 - r0 + 2, c1 - c0 + 2), dtype=np.float32)
    crop[1:-1, 1:-1] = mask[r0:r1, c0:c1]
    out = []
    for contour in find_contours(crop, 0.5):
        if len(contour) > 1 and np.allclose(contour[0], contour[-1]):
            contour = contour[:-1]
        contour = _drop_collinear(contour)
        if len(contour) >= 3:
            out.append(contour + np.array([r0 - 1, c0 - 1], dtype=np.float64))
    return out


def _contour_data_element(points: np.ndarray):
    """ContourData (3006,0050) as an encoded element: the values formatted once in C ("%.3f",
    1 um, at most 16 characters for |x| < 1e11 mm) instead of one validated DS object per
    number (pydicom spent most of the RTSTRUCT's time there)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    values = points.ravel().tolist()
    text = ("\\".join(["%.3f"] * len(values)) % tuple(values)).replace("-0.000", "0.000")
    raw = text.encode("ascii")
    if len(raw) % 2:
        raw += b" "
    return RawDataElement(Tag(0x30060050), "DS", len(raw), raw, 0, False, True)


def write_rtstruct(path: str | os.PathLike, labels: np.ndarray, series, organs: Sequence[Organ],
                   provenance: Provenance) -> Path:
    """Write an RT Structure Set of ``organs`` (exactly this file; no temporary name here).

    Args:
        path: the file to write.
        labels: (I, J, K) class ids on the series' grid (``Image.array`` order: i = column,
            j = row, k = ``series.files[k]``).
        series: the source :class:`~transunet_app.data.dicom_series.DicomSeries`.
        organs: one ROI each, numbered 1..N in this order.
        provenance: algorithm and model, written as the ROI generation description.

    Raises:
        UserError: the series cannot be referenced (empty UIDs) or no organ to write.
    """
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    problem = series.reference_problem()
    if problem:
        raise UserError(f"{series.folder}: cannot write an RTSTRUCT referencing this series: {problem}")
    if labels.shape != (series.columns, series.rows, len(series.files)):
        raise ValueError(f"labels {labels.shape} do not fit the series")
    if not organs:
        raise UserError(f"{series.folder}: no organ found, an RTSTRUCT needs at least one ROI")
    src = series.datasets()[0]
    # slice k's origin and pixel steps (LPS mm), from the positions the series was checked with
    # (a multi-frame source keeps them in its functional groups, not in top-level attributes)
    iop, sp = series.orientation, series.pixel_spacing
    geometry = [(ipp, iop[:3] * sp[1], iop[3:] * sp[0]) for ipp in series.positions]

    now = _dt.datetime.now()
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    if "SpecificCharacterSet" in src:
        ds.SpecificCharacterSet = src.SpecificCharacterSet
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    # Patient and study: copied from the source (Type 2: empty when the source lacks them).
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
               "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        setattr(ds, kw, src.get(kw, "") or "")
    for kw in ("IssuerOfPatientID", "OtherPatientIDs", "PatientAge", "PatientWeight",
               "PatientSize", "StudyDescription"):
        if kw in src:
            setattr(ds, kw, src.get(kw))
    ds.StudyInstanceUID = series.study_uid
    # RT Series, General Equipment
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = _series_number(src, 901)
    ds.SeriesDescription = f"{provenance.algorithm_name} organ contours"[:64]
    ds.OperatorsName = ""
    ds.Manufacturer = "TransUNet App"
    ds.ManufacturerModelName = provenance.model[:64]
    ds.SoftwareVersions = provenance.software_version
    ds.InstanceNumber = 1
    # Frame of Reference (the source's)
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.PositionReferenceIndicator = src.get("PositionReferenceIndicator", "") or ""
    # Structure Set
    ds.StructureSetLabel = "ORGANS"
    ds.StructureSetName = "Automated organs"
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime

    def image_ref(k: int) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = series.sop_class_uids[k]
        item.ReferencedSOPInstanceUID = series.sop_instance_uids[k]
        if series.multiframe:  # the frame of an Enhanced CT file this contour lies on
            item.ReferencedFrameNumber = series.frame_numbers[k]
        return item

    rt_series = Dataset()
    rt_series.SeriesInstanceUID = series.series_uid
    rt_series.ContourImageSequence = Seq([image_ref(k) for k in range(len(series.files))])
    rt_study = Dataset()
    rt_study.ReferencedSOPClassUID = _STUDY_REFERENCE_CLASS
    rt_study.ReferencedSOPInstanceUID = series.study_uid
    rt_study.RTReferencedSeriesSequence = Seq([rt_series])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = series.frame_of_reference_uid
    frame_ref.RTReferencedStudySequence = Seq([rt_study])
    ds.ReferencedFrameOfReferenceSequence = Seq([frame_ref])

    from scipy.ndimage import find_objects

    boxes = find_objects(labels)  # bounding box of every label id, one pass over the volume
    description = (f"{provenance.algorithm_name} {provenance.software_version}, model "
                   f"{provenance.model}, checkpoint SHA-256 {provenance.checkpoint_sha256}")[:64]
    roi_items, contour_items, observation_items = [], [], []
    for number, organ in enumerate(organs, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = series.frame_of_reference_uid
        roi.ROIName = organ.name[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = description
        roi_items.append(roi)

        contours = []
        box = boxes[organ.label - 1] if organ.label - 1 < len(boxes) else None
        if box is None:  # organs_present() lists only organs with voxels
            raise ValueError(f"organ {organ.name} (label {organ.label}) has no voxel")
        organ_box = labels[box] == organ.label  # (i, j, k) inside the organ's bounding box
        i0, j0, k0 = box[0].start, box[1].start, box[2].start
        for dk in np.flatnonzero(organ_box.any(axis=(0, 1))):
            k = k0 + int(dk)
            ipp, step_c, step_r = geometry[k]
            for rc in slice_contours(organ_box[:, :, dk].T):
                rc = rc + np.array([j0, i0], dtype=np.float64)  # box -> slice (row, column)
                points = ipp[None, :] + rc[:, 1:2] * step_c[None, :] + rc[:, 0:1] * step_r[None, :]
                item = Dataset()
                item.ContourImageSequence = Seq([image_ref(k)])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(points)
                item.ContourNumber = len(contours) + 1
                item[0x30060050] = _contour_data_element(points)
                contours.append(item)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(organ.rgb)
        roi_contour.ReferencedROINumber = number
        roi_contour.ContourSequence = Seq(contours)
        contour_items.append(roi_contour)

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        code = Dataset()
        code.CodeValue = organ.type["code"]
        code.CodingSchemeDesignator = organ.type["scheme"]
        code.CodeMeaning = organ.type["meaning"]
        obs.RTROIIdentificationCodeSequence = Seq([code])
        observation_items.append(obs)
    ds.StructureSetROISequence = Seq(roi_items)
    ds.ROIContourSequence = Seq(contour_items)
    ds.RTROIObservationsSequence = Seq(observation_items)
    approval = "UNAPPROVED"
    ds.ApprovalStatus = approval
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


def _series_number(src, offset: int) -> int:
    try:
        return int(src.get("SeriesNumber") or 0) + offset
    except (TypeError, ValueError):
        return offset


def read_rtstruct_contours(path: str | os.PathLike) -> dict[str, list[tuple[str, np.ndarray]]]:
    """ROI name -> [(referenced SOPInstanceUID, (N, 3) LPS points mm), ...] of an RTSTRUCT."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    out: dict[str, list] = {}
    for rc in ds.ROIContourSequence:
        items = out.setdefault(names[int(rc.ReferencedROINumber)], [])
        for c in rc.get("ContourSequence", []):
            uid = str(c.ContourImageSequence[0].ReferencedSOPInstanceUID)
            items.append((uid, np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)))
    return out
