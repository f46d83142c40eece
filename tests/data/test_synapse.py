"""`prepare synapse` on a synthetic BTCV-like download, and reading prepared/official layouts."""
import h5py
import numpy as np
import pytest

from transunet_app.data.datasets import SynapseSlices, SynapseVolumes, read_dataset_info
from transunet_app.data.labels import load_label_spec
from transunet_app.data.synapse import prepare_synapse
from transunet_app.errors import UserError

from .conftest import btcv_case, save_nifti

# BTCV volumes are stored LPS-like; case 2 is case 1 stored RAS, case 5 a permuted layout.
LPS = np.array([[-0.8, 0, 0, 200.0], [0, -0.8, 0, 180.0], [0, 0, 2.5, -300.0], [0, 0, 0, 1.0]])
PERMUTED = np.array([[0, -0.8, 0, 200.0], [0, 0, -0.8, 180.0], [2.5, 0, 0, -300.0], [0, 0, 0, 1.0]])  # (S, L, P)
BTCV_TO_SYNAPSE = np.array([0, 7, 4, 3, 2, 0, 5, 8, 1, 0, 0, 6, 0, 0])


def expected_canonical(array, affine):
    from transunet_app.data.geometry import to_canonical

    return to_canonical(array, affine)[0]


@pytest.fixture()
def raw_btcv(tmp_path):
    """RawData/Training/{img,label} with cases 1, 2 (test) and 5, 6, 7 (train); 7's label mismatches."""
    rng = np.random.default_rng(42)
    root = tmp_path / "raw"
    base = root / "RawData" / "Training"
    cases = {}
    for n, affine in ((1, LPS), (2, None), (5, PERMUTED), (6, LPS), (7, LPS)):
        shape = (16, 14, 5) if affine is not PERMUTED else (5, 16, 14)
        image, labels = btcv_case(rng, shape)
        if n == 2:  # case 1 stored RAS instead of LPS: the same patient, mirrored arrays
            image, labels = cases[1][0][::-1, ::-1].copy(), cases[1][1][::-1, ::-1].copy()
            affine = LPS @ np.array([[-1, 0, 0, 15], [0, -1, 0, 13], [0, 0, 1, 0], [0, 0, 0, 1.0]])
        save_nifti(base / "img" / f"img{n:04d}.nii.gz", image, affine)
        label_affine = affine if n != 7 else affine @ np.diag([1, 1, -1, 1.0])  # z flipped: mismatch
        save_nifti(base / "label" / f"label{n:04d}.nii.gz", labels, label_affine)
        cases[n] = (image, labels, affine)
    save_nifti(base / "img" / "img0003.nii.gz", btcv_case(rng)[0], LPS)  # no label file
    (base / "label" / "label0008.nii.gz").write_bytes(b"\x1f\x8b broken")  # unreadable label
    save_nifti(base / "img" / "img0008.nii.gz", btcv_case(rng)[0], LPS)
    return root, cases


