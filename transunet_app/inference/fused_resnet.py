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
    GroupNorms carry the following addition and ReLU. Same submodules (from the unit's
    ``branch()`` and ``projection()``) and forward result."""

    def __init__(self, unit: PreActBottleneck):
        super().__init__()
        convs, norms = zip(*unit.branch())
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        projection = unit.projection()
        self.projection = None if projection is None else nn.ModuleList(projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is None:
            residual = x
        else:
            conv, norm = self.projection
            residual = _norm(norm, conv(x))
        y = x
        last = len(self.convs) - 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if i < last:
                y = _norm(norm, conv(y), relu=True)
            else:
                y = _norm(norm, conv(y), residual=residual, relu=True)
        return y


def fuse_resnet_group_norms(model: nn.Module) -> int:
    """Swap every ResNetV2 unit (and its root's GN + ReLU) of a prepared bf16 CPU model for
    the fused forms (in place); returns how many modules changed (0 without the kernel)."""
    if not kernel_available():
        return 0
    count = 0
    for trunk in [m for m in model.modules() if isinstance(m, ResNetV2)]:
        gn_name, relu_name = trunk.root_norm_relu
        gn, relu = getattr(trunk.root, gn_name, None), getattr(trunk.root, relu_name, None)
        if isinstance(gn, nn.GroupNorm) and isinstance(relu, nn.ReLU):
            setattr(trunk.root, gn_name, GroupNormReLU(gn))
            setattr(trunk.root, relu_name, nn.Identity())
            count += 1
        for stage, name, unit in trunk.units():
            if type(unit) is PreActBottleneck:
                setattr(stage, name, FusedBottleneck(unit))
                count += 1
    return count
