#!/usr/bin/env python3
"""Benchmark ``segment`` against a reference loop that mirrors the official TransUNet inference.

Everything is measured side by side in one run on the same machine with the same weights.
The pipelines are *interleaved*: each runs in its own worker process and they take turns
holding a baton, ``--chunk`` slices at a time (reference chunk, segment-fp32 chunk,
segment-bf16 chunk, repeat). Only the baton holder computes, so every pipeline sees the same
machine conditions over the run even when other jobs' load changes; each pipeline's time is
the sum of its turns.

Parts (``--parts``, default ``peak,speed,startup,memory``; ``dice`` on request):

* ``peak``: measured fp32 and bf16 matmul throughput (GFLOP/s), before and after the speed
  run (the best of all measurements is the ceiling used for "% of peak").
* ``speed``: a 512x512xN phantom CT (N = ``--slices``, default 150) with R50-ViT-B_16
  (seeded random weights; speed does not depend on their values), from the NIfTI file on disk
  to the label map on disk:

  - reference: mirrors ``test_single_volume`` of the official code: one slice at a time,
    fp32, scipy cubic ``zoom`` to 224x224, softmax + argmax, order-0 ``zoom`` back; reads the
    NIfTI with nibabel and writes a uint8 NIfTI. Its network is this project's R50-ViT-B_16
    (already sped up: fused q/k/v, SDPA, cached weight standardisation), or with
    ``--official DIR`` the official implementation from a local checkout (same weights,
    loaded into ours with ``load_pretrained``).
  - ``segment --precision fp32`` and ``--precision bf16``: :meth:`Segmenter.run`, the code the
    ``segment`` command runs (input read and check, batching on two CPU streams, bilinear
    resize in, model, logits resized back + argmax, label map and JSON sidecar written
    atomically), with malloc tuned as the command tunes it. The weights are random, so the
    labels are noisy: the label step takes its plain path (interpolate + argmax), as it would
    not for a trained model (``tools/bench/bench_upsampled_argmax.py``).

  Timed for both: model loading (checkpoint read, model build, inference preparation) and
  the run from input file to output file(s). Not timed for either: Python and library
  imports (process start-up). Reported per pipeline: the summed turn times (wall and the
  process's CPU time: CPU seconds barely grow when other jobs take the cores, so their ratio
  is steadier on a shared machine, but serial parts such as scipy's zoom count once, not per
  core), the speed-up per round, and the quietest whole-chunk turn of each pipeline (seconds
  per slice: the steady-state ratio of a quiet machine, without the file read and write).
  Also checked: both sides hold identical weights (the same
  input slice gives the same logits), and how many voxels of the fp32 labels agree with the
  reference (they differ only where cubic-vs-bilinear resize and label-vs-logit resizing
  move a boundary).
* ``startup``: peak RSS and time of building a bf16 / fp32 ``Segmenter`` for the R50-ViT-B_16
  checkpoint: checkpoint read into memory + model built (randomly initialised) and the weights
  copied in; ``torch.load(mmap=True)`` + the same build; ``mmap=True`` + model built on the
  meta device with the checkpoint's tensors assigned; and the code as shipped.
* ``memory``: peak RSS of a ``segment`` process (bf16, default options) on a 512x512x300 CT.
* ``dice``: bf16 vs fp32 agreement on a trained model (``tools/bench/check_bf16_agreement.py``).

Usage::

    python tools/bench/bench_segment.py                          # about 15 minutes on 2 cores
    python tools/bench/bench_segment.py --parts speed --slices 32 --chunk 16
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

PIPELINES = ("reference", "segment fp32", "segment bf16")


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


def build_official(repo: str, img: int = 224, num_classes: int = 9):
    """The official ``VisionTransformer`` (R50-ViT-B_16) from a local checkout of
    Beckschen/TransUNet (development-time only: nothing of it is copied into this project)."""
    import copy

    sys.path.insert(0, str(repo))
    from networks.vit_seg_modeling import CONFIGS, VisionTransformer

    cfg = copy.deepcopy(CONFIGS["R50-ViT-B_16"])
    cfg.n_classes = num_classes
    cfg.n_skip = 3
    cfg.patches.grid = (img // 16, img // 16)
    return VisionTransformer(cfg, img_size=img, num_classes=num_classes)


def make_official_pair(repo: str, pth: Path, ckpt: Path, seed: int = 0) -> None:
    """Seeded official R50-ViT-B_16 weights saved as an official ``.pth``, and the same weights
    loaded into our model (``load_pretrained``, as users convert official checkpoints) saved
    as our checkpoint: both pipelines then run identical weights."""
    from transunet_app.checkpoint import make_checkpoint, save_checkpoint
    from transunet_app.data.phantom import CLASSES
    from transunet_app.models import build_model, load_pretrained

    torch.manual_seed(seed)
    official = build_official(repo, num_classes=len(CLASSES))
    with torch.no_grad():  # as make_r50_checkpoint: labels that vary like a real model's
        official.segmentation_head[0].weight.mul_(20.0)
    torch.save(official.state_dict(), pth)
    ours = build_model("R50-ViT-B_16", len(CLASSES), img_size=224)
    load_pretrained(ours, pth)
    save_checkpoint(ckpt, make_checkpoint(ours, list(CLASSES)))


def model_flops(ckpt_path: Path) -> float:
    """FLOPs of one forward pass at the checkpoint's img_size (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    from transunet_app.checkpoint import load_checkpoint, model_from_checkpoint

    ck = load_checkpoint(ckpt_path)
    size = tuple(ck["preprocessing"]["img_size"])
    net = model_from_checkpoint(ck).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 1, *size))
    return float(fc.get_total_flops())


