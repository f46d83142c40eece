"""``transunet synapse-refs``: Synapse/BTCV references as 8-organ maps named like ``segment``'s outputs.

Exit code 0 when every case of the split found in the download was written (cases not in the
download are noted on stderr, as ``prepare synapse`` does), 1 when some were unreadable, 2 when
none could be written or the input is wrong.
"""
from __future__ import annotations

HELP = "write the 8-organ Synapse reference label maps of a split, named like segment's outputs"


def add_arguments(parser) -> None:
    parser.add_argument("--raw", required=True, metavar="DIR",
                        help="folder of the raw download (img/, label/)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for imgXXXX.nii.gz references")
    parser.add_argument("--split", choices=("test", "train", "all"), default="test",
                        help="cases to write (default: the 12 official test cases)")
    parser.add_argument("--labels", metavar="YAML", help="label spec (default datasets/synapse/labels.yaml)")
    parser.add_argument("--splits", metavar="YAML", help="split file (default datasets/synapse/splits.yaml)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing reference files")


def run(args) -> int:
    import sys

    from ..data.synapse_refs import write_references
    from ..errors import UserError

    written, missing, skipped = write_references(args.raw, args.out, args.split, args.labels,
                                                 args.splits, args.overwrite)
    if not written:
        raise UserError(f"{args.raw}: no reference of the {args.split} split could be written "
                        f"({len(missing)} not in the download, {len(skipped)} unreadable)")
    if missing:
        print(f"transunet synapse-refs: note: cases of the {args.split} split without a label file in "
              f"{args.raw}: {', '.join(map(str, missing))}", file=sys.stderr)
    for n, reason in skipped.items():
        print(f"transunet synapse-refs: skipped case {n}: {reason}", file=sys.stderr)
    print(f"wrote {len(written)} reference label map(s) to {args.out}")
    return 1 if skipped else 0
