#!/usr/bin/env python
"""csoftmax.dask on a LocalCluster: throughput and worker memory for an axis spread over many chunks.

Run from the repository root (needs `pip install dask distributed psutil`, i.e. the csoftmax[dask] extra plus
distributed)::

    python benchmarks/dask_bench.py                         # 2 GB float32, 64 MB chunks: about 1 minute
    python benchmarks/dask_bench.py --size-gb 0.25 --chunk-mb 16
    python benchmarks/dask_bench.py --kind log_softmax --rows 64

The array is ``rows x n`` float32 (``n`` set by --size-gb), chunked only along the softmax axis (dim=1), so every
row spans all ``size / chunk`` chunks and the two-pass plan (tree reduction of per-chunk partials, then a
normalisation pass) is what runs. Blocks are produced on the workers (a per-worker cached random block plus a
per-block offset: cheap, so the timing is the softmax, not a data source), and the result is reduced on the
workers to per-row sums (each should be 1), so no block travels to the client.

Reported:
  * source only    time to produce every block once and sum it (the floor of any computation on this data);
                   the softmax produces every block twice (once per pass, see csoftmax/dask.py)
  * dask softmax   wall time of softmax(x, 1).sum(axis=1) on the cluster (best of --repeat), as GB/s of input
  * in memory      csoftmax.softmax on the same data in this process (one thread), if it fits in memory with
                   room to spare, else on one chunk, scaled to the whole size
  * worker peak    the peak RSS of each worker process during the softmax (sampled every 5 ms by a thread on
                   the worker), above its RSS before, also in chunks
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
# `python benchmarks/dask_bench.py` puts benchmarks/ first on sys.path, not the repository root; put the root there
# so `import csoftmax` finds the source folder (its in-place build, or it hands over to an installed copy). The
# worker processes are spawned with this sys.path.
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

try:
    import dask  # noqa: E402
    import dask.array as da  # noqa: E402
    import distributed  # noqa: E402
    import psutil  # noqa: E402
except ImportError as exc:  # pragma: no cover
    sys.exit(f"dask_bench.py needs dask, distributed and psutil: pip install dask distributed psutil ({exc})")

import csoftmax  # noqa: E402
import csoftmax.dask as cdask  # noqa: E402

GB = 1e9
MB = 2**20


# ------------------------------------------------------------------------------------------------- the data


_LOCAL_CACHE: dict = {}


def _base_block(shape, seed):
    """One random float32 block per process (the workers' is kept on the worker object, so every task of this
    process reuses it); generated once, a few hundred ms."""
    try:
        cache = distributed.get_worker().__dict__.setdefault("_csoftmax_bench_cache", {})
    except ValueError:  # not on a worker: this process
        cache = _LOCAL_CACHE
    key = (shape, seed)
    if key not in cache:
        cache.clear()
        cache[key] = (np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) * 4).astype(np.float32)
    return cache[key]


def make_block(block_info=None, seed=0):
    """Block j of the input: the cached random block + j/1000, a fresh array (one pass over memory)."""
    info = block_info[None]
    shape = tuple(info["chunk-shape"])
    j = info["chunk-location"][1]
    return np.add(_base_block(shape, seed), np.float32(j / 1000))


def make_input(rows, n, chunk_cols):
    chunks = ((rows,), tuple(min(chunk_cols, n - s) for s in range(0, n, chunk_cols)))
    return da.map_blocks(make_block, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))


def make_in_memory(rows, n, chunk_cols):
    """The same values as make_input, as one array in this process."""
    a = np.empty((rows, n), np.float32)
    for j, s in enumerate(range(0, n, chunk_cols)):
        e = min(s + chunk_cols, n)
        base = _base_block((rows, e - s), 0)
        np.add(base, np.float32(j / 1000), out=a[:, s:e])
    return a


# --------------------------------------------------------------------------------------- worker memory


def _start_sampler(dask_worker, interval=0.005):
    """Starts a thread on the worker that records the process's peak RSS until stopped."""
    proc = psutil.Process()
    state = {"peak": proc.memory_info().rss, "start": proc.memory_info().rss, "stop": threading.Event()}

    def loop():
        while not state["stop"].is_set():
            state["peak"] = max(state["peak"], proc.memory_info().rss)
            state["stop"].wait(interval)

    state["thread"] = threading.Thread(target=loop, daemon=True, name="csoftmax-bench-rss")
    state["thread"].start()
    dask_worker._csoftmax_bench_rss = state
    return state["start"]


def _stop_sampler(dask_worker):
    state = dask_worker._csoftmax_bench_rss
    state["stop"].set()
    state["thread"].join()
    state["peak"] = max(state["peak"], psutil.Process().memory_info().rss)
    return state["start"], state["peak"]


