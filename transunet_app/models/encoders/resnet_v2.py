"""ResNetV2 (BiT) hybrid stem of R50-ViT: StdConv2d + GroupNorm, pre-activation bottlenecks.

Follows the official TransUNet ``ResNetV2`` numerically: root conv 7x7/2 with padding 3,
GroupNorm(32, eps 1e-6), ReLU, an unpadded 3x3/2 max-pool, then blocks of units
(3, 4, 9); the projection GroupNorm keeps torch's default eps 1e-5 as the official code does.
Module names mirror Google's BiT ``.npz`` keys (``root/conv``, ``block1/unit1/conv1`` ...).

Paper: Kolesnikov et al., "Big Transfer (BiT)", ECCV 2020; Chen et al., "TransUNet", 2021.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import StdConv2d


class PreActBottleneck(nn.Module):
    """Bottleneck unit ``conv1x1 -> GN -> ReLU -> conv3x3(stride) -> GN -> ReLU -> conv1x1 -> GN``,
    added to a (projected) residual, then ReLU. (B, cin, H, W) -> (B, cout, H/stride, W/stride).
    """

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1):
        super().__init__()
        self.gn1 = nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv1 = StdConv2d(cin, cmid, kernel_size=1, bias=False)
        self.gn2 = nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv2 = StdConv2d(cmid, cmid, kernel_size=3, stride=stride, padding=1, bias=False)
        self.gn3 = nn.GroupNorm(32, cout, eps=1e-6)
        self.conv3 = StdConv2d(cmid, cout, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or cin != cout:
            self.downsample = StdConv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
            self.gn_proj = nn.GroupNorm(cout, cout)  # default eps 1e-5, as in the official code
        else:
            self.downsample = None

    def branch(self) -> tuple[tuple[nn.Module, nn.Module], ...]:
        """The residual branch as (conv, norm) pairs in forward order: a ReLU follows every norm
        but the last, whose output is added to the shortcut before the final ReLU."""
        return ((self.conv1, self.gn1), (self.conv2, self.gn2), (self.conv3, self.gn3))

    def projection(self) -> tuple[nn.Module, nn.Module] | None:
        """The shortcut's (conv, norm) where it projects the input, None where it is the input."""
        return None if self.downsample is None else (self.downsample, self.gn_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.gn_proj(self.downsample(x))
        y = self.relu(self.gn1(self.conv1(x)))
        y = self.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return self.relu(residual + y)


class ResNetV2(nn.Module):
    """ResNetV2 trunk used as the hybrid stem (stages 1-3 of R50: output at 1/16).

    Args:
        block_units: units per stage, (3, 4, 9) for R50 as in TransUNet.
        width_factor: channel multiplier (1 -> root width 64).
        in_channels: input channels (3 for the ImageNet weights).

    Forward: (B, in_channels, H, W) -> ``(x, skips)`` with ``x`` (B, 16*width, H/16, W/16) and
    ``skips`` = [(B, 8*width, H/8, W/8), (B, 4*width, H/4, W/4), (B, width, H/2, W/2)].
    """

    #: the root convolution (the trunk's first layer), relative to the trunk
    stem = "root.conv"
    #: names in ``root`` of its GroupNorm and the ReLU that directly follows it
    root_norm_relu = ("gn", "relu")

    def __init__(self, block_units=(3, 4, 9), width_factor: float = 1, in_channels: int = 3):
        super().__init__()
        width = int(64 * width_factor)
        self.width = width
        self.out_channels = width * 16
        self.skip_channels = (width * 8, width * 4, width)
        self.root = nn.Sequential(OrderedDict([
            ("conv", StdConv2d(in_channels, width, kernel_size=7, stride=2, bias=False, padding=3)),
            ("gn", nn.GroupNorm(32, width, eps=1e-6)),
            ("relu", nn.ReLU(inplace=True)),
        ]))
        stages = []
        cin = width
        for i, (units, mult, stride) in enumerate(zip(block_units, (4, 8, 16), (1, 2, 2)), 1):
            cout, cmid = width * mult, width * mult // 4
            stage = [("unit1", PreActBottleneck(cin, cout, cmid, stride))]
            stage += [(f"unit{u}", PreActBottleneck(cout, cout, cmid)) for u in range(2, units + 1)]
            stages.append((f"block{i}", nn.Sequential(OrderedDict(stage))))
            cin = cout
        self.body = nn.Sequential(OrderedDict(stages))

    def units(self) -> list[tuple[nn.Sequential, str, nn.Module]]:
        """Every bottleneck unit as (its stage, its name there, the unit), in forward order."""
        return [(stage, name, unit) for stage in self.body for name, unit in stage.named_children()]

    def forward(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        x = self.root(x)
        skips = [x]
        # Unpadded pooling makes the 1/4 map one row/column short (e.g. 55 for 224); the
        # official code zero-pads it at the bottom/right back to H/4 x W/4 for the skip only.
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=0)
        for i, stage in enumerate(self.body[:-1]):
            x = stage(x)
            th, tw = h // (4 * 2 ** i), w // (4 * 2 ** i)
            ph, pw = th - x.shape[-2], tw - x.shape[-1]
            if ph < 0 or pw < 0 or ph > 2 or pw > 2:
                raise ValueError(f"unexpected ResNetV2 feature size {tuple(x.shape[-2:])} "
                                 f"for input {h}x{w}")
            skips.append(F.pad(x, (0, pw, 0, ph)) if (ph or pw) else x)
        x = self.body[-1](x)
        return x, skips[::-1]
