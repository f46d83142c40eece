"""bf16 attention on CPUs with AVX512-BF16: ``softmax(q k^T * scale) v`` without torch's flash kernel.

At the ViT-B shape of R50-ViT-B_16 (q, k, v of (8, 12, 196, 64) bf16) torch's CPU flash kernel
(``F.scaled_dot_product_attention``) is slow; the explicit bf16 ``softmax(q @ k^T) @ v`` is
faster but rounds the scores to bf16 (4x the error). The C kernel in ``attention.c`` does both
products with ``vdpbf16ps`` (fp32 accumulation), keeps the scores and the softmax in fp32 and
rounds only the probabilities (for P.V) and the output to bf16, like the flash kernel: same
accuracy against a float64 reference, several times faster (``tools/bench/bench_attention.py``,
BENCHMARKS.md). Models reach it through :mod:`transunet_app.fast_layers.attention`, which
the inference and training passes swap in.

The kernel is compiled on first use and loaded by :mod:`.native` (cached, ctypes: the GIL is
released during the call). Any failure (CPU without avx512_bf16, no compiler, compile or load error) leaves
:func:`unavailable_reason` set and :func:`attention` falls back to
``F.scaled_dot_product_attention``; nothing here raises for that.
``TRANSUNET_APP_FAST_ATTENTION=0`` disables the kernel.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from . import native

SOURCE = Path(__file__).with_name("attention.c")
ENV_SWITCH = "TRANSUNET_APP_FAST_ATTENTION"

_kernel = native.Kernel(SOURCE, "attention_bf16",
                        [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 16 + [ctypes.c_double, ctypes.c_int])


def kernel_available() -> bool:
    """True if the CPU has AVX512-BF16 and the kernel compiled and loaded (cached)."""
    return _kernel.available()


def unavailable_reason() -> str | None:
    """Why the kernel is not used (None while it is available or not yet probed)."""
    return _kernel.reason


def clear_caches() -> None:
    """Forget the probe (tests; after changing the compiler or cache directory)."""
    _kernel.clear()


def describe() -> str:
    """One line for ``transunet info``-style reports."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"disabled ({ENV_SWITCH}=0)"
    if kernel_available():
        return f"AVX512-BF16 kernel ({_kernel.path})"
    return f"unavailable ({_kernel.reason}); using scaled_dot_product_attention"


def _bf16_cpu(t) -> bool:
    return (isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 and t.device.type == "cpu"
            and t.dim() == 4 and t.stride(-1) == 1)


def _injective(t: torch.Tensor) -> bool:
    """No two indices of ``t`` address the same element (so it can be written in parallel)."""
    dims = sorted((t.stride(i), t.size(i)) for i in range(t.dim()) if t.size(i) > 1)
    extent = 1
    for stride, size in dims:
        if stride < extent:
            return False
        extent = stride * size
    return True


def _kernel_takes(q, k, v, out) -> bool:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    if not (_bf16_cpu(q) and _bf16_cpu(k) and _bf16_cpu(v)):
        return False
    if not (q.shape == k.shape == v.shape):  # self-attention shapes only
        return False
    B, H, N, D = q.shape
    if N < 1 or D < 2 or D > 256 or D % 2 or N > (1 << 24):
        return False
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return False
    if out is not None:
        if not (_bf16_cpu(out) and out.shape == q.shape and _injective(out)):
            return False
        if out.requires_grad and torch.is_grad_enabled():
            return False
        ptr = out.untyped_storage().data_ptr()
        if any(t.untyped_storage().data_ptr() == ptr for t in (q, k, v)):
            return False  # writing over inputs still being read
    return kernel_available()


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q k^T * scale, dim=-1) v`` for (B, H, N, D) tensors; scale default ``D ** -0.5``.

    Same as ``F.scaled_dot_product_attention(q, k, v, scale=scale)``. The kernel takes bf16 CPU
    tensors of one shape (views with stride 1 along D, e.g. permuted from a (B, N, 3, H, D)
    qkv tensor: no copies), even D <= 256, no autograd; anything else goes to
    ``scaled_dot_product_attention``. ``out``: a (B, H, N, D) bf16 view written in place (e.g.
    ``buf.view(B, N, H, D).transpose(1, 2)`` of a (B, N, H*D) buffer), returned. Runs on
    ``torch.get_num_threads()`` threads, parallel over (b, h).
    """
    if _kernel_takes(q, k, v, out):
        B, H, N, D = q.shape
        if out is None:
            out = torch.empty((B, H, N, D), dtype=torch.bfloat16)
        if B * H:
            s = D ** -0.5 if scale is None else float(scale)
            status = _kernel.function()(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), B, H, N, D,
                             *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
                             s, torch.get_num_threads())
            if status == 0:
                return out
        else:
            return out
    res = F.scaled_dot_product_attention(q, k, v, scale=scale)
    if out is None:
        return res
    return out.copy_(res)
