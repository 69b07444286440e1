"""csoftmax.dask: softmax and log_softmax of Dask arrays, against the in-memory functions on the computed array.

Covers both plans (the axis in one chunk: blockwise through the kernel; the axis over 2 or >= 8 uneven chunks: tree
reduction of partials and a normalisation pass), the argument rules shared with the in-memory functions, laziness
and metadata, the absence of any rechunking of the axis, bounded memory (blocks alive at once), and a real
distributed.LocalCluster with worker processes.

The pitfalls of issue 17 each have a test: no whole-array barrier (test_a_block_waits_only_for_its_own_rows_state,
test_a_row_block_is_normalised_while_another_row_is_still_in_pass_one), inputs that change when computed again
(test_changing_input_rows_sum_to_one_*), masked Dask arrays (test_masked_*), and the public functions given a Dask
array (test_dispatch_*); logsumexp is checked against SciPy and a long double reference.
"""
import threading
import warnings
import weakref
import zlib

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402
from dask.callbacks import Callback  # noqa: E402

import csoftmax  # noqa: E402
import csoftmax.dask as cdask  # noqa: E402

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    AxisError = np.AxisError

FLOATS = (np.float16, np.float32, np.float64)
SHAPE = (13, 17, 29)  # every dim long enough for >= 8 chunks

# Tolerances of a Dask softmax against the in-memory kernel, in ulps of the output dtype: the kernel's documented
# bounds (tests/_helpers.ULP_BOUND: float16 1, float32 and float64 64 ulps of the exact result) plus the Dask path's
# own error (it computes in float64 and rounds once: within 1 ulp for float16/float32, see
# test_softmax_within_one_ulp_of_exact; for float64 the rounding of x - max, amplified by exp, gives up to about
# |x - max| / 2 ulps, as in any float64 softmax).
ULPS = {np.dtype(np.float16): 1, np.dtype(np.float32): 65, np.dtype(np.float64): 128}
# log_softmax = x - max - log(sum): its error is absolute, about eps * (|x| + |max| + |log(sum)|); relative to a
# result near 0 it can be any number of ulps.
LOG_EPS = 4




# ------------------------------------------------------------------------------------------------------ helpers


