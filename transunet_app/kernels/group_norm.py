"""GroupNorm (+ residual) (+ ReLU) of channels-last bf16 maps in two passes (:file:`group_norm.c`).

R50's bottleneck units run ``relu(GN(conv(x)))`` twice and ``relu(residual + GN(conv(x)))``
once; torch makes three to four passes over each map for that, rounding to bf16 after each.
The kernel reads the map once for the statistics and once for the affine, the addition and
the ReLU, writing once.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch
import torch.nn.functional as F

from . import native

SOURCE = Path(__file__).with_name("group_norm.c")

_kernel = native.Kernel(SOURCE, "group_norm_bf16",
                        [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 4
                        + [ctypes.c_double, ctypes.c_int, ctypes.c_int])


def kernel_available() -> bool:
    """True if the CPU has AVX512-BF16 and the kernel compiled and loaded (cached)."""
    return _kernel.available()


def unavailable_reason() -> str | None:
    """Why the kernel is not used (None while it is available or not yet probed)."""
    return _kernel.reason


def _channels_last_bf16(t: torch.Tensor) -> bool:
    return (t.dtype == torch.bfloat16 and t.device.type == "cpu" and t.dim() == 4
            and t.is_contiguous(memory_format=torch.channels_last))


def kernel_takes(x: torch.Tensor, num_groups: int, residual: torch.Tensor | None = None) -> bool:
    """channels-last bf16 CPU maps, C a multiple of 16 and of ``num_groups``, no autograd."""
    return (_channels_last_bf16(x) and x.shape[1] % 16 == 0 and x.shape[1] % num_groups == 0
            and x.shape[2] * x.shape[3] * (x.shape[1] // num_groups) > 1  # torch refuses 1
            and (residual is None or (_channels_last_bf16(residual) and residual.shape == x.shape))
            and not (torch.is_grad_enabled() and (x.requires_grad or (residual is not None
                                                                      and residual.requires_grad)))
            and kernel_available())


def group_norm_reference(x, num_groups, weight, bias, eps, residual=None, relu=False):
    """torch's ``relu?(group_norm(x) (+ residual))`` in x's dtype (the fallback)."""
    y = F.group_norm(x, num_groups, weight, bias, eps)
    if residual is not None:
        y = residual + y
    return y.relu_() if relu else y


def group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor,
               eps: float, residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
    """``relu?(GroupNorm(x) * weight + bias (+ residual))`` for (N, C, H, W) maps: the kernel
    where :func:`kernel_takes`, else :func:`group_norm_reference`. Output channels-last."""
    if not kernel_takes(x, num_groups, residual):
        return group_norm_reference(x, num_groups, weight, bias, eps, residual, relu)
    n, c, h, w = x.shape
    out = torch.empty_like(x, memory_format=torch.channels_last)
    w32 = (weight.detach() if weight is not None else torch.ones(c)).to(torch.float32).contiguous()
    b32 = (bias.detach() if bias is not None else torch.zeros(c)).to(torch.float32).contiguous()
    _kernel(x.data_ptr(), 0 if residual is None else residual.data_ptr(), out.data_ptr(),
            w32.data_ptr(), b32.data_ptr(), n, h * w, c, num_groups, float(eps),
            int(relu), torch.get_num_threads())
    return out
