#!/usr/bin/env python
"""csoftmax.dask on a LocalCluster: throughput and worker memory for an axis spread over many chunks.

Run from the repository root (needs `pip install dask distributed psutil`, i.e. the csoftmax[dask] extra plus
distributed)::

    python benchmarks/dask_bench.py                         # 2 GB float32, 64 MiB chunks: about 30 s
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
  * in memory      csoftmax.softmax on the same data in this process (one thread, and csoftmax's default
                   thread count if it has a pool), if it fits in memory with room to spare, else on one
                   chunk, scaled to the whole size
  * worker peak    the peak RSS of each worker process during the softmax (sampled every 5 ms by a thread on
                   the worker), above its RSS before, also in chunks
"""
from __future__ import annotations

import argparse
import functools
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


def _random_block(shape, seed):
    return (np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) * 4).astype(np.float32)


def _base_block(shape, seed):
    """One random float32 block per worker process, kept on the worker object so that every task there reuses it
    (generated once, a few hundred ms). Nothing here may refer to a module-level cache: this script's functions
    are pickled by value into the graph, with the globals they use."""
    try:
        cache = distributed.get_worker().__dict__.setdefault("_csoftmax_bench_cache", {})
    except ValueError:  # not on a worker
        return _random_block(shape, seed)
    key = (shape, seed)
    if key not in cache:  # at most two shapes: the full chunk and the last one
        cache[key] = _random_block(shape, seed)
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
    bases = {}
    for j, s in enumerate(range(0, n, chunk_cols)):
        e = min(s + chunk_cols, n)
        shape = (rows, e - s)
        if shape not in bases:
            bases[shape] = _random_block(shape, 0)
        np.add(bases[shape], np.float32(j / 1000), out=a[:, s:e])
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
    p.add_argument("--repeat", type=int, default=3, help="timed runs, the best is reported; default 3")
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

    # In memory, in this process, first (before the cluster's processes take memory and CPU): the whole array if
    # input and output fit with room to spare, else one chunk, scaled. csoftmax may run large calls on a thread
    # pool: timed on one thread (like for like with one worker thread) and, if it has a pool, with its default.
    fits = 2.5 * nbytes < psutil.virtual_memory().available
    in_memory = getattr(csoftmax, args.kind, None) or csoftmax.softmax  # (no log_softmax: compare with softmax)
    a = make_in_memory(rows, n, chunk_cols) if fits else make_in_memory(rows, chunk_cols, chunk_cols)
    mem_note = "whole array" if fits else "one chunk, scaled"
    threads = [1]
    if hasattr(csoftmax, "set_num_threads"):
        default_threads = csoftmax.get_num_threads()
        if default_threads > 1:
            threads.append(default_threads)
    t_mem = {}
    try:
        for k in threads:
            if hasattr(csoftmax, "set_num_threads"):
                csoftmax.set_num_threads(k)
            in_memory(a, dim=1)  # warm-up: first touches of fresh memory are slow on some VMs
            t, _ = timed(functools.partial(in_memory, a, dim=1), args.repeat)
            t_mem[k] = t * nbytes / a.nbytes
    finally:
        if hasattr(csoftmax, "set_num_threads"):
            csoftmax.set_num_threads(threads[-1])
    del a

    x = make_input(rows, n, chunk_cols)
    with distributed.LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # a free port on loopback (None would mean 8787)
        memory_limit=0,  # measure, do not spill or pause: the point is how much a worker needs
    ) as cluster, distributed.Client(cluster) as client:
        # warm-up: imports on the workers, the cached base blocks, one whole softmax
        x.sum(axis=1).compute()
        y = fn(x, 1).sum(axis=1)  # per-row sums on the workers: no block travels to this process
        y.compute()

        t_source, _ = timed(lambda: x.sum(axis=1).compute(), args.repeat)

        client.run(_start_sampler)
        t_dask, sums = timed(lambda: y.compute(), args.repeat)
        rss = client.run(_stop_sampler)
        with distributed.get_task_stream(client) as stream:  # one more run, for the compute time per pass
            y.compute()
        busy = {}
        for record in stream.data:
            prefix = distributed.utils.key_split(record["key"])
            for part in record["startstops"]:
                if part["action"] == "compute":
                    busy[prefix] = busy.get(prefix, 0.0) + part["stop"] - part["start"]
        if args.kind == "softmax":
            assert np.allclose(sums, 1, atol=1e-4), sums  # every row sums to 1

    print()
    print(f"{'':36}{'time s':>9}{'GB/s':>9}")
    print(f"{'source only (produce + sum)':36}{t_source:9.3f}{nbytes / GB / t_source:9.2f}")
    print(f"{'csoftmax.dask.' + args.kind + ' (+ sum)':36}{t_dask:9.3f}{nbytes / GB / t_dask:9.2f}")
    for k, t in t_mem.items():
        label = f"in-memory {in_memory.__name__}, {k} thread{'s' if k > 1 else ''}"
        print(f"{label:36}{t:9.3f}{nbytes / GB / t:9.2f}   ({mem_note})")
    print(f"dask / in-memory (1 thread) throughput: {t_mem[1] / t_dask:.2f}x  "
          f"(dask on {args.workers} worker processes x 1 thread)")
    print()
    print("compute time summed over the workers' tasks (one more run):")
    pass1 = sum(v for k, v in busy.items() if k.startswith(f"csoftmax-{args.kind}-stats"))
    pass2 = sum(v for k, v in busy.items() if not k.startswith(f"csoftmax-{args.kind}-stats"))
    print(f"  pass 1 (produce + partials): {pass1:.3f} s = {nbytes / GB / pass1:.2f} GB/s per busy worker thread")
    print(f"  pass 2 (produce again + normalise + sum): {pass2:.3f} s = {nbytes / GB / pass2:.2f} GB/s per busy "
          "worker thread")
    print()
    print(f"worker peak RSS during csoftmax.dask.{args.kind}:")
    for i, (addr, (start, peak)) in enumerate(sorted(rss.items())):
        print(f"  worker {i}: {start / MB:7.0f} MiB before, {peak / MB:7.0f} MiB peak, "
              f"+{(peak - start) / MB:.0f} MiB = {(peak - start) / chunk_bytes:.1f} chunks "
              f"(input per worker: {nbytes / args.workers / chunk_bytes:.0f} chunks)")


if __name__ == "__main__":
    main()
