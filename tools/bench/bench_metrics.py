"""Time HD95 on a liver-sized pair of masks in a 150x512x512 CT volume: ours vs medpy vs MONAI.

Run: ``python tools/bench/bench_metrics.py [--repeats 3] [--shape 150 512 512]``

All timings are measured side by side in this one run, on the same masks, and the script prints
ratios (medpy time / ours, MONAI time / ours) plus the values, so the claim "same value" is
checked at the same time. MONAI defines HD95 differently (max of the two directed 95th
percentiles instead of the 95th percentile of their concatenation, and float32), so its number is
compared with our :func:`hd95_max_directed`; our :func:`hd95` is compared with medpy.

The synthetic pair: a smooth, lobulated ellipsoid of ~1.6 L (a liver) at spacing
2.5 x 0.78 x 0.78 mm, and a "prediction" that is the same organ deformed differently, shifted by
~2 mm, with a small false-positive island: a realistic good-but-imperfect segmentation.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time

import numpy as np


def liver_pair(shape=(150, 512, 512), spacing=(2.5, 0.78, 0.78), seed=0):
    """(pred, gt, spacing): two bool (D, H, W) masks of a liver-sized organ and its prediction."""
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing)
    centre = np.asarray(shape) * sp / 2 + np.array([0.0, -20.0, -60.0])
    semi = np.array([60.0, 75.0, 90.0])  # mm, (z, y, x): 4/3*pi*60*75*90 ~ 1.7 L

    def organ(shift_mm, phase):
        z, y, x = (np.arange(n, dtype=np.float32) * s for n, s in zip(shape, sp))
        zz = ((z - centre[0] - shift_mm[0]) / semi[0])[:, None, None]
        yy = ((y - centre[1] - shift_mm[1]) / semi[1])[None, :, None]
        xx = ((x - centre[2] - shift_mm[2]) / semi[2])[None, None, :]
        r2 = zz * zz + yy * yy + xx * xx
        # lobulation: low-frequency radial modulation
        wobble = 0.08 * np.sin(3.0 * xx + phase) * np.cos(2.0 * yy - phase) + 0.05 * np.sin(4.0 * zz + 2 * phase)
        return r2 <= (1.0 + wobble) ** 2

    gt = organ(np.zeros(3), 0.3)
    pred = organ(np.array([1.0, 1.5, -2.0]), 0.45 + rng.uniform(0, 0.05))
    # a false-positive island a few cm away
    zc, yc, xc = (np.asarray(shape) * np.array([0.5, 0.75, 0.75])).astype(int)
    pred[zc - 4:zc + 4, yc - 10:yc + 10, xc - 10:xc + 10] = True
    return pred, gt, tuple(float(s) for s in spacing)


def _time(fn, repeats, warmup=True):
    """Median wall time of ``repeats`` calls (after one untimed warm-up call), and the value."""
    times, value = [], None
    if warmup:
        fn()  # imports, allocator warm-up: not what we want to measure
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs per method (median is reported)")
    ap.add_argument("--medpy-repeats", type=int, default=1, help="runs for medpy (slow)")
    ap.add_argument("--shape", type=int, nargs=3, default=(150, 512, 512))
    ap.add_argument("--no-medpy", action="store_true", help="skip medpy (it takes ~10-30 s)")
    args = ap.parse_args(argv)

    from transunet_app.metrics.surface import hd95, hd95_max_directed, surface_distances

    pred, gt, spacing = liver_pair(tuple(args.shape))
    vox_ml = float(np.prod(spacing)) / 1000.0
    print(f"volume {tuple(args.shape)}, spacing {spacing} mm; gt {gt.sum() * vox_ml:.0f} mL, "
          f"pred {pred.sum() * vox_ml:.0f} mL")

    rows = []
    t_ours, v_ours = _time(lambda: hd95(pred, gt, spacing), args.repeats)
    rows.append(("ours hd95 (kdtree)", t_ours, v_ours))
    t_edt, v_edt = _time(
        lambda: float(np.percentile(surface_distances(pred, gt, spacing, method="edt").symmetric, 95)),
        args.repeats)
    rows.append(("ours hd95 (crop+EDT)", t_edt, v_edt))
    t_ours_m, v_ours_m = _time(lambda: hd95_max_directed(pred, gt, spacing), args.repeats)
    rows.append(("ours max-directed p95", t_ours_m, v_ours_m))

    import torch
    from monai.metrics import compute_hausdorff_distance

    pt = torch.from_numpy(pred)[None, None]
    gtt = torch.from_numpy(gt)[None, None]
    t_monai, v_monai = _time(lambda: float(compute_hausdorff_distance(
        pt, gtt, include_background=True, percentile=95, spacing=list(spacing))[0, 0]), args.repeats)
    rows.append(("MONAI compute_hausdorff_distance(p95)", t_monai, v_monai))

    t_medpy = v_medpy = None
    if not args.no_medpy:
        from medpy.metric.binary import hd95 as medpy_hd95

        t_medpy, v_medpy = _time(lambda: float(medpy_hd95(pred, gt, voxelspacing=spacing)),
                                 args.medpy_repeats, warmup=False)  # pure numpy/scipy: no warm-up
        rows.append(("medpy.metric.binary.hd95", t_medpy, v_medpy))

    print("\n| method | time (s) | HD95 (mm) |\n|---|---:|---:|")
    for name, t, v in rows:
        print(f"| {name} | {t:.3f} | {v:.6f} |")
    print()
    if t_medpy is not None:
        rel = abs(v_ours - v_medpy) / max(abs(v_medpy), 1e-12)
        print(f"speed-up vs medpy: {t_medpy / t_ours:.1f}x  (goal >= 40x); "
              f"|ours - medpy| / medpy = {rel:.2e}  (goal <= 1e-6)")
    rel_m = abs(v_ours_m - v_monai) / max(abs(v_monai), 1e-12)
    print(f"speed-up vs MONAI: {t_monai / t_ours:.1f}x  (goal >= 2x); MONAI's max-directed p95 vs "
          f"ours: rel diff {rel_m:.2e} (MONAI works in float32)")
    print(f"kdtree vs crop+EDT: {t_edt / t_ours:.1f}x faster with the KD-tree; same value: "
          f"{abs(v_edt - v_ours) <= 1e-9 * max(v_ours, 1)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
