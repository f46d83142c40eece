"""Prepare Synapse/BTCV CT into the official TransUNet preprocessed layout.

Output layout (readable by this project and by the official TransUNet code)::

    OUT/
      train_npz/caseXXXX_sliceNNN.npz   image float32 (H, W) in [0, 1], label uint8 (H, W)
      test_vol_h5/caseXXXX.npy.h5       image float32 (D, H, W), label uint8 (D, H, W)
      lists_Synapse/train.txt           one slice name per line (caseXXXX_sliceNNN)
      lists_Synapse/test_vol.txt        one case name per line (caseXXXX)
      dataset.yaml                      classes, HU window, normalisation, orientation,
                                        spacing and source of every case (this project only)

Every array is in the canonical slice frame of :mod:`transunet_app.data.geometry`
(D inferior->superior, rows anterior->posterior, columns patient right->left, "SPL"), taken
from each file's affine by permutations and flips only. Intensities: HU clipped to the window
(default [-125, 275]) and scaled linearly to [0, 1]. The h5 files also carry attributes
``spacing`` (mm for D, H, W), ``affine`` (canonical voxel -> RAS mm), ``orientation`` and
``source_orientation``; the official loader ignores them.

The writer (:class:`LayoutWriter`) and per-case preprocessing (:func:`preprocess_case`) are
shared by :mod:`.folders` and :mod:`.phantom`.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import UserError
from . import geometry, labels as labels_mod
from .io import Image, atomic_write, read_image

log = logging.getLogger(__name__)

#: Default HU window of the TransUNet preprocessing.
HU_WINDOW = (-125.0, 275.0)
TRAIN_DIR = "train_npz"
TEST_DIR = "test_vol_h5"
LISTS_DIR = "lists_Synapse"
TRAIN_LIST = "train.txt"
TEST_LIST = "test_vol.txt"
DATASET_YAML = "dataset.yaml"
#: Present while a preparation runs; readers refuse a folder that still has it.
INCOMPLETE_MARKER = ".prepare_incomplete"
LAYOUT_FORMAT = "transunet-synapse-layout/1"

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


def normalise_hu(hu: np.ndarray, hu_window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Clip HU to ``hu_window`` and scale linearly to [0, 1] (float32), as TransUNet does."""
    lo, hi = float(hu_window[0]), float(hu_window[1])
    if not hi > lo:
        raise UserError(f"HU window [{lo}, {hi}] is empty")
    out = np.clip(np.asarray(hu, dtype=np.float32), lo, hi)
    out -= np.float32(lo)
    out /= np.float32(hi - lo)
    return out


def preprocess_case(image: Image, label: Image, spec: dict,
                    hu_window: tuple[float, float] = HU_WINDOW) -> tuple[np.ndarray, np.ndarray, geometry.Reorientation]:
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
    return normalise_hu(canon_img, hu_window), canon_lbl, reo


# --------------------------------------------------------------------------- writing


def ensure_output_dir(out_dir: str | os.PathLike, overwrite: bool, inputs: Iterable[Path] = ()) -> Path:
    """Create the output folder, or clear a previous preparation from it when allowed.

    A non-empty folder is refused unless ``overwrite``; with it, only files this module
    writes are removed (``train_npz/*.npz``, ``test_vol_h5/*.npy.h5``, the two lists,
    ``dataset.yaml``). Writing into (or above) an input folder is refused.
    """
    out = Path(out_dir)
    for src in inputs:
        src = Path(src).resolve()
        o = out.resolve()
        if o == src or src in o.parents:
            raise UserError(f"{out}: output folder is inside the input folder {src}; choose another one")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out}: folder is not empty (use --overwrite to replace a prepared dataset there)")
        for pattern in (f"{TRAIN_DIR}/*.npz", f"{TEST_DIR}/*.npy.h5", f"{LISTS_DIR}/{TRAIN_LIST}",
                        f"{LISTS_DIR}/{TEST_LIST}", DATASET_YAML, INCOMPLETE_MARKER):
            for f in out.glob(pattern):
                f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


