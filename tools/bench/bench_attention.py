#!/usr/bin/env python3
"""bf16 attention on the CPU: SDPA (torch's flash kernel), explicit bf16 matmul+softmax, ours.

q, k, v are permuted views of one (B, N, 3, H, D) bf16 tensor, as the ViT blocks make them,
with scores q.k/sqrt(D) of std ~1 (``--score-std``). Per thread count: every variant warmed
up, then ``--rounds`` interleaved rounds of one call each; the median time per call, GFLOP/s
counted as 4*B*H*N*N*D, and the error against a float64 ``softmax(q k^T s) v``: max relative
(max |out - ref| / max |ref|) and RMS relative (||out - ref|| / ||ref||).

Usage::

    python tools/bench/bench_attention.py [--shape 8 12 196 64 [--shape 8 12 1024 64 ...]]
                                    [--threads 1 2] [--rounds 30] [--score-std 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from transunet_app.kernels import attention as fast_attention


def inputs(shape, score_std: float, seed: int = 0):
    B, H, N, D = shape
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, N, 3, H, D, generator=g)
    qkv[:, :, :2] *= score_std ** 0.5
    q, k, v = qkv.bfloat16().permute(2, 0, 3, 1, 4)
    return q, k, v


def errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    d = out.double() - ref
    return float(d.abs().max() / ref.abs().max()), float(d.norm() / ref.norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=4, action="append", metavar=("B", "H", "N", "D"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--score-std", type=float, default=1.0)
    args = ap.parse_args()
    shapes = args.shape or [[8, 12, 196, 64]]
    if not fast_attention.kernel_available():
        print(f"kernel unavailable: {fast_attention.unavailable_reason()} (ours = SDPA fallback)")

    # other processes on the 2 cores distort the 2-thread rows most: say how busy the machine was
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch {torch.__version__}")
    print("| shape (B, H, N, D) | threads | variant | ms per call | GFLOP/s | vs SDPA "
          "| max rel. error | RMS rel. error |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        q, k, v = inputs(shape, args.score_std)
        B, H, N, D = shape
        scale = D ** -0.5
        flops = 4 * B * H * N * N * D
        ref = torch.softmax(q.double() @ k.double().transpose(-2, -1) * scale, -1) @ v.double()
        variants = {
            "SDPA (flash)": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v),
            "explicit bf16": lambda q=q, k=k, v=v, scale=scale: torch.softmax(q @ k.transpose(-2, -1) * scale, -1) @ v,
            "ours": lambda q=q, k=k, v=v: fast_attention.attention(q, k, v),
        }
        errs = {name: errors(fn(), ref) for name, fn in variants.items()}
        for threads in args.threads:
            torch.set_num_threads(threads)
            for fn in variants.values():
                for _ in range(5):
                    fn()
            times = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, fn in variants.items():
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
            med = {name: statistics.median(ts) for name, ts in times.items()}
            for name in variants:
                mx, rms = errs[name]
                print(f"| {tuple(shape)} | {threads} | {name} | {med[name] * 1e3:.2f} | "
                      f"{flops / med[name] / 1e9:.0f} | {med['SDPA (flash)'] / med[name]:.2f}x | "
                      f"{mx:.2e} | {rms:.2e} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
