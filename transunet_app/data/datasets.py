"""Torch datasets over the prepared (official TransUNet) Synapse layout.

Works on folders written by ``transunet prepare`` (with ``dataset.yaml``) and on the official
preprocessed download as-is (``train_npz/``, ``test_vol_h5/``; lists from ``lists_Synapse/``
if present, else built from the files found). No augmentation happens here: pass a
``transform`` (see ``transunet_app.data.transforms``) to apply one to each sample dict.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from . import labels as labels_mod
from .intensity import HU_WINDOW
from .layout import DATASET_YAML, INCOMPLETE_MARKER, LISTS_DIR, TEST_DIR, TEST_LIST, TRAIN_DIR, TRAIN_LIST

_SLICE_RE = re.compile(r"^(?P<case>.+)_slice(?P<slice>\d+)$")


def read_dataset_info(root: str | os.PathLike) -> dict:
    """Describe a prepared dataset folder.

    Args:
        root: folder with ``train_npz/`` and/or ``test_vol_h5/``.

    Returns:
        The parsed ``dataset.yaml`` when present. For the official preprocessed download
        (no dataset.yaml) the documented TransUNet defaults: Synapse classes, HU window
        [-125, 275] scaled to [0, 1], orientation "SPL", ``spacing_known: False`` and
        ``cases: {}``. Always has the keys ``classes``, ``hu_window``, ``normalisation``,
        ``orientation``, ``synthetic``, ``cases``, ``source``.

    Raises:
        UserError: not a prepared dataset, an interrupted preparation, or a bad dataset.yaml.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    if (root / INCOMPLETE_MARKER).exists():
        raise UserError(f"{root}: preparation was interrupted; run `transunet prepare` again with --overwrite")
    path = root / DATASET_YAML
    if path.exists():
        info = labels_mod.read_yaml(path)
        if not isinstance(info, dict) or "classes" not in info:
            raise UserError(f"{path}: not a dataset description (no 'classes')")
        info.setdefault("hu_window", list(HU_WINDOW))
        info.setdefault("orientation", "SPL")
        info.setdefault("synthetic", False)
        info.setdefault("cases", {})
        info.setdefault("source", {})
        info.setdefault("spacing_known", True)
        return info
    if not (root / TRAIN_DIR).is_dir() and not (root / TEST_DIR).is_dir():
        raise UserError(f"{root}: not a prepared dataset (no {DATASET_YAML}, {TRAIN_DIR}/ or {TEST_DIR}/)")
    spec = labels_mod.load_label_spec()
    return {
        "format": "official-transunet-preprocessed",
        "name": "synapse",
        "synthetic": False,
        "classes": list(spec["classes"]),
        "label_map": None,
        "hu_window": list(HU_WINDOW),
        "normalisation": {"method": "clip_scale", "hu_window": list(HU_WINDOW), "output_range": [0.0, 1.0]},
        "orientation": "SPL",
        "source": {"kind": "official TransUNet preprocessed download (assumed: no dataset.yaml)"},
        "spacing_known": False,
        "cases": {},
    }


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read list ({exc})") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _resolve_list(root: Path, split: str, list_file: str | os.PathLike | None, folder: str, suffix: str) -> list[str]:
    if list_file is not None:
        return _read_list(Path(list_file))
    for candidate in (root / LISTS_DIR / f"{split}.txt", root / f"{split}.txt"):
        if candidate.exists():
            return _read_list(candidate)
    data_dir = root / folder
    default_split = TRAIN_LIST[:-4] if folder == TRAIN_DIR else TEST_LIST[:-4]
    if split == default_split and data_dir.is_dir():
        # The official download ships without lists: every file of the folder.
        return sorted(p.name[: -len(suffix)] for p in data_dir.iterdir() if p.name.endswith(suffix))
    raise UserError(f"{root}: no list for split '{split}' ({LISTS_DIR}/{split}.txt) and no {folder}/ to list")


