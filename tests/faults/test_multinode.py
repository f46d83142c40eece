"""Two torchrun nodes on this machine (gloo, loopback): the tiny config trains; when one node
is lost the other stops within the collective timeout with one line; both resume from the last
checkpoint.

Two rendezvous: ``c10d`` (``--rdzv_endpoint``, elastic) and ``static`` (``--node_rank`` with
``--master_addr/--master_port``, node 0's agent hosts the store). "Lost" two ways: SIGKILL of a
node's agent and worker (a machine that dies: its sockets close, the other node notices at once)
and SIGSTOP of them (a machine that hangs or a cut network: nothing closes, the other node
waits for ``TRANSUNET_DIST_TIMEOUT``, 20 s here). The static cases lose node 0, the store host,
the harder case.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from .conftest import REPO_ROOT, cli_env

TIMEOUT_S = 20


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from transunet_app.data.phantom import prepare_phantom

    out = tmp_path_factory.mktemp("multinode_phantom") / "data"
    prepare_phantom(out, cases=4, seed=3, matrix=48, slices=6, test_fraction=0.25)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(port: int, run_id: str, args: list, node_rank: int | None = None) -> subprocess.Popen:
    """One node's torchrun: c10d rendezvous when ``node_rank`` is None, else static."""
    if node_rank is None:
        rdzv = ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", run_id]
    else:
        rdzv = ["--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", str(port)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", *rdzv,
           "--max_restarts", "0", "--local-addr", "127.0.0.1", "-m", "transunet_app", "train", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                            env=cli_env(TRANSUNET_DIST_TIMEOUT=str(TIMEOUT_S)), start_new_session=True)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _iterations(run) -> list[int]:
    log = run / "log.jsonl"
    if not log.exists():
        return []
    return [json.loads(ln)["iteration"] for ln in log.read_text().splitlines() if '"loss"' in ln]


def _args(phantom, run, max_it: int, resume: bool = False) -> list[str]:
    if resume:
        return ["--output", str(run), "--resume"]
    values = {"data.root": phantom, "data.img_size": 32, "train.batch_size": 4, "train.max_iterations": max_it,
              "train.checkpoint_every_iterations": 2, "train.cpu_threads": 1, "val.source": "none",
              "log.progress": False, "log.tensorboard": False, "train.amp": "off"}
    return ["--config", str(REPO_ROOT / "configs" / "tiny.yaml"), "--output", str(run),
            *[f"{k}={v}" for k, v in values.items()]]


