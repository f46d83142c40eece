"""CeiT encoders: CeiT-T, CeiT-S, CeiT-B (Convolution-enhanced image Transformer).

Numerically the official ``CeIT`` (coeusguo/ceit, ``ceit_model.py``, ``ceit_*_patch16_224``)
up to the tokens after its last block:

* **Image-to-Tokens (I2T)** stem: 7x7/2 conv (64 channels, no bias) + BatchNorm + 3x3/2
  max-pool (no activation, as the official ``Image2Tokens``), giving a 1/4 map; a 4x4/4 conv
  (``i2t.proj``) embeds it into tokens at 1/16;
* a class token and learned position embeddings (1 + h*w), interpolated for other input
  sizes bicubically without corner alignment (the official DeiT-style fine-tuning rule);
* 12 pre-norm blocks (LayerNorm eps 1e-6, fused-qkv attention with bias, scale
  ``head_dim ** -0.5``) whose feed-forward is the **LeFF**: the patch tokens, as a map, go
  through 1x1 conv + BN + GELU, depthwise 3x3 conv + BN + GELU, 1x1 conv + BN. The class token
  bypasses it: the official LeFF returns its (normalised) input for the class position, so
  the class token's residual adds its own ``norm2`` output; we keep that;
* **LCA** (layer-wise class-token attention): one block in which the last layer's class token
  attends to the 12 class tokens (+ a per-layer embedding), then MLP and the final norm.

Segmentation features: the bottleneck is the patch tokens after the last block, class token
removed, as ``(B, C, H/16, W/16)``, taken *before* any final norm: the official ``norm``
normalises only the LCA output (the class embedding), its scale and shift are fitted to that
one token's statistics, and the decoder's first conv is followed by BatchNorm anyway. Skips:
the I2T output at 1/4 (after max-pool) and the I2T conv + BN output at 1/2 (before the
max-pool, the analogue of TransUNet's ResNet root feature); there is no 1/8 feature.

LCA acts only on class tokens and cannot change the patch tokens, so the segmentation encoder
leaves it out by default (``include_lca=False``: its checkpoint tensors, ``pos_layer_embed``,
``norm`` and ``head`` are skipped and reported). With ``include_lca=True`` the encoder also
carries it and :meth:`CeiTEncoder.class_embedding` completes the official
``forward_features``; the fidelity tests check both.

Differences from the official code, all numerically neutral: attention runs through
``scaled_dot_product_attention``; the token grid may be non-square (the official LeFF assumes
a square grid) and of any size divisible by 16.

Paper: Yuan et al., "Incorporating Convolution Designs into Visual Transformers", ICCV 2021.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import Attention, DepthwiseConv2d, DropPath, Mlp, resample_abs_pos_embed
from .base import Encoder, EncoderOutput


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def _resample_pos_embed(pos: torch.Tensor, new_grid: tuple[int, int],
                        old_grid: tuple[int, int]) -> torch.Tensor:
    """(1, 1 + Ho*Wo, C) -> (1, 1 + Hn*Wn, C): class token kept, the grid bicubic with
    ``align_corners=False`` (the rule of the official CeiT/DeiT fine-tuning code)."""
    return resample_abs_pos_embed(pos, new_grid, old_grid, num_prefix_tokens=1, mode="bicubic",
                                  align_corners=False)


class Image2Tokens(nn.Module):
    """Conv 7x7/2 (no bias) + BN + max-pool 3x3/2: (B, Cin, H, W) -> (B, 64, H/4, W/4),
    also returning the pre-pool (B, 64, H/2, W/2) map."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=2,
                              padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor):
        half = self.bn(self.conv(x))
        return self.maxpool(half), half


class I2TEmbed(nn.Module):
    """I2T stem (``backbone``) + 4x4/4 patch conv (``proj``), as the official ``HybridEmbed``.

    Forward: (B, Cin, H, W) -> token map (B, C, H/16, W/16), stem maps (1/4, 1/2).
    """

    def __init__(self, in_channels: int, embed_dim: int, stem_channels: int = 64,
                 patch_size: int = 4):
        super().__init__()
        self.backbone = Image2Tokens(in_channels, stem_channels)
        self.proj = nn.Conv2d(stem_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor):
        quarter, half = self.backbone(x)
        return self.proj(quarter), quarter, half


