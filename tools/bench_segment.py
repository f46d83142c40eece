#!/usr/bin/env python3
"""Benchmark ``segment`` against a reference loop that mirrors the official TransUNet inference.

Everything is measured side by side in one run on the same machine with the same weights,
so the ratios hold even when other processes share the CPU (absolute times do not).

Parts (``--parts``, default all):

* ``peak``: measured fp32 and bf16 matmul throughput (GFLOP/s), the ceiling for the model.
* ``speed``: a 512x512xN phantom CT (N = ``--slices``, default 150) with R50-ViT-B_16 (seeded
  random weights; speed does not depend on their values), end to end from the NIfTI file to
  the written label map:

  - reference: mirrors ``test_single_volume`` of the official code: one slice at a time,
    fp32, scipy cubic ``zoom`` to 224x224, argmax of the softmax, order-0 ``zoom`` back,
  - ``segment`` in fp32, and in ``auto`` precision (bf16 on CPUs with AMX).

  Also reports the model's achieved GFLOP/s (FLOPs counted with torch's FlopCounterMode).
* ``memory``: peak RSS of a ``segment`` process (bf16, default options) on a 512x512x300 CT.
* ``dice``: bf16 vs fp32 agreement (Dice per organ) of a tiny TransUNet *trained* on phantom
  slices (see ``tests/inference/phantom_training.py``), on held-out phantoms in several
  orientations.

Usage::

    python tools/bench_segment.py                   # everything (tens of minutes on 2 cores)
    python tools/bench_segment.py --parts speed --slices 40
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "inference"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- matmul peak


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Best-of measured GFLOP/s of an n x n x n matmul in ``dtype``."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


# --------------------------------------------------------------------------- inputs


def write_ct(path: Path, slices: int, seed: int = 3, orientation: str = "LPS") -> tuple:
    """A full-size (512 x 512 in-plane) phantom CT written as int16 NIfTI."""
    import nibabel as nib

    from transunet_app.data.phantom import make_phantom

    ph = make_phantom(seed, size="full", slices=slices, orientation=orientation)
    img = nib.Nifti1Image(ph.image, ph.affine)
    img.header.set_qform(ph.affine, code=1)
    img.header.set_sform(ph.affine, code=1)
    nib.save(img, str(path))
    return ph.image.shape


def _nifti_shape(path: Path) -> tuple:
    import nibabel as nib

    return tuple(int(v) for v in nib.load(str(path)).shape)


def make_r50_checkpoint(path: Path, seed: int = 0) -> None:
    from transunet_app.checkpoint import make_checkpoint, save_checkpoint
    from transunet_app.data.phantom import CLASSES
    from transunet_app.models import build_model

    torch.manual_seed(seed)
    model = build_model("R50-ViT-B_16", len(CLASSES), img_size=224)
    # Random heads give near-uniform logits; scale the head so labels vary like a real model's.
    with torch.no_grad():
        model.segmentation_head.weight.mul_(20.0)
    save_checkpoint(path, make_checkpoint(model, list(CLASSES)))


# --------------------------------------------------------------------------- reference


def reference_segment(src: Path, dst: Path, ckpt_path: Path) -> float:
    """The official ``test_single_volume`` loop, end to end from file to file; model seconds."""
    import nibabel as nib
    from scipy.ndimage import zoom

    from transunet_app.checkpoint import load_checkpoint, model_from_checkpoint
    from transunet_app.data.geometry import from_canonical, to_canonical

    ckpt = load_checkpoint(ckpt_path)
    net = model_from_checkpoint(ckpt)
    prep = ckpt["preprocessing"]
    patch_size = prep["img_size"]
    lo, hi = prep["hu_window"]
    img = nib.load(str(src))
    vol = np.asanyarray(img.dataobj)
    canon, reo = to_canonical(vol, img.affine)
    image = (np.clip(canon.astype(np.float32), lo, hi) - lo) / (hi - lo)
    prediction = np.zeros(image.shape, dtype=np.uint8)
    net.eval()
    model_s = 0.0
    for ind in range(image.shape[0]):
        slice_ = image[ind, :, :]
        x, y = slice_.shape[0], slice_.shape[1]
        if x != patch_size[0] or y != patch_size[1]:
            slice_ = zoom(slice_, (patch_size[0] / x, patch_size[1] / y), order=3)
        inp = torch.from_numpy(slice_).unsqueeze(0).unsqueeze(0).float()
        with torch.no_grad():
            t0 = time.perf_counter()
            outputs = net(inp)
            model_s += time.perf_counter() - t0
            out = torch.argmax(torch.softmax(outputs, dim=1), dim=1).squeeze(0)
            out = out.cpu().detach().numpy()
            if x != patch_size[0] or y != patch_size[1]:
                pred = zoom(out, (x / patch_size[0], y / patch_size[1]), order=0)
            else:
                pred = out
            prediction[ind] = pred
    labels = from_canonical(prediction, reo)
    out_img = nib.Nifti1Image(labels, img.affine, header=img.header)
    out_img.set_data_dtype(np.uint8)
    nib.save(out_img, str(dst))
    return model_s


def model_flops(ckpt_path: Path) -> float:
    """FLOPs of one 224x224 forward pass (convolutions and matmuls, 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    from transunet_app.checkpoint import load_checkpoint, model_from_checkpoint

    net = model_from_checkpoint(load_checkpoint(ckpt_path)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 1, 224, 224))
    return float(fc.get_total_flops())


