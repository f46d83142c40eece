"""Building blocks shared by the encoder families, in plain torch.

Everything here is dtype-agnostic (no hard ``.float()`` casts), so a model runs in float64 for
fidelity checks and under bf16 autocast for speed. Nothing here compiles, dispatches to a C
kernel or picks a path by CPU: the fast forms of these layers (15-bit dropout, channels-last
GroupNorm, cached weight standardisation, the attention kernel) live in
:mod:`transunet_app.fast_layers` and are swapped in by the trainer and by
:func:`transunet_app.inference.optimize.prepare_for_inference`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (BiT / ResNetV2), as in the official TransUNet.

    The weight of each output channel is normalised to zero mean and unit (biased) variance with
    ``eps`` added to the variance: ``w' = (w - mean) / sqrt(var + eps)``. TransUNet uses
    ``eps = 1e-5`` (timm's StdConv2dSame uses 1e-8, which is why it is not interchangeable).
    """

    def __init__(self, *args, eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (self.weight - mean) / torch.sqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise ``nn.Conv2d`` (``groups == channels``) on (B, C, H, W).

    Its own type so that passes can tell it from dense convolutions: the oneDNN pass leaves
    it to torch, BatchNorm folding treats it as any convolution.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__(channels, channels, kernel_size, stride=stride, padding=padding,
                         groups=channels, bias=bias)


class Mlp(nn.Module):
    """Transformer MLP: Linear -> GELU (erf) -> Dropout -> Linear -> Dropout. Tokens (B, N, C)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention on tokens (B, N, C) with a fused q/k/v projection.

    The product is ``F.scaled_dot_product_attention`` (dropout ``attn_drop`` on the
    probabilities while training). With ``return_attention=True`` the softmax map
    (B, heads, N, N) is computed explicitly and returned too (the official ``vis`` mode); the
    output is the same. (The C kernel and training's explicit product:
    :mod:`transunet_app.fast_layers.attention`.)
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
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, n, c = x.shape
        qkv = self.qkv(x)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        weights = None
        if return_attention:
            weights = ((q @ k.transpose(-2, -1)) * self.head_dim ** -0.5).softmax(dim=-1)
            out = F.dropout(weights, drop, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        out = out.transpose(1, 2).reshape(b, n, c)
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


def resample_abs_pos_embed(pos: torch.Tensor, new_size: tuple[int, int],
                           old_size: tuple[int, int] | None = None, num_prefix_tokens: int = 0,
                           mode: str = "bilinear", align_corners: bool = True) -> torch.Tensor:
    """Resample absolute position embeddings (1, P + Ho*Wo, C) to (1, P + Hn*Wn, C).

    The ``P = num_prefix_tokens`` leading (class) embeddings are kept; the grid part is
    interpolated with ``F.interpolate(mode, align_corners)`` (timm's
    ``resample_abs_pos_embed``). The families' rules: bilinear with aligned corners for
    TransUNet's ViT (the sampling of the official ``scipy.ndimage.zoom(order=1)``), bicubic
    without for CeiT (the official DeiT/CeiT fine-tuning rule).

    Args:
        pos: (1, P + Ho*Wo, C) embeddings, in their dtype (float64 stays float64).
        new_size: (Hn, Wn) grid.
        old_size: (Ho, Wo) grid; None: square, from the number of grid embeddings.

    Raises:
        ValueError: ``old_size`` is None and the grid embeddings are not a square number.
    """
    n_grid = pos.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(round(n_grid ** 0.5))
        if side * side != n_grid:
            raise ValueError(f"cannot infer a square grid from {n_grid} position embeddings")
        old_size = (side, side)
    if tuple(old_size) == tuple(new_size):
        return pos
    prefix, grid = pos[:, :num_prefix_tokens], pos[:, num_prefix_tokens:]
    c = grid.shape[-1]
    grid = grid.reshape(1, old_size[0], old_size[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_size), mode=mode, align_corners=align_corners)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], c)
    return torch.cat((prefix, grid), dim=1) if num_prefix_tokens else grid
