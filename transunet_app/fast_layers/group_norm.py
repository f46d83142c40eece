"""GroupNorm of channels-last maps without torch's slow channels-last kernels.

torch's channels-last GroupNorm parallelises over (sample, group) when H*W < 1024 and then
reads ``C/G`` values per pixel with a stride of ``C``: with few channels per group it is many
times slower than its NCHW kernel (TransUNet's projection norm ``GroupNorm(C, C)`` on a
(8, 512, 28, 28) bf16 map, BENCHMARKS.md), and its backward is slow for most shapes.
:func:`channels_last_group_norm` reduces per-pixel rows as contiguous vectors, keeps float32
statistics for half inputs, uses the same mathematics (mean, E[x^2] - mean^2) and has an
analytic backward. ``tools/bench_model.py`` and ``tools/bench_train.py`` measure the effect.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import swap_layers


class ChannelsLastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, same result to rounding) that takes channels-last
    maps where torch's kernels are slow (:func:`_use_channels_last_group_norm`) through
    :func:`channels_last_group_norm`; anything else through ``nn.GroupNorm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_channels_last_group_norm(x, self.num_groups):
            return channels_last_group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


def use_channels_last_group_norm(model: nn.Module) -> int:
    """Every ``nn.GroupNorm`` of ``model`` becomes a :class:`ChannelsLastGroupNorm` (in place);
    returns how many."""
    return swap_layers(model, nn.GroupNorm, ChannelsLastGroupNorm)


def _use_channels_last_group_norm(x: torch.Tensor, num_groups: int) -> bool:
    if x.ndim != 4 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return False
    n, c, h, w = x.shape
    per = c // num_groups
    # Where torch's kernels lose (measured, bf16, batch 8, one thread): forward below 1024
    # pixels with <= 8 channels per group; forward + backward also with <= 4 at any size.
    if torch.is_grad_enabled() and x.requires_grad:
        return per <= 4 or (per <= 8 and h * w < 1024)
    return per <= 8 and h * w < 1024


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _rows(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, C, H, W) channels-last -> (N, H*W, C) view of the same memory, cast to ``dtype``."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w, c).to(dtype)


def _affine_per_sample(x, mean, var, weight, bias, eps):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` with (N, C) statistics, through the
    vectorised channels-last BatchNorm kernel one sample at a time (output in x's dtype)."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        out[i:i + 1] = F.batch_norm(x[i:i + 1], mean[i], var[i], weight, bias, False, 0.0, eps)
    return out


def _group_statistics(x: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) variance per (sample, group) of a channels-last (N, C, H, W) map,
    (N, G) each, in float32 for half inputs.

    Per-channel statistics come from BatchNorm's statistics kernel one sample at a time (it
    reads a channels-last map as contiguous vectors of channels, accumulating half inputs in
    float32: much faster than casting the map to float32 and summing it and its square), and
    are combined per group without cancellation: ``var_g = mean_c(var_c) +
    mean_c((mean_c - mean_g)^2)``.
    """
    n, c = x.shape[:2]
    per = c // num_groups
    # float32 running buffers (left unchanged by momentum 0) make the kernel return float32
    # statistics for half inputs; without them it rounds them to the input's dtype
    acc = _accumulation_dtype(x.dtype)
    running_mean = torch.zeros(c, dtype=acc, device=x.device)
    running_var = torch.ones(c, dtype=acc, device=x.device)
    stats = [torch.batch_norm_update_stats(x[i:i + 1], running_mean, running_var, 0.0)
             for i in range(n)]
    mean_c = torch.stack([m for m, _ in stats]).view(n, num_groups, per)
    var_c = torch.stack([v for _, v in stats]).view(n, num_groups, per)
    if per == 1:
        return mean_c.squeeze(-1), var_c.squeeze(-1)
    mean = mean_c.mean(-1)
    var = var_c.mean(-1) + (mean_c - mean.unsqueeze(-1)).square().mean(-1)
    return mean, var


class _ChannelsLastGroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups: int, eps: float):
        c = x.shape[1]
        acc = _accumulation_dtype(x.dtype)
        per = c // num_groups
        mean, var = _group_statistics(x, num_groups)
        # The BatchNorm kernel takes half inputs with all-float32 statistics and parameters.
        w32 = None if weight is None else weight.to(acc)
        b32 = None if bias is None else bias.to(acc)
        out = _affine_per_sample(x, mean.repeat_interleave(per, 1), var.repeat_interleave(per, 1),
                                 w32, b32, eps)
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(var + eps))
        ctx.num_groups = num_groups
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, h, w = x.shape
        g, per = ctx.num_groups, c // ctx.num_groups
        count = h * w * per
        acc = _accumulation_dtype(x.dtype)
        dy = _rows(grad_out.contiguous(memory_format=torch.channels_last), acc)
        xr = _rows(x, acc)
        sum_dy = dy.sum(1)                   # (N, C)
        sum_dy_x = (dy * xr).sum(1)          # (N, C)
        mean_c, rstd_c = mean.repeat_interleave(per, 1), rstd.repeat_interleave(per, 1)
        # sum over pixels of dy * xhat, per (n, c)
        sum_dy_xhat = rstd_c * (sum_dy_x - mean_c * sum_dy)
        wt = weight.to(acc) if weight is not None else torch.ones(c, dtype=acc, device=x.device)
        # dx = rstd * (dxhat - mean_group(dxhat) - xhat * mean_group(dxhat * xhat)), dxhat = dy*w
        m1 = (sum_dy * wt).view(n, g, per).sum(-1) / count
        m2 = (sum_dy_xhat * wt).view(n, g, per).sum(-1) / count
        coef_x = -(rstd * rstd * m2)                     # (N, G)
        const = -rstd * m1 - coef_x * mean                # (N, G)
        alpha = (rstd_c * wt)[:, None, :]
        dx = torch.addcmul(const.repeat_interleave(per, 1)[:, None, :], dy, alpha)
        dx = dx.addcmul_(xr, coef_x.repeat_interleave(per, 1)[:, None, :])
        dx = dx.to(x.dtype).view(n, h, w, c).permute(0, 3, 1, 2)
        # needs_input_grad is False for an absent (None) weight or bias
        # (in float32; autograd casts a gradient to its input's dtype)
        dweight = sum_dy_xhat.sum(0) if ctx.needs_input_grad[1] else None
        dbias = sum_dy.sum(0) if ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None


def channels_last_group_norm(x: torch.Tensor, num_groups: int, weight, bias,
                             eps: float) -> torch.Tensor:
    """GroupNorm of a channels-last (N, C, H, W) map (differentiable), output channels-last
    in x's dtype; statistics in float32 for half inputs."""
    return _ChannelsLastGroupNorm.apply(x, weight, bias, num_groups, eps)
