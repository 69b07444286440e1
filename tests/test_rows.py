"""The engine's row state (csoftmax._rows, CSM_LOGSUMEXP and the output pass against a given state): on every path
(short rows, rows in cache, float16 rows, long runs, interleaved lanes, streamed lanes, pieces), every layout and
every kernel set, against an extended-precision reference; the same bits whatever the layout and thread count."""
import numpy as np
import pytest

import csoftmax
from csoftmax import _rows

from _helpers import LAYOUTS, make_layout, reference_log_softmax, reference_softmax

# (shape, axis): short rows, rows in cache, float16 rows the kernel reads itself, runs longer than the cache,
# interleaved lanes along a contiguous axis, streamed lanes, a lone row, 4-d with the axis inside; short rows and
# rows in cache past the 64 rows whose states wait for one log S call (kernels.inc's state_rows)
PATH_CASES = [((50, 5), 1), ((21, 100), 1), ((9, 600), 1), ((2, 20000), 1), ((3, 700, 4), 1), ((300, 40), 0),
              ((37,), 0), ((2, 3, 5, 7), 2), ((203, 11), 1), ((131, 19), 1)]


def reference_parts(x, axis):
    """(m, l) in long double: l = log1p of the sum of exp(x - m) over every entry but one maximum."""
    w = np.moveaxis(np.array(x).astype(np.longdouble), axis, -1)
    with np.errstate(all="ignore"):
        m = np.max(w, axis=-1, initial=-np.inf)
        top = np.argmax(w, axis=-1)[..., None]
        e = np.exp(w - m[..., None])
        np.put_along_axis(e, top, 0, axis=-1)
        l = np.log1p(np.sum(e, axis=-1))
        l = np.where(np.isfinite(m), l, np.nan)
    return m, l


def assert_parts_close(x, axis, m, l, what=""):
    m_ref, l_ref = reference_parts(x, axis)
    assert np.array_equal(m, m_ref.astype(np.float64), equal_nan=True), what
    assert np.array_equal(np.isnan(l), np.isnan(l_ref)), what
    # log S to the compute type's precision: 2 ulp of the exact value (float16 rows compute in float32)
    unit = np.finfo(np.float64 if np.dtype(x.dtype).itemsize == 8 else np.float32).eps
    ok = ~np.isnan(l_ref)
    err = np.abs(l[ok] - l_ref[ok].astype(np.float64)) / np.maximum(np.abs(l_ref[ok].astype(np.float64)), 1e-300)
    assert err.size == 0 or err.max() <= 2 * unit, f"{what}: {err.max() / unit} ulp"


