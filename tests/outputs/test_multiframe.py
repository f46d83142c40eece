"""Enhanced (multi-frame) CT in, through the CLI: one file holding the whole series, frames in
the file's own order, geometry and rescale in functional groups. Read to the same HU and grid as
the classic series; SEG and RTSTRUCT reference its frames and read back onto them."""
from __future__ import annotations

import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest

from transunet_app.data.io import read_image
from transunet_app.errors import UserError

from .dicom_builder import write_ct_series


def to_enhanced(written, path, frame_order=None):
    """Convert a classic series to one Legacy Converted Enhanced CT file (highdicom), frames in
    ``frame_order`` (indices into the series' slices; default: highdicom's own)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    sources = [pydicom.dcmread(str(f)) for f in written.files]
    if frame_order is not None:
        sources = [sources[i] for i in frame_order]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        sources, series_instance_uid=generate_uid(), series_number=7,
        sop_instance_uid=generate_uid(), instance_number=1,
        include_dimension_index=False if frame_order is not None else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    enhanced.save_as(str(path))
    return path


def frame_positions(path) -> np.ndarray:
    """(F, 3) ImagePositionPatient of every frame, read independently of the product."""
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    return np.asarray([[float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient]
                       for g in ds.PerFrameFunctionalGroupsSequence])


@pytest.fixture(scope="module")
def enhanced(tmp_path_factory, ct_volume):
    """(classic WrittenSeries, enhanced file) of the shared CT's 16 slices, frames scrambled."""
    ct, lab, affine = ct_volume
    root = tmp_path_factory.mktemp("enhanced")
    written = write_ct_series(root / "classic", ct, lab, affine)
    order = np.random.default_rng(5).permutation(ct.shape[2])
    return written, to_enhanced(written, root / "enhanced" / "ct_enhanced.dcm", order), order


def test_enhanced_ct_reads_like_the_classic_series(enhanced):
    written, path, order = enhanced
    classic = read_image(written.folder)
    for source in (path.parent, path):  # the folder holding it, or the file itself
        image = read_image(source)
        series = image.meta["dicom_series"]
        assert series.multiframe and series.frame_numbers != sorted(series.frame_numbers)
        np.testing.assert_array_equal(image.array, classic.array)
        np.testing.assert_allclose(image.affine, classic.affine, atol=1e-6)
        assert image.meta["frames"] == len(order) and image.meta["modality"] == "CT"


def test_segment_enhanced_ct_writes_seg_and_rtstruct_on_its_frames(enhanced, tmp_path, synapse_ckpt,
                                                                   run_segment, run_transunet):
    import highdicom as hd
    from skimage.draw import polygon2mask

    from .dicom_builder import patient_to_pixel

    written, path, _ = enhanced
    out = tmp_path / "out"
    code, _, err = run_segment(path.parent, "-o", out, "--checkpoint", synapse_ckpt, "--quiet",
                               "--output-type", "nifti,dicom-seg,rtstruct", "--precision", "fp32")
    assert code == 0, err
    case = path.parent.name
    nifti = nib.load(str(out / f"{case}.nii.gz"))
    labels = np.asarray(nifti.dataobj)
    classes = json.loads((out / f"{case}.json").read_text(encoding="utf-8"))["labels"]
    # frame f of the source lies at slice k of the NIfTI: found from its own position
    to_voxel = np.linalg.inv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ nifti.affine)
    ks = [(to_voxel @ np.append(p, 1.0))[2] for p in frame_positions(path)]
    assert np.allclose(ks, np.round(ks), atol=1e-4)
    truth = [labels[:, :, int(round(k))].T for k in ks]   # (rows, cols) per frame, file order
    present = sorted({int(v) for f in truth for v in np.unique(f)} - {0})
    assert present, "the model found no organ: nothing to compare"

    sop_uid = str(pydicom.dcmread(str(path), stop_before_pixels=True).SOPInstanceUID)
    seg = hd.seg.segread(str(out / f"{case}_seg.dcm"))
    assert int(seg.NumberOfFrames) == len(ks) * len(seg.SegmentSequence)  # no frame dropped
    frames = seg.get_pixels_by_source_frame(source_sop_instance_uid=sop_uid,
                                            source_frame_numbers=list(range(1, len(ks) + 1)),
                                            combine_segments=True)
    numbers = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert list(numbers.values()) == [classes[str(c)] for c in present]
    to_class = np.array([0] + present, dtype=np.uint8)
    for f, want in enumerate(truth):
        np.testing.assert_array_equal(to_class[frames[f]], want, err_msg=f"frame {f + 1}")

    rt = pydicom.dcmread(str(out / f"{case}_rtstruct.dcm"))
    listed = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
        .RTReferencedSeriesSequence[0].ContourImageSequence
    assert sorted(int(i.ReferencedFrameNumber) for i in listed) == list(range(1, len(ks) + 1))
    assert {str(i.ReferencedSOPInstanceUID) for i in listed} == {sop_uid}
    names = {int(r.ROINumber): str(r.ROIName) for r in rt.StructureSetROISequence}
    positions = frame_positions(path)
    normal = np.cross(*np.asarray(written.geometry[written.sop_uids[0]][1:3]))
    geometry0 = written.geometry[written.sop_uids[0]]
    for rc in rt.ROIContourSequence:
        name = names[int(rc.ReferencedROINumber)]
        c = next(c for c, n in classes.items() if n == name)
        masks = [np.zeros_like(t, dtype=bool) for t in truth]
        for contour in rc.ContourSequence:
            f = int(contour.ContourImageSequence[0].ReferencedFrameNumber)
            pts = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            assert np.abs((pts - positions[f - 1]) @ normal).max() < 1e-3  # on its frame's plane
            frame_geometry = (positions[f - 1],) + tuple(geometry0[1:])
            masks[f - 1] ^= polygon2mask(truth[f - 1].shape, patient_to_pixel(pts, frame_geometry))
        want = np.stack([t == int(c) for t in truth])
        got = np.stack(masks)
        assert 2 * (want & got).sum() / (want.sum() + got.sum()) >= 0.97, name

    # the report reads the SEG back onto the enhanced series: the NIfTI report's volumes
    code, _, err = run_transunet("report", "--image", path.parent, "--labels", out / f"{case}_seg.dcm",
                                 "-o", tmp_path / "from_seg.html")
    assert code == 0, err
    code, _, err = run_transunet("report", "--image", path.parent, "--labels", out / f"{case}.nii.gz",
                                 "-o", tmp_path / "from_nifti.html")
    assert code == 0, err

    def volumes(html_path):
        html = html_path.read_text(encoding="utf-8")
        start = html.index('id="report-data">') + len('id="report-data">')
        stats = json.loads(html[start:html.index("</script>", start)])["statistics"]
        return {n: s["volume_ml"] for n, s in stats.items() if s["status"] != "absent"}

    assert volumes(tmp_path / "from_seg.html") == volumes(tmp_path / "from_nifti.html")

    exe = shutil.which("dciodvfy")
    if exe:  # CI installs dicom3tools; test_validators.py fails there when it is missing
        for kind in ("seg", "rtstruct"):
            res = subprocess.run([exe, str(out / f"{case}_{kind}.dcm")], capture_output=True,
                                 text=True, timeout=120)
            errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
            assert not errors, "\n".join(errors)


