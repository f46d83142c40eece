"""``<case>_preview.png``: axial, coronal and sagittal overlays of the organs on the CT.

Drawn by the report's figure code (:func:`transunet_app.report.figures.three_plane_png`):
soft-tissue window W400/L40, the report's organ colours and legend, radiological view.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .organs import Organ


def write_preview(path: str | os.PathLike, image_hu: np.ndarray, labels: np.ndarray,
                  affine_ras: np.ndarray, organs: Sequence[Organ], dpi: int = 110) -> Path:
    """Write the preview PNG (exactly this file; no temporary name here).

    Args:
        image_hu: (I, J, K) CT in HU; labels: (I, J, K) class ids on the same grid.
        affine_ras: (4, 4) voxel -> RAS mm.
        organs: the organs to draw (legend in this order).
    """
    from ..report.figures import three_plane_png, to_ras

    img_r, sp_r, aff_r = to_ras(np.asarray(image_hu, dtype=np.float32), affine_ras)
    lab_r = to_ras(labels, affine_ras)[0]
    png = three_plane_png(img_r, lab_r, sp_r, aff_r, [(o.label, o.name, o.color) for o in organs], dpi=dpi)
    Path(path).write_bytes(png)
    return Path(path)
