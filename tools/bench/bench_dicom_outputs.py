#!/usr/bin/env python3
"""Time the hospital outputs of ``segment`` on a full-size series: DICOM SEG, RTSTRUCT,
.seg.nrrd, preview, against segmentation time.

Writes a 512x512xN CT DICOM series (default N = 300) with pydicom: the shared real CT
(``../shared/data``) resampled by nearest neighbour to 512x512 in-plane and N slices, so the
eight organs have realistic shapes at full size. Then times, in this process:

* reading the series (:func:`transunet_app.data.io.read_image`: pydicom headers + ITK pixels),
* each writer of :mod:`transunet_app.outputs` with the eight organs,
* optionally (``--checkpoint CKPT``) :meth:`Segmenter.run` on the same series (NIfTI only),
  the segmentation time the writers are compared with.

    python tools/bench_dicom_outputs.py --slices 300 --checkpoint r50.pt
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--checkpoint", help="also time Segmenter.run with this checkpoint")
    ap.add_argument("--workdir", help="folder for the series (default: a temporary folder)")
    args = ap.parse_args()

    import nibabel as nib
    from outputs.dicom_builder import write_ct_series

    from transunet_app import __version__
    from transunet_app.data.io import read_image
    from transunet_app.data.labels import SYNAPSE_CLASSES_FALLBACK
    from transunet_app.outputs.organs import Provenance, organs_present

    data = ROOT.parent / "shared" / "data"
    ct = nib.load(str(data / "ct_abdomen_3mm.nii.gz"))
    lab = nib.load(str(data / "ct_abdomen_3mm_labels.nii.gz"))
    I, J, K = ct.shape  # noqa: E741 (voxel indices I, J, K)
    n, s = args.slices, args.size
    ii = np.minimum((np.arange(s) * I / s).astype(int), I - 1)
    jj = np.minimum((np.arange(s) * J / s).astype(int), J - 1)
    kk = np.minimum((np.arange(n) * K / n).astype(int), K - 1)
    ct_big = np.asarray(ct.dataobj)[np.ix_(ii, jj, kk)].astype(np.int16)
    lab_big = np.asarray(lab.dataobj)[np.ix_(ii, jj, kk)].astype(np.uint8)
    affine = ct.affine @ np.diag([I / s, J / s, K / n, 1.0])

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_dicom_"))
    try:
        t = time.perf_counter()
        write_ct_series(work / "series", ct_big, lab_big, affine)
        print(f"series {s}x{s}x{n} written in {time.perf_counter() - t:.1f} s ({work / 'series'})")
        t = time.perf_counter()
        image = read_image(work / "series")
        t_read = time.perf_counter() - t
        series = image.meta["dicom_series"]
        labels = np.zeros(image.shape, np.uint8)
        # the builder stored frame k = lab_big[:, :, k].T in slice order; read_image sorts the same way
        labels[...] = lab_big
        organs = organs_present(labels, SYNAPSE_CLASSES_FALLBACK)
        prov = Provenance(model="bench", checkpoint_sha256="0" * 64, software_version=__version__)
        print(f"read_image: {t_read:.2f} s; {len(organs)} organs", flush=True)

        from transunet_app.outputs.dicom_seg import write_dicom_seg
        from transunet_app.outputs.preview import write_preview
        from transunet_app.outputs.rtstruct import write_rtstruct
        from transunet_app.outputs.seg_nrrd import write_seg_nrrd

        for name, call in (
                ("dicom-seg", lambda p: write_dicom_seg(p, labels, series, organs, prov)),
                ("rtstruct", lambda p: write_rtstruct(p, labels, series, organs, prov)),
                ("seg-nrrd", lambda p: write_seg_nrrd(p, labels, image.affine, organs)),
                ("preview", lambda p: write_preview(p, image.array, labels, image.affine, organs))):
            t, c = time.perf_counter(), time.process_time()
            path = call(work / f"out_{name}")
            dt, dc = time.perf_counter() - t, time.process_time() - c
            print(f"{name}: {dt:.2f} s wall, {dc:.2f} s CPU, {path.stat().st_size / 1e6:.1f} MB", flush=True)
        if args.checkpoint:
            from transunet_app.inference import Segmenter

            seg = Segmenter(args.checkpoint)
            t, c = time.perf_counter(), time.process_time()
            res = seg.run(work / "series", work / "labels.nii.gz")
            print(f"segment (Segmenter.run, NIfTI only): {time.perf_counter() - t:.2f} s wall, "
                  f"{time.process_time() - c:.2f} s CPU ({seg.describe()})")
            print(f"  of which model: {res.timings}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
