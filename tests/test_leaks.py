"""Leak checks: many calls keep Python-level memory (tracemalloc), process memory (RSS) and reference counts flat.

* a million small calls, mixed over the fast path (native float32/float64 ndarray, int dim), the policy path
  (float16, byte-swapped, axis=, dtype=, lists, 0-d, empty, the Softmax class) and the error paths (TypeError,
  AxisError): tracemalloc's traced memory, RSS and the number of GC-tracked objects stay flat;
* a thousand large calls (about a million elements each) over every kernel path (rows, lanes, general/float16,
  byte-swapped, strided, long rows cut into pieces across threads, widening dtype=): RSS and traced memory flat;
* reference counts of inputs, dtype objects, dim objects and the Softmax instance are unchanged after many calls,
  and outputs are referenced by nothing but the caller.

Budgets are far below what a leak of one object or one scratch buffer per call would add (see each test).
"""
import gc
import os
import subprocess
import sys
import time
import tracemalloc
import weakref

import numpy as np
import pytest

import csoftmax

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    AxisError = np.AxisError

PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20
# Under AddressSanitizer (tools/sanitize.sh) freed memory sits in a quarantine of up to 256 MB, so RSS says nothing
# about leaks there: RSS budgets are skipped (tracemalloc, GC objects and reference counts are still checked).
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def report(config, text):
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + text)
    else:
        print(text)


class _Index:
    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


def _small_workloads():
    """(name, calls, function) of cheap calls; the counts add up to a million."""
    sm = csoftmax.softmax
    x64 = np.array([1.0, 2.0, 3.0])
    x32 = x64.astype(np.float32)
    x2d = np.arange(6.0).reshape(2, 3)
    x16 = x64.astype(np.float16)
    xsw = x64.astype(">f8")
    x0 = np.array(2.0)
    xe = np.empty((0, 3))
    layer = csoftmax.Softmax(dim=-1)
    idx = _Index(0)
    bad_in = np.array(["a", "b"])

    def type_error():
        try:
            sm(x64, 1.5)
        except TypeError:
            pass

    def axis_error():
        try:
            sm(x64, 3)
        except AxisError:
            pass

    def input_error():
        try:
            sm(bad_in, 0)
        except TypeError:
            pass

    out = np.empty(3)
    mask = np.array([True, False, True])
    family = [("log_softmax", 30_000, lambda: csoftmax.log_softmax(x64, 0)),     # the rest of the family
              ("softmin", 30_000, lambda: csoftmax.softmin(x32, 0)),
              ("out=", 30_000, lambda: sm(x64, 0, out=out)),
              ("out= in place", 30_000, lambda: sm(out, 0, out=out)),
              ("where=", 30_000, lambda: sm(x64, 0, where=mask)),
              ("tuple dim", 30_000, lambda: sm(x2d, (0, 1)))]
    fast = 240_000 - sum(n for _, n, _ in family)
    return family + [
        ("fast float64", fast, lambda: sm(x64, 0)),
        ("fast float32", 200_000, lambda: sm(x32, -1)),
        ("fast 2-d dim 0", 100_000, lambda: sm(x2d, 0)),
        ("float16", 70_000, lambda: sm(x16, 0)),
        ("byte-swapped", 70_000, lambda: sm(xsw, 0)),
        ("axis=", 40_000, lambda: sm(x64, axis=-1)),
        ("dtype=", 40_000, lambda: sm(x32, 0, np.float64)),
        ("__index__ dim", 30_000, lambda: sm(x64, idx)),
        ("list", 30_000, lambda: sm([1.0, 2.0, 3.0], 0)),
        ("0-d", 30_000, lambda: sm(x0, 0)),
        ("empty", 30_000, lambda: sm(xe, 1)),
        ("Softmax(dim)", 40_000, lambda: layer(x64)),
        ("TypeError (dim)", 20_000, type_error),
        ("AxisError", 20_000, axis_error),
        ("TypeError (input)", 40_000, input_error),
    ]


