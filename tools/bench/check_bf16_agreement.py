#!/usr/bin/env python3
"""bf16 vs fp32 agreement of ``segment`` on a *trained* model (issue 5: Dice >= 0.995 per organ).

The measurement itself lives in :mod:`transunet_app.inference.agreement` (the slow test
``tests/inference/test_bf16_agreement.py`` runs it too); this tool prints its tables and adds
``--speed``. Steps (all reproducible, nothing downloaded):

1. Train the learning-check model (``configs/real_ct_learning.yaml``: tiny TransUNet, 600
   iterations, fp32) on the 30 axial slices of the real CT in ``../shared/data``; it learns
   all 8 Synapse organs (mean Dice about 0.95 on those slices). With ``--workdir`` the
   checkpoint is kept and reused by later runs.
2. Run the real ``segment`` command (in-process, same code as the console script) on that CT
   with ``--precision fp32`` and ``--precision bf16`` and compare the two label maps per organ:
   Dice, voxels of each map, voxels that differ, and the Dice that one differing voxel alone
   would give (``2n / (2n + 1)``), since the sample is small (3 mm; the gallbladder is ~70
   voxels, so a single voxel costs ~0.7% Dice).
3. Put it next to the model's own noise floor: fp32 ``segment`` on the same CT with uniform
   noise of +-0.5 HU added (the rounding of the stored integer HU; far below a scanner's
   noise), compared with fp32 on the original. Voxels whose fp32 label flips under that are
   near-ties of the model, not precision errors.
4. Say where a disagreement comes from: the logits of the fp32 and bf16 inference models on
   the same slices (relative error, the fp32 top-1 margin at the voxels that flip), the same
   for bf16 *autocast* (fp32 weights, bf16 matmuls), for ablations of the float32 parts of the
   bf16 model (stem in bf16 too; decoder blocks in float32 too), and the fp32 model with one
   stage at a time in bf16.
5. ``--speed``: what the float32 parts cost on R50-ViT-B_16 (CPU time, interleaved rounds).

Usage::

    python tools/bench/check_bf16_agreement.py --workdir /tmp/bf16check      # ~5 CPU min to train
    python tools/bench/check_bf16_agreement.py --workdir /tmp/bf16check --json out.json
    python tools/bench/check_bf16_agreement.py --speed --rounds 6   # cost of the float32 parts

The trained model is scored on the slices it was fitted to: this is an agreement check of two
inference precisions, not an accuracy claim.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from transunet_app.engine.learning_check import CT_NAME
from transunet_app.inference.agreement import check

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def float32_parts_cost(model_name: str = "R50-ViT-B_16", batch: int = 8, size: int = 224,
                       rounds: int = 5, threads: int = 1) -> dict:
    """CPU seconds of one bf16 inference forward with and without the float32 parts.

    Variants (random weights; only the time matters):

    * "all bf16 (previous)": the stem in bf16 on a bf16 input, oneDNN biases in bf16;
    * "segment": the model ``segment`` runs (float32 stem on the float32 input, float32 biases);
    * "segment + last decoder block in float32": the next candidate, for comparison.

    Rounds are interleaved (the order alternates), each forward timed with
    ``time.process_time()`` so other jobs on a shared machine do not count; the machine's bf16
    peak still swings, hence ratios per round and their median.
    """
    import statistics

    import torch

    from transunet_app.inference.onednn import OneDNNConv2d, OneDNNLinear
    from transunet_app.inference.optimize import find_stem, prepare_for_inference
    from transunet_app.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(model_name, 9, img_size=size).eval()
    model_for_names = model
    cpu = torch.device("cpu")
    previous = prepare_for_inference(model, cpu, "bf16", copy_model=True, float32_stem=False)
    for m in previous.modules():
        if isinstance(m, (OneDNNConv2d, OneDNNLinear)) and m.bias is not None:
            m.bias = m.bias.bfloat16()
    nets = {"all bf16 (previous)": previous,
            "segment": prepare_for_inference(model, cpu, "bf16", copy_model=True),
            "segment + last decoder block in float32": prepare_for_inference(
                model, cpu, "bf16", copy_model=True, float32_modules=["decoder.blocks.3"])}
    x = torch.rand(batch, 1, size, size)
    inputs = {name: x.to(net.input_dtype).contiguous(memory_format=torch.channels_last)
              for name, net in nets.items()}
    seconds = {name: [] for name in nets}
    names = list(nets)
    with torch.inference_mode():
        for name in names:
            nets[name](inputs[name])  # warm-up: oneDNN primitives
        for r in range(rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                t0 = time.process_time()
                nets[name](inputs[name])
                seconds[name].append(time.process_time() - t0)
            log("round %d: %s" % (r, ", ".join(f"{n} {seconds[n][-1]:.2f} s" for n in names)))
    base = seconds[names[0]]
    # The whole-model times swing by +-20% between rounds on a shared machine (the bf16 peak
    # moves), more than the parts cost: time the parts that differ on their own as well.
    stem = find_stem(model_for_names)
    parts = {"stem convolution": (stem, names[0], names[1]),
             "last decoder block": ("decoder.blocks.3", names[1], names[2])}
    part_ms = {}
    with torch.inference_mode():
        for label, (part, a, b) in parts.items():
            runs = {}
            for name in (a, b):
                args = _inputs_of(nets[name], part, inputs[name])
                runs[name] = (nets[name].get_submodule(part), args)
            times = {a: [], b: []}
            for r in range(4 * rounds):
                for name in ((a, b) if r % 2 == 0 else (b, a)):
                    mod, args = runs[name]
                    t0 = time.process_time()
                    mod(*args)
                    times[name].append(time.process_time() - t0)
            part_ms[label] = {"module": part, "without": a, "with": b,
                              "ms_without": 1e3 * statistics.median(times[a]),
                              "ms_with": 1e3 * statistics.median(times[b])}
    whole = statistics.median(base)
    for v in part_ms.values():
        v["cost_of_whole_forward"] = (v["ms_with"] - v["ms_without"]) / 1e3 / whole
    return {"model": model_name, "batch": batch, "size": size, "threads": threads, "rounds": rounds,
            "seconds": seconds,
            "median_ratio_to_previous": {n: statistics.median(b / a for a, b in zip(base, seconds[n]))
                                         for n in names},
            "sum_ratio_to_previous": {n: sum(seconds[n]) / sum(base) for n in names},
            "parts": part_ms}


def _inputs_of(net, part: str, x):
    """The positional inputs ``net.get_submodule(part)`` receives when ``net(x)`` runs."""
    seen = []
    handle = net.get_submodule(part).register_forward_pre_hook(lambda mod, args: seen.append(args))
    try:
        net(x)
    finally:
        handle.remove()
    return seen[0]


def print_speed(r: dict) -> None:
    import statistics

    print(f"\nbf16 inference forward, {r['model']}, batch {r['batch']}, {r['size']}x{r['size']}, "
          f"{r['threads']} thread(s), {r['rounds']} interleaved rounds (CPU seconds):\n")
    print("| variant | median s/batch | cost vs previous (median of per-round ratios) | ratio of sums |")
    print("|---|---:|---:|---:|")
    for name, secs in r["seconds"].items():
        med = r["median_ratio_to_previous"][name]
        print(f"| {name} | {statistics.median(secs):.3f} | {100 * (med - 1):+.1f}% | "
              f"{r['sum_ratio_to_previous'][name]:.3f} |")
    print("\nThe parts that differ, timed on their own (medians of interleaved calls):\n")
    print("| part | without (ms) | with (ms) | cost per forward |")
    print("|---|---:|---:|---:|")
    for label, v in r["parts"].items():
        print(f"| {label} (`{v['module']}`): {v['without']} -> {v['with']} | {v['ms_without']:.1f} | "
              f"{v['ms_with']:.1f} | {100 * v['cost_of_whole_forward']:+.2f}% |")
    print()


def print_report(r: dict) -> None:
    print(f"\nbf16 vs fp32 `segment` on the real CT {'x'.join(map(str, r['ct_shape']))} (3 mm), "
          f"model: configs/real_ct_learning.yaml (tiny TransUNet, fitted to these slices); "
          f"bf16 hardware: {r['bf16_hardware']}; goal Dice >= {r['goal_dice']} per organ: "
          f"{'MET' if r['goal_met'] else 'NOT MET'}\n")
    print("| organ | voxels fp32 | voxels bf16 | voxels differing | Dice bf16 vs fp32 | "
          "Dice if 1 voxel differed | fp32 +-0.5 HU vs fp32: voxels differing | Dice | fp32 Dice vs truth |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, o in r["organs"].items():
        def f(v, fmt="{:.4f}"):
            return "-" if v is None else fmt.format(v)
        print(f"| {name} | {o['voxels_fp32']} | {o['voxels_bf16']} | {o['voxels_differing']} | "
              f"{f(o['dice_bf16_vs_fp32'])} | {f(o['one_voxel_dice'])} | {o['noise_floor_voxels_differing']} | "
              f"{f(o['noise_floor_dice'])} | {f(o['fp32_dice_vs_truth'], '{:.3f}')} |")
    print(f"\nVoxels differing in all: bf16 vs fp32 {r['voxels_differing_total']}, fp32 with +-0.5 HU "
          f"noise vs fp32 {r['noise_floor_voxels_differing_total']}, of {r['voxels_total']}.")
    lg = r["logits"]
    print(f"\nLogits on the model grid {lg['model_grid']} (fp32 top-1 margin median "
          f"{lg['fp32_margin_median']:.2f}):\n")
    print("| bf16 variant | rel. L2 error | median abs error | max abs error | argmax flips "
          "| fp32 margin at flips (median / max) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, v in lg.items():
        if not isinstance(v, dict) or name == "stages":
            continue
        m = ("-" if v["fp32_margin_at_flips_max"] is None else
             f"{v['fp32_margin_at_flips_median']:.3f} / {v['fp32_margin_at_flips_max']:.3f}")
        print(f"| {name} | {v['logits_rel_l2_error']:.2e} | {v['logits_abs_error_median']:.3f} | "
              f"{v['logits_max_abs_error']:.3f} | {v['argmax_flips']} ({100 * v['argmax_flip_share']:.3f}%) | {m} |")
    print("\nWhere: the fp32 model with only one stage in bf16:\n")
    print("| stage in bf16 | logits rel. L2 error | argmax flips |")
    print("|---|---:|---:|")
    for name, v in lg["stages"].items():
        print(f"| {name} | {v['logits_rel_l2_error']:.2e} | {v['argmax_flips']} |")
    print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="keep the trained model and outputs here (default: a temp folder)")
    ap.add_argument("--data", default=str(SHARED), help="folder with the real CT and labels")
    ap.add_argument("--iterations", type=int, help="training iterations (default: the config's 600)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--json", help="also write the results as JSON")
    ap.add_argument("--speed", action="store_true",
                    help="only measure the CPU-time cost of the float32 parts on R50-ViT-B_16 "
                         "(batch 8, 224x224, --threads; no training)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds for --speed")
    args = ap.parse_args(argv)
    if args.speed:
        r = float32_parts_cost(rounds=args.rounds, threads=args.threads)
        print_speed(r)
        if args.json:
            Path(args.json).write_text(json.dumps(r, indent=2))
        return 0
    shared = Path(args.data)
    if not (shared / CT_NAME).exists():
        print(f"real CT sample not found: {shared / CT_NAME}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bf16check_") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        r = check(work, shared, args.iterations, args.threads)
    print_report(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0 if r["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