class SynapseSlices(Dataset):
    """2D training slices ``train_npz/<name>.npz`` listed in ``lists_Synapse/<split>.txt``.

    Args:
        root: prepared dataset folder.
        split: list name (``train`` -> ``lists_Synapse/train.txt``).
        list_file: explicit list file instead (one slice name per line, ``.npz`` optional).
        transform: optional callable applied to each sample dict (augmentation).

    Each item is a dict: ``image`` float32 tensor (H, W) in [0, 1], ``label`` int64 tensor
    (H, W) of class ids, ``case`` (str, e.g. "case0005"), ``slice`` (int index along D) and
    ``name`` (the list entry). Official npz files storing float labels are rounded.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", list_file: str | os.PathLike | None = None,
                 transform: Callable[[dict], dict] | None = None):
        self.root = Path(root)
        self.info = read_dataset_info(self.root)
        entries = _resolve_list(self.root, split, list_file, TRAIN_DIR, ".npz")
        self.names = [e[:-4] if e.endswith(".npz") else e for e in entries]
        self.paths = [self.root / TRAIN_DIR / f"{n}.npz" for n in self.names]
        missing = [p for p in self.paths if not p.exists()]
        if missing:
            raise UserError(f"{missing[0]}: listed in split '{split}' but missing ({len(missing)} missing in all)")
        if not self.paths:
            raise UserError(f"{self.root}: split '{split}' lists no slices")
        self.transform = transform
        parsed = [_SLICE_RE.match(n) for n in self.names]
        self.cases = [m.group("case") if m else n for m, n in zip(parsed, self.names)]
        self.slice_index = [int(m.group("slice")) if m else 0 for m in parsed]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            with np.load(path, allow_pickle=False) as data:
                image, label = data["image"], data["label"]
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise UserError(f"{path}: unreadable training slice ({exc})") from None
        if image.ndim != 2 or image.shape != label.shape:
            raise UserError(f"{path}: expected 2D image and label of equal shape, got {image.shape} and {label.shape}")
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(_as_class_ids(label)),
            "case": self.cases[index],
            "slice": self.slice_index[index],
            "name": self.names[index],
        }
        return self.transform(sample) if self.transform is not None else sample


class SynapseVolumes(Dataset):
    """3D test volumes ``test_vol_h5/<case>.npy.h5`` listed in ``lists_Synapse/<split>.txt``.

    Args:
        root: prepared dataset folder.
        split: list name (``test_vol`` -> ``lists_Synapse/test_vol.txt``).
        list_file: explicit list file instead (one case name per line).

    Each item is a dict: ``image`` float32 tensor (D, H, W) in [0, 1], ``label`` int64
    tensor (D, H, W), ``case`` (str), ``spacing`` float64 tensor (3,) in mm for (D, H, W),
    and ``spacing_known`` (bool; False for the official download, where (1, 1, 1) is used
    as the official evaluation does).
    """

    def __init__(self, root: str | os.PathLike, split: str = "test_vol", list_file: str | os.PathLike | None = None):
        self.root = Path(root)
        self.info = read_dataset_info(self.root)
        entries = _resolve_list(self.root, split, list_file, TEST_DIR, ".npy.h5")
        self.cases = [e[: -len(".npy.h5")] if e.endswith(".npy.h5") else e for e in entries]
        self.paths = [self.root / TEST_DIR / f"{c}.npy.h5" for c in self.cases]
        missing = [p for p in self.paths if not p.exists()]
        if missing:
            raise UserError(f"{missing[0]}: listed in split '{split}' but missing ({len(missing)} missing in all)")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import h5py

        path = self.paths[index]
        try:
            with h5py.File(path, "r") as f:
                image = f["image"][:]
                label = f["label"][:]
                spacing = f.attrs.get("spacing")
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(f"{path}: unreadable test volume ({exc})") from None
        if image.ndim != 3 or image.shape != label.shape:
            raise UserError(f"{path}: expected 3D image and label of equal shape, got {image.shape} and {label.shape}")
        case = self.cases[index]
        known = spacing is not None
        if not known:
            recorded = (self.info.get("cases") or {}).get(case, {}).get("spacing")
            known = recorded is not None
            spacing = recorded if known else (1.0, 1.0, 1.0)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(_as_class_ids(label)),
            "case": case,
            "spacing": torch.tensor([float(s) for s in spacing], dtype=torch.float64),
            "spacing_known": bool(known),
        }


def _as_class_ids(label: np.ndarray) -> np.ndarray:
    if label.dtype.kind == "f":
        label = np.rint(label)
    return np.ascontiguousarray(label, dtype=np.int64)
