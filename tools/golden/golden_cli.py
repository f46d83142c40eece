"""The command line shared by the golden recorders (``tools/golden/make_golden*.py``).

    python tools/golden/make_golden_<family>.py --official PATH [--out DIR] [--only CASE]
"""
from __future__ import annotations

import argparse
import os

import torch

from transunet_app.testing import golden

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fidelity", "golden"),
                    help="folder of the golden files (default tests/fidelity/golden)")
    ap.add_argument("--only", default=None, choices=sorted(cases), help="record this case only")
    args = ap.parse_args()
    torch.set_default_dtype(torch.float64)  # the official code allocates with the default dtype
    return args, [(name, spec) for name, spec in cases.items() if args.only in (None, name)]


def write_case(out_dir: str, case: str, schema, x: torch.Tensor, input_seed: int, outputs: dict,
               meta: dict) -> str:
    """Save one case as ``<out_dir>/<case>.npz`` (:func:`golden.save_golden`) and say so."""
    path = os.path.join(out_dir, case + ".npz")
    golden.save_golden(path, schema, x.shape, input_seed, outputs, meta)
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KiB): "
          + ", ".join(f"{k} {tuple(v.shape)}" for k, v in outputs.items()))
    return path
