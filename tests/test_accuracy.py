"""Accuracy claims, on every kernel set this CPU has, and the layout-independence (bit identity) guarantee.

* float32 results within 64 ulp of a float64 reference; rows sum to 1 within the bounds of _sum_bound (README).
* float64 results within 64 ulp of a long double reference.
* every kernel set agrees with the others.
* for one kernel set, C, F, transposed and strided layouts of the same data give bit-identical results, every dim.
* the exponential (csoftmax._csoftmax.exp_shifted): at most 2 ulp over x - shift in [-104, 0] (float32) and
  [-746, 0] (float64), subnormal results included, for shifts that make x - shift inexact as well as exact.
"""
import itertools

import numpy as np
import pytest

import csoftmax
from csoftmax import _csoftmax, softmax

from _helpers import (MEASURED, SAME_VALUE_LAYOUTS, assert_softmax_close, bits, make_layout, reference_log_softmax,
                      reference_softmax, ulp_errors)

KERNEL_SETS = _csoftmax.available_kernels()

ROW_LENGTHS = [1, 2, 3, 7, 8, 15, 16, 17, 31, 64, 1000, 1025, 4097, 65537, 10**6]


def rows_of(kind, n, rng, dtype):
    """A (rows, n) array of one kind of data."""
    rows = 1 if n >= 65537 else 3
    if kind == "normal":
        x = rng.standard_normal((rows, n)) * np.array([1.0, 10.0, 40.0][:rows])[:, None]
    elif kind == "spread":
        # results from 1 down to the subnormal range and zero
        low = -110.0 if dtype == np.float32 else -760.0
        x = rng.uniform(low, 0.0, (rows, n))
    elif kind == "equal":
        x = np.full((rows, n), 2.5)
    elif kind == "one_big":
        # the fixed-point sum's worst case: every small term is e = 2^-41 exactly half a unit of 2^-40
        x = np.full((rows, n), -41 * np.log(2.0))
        x[:, 0] = 0.0
    elif kind == "offset":
        # large common offset: x - max is inexact in the input's precision
        x = rng.standard_normal((rows, n)) * 20 + 1000.0
    else:
        raise ValueError(kind)
    return x.astype(dtype)


KINDS = ["normal", "spread", "equal", "one_big", "offset"]


def _sum_bound(kind, n):
    """How far a float32 row's sum may be from 1. README: rows of a million elements within 6e-8 where no entry
    dominates. Any row: the entries' own roundings (a few float32 ulps, 2^-23 of the sum), plus, where n terms of
    2^-41 each round half a unit of the fixed-point sum (one_big), n 2^-41."""
    if n >= 10**6 and kind != "one_big":
        return 6e-8
    return 2.0 ** -23 + (n * 2.0 ** -41 if kind == "one_big" else 0.0)


def _record_max(key, value):
    MEASURED[key] = max(MEASURED.get(key, 0.0), float(value))


@pytest.mark.parametrize("n", ROW_LENGTHS)
def test_float32_within_64_ulp_of_float64_reference_and_rows_sum_to_one(kernel_set, n, rng):
    for kind in KINDS:
        x = rows_of(kind, n, rng, np.float32)
        y = softmax(x, 1)
        ref = reference_softmax(x, 1, work=np.float64)
        assert_softmax_close(y, ref, np.float32, ulps=64, what=f"{kind}, n={n}")
        _record_max(f"softmax float32 max ulp [{kernel_set}]", ulp_errors(y, ref, np.float32).max())
        sums = y.astype(np.float64).sum(axis=1)
        assert np.all(np.abs(sums - 1) <= _sum_bound(kind, n)), f"{kind}, n={n}: row sums {sums}"
        # the lanes path (F order: the reduction axis strided, rows side by side) is held to the same bound
        if n <= 4097:
            yf = softmax(np.asfortranarray(x), 1)
            assert_softmax_close(yf, ref, np.float32, ulps=64, what=f"{kind}, n={n}, F order")