def test_prepare_synapse_official_layout(raw_btcv, tmp_path):
    raw, cases = raw_btcv
    out = tmp_path / "prepared"
    skipped = []
    report = prepare_synapse(raw, out, report_skip=lambda case, reason: skipped.append((case, reason)))
    assert report.train_cases == ["case0005", "case0006"]
    assert report.test_cases == ["case0001", "case0002"]
    assert set(report.skipped) == {"case0003", "case0007", "case0008"}
    assert "does not match its image" in report.skipped["case0007"]
    assert "label0008" in report.skipped["case0008"]
    assert "no label file" in report.skipped["case0003"]
    assert {c for c, _ in skipped} >= {"case0003", "case0007", "case0008"}
    assert not list(out.glob("train_npz/case0007*")) and not (out / "test_vol_h5" / "case0008.npy.h5").exists()

    train_list = (out / "lists_Synapse" / "train.txt").read_text().split()
    assert train_list == [f"case0005_slice{d:03d}" for d in range(5)] + [f"case0006_slice{d:03d}" for d in range(5)]
    assert (out / "lists_Synapse" / "test_vol.txt").read_text().split() == ["case0001", "case0002"]

    for n in (5, 6):
        image, labels, affine = cases[n]
        canon_img = expected_canonical(image, affine)
        canon_lab = expected_canonical(labels, affine)
        for d in range(canon_img.shape[0]):
            with np.load(out / "train_npz" / f"case{n:04d}_slice{d:03d}.npz") as npz:
                assert npz["image"].dtype == np.float32 and npz["label"].dtype == np.uint8
                expected = (np.clip(canon_img[d].astype(np.float32), -125, 275) + 125) / 400
                np.testing.assert_allclose(npz["image"], expected, atol=1e-6)
                assert np.array_equal(npz["label"], BTCV_TO_SYNAPSE[canon_lab[d]])
                assert npz["image"].min() >= 0 and npz["image"].max() <= 1
    for n in (1, 2):
        image, labels, affine = cases[n]
        with h5py.File(out / "test_vol_h5" / f"case{n:04d}.npy.h5", "r") as f:
            assert f["image"].shape == (5, 14, 16) and f["image"].dtype == np.float32
            assert np.array_equal(f["label"][:], BTCV_TO_SYNAPSE[expected_canonical(labels, affine)])
            np.testing.assert_allclose(f.attrs["spacing"], [2.5, 0.8, 0.8])
            assert f.attrs["orientation"] == "SPL"
    with h5py.File(out / "test_vol_h5" / "case0001.npy.h5", "r") as f1, \
            h5py.File(out / "test_vol_h5" / "case0002.npy.h5", "r") as f2:
        assert np.array_equal(f1["image"][:], f2["image"][:]) and np.array_equal(f1["label"][:], f2["label"][:])
        np.testing.assert_allclose(f1.attrs["affine"], f2.attrs["affine"], atol=1e-4)
    info = read_dataset_info(out)
    assert info["classes"][1:] == ["aorta", "gallbladder", "left kidney", "right kidney", "liver", "pancreas",
                                   "spleen", "stomach"]
    assert info["hu_window"] == [-125.0, 275.0] and info["orientation"] == "SPL" and info["synthetic"] is False
    assert info["cases"]["case0005"]["spacing"] == [2.5, 0.8, 0.8]
    assert info["cases"]["case0005"]["source_orientation"] == "SLP"
    assert info["cases"]["case0002"]["source_orientation"] == "RAS"
    assert set(info["skipped"]) == {"case0003", "case0007", "case0008"}


def test_datasets_read_prepared_output(raw_btcv, tmp_path):
    raw, cases = raw_btcv
    out = tmp_path / "prepared"
    prepare_synapse(raw, out)
    slices = SynapseSlices(out)
    assert len(slices) == 10
    item = slices[7]
    assert item["image"].dtype.is_floating_point and item["image"].shape == (14, 16)
    assert str(item["label"].dtype) == "torch.int64" and item["case"] == "case0006" and item["slice"] == 2
    volumes = SynapseVolumes(out)
    vol = volumes[1]
    assert vol["case"] == "case0002" and vol["image"].shape == (5, 14, 16) and vol["spacing_known"]
    assert vol["spacing"].tolist() == pytest.approx([2.5, 0.8, 0.8])
    import torch

    batch = next(iter(torch.utils.data.DataLoader(slices, batch_size=4)))
    assert batch["image"].shape == (4, 14, 16) and batch["label"].shape == (4, 14, 16)


def test_official_download_is_read_as_is(tmp_path):
    """The official preprocessed data: npz/h5 with float labels, no dataset.yaml, maybe no lists."""
    root = tmp_path / "Synapse"
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    rng = np.random.default_rng(0)
    for name in ("case0031_slice000", "case0031_slice001", "case0005_slice000"):
        np.savez(root / "train_npz" / f"{name}.npz", image=rng.random((12, 12)).astype(np.float32),
                 label=rng.integers(0, 9, (12, 12)).astype(np.float32))
    with h5py.File(root / "test_vol_h5" / "case0008.npy.h5", "w") as f:
        f["image"] = rng.random((3, 12, 12)).astype(np.float32)
        f["label"] = rng.integers(0, 9, (3, 12, 12)).astype(np.float32)
    info = read_dataset_info(root)
    assert info["spacing_known"] is False and info["orientation"] == "SPL"
    assert info["classes"] == load_label_spec()["classes"]
    slices = SynapseSlices(root)  # no lists: every npz
    assert [slices[i]["name"] for i in range(3)] == ["case0005_slice000", "case0031_slice000", "case0031_slice001"]
    assert str(slices[0]["label"].dtype) == "torch.int64"
    vol = SynapseVolumes(root)[0]
    assert vol["case"] == "case0008" and vol["spacing_known"] is False and vol["spacing"].tolist() == [1, 1, 1]
    # With the official list files (kept in a separate folder by the official repo)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("case0031_slice001\ncase0005_slice000\n")
    assert len(SynapseSlices(root, list_file=lists / "train.txt")) == 2
    (lists / "train.txt").write_text("case0099_slice000\n")
    with pytest.raises(UserError, match="case0099_slice000.npz: listed"):
        SynapseSlices(root, list_file=lists / "train.txt")


