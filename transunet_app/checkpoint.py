"""Self-describing checkpoints: everything ``segment`` needs, nothing executable.

A checkpoint is a plain dict saved with ``torch.save`` and read with ``weights_only=True``:

``format``        ``"transunet_app/1"``
``model``         ``build_model`` arguments: ``{"name", "num_classes", "img_size", "overrides"}``
``state_dict``    model tensors
``classes``       class names, index = label value (``classes[0] == "background"``)
``preprocessing`` ``{"in_channels", "img_size": [H, W], "hu_window": [lo, hi],
                  "normalization": "window_to_unit", "orientation": "SPL",
                  "slice_axis": "axial"}``
``training``      optional resume state (optimizer, scheduler, scaler, RNG as tensors, epoch,
                  iteration ...); only plain containers, numbers, strings and tensors
``metrics``       optional validation metrics
``config``        optional resolved run config (plain dict)
``software``      ``{"transunet_app": version, "torch": version}``

Only plain types are allowed so that ``torch.load(weights_only=True)`` can read the file.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch

from . import __version__
from .data.intensity import HU_WINDOW
from .errors import CheckpointError, UserError
from .models.pretrained import OWN_FORMAT, torch_load_safe

DEFAULT_PREPROCESSING = {
    "in_channels": 1,
    "img_size": [224, 224],
    "hu_window": list(HU_WINDOW),
    "normalization": "window_to_unit",
    "orientation": "SPL",
    "slice_axis": "axial",
}


def make_checkpoint(model, classes, preprocessing: Optional[dict] = None,
                    training: Optional[dict] = None, metrics: Optional[dict] = None,
                    config: Optional[dict] = None) -> dict:
    """Assemble the checkpoint dict for ``model`` (built by ``build_model``)."""
    from .models import model_config

    if len(classes) != model.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {model.num_classes} "
                         f"classes")
    prep = dict(DEFAULT_PREPROCESSING)
    prep.update(preprocessing or {})
    return {
        "format": OWN_FORMAT,
        "model": model_config(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "preprocessing": prep,
        "training": training,
        "metrics": metrics,
        "config": config,
        "software": {"transunet_app": __version__, "torch": str(torch.__version__)},
    }


def checkpoint_nbytes(checkpoint) -> int:
    """Bytes of the tensors in ``checkpoint`` (nested dicts/lists): about its size on disk."""
    if torch.is_tensor(checkpoint):
        return checkpoint.numel() * checkpoint.element_size()
    if isinstance(checkpoint, dict):
        return sum(checkpoint_nbytes(v) for v in checkpoint.values())
    if isinstance(checkpoint, (list, tuple)):
        return sum(checkpoint_nbytes(v) for v in checkpoint)
    return 64


def save_checkpoint(path, checkpoint: dict, overwrite: bool = False,
                    keep_previous: str | os.PathLike | None = None) -> None:
    """Write through the one atomic write (:func:`transunet_app.data.files.atomic_write`: a
    temporary file in the same folder, renamed into place); the folder is created.

    Args:
        overwrite: replace an existing file (a training run rewriting its ``last.pt``);
            without it an existing file is a :class:`~transunet_app.errors.UserError`.
        keep_previous: once the new file is completely written, move the file it replaces
            there (``last.pt`` -> ``previous.pt``), so a resume has a second valid checkpoint
            to fall back to.

    Raises:
        UserError: ``path`` exists and ``overwrite`` is false.
        StorageError: the folder's file system cannot hold the file (checked before writing
            from the tensors' size), or the write failed (full disk, file-size limit, read-only):
            the file at ``path`` is then the previous one, untouched.
    """
    from .data.files import atomic_write
    from .errors import StorageError, describe_os_error
    from .outputs.staging import check_free_space

    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise UserError(f"{path}: already exists (use --overwrite to replace it)")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    check_free_space(folder, int(checkpoint_nbytes(checkpoint) * 1.05) + (1 << 20),
                     f"the checkpoint {os.path.basename(path)}")

    def write(tmp) -> None:
        with open(tmp, "wb") as fh:
            sink = _WriteErrors(fh)
            try:
                torch.save(checkpoint, sink)
            except RuntimeError:
                if sink.error is not None:  # torch's zip writer hides the OSError of write()
                    raise sink.error from None
                raise
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous is not None and os.path.exists(path):
            _keep_as_previous(path, os.fspath(keep_previous))  # only now: the new file is whole

    try:
        atomic_write(path, write, overwrite=overwrite)
    except OSError as exc:
        raise StorageError(f"{describe_os_error(exc, path)}; checkpoint not saved, "
                           f"{os.path.basename(path)} is the previous one") from None


def _keep_as_previous(path: str, previous: str) -> None:
    """Make ``previous`` the file now at ``path`` while ``path`` stays in place (a hard link),
    so that a crash before the new file is renamed in leaves ``path`` whole, never missing.
    Where the file system has no hard links, ``path`` is moved (then, for that instant, only
    ``previous`` holds the checkpoint; resuming falls back to it)."""
    link = os.path.join(os.path.dirname(previous), f".{os.path.basename(previous)}.linking")
    try:
        if os.path.lexists(link):
            os.remove(link)
        os.link(path, link)
        os.replace(link, previous)
    except OSError:
        os.replace(path, previous)


class _WriteErrors:
    """A binary file for ``torch.save`` that remembers the ``OSError`` a write raised."""

    def __init__(self, fh):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._fh.flush()


def load_checkpoint(path) -> dict:
    """Read and validate one of our checkpoints (safe: ``weights_only=True``).

    Tensors are read, not memory-mapped: ``torch.load(mmap=True)`` lowered ``segment``'s
    start-up peak but not the run's (the first forward touches
    every weight, and the float32 parts of a bf16 model keep the whole mapping alive), and a
    mapped file rewritten in place would crash the run.

    Raises:
        CheckpointError: missing/corrupt file, pickled code, or not our format.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    ckpt = torch_load_safe(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != OWN_FORMAT:
        raise CheckpointError(f"{path}: not a transunet_app checkpoint (an official TransUNet "
                              f"or ImageNet weight file is loaded with load_pretrained, or "
                              f"converted with transunet convert)")
    for key in ("model", "state_dict", "classes", "preprocessing"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    if len(ckpt["classes"]) != ckpt["model"]["num_classes"]:
        raise CheckpointError(f"{path}: {len(ckpt['classes'])} class names but the model has "
                              f"{ckpt['model']['num_classes']} classes")
    return ckpt


class _SkipInPlaceOnMeta(torch.overrides.TorchFunctionMode):
    """In-place ops on meta tensors (weight initialisers: ``normal_``, ``erfinv_``, ``clamp_``,
    ...) return their tensor untouched: a meta tensor has no values to write, and the first
    use of some of their meta kernels imports torch's reference decompositions (seconds of a
    ``segment`` start-up)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):
            # torch.nn.init passes its tensor by keyword; Tensor methods pass self first
            target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


def model_from_checkpoint(ckpt: dict, path: str = "checkpoint") -> Any:
    """Rebuild the model recorded in ``ckpt`` and load its weights (strict).

    The model is built on the ``meta`` device (no memory, no random initialisation) and takes
    the checkpoint's tensors as its parameters (``load_state_dict(assign=True)``): start-up
    holds the weights once instead of twice. The model shares those tensors with
    ``ckpt["state_dict"]``.
    """
    from .models import build_model

    spec = ckpt["model"]
    try:
        with torch.device("meta"), _SkipInPlaceOnMeta():
            model = build_model(spec["name"], spec["num_classes"], img_size=spec["img_size"],
                                **spec.get("overrides", {}))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild model {spec.get('name')!r}: {exc}") from None
    state = ckpt["state_dict"]
    # assign=True keeps the stored dtype; a checkpoint saved in another float type is cast
    expected = {k: v.dtype for k, v in model.state_dict().items()}
    state = {k: (v.to(expected[k]) if torch.is_tensor(v) and k in expected and v.dtype != expected[k]
                 else v) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit {spec['name']}: "
                              f"{' '.join(first[1:2]).strip() or first[0]}") from None
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        # a tensor the state dict does not hold (a non-persistent buffer): build for real
        model = build_model(spec["name"], spec["num_classes"], img_size=spec["img_size"],
                            **spec.get("overrides", {}))
        model.load_state_dict(state, strict=True)
    return model
