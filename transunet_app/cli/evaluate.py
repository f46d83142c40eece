"""``transunet evaluate``: Dice / HD95 / ASSD / NSD of predicted label maps against references."""
from __future__ import annotations

HELP = "compare predicted label maps with reference labels (Dice, HD95, ASSD, NSD, volumes)"


def add_arguments(parser) -> None:
    parser.add_argument("--pred", required=True, metavar="P",
                        help="predicted label map (.nii.gz) or a folder of them")
    parser.add_argument("--gt", required=True, metavar="G",
                        help="reference label map or a folder of them (paired by case name)")
    parser.add_argument("-o", "--output", required=True, metavar="metrics.json",
                        help="JSON file with per-case, per-organ metrics and the summary")
    parser.add_argument("--csv", metavar="FILE", help="also write one row per case and organ")
    parser.add_argument("--convention", choices=("strict", "transunet"), default="strict",
                        help="strict (default): HD95 in mm, empty masks explicit, undefined values "
                             "never averaged as zero; transunet: the official TransUNet test "
                             "(HD95 in voxels, (1, 0) / (0, 0) rules) for comparison with papers")
    parser.add_argument("--labels", metavar="YAML",
                        help="label id -> organ name, used when a prediction has no <case>.json "
                             "sidecar (default: the Synapse 8 organs)")
    parser.add_argument("--resample-pred", action="store_true",
                        help="resample predictions onto the reference grid (nearest neighbour) "
                             "when shape or affine differ, instead of stopping with an error")
    parser.add_argument("--nsd-tolerance", type=float, default=2.0, metavar="MM",
                        help="tolerance of the normalised surface Dice in mm (default 2.0)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="cases evaluated in parallel (processes; default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")


def _evaluate_pair(case, pred_path, gt_path, labels_yaml, convention, resample, nsd_tolerance):
    """One case, in a worker process or inline. Returns the case's JSON-ready dict."""
    import numpy as np

    from ..data.geometry import resample_nearest, same_grid
    from ..data.io import read_label_map
    from ..data.labels import labels_to_json, resolve_labels
    from ..errors import UserError
    from ..metrics.evaluate import evaluate_case

    pred = read_label_map(pred_path, "prediction")
    gt = read_label_map(gt_path, "reference")
    same, mismatch = same_grid(pred.affine, pred.shape, gt.affine, gt.shape)
    pred_arr = pred.array
    if not same:
        if not resample:
            raise UserError(f"prediction {pred_path}: {mismatch} from the reference {gt_path}; "
                            f"pass --resample-pred to resample it onto the reference grid")
        pred_arr = resample_nearest(pred.array, pred.affine, gt.affine, gt.shape)
    labels, source = resolve_labels(pred_path, labels_yaml)
    organs = evaluate_case(pred_arr, gt.array, labels, gt.spacing, convention, nsd_tolerance)
    # bincount over the raw memory order (no copy of Fortran-ordered NIfTI arrays); labels are
    # non-negative integers (checked when loading)
    present = {int(v) for arr in (pred_arr, gt.array)
               for v in np.flatnonzero(np.bincount(arr.ravel(order="K")))}
    unnamed = sorted(int(v) for v in present - set(labels) - {0})
    return {
        "case": case, "pred": str(pred_path), "gt": str(gt_path),
        "spacing_mm": [float(s) for s in gt.spacing], "shape": list(gt.array.shape),
        "resampled": not same, "labels_source": source, "labels": labels_to_json(labels),
        "unnamed_label_values": unnamed, "organs": organs,
    }


def _run_all(pairs, args, labels_yaml):
    from tqdm import tqdm

    jobs = [(case, p, g, labels_yaml, args.convention, args.resample_pred, args.nsd_tolerance)
            for case, p, g in pairs]
    bar = dict(total=len(jobs), unit="case", desc="evaluate", disable=args.quiet or len(jobs) < 2)
    if args.jobs <= 1 or len(jobs) == 1:
        results = []
        with tqdm(**bar) as pbar:
            for j in jobs:
                results.append(_evaluate_pair(*j))
                pbar.update(1)
        return results
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(jobs))) as pool:
        futures = {pool.submit(_evaluate_pair, *j): i for i, j in enumerate(jobs)}
        with tqdm(**bar) as pbar:
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()  # re-raises a worker's UserError here
                pbar.update(1)
    return results