# --------------------------------------------------------------------------- the baton


class Baton:
    """Hands the CPU back to the coordinator every ``chunk`` slices (a progress "bar").

    The worker computes only between receiving "go" and sending its report, so time measured
    over those intervals is the pipeline's own.
    """

    def __init__(self, conn, chunk: int):
        self.conn, self.chunk = conn, chunk
        self.since = 0
        self.done = 0
        self.total = None
        self.t0 = None
        self.turns: list[float] = []

    def wait(self) -> None:
        msg = self.conn.recv()
        if msg != "go":
            raise SystemExit(0)
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()

    def hand_over(self, kind: str, **extra) -> None:
        dt = time.perf_counter() - self.t0
        extra = {**extra, "cpu": time.process_time() - self.c0}
        self.turns.append(dt)
        self.conn.send((kind, dt, self.done, extra))

    # the progress-bar interface Segmenter.run uses: factory(total, name) -> bar
    def __call__(self, total: int, name: str) -> "Baton":
        self.total = total
        return self

    def update(self, n: int) -> None:
        self.done += n
        self.since += n
        if self.since >= self.chunk and (self.total is None or self.done < self.total):
            self.since = 0
            self.hand_over("chunk")
            self.wait()

    def close(self) -> None:
        pass


def reference_load(ckpt_path: Path, official: str | None = None):
    """The reference's network: the official implementation with the official ``.pth`` next
    to the checkpoint when ``official`` is a checkout, else this project's model."""
    from transunet_app.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    if official:
        net = build_official(official, num_classes=len(ckpt["classes"]))
        net.load_state_dict(torch.load(ckpt_path.with_suffix(".official.pth"), weights_only=True))
    else:
        net = model_from_checkpoint(ckpt)
    net.eval()
    return net, dict(ckpt["preprocessing"])


def reference_segment(src: Path, dst: Path, net, prep: dict, baton=None) -> float:
    """The official ``test_single_volume`` loop, end to end from file to file; model seconds.

    Faithful to the official code: per slice, fp32, ``scipy.ndimage.zoom`` order 3 to the
    model size, ``argmax(softmax)``, ``zoom`` order 0 back. Reading (nibabel), HU windowing
    as the official preprocessing did, and reorientation to the training frame stand in for
    the official data loader (which read pre-converted .npy.h5 volumes).
    """
    import nibabel as nib
    from scipy.ndimage import zoom

    from transunet_app.data.geometry import from_canonical, to_canonical

    patch_size = prep["img_size"]
    lo, hi = prep["hu_window"]
    img = nib.load(str(src))
    vol = np.asanyarray(img.dataobj)
    canon, reo = to_canonical(vol, img.affine)
    image = (np.clip(canon.astype(np.float32), lo, hi) - lo) / (hi - lo)
    prediction = np.zeros(image.shape, dtype=np.uint8)
    if baton is not None:
        baton(image.shape[0], src.name)
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
        if baton is not None:
            baton.update(1)
    labels = from_canonical(prediction, reo)
    out_img = nib.Nifti1Image(labels, img.affine, header=img.header)
    out_img.set_data_dtype(np.uint8)
    nib.save(out_img, str(dst))
    return model_s