# --------------------------------------------------------------------------- parts


def part_peak(results: dict) -> None:
    results["peak"] = {"fp32_gflops": matmul_peak(torch.float32),
                       "bf16_gflops": matmul_peak(torch.bfloat16),
                       "threads": torch.get_num_threads()}
    log(f"matmul peak: {results['peak']}")


def part_speed(results: dict, work: Path, slices: int, batch: int) -> None:
    from transunet_app.inference import Segmenter
    from transunet_app.inference.precision import cpu_has_amx

    ct = work / "ct512.nii.gz"
    ckpt = work / "r50.pt"
    if ct.exists() and ckpt.exists() and _nifti_shape(ct)[2] == slices:  # --workdir reuse
        log(f"reusing {ct} and {ckpt}")
        shape = _nifti_shape(ct)
    else:
        log(f"writing a 512x512x{slices} phantom CT and an R50-ViT-B_16 checkpoint")
        shape = write_ct(ct, slices)
        make_r50_checkpoint(ckpt)
    flops = model_flops(ckpt)
    rows = {}
    log("reference loop (official test_single_volume: per slice, fp32, cubic zoom)")
    t0 = time.perf_counter()
    model_s = reference_segment(ct, work / "ref.nii.gz", ckpt)
    rows["reference"] = {"seconds": time.perf_counter() - t0, "model_seconds": model_s}
    for prec in ("fp32", "auto"):
        log(f"segment --precision {prec}")
        t0 = time.perf_counter()
        seg = Segmenter(ckpt, precision=prec, batch_size=batch)
        r = seg.run(ct, work / f"seg_{prec}.nii.gz", overwrite=True)
        total = time.perf_counter() - t0
        rows[f"segment {prec} ({seg.precision})"] = {"seconds": total, "run_seconds": r.seconds,
                                                    "model_seconds": r.timings.get("model")}
        del seg
    import nibabel as nib

    ref = np.asanyarray(nib.load(str(work / "ref.nii.gz")).dataobj)
    ref_s = rows["reference"]["seconds"]
    for name, row in rows.items():
        row["speedup_vs_reference"] = ref_s / row["seconds"]
        row["slices_per_s"] = slices / row["seconds"]
        row["model_gflops_achieved"] = flops * slices / (row.get("model_seconds") or row["seconds"]) / 1e9
        row["end_to_end_gflops"] = flops * slices / row["seconds"] / 1e9
        if name != "reference":
            prec = name.split()[1]
            lab = np.asanyarray(nib.load(str(work / f"seg_{prec}.nii.gz")).dataobj)
            row["voxel_agreement_with_reference"] = float((lab == ref).mean())
        log(f"{name}: {row}")
    results["speed"] = {"shape": list(shape), "slices": slices, "batch_size": batch,
                        "gflop_per_slice": flops / 1e9, "amx": cpu_has_amx(),
                        "threads": torch.get_num_threads(), "rows": rows}


def part_memory(results: dict, work: Path, slices: int) -> None:
    ct = work / f"ct512x{slices}.nii.gz"
    ckpt = work / "r50.pt"
    if not ckpt.exists():
        make_r50_checkpoint(ckpt)
    log(f"writing a 512x512x{slices} phantom CT for the memory test")
    write_ct(ct, slices, seed=4)
    out = work / "mem_out.nii.gz"
    cmd = [sys.executable, "-m", "transunet_app", "segment", str(ct), "-o", str(out),
           "--checkpoint", str(ckpt), "--quiet", "--overwrite"]
    log("peak RSS of: " + " ".join(cmd[2:]))
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(cmd, capture_output=True, text=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"segment failed: {proc.stderr}")
    results["memory"] = {"shape": [512, 512, slices], "peak_rss_gb": peak_kb / 1024 ** 2,
                         "earlier_children_peak_gb": before / 1024 ** 2,
                         "seconds": time.perf_counter() - t0, "limit_gb": 2.5}
    log(f"memory: {results['memory']}")


