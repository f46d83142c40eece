"""Numeric precision for inference: which float type the model runs in.

``auto`` picks bfloat16 where the hardware multiplies it natively (CPUs with AMX tiles or
AVX512-BF16, and GPUs), float32 elsewhere: on other CPUs bf16 matmuls are emulated and slower
than fp32, so "auto" must not choose them there. An explicit ``bf16`` or ``fp16`` on such a
CPU still runs, on plain torch layers (correct, slow), after a one-line warning
(:func:`precision_warning`). What the CPU supports is asked of :mod:`transunet_app.capabilities`.
"""
from __future__ import annotations

import contextlib

import torch

from .. import capabilities
from ..errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def bf16_hardware() -> str:
    """What multiplies bf16 on this CPU, for reports: "AMX", "AVX512-BF16" or "none"."""
    return capabilities.bf16_hardware()


def resolve_precision(name: str, device: torch.device) -> str:
    """Turn ``--precision`` into a concrete "fp32", "bf16" or "fp16" for ``device``.

    Raises:
        UserError: an unknown name.
    """
    if name not in PRECISIONS:
        raise UserError(f"--precision {name}: choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu":
            return "bf16" if capabilities.native_bf16() else "fp32"
        return "fp32"
    return name


def precision_warning(precision: str, device: torch.device, option: str | None = None,
                      instead: str = "--precision auto") -> str | None:
    """One line to show before running a resolved ``precision`` that is slow on this device
    (None when it is fine): bf16 without bf16 hardware, fp16 on any CPU.

    Args:
        option: how the user asked for it (default ``--precision <precision>``).
        instead: what to suggest.
    """
    if device.type != "cpu" or precision == "fp32":
        return None
    option = option or f"--precision {precision}"
    if precision == "bf16" and not capabilities.native_bf16():
        return (f"{option}: this CPU has no bf16 hardware (AMX or AVX512-BF16); running plain "
                f"torch bf16 layers, correct but slower than fp32 (use {instead})")
    if precision == "fp16":
        return (f"{option}: CPUs have no fast fp16 path; running plain torch fp16 layers, "
                f"correct but slower than fp32 (use {instead})")
    return None


def torch_dtype(precision: str) -> torch.dtype:
    """``"bf16"`` -> ``torch.bfloat16`` etc. (``precision`` already resolved)."""
    return _DTYPES[precision]


def autocast(precision: str, device: torch.device):
    """Autocast context for a resolved precision (a no-op for fp32).

    Under autocast, convolutions and matmuls run in the low-precision type while numerically
    sensitive ops (normalisations, softmax) stay in float32.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch_dtype(precision))
