"""Weight-standardised convolution whose standardised weight is computed once per weight version.

Without autograd (validation during training) the standardised weight of a
:class:`~transunet_app.models.layers.StdConv2d` only changes when the parameter does
(``_version`` counts in-place writes such as optimizer steps and ``load_state_dict``), so it is
computed once, in the compute dtype, instead of on every forward. With autograd the plain
forward runs. (Inference models fold the standardisation away altogether:
:func:`transunet_app.inference.optimize.fold_weight_standardization`.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import StdConv2d
from . import swap_layers


class CachedStdConv2d(StdConv2d):
    """:class:`StdConv2d` with the no-autograd standardised weight cached (module notes)."""

    _cache_key = None
    _cache = None

    def _inference_weight(self, dtype: torch.dtype) -> torch.Tensor:
        w = self.weight
        key = (w._version, w.data_ptr(), w.dtype, dtype, self.eps)
        if key != self._cache_key:
            with torch.no_grad():
                self._cache = self.standardized_weight().to(dtype)
            self._cache_key = key
        return self._cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return super().forward(x)
        dtype = (torch.get_autocast_dtype(x.device.type)
                 if torch.is_autocast_enabled(x.device.type) else self.weight.dtype)
        w = self._inference_weight(dtype)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def use_cached_std_conv(model: nn.Module) -> int:
    """Every ``StdConv2d`` of ``model`` becomes a :class:`CachedStdConv2d` (in place); returns
    how many."""
    return swap_layers(model, StdConv2d, CachedStdConv2d)
