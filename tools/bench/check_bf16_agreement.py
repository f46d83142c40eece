#!/usr/bin/env python3
"""bf16 vs fp32 agreement of ``segment`` on a *trained* model (issue 5: Dice >= 0.995 per organ).

Steps (all reproducible, nothing downloaded):

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

    python tools/check_bf16_agreement.py --workdir /tmp/bf16check      # ~5 CPU min to train
    python tools/check_bf16_agreement.py --workdir /tmp/bf16check --json out.json
    python tools/check_bf16_agreement.py --speed --rounds 6   # cost of the float32 parts

The trained model is scored on the slices it was fitted to: this is an agreement check of two
inference precisions, not an accuracy claim.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CT_NAME = "ct_abdomen_3mm.nii.gz"
LABELS_NAME = "ct_abdomen_3mm_labels.nii.gz"
GOAL_DICE = 0.995


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_learning_check_model(work: Path, shared: Path = SHARED, iterations: int | None = None) -> Path:
    """Train ``configs/real_ct_learning.yaml`` on the real CT; returns the best checkpoint.

    Reuses ``work/real_ct_model.pt`` when it exists (delete it to retrain).

    Args:
        work: folder for the prepared slices, the run and the kept checkpoint.
        shared: folder holding the real CT and its labels.
        iterations: override ``train.max_iterations`` (default: the config's 600).
    """
    from transunet_app.data.folders import prepare_folder
    from transunet_app.engine import train

    kept = work / "real_ct_model.pt"
    if kept.exists():
        log(f"reusing the trained model {kept}")
        return kept
    src = work / "src"
    for sub, name in (("imagesTr", CT_NAME), ("labelsTr", LABELS_NAME)):
        (src / sub).mkdir(parents=True, exist_ok=True)
        link = src / sub / "ct.nii.gz"
        if not link.exists():
            link.symlink_to((shared / name).resolve())
    data = work / "data"
    if not (data / "dataset.yaml").exists():
        prepare_folder(src, data, labels_yaml=REPO / "datasets" / "synapse" / "labels_8class.yaml",
                       splits={"train": ["ct"], "test": []}, overwrite=True)
    overrides = [f"data.root={data}", "log.progress=false"]
    if iterations is not None:
        overrides.append(f"train.max_iterations={iterations}")
    run = work / "run"
    if run.exists():
        shutil.rmtree(run)
    log(f"training configs/real_ct_learning.yaml on the real CT ({' '.join(overrides[2:]) or '600 iterations'})")
    t0 = time.perf_counter()
    best = train(REPO / "configs" / "real_ct_learning.yaml", run, overrides=overrides)
    log(f"trained in {time.perf_counter() - t0:.0f} s: {best}")
    shutil.copyfile(best, kept)
    return kept


def run_segment(ct: Path, out: Path, ckpt: Path, precision: str, threads: int = 1) -> np.ndarray:
    """The ``segment`` console script in-process; returns the written label map (I, J, K)."""
    import nibabel as nib

    from transunet_app.cli import segment_main

    code = segment_main([str(ct), "-o", str(out), "--checkpoint", str(ckpt), "--precision", precision,
                         "--overwrite", "--quiet", "--threads", str(threads)])
    if code != 0:
        raise SystemExit(f"segment --precision {precision} failed with exit code {code}")
    return np.asarray(nib.load(str(out)).dataobj)


def write_dithered(ct: Path, out: Path, seed: int = 0, amplitude_hu: float = 0.5) -> Path:
    """The CT with uniform noise in [-amplitude, +amplitude] HU added, as float32 NIfTI."""
    import nibabel as nib

    img = nib.load(str(ct))
    vol = np.asarray(img.dataobj, dtype=np.float32)
    vol += np.random.default_rng(seed).uniform(-amplitude_hu, amplitude_hu, vol.shape).astype(np.float32)
    hdr = img.header.copy()
    hdr.set_data_dtype(np.float32)
    hdr.set_slope_inter(1.0, 0.0)
    nib.save(nib.Nifti1Image(vol, img.affine, header=hdr), str(out))
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice of two boolean masks; None when both are empty."""
    s = int(a.sum()) + int(b.sum())
    return None if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def compare_labels(fp32: np.ndarray, bf16: np.ndarray, truth: np.ndarray | None, class_names) -> dict:
    """Per-organ agreement of two label maps (same shape).

    Returns:
        organ name -> ``{"dice_bf16_vs_fp32", "voxels_fp32", "voxels_bf16", "voxels_differing",
        "one_voxel_dice", "fp32_dice_vs_truth"}``; ``one_voxel_dice`` = the Dice a single
        differing voxel would give for an organ of ``voxels_fp32`` voxels.
    """
    out = {}
    for k, name in enumerate(class_names):
        if k == 0:
            continue
        a, b = fp32 == k, bf16 == k
        n = int(a.sum())
        out[name] = {
            "dice_bf16_vs_fp32": dice(b, a),
            "voxels_fp32": n,
            "voxels_bf16": int(b.sum()),
            "voxels_differing": int(np.logical_xor(a, b).sum()),
            "one_voxel_dice": (2.0 * n / (2.0 * n + 1.0)) if n else None,
            "fp32_dice_vs_truth": dice(a, truth == k) if truth is not None else None,
        }
    return out


def logit_agreement(ckpt: Path, ct: Path, batch_size: int = 8) -> dict:
    """Where bf16 departs from fp32: logits on the model grid of the same canonical slices.

    Compares the fp32 inference model with (a) the bf16 inference model ``segment`` runs (bf16
    weights and activations, float32 stem, biases and head), (b) the fp32 model under bf16
    autocast, (c) ablations of (a): the stem in bf16 too; the last decoder block or the whole
    decoder in float32 as well. Reports the relative
    L2 error of the logits, the share of model-grid pixels whose argmax changes, and the fp32
    top-1 margin (logit of the best minus the second class) at those pixels next to its median
    over all pixels.
    """
    import torch

    from transunet_app.checkpoint import load_checkpoint, model_from_checkpoint
    from transunet_app.data import geometry
    from transunet_app.data.io import read_image
    from transunet_app.inference.optimize import prepare_for_inference
    from transunet_app.inference.predictor import SlicePredictor

    ck = load_checkpoint(ckpt)
    prep = dict(ck["preprocessing"])
    model = model_from_checkpoint(ck, str(ckpt))
    dev = torch.device("cpu")
    p32 = SlicePredictor(model, prep, dev, "fp32", batch_size=batch_size, copy_model=True)
    p16 = SlicePredictor(model, prep, dev, "bf16", batch_size=batch_size, copy_model=True)
    image = read_image(ct)
    canon = geometry.apply_reorientation(image.array, geometry.plan_reorientation(image.affine, image.shape))
    # what the float32 parts of the bf16 model buy: the stem in bf16 as well, and (too slow
    # for R50-ViT-B_16, see --speed) decoder blocks in float32 on top of segment's model
    ablations = {
        "bf16 with the stem in bf16 too": dict(float32_stem=False),
        "bf16 + last decoder block in float32": dict(float32_modules=["decoder.blocks.3"]),
        "bf16 + whole decoder in float32": dict(float32_modules=["decoder"]),
    }
    nets = {name: prepare_for_inference(model, dev, "bf16", copy_model=True, **kw)
            for name, kw in ablations.items()}
    # autocast and the per-stage bf16 casts need plain float32 layers (segment's fp32 model
    # holds oneDNN-packed weights, which neither autocast nor .to(bfloat16) can convert)
    plain32 = prepare_for_inference(model, dev, "fp32", copy_model=True, fuse=False)

    def logits(net, slab, autocast=False):
        x = p32.normalise(slab).to(getattr(net, "input_dtype", torch.float32))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if autocast:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return net(x).float()
            return net(x).float()

    ref, full, auto = [], [], []
    abl = {name: [] for name in nets}
    for d0 in range(0, canon.shape[0], batch_size):
        slab = canon[d0:d0 + batch_size]
        ref.append(logits(p32.model, slab))
        full.append(logits(p16.model, slab))
        auto.append(logits(plain32, slab, autocast=True))
        for name, net in nets.items():
            abl[name].append(logits(net, slab))
    stages = stage_sensitivity(plain32, p32.normalise(canon))
    ref_t, variants = torch.cat(ref), {"bf16 weights + activations (segment)": torch.cat(full),
                                       "bf16 autocast (fp32 weights)": torch.cat(auto)}
    variants.update({name: torch.cat(v) for name, v in abl.items()})
    top2 = ref_t.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    lab_ref = ref_t.argmax(dim=1)
    result = {"model_grid": list(ref_t.shape), "fp32_margin_median": float(margin.median()),
              "stages": stages}
    for name, v in variants.items():
        flips = v.argmax(dim=1) != lab_ref
        result[name] = {
            "logits_rel_l2_error": float((v - ref_t).norm() / ref_t.norm()),
            "logits_max_abs_error": float((v - ref_t).abs().max()),
            "logits_abs_error_median": float((v - ref_t).abs().median()),
            "argmax_flips": int(flips.sum()),
            "argmax_flip_share": float(flips.float().mean()),
            "fp32_margin_at_flips_max": float(margin[flips].max()) if flips.any() else None,
            "fp32_margin_at_flips_median": float(margin[flips].median()) if flips.any() else None,
        }
    return result


def _cast(obj, dtype):
    import torch

    if torch.is_tensor(obj):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast(v, dtype) for v in obj)
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    return obj


