"""HTML building blocks shared by the scan and dataset reports: one self-contained page.

No external resources at all (no fonts, scripts or stylesheets from the network): images are
base64 ``data:`` URIs, the CSS is inline, and ``@media print`` makes it print cleanly to A4 PDF.
"""
from __future__ import annotations

import base64
import datetime
import html
from typing import Iterable, Mapping

NOT_A_DIAGNOSIS = (
    "These are automated measurements produced by software, not a diagnosis. They may be wrong "
    "and must be checked against the images by a qualified clinician before any clinical use.")

CSS = """
:root { --ink:#1b1f24; --muted:#57606a; --line:#d0d7de; --alert:#b42318; --warn:#a15c07;
        --info:#175cd3; --ok:#067647; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); margin: 0 auto; max-width: 980px; padding: 24px 28px; font-size: 14px;
       line-height: 1.45; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 17px; margin: 28px 0 8px 0; border-bottom: 2px solid var(--line);
     padding-bottom: 4px; }
.sub { color: var(--muted); margin: 0 0 12px 0; }
.disclaimer { border: 2px solid var(--alert); background: #fef3f2; padding: 10px 14px;
              border-radius: 6px; font-weight: 600; margin: 12px 0; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.organ { white-space: nowrap; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
          margin-right: 6px; vertical-align: -1px; border: 1px solid rgba(0,0,0,.25); }
.flags { list-style: none; padding: 0; margin: 6px 0; }
.flags li { padding: 6px 10px; margin: 4px 0; border-left: 5px solid; border-radius: 3px; }
.flags li.alert { border-color: var(--alert); background: #fef3f2; }
.flags li.warning { border-color: var(--warn); background: #fffaeb; }
.flags li.info { border-color: var(--info); background: #eff8ff; }
.flags li.ok { border-color: var(--ok); background: #ecfdf3; }
.tag { font-size: 11px; font-weight: 700; text-transform: uppercase; margin-right: 6px; }
.alert .tag { color: var(--alert); } .warning .tag { color: var(--warn); }
.info .tag { color: var(--info); } .ok .tag { color: var(--ok); }
.status-absent { color: var(--alert); font-weight: 600; }
.status-touches_image_edge { color: var(--warn); }
.muted { color: var(--muted); }
.small { font-size: 12px; }
figure { margin: 10px 0; text-align: center; page-break-inside: avoid; }
figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
dl.prov { display: grid; grid-template-columns: 190px 1fr; gap: 3px 12px; margin: 6px 0; }
dl.prov dt { color: var(--muted); } dl.prov dd { margin: 0; word-break: break-all; }
.paper td, .paper th { text-align: center; } .paper td:first-child, .paper th:first-child { text-align: left; }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  h2 { page-break-after: avoid; }
  table, figure, .flags li { page-break-inside: avoid; }
  @page { size: A4; margin: 14mm; }
}
"""


def esc(value) -> str:
    """HTML-escape any value (``None`` -> empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as base64."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def fmt(value, digits: int = 1, suffix: str = "", missing: str = "–") -> str:
    """Number with fixed decimals; ``None``/NaN -> an en dash (never a silent 0)."""
    if value is None:
        return missing
    try:
        v = float(value)
    except (TypeError, ValueError):
        return esc(value)
    if v != v:  # NaN
        return missing
    return f"{v:.{digits}f}{suffix}"


def swatch(color: str) -> str:
    return f'<span class="swatch" style="background:{esc(color)}"></span>'


def flag_list(flags: Iterable[Mapping], empty_text: str) -> str:
    """``<ul>`` of QC flags (dicts with severity, message); a green line when there are none."""
    items = [f'<li class="{esc(f["severity"])}"><span class="tag">{esc(f["severity"])}</span>'
             f'{esc(f["message"])}</li>' for f in flags]
    if not items:
        items = [f'<li class="ok"><span class="tag">ok</span>{esc(empty_text)}</li>']
    return '<ul class="flags">' + "".join(items) + "</ul>"


def provenance_block(prov: Mapping[str, object]) -> str:
    """Definition list of provenance facts, in the given order; empty values shown as a dash."""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v) if v not in (None, '') else '–'}</dd>"
                   for k, v in prov.items())
    return f'<dl class="prov">{rows}</dl>'


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def page(title: str, body: str) -> str:
    """A complete HTML document with the inline stylesheet."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
