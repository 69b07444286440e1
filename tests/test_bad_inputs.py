"""The bad-input matrix: every public function against wrong types and values at the edges.

Functions: softmax, log_softmax and softmin, and the classes Softmax, LogSoftmax and Softmin called as
Cls(dim)(x) (a missing one fails its tests).

* wrong types: a non-integer dim is a TypeError, an out-of-range dim a numpy AxisError (also an IndexError and a
  ValueError), a non-floating dtype= a TypeError, and non-array / complex / object / string / datetime /
  structured / void / longdouble input a TypeError that says what to pass instead (ragged lists: NumPy's
  ValueError is accepted);
* values at the edges (subnormals, +-inf, NaN payloads, +-max, -0.0, integer extremes) in several layouts and
  byte orders: the documented value (compared with a long-double NumPy reference, csoftmax._reference for softmax),
  no warning, no crash, and the input (its whole buffer, dtype, strides and flags) unchanged.

Every input tried is counted; the total is printed at the end of the module (visible without -s).
"""
import collections
import decimal
import fractions
import operator
import warnings

import numpy as np
import pytest

import csoftmax
from _helpers import round_to
from csoftmax._reference import softmax_reference

try:
    from numpy.exceptions import AxisError, ComplexWarning
except ImportError:  # NumPy < 1.25
    AxisError, ComplexWarning = np.AxisError, np.ComplexWarning

TRIED = collections.Counter()          # kind of bad input -> calls made
ROWS = collections.Counter()           # edge-value rows checked (a call checks many rows)
NOTES = []                             # observations for the report (not failures)


@pytest.fixture(scope="module", autouse=True)
def _print_counts(request):
    yield
    lines = [f"[bad inputs] {sum(TRIED.values())} bad inputs tried "
             f"({', '.join(f'{k}: {v}' for k, v in sorted(TRIED.items()))}); "
             f"{sum(ROWS.values())} edge-value rows checked against the reference"]
    lines += [f"[bad inputs] note: {n}" for n in sorted(set(NOTES))]
    report(request.config, "\n".join(lines))


