#!/usr/bin/env python
"""csoftmax.dask against the plain Dask softmax and rechunk + the C kernel; its memory on a disk-to-disk run.

Run from the repository root (needs dask; psutil for the memory run; zarr if you want the memory run on zarr)::

    python benchmarks/dask_bench.py                  # issue 17's case: (2048, 200000) float32, (512, 20000) chunks
    python benchmarks/dask_bench.py --small          # (256, 20000) in (64, 2000) chunks: a quick check
    python benchmarks/dask_bench.py --memory-gb 40   # + softmax of a 40 GB array from disk to disk, peak RSS

Speed (every method on the same persisted input, threaded scheduler, softmax along axis 1, which spans all the
chunks; the methods interleaved in each of --repeat rounds, the best time of each reported):
  * csoftmax.dask    csoftmax.dask.softmax(x, 1): per-row states merged by a tree reduction, then apply
  * plain dask       e = da.exp(x - x.max(1, keepdims=True)); e / e.sum(1, keepdims=True)
  * rechunk + C      x.rechunk({1: -1}).map_blocks(csoftmax.softmax, dim=1): whole rows in one chunk each (a chunk
                     then holds whole rows: (512, 200000) float32 is 390 MiB, which is what chunking avoids)
Each result is stored into one preallocated NumPy array; every method's rows are checked to sum to 1 and a few
rows against the in-memory csoftmax.softmax. csoftmax's own thread pool is set to --kernel-threads (1 by default:
the scheduler's threads are the parallelism). The issue's targets: csoftmax.dask >= 1.5x faster than plain dask,
and within 1.3x of rechunk + C.

Memory (--memory-gb): an input of that size is written to disk (zarr if installed, else one .npy file per chunk,
read and written without mmap so that the page cache does not count as this process's memory), then
csoftmax.dask.softmax goes from that store to another one. The peak RSS of this process above its RSS before is
sampled every 5 ms and reported in chunks per scheduler thread; the claim is about two (the input block and the
output block of each thread) plus the primitives' scratch, whatever the array's size, also when it is larger than
memory: run two sizes and the peak stays where it is.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
# `python benchmarks/dask_bench.py` puts benchmarks/ first on sys.path, not the repository root; put the root there
# so `import csoftmax` finds the source folder (its in-place build, or it hands over to an installed copy).
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

try:
    import dask  # noqa: E402
    import dask.array as da  # noqa: E402
except ImportError as exc:  # pragma: no cover
    sys.exit(f"dask_bench.py needs dask: pip install 'csoftmax[dask]' ({exc})")

import csoftmax  # noqa: E402
import csoftmax.dask as cdask  # noqa: E402

MB = 2**20
GB = 1e9


# ------------------------------------------------------------------------------------------------- the methods


def plain_dask(x, axis):
    e = da.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def rechunk_and_kernel(x, axis):
    whole = x.rechunk({axis: -1})
    return whole.map_blocks(csoftmax.softmax, dim=axis, dtype=x.dtype, meta=np.empty((0,) * x.ndim, x.dtype))


METHODS = {
    "csoftmax.dask": lambda x, axis: cdask.softmax(x, axis),
    "plain dask": plain_dask,
    "rechunk + C": rechunk_and_kernel,
}


def make_input(shape, chunks, seed=0):
    """Standard normal * 4, float32, generated block by block (seeded: the same values for every method)."""
    return da.random.default_rng(seed).standard_normal(shape, chunks=chunks, dtype=np.float32) * np.float32(4)


def check(name, got, x_rows, rows):
    """Rows sum to 1, and the sampled rows equal the in-memory kernel's to float32 rounding."""
    sums = got.sum(axis=1, dtype=np.float64)
    worst = float(np.abs(sums - 1).max())
    assert worst < 1e-4, f"{name}: a row sums to 1 {worst:+.2e}"
    want = csoftmax.softmax(x_rows, 1)
    np.testing.assert_allclose(got[rows], want, rtol=2e-6, atol=1e-30, err_msg=name)


