"""Class sets, label maps and case splits, read from YAML files a user can edit; label names of
a label map (its ``segment`` sidecar, a YAML, or the Synapse default); the organs' SNOMED CT
codes (``snomed.yaml``: organ name -> ``category`` / ``type``, each ``{code, scheme, meaning}``).

The files live in ``datasets/<name>/`` at the project root (``datasets/synapse/labels.yaml``
and ``splits.yaml``): organ names come from there and nowhere else. Everything here returns
plain dicts and lists so the values can go straight into ``dataset.yaml`` files and
checkpoints.

Label spec (``labels.yaml``)::

    classes:        {0: background, 1: aorta, ...}   # model class id -> name, ids 0..N-1
    source_labels:  {0: background, 1: spleen, ...}  # optional: raw label id -> name
    label_map:      {8: 1, 4: 2, ...}                # optional: raw id -> class id, rest -> 0

Without ``label_map`` the raw label ids are taken as class ids (identity map).
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import UserError
from .files import sidecar_path

#: Where the project's dataset descriptions live: ``<repo>/datasets``, reached as
#: ``transunet_app/datasets`` (a symlink in the source tree, the copied folder in a wheel: see
#: pyproject's package-data). The environment variable ``TRANSUNET_DATASETS`` points elsewhere.
DATASETS_DIR = Path(os.environ.get("TRANSUNET_DATASETS", Path(__file__).resolve().parents[1] / "datasets"))


def synapse_labels_path() -> Path:
    """Path of the default Synapse label spec (``datasets/synapse/labels.yaml``)."""
    return DATASETS_DIR / "synapse" / "labels.yaml"


def synapse_splits_path() -> Path:
    """Path of the official Synapse split (``datasets/synapse/splits.yaml``)."""
    return DATASETS_DIR / "synapse" / "splits.yaml"


def synapse_8class_labels_path() -> Path:
    """Path of the spec of label maps already in Synapse class ids (``labels_8class.yaml``)."""
    return DATASETS_DIR / "synapse" / "labels_8class.yaml"


def _shipped(path: Path) -> Path:
    """A default file of ``datasets/``; missing only in a broken install (a checkout without
    symlinks), which ``TRANSUNET_DATASETS`` fixes."""
    if not path.is_file():
        raise UserError(f"{path}: default dataset description not found (set TRANSUNET_DATASETS "
                        f"to the project's datasets/ folder)")
    return path


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
        path = _shipped(synapse_labels_path())
    return validate_label_spec(read_yaml(path), str(path))


def load_splits(path: str | os.PathLike | None = None) -> dict[str, list]:
    """Read a split YAML (default: the official Synapse 18/12 split).

    Returns:
        ``{"train": [...], "test": [...]}``; entries are integers (Synapse case numbers) or
        strings (case names), exactly as written. A case in both lists is an error.
    """
    if path is None:
        path = _shipped(synapse_splits_path())
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


# --------------------------------------------------------------------------- names of a label map


def _parse_label_mapping(raw: Any, source: str) -> dict[int, str]:
    # a bare mapping, or one under "labels" (sidecar) or "classes" (datasets/*/labels.yaml)
    for key in ("labels", "classes"):
        if isinstance(raw, dict) and isinstance(raw.get(key), (dict, list)):
            raw = raw[key]
            break
    if not isinstance(raw, (dict, list)) or not raw:
        raise UserError(f"labels {source}: expected a mapping of label id to organ name")
    out: dict[int, str] = {}
    for lab, v in _int_key_dict(raw, "labels", f"labels {source}").items():
        if not isinstance(v, str) or not v.strip():
            raise UserError(f"labels {source}: bad entry {lab}: {v!r}")
        out[lab] = v.strip()
    names = [n for lab, n in out.items() if lab != 0]
    if len(set(names)) != len(names):
        raise UserError(f"labels {source}: organ names must be unique")
    return out


def read_sidecar(label_path: str | os.PathLike) -> dict | None:
    """The whole ``<case>.json`` sidecar next to a label map, or ``None`` when there is none.

    Raises:
        UserError: the sidecar exists but is not a valid JSON object.
    """
    sc = sidecar_path(label_path)
    if not sc.is_file():
        return None
    try:
        raw = json.loads(sc.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"labels sidecar {sc}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"labels sidecar {sc}: expected a JSON object")
    return raw


def read_sidecar_labels(label_path: str | os.PathLike) -> dict[int, str] | None:
    """Label names from ``<case>.json`` next to a label map, or ``None`` when there is none.

    The sidecar (written by ``segment``) looks like
    ``{"labels": {"0": "background", "1": "aorta", ...}, ...}``.

    Raises:
        UserError: the sidecar exists but is not valid JSON or has no usable ``labels``.
    """
    raw = read_sidecar(label_path)
    if raw is None:
        return None
    sc = sidecar_path(label_path)
    if "labels" not in raw:
        raise UserError(f"labels sidecar {sc}: has no \"labels\" mapping")
    return _parse_label_mapping(raw["labels"], str(sc))


def read_labels_yaml(path: str | os.PathLike) -> dict[int, str]:
    """Label names from a YAML file: ``{1: aorta, 2: gallbladder, ...}``, or the same mapping
    under ``labels:`` or ``classes:`` (the format of ``datasets/synapse/labels.yaml``).

    Raises:
        UserError: missing file, invalid YAML, or not a mapping of unique names.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"labels {p}: no such file")
    try:
        raw = read_yaml(p)
    except UserError as exc:
        raise UserError(f"labels {exc}") from None
    return _parse_label_mapping(raw, str(p))