def pipeline_worker(conn, name: str, ckpt: str, src: str, dst: str, chunk: int, batch: int,
                    threads: int, official: str | None = None) -> None:
    """One pipeline in its own process, computing only while it holds the baton."""
    torch.set_num_threads(threads)
    baton = Baton(conn, chunk)
    try:
        baton.wait()                                  # turn 1: load the model
        if name == "reference":
            net, prep = reference_load(Path(ckpt), official)
        else:
            from transunet_app.inference import Segmenter
            from transunet_app.inference.memory import reuse_freed_memory

            reuse_freed_memory()  # as the segment command does
            seg = Segmenter(ckpt, precision=name.split()[1], batch_size=batch)
            # Time the model calls alone (the same forward, only wrapped by a clock): the wall
            # time during which at least one stream is inside the model.
            forward = seg.predictor._forward
            model_s = [0.0]
            inside = {"n": 0, "since": 0.0}
            lock = threading.Lock()

            def timed_forward(x):
                with lock:
                    if inside["n"] == 0:
                        inside["since"] = time.perf_counter()
                    inside["n"] += 1
                try:
                    return forward(x)
                finally:
                    with lock:
                        inside["n"] -= 1
                        if inside["n"] == 0:
                            model_s[0] += time.perf_counter() - inside["since"]

            seg.predictor._forward = timed_forward
        baton.hand_over("loaded")
        baton.wait()                                  # turns 2...: file to file, chunk by chunk
        if name == "reference":
            m = reference_segment(Path(src), Path(dst), net, prep, baton)
            extra = {"model_seconds": m}
        else:
            r = seg.run(Path(src), Path(dst), overwrite=True, progress_factory=baton)
            # (r.seconds and r.timings include the turns of the other pipelines: not used)
            extra = {"model_seconds": model_s[0], "precision": seg.precision,
                     "outputs": [str(p) for p in r.outputs]}
        baton.hand_over("done", **extra)
    except Exception as exc:  # report, so that the coordinator does not wait forever
        conn.send(("error", 0.0, baton.done, {"error": f"{type(exc).__name__}: {exc}"}))
        raise


def run_interleaved(ckpt: Path, src: Path, work: Path, chunk: int, batch: int, threads: int,
                    pipelines=PIPELINES, official: str | None = None) -> dict:
    """Run the pipelines in worker processes taking turns; per pipeline the summed turn times."""
    ctx = mp.get_context("spawn")
    workers = {}
    for name in pipelines:
        parent, child = ctx.Pipe()
        dst = work / f"out_{name.replace(' ', '_')}.nii.gz"
        p = ctx.Process(target=pipeline_worker, args=(child, name, str(ckpt), str(src), str(dst),
                                                       chunk, batch, threads, official), daemon=True)
        p.start()
        workers[name] = {"proc": p, "conn": parent, "dst": dst, "load": 0.0, "run": 0.0,
                         "turns": 0, "slices": 0, "turn_log": [], "run_cpu": 0.0, "extra": {}}
    active = list(pipelines)
    rounds = 0
    try:
        while active:
            rounds += 1
            # Rotate who goes first so no pipeline always follows the same neighbour.
            order = active[rounds % len(active):] + active[:rounds % len(active)]
            for name in order:
                w = workers[name]
                w["conn"].send("go")
                kind, dt, w["slices"], extra = w["conn"].recv()
                if kind == "error":
                    raise SystemExit(f"{name} failed: {extra['error']}")
                cpu = extra.pop("cpu", 0.0)
                if kind == "loaded":
                    w["load"] += dt
                else:
                    w["run"] += dt
                    w["run_cpu"] += cpu
                    w["turns"] += 1
                    w["turn_log"].append([rounds, w["slices"], round(dt, 3), os.getloadavg()[0]])
                if kind == "done":
                    w["extra"] = extra
                    active.remove(name)
            if rounds % 3 == 0:
                log("slices done: " + ", ".join(f"{n} {workers[n]['slices']} ({workers[n]['run']:.0f} s)"
                                                 for n in pipelines))
    finally:
        for w in workers.values():
            try:
                w["conn"].send("stop")
            except (BrokenPipeError, OSError):
                pass
            w["proc"].join(timeout=30)
    return {name: {"load_seconds": w["load"], "run_seconds": w["run"], "turns": w["turns"],
                   "run_cpu_seconds": w["run_cpu"],
                   "turn_log": w["turn_log"],  # [round, slices done after it, seconds, load avg]
                   "output": str(w["dst"]), **w["extra"]} for name, w in workers.items()}