def test_official_loader_reads_our_output(raw_btcv, tmp_path):
    """Mirror of the official Synapse_dataset.__getitem__ on our files."""
    raw, _ = raw_btcv
    out = tmp_path / "prepared"
    prepare_synapse(raw, out)
    list_dir = out / "lists_Synapse"
    slice_name = open(list_dir / "train.txt").readlines()[0].strip("\n")
    data = np.load(str(out / "train_npz" / (slice_name + ".npz")))
    image, label = data["image"], data["label"]
    assert image.shape == label.shape == (14, 16)
    vol_name = open(list_dir / "test_vol.txt").readlines()[0].strip("\n")
    data = h5py.File(str(out / "test_vol_h5") + "/{}.npy.h5".format(vol_name))
    image, label = data["image"][:], data["label"][:]
    data.close()
    assert image.shape == label.shape == (5, 14, 16)


def test_output_rules(raw_btcv, tmp_path):
    raw, _ = raw_btcv
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        prepare_synapse(raw, out)
    prepare_synapse(raw, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"  # only our own files are replaced
    with pytest.raises(UserError, match="inside the input"):
        prepare_synapse(raw, raw / "out")
    with pytest.raises(UserError, match="no img/imgXXXX"):
        prepare_synapse(tmp_path / "prepared", tmp_path / "elsewhere")


def test_interrupted_preparation_is_refused(tmp_path):
    root = tmp_path / "half"
    (root / "train_npz").mkdir(parents=True)
    (root / ".prepare_incomplete").write_text("")
    with pytest.raises(UserError, match="interrupted"):
        read_dataset_info(root)


def test_flat_layout_and_custom_map(tmp_path):
    """img/ + label/ directly under --raw, a user label map and split."""
    rng = np.random.default_rng(1)
    raw = tmp_path / "raw"
    for n in (11, 12):
        image, labels = btcv_case(rng, (10, 9, 4))
        save_nifti(raw / "img" / f"img{n:04d}.nii", image, LPS)
        save_nifti(raw / "label" / f"label{n:04d}.nii", labels, LPS)
    spec = tmp_path / "liver_only.yaml"
    spec.write_text("name: liver\nclasses: [background, liver]\nlabel_map: {6: 1}\n")
    splits = tmp_path / "splits.yaml"
    splits.write_text("train: [11]\ntest: [case0012]\n")
    report = prepare_synapse(raw, tmp_path / "out", labels_path=spec, splits_path=splits)
    assert report.train_cases == ["case0011"] and report.test_cases == ["case0012"]
    with h5py.File(tmp_path / "out" / "test_vol_h5" / "case0012.npy.h5", "r") as f:
        assert set(np.unique(f["label"][:]).tolist()) <= {0, 1}
    assert read_dataset_info(tmp_path / "out")["classes"] == ["background", "liver"]


def test_nothing_usable_leaves_no_half_dataset(tmp_path):
    raw = tmp_path / "raw"
    save_nifti(raw / "img" / "img0001.nii.gz", np.zeros((6, 6, 3), np.int16), LPS)
    save_nifti(raw / "label" / "label0001.nii.gz", np.zeros((6, 6, 2), np.uint8), LPS)
    with pytest.raises(UserError, match="no case could be prepared"):
        prepare_synapse(raw, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())
