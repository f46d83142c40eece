"""Fast forms of the plain model layers, switched on by passes (never by the plain modules).

:mod:`transunet_app.models` builds plain torch modules: ``nn.Dropout``, ``nn.GroupNorm``,
:class:`~transunet_app.models.layers.StdConv2d`, :class:`~transunet_app.models.layers.Attention`
(``scaled_dot_product_attention``). Each module here is a subclass of one of them that only
changes *how* the forward is computed (no new parameters or buffers, so state-dict keys and
checkpoints are the same); :func:`swap_layers` turns the plain instances of a model into
their fast form in place (the instances, their parameters and optimizer references stay).

* :mod:`.dropout`: inverted dropout whose mask comes from 15 random bits per element (CPU);
* :mod:`.group_norm`: GroupNorm of channels-last maps with its own analytic backward;
* :mod:`.std_conv`: weight standardisation computed once per weight version without autograd;
* :mod:`.attention`: attention products dispatched to the C kernel (bf16 CPU inference) or
  computed explicitly (autograd: two matmul backwards instead of the flash kernel's).

Who switches them on: the trainer in one place (:func:`use_training_fast_paths`), and
:func:`transunet_app.inference.optimize.prepare_for_inference` as named passes.
"""
from __future__ import annotations

from torch import nn


def swap_layers(model: nn.Module, plain: type, fast: type) -> int:
    """Make every module of ``model`` whose type is exactly ``plain`` a ``fast`` (in place).

    ``fast`` must be a subclass of ``plain`` that adds no parameters or buffers: the swap
    changes only the class of each instance, so its parameters (and the optimizer's and
    DDP's references to them) and its state-dict keys stay. Returns how many changed.
    """
    if not issubclass(fast, plain):
        raise TypeError(f"{fast.__name__} is not a subclass of {plain.__name__}")
    count = 0
    for m in model.modules():
        if type(m) is plain:
            m.__class__ = fast
            count += 1
    return count


def use_training_fast_paths(model: nn.Module) -> dict[str, int]:
    """Switch on every fast layer the training loop uses (the trainer's one call, right after
    building the model). Returns how many modules each swap changed, by name.

    Results are the plain modules' up to float rounding, except the dropout masks, which
    are drawn differently from the same global generator (:mod:`.dropout`).
    """
    from .attention import use_attention_dispatch
    from .dropout import use_bits_dropout
    from .group_norm import use_channels_last_group_norm
    from .std_conv import use_cached_std_conv

    return {"bits_dropout": use_bits_dropout(model),
            "channels_last_group_norm": use_channels_last_group_norm(model),
            "cached_std_conv": use_cached_std_conv(model),
            "attention_dispatch": use_attention_dispatch(model)}
