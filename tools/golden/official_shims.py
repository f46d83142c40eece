"""In-memory stand-ins that let the official CvT, CeiT and Conformer files import on this torch.

Used only by the golden recorders (``tools/golden/make_golden_{cvt,ceit,conformer}.py``). The 2021
official code imports a few names from ``timm`` (not installable here: it pulls torchvision
and a CUDA torch) and ``torch._six`` (removed from torch). None of these names changes the
arithmetic of a recording, which runs in eval mode from ``golden.official_like_state``:

* ``DropPath``: the identity in eval mode (raises if reached while training);
* ``trunc_normal_``: initialisation only (every tensor is overwritten by the loaded state);
* ``to_2tuple``, ``register_model`` (identity decorator), ``default_cfgs`` / ``_cfg``:
  bookkeeping;
* ``torch._six.container_abcs``: ``collections.abc``.
"""
from __future__ import annotations

import collections.abc
import sys
import types

from torch import nn


class DropPath(nn.Module):
    """timm's ``DropPath`` as the recordings use it: the identity in eval mode."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.training and self.p:
            raise RuntimeError("stand-in DropPath is for eval mode only")
        return x


def to_2tuple(value):
    """timm's ``to_2tuple``: ``7 -> (7, 7)``, sequences as tuples."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def install_stand_ins(deit_module: bool = False) -> None:
    """Register ``timm`` (``timm.models.layers``, ``.registry``, ``.vision_transformer``) and
    ``torch._six`` in ``sys.modules``.

    Args:
        deit_module: also a top-level ``vision_transformer`` module with the two names
            Conformer's ``models.py`` imports from the repo's DeiT file (which needs
            torchvision; the Conformer builders never use them).
    """
    names = ("timm", "timm.models", "timm.models.layers", "timm.models.registry",
             "timm.models.vision_transformer")
    mods = {n: types.ModuleType(n) for n in names}
    for name in names[1:]:  # parent.child attributes, as a real package has
        parent, _, child = name.rpartition(".")
        setattr(mods[parent], child, mods[name])
    layers = mods["timm.models.layers"]
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = DropPath, to_2tuple, nn.init.trunc_normal_
    mods["timm.models.registry"].register_model = lambda fn: fn
    vt = mods["timm.models.vision_transformer"]
    vt.default_cfgs, vt._cfg = {}, (lambda **kw: dict(kw))
    six = types.ModuleType("torch._six")
    six.container_abcs = collections.abc
    mods["torch._six"] = six
    if deit_module:
        deit = types.ModuleType("vision_transformer")
        deit.VisionTransformer = deit._cfg = None
        mods["vision_transformer"] = deit
    sys.modules.update(mods)
