"""The command line shared by the golden recorders (``tools/make_golden*.py``).

    python tools/make_golden_<family>.py --official PATH [--out DIR] [--only CASE]
"""
from __future__ import annotations

import argparse
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def recording_plan(doc: str, official: str, cases: dict) -> tuple[argparse.Namespace, list]:
    """Parse the recorder's arguments and switch torch to float64.

    Args:
        doc: the recorder's module docstring (its first line is the description).
        official: what ``--official`` points at, e.g. ``"microsoft/CvT"``.
        cases: the recorder's ``CASES`` (name -> case spec).

    Returns:
        ``(args, [(name, spec), ...])``: the cases to record (all, or the ``--only`` one).
    """
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--official", required=True, help=f"checkout of the official {official} repo")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"),
                    help="folder of the golden files (default tests/golden)")
    ap.add_argument("--only", default=None, choices=sorted(cases), help="record this case only")
    args = ap.parse_args()
    torch.set_default_dtype(torch.float64)  # the official code allocates with the default dtype
    return args, [(name, spec) for name, spec in cases.items() if args.only in (None, name)]
