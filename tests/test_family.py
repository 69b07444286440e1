"""The softmax family against independent NumPy references (long double or float64, written out in the tests):
log_softmax, softmin, the classes, out=, where=, tuple dims and the backward functions. These run without torch;
the same functions against torch itself are in test_torch_compat.py."""
import pickle
import re
import warnings

import numpy as np
import pytest

import csoftmax

from _helpers import assert_softmax_close, reference_log_softmax, reference_softmax, with_forward_override

RNG = np.random.default_rng(2025)
SHAPES = [(7,), (5, 9), (3, 4, 5), (2, 3, 4, 5), (4, 1, 6), (3, 70)]
DTYPES = [np.float16, np.float32, np.float64]
TOL = {np.float16: dict(rtol=2e-3, atol=1e-4), np.float32: dict(rtol=2e-5, atol=1e-6),
       np.float64: dict(rtol=1e-12, atol=1e-14)}


def _reference(fn, x, dim):
    """The family function fn of x along dim in a wide type, unrounded (independent of csoftmax)."""
    if fn == "log_softmax":
        return reference_log_softmax(x, dim)
    return reference_softmax(-np.array(x) if fn == "softmin" else x, dim)


# The README's promises in ulps of the correctly rounded result: log_softmax within 4 (float32 and float64),
# softmax and softmin within the accuracy suite's bound. float16 is computed in float32 and rounded to nearest once:
# checked by assert_rounded_to_nearest instead.
FAMILY_ULPS = {"log_softmax": {np.float32: 4.0, np.float64: 4.0}, "softmin": {np.float32: 64.0, np.float64: 64.0}}


def assert_rounded_to_nearest(got, ref, slack, what):
    """Each float16 entry of got is ref rounded to nearest: ref lies between the midpoints to got's neighbours,
    give or take slack * |ref| (the float32 computation's own error). NaN exactly where ref is NaN."""
    assert got.dtype == np.float16 and got.shape == ref.shape, what
    assert np.array_equal(np.isnan(got), np.isnan(ref)), f"{what}: NaN pattern"
    g, r = got.astype(np.float64), ref.astype(np.float64)
    keep = ~np.isnan(r)
    g, r, got = g[keep], r[keep], got[keep]
    below = np.nextafter(got, np.float16(-np.inf)).astype(np.float64)
    above = np.nextafter(got, np.float16(np.inf)).astype(np.float64)
    room = slack * np.abs(r) + 2.0 ** -40
    with np.errstate(invalid="ignore"):
        low, high = np.where(np.isinf(g), g, (g + below) / 2), np.where(np.isinf(g), g, (g + above) / 2)
    bad = ~((r >= low - room) & (r <= high + room))
    assert not bad.any(), f"{what}: not rounded to nearest: got {got[bad][:3]}, reference {r[bad][:3]}"