def report(config, text):
    """Writes to the terminal even under pytest's output capture (so the counts show without -s)."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is None:
        print(text)
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + text)
    else:
        reporter.write_line("\n" + text)


# ------------------------------------------------------------------------------------------------ the functions


FUNCTION_NAMES = ("softmax", "log_softmax", "softmin")
MODULE_NAMES = ("Softmax", "LogSoftmax", "Softmin")
KIND = {"softmax": "softmax", "log_softmax": "log_softmax", "softmin": "softmin", "Softmax": "softmax",
        "LogSoftmax": "log_softmax", "Softmin": "softmin"}


def caller(name):
    """call(x, dim, **kw) for a function or a module class (modules take no dtype/axis)."""
    obj = getattr(csoftmax, name)
    if name in MODULE_NAMES:
        def call(x, dim, **kw):
            assert not kw
            return obj(dim)(x)
    else:
        def call(x, dim, **kw):
            return obj(x, dim, **kw)
    return call


ALL_NAMES = FUNCTION_NAMES + MODULE_NAMES


# ------------------------------------------------------------------------------------------------ references


def reference(kind, x, axis, out_dtype):
    """The long-double result (not rounded) of `kind` along axis, and the dtype it is to be rounded to."""
    with np.errstate(all="ignore"):
        x = np.asarray(x)
        if kind == "softmax":
            return softmax_reference(x, axis, out_dtype=np.longdouble, work_dtype=np.longdouble)
        if kind == "softmin":
            return softmax_reference(-x.astype(np.longdouble), axis, out_dtype=np.longdouble,
                                     work_dtype=np.longdouble)
        # log_softmax, torch's rules: rows whose max is NaN or infinite are NaN; -inf entries stay -inf
        w = x.astype(np.longdouble)
        scalar = w.ndim == 0
        if scalar:
            w, axis = w.reshape(1), 0
        m = np.max(w, axis=axis, keepdims=True)
        # log(sum) as log1p(everything but one maximum): exact enough for the top entry (log(1 + tiny))
        top = w == m
        rest = np.sum(np.where(top, 0, np.exp(w - m)), axis=axis, keepdims=True)
        r = (w - m) - np.log1p((np.sum(top, axis=axis, keepdims=True) - 1) + rest)
        r = np.where(np.isfinite(m), r, np.nan)
        return r.reshape(()) if scalar else r


ULPS = {np.dtype(np.float16): 1.0, np.dtype(np.float32): 64.0, np.dtype(np.float64): 64.0}


def assert_matches_reference(kind, got, ref, out_dtype, what):
    """NaN exactly where the reference is; elsewhere within ULPS ulps of it (softmax, softmin: also in [0, 1] and
    never -0.0; log_softmax: infinities exact, never above 0)."""
    out_dtype = np.dtype(out_dtype)
    got = np.asarray(got)
    assert got.dtype == out_dtype, f"{what}: dtype {got.dtype}, expected {out_dtype}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    nan_g, nan_r = np.isnan(got), np.isnan(ref)
    if not np.array_equal(nan_g, nan_r):
        at = np.argwhere(nan_g != nan_r)[:4].tolist()
        raise AssertionError(f"{what}: NaN where the reference is not (or vice versa) at {at}")
    ok = ~nan_r
    if not ok.any():
        return
    g, r = got[ok].astype(np.longdouble), ref[ok]
    with np.errstate(all="ignore"):
        rounded = round_to(r, out_dtype)
        if kind == "log_softmax":
            # infinities (-inf entries, overflowed x - m) exactly; the rest within ULPS ulp of the reference
            inf = np.isinf(rounded)
            assert np.array_equal(g[inf], rounded[inf].astype(np.longdouble)), f"{what}: infinities differ"
            g, r, rounded = g[~inf], r[~inf], rounded[~inf]
            spacing = np.spacing(np.abs(rounded)).astype(np.longdouble)
            bad = np.abs(g - r) / spacing > ULPS[out_dtype]
            assert not np.any(g > 0), f"{what}: log_softmax above 0"
        else:
            spacing = np.spacing(np.abs(rounded)).astype(np.longdouble)
            bad = np.abs(g - r) / spacing > ULPS[out_dtype]
            vals = got[ok]
            assert np.all((vals >= 0) & (vals <= 1)), f"{what}: values outside [0, 1]"
            assert not np.any(np.signbit(vals)), f"{what}: -0.0 in the result"
    if bad.any():
        i = int(np.argmax(bad))
        raise AssertionError(f"{what}: {int(bad.sum())} value(s) beyond {ULPS[out_dtype]} ulp, e.g. got {g[i]!r}, "
                             f"reference {r[i]!r}")


# ------------------------------------------------------------------------------------------------ snapshots


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def snapshot(x):
    """What a call must leave alone: for arrays the whole underlying buffer, dtype, shape, strides and flags; for
    other objects their repr (lists: a deep copy)."""
    if isinstance(x, np.ndarray):
        f = x.flags
        return ("ndarray", _root(x).tobytes(), x.dtype.str, x.shape, x.strides, f.writeable, f.aligned,
                f.c_contiguous, f.f_contiguous, x.__array_interface__["data"][0])
    if isinstance(x, list):
        import copy

        return ("list", repr(copy.deepcopy(x)))
    return ("other", type(x), repr(x) if not callable(x) else id(x))


def expect_error(call, x, dim, error, tag, **kw):
    """Calls, expects `error` (an exception class or tuple), checks the input unchanged; returns the exception."""
    before = snapshot(x)
    TRIED[tag] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(error) as info:
            call(x, dim, **kw)
    assert snapshot(x) == before, f"{tag}: the input changed during a failing call"
    return info.value


# ------------------------------------------------------------------------------------------------ dim: type


class _Index:
    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


class _NotIndex:
    def __int__(self):               # int() works, operator.index does not: still not an integer dim
        return 0


BAD_DIM_TYPES = [1.0, 0.0, -1.0, 0.5, float("nan"), float("inf"), np.float64(0.0), np.float32(1.0),
                 np.float16(0.0), np.longdouble(0.0), "0", "dim", "", b"0", [0], [0, 1], [], {0}, {0: 0}, 1j,
                 np.complex128(0), True, False, np.bool_(True), np.bool_(False), np.array(0.0), np.array([0]),
                 np.array([0, 1]), np.array(True), object(), slice(0, 1), Ellipsis, decimal.Decimal(0),
                 fractions.Fraction(0), _NotIndex(), np.datetime64(0, "s"), np.timedelta64(0, "s")]


def _inputs_for_dim_tests():
    rng = np.random.default_rng(1)
    return [rng.standard_normal((3, 4)),                              # fast path candidate
            rng.standard_normal(5).astype(np.float32),
            rng.standard_normal((2, 3, 2)).astype(np.float16),
            rng.standard_normal((3, 4)).astype(">f8"),                 # byte-swapped: policy path
            np.array(2.5),                                             # 0-d
            [[1.0, 2.0], [3.0, 4.0]],                                  # a list
            np.arange(6).reshape(2, 3)]                                # integers


@pytest.mark.parametrize("name", ALL_NAMES)
def test_non_integer_dim_is_a_type_error_naming_dim(name):
    call = caller(name)
    for x in _inputs_for_dim_tests():
        for dim in BAD_DIM_TYPES:
            err = expect_error(call, x, dim, TypeError, "dim of a wrong type")
            assert "dim" in str(err), f"{name}(dim={dim!r}): message does not name dim: {err}"
            if name in FUNCTION_NAMES:
                expect_error(call, x, None, TypeError, "dim of a wrong type", axis=dim)


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_dim_and_axis_together_are_a_type_error(name):
    call = caller(name)
    for x in _inputs_for_dim_tests():
        err = expect_error(call, x, 0, TypeError, "dim and axis both", axis=0)
        assert "axis" in str(err) and "dim" in str(err), err


# ------------------------------------------------------------------------------------------------ dim: range


def _out_of_range_dims(ndim):
    lo, hi = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    dims = [hi + 1, hi + 2, lo - 1, lo - 2, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32, 2**63 - 1, 2**63, -2**63,
            -2**63 - 1, 2**64, 10**30, -10**30, np.int64(hi + 1), np.int8(-128), np.int32(2**31 - 1),
            np.uint64(2**64 - 1), np.uint8(255), np.intp(lo - 1), _Index(hi + 1), _Index(-2**70), np.array(hi + 1)]
    return [d for d in dims if not lo <= operator.index(d) <= hi]


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ">f4", np.int32])
def test_out_of_range_dim_is_an_axis_error_with_torch_message(name, dtype):
    call = caller(name)
    rng = np.random.default_rng(2)
    for shape in [(), (3,), (2, 3), (2, 1, 3), (1, 2, 1, 2)]:
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        for dim in _out_of_range_dims(len(shape)):
            err = expect_error(call, x, dim, AxisError, "dim out of range")
            assert isinstance(err, IndexError) and isinstance(err, ValueError)
            assert "Dimension out of range" in str(err), err
            if name in FUNCTION_NAMES:
                expect_error(call, x, None, AxisError, "dim out of range", axis=dim)


BAD_TUPLE_DIMS = [((), AxisError), ((0, 0), AxisError), ((1, -1), AxisError), ((0, 2), AxisError),
                  ((-3,), AxisError), ((0, None), TypeError), ((None,), TypeError), ((0.5,), TypeError),
                  (("0",), TypeError), ((True,), TypeError), (((0,),), TypeError), ((0, [1]), TypeError),
                  ((np.float64(0),), TypeError)]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bad_tuple_dims(name):
    """Tuple dims (normalised jointly) must be non-empty, distinct, integer and in range; lists stay a TypeError."""
    call = caller(name)
    x = np.arange(6.0).reshape(2, 3)
    for dim, error in BAD_TUPLE_DIMS:
        expect_error(call, x, dim, error, "bad tuple dim")
    for x in (np.ones((2, 3), np.float32), np.ones((2, 3), ">f8"), [[1.0, 2.0]]):
        expect_error(call, x, [0, 1], TypeError, "bad tuple dim")


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_bad_out_arguments_are_rejected_and_leave_out_alone(name):
    call = caller(name)
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    good_kind = np.empty((3, 4))
    cases = [([0.0] * 12, TypeError), ((0.0,) * 12, TypeError), ("out", TypeError), (np.empty((4, 3)), ValueError),
             (np.empty(12), ValueError), (np.empty((3, 4, 1)), ValueError), (np.empty((3, 4), np.float32), TypeError),
             (np.empty((3, 4), np.int64), TypeError), (np.empty((3, 4), np.complex128), TypeError),
             (np.empty((3, 4), np.longdouble), TypeError), (np.empty((3, 4), object), TypeError)]
    ro = np.full((3, 4), 7.0)
    ro.flags.writeable = False
    cases.append((ro, ValueError))
    for out, error in cases:
        before = snapshot(out) if isinstance(out, np.ndarray) else None
        expect_error(call, x, 1, error, "bad out=", out=out)
        if before is not None:
            assert snapshot(out) == before, "a rejected out= was written to"
    # a dtype= that disagrees with out's dtype
    expect_error(call, x, 1, TypeError, "bad out=", out=good_kind, dtype=np.float32)


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_bad_where_arguments_are_rejected(name):
    call = caller(name)
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    for where, error in [(np.ones((3, 4)), TypeError), (np.ones((3, 4), np.int8), TypeError), ("yes", TypeError),
                         ([[1, 0, 1, 0]], TypeError), (np.ones((4, 3), bool), ValueError),
                         (np.ones((2, 3, 4), bool), ValueError), (np.ones(3, bool), ValueError)]:
        expect_error(call, x, 1, error, "bad where=", where=where)


@pytest.mark.parametrize("name", FUNCTION_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_out_aliasing_the_input_gives_the_values_of_a_separate_call(name, dtype):
    """out= may be the input itself, an overlapping view of it, or a byte-swapped / misaligned / strided array:
    the result must be what a call into a fresh array gives (the C kernel's contract forbids overlap, so the
    package must not hand it overlapping memory)."""
    call = caller(name)
    rng = np.random.default_rng(4)
    base = (rng.standard_normal((6, 9)) * 3).astype(dtype)

    def fresh(x, dim):
        return call(np.array(x, copy=True), dim)

    def cases():
        x = base.copy()
        yield "in place", x, x, 1
        x = base.copy()
        yield "in place, dim 0", x, x, 0
        x = base.copy()
        yield "reversed view of the input", x, x[::-1, ::-1], 1
        big = np.concatenate([base, base], axis=1)
        yield "shifted overlapping view", big[:, :9], big[:, 3:12], 1
        x = base.copy()
        yield "transposed view (dim 0 <-> 1)", np.ascontiguousarray(x.T).T, x.T.copy().T, 0
        x = base.copy()
        yield "byte-swapped out", x, np.empty(x.shape, x.dtype.newbyteorder("S")), 1
        x = base.copy()
        yield "misaligned out", x, _misaligned(np.zeros_like(x)), 1
        x = base.copy()
        yield "strided out", x, np.zeros((12, 18), dtype)[::2, ::-2], 1
    for label, x, out, dim in cases():
        expect = fresh(x, dim)
        TRIED["out= aliasing or unusual"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = call(x, dim, out=out)
        assert r is out, f"{label}: out= not returned"
        got = np.array(out, dtype=np.dtype(dtype))
        assert np.array_equal(got, expect, equal_nan=True), f"{label}: differs from a call into a fresh array"


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_where_masks_rows_entirely_without_nan_or_warning(name):
    """A fully masked row gives 0 (log_softmax: -inf), not NaN; masked entries take no part."""
    call = caller(name)
    kind = KIND[name]
    x = np.array([[1.0, 2.0, 3.0], [np.nan, np.inf, -np.inf], [0.0, 5.0, -1.0]])
    where = np.array([[True, False, True], [False, False, False], [True, True, True]])
    TRIED["where= edge"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = call(x, 1, where=where)
    hidden = {"softmax": 0.0, "softmin": 0.0, "log_softmax": -np.inf}[kind]
    assert np.all(y[~where] == hidden), y
    for r in (0, 2):
        sub = x[r][where[r]]
        ref = reference(kind, sub, 0, np.float64)
        assert_matches_reference(kind, y[r][where[r]], ref, np.float64, f"where= row {r}")


@pytest.mark.parametrize("name", FUNCTION_NAMES)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("how", ["where=", "tuple dim (1, 0)", "tuple dim (0, 1)", "tuple dim (0,)"])
def test_where_and_tuple_dims_keep_the_input_memory_order(name, order, how):
    """README: the result is "a new native-endian array in the input's memory order (F in, F out)" - with where=
    and tuple dims too (found by the fuzzer: F-ordered input with where= gave a C-ordered result; a C-ordered
    (2, 2) input with dim=(1, 0) an F-ordered one)."""
    call = caller(name)
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    x = np.asfortranarray(x) if order == "F" else np.ascontiguousarray(x)
    TRIED["memory order"] += 1
    if how == "where=":
        y = call(x, 1, where=np.ones(x.shape, bool))
    else:
        y = call(x, {"tuple dim (1, 0)": (1, 0), "tuple dim (0, 1)": (0, 1), "tuple dim (0,)": (0,)}[how])
    flag = y.flags.f_contiguous if order == "F" else y.flags.c_contiguous
    assert flag, f"{order}-ordered input, {how}: result strides {y.strides}"


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("shape, dim", [((0, 2, 2), (1, 2)), ((2, 0, 3), (0, 2)), ((0, 0, 0, 0), (2, 0)),
                                        ((1, 0, 1), (2, 0)), ((0, 3), (0, 1)), ((3, 0), (1,)), ((0, 4), 1),
                                        ((4, 0), 0), ((0,), 0), ((2, 0, 3), -1)])
def test_empty_input_with_int_or_tuple_dims_gives_an_empty_result(name, shape, dim):
    """An empty input gives an empty result of its shape, whatever the dims (found by the fuzzer: a tuple dim
    that leaves an empty axis outside the reduction raised "cannot reshape array of size 0 into shape
    (0,newaxis)")."""
    call = caller(name)
    for dtype in (np.float64, np.float32, np.float16, ">f4"):
        x = np.empty(shape, dtype)
        TRIED["empty input"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = call(x, dim)
        assert y.shape == shape and y.dtype == np.dtype(dtype).newbyteorder("=")


# ------------------------------------------------------------------------------------------------ dtype=


BAD_DTYPES = [int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint64, bool, np.bool_, complex,
              np.complex64, np.complex128, np.clongdouble, np.longdouble, object, str, bytes, "U3", "S3", "M8[s]",
              "m8[s]", "V8", [("a", "f4")], "f4,f4", "nope", "float1", 1.5, object(), np.ndarray, "i8", "?", "O",
              np.dtype("O"), np.dtype([("x", "f8")]), "int", "longdouble", np.datetime64, np.timedelta64]


@pytest.mark.parametrize("name", [n for n in FUNCTION_NAMES])
def test_non_floating_dtype_argument_is_a_type_error_that_lists_the_allowed_ones(name):
    call = caller(name)
    for x in (np.linspace(-1, 1, 6).reshape(2, 3), np.arange(6).reshape(2, 3), [1.0, 2.0],
              np.float32([1.0, 2.0]), np.array(1.0)):
        for dtype in BAD_DTYPES:
            err = expect_error(call, x, -1, TypeError, "dtype= not floating", dtype=dtype)
            msg = str(err)
            assert "float16" in msg and "float32" in msg and "float64" in msg, (
                f"{name}(dtype={dtype!r}): the message does not say which dtypes are allowed: {msg}")


# ------------------------------------------------------------------------------------------------ input kinds


def _generator():
    return (i for i in range(3))


def _bad_inputs():
    """(label, factory, accepted exception types) of inputs that are not real arrays of numbers."""
    import datetime

    te = (TypeError,)
    items = [
        ("None", lambda: None, te),
        ("object()", lambda: object(), te),
        ("dict", lambda: {0: 1.0}, te),
        ("empty dict", lambda: {}, te),
        ("set", lambda: {1.0, 2.0}, te),
        ("str", lambda: "1.0", te),
        ("empty str", lambda: "", te),
        ("bytes", lambda: b"12", te),
        ("generator", _generator, te),
        ("function", lambda: (lambda: 0), te),
        ("Decimal", lambda: decimal.Decimal("1.5"), te),
        ("list of Decimal", lambda: [decimal.Decimal(1), decimal.Decimal(2)], te),
        ("list of Fraction", lambda: [fractions.Fraction(1, 2)], te),
        ("list of str", lambda: ["1.0", "2.0"], te),
        ("list with str", lambda: [1.0, "a"], te),
        ("list with None", lambda: [1.0, None], te),
        ("list of huge int", lambda: [2**70, 1], te),
        ("python complex", lambda: 1 + 2j, te),
        ("list with complex", lambda: [1.0, 2j], te),
        ("complex64 array", lambda: np.array([1 + 1j, 2], np.complex64), te),
        ("complex128 array", lambda: np.array([[1 + 1j, 2], [3, 4j]]), te),
        ("clongdouble array", lambda: np.array([1 + 1j], np.clongdouble), te),
        ("complex scalar", lambda: np.complex64(1), te),
        ("longdouble array", lambda: np.array([1.0, 2.0], np.longdouble), te),
        ("longdouble scalar", lambda: np.longdouble(1), te),
        ("object array of floats", lambda: np.array([1.0, 2.0], dtype=object), te),
        ("object 0-d None", lambda: np.array(None), te),
        ("str array", lambda: np.array(["1.0", "2.0"]), te),
        ("bytes array", lambda: np.array([b"1", b"2"]), te),
        ("datetime64 array", lambda: np.array(["2020-01-01", "2021-06-01"], dtype="M8[D]"), te),
        ("datetime64 scalar", lambda: np.datetime64("2020-01-01"), te),
        ("python datetime", lambda: datetime.datetime(2020, 1, 1), te),
        ("timedelta64 array", lambda: np.array([1, 2], dtype="m8[s]"), te),
        ("structured array", lambda: np.zeros(3, dtype=[("a", "f4"), ("b", "f4")]), te),
        ("structured 1-field", lambda: np.zeros(3, dtype=[("a", "f8")]), te),
        ("void array", lambda: np.zeros(3, dtype="V8"), te),
        ("np.void scalar", lambda: np.void(b"abcd"), te),
        ("ragged list", lambda: [[1.0, 2.0], [3.0]], (TypeError, ValueError)),
        ("ragged list 2", lambda: [[1.0], 2.0], (TypeError, ValueError)),
        ("ragged deep", lambda: [[[1.0, 2.0]], [[3.0]]], (TypeError, ValueError)),
    ]
    return items


def _valid_dim(x):
    return 0


@pytest.mark.parametrize("name", ALL_NAMES)
def test_unsupported_inputs_are_type_errors_that_say_what_to_pass_instead(name):
    call = caller(name)
    unhelpful = []
    for label, factory, accepted in _bad_inputs():
        x = factory()
        err = expect_error(call, x, 0, accepted, "unsupported input")
        msg = str(err)
        if isinstance(err, ValueError):
            if "pass" not in msg:
                NOTES.append(f"{label}: {type(err).__name__} from NumPy, does not say what to pass: {msg[:90]!r}")
            continue
        if "pass" not in msg or "float" not in msg:
            unhelpful.append(f"{label}: {msg}")
    assert not unhelpful, "TypeErrors that do not say what to pass instead:\n" + "\n".join(unhelpful)


BAD_WITH_DTYPE = [
    ("str array", lambda: np.array(["1.0", "2.0"])),
    ("bytes array", lambda: np.array([b"1", b"2"])),
    ("list of str", lambda: ["1.0", "2.0"]),
    ("object array of floats", lambda: np.array([1.0, 2.0], dtype=object)),
    ("datetime64 array", lambda: np.array(["2020-01-01", "2021-06-01"], dtype="M8[D]")),
    ("timedelta64 array", lambda: np.array([1, 2], dtype="m8[s]")),
    ("structured array", lambda: np.zeros(3, dtype=[("a", "f4"), ("b", "f4")])),
    ("structured 1-field", lambda: np.zeros(3, dtype=[("a", "f8")])),
    ("void array", lambda: np.zeros(3, dtype="V8")),
]


@pytest.mark.parametrize("name", FUNCTION_NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_dtype_argument_does_not_turn_non_numeric_input_into_numbers(name, dtype):
    """README: "complex, object, string and longdouble input are a TypeError that says what to pass instead".
    dtype= is a cast of a numeric input (torch has no string, object, date or record tensors): strings are not
    parsed, dates not turned into day counts, records not unpacked, and the error is the package's, not NumPy's
    cast message."""
    call = caller(name)
    wrong = []
    for label, factory in BAD_WITH_DTYPE:
        x = factory()
        before = snapshot(x)
        TRIED["non-numeric input with dtype="] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                y = call(x, 0, dtype=dtype)
                wrong.append(f"{label}: accepted, returned {np.asarray(y)!r}")
            except TypeError as e:
                if "pass" not in str(e):
                    wrong.append(f"{label}: TypeError without saying what to pass: {e}")
            except Exception as e:  # noqa: BLE001 - any other type is the finding
                wrong.append(f"{label}: {type(e).__name__}: {e}")
        assert snapshot(x) == before
    assert not wrong, f"dtype={np.dtype(dtype).name}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_complex_input_is_refused_with_or_without_dtype(name):
    """torch.softmax(complex, dtype=float32) drops the imaginary part (with a warning); csoftmax refuses complex input
    either way, with a TypeError that says what to pass, rather than lose part of the data."""
    call = caller(name)
    x = np.array([[1 + 5j, 2 - 1j, 0.5 + 0j]], np.complex128)
    TRIED["complex input with dtype="] += 1
    for kwargs in ({}, {"dtype": np.float64}, {"dtype": np.float32}):
        with pytest.raises(TypeError, match=r"complex(128)? input|complex128 is not supported"):
            call(x, 1, **kwargs)


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_masked_arrays_mask_like_where(name):
    """A masked array's mask means "takes no part", as where=False (np.asarray alone would silently drop it and
    let masked values in; found here, changed in the package since). Without where= support, only noted."""
    call = caller(name)
    x = np.ma.masked_array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], mask=[[False, True, False], [True, True, True]])
    TRIED["masked array"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = call(x, 1)
    expect = call(np.asarray(x.data), 1, where=~np.ma.getmaskarray(x))
    assert type(y) is np.ndarray and np.array_equal(np.asarray(y), expect), (y, expect)


# ------------------------------------------------------------------------------------------------ edge values


def specials(dtype):
    """Edge values of a float dtype, NaN payloads included (by bit pattern)."""
    dt = np.dtype(dtype)
    fi = np.finfo(dt)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dt.itemsize]
    nan_bits = {2: [0x7E00, 0x7E01, 0x7C01, 0xFE00, 0x7FFF],
                4: [0x7FC00000, 0x7FC00001, 0x7F800001, 0xFFC00000, 0x7FFFFFFF],
                8: [0x7FF8000000000000, 0x7FF8000000000001, 0x7FF0000000000001, 0xFFF8000000000000,
                    0x7FFFFFFFFFFFFFFF]}[dt.itemsize]
    sub = float(fi.smallest_subnormal)
    with np.errstate(all="ignore"):
        vals = np.array([0.0, -0.0, 1.0, -1.0, sub, -sub, 3 * sub, float(fi.tiny) - sub, float(fi.tiny),
                         -float(fi.tiny), float(fi.max), -float(fi.max), float(fi.max) / 3, -float(fi.max) / 3,
                         np.inf, -np.inf, float(fi.eps), 1 + float(fi.eps), 1e4, -1e4], np.float64).astype(dt)
    return np.concatenate([vals, np.array(nan_bits, uint).view(dt)])


def _edge_batches(dtype):
    """2-d arrays (rows of edge values) to be reduced along dim 1."""
    s = specials(dtype)
    n_s = len(s)
    rng = np.random.default_rng(3)
    out = {}
    a, b = np.meshgrid(np.arange(n_s), np.arange(n_s), indexing="ij")
    out["pairs"] = np.stack([s[a.ravel()], s[b.ravel()]], axis=1)
    out["same"] = np.repeat(s[:, None], 5, axis=1)
    for n in (1, 3, 8, 16, 17, 33, 100):
        rows = []
        for v in s:
            for pos in sorted({0, n // 2, n - 1}):
                row = rng.standard_normal(n).astype(dtype)
                row[pos] = v
                rows.append(row)
        out[f"one special in {n}"] = np.array(rows, dtype=dtype)
    trip = rng.integers(0, n_s, (300, 3))
    rows = rng.standard_normal((300, 16)).astype(dtype)
    for k in range(3):
        rows[np.arange(300), rng.integers(0, 16, 300)] = s[trip[:, k]]
    out["three specials in 16"] = rows
    return out


def _misaligned(a):
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    v = buf[1:].view(a.dtype).reshape(a.shape)
    v[...] = a
    return v


def _layouts(batch):
    """(label, array, dim) views of a batch (rows along dim 1) that reduce the same rows."""
    rev = np.repeat(np.repeat(batch[::-1, ::-1], 2, axis=0), 2, axis=1)[::2, ::2][::-1, ::-1]
    ro = batch.copy()
    ro.flags.writeable = False
    return [("C", batch.copy(), 1), ("columns (dim 0)", np.ascontiguousarray(batch.T), 0),
            ("F", np.asfortranarray(batch), 1), ("byte-swapped", batch.astype(batch.dtype.newbyteorder("S")), 1),
            ("misaligned", _misaligned(batch), 1), ("reversed strided", rev, 1), ("read-only", ro, -1)]


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_edge_values_give_the_documented_value_and_leave_the_input_alone(name, dtype):
    call = caller(name)
    kind = KIND[name]
    for batch_name, batch in _edge_batches(dtype).items():
        for layout, x, dim in _layouts(batch):
            before = snapshot(x)
            TRIED["edge values"] += 1
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                y = call(x, dim)
            assert snapshot(x) == before, f"{batch_name}, {layout}: the input changed"
            ref = reference(kind, x, dim, dtype)
            assert_matches_reference(kind, y, ref, np.dtype(dtype), f"{name} {np.dtype(dtype).name} {batch_name} {layout}")
            ROWS["edge"] += x.size // x.shape[dim]


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ">f4", ">f8"])
def test_edge_values_as_zero_d_arrays_and_scalars(name, dtype):
    call = caller(name)
    kind = KIND[name]
    native = np.dtype(dtype).newbyteorder("=")
    for v in specials(native):
        for x in (np.array(v, dtype=dtype), np.array(v, dtype=dtype)[()]):
            before = snapshot(x)
            TRIED["0-d edge values"] += 1
            for dim in (0, -1):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    y = call(x, dim)
                assert np.asarray(y).shape == ()
                assert_matches_reference(kind, y, reference(kind, np.asarray(x), 0, native), native, f"0-d {v!r}")
            assert snapshot(x) == before


INTEGER_EDGES = [np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0]),
                 np.array([np.iinfo(np.uint64).max, 0, 1], dtype=np.uint64),
                 np.array([-128, 127, 0], dtype=np.int8),
                 np.array([0, 255], dtype=np.uint8),
                 np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max], dtype=np.int32),
                 np.array([True, False, True]),
                 np.array([[2**53 + 1, 2**53], [-(2**62), 2**62]], dtype=np.int64)]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_integer_and_bool_edge_values_become_float64_without_wrapping(name):
    call = caller(name)
    kind = KIND[name]
    for x in INTEGER_EDGES:
        for arr in (x, x.astype(x.dtype.newbyteorder("S")), x[..., ::-1]):
            before = snapshot(arr)
            TRIED["integer edge values"] += 1
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                y = call(arr, -1)
            assert snapshot(arr) == before
            ref = reference(kind, arr.astype(np.float64), -1, np.float64)
            assert_matches_reference(kind, y, ref, np.float64, f"{arr.dtype} {arr.tolist()}")