def axis_chunks(n, how):
    """Chunks of a length-n axis: 'one' chunk, 'two' uneven chunks, or 'many' (>= 8) uneven chunks."""
    if how == "one":
        return (n,)
    if how == "two":
        return (n // 3, n - n // 3)
    sizes, left, cycle = [], n, (1, 2, 1, 3)
    while left:  # 1, 2, 1, 3, 1, 2, ...: uneven, size-1 chunks included
        take = min(cycle[len(sizes) % 4], left)
        sizes.append(take)
        left -= take
    assert len(sizes) >= 8
    return tuple(sizes)


def chunks_for(shape, axis, how):
    """The softmax axis chunked as `how`; every other axis in two uneven chunks (the statistics must broadcast)."""
    return tuple(
        axis_chunks(n, how) if i == axis else ((n,) if n < 2 else (n // 2 + 1, n - n // 2 - 1))
        for i, n in enumerate(shape)
    )


def ulp_diff(a, b, dtype):
    """|a - b| in ulps of dtype (of the larger magnitude; absolute ulps below the smallest normal)."""
    dtype = np.dtype(dtype)
    wide = np.float64 if dtype.itemsize < 8 else np.longdouble
    a, b = a.astype(wide), b.astype(wide)
    big = np.maximum(np.abs(a), np.abs(b)).astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # spacing(max) overflows: the ulp there is huge anyway
        unit = np.maximum(np.spacing(big), np.spacing(np.finfo(dtype).smallest_normal)).astype(wide)
    with np.errstate(invalid="ignore"):
        d = np.abs(a - b)
        d[a == b] = 0  # equal infinities
        return d / unit


def assert_matches(actual, expected, dtype, ulps=None, what="", scale=None):
    """Same dtype and shape, NaN and infinities at the same places; finite values within `ulps` ulps, or, given
    `scale` (an array of magnitudes), within LOG_EPS * eps * scale of each other."""
    dtype = np.dtype(dtype)
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, what
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN pattern")
    np.testing.assert_array_equal(actual[np.isinf(actual)], expected[np.isinf(actual)], err_msg=f"{what}: infs")
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected), err_msg=f"{what}: inf pattern")
    finite = np.isfinite(expected)
    if not finite.any():
        return
    if scale is None:
        worst = float(ulp_diff(actual[finite], expected[finite], dtype).max())
        assert worst <= (ULPS[dtype] if ulps is None else ulps), f"{what}: {worst} ulps from the in-memory result"
    else:
        err = np.abs(actual[finite].astype(np.float64) - expected[finite].astype(np.float64))
        tol = LOG_EPS * np.finfo(dtype).eps * np.broadcast_to(scale, actual.shape)[finite]
        assert (err <= tol).all(), f"{what}: error {err.max()} > {LOG_EPS} eps * scale"


def check(kind, actual, a, dim, dtype=None, what=""):
    """The Dask result `actual` of `kind` against the in-memory result on the same values `a`."""
    want = expected(kind, a, dim, dtype)
    scale = None
    if kind == "log_softmax" and a.ndim:
        w = np.asarray(a, dtype=np.float64)
        finite = np.where(np.isfinite(w), np.abs(w), 0)
        with np.errstate(over="ignore"):  # rows of +-float64 max: the tolerance is infinite where x - max is -inf
            scale = 1 + finite + finite.max(axis=dim, keepdims=True) + np.log(a.shape[dim] or 1)
    assert_matches(actual, want, want.dtype, what=what, scale=scale)


def expected(kind, a, dim, dtype=None):
    """The in-memory result the Dask one must match."""
    if kind == "softmax":
        return csoftmax.softmax(a, dim=dim, dtype=dtype)
    return csoftmax.log_softmax(a, dim=dim, dtype=dtype)


def reference_log_softmax(a, dim, dtype=None):
    """x - max - log(sum(exp(x - max))) in long double, with torch's NaN rules and the in-memory dtype rules."""
    out_dtype = csoftmax.softmax(a, dim=dim, dtype=dtype).dtype
    w = np.asarray(a)
    if dtype is not None and np.dtype(dtype).itemsize < w.dtype.itemsize:
        w = w.astype(dtype)  # a narrowing dtype= rounds first
    w = w.astype(np.longdouble)
    with np.errstate(all="ignore"):
        m = np.max(w, axis=dim, keepdims=True)
        r = w - m - np.log(np.sum(np.exp(w - m), axis=dim, keepdims=True))
        r = np.where(np.isfinite(m), r, np.nan)
        return r.astype(out_dtype)  # below float16's range: -inf, as the in-memory functions give


def sample(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    scale = 3.0 if dtype == np.float16 else 8.0
    return (rng.standard_normal(shape) * scale).astype(dtype)


def counted(a, chunks):
    """(a Dask array of a's values that records each block it produces, the list of records: one per block)."""
    calls = []

    def produce(block):
        calls.append(block.shape)
        return block

    return da.from_array(a, chunks=chunks).map_blocks(produce, meta=np.empty((0,) * a.ndim, a.dtype)), calls


def special_rows(dtype, n=40, kind="softmax"):
    """Rows of length n, each exercising a NaN/inf rule, with its special values in different chunks."""
    big = np.finfo(dtype).max
    rows = np.tile(np.linspace(-3, 3, n), (12, 1)).astype(dtype)
    rows[0, 17] = np.nan  # NaN anywhere -> NaN row
    rows[1, 3] = np.inf  # +inf -> NaN row
    rows[2, :] = -np.inf  # all -inf -> NaN row
    rows[3, :20] = -np.inf  # whole chunks of -inf next to finite chunks -> 0 there
    rows[4, ::3] = -np.inf  # scattered -inf -> 0 there
    rows[5, :] = -np.inf  # a single finite value -> 1 there, 0 elsewhere
    rows[5, n - 1] = 2.0
    rows[6, :] = [big if i % 2 else -big for i in range(n)]  # the largest finite values
    rows[7, 5], rows[7, 30] = np.inf, np.nan  # both
    rows[8, :] = -np.inf  # -inf and NaN
    rows[8, 22] = np.nan
    rows[9, :] = 0  # all equal
    rows[10, 1], rows[10, 38] = np.inf, np.inf  # two +inf in different chunks
    rows[11, :] = np.linspace(-1000, 1000, n).astype(dtype) if dtype != np.float16 else np.linspace(-60000, 60000, n)
    return rows


# -------------------------------------------------------------------------------------------- values and dtypes


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("how", ["one", "two", "many"])
@pytest.mark.parametrize("dim", [0, 1, -1, -2])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda t: np.dtype(t).name)
def test_matches_in_memory(kind, how, dim, dtype):
    a = sample(SHAPE, dtype, seed=zlib.crc32(f"{kind} {how} {dim}".encode()))
    axis = dim % a.ndim
    x = da.from_array(a, chunks=chunks_for(a.shape, axis, how))
    assert (x.numblocks[axis] == 1) == (how == "one")
    y = getattr(cdask, kind)(x, dim)
    assert y.chunks == x.chunks and y.dtype == np.dtype(dtype) and y.shape == a.shape
    check(kind, y.compute(scheduler="threads"), a, dim, what=f"{kind} {how} dim={dim}")


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("how", ["one", "many"])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda t: np.dtype(t).name)
def test_special_values(kind, how, dtype):
    a = special_rows(dtype, kind=kind)
    x = da.from_array(a, chunks=(5, axis_chunks(a.shape[1], how)))
    got = getattr(cdask, kind)(x, -1).compute(scheduler="threads")
    check(kind, got, a, -1, what=f"{kind} {how}")
    nan_rows = [0, 1, 2, 7, 8, 10]
    assert np.isnan(got[nan_rows]).all() and not np.isnan(np.delete(got, nan_rows, axis=0)).any()
    if kind == "softmax":
        assert (got[3, :20] == 0).all() and got[5, -1] == 1 and (got[5, :-1] == 0).all()
    else:
        assert np.isneginf(got[3, :20]).all() and got[5, -1] == 0 and np.isneginf(got[5, :-1]).all()


@pytest.mark.parametrize("how", ["one", "many"])
def test_log_softmax_of_float64_extremes(how):
    """torch's x - max - log(sum): [-max, +max] gives [-inf, 0] (x - max overflows to -inf), not NaN."""
    big = np.finfo(np.float64).max
    a = np.array([[-big, big, -big, big], [big, -big, 0.0, 1.0], [-big, -big, -big, -big]])
    got = cdask.log_softmax(da.from_array(a, chunks=(2, 4 if how == "one" else 1)), 1).compute()
    want = reference_log_softmax(a, 1)
    np.testing.assert_array_equal(got[:, [0, 2]][:2], [[-np.inf, -np.inf], [0.0, -big]])
    np.testing.assert_allclose(got[0, [1, 3]], -np.log(2.0), rtol=1e-15)
    assert_matches(got, want, np.float64, ulps=1)


@pytest.mark.parametrize("how", ["one", "two", "many"])
def test_log_softmax_of_the_maximum_keeps_its_relative_accuracy(how):
    """log(sum) is log1p of the terms below the maximum: log_softmax([0, -30]) [0] is -log1p(exp(-30)) to the
    last digits, not the -log(1 + exp(-30)) = -9.348e-14 of the naive formula, however the row is chunked."""
    a = np.array([[0.0, -30.0, -40.0, -35.0], [-30.0, -40.0, -35.0, 0.0], [0.0, -30.0, 0.0, -40.0]])
    got = cdask.log_softmax(da.from_array(a, chunks=(2, axis_chunks(4, how) if how != "many" else 1)), 1).compute()
    exact = np.empty_like(a)
    for i, row in enumerate(a.astype(np.longdouble)):  # long double, the maximum's term of 1 left out of r
        top = np.argmax(row)
        r = np.exp(np.delete(row, top) - row[top]).sum()
        exact[i] = row - row[top] - np.log1p(r)
    assert_matches(got, exact, np.float64, ulps=2)
    np.testing.assert_allclose(got[0, 0], -np.log1p(np.exp(-30.0) + np.exp(-40.0) + np.exp(-35.0)), rtol=1e-14)


