"""Per-organ statistics of one label map: volume, HU, completeness, fragments, position.

:func:`organ_statistics` is pure (arrays in, a JSON-ready dict out). ``segment --statistics``
writes its result as JSON and the clinician report builds its table and QC flags on it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

#: Organs whose centroid is further than this from the body midline get a side (mm).
MIDLINE_BAND_MM = 10.0
#: HU threshold separating the body from surrounding air when finding the midline.
BODY_HU_THRESHOLD = -500.0

# Negative and positive end of each RAS+ world axis: +x = patient's right, +y = anterior,
# +z = superior (nibabel's convention).
_RAS_ENDS = {0: ("left", "right"), 1: ("posterior", "anterior"), 2: ("inferior", "superior")}


def _as_names(class_names) -> dict[int, str]:
    if class_names is None:
        from ..data.labels import synapse_organs

        return synapse_organs()
    if isinstance(class_names, Mapping):
        names = {int(k): str(v) for k, v in class_names.items()}
    else:
        names = {i: str(v) for i, v in enumerate(class_names)}
    return {k: v for k, v in names.items() if k != 0}


def _edge_names(affine: np.ndarray | None, ndim: int) -> list[tuple[str, str]]:
    """For each array axis, names of its (first, last) index faces, anatomical when possible.

    With an affine (voxel -> RAS+ mm) the axis is named after the world direction it mostly
    follows: an axis running towards superior has its first face "inferior" and its last face
    "superior".
    """
    if affine is None:
        return [(f"axis {a} start", f"axis {a} end") for a in range(ndim)]
    out = []
    for a in range(ndim):
        col = np.asarray(affine, dtype=np.float64)[:3, a]
        w = int(np.argmax(np.abs(col)))
        neg, pos = _RAS_ENDS[w]
        out.append((neg, pos) if col[w] > 0 else (pos, neg))
    return out


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return np.asarray(affine, dtype=np.float64)[:3, :3] @ ijk + np.asarray(affine)[:3, 3]


def body_midline_x(labels: np.ndarray, image_hu, affine) -> tuple[float | None, str]:
    """World x (mm, RAS+) of the body's left-right midline, and how it was found.

    Uses the centre of mass of the body (voxels above -500 HU) when the image is given, else
    the label map's bounding-box centre in x (organs span both sides), else ``None``.
    """
    if affine is None:
        return None, "unknown (no affine)"
    aff = np.asarray(affine, dtype=np.float64)
    if image_hu is not None:
        body = np.asarray(image_hu)[::2, ::2, ::2] > BODY_HU_THRESHOLD
        if body.any():
            idx = np.stack(np.nonzero(body), axis=0).astype(np.float64) * 2.0
            return float(_world(aff, idx.mean(axis=1))[0]), "body centre of mass (HU > -500)"
    fg = np.nonzero(labels)
    if fg[0].size:
        corners = np.array([[f.min() for f in fg], [f.max() for f in fg]], dtype=np.float64)
        xs = [_world(aff, np.array(c))[0] for c in
              np.array(np.meshgrid(*corners.T, indexing="ij")).reshape(3, -1).T]
        return float((min(xs) + max(xs)) / 2), "centre of the labelled organs' extent"
    return None, "unknown (empty label map)"


def organ_statistics(labels, image_hu=None, spacing_mm=None, class_names=None,
                     affine=None) -> dict[str, dict]:
    """Statistics of every named organ in a label map.

    Args:
        labels: (I, J, K) integer label map (any 3D axis order; 0 = background).
        image_hu: the CT in Hounsfield units on the same grid, or ``None`` (then ``hu`` is None).
        spacing_mm: voxel size per array axis in mm (3 values). ``None``: taken from ``affine``
            (column norms), else 1 mm.
        class_names: label id -> organ name (mapping), or a sequence indexed by label id
            (index 0 = background); ``None`` = the Synapse 8 organs of
            ``datasets/synapse/labels.yaml``.
        affine: (4, 4) voxel index -> RAS+ world mm (nibabel's ``img.affine``; +x towards the
            patient's Right, +y Anterior, +z Superior), or ``None``. Needed for world centroids,
            anatomical edge names and the body side.

    Returns:
        organ name -> dict with

        * ``label`` (int), ``voxels`` (int), ``volume_ml`` (float, 0 when absent);
        * ``status``: ``"absent"`` (no voxel), ``"touches_image_edge"`` (a voxel on the first or
          last index of any axis: the organ may continue outside the scan, so its volume is a
          lower bound), else ``"complete"``;
        * ``edges_touched``: list of face names (``"superior"``, ``"axis 2 end"``...);
        * ``hu``: ``{"mean", "std", "p5", "p50", "p95"}`` in HU, or ``None`` (no image / absent);
        * ``n_components`` (26-connectivity) and ``largest_component_fraction`` (0..1, None if
          absent);
        * ``centroid_mm``: [x, y, z] world RAS+ mm when ``affine`` is given, else voxel index
          times spacing in array axis order; ``centroid_frame`` says which (``"RAS"`` or
          ``"array"``); None if absent;
        * ``side``: ``"left"``, ``"right"`` or ``"midline"`` (patient's side, centroid further than
          10 mm from the body midline), ``None`` without an affine or when absent;
        * ``midline_x_mm`` and ``midline_source``: the midline used.

        Values that do not exist are ``None`` (never NaN), so ``json.dumps`` gives valid JSON.
    """
    from scipy import ndimage as ndi

    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be 3D, got shape {lab.shape}")
    img = None if image_hu is None else np.asarray(image_hu)
    if img is not None and img.shape != lab.shape:
        raise ValueError(f"image shape {img.shape} differs from labels shape {lab.shape}")
    aff = None if affine is None else np.asarray(affine, dtype=np.float64)
    if spacing_mm is None:
        sp = (np.linalg.norm(aff[:3, :3], axis=0) if aff is not None else np.ones(3))
    else:
        sp = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
        if sp.size != 3:
            raise ValueError(f"spacing_mm needs 3 values, got {sp.tolist()}")
    voxel_ml = float(np.prod(sp)) / 1000.0
    names = _as_names(class_names)
    edge_names = _edge_names(aff, 3)
    midline, midline_source = body_midline_x(lab, img, aff)
    # One pass for all bounding boxes instead of one full-volume scan per organ.
    if not np.issubdtype(lab.dtype, np.integer):
        lab = lab.astype(np.int32)
    boxes = ndi.find_objects(lab, max_label=max(names, default=0)) if lab.size else []
    structure = np.ones((3, 3, 3), dtype=bool)

    out: dict[str, dict] = {}
    for lab_id, name in sorted(names.items()):
        entry = {"label": int(lab_id), "voxels": 0, "volume_ml": 0.0, "status": "absent",
                 "edges_touched": [], "hu": None, "n_components": 0,
                 "largest_component_fraction": None, "centroid_mm": None,
                 "centroid_frame": "RAS" if aff is not None else "array", "side": None,
                 "midline_x_mm": midline, "midline_source": midline_source}
        box = boxes[lab_id - 1] if 0 < lab_id <= len(boxes) else None
        if box is None:
            out[name] = entry
            continue
        mask = lab[box] == lab_id
        n = int(np.count_nonzero(mask))
        entry["voxels"] = n
        entry["volume_ml"] = n * voxel_ml
        touched = []
        for a, s in enumerate(box):
            if s.start == 0:
                touched.append(edge_names[a][0])
            if s.stop == lab.shape[a]:
                touched.append(edge_names[a][1])
        entry["edges_touched"] = touched
        entry["status"] = "touches_image_edge" if touched else "complete"
        comp, n_comp = ndi.label(mask, structure=structure)
        entry["n_components"] = int(n_comp)
        sizes = np.bincount(comp.ravel())[1:]
        entry["largest_component_fraction"] = float(sizes.max() / n)
        idx = np.nonzero(mask)
        c_ijk = np.array([float(i.mean()) + s.start for i, s in zip(idx, box)])
        if aff is not None:
            c = _world(aff, c_ijk)
            if midline is not None:
                dx = float(c[0]) - midline
                # RAS+: x grows towards the patient's right.
                entry["side"] = ("midline" if abs(dx) <= MIDLINE_BAND_MM
                                 else "right" if dx > 0 else "left")
        else:
            c = c_ijk * sp
        entry["centroid_mm"] = [float(v) for v in c]
        if img is not None:
            vals = img[box][mask].astype(np.float64)
            p5, p50, p95 = np.percentile(vals, [5, 50, 95])
            entry["hu"] = {"mean": float(vals.mean()), "std": float(vals.std()),
                           "p5": float(p5), "p50": float(p50), "p95": float(p95)}
        out[name] = entry
    return out
