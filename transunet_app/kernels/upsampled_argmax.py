"""Labels of bilinearly upsampled class scores in one pass (:file:`upsampled_argmax.c`).

The C form of :func:`transunet_app.inference.upsampled_argmax.upsampled_argmax` (same
labels; that module's torch code is the fallback and the tests' cross-check): corner labels
copied where a source cell's 4 corners agree, torch's bilinear formula and first-maximum
argmax elsewhere. Its speed against both torch paths (smooth labels of a trained model, noisy
labels of an untrained one) is in BENCHMARKS.md (``tools/bench/bench_upsampled_argmax.py``).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from . import native

SOURCE = Path(__file__).with_name("upsampled_argmax.c")

_kernel = native.Kernel(SOURCE, "upsampled_argmax_f32",
                        [ctypes.c_void_p] + [ctypes.c_int64] * 8 + [ctypes.c_void_p]
                        + [ctypes.c_int64] * 2 + [ctypes.c_int])


def kernel_available() -> bool:
    """True if the CPU has AVX512-BF16 and the kernel compiled and loaded (cached)."""
    return _kernel.available()


def unavailable_reason() -> str | None:
    """Why the kernel is not used (None while it is available or not yet probed)."""
    return _kernel.reason


def kernel_takes(scores: torch.Tensor, size: tuple[int, int]) -> bool:
    """float32 CPU (B, K, h, w) scores (any strides), 1 <= K <= 255, upsampling, no autograd."""
    return (scores.dtype == torch.float32 and scores.device.type == "cpu" and scores.dim() == 4
            and 1 <= scores.shape[1] <= 255 and min(scores.shape[2:]) >= 1
            and size[0] >= scores.shape[2] and size[1] >= scores.shape[3]
            and not (torch.is_grad_enabled() and scores.requires_grad) and kernel_available())


def upsampled_argmax(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) uint8 labels of ``interpolate(scores, size, bilinear, align_corners=True)``;
    the caller checks :func:`kernel_takes` first."""
    b, k, h, w = scores.shape
    out = torch.empty((b, int(size[0]), int(size[1])), dtype=torch.uint8)
    sb, sk, sh, sw = scores.stride()
    _kernel(scores.data_ptr(), sb, sk, sh, sw, b, k, h, w, out.data_ptr(),
            int(size[0]), int(size[1]), torch.get_num_threads())
    return out
