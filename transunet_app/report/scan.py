"""Per-scan clinician report: one CT + its label map (+ an optional reference) -> one HTML file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from ..data.files import atomic_write_text
from ..data.geometry import same_grid
from ..data.io import read_image, read_label_map
from ..data.labels import read_sidecar, resolve_labels
from ..errors import UserError
from ..metrics.evaluate import evaluate_case, json_safe
from ..metrics.organ_stats import organ_statistics
from . import html as H
from .colors import organ_color
from .figures import overlay_pngs, to_ras
from .qc import scan_flags
from .reference import DEFAULT_REFERENCE, volume_ranges

_STATUS_TEXT = {"complete": "complete", "absent": "not found",
                "touches_image_edge": "cut off at scan edge"}


_REF_STATUS_TEXT = {"false_positive": "not in reference", "missed": "not segmented",
                    "both_empty": "absent in both"}


#: Provenance keys taken from the label map's sidecar when the caller does not give them.
SIDECAR_PROVENANCE_KEYS = ("model", "checkpoint", "checkpoint_sha256")


def _sidecar_provenance(label_path) -> dict:
    """``model`` / ``checkpoint`` / ``checkpoint_sha256`` recorded by ``segment`` in the sidecar."""
    side = read_sidecar(label_path) or {}
    out = {}
    for key in SIDECAR_PROVENANCE_KEYS:
        v = side.get(key)
        if isinstance(v, dict):  # e.g. {"model": {"name": ..., ...}}
            v = v.get("name")
        if isinstance(v, (str, int, float)) and str(v):
            out[key] = str(v)
    card = side.get("model_card")
    if isinstance(card, dict):  # segmented with a model package (segment --model)
        from ..inference.pipeline import model_card_provenance

        out.update({k: v for k, v in model_card_provenance(card).items() if v not in (None, "")})
    return out


def _provenance(provenance: Mapping | None, image_path, label_path, reference_path) -> dict:
    from .. import __version__

    p = {k: v for k, v in dict(provenance or {}).items() if v not in (None, "")}
    for k, v in _sidecar_provenance(label_path).items():
        p.setdefault(k, v)
    out = {
        "Model": p.pop("model", None),
        "Checkpoint": p.pop("checkpoint", None),
        "Checkpoint SHA-256": p.pop("checkpoint_sha256", None),
        "Software": f"transunet-app {p.pop('software_version', __version__)}",
        "Report created": p.pop("date", None) or H.now_utc(),
        "CT image": p.pop("ct_source", None) or str(image_path),
        "Label map": p.pop("labels_source", None) or str(label_path),
    }
    if reference_path is not None:
        out["Reference labels"] = str(reference_path)
    for k, v in p.items():  # anything else the caller wants on record
        out[str(k).replace("_", " ").capitalize()] = v
    return out


def _model_card_lines(prov: Mapping) -> list[str]:
    """The model package's intended use and licence, stated near the top of the report."""
    if not prov.get("Model package"):
        return []
    def text(v):
        return "; ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    return [f'<p class="small">Model <b>{H.esc(text(prov["Model package"]))}</b> &middot; intended '
            f'use: {H.esc(text(prov.get("Intended use", "unspecified")))} &middot; not intended '
            f'for: {H.esc(text(prov.get("Not intended for", "unspecified")))} &middot; licence: '
            f'{H.esc(text(prov.get("License", "unspecified")))}'
            + (f' &middot; validated: {H.esc(text(prov["Model validation"]))}' if prov.get("Model validation") else "")
            + '</p>']


def _volume_cell(s: dict) -> str:
    if s["status"] == "absent":
        return "–"
    v = H.fmt(s["volume_ml"], 1)
    # a cut-off organ's volume is a lower bound: say so in the number itself
    return f"&ge;&nbsp;{v}" if s["status"] == "touches_image_edge" else v


