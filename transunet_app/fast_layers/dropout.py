"""Inverted dropout with a mask drawn from 15 random bits per element (CPU training).

``F.dropout`` draws one Bernoulli sample per element from the CPU generator (a serial
Mersenne Twister), a large share of a ViT training step on a CPU (BENCHMARKS.md). Drawing
64-bit integers and using 15 bits of them per element takes a quarter of the generator calls.
Drop probability ``round(p * 2^15) / 2^15`` (0.100006 for p = 0.1), drawn from the same global
generator, so ``torch.manual_seed`` and the saved RNG state of a checkpoint still make a run
reproducible (the masks differ from ``F.dropout``'s).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import swap_layers

#: Resolution of :func:`dropout`'s keep/drop decision: 15 random bits per element.
_DROP_BITS = 15

#: Bit pattern of 1.0 in the 16-bit float formats: an int16 0/1 mask times this, viewed as that
#: dtype, is a 0.0/1.0 mask without a conversion pass.
_ONE_BITS = {torch.bfloat16: 0x3F80, torch.float16: 0x3C00}


class _BitsDropout(torch.autograd.Function):
    """Inverted dropout whose mask comes from 15 random bits per element (see :func:`dropout`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        n = x.numel()
        # random_() on int64 draws uniform integers in [0, 2^63): every 16-bit slice has 15
        # uniform low bits (the top slice's sign bit is always 0, hence the mask).
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
        keep = bits.view(torch.int16)[:n].bitwise_and_(2 ** _DROP_BITS - 1)
        keep = keep.ge_(round(p * 2 ** _DROP_BITS)).view(x.shape)  # 0/1, in place on int16
        if x.dtype in _ONE_BITS:
            keep = keep.mul_(_ONE_BITS[x.dtype]).view(x.dtype)
        else:
            keep = keep.to(x.dtype)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return _masked_scale(x, keep, ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return _masked_scale(grad, keep, ctx.scale), None


def _masked_scale(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """``x * keep * scale`` in one pass, rounded once as torch's dropout (``x.mul(mask).mul_(
    scale)``) rounds it; folding the scale into a bf16 mask would round it (1/0.9 -> 1.109375)."""
    return torch.addcmul(x.new_zeros(()), x, keep, value=scale)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``, with the 15-bit mask (module notes) on CPU tensors.

    Other devices (whose dropout kernels are fused) and ``p`` outside (0, 1) use ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    return _BitsDropout.apply(x, p)


class BitsDropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, no state) computed by :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)


def use_bits_dropout(model: nn.Module) -> int:
    """Every ``nn.Dropout`` of ``model`` becomes a :class:`BitsDropout` (in place); returns how
    many. (The attention modules' dropout of attention probabilities comes with
    :func:`transunet_app.fast_layers.attention.use_attention_dispatch`.)"""
    return swap_layers(model, nn.Dropout, BitsDropout)