def test_special_values_along_a_strided_axis():
    """The softmax axis is axis 0 here: the statistics are one row of values per column."""
    a = special_rows(np.float32).T.copy()
    x = da.from_array(a, chunks=(axis_chunks(a.shape[0], "many"), 5))
    assert_matches(cdask.softmax(x, 0).compute(), csoftmax.softmax(a, dim=0), np.float32)


@pytest.mark.parametrize("how", ["one", "many"])
@pytest.mark.parametrize(
    "values",
    [
        np.arange(40, dtype=np.uint8).reshape(2, 20) * 6,  # uint8 up to 234: converted before arithmetic
        np.arange(-20, 20, dtype=np.int64).reshape(2, 20),
        (np.arange(40).reshape(2, 20) % 3 == 0),
        np.arange(40, dtype=np.int16).reshape(2, 20),
    ],
    ids=["uint8", "int64", "bool", "int16"],
)
def test_integers_and_bools_become_float64(values, how):
    x = da.from_array(values, chunks=(1, axis_chunks(20, how)))
    for kind in ("softmax", "log_softmax"):
        y = getattr(cdask, kind)(x, 1)
        assert y.dtype == np.float64
        check(kind, y.compute(), values, 1, what=kind)


@pytest.mark.parametrize("how", ["one", "many"])
@pytest.mark.parametrize(
    "in_dtype, dtype",
    [
        (np.float64, np.float16),  # narrowing: the input is rounded first
        (np.float64, "float32"),
        (np.float32, np.float64),  # widening
        (np.float16, ">f8"),  # any spelling; the result is native
        (np.int32, np.float32),
        (np.float32, np.dtype(np.float32)),
    ],
)
def test_dtype_argument_casts_first(in_dtype, dtype, how):
    a = (np.random.default_rng(1).standard_normal((6, 30)) * 7).astype(in_dtype)
    x = da.from_array(a, chunks=(4, axis_chunks(30, how)))
    for kind in ("softmax", "log_softmax"):
        y = getattr(cdask, kind)(x, -1, dtype=dtype)
        assert y.dtype == expected(kind, a, -1, dtype=dtype).dtype == np.dtype(dtype).newbyteorder("=")
        check(kind, y.compute(), a, -1, dtype=dtype, what=f"{kind} {in_dtype}->{dtype}")


@pytest.mark.parametrize("how", ["one", "many"])
def test_narrowing_beyond_the_range_is_quiet(how):
    """dtype=float16 on float64 values beyond float16's range: inf after the cast, so those rows are NaN, and no
    overflow warning (warnings are errors here), as in memory."""
    a = np.array([[1e6, 0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0], [-1e6, 0.0, 1.0, 2.0]])
    x = da.from_array(a, chunks=(2, 4 if how == "one" else 1))
    for kind in ("softmax", "log_softmax"):
        got = getattr(cdask, kind)(x, 1, dtype=np.float16).compute()
        check(kind, got, a, 1, dtype=np.float16)
        assert np.isnan(got[0]).all() and not np.isnan(got[1:]).any()


def test_rows_sum_to_one_over_many_chunks():
    """A long float32 row over many chunks: the float64 partials keep the sum within float32 rounding of 1."""
    a = (np.random.default_rng(2).standard_normal((3, 200_000)) * 4).astype(np.float32)
    x = da.from_array(a, chunks=(3, 9_999))
    got = cdask.softmax(x, 1).compute()
    assert np.abs(got.astype(np.float64).sum(axis=1) - 1).max() < 1e-6
    assert_matches(got, csoftmax.softmax(a, 1), np.float32)


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["float16", "float32"])
def test_softmax_as_exact_as_the_in_memory_function(dtype):
    """The two-pass path runs the in-memory function's output pass against the merged states: at most one ulp
    further from the exact softmax (long double reference) than the in-memory result, however the axis is
    chunked."""
    from csoftmax._reference import softmax_reference

    a = sample((16, 3000), dtype, seed=11)
    exact = softmax_reference(a, 1, out_dtype=np.longdouble)
    once = float(ulp_diff(csoftmax.softmax(a, 1), exact, np.dtype(dtype)).max())
    for chunks in ((16, 1000), (5, 97)):  # the axis over several chunks (in one chunk, the kernel computes)
        got = cdask.softmax(da.from_array(a, chunks=chunks), 1).compute()
        assert_matches(got, exact, dtype, ulps=once + 1, what=f"chunks {chunks}")


def test_zero_dim_and_empty_arrays():
    for value in (np.float32(3.5), np.float64(-np.inf), np.float16(np.nan)):
        x = da.from_array(np.asarray(value), chunks=())
        for kind in ("softmax", "log_softmax"):
            for dim in (0, -1):
                y = getattr(cdask, kind)(x, dim)
                assert y.shape == () and y.dtype == value.dtype
                check(kind, y.compute(), np.asarray(value), dim)
    with pytest.raises(AxisError):
        cdask.softmax(da.from_array(np.asarray(1.0), chunks=()), 1)
    for shape, chunks in [((0, 10), (0, 3)), ((4, 0), (2, 0)), ((4, 0, 6), (2, 0, 2))]:
        x = da.zeros(shape, chunks=chunks, dtype=np.float32)
        for kind in ("softmax", "log_softmax"):
            for dim in range(len(shape)):
                got = getattr(cdask, kind)(x, dim).compute()
                assert got.shape == shape and got.dtype == np.float32