class LeFF(nn.Module):
    """Locally-enhanced feed-forward on tokens (B, 1 + h*w, C): the patch tokens as a map go
    through pointwise conv + BN + GELU, depthwise conv + BN + GELU, pointwise conv + BN; the
    class token is passed through unchanged (official behaviour)."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, hidden_dim, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(hidden_dim)
        self.conv2 = DepthwiseConv2d(hidden_dim, kernel_size, padding=(kernel_size - 1) // 2)
        self.bn2 = nn.BatchNorm2d(hidden_dim)
        self.conv3 = nn.Conv2d(hidden_dim, dim, kernel_size=1)
        self.bn3 = nn.BatchNorm2d(dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        cls, tokens = x[:, :1], x[:, 1:]
        y = rearrange(tokens, "b (h w) c -> b c h w", h=hw[0], w=hw[1])  # channels_last view
        y = self.act(self.bn1(self.conv1(y)))
        y = self.act(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.cat((cls, rearrange(y, "b c h w -> b (h w) c")), dim=1)


class CeiTBlock(nn.Module):
    """``x + attn(norm1(x))``, then ``x + leff(norm2(x))``; tokens (B, 1 + h*w, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 kernel_size: int = 3, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.leff = LeFF(dim, int(dim * mlp_ratio), kernel_size)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], return_attention: bool = False):
        y, weights = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.leff(self.norm2(x), hw))
        return x, weights


