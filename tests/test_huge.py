"""Huge arrays: more than 2**31 elements, and reduction axes whose byte stride exceeds 2**31 - proof of 64-bit
indexing in every path (rows, short rows, long rows cut into pieces, lanes, general/float16/byte-swapped).

All tests are marked slow: they run with `python -m pytest --slow`. Each needs several GiB for its output and skips, saying
how much, when /proc/meminfo's MemAvailable is short. Inputs cost (almost) no memory: overlapping as_strided
views of a small periodic buffer, np.broadcast_to, or np.zeros - calloc'd pages that are never written read as
the shared zero page - with a few values written sparsely. Expected values are analytic (a few distinct rows or
columns, checked against csoftmax._reference in long double) and the whole output is compared with them in chunks.
"""
import gc
import math
import time

import numpy as np
import pytest

import csoftmax
from _helpers import round_to
from csoftmax._reference import softmax_reference

pytestmark = pytest.mark.slow

GiB = 1 << 30
CHUNK = 1 << 24                       # elements compared at a time
TIMES = {}


def mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def need(nbytes, margin=GiB + GiB // 2):
    avail = mem_available()
    if avail is None:
        pytest.skip("cannot read MemAvailable from /proc/meminfo")
    if avail < nbytes + margin:
        pytest.skip(f"needs {(nbytes + margin) / GiB:.1f} GiB available (output {nbytes / GiB:.1f} GiB + "
                    f"{margin / GiB:.1f} GiB margin), MemAvailable is {avail / GiB:.1f} GiB")


@pytest.fixture(autouse=True)
def _free_and_time(request):
    gc.collect()
    t0 = time.perf_counter()
    yield
    gc.collect()
    elapsed = time.perf_counter() - t0
    TIMES[request.node.name] = elapsed
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n[huge] {request.node.name}: {elapsed:.1f} s")


def assert_close_to_reference(values, ref_wide, dtype, ulps, what):
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):
        spacing = np.spacing(np.abs(round_to(ref_wide, dtype))).astype(np.longdouble)
        err = np.abs(values.astype(np.longdouble) - ref_wide) / spacing
    assert np.all(err <= ulps), f"{what}: {float(err.max()):.3g} ulp from the reference (bound {ulps})"


