"""Class sets, label maps and case splits, read from YAML files a user can edit.

The files live in ``datasets/<name>/`` at the project root (``datasets/synapse/labels.yaml``
and ``splits.yaml``). Everything here returns plain dicts and lists so the values can go
straight into ``dataset.yaml`` files and checkpoints.

Label spec (``labels.yaml``)::

    classes:        {0: background, 1: aorta, ...}   # model class id -> name, ids 0..N-1
    source_labels:  {0: background, 1: spleen, ...}  # optional: raw label id -> name
    label_map:      {8: 1, 4: 2, ...}                # optional: raw id -> class id, rest -> 0

Without ``label_map`` the raw label ids are taken as class ids (identity map).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

#: Where the project's dataset descriptions live (``<repo>/datasets``). The environment
#: variable ``TRANSUNET_DATASETS`` points elsewhere, e.g. for an installed wheel.
DATASETS_DIR = Path(os.environ.get("TRANSUNET_DATASETS", Path(__file__).resolve().parents[2] / "datasets"))

#: Fallback used only when ``datasets/synapse/labels.yaml`` is not shipped (wheel installs);
#: ``tests/data/test_labels.py`` checks that it equals the YAML file.
SYNAPSE_CLASSES_FALLBACK = (
    "background", "aorta", "gallbladder", "left kidney", "right kidney",
    "liver", "pancreas", "spleen", "stomach",
)
SYNAPSE_LABEL_MAP_FALLBACK = {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
SYNAPSE_SPLITS_FALLBACK = {
    "train": [5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40],
    "test": [1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38],
}


def synapse_labels_path() -> Path:
    """Path of the default Synapse label spec (``datasets/synapse/labels.yaml``)."""
    return DATASETS_DIR / "synapse" / "labels.yaml"


def synapse_splits_path() -> Path:
    """Path of the official Synapse split (``datasets/synapse/splits.yaml``)."""
    return DATASETS_DIR / "synapse" / "splits.yaml"


def read_yaml(path: str | os.PathLike) -> Any:
    """Load a YAML file; any problem is a one-line :class:`UserError` naming the file."""
    import yaml

    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not valid YAML ({first})") from None


def _int_key_dict(value: Any, what: str, where: str) -> dict[int, Any]:
    if isinstance(value, list):  # a list is read as ids 0, 1, 2, ...
        value = dict(enumerate(value))
    if not isinstance(value, dict):
        raise UserError(f"{where}: '{what}' must be a mapping of integer ids")
    out: dict[int, Any] = {}
    for key, item in value.items():
        try:
            ikey = int(key)
        except (TypeError, ValueError):
            raise UserError(f"{where}: '{what}' has a non-integer id {key!r}") from None
        if ikey < 0:
            raise UserError(f"{where}: '{what}' has a negative id {ikey}")
        out[ikey] = item
    return out


def validate_label_spec(raw: Any, where: str = "label spec") -> dict:
    """Check a label spec (as loaded from YAML) and return it normalised.

    Args:
        raw: the parsed YAML (a dict with ``classes`` and optionally ``label_map``,
            ``source_labels``, ``name``).
        where: file name used in error messages.

    Returns:
        ``{"name": str, "classes": [name_0, ...], "label_map": {raw_id: class_id} | None,
        "source_labels": {raw_id: name}}`` with integer keys. ``classes`` is a list indexed
        by class id; ``label_map`` is ``None`` for the identity map.

    Raises:
        UserError: ids with gaps, a background that is not id 0, a map onto unknown classes.
    """
    if not isinstance(raw, dict) or "classes" not in raw:
        raise UserError(f"{where}: expected a mapping with a 'classes' entry")
    classes = _int_key_dict(raw["classes"], "classes", where)
    ids = sorted(classes)
    if ids != list(range(len(ids))) or len(ids) < 2:
        raise UserError(f"{where}: class ids must be 0, 1, 2, ... without gaps (found {ids})")
    names = [str(classes[i]) for i in ids]
    if len(set(names)) != len(names):
        raise UserError(f"{where}: class names must be unique (found {names})")
    label_map = None
    if raw.get("label_map") is not None:
        label_map = {}
        for src, dst in _int_key_dict(raw["label_map"], "label_map", where).items():
            if not isinstance(dst, int) or not 0 <= dst < len(names):
                raise UserError(f"{where}: label_map sends {src} to {dst!r}, not a class id 0..{len(names) - 1}")
            label_map[src] = dst
    source = {k: str(v) for k, v in _int_key_dict(raw.get("source_labels") or {}, "source_labels", where).items()}
    return {"name": str(raw.get("name", "")), "classes": names, "label_map": label_map, "source_labels": source}


def load_label_spec(path: str | os.PathLike | None = None) -> dict:
    """Read a label spec YAML (default: the Synapse one). See :func:`validate_label_spec`."""
    if path is None:
        path = synapse_labels_path()
        if not path.exists():
            return {"name": "synapse", "classes": list(SYNAPSE_CLASSES_FALLBACK),
                    "label_map": dict(SYNAPSE_LABEL_MAP_FALLBACK), "source_labels": {}}
    return validate_label_spec(read_yaml(path), str(path))


def load_splits(path: str | os.PathLike | None = None) -> dict[str, list]:
    """Read a split YAML (default: the official Synapse 18/12 split).

    Returns:
        ``{"train": [...], "test": [...]}``; entries are integers (Synapse case numbers) or
        strings (case names), exactly as written. A case in both lists is an error.
    """
    if path is None:
        path = synapse_splits_path()
        if not path.exists():
            return {k: list(v) for k, v in SYNAPSE_SPLITS_FALLBACK.items()}
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), list) or not isinstance(raw.get("test", []), list):
        raise UserError(f"{path}: expected 'train:' and 'test:' lists of cases")
    splits = {"train": list(raw["train"]), "test": list(raw.get("test") or [])}
    both = set(map(str, splits["train"])) & set(map(str, splits["test"]))
    if both:
        raise UserError(f"{path}: cases in both train and test: {sorted(both)}")
    return splits


def lookup_table(label_map: dict[int, int] | None, max_label: int) -> np.ndarray:
    """Lookup table ``lut[raw_id] = class_id`` for raw ids ``0..max_label`` (uint8)."""
    lut = np.zeros(max_label + 1, dtype=np.uint8)
    if label_map is None:
        lut[:] = np.arange(max_label + 1, dtype=np.int64).clip(0, 255)
    else:
        for src, dst in label_map.items():
            if src <= max_label:
                lut[src] = dst
    return lut


def map_labels(labels: np.ndarray, label_map: dict[int, int] | None, n_classes: int,
               where: str = "labels") -> np.ndarray:
    """Map raw label ids to class ids.

    Args:
        labels: raw label volume, any shape, integer-valued (float storage is accepted).
        label_map: raw id -> class id; ids not listed become 0. ``None`` keeps ids as they
            are, in which case every id must be below ``n_classes``.
        n_classes: number of classes including background.
        where: file name for error messages.

    Returns:
        uint8 array of the same shape with values in ``[0, n_classes)``.

    Raises:
        UserError: negative or non-integer values, or (identity map) ids ``>= n_classes``.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise UserError(f"{where}: label values are not whole numbers (is this an image, not a label map?)")
        arr = rounded.astype(np.int64)
    elif arr.dtype.kind not in "iub":
        raise UserError(f"{where}: label map has unsupported data type {arr.dtype}")
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise UserError(f"{where}: negative label value {lo}")
    if label_map is None and hi >= n_classes:
        raise UserError(f"{where}: label value {hi} but only {n_classes} classes (0..{n_classes - 1}) are defined")
    if hi > 65535:
        raise UserError(f"{where}: label value {hi} is too large for a label map")
    return lookup_table(label_map, hi)[arr]
