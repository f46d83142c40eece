"""Conformer encoders (Conformer-Ti, -S, -B, patch 16): a CNN and a transformer run side by side.

Numerically the official ``Conformer`` (pengzhiliang/Conformer, ``conformer.py`` + ``models.py``):

* stem: 7x7/2 conv (64, no bias) + BatchNorm (eps 1e-5) + ReLU (1/2), 3x3/2 max-pool (1/4);
* stage 1: a ResNet bottleneck ``conv_1`` (64 -> C1, projection shortcut) on the CNN side, and on
  the transformer side ``trans_patch_conv`` (4x4/4 conv on the pooled stem: tokens at 1/16), a
  prepended class token and one pre-norm block ``trans_1``. There are NO position embeddings:
  position reaches the tokens through the convolutional stem and the coupling units, so any
  input size divisible by 16 runs without interpolating anything;
* stages 2..12 (``conv_trans_i``), each one :class:`ConvTransBlock`:
  ``cnn_block`` (bottleneck; its 3x3 output ``x2`` also feeds the coupling) ->
  ``squeeze_block`` (FCU down: 1x1 conv + avg-pool by the CNN/token stride ratio + LayerNorm
  (eps 1e-6) + GELU, class token re-attached from the transformer side) added to the tokens ->
  ``trans_block`` (pre-norm ViT block, LayerNorm eps 1e-6, fused qkv with bias) ->
  ``expand_block`` (FCU up: 1x1 conv + BatchNorm (eps 1e-6) + ReLU + nearest interpolation back
  to the CNN grid) -> ``fusion_block`` (bottleneck whose 3x3 conv reads ``x + up(tokens)``);
  all CNN BatchNorms use eps 1e-6;
* resolutions: stages 1-4 at 1/4 (C1 = 64 * ratio), 5-8 at 1/8 (2 C1), 9-12 at 1/16 (4 C1);
  the first block of stages 5 and 9 has stride 2. The fusion block of the LAST stage has
  stride 2 (``last_fusion``), so the final CNN map is at 1/32 (ceil for odd 1/16 grids);
* ``trans_norm``: LayerNorm (default eps 1e-5) on the final tokens.

What feeds the cascaded decoder (this is our choice; the official model only classifies):

==========  ======================================================  ===================
input       source                                                  channels (Ti/S/B)
==========  ======================================================  ===================
bottleneck  concat[ final CNN map (end of stage 12, 1/32) resized   640 / 1408 / 2112
            bilinearly (corners aligned) to the 1/16 token grid,
            ``trans_norm`` patch tokens (class token dropped)
            reshaped to the 1/16 grid ]
skip 1/8    CNN branch, end of stage 8 (``conv_trans_8``)           128 / 512 / 768
skip 1/4    CNN branch, end of stage 4 (``conv_trans_4``)           64 / 256 / 384
skip 1/2    stem conv1 + bn1 + ReLU, before the max-pool            64 / 64 / 64
==========  ======================================================  ===================

(For a reduced ``depth``, stages end at depth/3, 2 depth/3 and depth.)

Why a parameter-free concatenation and not a 1x1 projection: both halves are exactly the
representations the ImageNet heads were trained on (the conv head pools the final CNN map, the
transformer head reads the ``trans_norm`` output), so every pretrained tensor, including the
stride-2 ``last_fusion`` block and ``trans_norm``, stays meaningful and is used; a new 1x1
projection would sit untrained between them and the decoder and only duplicate the decoder's own
``conv_more`` (3x3 conv + BN + ReLU), which already learns the mix of the two branches. Only
the classification heads (``conv_cls_head``, ``trans_cls_head``; ``pooling`` has no tensors) are
left out.

Differences from the official code, all numerically neutral: attention runs through
``scaled_dot_product_attention`` (``layers.Attention``), residual additions are out of place,
and ``num_med_block`` (0 in every released variant) is not supported.

Paper: Peng et al., "Conformer: Local Features Coupling Global Representations for Visual
Recognition", ICCV 2021 (arXiv:2105.03889).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import TransformerBlock
from .base import Encoder, EncoderOutput

#: BatchNorm/LayerNorm eps of the CNN blocks, FCUs and transformer blocks (official
#: ``partial(nn.BatchNorm2d, eps=1e-6)`` / ``partial(nn.LayerNorm, eps=1e-6)``); the stem BN
#: and ``trans_norm`` keep PyTorch's default 1e-5.
_EPS = 1e-6
STEM_CHANNELS = 64


class ConvBlock(nn.Module):
    """ResNet bottleneck of the CNN branch: 1x1 -> 3x3 (stride) -> 1x1, expansion 4.

    Args:
        in_channels, out_channels: channels in and out (the middle width is out / 4).
        stride: stride of the 3x3 conv (and of the projection shortcut).
        res_conv: use a 1x1 conv + BN projection shortcut (else identity).

    Forward: ``x`` (B, in, H, W) and optionally ``x_t`` (B, out/4, H, W), the up-sampled
    tokens added to the input of the 3x3 conv (fusion) -> ``(out, x2)`` with ``out``
    (B, out, H/s, W/s) and ``x2`` (B, out/4, H/s, W/s) the activated 3x3 output (what the FCU
    down-projection reads).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 res_conv: bool = False):
        super().__init__()
        med = out_channels // 4
        self.conv1 = nn.Conv2d(in_channels, med, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(med, eps=_EPS)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(med, med, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(med, eps=_EPS)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(med, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=_EPS)
        self.act3 = nn.ReLU(inplace=True)
        self.res_conv = res_conv
        if res_conv:
            self.residual_conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.residual_bn = nn.BatchNorm2d(out_channels, eps=_EPS)

    def forward(self, x: torch.Tensor, x_t: Optional[torch.Tensor] = None):
        y = self.act1(self.bn1(self.conv1(x)))
        if x_t is not None:
            y = y + x_t
        x2 = self.act2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(x2))
        shortcut = self.residual_bn(self.residual_conv(x)) if self.res_conv else x
        return self.act3(y + shortcut), x2


class FCUDown(nn.Module):
    """Feature coupling, CNN -> tokens: 1x1 conv, avg-pool by ``dw_stride``, LayerNorm, GELU.

    Forward: CNN map (B, Cin, H, W) and the current tokens (B, 1 + N, C) -> (B, 1 + N, C)
    with N = (H / dw_stride) (W / dw_stride); the class token is taken from the tokens.
    """

    def __init__(self, in_channels: int, embed_dim: int, dw_stride: int):
        super().__init__()
        self.conv_project = nn.Conv2d(in_channels, embed_dim, 1)
        self.sample_pooling = nn.AvgPool2d(dw_stride, dw_stride)
        self.ln = nn.LayerNorm(embed_dim, eps=_EPS)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = rearrange(self.sample_pooling(self.conv_project(x)), "b c h w -> b (h w) c")
        x = self.act(self.ln(x))
        return torch.cat([tokens[:, :1], x], dim=1)


class FCUUp(nn.Module):
    """Feature coupling, tokens -> CNN: 1x1 conv + BN + ReLU on the patch-token grid, then
    nearest up-sampling by ``up_stride``.

    Forward: tokens (B, 1 + h w, C) and the grid (h, w) -> (B, Cout, h up, w up).
    """

    def __init__(self, embed_dim: int, out_channels: int, up_stride: int):
        super().__init__()
        self.up_stride = up_stride
        self.conv_project = nn.Conv2d(embed_dim, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels, eps=_EPS)
        self.act = nn.ReLU()

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = tokens.shape
        grid = tokens[:, 1:].transpose(1, 2).reshape(b, c, h, w)
        y = self.act(self.bn(self.conv_project(grid)))
        return F.interpolate(y, size=(h * self.up_stride, w * self.up_stride), mode="nearest")


class ConvTransBlock(nn.Module):
    """One Conformer stage (2..12): CNN bottleneck, FCU down, transformer block, FCU up, fusion.

    Args:
        in_channels, out_channels: CNN channels in and out.
        stride: stride of the CNN bottleneck (2 at the first stage of a resolution group).
        res_conv: projection shortcut in the CNN bottleneck.
        dw_stride: ratio of the CNN grid to the token grid (4, 2, 1 for patch 16).
        embed_dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, drop_path: transformer.
        last_fusion: the fusion bottleneck has stride 2 and a projection shortcut (the final
            stage of the official model), taking the CNN map to 1/32.

    Forward: CNN map (B, Cin, H, W), tokens (B, 1 + N, C) -> (CNN map, tokens, attention or
    None).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, res_conv: bool,
                 dw_stride: int, embed_dim: int, num_heads: int, mlp_ratio: float,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, last_fusion: bool = False):
        super().__init__()
        self.dw_stride = dw_stride
        self.cnn_block = ConvBlock(in_channels, out_channels, stride, res_conv)
        if last_fusion:
            self.fusion_block = ConvBlock(out_channels, out_channels, stride=2, res_conv=True)
        else:
            self.fusion_block = ConvBlock(out_channels, out_channels)
        self.squeeze_block = FCUDown(out_channels // 4, embed_dim, dw_stride)
        self.expand_block = FCUUp(embed_dim, out_channels // 4, dw_stride)
        self.trans_block = TransformerBlock(embed_dim, num_heads, int(embed_dim * mlp_ratio),
                                            qkv_bias=qkv_bias, drop=drop, attn_drop=attn_drop,
                                            drop_path=drop_path, norm_eps=_EPS)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, return_attention: bool = False):
        x, x2 = self.cnn_block(x)
        h, w = x2.shape[-2] // self.dw_stride, x2.shape[-1] // self.dw_stride
        tokens, weights = self.trans_block(self.squeeze_block(x2, tokens) + tokens,
                                           return_attention)
        x, _ = self.fusion_block(x, self.expand_block(tokens, h, w))
        return x, tokens, weights


@dataclass
class ConformerFeatures:
    """All intermediate outputs of the two branches (what the fidelity tests compare).

    ``cnn[i]`` / ``tokens[i]`` are the outputs of stage ``i + 1`` (stage 1 = ``conv_1`` /
    ``trans_1``, stage k >= 2 = ``conv_trans_k``); tokens are (B, 1 + h w, C) with the class
    token first; ``normed`` is ``trans_norm(tokens[-1])``; ``stem`` the 1/2 map before the
    max-pool; ``grid`` the token grid (h, w) = (H/16, W/16).
    """

    stem: torch.Tensor
    cnn: list
    tokens: list
    normed: torch.Tensor
    grid: tuple
    attentions: Optional[list] = None


class ConformerEncoder(Encoder):
    """Conformer (patch 16) as a TransUNet encoder; see the module docstring for the outputs.

    Args:
        img_size: int or (H, W); only checked for divisibility by 16 (no position embeddings,
            so every size divisible by 16 runs with the same weights).
        in_channels: input channels (3 for ImageNet weights).
        base_channel, channel_ratio: CNN widths C1 = base * ratio, 2 C1, 4 C1
            (Ti: 64 x 1, S: 64 x 4, B: 64 x 6).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer (depth divisible by 3;
            Ti/S: 384/12/6, B: 576/12/9; mlp 4; qkv bias True).
        dropout: dropout in the transformer MLP/projection (official default 0).
        attention_dropout: dropout on attention probabilities (official default 0).
        drop_path: stochastic-depth rate, linear from 0 over the ``depth`` transformer blocks
            (official ImageNet training: 0.1).

    Forward: (B, in_channels, H, W) -> EncoderOutput; ``forward_features`` gives every stage.
    """

    weight_family = "conformer"
    stem = "conv1"
    size_divisor = 16
    bottleneck_stride = 16

    def __init__(self, img_size=224, in_channels: int = 3, base_channel: int = 64,
                 channel_ratio: float = 4, embed_dim: int = 384, depth: int = 12,
                 num_heads: int = 6, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 dropout: float = 0.0, attention_dropout: float = 0.0, drop_path: float = 0.1):
        super().__init__()
        if depth < 3 or depth % 3:
            raise ValueError(f"Conformer depth must be a positive multiple of 3, got {depth}")
        for s in ((img_size, img_size) if isinstance(img_size, int) else img_size):
            if int(s) % self.size_divisor:
                raise ValueError(f"img_size {img_size} is not divisible by {self.size_divisor}")
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.depth = depth
        c1 = int(base_channel * channel_ratio)
        widths = (c1, 2 * c1, 4 * c1)
        self.group_ends = (depth // 3, 2 * depth // 3, depth)  # last stage of each resolution
        self.bottleneck_channels = widths[2] + embed_dim
        self.skip_channels = (widths[1], widths[0], STEM_CHANNELS)
        rates = [drop_path * i / (depth - 1) for i in range(depth)]  # official linspace
        tkw = dict(num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=dropout,
                   attn_drop=attention_dropout)

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv_1 = ConvBlock(STEM_CHANNELS, c1, res_conv=True)
        self.trans_patch_conv = nn.Conv2d(STEM_CHANNELS, embed_dim, 4, stride=4)
        self.trans_1 = TransformerBlock(embed_dim, num_heads, int(embed_dim * mlp_ratio),
                                        qkv_bias=qkv_bias, drop=dropout,
                                        attn_drop=attention_dropout, drop_path=rates[0],
                                        norm_eps=_EPS)
        self.stage_names = []
        for i in range(2, depth + 1):
            group = 0 if i <= self.group_ends[0] else 1 if i <= self.group_ends[1] else 2
            first = i - 1 in self.group_ends[:2]  # first stage of groups 2 and 3 downsamples
            cin = widths[group - 1] if first else widths[group]
            name = f"conv_trans_{i}"
            self.add_module(name, ConvTransBlock(
                cin, widths[group], stride=2 if first else 1, res_conv=first,
                dw_stride=4 >> group, embed_dim=embed_dim, drop_path=rates[i - 1],
                last_fusion=i == depth, **tkw))
            self.stage_names.append(name)
        self.trans_norm = nn.LayerNorm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # The official initialisation: linears N(0, .02) with zero bias, unit norms, He
        # (fan-out) convs; conv biases keep PyTorch's default. The official truncated normal
        # cuts at +-2 absolute, i.e. 100 std: a plain normal is the same distribution and
        # several times faster to draw.
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor,
                         return_attention: bool = False) -> ConformerFeatures:
        """Run both branches and keep every stage output (see :class:`ConformerFeatures`)."""
        self.check_input(x)
        b = x.shape[0]
        stem = self.act1(self.bn1(self.conv1(x)))  # (B, 64, H/2, W/2)
        base = self.maxpool(stem)  # (B, 64, H/4, W/4)
        cnn, _ = self.conv_1(base)
        tokens = self.trans_patch_conv(base)  # (B, C, H/16, W/16)
        grid = tuple(tokens.shape[-2:])
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), rearrange(tokens, "b c h w -> b (h w) c")],
                           dim=1)
        tokens, weights = self.trans_1(tokens, return_attention)
        attentions = [weights] if return_attention else None
        cnn_out, token_out = [cnn], [tokens]
        for name in self.stage_names:
            cnn, tokens, weights = getattr(self, name)(cnn, tokens, return_attention)
            cnn_out.append(cnn)
            token_out.append(tokens)
            if return_attention:
                attentions.append(weights)
        return ConformerFeatures(stem, cnn_out, token_out, self.trans_norm(tokens), grid,
                                 attentions)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> EncoderOutput:
        f = self.forward_features(x, return_attention)
        return EncoderOutput(fuse_bottleneck(f.cnn[-1], f.normed, f.grid),
                             (f.cnn[self.group_ends[1] - 1], f.cnn[self.group_ends[0] - 1], f.stem),
                             f.attentions)


def fuse_bottleneck(cnn: torch.Tensor, normed_tokens: torch.Tensor, grid) -> torch.Tensor:
    """The 1/16 bottleneck: concat[final CNN map resized to the token grid, patch tokens].

    Args:
        cnn: (B, Cc, h', w'), the final CNN map at 1/32 (h' = ceil(h / 2)).
        normed_tokens: (B, 1 + h w, Ct), ``trans_norm`` output with the class token first.
        grid: (h, w), the 1/16 token grid.

    Returns:
        (B, Cc + Ct, h, w).
    """
    b, _, c = normed_tokens.shape
    h, w = grid
    tokens = normed_tokens[:, 1:].transpose(1, 2).reshape(b, c, h, w)
    # Corners aligned: output pixel p of the stride-2 conv is centred on 1/16 pixel 2p, so
    # this samples the 1/32 map at the right places (exactly so for odd grids).
    cnn = F.interpolate(cnn, size=(h, w), mode="bilinear", align_corners=True)
    return torch.cat([cnn, tokens], dim=1)


# ---------------------------------------------------------------------------------------------
# Registered variants: official ``models.py`` (Conformer_{tiny,small,base}_patch16).

_VARIANTS = {
    "Conformer-Ti": dict(channel_ratio=1, embed_dim=384, num_heads=6),
    "Conformer-S": dict(channel_ratio=4, embed_dim=384, num_heads=6),
    "Conformer-B": dict(channel_ratio=6, embed_dim=576, num_heads=9),
}
_PARAMS = {"Conformer-Ti": "23.5M", "Conformer-S": "37.7M", "Conformer-B": "83.3M"}


def _register() -> None:
    from ..registry import register_encoder

    for name, cfg in _VARIANTS.items():
        register_encoder(name, ConformerEncoder, **cfg, base_channel=64, depth=12, mlp_ratio=4.0,
                         qkv_bias=True, model_defaults=dict(n_skip=3),
                         description=f"{name} (patch 16, {_PARAMS[name]} with ImageNet heads): "
                                     f"CNN skips 1/8, 1/4, stem 1/2; CNN+token bottleneck")


_register()


# ---------------------------------------------------------------------------------------------
# Official weight format (the Conformer release .pth; raw or {'model': ...} as main.py saves).

_HEADS = ("conv_cls_head.", "trans_cls_head.")


def convert_official_conformer(state: Mapping, encoder: ConformerEncoder):
    """Official Conformer state dict -> encoder state dict.

    Module names are the official ones, so every encoder tensor maps to itself; the ImageNet
    classifier heads are skipped. Keys of a different depth or of ``med_block`` (not in any
    release) have no place in the encoder and make the loader refuse the file.
    """
    out, skipped = {}, {}
    for key, value in state.items():
        if key.startswith(_HEADS):
            skipped[key] = "ImageNet classifier head (not used for segmentation)"
        else:
            out[key] = value
    return out, skipped


def _is_conformer(keys: set) -> bool:
    return "trans_patch_conv.weight" in keys and any(k.startswith("conv_trans_") for k in keys)


def _register_formats() -> None:
    from ..pretrained import WeightFormat, register_weight_format

    register_weight_format(WeightFormat(
        name="official Conformer", family="conformer", scope="encoder",
        detect=_is_conformer, convert=convert_official_conformer))


_register_formats()
