#!/usr/bin/env python3
"""Labels of upsampled scores: ``interpolate + argmax`` vs :func:`upsampled_argmax`, side by side.

The scores are (8, 9, 224, 224) float32 channels-last, as ``segment``'s model returns them, made
realistic from the real CT's organ labels in ``../shared/data`` (8 axial slices, one-hot,
resized to 224, smoothed, scaled like trained logits, a little noise) or, without the data,
from smooth random fields. Resized to 512x512. Interleaved rounds, medians.

Usage::

    python tools/bench/bench_upsampled_argmax.py [--threads 2] [--rounds 15]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from transunet_app.inference.upsampled_argmax import upsampled_argmax, upsampled_argmax_torch
from transunet_app.kernels import upsampled_argmax as kernel

LABELS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ct_abdomen_3mm_labels.nii.gz"


def realistic_scores(size: int = 224, seed: int = 0) -> tuple[torch.Tensor, str]:
    g = torch.Generator().manual_seed(seed)
    if LABELS.exists():
        import nibabel as nib

        lab = np.asanyarray(nib.load(str(LABELS)).dataobj)
        ks = np.linspace(4, lab.shape[2] - 5, 8).round().astype(int)
        sl = torch.from_numpy(lab[:, :, ks].astype(np.int64)).permute(2, 0, 1)
        onehot = F.one_hot(sl, 9).permute(0, 3, 1, 2).float()
        onehot = F.interpolate(onehot, size=(size, size), mode="bilinear", align_corners=True)
        scores, source = F.avg_pool2d(onehot, 5, 1, 2) * 12, "real CT labels"
    else:
        coarse = torch.randn(8, 9, size // 16, size // 16, generator=g) * 8
        scores, source = F.interpolate(coarse, size=(size, size), mode="bilinear"), "smooth noise"
    scores = scores + torch.randn(scores.shape, generator=g) * 0.3
    return scores.contiguous(memory_format=torch.channels_last), source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--noisy", action="store_true",
                    help="labels of an untrained model instead (random scores: most cells disagree)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scores, source = realistic_scores()
    if args.noisy:
        scores = torch.randn(scores.shape).contiguous(memory_format=torch.channels_last)
        source = "random scores"
    size = (args.size, args.size)

    def plain():
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=True).argmax(1)

    def ours():
        return upsampled_argmax(scores, size)

    def ours_torch():
        return upsampled_argmax_torch(scores, size)

    variants = {"interpolate + argmax": plain, "upsampled_argmax (torch ops)": ours_torch,
                "upsampled_argmax": ours}
    if not kernel.kernel_takes(scores, size):
        print(f"C kernel not used ({kernel.unavailable_reason()}): upsampled_argmax = torch ops")
    ref, new = plain().to(torch.uint8), ours()
    assert torch.equal(new, ours_torch()) or (new != ours_torch()).float().mean() < 1e-4
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    labels = scores.argmax(1)
    agree = ((labels[:, :-1, :-1] == labels[:, 1:, :-1]) & (labels[:, :-1, :-1] == labels[:, :-1, 1:])
             & (labels[:, :-1, :-1] == labels[:, 1:, 1:])).float().mean().item()
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"scores {tuple(scores.shape)} ({source}) -> {size}, {args.threads} threads, "
          f"{args.rounds} interleaved rounds")
    for k, v in med.items():
        print(f"  {k:30s} {v:7.1f} ms per batch")
    print(f"  speed-up {med['interpolate + argmax'] / med['upsampled_argmax']:.2f}x; labels equal on "
          f"{(ref == new).float().mean().item() * 100:.4f}% of pixels; source cells whose corners "
          f"disagree: {(1 - agree) * 100:.1f}%")


if __name__ == "__main__":
    main()
