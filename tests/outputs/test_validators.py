"""Point 5 and 6 of issue 15: dciodvfy finds no error in our SEG and RTSTRUCT; the Slicer
``.seg.nrrd`` reads back with pynrrd (fields Slicer writes, labels, LPS geometry); the SNOMED
table agrees with pydicom's DICOM code dictionary."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from transunet_app.data.io import read_image
from transunet_app.data.labels import load_label_spec, read_snomed
from transunet_app.outputs.organs import organs_present

from .test_geometry import PROV, labels_on_image_grid


def _dciodvfy() -> str:
    exe = shutil.which("dciodvfy")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy is missing in CI (apt-get install dicom3tools)")
        pytest.skip("dciodvfy not installed (Debian package dicom3tools); CI installs it")
    return exe


@pytest.fixture(scope="module")
def written_objects(hfs_series, tmp_path_factory):
    from transunet_app.outputs.dicom_seg import write_dicom_seg
    from transunet_app.outputs.rtstruct import write_rtstruct

    image = read_image(hfs_series.folder)
    labels = labels_on_image_grid(image, hfs_series)
    organs = organs_present(labels, load_label_spec()["classes"])
    out = tmp_path_factory.mktemp("objects")
    series = image.meta["dicom_series"]
    return {"seg": write_dicom_seg(out / "seg.dcm", labels, series, organs, PROV),
            "rtstruct": write_rtstruct(out / "rt.dcm", labels, series, organs, PROV),
            "image": image, "labels": labels, "organs": organs, "folder": out}


@pytest.mark.parametrize("kind", ["seg", "rtstruct"])
def test_dciodvfy_reports_no_error(written_objects, kind):
    exe = _dciodvfy()
    res = subprocess.run([exe, str(written_objects[kind])], capture_output=True, text=True, timeout=120)
    text = res.stdout + res.stderr
    errors = [ln for ln in text.splitlines() if ln.startswith("Error")]
    assert not errors, "\n".join(errors)
    # it did recognise and check the object (not an empty or unknown file)
    assert ("Segmentation" if kind == "seg" else "RTStructureSet") in text


def test_seg_records_algorithm_study_and_frame_of_reference(written_objects, hfs_series):
    import pydicom

    ds = pydicom.dcmread(str(written_objects["seg"]))
    assert ds.SegmentationType == "BINARY"
    assert ds.StudyInstanceUID == hfs_series.study_uid
    assert ds.FrameOfReferenceUID == hfs_series.frame_uid
    assert ds.PatientID == "P001" and str(ds.PatientName) == "Test^Patient"
    referenced = {str(i.ReferencedSOPInstanceUID)
                  for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == set(hfs_series.sop_uids)
    seg0 = ds.SegmentSequence[0]
    alg = seg0.SegmentationAlgorithmIdentificationSequence[0]
    assert alg.AlgorithmName == "TransUNet App" and alg.AlgorithmVersion == "test"
    assert "checkpoint_sha256=" + "0" * 64 in alg.AlgorithmParameters
    codes = {str(s.SegmentLabel): str(s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
             for s in ds.SegmentSequence}
    assert codes["liver"] == "10200004" and codes["right kidney"] == "9846003"
    assert all(s.RecommendedDisplayCIELabValue for s in ds.SegmentSequence)


def test_seg_nrrd_reads_back_with_pynrrd(written_objects, tmp_path):
    nrrd = pytest.importorskip("nrrd", reason="pynrrd (test extra) not installed")
    from transunet_app.outputs.seg_nrrd import write_seg_nrrd

    image, labels, organs = written_objects["image"], written_objects["labels"], written_objects["organs"]
    path = write_seg_nrrd(tmp_path / "case.seg.nrrd", labels, image.affine, organs)
    data, header = nrrd.read(str(path))
    np.testing.assert_array_equal(data, labels)
    assert header["space"] == "left-posterior-superior"
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
    np.testing.assert_allclose(np.asarray(header["space directions"]).T, lps[:3, :3], atol=1e-6)
    np.testing.assert_allclose(header["space origin"], lps[:3, 3], atol=1e-6)
    for n, organ in enumerate(organs):
        assert header[f"Segment{n}_Name"] == organ.name
        assert int(header[f"Segment{n}_LabelValue"]) == organ.label
        assert header[f"Segment{n}_Layer"] == "0"
        rgb = [round(float(v) * 255) for v in header[f"Segment{n}_Color"].split()]
        assert tuple(rgb) == organ.rgb
        ext = [int(v) for v in header[f"Segment{n}_Extent"].split()]
        where = np.nonzero(labels == organ.label)
        assert ext == [v for a in where for v in (int(a.min()), int(a.max()))]
        assert f"^{organ.type['code']}^" in header[f"Segment{n}_Tags"]


def test_snomed_table_matches_pydicom_code_dictionary():
    from pydicom.sr.codedict import codes

    table = read_snomed()
    assert set(table) == set(load_label_spec()["classes"][1:])  # one entry per Synapse organ
    anatomical = codes.cid7150.AnatomicalStructure
    for _name, entry in table.items():
        assert (entry["category"]["code"], entry["category"]["scheme"]) == (anatomical.value, "SCT")
    by_name = {"aorta": codes.SCT.Aorta, "gallbladder": codes.SCT.Gallbladder,
               "liver": codes.SCT.Liver, "pancreas": codes.SCT.Pancreas,
               "spleen": codes.SCT.Spleen, "stomach": codes.SCT.Stomach}
    for name, code in by_name.items():
        assert table[name]["type"]["code"] == code.value and table[name]["type"]["scheme"] == "SCT"
    # sided kidneys: SNOMED CT "Right/Left kidney structure" (not in pydicom's dictionary)
    assert table["right kidney"]["type"]["code"] == "9846003"
    assert table["left kidney"]["type"]["code"] == "18639004"


def test_compressed_seg_is_lossless_and_valid(written_objects, tmp_path):
    pytest.importorskip("openjpeg", reason="pylibjpeg-openjpeg (test extra) not installed")
    import pydicom

    from transunet_app.outputs.dicom_seg import read_dicom_seg, write_dicom_seg

    image, labels, organs = written_objects["image"], written_objects["labels"], written_objects["organs"]
    series = image.meta["dicom_series"]
    path = write_dicom_seg(tmp_path / "seg_j2k.dcm", labels, series, organs, PROV, compress=True)
    assert pydicom.dcmread(str(path), stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    back, names = read_dicom_seg(path, series)
    to_class = np.array([0] + [o.label for o in organs], dtype=np.uint8)
    np.testing.assert_array_equal(to_class[back], labels)
    exe = shutil.which("dciodvfy")
    if exe:
        text = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120).stderr
        assert not [ln for ln in text.splitlines() if ln.startswith("Error")]