def _fmt(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"


def summary_table(doc: dict) -> str:
    """Paper-style text table: one row per organ, then the overall mean."""
    unit = doc["hd95_unit"]
    lines = [f"{'organ':<16} {'Dice':>7} {'n':>4} {'HD95 (' + unit + ')':>12} {'n':>4}  cases "
             f"present/empty/missed/false-pos"]
    for name, o in doc["summary"]["organs"].items():
        sc = o["status_counts"]
        lines.append(f"{name:<16} {_fmt(o['dice']['mean'], 4):>7} {o['dice']['n']:>4} "
                     f"{_fmt(o['hd95']['mean'], 2):>12} {o['hd95']['n']:>4}  {sc['both_present']}/"
                     f"{sc['both_empty']}/{sc['missed']}/{sc['false_positive']}")
    m = doc["summary"]["mean"]
    lines.append(f"{'mean of organs':<16} {_fmt(m['dice'], 4):>7} {'':>4} {_fmt(m['hd95'], 2):>12}")
    return "\n".join(lines)


def build_document(results, args, unpaired) -> dict:
    """The metrics.json content (JSON-safe: NaN -> null)."""
    import datetime

    from .. import __version__
    from ..metrics.evaluate import json_safe, summarize

    organ_names: list[str] = []
    for r in results:
        for name in r["organs"]:
            if name not in organ_names:
                organ_names.append(name)
    cases = [{"case": r["case"], "organs": r["organs"]} for r in results]
    doc = {
        "format": "transunet-app/metrics",
        "format_version": 1,
        "convention": args.convention,
        "hd95_unit": "voxel" if args.convention == "transunet" else "mm",
        "nsd_tolerance_mm": args.nsd_tolerance,
        "software": {"name": "transunet-app", "version": __version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pred": str(args.pred), "gt": str(args.gt),
        "organs": organ_names,
        "unpaired_files": unpaired,
        "cases": results,
        "summary": summarize(cases, organ_names),
    }
    return json_safe(doc)


def csv_text(doc: dict) -> str:
    import csv
    import io

    cols = ["case", "organ", "label", "status", "dice", "hd95_mm", "hd95_vox", "assd_mm", "nsd",
            "pred_volume_ml", "ref_volume_ml"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for c in doc["cases"]:
        for name, o in c["organs"].items():
            row = [c["case"], name] + [o.get(k) for k in cols[2:]]
            w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


def run(args) -> int:
    import json
    import sys
    from pathlib import Path

    from ..data.files import atomic_write_text, pair_cases
    from ..data.labels import read_labels_yaml
    from ..errors import UserError

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: must be at least 1")
    if not args.nsd_tolerance >= 0:
        raise UserError(f"--nsd-tolerance {args.nsd_tolerance}: must be >= 0 mm")
    out = Path(args.output)
    for target in [out] + ([Path(args.csv)] if args.csv else []):
        if target.exists() and not args.overwrite:
            raise UserError(f"{target}: already exists (use --overwrite to replace it)")
        if not target.parent.is_dir():
            raise UserError(f"{target}: folder {target.parent} does not exist")
    labels_yaml = None
    if args.labels:
        read_labels_yaml(args.labels)  # fail early, before any case is read
        labels_yaml = str(args.labels)
    pairs, unpaired = pair_cases(args.pred, args.gt)
    if unpaired:
        print(f"evaluate: warning: {len(unpaired)} file(s) without a partner skipped: "
              f"{', '.join(unpaired[:5])}{' ...' if len(unpaired) > 5 else ''}", file=sys.stderr)
    results = _run_all(pairs, args, labels_yaml)
    doc = build_document(results, args, unpaired)
    atomic_write_text(out, json.dumps(doc, indent=1, allow_nan=False) + "\n", overwrite=args.overwrite)
    if args.csv:
        atomic_write_text(args.csv, csv_text(doc), overwrite=args.overwrite)
    if not args.quiet:
        print(summary_table(doc))
        print(f"{len(results)} case(s), convention {args.convention}; wrote {out}"
              + (f" and {args.csv}" if args.csv else ""))
    return 0
