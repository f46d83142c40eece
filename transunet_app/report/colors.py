"""Fixed colour per organ, the same in every report, figure and legend.

Colours are chosen by organ *name* (so a model with other label ids still paints the liver the
same), from a palette that stays distinguishable on a grey CT and for common colour-vision
deficiencies (Okabe-Ito based). Unknown names get a stable colour from the label id.
"""
from __future__ import annotations

ORGAN_COLORS: dict[str, str] = {
    "aorta": "#D55E00",         # vermilion
    "gallbladder": "#009E73",   # bluish green
    "left kidney": "#0072B2",   # blue
    "right kidney": "#56B4E9",  # sky blue
    "liver": "#CC79A7",         # reddish purple
    "pancreas": "#F0E442",      # yellow
    "spleen": "#E69F00",        # orange
    "stomach": "#00C8C8",       # cyan
}

_FALLBACK = ["#8C564B", "#BCBD22", "#7F7F7F", "#17BECF", "#9467BD", "#2CA02C", "#D62728",
             "#1F77B4", "#FF7F0E", "#E377C2"]


def organ_color(name: str, label: int = 0) -> str:
    """Hex colour for an organ: fixed for known names, stable per label id otherwise."""
    key = name.strip().lower().replace("_", " ")
    if key in ORGAN_COLORS:
        return ORGAN_COLORS[key]
    return _FALLBACK[int(label) % len(_FALLBACK)]