def _pair(port: int, run_id: str, args: list, rdzv: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Both nodes; for static rendezvous the first is node 0 (the store host)."""
    ranks = (None, None) if rdzv == "c10d" else (0, 1)
    return _node(port, run_id, args, ranks[0]), _node(port, run_id, args, ranks[1])


def _run_pair(port, run_id, args, rdzv="c10d", timeout=300):
    a, b = _pair(port, run_id, args, rdzv)
    deadline = time.monotonic() + timeout
    outs, hung = [None, None], []
    try:
        for i, p in enumerate((a, b)):
            try:
                outs[i] = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung.append(i)
    finally:
        for p in (a, b):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    for i in hung:  # what it printed before the timeout is kept for this call
        outs[i] = (a, b)[i].communicate()
    if hung:  # say what both nodes printed, not only that one of them did not end
        tails = "\n".join(f"--- node {i} (exit {p.returncode}) stdout:\n{o[-1500:]}\nstderr:\n{e[-3000:]}"
                          for i, (p, (o, e)) in enumerate(zip((a, b), outs)))
        pytest.fail(f"{len(hung)} node(s) still running after {timeout} s\n{tails}")
    return (a.returncode, b.returncode), outs


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="/proc and POSIX signals")
@pytest.mark.parametrize("rdzv, loss", [
    ("c10d", "kill"),
    ("static", "kill"),
    ("static", "stop"),
    # A SIGSTOPped c10d node: the survivor's worker stops at TRANSUNET_DIST_TIMEOUT with its line,
    # but when the stopped node hosts the rendezvous store, the survivor's torchrun agent waits
    # forever in a TCPStore call (measured with torch 2.13: compare_set, and get after its wait
    # times out, never return while the store's process is stopped; rdzv read_timeout does not
    # bound them). Not our process; README "Several machines" says so and recommends static
    # rendezvous, which the ("static", "stop") case shows bounded.
    pytest.param("c10d", "stop", marks=pytest.mark.skip(
        reason="torchrun's c10d agent has no timeout on a hung store host (README: Several machines)")),
])
def test_lost_node_stops_the_other_then_both_resume(phantom, tmp_path, rdzv, loss):
    run = tmp_path / "run"
    max_it = 120
    port = _free_port()
    b, a = _pair(port, "faults", _args(phantom, run, max_it), rdzv)  # b: the lost node (static: node 0)
    victims = []
    try:
        deadline = time.monotonic() + 180
        while max(_iterations(run), default=0) < 6:
            assert a.poll() is None and b.poll() is None, (a.poll(), b.poll(), b.stderr.read()[-2000:] if b.poll() is not None else "")
            assert time.monotonic() < deadline, "the two nodes did not start training"
            time.sleep(0.05)
        victims = [b.pid, *_children(b.pid)]  # node B: its torchrun agent and its worker
        t0 = time.monotonic()
        for pid in victims:
            os.kill(pid, signal.SIGKILL if loss == "kill" else signal.SIGSTOP)
        _, err = a.communicate(timeout=TIMEOUT_S + 90)
        waited = time.monotonic() - t0
    finally:
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in (a, b):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert a.returncode != 0
    line = next((ln for ln in err.splitlines() if "lost contact with the other training processes" in ln), None)
    assert line is not None, err[-3000:]
    assert "--resume" in line and "last checkpoint" in line
    assert waited < TIMEOUT_S + 60, f"node A needed {waited:.0f} s to stop"
    stopped_at = max(_iterations(run))
    assert stopped_at < max_it

    # Both nodes again, --resume: the run completes from the last checkpoint.
    from transunet_app.checkpoint import load_checkpoint

    saved = load_checkpoint(run / "checkpoints" / "last.pt")["training"]["iteration"]
    assert 2 <= saved <= stopped_at
    (ra, rb), outs = _run_pair(_free_port(), "faults-resume", _args(phantom, run, max_it, resume=True), rdzv)
    assert (ra, rb) == (0, 0), outs[0][1][-3000:]
    assert sorted(set(_iterations(run))) == list(range(1, max_it + 1))
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    resume = [r for r in log if r.get("event") == "resume"]
    assert resume and resume[-1]["iteration"] == saved
    assert next(r for r in log if r.get("event") == "replicas")["max_checksum_difference"] == 0.0


@pytest.mark.slow
def test_two_nodes_train_the_tiny_config(phantom, tmp_path):
    run = tmp_path / "run"
    (ra, rb), outs = _run_pair(_free_port(), "faults-tiny", _args(phantom, run, 12))
    assert (ra, rb) == (0, 0), outs[0][1][-3000:]
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert next(r for r in log if r.get("event") == "start")["world_size"] == 2
    assert sorted(_iterations(run)) == list(range(1, 13))
    from transunet_app.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "last.pt")["training"]["world_size"] == 2


def test_readme_slurm_script_gives_each_node_its_rank(tmp_path):
    """README's SLURM script under stand-ins for scontrol, srun (one task per node, each with its
    own SLURM_NODEID, as SLURM runs them) and torchrun (prints its arguments): every node gets
    its own --node_rank and the first host as --master_addr."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("### Several machines"):]
    start = block.index("    #!/bin/bash")
    lines = []
    for ln in block[start:].splitlines():
        if not ln.startswith("    "):
            break
        lines.append(ln[4:])
    script = tmp_path / "job.sh"
    script.write_text("\n".join(lines) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "scontrol": 'test "$1 $2" = "show hostnames" && printf "gpu-a\\ngpu-b\\n"',
        "srun": 'for id in 0 1; do SLURM_NODEID=$id "$@"; done',
        "torchrun": 'printf "%s|" "$@"; echo',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "gpu-[a-b]"}
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    runs = [ln.rstrip("|").split("|") for ln in out.splitlines()]
    assert len(runs) == 2
    for node, argv in enumerate(runs):
        opts = dict(zip(argv[:-1], argv[1:]))
        assert opts["--node_rank"] == str(node) and opts["--nnodes"] == "2"
        assert opts["--master_addr"] == "gpu-a" and opts["--max_restarts"] == "0"
        assert argv[argv.index("-m") + 1:argv.index("-m") + 3] == ["transunet_app", "train"]