def speed(args):
    shape, chunks = args.shape, args.chunks
    nbytes = shape[0] * shape[1] * 4
    print(f"softmax of float32 {shape} = {nbytes / GB:.2f} GB along axis 1, chunks {chunks} "
          f"({chunks[0] * chunks[1] * 4 / MB:.0f} MiB, {-(-shape[1] // chunks[1])} along the axis); "
          f"threaded scheduler, {args.threads} threads; csoftmax kernel threads {args.kernel_threads}")
    x = make_input(shape, chunks).persist(scheduler="threads")
    rows = np.random.default_rng(1).choice(shape[0], size=min(4, shape[0]), replace=False)
    x_rows = x[np.sort(rows)].compute()
    rows = np.sort(rows)
    target = np.empty(shape, np.float32)
    best = {name: float("inf") for name in METHODS}
    for round_ in range(args.repeat):
        for name, method in METHODS.items():
            y = method(x, 1)
            target.fill(np.nan)
            t0 = time.perf_counter()
            da.store(y, target, scheduler="threads", num_workers=args.threads, lock=False)
            best[name] = min(best[name], time.perf_counter() - t0)
            if round_ == 0:
                check(name, target, x_rows, rows)
    print()
    print(f"{'':16}{'time s':>9}{'GB/s':>8}")
    for name, t in best.items():
        print(f"{name:16}{t:9.3f}{nbytes / GB / t:8.2f}")
    print()
    plain, rechunk = best["plain dask"] / best["csoftmax.dask"], best["csoftmax.dask"] / best["rechunk + C"]
    print(f"csoftmax.dask vs plain dask: {plain:.2f}x faster (target >= 1.5x)")
    print(f"csoftmax.dask vs rechunk + C: {rechunk:.2f}x the time (target <= 1.3x)")


# --------------------------------------------------------------------------------------------------- the memory run


class NpyBlocks:
    """A chunked array on disk without zarr: one .npy file per chunk, read with np.load (no mmap)."""

    def __init__(self, folder, shape, chunks):
        self.folder, self.shape, self.chunks = folder, shape, chunks

    def path(self, index):
        return os.path.join(self.folder, "_".join(map(str, index)) + ".npy")

    def read(self, block_info=None):
        return np.load(self.path(block_info[None]["chunk-location"]))

    def write(self, block, block_info=None):
        np.save(self.path(block_info[0]["chunk-location"]), block)
        return np.zeros((1,) * block.ndim, np.int8)  # nothing to hold on to

    def array(self):
        return da.map_blocks(self.read, chunks=self.chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))

    def store(self, y, threads):
        done = y.map_blocks(self.write, chunks=tuple((1,) * len(c) for c in y.chunks), dtype=np.int8)
        done.sum().compute(scheduler="threads", num_workers=threads)


