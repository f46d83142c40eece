"""Prepare your own data: an ``imagesTr/`` + ``labelsTr/`` folder (MSD / nnU-Net layout).

Input::

    SRC/imagesTr/<case>.nii.gz        (nnU-Net's <case>_0000.nii.gz is accepted too)
    SRC/labelsTr/<case>.nii.gz
    SRC/dataset.json                  optional if a labels YAML is given

The classes come from a labels YAML (same format as ``datasets/synapse/labels.yaml``:
``classes`` plus optional ``label_map``) or, without one, from ``dataset.json``: the Medical
Segmentation Decathlon form ``"labels": {"0": "background", "1": "liver"}`` or the nnU-Net v2
form ``"labels": {"background": 0, "liver": 1}``. Output: the same layout as
:mod:`.layout` (training slices, test volumes, lists, dataset.yaml).

Train/test split: a splits YAML (``train:``/``test:`` lists of case names), the ``splits``
entry of the labels YAML, or else a deterministic shuffle (``seed``) holding out
``test_fraction`` of the cases (at least one when there are two or more).
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError
from . import labels as labels_mod
from .files import case_name, is_nifti_path
from .intensity import HU_WINDOW
from .layout import base_info, ensure_output_dir
from .synapse import PrepareReport, assign_splits, prepare_cases

log = logging.getLogger(__name__)


def read_dataset_json(path: Path) -> dict:
    """Label spec from an MSD or nnU-Net v2 ``dataset.json`` (see module docstring)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("labels"), dict):
        raise UserError(f"{path}: no 'labels' mapping")
    channels = raw.get("channel_names") or raw.get("modality") or {}
    if isinstance(channels, dict) and len(channels) > 1:
        raise UserError(f"{path}: {len(channels)} input channels ({', '.join(map(str, channels.values()))}); "
                        "only single-channel CT is supported")
    labels = raw["labels"]
    if all(str(k).isdigit() for k in labels):  # MSD: id -> name
        classes = {int(k): str(v) for k, v in labels.items()}
    else:  # nnU-Net v2: name -> id
        classes = {}
        for name, value in labels.items():
            if not isinstance(value, int):
                raise UserError(f"{path}: label '{name}' is {value!r}; region-based labels are not supported")
            classes[value] = str(name)
    spec = labels_mod.validate_label_spec({"name": raw.get("name", ""), "classes": classes}, str(path))
    spec["modality"] = [str(v) for v in channels.values()] if isinstance(channels, dict) else []
    spec["training"] = raw.get("training")
    spec["synthetic"] = bool(raw.get("synthetic", False))
    return spec


def find_folder_pairs(src: Path, training: list | None = None) -> tuple[dict[str, tuple[Path, Path | None]], list[str]]:
    """Image/label pairs of an imagesTr/labelsTr folder: case -> (image, label or None)."""
    images_dir, labels_dir = src / "imagesTr", src / "labelsTr"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise UserError(f"{src}: expected imagesTr/ and labelsTr/ folders")
    notes: list[str] = []
    pairs: dict[str, tuple[Path, Path | None]] = {}
    if training:  # MSD lists the pairs explicitly
        for entry in training:
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise UserError(f"{src / 'dataset.json'}: 'training' entries need 'image' and 'label'")
            img, lbl = (src / entry["image"]).resolve(), (src / entry["label"]).resolve()
            name = case_name(img)
            name = name[:-5] if re.search(r"_0000$", name) else name
            pairs[name] = (img, lbl if lbl.exists() else None)
        return pairs, notes
    labels_found = {case_name(f): f for f in sorted(labels_dir.iterdir())
                    if is_nifti_path(f) and not f.name.startswith(".")}
    for f in sorted(images_dir.iterdir()):
        if not is_nifti_path(f) or f.name.startswith("."):
            continue
        stem = case_name(f)
        name = stem
        if stem not in labels_found and re.search(r"_\d{4}$", stem):
            base, channel = stem[:-5], stem[-4:]
            if channel != "0000" and base in labels_found:
                raise UserError(f"{f}: second input channel ({channel}); only single-channel CT is supported")
            if channel == "0000":
                name = base  # nnU-Net's channel suffix
        pairs[name] = (f, labels_found.get(name))
    if not pairs:
        raise UserError(f"{images_dir}: no .nii/.nii.gz images")
    return pairs, notes


def split_cases(names: list[str], test_fraction: float = 0.2, seed: int = 0) -> dict[str, str]:
    """Deterministic train/test assignment: case -> "train" | "test"."""
    names = sorted(names)
    if not 0.0 <= test_fraction < 1.0:
        raise UserError(f"test fraction {test_fraction} must be in [0, 1)")
    n_test = int(round(len(names) * test_fraction))
    if len(names) >= 2 and test_fraction > 0:
        n_test = min(max(n_test, 1), len(names) - 1)
    order = np.random.default_rng(seed).permutation(len(names))
    test = {names[i] for i in order[:n_test]}
    return {n: ("test" if n in test else "train") for n in names}


