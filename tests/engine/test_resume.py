"""Exact resume: a run killed with SIGKILL and resumed repeats the uninterrupted losses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import REPO_ROOT, cli_env, run_cli, tiny_overrides

CONFIG = str(REPO_ROOT / "configs" / "tiny.yaml")
MAX_IT = 20


def _losses(log_path) -> dict[int, float]:
    """Iteration -> loss; a later line for the same iteration (after a resume) wins."""
    out = {}
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["iteration"]] = rec["loss"]
    return out


def _last_logged(log_path) -> int:
    if not log_path.exists():
        return 0
    its = [json.loads(ln).get("iteration", 0) for ln in log_path.read_text().splitlines() if '"loss"' in ln]
    return max(its, default=0)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_then_resume_repeats_losses(phantom_root, tmp_path):
    overrides = tiny_overrides(phantom_root, **{
        "train.max_iterations": MAX_IT, "train.checkpoint_every_iterations": 4, "train.deterministic": True,
        "val.source": "none", "model.overrides.dropout": 0.1, "train.cpu_threads": 1})
    # 18 slices / batch 4 -> 5 iterations per epoch: checkpoints fall mid-epoch and at epoch ends.

    # The uninterrupted run in this process (one thread, as the subprocesses below).
    from transunet_app.engine import train

    full = tmp_path / "full"
    train(CONFIG, full, overrides=overrides)
    reference = _losses(full / "log.jsonl")
    assert sorted(reference) == list(range(1, MAX_IT + 1))

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "transunet_app", "train", "--config", CONFIG, "--output",
                             str(killed), *overrides], env=cli_env(), cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while _last_logged(killed / "log.jsonl") < 10:
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "run too slow to reach iteration 10"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    from transunet_app.checkpoint import load_checkpoint

    saved = load_checkpoint(killed / "checkpoints" / "last.pt")["training"]["iteration"]
    assert 4 <= saved < MAX_IT

    res = run_cli(["train", "--output", str(killed), "--resume"])
    assert res.returncode == 0, res.stderr[-2000:]
    resumed = _losses(killed / "log.jsonl")
    assert sorted(resumed) == list(range(1, MAX_IT + 1))
    later = [it for it in range(saved + 1, MAX_IT + 1)]
    assert later, "nothing was recomputed after the resume"
    mismatched = {it: (resumed[it], reference[it]) for it in later if resumed[it] != reference[it]}
    assert not mismatched, f"resumed losses differ from the uninterrupted run: {mismatched}"
    log = (killed / "log.jsonl").read_text()
    assert '"event": "resume"' in log
    # The weights at the end are the same too.
    a = load_checkpoint(full / "checkpoints" / "last.pt")["state_dict"]
    b = load_checkpoint(killed / "checkpoints" / "last.pt")["state_dict"]
    assert all((a[k] == b[k]).all() for k in a)


def test_resume_refuses_changed_config(phantom_root, tmp_path):
    from transunet_app.engine import train
    from transunet_app.errors import UserError

    out = tmp_path / "run"
    overrides = tiny_overrides(phantom_root, **{"train.max_iterations": 2, "val.source": "none"})
    best = train(CONFIG, out, overrides=overrides)
    assert best.exists()
    with pytest.raises(UserError, match="optim.lr"):
        train(CONFIG, out, resume=True, overrides=[*overrides, "optim.lr=0.5"])
    # A finished run resumes to nothing new; a changed log setting is allowed.
    assert train(CONFIG, out, resume=True, overrides=[*overrides, "log.print_every=5"]) == best
    # Without --resume an existing run is never overwritten (CLI: one line, exit code 2).
    res = run_cli(["train", "--config", CONFIG, "--output", str(out), *overrides])
    assert res.returncode == 2 and "--resume" in res.stderr and "Traceback" not in res.stderr
