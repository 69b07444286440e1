"""Property-based tests (hypothesis): invariants that hold for every input, layout and dim."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from csoftmax import softmax

from _helpers import LAYOUTS, ULP_BOUND, assert_softmax_close, make_layout, native, reference_softmax

FAST = settings(deadline=None, max_examples=80)

float_dtypes = hnp.floating_dtypes(sizes=(16, 32, 64), endianness="?")


@st.composite
def arrays_and_dims(draw, finite=True, min_side=1, max_dims=4, dtype=None, elements=None):
    dt = draw(float_dtypes) if dtype is None else np.dtype(dtype)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=min_side, max_side=24))
    if elements is None:
        width = dt.itemsize * 8
        elements = st.floats(width=width, allow_nan=not finite, allow_infinity=not finite,
                             min_value=-1e4 if finite else None, max_value=1e4 if finite else None)
    x = draw(hnp.arrays(dt, shape, elements=elements))
    layout = draw(st.sampled_from(LAYOUTS))
    x = make_layout(x, layout)
    dim = draw(st.integers(-x.ndim, x.ndim - 1))
    return x, dim


def sum_bound(n, dtype):
    """How far from 1 a row of n results may sum: each result within the ulp bound (relative), plus per-term
    absolute slack for underflowed results and for the 2^-40 fixed-point sum."""
    dtype = native(dtype)
    eps = float(np.finfo(dtype).eps)
    tiny = float(np.finfo(dtype).smallest_subnormal)
    return 2 * ULP_BOUND[dtype] * eps + n * (tiny + 2.0**-40)


@FAST
@given(arrays_and_dims())
def test_rows_sum_to_one_within_a_bound_growing_with_row_length(case):
    x, dim = case
    y = softmax(x, dim)
    sums = np.sum(y.astype(np.longdouble), axis=dim)
    n = x.shape[dim]
    assert np.all(np.abs(sums - 1) <= sum_bound(n, x.dtype)), (sums, n)


@FAST
@given(arrays_and_dims(finite=False))
def test_results_are_in_zero_one_and_nan_exactly_in_rows_with_nan_or_inf_or_all_neg_inf(case):
    x, dim = case
    y = softmax(x, dim)
    finite_rows = np.isfinite(np.max(np.array(x, dtype=np.float64), axis=dim, keepdims=True))
    nan_rows = ~finite_rows
    assert np.array_equal(np.isnan(y), np.broadcast_to(nan_rows, y.shape))
    ok = y[~np.isnan(y)]
    assert np.all((ok >= 0) & (ok <= 1))


@FAST
@given(arrays_and_dims(finite=False, min_side=0))
def test_matches_the_reference_for_any_values_shape_layout_and_dim(case):
    x, dim = case
    assert_softmax_close(softmax(x, dim), reference_softmax(x, dim), native(x.dtype))


@FAST
@given(st.data())
def test_adding_a_constant_to_a_row_does_not_change_the_result(data):
    # quarter-integer data and integer shifts, so x + c is exact in every dtype and the two inputs differ only by the shift
    dt = data.draw(st.sampled_from([np.float16, np.float32, np.float64]))
    limit = {np.float16: 400, np.float32: 10**6, np.float64: 10**12}[dt]
    quarters = st.integers(-64, 64).map(lambda q: q / 4)
    x, dim = data.draw(arrays_and_dims(dtype=dt, elements=quarters))
    c = data.draw(st.integers(-limit, limit))
    shifted = (np.array(x, dtype=np.float64) + c).astype(dt)
    assert np.array_equal(shifted.astype(np.float64), np.array(x, dtype=np.float64) + c)  # exact
    a, b = softmax(x, dim), softmax(shifted, dim)
    ref = reference_softmax(x, dim)
    assert_softmax_close(a, ref, dt)
    assert_softmax_close(b, ref, dt)


@FAST
@given(arrays_and_dims(finite=False))
def test_equal_entries_of_a_row_get_bit_identical_results(case):
    x, dim = case
    y = np.moveaxis(softmax(x, dim), dim, -1).reshape(-1, x.shape[dim])
    xs = np.moveaxis(np.array(x), dim, -1).reshape(-1, x.shape[dim])
    for row_x, row_y in zip(xs, y):
        for value in np.unique(row_x[~np.isnan(row_x)]):
            same = row_y[row_x == value]
            assert np.array_equal(same, np.full_like(same, same[0]), equal_nan=True)


@FAST
@given(arrays_and_dims(), st.randoms(use_true_random=False))
def test_permuting_a_row_permutes_its_result(case, random):
    x, dim = case
    perm = list(range(x.shape[dim]))
    random.shuffle(perm)
    y = softmax(x, dim)
    yp = softmax(np.take(x, perm, axis=dim), dim)
    dt = native(x.dtype)
    ref = reference_softmax(x, dim)
    assert_softmax_close(np.take(yp, np.argsort(perm), axis=dim), ref, dt)
    assert_softmax_close(y, ref, dt)


@FAST
@given(arrays_and_dims(finite=True))
def test_larger_input_never_gets_a_clearly_smaller_result(case):
    # monotone up to rounding: x_i > x_j implies y_i >= y_j (allowing the result's ulp bound of slack)
    x, dim = case
    y = np.moveaxis(softmax(x, dim), dim, -1).reshape(-1, x.shape[dim]).astype(np.float64)
    xs = np.moveaxis(np.array(x, dtype=np.float64), dim, -1).reshape(-1, x.shape[dim])
    slack = ULP_BOUND[native(x.dtype)] * float(np.finfo(x.dtype).eps)
    for row_x, row_y in zip(xs, y):
        order = np.argsort(row_x, kind="stable")
        ys = row_y[order]
        assert np.all(np.diff(ys) >= -slack * np.maximum(ys[1:], ys[:-1]) - float(np.finfo(x.dtype).smallest_subnormal))


@FAST
@given(arrays_and_dims(finite=True, dtype=np.float64))
def test_max_entry_of_every_row_gets_at_least_one_over_n(case):
    x, dim = case
    y = softmax(x, dim)
    n = x.shape[dim]
    assert np.all(np.max(y, axis=dim) >= (1 / n) * (1 - 1e-12))


@FAST
@given(arrays_and_dims(finite=True))
def test_input_is_never_modified(case):
    x, dim = case
    before = np.array(x, copy=True)
    before_bytes = before.tobytes()
    softmax(x, dim)
    assert np.array(x, copy=True).tobytes() == before_bytes
    assert x.dtype == before.dtype


@settings(deadline=None, max_examples=40)
@given(st.lists(st.floats(-80, 80), min_size=1, max_size=40), st.sampled_from([np.float32, np.float64]))
def test_python_lists_give_float64_results_matching_the_reference(values, dt):
    y = softmax(values, 0)
    assert y.dtype == np.float64
    assert_softmax_close(y, reference_softmax(np.array(values), 0), np.float64)
    y = softmax(values, 0, dtype=dt)
    assert y.dtype == np.dtype(dt)
    assert_softmax_close(y, reference_softmax(np.array(values, dtype=dt), 0), dt)
