"""Segmentation metrics: pure functions on binary masks with spacing in mm.

* :func:`dice`, :func:`volume_ml` (overlap.py)
* :func:`hd95`, :func:`hausdorff_distance`, :func:`assd`, :func:`normalized_surface_dice`,
  :func:`surface_distances` (surface.py; HD95 identical to ``medpy.metric.binary.hd95``)
* :func:`evaluate_case`, :func:`evaluate_organ`, :func:`summarize` with the ``strict`` and
  ``transunet`` conventions (evaluate.py)
* :func:`organ_statistics`: volume, HU, completeness, fragments, side (organ_stats.py)

Every empty-mask rule is written in the docstring of the function that applies it.
"""
from .evaluate import CONVENTIONS, evaluate_case, evaluate_organ, summarize
from .organ_stats import organ_statistics
from .overlap import dice, volume_ml
from .surface import (
                      SurfaceDistances,
                      assd,
                      hausdorff_distance,
                      hd95,
                      hd95_max_directed,
                      normalized_surface_dice,
                      surface_distances,
)

__all__ = [
    "CONVENTIONS", "SurfaceDistances", "assd", "dice", "evaluate_case",
    "evaluate_organ", "hausdorff_distance", "hd95", "hd95_max_directed",
    "normalized_surface_dice", "organ_statistics", "summarize", "surface_distances", "volume_ml",
]