@pytest.mark.slow
def test_a_million_small_calls_keep_memory_flat(request):
    work = _small_workloads()
    total = sum(n for _, n, _ in work)
    assert total == 1_000_000
    for _, _, f in work:                       # warm-up: caches, interned objects, NumPy's small-block cache
        for _ in range(2000):
            f()
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        traced0, _ = tracemalloc.get_traced_memory()
        rss0 = rss() - tracemalloc.get_tracemalloc_memory()   # tracemalloc's own bookkeeping is not ours
        objects0 = len(gc.get_objects())
        t0 = time.perf_counter()
        for _, n, f in work:
            for _ in range(n):
                f()
        elapsed = time.perf_counter() - t0
        gc.collect()
        traced1, _ = tracemalloc.get_traced_memory()
        rss1 = rss() - tracemalloc.get_tracemalloc_memory()
        objects1 = len(gc.get_objects())
    finally:
        tracemalloc.stop()
    report(request.config, f"[leaks] {total} small calls in {elapsed:.1f} s (tracemalloc on{', ASan: RSS not judged' if UNDER_ASAN else ''}): traced "
                           f"{(traced1 - traced0) / 1024:+.1f} KiB, RSS {(rss1 - rss0) / MiB:+.2f} MiB, "
                           f"GC objects {objects1 - objects0:+d}")
    # one leaked object per call (>= 16 bytes) would be >= 16 MB of traced memory; one leaked C allocation (a malloc
    # chunk is >= 32 bytes; csm_plan alone > 1 KB) per call of the general path (float16 and byte-swapped: 140 000
    # calls) >= 4.5 MB of RSS, per call of every path >= 32 MB. Measured without a leak: within +-0.1 MiB here, up to
    # +1.7 MiB in a fresh virtual environment (allocator growth unrelated to csoftmax): the budget sits between.
    assert traced1 - traced0 < 256 * 1024, f"traced memory grew by {traced1 - traced0} bytes over {total} calls"
    assert UNDER_ASAN or rss1 - rss0 < 3 * MiB, f"RSS grew by {(rss1 - rss0) / MiB:.2f} MiB over {total} calls"
    assert objects1 - objects0 < 100, f"{objects1 - objects0} more GC-tracked objects after {total} calls"


def _large_workloads():
    rng = np.random.default_rng(0)
    a32 = rng.standard_normal((1024, 1024)).astype(np.float32)
    a64 = rng.standard_normal((512, 2048))
    big = rng.standard_normal((1024, 2048)).astype(np.float32)
    a16 = a32.astype(np.float16)
    sw = a64.astype(">f8")
    long_row = rng.standard_normal((1, 1 << 20)).astype(np.float32)     # long rows: split into pieces
    short = rng.standard_normal((1 << 17, 8)).astype(np.float32)         # many short rows
    sm = csoftmax.softmax
    out_strided = np.empty((1024, 2048), np.float32)[:, ::2]
    mask = rng.random((1024, 1024)) < 0.9
    return [
        ("rows float32", lambda: sm(a32, -1)),
        ("lanes float32 (dim 0)", lambda: sm(a32, 0)),
        ("rows float64 F-order", lambda: sm(np.asfortranarray(a64), 0)),
        ("general: strided", lambda: sm(big[:, ::2], 1)),
        ("general: float16", lambda: sm(a16, 1)),
        ("general: byte-swapped", lambda: sm(sw, 1)),
        ("long row", lambda: sm(long_row, 1)),
        ("short rows", lambda: sm(short, 1)),
        ("dtype= widening", lambda: sm(a32, 1, np.float64)),
        ("list of rows (policy path)", lambda: sm(a32[:64].tolist(), 1)),
        ("log_softmax lanes", lambda: csoftmax.log_softmax(a32, 0)),
        ("softmin rows", lambda: csoftmax.softmin(a64, 1)),
        ("out= strided", lambda: sm(a32, 1, out=out_strided)),
        ("where=", lambda: sm(a32, 1, where=mask)),
        ("tuple dim", lambda: sm(a32.reshape(32, 32, 1024), (0, 2))),
    ]