def part_dice(results: dict, work: Path, steps: int) -> None:
    import nibabel as nib

    from phantom_training import train_tiny
    from transunet_app.checkpoint import save_checkpoint
    from transunet_app.data.phantom import CLASSES, make_phantom
    from transunet_app.inference import Segmenter

    ckpt = work / "tiny_trained.pt"
    log(f"training a tiny TransUNet on phantom slices ({steps} steps)")
    t0 = time.perf_counter()
    _, ck = train_tiny(steps=steps)
    save_checkpoint(ckpt, ck)
    train_s = time.perf_counter() - t0
    per_case = []
    for seed, orient in ((101, "LPS"), (102, "RAS"), (103, "PSL")):
        ph = make_phantom(seed, orientation=orient)
        src = work / f"held_{seed}.nii.gz"
        nib.save(nib.Nifti1Image(ph.image, ph.affine), str(src))
        labs = {}
        for prec in ("fp32", "bf16"):
            seg = Segmenter(ckpt, precision=prec, batch_size=16)
            seg.run(src, work / f"held_{seed}_{prec}.nii.gz", overwrite=True)
            labs[prec] = np.asanyarray(nib.load(str(work / f"held_{seed}_{prec}.nii.gz")).dataobj)
        case = {"seed": seed, "orientation": orient, "bf16_vs_fp32": {}, "fp32_vs_truth": {}}
        for k, name in enumerate(CLASSES):
            if k == 0:
                continue
            case["bf16_vs_fp32"][name] = _dice(labs["bf16"] == k, labs["fp32"] == k)
            case["fp32_vs_truth"][name] = _dice(labs["fp32"] == k, ph.labels == k)
        per_case.append(case)
        log(f"case {seed} {orient}: bf16 vs fp32 min Dice "
            f"{min(v for v in case['bf16_vs_fp32'].values() if v is not None):.4f}")
    organs = {}
    for k, name in enumerate(CLASSES[1:], start=1):
        a = np.concatenate([(np.asanyarray(nib.load(str(work / f"held_{c['seed']}_bf16.nii.gz")).dataobj) == k).ravel()
                            for c in per_case])
        b = np.concatenate([(np.asanyarray(nib.load(str(work / f"held_{c['seed']}_fp32.nii.gz")).dataobj) == k).ravel()
                            for c in per_case])
        organs[name] = {"bf16_vs_fp32": _dice(a, b),
                        "fp32_vs_truth_mean": float(np.mean([c["fp32_vs_truth"][name] or 0 for c in per_case])),
                        "voxels_fp32": int(b.sum())}
    results["dice"] = {"train_steps": steps, "train_seconds": train_s, "organs": organs,
                       "cases": per_case}
    log(f"dice: {json.dumps(organs)}")


def _dice(a: np.ndarray, b: np.ndarray):
    s = int(a.sum()) + int(b.sum())
    return None if s == 0 else 2.0 * int((a & b).sum()) / s


# --------------------------------------------------------------------------- report


def print_tables(results: dict) -> None:
    print()
    if "peak" in results:
        p = results["peak"]
        print(f"Matmul peak ({p['threads']} threads): fp32 {p['fp32_gflops']:.0f} GFLOP/s, "
              f"bf16 {p['bf16_gflops']:.0f} GFLOP/s\n")
    if "speed" in results:
        s = results["speed"]
        print(f"Speed: {'x'.join(map(str, s['shape']))} CT, R50-ViT-B_16 ({s['gflop_per_slice']:.1f} "
              f"GFLOP/slice), batch {s['batch_size']}, {s['threads']} threads, AMX: {s['amx']}\n")
        print("| pipeline | seconds | slices/s | speed-up vs reference | GFLOP/s in the model loop "
              "| % of matmul peak | GFLOP/s end to end |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in s["rows"].items():
            peak = None
            if "peak" in results:
                peak = results["peak"]["bf16_gflops" if "bf16" in name else "fp32_gflops"]
            pct = f"{100 * r['model_gflops_achieved'] / peak:.0f}%" if peak else "-"
            print(f"| {name} | {r['seconds']:.1f} | {r['slices_per_s']:.2f} | "
                  f"{r['speedup_vs_reference']:.2f}x | {r['model_gflops_achieved']:.0f} | {pct} | "
                  f"{r['end_to_end_gflops']:.0f} |")
        print("\n(GFLOP/s = counted model FLOPs / time; 'model loop' = reference: the model calls only; "
              "segment: normalise + resize + model + resize back + argmax over all slices)\n")
    if "memory" in results:
        m = results["memory"]
        print(f"Memory: peak RSS {m['peak_rss_gb']:.2f} GB for a {'x'.join(map(str, m['shape']))} CT "
              f"(limit {m['limit_gb']} GB), {m['seconds']:.0f} s\n")
    if "dice" in results:
        d = results["dice"]
        print(f"bf16 vs fp32 on a trained tiny TransUNet ({d['train_steps']} steps on phantoms), "
              f"3 held-out phantoms (LPS, RAS, PSL):\n")
        print("| organ | Dice bf16 vs fp32 | fp32 Dice vs truth | voxels |")
        print("|---|---:|---:|---:|")
        for name, o in d["organs"].items():
            v = "n/a (absent)" if o["bf16_vs_fp32"] is None else f"{o['bf16_vs_fp32']:.4f}"
            print(f"| {name} | {v} | {o['fp32_vs_truth_mean']:.3f} | {o['voxels_fp32']} |")
        print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="peak,speed,memory,dice")
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--memory-slices", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--workdir", help="keep files here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args(argv)
    parts = args.parts.split(",")
    results: dict = {"torch": torch.__version__, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if "peak" in parts:
            part_peak(results)
        if "speed" in parts:
            part_speed(results, work, args.slices, args.batch_size)
        if "memory" in parts:
            part_memory(results, work, args.memory_slices)
        if "dice" in parts:
            part_dice(results, work, args.train_steps)
    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