def same_weights_check(ckpt: Path, slices: int = 2, official: str | None = None) -> dict:
    """Both sides run identical weights: reference net vs segment's prepared fp32 model on the
    same (cubic-zoomed) input slices; returns the largest relative logit difference."""
    from transunet_app.inference import Segmenter

    net, prep = reference_load(ckpt, official)
    seg = Segmenter(ckpt, precision="fp32", batch_size=slices)
    torch.manual_seed(1)
    x = torch.rand(slices, 1, *prep["img_size"])
    with torch.no_grad():
        a = net(x)
        b = seg.predictor._forward(x.contiguous(memory_format=torch.channels_last))
    rel = float((a - b).abs().max() / a.abs().max())
    same_argmax = float((a.argmax(1) == b.argmax(1)).float().mean())
    return {"max_rel_logit_diff": rel, "argmax_agreement": same_argmax}


# --------------------------------------------------------------------------- parts


def part_peak(results: dict, label: str) -> None:
    from transunet_app import capabilities

    # Without bf16 hardware a 2048^3 bf16 matmul is emulated (minutes, well under 1 GFLOP/s):
    # nothing to compare a pipeline with, so it is not measured.
    bf16 = matmul_peak(torch.bfloat16) if capabilities.native_bf16() else None
    p = {"fp32_gflops": matmul_peak(torch.float32), "bf16_gflops": bf16, "threads": torch.get_num_threads()}
    results.setdefault("peak", {})[label] = p
    log(f"matmul peak ({label}): fp32 {p['fp32_gflops']:.0f}, bf16 {_fmt(bf16, '{:.0f}')} GFLOP/s")