@pytest.mark.slow
def test_a_thousand_large_calls_keep_memory_flat(request):
    work = _large_workloads()
    for _ in range(3):                         # warm-up: worker threads, their stacks and malloc arenas
        for _, f in work:
            f()
    gc.collect()
    tracemalloc.start()
    try:
        traced0, _ = tracemalloc.get_traced_memory()
        rss0 = rss() - tracemalloc.get_tracemalloc_memory()
        t0 = time.perf_counter()
        calls = 1000
        for i in range(calls):
            work[i % len(work)][1]()
            if i == calls // 2 - 1:
                gc.collect()
                rss_half = rss() - tracemalloc.get_tracemalloc_memory()
        elapsed = time.perf_counter() - t0
        gc.collect()
        traced1, _ = tracemalloc.get_traced_memory()
        rss1 = rss() - tracemalloc.get_tracemalloc_memory()
    finally:
        tracemalloc.stop()
    report(request.config, f"[leaks] {calls} large calls in {elapsed:.1f} s: traced "
                           f"{(traced1 - traced0) / 1024:+.1f} KiB, RSS {(rss1 - rss0) / MiB:+.2f} MiB "
                           f"(second half {(rss1 - rss_half) / MiB:+.2f} MiB)")
    # a leaked output is >= 4 MB per call (4 GB), a leaked lane state 224 KB (224 MB), a row buffer 8 KB (8 MB)
    assert traced1 - traced0 < 1 * MiB, f"traced memory grew by {traced1 - traced0} bytes over {calls} calls"
    if UNDER_ASAN:
        return
    assert rss1 - rss0 < 32 * MiB, f"RSS grew by {(rss1 - rss0) / MiB:.1f} MiB over {calls} large calls"
    # one-time growth (a malloc arena, a worker's stack) happens early; a leak keeps growing
    assert rss1 - rss_half < 4 * MiB, f"RSS grew by {(rss1 - rss_half) / MiB:.1f} MiB over the last {calls // 2} calls"


def test_reference_counts_of_inputs_dtypes_dims_and_layers_are_unchanged():
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((4, 5)), rng.standard_normal(7).astype(np.float32),
              rng.standard_normal((3, 3)).astype(np.float16), rng.standard_normal((2, 6)).astype(">f4"),
              np.asfortranarray(rng.standard_normal((5, 4))), rng.standard_normal((6, 6))[::2, ::-1],
              np.array(1.5), np.arange(6).reshape(2, 3)]
    ro = rng.standard_normal((3, 4))
    ro.flags.writeable = False
    inputs.append(ro)
    dims = [np.int64(0), _Index(-1), np.intp(0)]
    dtypes = [np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16), np.dtype(">f4")]
    dtype_args = [np.dtype(np.float64), np.dtype(np.float32)]
    layer = csoftmax.Softmax(dim=0)
    bad_dim = 2.5
    huge_dim = 10**30
    outs = {x.shape: np.empty(x.shape) for x in inputs}
    masks = {x.shape: np.ones(x.shape, bool) for x in inputs}
    tuple_dim = (0, -1)
    watched = inputs + dims + dtypes + dtype_args + [layer, bad_dim, huge_dim, csoftmax.softmax, tuple_dim] + \
        list(outs.values()) + list(masks.values())
    names = [f"input {i}" for i in range(len(inputs))] + [f"dim {d!r}" for d in dims] + [
        f"dtype {d}" for d in dtypes] + [f"dtype= {d}" for d in dtype_args] + [
        "Softmax instance", "float dim", "huge int dim", "csoftmax.softmax", "tuple dim"] + [
        f"out {k}" for k in outs] + [f"where {k}" for k in masks]

    def exercise():
        for x in inputs:
            csoftmax.log_softmax(x, 0)
            csoftmax.softmin(x, -1)
            if x.dtype.kind == "f" and x.dtype.itemsize == 8 and x.dtype.isnative:
                csoftmax.softmax(x, 0, out=outs[x.shape])
            csoftmax.softmax(x, 0, where=masks[x.shape])
            if x.ndim >= 2:
                csoftmax.softmax(x, tuple_dim)
            csoftmax.softmax(x, 0)
            csoftmax.softmax(x, -1)
            csoftmax.softmax(x, axis=0)
            layer(x)
            for d in dims:
                csoftmax.softmax(x, d)
            for dt in dtype_args:
                csoftmax.softmax(x, 0, dt)
            for d in (bad_dim,):
                try:
                    csoftmax.softmax(x, d)
                except TypeError:
                    pass
            try:
                csoftmax.softmax(x, huge_dim)
            except AxisError:
                pass

    exercise()
    gc.collect()
    before = [sys.getrefcount(o) for o in watched]
    for _ in range(2000):
        exercise()
    gc.collect()
    after = [sys.getrefcount(o) for o in watched]
    changed = [(n, b, a) for n, b, a in zip(names, before, after) if abs(a - b) > 2]
    assert not changed, f"reference counts changed over 2000 rounds (name, before, after): {changed}"