# ----------------------------------------------------------------------------------------------- timing


def timed(fn, repeat):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gb", type=float, default=2.0, help="input size in GB (1e9 bytes); default 2")
    p.add_argument("--chunk-mb", type=float, default=64.0, help="chunk size in MiB; default 64")
    p.add_argument("--rows", type=int, default=16, help="rows (the non-softmax axis, one chunk); default 16")
    p.add_argument("--kind", choices=["softmax", "log_softmax"], default="softmax")
    p.add_argument("--workers", type=int, default=2, help="worker processes, 1 thread each; default 2")
    p.add_argument("--repeat", type=int, default=2, help="timed runs, the best is reported; default 2")
    args = p.parse_args(argv)

    rows = args.rows
    chunk_cols = max(1, int(args.chunk_mb * MB) // (4 * rows))
    n = max(chunk_cols, int(args.size_gb * GB) // (4 * rows))
    nbytes = rows * n * 4
    n_chunks = -(-n // chunk_cols)
    chunk_bytes = rows * chunk_cols * 4
    fn = getattr(cdask, args.kind)

    print(f"csoftmax {csoftmax.__version__} ({csoftmax.__file__}), dask {dask.__version__}, "
          f"distributed {distributed.__version__}, NumPy {np.__version__}")
    print(f"{args.kind} of float32 ({rows}, {n}) = {nbytes / GB:.3g} GB along dim=1: {n_chunks} chunks of "
          f"({rows}, {chunk_cols}) = {chunk_bytes / MB:.0f} MiB; LocalCluster {args.workers} workers x 1 thread; "
          f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM")

    x = make_input(rows, n, chunk_cols)
    with distributed.LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # a free port on loopback (None would mean 8787)
        memory_limit=0,  # measure, do not spill or pause: the point is how much a worker needs
    ) as cluster, distributed.Client(cluster) as client:
        # warm-up: imports on the workers, the cached base block, a small softmax
        x.sum(axis=1).compute()
        fn(x[:, : 4 * chunk_cols], 1).sum(axis=1).compute()

        t_source, _ = timed(lambda: x.sum(axis=1).compute(), args.repeat)

        y = fn(x, 1).sum(axis=1) if args.kind == "softmax" else fn(x, 1).max(axis=1)
        client.run(_start_sampler)
        t_dask, sums = timed(lambda: y.compute(), args.repeat)
        rss = client.run(_stop_sampler)
        if args.kind == "softmax":
            assert np.allclose(sums, 1, atol=1e-4), sums  # every row sums to 1

    # in memory, in this process: the whole array if input + output fit with room to spare, else one chunk
    fits = 2.5 * nbytes < psutil.virtual_memory().available
    in_memory = getattr(csoftmax, args.kind, None)
    if in_memory is None:  # log_softmax not in this csoftmax yet: compare with softmax
        in_memory = csoftmax.softmax
    if fits:
        a = make_in_memory(rows, n, chunk_cols)
        t_mem, _ = timed(lambda: in_memory(a, dim=1), args.repeat)
        mem_note = "whole array"
        del a
    else:
        a = make_in_memory(rows, chunk_cols, chunk_cols)
        t_chunk, _ = timed(lambda: in_memory(a, dim=1), max(3, args.repeat))
        t_mem = t_chunk * nbytes / a.nbytes
        mem_note = "one chunk, scaled"

    print()
    print(f"{'':34}{'time s':>9}{'GB/s':>9}")
    print(f"{'source only (produce + sum)':34}{t_source:9.3f}{nbytes / GB / t_source:9.2f}")
    print(f"{'dask ' + args.kind + ' (+ sum), 2 passes':34}{t_dask:9.3f}{nbytes / GB / t_dask:9.2f}")
    print(f"{'in-memory csoftmax, 1 thread':34}{t_mem:9.3f}{nbytes / GB / t_mem:9.2f}   ({mem_note})")
    print(f"dask / in-memory throughput: {t_mem / t_dask:.2f}x  (dask on {args.workers} worker processes)")
    print()
    print("worker peak RSS during the softmax:")
    for i, (addr, (start, peak)) in enumerate(sorted(rss.items())):
        print(f"  worker {i}: {start / MB:7.0f} MiB before, {peak / MB:7.0f} MiB peak, "
              f"+{(peak - start) / MB:.0f} MiB = {(peak - start) / chunk_bytes:.1f} chunks "
              f"(input per worker: {nbytes / args.workers / chunk_bytes:.0f} chunks)")


if __name__ == "__main__":
    main()
