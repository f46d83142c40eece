"""CvT encoders: CvT-13, CvT-21 (ImageNet 224) and CvT-W24 (ImageNet-22k, 384).

Numerically the official ``ConvolutionalVisionTransformer`` (microsoft/CvT,
``lib/models/cls_cvt.py`` with ``experiments/imagenet/cvt/*.yaml``) up to its stage outputs.
Three stages, each

* a **convolutional token embedding**: Conv2d (7x7/4 pad 2, then 3x3/2 pad 1 twice) followed
  by a LayerNorm over channels, giving tokens at 1/4, 1/8 and 1/16 of the input;
* pre-norm transformer blocks whose attention takes q/k/v from a **convolutional
  projection** ("dw_bn": depthwise 3x3 conv without bias + BatchNorm, stride 1 for q and
  stride 2 for k/v), then separate q/k/v linears (with bias). The attention scale is
  ``dim ** -0.5`` with the full embedding dim, not the head dim, as in the official code;
* an MLP with ``QuickGELU`` (``x * sigmoid(1.702 x)``, what the official ``get_cls_model``
  passes) and LayerNorm eps 1e-5.

A class token exists only in stage 3; it skips the convolutional projection, attends and is
attended to, so it changes the patch tokens and its weights are part of the encoder. There
are no position embeddings (``POS_EMBED: [False, False, False]`` in every official YAML): the
zero-padded convolutions carry position, so any input size divisible by 16 runs unchanged.

Segmentation features: the stage-3 patch tokens (class token removed) are the bottleneck
``(B, 384 | 1024, H/16, W/16)``; the stage-2 and stage-1 token maps are the skips at 1/8 and
1/4; there is no 1/2 feature. These are exactly the official stage outputs (no final norm:
the official ``norm`` only normalises the class token for the classifier, so it is skipped
when loading, like ``head``).

Differences from the official code, all numerically neutral: attention runs through
``scaled_dot_product_attention``; LayerNorm computes in float32 only for fp16/bf16 inputs (the
official casts every input to float32, which is the identity for float32 and would truncate a
float64 fidelity run); token maps may be non-square.

Paper: Wu et al., "CvT: Introducing Convolutions to Vision Transformers", ICCV 2021.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import DepthwiseConv2d, DropPath, Mlp
from .base import Encoder, EncoderOutput

#: (kernel, stride, padding) of the three convolutional token embeddings (every official YAML).
_EMBED = ((7, 4, 2), (3, 2, 1), (3, 2, 1))
#: class token per stage (official ``CLS_TOKEN: [False, False, True]``).
_CLS = (False, False, True)


class LayerNorm(nn.LayerNorm):
    """LayerNorm that computes in float32 for half-precision inputs (as the official fp16
    guard) and in the input dtype otherwise, so float64 runs stay float64."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            w = None if self.weight is None else self.weight.float()
            b = None if self.bias is None else self.bias.float()
            return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)
        return super().forward(x)


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the activation of the official CvT MLPs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def _tokens_to_map(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, C) -> (B, C, h, w) as a channels_last view (no copy)."""
    return rearrange(x, "b (h w) c -> b c h w", h=hw[0], w=hw[1])


def _map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C)."""
    return rearrange(x, "b c h w -> b (h w) c")


class ConvEmbed(nn.Module):
    """Convolutional token embedding: (B, Cin, H, W) -> tokens (B, h*w, C) and (h, w)."""

    def __init__(self, in_channels: int, dim: int, kernel: int, stride: int, padding: int,
                 eps: float):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=kernel, stride=stride,
                              padding=padding)
        self.norm = LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        return self.norm(_map_to_tokens(x)), (x.shape[2], x.shape[3])


