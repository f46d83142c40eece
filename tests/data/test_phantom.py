"""The synthetic phantom: deterministic, realistic geometry, plausible anatomy."""
import json

import numpy as np
import pytest

from transunet_app.data.datasets import SynapseSlices, SynapseVolumes, read_dataset_info
from transunet_app.data.geometry import orientation_code, to_canonical
from transunet_app.data.io import read_image
from transunet_app.data.phantom import (
    AORTA,
    GALLBLADDER,
    LEFT_KIDNEY,
    LIVER,
    PANCREAS,
    RIGHT_KIDNEY,
    SPLEEN,
    STOMACH,
    make_phantom,
    prepare_phantom,
)
from transunet_app.errors import UserError


def test_deterministic_per_seed():
    a = make_phantom(5, matrix=48, slices=12)
    b = make_phantom(5, matrix=48, slices=12)
    c = make_phantom(6, matrix=48, slices=12)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.affine, b.affine)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)
    assert make_phantom((5, 1), matrix=48, slices=12).image.tobytes() != a.image.tobytes()


@pytest.mark.parametrize("seed", [0, 3, 8])
def test_anatomy_is_plausible(seed):
    ph = make_phantom(seed)
    assert ph.image.dtype == np.int16 and ph.labels.dtype == np.uint8
    img, reo = to_canonical(ph.image, ph.affine)
    lab, _ = to_canonical(ph.labels, ph.affine)
    d_mm, h_mm, w_mm = reo.canonical_spacing
    assert 1.5 <= d_mm <= 5.0 and 0.6 <= h_mm <= 1.0 and h_mm == w_mm
    assert 96 <= img.shape[2] <= 160 and 24 <= img.shape[0] <= 60
    present = set(np.unique(lab).tolist())
    assert present == set(range(9)), f"missing organs: {set(range(9)) - present}"
    centre = {k: np.argwhere(lab == k).mean(axis=0) for k in range(1, 9)}
    body = np.argwhere(img > -500).mean(axis=0)
    midline = np.argwhere(img > 350)
    spine = midline[np.abs(midline[:, 2] - body[2]) < 0.1 * img.shape[2]].mean(axis=0)
    # columns: 0 = patient's right; rows: 0 = anterior
    assert centre[LIVER][2] < body[2] < centre[SPLEEN][2]
    assert centre[RIGHT_KIDNEY][2] < spine[2] < centre[LEFT_KIDNEY][2]
    assert centre[GALLBLADDER][2] < body[2] and centre[STOMACH][2] > body[2]
    for kidney in (RIGHT_KIDNEY, LEFT_KIDNEY):
        assert centre[kidney][1] > body[1] and centre[kidney][1] > centre[AORTA][1]  # posterior
    assert centre[AORTA][1] < spine[1]  # aorta anterior to the spine
    assert abs(centre[AORTA][2] - spine[2]) < 0.12 * img.shape[2]
    assert centre[PANCREAS][1] < centre[AORTA][1]  # pancreas in front of the aorta
    assert centre[LIVER][0] > centre[RIGHT_KIDNEY][0]  # liver above the kidney
    # organ sizes: liver biggest, gallbladder among the smallest
    volume = {k: int((lab == k).sum()) for k in range(1, 9)}
    assert max(volume, key=volume.get) == LIVER
    assert volume[GALLBLADDER] < volume[SPLEEN] < volume[LIVER]
    # intensities look like contrast CT in HU
    assert img.min() <= -950  # air outside the body
    assert 40 < np.median(img[lab == LIVER]) < 200
    assert np.median(img[lab == AORTA]) > np.median(img[lab == GALLBLADDER])
    assert np.median(img[(img > -500) & (lab == 0)]) < 60  # mostly fat and muscle outside the organs


def test_geometry_varies_between_seeds():
    codes, spacings = set(), set()
    for seed in range(6):
        ph = make_phantom(seed, matrix=32, slices=8, noise=False)
        codes.add(orientation_code(ph.affine))
        spacings.add(round(float(np.linalg.norm(ph.affine[:3, :3], axis=0).max()), 3))
    assert len(codes) >= 3 and len(spacings) >= 3


def test_bad_options():
    with pytest.raises(UserError, match="size"):
        make_phantom(0, size="huge")
    with pytest.raises(UserError, match="orientation"):
        make_phantom(0, matrix=16, slices=4, orientation="RRS")


def test_prepare_phantom_writes_raw_and_training_layout(tmp_path):
    out = tmp_path / "phantom"
    report = prepare_phantom(out, cases=3, seed=2, matrix=64, slices=12)
    assert report.train_cases == ["phantom_0001", "phantom_0002"] and report.test_cases == ["phantom_0003"]
    meta = json.loads((out / "raw" / "dataset.json").read_text())
    assert meta["synthetic"] is True and "NOT real" in meta["description"]
    info = read_dataset_info(out)
    assert info["synthetic"] is True and info["orientation"] == "SPL"
    assert info["source"]["generator"] == "phantom" and info["source"]["seed"] == 2
    raw = read_image(out / "raw" / "imagesTr" / "phantom_0002.nii.gz")
    ph = make_phantom((2, 1), matrix=64, slices=12)
    assert np.array_equal(raw.array, ph.image) and np.allclose(raw.affine, ph.affine, atol=1e-4)
    slices = SynapseSlices(out)
    assert len(slices) == report.train_slices
    volumes = SynapseVolumes(out)
    vol = volumes[0]
    third = make_phantom((2, 2), matrix=64, slices=12)
    canon_lab, reo = to_canonical(third.labels, third.affine)
    assert np.array_equal(vol["label"].numpy(), canon_lab)
    assert vol["spacing"].tolist() == pytest.approx(list(reo.canonical_spacing), abs=1e-4)
    from transunet_app.data.folders import prepare_folder

    prepare_folder(out / "raw", tmp_path / "again")  # re-preparing the raw phantom keeps the mark
    assert read_dataset_info(tmp_path / "again")["synthetic"] is True
    with pytest.raises(UserError, match="not empty"):
        prepare_phantom(out, cases=2, seed=2, matrix=32, slices=8)
    report = prepare_phantom(out, cases=2, seed=4, matrix=32, slices=8, overwrite=True)
    assert len(list((out / "raw" / "imagesTr").iterdir())) == 2
    assert len(list((out / "train_npz").iterdir())) == report.train_slices
    with pytest.raises(UserError, match="at least 2"):
        prepare_phantom(tmp_path / "one", cases=1)
