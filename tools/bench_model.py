"""Model speed on this CPU: params, forward GFLOPs, seconds per slice, share of matmul peak.

    python tools/bench_model.py [--models R50-ViT-B_16 ViT-B_16 ...] [--batches 1 8] [--repeat 3]

For each model at 224x224 (1-channel input, 9 classes, eval mode, ``inference_mode``,
``channels_last``): parameter count, forward GFLOPs per slice (``FlopCounterMode``: 2 x MACs of
matmuls, convolutions and attention), and seconds per slice at each batch size in fp32 and under
bf16 autocast, with the achieved GFLOP/s as a fraction of this machine's matmul peak for that
dtype, measured in the same run (large square ``torch.mm``). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from transunet_app.models import build_model, count_parameters, list_models


def matmul_peak(dtype: torch.dtype, sizes=(1024, 2048, 4096), repeat: int = 5) -> float:
    """Best GFLOP/s of square ``torch.mm`` over a few sizes in ``dtype`` (best-of to shed
    interference from other processes)."""
    best_rate = 0.0
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        torch.mm(a, b)
        for _ in range(repeat):
            t = time.perf_counter()
            torch.mm(a, b)
            best_rate = max(best_rate, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best_rate


def forward_flops(model, size) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    x = torch.randn(1, 1, *size)
    # The math backend makes attention's matmuls visible to the counter (the fused CPU kernel
    # is not counted).
    with torch.inference_mode(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops()


def time_forward(model, batch, size, bf16: bool, repeat: int) -> float:
    x = torch.randn(batch, 1, *size).contiguous(memory_format=torch.channels_last)
    ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False))
    with torch.inference_mode(), ctx:
        model(x)  # warm-up (oneDNN primitive creation)
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t)
    return best / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--size", type=int, nargs=2, default=[224, 224])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fp32", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    names = args.models or [n for n in list_models() if n != "tiny"]
    size = tuple(args.size)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"# matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s\n")
    print("| model | params (M) | GFLOPs/slice | dtype | batch | s/slice | GFLOP/s | % of peak |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name in names:
        model = build_model(name, 9, img_size=size).eval().to(memory_format=torch.channels_last)
        gflops = forward_flops(model, size) / 1e9
        params = count_parameters(model) / 1e6
        for dtype in (["fp32"] if args.fp32 else []) + ["bf16"]:
            for batch in args.batches:
                s = time_forward(model, batch, size, dtype == "bf16", args.repeat)
                rate = gflops / s
                print(f"| {name} | {params:.2f} | {gflops:.1f} | {dtype} | {batch} | {s:.3f} | "
                      f"{rate:.0f} | {100 * rate / peak[dtype]:.0f}% |", flush=True)
    again = {k: matmul_peak(v) for k, v in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"\n# matmul peak re-measured after the models: fp32 {again['fp32']:.0f}, "
          f"bf16 {again['bf16']:.0f} GFLOP/s (percentages use the first measurement)")


if __name__ == "__main__":
    main()
