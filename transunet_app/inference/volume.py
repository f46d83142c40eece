"""Segment one volume: canonical frame in, labels on the input's own voxel grid out."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..data import geometry
from .checks import InputCheck, check_input
from .postprocess import keep_largest_component
from .predictor import ConfidenceAccumulator, SlicePredictor


@dataclass
class Segmentation:
    """The result for one input volume.

    Attributes:
        labels: (I, J, K) uint8 class ids on the input's voxel grid (same order and shape).
        probabilities: (I, J, K, C) uint8 class probabilities x 255 on that grid, or None.
        confidence: organ name -> ``{"confidence", "confidence_source", "tta_agreement"}``
            (computed before ``keep_largest``), or None when not requested.
        check: what the input check found (:class:`~transunet_app.inference.checks.InputCheck`).
        reorientation: how the volume was mapped to the canonical frame.
        seconds: wall time of the inference (slicing, model, resize, argmax).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    confidence: dict | None
    check: InputCheck
    reorientation: geometry.Reorientation
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)


def segment_image(image, predictor: SlicePredictor, class_names, *, keep_largest: bool = False,
                  probabilities: bool = False, confidence: bool = False,
                  progress: Callable[[int], None] | None = None,
                  check: InputCheck | None = None) -> Segmentation:
    """Segment an :class:`~transunet_app.data.io.Image`.

    Axial slices are found from the affine (permutations and flips only, no resampling), so
    the labels map back onto exactly the input's voxels whatever its orientation.

    Args:
        image: the input volume (HU).
        predictor: the prepared :class:`SlicePredictor`.
        class_names: names by class id (index 0 = background).
        keep_largest: keep only the largest connected component of each organ.
        probabilities: also return the per-class probabilities (uint8 x 255).
        confidence: compute per-organ confidence.
        progress: called with the number of slices finished after each batch.
        check: a precomputed input check (else computed here).
    """
    t0 = time.perf_counter()
    reo = geometry.plan_reorientation(image.affine, image.shape)
    if check is None:
        check = check_input(image, reo)
    canonical = geometry.apply_reorientation(image.array, reo)
    acc = ConfidenceAccumulator(predictor.num_classes) if confidence else None
    t1 = time.perf_counter()
    labels_c, probs_c = predictor.segment_canonical(canonical, probabilities=probabilities,
                                                    confidence=acc, progress=progress)
    del canonical
    t2 = time.perf_counter()
    if keep_largest:
        keep_largest_component(labels_c, predictor.num_classes)
    labels = geometry.from_canonical(labels_c, reo)
    del labels_c
    probs = geometry.from_canonical(probs_c, reo) if probs_c is not None else None
    t3 = time.perf_counter()
    conf = acc.summary(class_names, predictor.tta) if acc is not None else None
    return Segmentation(labels=labels, probabilities=probs, confidence=conf, check=check,
                        reorientation=reo, seconds=t3 - t0,
                        timings={"prepare": t1 - t0, "model": t2 - t1, "postprocess": t3 - t2})
