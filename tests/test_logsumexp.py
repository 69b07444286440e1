"""csoftmax.logsumexp against scipy.special.logsumexp (semantics) and a long-double reference (accuracy), and the
streaming state csoftmax.SoftmaxState against the one-shot functions and the same reference."""
import pickle
import re
import warnings

import numpy as np
import pytest

import csoftmax
from csoftmax import SoftmaxState, logsumexp

from _helpers import SAME_VALUE_LAYOUTS, make_layout, reference_log_softmax, round_to

try:  # NumPy >= 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover
    AxisError = np.AxisError

FLOATS = [np.float16, np.float32, np.float64]
LONG_DOUBLE_IS_WIDER = np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant
needs_long_double = pytest.mark.skipif(not LONG_DOUBLE_IS_WIDER,
                                       reason="the reference needs a long double wider than float64")


# ------------------------------------------------------------------------------------------------ references

def reference_lse(x, axis=-1, b=None):
    """log|sum(b exp(x))| along axis in long double, unrounded, and its sign. Without b, log of the sum as log1p of
    everything but one maximum (so a dominating entry keeps l's relative accuracy)."""
    w = np.moveaxis(np.asarray(x, np.longdouble), axis, -1)
    with np.errstate(all="ignore"):
        if b is None:
            m = w.max(-1, keepdims=True)
            top = w == m
            rest = np.where(top, 0, np.exp(w - m)).sum(-1, keepdims=True)
            r = m + np.log1p((top.sum(-1, keepdims=True) - 1) + rest)
            return np.where(np.isfinite(m), r, m)[..., 0], None
        bw = np.moveaxis(np.broadcast_to(np.asarray(b, np.longdouble), np.shape(x)), axis, -1)
        m = np.where(bw != 0, w, -np.inf).max(-1, keepdims=True)
        s = np.where(bw != 0, bw * np.exp(w - m), 0).sum(-1)
        return m[..., 0] + np.log(np.abs(s)), np.sign(s)


def ulp_error(actual, ref, dtype):
    """max |actual - ref| in ulps of ref rounded to dtype (below the normal range: in units of the smallest
    subnormal) over the entries where that is finite; the others must agree exactly (NaN with NaN)."""
    actual = np.asarray(actual)
    ref = np.asarray(ref, np.longdouble)
    rounded = round_to(ref, dtype)
    finite = np.isfinite(rounded)
    np.testing.assert_array_equal(actual[~finite], rounded[~finite])
    if not finite.any():
        return 0.0
    magnitude = np.abs(rounded[finite])
    with np.errstate(over="ignore"):
        spacing = np.spacing(magnitude)                          # (inf above the largest finite value)
    spacing = np.where(np.isinf(spacing), magnitude - np.nextafter(magnitude, 0), spacing).astype(np.longdouble)
    return float(np.max(np.abs(actual[finite].astype(np.longdouble) - ref[finite]) / spacing))


def scipy_lse():
    return pytest.importorskip("scipy.special").logsumexp


def scipy_quiet(*args, **kwargs):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return scipy_lse()(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ SciPy semantics

def random_axis(rng, ndim):
    pick = rng.integers(5)
    if pick == 0:
        return None
    if pick == 1:
        return ()
    if pick == 2:
        return int(rng.integers(-ndim, ndim))
    k = int(rng.integers(1, ndim + 1))
    return tuple(int(a) - (ndim if rng.integers(2) else 0) for a in rng.choice(ndim, k, replace=False))


def random_weights(rng, shape, kind):
    if kind == "none":
        return None
    if kind == "positive":
        return rng.random(shape) + 0.1
    if kind == "broadcast":                                      # fewer dims, signed
        return rng.standard_normal(shape[1:])
    if kind == "signed_ints":                                    # -1, 0, 1: zeros take no part
        return rng.integers(-1, 2, shape)
    return rng.random(shape) * (rng.random(shape) > 0.3)         # "with_zeros"


@pytest.mark.parametrize("dtype", FLOATS + [np.int8, np.bool_])
@pytest.mark.parametrize("weights", ["none", "positive", "broadcast", "signed_ints", "with_zeros"])
def test_shapes_dtypes_values_and_signs_match_scipy(dtype, weights, rng):
    for _ in range(40):
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(n) for n in rng.integers(1, 5, ndim))
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        b = random_weights(rng, shape, weights)
        axis = random_axis(rng, ndim)
        keepdims = bool(rng.integers(2))
        ours, sign = logsumexp(x, axis=axis, b=b, keepdims=keepdims, return_sign=True)
        theirs, their_sign = scipy_quiet(x, axis=axis, b=b, keepdims=keepdims, return_sign=True)
        what = f"shape {shape} axis {axis} keepdims {keepdims}"
        assert type(ours) is type(theirs), what                 # ndarray, or a NumPy scalar for 0-d results
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, what
        assert sign.dtype == their_sign.dtype and sign.shape == their_sign.shape, what
        # values: against SciPy in float64 (SciPy computes float16/float32 in their own precision)
        exact, exact_sign = scipy_quiet(x.astype(np.float64), axis=axis, b=b, keepdims=keepdims, return_sign=True)
        np.testing.assert_array_equal(sign, exact_sign.astype(sign.dtype), err_msg=what)
        tol = {np.float16: 1e-3, np.float32: 1e-6}.get(np.dtype(ours.dtype).type, 1e-13)
        scale = 1 + np.max(np.abs(x.astype(np.float64)), initial=0)
        np.testing.assert_allclose(np.asarray(ours, np.float64), exact, rtol=tol, atol=tol * scale, err_msg=what)
        plain = logsumexp(x, axis=axis, b=b, keepdims=keepdims)
        np.testing.assert_array_equal(np.isnan(plain), np.isnan(scipy_quiet(x, axis=axis, b=b, keepdims=keepdims)))