def values(rng, dtype, shape):
    x = rng.standard_normal(shape) * 6
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, max(1, flat.size // 50))] = -np.inf
    return x.astype(dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_state_on_every_path_and_kernel_set_matches_reference_with_the_bits_of_c_order(kernel_set, layout, rng):
    for dtype in (np.float16, np.float32, np.float64):
        for shape, axis in PATH_CASES:
            base = values(rng, dtype, shape)
            x = make_layout(base, layout)
            m, l = _rows.row_parts(x, axis)
            what = f"{kernel_set} {layout} {np.dtype(dtype).name} {shape} axis={axis}"
            assert_parts_close(x, axis, m, l, what)
            m_c, l_c = _rows.row_parts(np.ascontiguousarray(x), axis)
            assert np.array_equal(m, m_c, equal_nan=True) and np.array_equal(l, l_c, equal_nan=True), what


def test_short_row_states_of_every_length_and_group_count_match_the_rows_path(kernel_set, rng):
    """Rows of 1-16 float32 entries go to the short-rows kernels (groups of 8 or 16 rows, two groups at a time, the
    rows left over by the rows kernel); reversed, the rows go element by element. Both give the same bits."""
    for n in range(1, 17):
        for rows in (1, 15, 16, 17, 33, 50, 97):
            for width in (n, n + 3):                     # packed rows, and rows further apart than their length
                x = values(rng, np.float32, (rows, width))[:, :n]
                m, l = _rows.row_parts(x, 1)
                what = f"{kernel_set} n={n} rows={rows} width={width}"
                assert_parts_close(x, 1, m, l, what)
                m_r, l_r = _rows.row_parts(x[::-1], 1)
                assert np.array_equal(m, m_r[::-1], equal_nan=True), what
                assert np.array_equal(l, l_r[::-1], equal_nan=True), what


def test_state_of_special_rows(kernel_set):
    rows = [[0, -60, -np.inf], [np.inf, 1, 2], [-np.inf] * 3, [np.nan, 1, np.inf], [3, 3, 3], [-np.inf, 5, -np.inf]]
    for dtype in (np.float16, np.float32, np.float64):
        x = np.array(rows, dtype)
        for t in (x, np.asfortranarray(x), np.repeat(x, 9, axis=0)):
            m, l = _rows.row_parts(t, 1)
            assert_parts_close(t, 1, m, l, f"{kernel_set} {np.dtype(dtype).name}")
        m, l = _rows.row_parts(x, 1)
        assert l[0] > 0 and abs(l[0] / np.exp(-60.0) - 1) < 1e-6     # the top entry keeps its relative accuracy
        assert np.array_equal(m[1:4], [np.inf, -np.inf, np.nan], equal_nan=True) and np.isnan(l[1:4]).all()
        assert abs(l[4] - np.log(3)) < 1e-15                               # log S in float64 for every dtype
        assert m[5] == 5 and l[5] == 0


def test_masked_state_is_the_state_of_the_unmasked_entries(kernel_set, rng):
    for dtype in (np.float16, np.float32, np.float64):
        for shape, axis in PATH_CASES:
            x = values(rng, dtype, shape)
            mask = rng.random(shape) < 0.6
            np.moveaxis(mask, axis, -1)[..., 0] = False
            if mask.ndim > 1:
                np.moveaxis(mask, axis, -1)[0] = False              # a row with nothing in it
            m, l = _rows.row_parts(x, axis, mask)
            m_ref, l_ref = _rows.row_parts(np.where(mask, x, -np.inf).astype(dtype), axis)
            assert np.array_equal(m, m_ref, equal_nan=True) and np.array_equal(l, l_ref, equal_nan=True)
    x = np.arange(6.0).reshape(2, 3)
    m, l = _rows.row_parts(x, 1, np.array([[False] * 3, [True, False, True]]))
    assert m[0] == -np.inf and np.isnan(l[0]) and m[1] == 5 and abs(l[1] - np.log1p(np.exp(-2.0))) < 1e-15


def test_state_does_not_depend_on_the_thread_count(rng):
    before = csoftmax.get_num_threads()
    try:
        for x, axis in [(values(rng, np.float32, (3, 1_200_000)), 1), (values(rng, np.float64, (600, 3000)), 0),
                        (values(rng, np.float32, (40, 70000)), 1)]:
            states = []
            for n in (1, 2, 3):
                csoftmax.set_num_threads(n)
                states.append(np.stack(_rows.row_parts(x, axis)))
            assert all(np.array_equal(s, states[0], equal_nan=True) for s in states)
            assert_parts_close(x, axis, *states[0])
    finally:
        csoftmax.set_num_threads(before)


@pytest.mark.parametrize("layout", ["C", "F", "strided", "byteswapped", "misaligned"])
def test_apply_is_at_least_as_exact_as_the_one_shot_functions(kernel_set, layout, rng):
    """Against a long-double reference: each entry's error at most the one-shot function's plus two ulp (the
    state's log S is float64 where the one-shot float32 log_softmax's is float32; softmax's 1/S is exp(-log S),
    rounded separately), the largest error at most one ulp above the one-shot's, the same special values."""
    for dtype in (np.float16, np.float32, np.float64):
        for shape, axis in PATH_CASES + [((2, 1_100_000), 1)] * (dtype == np.float32):
            x = make_layout(values(rng, dtype, shape), layout)
            m, l = _rows.row_parts(x, axis)
            for log, one_shot in ((False, csoftmax.softmax), (True, csoftmax.log_softmax)):
                out = _rows.apply(x, axis, m, l, log, np.empty(x.shape, dtype))
                ref = one_shot(x, dim=axis)
                special = ~np.isfinite(ref)
                assert np.array_equal(out[special], ref[special], equal_nan=True)
                exact = (reference_log_softmax(x, axis) if log else reference_softmax(x, axis))[~special]
                spacing = np.spacing(np.abs(ref[~special])).astype(np.longdouble)
                err_out = np.abs(out[~special].astype(np.longdouble) - exact) / spacing
                err_ref = np.abs(ref[~special].astype(np.longdouble) - exact) / spacing
                what = f"{kernel_set} {np.dtype(dtype).name} {shape} log={log}"
                # float64 softmax: exp(-log S) carries log S's own rounding, up to log S ulp (within the bound)
                slack = 2 * np.nanmax(l, initial=0) if dtype == np.float64 and not log else 0
                if err_out.size:
                    assert (err_out - err_ref).max() <= 2 + slack + 1e-6, what
                    assert err_out.max() <= max(err_ref.max() + 1 + slack, 1) + 1e-6, what


def test_apply_writes_nan_in_rows_without_a_finite_maximum_and_into_any_float_type(rng):
    x = values(rng, np.float32, (4, 30))
    m, l = _rows.row_parts(x, 1)
    m[1], l[1] = -np.inf, np.nan
    # a float32 state holds log S to float32's precision: exp(-log S) carries its rounding times log S
    exact = reference_softmax(x, 1)[[0, 2, 3]]             # (a float32 state: float32's precision for every out)
    for dtype in (np.float16, np.float32, np.float64):
        out = _rows.apply(x, 1, m, l, False, np.empty(x.shape, dtype))
        assert np.isnan(out[1]).all() and not np.isnan(out[[0, 2, 3]]).any()
        np.testing.assert_allclose(out[[0, 2, 3]], exact.astype(np.float64), rtol=40 * np.finfo(np.float16 if dtype == np.float16 else np.float32).eps,
                                   atol=np.finfo(dtype).smallest_subnormal)
    ref = reference_log_softmax(x, 1)
    out = _rows.apply(x, 1, m, l, True, np.empty(x.shape, np.float64))
    np.testing.assert_allclose(out[[0, 2, 3]], ref[[0, 2, 3]].astype(np.float64), rtol=1e-6, atol=1e-6)


def test_state_of_an_empty_axis_and_of_no_rows():
    m, l = _rows.row_parts(np.ones((3, 0), np.float32), 1)
    assert m.shape == (3,) and (m == -np.inf).all() and np.isnan(l).all()
    m, l = _rows.row_parts(np.ones((0, 4)), 1)
    assert m.shape == (0,) and l.shape == (0,)
