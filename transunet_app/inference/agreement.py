"""bf16 vs fp32 agreement of ``segment`` on a *trained* model (issue 5: Dice >= 0.995 per organ).

:func:`check` trains (or reuses) the learning-check model (:mod:`transunet_app.engine.learning_check`)
on the real CT sample, runs the real ``segment`` command on that CT with ``--precision fp32``
and ``--precision bf16``, and compares the two label maps per organ (Dice, voxels of each map,
voxels that differ, and the Dice one differing voxel alone would give, ``2n / (2n + 1)``), next to
the model's own noise floor (fp32 on the CT with +-0.5 HU of uniform noise: voxels that flip
under that are near-ties of the model, not precision errors). :func:`logit_agreement` says where
a disagreement comes from (logits of the fp32 and bf16 inference models on the same slices, bf16
autocast, ablations of the float32 parts, one stage at a time in bf16).

The trained model is scored on the slices it was fitted to: an agreement check of two inference
precisions, not an accuracy claim. Used by the slow test ``tests/inference/test_bf16_agreement.py``
and by ``tools/bench/check_bf16_agreement.py`` (which prints the tables of BENCHMARKS.md).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..engine.learning_check import CT_NAME, LABELS_NAME

GOAL_DICE = 0.995


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_learning_check_model(work: Path, shared: Path, iterations: int | None = None) -> Path:
    """Train ``configs/real_ct_learning.yaml`` on the real CT; returns the kept checkpoint.

    Reuses ``work/real_ct_model.pt`` when it exists (delete it to retrain).

    Args:
        work: folder for the prepared slices, the run and the kept checkpoint.
        shared: folder holding the real CT and its labels.
        iterations: override ``train.max_iterations`` (default: the config's 600).
    """
    import shutil

    from ..engine.learning_check import train_real_ct

    kept = work / "real_ct_model.pt"
    if kept.exists():
        _log(f"reusing the trained model {kept}")
        return kept
    overrides = [] if iterations is None else [f"train.max_iterations={iterations}"]
    _log(f"training configs/real_ct_learning.yaml on the real CT ({' '.join(overrides) or '600 iterations'})")
    t0 = time.perf_counter()
    best = train_real_ct(shared, work, overrides)
    _log(f"trained in {time.perf_counter() - t0:.0f} s: {best}")
    shutil.copyfile(best, kept)
    return kept


def run_segment(ct: Path, out: Path, ckpt: Path, precision: str, threads: int = 1) -> np.ndarray:
    """The ``segment`` console script in-process; returns the written label map (I, J, K)."""
    import nibabel as nib

    from ..cli import segment_main

    code = segment_main([str(ct), "-o", str(out), "--checkpoint", str(ckpt), "--precision", precision,
                         "--overwrite", "--quiet", "--threads", str(threads)])
    if code != 0:
        raise RuntimeError(f"segment --precision {precision} failed with exit code {code}")
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

    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..data import geometry
    from ..data.io import read_image
    from ..inference.optimize import prepare_for_inference
    from ..inference.predictor import SlicePredictor

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
        x = p32.normalize(slab).to(getattr(net, "input_dtype", torch.float32))
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
    stages = stage_sensitivity(plain32, p32.normalize(canon))
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


def check(work: Path, shared: Path, iterations: int | None = None, threads: int = 1) -> dict:
    """Train (or reuse) the model, segment in both precisions, compare. Returns the results."""
    import nibabel as nib
    import torch

    from ..checkpoint import load_checkpoint
    from ..inference.precision import bf16_hardware

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
        _log(f"segment --precision {prec}: {seconds[prec]:.1f} s")
    noisy = write_dithered(ct, work / "ct_dithered.nii.gz")
    labels["fp32 dithered"] = run_segment(noisy, work / "seg_fp32_dithered.nii.gz", ckpt, "fp32", threads)
    truth = np.asarray(nib.load(str(shared / LABELS_NAME)).dataobj)
    organs = compare_labels(labels["fp32"], labels["bf16"], truth, classes)
    floor = compare_labels(labels["fp32"], labels["fp32 dithered"], None, classes)
    for name, o in organs.items():
        o["noise_floor_dice"] = floor[name]["dice_bf16_vs_fp32"]
        o["noise_floor_voxels_differing"] = floor[name]["voxels_differing"]
    _log("logits: fp32 vs bf16 inference model and vs bf16 autocast")
    logit = logit_agreement(ckpt, ct)
    met = all(o["dice_bf16_vs_fp32"] is not None and o["dice_bf16_vs_fp32"] >= GOAL_DICE
              for o in organs.values())
    return {"checkpoint": str(ckpt), "bf16_hardware": bf16_hardware(), "torch": torch.__version__,
            "ct_shape": list(truth.shape), "goal_dice": GOAL_DICE, "goal_met": met,
            "voxels_differing_total": int((labels["fp32"] != labels["bf16"]).sum()),
            "noise_floor_voxels_differing_total": int((labels["fp32"] != labels["fp32 dithered"]).sum()),
            "voxels_total": int(truth.size), "segment_seconds": seconds,
            "training_validation_per_organ": trained_dice, "organs": organs, "logits": logit}