def model_stages(model) -> list[str]:
    """Stage names for :func:`stage_sensitivity`: the top-level children of the model, each
    split one level further when it has children (e.g. encoder -> stem CNN, patch embedding,
    transformer blocks, final norm), keeping only stages with parameters."""
    names = []
    for name, child in model.named_children():
        subs = [(f"{name}.{n}", c) for n, c in child.named_children()] or [(name, child)]
        names += [n for n, c in subs if any(True for _ in c.parameters())]
    return names


def stage_sensitivity(fp32_model, x, stages=None) -> dict:
    """Argmax flips and logit error when only one stage of the fp32 model runs in bf16.

    Args:
        fp32_model: the prepared fp32 inference model with plain layers (``fuse=False``; left
            untouched: copies are changed).
        x: (B, 1, h, w) float32 model input.
        stages: module names (default :func:`model_stages`); "input" = only the model input
            rounded to bf16.

    Returns:
        stage -> ``{"logits_rel_l2_error", "argmax_flips"}``.
    """
    import copy

    import torch

    with torch.inference_mode():
        ref = fp32_model(x).float()
    lab = ref.argmax(dim=1)
    out = {}
    for stage in ["input"] + list(stages or model_stages(fp32_model)):
        m = copy.deepcopy(fp32_model)
        if stage == "input":
            m.register_forward_pre_hook(lambda mod, args: _cast(_cast(args, torch.bfloat16), torch.float32))
        else:
            sub = m.get_submodule(stage).to(torch.bfloat16)
            for part in (list(sub) if isinstance(sub, torch.nn.ModuleList) else [sub]):
                part.register_forward_pre_hook(lambda mod, args: _cast(args, torch.bfloat16))
                part.register_forward_hook(lambda mod, args, o: _cast(o, torch.float32))
        with torch.inference_mode():
            y = m(x).float()
        out[stage] = {"logits_rel_l2_error": float((y - ref).norm() / ref.norm()),
                      "argmax_flips": int((y.argmax(dim=1) != lab).sum())}
    return out


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


