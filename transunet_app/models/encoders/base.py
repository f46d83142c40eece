"""The encoder contract every backbone fulfils, so the decoder never branches on a name.

An encoder maps an image batch ``(B, C, H, W)`` to an :class:`EncoderOutput`:

* ``bottleneck``: ``(B, bottleneck_channels, H / s, W / s)`` with ``s = bottleneck_stride``
  (16 for every family except ViT-B_32, whose tokens are at 1/32);
* ``skips``: three feature maps at 1/8, 1/4 and 1/2 of the input, in that order (deepest
  first, the order in which the cascaded decoder consumes them); an absent skip is ``None``
  and declared with 0 channels;
* ``attentions``: per-layer attention maps ``(B, heads, N, N)`` when requested, else ``None``.

Declarations (class or instance attributes):

* ``in_channels``: channels the encoder consumes (3 for ImageNet-pretrained families; the
  model repeats a 1-channel CT slice to 3, as the official TransUNet does);
* ``bottleneck_channels`` and ``bottleneck_stride``;
* ``skip_channels``: tuple of 3 ints for strides (8, 4, 2), 0 where absent;
* ``size_divisor``: inputs must have H and W divisible by it;
* ``weight_family``: name of the official weight format family this encoder loads
  (see :mod:`transunet_app.models.pretrained`);
* ``stem``: name (relative to the encoder) of the convolution that first sees the input, as
  timm's ``default_cfg["first_conv"]``; inference passes run it in float32 and on the grey
  channel only (:func:`transunet_app.inference.optimize.find_stem`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


@dataclass
class EncoderOutput:
    bottleneck: torch.Tensor
    skips: tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]
    attentions: Optional[list[torch.Tensor]] = None


class Encoder(nn.Module):
    """Base class: subclasses set the declarations in ``__init__`` and implement ``forward``."""

    in_channels: int = 3
    bottleneck_channels: int
    bottleneck_stride: int = 16
    skip_channels: tuple[int, int, int] = (0, 0, 0)
    size_divisor: int = 16
    weight_family: str = ""
    stem: str = ""

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        d = self.size_divisor
        if h % d or w % d:
            raise ValueError(f"input size {h}x{w} is not divisible by {d}")

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> EncoderOutput:
        raise NotImplementedError
