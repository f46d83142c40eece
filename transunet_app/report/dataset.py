"""Dataset report from an ``evaluate`` metrics.json: paper-style table, box plots, per-case table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from ..data.files import atomic_write_text
from ..errors import UserError
from . import html as H
from .colors import organ_color
from .figures import box_plot_png

#: Cases with an organ Dice below this are listed in the quality checks.
LOW_DICE = 0.5


def load_metrics(path) -> dict:
    """Read and sanity-check an ``evaluate`` metrics.json.

    Raises:
        UserError: missing, not JSON, or not written by ``transunet evaluate``.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"metrics {p}: no such file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"metrics {p}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != "transunet-app/metrics":
        raise UserError(f"metrics {p}: not a metrics file written by 'transunet evaluate'")
    for key in ("cases", "summary", "organs", "convention"):
        if key not in doc:
            raise UserError(f"metrics {p}: missing '{key}'")
    return doc


def _pm(stat: Mapping, digits: int, n_cases: int | None = None) -> str:
    """mean ± SD; the count is shown only when some cases were left out (undefined)."""
    if stat.get("mean") is None:
        return "–"
    n = "" if stat["n"] == n_cases else f' <span class="muted small">(n={stat["n"]})</span>'
    return f"{stat['mean']:.{digits}f} &plusmn; {stat['std']:.{digits}f}{n}"


def _case_counts(sc: Mapping[str, int]) -> str:
    parts = [f"{sc['both_present']} present"]
    for key, word in (("missed", "missed"), ("false_positive", "false pos."),
                      ("both_empty", "absent in both")):
        if sc.get(key):
            parts.append(f"<b>{sc[key]} {word}</b>" if key != "both_empty" else f"{sc[key]} {word}")
    return ", ".join(parts)


def dataset_flags(doc: Mapping) -> list[dict]:
    """Plain-language findings over the cases: missed organs, false positives, low Dice, gaps."""
    flags = []
    missed: dict[str, list[str]] = {}
    false_pos: dict[str, list[str]] = {}
    low: list[str] = []
    for c in doc["cases"]:
        for organ, m in c["organs"].items():
            if m["status"] == "missed":
                missed.setdefault(organ, []).append(c["case"])
            elif m["status"] == "false_positive":
                false_pos.setdefault(organ, []).append(c["case"])
            elif m["status"] == "both_present" and m.get("dice") is not None and m["dice"] < LOW_DICE:
                low.append(f"{c['case']} {organ} ({m['dice']:.2f})")
    for organ, cases in missed.items():
        flags.append({"severity": "warning", "code": "organ_missed", "organ": organ,
                      "message": f"{organ.capitalize()} present in the reference but not predicted "
                                 f"in {len(cases)} case(s): {', '.join(cases)}."})
    for organ, cases in false_pos.items():
        flags.append({"severity": "warning", "code": "false_positive", "organ": organ,
                      "message": f"{organ.capitalize()} predicted but absent from the reference in "
                                 f"{len(cases)} case(s): {', '.join(cases)}."})
    if low:
        flags.append({"severity": "warning", "code": "low_dice", "organ": None,
                      "message": f"Dice below {LOW_DICE} in {len(low)} organ(s): {'; '.join(low)}."})
    if doc["convention"] == "strict":
        undef = {o: s["hd95"]["n_undefined"] for o, s in doc["summary"]["organs"].items()
                 if s["hd95"]["n_undefined"]}
        if undef:
            flags.append({"severity": "info", "code": "undefined_values", "organ": None,
                          "message": "HD95 is undefined when an organ is empty in the prediction or "
                                     "the reference; those cases are left out of the means (not "
                                     "counted as 0): " + ", ".join(f"{o} {n}" for o, n in undef.items())
                                     + "."})
    else:
        flags.append({"severity": "info", "code": "transunet_convention", "organ": None,
                      "message": "TransUNet convention: HD95 in voxels; an organ predicted but absent "
                                 "from the reference scores (Dice 1, HD95 0), a missed organ (0, 0), "
                                 "as in the official test code, so numbers compare with the papers."})
    resampled = [c["case"] for c in doc["cases"] if c.get("resampled")]
    if resampled:
        flags.append({"severity": "info", "code": "resampled", "organ": None,
                      "message": f"Prediction resampled onto the reference grid (nearest neighbour) "
                                 f"in {len(resampled)} case(s): {', '.join(resampled)}."})
    if doc.get("unpaired_files"):
        flags.append({"severity": "warning", "code": "unpaired", "organ": None,
                      "message": f"{len(doc['unpaired_files'])} file(s) had no partner and were not "
                                 f"evaluated: {', '.join(doc['unpaired_files'])}."})
    unnamed = sorted({v for c in doc["cases"] for v in c.get("unnamed_label_values", [])})
    if unnamed:
        flags.append({"severity": "warning", "code": "unnamed_labels", "organ": None,
                      "message": f"Label values without an organ name were ignored: {unnamed}."})
    order = {"alert": 0, "warning": 1, "info": 2}
    return sorted(flags, key=lambda f: order[f["severity"]])