def check(work: Path, shared: Path = SHARED, iterations: int | None = None, threads: int = 1) -> dict:
    """Train (or reuse) the model, segment in both precisions, compare. Returns the results."""
    import nibabel as nib
    import torch

    from transunet_app.checkpoint import load_checkpoint
    from transunet_app.inference.precision import bf16_hardware

    torch.set_num_threads(threads)
    ct = shared / CT_NAME
    ckpt = train_learning_check_model(work, shared, iterations)
    meta = load_checkpoint(ckpt)
    classes = [str(c) for c in meta["classes"]]
    trained_dice = (meta.get("metrics") or {}).get("per_organ")
    del meta
    labels = {}
    seconds = {}
    for prec in ("fp32", "bf16"):
        t0 = time.perf_counter()
        labels[prec] = run_segment(ct, work / f"seg_{prec}.nii.gz", ckpt, prec, threads)
        seconds[prec] = time.perf_counter() - t0
        log(f"segment --precision {prec}: {seconds[prec]:.1f} s")
    noisy = write_dithered(ct, work / "ct_dithered.nii.gz")
    labels["fp32 dithered"] = run_segment(noisy, work / "seg_fp32_dithered.nii.gz", ckpt, "fp32", threads)
    truth = np.asarray(nib.load(str(shared / LABELS_NAME)).dataobj)
    organs = compare_labels(labels["fp32"], labels["bf16"], truth, classes)
    floor = compare_labels(labels["fp32"], labels["fp32 dithered"], None, classes)
    for name, o in organs.items():
        o["noise_floor_dice"] = floor[name]["dice_bf16_vs_fp32"]
        o["noise_floor_voxels_differing"] = floor[name]["voxels_differing"]
    log("logits: fp32 vs bf16 inference model and vs bf16 autocast")
    logit = logit_agreement(ckpt, ct)
    met = all(o["dice_bf16_vs_fp32"] is not None and o["dice_bf16_vs_fp32"] >= GOAL_DICE
              for o in organs.values())
    return {"checkpoint": str(ckpt), "bf16_hardware": bf16_hardware(), "torch": torch.__version__,
            "ct_shape": list(truth.shape), "goal_dice": GOAL_DICE, "goal_met": met,
            "voxels_differing_total": int((labels["fp32"] != labels["bf16"]).sum()),
            "noise_floor_voxels_differing_total": int((labels["fp32"] != labels["fp32 dithered"]).sum()),
            "voxels_total": int(truth.size), "segment_seconds": seconds,
            "training_validation_per_organ": trained_dice, "organs": organs, "logits": logit}


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
