"""Name -> builder registries for encoders (and so for full segmentation models).

A backbone file registers its variants with ``@register_encoder("Name-X", **defaults)``; names
are case-insensitive; an unknown or colliding name is an error that lists the valid names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    builder: Callable[..., Any]
    defaults: dict = field(default_factory=dict)
    #: decoder settings this variant uses by default (e.g. official n_skip).
    model_defaults: dict = field(default_factory=dict)
    description: str = ""


_ENCODERS: dict[str, EncoderSpec] = {}


def register_encoder(name: str, builder: Callable[..., Any], *, description: str = "",
                     model_defaults: dict | None = None, **defaults) -> EncoderSpec:
    key = name.lower()
    if key in _ENCODERS:
        raise ValueError(f"encoder name {name!r} is already registered "
                         f"(by {_ENCODERS[key].builder.__module__})")
    spec = EncoderSpec(name, builder, dict(defaults), dict(model_defaults or {}), description)
    _ENCODERS[key] = spec
    return spec


def get_spec(name: str) -> EncoderSpec:
    _import_families()
    try:
        return _ENCODERS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: "
                         f"{', '.join(list_models())}") from None


def list_models() -> list[str]:
    """All registered model/encoder names: families in the order of ``_FAMILIES`` (ViT and
    the TransUNet variants first), variants in their registration order; independent of which
    family module happened to be imported first."""
    _import_families()

    def family_rank(spec: EncoderSpec) -> int:
        fam = spec.builder.__module__.rsplit(".", 1)[-1]
        return _FAMILIES.index(fam) if fam in _FAMILIES else len(_FAMILIES)

    specs = list(_ENCODERS.values())
    return [s.name for s in sorted(specs, key=lambda s: (family_rank(s), specs.index(s)))]


_FAMILIES = ("vit", "cvt", "ceit", "conformer")


def _import_families() -> None:
    # Each family module registers its names when imported; import them once, lazily, so
    # that importing the package stays cheap.
    import importlib

    for fam in _FAMILIES:
        importlib.import_module(f"{__package__}.encoders.{fam}")