def _small_enhanced(tmp_path):
    rng = np.random.default_rng(2)
    ct = rng.integers(-1000, 1500, size=(40, 32, 5)).astype(np.int16)
    written = write_ct_series(tmp_path / "classic", ct, np.zeros(ct.shape, np.uint8),
                              np.diag([-0.7, -0.7, 2.0, 1.0]))
    return ct, to_enhanced(written, tmp_path / "enh" / "enh.dcm")


def test_per_frame_rescale_is_applied(tmp_path):
    ct, path = _small_enhanced(tmp_path)
    ds = pydicom.dcmread(str(path))
    frames = ds.pixel_array.astype(np.int32)
    shared = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    intercept = float(shared.RescaleIntercept)
    # frame 2 stores its values with its own intercept (+48), declared in its per-frame group
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    own = Dataset()
    own.RescaleIntercept, own.RescaleSlope, own.RescaleType = str(intercept + 48), "1", "HU"
    ds.PerFrameFunctionalGroupsSequence[1].PixelValueTransformationSequence = Sequence([own])
    frames[1] -= 48
    ds.PixelData = frames.astype(np.uint16).tobytes()
    ds.save_as(str(path))
    image = read_image(path)
    np.testing.assert_array_equal(image.array, read_image(tmp_path / "classic").array)


@pytest.mark.parametrize("problem", ["no_position", "mixed_with_classic", "bad_rescale"])
def test_broken_enhanced_series_is_one_line(tmp_path, problem):
    _, path = _small_enhanced(tmp_path)
    if problem == "bad_rescale":
        ds = pydicom.dcmread(str(path))
        ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope = "NaN"
        ds.save_as(str(path))
        match = r"enh\.dcm frame 1: RescaleSlope 'NaN' is not a finite number"
    elif problem == "no_position":
        ds = pydicom.dcmread(str(path))
        del ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence
        ds.save_as(str(path))
        match = r"enh\.dcm: frame 3 has no PlanePositionSequence"
    else:  # a classic slice of the same series beside it
        one = pydicom.dcmread(str(next((tmp_path / "classic").iterdir())))
        one.SeriesInstanceUID = pydicom.dcmread(str(path), stop_before_pixels=True).SeriesInstanceUID
        one.save_as(str(path.parent / "extra.dcm"))
        match = r"2 files of which 1 multi-frame \(enh\.dcm\)"
    with pytest.raises(UserError, match=match) as info:
        read_image(path.parent)
    assert "\n" not in str(info.value)


def test_compressed_enhanced_ct_reads_or_names_the_missing_decoder(tmp_path, monkeypatch):
    from pydicom.pixels import get_encoder
    from pydicom.uid import JPEG2000Lossless

    if not get_encoder(JPEG2000Lossless).is_available:
        pytest.skip("no JPEG 2000 encoder (pylibjpeg-openjpeg, test extra)")
    _, path = _small_enhanced(tmp_path)
    ds = pydicom.dcmread(str(path))
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    ds.save_as(str(path))
    np.testing.assert_array_equal(read_image(path).array, read_image(tmp_path / "classic").array)

    def no_decoder(self):
        raise RuntimeError("Unable to decompress 'JPEG 2000' pixel data because all plugins "
                           "are missing dependencies:\n    gdcm - requires gdcm")

    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(no_decoder))
    with pytest.raises(UserError, match=r"enh\.dcm: cannot decode the frames .*transunet-app\[dicom-compress\]") as info:
        read_image(path)
    assert "\n" not in str(info.value)