def resolve_labels(label_path: str | os.PathLike,
                   labels_yaml: str | os.PathLike | None = None) -> tuple[dict[int, str], str]:
    """Organ names for a label map: its sidecar JSON, else ``labels_yaml``, else the classes of
    ``datasets/synapse/labels.yaml``.

    Returns:
        ``(labels, source)`` with background (0) removed and ``source`` saying where they came
        from.
    """
    side = read_sidecar_labels(label_path)
    if side is not None:
        labels, source = side, str(sidecar_path(label_path))
    elif labels_yaml is not None:
        labels, source = read_labels_yaml(labels_yaml), str(labels_yaml)
    else:
        labels, source = synapse_organs(), str(synapse_labels_path())
    return {k: v for k, v in labels.items() if k != 0}, source


def synapse_organs() -> dict[int, str]:
    """The Synapse organs by class id, background left out: ``{1: "aorta", ..., 8: "stomach"}``
    (from ``datasets/synapse/labels.yaml``)."""
    return {i: name for i, name in enumerate(load_label_spec()["classes"]) if i != 0}


def labels_to_json(labels: Mapping[int, str]) -> dict[str, str]:
    """``{1: "aorta"}`` -> ``{"1": "aorta"}`` (JSON keys are strings)."""
    return {str(k): v for k, v in sorted(labels.items())}


def snomed_path() -> Path:
    """``datasets/synapse/snomed.yaml`` (found like ``labels.yaml``: ``TRANSUNET_DATASETS``)."""
    return DATASETS_DIR / "synapse" / "snomed.yaml"


@functools.lru_cache(maxsize=4)
def read_snomed(path: str | None = None) -> dict[str, dict]:
    """Organ name (lower case) -> ``{"category": {...}, "type": {...}}``; ``{}`` when the file is
    not shipped (then every organ gets the generic anatomical-structure code)."""
    p = Path(path) if path is not None else snomed_path()
    if not p.is_file():
        return {}
    raw = read_yaml(p)
    if not isinstance(raw, dict):
        raise UserError(f"{p}: expected a mapping of organ names")
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), dict) and {"code", "scheme", "meaning"} <= set(entry[k])
                for k in ("category", "type")):
            raise UserError(f"{p}: organ {name!r} needs category and type, each with code, scheme, meaning")
        out[str(name).strip().lower()] = {k: {f: str(entry[k][f]) for f in ("code", "scheme", "meaning")}
                                          for k in ("category", "type")}
    return out
