"""Two CPU processes (gloo) under torchrun end with identical weights; rank 0 alone writes."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import torch

from .conftest import REPO_ROOT, cli_env, tiny_overrides


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ranks_hold_identical_weights(phantom_root, tmp_path):
    out = tmp_path / "ddp"
    worker = Path(__file__).with_name("ddp_worker.py")
    overrides = tiny_overrides(phantom_root, **{"train.max_iterations": 6, "val.every_epochs": 1,
                                                "train.batch_size": 4})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(worker), str(REPO_ROOT / "configs" / "tiny.yaml"), str(out),
           *overrides]
    res = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=REPO_ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]

    w0 = torch.load(out / "rank0_weights.pt", weights_only=True)
    w1 = torch.load(out / "rank1_weights.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    differing = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert not differing, f"ranks disagree on {differing[:5]}"

    from transunet_app.checkpoint import load_checkpoint

    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert all(torch.equal(ck["state_dict"][k], w0[k]) for k in w0)
    assert ck["training"]["world_size"] == 2 and len(ck["training"]["rng"]) == 2
    # The weights moved (training happened) ...
    first = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    start = next(r for r in first if r.get("event") == "start")
    assert start["world_size"] == 2
    # ... each rank saw half of every global batch: 18 slices -> 9 per rank -> 5 batches of 2.
    assert start["iters_per_epoch"] == 5
    replicas = next(r for r in first if r.get("event") == "replicas")
    assert replicas["max_checksum_difference"] == 0.0
    # Only rank 0 wrote: one log, one set of checkpoints, no stray temp files.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt", "previous.pt"]
