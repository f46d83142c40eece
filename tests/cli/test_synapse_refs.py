"""``transunet synapse-refs``: BTCV references become 8-organ maps named like segment's outputs."""
import subprocess
import sys

import nibabel as nib
import numpy as np

from ..volume_files import save_nifti

TOOL = [sys.executable, "-m", "transunet_app", "synapse-refs"]
# A permuted, flipped voxel order with 0.8 mm x 2.5 mm voxels (the grid must be kept as is).
AFFINE = np.array([[0, -0.8, 0, 200.0], [0, 0, -0.8, 180.0], [2.5, 0, 0, -300.0], [0, 0, 0, 1.0]])


def _run(*args, cwd):
    return subprocess.run(TOOL + [str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          encoding="utf-8", errors="replace")


def test_references_of_the_test_split(tmp_path):
    raw = tmp_path / "Abdomen"
    btcv = np.arange(14, dtype=np.uint8).repeat(6).reshape(6, 7, 2)  # every BTCV id, 0..13
    for n in (1, 2, 5):  # 1 and 2: official test cases; 5: training
        save_nifti(raw / "label" / f"label{n:04d}.nii.gz", btcv, AFFINE)
        save_nifti(raw / "img" / f"img{n:04d}.nii.gz", np.zeros(btcv.shape, np.int16), AFFINE)
    (raw / "label" / "label0002.nii.gz").write_bytes(b"\x1f\x8b broken")
    before = {p: p.read_bytes() for p in raw.rglob("*.nii.gz")}

    r = _run("--raw", raw, "--out", "refs", cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # case 2 unreadable
    assert "skipped case 2" in r.stderr and "label0002" in r.stderr
    assert "wrote 1 reference" in r.stdout
    # the other 10 official test cases are not in this download: a note, not a failure
    assert "note: cases of the test split without a label file" in r.stderr and "38" in r.stderr
    assert sorted(p.name for p in (tmp_path / "refs").iterdir()) == ["img0001.nii.gz"]
    ref = nib.load(str(tmp_path / "refs" / "img0001.nii.gz"))
    assert ref.get_data_dtype() == np.uint8 and np.allclose(ref.affine, AFFINE)
    # BTCV 1 spleen -> 7, 2 right kidney -> 4, 3 left kidney -> 3, 4 gallbladder -> 2,
    # 6 liver -> 5, 7 stomach -> 8, 8 aorta -> 1, 11 pancreas -> 6; the rest background
    btcv_to_synapse = np.array([0, 7, 4, 3, 2, 0, 5, 8, 1, 0, 0, 6, 0, 0])
    assert np.array_equal(np.asanyarray(ref.dataobj), btcv_to_synapse[btcv])
    assert {p: p.read_bytes() for p in raw.rglob("*.nii.gz")} == before  # inputs untouched

    r = _run("--raw", raw, "--out", "refs", "--split", "train", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "refs" / "img0005.nii.gz").is_file()
    # never replaces a file silently; the error is one line, exit code 2
    r = _run("--raw", raw, "--out", "refs", "--split", "train", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "exists (use --overwrite)" in r.stderr
    r = _run("--raw", tmp_path / "nothing", "--out", "refs2", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert not (tmp_path / "refs2").exists()