@pytest.mark.parametrize("make", [
    lambda: csoftmax.softmax(np.arange(6.0).reshape(2, 3), 1),
    lambda: csoftmax.softmax(np.arange(6.0, dtype=np.float16).reshape(2, 3), 1),
    lambda: csoftmax.softmax(np.ones((300, 700), ">f4"), 0),
    lambda: csoftmax.softmax(np.array(3.0), 0),
    lambda: csoftmax.softmax([[1.0, 2.0]], 1),
    lambda: csoftmax.Softmax(1)(np.ones((2, 2))),
], ids=["fast", "float16", "large byte-swapped", "0-d", "list", "Softmax"])
def test_outputs_are_owned_by_the_caller_alone(make):
    y = make()
    assert sys.getrefcount(y) == 2, "something besides the caller holds the result"
    if y.base is not None and not y.flags.owndata and y.ndim > 0:
        # a big result's memory comes from csoftmax's buffer cache: its owner is held by this array alone
        owner = y.base
        holders = sys.getrefcount(owner) - 2               # minus `owner` and getrefcount's argument
        assert type(owner).__name__ == "_OutputBuffer" and holders == 1
        del owner
    else:
        assert y.base is None or (y.ndim == 0 and y.base is not None and sys.getrefcount(y.base) >= 2)
        assert y.flags.owndata or y.ndim == 0
    ref = weakref.ref(y)
    del y
    gc.collect()
    assert ref() is None, "the result is still alive after the caller dropped it"


def test_a_cached_result_buffer_is_reused_only_once_nothing_refers_to_it():
    x = np.random.default_rng(3).standard_normal((512, 1024)).astype(np.float32)     # 2 MiB: cached outputs
    first = csoftmax.softmax(x, 1)
    view = first[::3]                                    # keeps first's buffer alive
    expected = view.copy()
    handed_out = {first.__array_interface__["data"][0]}
    del first
    for _ in range(3):                                   # new results of the same size: never that buffer
        again = csoftmax.softmax(-x, 1)
        handed_out.add(again.__array_interface__["data"][0])
        assert not np.shares_memory(again, view)
        np.testing.assert_array_equal(view, expected)
    del view, again
    gc.collect()
    reused = csoftmax.softmax(x, 1)                      # all free now: the cache hands one of them out again
    assert reused.__array_interface__["data"][0] in handed_out
    np.testing.assert_array_equal(reused[::3], expected)


def test_the_output_cache_keeps_no_more_than_its_limit():
    previous = csoftmax.set_output_cache(1 << 20)         # 1 MiB: a 2 MiB result is not kept
    try:
        from csoftmax import _csoftmax
        x = np.ones((512, 1024), np.float32)
        for _ in range(3):
            y = csoftmax.softmax(x, 1)
            del y
            assert _csoftmax.output_cache_bytes() <= 1 << 20
        csoftmax.set_output_cache(4 << 20)
        y = csoftmax.softmax(x, 1)
        del y
        assert _csoftmax.output_cache_bytes() == 2 << 20      # kept: within the limit
        assert csoftmax.set_output_cache(0) == 4 << 20
        assert _csoftmax.output_cache_bytes() == 0            # released at once
        np.testing.assert_allclose(csoftmax.softmax(x, 1), 1 / 1024)
        with pytest.raises(ValueError):
            csoftmax.set_output_cache(-1)
    finally:
        csoftmax.set_output_cache(previous)


def test_the_output_cache_keeps_eight_buffers_releasing_the_oldest_first():
    # README: "At most 8 buffers and 256 MiB are kept (oldest released first)"
    from csoftmax import _csoftmax
    previous = csoftmax.set_output_cache(0)               # (empties the cache)
    try:
        csoftmax.set_output_cache(256 << 20)
        rows = range(64, 74)                              # ten results of 256 KiB and more, each its own size
        results = [csoftmax.softmax(np.ones((n, 1024), np.float32), 1) for n in rows]
        assert all(r.base is not None and type(r.base).__name__ == "_OutputBuffer" for r in results)
        with pytest.raises(ValueError):
            results[0].resize((1,))                       # the buffer's owner holds its memory, not the array
        for i in range(len(results)):                     # dropped in the order they were made
            results[i] = None
        gc.collect()
        assert _csoftmax.output_cache_bytes() == sum(n * 4096 for n in rows[2:])     # the two oldest went
    finally:
        csoftmax.set_output_cache(previous)


def test_the_output_cache_variable_is_read_at_import():
    code = ("import csoftmax; from csoftmax import _csoftmax; print(_csoftmax.output_cache_limit()); "
            "csoftmax.show_config()")
    env = dict(os.environ, CSOFTMAX_OUTPUT_CACHE="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "12345" and "kept for reuse" in out.stdout