def test_unknown_chunk_sizes_along_the_axis():
    """Chunks of unknown size (after boolean indexing) along the axis still go through the reduction."""
    a = np.random.default_rng(3).standard_normal(50)
    x = da.from_array(a, chunks=7)
    keep = da.from_array(a > -0.5, chunks=7)
    y = x[keep]
    assert np.isnan(y.shape[0])
    got = cdask.softmax(y, 0).compute()
    assert_matches(got, csoftmax.softmax(a[a > -0.5], 0), np.float64)


# ------------------------------------------------------------------------------------------- optional dependency


def _run_python(code):
    """Runs `code` in a fresh interpreter from the repository root (so `import csoftmax` is this checkout)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)


def test_the_core_package_does_not_import_dask():
    """Not at import, not on the fast path, not on the general path that checks for Dask inputs (a list, a masked
    array, logsumexp), nor in the dispatch hook itself."""
    done = _run_python(
        "import sys, numpy as np, csoftmax\n"
        "from csoftmax import _dask_dispatch\n"
        "csoftmax.softmax(np.zeros((2, 3)), dim=1)\n"
        "csoftmax.log_softmax([[1.0, 2.0]], dim=1); csoftmax.softmin(np.ma.masked_array([1.0, 2.0]), dim=0)\n"
        "csoftmax.logsumexp([1.0, 2.0])\n"
        "assert _dask_dispatch.dispatch('softmax', np.zeros((2, 3)), 1) is NotImplemented\n"
        "print(sorted(m for m in sys.modules if m == 'dask' or m.startswith('dask.')))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_missing_dask_is_a_clear_import_error():
    # sys.modules[name] = None makes `import name` raise ImportError, as if Dask were not installed
    done = _run_python(
        "import sys\n"
        "sys.modules['dask'] = None\n"
        "import csoftmax\n"
        "try:\n"
        "    import csoftmax.dask\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "csoftmax.dask needs Dask" in done.stdout and "pip install 'csoftmax[dask]'" in done.stdout


# ------------------------------------------------------------------------------------------------ argument rules


@pytest.mark.parametrize("dim", [3, -4, 100, -100])
def test_dim_out_of_range_is_torchs_axis_error(dim):
    a = np.zeros((2, 3, 4))
    with pytest.raises(AxisError) as in_memory:
        csoftmax.softmax(a, dim)
    for kind in ("softmax", "log_softmax"):
        with pytest.raises(AxisError) as lazy:
            getattr(cdask, kind)(da.from_array(a, chunks=2), dim)
        assert str(lazy.value) == str(in_memory.value)
        assert "Dimension out of range (expected to be in range of [-3, 2]" in str(lazy.value)


@pytest.mark.parametrize("dim", [1.0, True, np.bool_(False), "1", [1]])
def test_non_integer_dim_is_a_type_error(dim):
    x = da.zeros((2, 3), chunks=1)
    for kind in ("softmax", "log_softmax"):
        with pytest.raises(TypeError, match="dim must be an integer"):
            getattr(cdask, kind)(x, dim)


def test_dim_is_required():
    x = da.zeros((2, 3), chunks=1)
    with pytest.raises(TypeError, match="dim is required"):
        cdask.softmax(x, None)
    with pytest.raises(TypeError):
        cdask.log_softmax(x)  # no default


def test_numpy_integer_dims_are_accepted():
    a = np.random.default_rng(4).standard_normal((5, 9))
    x = da.from_array(a, chunks=(2, 4))
    for dim in (np.int64(1), np.int8(-1), np.uint32(0)):
        np.testing.assert_array_equal(cdask.softmax(x, dim).compute(), cdask.softmax(x, int(dim)).compute())


@pytest.mark.parametrize(
    "values, dtype",
    [
        (np.zeros((2, 3), np.complex64), None),
        (np.zeros((2, 3), np.longdouble), None),
        (np.zeros((2, 3)), np.int32),
        (np.zeros((2, 3)), np.complex128),
        (np.zeros((2, 3)), "not a dtype"),
    ],
    ids=["complex", "longdouble", "dtype=int32", "dtype=complex", "dtype=garbage"],
)
def test_unsupported_dtypes_are_the_in_memory_type_errors(values, dtype):
    with pytest.raises(TypeError) as in_memory:
        csoftmax.softmax(values, 1, dtype=dtype)
    with pytest.raises(TypeError) as lazy:
        cdask.softmax(da.from_array(values, chunks=1), 1, dtype=dtype)
    assert str(lazy.value) == str(in_memory.value)


def test_dtype_is_checked_before_dim_as_in_memory():
    x = da.zeros((2, 3), chunks=1, dtype=np.complex64)
    with pytest.raises(TypeError, match="complex"):
        cdask.softmax(x, 7)


def test_non_dask_input_is_a_type_error():
    with pytest.raises(TypeError, match="dask.array.Array"):
        cdask.softmax(np.zeros(3), 0)


# ------------------------------------------------------------------------------------------- laziness and graph


@pytest.mark.parametrize("how", ["one", "many"])
def test_lazy_with_metadata(how):
    calls = []

    def produce(block):
        calls.append(block.shape)
        return block

    a = np.random.default_rng(5).standard_normal((6, 40)).astype(np.float32)
    x = da.from_array(a, chunks=(4, axis_chunks(40, how))).map_blocks(produce, meta=np.empty((0, 0), np.float32))
    for kind in ("softmax", "log_softmax"):
        y = getattr(cdask, kind)(x, 1)
        assert calls == []  # building the graph computes nothing
        assert isinstance(y, da.Array)
        assert y.shape == x.shape and y.chunks == x.chunks and y.dtype == np.float32
        assert type(y._meta) is np.ndarray and y._meta.dtype == np.float32 and y._meta.ndim == 2
        assert y.name == getattr(cdask, kind)(x, 1).name  # deterministic keys
        assert y.name != getattr(cdask, kind)(x, 0).name
    check("log_softmax", y.compute(), a, 1)
    assert calls


def test_one_chunk_axis_is_a_single_blockwise_layer():
    x = da.from_array(np.zeros((8, 10)), chunks=(3, 10))
    y = cdask.softmax(x, 1)
    assert len(y.dask.layers) == 2  # the input and one map_blocks layer
    assert not any("stats" in name for name in y.dask.layers)


class _BlockShapes(Callback):
    """Records the shape of every array that a block task of the local scheduler produces (block keys are tuples;
    the final task that assembles the result for the caller is not one)."""

    def __init__(self):
        super().__init__()
        self.shapes = []
        self._lock = threading.Lock()

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(key, tuple) and isinstance(result, np.ndarray):
            with self._lock:
                self.shapes.append(result.shape)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_the_axis_is_never_rechunked(kind, dim):
    chunks = chunks_for(SHAPE, dim, "many")
    # an input made block by block (from_array would hold the whole array in one task of the graph)
    x = da.random.default_rng(dim).standard_normal(SHAPE, chunks=chunks, dtype=np.float32) * 8
    a = x.compute()
    y = getattr(cdask, kind)(x, dim)
    assert not any("rechunk" in name for name in y.dask.layers)
    assert y.chunks == x.chunks
    # the row statistics are one block long along the axis, and cut like x along the other axes
    (stats,) = [layer for name, layer in y.dask.layers.items() if "stats-aggregate" in name]
    keys = list(stats.keys())
    assert {key[1 + dim] for key in keys} == {0}
    assert len(keys) == np.prod(x.numblocks) // x.numblocks[dim]
    with _BlockShapes() as seen:
        got = y.compute(scheduler="threads", optimize_graph=False)
    check(kind, got, a, dim)
    # no task ever produced an array longer along the axis than the largest chunk (a rechunked or concatenated
    # row would be the whole axis long)
    assert seen.shapes and max(shape[dim] for shape in seen.shapes if len(shape) == a.ndim) <= max(chunks[dim])
    # and the same with Dask's graph optimisations (fusion) on
    with _BlockShapes() as seen:
        y.compute(scheduler="threads")
    assert max(shape[dim] for shape in seen.shapes if len(shape) == a.ndim) <= max(chunks[dim])


def test_input_blocks_are_not_all_held_between_the_passes():
    """Memory stays bounded by a few blocks: the normalisation pass re-reads its input after the reduction instead
    of keeping every block of pass 1 alive until the row totals are known."""
    n_blocks, block = 24, (4, 1000)
    live = []  # weak references to every input block produced
    peak = [0]
    lock = threading.Lock()

    def produce(block_info=None):
        i = block_info[None]["chunk-location"][1]
        out = np.random.default_rng(i).standard_normal(block)
        with lock:
            live.append(weakref.ref(out))
        return out

    class Count(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            with lock:
                peak[0] = max(peak[0], sum(ref() is not None for ref in live))

    x = da.map_blocks(produce, chunks=((4,), (1000,) * n_blocks), dtype=np.float64, meta=np.empty((0, 0)))
    y = cdask.softmax(x, 1).sum(axis=1)
    # optimize_graph=False: the graph as built. (With optimisation on, Dask's blockwise fusion may itself inline a
    # cheap producer like this one into both passes; inputs that are not blockwise, e.g. persisted or stored
    # blocks, or the output of a reduction, are not fused, and the graph as built must be bounded on its own.)
    for optimize in (False, True):
        live.clear()
        peak[0] = 0
        with Count():
            total = y.compute(scheduler="threads", num_workers=2, optimize_graph=optimize)
        np.testing.assert_allclose(total, 1.0, rtol=1e-12)
        assert len(live) == 2 * n_blocks  # every block was produced twice: once per pass
        assert peak[0] <= 6, f"{peak[0]} of {n_blocks} input blocks alive at once"


def test_persisted_input_is_read_not_recomputed():
    a = np.random.default_rng(6).standard_normal((4, 100))
    x, calls = counted(a, (4, 10))
    x = x.persist(scheduler="threads")
    assert len(calls) == 10
    got = cdask.softmax(x, 1).compute(scheduler="threads")
    assert len(calls) == 10
    assert_matches(got, csoftmax.softmax(a, 1), np.float64)


def test_split_every_and_scheduler_do_not_change_the_result():
    """Any tree shape of the merge gives the same result to a few ulps, and the sync and threaded schedulers agree
    bit for bit."""
    a = sample((5, 400), np.float64, seed=7)
    x = da.from_array(a, chunks=(5, 13))
    ref = cdask.softmax(x, 1).compute(scheduler="sync")
    np.testing.assert_array_equal(cdask.softmax(x, 1).compute(scheduler="threads"), ref)
    for split_every in (2, 3, 32):
        with dask.config.set(split_every=split_every):
            assert_matches(cdask.softmax(x, 1).compute(), ref, np.float64, ulps=4)


# ------------------------------------------------------------------------------- no whole-array barrier (pass 2)


def _ancestors(graph, key):
    """Every key that `key` needs, transitively, in a graph of task-spec nodes."""
    seen, stack = set(), [key]
    while stack:
        for dep in graph[stack.pop()].dependencies:
            if dep not in seen and dep in graph:
                seen.add(dep)
                stack.append(dep)
    return seen


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("dim", [0, 1])
def test_a_block_waits_only_for_its_own_rows_state(dim, recompute):
    """In the graph as built, the pass-2 task of block (i, j) depends on the merged state of row-block i and on
    pass-1 tasks of row-block i only: no whole-array barrier (bind(x, all states) made every block wait for all)."""
    from dask._task_spec import convert_legacy_graph

    x = da.random.default_rng(12).standard_normal((9, 12), chunks=(3, 4))  # 3 x 3 blocks
    other = 1 - dim  # the axis along which blocks are different rows
    y = cdask.softmax(x, dim, recompute=recompute)
    graph = convert_legacy_graph(dict(y.__dask_graph__()))
    (final,) = [name for name in y.dask.layers if "stats-aggregate" in name]
    for index in np.ndindex(*y.numblocks):
        needs = _ancestors(graph, (y.name, *index))
        states = {key for key in needs if isinstance(key, tuple) and key[0] == final}
        own = list(index)
        own[dim] = 0
        assert states == {(final, *own)}, f"block {index} waits for {sorted(states)}"
        pass_one = {key for key in needs if isinstance(key, tuple) and "stats" in key[0]}
        assert pass_one and {key[1 + other] for key in pass_one} == {index[other]}, index


def test_a_row_block_is_normalised_while_another_row_is_still_in_pass_one():
    """At run time: one input block of row-block 1 waits until some output block of row-block 0 is done. With a
    whole-array barrier no output block could be done before that input block, and the wait would time out."""
    released = threading.Event()
    timed_out = []

    def produce(block_info=None):
        i, j = block_info[None]["chunk-location"]
        if (i, j) == (1, 0) and not released.is_set():
            timed_out.append(not released.wait(timeout=20))
        return np.random.default_rng(10 * i + j).standard_normal(block_info[None]["chunk-shape"])

    x = da.map_blocks(produce, chunks=((4, 4), (5, 5, 5)), dtype=np.float64, meta=np.empty((0, 0)))
    y = cdask.softmax(x, 1)

    class Release(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(key, tuple) and key[0] == y.name and key[1] == 0:
                released.set()

    with Release():
        got = y.compute(scheduler="threads", num_workers=4, optimize_graph=False)
    assert timed_out == [False]
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


# --------------------------------------------------------------------------- inputs that must not be computed twice


def _fresh_random(block_info=None):
    """New random numbers on every call: the input is different each time it is computed."""
    return np.random.default_rng().standard_normal(block_info[None]["chunk-shape"]) * 4


@pytest.mark.parametrize("optimize", [False, True])
def test_changing_input_rows_sum_to_one_with_recompute_false(optimize):
    """The default re-produces the input for pass 2; an input that changes between the two computations then
    gives rows that do not sum to 1 (the documented pitfall). recompute=False reuses pass 1's blocks: they do."""
    x = da.map_blocks(_fresh_random, chunks=((3, 3), (50,) * 6), dtype=np.float64, meta=np.empty((0, 0)))
    for kind in ("softmax", "softmin", "log_softmax"):
        fn = getattr(cdask, kind)
        to_sums = np.exp if kind == "log_softmax" else (lambda v: v)
        drifting = to_sums(fn(x, 1).compute(scheduler="threads", optimize_graph=optimize)).sum(axis=1)
        assert np.abs(drifting - 1).max() > 1e-3, "the pitfall did not show: the test would prove nothing"
        kept = to_sums(fn(x, 1, recompute=False).compute(scheduler="threads", optimize_graph=optimize))
        np.testing.assert_allclose(kept.sum(axis=1), 1.0, rtol=1e-12, err_msg=kind)


