"""Label-map clean-up after inference."""
from __future__ import annotations

import numpy as np


def keep_largest_component(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Keep only the largest connected component of every organ; the rest becomes background.

    Connectivity is 26 (faces, edges and corners), as in the organ statistics, so what is
    kept here counts as one component there. Works inside each organ's bounding box, so
    memory is that of the largest organ, not of the volume.

    Args:
        labels: (I, J, K) uint8 label map; modified in place.
        num_classes: K (labels 1..K-1 are organs); default: up to ``labels.max()``.

    Returns:
        ``labels`` (the same array).
    """
    from scipy import ndimage as ndi

    top = int(labels.max()) if num_classes is None else int(num_classes) - 1
    if top < 1:
        return labels
    structure = np.ones((3, 3, 3), dtype=bool)
    for k, box in enumerate(ndi.find_objects(labels, max_label=top), start=1):
        if box is None:
            continue
        view = labels[box]
        mask = view == k
        comp, n = ndi.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        view[mask & (comp != int(sizes.argmax()))] = 0
    return labels
