"""Batches of slices computed side by side on CPU "streams": threads with their own intra-op pool.

One bf16 forward of R50-ViT-B_16 (batch 8, 224x224) does not keep two cores busy: attention on
196 tokens, normalisations of small maps and hundreds of small memory-bound ops parallelise
poorly: one batch on two threads takes much more than half the time of one thread.
Two batches at a time, each on its own thread with a single-threaded intra-op pool, keep both
cores busy on the same work (see BENCHMARKS.md). The split of the volume into batches is the
same either way, and a batch's result does not depend on which stream ran it.

Work runs in *waves*: ``streams`` batches start together and the caller hears of them (progress)
only when the whole wave is done, so nothing computes while the caller holds back (a progress
bar, or the benchmark's turn-taking); the last slices are spread over the streams so that the
final wave does not leave a core idle.
"""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import torch

Range = tuple[int, int]


def default_streams(device: torch.device, threads: int | None = None) -> int:
    """2 streams on a CPU with at least 2 threads (each stream then gets half of them), else 1."""
    threads = torch.get_num_threads() if threads is None else threads
    return 2 if device.type == "cpu" and threads >= 2 else 1


def plan_waves(slices: int, batch: int, streams: int) -> list[list[Range]]:
    """Slice ranges ``[start, stop)`` per wave: ``streams`` batches of ``batch`` slices, the
    remainder (fewer than ``streams * batch``) split as evenly as possible over the streams.

    >>> plan_waves(20, 4, 2)
    [[(0, 4), (4, 8)], [(8, 12), (12, 16)], [(16, 18), (18, 20)]]
    """
    if slices < 0 or batch < 1 or streams < 1:
        raise ValueError(f"bad plan: {slices} slices, batch {batch}, {streams} streams")
    waves, start, full = [], 0, batch * streams
    while slices - start >= full:
        waves.append([(start + i * batch, start + (i + 1) * batch) for i in range(streams)])
        start += full
    rest = slices - start
    if rest:
        parts = min(streams, rest)
        sizes = [rest // parts + (i < rest % parts) for i in range(parts)]
        wave = []
        for n in sizes:
            wave.append((start, start + n))
            start += n
        waves.append(wave)
    return waves


@contextlib.contextmanager
def stream_pool(streams: int, threads: int | None = None) -> Iterator[Callable]:
    """A ``run(fn, ranges) -> results`` that calls ``fn(start, stop)`` for the ranges of one wave
    concurrently, one stream each, and returns the results in order.

    Args:
        streams: concurrent workers (1: run in the calling thread, unchanged).
        threads: intra-op threads in total (default: torch's current setting); each stream
            gets ``max(1, threads // streams)``.

    The intra-op thread count is a per-thread setting of the OpenMP pool, so each worker sets
    its own; torch's global count is restored in the calling thread on exit.
    """
    threads = torch.get_num_threads() if threads is None else threads
    if streams <= 1:
        yield lambda fn, ranges: [fn(a, b) for a, b in ranges]
        return
    per_stream = max(1, threads // streams)
    before = torch.get_num_threads()
    pool = ThreadPoolExecutor(streams, thread_name_prefix="slice-stream",
                              initializer=torch.set_num_threads, initargs=(per_stream,))
    try:
        yield lambda fn, ranges: [f.result() for f in [pool.submit(fn, a, b) for a, b in ranges]]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(before)


def run_in_waves(fn: Callable[[int, int], object], slices: int, batch: int, streams: int,
                 done: Callable[[Range, object], None], threads: int | None = None) -> None:
    """``fn(start, stop)`` over every batch of ``range(slices)``, ``streams`` batches at a time;
    ``done(range, result)`` is called in the calling thread, in slice order, after each wave."""
    with stream_pool(streams, threads) as run:
        for wave in plan_waves(slices, batch, streams):
            for rng, result in zip(wave, run(fn, wave)):
                done(rng, result)

