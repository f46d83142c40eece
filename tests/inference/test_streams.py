"""Slices computed side by side on CPU streams: every slice once, in order, same per-batch work."""
import threading

import pytest
import torch

from transunet_app.inference.streams import default_streams, plan_waves, run_in_waves, stream_pool


@pytest.mark.parametrize("slices,batch,streams", [(0, 8, 2), (1, 8, 2), (5, 8, 2), (16, 8, 2),
                                                  (150, 8, 2), (151, 8, 3), (20, 4, 1), (7, 1, 4)])
def test_waves_cover_every_slice_once_in_order(slices, batch, streams):
    waves = plan_waves(slices, batch, streams)
    ranges = [r for wave in waves for r in wave]
    covered = [i for a, b in ranges for i in range(a, b)]
    assert covered == list(range(slices))
    assert all(1 <= b - a <= batch for a, b in ranges)
    assert all(len(w) <= streams for w in waves)
    # every wave but the last is `streams` full batches; the last spreads its slices evenly
    for w in waves[:-1]:
        assert [b - a for a, b in w] == [batch] * streams
    if waves:
        sizes = [b - a for a, b in waves[-1]]
        assert max(sizes) - min(sizes) <= 1


def test_plan_of_150_slices_matches_sequential_batches_until_the_rest():
    waves = plan_waves(150, 8, 2)
    assert waves[0] == [(0, 8), (8, 16)]
    assert waves[-1] == [(144, 147), (147, 150)]  # 6 left: 3 + 3, not one stream idle


def test_bad_plans_are_rejected():
    for args in ((-1, 8, 2), (10, 0, 2), (10, 8, 0)):
        with pytest.raises(ValueError):
            plan_waves(*args)


def test_pool_runs_each_stream_on_its_own_thread_with_its_share_of_threads():
    before = torch.get_num_threads()
    seen = []

    def fn(a, b):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return a * 10 + b

    with stream_pool(2, threads=4) as run:
        assert run(fn, [(0, 1), (1, 2)]) == [1, 12]   # results in the order of the ranges
    assert all(name.startswith("slice-stream") and n == 2 for name, n in seen)
    assert torch.get_num_threads() == before


def test_single_stream_runs_in_the_calling_thread():
    me = threading.current_thread().name
    with stream_pool(1) as run:
        assert run(lambda a, b: threading.current_thread().name, [(0, 1), (1, 2)]) == [me, me]


def test_run_in_waves_reports_in_slice_order_from_the_calling_thread():
    me = threading.current_thread()
    calls = []
    run_in_waves(lambda a, b: list(range(a, b)), 11, 3, 2,
                 lambda rng, res: calls.append((rng, res, threading.current_thread() is me)))
    assert [c[0] for c in calls] == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert all(c[1] == list(range(*c[0])) and c[2] for c in calls)


def test_errors_in_a_stream_reach_the_caller():
    def fn(a, b):
        if a == 3:
            raise RuntimeError("bad batch")
        return a
    with pytest.raises(RuntimeError, match="bad batch"):
        run_in_waves(fn, 9, 3, 2, lambda rng, res: None)


def test_default_streams():
    assert default_streams(torch.device("cpu"), 2) == 2
    assert default_streams(torch.device("cpu"), 1) == 1
    assert default_streams(torch.device("cuda"), 8) == 1



def test_segment_canonical_gives_the_same_results_on_one_or_two_streams():
    import numpy as np

    from transunet_app.checkpoint import model_from_checkpoint
    from transunet_app.inference.predictor import ConfidenceAccumulator, SlicePredictor

    from .conftest import tiny_checkpoint_dict

    ckpt = tiny_checkpoint_dict()
    volume = np.random.default_rng(0).normal(40, 120, (11, 40, 36)).astype(np.float32)
    out, conf = {}, {}
    for streams in (1, 2):
        pred = SlicePredictor(model_from_checkpoint(ckpt), ckpt["preprocessing"],
                              torch.device("cpu"), "fp32", batch_size=4, streams=streams)
        acc = ConfidenceAccumulator(pred.num_classes)
        done = []
        out[streams] = pred.segment_canonical(volume, probabilities=True, confidence=acc,
                                              progress=done.append)
        assert done == ([4, 4, 3] if streams == 1 else [4, 4, 2, 1])
        conf[streams] = acc
    # same slices, same model; only the batches' composition and thread counts differ
    np.testing.assert_array_equal(out[1][0], out[2][0])
    assert np.abs(out[1][1].astype(int) - out[2][1]).max() <= 1
    np.testing.assert_array_equal(conf[1].voxels, conf[2].voxels)
    np.testing.assert_allclose(conf[1].prob_sum, conf[2].prob_sum, rtol=1e-6)
