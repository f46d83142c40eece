"""Write CT DICOM series from a NIfTI volume with pydicom, in the layouts the geometry tests need.

Each file is a CT Image Storage instance as a scanner writes it (UIDs, patient/study modules,
ImagePositionPatient/ImageOrientationPatient, PixelSpacing, SliceThickness, uint16 pixels with
RescaleIntercept -1024). :func:`write_ct_series` also returns, per SOPInstanceUID, the frame of
CT values and of labels *as stored in that file* (rows, columns): the truth a SEG read back must
equal, computed here without the product's code.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class WrittenSeries:
    folder: Path
    series_uid: str
    study_uid: str
    frame_uid: str
    files: list          # in slice (k) order
    sop_uids: list       # in slice (k) order
    ct_frames: dict      # SOPInstanceUID -> (rows, cols) HU as stored
    label_frames: dict   # SOPInstanceUID -> (rows, cols) labels as stored
    geometry: dict       # SOPInstanceUID -> (IPP (3,), row_dir (3,), col_dir (3,), (row sp, col sp))


def write_ct_series(folder: Path, ct: np.ndarray, labels: np.ndarray, affine_ras: np.ndarray, *,
                    flip_rows: bool = False, spacing_scale=(1.0, 1.0), scramble: bool = False,
                    seed: int = 0, study_uid: str | None = None, series_number: int = 2,
                    name_prefix: str = "IM", transfer_syntax: str | None = None) -> WrittenSeries:
    """One CT file per slice k of ``ct`` (I, J, K) with RAS ``affine_ras``.

    Args:
        flip_rows: store each row right-to-left (ImageOrientationPatient row direction with -1
            components), as some scanners and reformatting tools do.
        spacing_scale: multiply the (i, j) voxel spacing (non-square pixels when unequal).
        scramble: random file names and InstanceNumbers (file order says nothing).
        transfer_syntax: compress the pixel data with pydicom's encoder for this UID (RLE
            Lossless natively; JPEG 2000 and JPEG-LS with pylibjpeg-openjpeg / pyjpegls), as a
            PACS export does; default: Explicit VR Little Endian, uncompressed.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    aff = np.array(affine_ras, dtype=float)
    aff[:3, 0] *= spacing_scale[0]
    aff[:3, 1] *= spacing_scale[1]
    lps = LPS_FROM_RAS @ aff
    I, J, K = ct.shape  # noqa: E741 (voxel indices I, J, K as in the DICOM standard)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    order = rng.permutation(K) if scramble else np.arange(K)
    out = WrittenSeries(folder, series_uid, study_uid, frame_uid, [], [], {}, {}, {})
    now = dt.datetime(2024, 3, 1, 10, 30, 0)
    for k in range(K):
        # stored frame[r, c] = volume[i(c), j(r), k]
        ct_f, lab_f = ct[:, :, k].T, labels[:, :, k].T
        if flip_rows:
            ct_f, lab_f = ct_f[:, ::-1], lab_f[:, ::-1]
            i0 = I - 1
            row_vec = -lps[:3, 0]
        else:
            i0 = 0
            row_vec = lps[:3, 0]
        col_vec = lps[:3, 1]
        ipp = (lps @ np.array([i0, 0, k, 1.0]))[:3]
        sp_c, sp_r = float(np.linalg.norm(row_vec)), float(np.linalg.norm(col_vec))
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = f"{name_prefix}{int(order[k]):04d}_{rng.integers(1e6):06d}.dcm" if scramble else f"{name_prefix}{k:04d}.dcm"
        ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = "A123"
        ds.Modality = "CT"
        ds.Manufacturer = "TestScanner"
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = "Abdomen 3mm"
        ds.PatientName = "Test^Patient"
        ds.PatientID = "P001"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "O"
        ds.SliceThickness = f"{abs(lps[2, 2]):.4g}"
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
        ds.BodyPartExamined = "ABDOMEN"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyID = "S1"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = int(order[k]) + 1
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([row_vec / sp_c, col_vec / sp_r])]
        ds.SliceLocation = f"{ipp[2]:.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ct_f.shape
        ds.PixelSpacing = [f"{sp_r:.6f}", f"{sp_c:.6f}"]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-2048", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = np.ascontiguousarray(np.clip(ct_f.astype(np.int32) + 2048, 0, 65535).astype(np.uint16)).tobytes()
        if transfer_syntax is not None:
            ds.compress(transfer_syntax, generate_instance_uid=False)  # lossless: same instance
        ds.save_as(str(folder / name), enforce_file_format=True)
        out.files.append(folder / name)
        out.sop_uids.append(sop_uid)
        out.ct_frames[sop_uid] = np.ascontiguousarray(ct_f)
        out.label_frames[sop_uid] = np.ascontiguousarray(lab_f)
        out.geometry[sop_uid] = (ipp, row_vec / sp_c, col_vec / sp_r, (sp_r, sp_c))
    return out


def patient_to_pixel(points_lps: np.ndarray, geometry) -> np.ndarray:
    """(N, 3) LPS mm -> (N, 2) (row, column) pixel coordinates in a file with ``geometry``."""
    ipp, row_dir, col_dir, (sp_r, sp_c) = geometry
    d = np.asarray(points_lps, dtype=float) - ipp
    return np.stack([d @ col_dir / sp_r, d @ row_dir / sp_c], axis=1)
