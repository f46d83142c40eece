"""Small file layer for evaluation and reports: read volumes, label names, pair cases, write atomically.

Volumes are read by ``transunet_app.data.io.read_image`` (NIfTI via nibabel, ``.nrrd`` /
``.mha`` / ``.mhd`` via SimpleITK with LPS converted to nibabel's RAS+ affine); this module adds
the label-map checks, names, pairing and atomic text output of evaluation and reports. Every
problem is a one-line :class:`~transunet_app.errors.UserError` naming the file.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import UserError
from .evaluate import SYNAPSE_LABELS

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
# Stems that only say which side of a pair a file is: "case01_pred" pairs with "case01_gt".
_ROLE_SUFFIXES = ("_pred", "_prediction", "_seg", "_segmentation", "_gt", "_label", "_labels",
                  "_ref", "_reference", "_mask")


@dataclass
class Volume:
    """A 3D array with its geometry.

    Attributes:
        array: (I, J, K) voxel values in the file's voxel order.
        affine: (4, 4) voxel index -> RAS+ world mm (+x towards the patient's right,
            +y anterior, +z superior; nibabel's convention).
        spacing: (3,) mm between voxel centres along each array axis.
        path: the file read.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    path: Path


def case_name(path: Path) -> str:
    """File name without its volume suffix: ``case0001.nii.gz`` -> ``case0001``."""
    name = Path(path).name
    for suf in VOLUME_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def _pair_key(name: str) -> str:
    """Case name without a role suffix (``case01_gt`` -> ``case01``), case preserved."""
    low = name.lower()
    for suf in _ROLE_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def load_volume(path, what: str = "volume") -> Volume:
    """Read a 3D volume with :func:`transunet_app.data.io.read_image` (the project's one reader).

    Args:
        path: NIfTI (``.nii``, ``.nii.gz``) or a SimpleITK format (``.nrrd``, ``.mha``, ``.mhd``).
        what: how the message names the file (``"prediction"``, ``"reference"``, ...).

    Raises:
        UserError: missing, of another file type, unreadable, or not one 3D volume; the message
            starts with ``what`` and the path.
    """
    from ..data.io import read_image

    p = Path(path)
    if not p.is_file():  # folders too: a DICOM series is not a label map
        raise UserError(f"{what} {p}: no such file")
    if not p.name.lower().endswith(VOLUME_SUFFIXES):
        raise UserError(f"{what} {p}: unsupported file type (use one of "
                        f"{', '.join(VOLUME_SUFFIXES)})")
    try:
        image = read_image(p)
    except UserError as exc:  # "<path>: <problem>" -> "<what> <path>: <problem>"
        raise UserError(f"{what} {exc}") from None
    return Volume(image.array, image.affine, image.spacing, p)


def load_label_map(path, what: str = "label map") -> Volume:
    """Read a label map and check that it holds non-negative whole numbers.

    Raises:
        UserError: as :func:`load_volume`, or non-integer / negative values.
    """
    vol = load_volume(path, what)
    arr = vol.array
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise UserError(f"{what} {vol.path}: holds non-integer values, not a label map")
        arr = arr.astype(np.int32)
    if arr.size and arr.min() < 0:
        raise UserError(f"{what} {vol.path}: holds negative values, not a label map")
    if arr.dtype != np.uint8 and arr.size and arr.max() <= 255:
        arr = arr.astype(np.uint8)
    vol.array = arr
    return vol


def sidecar_path(label_path) -> Path:
    """``case.nii.gz`` -> ``case.json`` in the same folder (written by ``segment``)."""
    p = Path(label_path)
    return p.with_name(case_name(p) + ".json")


def _parse_label_mapping(raw, source: str) -> dict[int, str]:
    # a bare mapping, or one under "labels" (sidecar) or "classes" (datasets/*/labels.yaml)
    for key in ("labels", "classes"):
        if isinstance(raw, dict) and isinstance(raw.get(key), (dict, list)):
            raw = raw[key]
            break
    if isinstance(raw, list):
        raw = dict(enumerate(raw))
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"labels {source}: expected a mapping of label id to organ name")
    out: dict[int, str] = {}
    for k, v in raw.items():
        try:
            lab = int(k)
        except (TypeError, ValueError):
            raise UserError(f"labels {source}: label id {k!r} is not a whole number") from None
        if lab < 0 or not isinstance(v, str) or not v.strip():
            raise UserError(f"labels {source}: bad entry {k!r}: {v!r}")
        out[lab] = v.strip()
    names = [n for lab, n in out.items() if lab != 0]
    if len(set(names)) != len(names):
        raise UserError(f"labels {source}: organ names must be unique")
    return out


def read_sidecar(label_path) -> dict | None:
    """The whole ``<stem>.json`` sidecar next to a label map, or ``None`` when there is none.

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


def read_sidecar_labels(label_path) -> dict[int, str] | None:
    """Label names from ``<stem>.json`` next to a label map, or ``None`` when there is none.

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


