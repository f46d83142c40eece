"""The official TransUNet preprocessed layout and its writer.

::

    OUT/
      train_npz/caseXXXX_sliceNNN.npz   image float32 (H, W) in [0, 1], label uint8 (H, W)
      test_vol_h5/caseXXXX.npy.h5       image float32 (D, H, W), label uint8 (D, H, W)
      lists_Synapse/train.txt           one slice name per line (caseXXXX_sliceNNN)
      lists_Synapse/test_vol.txt        one case name per line (caseXXXX)
      dataset.yaml                      classes, HU window, normalization, orientation,
                                        spacing and source of every case (this project only)

Arrays are in the canonical slice frame of :mod:`transunet_app.data.geometry`. The h5 files
also carry attributes ``spacing`` (mm for D, H, W), ``affine`` (canonical voxel -> RAS mm),
``orientation`` and ``source_orientation``; the official loader ignores them. Every file is
written with :func:`~transunet_app.data.files.atomic_write`; the lists and ``dataset.yaml``
come last, and :data:`INCOMPLETE_MARKER` marks a folder whose preparation has not finished.

:mod:`.synapse`, :mod:`.folders` and :mod:`.phantom` prepare data into this layout;
:mod:`.datasets` reads it.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import UserError
from . import geometry
from .files import atomic_write, atomic_write_text

TRAIN_DIR = "train_npz"
TEST_DIR = "test_vol_h5"
LISTS_DIR = "lists_Synapse"
TRAIN_LIST = "train.txt"
TEST_LIST = "test_vol.txt"
DATASET_YAML = "dataset.yaml"
#: Present while a preparation runs; readers refuse a folder that still has it.
INCOMPLETE_MARKER = ".prepare_incomplete"
LAYOUT_FORMAT = "transunet-synapse-layout/1"


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

    Nothing is replaced: :func:`ensure_output_dir` removed a previous preparation's files, so a
    file that exists already (a case name written twice) is an error.

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
        atomic_write_text(lists / TRAIN_LIST, "".join(f"{s}\n" for s in self.train_slices))
        atomic_write_text(lists / TEST_LIST, "".join(f"{c}\n" for c in self.test_cases))
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

    atomic_write(path, write)


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

    atomic_write(path, write)


def write_dataset_yaml(out_dir: Path, record: dict) -> Path:
    import yaml

    text = ("# Written by `transunet prepare`. Describes the prepared data in this folder:\n"
            "# classes, intensity normalisation, slice orientation and per-case geometry.\n")
    text += yaml.safe_dump(record, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
    return atomic_write_text(Path(out_dir) / DATASET_YAML, text)


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