def test_changing_input_rows_sum_to_one_when_persisted():
    x = da.map_blocks(_fresh_random, chunks=((3, 3), (50,) * 6), dtype=np.float64, meta=np.empty((0, 0)))
    got = cdask.softmax(x.persist(scheduler="threads"), 1).compute(scheduler="threads")
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


def test_recompute_false_produces_the_input_once():
    a = sample((4, 60), np.float32, seed=13)
    x, calls = counted(a, (2, 10))
    got = cdask.softmax(x, 1, recompute=False).compute(scheduler="threads")
    assert len(calls) == 12
    assert_matches(got, csoftmax.softmax(a, 1), np.float32)
    calls.clear()
    cdask.softmax(x, 1).compute(scheduler="threads")
    assert len(calls) == 24  # the default: once per pass


# ------------------------------------------------------------------------------------------------------- softmin


@pytest.mark.parametrize("how", ["one", "two", "many"])
@pytest.mark.parametrize("dtype", FLOATS + (np.int8, np.uint8), ids=lambda t: np.dtype(t).name)
def test_softmin_matches_in_memory(how, dtype):
    if np.dtype(dtype).kind == "f":
        a = sample((6, 30), dtype, seed=14)
    else:  # -(-128) must not wrap, 255 must not become -1: converted to float64 before the negation
        a = np.linspace(np.iinfo(dtype).min, np.iinfo(dtype).max, 180).astype(dtype).reshape(6, 30)
    x = da.from_array(a, chunks=(4, axis_chunks(30, how)))
    y = cdask.softmin(x, 1)
    want = csoftmax.softmin(a, 1)
    assert y.dtype == want.dtype
    assert_matches(y.compute(), want, want.dtype)


