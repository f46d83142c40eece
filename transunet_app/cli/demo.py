"""``transunet demo``: the whole product on a synthetic phantom in a few CPU minutes.

Each step is the real command a user would run (``prepare phantom``, ``train``, ``segment``,
``evaluate``, ``report``), called in-process:

1. a synthetic abdominal CT phantom dataset (NIfTI + the prepared training layout);
2. a tiny TransUNet trained on its training cases (bf16 on CPUs with native bf16), TensorBoard logs;
3. the held-out phantoms segmented from their NIfTI files, and the real CT sample when present
   (``../shared/data`` beside the repository, or ``--real-ct``);
4. Dice/HD95 against the phantom labels (and the real CT's labels), and the clinician reports.
The phantom is synthetic and easy: the held-out Dice says the pipeline works, not how a model
does on patients.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HELP = "run the whole pipeline on a synthetic phantom (prepare, train, segment, evaluate, report)"

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
REAL_CT = REPO.parent / "shared" / "data" / "ct_abdomen_3mm.nii.gz"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo_out", metavar="DIR",
                        help="output folder (default: ./demo_out; must be new or empty)")
    parser.add_argument("--cases", type=int, default=12, metavar="N",
                        help="phantom cases, a quarter held out for testing (default 12)")
    parser.add_argument("--iterations", type=int, default=None, metavar="N",
                        help="training iterations (default: configs/demo.yaml, a few CPU minutes)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    parser.add_argument("--real-ct", default=None, metavar="NIFTI",
                        help="a real CT to segment too (default: ../shared/data sample if present)")
    parser.add_argument("--overwrite", action="store_true",
                        help="reuse a non-empty --out folder, replacing the demo's files")


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _call(argv: list[str]) -> int:
    from . import main

    rc = main(argv)
    if rc not in (0,):
        from ..errors import UserError

        raise UserError(f"demo step 'transunet {' '.join(argv[:2])}' failed with exit code {rc}")
    return rc


def run(args) -> int:
    from ..errors import UserError

    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"{out}: folder is not empty (use --overwrite or another --out)")
    if not DEMO_CONFIG.exists():
        raise UserError(f"{DEMO_CONFIG}: demo config missing (install from a source checkout: "
                        f"pip install -e .)")
    if args.cases < 4:
        raise UserError(f"--cases {args.cases}: the demo needs at least 4 phantom cases")
    out.mkdir(parents=True, exist_ok=True)
    data, run_dir, seg_dir = out / "data", out / "run", out / "segmentations"
    ow = ["--overwrite"] if args.overwrite else []

    _step(f"1/5 synthetic phantom: {args.cases} cases -> {data}")
    _call(["prepare", "phantom", "--out", str(data), "--cases", str(args.cases),
           "--seed", str(args.seed)] + ow)
    test_cases = (data / "lists_Synapse" / "test_vol.txt").read_text().split()

    _step(f"2/5 training a tiny TransUNet -> {run_dir}")
    overrides = [f"data.root={data}"]
    if args.iterations is not None:
        overrides.append(f"train.max_iterations={args.iterations}")
    from ..engine import train

    best = Path(train(DEMO_CONFIG, run_dir, resume=False, overrides=overrides))

    _step(f"3/5 segmenting {len(test_cases)} held-out phantoms (from their NIfTI files)")
    raw_images, raw_labels = data / "raw" / "imagesTr", data / "raw" / "labelsTr"
    inputs = [str(raw_images / f"{c}.nii.gz") for c in test_cases]
    _call(["segment", *inputs, "-o", str(seg_dir / "phantoms"), "--checkpoint", str(best),
           "--statistics", "--quiet"] + ow)
    ref_dir = out / "reference"
    ref_dir.mkdir(exist_ok=True)
    for c in test_cases:
        link = ref_dir / f"{c}.nii.gz"
        if not link.exists():
            os.symlink(raw_labels / f"{c}.nii.gz", link)

    real = Path(args.real_ct) if args.real_ct else (REAL_CT if REAL_CT.exists() else None)
    real_seg = None
    if real is not None:
        real_seg = seg_dir / "real_ct.nii.gz"
        print(f"segmenting the real CT sample {real}")
        _call(["segment", str(real), "-o", str(real_seg), "--checkpoint", str(best),
               "--statistics", "--quiet"] + ow)

    _step("4/5 evaluation (Dice, HD95 in mm) on the held-out phantoms")
    metrics = out / "metrics.json"
    _call(["evaluate", "--pred", str(seg_dir / "phantoms"), "--gt", str(ref_dir), "-o",
           str(metrics), "--csv", str(out / "metrics.csv"), "--quiet"] + ow)
    import json

    doc = json.loads(metrics.read_text())
    mean_dice = doc["summary"]["mean"].get("dice")

    _step("5/5 reports")
    reports = [out / "evaluation_report.html"]
    _call(["report", "--metrics", str(metrics), "-o", str(reports[0]),
           "--model", "tiny (demo)", "--checkpoint", str(best)] + ow)
    scan_image = real if real is not None else raw_images / f"{test_cases[0]}.nii.gz"
    scan_labels = real_seg if real is not None else seg_dir / "phantoms" / f"{test_cases[0]}.nii.gz"
    reports.append(out / "scan_report.html")
    ref_args = []
    real_ref = real.parent / real.name.replace(".nii.gz", "_labels.nii.gz") if real else None
    if real_ref is not None and real_ref.exists():
        ref_args = ["--reference", str(real_ref)]
    elif real is None:
        ref_args = ["--reference", str(raw_labels / f"{test_cases[0]}.nii.gz")]
    _call(["report", "--image", str(scan_image), "--labels", str(scan_labels), *ref_args,
           "-o", str(reports[1]), "--model", "tiny (demo)", "--checkpoint", str(best)] + ow)

    minutes = (time.perf_counter() - t0) / 60
    print(f"\n== demo finished in {minutes:.1f} min")
    if mean_dice is not None:
        print(f"mean Dice on {len(test_cases)} held-out phantoms: {mean_dice:.3f} "
              f"(synthetic data: easy by design)")
    print(f"checkpoint:    {best}")
    print(f"label maps:    {seg_dir}")
    print(f"metrics:       {metrics}")
    for r in reports:
        print(f"report:        {r}")
    print(f"TensorBoard:   tensorboard --logdir {run_dir}")
    return 0
