"""Models: registry of encoders, TransUNet assembly, and pretrained-weight loading.

Public API::

    list_models() -> list[str]
    build_encoder(name, in_channels=3, img_size=224, **overrides) -> Encoder
    build_model(name, num_classes, img_size=224, **overrides) -> TransUNet
    load_pretrained(model_or_encoder, path) -> LoadReport
"""
from __future__ import annotations

import inspect

from .registry import get_spec, list_models
from .transunet import TransUNet, count_parameters

_MODEL_KWARGS = ("n_skip", "decoder_channels", "head_channels")

__all__ = ["list_models", "build_encoder", "build_model", "load_pretrained", "TransUNet",
           "count_parameters", "model_config"]


def build_encoder(name: str, in_channels: int = 3, img_size=224, **overrides):
    """Build a registered encoder (names case-insensitive).

    ``overrides`` replace the variant's defaults (e.g. ``num_layers=2``); unknown keys are an
    error listing the accepted ones.
    """
    spec = get_spec(name)
    kwargs = {**spec.defaults, **overrides, "in_channels": in_channels, "img_size": img_size}
    params = inspect.signature(spec.builder).parameters
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:
        raise ValueError(f"{spec.name}: unknown encoder option(s) {unknown}; accepted: "
                         f"{sorted(p for p in params if p != 'self')}")
    encoder = spec.builder(**kwargs)
    encoder.model_name = spec.name
    return encoder


def build_model(name: str, num_classes: int, img_size=224, **overrides) -> TransUNet:
    """Build a segmentation model: encoder ``name`` + cascaded decoder + head.

    Args:
        name: any name of :func:`list_models` (case-insensitive), e.g. ``"R50-ViT-B_16"``.
        num_classes: K output classes including background (Synapse: 9).
        img_size: int or (H, W), divisible by 16; sets the stored position-embedding grid.
        overrides: decoder options (``n_skip``, ``decoder_channels``, ``head_channels``) and
            encoder options (``in_channels``, ``dropout``, ``num_layers`` ...).

    Returns a :class:`TransUNet`; its forward maps (B, C, H, W) to logits (B, K, H, W).
    """
    spec = get_spec(name)
    model_kwargs = dict(spec.model_defaults)
    enc_kwargs = {}
    for key, value in overrides.items():
        (model_kwargs if key in _MODEL_KWARGS else enc_kwargs)[key] = value
    if "decoder_channels" in model_kwargs:
        model_kwargs["decoder_channels"] = tuple(model_kwargs["decoder_channels"])
    encoder = build_encoder(spec.name, img_size=img_size, **enc_kwargs)
    model = TransUNet(encoder, num_classes, **model_kwargs)
    model.model_name = spec.name
    model.build_config = {"name": spec.name, "num_classes": int(num_classes),
                          "img_size": img_size if isinstance(img_size, int) else list(img_size),
                          "overrides": _plain(overrides)}
    return model


def model_config(model) -> dict:
    """The ``build_model`` arguments that rebuild ``model`` (stored in checkpoints)."""
    return dict(model.build_config)


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def load_pretrained(model, path, **kwargs):
    """Load pretrained weights of any supported format into a model or encoder (see
    :func:`transunet_app.models.pretrained.load_pretrained`)."""
    from .pretrained import load_pretrained as _load

    return _load(model, path, **kwargs)
