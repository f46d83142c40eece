"""Attention products computed the fast way for the case at hand (a pass swaps them in).

* Without autograd and dropout: :func:`transunet_app.kernels.attention.attention`, the C
  kernel for bf16 on CPUs that have AVX512-BF16 (asked of :mod:`transunet_app.capabilities`
  through :mod:`transunet_app.kernels.native`), else ``scaled_dot_product_attention``; the
  heads are written straight into the (B, N, C) buffer the output projection reads.
* With autograd: the explicit ``softmax(q k^T * scale) v``. torch's CPU flash kernel's
  backward is slower than two matmul backwards at ViT-B sizes (BENCHMARKS.md); dropout on the
  attention probabilities uses the 15-bit mask of :mod:`.dropout`.

Same function either way; the plain modules compute it with ``scaled_dot_product_attention``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.attention import attention as kernel_attention
from ..models.encoders.cvt import ConvAttention
from ..models.layers import Attention
from . import swap_layers
from .dropout import dropout


def dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          dropout_p: float = 0.0, scale: float | None = None,
                          out: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q k^T * scale) v`` for (B, heads, N, d) tensors (scale default d^-0.5), by
    the kernel or explicitly (module notes). ``out``: a (B, heads, N, d) view to write the
    result into (e.g. of the (B, N, heads*d) buffer the projection reads; no autograd)."""
    if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        if dropout_p == 0.0:
            return kernel_attention(q, k, v, scale=scale, out=out)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
        return y if out is None else out.copy_(y)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    weights = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    if dropout_p:
        weights = dropout(weights, dropout_p)
    return weights @ v


class DispatchAttention(Attention):
    """:class:`~transunet_app.models.layers.Attention` through :func:`dot_product_attention`."""

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, n, c = x.shape
        qkv = self.qkv(x)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        weights = None
        if return_attention:
            scores = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5
            weights = scores.softmax(dim=-1)
            out = dropout(weights, self.attn_drop, self.training) @ v
            out = out.transpose(1, 2).reshape(b, n, c)
        elif torch.is_grad_enabled() and qkv.requires_grad:
            out = dot_product_attention(q, k, v, self.attn_drop if self.training else 0.0)
            out = out.transpose(1, 2).reshape(b, n, c)
        else:
            # heads written straight into the (B, N, C) layout the projection reads
            out = qkv.new_empty(b, n, c)
            dot_product_attention(q, k, v, self.attn_drop if self.training else 0.0,
                                  out=out.view(b, n, self.num_heads, self.head_dim).transpose(1, 2))
        return self.proj_drop(self.proj(out)), weights


class DispatchConvAttention(ConvAttention):
    """CvT's :class:`~transunet_app.models.encoders.cvt.ConvAttention` through
    :func:`dot_product_attention` (and the 15-bit dropout in the ``return_attention`` mode)."""

    def attend(self, q, k, v, drop: float, return_attention: bool):
        if return_attention:
            weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            return dropout(weights, drop, self.training) @ v, weights
        return dot_product_attention(q, k, v, drop, self.scale), None


def use_attention_dispatch(model: nn.Module) -> int:
    """Every ``Attention`` / CvT ``ConvAttention`` of ``model`` computes its product through
    :func:`dot_product_attention` (in place); returns how many modules changed."""
    return (swap_layers(model, Attention, DispatchAttention)
            + swap_layers(model, ConvAttention, DispatchConvAttention))