@pytest.mark.parametrize("fn", ["log_softmax", "softmin"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_family_matches_a_wide_reference_on_every_dim_and_layout(kernel_set, fn, dtype, shape):
    x = (RNG.standard_normal(shape) * 5).astype(dtype)
    for layout in ("C", "F", "reversed"):
        view = {"C": x, "F": np.asfortranarray(x), "reversed": x[::-1]}[layout]
        for dim in range(-x.ndim, x.ndim):
            got, ref, what = getattr(csoftmax, fn)(view, dim), _reference(fn, view, dim), f"{fn} {layout} dim={dim}"
            if dtype == np.float16:
                assert_rounded_to_nearest(got, ref, 64 * 2.0 ** -24, what)
            else:
                assert_softmax_close(got, ref, dtype, ulps=FAMILY_ULPS[fn][dtype], what=what)


def test_log_softmax_keeps_the_top_entry_exact_where_peers_lose_it(kernel_set):
    y = csoftmax.log_softmax(np.array([0.0, -30.0]), 0)
    exact = -np.log1p(np.exp(np.longdouble(-30)))
    assert abs(np.longdouble(y[0]) - exact) <= 2 * np.spacing(abs(y[0]))
    # log(sum) loses it: the point of the formulation (torch and SciPy are ~1e-14 off here)
    naive = -np.log(np.sum(np.exp(np.array([0.0, -30.0]))))
    assert abs(np.longdouble(naive) - exact) > 100 * np.spacing(abs(y[0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_log_softmax_is_within_4_ulp_of_a_long_double_reference(kernel_set, dtype):
    for shape, dim, scale in [((50, 37), 1, 1), ((50, 37), 0, 8), ((3, 70000), 1, 3), ((4, 3000), 0, 40)]:
        x = (RNG.standard_normal(shape) * scale).astype(dtype)
        got = csoftmax.log_softmax(x, dim).astype(np.longdouble)
        ref = reference_log_softmax(x, dim)
        ulp = np.spacing(np.abs(ref).astype(dtype)).astype(np.longdouble)
        assert np.max(np.abs(got - ref) / ulp) <= 4, (shape, dim, scale)


@pytest.mark.parametrize("values,expected", [
    ([1.0, np.nan, 2.0], [np.nan] * 3), ([1.0, np.inf], [np.nan] * 2), ([-np.inf, -np.inf], [np.nan] * 2),
    ([5.0, -np.inf], [0.0, -np.inf]), ([3.0, 3.0, 3.0], [-np.log(3.0)] * 3)])
def test_log_softmax_special_values_follow_torchs_rules(values, expected):
    got = csoftmax.log_softmax(np.array(values), 0)
    np.testing.assert_allclose(got, expected, rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_log_softmax_of_values_just_above_half_the_largest_next_to_it_is_finite(kernel_set, dtype):
    # x - m rounds to d with d - x beyond the largest float: the exact-difference step (2Sum) overflowed into NaN
    # (found by the fuzzer). The answer is x - m itself; torch agrees to the last bits.
    big = np.finfo(dtype).max
    rng = np.random.default_rng(3)
    with np.errstate(over="ignore"):
        candidates = rng.uniform(float(big) * 0.45, float(big) * 0.55, 20000).astype(dtype)
        xs = [v for v in candidates if np.isinf((v - big) - v)][:20]
    assert xs
    for v in xs:
        row = np.array([big, v, 1.0, v / 2], dtype)
        want = (row.astype(np.longdouble) - np.longdouble(big)).astype(dtype)
        want[0] = 0.0
        for what, got in (("row", csoftmax.log_softmax(row, 0)),
                          ("lanes", csoftmax.log_softmax(np.ascontiguousarray(np.tile(row[:, None], (1, 5))), 0)[:, 3]),
                          ("general", csoftmax.log_softmax(row.astype(row.dtype.newbyteorder("S")), 0))):
            np.testing.assert_array_equal(got, want, err_msg=f"{what}: {row}")


def test_log_softmax_is_bit_identical_across_layouts(kernel_set):
    x = (RNG.standard_normal((40, 300)) * 7).astype(np.float32)
    ref = csoftmax.log_softmax(x, 1)
    for view in (np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2], x.astype(">f4")):
        assert np.array_equal(csoftmax.log_softmax(view, 1).view(np.uint32), ref.view(np.uint32))


def test_softmin_is_softmax_of_the_negation_bit_for_bit(kernel_set):
    x = (RNG.standard_normal((30, 50)) * 3).astype(np.float32)
    for dim in (0, 1):
        assert np.array_equal(csoftmax.softmin(x, dim).view(np.uint32), csoftmax.softmax(-x, dim).view(np.uint32))


@pytest.mark.parametrize("name", ["log_softmax", "softmin"])
def test_family_implicit_dim_warns_once_and_points_at_the_caller(name):
    x = np.ones((2, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = getattr(csoftmax, name)(x)
        line = __import__("inspect").currentframe().f_lineno - 1
    assert len(caught) == 1 and caught[0].category is UserWarning
    assert f"Implicit dimension choice for {name} has been deprecated" in str(caught[0].message)
    assert caught[0].filename == __file__ and caught[0].lineno == line
    np.testing.assert_array_equal(y, getattr(csoftmax, name)(x, 1))     # torch's implicit dim of a 2-d input


@pytest.mark.parametrize("cls,torch_cls", [("LogSoftmax", "LogSoftmax"), ("Softmin", "Softmin"), ("Softmax", "Softmax")])
def test_family_classes_behave_like_torch_modules(cls, torch_cls):
    x = RNG.standard_normal((3, 4))
    module = getattr(csoftmax, cls)(dim=1)
    assert repr(module) == f"{torch_cls}(dim=1)"
    expected = _reference({"LogSoftmax": "log_softmax", "Softmin": "softmin", "Softmax": "softmax"}[cls], x, 1)
    np.testing.assert_allclose(module(x), expected, rtol=1e-12)
    np.testing.assert_allclose(module.forward(x), expected, rtol=1e-12)
    clone = pickle.loads(pickle.dumps(module))
    assert clone.dim == 1
    np.testing.assert_allclose(clone(x), expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax", "Softmin", "Softmax2d"])
def test_calling_a_subclass_runs_its_forward_override_as_torch_does(name):
    x = RNG.standard_normal((2, 3, 4))
    args = () if name == "Softmax2d" else (1,)
    ours = with_forward_override(getattr(csoftmax, name))(*args)
    fn = {"Softmax": "softmax", "LogSoftmax": "log_softmax", "Softmin": "softmin", "Softmax2d": "softmax"}[name]
    expected = 2 * _reference(fn, x, 1 if name != "Softmax2d" else -3).astype(np.float64) + 1
    np.testing.assert_allclose(ours(x), expected, rtol=1e-12)
    np.testing.assert_allclose(ours.forward(x), expected, rtol=1e-12)


def test_softmax2d_normalises_channels_and_rejects_other_ranks():
    x = RNG.standard_normal((2, 3, 4, 5))
    np.testing.assert_allclose(csoftmax.Softmax2d()(x), _reference("softmax", x, 1), rtol=1e-13)
    np.testing.assert_allclose(csoftmax.Softmax2d()(x[0]), _reference("softmax", x[0], 0), rtol=1e-13)
    for bad in (x[0, 0], x[0, 0, 0], x[None]):
        with pytest.raises(ValueError, match=f"Softmax2d: expected input to be 3D or 4D, got {bad.ndim}D instead"):
            csoftmax.Softmax2d()(bad)


# ---------------------------------------------------------------------------------------------------- out=

@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_out_receives_the_result_in_any_strides_and_is_returned(name):
    x = RNG.standard_normal((6, 7)).astype(np.float32)
    expected = getattr(csoftmax, name)(x, 1)
    for out in (np.empty((6, 7), np.float32), np.empty((7, 6), np.float32).T, np.empty((6, 14), np.float32)[:, ::2],
                np.empty((6, 7), ">f4")):
        result = getattr(csoftmax, name)(x, 1, out=out)
        assert result is out
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_out_may_be_the_input_itself_or_overlap_it(name):
    x = RNG.standard_normal((6, 8))
    expected = getattr(csoftmax, name)(x, 0)
    y = x.copy()
    assert getattr(csoftmax, name)(y, 0, out=y) is y
    np.testing.assert_array_equal(y, expected)
    # out shifted by one column over the same buffer
    buf = np.zeros((6, 9))
    buf[:, :8] = x
    src, dst = buf[:, :8], buf[:, 1:]
    getattr(csoftmax, name)(src, 0, out=dst)
    np.testing.assert_array_equal(dst, expected)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_next_to_or_one_element_into_the_input_gets_a_fresh_calls_values(name, dtype):
    # out= goes straight to the kernel only when its memory lies clear of the input's (the fast path compares
    # the bounds of both): arrays that touch, or share just their first or last element, must still come out as
    # a call into a fresh array gives
    fn = getattr(csoftmax, name)
    n = 12
    for gap in (0, -1, 1):
        for x_reversed in (False, True):
            for out_reversed in (False, True):
                buf = np.zeros(2 * n + 2, dtype)
                x = buf[1:n + 1]
                x[:] = RNG.standard_normal(n)
                out = buf[n + 1 + gap:2 * n + 1 + gap]
                if x_reversed:
                    x = x[::-1]
                if out_reversed:
                    out = out[::-1]
                expected = fn(x.copy(), 0)
                assert fn(x, 0, out=out) is out
                np.testing.assert_array_equal(out, expected, err_msg=f"gap {gap}, reversed {x_reversed}, {out_reversed}")
    # an ndarray subclass as out: the result lands in it too
    class Tagged(np.ndarray):
        pass
    x = RNG.standard_normal((3, 5)).astype(dtype)
    out = np.zeros((3, 5), dtype).view(Tagged)
    assert fn(x, 1, out=out) is out
    np.testing.assert_array_equal(np.asarray(out), fn(x, 1))


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin", "softmax_backward", "log_softmax_backward"])
def test_out_whose_elements_share_memory_is_refused_and_left_alone(name):
    # an out= whose elements overlap one another (a writeable zero-stride or as_strided view) cannot hold the
    # result: torch refuses such a tensor, so does csoftmax, before writing anything
    from numpy.lib.stride_tricks import as_strided
    fn = getattr(csoftmax, name)
    args = (RNG.standard_normal((30, 8)),) * (2 if "backward" in name else 1)
    buf = np.full(400, 7.0)
    for out, dim in ((as_strided(buf, (30, 8), (0, 8)), 0), (as_strided(buf, (30, 8), (8, 0)), 1),
                     (as_strided(buf, (30, 8), (16, 8)), 1), (as_strided(buf, (30, 8), (8, 24)), 0)):
        with pytest.raises(ValueError, match="share memory"):
            fn(*args, dim, out=out)
        assert np.all(buf == 7.0)
    # strides that do not nest but never collide are accepted: elements at 0, 16, 24, 40 bytes
    out = as_strided(buf, (2, 2), (24, 16))
    x = RNG.standard_normal((2, 2))
    inputs = (x, x) if "backward" in name else (x,)
    assert fn(*inputs, 1, out=out) is out
    np.testing.assert_array_equal(out, fn(*inputs, 1))


def test_out_of_wrong_shape_or_dtype_is_refused_before_anything_is_written():
    x = RNG.standard_normal((4, 5)).astype(np.float32)
    for out, error in ((np.full((5, 4), 7.0, np.float32), ValueError), (np.full((4, 5), 7.0), TypeError),
                       (np.full((4,), 7.0, np.float32), ValueError)):
        with pytest.raises(error):
            csoftmax.softmax(x, 1, out=out)
        assert np.all(out == 7.0)
    with pytest.raises(TypeError):
        csoftmax.softmax(x, 1, out=[0.0] * 20)


# ---------------------------------------------------------------------------------------------------- where=

def test_where_masks_entries_out_and_fully_masked_rows_are_zero_not_nan():
    x = RNG.standard_normal((4, 6))
    mask = np.ones((4, 6), bool)
    mask[0] = False
    mask[1, ::2] = False
    y = csoftmax.softmax(x, 1, where=mask)
    assert np.all(y[0] == 0)
    assert np.all(y[1, ::2] == 0)
    np.testing.assert_allclose(y[1, 1::2], csoftmax.softmax(x[1, 1::2], 0), rtol=1e-14)
    np.testing.assert_allclose(y[2:], csoftmax.softmax(x[2:], 1), rtol=1e-14)
    log = csoftmax.log_softmax(x, 1, where=mask)
    assert np.all(np.isneginf(log[0])) and np.all(np.isneginf(log[1, ::2]))
    np.testing.assert_allclose(log[1, 1::2], csoftmax.log_softmax(x[1, 1::2], 0), rtol=1e-14)


def test_where_broadcasts_and_a_masked_nan_takes_no_part():
    x = RNG.standard_normal((3, 5))
    x[:, 0] = np.nan
    column_mask = np.array([False, True, True, True, True])
    y = csoftmax.softmax(x, 1, where=column_mask)
    assert not np.isnan(y).any()
    np.testing.assert_allclose(y[:, 1:].sum(1), 1, rtol=1e-14)
    with pytest.raises(ValueError):
        csoftmax.softmax(x, 1, where=np.ones(4, bool))
    with pytest.raises(TypeError):
        csoftmax.softmax(x, 1, where=np.ones(5))


# ---------------------------------------------------------------------------------------------------- tuple dims

def test_tuple_dim_normalises_jointly_like_scipy():
    scipy_special = pytest.importorskip("scipy.special")
    x = RNG.standard_normal((3, 4, 5))
    for dims in ((0, 2), (1, 2), (-1, 0), (0, 1, 2)):
        np.testing.assert_allclose(csoftmax.softmax(x, dims), scipy_special.softmax(x, axis=dims), rtol=1e-13)
        np.testing.assert_allclose(csoftmax.log_softmax(x, dims), scipy_special.log_softmax(x, axis=dims),
                                   rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(csoftmax.softmax(x, (1,)), csoftmax.softmax(x, 1))


def test_tuple_dim_with_duplicates_or_out_of_range_is_an_axis_error():
    from numpy.exceptions import AxisError
    x = np.ones((3, 4))
    for dims in ((0, 0), (1, -1), (0, 2), (-3,), ()):
        with pytest.raises(AxisError):
            csoftmax.softmax(x, dims)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_tuple_dims_on_0d_input_follow_the_int_rules(name):
    # 0 and -1 both name a 0-d array's one "dimension" (as int dims they give torch's result for 0-d input)
    from numpy.exceptions import AxisError
    fn = getattr(csoftmax, name)
    x = np.array(0.5)
    expected = np.array(0.0 if name == "log_softmax" else 1.0)     # the one entry is the whole row
    for dims in ((0,), (-1,)):
        np.testing.assert_array_equal(fn(x, dims), expected)
    with pytest.raises(AxisError) as one_d:
        fn(np.ones(2), (0, -1))
    for dims in ((0, -1), (-1, 0)):
        with pytest.raises(AxisError) as zero_d:
            fn(x, dims)
        assert str(zero_d.value) == str(one_d.value).replace("(0, -1)", str(dims))
    with pytest.raises(AxisError, match=re.escape("[-1, 0], but got 1")):
        fn(x, (0, 1))


# ---------------------------------------------------------------------------------------------------- backward

def _backward_reference(log, g, y, axes):
    """long double gradient, and an elementwise error scale: the size of the terms the result is made of, the sum
    counted by its absolute terms (the sum's own rounding is relative to those)."""
    g, y = g.astype(np.longdouble), y.astype(np.longdouble)
    if log:
        e = np.exp(y)
        return g - e * g.sum(axis=axes, keepdims=True), np.abs(g) + e * np.abs(g).sum(axis=axes, keepdims=True)
    s = (g * y).sum(axis=axes, keepdims=True)
    return y * (g - s), np.abs(y) * (np.abs(g) + np.abs(g * y).sum(axis=axes, keepdims=True))


def _layouts(a):
    """The same values in several memory layouts: C, F, a transposed copy seen back, reversed, every other row."""
    yield "C", np.ascontiguousarray(a)
    yield "F", np.asfortranarray(a)
    yield "reversed", np.ascontiguousarray(a[::-1])[::-1]
    if a.ndim >= 2:
        yield "transposed", np.ascontiguousarray(np.swapaxes(a, 0, -1)).swapaxes(0, -1)
        wide = np.zeros((a.shape[0] * 2,) + a.shape[1:], a.dtype)
        wide[::2] = a
        yield "strided", wide[::2]


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(3, 5), (7, 1100), (1500, 3), (4, 40, 33), (2, 2500), (9,)])
def test_backward_on_every_layout_and_kernel_set_against_float64(kernel_set, log, dtype, shape):
    name = "log_softmax" if log else "softmax"
    back = csoftmax.log_softmax_backward if log else csoftmax.softmax_backward
    x = (RNG.standard_normal(shape) * 3).astype(dtype)
    g = RNG.standard_normal(shape).astype(dtype)
    eps = {np.float16: 2.0 ** -10, np.float32: 2.0 ** -23, np.float64: 2.0 ** -52}[dtype]
    tiny = float(np.finfo(dtype).smallest_subnormal)      # the absolute rounding floor of the result's dtype
    for dim in list(range(len(shape))) + ([(0, len(shape) - 1)] if len(shape) > 2 else []):
        y = getattr(csoftmax, name)(x, dim)
        axes = dim if isinstance(dim, tuple) else (dim,)
        want, scale = _backward_reference(log, g, y, axes)
        # float16/float32 sums are formed in float64; a float64 sum of n terms carries rounding errors that grow
        # like a random walk, sqrt(n) eps sum |terms| (seen: 8.06 eps on an axis of 1500; the worst case, (n - 1)
        # eps, would leave long axes hardly tested)
        n = int(np.prod([shape[a] for a in axes]))
        ulps = 8 + (2 * np.sqrt(n) if dtype == np.float64 else 0)
        for (ly, yl), (lg, gl) in zip(_layouts(y), list(_layouts(g))[::-1]):   # g in another layout than y
            got = back(gl, yl, dim)
            assert got.dtype == dtype and got.shape == shape
            err = np.abs(got.astype(np.longdouble) - want)
            bad = err > ulps * eps * scale + tiny
            assert not bad.any(), (dim, ly, lg, np.argwhere(bad)[:3], err[bad][:3], scale[bad][:3])
            assert np.array_equal(yl, y) and np.array_equal(gl, g)      # inputs untouched


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_backward_out_and_dtype_rules(log):
    back = csoftmax.log_softmax_backward if log else csoftmax.softmax_backward
    x = RNG.standard_normal((6, 8))
    y = csoftmax.log_softmax(x, 1) if log else csoftmax.softmax(x, 1)
    g = RNG.standard_normal((6, 8))
    want = back(g, y, 1)
    out = np.full((8, 6), np.nan).T                      # an F-ordered out
    assert back(g, y, 1, out=out) is out
    np.testing.assert_array_equal(out, want)
    g_copy = g.copy()
    assert back(g_copy, y, 1, out=g_copy) is g_copy      # in place over the gradient
    np.testing.assert_array_equal(g_copy, want)
    np.testing.assert_array_equal(back(g.astype(np.float32), y, 1), want.astype(np.float32) * 0 + back(
        g.astype(np.float32).astype(np.float64), y, 1))   # grad is cast to output's dtype first
    ints = np.arange(48).reshape(6, 8) % 3
    np.testing.assert_array_equal(back(ints, y, 1), back(ints.astype(np.float64), y, 1))
    with pytest.raises(TypeError):
        back(g, y, 1, out=np.empty((6, 8), np.float32))
    with pytest.raises(ValueError):
        back(g, y, 1, out=np.empty((6, 9)))
    with pytest.raises(TypeError):
        back(g.astype(complex), y, 1)
    with pytest.raises(TypeError):
        back(g, y.astype(int), 1)


def test_log_softmax_backward_takes_any_output_values():
    """exp(output) is exact for outputs that are not log-probabilities too (positive, NaN, -inf)."""
    y = np.array([[-np.inf, -1.0, 0.0, 0.5, 3.0, 80.0, np.nan, -700.0, -30.0]] * 3)
    g = np.array([[1.0, 2.0, -1.0, 0.5, 0.25, 1e-30, 0.0, 1.0, 2.0]] * 3)
    got = csoftmax.log_softmax_backward(g, y, 1)
    with np.errstate(invalid="ignore"):
        want = g - np.exp(y) * g.sum(1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize("dim", [0, -1])
def test_backward_of_a_0d_array_is_0d_like_torchs(dim):
    # a 0-d output is its whole row: softmax gives 1 and log_softmax 0, and every gradient through them is 0
    for log, back in ((False, csoftmax.softmax_backward), (True, csoftmax.log_softmax_backward)):
        y = np.array(0.0 if log else 1.0)
        want, _ = _backward_reference(log, np.array(3.0), y, None)
        got = back(np.array(3.0), y, dim)
        assert got.shape == () and got.dtype == np.float64 and got == want == 0
        out = np.full((), 7.0)
        assert back(np.array(3.0), y, dim, out=out) is out and out == 0


def test_backward_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        csoftmax.softmax_backward(np.ones((2, 3)), np.ones((3, 2)), 0)


def test_a_masked_arrays_mask_works_as_where():
    data = RNG.standard_normal((3, 4))
    hidden = np.zeros((3, 4), bool)
    hidden[0, 1] = hidden[2] = True
    got = csoftmax.softmax(np.ma.masked_array(data, mask=hidden), 1)
    np.testing.assert_array_equal(got, csoftmax.softmax(data, 1, where=~hidden))
    assert type(got) is np.ndarray and got[0, 1] == 0 and np.all(got[2] == 0)


def _rows_over_shown(x, shown):
    """float64 softmax of each row of 2-d x over its shown entries (0 elsewhere), written out in NumPy."""
    e = np.where(shown, np.exp(x - np.max(np.where(shown, x, -np.inf), axis=1, keepdims=True)), 0.0)
    return e / e.sum(axis=1, keepdims=True)


def test_a_masked_where_counts_its_masked_entries_as_false():
    x = RNG.standard_normal((3, 5))
    given = np.ones((3, 5), bool)
    given[0, 0] = False
    unknown = np.zeros((3, 5), bool)
    unknown[0, 1] = unknown[1, :2] = unknown[2, 4] = True     # masked entries of where=: not known to take part
    where = np.ma.masked_array(given, mask=unknown)
    shown = given & ~unknown
    np.testing.assert_allclose(csoftmax.softmax(x, 1, where=where), _rows_over_shown(x, shown), rtol=1e-14)
    with np.errstate(divide="ignore"):
        log_p = np.log(_rows_over_shown(x, shown))              # (-inf where not shown)
    np.testing.assert_array_equal(csoftmax.log_softmax(x, 1, where=where) == -np.inf, ~shown)
    np.testing.assert_allclose(csoftmax.log_softmax(x, 1, where=where)[shown], log_p[shown], rtol=1e-13)


@pytest.mark.parametrize("log", [False, True])
def test_masked_gradients_and_outputs_take_no_part_in_the_backward_functions(log):
    # the gradient of the forward call with where=shown: masked entries get 0 and add nothing to the row sums,
    # whatever values lie under the mask
    x = RNG.standard_normal((3, 6))
    g = RNG.standard_normal((3, 6))
    hidden_g = np.zeros((3, 6), bool)
    hidden_y = np.zeros((3, 6), bool)
    hidden_g[0, 1] = hidden_g[2, 3] = True
    hidden_y[1, 0] = hidden_y[2, 5] = True
    shown = ~(hidden_g | hidden_y)
    p = _rows_over_shown(x, shown)
    gs = np.where(shown, g, 0.0)
    if log:
        expected = np.where(shown, gs - p * gs.sum(axis=1, keepdims=True), 0.0)
        with np.errstate(divide="ignore"):
            y = np.log(p)
    else:
        expected = p * (gs - (gs * p).sum(axis=1, keepdims=True))
        y = p.copy()
    grad = np.ma.masked_array(np.where(hidden_g, 1e300, g), mask=hidden_g)      # garbage under the masks
    output = np.ma.masked_array(np.where(hidden_y, np.nan, y), mask=hidden_y)
    backward = csoftmax.log_softmax_backward if log else csoftmax.softmax_backward
    got = backward(grad, output, 1)
    assert type(got) is np.ndarray and np.all(got[~shown] == 0)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_a_ragged_list_is_a_value_error_that_says_what_to_pass():
    with pytest.raises(ValueError, match="rectangular"):
        csoftmax.log_softmax([[1.0, 2.0], [3.0]], 0)


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
def test_backward_functions_require_a_dim_as_torch_does(name):
    # (torch's aten::_softmax_backward_data declares dim as int, with no default and no None)
    y = csoftmax.softmax(np.ones((2, 3)), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # not the forward's implicit-dim warning: an error
        with pytest.raises(TypeError, match=re.escape(f"{name}(): dim is required")):
            getattr(csoftmax, name)(np.ones((2, 3)), y, None)


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
def test_a_ragged_list_to_a_backward_function_gets_the_forwards_message(name):
    ragged = [[1.0, 2.0], [3.0]]
    with pytest.raises(ValueError) as forward:
        csoftmax.softmax(ragged, 0)
    expected = str(forward.value).replace("softmax()", f"{name}()")
    for grad, output in ((ragged, np.ones((2, 2))), (np.ones((2, 2)), ragged)):
        with pytest.raises(ValueError) as backward:
            getattr(csoftmax, name)(grad, output, 0)
        assert str(backward.value) == expected


class _BrokenArray:
    """An array-like whose conversion fails for its own reason, in words that mention a sequence."""

    def __array__(self, dtype=None, copy=None):
        raise ValueError("sequence number 7 of the device buffer is stale")


@pytest.mark.parametrize("call", [lambda a: csoftmax.softmax(a, 0), lambda a: csoftmax.log_softmax(a, 0),
                                  lambda a: csoftmax.softmax_backward(a, np.ones(2), 0)])
def test_an_array_like_whose_conversion_fails_keeps_its_own_error(call):
    with pytest.raises(ValueError, match="^sequence number 7 of the device buffer is stale$"):
        call(_BrokenArray())


def test_the_docstring_examples_give_what_they_show():
    import doctest
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    names = ["softmax", "log_softmax", "softmin", "softmax_backward", "log_softmax_backward", "Softmax",
             "LogSoftmax", "Softmin", "Softmax2d"]
    examples = 0
    for name in names:
        for test in finder.find(getattr(csoftmax, name), name, globs={}):
            examples += len(test.examples)
            runner.run(test)
    assert examples >= 10
    assert runner.failures == 0, f"{runner.failures} docstring examples differ (run with -s to see them)"