SPECIAL_ROWS = [
    ([-np.inf, -np.inf], None),
    ([np.inf, 1.0], None),
    ([np.inf, np.inf], None),
    ([np.nan, 1.0], None),
    ([np.nan, np.inf], None),
    ([-np.inf, 3.0], None),
    (["max", "max"], None),                                     # the dtype's largest finite value
    (["-max", "-max"], None),
    ([np.inf, np.inf], [1, -1]),
    ([np.inf, 1.0], [-1, 1]),
    ([np.inf, 1.0], [1, -1]),
    ([1.0, 1.0], [1, -1]),
    ([1.0, 2.0], [1, -1]),
    ([np.nan, 1.0], [0, 1]),
    ([np.inf, 1.0], [0, 1]),
    ([1.0], [0]),
    ([1.0, 2.0], [np.nan, 1]),
    ([0.0], [np.inf]),
    ([0.0], [-np.inf]),
    ([-np.inf], [np.inf]),
    ([-np.inf, 0.0], [-1, -1]),
    ([5.0, -np.inf], [-2, 3]),
]


@pytest.mark.parametrize("row, b", SPECIAL_ROWS)
def test_special_values_and_signs_match_scipy(row, b):
    for dtype in FLOATS:
        big = np.finfo(dtype).max
        x = np.array([{"max": big, "-max": -big}.get(v, v) for v in row], dtype)
        ours, sign = logsumexp(x, b=b, return_sign=True)
        theirs, their_sign = scipy_quiet(x, b=b, return_sign=True)
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)               # inf, -inf, NaN, or equal to the last bit here
        np.testing.assert_array_equal(sign, their_sign)
        np.testing.assert_array_equal(logsumexp(x, b=b), scipy_quiet(x, b=b))


def test_a_negative_total_is_nan_without_return_sign_and_its_log_with_it():
    assert np.isnan(logsumexp([1.0, 2.0], b=[1, -1]))
    value, sign = logsumexp([1.0, 2.0], b=[1, -1], return_sign=True)
    assert sign == -1.0 and value == pytest.approx(np.log(np.exp(2.0) - np.exp(1.0)), rel=1e-15)


def test_an_exact_cancellation_is_minus_inf_with_sign_zero():
    x = np.array([[3.0, 3.0, -np.inf], [0.5, 0.25, 0.5]])
    value, sign = logsumexp(x, axis=1, b=[[2, -2, 1], [1, 0, -1]], return_sign=True)
    np.testing.assert_array_equal(value, [-np.inf, -np.inf])
    np.testing.assert_array_equal(sign, [0.0, 0.0])


def test_empty_rows_give_minus_inf_as_in_scipy_with_sign_zero_where_scipy_says_minus_one():
    # SciPy fills empty reductions with -inf and takes sign(-inf) = -1; the empty sum is 0, whose sign is 0 (as
    # SciPy gives for a row of -inf entries): csoftmax says 0.
    for shape, axis in [((3, 0), 1), ((0, 3), 0), ((0,), None), ((2, 0, 2), 1)]:
        x = np.zeros(shape, np.float32)
        value, sign = logsumexp(x, axis=axis, return_sign=True)
        theirs, _ = scipy_quiet(x, axis=axis, return_sign=True)
        np.testing.assert_array_equal(value, theirs)
        assert value.dtype == theirs.dtype == np.float32
        np.testing.assert_array_equal(sign, np.zeros_like(theirs))


def test_zero_weights_hide_inf_and_nan_entries_even_when_the_whole_row_has_zero_weight():
    # SciPy's documented rule ("it adds nothing to the sum if the corresponding weight is zero") holds while some
    # entry has a nonzero weight; SciPy gives NaN for a row of zero weights over inf/NaN entries. csoftmax applies
    # the rule throughout: nothing to sum, -inf.
    assert logsumexp([np.inf, 1.0], b=[0, 1]) == 1.0
    assert logsumexp([np.nan, 1.0], b=[0, 1]) == 1.0
    value, sign = logsumexp(np.array([[np.inf, np.nan], [1.0, 2.0]]), axis=1, b=[0, 0], return_sign=True)
    np.testing.assert_array_equal(value, [-np.inf, -np.inf])
    np.testing.assert_array_equal(sign, [0.0, 0.0])


