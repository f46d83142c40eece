"""Prepare CT/label pairs into the official TransUNet layout (:mod:`.layout`); Synapse/BTCV.

Every array is put in the canonical slice frame of :mod:`transunet_app.data.geometry`
(D inferior->superior, rows anterior->posterior, columns patient right->left, "SPL"), taken
from each file's affine by permutations and flips only. Intensities: HU clipped to the window
(default [-125, 275]) and scaled linearly to [0, 1] by :func:`.intensity.window_to_unit`, the
transform inference applies too.

Per-case preprocessing (:func:`preprocess_case`) and the read-check-write loop
(:func:`prepare_cases`) are shared by :mod:`.folders` and :mod:`.phantom`.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError
from . import geometry
from . import labels as labels_mod
from .intensity import HU_WINDOW, window_to_unit
from .io import Image, read_image
from .layout import LayoutWriter, base_info, ensure_output_dir

log = logging.getLogger(__name__)

_IMG_RE = re.compile(r"^img(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_LABEL_RE = re.compile(r"^label(\d+)\.nii(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class CaseSource:
    """One image/label pair to prepare.

    Attributes:
        name: case name used in the output (``case0005``, ``phantom_0001``, ...).
        split: ``"train"`` (written as slices) or ``"test"`` (written as a volume).
        image: path of the CT volume (HU).
        label: path of the label volume (raw ids, mapped with the label spec).
    """

    name: str
    split: str
    image: Path
    label: Path


@dataclass
class PrepareReport:
    """What a preparation wrote and what it skipped (and why)."""

    out_dir: Path
    train_cases: list = field(default_factory=list)
    test_cases: list = field(default_factory=list)
    train_slices: int = 0
    skipped: dict = field(default_factory=dict)

    def summary(self) -> str:
        text = (f"{self.out_dir}: {len(self.train_cases)} training cases ({self.train_slices} slices), "
                f"{len(self.test_cases)} test volumes")
        if self.skipped:
            text += f"; {len(self.skipped)} skipped: " + ", ".join(sorted(self.skipped))
        return text


# --------------------------------------------------------------------------- preprocessing


def preprocess_case(image: Image, label: Image, spec: dict,
                    hu_window: tuple[float, float] = HU_WINDOW,
                    ) -> tuple[np.ndarray, np.ndarray, geometry.Reorientation]:
    """Turn one CT/label pair into canonical normalised arrays.

    Args:
        image: CT volume in HU.
        label: raw label volume on the same grid.
        spec: label spec from :func:`labels.load_label_spec` (``classes``, ``label_map``).
        hu_window: (low, high) HU clipping window.

    Returns:
        ``(image01, labels, reorientation)``: float32 (D, H, W) in [0, 1], uint8 (D, H, W)
        class ids, and the :class:`~transunet_app.data.geometry.Reorientation` used.

    Raises:
        UserError: the two volumes are not on the same grid, or the labels are invalid.
    """
    ok, reason = geometry.same_grid(image.affine, image.shape, label.affine, label.shape)
    if not ok:
        raise UserError(f"{label.source}: does not match its image {image.source.name} ({reason})")
    mapped = labels_mod.map_labels(label.array, spec.get("label_map"), len(spec["classes"]), where=str(label.source))
    canon_img, reo = geometry.to_canonical(image.array, image.affine)
    canon_lbl = geometry.apply_reorientation(mapped, reo)
    return window_to_unit(canon_img, hu_window), canon_lbl, reo


# --------------------------------------------------------------------------- preparing


def assign_splits(pairs: dict[str, tuple[Path, Path | None]], split_of: dict[str, str],
                  no_label: Callable[[str, Path], str],
                  no_split: Callable[[str, Path], str]) -> tuple[list[CaseSource], dict[str, str]]:
    """Cases that have a label file and a place in the split, and why the others are skipped.

    Args:
        pairs: case name -> (image path, label path or ``None``).
        split_of: case name -> ``"train"`` or ``"test"``.
        no_label, no_split: ``(name, image) -> reason`` for a case without a label file / split.

    Returns:
        ``(cases, skipped)``: the cases sorted by name, and name -> reason for the rest.
    """
    cases: list[CaseSource] = []
    skipped: dict[str, str] = {}
    for name, (img, lbl) in sorted(pairs.items()):
        if lbl is None:
            skipped[name] = no_label(name, img)
        elif name not in split_of:
            skipped[name] = no_split(name, img)
        else:
            cases.append(CaseSource(name, split_of[name], img, lbl))
    return cases, skipped


def prepare_cases(cases: list[CaseSource], out_dir: Path, spec: dict, info: dict,
                  hu_window: tuple[float, float] = HU_WINDOW, progress: bool = False,
                  report_skip: Callable[[str, str], None] | None = None,
                  skipped_before: dict[str, str] | None = None) -> PrepareReport:
    """Read, check, preprocess and write a list of cases into an (already cleared) folder.

    A case whose files cannot be read or do not match is reported through ``report_skip``
    (name, reason), recorded under ``skipped`` in dataset.yaml and not written.

    Args:
        skipped_before: cases the caller already skipped (and reported), name -> reason;
            recorded first in the report and in dataset.yaml.

    Raises:
        UserError: no case could be prepared.
    """
    from tqdm import tqdm

    report = PrepareReport(out_dir=Path(out_dir), skipped=dict(skipped_before or {}))
    writer = LayoutWriter(out_dir)
    skip = report_skip or (lambda name, reason: log.warning("skipped %s: %s", name, reason))
    bar = tqdm(cases, desc="prepare", unit="case", disable=not progress, dynamic_ncols=True)
    for case in bar:
        bar.set_postfix_str(case.name)
        try:
            image = read_image(case.image)
            label = read_image(case.label)
            image01, lbl, reo = preprocess_case(image, label, spec, hu_window)
        except UserError as exc:
            report.skipped[case.name] = str(exc)
            skip(case.name, str(exc))
            continue
        n = writer.add_case(case.name, case.split, image01, lbl, reo,
                            source={"image": str(case.image), "label": str(case.label)})
        if case.split == "train":
            report.train_cases.append(case.name)
            report.train_slices += n
        else:
            report.test_cases.append(case.name)
    if not report.train_cases and not report.test_cases:
        writer.abandon()
        n_failed = len(report.skipped) - len(skipped_before or {})
        raise UserError(f"{out_dir}: no case could be prepared ({n_failed} skipped)")
    record = dict(info)
    record["splits"] = {"train": report.train_cases, "test": report.test_cases}
    record["skipped"] = dict(report.skipped)
    writer.finish(record)
    return report


# --------------------------------------------------------------------------- Synapse / BTCV


def btcv_case_name(case: int | str) -> str:
    """``5`` -> ``"case0005"``; strings are returned unchanged."""
    if isinstance(case, (int, np.integer)):
        return f"case{int(case):04d}"
    text = str(case)
    return f"case{int(text):04d}" if text.isdigit() else text


def find_synapse_pairs(raw_dir: str | os.PathLike) -> tuple[dict[int, tuple[Path, Path | None]], list[str]]:
    """Find BTCV ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz`` pairs under ``raw_dir``.

    Looks for folders named ``img`` with a sibling ``label`` folder at any depth up to five
    (``raw/img``, ``raw/RawData/Training/img``, ``raw/Abdomen/RawData/Training/img``, ...).

    Returns:
        ``(pairs, notes)``: case number -> (image path, label path or ``None`` when missing),
        and human-readable notes about folders ignored.
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise UserError(f"{raw}: no such folder")
    pairs: dict[int, tuple[Path, Path | None]] = {}
    notes: list[str] = []
    base_depth = len(raw.parts)
    for root, dirs, _files in os.walk(raw):
        dirs.sort()
        if len(Path(root).parts) - base_depth >= 5:
            dirs[:] = []
        if Path(root).name.lower() != "img":
            continue
        img_dir = Path(root)
        images = {int(m.group(1)): img_dir / f for f in sorted(os.listdir(img_dir)) if (m := _IMG_RE.match(f))}
        if not images:
            continue
        label_dir = next((p for p in img_dir.parent.iterdir() if p.is_dir() and p.name.lower() == "label"), None)
        if label_dir is None:
            notes.append(f"{img_dir}: no 'label' folder beside it; its {len(images)} images are ignored")
            continue
        found = {int(m.group(1)): label_dir / f for f in sorted(os.listdir(label_dir)) if (m := _LABEL_RE.match(f))}
        for n, path in images.items():
            if n in pairs:
                notes.append(f"{path}: case {n} also found at {pairs[n][0]}; the first one is used")
                continue
            pairs[n] = (path, found.get(n))
    if not pairs:
        raise UserError(f"{raw}: no img/imgXXXX.nii.gz files with a label/ folder found "
                        "(expected img/ and label/ or RawData/Training/img and .../label)")
    return pairs, notes


