"""The cascaded upsampler (DecoderCup) of TransUNet and its segmentation head.

Built only from the encoder's declared channels: the decoder never branches on a backbone.
Numerically the official ``DecoderCup``: ``conv_more`` (3x3 conv + BN + ReLU to 512), then four
blocks of [bilinear x2 upsampling with aligned corners, concat skip, (3x3 conv + BN + ReLU) x 2]
with channels (256, 128, 64, 16); module names follow the official ones so state dicts map 1:1.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Conv2dReLU(nn.Sequential):
    """3x3 conv (no bias) + BatchNorm + ReLU; keys ``0.weight``, ``1.*`` as in the official code."""

    @property
    def conv(self) -> nn.Module:
        """The convolution (the first layer; passes may have replaced it)."""
        return self[0]

    def after_conv(self) -> list[nn.Module]:
        """The layers after the convolution (BatchNorm and ReLU, or what passes left)."""
        return list(self)[1:]

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 padding: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """x2 bilinear upsampling with aligned corners (``nn.UpsamplingBilinear2d``)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class DecoderBlock(nn.Module):
    """(B, cin, h, w) [+ skip (B, cskip, 2h, 2w)] -> (B, cout, 2h, 2w)."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int = 0):
        super().__init__()
        self.skip_channels = skip_channels
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels)
        self.conv2 = Conv2dReLU(out_channels, out_channels)

    @property
    def upsampled_unit(self) -> Conv2dReLU:
        """The conv unit over ``cat(up2(x), skip)`` (input channels: upsampled first, then skip)."""
        return self.conv1

    @property
    def output_unit(self) -> nn.Module:
        """The conv unit that follows it and gives the block's output."""
        return self.conv2

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = upsample2x(x)
        if self.skip_channels:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class DecoderCup(nn.Module):
    """Cascaded upsampler.

    Args:
        bottleneck_channels: channels of the encoder's 1/16 map.
        skip_channels: channels of the skips at 1/8, 1/4, 1/2 (0 = absent), deepest first.
        n_skip: how many of those skips to use (0..3), as the official ``n_skip``.
        decoder_channels: output channels of the four blocks.
        head_channels: channels after ``conv_more``.

    Forward: bottleneck (B, Cb, H/16, W/16) and skips -> (B, decoder_channels[-1], H, W).
    """

    def __init__(self, bottleneck_channels: int, skip_channels: Sequence[int] = (0, 0, 0),
                 n_skip: int = 3, decoder_channels: Sequence[int] = (256, 128, 64, 16),
                 head_channels: int = 512):
        super().__init__()
        if not 0 <= n_skip <= 3:
            raise ValueError(f"n_skip must be in 0..3, got {n_skip}")
        if len(decoder_channels) != 4:
            raise ValueError(f"decoder_channels needs 4 entries, got {tuple(decoder_channels)}")
        used = [c if i < n_skip else 0 for i, c in enumerate(skip_channels)] + [0]
        self.used_skip_channels = tuple(used[:3])
        self.conv_more = Conv2dReLU(bottleneck_channels, head_channels)
        ins = [head_channels] + list(decoder_channels[:-1])
        self.blocks = nn.ModuleList(
            DecoderBlock(i, o, s) for i, o, s in zip(ins, decoder_channels, used))

    def forward(self, x: torch.Tensor, skips=(None, None, None)) -> torch.Tensor:
        x = self.conv_more(x)
        for i, block in enumerate(self.blocks):
            skip = skips[i] if i < 3 and self.used_skip_channels[i] else None
            if block.skip_channels and skip is None:
                raise ValueError(f"decoder block {i} expects a skip with "
                                 f"{block.skip_channels} channels but the encoder gave none")
            x = block(x, skip)
        return x
