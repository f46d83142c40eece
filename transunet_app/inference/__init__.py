"""Inference on whole CT volumes: canonical slicing, batching, precision, post-processing.

Public API::

    Segmenter(checkpoint, device="cpu", precision="auto", batch_size=8, tta=False)
        .run(input_path, output_path, keep_largest=..., probabilities=..., statistics=..., ...)
    SlicePredictor(model, preprocessing, device, precision, batch_size, tta)
    segment_image(image, predictor, class_names, ...) -> Segmentation
    check_input(image, reorientation) -> InputCheck
    keep_largest_component(labels, num_classes)
    resolve_precision(name, device), precision_warning(precision, device)

Modules import torch lazily from here, so ``segment --help`` stays instant.
"""
from __future__ import annotations

_EXPORTS = {
    "Segmenter": "pipeline", "RunResult": "pipeline", "resolve_device": "pipeline",
    "SlicePredictor": "predictor", "ConfidenceAccumulator": "predictor",
    "segment_image": "volume", "Segmentation": "volume",
    "check_input": "checks", "InputCheck": "checks",
    "keep_largest_component": "postprocess",
    "resolve_precision": "precision", "precision_warning": "precision",
    "prepare_for_inference": "optimize", "fold_weight_standardization": "optimize",
    "fold_batch_norm": "optimize",
    "OutputPaths": "outputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