def part_speed(results: dict, work: Path, slices: int, batch: int, chunk: int, threads: int,
               official: str | None = None, checkpoint: Path | None = None,
               scan: Path | None = None, pipelines=PIPELINES) -> None:
    import nibabel as nib

    from transunet_app import capabilities
    from transunet_app.inference.precision import bf16_hardware

    ct = scan or work / f"ct512x{slices}.nii.gz"
    ckpt = checkpoint or work / ("r50_official_weights.pt" if official else "r50.pt")
    if checkpoint is not None:
        log(f"model: {ckpt}")
    elif not ckpt.exists():
        log("writing an R50-ViT-B_16 checkpoint" + (" (and the official .pth)" if official else ""))
        if official:
            make_official_pair(official, ckpt.with_suffix(".official.pth"), ckpt)
        else:
            make_r50_checkpoint(ckpt)
    if ct.exists():  # --ct, or --workdir reuse
        log(f"scan: {ct}")
    else:
        log(f"writing a 512x512x{slices} phantom CT")
        write_ct(ct, slices)
    shape = _nifti_shape(ct)
    flops = model_flops(ckpt)
    weights = same_weights_check(ckpt, official=official)
    log(f"identical weights: {weights}")
    log(f"interleaved run: {', '.join(pipelines)}; chunks of {chunk} slices, batch {batch}, "
        f"{threads} threads")
    t0 = time.perf_counter()
    rows = run_interleaved(ckpt, ct, work, chunk, batch, threads, pipelines=pipelines, official=official)
    wall = time.perf_counter() - t0
    slices = rows["reference"]["turn_log"][-1][1]  # axial slices of the CT (--ct: its own count)
    labels = {n: np.asanyarray(nib.load(r["output"]).dataobj) for n, r in rows.items()}
    ref = rows["reference"]
    for name, row in rows.items():
        row["total_seconds"] = row["load_seconds"] + row["run_seconds"]
        row["s_per_slice"] = row["run_seconds"] / slices
        row["speedup_run"] = ref["run_seconds"] / row["run_seconds"]
        row["speedup_total"] = ref["total_seconds"] / row["total_seconds"]
        row["speedup_cpu_time"] = ref["run_cpu_seconds"] / row["run_cpu_seconds"]
        row["gflops_model"] = flops * slices / row["model_seconds"] / 1e9
        row["gflops_end_to_end"] = flops * slices / row["run_seconds"] / 1e9
        row["voxel_agreement_with_reference"] = float((labels[name] == labels["reference"]).mean())
        log(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'outputs'})}")
    # Per round: the reference's seconds per slice over each pipeline's, for rounds where
    # both did whole chunks (each one's last turn also writes the outputs: left out).
    def per_slice(log_):
        out, prev = {}, 0
        for rnd, done, dt, _ in log_[:-1]:
            out[rnd] = dt / (done - prev)
            prev = done
        return out

    ref_ps = per_slice(rows["reference"]["turn_log"])
    per_round = {name: [ref_ps[r] / v for r, v in per_slice(row["turn_log"]).items() if r in ref_ps]
                 for name, row in rows.items() if name != "reference"}
    # Quietest turn of each pipeline (fewest seconds per slice over its whole-chunk turns):
    # the steady-state ratio a quiet machine gives, without the read/write at the ends.
    best = {name: min(per_slice(row["turn_log"]).values(), default=None) for name, row in rows.items()}
    for name, row in rows.items():
        row["best_turn_s_per_slice"] = best[name]
        row["best_turn_speedup"] = (best["reference"] / best[name]
                                    if best[name] and best["reference"] else None)
    results["speed_per_round_speedup"] = per_round
    results["speed"] = {"reference_network": ("official TransUNet code" if official else
                                              "this project's R50-ViT-B_16"),
                        "shape": list(shape), "slices": slices, "batch_size": batch, "chunk": chunk,
                        "gflop_per_slice": flops / 1e9, "bf16_hardware": bf16_hardware(), "threads": threads,
                        "cpu": f"{capabilities.cpu_model()} ({capabilities.cpu_class()})",
                        "wall_seconds": wall, "same_weights": weights,
                        "bf16_vs_fp32_voxel_agreement": (
                            float((labels["segment bf16"] == labels["segment fp32"]).mean())
                            if {"segment bf16", "segment fp32"} <= set(labels) else None),
                        "load_average": os.getloadavg(), "rows": rows}


_STARTUP_SCRIPT = r"""
import contextlib, json, sys, time, torch
variant, ckpt, precision = sys.argv[1:4]
import transunet_app.checkpoint as C
from transunet_app.inference import Segmenter
def hwm_mb():
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's size over exec).
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024
base = hwm_mb()
if variant != "as shipped":
    use_mmap, meta = variant != "read + build", variant == "mmap + meta build"
    def load(path, *args, **kwargs):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    def model_from_checkpoint(ck, path="checkpoint", *args, **kwargs):
        from transunet_app.models import build_model
        spec = ck["model"]
        with torch.device("meta") if meta else contextlib.nullcontext():
            m = build_model(spec["name"], spec["num_classes"], img_size=spec["img_size"],
                            **spec.get("overrides", {}))
        m.load_state_dict(ck["state_dict"], strict=True, assign=meta)
        return m
    C.torch_load_safe = load
    C.model_from_checkpoint = model_from_checkpoint
t0 = time.perf_counter()
seg = Segmenter(ckpt, precision=precision)
dt = time.perf_counter() - t0
print(json.dumps({"rss_after_imports_mb": base, "peak_rss_mb": hwm_mb(),
                  "seconds": dt}))
"""


