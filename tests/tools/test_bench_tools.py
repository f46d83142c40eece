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
    out = _run(ROOT / "tools" / "bench_model.py", "--models", "tiny", "--batches", "1",
               "--rounds", "1", "--size", "64", "64", "--peak-sizes", "256")
    rows = [ln for ln in out.splitlines() if ln.startswith("| tiny |")]
    assert [r.split("|")[4].strip() for r in rows] == ["fp32", "bf16", "bf16-inference"]


def test_bench_train_loader_cost(tmp_path):
    out = _run(ROOT / "tools" / "bench_train.py", "--loader-only", "--threads", "1",
               "--img-size", "64", "--json", tmp_path / "r.json")
    assert "| reference (scipy) |" in out and "| engine (tensors) |" in out
    assert (tmp_path / "r.json").stat().st_size > 0


def test_bench_upsampled_argmax_reports_equal_labels():
    out = _run(ROOT / "tools" / "bench_upsampled_argmax.py", "--rounds", "1", "--size", "300",
               "--threads", "1")
    assert "speed-up" in out and "labels equal on 100.0000% of pixels" in out


def test_bench_metrics_small_volume():
    out = _run(ROOT / "tools" / "bench_metrics.py", "--shape", "20", "64", "64", "--repeats", "1",
               "--no-medpy")
    assert "|" in out


def test_bench_train_reference_dropout_is_torch_and_can_be_switched_off():
    import importlib.util

    import torch

    from transunet_app.models import build_model
    from transunet_app.fast_layers.dropout import BitsDropout as Dropout

    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "tools" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = bench.torch_dropout(build_model("tiny", 9, img_size=32)).train()
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and not any(isinstance(m, Dropout) for m in drops)
    rates = [m.p for m in drops]
    assert max(rates) == 0.1
    x = torch.rand(2, 1, 32, 32)
    bench.set_dropout(model, on=False)
    assert torch.equal(model(x), model(x))  # no randomness left
    bench.set_dropout(model, on=True)
    assert [m.p for m in drops] == rates
    assert not torch.equal(model(x), model(x))
