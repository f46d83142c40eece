"""DICOM Segmentation (SEG) objects: write one from a label map, read one back.

The SEG is BINARY with one segment per organ present (segment numbers 1..N in label order),
built by highdicom from the source slices' headers, so it shares their Study, Frame of
Reference and patient module and references every source instance. Every frame is kept, empty
ones too (``omit_empty_frames=False``): viewers such as OHIF map frames to slices one to one.

Geometry: slice ``k`` of the label volume is ``series.files[k]`` and its frame is
``labels[:, :, k].T`` ((rows, columns); the volume's (i, j) are (column, row), see
:mod:`transunet_app.data.dicom_series`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError
from .organs import Organ, Provenance

#: Transfer syntax of ``--dicom-compress``: the only lossless compressed one highdicom accepts
#: for BINARY segmentations (JPEG 2000 lossless; needs an encoder such as pylibjpeg-openjpeg).
COMPRESSED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.4.90"


def _code(entry):
    from pydicom.sr.coding import Code

    return Code(entry["code"], entry["scheme"], entry["meaning"])


def algorithm_identification(prov: Provenance):
    """highdicom AlgorithmIdentificationSequence: name, version, family AI, model and SHA-256."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=prov.algorithm_name, version=prov.software_version,
        family=codes.cid7162.ArtificialIntelligence,
        parameters={"model": prov.model, "checkpoint_sha256": prov.checkpoint_sha256})


def write_dicom_seg(path: str | os.PathLike, labels: np.ndarray, series, organs: Sequence[Organ],
                    provenance: Provenance, compress: bool = False) -> Path:
    """Write a BINARY DICOM SEG of ``organs`` (exactly this file; no temporary name here).

    Args:
        path: the file to write.
        labels: (I, J, K) uint8 class ids on the series' grid (``Image.array`` order).
        series: the source :class:`~transunet_app.data.dicom_series.DicomSeries`.
        organs: the organs to encode (``organs_present``); segment n is ``organs[n - 1]``.
        provenance: algorithm identification.
        compress: JPEG 2000 lossless pixel data instead of uncompressed.

    Raises:
        UserError: the series cannot be referenced (empty UIDs), or no encoder for ``compress``.
    """
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian

    problem = series.reference_problem()
    if problem:
        raise UserError(f"{series.folder}: cannot write a DICOM SEG referencing this series: {problem}")
    if labels.shape != (series.columns, series.rows, len(series.files)):
        raise ValueError(f"labels {labels.shape} do not fit the series "
                         f"({series.columns}x{series.rows}x{len(series.files)})")
    if not organs:
        raise UserError(f"{series.folder}: no organ found, a DICOM SEG needs at least one segment")
    lut = np.zeros(256, dtype=np.uint8)
    for number, organ in enumerate(organs, start=1):
        lut[organ.label] = number
    frames = np.ascontiguousarray(lut[labels.transpose(2, 1, 0)])  # (K, rows, columns), segment numbers
    if series.multiframe:  # one SEG frame per source frame, in the source file's frame order
        frames = frames[np.argsort(np.asarray(series.frame_numbers))]
    algorithm = algorithm_identification(provenance)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=o.name[:64],
            segmented_property_category=_code(o.category), segmented_property_type=_code(o.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*o.rgb))
        for n, o in enumerate(organs, start=1)]
    syntax = COMPRESSED_TRANSFER_SYNTAX if compress else ExplicitVRLittleEndian
    sources = series.datasets()
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=_series_number(series, 900),
            sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="TransUNet App", manufacturer_model_name=provenance.model[:64],
            software_versions=provenance.software_version, device_serial_number="0",
            series_description=f"{provenance.algorithm_name} organ segmentation"[:64],
            content_label="ORGANS", content_description="Automated organ segmentation",
            content_creator_name=None, transfer_syntax_uid=syntax, omit_empty_frames=False)
    except (ImportError, RuntimeError) as exc:
        if compress:
            raise UserError(f"--dicom-compress: no JPEG 2000 encoder available ({str(exc).splitlines()[0]}); "
                            f"pip install pylibjpeg pylibjpeg-openjpeg, or write uncompressed") from None
        raise
    seg.save_as(str(path), enforce_file_format=True)
    return Path(path)


