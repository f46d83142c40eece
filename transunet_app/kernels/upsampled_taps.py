"""The upsampled half of a decoder convolution at low resolution (:file:`upsampled_taps.c`).

``conv3x3(up2(x))`` with ``up2`` the bilinear x2 upsampling (corners aligned, as TransUNet's
decoder) equals ``sum_t shift_t(up2(W_t x))``: a 1x1 channel mix commutes with upsampling and
shifting, so the nine taps' 1x1 convolutions run on the low-resolution map (a quarter of the
multiply-adds) and only their C-channel results are upsampled, shifted and summed. This module
does that last step: :func:`upsampled_taps` (the C kernel, bf16) and
:func:`upsampled_taps_reference` (torch, any dtype: the fallback and the tests' reference).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch
import torch.nn.functional as F

from . import native

SOURCE = Path(__file__).with_name("upsampled_taps.c")

_kernel = native.Kernel(SOURCE, "upsampled_taps_bf16",
                        [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 6 + [ctypes.c_int, ctypes.c_int])


def kernel_available() -> bool:
    """True if the CPU has AVX512-BF16 and the kernel compiled and loaded (cached)."""
    return _kernel.available()


def unavailable_reason() -> str | None:
    """Why the kernel is not used (None while it is available or not yet probed)."""
    return _kernel.reason


def upsampled_taps_reference(z: torch.Tensor, size: tuple[int, int], bias: torch.Tensor | None = None,
                             relu: bool = False) -> torch.Tensor:
    """``sum_t shift_t(up(z_t)) (+ bias) (ReLU)`` in torch, in z's dtype.

    Args:
        z: (B, 9*C, h, w), the nine taps' maps, tap ``t = (dy+1)*3 + (dx+1)`` holding channels
            ``t*C .. t*C + C - 1`` (the weight ``W[:, :, dy+1, dx+1]`` applied as a 1x1 conv).
        size: (H, W) of the upsampled map.
        bias: (C,) added once, or None.

    Returns:
        (B, C, H, W): ``out[i, j] = sum_t up(z_t)[i + dy, j + dx]`` (zero outside the map).
    """
    b, c9, _, _ = z.shape
    c = c9 // 9
    big = F.interpolate(z, size=tuple(size), mode="bilinear", align_corners=True)
    big = F.pad(big, (1, 1, 1, 1)).view(b, 3, 3, c, size[0] + 2, size[1] + 2)
    out = sum(big[:, ky, kx, :, ky:ky + size[0], kx:kx + size[1]]
              for ky in range(3) for kx in range(3))
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, c, 1, 1)
    return out.relu() if relu else out


def kernel_takes(z: torch.Tensor, size: tuple[int, int]) -> bool:
    """Whether :func:`upsampled_taps` runs the C kernel: channels-last bf16 CPU ``z`` with C a
    multiple of 16, upsampling (``size`` at least z's), no autograd."""
    return (z.dtype == torch.bfloat16 and z.device.type == "cpu" and z.dim() == 4
            and size[0] >= z.shape[2] and size[1] >= z.shape[3]
            and z.shape[1] % (9 * 16) == 0 and z.is_contiguous(memory_format=torch.channels_last)
            and not (torch.is_grad_enabled() and z.requires_grad) and kernel_available())


def upsampled_taps(z: torch.Tensor, size: tuple[int, int], bias: torch.Tensor | None = None,
                   relu: bool = False) -> torch.Tensor:
    """:func:`upsampled_taps_reference` computed by the C kernel for channels-last bf16 ``z``
    with C a multiple of 16 (fp32 sums, the output rounded to bf16 once), else by the
    reference (:func:`kernel_takes`). Output (B, C, H, W) channels-last; ``bias`` float32."""
    if not kernel_takes(z, size):
        return upsampled_taps_reference(z, size, bias, relu).contiguous(
            memory_format=torch.channels_last)
    b, c9, h, w = z.shape
    c = c9 // 9
    out = torch.empty((b, c, *size), dtype=torch.bfloat16, memory_format=torch.channels_last)
    bias32 = None if bias is None else bias.detach().to(torch.float32).contiguous()
    _kernel(z.data_ptr(), out.data_ptr(), 0 if bias32 is None else bias32.data_ptr(),
            b, h, w, c, size[0], size[1], int(relu), torch.get_num_threads())
    return out