@pytest.mark.parametrize("name", FUNCTION_NAMES)
@pytest.mark.parametrize("src, dst, big", [(np.float64, np.float32, 1e300), (np.float64, np.float16, 1e6),
                                           (np.float32, np.float16, 1e6), (np.int64, np.float16, 100000),
                                           (np.longdouble, np.float64, "1e4000")], ids=str)
def test_narrowing_dtype_overflow_gives_nan_rows_silently_like_torch(name, src, dst, big):
    """A narrowing dtype= casts first (torch: cast, then compute): values beyond the new range become +-inf, so
    (softmax) their rows are NaN and -inf entries give 0 - with no NumPy "overflow encountered in cast" warning
    leaking out (README: csoftmax emits no warnings)."""
    call = caller(name)
    kind = KIND[name]
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=src)
    x[0, 1] = np.array(big, dtype=src)
    x[1, 0] = -np.array(big, dtype=src)
    before = snapshot(x)
    TRIED["narrowing dtype= overflow"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = call(x, 1, dtype=dst)
    assert snapshot(x) == before
    with np.errstate(all="ignore"):
        cast = x.astype(dst)
    assert np.isinf(cast[0, 1]) and np.isinf(cast[1, 0])
    assert_matches_reference(kind, y, reference(kind, cast, 1, dst), dst, f"{np.dtype(src)} -> {np.dtype(dst)}")