def prepare_synapse(raw_dir: str | os.PathLike, out_dir: str | os.PathLike,
                    labels_path: str | os.PathLike | None = None,
                    splits_path: str | os.PathLike | None = None,
                    hu_window: tuple[float, float] = HU_WINDOW, overwrite: bool = False,
                    progress: bool = False,
                    report_skip: Callable[[str, str], None] | None = None) -> PrepareReport:
    """Prepare the raw BTCV/Synapse download into the official TransUNet layout.

    Args:
        raw_dir: folder holding ``img/`` and ``label/`` (or ``RawData/Training/...``).
        out_dir: output folder (created; must be empty unless ``overwrite``).
        labels_path: label spec YAML (default ``datasets/synapse/labels.yaml``: 13 -> 8).
        splits_path: split YAML (default: the official 18 train / 12 test cases).
        hu_window: HU clipping window before scaling to [0, 1].
        overwrite: replace a previous preparation in ``out_dir``.
        progress: show a tqdm progress bar.
        report_skip: called as ``(case, reason)`` for every skipped case (default: a log
            warning).

    Returns:
        A :class:`PrepareReport`.

    Raises:
        UserError: no raw cases found, bad YAML, output folder not empty, nothing usable.
    """
    spec = labels_mod.load_label_spec(labels_path)
    splits = labels_mod.load_splits(splits_path)
    pairs, notes = find_synapse_pairs(raw_dir)
    skip = report_skip or (lambda name, reason: log.warning("skipped %s: %s", name, reason))
    for note in notes:
        skip("-", note)
    split_of = {btcv_case_name(c): "train" for c in splits["train"]}
    split_of.update({btcv_case_name(c): "test" for c in splits["test"]})
    number = {btcv_case_name(n): n for n in pairs}
    cases, early_skips = assign_splits(
        {btcv_case_name(n): pair for n, pair in pairs.items()}, split_of,
        no_label=lambda name, img: f"{img}: no label file label{number[name]:04d}.nii.gz",
        no_split=lambda name, img: (f"{img}: case {number[name]} is in neither split of "
                                    f"{splits_path or labels_mod.synapse_splits_path()}"))
    for name, reason in early_skips.items():
        skip(name, reason)
    missing = sorted(set(split_of) - {btcv_case_name(n) for n in pairs})
    if missing:
        skip("-", f"cases of the split not found in {raw_dir}: {', '.join(missing)}")
    out = ensure_output_dir(out_dir, overwrite, inputs=[Path(raw_dir)])
    info = base_info(spec, hu_window, {"kind": "btcv", "raw_dir": str(Path(raw_dir).resolve()),
                                       "labels": str(labels_path or labels_mod.synapse_labels_path()),
                                       "splits": str(splits_path or labels_mod.synapse_splits_path())},
                     synthetic=False)
    if not cases:
        raise UserError(f"{raw_dir}: no case with an image, a label and a place in the split")
    return prepare_cases(cases, out, spec, info, hu_window, progress, skip, skipped_before=early_skips)