@pytest.mark.parametrize("kwargs", [{}, {"axis": 0}, {"axis": -1}, {"axis": ()}, {"axis": (0,)},
                                    {"keepdims": True}, {"axis": 0, "keepdims": True}, {"b": 2.0},
                                    {"b": [3.0]}, {"b": np.ones((2, 1))}])
def test_0d_input_counts_as_1d_as_in_scipy(kwargs):
    for x in (np.float64(1.5), np.array(1.5), np.float32(-2.0), 7):
        ours = logsumexp(x, **kwargs)
        theirs = scipy_quiet(x, **kwargs)
        assert type(ours) is type(theirs) and np.shape(ours) == np.shape(theirs), kwargs
        assert ours.dtype == theirs.dtype, kwargs
        np.testing.assert_allclose(ours, theirs, rtol=1e-15)
    with pytest.raises(AxisError):
        logsumexp(np.array(1.5), axis=1)


@pytest.mark.parametrize("a_dtype", [np.float16, np.float32, np.float64, np.int8, np.int64, np.bool_])
@pytest.mark.parametrize("b", [None, np.float16(2), np.float32(2), 2.0, 2, True, np.ones(2, np.int8),
                               np.ones(2, np.uint16), np.ones(2, np.float16), np.ones(2, np.float32),
                               np.ones(2, np.float64), np.ones(2, np.bool_)])
def test_result_dtype_promotes_a_with_b_as_scipy_does(a_dtype, b):
    x = np.array([1, 0]).astype(a_dtype)
    ours = logsumexp(x, b=b)
    assert ours.dtype == scipy_quiet(x, b=b).dtype


def test_axis_none_reduces_all_axes_and_keepdims_keeps_them_all(rng):
    x = rng.standard_normal((3, 4, 5))
    full = logsumexp(x)
    assert isinstance(full, np.float64)
    assert full == pytest.approx(float(reference_lse(x.ravel())[0]), rel=2e-16)
    kept = logsumexp(x, keepdims=True)
    assert kept.shape == (1, 1, 1) and kept[0, 0, 0] == full
    assert logsumexp(x, axis=(0, 1, 2)) == full == logsumexp(x, axis=(2, 0, 1))


