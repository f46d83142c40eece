"""What a run writes besides checkpoints: ``log.jsonl`` lines and TensorBoard events.

Only rank 0 creates a :class:`RunLog`; other ranks get :class:`NullLog`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

# Distinct colours for class ids 1..K (background transparent); cycles beyond 10 classes.
_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190]],
                    dtype=np.float32)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W) image in [0, 1] + (H, W) class ids -> (3, H, W) uint8 with coloured classes."""
    gray = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)[None].repeat(3, 0) * 255.0
    lab = np.asarray(labels)
    out = gray.copy()
    fg = lab > 0
    if fg.any():
        colours = _PALETTE[(lab[fg] - 1) % len(_PALETTE)].T  # (3, N)
        out[:, fg] = (1 - alpha) * gray[:, fg] + alpha * colours
    return out.astype(np.uint8)


def panel(image, label, pred) -> np.ndarray:
    """(3, H, 3W) uint8: image | reference labels | prediction."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = float(image.min()), float(image.max())
    norm = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    gray = overlay(norm, np.zeros_like(np.asarray(label)))
    return np.concatenate([gray, overlay(norm, label), overlay(norm, pred)], axis=2)


class NullLog:
    """Does nothing (ranks other than 0)."""

    def scalars(self, step: int, values: dict, prefix: str = "") -> None: ...

    def image(self, tag: str, step: int, image: np.ndarray) -> None: ...

    def line(self, record: dict) -> None: ...

    def close(self) -> None: ...


class RunLog(NullLog):
    """``log.jsonl`` (one JSON object per line, appended; a resumed run adds a ``resume`` line)
    and TensorBoard events under ``tensorboard/``.

    Args:
        out_dir: run folder.
        tensorboard: write TensorBoard events.
        purge_step: on resume, TensorBoard drops events at or after this step (they are
            recomputed).
    """

    def __init__(self, out_dir: str | os.PathLike, tensorboard: bool = True, purge_step: int | None = None):
        self.out_dir = Path(out_dir)
        self._jsonl = open(self.out_dir / "log.jsonl", "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=purge_step)

    def line(self, record: dict) -> None:
        self._jsonl.write(json.dumps(record, allow_nan=True) + "\n")
        self._jsonl.flush()

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        if self._tb is None:
            return
        for key, value in values.items():
            value = float(value.item() if isinstance(value, torch.Tensor) else value)
            if not math.isnan(value):
                self._tb.add_scalar(f"{prefix}{key}", value, step)

    def image(self, tag: str, step: int, image: np.ndarray) -> None:
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="CHW")

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