class PeakRss:
    """The peak RSS of this process, sampled by a thread."""

    def __init__(self, interval=0.005):
        import psutil

        self.process, self.interval = psutil.Process(), interval

    def __enter__(self):
        self.start = self.peak = self.process.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.stop.wait(self.interval)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def memory(args):
    try:
        import psutil
    except ImportError:
        sys.exit("the memory run needs psutil: pip install psutil")
    try:
        import zarr
    except ImportError:
        zarr = None
    rows = args.memory_rows
    chunk_cols = max(1, int(args.memory_chunk_mb * MB) // (4 * rows))
    n = max(chunk_cols, int(args.memory_gb * GB) // (4 * rows))
    shape, chunks = (rows, n), (rows, chunk_cols)
    chunk_bytes = rows * chunk_cols * 4
    ram = psutil.virtual_memory().total
    store = "zarr" if zarr is not None and not args.npy else "npy blocks"
    print(f"\nmemory run: softmax of float32 {shape} = {rows * n * 4 / GB:.1f} GB ({rows * n * 4 / ram:.2f}x this "
          f"machine's {ram / GB:.0f} GB RAM) along axis 1, chunks of {chunk_bytes / MB:.0f} MiB, {store} to {store}, "
          f"threaded scheduler, {args.threads} threads")
    folder = tempfile.mkdtemp(prefix="csoftmax-dask-bench-", dir=args.memory_dir)
    try:
        source = make_input(shape, chunks, seed=2)
        if zarr is not None and not args.npy:
            source.to_zarr(os.path.join(folder, "in.zarr"), compute=True)
            x = da.from_zarr(os.path.join(folder, "in.zarr"))
            out_path = os.path.join(folder, "out.zarr")

            def run(y):
                y.to_zarr(out_path, overwrite=True, compute=True)

            def read_rows(sel):
                return np.asarray(zarr.open_array(out_path, mode="r")[sel])
        else:
            os.makedirs(os.path.join(folder, "in"))
            os.makedirs(os.path.join(folder, "out"))
            NpyBlocks(os.path.join(folder, "in"), shape, source.chunks).store(source, args.threads)
            x = NpyBlocks(os.path.join(folder, "in"), shape, source.chunks).array()
            out = NpyBlocks(os.path.join(folder, "out"), shape, source.chunks)

            def run(y):
                out.store(y, args.threads)

            def read_rows(sel):
                return np.concatenate([np.load(out.path((0, j)))[sel] for j in range(len(source.chunks[1]))], 1)

        y = cdask.softmax(x, 1)
        with dask.config.set(scheduler="threads", num_workers=args.threads), PeakRss() as rss:
            t0 = time.perf_counter()
            run(y)
            elapsed = time.perf_counter() - t0
        sums = read_rows(slice(0, 2)).sum(axis=1, dtype=np.float64)
        assert np.abs(sums - 1).max() < 1e-4, sums
        above = rss.peak - rss.start
        print(f"  {elapsed:.1f} s ({rows * n * 4 / GB / elapsed:.2f} GB/s); peak RSS {rss.peak / MB:.0f} MiB, "
              f"+{above / MB:.0f} MiB above the start = {above / chunk_bytes:.1f} chunks, "
              f"{above / chunk_bytes / args.threads:.1f} per thread, for an input of {-(-n // chunk_cols)} chunks "
              "(rows 0-1 sum to 1)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="(256, 20000) in (64, 2000) chunks: a quick check")
    p.add_argument("--shape", type=int, nargs=2, default=(2048, 200_000))
    p.add_argument("--chunks", type=int, nargs=2, default=(512, 20_000))
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="scheduler threads; default: CPUs")
    p.add_argument("--kernel-threads", type=int, default=1, help="csoftmax's own pool per call; default 1")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the best time of each method is reported")
    p.add_argument("--no-speed", action="store_true", help="skip the speed comparison")
    p.add_argument("--memory-gb", type=float, default=0.0, help="size of the disk-to-disk memory run (0: none)")
    p.add_argument("--memory-rows", type=int, default=64)
    p.add_argument("--memory-chunk-mb", type=float, default=64.0)
    p.add_argument("--memory-dir", default=None, help="where the memory run's stores go; default: the temp dir")
    p.add_argument("--npy", action="store_true", help="memory run on .npy blocks even if zarr is installed")
    args = p.parse_args(argv)
    if args.small:
        args.shape, args.chunks = (256, 20_000), (64, 2_000)
        args.memory_rows, args.memory_chunk_mb = 16, 4.0
    args.shape, args.chunks = tuple(args.shape), tuple(args.chunks)

    print(f"csoftmax {csoftmax.__version__} ({os.path.dirname(csoftmax.__file__)}), dask {dask.__version__}, "
          f"NumPy {np.__version__}; {os.cpu_count()} CPUs")
    if hasattr(csoftmax, "set_num_threads"):
        csoftmax.set_num_threads(args.kernel_threads)
    if not args.no_speed:
        speed(args)
    if args.memory_gb > 0:
        memory(args)


if __name__ == "__main__":
    main()