# ----------------------------------------------------------------------------------------------------- logsumexp


def logsumexp_reference(a, axis=None, keepdims=False):
    """log(sum(exp(a))) in long double, SciPy's rules for NaN, +inf, all -inf and empty rows."""
    w = np.asarray(a).astype(np.longdouble)
    with np.errstate(all="ignore"):
        m = np.max(w, axis=axis, keepdims=True, initial=-np.inf)
        s = np.sum(np.exp(w - np.where(np.isfinite(m), m, 0)), axis=axis, keepdims=True)
        r = np.where(np.isfinite(m), m + np.log(s), m)
        r = np.where(np.isnan(w).any(axis=axis, keepdims=True), np.nan, r)
    return r if keepdims else np.squeeze(r, axis=axis)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (-1, 0, 1)])
@pytest.mark.parametrize("how", ["one", "many"])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda t: np.dtype(t).name)
def test_logsumexp_matches_scipy_and_the_exact_result(dtype, how, axis, keepdims):
    from scipy.special import logsumexp as scipy_logsumexp

    a = sample(SHAPE, dtype, seed=zlib.crc32(f"lse {how} {axis}".encode()))
    first = 0 if axis is None else (axis if isinstance(axis, int) else axis[0]) % a.ndim
    x = da.from_array(a, chunks=chunks_for(a.shape, first, how))
    y = cdask.logsumexp(x, axis=axis, keepdims=keepdims)
    want = scipy_logsumexp(a, axis=axis, keepdims=keepdims)
    assert y.dtype == want.dtype == np.dtype(dtype) and y.shape == want.shape
    got = y.compute(scheduler="threads")
    assert got.shape == want.shape and got.dtype == want.dtype
    exact = logsumexp_reference(a, axis=axis, keepdims=keepdims)
    assert_matches(got, exact.astype(dtype), dtype, ulps=1, what=f"axis={axis}")


