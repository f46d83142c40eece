"""Reference label maps for evaluating ``segment`` outputs on Synapse/BTCV: 8 organs per case.

``transunet synapse-refs --raw /data/Abdomen --out refs/`` is its command line.

``segment /data/Abdomen/img/...`` writes ``preds/imgXXXX.nii.gz`` in the organ ids of the
checkpoint (0-8, Synapse order); the raw references ``label/labelXXXX.nii.gz`` hold BTCV's 13
ids. This module maps each reference of the split (default: the official 12 test cases) to the 8
organs with the label spec ``prepare synapse`` uses and writes ``refs/imgXXXX.nii.gz`` on the
label file's own grid and header, so ``transunet evaluate --pred preds/ --gt refs/`` pairs
every case by name. The inputs are only read.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError


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
    from .io import read_image, write_nifti
    from .labels import load_label_spec, load_splits, map_labels
    from .synapse import find_synapse_pairs

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
                                   description="8-organ reference (transunet synapse-refs)"))
    return written, missing, skipped