class LayoutWriter:
    """Writes cases into the official layout; lists and ``dataset.yaml`` come last.

    Usage::

        writer = LayoutWriter(out_dir)            # folder must exist (see ensure_output_dir)
        writer.add_case(name, "train", image01, labels, reorientation, source={...})
        writer.finish(info)                       # lists, dataset.yaml, clears the marker
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out = Path(out_dir)
        for sub in (TRAIN_DIR, TEST_DIR, LISTS_DIR):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        (self.out / INCOMPLETE_MARKER).write_text("preparation in progress or interrupted\n")
        self.train_slices: list[str] = []
        self.test_cases: list[str] = []
        self.cases: dict[str, dict] = {}

    def add_case(self, name: str, split: str, image01: np.ndarray, label: np.ndarray,
                 reo: geometry.Reorientation, source: dict | None = None) -> int:
        """Write one canonical case: slices for ``split="train"``, a volume for ``"test"``.

        Args:
            name: case name (file names and list entries).
            split: "train" or "test".
            image01: float32 (D, H, W) normalised intensities.
            label: uint8 (D, H, W) class ids.
            reo: how the case was reoriented (spacing and affine are recorded).
            source: free-form facts about the input (file names), stored in dataset.yaml.

        Returns:
            Number of files written.
        """
        if image01.shape != label.shape or image01.ndim != 3:
            raise ValueError(f"{name}: image {image01.shape} and label {label.shape} must be equal (D, H, W)")
        if name in self.cases:
            raise UserError(f"case name {name} appears twice")
        image01 = image01.astype(np.float32, copy=False)
        label = label.astype(np.uint8, copy=False)
        if split == "train":
            names = []
            for d in range(image01.shape[0]):
                slice_name = f"{name}_slice{d:03d}"
                _write_npz(self.out / TRAIN_DIR / f"{slice_name}.npz", image01[d], label[d])
                names.append(slice_name)
            self.train_slices.extend(names)
            written = len(names)
        elif split == "test":
            _write_h5(self.out / TEST_DIR / f"{name}.npy.h5", image01, label, reo)
            self.test_cases.append(name)
            written = 1
        else:
            raise ValueError(f"unknown split {split!r}")
        present = [int(c) for c in np.unique(label)]
        self.cases[name] = {
            "split": split,
            "shape": [int(s) for s in image01.shape],
            "spacing": [round(float(s), 6) for s in reo.canonical_spacing],
            "source_orientation": reo.original_orientation,
            "obliquity_deg": round(float(reo.obliquity_deg), 3),
            "classes_present": present,
            **(source or {}),
        }
        return written

    def abandon(self) -> None:
        """Nothing was written: remove the marker and the (empty) folders again."""
        (self.out / INCOMPLETE_MARKER).unlink(missing_ok=True)
        for sub in (TRAIN_DIR, TEST_DIR, LISTS_DIR):
            try:
                (self.out / sub).rmdir()
            except OSError:  # not empty: leave it
                pass

    def finish(self, info: dict) -> Path:
        """Write the lists and ``dataset.yaml`` (``info`` plus the per-case records)."""
        lists = self.out / LISTS_DIR
        atomic_write(lists / TRAIN_LIST, lambda p: p.write_text("".join(f"{s}\n" for s in self.train_slices)), overwrite=True)
        atomic_write(lists / TEST_LIST, lambda p: p.write_text("".join(f"{c}\n" for c in self.test_cases)), overwrite=True)
        record = dict(info)
        record["cases"] = self.cases
        path = write_dataset_yaml(self.out, record)
        marker = self.out / INCOMPLETE_MARKER
        if marker.exists():
            marker.unlink()
        return path


def _write_npz(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez must not append ".npz"
            np.savez(fh, image=image, label=label)

    atomic_write(path, write, overwrite=True)


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray, reo: geometry.Reorientation) -> None:
    import h5py

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("image", data=image)
            f.create_dataset("label", data=label, compression="gzip", compression_opts=1)
            f.attrs["spacing"] = np.asarray(reo.canonical_spacing, dtype=np.float64)
            f.attrs["affine"] = np.asarray(reo.canonical_affine, dtype=np.float64)
            f.attrs["orientation"] = geometry.CANONICAL_ORIENTATION
            f.attrs["source_orientation"] = reo.original_orientation

    atomic_write(path, write, overwrite=True)


def write_dataset_yaml(out_dir: Path, record: dict) -> Path:
    import yaml

    text = ("# Written by `transunet prepare`. Describes the prepared data in this folder:\n"
            "# classes, intensity normalisation, slice orientation and per-case geometry.\n")
    text += yaml.safe_dump(record, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
    return atomic_write(Path(out_dir) / DATASET_YAML, lambda p: p.write_text(text, encoding="utf-8"), overwrite=True)


def base_info(spec: dict, hu_window: tuple[float, float], source: dict, synthetic: bool) -> dict:
    """The dataset-level part of ``dataset.yaml``."""
    from .. import __version__

    return {
        "format": LAYOUT_FORMAT,
        "name": spec.get("name") or "dataset",
        "synthetic": bool(synthetic),
        "classes": list(spec["classes"]),
        "label_map": None if spec.get("label_map") is None else {int(k): int(v) for k, v in spec["label_map"].items()},
        "hu_window": [float(hu_window[0]), float(hu_window[1])],
        "normalisation": {"method": "clip_scale", "hu_window": [float(hu_window[0]), float(hu_window[1])],
                          "output_range": [0.0, 1.0],
                          "formula": "(clip(hu, low, high) - low) / (high - low)"},
        "orientation": geometry.CANONICAL_ORIENTATION,
        "axes": {"D": "inferior->superior", "H": "anterior->posterior", "W": "patient right->left"},
        "source": source,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "tool": f"transunet-app {__version__}",
    }


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


def case_name(case: int | str) -> str:
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
    split_of = {case_name(c): "train" for c in splits["train"]}
    split_of.update({case_name(c): "test" for c in splits["test"]})
    number = {case_name(n): n for n in pairs}
    cases, early_skips = assign_splits(
        {case_name(n): pair for n, pair in pairs.items()}, split_of,
        no_label=lambda name, img: f"{img}: no label file label{number[name]:04d}.nii.gz",
        no_split=lambda name, img: (f"{img}: case {number[name]} is in neither split of "
                                    f"{splits_path or labels_mod.synapse_splits_path()}"))
    for name, reason in early_skips.items():
        skip(name, reason)
    missing = sorted(set(split_of) - {case_name(n) for n in pairs})
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