def test_logsumexp_special_values_and_empty_rows():
    """NaN anywhere: NaN; else +inf: +inf; all -inf: -inf; SciPy's answers, whatever block holds them."""
    from scipy.special import logsumexp as scipy_logsumexp

    a = special_rows(np.float64)
    x = da.from_array(a, chunks=(5, axis_chunks(a.shape[1], "many")))
    got = cdask.logsumexp(x, axis=1).compute()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy's own overflow warnings on rows of +-float64 max
        want = scipy_logsumexp(a, axis=1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isfinite(want)], want[~np.isfinite(want)])
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-15)
    for shape, chunks, axis in [((0, 10), (0, 3), 0), ((4, 0), (2, 0), 1), ((4, 0), (2, 0), None)]:
        got = cdask.logsumexp(da.zeros(shape, chunks=chunks), axis=axis).compute()
        np.testing.assert_array_equal(got, np.full(np.shape(got), -np.inf))
        assert np.shape(got) == np.shape(np.sum(np.zeros(shape), axis=axis))  # (SciPy 1.17 fails on some)


def test_logsumexp_of_integers_zero_d_and_the_dim_alias():
    a = np.arange(-10, 20, dtype=np.int16).reshape(3, 10)
    x = da.from_array(a, chunks=(2, 3))
    got = cdask.logsumexp(x, dim=1).compute()
    assert got.dtype == np.float64
    assert_matches(got, logsumexp_reference(a, 1).astype(np.float64), np.float64, ulps=1)
    zero_d = cdask.logsumexp(da.from_array(np.float32(2.5), chunks=()))
    assert zero_d.shape == () and zero_d.dtype == np.float32 and zero_d.compute() == np.float32(2.5)
    with pytest.raises(TypeError, match="both axis and its alias dim"):
        cdask.logsumexp(x, axis=0, dim=1)
    with pytest.raises(AxisError):
        cdask.logsumexp(x, axis=2)


def test_logsumexp_reads_the_input_once_and_any_merge_order_agrees():
    a = sample((5, 400), np.float64, seed=15)
    x, calls = counted(a, (5, 13))
    ref = cdask.logsumexp(x, axis=1).compute(scheduler="threads")
    assert len(calls) == x.npartitions
    for split_every in (2, 3, 32):
        got = cdask.logsumexp(x, axis=1, split_every=split_every).compute()
        assert_matches(got, ref, np.float64, ulps=1, what=f"split_every={split_every}")


def test_logsumexp_of_a_row_whose_terms_below_the_max_are_tiny():
    """log1p of the terms below the largest, across blocks: [0, -40, -45] gives 4.25e-18 to the last digits."""
    a = np.array([[0.0, -40.0, -45.0, -50.0], [-40.0, -45.0, -50.0, 0.0]])
    exact = np.log1p(np.exp(np.longdouble(-40)) + np.exp(np.longdouble(-45)) + np.exp(np.longdouble(-50)))
    for chunks in ((2, 1), (1, 2), (2, 3)):
        got = cdask.logsumexp(da.from_array(a, chunks=chunks), axis=1).compute()
        assert_matches(got, np.full(2, exact).astype(np.float64), np.float64, ulps=1, what=f"chunks {chunks}")


@pytest.mark.parametrize("option, value", [("b", np.ones((2, 3))), ("return_sign", True), ("where", True)])
def test_logsumexp_refuses_what_it_does_not_support(option, value):
    x = da.zeros((2, 3), chunks=1)
    with pytest.raises(NotImplementedError, match=f"{option}= is not supported for Dask arrays"):
        cdask.logsumexp(x, axis=1, **{option: value})
    assert cdask.logsumexp(x, axis=1, return_sign=False).shape == (2,)


# -------------------------------------------------------------------------------- refused arguments and masks


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin"])
def test_out_and_where_are_refused_clearly(kind):
    x = da.zeros((2, 3), chunks=1)
    with pytest.raises(TypeError, match="out= is not supported: the result is a lazy Dask array"):
        getattr(cdask, kind)(x, 1, out=np.empty((2, 3)))
    with pytest.raises(NotImplementedError, match="where= is not supported for Dask arrays"):
        getattr(cdask, kind)(x, 1, where=np.ones((2, 3), bool))


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin", "logsumexp"])
def test_masked_dask_arrays_are_a_clear_type_error(kind):
    """A masked Dask array (its meta says so) is refused when the graph is built, not with a NumPy TypeError."""
    x = da.ma.masked_greater(da.from_array(sample((4, 20), np.float64, seed=16), chunks=(2, 5)), 1.0)
    with pytest.raises(TypeError, match="masked Dask arrays .* are not supported") as caught:
        getattr(cdask, kind)(x, 1)
    assert "dask.array.ma.filled(x, -numpy.inf)" in str(caught.value)


@pytest.mark.parametrize("how", ["one", "many"])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "logsumexp"])
def test_masked_blocks_behind_a_plain_meta_are_a_clear_type_error(kind, how):
    """Blocks that turn out masked at run time (the array's meta is a plain ndarray) fail with the same message."""
    a = sample((4, 20), np.float64, seed=17)
    x = da.from_array(a, chunks=(2, axis_chunks(20, how))).map_blocks(
        lambda block: np.ma.masked_greater(block, 1.0), meta=np.empty((0, 0))
    )
    with pytest.raises(TypeError, match="masked Dask arrays .* are not supported"):
        getattr(cdask, kind)(x, 1).compute(scheduler="sync")


# ------------------------------------------------------------------------------------------------------ dispatch