def read_labels_yaml(path) -> dict[int, str]:
    """Label names from a YAML file: ``{1: aorta, 2: gallbladder, ...}``, or the same mapping under
    ``labels:`` or ``classes:`` (the format of ``datasets/synapse/labels.yaml``)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"labels {p}: no such file")
    import yaml

    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"labels {p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return _parse_label_mapping(raw, str(p))


def resolve_labels(label_path, labels_yaml=None) -> tuple[dict[int, str], str]:
    """Organ names for a label map: sidecar JSON, else the YAML, else the Synapse 8 organs.

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
        labels, source = dict(SYNAPSE_LABELS), "default Synapse 8 organs"
    return {k: v for k, v in labels.items() if k != 0}, source


def list_volumes(folder: Path) -> list[Path]:
    """Volume files directly inside a folder, sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))


def pair_cases(pred, gt) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pair prediction and reference files by case name.

    Args:
        pred: a volume file or a folder of them.
        gt: the same kind (file with file, folder with folder).

    Returns:
        ``(pairs, unpaired)``: ``[(case, pred_path, gt_path)]`` sorted by case, and the names of
        files that found no partner. Names match exactly, or after dropping a role suffix such
        as ``_pred`` / ``_gt`` / ``_label``.

    Raises:
        UserError: a path is missing, a file is paired with a folder, or no pair is found.
    """
    pp, gp = Path(pred), Path(gt)
    for what, p in (("--pred", pp), ("--gt", gp)):
        if not p.exists():
            raise UserError(f"{what} {p}: no such file or folder")
    if pp.is_file() != gp.is_file():
        raise UserError(f"--pred {pp} and --gt {gp}: give two files or two folders, not one of each")
    if pp.is_file():
        return [(case_name(pp), pp, gp)], []
    preds, gts = list_volumes(pp), list_volumes(gp)
    if not preds:
        raise UserError(f"--pred {pp}: folder holds no volume files ({', '.join(VOLUME_SUFFIXES)})")
    if not gts:
        raise UserError(f"--gt {gp}: folder holds no volume files ({', '.join(VOLUME_SUFFIXES)})")
    gt_exact = {case_name(g): g for g in gts}
    gt_loose: dict[str, Path] = {}
    for g in gts:
        gt_loose.setdefault(_pair_key(case_name(g)).lower(), g)
    pairs, used = [], set()
    unpaired = []
    for p in preds:
        name = case_name(p)
        g = gt_exact.get(name) or gt_loose.get(_pair_key(name).lower())
        if g is None or g in used:
            unpaired.append(p.name)
            continue
        used.add(g)
        pairs.append((name if name in gt_exact else _pair_key(name), p, g))
    unpaired += [g.name for g in gts if g not in used]
    if not pairs:
        raise UserError(f"--pred {pp} and --gt {gp}: no case names match between the folders")
    return sorted(pairs), unpaired


def check_same_grid(pred: Volume, gt: Volume, atol_mm: float = 1e-3) -> str | None:
    """``None`` when both volumes share shape and affine, else a short description of the mismatch.

    The affine tolerance is per entry (mm): files re-saved in float32 differ by ~1e-5.
    """
    if pred.array.shape != gt.array.shape:
        return f"shape {pred.array.shape} vs reference {gt.array.shape}"
    diff = np.abs(pred.affine - gt.affine)
    scale = np.maximum(1.0, np.abs(gt.affine))
    if np.any(diff > atol_mm * scale):
        return (f"affine differs from the reference (largest difference "
                f"{float(diff.max()):.4g} mm)")
    return None


def resample_nearest(pred: Volume, gt: Volume) -> np.ndarray:
    """The prediction's labels sampled on the reference grid (nearest neighbour, 0 outside).

    Args:
        pred: label volume on any grid.
        gt: the grid to sample on.

    Returns:
        (I, J, K) array shaped like ``gt.array`` with ``pred``'s dtype.
    """
    from scipy.ndimage import affine_transform

    # gt voxel index -> world -> pred voxel index
    m = np.linalg.inv(pred.affine) @ gt.affine
    return affine_transform(pred.array, m[:3, :3], offset=m[:3, 3], output_shape=gt.array.shape,
                            order=0, mode="constant", cval=0, prefilter=False)


def atomic_write_text(path, text: str, overwrite: bool = False) -> Path:
    """Write text to ``path`` via a temp file in the same folder and ``os.replace``.

    Raises:
        UserError: the file exists and ``overwrite`` is false, or the folder is missing.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise UserError(f"{p}: already exists (pass --overwrite to replace it)")
    if not p.parent.is_dir():
        raise UserError(f"{p}: folder {p.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def labels_to_json(labels: Mapping[int, str]) -> dict[str, str]:
    """``{1: "aorta"}`` -> ``{"1": "aorta"}`` (JSON keys are strings)."""
    return {str(k): v for k, v in sorted(labels.items())}