def test_axis_empty_tuple_reduces_nothing(rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(logsumexp(x, axis=()), x)
    b = rng.random((3, 4)) + 0.5
    np.testing.assert_allclose(logsumexp(x, axis=(), b=b), x + np.log(b), rtol=1e-15)
    np.testing.assert_allclose(logsumexp(x, axis=(), b=b), scipy_quiet(x, axis=(), b=b), rtol=1e-15)


def test_b_broadcasts_the_input_up_to_the_joint_shape():
    x = np.array([1.0, 2.0])
    b = np.array([[1.0], [2.0], [-1.0]])
    value, sign = logsumexp(x, axis=1, b=b, return_sign=True)
    theirs, their_sign = scipy_quiet(x, axis=1, b=b, return_sign=True)
    assert value.shape == (3,)
    np.testing.assert_allclose(value, theirs, rtol=1e-15)
    np.testing.assert_array_equal(sign, their_sign)
    assert logsumexp(x, axis=0, b=b).shape == (2,)


def test_where_is_zero_weights(rng):
    x = rng.standard_normal((5, 7)) * 3
    where = rng.random((5, 7)) > 0.4
    where[0] = False                                             # a row with nothing: -inf
    where[1] = True
    ours = logsumexp(x, axis=1, where=where)
    np.testing.assert_allclose(ours, scipy_quiet(x, axis=1, b=where.astype(float)), rtol=1e-15)
    assert ours[0] == -np.inf
    b = rng.standard_normal((5, 7))
    value, sign = logsumexp(x, axis=1, b=b, where=where, return_sign=True)
    theirs, their_sign = scipy_quiet(x, axis=1, b=np.where(where, b, 0), return_sign=True)
    np.testing.assert_allclose(value, theirs, rtol=1e-13)
    np.testing.assert_array_equal(sign, their_sign)
    # a broadcast mask (one per column), and entries hidden by where take no part even when inf or NaN
    cols = np.array([True, False, True, True, False, True, True])
    y = x.copy()
    y[:, 1] = np.inf
    y[:, 4] = np.nan
    np.testing.assert_allclose(logsumexp(y, axis=1, where=cols), logsumexp(x[:, cols], axis=1), rtol=1e-15)


def test_masked_arrays_entries_take_no_part_as_where_false(rng):
    x = rng.standard_normal((4, 6))
    hidden = rng.random((4, 6)) > 0.5
    hidden[2] = True
    ma = np.ma.array(x, mask=hidden)
    np.testing.assert_array_equal(logsumexp(ma, axis=1), logsumexp(x, axis=1, where=~hidden))
    extra = rng.random((4, 6)) > 0.3
    np.testing.assert_array_equal(logsumexp(ma, axis=0, where=extra), logsumexp(x, axis=0, where=~hidden & extra))


def test_dim_is_torch_spelling_of_axis(rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(logsumexp(x, dim=1), logsumexp(x, axis=1))
    np.testing.assert_array_equal(logsumexp(x, dim=(0, 1)), logsumexp(x, axis=None))
    with pytest.raises(TypeError, match=re.escape("logsumexp(): got both axis and its alias dim; pass only one")):
        logsumexp(x, axis=1, dim=1)


@pytest.mark.parametrize("layout", SAME_VALUE_LAYOUTS)
def test_every_layout_gives_the_same_bits(layout, rng):
    base = rng.standard_normal((6, 5, 4)).astype(np.float32) * 20
    b = rng.standard_normal((6, 5, 4))
    for axis in (0, 1, 2, (0, 2), None):
        want = logsumexp(base, axis=axis, b=b, return_sign=True)
        got = logsumexp(make_layout(base, layout), axis=axis, b=make_layout(b, layout), return_sign=True)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_inputs_are_not_modified(rng):
    x = rng.standard_normal((4, 5))
    b = rng.standard_normal((4, 5))
    where = rng.random((4, 5)) > 0.5
    copies = [x.copy(), b.copy(), where.copy()]
    logsumexp(x, axis=1, b=b, where=where, return_sign=True)
    for before, after in zip(copies, (x, b, where)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("call, error, message", [
    (lambda: logsumexp(np.array([1 + 1j])), TypeError,
     "logsumexp(): complex input is not supported; pass the real part (x.real) or abs(x) as a float array"),
    (lambda: logsumexp(np.array([1.0]), b=np.array([1j])), TypeError,
     "logsumexp(): complex b is not supported; pass real weights (the real part, or abs(b) with the signs "
     "separately)"),
    (lambda: logsumexp(np.array([1.0]), b=np.array([1], dtype=object)), TypeError,
     "logsumexp(): b of dtype object is not supported; pass real weights as a float16, float32, float64, integer "
     "or bool array"),
    (lambda: logsumexp(np.array([1.0]), b=np.array([1], dtype=np.longdouble)), TypeError,
     f"logsumexp(): b of dtype {np.dtype(np.longdouble)} is not supported"),
    (lambda: logsumexp(np.array(["a"])), TypeError, "logsumexp(): input of dtype <U1 is not supported; pass a "
     "float16, float32 or float64 array (integers and bools are converted to float64)"),
    (lambda: logsumexp(np.array([1.0], np.longdouble)), TypeError,
     f"logsumexp(): {np.dtype(np.longdouble)} input is not supported; pass x.astype(np.float64)"),
    (lambda: logsumexp(np.ones(3), where=np.ones(3)), TypeError,
     "logsumexp(): where must be a boolean mask, not float64"),
    (lambda: logsumexp(np.ones(3), where=np.ones(2, bool)), ValueError,
     "logsumexp(): where of shape (2,) does not broadcast to the input's (3,)"),
    (lambda: logsumexp(np.ones(2), b=np.ones(3)), ValueError,
     "logsumexp(): b of shape (3,) does not broadcast with a of shape (2,)"),
    (lambda: logsumexp(np.ones((2, 3)), axis=2), AxisError,
     "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    (lambda: logsumexp(np.ones((2, 3)), axis=(0, -2)), AxisError,
     "logsumexp(): dim (0, -2) repeats a dimension; each may appear once"),
    (lambda: logsumexp(np.ones((2, 3)), axis=1.0), TypeError, "logsumexp(): dim must be an integer, not float"),
    (lambda: logsumexp(np.ones((2, 3)), axis=[0, 1]), TypeError, "logsumexp(): dim must be an integer, not list"),
    (lambda: logsumexp([[1.0], [1.0, 2.0]]), ValueError, "logsumexp(): the input is ragged"),
])
def test_errors_say_what_to_pass(call, error, message):
    with pytest.raises(error, match="^" + re.escape(message)):
        call()


def test_duplicate_axes_are_a_value_error_as_in_numpy():
    with pytest.raises(ValueError):
        logsumexp(np.ones((2, 3)), axis=(1, 1))


# ------------------------------------------------------------------------------------------------ accuracy

@needs_long_double
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_float16_and_float32_are_within_an_ulp_of_the_exact_value(dtype, rng):
    # computed in float64 from l good to 2^-45 and rounded once: correctly rounded but for near-ties
    worst = 0.0
    for n in (1, 2, 7, 100, 4096, 100_000, 1_000_000):
        for scale in (0.1, 1.0, 30.0, 1e4):
            x = (rng.standard_normal((2, n)) * scale).astype(dtype)
            if dtype == np.float16:
                x = np.clip(x, -6e4, 6e4).astype(dtype)
            worst = max(worst, ulp_error(logsumexp(x, axis=1), reference_lse(x, 1)[0], dtype))
    assert worst <= 1.0


@needs_long_double
def test_float32_rows_dominated_by_one_entry_keep_their_relative_accuracy():
    # lse = log1p(k exp(-60)) ~ 1e-26: the top entry through log1p, not log(1 + tiny) = 0
    for k in (1, 3, 1000):
        x = np.concatenate([[0.0], np.full(k, -60.0)]).astype(np.float32)
        assert ulp_error(logsumexp(x), reference_lse(x)[0], np.float32) <= 1.0
        assert logsumexp(x) > 0


@needs_long_double
def test_float64_is_within_2_ulp_where_well_conditioned(rng):
    # well-conditioned: no cancellation between the max and log(sum) (entries >= 0, or a dominant top entry)
    worst = 0.0
    for n in (1, 2, 10, 1000, 100_000):
        for scale in (0.5, 3.0, 1e3, 1e300):
            x = np.abs(rng.standard_normal((3, n))) * scale
            worst = max(worst, ulp_error(logsumexp(x, axis=1), reference_lse(x, 1)[0], np.float64))
    for tail in (-40.0, -60.0, -700.0):
        x = np.array([0.0, tail, tail + 1])
        worst = max(worst, ulp_error(logsumexp(x), reference_lse(x)[0], np.float64))
    assert worst <= 2.0


@needs_long_double
def test_float64_weights_folded_in_long_double_keep_huge_exponents_exact():
    # tiny b against large a: a + log(b) is near 0, formed in long double before it rounds (in float64, log(b)'s
    # rounding alone, half an ulp of 700, would be hundreds of ulps of the result)
    a = np.array([700.5, 699.0, 650.0])
    b = np.array([3.7e-305, 1.3e-304, 2.9e-283])
    ref = np.log(np.sum(b.astype(np.longdouble) * np.exp(a.astype(np.longdouble))))
    assert 0.5 < ref < 2
    assert ulp_error(logsumexp(a, b=b), ref, np.float64) <= 2.0
    naive = np.log(np.sum(np.exp(a + np.log(b))))
    assert ulp_error(naive, ref, np.float64) > 4                 # (the test can tell)


@needs_long_double
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signed_weights_are_as_exact_as_the_cancellation_allows(dtype, rng):
    # x = [c, c + t] with b = [1, -(1 - d) exp(-t)]: the total is d exp(c) in exact arithmetic before b rounds;
    # the reference is the long-double sum of the rounded inputs. Condition number kappa = sum|terms| / |sum|:
    # the error of log|sum| is at most about kappa * (the working precision's unit) * max(1, |exponent|), plus the
    # final rounding.
    eps64 = np.finfo(np.float64).eps
    checked = 0
    for d in (0.5, 1e-3, 1e-6, 1e-9, -1e-7, -0.25):
        for c in (0.0, -3.0, 40.0):
            t = float(rng.uniform(0, 2))
            x = np.array([c, c + t]).astype(dtype)
            b = np.array([1.0, -(1 - d) * np.exp(-t)]).astype(dtype)
            ref, ref_sign = reference_lse(x, b=b)
            terms = np.abs(b.astype(np.longdouble)) * np.exp(x.astype(np.longdouble))
            kappa = float(terms.sum() / np.exp(ref))
            value, sign = logsumexp(x, b=b, return_sign=True)
            assert sign == ref_sign
            allowed = 8 * kappa * eps64 * max(1.0, abs(c) + 2) + 2 * float(np.spacing(np.abs(round_to(ref, dtype))))
            assert abs(float(value) - float(ref)) <= allowed, (d, c, kappa)
            checked += kappa > 1e5
    assert checked                                               # some cases did cancel hard


def test_weights_that_nearly_cancel_on_equal_exponents_keep_the_difference_exact():
    # exp(0) - (1 - 2^-k) exp(0) = 2^-k exactly: the difference of logs is log(1 - 2^-k), known to an ulp, so
    # log(-expm1(d)) recovers k log 2 to the last bits (log1p(-exp(d)) would lose about k bits)
    for k in (10, 25, 40, 50):
        value, sign = logsumexp(np.zeros(2), b=[1.0, -(1 - 2.0 ** -k)], return_sign=True)
        exact = -k * np.log(np.longdouble(2))
        assert sign == 1.0
        assert ulp_error(value, exact, np.float64) <= 2.0, k


@needs_long_double
def test_float16_results_are_the_float64_result_rounded_once(rng):
    x = (rng.standard_normal((50, 300)) * 3).astype(np.float16)
    b = (rng.random((50, 300)) + 0.5).astype(np.float16)
    for weights in (None, b):
        ours = logsumexp(x, axis=1, b=weights)
        ref, _ = reference_lse(x, 1, weights)
        assert ours.dtype == np.float16
        assert ulp_error(ours, ref, np.float16) <= 0.5 + 1e-6


# ------------------------------------------------------------------------------------------------ streaming state

def chunks_along(x, dim, rng, most=6):
    """x split along dim at random places (empty pieces included)."""
    n = x.shape[dim]
    cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(0, most))))
    edges = [0, *cuts.tolist(), n]
    return [np.take(x, np.arange(lo, hi), axis=dim) for lo, hi in zip(edges[:-1], edges[1:])]


