"""``transunet prepare {synapse,folder,phantom}``: build a training dataset folder.

All three write the official TransUNet layout (``train_npz/``, ``test_vol_h5/``,
``lists_Synapse/``) plus ``dataset.yaml``; ``data.root=OUT`` trains on it directly.
Exit code 0 when every case was prepared, 1 when some were skipped (listed on stderr),
2 on bad input.
"""
from __future__ import annotations

import argparse
import sys

HELP = "Prepare training data: Synapse/BTCV raw download, an imagesTr/labelsTr folder, or a synthetic phantom"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    p = sub.add_parser("synapse", help="raw BTCV/Synapse download (img/, label/ or RawData/Training/...)",
                       description="Map BTCV labels 13->8, clip HU to [-125, 275], scale to [0, 1], reorient to "
                                   "the canonical SPL slice frame and write the official 18/12 split.")
    p.add_argument("--raw", required=True, metavar="DIR", help="folder of the raw download")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--labels", metavar="YAML", help="label spec (default datasets/synapse/labels.yaml)")
    p.add_argument("--splits", metavar="YAML", help="train/test split (default datasets/synapse/splits.yaml)")
    _common(p)

    p = sub.add_parser("folder", help="imagesTr/ + labelsTr/ folder (Medical Segmentation Decathlon / nnU-Net)",
                       description="Prepare your own CT/label NIfTI pairs; classes from --labels YAML or dataset.json.")
    p.add_argument("--src", required=True, metavar="DIR", help="folder with imagesTr/ and labelsTr/")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--labels", metavar="YAML", help="label spec: classes (+ label_map, splits); overrides dataset.json")
    p.add_argument("--splits", metavar="YAML", help="train:/test: lists of case names")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of cases held out as test volumes without a split file (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    _common(p)

    p = sub.add_parser("phantom", help="synthetic abdominal CT phantom (tests, demo; not real data)",
                       description="Generate N synthetic CT cases with the 8 Synapse organs, write them as NIfTI "
                                   "under OUT/raw and prepare them for training.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--cases", type=int, default=8, help="number of cases (default 8, at least 2)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--size", choices=("small", "medium", "full"), default="small",
                   help="in-plane size: small 112-144, medium 192-256, full 512 voxels (default small)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="share of cases held out (default 0.25)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous phantom dataset in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hu-window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="HU clipping window before scaling to [0, 1] (default -125 275)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous preparation in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    skipped_lines: list[str] = []

    def report_skip(case: str, reason: str) -> None:
        line = f"skipped {case}: {reason}" if case != "-" else f"note: {reason}"
        skipped_lines.append(line)
        tqdm.write(line, file=sys.stderr)

    progress = not args.quiet
    from ..data.intensity import HU_WINDOW, check_window

    # an empty window fails here once, not as a skip of every case
    given = getattr(args, "hu_window", None)  # the phantom command has no --hu-window
    hu_window = HU_WINDOW if given is None else check_window(given)
    if args.source == "synapse":
        from ..data.synapse import prepare_synapse

        report = prepare_synapse(args.raw, args.out, labels_path=args.labels, splits_path=args.splits,
                                 hu_window=hu_window, overwrite=args.overwrite, progress=progress,
                                 report_skip=report_skip)
    elif args.source == "folder":
        from ..data.folders import prepare_folder

        report = prepare_folder(args.src, args.out, labels_yaml=args.labels, splits_yaml=args.splits,
                                test_fraction=args.test_fraction, seed=args.seed, hu_window=hu_window,
                                overwrite=args.overwrite, progress=progress, report_skip=report_skip)
    else:
        from ..data.phantom import prepare_phantom

        report = prepare_phantom(args.out, cases=args.cases, seed=args.seed, size=args.size,
                                 test_fraction=args.test_fraction, overwrite=args.overwrite, progress=progress,
                                 report_skip=report_skip)
    print(report.summary())
    return 1 if report.skipped else 0