class LCABlock(nn.Module):
    """Layer-wise class-token attention: the last of K class tokens (B, K, C) queries all K
    (q from the first C rows of ``attn.qkv``, k/v from the rest), then an MLP; -> (B, 1, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.feedforward = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, c = x.shape
        attn, heads = self.attn, self.attn.num_heads
        y = self.norm1(x)
        w, bias = attn.qkv.weight, attn.qkv.bias
        q = F.linear(y[:, -1:], w[:c], None if bias is None else bias[:c])
        kv = F.linear(y, w[c:], None if bias is None else bias[c:])
        q = q.reshape(b, 1, heads, c // heads).transpose(1, 2)
        kv = kv.reshape(b, k, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        drop = attn.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], dropout_p=drop)
        out = attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(b, 1, c)))
        x = x[:, -1:] + out
        return x + self.feedforward(self.norm2(x))


class CeiTFeatures(NamedTuple):
    """Everything one pass of :meth:`CeiTEncoder.features` computes."""

    tokens: torch.Tensor  # (B, 1 + h*w, C) after the last block, class token first
    patch_map: torch.Tensor  # (B, C, h, w): the same patch tokens as a map (bottleneck)
    stem_quarter: torch.Tensor  # (B, 64, H/4, W/4): I2T output
    stem_half: torch.Tensor  # (B, 64, H/2, W/2): I2T conv + BN before the max-pool
    cls_tokens: torch.Tensor  # (B, depth, C): the class token after each block (LCA input)
    attentions: Optional[list]  # per-block (B, heads, 1 + N, 1 + N) or None


class CeiTEncoder(Encoder):
    """CeiT encoder.

    Args:
        img_size: (H, W) or int; sets the stored position-embedding grid (H/16, W/16). Other
            sizes divisible by 16 run too (embeddings interpolated on the fly).
        in_channels: input channels (3 for ImageNet weights).
        embed_dim, depth, num_heads: transformer size (T: 192/12/3, S: 384/12/6, B: 768/12/12).
        mlp_ratio: LeFF hidden size / dim (official: 4).
        qkv_bias: bias of the fused qkv linear (official: True).
        stem_channels: I2T channels (official: 64).
        leff_kernel: depthwise kernel of the LeFF (official: 3).
        drop_rate, attn_drop_rate: dropout after embeddings / in attention (official: 0).
        drop_path_rate: stochastic depth, linearly increasing over blocks (official: 0.1).
        norm_eps: LayerNorm eps (official: 1e-6).
        include_lca: also build the LCA block, ``pos_layer_embed`` and the final norm (the
            classification path, see :meth:`class_embedding`); not used for segmentation.

    Forward: (B, in_channels, H, W) -> EncoderOutput with bottleneck (B, embed_dim, H/16,
    W/16) and skips (None, I2T (B, 64, H/4, W/4), I2T pre-pool (B, 64, H/2, W/2)). With
    ``return_attention`` the per-block maps (B, heads, 1 + N, 1 + N).
    """

    weight_family = "ceit"
    stem = "i2t.backbone.conv"
    size_divisor = 16
    bottleneck_stride = 16

    def __init__(self, img_size=224, in_channels: int = 3, embed_dim: int = 192, depth: int = 12,
                 num_heads: int = 3, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 stem_channels: int = 64, leff_kernel: int = 3, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 norm_eps: float = 1e-6, include_lca: bool = False):
        super().__init__()
        size = _pair(img_size)
        if any(s % self.size_divisor for s in size):
            raise ValueError(f"img_size {size} is not divisible by {self.size_divisor}")
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.bottleneck_channels = embed_dim
        self.skip_channels = (0, stem_channels, stem_channels)
        self.grid = (size[0] // 16, size[1] // 16)
        self.i2t = I2TEmbed(in_channels, embed_dim, stem_channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            CeiTBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, r,
                      leff_kernel, norm_eps) for r in rates)
        self.include_lca = include_lca
        if include_lca:
            self.lca = LCABlock(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate,
                                attn_drop_rate, norm_eps)
            self.pos_layer_embed = nn.Parameter(torch.zeros(1, depth, embed_dim))
            self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        # As the official: linears N(0, 0.02) truncated with zero bias, LayerNorms 1/0,
        # class token and position embeddings N(0, 0.02) truncated; convs keep torch defaults.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def features(self, x: torch.Tensor, return_attention: bool = False) -> CeiTFeatures:
        """Run stem and blocks: (B, in_channels, H, W) -> :class:`CeiTFeatures`."""
        self.check_input(x)
        fmap, quarter, half = self.i2t(x)
        b, c, h, w = fmap.shape
        tokens = torch.cat((self.cls_token.expand(b, -1, -1), rearrange(fmap, "b c h w -> b (h w) c")),
                           dim=1)
        pos = _resample_pos_embed(self.pos_embed, (h, w), self.grid)
        x = self.pos_drop(tokens + pos)
        cls_tokens, attentions = [], ([] if return_attention else None)
        for block in self.blocks:
            x, weights = block(x, (h, w), return_attention)
            cls_tokens.append(x[:, 0])
            if return_attention:
                attentions.append(weights)
        patch_map = rearrange(x[:, 1:], "b (h w) c -> b c h w", h=h, w=w)  # channels_last view
        return CeiTFeatures(x, patch_map, quarter, half, torch.stack(cls_tokens, dim=1),
                            attentions)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> EncoderOutput:
        f = self.features(x, return_attention)
        return EncoderOutput(f.patch_map, (None, f.stem_quarter, f.stem_half), f.attentions)

    def class_embedding(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        """The end of the official ``forward_features``: LCA over the per-layer class tokens
        (B, depth, C) of :meth:`features`, then the final norm -> (B, C). Needs
        ``include_lca=True``."""
        if not self.include_lca:
            raise RuntimeError("this CeiT encoder was built without the LCA block "
                               "(include_lca=False)")
        return self.norm(self.lca(cls_tokens + self.pos_layer_embed)).flatten(1)


# ---------------------------------------------------------------------------------------------
# Registered variants (ceit_{tiny,small,base}_patch16_224 of the official ceit_model.py).

_VARIANTS = {
    "CeiT-T": dict(embed_dim=192, num_heads=3),
    "CeiT-S": dict(embed_dim=384, num_heads=6),
    "CeiT-B": dict(embed_dim=768, num_heads=12),
}


def _register() -> None:
    from ..registry import register_encoder

    for name, kwargs in _VARIANTS.items():
        register_encoder(name, CeiTEncoder, depth=12, **kwargs, model_defaults=dict(n_skip=3),
                         description=f"{name} (ImageNet-1k 224), skips from the I2T stem "
                                     f"(1/4 and its pre-pool 1/2 map)")


_register()


# ---------------------------------------------------------------------------------------------
# Official weight format: the CeiT release (DeiT-style training checkpoint {'model': state,
# 'optimizer': ..., 'args': ...}; also a bare state dict).

_CLASSIFIER = ("head.", "lca.", "norm.", "pos_layer_embed")


def convert_official_ceit(state: Mapping, encoder: CeiTEncoder):
    """CeiT release state dict -> encoder state dict. Module names mirror the official ones;
    the position embeddings are resized (bicubic, class token kept) when the encoder's grid
    differs; ``head`` is skipped, and so are LCA, ``pos_layer_embed`` and ``norm`` unless the
    encoder was built with ``include_lca``."""
    out, skipped, resized = {}, {}, {}
    for key, value in state.items():
        if key.startswith("head."):
            skipped[key] = "ImageNet classifier head (not used for segmentation)"
        elif key.startswith(_CLASSIFIER) and not encoder.include_lca:
            skipped[key] = "class-token path (LCA / final norm), not used for segmentation"
        elif key.startswith(("i2t.", "blocks.", "cls_token", "pos_embed") + _CLASSIFIER):
            out[key] = value
        else:
            skipped[key] = "not part of the CeiT encoder"
    pos = out.get("pos_embed")
    if pos is not None:
        pos = torch.as_tensor(pos)
        n_old = pos.shape[1] - 1
        gs = int(round(n_old ** 0.5))
        if gs * gs == n_old and (gs, gs) != encoder.grid:
            out["pos_embed"] = _resample_pos_embed(pos, encoder.grid, (gs, gs))
            resized["pos_embed"] = (tuple(pos.shape), tuple(out["pos_embed"].shape))
    return out, skipped, resized


def _is_official_ceit(keys: set) -> bool:
    return "i2t.backbone.conv.weight" in keys and "blocks.0.leff.conv1.weight" in keys


def _register_formats() -> None:
    from ..pretrained import WeightFormat, register_weight_format

    register_weight_format(WeightFormat(
        name="official CeiT", family="ceit", scope="encoder",
        detect=_is_official_ceit, convert=convert_official_ceit))


_register_formats()