def part_startup(results: dict, work: Path, precisions=("bf16", "fp32")) -> None:
    ckpt = work / "r50.pt"
    if not ckpt.exists():
        make_r50_checkpoint(ckpt)
    out = {}
    for prec in precisions:
        for variant in ("read + build", "mmap + build", "mmap + meta build", "as shipped"):
            proc = subprocess.run([sys.executable, "-c", _STARTUP_SCRIPT, variant, str(ckpt), prec],
                                  capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode != 0:
                raise SystemExit(f"startup {variant} failed: {proc.stderr[-2000:]}")
            out[f"{prec} {variant}"] = json.loads(proc.stdout.strip().splitlines()[-1])
            log(f"start-up {prec} {variant}: {out[f'{prec} {variant}']}")
    results["startup"] = {"checkpoint_mb": ckpt.stat().st_size / 1024 ** 2, "rows": out}


def part_memory(results: dict, work: Path, slices: int) -> None:
    ct = work / f"ct512x{slices}_mem.nii.gz"
    ckpt = work / "r50.pt"
    if not ckpt.exists():
        make_r50_checkpoint(ckpt)
    if not ct.exists():
        log(f"writing a 512x512x{slices} phantom CT for the memory test")
        write_ct(ct, slices, seed=4)
    out = work / "mem_out.nii.gz"
    cmd = [sys.executable, "-m", "transunet_app", "segment", str(ct), "-o", str(out),
           "--checkpoint", str(ckpt), "--quiet", "--overwrite"]
    log("peak RSS of: " + " ".join(cmd[2:]))
    # RUSAGE_CHILDREN keeps the largest child ever waited for (the speed part's workers too):
    # a fresh intermediate process whose only child is segment reports segment's own peak.
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"segment failed: {proc.stderr}")
    peak_kb = int(proc.stdout.strip().splitlines()[-1])
    results["memory"] = {"shape": [512, 512, slices], "peak_rss_gb": peak_kb / 1024 ** 2,
                         "seconds": time.perf_counter() - t0, "limit_gb": 2.5}
    log(f"memory: {results['memory']}")


def part_dice(results: dict, work: Path) -> None:
    import check_bf16_agreement as agreement

    results["dice"] = agreement.check(work / "bf16_agreement", agreement.SHARED)
    agreement.print_report(results["dice"])


# --------------------------------------------------------------------------- report


def best_peak(results: dict, key: str) -> float | None:
    vals = [p[key] for p in results.get("peak", {}).values() if p[key] is not None]
    return max(vals) if vals else None