def _organ_table(stats: dict, ranges: dict, ref_metrics: dict | None, colors: dict) -> str:
    head = ("<tr><th>Organ</th><th>Status</th><th class=num>Volume (mL)</th>"
            "<th class=num>Adult range (mL)</th><th class=num>Density, HU<br>mean &plusmn; SD</th>"
            "<th class=num>Pieces</th><th>Body side</th>")
    if ref_metrics is not None:
        head += ("<th class=num>Reference volume (mL)</th><th class=num>Dice</th>"
                 "<th class=num>HD95 (mm)</th>")
    rows = [head + "</tr>"]
    for name, s in stats.items():
        rng = ranges.get(name.lower())
        status = _STATUS_TEXT.get(s["status"], s["status"])
        if s["status"] == "touches_image_edge" and s.get("edges_touched"):
            status += f" ({', '.join(s['edges_touched'])})"
        hu = s.get("hu")
        hu_txt = f"{hu['mean']:.0f} &plusmn; {hu['std']:.0f}" if hu else "–"
        cells = [
            f'<td class="organ">{H.swatch(colors[name])}{H.esc(name)}</td>',
            f'<td class="status-{H.esc(s["status"])}">{H.esc(status)}</td>',
            f"<td class=num>{_volume_cell(s)}</td>",
            f"<td class=num>{f'{rng[0]:.0f}–{rng[1]:.0f}' if rng else '–'}</td>",
            f"<td class=num>{hu_txt}</td>",
            f"<td class=num>{s['n_components'] if s['status'] != 'absent' else '–'}</td>",
            f"<td>{H.esc(s.get('side') or '–')}</td>",
        ]
        if ref_metrics is not None:
            m = ref_metrics.get(name, {})
            st = m.get("status")
            ref_vol = H.fmt(m.get("ref_volume_ml"), 1) if st in ("both_present", "missed") else "–"
            if st == "both_present":
                dice_cells = (f"<td class=num>{H.fmt(m.get('dice'), 3)}</td>"
                              f"<td class=num>{H.fmt(m.get('hd95_mm'), 1)}</td>")
            else:
                dice_cells = (f'<td colspan=2 class="num small">'
                              f'{H.esc(_REF_STATUS_TEXT.get(st, st))}</td>')
            cells += [f"<td class=num>{ref_vol}</td>", dice_cells]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def build_scan_report(image_path, label_path, reference_path=None,
                      provenance: Mapping | None = None, labels_yaml=None,
                      reference_ranges_path=None) -> tuple[str, dict]:
    """Compute everything for a scan report and return ``(html_text, data)``.

    ``data`` holds ``statistics`` (per organ), ``flags`` (list of dicts), ``reference_metrics``
    (or ``None``) and ``labels``; the same data is embedded in the HTML as JSON
    (``<script type="application/json" id="report-data">``) for machines.
    """
    image = read_image(image_path, what="image")
    labels = read_label_map(label_path, "label map")
    same, mismatch = same_grid(labels.affine, labels.shape, image.affine, image.shape)
    if not same:
        raise UserError(f"label map {label_path}: {mismatch} from the image {image_path}; "
                        f"the label map must be on the image's grid")
    reference = None
    if reference_path is not None:
        reference = read_label_map(reference_path, "reference")
        same, mismatch = same_grid(reference.affine, reference.shape, image.affine, image.shape)
        if not same:
            raise UserError(f"reference {reference_path}: {mismatch} from the image {image_path}")
    names, names_source = resolve_labels(label_path, labels_yaml)
    provenance = dict(provenance or {})
    # a caller that hands in temporary copies (segment, a DICOM input) names the real files
    names_source = provenance.pop("label_names_source", None) or names_source
    shown_image = Path(provenance.get("ct_source") or image_path)
    img = np.asarray(image.array)
    stats = organ_statistics(labels.array, img, image.spacing, names, image.affine)
    ref_metrics = None
    if reference is not None:
        ref_metrics = evaluate_case(labels.array, reference.array, names, image.spacing, "strict")
    ranges = volume_ranges(reference_ranges_path)
    flags = [f.to_dict() for f in scan_flags(stats, img, ranges, ref_metrics)]
    colors = {n: organ_color(n, s["label"]) for n, s in stats.items()}

    img_r, sp_r, aff_r = to_ras(img, image.affine)
    lab_r = to_ras(labels.array, image.affine)[0]
    ref_r = None if reference is None else to_ras(reference.array, image.affine)[0]
    organs = [(s["label"], n, colors[n]) for n, s in stats.items()]
    figs = overlay_pngs(img_r.astype(np.float32), lab_r, sp_r, aff_r, organs, ref_r)

    import nibabel as nib

    axcodes = "".join(nib.aff2axcodes(image.affine))
    prov = _provenance(provenance, image_path, label_path, reference_path)
    n_found = sum(s["status"] != "absent" for s in stats.values())
    body = [
        "<h1>Abdominal organ segmentation report</h1>",
        f'<p class="sub">Scan <b>{H.esc(shown_image.name)}</b> &middot; '
        f'{n_found} of {len(stats)} organs found &middot; created {H.esc(prov["Report created"])}</p>',
        f'<div class="disclaimer">{H.esc(H.NOT_A_DIAGNOSIS)}</div>',
        *_model_card_lines(prov),
        "<h2>Quality checks</h2>",
        H.flag_list(flags, "No quality problems detected: all organs found, volumes plausible, "
                           "kidneys on the expected sides, no fragmented organs."),
        "<h2>Organ measurements</h2>",
        _organ_table(stats, ranges, ref_metrics, colors),
        '<p class="small muted">Volume: voxel count &times; voxel volume. "&ge;" marks organs cut '
        "off by the edge of the scan, whose true volume is larger. Adult range: wide screening "
        "range for adults (sources in datasets/organ_reference.yaml), not a normal limit for "
        "diagnosis; a dash means no meaningful range (depends on scan coverage or filling). "
        "Density: CT numbers inside the organ in Hounsfield units (HU). Pieces: separate "
        "connected parts of the segmentation (1 is expected). Body side: the patient's side "
        "relative to the body midline."
        + (" Dice (1 = identical) and HD95 (95th percentile of the distance between the "
           "outlines, mm) compare the automated result with the reference segmentation."
           if ref_metrics is not None else "") + "</p>",
        "<h2>Images</h2>",
        f"<figure>{H.img_tag(figs['axial'], 'axial CT slices with organ outlines')}"
        "<figcaption>Representative axial slices, radiological view (patient's right on the "
        "left of the image, anterior at the top), soft-tissue window (W 400 / L 40 HU). "
        "Coloured outlines: automated segmentation"
        + ("; dashed outlines: reference" if ref_r is not None else "") + ".</figcaption></figure>",
        f"<figure>{H.img_tag(figs['coronal'], 'coronal CT slice with organ outlines')}"
        "<figcaption>Coronal slice through the largest organ area (patient's right on the left, "
        "head at the top), same window.</figcaption></figure>",
        "<h2>Scan and provenance</h2>",
        H.provenance_block({
            **prov,
            "Image size (voxels)": " × ".join(str(s) for s in img.shape),
            "Voxel size (mm)": " × ".join(f"{s:.2f}" for s in image.spacing),
            "Orientation": axcodes,
            "Label names from": names_source,
            "Volume ranges from": (str(reference_ranges_path or DEFAULT_REFERENCE)
                                   if ranges else "not available (no volume check)"),
        }),
        f'<p class="small muted">{H.esc(H.NOT_A_DIAGNOSIS)}</p>',
    ]
    data = json_safe({"statistics": stats, "flags": flags, "reference_metrics": ref_metrics,
                      "labels": {str(k): v for k, v in names.items()},
                      "axial_slices": figs["axial_slices"], "coronal_slice": figs["coronal_slice"]})
    body.append('<script type="application/json" id="report-data">'
                + json.dumps(data, allow_nan=False).replace("</", "<\\/") + "</script>")
    return H.page(f"Organ segmentation report – {shown_image.name}", "\n".join(body)), data


