"""Adult organ volume screening ranges from ``datasets/organ_reference.yaml``."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..data.labels import DATASETS_DIR
from ..errors import UserError

#: The shipped ranges.
DEFAULT_REFERENCE = DATASETS_DIR / "organ_reference.yaml"


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"organ reference {p}: cannot read ({str(exc).splitlines()[0]})") from None
    organs = raw.get("organs") if isinstance(raw, dict) else None
    if not isinstance(organs, dict):
        raise UserError(f"organ reference {p}: no 'organs' mapping")
    out = {}
    for name, rng in organs.items():
        if rng is None:
            out[str(name).lower()] = None
            continue
        try:
            lo, hi = float(rng["min_ml"]), float(rng["max_ml"])
        except (TypeError, KeyError, ValueError):
            raise UserError(f"organ reference {p}: {name}: needs min_ml and max_ml") from None
        if not 0 <= lo < hi:
            raise UserError(f"organ reference {p}: {name}: min_ml must be below max_ml")
        out[str(name).lower()] = (lo, hi)
    return out


def volume_ranges(path=None) -> dict[str, tuple[float, float] | None]:
    """Organ name (lower case) -> ``(min_ml, max_ml)`` or ``None`` (no meaningful range).

    Returns an empty dict when the default file is not installed (then no volume check runs and
    the report says so); a user-given ``path`` that is missing is a :class:`UserError`.
    """
    if path is None:
        if not DEFAULT_REFERENCE.is_file():
            return {}
        path = DEFAULT_REFERENCE
    elif not Path(path).is_file():
        raise UserError(f"organ reference {path}: no such file")
    return dict(_load(str(path)))
