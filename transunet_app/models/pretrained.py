"""Read a checkpoint safely, recognise its format, convert it to our names, load, report.

Weight handling is pure functions plus this one loader:

* :func:`read_weights` opens ``.npz`` (``allow_pickle=False``) or torch files
  (``weights_only=True``; a file that carries pickled code is refused, never executed) and
  unwraps ``{'model': ...}``, ``{'state_dict': ...}`` and ``module.`` prefixes;
* a :class:`WeightFormat` recognises a source by telltale keys and converts its tensors with a
  pure ``convert(state, target) -> (converted, skipped)`` function into our key names, either
  for the whole model (``scope="model"``) or for the encoder (``scope="encoder"``);
* :func:`load_pretrained` checks family, names and shapes, copies, and returns a
  :class:`LoadReport` of what was loaded, skipped (e.g. classifier heads) and kept at init.

Families register their official formats with :func:`register_weight_format` in their own
file (one family per file).
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from .layers import resample_abs_pos_embed

log = logging.getLogger(__name__)

OWN_FORMAT = "transunet_app/1"


@dataclass(frozen=True)
class WeightFormat:
    """A checkpoint format: ``detect(keys) -> bool`` and a pure ``convert`` to our names."""

    name: str
    family: str  # encoder weight family it fits ("vit", "cvt", ...); "*" = any
    scope: str  # "model" (whole segmentation model) or "encoder"
    detect: Callable[[set], bool]
    #: ``convert(state, target) -> (converted, skipped[, resized])``: converted tensors in our
    #: names (relative to the target), skipped source keys -> reason, and optionally the keys
    #: the converter resized itself -> (old shape, new shape).
    convert: Callable[[Mapping[str, object], nn.Module], tuple]


_FORMATS: list[WeightFormat] = []


def register_weight_format(fmt: WeightFormat) -> WeightFormat:
    if any(f.name == fmt.name for f in _FORMATS):
        raise ValueError(f"weight format {fmt.name!r} is already registered")
    _FORMATS.append(fmt)
    return fmt


@dataclass
class LoadReport:
    path: str
    format: str
    loaded: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)  # source key -> reason
    missing: list = field(default_factory=list)  # target keys kept at their initial values
    resized: dict = field(default_factory=dict)  # key -> (old shape, new shape)

    def summary(self) -> str:
        parts = [f"{os.path.basename(self.path)}: {self.format}, loaded {len(self.loaded)} tensors"]
        if self.resized:
            parts.append("resized " + ", ".join(f"{k} {a}->{b}" for k, (a, b) in self.resized.items()))
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} ({', '.join(sorted(self.skipped)[:6])}"
                         f"{', ...' if len(self.skipped) > 6 else ''})")
        if self.missing:
            parts.append(f"kept at init {len(self.missing)} ({_prefixes(self.missing)})")
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.summary()


def _prefixes(keys, depth: int = 2) -> str:
    seen = []
    for k in keys:
        p = ".".join(k.split(".")[:depth])
        if p not in seen:
            seen.append(p)
    return ", ".join(seen[:8]) + (", ..." if len(seen) > 8 else "")


# ------------------------------------------------------------------------------ reading


def read_weights(path) -> dict:
    """Read a weight file into a flat ``{name: array or tensor}`` dict (plus metadata for our
    own checkpoints, kept under their top-level keys).

    Raises:
        CheckpointError: missing, unreadable, corrupt, or carrying pickled code.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    if path.endswith(".npz"):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: not a readable .npz file (not a zip archive; "
                                  f"truncated download?)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except ValueError as exc:
            raise CheckpointError(f"{path}: .npz holds pickled objects; refusing to load "
                                  f"({exc})") from None
        except Exception as exc:  # noqa: BLE001 - zip/zlib/format errors of a corrupt file
            raise CheckpointError(f"{path}: not a readable .npz file ({exc})") from None
    return unwrap_state(torch_load_safe(path))


def torch_load_safe(path):
    """``torch.load`` with ``weights_only=True``; only ``argparse.Namespace`` (stored by
    DeiT-style releases under ``'args'``) is allowed beyond tensors and plain containers."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise CheckpointError(
            f"{path}: refusing to load: the file carries pickled Python objects that could run "
            f"code{(' (' + detail.strip() + ')') if detail else ''}") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a corrupt file is the file's fault
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({msg})") from None


def unwrap_state(obj) -> dict:
    """Find the state dict inside common wrappers and strip ``module.`` (DataParallel/DDP)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    if obj.get("format") == OWN_FORMAT:
        return dict(obj)
    for key in ("state_dict", "model", "model_state", "state_dict_ema", "model_ema"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            if any(torch.is_tensor(v) for v in inner.values()):
                obj = inner
                break
    state = {k: v for k, v in obj.items() if torch.is_tensor(v) or isinstance(v, np.ndarray)}
    if not state:
        raise CheckpointError("checkpoint contains no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def detect_format(state: Mapping) -> WeightFormat:
    _ensure_families()
    keys = set(state)
    for fmt in _FORMATS:
        if fmt.detect(keys):
            return fmt
    sample = ", ".join(sorted(keys)[:5])
    raise CheckpointError(f"unrecognised checkpoint format (first keys: {sample})")


def _ensure_families() -> None:
    from .registry import _import_families

    _import_families()


# ------------------------------------------------------------------------------ loading


def load_pretrained(model: nn.Module, path, strict: bool = True) -> LoadReport:
    """Load a checkpoint of any registered format into a model or an encoder.

    Args:
        model: a :class:`TransUNet` (or any model with ``.encoder``) or a bare encoder.
        path: ``.npz`` (Google ViT / R50+ViT), an official ``.pth``, or our checkpoint.
        strict: every tensor the format provides for its scope must exist in the target;
            for encoder-scope (ImageNet) weights every encoder tensor must be provided.

    Raises:
        CheckpointError: unreadable or unsafe file, wrong family, missing tensors, or
        shapes that do not fit (e.g. a different number of classes).
    """
    path = os.fspath(path)
    state = read_weights(path)
    try:
        fmt = detect_format(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    encoder = model.encoder if hasattr(model, "encoder") else model
    family = getattr(encoder, "weight_family", "")
    name = getattr(model, "model_name", type(model).__name__)
    if fmt.family not in ("*", family):
        raise CheckpointError(f"{path}: this is a {fmt.name} checkpoint ({fmt.family} family) "
                              f"but {name} takes {family or 'other'} weights")
    if fmt.scope == "model" and encoder is model:
        raise CheckpointError(f"{path}: {fmt.name} holds a whole segmentation model; load it "
                              f"into a model, not a bare encoder")
    target = encoder if fmt.scope == "encoder" else model
    prefix = "encoder." if (fmt.scope == "encoder" and target is not model) else ""
    try:
        converted, skipped, *extra = fmt.convert(state, target)
    except KeyError as exc:
        raise CheckpointError(f"{path}: {fmt.name} checkpoint lacks tensor {exc}") from None
    report = LoadReport(path, fmt.name, skipped=dict(skipped),
                        resized={prefix + k: v for k, v in (extra[0] if extra else {}).items()})
    own = target.state_dict()
    unexpected = [k for k in converted if k not in own]
    if unexpected and strict:
        raise CheckpointError(f"{path}: {len(unexpected)} tensors of this {fmt.name} file have "
                              f"no place in {name} (e.g. {unexpected[0]}): wrong variant?")
    for k in unexpected:
        report.skipped[k] = "no such tensor in the model"
    mismatched = []
    with torch.no_grad():
        for key, value in converted.items():
            if key not in own:
                continue
            value = torch.as_tensor(value)
            if key.endswith("pos_embed") and value.shape != own[key].shape:
                value = _fit_pos_embed(value, own[key], encoder)
                report.resized[prefix + key] = (tuple(converted[key].shape), tuple(value.shape))
            if value.shape != own[key].shape:
                mismatched.append(f"{prefix}{key}: file {tuple(value.shape)} vs model "
                                  f"{tuple(own[key].shape)}")
                continue
            own[key].copy_(value.to(own[key].dtype))
            report.loaded.append(prefix + key)
    if mismatched:
        hint = ""
        if any("segmentation_head" in m for m in mismatched):
            hint = " (different number of classes?)"
        raise CheckpointError(f"{path}: shapes do not fit {name}{hint}: {mismatched[0]}"
                              + (f" and {len(mismatched) - 1} more" if len(mismatched) > 1 else ""))
    missing = [k for k in own if k not in converted and not k.endswith("num_batches_tracked")]
    if missing and strict and (fmt.scope == "model" or target is encoder):
        raise CheckpointError(f"{path}: {fmt.name} file lacks {len(missing)} tensors that "
                              f"{name} needs (e.g. {prefix}{missing[0]})")
    report.missing = [prefix + k for k in missing]
    if target is not model:  # encoder-scope weights: decoder and head stay at init
        report.missing += [k for k in model.state_dict()
                           if not k.startswith("encoder.") and not k.endswith("num_batches_tracked")]
    log.info("load_pretrained %s", report.summary())
    return report


def _fit_pos_embed(value: torch.Tensor, own: torch.Tensor, encoder) -> torch.Tensor:
    """Resize square-grid position embeddings to the encoder's grid (bilinear, corners
    aligned, as ``scipy.ndimage.zoom(order=1)``)."""
    n = value.shape[1]
    gs = int(round(n ** 0.5))
    grid = getattr(encoder, "grid", None)
    if gs * gs != n or grid is None:
        return value
    return resample_abs_pos_embed(value.to(own.dtype), tuple(grid), (gs, gs))


# ------------------------------------------------------------------------------ our own format


def _own_convert(state, target):
    sd = state["state_dict"]
    return {k: v for k, v in sd.items()}, {}


register_weight_format(WeightFormat(
    name="transunet_app checkpoint", family="*", scope="model",
    detect=lambda keys: "format" in keys and "state_dict" in keys, convert=_own_convert))