def write_scan_report(image_path, label_path, out_html, reference_path=None,
                      provenance: dict | None = None, *, labels_yaml=None,
                      overwrite: bool = True) -> dict:
    """Write the clinician report of one segmented scan as a self-contained HTML file.

    Called by ``transunet report --image ... --labels ...`` and by ``segment --report``.

    Args:
        image_path: the CT (NIfTI, or .nrrd/.mha) in Hounsfield units.
        label_path: its label map on the same grid; organ names come from the ``<stem>.json``
            sidecar next to it (written by ``segment``), else ``labels_yaml``, else Synapse.
        out_html: where to write the report (written atomically: temp file + rename).
        reference_path: optional reference label map on the same grid: adds Dice / HD95 per
            organ and dashed reference outlines.
        provenance: facts to print: ``model``, ``checkpoint`` (path), ``checkpoint_sha256``,
            ``software_version`` (default ``transunet_app.__version__``), ``date`` (default
            now); any other key is shown as well. ``model``, ``checkpoint`` and
            ``checkpoint_sha256`` missing here are taken from the label map's sidecar JSON
            when it records them (``segment`` does).
        labels_yaml: label id -> name YAML used when there is no sidecar.
        overwrite: replace an existing ``out_html`` (the CLI passes its ``--overwrite``).

    Returns:
        ``{"path": Path, "statistics": {...}, "flags": [...], "reference_metrics": ...}``.

    Raises:
        UserError: unreadable inputs, label map / reference not on the image grid, existing
            output with ``overwrite=False``.
    """
    out = Path(out_html)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (use --overwrite to replace it)")
    text, data = build_scan_report(image_path, label_path, reference_path, provenance, labels_yaml)
    atomic_write_text(out, text, overwrite=overwrite)
    return {"path": out, **data}
