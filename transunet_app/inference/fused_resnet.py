"""R50's GroupNorm + residual + ReLU in one kernel pass (bf16 CPU inference).

Each bottleneck unit of the hybrid encoder computes ``relu(GN(conv1(x)))``,
``relu(GN(conv2(.)))`` and ``relu(residual + GN(conv3(.)))``, and the root
``relu(GN(conv(x)))``: torch makes three to four passes over every map for these, rounding to
bf16 after each. :func:`fuse_resnet_group_norms` swaps the units (and the root's GN + ReLU)
for modules that call :func:`transunet_app.kernels.group_norm.group_norm`: statistics in one
read, affine + residual + ReLU in one read and one write, one bf16 rounding (the residual
addition was a second one). Same modules and weights; where the kernel does not take an
input, the module's own GroupNorm runs, followed by the addition and the ReLU.
"""
from __future__ import annotations

import torch
from torch import nn

from ..kernels.group_norm import group_norm, kernel_available, kernel_takes
from ..models.encoders.resnet_v2 import PreActBottleneck, ResNetV2


def _norm(gn: nn.GroupNorm, x: torch.Tensor, residual: torch.Tensor | None = None,
          relu: bool = False) -> torch.Tensor:
    if kernel_takes(x, gn.num_groups, residual):
        return group_norm(x, gn.num_groups, gn.weight, gn.bias, gn.eps, residual, relu)
    y = gn(x)
    if residual is not None:
        y = residual + y
    return torch.relu_(y) if relu else y


class GroupNormReLU(nn.Module):
    """``relu(gn(x))`` through the fused kernel; ``gn`` kept as is (same state)."""

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.gn = gn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _norm(self.gn, x, relu=True)


class FusedBottleneck(nn.Module):
    """A prepared :class:`~transunet_app.models.encoders.resnet_v2.PreActBottleneck` whose
    GroupNorms carry the following addition and ReLU. Same submodules and forward result."""

    def __init__(self, unit: PreActBottleneck):
        super().__init__()
        for name in ("conv1", "gn1", "conv2", "gn2", "conv3", "gn3", "downsample"):
            setattr(self, name, getattr(unit, name))
        if unit.downsample is not None:
            self.gn_proj = unit.gn_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else _norm(self.gn_proj, self.downsample(x))
        y = _norm(self.gn1, self.conv1(x), relu=True)
        y = _norm(self.gn2, self.conv2(y), relu=True)
        return _norm(self.gn3, self.conv3(y), residual=residual, relu=True)


def fuse_resnet_group_norms(model: nn.Module) -> int:
    """Swap every ResNetV2 unit (and its root's GN + ReLU) of a prepared bf16 CPU model for
    the fused forms (in place); returns how many modules changed (0 without the kernel)."""
    if not kernel_available():
        return 0
    count = 0
    for trunk in [m for m in model.modules() if isinstance(m, ResNetV2)]:
        root = trunk.root
        if isinstance(getattr(root, "gn", None), nn.GroupNorm) and isinstance(root.relu, nn.ReLU):
            root.gn, root.relu = GroupNormReLU(root.gn), nn.Identity()
            count += 1
        for stage in trunk.body:
            for name, unit in list(stage.named_children()):
                if type(unit) is PreActBottleneck:
                    setattr(stage, name, FusedBottleneck(unit))
                    count += 1
    return count