@pytest.mark.parametrize(
    "name, args, kwargs",
    [
        ("softmax", (1,), {}),
        ("log_softmax", (), {"dim": -1, "dtype": np.float64}),
        ("softmin", (), {"axis": 1}),
        ("logsumexp", (), {"axis": 1, "keepdims": True}),
    ],
)
def test_dispatch_gives_the_lazy_result_for_dask_arrays(name, args, kwargs):
    """csoftmax.<name>(dask_array, ...) hands over to csoftmax.dask through this hook: a lazy result, equal to
    csoftmax.dask.<name>'s, and nothing computed."""
    from csoftmax import _dask_dispatch

    a = sample((4, 30), np.float32, seed=18)
    x, calls = counted(a, (2, 7))
    y = _dask_dispatch.dispatch(name, x, *args, **kwargs)
    assert isinstance(y, da.Array) and calls == []
    assert y.name == getattr(cdask, name)(x, *args, **kwargs).name
    np.testing.assert_array_equal(y.compute(), getattr(cdask, name)(x, *args, **kwargs).compute())


@pytest.mark.parametrize(
    "name, args, kwargs",
    [
        ("softmax", (1,), {}),
        ("softmax", (), {"dim": 0, "dtype": np.float64}),
        ("log_softmax", (), {"dim": -1}),
        ("softmin", (), {"axis": 1}),
        ("logsumexp", (), {"axis": 1, "keepdims": True}),
        ("logsumexp", (), {"dim": 0}),
    ],
)
def test_the_public_functions_return_the_lazy_result_for_dask_arrays(name, args, kwargs):
    """csoftmax.<name>(dask_array) is csoftmax.dask.<name>'s lazy result: nothing computed, the same graph."""
    a = sample((4, 30), np.float32, seed=19)
    x, calls = counted(a, (2, 7))
    y = getattr(csoftmax, name)(x, *args, **kwargs)
    assert isinstance(y, da.Array) and calls == []
    assert y.name == getattr(cdask, name)(x, *args, **kwargs).name
    want = getattr(csoftmax, name)(a, *args, **kwargs)
    np.testing.assert_allclose(y.compute(), want, rtol=1e-5, atol=1e-30)
    with pytest.raises(TypeError, match="is not supported"):
        getattr(csoftmax, name)(dask.delayed(np.zeros)((4, 30)), *args, **kwargs)


def test_dispatch_leaves_other_inputs_alone_and_refuses_other_dask_objects():
    from csoftmax import _dask_dispatch

    for value in (np.zeros((2, 3)), [[1.0, 2.0]], np.ma.masked_array(np.zeros(3))):
        assert _dask_dispatch.dispatch("softmax", value, 1) is NotImplemented
        assert cdask.dispatch("softmax", value, 1) is NotImplemented
    with pytest.raises(TypeError, match=r"csoftmax.softmax\(\): dask.delayed.Delayed is not supported"):
        _dask_dispatch.dispatch("softmax", dask.delayed(np.zeros)(3), 0)
    with pytest.raises(TypeError, match="dim is required"):  # no implicit dim for a Dask array
        _dask_dispatch.dispatch("softmax", da.zeros((2, 3), chunks=1), None)



def test_the_benchmark_runs_and_checks_its_results():
    """benchmarks/dask_bench.py on a tiny case: every method's rows checked, and the disk-to-disk memory run."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, os.path.join(root, "benchmarks", "dask_bench.py"), "--shape", "32", "3000", "--chunks", "16",
         "500", "--repeat", "1", "--threads", "2", "--memory-gb", "0.002", "--memory-rows", "4",
         "--memory-chunk-mb", "0.05", "--npy"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for line in ("csoftmax.dask vs plain dask", "csoftmax.dask vs rechunk + C", "per thread, for an input of"):
        assert line in done.stdout, done.stdout


# ------------------------------------------------------------------------------------------ distributed cluster


@pytest.fixture(scope="module")
def client():
    """A real cluster: two worker processes with one thread each, everything on the loopback interface."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        # the scheduler always runs an HTTP server: a free port on loopback (None would mean port 8787, and a
        # warning, an error here, when another cluster holds it)
        dashboard_address="127.0.0.1:0",
        worker_dashboard_address=None,
    ) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("how", ["one", "two", "many"])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda t: np.dtype(t).name)
def test_distributed_matches_in_memory_and_threads(client, kind, how, dtype):
    a = np.concatenate([sample((20, 40), dtype, seed=8), special_rows(dtype, kind=kind)])
    # 'many': 9 uneven chunks (fewer than axis_chunks gives, to keep the cluster's task count small)
    axis = {"one": (40,), "two": (13, 27), "many": (1, 3, 5, 7, 2, 6, 4, 8, 4)}[how]
    x = da.from_array(a, chunks=(16, axis))
    y = getattr(cdask, kind)(x, 1)
    got = client.compute(y).result()
    check(kind, got, a, 1, what=f"{kind} {how}")
    # the same graph gives the same bits on the threaded scheduler
    np.testing.assert_array_equal(got, y.compute(scheduler="threads"))


def test_distributed_with_persisted_input_and_negative_dim(client):
    a = sample((30, 12, 50), np.float32, seed=9)
    x = da.from_array(a, chunks=(15, 6, 9)).persist()
    for dim in (0, -1, -2):
        got = cdask.softmax(x, dim).compute()
        assert_matches(got, csoftmax.softmax(a, dim), np.float32, what=f"dim={dim}")
    got = client.compute(cdask.log_softmax(x, -3, dtype=np.float64)).result()
    check("log_softmax", got, a, -3, dtype=np.float64)


def test_distributed_workers_run_the_computation(client):
    """The work happens in the worker processes (which import csoftmax themselves)."""
    import os

    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids
    x = da.from_array(sample((8, 64), np.float64, seed=10), chunks=(8, 8))
    future = client.compute(cdask.softmax(x, 1).sum(axis=1))
    np.testing.assert_allclose(future.result(), 1.0, rtol=1e-12)
    # both workers took part
    assert len(client.who_has(future)) == 1 and len(client.run(os.getpid)) == 2
