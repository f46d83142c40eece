"""``segment --output-type/--roi-subset/--preview`` and ``report`` from DICOM, through the CLI:
the SEG equals the NIfTI label map voxel for voxel, bad inputs are one line before inference,
and a failure leaves none of a case's outputs."""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from .conftest import LAYOUTS, build_layout
from .dicom_builder import write_ct_series
from .test_geometry import rasterise_rtstruct, seg_frames_by_uid

ALL_TYPES = "nifti,dicom-seg,rtstruct,seg-nrrd"
#: Layouts run end to end in the default suite (all of them under -m slow).
FAST_LAYOUTS = ("flipped_rows", "scrambled_files", "jpeg2000_lossless_files")


def _nifti_frames(path, written) -> dict:
    """SOPInstanceUID -> (rows, cols) labels of the NIfTI output, located through the NIfTI's
    own affine: each file's ImagePositionPatient gives its slice index k, and pixel (r, c) must
    be voxel (c, r, k) (checked for the pixel steps too)."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    inv = np.linalg.inv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine)  # LPS -> voxel
    out = {}
    for uid in written.sop_uids:
        ipp, row_dir, col_dir, (sp_r, sp_c) = written.geometry[uid]
        origin = inv @ np.append(ipp, 1.0)
        step_c = inv[:3, :3] @ (row_dir * sp_c)
        step_r = inv[:3, :3] @ (col_dir * sp_r)
        np.testing.assert_allclose(step_c, [1, 0, 0], atol=1e-4)
        np.testing.assert_allclose(step_r, [0, 1, 0], atol=1e-4)
        np.testing.assert_allclose(origin[:2], [0, 0], atol=1e-4)
        k = int(round(origin[2]))
        assert abs(origin[2] - k) < 1e-4
        out[uid] = data[:, :, k].T
    return out


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST_LAYOUTS else pytest.mark.slow)
                                  for n in sorted(LAYOUTS)])
def test_segment_writes_every_type_and_they_agree(name, tmp_path, synapse_ckpt, run_segment, ct_volume):
    # every layout is checked through the writers in test_geometry.py; end to end, two of
    # them in the default suite and all under -m slow
    written = build_layout(tmp_path, name, ct_volume)
    out = tmp_path / "out"
    code, _, err = run_segment(written.folder, "-o", out, "--checkpoint", synapse_ckpt, "--quiet",
                               "--output-type", ALL_TYPES, "--precision", "fp32")
    assert code == 0, err
    case = written.folder.name
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{case}.nii.gz", f"{case}.json", f"{case}_seg.dcm", f"{case}_rtstruct.dcm", f"{case}.seg.nrrd"])
    nifti = _nifti_frames(out / f"{case}.nii.gz", written)
    classes = json.loads((out / f"{case}.json").read_text())["labels"]
    present = sorted({int(v) for f in nifti.values() for v in np.unique(f)} - {0})
    assert present, "the model found no organ: nothing to compare"
    frames, numbers = seg_frames_by_uid(out / f"{case}_seg.dcm", written.sop_uids)
    assert list(numbers.values()) == [classes[str(c)] for c in present]
    to_class = np.array([0] + present, dtype=np.uint8)
    for uid in written.sop_uids:
        np.testing.assert_array_equal(to_class[frames[uid]], nifti[uid], err_msg=f"{name} {uid}")
    masks = rasterise_rtstruct(out / f"{case}_rtstruct.dcm", written)
    assert sorted(masks) == sorted(numbers.values())
    for c in present:
        truth = np.stack([nifti[u] == c for u in written.sop_uids])
        got = np.stack([masks[classes[str(c)]].get(u, np.zeros(truth.shape[1:], bool)) for u in written.sop_uids])
        assert 2 * (truth & got).sum() / (truth.sum() + got.sum()) >= 0.97, classes[str(c)]


def test_roi_subset_reaches_every_output(hfs_series, tmp_path, synapse_ckpt, run_segment):
    out = tmp_path / "out"
    code, _, err = run_segment(hfs_series.folder, "-o", out, "--checkpoint", synapse_ckpt, "--quiet",
                               "--output-type", ALL_TYPES, "--roi-subset", "liver,Spleen,aorta,stomach",
                               "--statistics", "--report", "--preview")
    assert code == 0, err
    case = hfs_series.folder.name
    keep = {"aorta", "liver", "spleen", "stomach"}
    labels = np.asarray(nib.load(str(out / f"{case}.nii.gz")).dataobj)
    assert set(np.unique(labels)) <= {0, 1, 5, 7, 8}
    sidecar = json.loads((out / f"{case}.json").read_text())
    assert set(sidecar["labels"].values()) == keep | {"background"}
    stats = json.loads((out / f"{case}_statistics.json").read_text())
    assert set(stats["organs"]) == keep
    seg = pydicom.dcmread(str(out / f"{case}_seg.dcm"), stop_before_pixels=True)
    assert {str(s.SegmentLabel) for s in seg.SegmentSequence} <= keep
    rt = pydicom.dcmread(str(out / f"{case}_rtstruct.dcm"))
    assert {str(r.ROIName) for r in rt.StructureSetROISequence} <= keep
    html = (out / f"{case}_report.html").read_text(encoding="utf-8")
    assert "pancreas" not in html.lower() and "gallbladder" not in html.lower()
    png = (out / f"{case}_preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_roi_is_one_line_listing_valid_names(hfs_series, tmp_path, synapse_ckpt, run_segment):
    code, _, err = run_segment(hfs_series.folder, "-o", tmp_path / "out", "--checkpoint", synapse_ckpt,
                               "--quiet", "--roi-subset", "liver,lungs")
    assert code == 2 and err.strip().count("\n") == 0
    assert "'lungs'" in err and "right kidney" in err and "aorta" in err
    assert not list((tmp_path / "out").iterdir())


def test_dicom_output_of_a_nifti_input_fails_before_inference(tmp_path, synapse_ckpt, run_segment,
                                                              ct_volume, monkeypatch):
    from transunet_app.inference import volume

    ct, _, affine = ct_volume
    src = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(ct, affine), str(src))
    monkeypatch.setattr(volume, "segment_image", lambda *a, **k: pytest.fail("inference ran"))
    for kind in ("dicom-seg", "rtstruct", "nifti,rtstruct"):
        code, _, err = run_segment(src, "-o", tmp_path / "out", "--checkpoint", synapse_ckpt,
                                   "--quiet", "--output-type", kind)
        assert code == 2 and err.strip().count("\n") == 0, err
        assert str(src) in err and "DICOM series" in err


def test_unknown_output_type(hfs_series, tmp_path, synapse_ckpt, run_segment):
    code, _, err = run_segment(hfs_series.folder, "-o", tmp_path / "o", "--checkpoint", synapse_ckpt,
                               "--output-type", "nifti,stl")
    assert code == 2 and "'stl'" in err and "dicom-seg" in err


def test_a_failing_writer_leaves_no_output(hfs_series, tmp_path, synapse_ckpt, run_segment, monkeypatch):
    from transunet_app.outputs import rtstruct

    def broken(path, *a, **k):
        path.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(rtstruct, "write_rtstruct", broken)
    out = tmp_path / "out"
    code, _, err = run_segment(hfs_series.folder, "-o", out, "--checkpoint", synapse_ckpt, "--quiet",
                               "--output-type", ALL_TYPES, "--preview", "--statistics")
    # an OS error while writing: exit 3 (the file system refused), one line naming the file
    assert code == 3 and err.strip().count("\n") == 0 and "disk full" in err and "_rtstruct.dcm" in err
    assert list(out.iterdir()) == []  # no NIfTI, no SEG, no temporary file


def _copy_series(written, dst, edit=None, skip=()):
    dst.mkdir()
    for i, f in enumerate(written.files):
        if i in skip:
            continue
        ds = pydicom.dcmread(str(f))
        if edit:
            edit(i, ds)
        ds.save_as(str(dst / f.name))
    return dst


def test_anonymised_series_empty_uids(hfs_series, tmp_path, synapse_ckpt, run_segment):
    # SOPInstanceUID / SOPClassUID emptied: filled from the file meta, the SEG is written
    def blank_sop(i, ds):
        ds.SOPInstanceUID = ""
        ds.SOPClassUID = ""
        del ds.PatientBirthDate
        del ds.ReferringPhysicianName
    src = _copy_series(hfs_series, tmp_path / "anon", blank_sop)
    code, _, err = run_segment(src, "-o", tmp_path / "o1", "--checkpoint", synapse_ckpt, "--quiet",
                               "--output-type", "dicom-seg,rtstruct")
    assert code == 0, err
    seg = pydicom.dcmread(str(tmp_path / "o1" / "anon_seg.dcm"), stop_before_pixels=True)
    referenced = {str(i.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence
                  for i in s.ReferencedInstanceSequence}
    assert referenced == set(hfs_series.sop_uids)
    # StudyInstanceUID emptied: no valid reference can be made -> refused, nothing written
    src = _copy_series(hfs_series, tmp_path / "nostudy", lambda i, ds: setattr(ds, "StudyInstanceUID", ""))
    code, _, err = run_segment(src, "-o", tmp_path / "o2", "--checkpoint", synapse_ckpt, "--quiet",
                               "--output-type", "dicom-seg")
    assert code == 2 and err.strip().count("\n") == 0 and "StudyInstanceUID" in err
    assert not list((tmp_path / "o2").iterdir())


def test_missing_slice_and_uneven_spacing_get_our_warning(hfs_series, tmp_path, synapse_ckpt, run_segment):
    src = _copy_series(hfs_series, tmp_path / "gap", skip=(7,))
    code, _, err = run_segment(src, "-o", tmp_path / "o", "--checkpoint", synapse_ckpt, "--quiet")
    assert code == 0, err
    assert "1 missing slice(s) between IM0006.dcm and IM0008.dcm" in err
    assert "ITK" not in err and "Non uniform" not in err.lower() and "WARNING" not in err

    def shift(i, ds):
        if i >= 10:
            ipp = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 1.0]
    src = _copy_series(hfs_series, tmp_path / "uneven", shift)
    code, _, err = run_segment(src, "-o", tmp_path / "o2", "--checkpoint", synapse_ckpt, "--quiet")
    assert code == 0 and "uneven slice spacing: 4.00 mm between IM0009.dcm and IM0010.dcm" in err


@pytest.mark.parametrize("problem", ["tilt", "orientations", "duplicate", "single"])
def test_series_that_is_not_one_volume_is_refused(hfs_series, tmp_path, problem, run_segment, synapse_ckpt):
    def tilt(i, ds):
        ipp = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [ipp[0], ipp[1] + 0.5 * i, ipp[2]]

    def orientations(i, ds):
        if i == 5:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    def duplicate(i, ds):
        if i == 4:
            ds.ImagePositionPatient = [float(v) for v in pydicom.dcmread(str(hfs_series.files[3])).ImagePositionPatient]

    if problem == "single":
        src = _copy_series(hfs_series, tmp_path / problem, skip=range(1, len(hfs_series.files)))
    else:
        src = _copy_series(hfs_series, tmp_path / problem, {"tilt": tilt, "orientations": orientations,
                                                            "duplicate": duplicate}[problem])
    code, _, err = run_segment(src, "-o", tmp_path / "o", "--checkpoint", synapse_ckpt, "--quiet")
    assert code == 2 and err.strip().count("\n") == 0, err
    expected = {"tilt": "tilted 9.", "orientations": "mixes several slice orientations",
                "duplicate": "share a slice position", "single": "single slice"}[problem]
    assert expected in err and str(src) in err


def test_copied_files_of_one_instance_are_read_once(hfs_series, tmp_path, synapse_ckpt, run_segment):
    # an export copied twice into one folder: "IM0003 (1).dcm" beside IM0003.dcm
    src = _copy_series(hfs_series, tmp_path / "copied")
    for f in hfs_series.files[3:5]:
        shutil.copyfile(f, src / f"{f.stem} (1).dcm")
    out = tmp_path / "out"
    code, _, err = run_segment(src, "-o", out, "--checkpoint", synapse_ckpt, "--quiet",
                               "--output-type", "nifti,dicom-seg")
    assert code == 0, err
    assert "2 file(s) are copies of another file's instance" in err and "(1).dcm" in err
    assert nib.load(str(out / "copied.nii.gz")).shape[2] == len(hfs_series.files)
    seg = pydicom.dcmread(str(out / "copied_seg.dcm"), stop_before_pixels=True)
    referenced = [str(i.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence
                  for i in s.ReferencedInstanceSequence]
    assert sorted(referenced) == sorted(hfs_series.sop_uids)  # each instance once


def test_two_acquisitions_in_one_series_are_named(hfs_series, tmp_path, synapse_ckpt, run_segment):
    from pydicom.uid import generate_uid

    src = _copy_series(hfs_series, tmp_path / "phases")
    second = pydicom.dcmread(str(hfs_series.files[6]))  # a second phase of slice 6
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    second.AcquisitionNumber = 2
    second.save_as(str(src / "PHASE2_0006.dcm"))
    code, _, err = run_segment(src, "-o", tmp_path / "o", "--checkpoint", synapse_ckpt, "--quiet")
    assert code == 2 and err.strip().count("\n") == 0, err
    assert "share a slice position" in err and "2 acquisitions (AcquisitionNumber 1, 2)" in err
    assert "--series" not in err  # they share the series UID: --series cannot separate them

def test_non_ct_modality_warns_once(hfs_series, tmp_path):
    from transunet_app.data import geometry
    from transunet_app.data.io import read_image
    from transunet_app.inference.checks import check_input

    src = _copy_series(hfs_series, tmp_path / "mr", lambda i, ds: setattr(ds, "Modality", "MR"))
    image = read_image(src)
    assert image.meta["modality"] == "MR" and not image.meta["warnings"]
    check = check_input(image, geometry.plan_reorientation(image.affine, image.shape))
    assert sum("modality is MR, not CT" in w for w in check.warnings) == 1


def test_report_from_series_and_seg_matches_nifti_report(hfs_series, tmp_path, synapse_ckpt,
                                                        run_segment, run_transunet):
    out = tmp_path / "out"
    code, _, err = run_segment(hfs_series.folder, "-o", out, "--checkpoint", synapse_ckpt, "--quiet",
                               "--output-type", "nifti,dicom-seg")
    assert code == 0, err
    case = hfs_series.folder.name
    code, _, err = run_transunet("report", "--image", hfs_series.folder, "--labels",
                                 out / f"{case}_seg.dcm", "-o", tmp_path / "from_seg.html")
    assert code == 0, err
    code, _, err = run_transunet("report", "--image", hfs_series.folder, "--labels",
                                 out / f"{case}.nii.gz", "-o", tmp_path / "from_nifti.html")
    assert code == 0, err

    def data(path):
        html = path.read_text(encoding="utf-8")
        start = html.index('id="report-data">') + len('id="report-data">')
        return json.loads(html[start:html.index("</script>", start)])

    html = (tmp_path / "from_seg.html").read_text(encoding="utf-8")
    # it names the files given, not its temporary NIfTI copies of the series and the SEG
    assert f"<dt>CT image</dt><dd>{hfs_series.folder}</dd>" in html and ".report_" not in html
    assert f"<dt>Label names from</dt><dd>{out / f'{case}_seg.dcm'} (segment labels)</dd>" in html
    seg_stats, nii_stats = data(tmp_path / "from_seg.html")["statistics"], data(tmp_path / "from_nifti.html")["statistics"]
    found = {n: s["volume_ml"] for n, s in nii_stats.items() if s["status"] != "absent"}
    assert found and {n: s["volume_ml"] for n, s in seg_stats.items()} == found
    assert "TransUNet" in (tmp_path / "from_seg.html").read_text(encoding="utf-8") or "tiny" in (tmp_path / "from_seg.html").read_text(encoding="utf-8")


def test_folder_of_series_folders_gives_each_its_own_set(tmp_path, ct_volume, synapse_ckpt, run_segment):
    ct, lab, affine = ct_volume
    root = tmp_path / "series"
    for name in ("patient_a", "patient_b"):
        write_ct_series(root / name, ct[:, :, :6], lab[:, :, :6], affine, seed=len(name))
    out = tmp_path / "out"
    code, stdout, err = run_segment(root, "-o", out, "--checkpoint", synapse_ckpt, "--quiet",
                                    "--output-type", "nifti,dicom-seg")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}{suffix}" for n in ("patient_a", "patient_b") for suffix in (".nii.gz", ".json", "_seg.dcm"))
    for n in ("patient_a", "patient_b"):
        seg = pydicom.dcmread(str(out / f"{n}_seg.dcm"), stop_before_pixels=True)
        uids = {pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID for f in (root / n).iterdir()}
        assert {str(i.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence
                for i in s.ReferencedInstanceSequence} == uids


def test_cd_export_with_dicomdir_gives_each_series_its_own_set(tmp_path, ct_volume, synapse_ckpt,
                                                               run_segment):
    """A CD/DVD export as pydicom's FileSet writes it (DICOMDIR beside PT*/ST*/SE*/IM* files
    without suffix), two patients: one case per series folder, named by its path, with the
    labels of the same series read from a flat folder."""
    from pydicom.fileset import FileSet

    ct, lab, affine = ct_volume
    flat = {}
    fs = FileSet()
    for name in ("patient_a", "patient_b"):
        flat[name] = write_ct_series(tmp_path / "flat" / name, ct[:, :, :6], lab[:, :, :6], affine,
                                     seed=len(name))
        for f in flat[name].files:
            fs.add(pydicom.dcmread(str(f)))
    cd = tmp_path / "cd"
    fs.write(cd)
    assert (cd / "DICOMDIR").is_file()
    series_dirs = sorted({f.parent for f in cd.rglob("*") if f.is_file() and f.name != "DICOMDIR"})
    assert len(series_dirs) == 2 and all(d.relative_to(cd).parts[0] != d.name for d in series_dirs)

    out = tmp_path / "out"
    code, _, err = run_segment(cd, "-o", out, "--checkpoint", synapse_ckpt, "--quiet")
    assert code == 0, err
    cases = ["_".join(d.relative_to(cd).parts) for d in series_dirs]   # e.g. PT000000_ST000000_SE000000
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{c}{s}" for c in cases for s in (".nii.gz", ".json"))
    flat_out = tmp_path / "flat_out"
    code, _, err = run_segment(tmp_path / "flat", "-o", flat_out, "--checkpoint", synapse_ckpt, "--quiet")
    assert code == 0, err
    for case, d in zip(cases, series_dirs):
        uid = pydicom.dcmread(str(next(d.iterdir())), stop_before_pixels=True).SeriesInstanceUID
        name = next(n for n, w in flat.items() if w.series_uid == uid)
        got, want = nib.load(str(out / f"{case}.nii.gz")), nib.load(str(flat_out / f"{name}.nii.gz"))
        np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj))
        np.testing.assert_allclose(got.affine, want.affine)


@pytest.mark.parametrize("types", ["nifti", "dicom-seg"])
def test_report_of_a_series_folder_named_ct(hfs_series, tmp_path, synapse_ckpt, run_segment, types):
    # the report's temporary CT once took the name ct.nii.gz, the label map's name for a case
    # called "ct": segment --report then failed on its own scratch file
    src = _copy_series(hfs_series, tmp_path / "ct")
    out = tmp_path / "out"
    code, _, err = run_segment(src, "-o", out, "--checkpoint", synapse_ckpt, "--quiet",
                               "--output-type", types, "--report")
    assert code == 0, err
    expected = {"ct.json", "ct_report.html"} | ({"ct.nii.gz"} if types == "nifti" else {"ct_seg.dcm"})
    assert {p.name for p in out.iterdir()} == expected  # no scratch or temporary file left
    html = (out / "ct_report.html").read_text(encoding="utf-8")
    # the report names the files the user keeps, not the scratch copies it was built from
    labels = out / ("ct.nii.gz" if types == "nifti" else "ct_seg.dcm")
    assert f"<dt>CT image</dt><dd>{src}</dd>" in html and f"<dt>Label map</dt><dd>{labels}</dd>" in html
    assert f"<dt>Label names from</dt><dd>{out / 'ct.json'}</dd>" in html and "Scan <b>ct</b>" in html
    assert "scratch" not in html and ".partial" not in html
