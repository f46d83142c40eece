"""Building blocks shared by the encoder families.

Everything here is dtype-agnostic (no hard ``.float()`` casts), so a model runs in float64 for
fidelity checks and under bf16 autocast for speed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.attention import attention as fast_attention


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
    """Inverted dropout, as ``F.dropout``, with a mask that is cheaper to draw on a CPU.

    ``F.dropout`` draws one Bernoulli sample per element from the CPU generator (a serial
    Mersenne Twister): ~9 ns an element, 19% of an R50-ViT-B_16 bf16 training step on this
    CPU. Drawing 64-bit integers and using 15 bits of them per element takes a quarter of the
    generator calls. Drop probability ``round(p * 2^15) / 2^15`` (0.100006 for p = 0.1), drawn
    from the same global generator, so ``torch.manual_seed`` and the saved RNG state of a
    checkpoint still make a run reproducible. Other devices (whose dropout kernels are fused)
    and ``p`` outside (0, 1) use ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    return _BitsDropout.apply(x, p)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, no state) computed by :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (BiT / ResNetV2), as in the official TransUNet.

    The weight of each output channel is normalised to zero mean and unit (biased) variance with
    ``eps`` added to the variance: ``w' = (w - mean) / sqrt(var + eps)``. TransUNet uses
    ``eps = 1e-5`` (timm's StdConv2dSame uses 1e-8, which is why it is not interchangeable).
    """

    def __init__(self, *args, eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps
        self._cache_key = None
        self._cache = None

    def standardized_weight(self) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (self.weight - mean) / torch.sqrt(var + self.eps)

    def _inference_weight(self, dtype: torch.dtype) -> torch.Tensor:
        # Without autograd the standardised weight only changes when the parameter does
        # (``_version`` counts in-place writes such as optimizer steps and load_state_dict),
        # so compute it once, in the compute dtype, instead of on every forward.
        w = self.weight
        key = (w._version, w.data_ptr(), w.dtype, dtype, self.eps)
        if key != self._cache_key:
            with torch.no_grad():
                self._cache = self.standardized_weight().to(dtype)
            self._cache_key = key
        return self._cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.weight.requires_grad:
            w = self.standardized_weight()
        else:
            dtype = (torch.get_autocast_dtype(x.device.type)
                     if torch.is_autocast_enabled(x.device.type) else self.weight.dtype)
            w = self._inference_weight(dtype)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, same result) that avoids torch's slow channels-last
    kernels.

    torch's channels-last GroupNorm parallelises over (sample, group) when H*W < 1024 and then
    reads ``C/G`` values per pixel with a stride of ``C``: with few channels per group it is
    5-40x slower than its NCHW kernel (TransUNet's projection norm ``GroupNorm(C, C)`` on a
    (8, 512, 28, 28) bf16 map: ~80 ms instead of ~3 ms), and its backward is slow for most
    shapes. For channels-last maps this layer uses :func:`channels_last_group_norm` instead:
    per-pixel rows reduced as contiguous vectors, float32 statistics for half inputs, the same
    mathematics (mean, E[x^2] - mean^2) and an analytic backward.
    ``tools/bench/bench_model.py`` and ``tools/bench/bench_train.py`` measure the effect on the model.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_channels_last_group_norm(x, self.num_groups):
            return channels_last_group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


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
    float32: 6x faster than casting the map to float32 and summing it and its square), and
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


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise ``nn.Conv2d`` (``groups == channels``) on (B, C, H, W).

    float32 / bf16 run ``F.conv2d`` (oneDNN). float64 runs the same sum as ``unfold`` +
    ``einsum``: PyTorch's CPU float64 grouped convolution falls back to a loop over channels
    (and batch), measured at 10 s for a 384-channel 4x6 map at batch 2 against 0.02 s this
    way, and float64 is what the fidelity checks run in. The two agree to rounding.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__(channels, channels, kernel_size, stride=stride, padding=padding,
                         groups=channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float64 or self.padding_mode != "zeros":
            return super().forward(x)
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = F.unfold(x, (kh, kw), dilation=self.dilation, padding=(ph, pw), stride=(sh, sw))
        y = torch.einsum("bckl,ck->bcl", cols.view(b, c, kh * kw, ho * wo),
                         self.weight.view(c, kh * kw))
        if self.bias is not None:
            y = y + self.bias.view(1, c, 1)
        return y.view(b, c, ho, wo)


class Mlp(nn.Module):
    """Transformer MLP: Linear -> GELU (erf) -> Dropout -> Linear -> Dropout. Tokens (B, N, C)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          dropout_p: float = 0.0, scale: float | None = None,
                          out: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q k^T * scale) v`` for (B, heads, N, d) tensors (scale default d^-0.5).

    Without autograd and dropout this is :func:`transunet_app.kernels.attention.attention`:
    for bf16 on CPUs with AVX512-BF16 a kernel 4.6x faster than torch's CPU flash kernel
    ((8, 12, 196, 64): 2.7 vs 12.4 ms on one core, same error against float64), else
    ``scaled_dot_product_attention``. ``out``: a (B, heads, N, d) view to write the result
    into (e.g. of the (B, N, heads*d) buffer the projection reads; no autograd). With
    autograd it is the explicit product: the CPU flash kernel's backward is ~2.5x slower than
    two matmul backwards at ViT-B sizes (measured: 63 vs 25 ms forward+backward for 8x12
    heads of 196 tokens, bf16). Same function either way.
    """
    if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        if dropout_p == 0.0:
            return fast_attention(q, k, v, scale=scale, out=out)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
        return y if out is None else out.copy_(y)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    weights = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    if dropout_p:
        weights = dropout(weights, dropout_p)
    return weights @ v


class Attention(nn.Module):
    """Multi-head self-attention on tokens (B, N, C) with a fused q/k/v projection.

    The product runs through :func:`dot_product_attention` (fused kernel at inference).
    With ``return_attention=True`` the softmax map (B, heads, N, N) is computed explicitly and
    returned too (the official ``vis`` mode); the output is the same.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = Dropout(proj_drop)

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


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``. Tokens (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, proj_drop: float | None = None,
                 drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        # timm-style blocks (Conformer) drop the attention output with the MLP rate; the
        # official TransUNet ViT drops it with the attention rate (``proj_drop=attn_drop``).
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=drop if proj_drop is None else proj_drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, drop=drop)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        y, weights = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


def resize_pos_embed_grid(pos: torch.Tensor, new_grid: tuple[int, int]) -> torch.Tensor:
    """Resize grid position embeddings (1, Hg*Wg, C) to ``new_grid`` by bilinear interpolation
    with aligned corners (the same sampling as ``scipy.ndimage.zoom(order=1)``, which the
    official TransUNet loader uses). The old grid must be square or is given by ``pos_grid``.
    """
    n_old = pos.shape[1]
    gs = int(round(n_old ** 0.5))
    if gs * gs != n_old:
        raise ValueError(f"cannot infer a square grid from {n_old} position embeddings")
    return resize_pos_embed(pos, (gs, gs), new_grid)


def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int],
                     new_grid: tuple[int, int]) -> torch.Tensor:
    """Resize (1, Ho*Wo, C) grid position embeddings to (1, Hn*Wn, C), bilinear, corners aligned."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    c = pos.shape[-1]
    grid = pos.reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bilinear", align_corners=True)
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c)