def _series_number(series, offset: int) -> int:
    """A series number after the source's (``offset`` + source number)."""
    try:
        return int(series.headers[0].get("SeriesNumber") or 0) + offset
    except (IndexError, ValueError, TypeError):
        return offset


def read_dicom_seg(path: str | os.PathLike, series) -> tuple[np.ndarray, dict[int, str]]:
    """A SEG's segments as a label map on the source series' grid.

    Args:
        path: the SEG file.
        series: the :class:`~transunet_app.data.dicom_series.DicomSeries` it segments.

    Returns:
        ``(labels, names)``: (I, J, K) uint8 segment numbers in :class:`Image` order, and
        segment number -> segment label.

    Raises:
        UserError: not a SEG, or it does not reference this series' instances.
    """
    import highdicom as hd
    import pydicom

    path = Path(path)
    try:
        seg = hd.seg.segread(str(path))
    except (pydicom.errors.InvalidDicomError, ValueError, AttributeError, KeyError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a DICOM Segmentation ({reason})") from None
    referenced = {uid for _study, _series, uid in seg.get_source_image_uids()}
    missing = [u for u in series.sop_instance_uids if u not in referenced]
    if len(missing) == len(series.sop_instance_uids):
        raise UserError(f"{path}: this SEG references none of the slices of {series.folder} "
                        f"(series {series.series_uid})")
    numbers = list(seg.get_segment_numbers())
    if max(numbers, default=0) > 255:
        raise UserError(f"{path}: {max(numbers)} segments; at most 255 fit a label map")
    volume = np.zeros((len(series.files), series.rows, series.columns), dtype=np.uint8)
    if series.multiframe:  # frames of one Enhanced CT file, in volume order
        volume[:] = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=series.sop_instance_uids[0],
            source_frame_numbers=list(series.frame_numbers), combine_segments=True,
            skip_overlap_checks=True, dtype=np.uint8)
    else:
        present = [u for u in series.sop_instance_uids if u in referenced]
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=present, combine_segments=True, skip_overlap_checks=True,
            dtype=np.uint8)  # (K', rows, columns)
        index = {u: k for k, u in enumerate(series.sop_instance_uids)}
        for frame, uid in zip(pixels, present):
            volume[index[uid]] = frame
    names = {n: str(seg.get_segment_description(n).SegmentLabel) for n in numbers}
    return np.ascontiguousarray(volume.transpose(2, 1, 0)), names


def seg_provenance(path: str | os.PathLike) -> dict:
    """Model, checkpoint SHA-256 and software version recorded in a SEG's algorithm
    identification (``{}`` when absent)."""
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    out: dict = {}
    for segment in ds.get("SegmentSequence", [])[:1]:
        for alg in segment.get("SegmentationAlgorithmIdentificationSequence", [])[:1]:
            out["software_version"] = str(alg.get("AlgorithmVersion", ""))
            params = str(alg.get("AlgorithmParameters", ""))
            for part in params.split(","):
                key, _, value = part.partition("=")
                if key.strip() in ("model", "checkpoint_sha256") and value.strip():
                    out[key.strip()] = value.strip()
    return out


def seg_as_label_map(seg_path, image, out_path: str | os.PathLike) -> Path:
    """Write a SEG as a NIfTI label map on ``image``'s grid plus its ``<stem>.json`` sidecar
    (segment number -> label), the form ``report`` and ``evaluate`` read.

    Args:
        seg_path: the SEG file.
        image: the source series read with :func:`~transunet_app.data.io.read_image`.
        out_path: the ``.nii.gz`` to write (its sidecar goes next to it).
    """
    from ..data.files import atomic_write_json, sidecar_path
    from ..data.io import write_nifti

    series = image.meta.get("dicom_series")
    if series is None:
        raise UserError(f"{seg_path}: a DICOM SEG needs its DICOM series as the image "
                        f"(got {image.source})")
    labels, names = read_dicom_seg(seg_path, series)
    out_path = Path(out_path)
    write_nifti(out_path, labels, like=image, dtype=np.uint8, overwrite=True)
    sidecar = {"labels": {"0": "background", **{str(n): name for n, name in names.items()}},
               **seg_provenance(seg_path)}
    atomic_write_json(sidecar_path(out_path), sidecar, overwrite=True)
    return out_path
