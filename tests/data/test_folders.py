"""`prepare folder`: MSD / nnU-Net imagesTr + labelsTr folders."""
import json

import h5py
import numpy as np
import pytest

from transunet_app.data.datasets import SynapseSlices, read_dataset_info
from transunet_app.data.folders import prepare_folder, split_cases
from transunet_app.errors import UserError

from .conftest import save_nifti

AFFINE = np.diag([-0.9, -0.9, 3.0, 1.0])


def _case(rng, n_labels=3, shape=(12, 10, 4)):
    return (rng.integers(-300, 400, shape).astype(np.int16), rng.integers(0, n_labels, shape).astype(np.uint8))


def test_msd_folder_with_dataset_json(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "Task03_Liver"
    names = [f"liver_{i}" for i in range(5)]
    for n in names:
        img, lab = _case(rng)
        save_nifti(src / "imagesTr" / f"{n}.nii.gz", img, AFFINE)
        save_nifti(src / "labelsTr" / f"{n}.nii.gz", lab, AFFINE)
    (src / "dataset.json").write_text(json.dumps({
        "name": "Liver", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names]}))
    report = prepare_folder(src, tmp_path / "out")
    assert len(report.test_cases) == 1 and len(report.train_cases) == 4
    assert report.test_cases == [n for n, s in split_cases(names).items() if s == "test"]
    info = read_dataset_info(tmp_path / "out")
    assert info["classes"] == ["background", "liver", "cancer"] and info["label_map"] is None
    assert len(SynapseSlices(tmp_path / "out")) == 16
    # same split every time
    assert split_cases(names, 0.4, seed=3) == split_cases(list(reversed(names)), 0.4, seed=3)


def test_nnunet_v2_folder_with_channel_suffix_and_bad_case(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "Dataset001"
    for n in ("a", "b", "c"):
        img, lab = _case(rng)
        save_nifti(src / "imagesTr" / f"{n}_0000.nii.gz", img, AFFINE)
        save_nifti(src / "labelsTr" / f"{n}.nii.gz", lab, AFFINE if n != "c" else np.diag([0.9, 0.9, 3.0, 1.0]))
    save_nifti(src / "imagesTr" / "d_0000.nii.gz", _case(rng)[0], AFFINE)  # no label
    (src / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": 4, "file_ending": ".nii.gz"}))
    splits = tmp_path / "splits.yaml"
    splits.write_text("train: [a, c, d]\ntest: [b]\n")
    skipped = []
    report = prepare_folder(src, tmp_path / "out", splits_yaml=splits,
                            report_skip=lambda case, reason: skipped.append(case))
    assert report.train_cases == ["a"] and report.test_cases == ["b"]
    assert set(report.skipped) == {"c", "d"} and {"c", "d"} <= set(skipped)
    assert "does not match" in report.skipped["c"] and "no label" in report.skipped["d"]
    with h5py.File(tmp_path / "out" / "test_vol_h5" / "b.npy.h5", "r") as f:
        assert f["image"].shape == (4, 10, 12)


def test_labels_yaml_overrides_and_maps(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "src"
    for n in ("x", "y"):
        img, lab = _case(rng, n_labels=4)
        save_nifti(src / "imagesTr" / f"{n}.nii.gz", img, AFFINE)
        save_nifti(src / "labelsTr" / f"{n}.nii.gz", lab, AFFINE)
    spec = tmp_path / "labels.yaml"
    spec.write_text("classes: [background, kidney]\nlabel_map: {2: 1, 3: 1}\nsplits: {train: [x], test: [y]}\n")
    report = prepare_folder(src, tmp_path / "out", labels_yaml=spec)
    assert report.train_cases == ["x"] and report.test_cases == ["y"]
    with np.load(tmp_path / "out" / "train_npz" / "x_slice000.npz") as npz:
        assert set(np.unique(npz["label"]).tolist()) == {0, 1}
    assert read_dataset_info(tmp_path / "out")["label_map"] == {2: 1, 3: 1}


def test_folder_errors(tmp_path):
    src = tmp_path / "src"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    save_nifti(src / "imagesTr" / "x.nii.gz", np.zeros((4, 4, 4), np.int16), AFFINE)
    with pytest.raises(UserError, match="no dataset.json; give the classes with --labels"):
        prepare_folder(src, tmp_path / "out")
    (src / "dataset.json").write_text(json.dumps({"modality": {"0": "T1", "1": "T2"}, "labels": {"0": "bg", "1": "x"}}))
    with pytest.raises(UserError, match="2 input channels"):
        prepare_folder(src, tmp_path / "out")
    (src / "dataset.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        prepare_folder(src, tmp_path / "out")
    with pytest.raises(UserError, match="expected imagesTr"):
        prepare_folder(tmp_path, tmp_path / "out2")


def test_real_ct_prepared_in_canonical_frame(shared_ct, tmp_path):
    """The real CT (RAS storage) goes through `prepare folder`: slices come out in the SPL frame."""
    ct, lab = shared_ct
    src = tmp_path / "real"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    (src / "imagesTr" / "abdomen.nii.gz").symlink_to(ct.resolve())
    (src / "labelsTr" / "abdomen.nii.gz").symlink_to(lab.resolve())
    from transunet_app.data.labels import DATASETS_DIR

    report = prepare_folder(src, tmp_path / "out", labels_yaml=DATASETS_DIR / "synapse" / "labels_8class.yaml")
    assert report.train_cases == ["abdomen"] and report.train_slices == 30
    slices = SynapseSlices(tmp_path / "out")
    labels = np.stack([slices[i]["label"].numpy() for i in range(len(slices))])
    images = np.stack([slices[i]["image"].numpy() for i in range(len(slices))])
    assert labels.shape == (30, 101, 122) and 0 <= images.min() and images.max() <= 1
    liver = np.argwhere(labels == 5).mean(axis=0)
    spleen = np.argwhere(labels == 7).mean(axis=0)
    aorta = np.argwhere(labels == 1).mean(axis=0)
    kidneys = np.argwhere((labels == 3) | (labels == 4)).mean(axis=0)
    assert liver[2] < 61 < spleen[2]  # patient's right on the image's left
    assert aorta[1] < kidneys[1]  # rows run anterior -> posterior
    info = read_dataset_info(tmp_path / "out")
    assert info["cases"]["abdomen"]["source_orientation"] == "RAS"
    assert info["cases"]["abdomen"]["spacing"] == [3.0, 3.0, 3.0]
    assert (ct.resolve().stat().st_size > 0) and not list(src.rglob(".*.part*"))  # inputs untouched
