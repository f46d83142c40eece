"""Numeric precision for inference: which float type the model runs in, and how to detect it.

``auto`` picks bfloat16 where the hardware multiplies it natively (CPUs with AMX tiles or
AVX512-BF16, and GPUs), float32 elsewhere: on other CPUs bf16 matmuls are emulated and slower
than fp32, so "auto" must not choose them there.
"""
from __future__ import annotations

import contextlib
import functools

import torch

from ..errors import UserError
from ..kernels.native import cpu_flags

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles for bf16 (Intel Sapphire Rapids and later).

    Reads torch's detected capability first (``AMX`` appears there on builds that report it),
    then the ``amx_bf16`` flag of ``/proc/cpuinfo`` (Linux).
    """
    try:
        if "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper():
            return True
    except Exception:  # older torch without get_cpu_capability
        pass
    return "amx_bf16" in cpu_flags()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware: AMX tiles, or AVX512-BF16 dot products
    (``avx512_bf16``: Intel Cooper Lake and Sapphire Rapids+, AMD Zen 4 and later).

    Either way oneDNN's bf16 matmuls run at least twice the fp32 rate (measured on a Zen 5
    VM: 500 vs 240 GFLOP/s per core with oneDNN, 100 with MKL's fp32 GEMM); without them bf16
    is emulated and slower than fp32.
    """
    return cpu_has_amx() or "avx512_bf16" in cpu_flags()


def bf16_hardware() -> str:
    """What multiplies bf16 on this CPU, for reports: "AMX", "AVX512-BF16" or "none"."""
    return "AMX" if cpu_has_amx() else "AVX512-BF16" if cpu_has_native_bf16() else "none"


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
            return "bf16" if cpu_has_native_bf16() else "fp32"
        return "fp32"
    return name


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