@pytest.mark.parametrize("n", ROW_LENGTHS)
def test_float64_within_64_ulp_of_long_double_reference(kernel_set, n, rng):
    for kind in KINDS:
        x = rows_of(kind, n, rng, np.float64)
        y = softmax(x, 1)
        ref = reference_softmax(x, 1, work=np.longdouble)
        assert_softmax_close(y, ref, np.float64, ulps=64, what=f"{kind}, n={n}")
        _record_max(f"softmax float64 max ulp [{kernel_set}]", ulp_errors(y, ref, np.float64).max())
        sums = y.astype(np.longdouble).sum(axis=1)
        assert np.all(np.abs(sums - 1) <= 1e-13), f"{kind}, n={n}: row sums {sums}"
        if n <= 4097:
            yf = softmax(np.asfortranarray(x), 1)
            assert_softmax_close(yf, ref, np.float64, ulps=64, what=f"{kind}, n={n}, F order")


@pytest.mark.parametrize("n", [5, 16, 300, 100000])
def test_float16_is_the_correctly_rounded_float32_computation_within_one_ulp(kernel_set, n, rng):
    for kind in ("normal", "equal"):
        x = rows_of(kind, n, rng, np.float32).astype(np.float16)
        ref = reference_softmax(x, 1, work=np.float64)
        assert_softmax_close(softmax(x, 1), ref, np.float16, ulps=1.0, what=f"{kind}, n={n}")