def merged_in_random_order(states, rng):
    """Merges neighbours of a shuffled list until one is left: a random order and a random grouping."""
    states = list(states)
    rng.shuffle(states)
    while len(states) > 1:
        i = int(rng.integers(len(states) - 1))
        states[i:i + 2] = [states[i].merge(states[i + 1]) if rng.integers(2) else states[i + 1].merge(states[i])]
    return states[0]


def hostile_rows(rng, dtype, n):
    """Rows of one block: ordinary, wide, huge magnitudes, one dominant entry, -inf entries, all -inf, NaN, +inf."""
    big = {np.float16: 6e4, np.float32: 1e37, np.float64: 1e300}[dtype]
    x = np.empty((9, n))
    x[0] = rng.standard_normal(n)
    x[1] = rng.standard_normal(n) * 30
    x[2] = rng.uniform(-1, 1, n) * big
    x[3] = -60.0
    x[3, rng.integers(n)] = 0.0
    x[4] = rng.standard_normal(n)
    x[4, rng.random(n) < 0.5] = -np.inf
    x[5] = -np.inf
    x[6] = rng.standard_normal(n)
    x[6, rng.integers(n)] = np.nan
    x[7] = rng.standard_normal(n)
    x[7, rng.integers(n)] = np.inf
    x[8] = rng.standard_normal(n) * 3 + 5
    return x.astype(dtype)