def _fmt(v, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def print_tables(results: dict) -> None:
    print()
    for label, p in results.get("peak", {}).items():
        print(f"Matmul peak {label} ({p['threads']} threads): fp32 {p['fp32_gflops']:.0f} GFLOP/s, "
              f"bf16 {_fmt(p['bf16_gflops'], '{:.0f}')} GFLOP/s")
    if "speed" in results:
        s = results["speed"]
        print(f"\nSpeed: {'x'.join(map(str, s['shape']))} CT, R50-ViT-B_16 ({s['gflop_per_slice']:.1f} "
              f"GFLOP/slice), reference network: {s.get('reference_network')}, "
              f"batch {s['batch_size']}, {s['threads']} threads, CPU {s.get('cpu', '?')}, "
              f"bf16 hardware: {s['bf16_hardware']}, "
              f"interleaved in chunks of {s['chunk']} slices ({s['wall_seconds']:.0f} s wall, "
              f"load average at the end {s['load_average'][0]:.1f}/{s['load_average'][1]:.1f}/"
              f"{s['load_average'][2]:.1f})\n")
        print("| pipeline | model load s | file-to-file s | s/slice | speed-up (file to file) "
              "| speed-up (incl. load) | speed-up (CPU time) | quietest turn s/slice (speed-up) "
              "| model GFLOP/s | % of matmul peak | end-to-end GFLOP/s | voxels = reference |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in s["rows"].items():
            peak = best_peak(results, "bf16_gflops" if "bf16" in name else "fp32_gflops")
            pct = f"{100 * r['gflops_model'] / peak:.0f}%" if peak else "-"
            print(f"| {name} | {r['load_seconds']:.1f} | {r['run_seconds']:.1f} | {r['s_per_slice']:.3f} | "
                  f"{r['speedup_run']:.2f}x | {r['speedup_total']:.2f}x | {r['speedup_cpu_time']:.2f}x | "
                  f"{_fmt(r['best_turn_s_per_slice'], '{:.3f}')} ({_fmt(r['best_turn_speedup'], '{:.2f}x')}) | "
                  f"{r['gflops_model']:.0f} | {pct} | "
                  f"{r['gflops_end_to_end']:.0f} | {100 * r['voxel_agreement_with_reference']:.2f}% |")
        for name, ratios in results.get("speed_per_round_speedup", {}).items():
            if ratios:
                print(f"{name}: speed-up per round (whole chunks) min {min(ratios):.2f}x, median "
                      f"{float(np.median(ratios)):.2f}x, max {max(ratios):.2f}x over {len(ratios)} rounds")
        w = s["same_weights"]
        print(f"\nIdentical weights: max relative logit difference reference vs segment fp32 "
              f"{w['max_rel_logit_diff']:.1e}, argmax agreement {100 * w['argmax_agreement']:.2f}%"
              + (f"; bf16 vs fp32 labels equal on {100 * s['bf16_vs_fp32_voxel_agreement']:.2f}% of voxels."
                 if s["bf16_vs_fp32_voxel_agreement"] is not None else "."))
        print("(model GFLOP/s: counted model FLOPs / time inside the model calls; end-to-end: "
              "over the file-to-file time; % of peak: model GFLOP/s over the best matmul of that dtype "
              "in this run.)\n")
    if "startup" in results:
        st = results["startup"]
        print(f"Start-up (bf16/fp32 Segmenter for the {st['checkpoint_mb']:.0f} MB R50-ViT-B_16 checkpoint):\n")
        print("| precision / torch.load | peak RSS MB | RSS after imports MB | seconds |")
        print("|---|---:|---:|---:|")
        for name, r in st["rows"].items():
            print(f"| {name} | {r['peak_rss_mb']:.0f} | {r['rss_after_imports_mb']:.0f} | {r['seconds']:.2f} |")
        print()
    if "memory" in results:
        m = results["memory"]
        print(f"Memory: peak RSS {m['peak_rss_gb']:.2f} GB for a {'x'.join(map(str, m['shape']))} CT "
              f"(limit {m['limit_gb']} GB), {m['seconds']:.0f} s\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="peak,speed,startup,memory")
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--memory-slices", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=16,
                    help="slices per turn (segment hands over at the first wave boundary at or "
                         "past it; default 16 = one wave of two streams of batch 8)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--official", metavar="DIR",
                    help="a local checkout of the official TransUNet code: the reference then runs "
                         "the official network (same weights), not this project's model")
    ap.add_argument("--checkpoint", metavar="FILE",
                    help="speed: run this checkpoint instead of a seeded random R50-ViT-B_16")
    ap.add_argument("--ct", metavar="FILE",
                    help="speed: segment this scan (NIfTI) instead of a 512x512x--slices phantom")
    ap.add_argument("--pipelines", default="reference,fp32,bf16",
                    help="speed: which pipelines take turns (reference, fp32, bf16); on a CPU without "
                         "bf16 hardware `segment` runs fp32 (precision auto), so leave bf16 out there")
    ap.add_argument("--workdir", help="keep files here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args(argv)
    parts = args.parts.split(",")
    names = {"reference": "reference", "fp32": "segment fp32", "bf16": "segment bf16"}
    try:
        pipelines = tuple(names[n.strip()] for n in args.pipelines.split(","))
    except KeyError as exc:
        ap.error(f"--pipelines: unknown pipeline {exc} (reference, fp32, bf16)")
    if "reference" not in pipelines:
        ap.error("--pipelines: the reference is what the others are compared with")
    results: dict = {"torch": torch.__version__, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if "peak" in parts:
            part_peak(results, "before")
        if "speed" in parts:
            part_speed(results, work, args.slices, args.batch_size, args.chunk, args.threads,
                       args.official, args.checkpoint and Path(args.checkpoint), args.ct and Path(args.ct),
                       pipelines)
            if "peak" in parts:
                part_peak(results, "after")
        if "startup" in parts:
            part_startup(results, work)
        if "memory" in parts:
            part_memory(results, work, args.memory_slices)
        if "dice" in parts:
            part_dice(results, work)
    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