def assert_all_rows_equal(out, block, what):
    """out (R, n) must repeat `block` (p, n) row-periodically: out[i] == block[i % p], bitwise, in chunks."""
    p, n = block.shape
    rows = out.shape[0]
    step = max(p, (CHUNK // n) // p * p)
    tiled = np.tile(block, (step // p, 1))
    for start in range(0, rows, step):
        part = np.ascontiguousarray(out[start:start + step])    # (a broadcast input gives an F-ordered output)
        expect = tiled[:len(part)]
        if not np.array_equal(part.view(np.uint8), expect.view(np.uint8)):
            bad = np.argwhere(part.view(np.uint8) != expect.view(np.uint8))[0]
            raise AssertionError(f"{what}: row {start + bad[0]} differs from the expected block row "
                                 f"{(start + bad[0]) % p}: {part[bad[0]]!r} vs {expect[bad[0]]!r}")


def check_constant_except(flat, special_positions, special_values, other, what):
    """flat (1-d view) equals `other` everywhere except at special_positions, where it equals special_values."""
    other_bits = np.array(other, dtype=flat.dtype).view({2: np.uint16, 4: np.uint32, 8: np.uint64}[flat.itemsize])
    uint = other_bits.dtype
    positions = np.asarray(special_positions, dtype=np.int64)
    for start in range(0, flat.size, CHUNK):
        part = np.ascontiguousarray(flat[start:start + CHUNK]).view(uint)
        mask = part != other_bits
        idx = np.flatnonzero(mask) + start
        expected_idx = positions[(positions >= start) & (positions < start + CHUNK)]
        if not np.array_equal(np.sort(idx), np.sort(expected_idx)):
            extra = sorted(set(idx.tolist()) - set(expected_idx.tolist()))[:5]
            raise AssertionError(f"{what}: unexpected values at {extra} (e.g. {flat[extra[0]]!r}, expected "
                                 f"{other!r})" if extra else f"{what}: special positions hold the common value")
    got = flat[positions]
    assert np.array_equal(got, np.asarray(special_values, dtype=flat.dtype)), (what, got, special_values)


# ------------------------------------------------------------------------------------------------ > 2**31 elements


def test_float32_rows_with_more_than_2_31_elements_from_an_overlapping_view():
    """(2**28 + 3, 8) float32 = 2**31 + 24 elements (8 GiB of output), short rows across threads. The input is an
    overlapping view (row stride 4 bytes) of a 1 GiB periodic buffer: row i is the pattern rotated by i % 8."""
    rows, n = 2**28 + 3, 8
    assert rows * n > 2**31
    need(rows * n * 4 + (rows + n) * 4)
    pattern = np.array([0.0, 1.0, -2.0, 3.5, -40.0, 7.25, 0.5, -0.75], np.float32)
    base = np.resize(pattern, rows + n)
    x = np.lib.stride_tricks.as_strided(base, shape=(rows, n), strides=(4, 4), writeable=False)
    block = np.array([np.roll(pattern, -k) for k in range(8)])
    expected = csoftmax.softmax(block, 1)
    assert_close_to_reference(expected, softmax_reference(block, 1, out_dtype=np.longdouble), np.float32, 64,
                              "the 8 distinct rows")
    out = csoftmax.softmax(x, 1)
    assert out.shape == (rows, n) and out.dtype == np.float32 and out.flags.c_contiguous
    assert_all_rows_equal(out, expected, "float32 rows beyond 2**31 elements")
    del out


def test_float16_broadcast_rows_with_more_than_2_31_elements():
    """(2**24 + 5, 128) float16 (4 GiB of output): a broadcast input (row stride 0) through the general path
    (float16 is converted block by block), output offsets beyond 2**32 bytes."""
    rows, n = 2**24 + 5, 128
    assert rows * n > 2**31
    need(rows * n * 2)
    row = (np.sin(np.arange(n)) * 6).astype(np.float16)
    x = np.broadcast_to(row, (rows, n))
    expected = csoftmax.softmax(row[None, :], 1)
    assert_close_to_reference(expected, softmax_reference(row[None, :], 1, out_dtype=np.longdouble), np.float16,
                              1, "the row")
    out = csoftmax.softmax(x, 1)
    assert out.shape == (rows, n) and out.dtype == np.float16
    assert_all_rows_equal(out, expected, "float16 broadcast rows beyond 2**31 elements")
    del out


def test_one_float32_row_longer_than_2_31_elements():
    """One row of 2**31 + 17 float32 (8 GiB of output): the contiguous rows path with the row cut into pieces
    across threads (and the fixed-point sums merged across more than 2**31 terms). Input: zeros (never written,
    so no memory) with 1.0 at a few positions on both sides of 2**31."""
    n = 2**31 + 17
    need(n * 4)
    x = np.zeros(n, np.float32)
    ones = np.array([0, 5, 2**31 - 1, 2**31, 2**31 + 3, n - 1], dtype=np.int64)
    x[ones] = 1.0
    x.flags.writeable = False
    k = len(ones)
    # long double: S = k * e^0 + (n - k) * e^-1 (max = 1)
    e1 = np.exp(np.longdouble(-1))
    total = np.longdouble(k) + np.longdouble(n - k) * e1
    out = csoftmax.softmax(x, 0)
    assert out.shape == (n,) and out.dtype == np.float32
    y_one, y_zero = out[ones[0]], out[1]
    assert_close_to_reference(np.array([y_one, y_zero]), np.array([1 / total, e1 / total]), np.float32, 64,
                              "the two distinct values")
    check_constant_except(out, ones, np.full(k, y_one), y_zero, "one long float32 row")
    s = k * np.longdouble(y_one) + (n - k) * np.longdouble(y_zero)
    assert abs(s - 1) < 1e-4, f"the row sums to {s}"
    del out


# ------------------------------------------------------------------------------------------------ strides > 2**31


@pytest.mark.parametrize("dtype, path", [(np.float32, "lanes"), (">f4", "general")],
                         ids=["float32-lanes", "byteswapped-general"])
def test_reduction_axis_with_byte_stride_beyond_2_31(dtype, path):
    """(2, N) along dim 0, N chosen so that the axis stride (N * itemsize bytes) exceeds 2**31, in input and
    output (4 GiB of output). Input: zeros with a sparse set of columns whose second entry is 2.0.

    (float16 takes the same general path as byte-swapped float32 - gather, convert, scatter - but needs 2**30
    lanes here, which the general path does at ~140 ns each: 150 s. Its strides beyond 2**31 are covered by
    test_input_axis_stride_beyond_2_31_with_a_small_output and its offsets beyond 2**32 by the broadcast test.)"""
    itemsize = np.dtype(dtype).itemsize
    n = 2**31 // itemsize + 64
    assert n * itemsize > 2**31
    need(2 * n * itemsize)
    x = np.zeros((2, n), dtype=dtype)
    cols = np.unique(np.concatenate([np.arange(0, n, 2**20 + 7), [1, n // 2, n - 1]])).astype(np.int64)
    x[1, cols] = 2.0
    x.flags.writeable = False
    assert x.strides[0] > 2**31
    out_dtype = np.dtype(dtype).newbyteorder("=")
    out = csoftmax.softmax(x, 0)
    assert out.shape == (2, n) and out.dtype == out_dtype and out.strides[0] > 2**31
    # columns [0, 0] -> [0.5, 0.5]; columns [0, 2] -> [1/(1+e^2), e^2/(1+e^2)]
    ref = softmax_reference(np.array([[0.0, 0.0], [0.0, 2.0]], dtype=np.longdouble), 0,
                            out_dtype=np.longdouble)
    ulps = 1 if out_dtype == np.float16 else 64
    half, lo, hi = out[0, 0 if 0 not in cols else 2], out[0, cols[0]], out[1, cols[0]]
    assert_close_to_reference(np.array([half, lo, hi]), np.array([ref[0, 0], ref[0, 1], ref[1, 1]]), out_dtype,
                              ulps, "the distinct values")
    check_constant_except(out[0], cols, np.full(len(cols), lo), half, f"{path} row 0")
    check_constant_except(out[1], cols, np.full(len(cols), hi), half, f"{path} row 1")
    del out


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ">f8"])
def test_input_axis_stride_beyond_2_31_with_a_small_output(dtype):
    """A (3, 4096) view whose axis stride is 2**31 + 8 KiB bytes, into a zeroed buffer of about 6 GiB (virtual:
    only the viewed pages are ever written). The output is small; the kernel must read at offsets beyond 2**32."""
    dt = np.dtype(dtype)
    stride = 2**31 + 8192
    lanes = 4096
    base = np.zeros(2 * stride + lanes * dt.itemsize, dtype=np.uint8)
    x = np.lib.stride_tricks.as_strided(base.view(dt)[: lanes], shape=(3, lanes), strides=(stride, dt.itemsize))
    rng = np.random.default_rng(5)
    vals = (rng.standard_normal((3, lanes)) * 4).astype(dt)
    x[...] = vals
    x.flags.writeable = False
    ref = softmax_reference(vals, 0, out_dtype=np.longdouble)
    for view, dim, r in ((x, 0, ref), (x[:, ::-3], 0, ref[:, ::-3]), (x.T, 1, ref.T)):
        out = csoftmax.softmax(view, dim)
        assert_close_to_reference(out, r, dt.newbyteorder("="), 1 if dt.itemsize == 2 else 64,
                                  f"{dt} strides {view.strides}")