# float64 states: each block's l is a float64 (within half an ulp), so a merged l can be about an ulp of the largest
# block l off; finished as m + l, that is up to ~2.5 ulp of the result (one-shot: ~1).
STATE_LSE_ULPS = {np.float16: 1.0, np.float32: 1.0, np.float64: 3.0}


@needs_long_double
@pytest.mark.parametrize("dtype", FLOATS)
def test_state_merged_in_any_order_matches_the_one_shot_functions(dtype, rng):
    for trial in range(12):
        n = int(rng.integers(1, 200))
        x = hostile_rows(rng, dtype, n)
        dim = 1
        if trial % 3 == 2:                                       # the rows along dim 0 of a transposed block
            x, dim = x.T, 0
        state = merged_in_random_order([SoftmaxState.of(c, dim) for c in chunks_along(x, dim, rng)], rng)
        assert state.shape == tuple(1 if i == dim else s for i, s in enumerate(x.shape))
        once = logsumexp(x, axis=dim)
        exact = reference_lse(x, dim)[0]
        assert ulp_error(state.logsumexp(), exact, dtype) <= STATE_LSE_ULPS[dtype]
        assert ulp_error(state.logsumexp(), once.astype(np.longdouble), dtype) <= STATE_LSE_ULPS[dtype]
        np.testing.assert_array_equal(state.logsumexp(keepdims=True), np.expand_dims(state.logsumexp(), dim))

        # softmax and log_softmax of each block against the merged state: at most an ulp less exact than the
        # one-shot functions (the output pass rounds 1/S or log S separately; NaN rows and exact zeros / -inf in
        # the same places), and float16/float32 within an ulp where the one-shot function is
        ref_log = reference_log_softmax(x, dim)
        for log, one_shot in ((False, csoftmax.softmax), (True, csoftmax.log_softmax)):
            ref = ref_log if log else np.exp(ref_log)
            once_err = ulp_error(one_shot(x, dim), ref, dtype)
            pieces = [getattr(state, "log_softmax" if log else "softmax")(c) for c in chunks_along(x, dim, rng)]
            streamed = np.concatenate(pieces, axis=dim) if pieces else np.empty_like(x)
            assert streamed.dtype == dtype
            np.testing.assert_array_equal(np.isnan(streamed), np.isnan(one_shot(x, dim)))
            if dtype == np.float64 and not log:
                # apply's exponent carries l's float64 rounding: up to ~2 l ulps relative
                bound = 1 + 2 * float(np.nanmax(np.where(np.isfinite(state.max), state.logsum, 0)))
            else:
                bound = 1.0 if dtype != np.float64 else 3.0
            assert ulp_error(streamed, ref, dtype) <= max(bound, once_err + 1), (log, trial)