def test_float16_results_in_the_subnormal_range_are_rounded_not_flushed(kernel_set):
    x = np.array([0.0, -12.0, -14.0, -16.0, -17.0, -20.0], dtype=np.float16)  # results down to 2e-9 < 2^-24
    ref = reference_softmax(x, 0, work=np.float64)
    assert_softmax_close(softmax(x, 0), ref, np.float16, ulps=1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_results_are_rounded_not_flushed_to_zero(kernel_set, dtype):
    low = {np.float32: -103.0, np.float64: -744.0}[dtype]
    d = np.linspace(low, low + 20, 997)
    x = np.concatenate([[0.0], d]).astype(dtype)
    y = softmax(x, 0)
    ref = reference_softmax(x, 0)
    assert (ref[1:].astype(dtype) > 0).sum() > 500  # the range really holds subnormal results
    assert_softmax_close(y, ref, dtype, ulps=64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_top_entry_keeps_a_rest_made_of_terms_below_the_smallest_subnormal(kernel_set, dtype):
    # The top entry is -log1p(S'), S' the sum of the other exponentials. When each of those is subnormal, or below
    # the smallest subnormal, S' itself can still be well inside the range: it must come out rounded once, not lost
    # with its terms (found by the fuzzer: 0.0 where the answer was -1.26e-43).
    n, lanes = 3001, 24
    gaps = {np.float32: [-105.0, -102.0, -99.0, -95.0, -88.0, -80.0],
            np.float64: [-750.0, -745.0, -740.0, -725.0, -709.0, -700.0]}[dtype]
    rng = np.random.default_rng(11)
    x = np.empty((n, lanes))
    for j in range(lanes):
        x[:, j] = gaps[j % len(gaps)] + rng.uniform(-0.5, 0.0, n)
        x[(37 * j) % n, j] = 0.0
    x = x.astype(dtype)
    ref = reference_log_softmax(x, 0)
    top = x == 0
    assert np.all(ref[top].astype(dtype) < 0)  # every top result is non-zero in the type
    assert np.any(np.abs(ref[top].astype(dtype)) < np.finfo(dtype).tiny)  # and some are subnormal
    for what, got in (("lanes", csoftmax.log_softmax(x, 0)),
                      ("rows", csoftmax.log_softmax(np.ascontiguousarray(x.T), 1).T),
                      ("few lanes", np.concatenate([csoftmax.log_softmax(x[:, j:j + 2], 0)
                                                    for j in range(0, lanes, 2)], axis=1)),
                      ("one row", np.stack([csoftmax.log_softmax(np.ascontiguousarray(x[:, j]), 0)
                                            for j in range(lanes)], axis=1)),
                      ("strided", csoftmax.log_softmax(make_layout(x, "everything"), 0))):
        err = ulp_errors(got[top], ref[top], dtype)
        assert np.max(err) <= 4, (what, float(np.max(err)), got[top][np.argmax(err)], ref[top][np.argmax(err)])


# ------------------------------------------------------------------------------------------ kernel agreement


@pytest.mark.skipif(len(KERNEL_SETS) < 2, reason="only one kernel set on this CPU")
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_kernel_set_agrees_with_the_others(dtype, rng):
    before = _csoftmax.active_kernels()
    cases = [(rows_of(kind, n, rng, dtype if dtype != np.float16 else np.float32).astype(dtype), layout)
             for kind in ("normal", "spread", "offset") for n in (7, 16, 33, 5000) for layout in ("C", "F", "strided")]
    results = {}
    try:
        for name in KERNEL_SETS:
            _csoftmax.use_kernels(name)
            results[name] = [softmax(make_layout(x, layout), dim) for x, layout in cases for dim in (0, 1)]
    finally:
        _csoftmax.use_kernels(before)
    tolerance = {np.float16: 1.0, np.float32: 8.0, np.float64: 8.0}[dtype]
    for a, b in itertools.combinations(KERNEL_SETS, 2):
        worst = 0.0
        for ya, yb in zip(results[a], results[b]):
            np.testing.assert_array_equal(np.isnan(ya), np.isnan(yb))
            ok = ~np.isnan(ya)
            spacing = np.spacing(np.maximum(np.abs(ya[ok]), np.abs(yb[ok]))).astype(np.float64)
            diff = np.abs(ya[ok].astype(np.float64) - yb[ok].astype(np.float64)) / spacing
            worst = max(worst, float(diff.max()) if diff.size else 0.0)
        _record_max(f"kernel agreement {np.dtype(dtype).name} max ulp [{a} vs {b}]", worst)
        assert worst <= tolerance, f"{a} and {b} differ by {worst} ulp"


# ------------------------------------------------------------------------------------------------ bit identity

BIT_SHAPES = [(5, 7), (3, 40), (17, 3), (2, 3, 4), (4, 1, 19), (3, 2, 2, 18), (2, 1300), (1300, 2), (5, 4100)]
GUARANTEED_LAYOUTS = ("C", "F", "transposed", "strided")


def _bit_cases(rng, dtypes):
    for shape in BIT_SHAPES:
        for dtype in dtypes:
            x = (rng.standard_normal(shape) * 8).astype(dtype)
            flat = x.reshape(-1)
            k = max(1, flat.size // 50)
            flat[rng.integers(0, flat.size, k)] = -np.inf
            flat[rng.integers(0, flat.size, 1)] = np.nan
            yield shape, dtype, x


def _assert_bit_identical(results, what):
    names = list(results)
    first = results[names[0]]
    for name in names[1:]:
        other = results[name]
        assert other.shape == first.shape
        np.testing.assert_array_equal(np.isnan(first), np.isnan(other), err_msg=f"{what}: NaN, {name}")
        ok = ~np.isnan(first)
        same = bits(first)[ok] == bits(other)[ok]
        if not same.all():
            i = int(np.argmin(same))
            raise AssertionError(f"{what}: {names[0]} and {name} differ in {int((~same).sum())} elements, e.g. "
                                 f"{first[ok][i]!r} vs {other[ok][i]!r}")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_c_f_transposed_and_strided_layouts_give_bit_identical_results_for_every_dim(kernel_set, dtype, rng):
    for shape, dt, x in _bit_cases(rng, [dtype]):
        layouts = {name: make_layout(x, name) for name in GUARANTEED_LAYOUTS}
        for dim in range(-len(shape), len(shape)):
            _assert_bit_identical({name: softmax(a, dim) for name, a in layouts.items()},
                                  f"{kernel_set} {np.dtype(dt).name} {shape} dim={dim}")


@pytest.mark.parametrize("src, dst", [(np.float32, np.float64), (np.float16, np.float64), (np.float16, np.float32)])
def test_layouts_give_bit_identical_results_with_a_widening_dtype_argument(kernel_set, src, dst, rng):
    for shape, dt, x in _bit_cases(rng, [src]):
        layouts = {name: make_layout(x, name) for name in GUARANTEED_LAYOUTS}
        for dim in range(-len(shape), len(shape)):
            _assert_bit_identical({name: softmax(a, dim, dtype=dst) for name, a in layouts.items()},
                                  f"{kernel_set} {np.dtype(src).name}->{np.dtype(dst).name} {shape} dim={dim}")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_every_other_layout_gives_the_same_bits_as_c_order(kernel_set, dtype, rng):
    # softmax.h: "identical for every layout": reversed, byte-swapped, misaligned, read-only and all at once too
    for shape, dt, x in _bit_cases(rng, [dtype]):
        layouts = {name: make_layout(x, name) for name in SAME_VALUE_LAYOUTS}
        for dim in range(-len(shape), len(shape)):
            _assert_bit_identical({name: softmax(a, dim) for name, a in layouts.items()},
                                  f"{kernel_set} {np.dtype(dt).name} {shape} dim={dim}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_rows_longer_than_the_fixed_point_chunk_are_bit_identical_across_layouts_and_sum_to_one(kernel_set, dtype,
                                                                                                rng):
    n = (1 << 22) + 3  # beyond CSM_PIECE terms (src/softmax.h), so each row is summed in pieces that merge
    x = (rng.standard_normal((2, n)) * 3).astype(dtype)
    results = {
        "C": softmax(x, 1),                                         # contiguous rows
        "F": softmax(np.asfortranarray(x), 1),                      # lanes
        "strided": softmax(np.repeat(x, 2, axis=1)[:, ::2], 1),     # gathered in blocks
    }
    _assert_bit_identical(results, f"{kernel_set} {np.dtype(dtype).name} n={n}")
    sums = results["C"].astype(np.float64).sum(axis=1)
    assert np.all(np.abs(sums - 1) <= (2e-5 if dtype == np.float32 else 1e-12)), sums


# -------------------------------------------------------------------------------------------- the exponential

EXP_POINTS = 10_000_000
EXP_BLOCKS = 40
EXP_EXACT_BLOCKS = 10  # blocks with shift 0: x - shift exact


def _exp_samples(dtype, block, rng):
    """One block of (x, shift, exact x - shift as hi + lo) with x - shift spread over the kernel's whole range.

    The first EXP_EXACT_BLOCKS blocks have shift 0 (x - shift exact); the others have shifts of every magnitude and
    sign, and x with random low bits, so x - shift is usually inexact in the input's precision, as it is in a
    softmax, where the shift is the row maximum."""
    low = {np.float32: -104.0, np.float64: -746.0}[dtype]
    size = EXP_POINTS // EXP_BLOCKS
    if block < EXP_EXACT_BLOCKS:
        shift = 0.0
    else:
        shift = float(dtype(rng.choice([-1.0, 1.0]) * 2.0 ** rng.uniform(-12, 9)))
    d = rng.uniform(low, 0.0, size)
    d[:64] = np.linspace(low, low + 0.5, 64)          # the underflow boundary
    d[64:128] = -rng.uniform(0, 1e-3, 64)             # results next to 1
    x = (shift + d).astype(dtype)
    x = x * (1.0 + rng.uniform(-1, 1, size) * 2.0**-30)  # random low bits (float32: rounded away again below)
    x = np.minimum(x.astype(dtype), dtype(shift))
    # the exact difference as hi + lo (2Sum in float64; for float32 inputs lo is 0 and hi is exact or within
    # 1e-16 relative)
    xd = x.astype(np.float64)
    hi = xd - shift
    back = hi - xd
    lo = (xd - (hi - back)) + (-shift - back)
    return x, shift, hi, lo


_EXP_CACHE = {}




def _measure_exp(dtype, kernel):
    """Max ulp error of exp_shifted over EXP_POINTS samples, separately where x - shift is exact in dtype and
    where it is not: {category: (worst ulp, example, number of points)}, plus the count of subnormal results."""
    key = (np.dtype(dtype).name, kernel)
    if key in _EXP_CACHE:
        return _EXP_CACHE[key]
    rng = np.random.default_rng(20240601 + (dtype == np.float64))
    wide = np.float64 if dtype == np.float32 else np.longdouble
    stats = {"exact": [0.0, None, 0], "inexact near": [0.0, None, 0], "inexact far": [0.0, None, 0]}
    subnormal_results = 0
    for block in range(EXP_BLOCKS):
        x, shift, hi, lo = _exp_samples(dtype, block, rng)
        out = np.empty_like(x)
        _csoftmax.exp_shifted(x, shift, out, kernel)
        with np.errstate(under="ignore"):
            ref = np.exp(hi.astype(wide)) * (1 + lo.astype(wide))
        err = ulp_errors(out, ref, dtype)
        subnormal_results += int(np.count_nonzero((ref.astype(dtype) < np.finfo(dtype).tiny) & (ref > 0)))
        exact = (lo == 0) & (hi.astype(dtype).astype(np.float64) == hi)  # x - shift representable in dtype
        near = hi >= _csoftmax.CSM_NEAR_LIMIT
        for category, mask in (("exact", exact), ("inexact near", ~exact & near), ("inexact far", ~exact & ~near)):
            if not mask.any():
                continue
            e = err[mask]
            i = int(np.argmax(e))
            entry = stats[category]
            entry[2] += int(mask.sum())
            if e[i] > entry[0]:
                j = np.flatnonzero(mask)[i]
                entry[0], entry[1] = float(e[i]), (float(x[j]), shift, float(out[j]), float(ref[j]))
    name = np.dtype(dtype).name
    for category, (worst, _, count) in stats.items():
        MEASURED[f"exp_shifted {name} max ulp, x - shift {category} ({count} points) [{kernel}]"] = round(worst, 3)
    _EXP_CACHE[key] = (stats, subnormal_results)
    return _EXP_CACHE[key]


def _exp_failure(dtype, worst, case):
    return (f"{np.dtype(dtype).name} exp_shifted: {worst:.2f} ulp at x={case[0]!r}, shift={case[1]!r}: "
            f"got {case[2]!r}, exact {case[3]!r}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_exp_shifted_is_within_2_ulp_where_x_minus_shift_is_exact(kernel_set, dtype):
    stats, subnormal_results = _measure_exp(dtype, kernel_set)
    worst, case, count = stats["exact"]
    assert count >= EXP_POINTS // 4
    assert subnormal_results > EXP_POINTS // 20  # the subnormal range was really sampled
    assert worst <= 2.0, _exp_failure(dtype, worst, case)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_exp_shifted_carries_the_rounding_of_x_minus_shift_where_it_matters(kernel_set, dtype):
    # In a softmax the shift is the row maximum and x - max is usually not representable. The kernels (see the
    # header of kernels.inc) carry its rounding error (2Sum) into the exponential where x - max < -64, so there the
    # result stays within 2 ulp of exp(x - shift); above -64 they leave it out for speed, which costs at most
    # 0.5 ulp(x - shift) <= 2^-19 relative: 32 ulp of the result, plus the exponential's own 2.
    stats, _ = _measure_exp(dtype, kernel_set)
    assert stats["inexact near"][2] >= EXP_POINTS // 40 and stats["inexact far"][2] >= EXP_POINTS // 40
    worst, case, _ = stats["inexact far"]
    assert worst <= 2.0, _exp_failure(dtype, worst, case) + " (x - shift inexact, below -64)"
    worst, case, _ = stats["inexact near"]
    assert worst <= 34.0, _exp_failure(dtype, worst, case) + " (x - shift inexact, above -64)"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_exp_shifted_is_one_at_zero_and_zero_at_and_beyond_the_underflow_limit(kernel_set, dtype):
    low = {np.float32: -104.0, np.float64: -746.0}[dtype]
    x = np.array([0.0, -0.0, -np.inf, low, low - 1, -1e30, -np.finfo(dtype).max, np.finfo(dtype).tiny * -1,
                  -np.finfo(dtype).smallest_subnormal, 1.0 - 1.0], dtype=dtype)
    out = np.empty_like(x)
    _csoftmax.exp_shifted(x, 0.0, out, kernel_set)
    expected = np.array([1, 1, 0, 0, 0, 0, 0, 1, 1, 1], dtype=dtype)
    np.testing.assert_array_equal(out, expected)
    assert not np.signbit(out).any()


def test_exp_shifted_of_a_row_does_not_depend_on_its_neighbours(kernel_set):
    # one far value in a vector must not change the near values' results (layout independence)
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        near = (-rng.uniform(0, 60, 64)).astype(dtype)
        alone = np.empty_like(near)
        _csoftmax.exp_shifted(near, 0.0, alone, kernel_set)
        mixed = near.copy()
        mixed[::3] = dtype(-90.0 if dtype == np.float32 else -700.0)
        out = np.empty_like(mixed)
        _csoftmax.exp_shifted(mixed, 0.0, out, kernel_set)
        keep = np.ones(64, bool)
        keep[::3] = False
        np.testing.assert_array_equal(bits(out[keep]), bits(alone[keep]))


def test_the_active_kernel_set_is_one_of_the_available_ones():
    assert KERNEL_SETS and all(isinstance(k, str) for k in KERNEL_SETS)
    assert _csoftmax.active_kernels() in KERNEL_SETS
    assert csoftmax.softmax is softmax
