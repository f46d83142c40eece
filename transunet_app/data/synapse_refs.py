"""Reference label maps for evaluating ``segment`` outputs on Synapse/BTCV: 8 organs per case.

    python tools/synapse_refs.py --raw /data/Abdomen --out refs/ [--split test|train|all]
        [--labels datasets/synapse/labels.yaml] [--splits datasets/synapse/splits.yaml] [--overwrite]

``segment /data/Abdomen/img/...`` writes ``preds/imgXXXX.nii.gz`` in the organ ids of the
checkpoint (0-8, Synapse order); the raw references ``label/labelXXXX.nii.gz`` hold BTCV's 13
ids. This tool maps each reference of the split (default: the official 12 test cases) to the 8
organs with the label spec ``prepare synapse`` uses and writes ``refs/imgXXXX.nii.gz`` on the
label file's own grid and header, so ``transunet evaluate --pred preds/ --gt refs/`` pairs
every case by name. The inputs are only read.

Exit code 0 when every case of the split found in the download was written (cases not in the
download are noted on stderr, as ``prepare synapse`` does), 1 when some were unreadable, 2 when
none could be written or the input is wrong.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transunet_app.errors import UserError


def write_references(raw: str, out: str, split: str = "test", labels: str | None = None,
                     splits: str | None = None,
                     overwrite: bool = False) -> tuple[list[Path], list[int], dict[int, str]]:
    """Write the 8-organ reference maps of one split.

    Args:
        raw: the download folder (``img/`` + ``label/``, or ``RawData/Training/...`` below it).
        out: output folder (created).
        split: ``"test"``, ``"train"`` or ``"all"`` (cases of the splits file).
        labels, splits: label spec and split YAML (default: datasets/synapse/).
        overwrite: replace existing reference files.

    Returns:
        ``(written paths, case numbers not in the download, {case number: why it was skipped})``.

    Raises:
        UserError: bad YAML, no raw cases, or an existing output without ``overwrite``.
    """
    from transunet_app.data.io import read_image, write_nifti
    from transunet_app.data.labels import load_label_spec, load_splits, map_labels
    from transunet_app.data.synapse import find_synapse_pairs

    spec = load_label_spec(labels)
    split_lists = load_splits(splits)
    cases = sorted(int(c) for c in (split_lists["train"] + split_lists["test"] if split == "all"
                                    else split_lists[split]))
    pairs, _ = find_synapse_pairs(raw)
    out_dir = Path(out)
    written, missing, skipped = [], [], {}
    for n in cases:
        label_path = pairs.get(n, (None, None))[1]
        if label_path is None:
            missing.append(n)
            continue
        target = out_dir / f"img{n:04d}.nii.gz"  # the name segment gives img/img{n:04d}.nii.gz
        if target.exists() and not overwrite:
            raise UserError(f"{target}: exists (use --overwrite)")
        try:
            label = read_image(label_path)
            organs = map_labels(label.array, spec["label_map"], len(spec["classes"]), where=str(label_path))
        except UserError as exc:
            skipped[n] = str(exc)
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        written.append(write_nifti(target, organs, like=label, dtype="uint8", overwrite=overwrite,
                                   description="8-organ reference (tools/synapse_refs.py)"))
    return written, missing, skipped


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True, metavar="DIR", help="folder of the raw download (img/, label/)")
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for imgXXXX.nii.gz references")
    ap.add_argument("--split", choices=("test", "train", "all"), default="test",
                    help="cases to write (default: the 12 official test cases)")
    ap.add_argument("--labels", metavar="YAML", help="label spec (default datasets/synapse/labels.yaml)")
    ap.add_argument("--splits", metavar="YAML", help="split file (default datasets/synapse/splits.yaml)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing reference files")
    args = ap.parse_args(argv)
    try:
        written, missing, skipped = write_references(args.raw, args.out, args.split, args.labels,
                                                     args.splits, args.overwrite)
        if not written:
            raise UserError(f"{args.raw}: no reference of the {args.split} split could be written "
                            f"({len(missing)} not in the download, {len(skipped)} unreadable)")
    except UserError as exc:
        print(f"synapse_refs: error: {exc}", file=sys.stderr)
        return 2
    if missing:
        print(f"synapse_refs: note: cases of the {args.split} split without a label file in "
              f"{args.raw}: {', '.join(map(str, missing))}", file=sys.stderr)
    for n, reason in skipped.items():
        print(f"synapse_refs: skipped case {n}: {reason}", file=sys.stderr)
    print(f"wrote {len(written)} reference label map(s) to {args.out}")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