def test_merge_is_commutative_to_the_bit(rng):
    for dtype in FLOATS:
        x = hostile_rows(rng, dtype, 40)
        a = SoftmaxState.of(x[:, :17], 1)
        b = SoftmaxState.of(x[:, 17:], 1)
        ab, ba = a.merge(b), b.merge(a)
        np.testing.assert_array_equal(ab.max, ba.max)
        np.testing.assert_array_equal(ab.logsum, ba.logsum)


def test_a_single_block_state_is_the_one_shot_logsumexp(rng):
    for dtype in FLOATS:
        x = hostile_rows(rng, dtype, 33)
        np.testing.assert_array_equal(SoftmaxState.of(x, 1).logsumexp(), logsumexp(x, axis=1))


def test_state_parts_dtypes_and_shape_broadcast_against_the_block(rng):
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    s = SoftmaxState.of(x, 1)
    assert s.shape == (3, 1, 4) and s.dim == 1 and s.dtype == np.float32
    assert s.max.dtype == np.float64 and s.logsum.dtype == np.float64
    np.testing.assert_array_equal(s.max, x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(np.exp(x - s.max - s.logsum).sum(axis=1), 1, rtol=1e-6)
    d = SoftmaxState.of(x.astype(np.float64), -2)
    assert d.dim == 1 and d.logsum.dtype == (np.longdouble if LONG_DOUBLE_IS_WIDER else np.float64)
    assert SoftmaxState.of(np.arange(6).reshape(2, 3), 1).dtype == np.float64       # integers: float64
    assert s.merge(d).dtype == np.float64 and s.merge(d).logsum.dtype == d.logsum.dtype
    assert repr(s) == "SoftmaxState(shape=(3, 1, 4), dim=1, dtype=float32)"


def test_tuple_dims_stream_like_one_shot_tuple_reductions(rng):
    x = rng.standard_normal((4, 6, 5))
    states = [SoftmaxState.of(x[:, i:i + 2, :], (1, 2)) for i in range(0, 6, 2)]
    s = SoftmaxState.merge_all(reversed(states))
    assert s.shape == (4, 1, 1) and s.dim == (1, 2)
    np.testing.assert_allclose(s.logsumexp(), logsumexp(x, axis=(1, 2)), rtol=4e-16)
    np.testing.assert_allclose(s.softmax(x[:, 2:4, :]), csoftmax.softmax(x, dim=(1, 2))[:, 2:4, :], rtol=1e-14)
    np.testing.assert_allclose(s.log_softmax(x), csoftmax.log_softmax(x, dim=(1, 2)), rtol=1e-14)


def test_empty_blocks_and_fully_masked_rows_merge_as_nothing(rng):
    x = rng.standard_normal((3, 8))
    empty = SoftmaxState.of(x[:, :0], 1)
    assert (empty.max == -np.inf).all() and np.isnan(empty.logsum).all()
    np.testing.assert_array_equal(empty.logsumexp(), [-np.inf] * 3)
    full = SoftmaxState.of(x, 1)
    masked = SoftmaxState.of(x, 1, where=np.zeros_like(x, bool))
    for other in (empty, masked):
        np.testing.assert_array_equal(full.merge(other).logsumexp(), full.logsumexp())
        np.testing.assert_array_equal(other.merge(full).logsum, full.logsum)


def test_state_with_where_matches_one_shot_softmax_with_where(rng):
    x = rng.standard_normal((5, 12)).astype(np.float32)
    where = rng.random((5, 12)) > 0.4
    where[0] = False                                             # a fully masked row: 0 / -inf, as one-shot
    state = SoftmaxState.merge_all(SoftmaxState.of(x[:, i:i + 5], 1, where=where[:, i:i + 5]) for i in (0, 5, 10))
    np.testing.assert_allclose(state.logsumexp(), logsumexp(x, axis=1, where=where), rtol=1e-7)
    for name in ("softmax", "log_softmax"):
        one_shot = getattr(csoftmax, name)(x, dim=1, where=where)
        streamed = np.concatenate([getattr(state, name)(x[:, i:i + 5], where=where[:, i:i + 5])
                                   for i in (0, 5, 10)], axis=1)
        np.testing.assert_allclose(streamed, one_shot, rtol=2e-6)
        np.testing.assert_array_equal(streamed[~where], one_shot[~where])
    ma = np.ma.array(x, mask=~where)
    np.testing.assert_array_equal(SoftmaxState.of(ma, 1).logsumexp(), SoftmaxState.of(x, 1, where=where).logsumexp())


def test_state_pickles_for_other_processes(rng):
    s = SoftmaxState.of(rng.standard_normal((3, 4)), 1)
    t = pickle.loads(pickle.dumps(s))
    assert t.dim == s.dim and t.dtype == s.dtype and t.logsum.dtype == s.logsum.dtype
    np.testing.assert_array_equal(t.logsum, s.logsum)
    np.testing.assert_array_equal(t.max, s.max)


def test_streaming_over_a_memory_mapped_file_matches_one_shot(tmp_path, rng):
    path = tmp_path / "logits.npy"
    np.save(path, (rng.standard_normal((64, 1000)) * 4).astype(np.float32))
    x = np.load(path, mmap_mode="r")
    step = 128                                                   # column chunks: the rows run across them

    # pass 1: one state for every row, merged chunk by chunk
    state = SoftmaxState.merge_all(SoftmaxState.of(x[:, j:j + step], dim=1) for j in range(0, x.shape[1], step))
    # pass 2: each chunk normalised against the whole rows, written to an output file
    out = np.lib.format.open_memmap(tmp_path / "probs.npy", mode="w+", dtype=np.float32, shape=x.shape)
    for j in range(0, x.shape[1], step):
        out[:, j:j + step] = state.softmax(x[:, j:j + step])
    out.flush()

    whole = np.asarray(x)
    exact = np.exp(reference_log_softmax(whole, 1))
    assert ulp_error(np.load(tmp_path / "probs.npy"), exact, np.float32) <= max(
        1.0, ulp_error(csoftmax.softmax(whole, dim=1), exact, np.float32))
    np.testing.assert_allclose(state.logsumexp(), logsumexp(whole, axis=1), rtol=1.2e-7)
    assert ulp_error(state.logsumexp(), reference_lse(whole, 1)[0], np.float32) <= 1.0


@pytest.mark.parametrize("call, error, message", [
    (lambda s, t: s.merge(1.0), TypeError, "SoftmaxState.merge(): other must be a SoftmaxState, not float"),
    (lambda s, t: s.merge(t), ValueError, "SoftmaxState.merge(): the states are along different dims (1 and 0)"),
    (lambda s, t: s.merge(SoftmaxState.of(np.ones((2, 3)), 1)), ValueError,
     "SoftmaxState.merge(): the states have shapes (3, 1) and (2, 1); they must describe the same rows"),
    (lambda s, t: SoftmaxState.merge_all([]), ValueError,
     "SoftmaxState.merge_all(): no states to merge; pass at least one"),
    (lambda s, t: SoftmaxState.merge_all([1]), TypeError,
     "SoftmaxState.merge_all(): expected SoftmaxState items, not int"),
    (lambda s, t: s.softmax(np.ones((4, 4))), ValueError,
     "SoftmaxState.softmax(): block of shape (4, 4) is not made of the state's rows (state shape (3, 1), dim 1): "
     "only the size along dim may differ"),
    (lambda s, t: s.log_softmax(np.ones(3)), ValueError, "SoftmaxState.log_softmax(): block of shape (3,)"),
    (lambda s, t: s.softmax(np.ones((3, 2)), where=np.ones((3, 2))), TypeError,
     "SoftmaxState.softmax(): where must be a boolean mask, not float64"),
    (lambda s, t: SoftmaxState.of(np.float64(1), 0), ValueError,
     "SoftmaxState.of(): a block has at least one dimension (the rows' dim); pass x.reshape(1)"),
    (lambda s, t: SoftmaxState.of(np.ones(3), None), TypeError,
     "SoftmaxState.of(): dim is required (an int or a tuple of ints)"),
    (lambda s, t: SoftmaxState.of(np.ones(3), 1), AxisError,
     "Dimension out of range (expected to be in range of [-1, 0], but got 1)"),
    (lambda s, t: SoftmaxState.of(np.ones(3, complex), 0), TypeError, "SoftmaxState.of(): complex input"),
    (lambda s, t: SoftmaxState(np.zeros((3, 1)), np.zeros((3, 2)), 1, np.float32), ValueError,
     "SoftmaxState: max has shape (3, 1), logsum has shape (3, 2); they must match"),
    (lambda s, t: SoftmaxState(np.zeros((3, 2)), np.zeros((3, 2)), 1, np.float32), ValueError,
     "SoftmaxState: max and logsum must have size 1 along dim 1, not shape (3, 2)"),
    (lambda s, t: SoftmaxState(np.zeros((3, 1)), np.zeros((3, 1)), 1, np.int32), TypeError,
     "SoftmaxState: dtype must be float16, float32 or float64, not int32"),
    (lambda s, t: SoftmaxState(np.zeros((3, 1)), np.zeros((3, 1)), None, np.float32), TypeError,
     "SoftmaxState: dim is required (an int or a tuple of ints)"),
])
def test_state_errors_say_what_is_wrong(call, error, message):
    s = SoftmaxState.of(np.ones((3, 5)), 1)
    t = SoftmaxState.of(np.ones((3, 1)), 0)
    with pytest.raises(error, match="^" + re.escape(message)):
        call(s, t)


def test_the_docstring_examples_give_what_they_show():
    import doctest
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    examples = 0
    for name in ("logsumexp", "SoftmaxState"):
        for test in finder.find(getattr(csoftmax, name), name, globs={}):
            examples += len(test.examples)
            runner.run(test)
    assert examples >= 6
    assert runner.failures == 0, f"{runner.failures} docstring examples differ (run with -s to see them)"
