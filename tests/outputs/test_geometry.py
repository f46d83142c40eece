"""Point 4 of issue 15: SEG and RTSTRUCT land on the right anatomy, proved by reading back.

For each layout (axial head-first-supine, scrambled files, flipped row direction, non-square
pixels, a second series in the folder) the series is written with pydicom by the test
(dicom_builder), which also keeps, per SOPInstanceUID, the label frame as stored in that file.
The SEG is read back with highdicom itself (frames looked up by source SOPInstanceUID) and must
equal those frames exactly; the RTSTRUCT contours are mapped to pixel coordinates with the
geometry the test wrote (not the product's) and rasterised: Dice >= 0.97 per organ.
"""
from __future__ import annotations

import numpy as np

from transunet_app.data.io import read_image
from transunet_app.data.labels import load_label_spec
from transunet_app.outputs.organs import Provenance, organs_present

from .dicom_builder import patient_to_pixel

PROV = Provenance(model="tiny", checkpoint_sha256="0" * 64, software_version="test")


def labels_on_image_grid(image, written) -> np.ndarray:
    """The true labels on the grid ``read_image`` built, placed via each file's SOPInstanceUID
    after checking that the CT pixels read are exactly those stored in that file."""
    series = image.meta["dicom_series"]
    assert sorted(series.sop_instance_uids) == sorted(written.sop_uids)  # the right series
    labels = np.zeros(image.shape, dtype=np.uint8)
    for k, uid in enumerate(series.sop_instance_uids):
        np.testing.assert_array_equal(image.array[:, :, k].T, written.ct_frames[uid])
        labels[:, :, k] = written.label_frames[uid].T
    return labels


def seg_frames_by_uid(path, uids) -> dict:
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    assert int(seg.NumberOfFrames) == len(uids) * len(seg.SegmentSequence)  # no frame dropped
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(uids),
                                               combine_segments=True)
    numbers = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    return dict(zip(uids, pixels)), numbers


def rasterise_rtstruct(path, written) -> dict:
    """ROI name -> {SOPInstanceUID: (rows, cols) bool} by the even-odd rule per plane."""
    import pydicom
    from skimage.draw import polygon2mask

    ds = pydicom.dcmread(str(path))
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    out = {}
    for rc in ds.ROIContourSequence:
        masks = out.setdefault(names[int(rc.ReferencedROINumber)], {})
        for c in rc.ContourSequence:
            assert c.ContourGeometricType == "CLOSED_PLANAR"
            uid = str(c.ContourImageSequence[0].ReferencedSOPInstanceUID)
            pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
            assert len(pts) == int(c.NumberOfContourPoints)
            ipp, row_dir, col_dir, _ = written.geometry[uid]
            # every point lies in the plane of the slice it references
            assert np.abs((pts - ipp) @ np.cross(row_dir, col_dir)).max() < 1e-3
            shape = written.label_frames[uid].shape
            mask = polygon2mask(shape, patient_to_pixel(pts, written.geometry[uid]))
            masks[uid] = masks.get(uid, np.zeros(shape, bool)) ^ mask
    return out


def test_seg_and_rtstruct_read_back_on_the_source_grid(layout, tmp_path):
    from transunet_app.outputs.dicom_seg import write_dicom_seg
    from transunet_app.outputs.rtstruct import write_rtstruct

    name, written = layout
    image = read_image(written.folder)
    labels = labels_on_image_grid(image, written)
    series = image.meta["dicom_series"]
    organs = organs_present(labels, load_label_spec()["classes"])
    assert len(organs) == 8

    write_dicom_seg(tmp_path / "seg.dcm", labels, series, organs, PROV)
    frames, numbers = seg_frames_by_uid(tmp_path / "seg.dcm", written.sop_uids)
    assert numbers == {i + 1: o.name for i, o in enumerate(organs)}
    to_class = np.array([0] + [o.label for o in organs], dtype=np.uint8)
    for uid in written.sop_uids:
        np.testing.assert_array_equal(to_class[frames[uid]], written.label_frames[uid], err_msg=f"{name} {uid}")

    write_rtstruct(tmp_path / "rt.dcm", labels, series, organs, PROV)
    masks = rasterise_rtstruct(tmp_path / "rt.dcm", written)
    assert sorted(masks) == sorted(o.name for o in organs)
    for organ in organs:
        inter = total = 0
        for uid in written.sop_uids:
            truth = written.label_frames[uid] == organ.label
            mask = masks[organ.name].get(uid, np.zeros_like(truth))
            inter += int((truth & mask).sum())
            total += int(truth.sum() + mask.sum())
        dice = 2 * inter / total
        assert dice >= 0.97, f"{name}: {organ.name} Dice {dice:.4f}"


def test_rtstruct_keeps_holes_and_islands(hfs_series, tmp_path):
    """A ring (hole) and two islands on one slice come back as such (even-odd rule)."""
    from skimage.draw import polygon2mask

    from transunet_app.outputs.rtstruct import slice_contours

    mask = np.zeros((40, 50), bool)
    mask[5:25, 5:25] = True
    mask[10:20, 10:20] = False          # hole
    mask[30:36, 30:45] = True           # island
    mask[2, 40] = True                  # one-pixel island
    contours = slice_contours(mask)
    assert len(contours) == 4
    back = np.zeros_like(mask)
    for c in contours:
        back ^= polygon2mask(mask.shape, c)
    np.testing.assert_array_equal(back, mask)