def prepare_folder(src: str | os.PathLike, out: str | os.PathLike, labels_yaml: str | os.PathLike | None = None,
                   splits_yaml: str | os.PathLike | None = None, splits: dict | None = None,
                   test_fraction: float = 0.2, seed: int = 0,
                   hu_window: tuple[float, float] = HU_WINDOW, overwrite: bool = False, progress: bool = False,
                   report_skip: Callable[[str, str], None] | None = None, synthetic: bool = False,
                   source_extra: dict | None = None, _output_checked: bool = False) -> PrepareReport:
    """Prepare an imagesTr/labelsTr folder into the official layout (see module docstring).

    Args:
        src: folder with ``imagesTr/``, ``labelsTr/`` and optionally ``dataset.json``.
        out: output folder (must be empty unless ``overwrite``).
        labels_yaml: label spec YAML; takes precedence over ``dataset.json``.
        splits_yaml: ``train:``/``test:`` lists of case names.
        splits: the same as a dict (takes precedence over ``splits_yaml``).
        test_fraction: share of cases held out as test volumes when no split is given.
        seed: seed of that deterministic split.
        hu_window: HU clipping window.
        overwrite: replace a previous preparation in ``out``.
        progress: tqdm progress bar.
        report_skip: called as ``(case, reason)`` for each skipped case.
        synthetic: mark the dataset as synthetic in dataset.yaml (the phantom does).
        source_extra: more facts recorded under ``source`` in dataset.yaml.

    Returns:
        A :class:`~transunet_app.data.synapse.PrepareReport`.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    if not (src / "imagesTr").is_dir() or not (src / "labelsTr").is_dir():
        raise UserError(f"{src}: expected imagesTr/ and labelsTr/ folders")
    skip = report_skip or (lambda name, reason: log.warning("skipped %s: %s", name, reason))
    json_path = src / "dataset.json"
    json_spec = read_dataset_json(json_path) if json_path.exists() else None
    if labels_yaml is not None:
        raw_yaml = labels_mod.read_yaml(labels_yaml)
        spec = labels_mod.validate_label_spec(raw_yaml, str(labels_yaml))
        yaml_splits = raw_yaml.get("splits") if isinstance(raw_yaml, dict) else None
    elif json_spec is not None:
        spec, yaml_splits = json_spec, None
    else:
        raise UserError(f"{src}: no dataset.json; give the classes with --labels YAML")
    if json_spec is not None and json_spec["modality"] and not any("ct" in m.lower() for m in json_spec["modality"]):
        skip("-", f"{json_path}: modality is {', '.join(json_spec['modality'])}, not CT; "
                  "the HU window will not suit these images")
    pairs, notes = find_folder_pairs(src, json_spec.get("training") if json_spec else None)
    for note in notes:
        skip("-", note)

    if splits is not None:
        split_lists = {"train": list(splits.get("train") or []), "test": list(splits.get("test") or [])}
    elif splits_yaml is not None:
        split_lists = labels_mod.load_splits(splits_yaml)
    elif yaml_splits is not None:
        if not isinstance(yaml_splits, dict):
            raise UserError(f"{labels_yaml}: 'splits' must have train/test lists")
        split_lists = {"train": list(yaml_splits.get("train") or []), "test": list(yaml_splits.get("test") or [])}
    else:
        split_lists = None
    if split_lists is not None:
        split_of = {str(c): "train" for c in split_lists["train"]}
        split_of.update({str(c): "test" for c in split_lists["test"]})
    else:
        split_of = split_cases(list(pairs), test_fraction, seed)

    cases, early = assign_splits(
        pairs, split_of, no_label=lambda name, img: f"{img}: no label file in labelsTr/",
        no_split=lambda name, img: f"{img}: case {name} is in neither the train nor the test split")
    for name, reason in early.items():
        skip(name, reason)
    out_dir = Path(out) if _output_checked else ensure_output_dir(out, overwrite, inputs=[src])
    if not cases:
        raise UserError(f"{src}: no case with both an image and a label to prepare")
    # A folder that says it is synthetic (the phantom's raw/) stays marked synthetic.
    synthetic = synthetic or bool(json_spec and json_spec.get("synthetic"))
    info = base_info(spec, hu_window, {"kind": "folder", "src": str(src.resolve()),
                                       "labels": str(labels_yaml) if labels_yaml else str(json_path),
                                       "split": "given" if splits is not None else str(splits_yaml) if splits_yaml else
                                       ("labels YAML" if yaml_splits is not None else
                                        f"random test_fraction={test_fraction} seed={seed}"),
                                       **(source_extra or {})},
                     synthetic=synthetic)
    return prepare_cases(cases, out_dir, spec, info, hu_window, progress, skip, skipped_before=early)
