"""The benchmark tools run (smallest settings): a broken tool must not wait for its next
full run to be found. Their numbers are not checked here (no timing in tests)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_bench_model_prints_a_row_per_mode():
    out = _run(ROOT / "tools" / "bench" / "bench_model.py", "--models", "tiny", "--batches", "1",
               "--rounds", "1", "--size", "64", "64", "--peak-sizes", "256")
    rows = [ln for ln in out.splitlines() if ln.startswith("| tiny |")]
    assert [r.split("|")[4].strip() for r in rows] == ["fp32", "bf16", "bf16-inference"]


def test_bench_model_fp32_inference_modes():
    """The fp32 model segment runs, and the oneDNN packing pass forced on (the AVX2 decision's
    measurement); both run on every CPU with oneDNN."""
    out = _run(ROOT / "tools" / "bench" / "bench_model.py", "--models", "tiny", "--batches", "1",
               "--rounds", "1", "--size", "64", "64", "--peak-sizes", "256", "--modes", "fp32-inference",
               "fp32-onednn")
    rows = [ln for ln in out.splitlines() if ln.startswith("| tiny |")]
    assert [r.split("|")[4].strip() for r in rows] == ["fp32-inference", "fp32-onednn"]
    assert "oneDNN fp32 packing:" in out


def test_bench_train_loader_cost(tmp_path):
    out = _run(ROOT / "tools" / "bench" / "bench_train.py", "--loader-only", "--threads", "1",
               "--img-size", "64", "--json", tmp_path / "r.json")
    assert "| reference (scipy) |" in out and "| engine (tensors) |" in out
    assert (tmp_path / "r.json").stat().st_size > 0


def test_bench_upsampled_argmax_reports_equal_labels():
    out = _run(ROOT / "tools" / "bench" / "bench_upsampled_argmax.py", "--rounds", "1", "--size", "300",
               "--threads", "1")
    assert "speed-up" in out and "labels equal on 100.0000% of pixels" in out


def test_bench_metrics_small_volume():
    out = _run(ROOT / "tools" / "bench" / "bench_metrics.py", "--shape", "20", "64", "64", "--repeats", "1",
               "--no-medpy")
    assert "|" in out


def test_bench_train_reference_dropout_is_torch_and_can_be_switched_off():
    out = _run(ROOT / "tools" / "bench" / "bench_train.py", "--check-dropout")
    assert "dropout check: ok" in out and "max rate 0.1)" in out
