"""Model speed on this CPU: params, forward GFLOPs, seconds per slice, share of matmul peak.

    python tools/bench/bench_model.py [--models R50-ViT-B_16 ViT-B_16 ...] [--batches 1 8] [--rounds 5] [--modes ...]

For each model at 224x224 (1-channel input, 9 classes, eval mode, ``inference_mode`` (autocast:
``no_grad``, which keeps autocast's weight cache), ``channels_last``): parameter count, forward
GFLOPs per slice (``FlopCounterMode``: 2 x MACs of
matmuls, convolutions and attention), and seconds per slice at each batch size in these modes:
fp32, bf16 autocast (the training-time model), bf16-inference (the model as ``segment``
runs it: weights standardised, BatchNorms folded and cast to bf16 once), fp32-inference (the
fp32 model ``segment`` runs: prepared, with the oneDNN packing pass where this CPU's
capabilities say it pays) and fp32-onednn (prepared with that pass forced on, to re-measure
the decision on a new CPU class). The achieved GFLOP/s
is given as a fraction of this machine's square-matmul peak for that dtype, measured before
every timed forward in the same run. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from transunet_app.fast_layers import use_training_fast_paths
from transunet_app.inference.optimize import prepare_for_inference
from transunet_app.models import build_model, count_parameters, list_models


def matmul_peak(dtype: torch.dtype, sizes=(1024, 2048, 4096), repeat: int = 3) -> float:
    """Best GFLOP/s of square ``torch.mm`` over a few sizes in ``dtype``."""
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


#: What each mode runs: the training-time model under autocast, or the model as ``segment``
#: prepares it (weights standardised, BatchNorms folded and cast once, no autocast).
MODES = ("fp32", "bf16", "bf16-inference", "fp32-inference", "fp32-onednn")


def mode_model(model, mode: str):
    if mode in ("fp32-inference", "fp32-onednn"):
        fuse = True if mode == "fp32-onednn" else None
        prepared = prepare_for_inference(model, torch.device("cpu"), "fp32", copy_model=True, fuse=fuse)
        return prepared, torch.float32, contextlib.nullcontext()
    if mode != "bf16-inference":
        return model, torch.float32, (torch.autocast("cpu", dtype=torch.bfloat16)
                                      if mode == "bf16" else contextlib.nullcontext())
    prepared = prepare_for_inference(model, torch.device("cpu"), "bf16", copy_model=True)
    return prepared, torch.bfloat16, contextlib.nullcontext()


def time_forward(model, batch, size, mode: str, rounds: int, gflops: float,
                 peak_sizes=(1024, 2048, 4096)):
    """Best seconds per slice, and the median over ``rounds`` of (achieved GFLOP/s / matmul
    peak) where each round measures the peak right before its forward: on a shared or
    frequency-scaling machine both see the same conditions, so the ratio is stable even when
    absolute times are not."""
    net, dtype, ctx = mode_model(model, mode)
    peak_dtype = torch.float32 if mode.startswith("fp32") else torch.bfloat16
    x = torch.randn(batch, 1, *size).to(dtype).contiguous(memory_format=torch.channels_last)
    best, ratios, peaks = float("inf"), [], []
    # Autocast keeps the bf16 copy of each weight for the life of its context, but torch turns
    # that cache off under inference_mode (every forward re-cast all 105M weights of
    # R50-ViT-B_16: ~70 ms per batch-8 forward); an eval loop under autocast runs with no_grad.
    grad_off = torch.no_grad() if mode == "bf16" else torch.inference_mode()
    with grad_off, ctx:
        net(x)  # warm-up (oneDNN primitive creation)
        for _ in range(rounds):
            peak = matmul_peak(peak_dtype, sizes=peak_sizes, repeat=2)
            t = time.perf_counter()
            net(x)
            dt = time.perf_counter() - t
            best = min(best, dt)
            peaks.append(peak)
            ratios.append(gflops * batch / dt / peak)
    return best / batch, statistics.median(ratios), max(peaks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--size", type=int, nargs=2, default=[224, 224])
    ap.add_argument("--rounds", type=int, default=5, help="timed forwards per row")
    ap.add_argument("--modes", nargs="*", choices=MODES, default=["fp32", "bf16", "bf16-inference"])
    ap.add_argument("--peak-sizes", nargs="*", type=int, default=[1024, 2048, 4096],
                    help="square matmul sizes for the peak")
    args = ap.parse_args()
    names = args.models or [n for n in list_models() if n != "tiny"]
    size = tuple(args.size)
    from transunet_app import capabilities

    print(f"# {capabilities.cpu_model()}, CPU class {capabilities.cpu_class()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, torch kernels "
          f"{torch.backends.cpu.get_cpu_capability()}; "
          + "; ".join(d.line() for d in capabilities.decisions()[:5]))
    print("# % of peak: median over rounds of achieved GFLOP/s / square-matmul peak measured "
          "right before each forward (same dtype); s/slice and GFLOP/s: best round\n")
    print("| model | params (M) | GFLOPs/slice | mode | batch | s/slice | GFLOP/s | peak GFLOP/s "
          "| % of peak |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for name in names:
        model = build_model(name, 9, img_size=size).eval().to(memory_format=torch.channels_last)
        use_training_fast_paths(model)  # the training-time model, as the Trainer runs it
        gflops = forward_flops(model, size) / 1e9
        params = count_parameters(model) / 1e6
        for mode in args.modes:
            for batch in args.batches:
                s, ratio, peak = time_forward(model, batch, size, mode, args.rounds, gflops,
                                              tuple(args.peak_sizes))
                print(f"| {name} | {params:.2f} | {gflops:.1f} | {mode} | {batch} | {s:.3f} | "
                      f"{gflops / s:.0f} | {peak:.0f} | {100 * ratio:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
