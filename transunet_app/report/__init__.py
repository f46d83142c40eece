"""Clinician reports: per-scan (organ table, overlays, QC flags) and per-dataset (box plots, paper table).

Public entry points: :func:`write_scan_report` (also used by ``segment --report``) and
:func:`write_dataset_report` (from an ``evaluate`` metrics.json).
"""
from __future__ import annotations


def write_scan_report(*args, **kwargs):
    """See :func:`transunet_app.report.scan.write_scan_report` (imported lazily)."""
    from .scan import write_scan_report as _impl

    return _impl(*args, **kwargs)


def write_dataset_report(*args, **kwargs):
    """See :func:`transunet_app.report.dataset.write_dataset_report` (imported lazily)."""
    from .dataset import write_dataset_report as _impl

    return _impl(*args, **kwargs)


__all__ = ["write_scan_report", "write_dataset_report"]