def _paper_table(doc: Mapping, method: str) -> str:
    organs = doc["organs"]
    s = doc["summary"]
    unit = doc.get("hd95_unit", "mm")
    head = ("<tr><th>Method</th><th>DSC (%) &uarr;</th>"
            f"<th>HD95 ({H.esc(unit)}) &darr;</th>"
            + "".join(f"<th>{H.esc(o.capitalize())}</th>" for o in organs) + "</tr>")

    def pct(v):
        return "–" if v is None else f"{100 * v:.2f}"

    row = (f"<tr><td>{H.esc(method)}</td><td><b>{pct(s['mean']['dice'])}</b></td>"
           f"<td><b>{H.fmt(s['mean']['hd95'], 2)}</b></td>"
           + "".join(f"<td>{pct(s['organs'][o]['dice']['mean'])}</td>" for o in organs) + "</tr>")
    return f'<table class="paper">{head}{row}</table>'


def _organ_table(doc: Mapping, colors: Mapping[str, str]) -> str:
    unit = doc.get("hd95_unit", "mm")
    tol = doc.get("nsd_tolerance_mm")
    n_cases = len(doc["cases"])
    rows = ["<tr><th>Organ</th><th class=num>Dice</th>"
            f"<th class=num>HD95 ({H.esc(unit)})</th><th class=num>ASSD (mm)</th>"
            f"<th class=num>NSD @ {H.fmt(tol, 1)} mm</th>"
            "<th class=num>Predicted vol. (mL)</th><th class=num>Reference vol. (mL)</th>"
            "<th>Cases</th></tr>"]
    for o, s in doc["summary"]["organs"].items():
        rows.append(
            f'<tr><td class="organ">{H.swatch(colors[o])}{H.esc(o)}</td>'
            f"<td class=num>{_pm(s['dice'], 3, n_cases)}</td>"
            f"<td class=num>{_pm(s['hd95'], 2, n_cases)}</td>"
            f"<td class=num>{_pm(s['assd_mm'], 2, n_cases)}</td>"
            f"<td class=num>{_pm(s['nsd'], 3, n_cases)}</td>"
            f"<td class=num>{_pm(s['pred_volume_ml'], 0, n_cases)}</td>"
            f"<td class=num>{_pm(s['ref_volume_ml'], 0, n_cases)}</td>"
            f"<td class=small>{_case_counts(s['status_counts'])}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _case_table(doc: Mapping) -> str:
    organs = doc["organs"]
    rows = ["<tr><th>Case</th>" + "".join(f"<th class=num>{H.esc(o)}</th>" for o in organs)
            + "<th class=num>mean</th></tr>"]
    for c in doc["cases"]:
        vals = [c["organs"].get(o, {}).get("dice") for o in organs]
        cells = []
        for o, v in zip(organs, vals):
            st = c["organs"].get(o, {}).get("status")
            note = {"missed": " missed", "false_positive": " false pos.",
                    "both_empty": " absent"}.get(st, "")
            style = "" if v is None or v >= LOW_DICE else ' style="color:#b42318;font-weight:600"'
            cells.append(f"<td class=num{style}>{H.fmt(v, 3)}"
                         f"{f'<span class=small>{note}</span>' if note else ''}</td>")
        finite = [v for v in vals if v is not None]
        mean = float(np.mean(finite)) if finite else None
        rows.append(f"<tr><td>{H.esc(c['case'])}</td>{''.join(cells)}"
                    f"<td class=num><b>{H.fmt(mean, 3)}</b></td></tr>")
    return "<table class=small>" + "".join(rows) + "</table>"


def build_dataset_report(metrics_path, provenance: Mapping | None = None) -> tuple[str, dict]:
    """``(html_text, data)`` for a metrics.json; ``data`` has ``flags`` and ``organs``."""
    from .. import __version__

    doc = load_metrics(metrics_path)
    organs = doc["organs"]
    labels = {}
    for c in doc["cases"]:
        for o, m in c["organs"].items():
            labels.setdefault(o, m.get("label", 0))
    colors = {o: organ_color(o, labels.get(o, 0)) for o in organs}
    flags = dataset_flags(doc)
    unit = doc.get("hd95_unit", "mm")
    n_cases = len(doc["cases"])
    dice_png = box_plot_png({o: [c["organs"].get(o, {}).get("dice") for c in doc["cases"]]
                             for o in organs}, colors, "Dice", f"Dice per organ over {n_cases} case(s)",
                            ylim=(0.0, 1.02))
    hd_png = box_plot_png({o: [c["organs"].get(o, {}).get("hd95") for c in doc["cases"]]
                           for o in organs}, colors, f"HD95 ({unit})",
                          f"HD95 per organ over {n_cases} case(s) (undefined cases left out)")
    prov = dict(provenance or {})
    method = prov.get("model") or "this model"
    prov_rows = {
        "Model": prov.pop("model", None),
        "Checkpoint": prov.pop("checkpoint", None),
        "Checkpoint SHA-256": prov.pop("checkpoint_sha256", None),
        "Metrics file": str(metrics_path),
        "Evaluated": str(doc.get("created") or "").replace("T", " ").replace("+00:00", " UTC"),
        "Evaluation software": f"transunet-app {doc.get('software', {}).get('version', '?')}",
        "Report software": f"transunet-app {prov.pop('software_version', __version__)}",
        "Report created": prov.pop("date", None) or H.now_utc(),
        "Predictions": doc.get("pred"),
        "References": doc.get("gt"),
        "Convention": doc["convention"],
    }
    for k, v in prov.items():
        prov_rows[str(k).replace("_", " ").capitalize()] = v
    conv_text = ("strict: HD95 in mm; empty organs handled explicitly and undefined values left "
                 "out of the means (never counted as 0)" if doc["convention"] == "strict" else
                 "transunet: reproduces the official TransUNet test (HD95 in voxels; (1, 0) for an "
                 "organ predicted but absent from the reference, (0, 0) for a missed organ)")
    body = [
        "<h1>Segmentation evaluation report</h1>",
        f'<p class="sub">{n_cases} case(s) &middot; {len(organs)} organs &middot; convention '
        f'<b>{H.esc(doc["convention"])}</b> &middot; created {H.esc(prov_rows["Report created"])}</p>',
        f'<div class="disclaimer">{H.esc(H.NOT_A_DIAGNOSIS)} This page describes how well the '
        "software agrees with reference segmentations on these cases only.</div>",
        "<h2>Summary (paper-style)</h2>",
        _paper_table(doc, method),
        f'<p class="small muted">DSC: mean Dice over organs of the per-organ means over cases, '
        f"in percent; HD95: the same for the 95th-percentile Hausdorff distance. Convention "
        f"{H.esc(conv_text)}.</p>",
        "<h2>Quality checks</h2>",
        H.flag_list(flags, "No missed organs, no false positives, no low Dice."),
        "<h2>Per organ</h2>",
        _organ_table(doc, colors),
        '<p class="small muted">mean &plusmn; standard deviation over the cases; (n=...) when the '
        "value is undefined in some cases (organ empty in prediction or reference). Cases: "
        "present = organ in both prediction and reference; missed = in the reference only; "
        "false pos. = in the prediction only. ASSD: average symmetric surface distance. NSD: normalised surface Dice, "
        "the fraction of both outlines lying within the tolerance of the other.</p>",
        f"<figure>{H.img_tag(dice_png, 'Dice box plot per organ')}"
        "<figcaption>Dice per organ: box = middle half of the cases, line = median, dots = "
        "cases.</figcaption></figure>",
        f"<figure>{H.img_tag(hd_png, 'HD95 box plot per organ')}"
        f"<figcaption>HD95 per organ ({H.esc(unit)}); lower is better.</figcaption></figure>",
        "<h2>Per case (Dice)</h2>",
        _case_table(doc),
        "<h2>Provenance</h2>",
        H.provenance_block(prov_rows),
        f'<p class="small muted">{H.esc(H.NOT_A_DIAGNOSIS)}</p>',
    ]
    data = {"flags": flags, "organs": organs}
    body.append('<script type="application/json" id="report-data">'
                + json.dumps(data).replace("</", "<\\/") + "</script>")
    return H.page("Segmentation evaluation report", "\n".join(body)), data


def write_dataset_report(metrics_path, out_html, provenance: dict | None = None, *,
                         overwrite: bool = True) -> dict:
    """Write the dataset report of an ``evaluate`` metrics.json as a self-contained HTML file.

    Args:
        metrics_path: metrics.json written by ``transunet evaluate``.
        out_html: output file (atomic write).
        provenance: optional ``model``, ``checkpoint``, ``checkpoint_sha256`` and extra facts.
        overwrite: replace an existing file.

    Returns:
        ``{"path": Path, "flags": [...], "organs": [...]}``.
    """
    out = Path(out_html)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (use --overwrite to replace it)")
    text, data = build_dataset_report(metrics_path, provenance)
    atomic_write_text(out, text, overwrite=overwrite)
    return {"path": out, **data}