def _dw_bn(dim: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    """The official 'dw_bn' projection: depthwise conv (no bias) + BatchNorm, on (B, C, h, w)."""
    return nn.Sequential(OrderedDict([
        ("conv", DepthwiseConv2d(dim, kernel, stride=stride, padding=padding, bias=False)),
        ("bn", nn.BatchNorm2d(dim)),
    ]))


class ConvAttention(nn.Module):
    """Multi-head attention with convolutional q/k/v projections.

    Args:
        dim: embedding dim C.
        num_heads: heads (C must be divisible by it).
        qkv_bias: bias of the q/k/v linears (official YAMLs: True).
        with_cls_token: the first token is a class token that bypasses the convolutions.
        kernel, stride_q, stride_kv, padding_q, padding_kv: of the depthwise projections.

    Forward: tokens (B, [1+] h*w, C) and (h, w) -> (B, [1+] h*w, C), attention
    (B, heads, Nq, Nkv) or None; Nkv is about a quarter of Nq (stride-2 keys/values).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, with_cls_token: bool = False, kernel: int = 3,
                 stride_q: int = 1, stride_kv: int = 2, padding_q: int = 1, padding_kv: int = 1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.with_cls_token = with_cls_token
        # Official: ``dim_out ** -0.5`` (the whole embedding dim, not the head dim).
        self.scale = dim ** -0.5
        self.attn_drop = attn_drop
        self.conv_proj_q = _dw_bn(dim, kernel, stride_q, padding_q)
        self.conv_proj_k = _dw_bn(dim, kernel, stride_kv, padding_kv)
        self.conv_proj_v = _dw_bn(dim, kernel, stride_kv, padding_kv)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, drop: float,
               return_attention: bool):
        """``softmax(q k^T * scale) v`` on (B, heads, N, d) heads with dropout ``drop`` on the
        probabilities, and the probabilities (B, heads, Nq, Nkv) when ``return_attention``."""
        if return_attention:
            weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            return F.dropout(weights, drop, self.training) @ v, weights
        return F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale), None

    def forward(self, x: torch.Tensor, hw: tuple[int, int], return_attention: bool = False):
        b, n, c = x.shape
        cls = None
        if self.with_cls_token:
            cls, x = x[:, :1], x[:, 1:]
        fmap = _tokens_to_map(x, hw)
        q, k, v = (_map_to_tokens(p(fmap))
                   for p in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v))
        if cls is not None:
            q, k, v = (torch.cat((cls, t), dim=1) for t in (q, k, v))
        q, k, v = (self._heads(lin(t)) for lin, t in ((self.proj_q, q), (self.proj_k, k),
                                                      (self.proj_v, v)))
        out, weights = self.attend(q, k, v, self.attn_drop if self.training else 0.0,
                                   return_attention)
        out = out.transpose(1, 2).reshape(b, -1, c)
        return self.proj_drop(self.proj(out)), weights


class CvTBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``; tokens (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 with_cls_token: bool = False, eps: float = 1e-5):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = ConvAttention(dim, num_heads, qkv_bias, attn_drop, drop, with_cls_token)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.mlp.act = QuickGELU()

    def forward(self, x: torch.Tensor, hw: tuple[int, int], return_attention: bool = False):
        y, weights = self.attn(self.norm1(x), hw, return_attention)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class CvTStage(nn.Module):
    """Token embedding + blocks: (B, Cin, H, W) -> map (B, C, H/s, W/s), class token or None."""

    def __init__(self, in_channels: int, dim: int, depth: int, num_heads: int, embed: Sequence[int],
                 with_cls_token: bool, mlp_ratio: float, qkv_bias: bool, drop: float,
                 attn_drop: float, drop_path: float, eps: float):
        super().__init__()
        self.patch_embed = ConvEmbed(in_channels, dim, *embed, eps=eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if with_cls_token else None
        self.pos_drop = nn.Dropout(drop)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            CvTBlock(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, r, with_cls_token, eps)
            for r in rates)

    def forward(self, x: torch.Tensor, attentions: Optional[list] = None):
        x, hw = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x)
        for block in self.blocks:
            x, weights = block(x, hw, attentions is not None)
            if attentions is not None:
                attentions.append(weights)
        cls = None
        if self.cls_token is not None:
            cls, x = x[:, :1], x[:, 1:]
        return _tokens_to_map(x, hw), cls


class CvTEncoder(Encoder):
    """CvT encoder (three convolutional-transformer stages).

    Args:
        img_size: nominal input size (int or (H, W)); CvT has no position embeddings, so it
            is only checked for divisibility; any size divisible by 16 runs.
        in_channels: input channels (3 for ImageNet weights).
        dims, depths, heads: per stage (CvT-13: (64, 192, 384), (1, 2, 10), (1, 3, 6)).
        mlp_ratio: MLP hidden size / dim (official: 4).
        qkv_bias: bias of the q/k/v linears (official: True).
        drop_rate, attn_drop_rate: dropout after embeddings/MLP/projection, on attention.
        drop_path: stochastic-depth rate per stage, linearly increasing over its blocks
            (official YAMLs: (0, 0, 0.1), W24: (0, 0, 0.3)).
        norm_eps: LayerNorm eps (official: 1e-5).

    Forward: (B, in_channels, H, W) -> EncoderOutput with bottleneck (B, dims[2], H/16, W/16)
    and skips (stage 2 (B, dims[1], H/8, W/8), stage 1 (B, dims[0], H/4, W/4), None). With
    ``return_attention`` the per-block attention maps of all stages, (B, heads, Nq, Nkv).
    """

    weight_family = "cvt"
    stem = "stage0.patch_embed.proj"
    size_divisor = 16
    bottleneck_stride = 16

    def __init__(self, img_size=224, in_channels: int = 3, dims: Sequence[int] = (64, 192, 384),
                 depths: Sequence[int] = (1, 2, 10), heads: Sequence[int] = (1, 3, 6),
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path: Sequence[float] = (0.0, 0.0, 0.1),
                 norm_eps: float = 1e-5):
        super().__init__()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if any(int(s) % self.size_divisor for s in size):
            raise ValueError(f"img_size {size} is not divisible by {self.size_divisor}")
        if not (len(dims) == len(depths) == len(heads) == len(drop_path) == 3):
            raise ValueError("CvT needs dims, depths, heads and drop_path for 3 stages")
        self.img_size = tuple(int(s) for s in size)
        self.in_channels = in_channels
        self.bottleneck_channels = int(dims[2])
        self.skip_channels = (int(dims[1]), int(dims[0]), 0)
        cin = in_channels
        for i in range(3):
            stage = CvTStage(cin, dims[i], depths[i], heads[i], _EMBED[i], _CLS[i], mlp_ratio,
                             qkv_bias, drop_rate, attn_drop_rate, drop_path[i], norm_eps)
            setattr(self, f"stage{i}", stage)
            cin = dims[i]
        self._init_weights()

    def _init_weights(self) -> None:
        # As the official 'trunc_norm' init: linears N(0, 0.02) truncated, zero bias; norms 1/0.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.stage2.cls_token, std=0.02)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> EncoderOutput:
        self.check_input(x)
        attentions = [] if return_attention else None
        s1, _ = self.stage0(x, attentions)
        s2, _ = self.stage1(s1, attentions)
        s3, _ = self.stage2(s2, attentions)
        return EncoderOutput(s3, (s2, s1, None), attentions)

    def stage_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The official per-stage outputs: maps of stages 1-3 and the stage-3 class token
        (B, 1, C), as ``VisionTransformer.forward`` of each official stage returns them."""
        self.check_input(x)
        s1, _ = self.stage0(x)
        s2, _ = self.stage1(s1)
        s3, cls = self.stage2(s2)
        return s1, s2, s3, cls


# ---------------------------------------------------------------------------------------------
# Registered variants (experiments/imagenet/cvt/cvt-13-224x224.yaml, cvt-21-224x224.yaml,
# cvt-w24-384x384.yaml).

_VARIANTS = {
    "CvT-13": dict(dims=(64, 192, 384), depths=(1, 2, 10), heads=(1, 3, 6),
                   drop_path=(0.0, 0.0, 0.1)),
    "CvT-21": dict(dims=(64, 192, 384), depths=(1, 4, 16), heads=(1, 3, 6),
                   drop_path=(0.0, 0.0, 0.1)),
    "CvT-W24": dict(dims=(192, 768, 1024), depths=(2, 2, 20), heads=(3, 12, 16),
                    drop_path=(0.0, 0.0, 0.3)),
}
_DESCRIPTIONS = {
    "CvT-13": "CvT-13 (ImageNet-1k 224), skips from stages 2 and 1 (1/8, 1/4)",
    "CvT-21": "CvT-21 (ImageNet-1k 224), skips from stages 2 and 1 (1/8, 1/4)",
    "CvT-W24": "CvT-W24 (ImageNet-22k 384 weights), skips from stages 2 and 1 (1/8, 1/4)",
}


def _register() -> None:
    from ..registry import register_encoder

    for name, kwargs in _VARIANTS.items():
        register_encoder(name, CvTEncoder, **kwargs, model_defaults=dict(n_skip=2),
                         description=_DESCRIPTIONS[name])


_register()


# ---------------------------------------------------------------------------------------------
# Official weight format: the CvT release .pth (a plain state dict of
# ConvolutionalVisionTransformer; training checkpoints wrap it as {'state_dict': ...}).

def convert_official_cvt(state: Mapping, encoder: CvTEncoder):
    """CvT release state dict -> encoder state dict. Module names mirror the official ones,
    so stage tensors pass through; the classifier ``head.*`` and the class-token ``norm.*``
    are skipped (segmentation uses neither)."""
    out, skipped = {}, {}
    for key, value in state.items():
        if key.startswith("stage"):
            out[key] = value
        elif key.startswith("head."):
            skipped[key] = "ImageNet classifier head (not used for segmentation)"
        elif key.startswith("norm."):
            skipped[key] = "final LayerNorm of the class token (classifier path only)"
        else:
            skipped[key] = "not part of the CvT encoder"
    return out, skipped


def _register_formats() -> None:
    from ..pretrained import WeightFormat, register_weight_format

    register_weight_format(WeightFormat(
        name="official CvT", family="cvt", scope="encoder",
        detect=lambda keys: "stage0.patch_embed.proj.weight" in keys,
        convert=convert_official_cvt))


_register_formats()
