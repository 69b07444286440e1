"""The Python API: dim rules, errors, the implicit-dim warning, dtype rules, the Softmax class, 0-d and empty input."""
import copy
import inspect
import operator
import os
import pickle
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import csoftmax
from csoftmax import Softmax, softmax

from _helpers import assert_softmax_close, reference_softmax, snapshot

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    AxisError = np.AxisError

IMPLICIT_MESSAGE = (
    "Implicit dimension choice for softmax has been deprecated. Change the call to include dim=X as an argument."
)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _line():
    """The line number of the caller's current line."""
    return inspect.currentframe().f_back.f_lineno


def _legacy_dim(ndim):
    return 0 if ndim in (0, 1, 3) else 1


# ------------------------------------------------------------------------------------------------------ dim rules


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 2), (2, 2, 1, 2, 3)])
def test_every_valid_dim_and_its_negative_alias_reduce_the_same_axis(shape, rng):
    x = rng.standard_normal(shape)
    ndim = len(shape)
    for d in range(ndim):
        ref = reference_softmax(x, d)
        assert_softmax_close(softmax(x, d), ref, np.float64, what=f"dim={d}")
        assert_softmax_close(softmax(x, d - ndim), ref, np.float64, what=f"dim={d - ndim}")
        assert_softmax_close(softmax(x, dim=d - ndim), ref, np.float64, what=f"dim={d - ndim} keyword")


class _Index:
    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


@pytest.mark.parametrize(
    "dim",
    [np.int8(1), np.int16(-1), np.int32(1), np.int64(-1), np.uint8(1), np.uint64(1), np.intp(1), _Index(1),
     _Index(-1), np.array(1), np.array(-1, dtype=np.int16)],
    ids=repr,
)
def test_integer_like_dims_are_accepted_through_operator_index(dim, rng):
    x = rng.standard_normal((3, 4))
    expected = reference_softmax(x, operator.index(dim))
    assert_softmax_close(softmax(x, dim), expected, np.float64)
    assert_softmax_close(softmax(x, axis=dim), expected, np.float64)
    assert_softmax_close(Softmax(dim)(x), expected, np.float64)


@pytest.mark.parametrize("dim", [1.0, 0.0, -1.0, 1.5, np.float64(1.0), np.float32(0.0), "1", "dim", b"0", [1], 1j,
                                 True, False, np.bool_(True), np.bool_(False)], ids=repr)
def test_non_integer_dim_is_a_type_error(dim):
    # a tuple of ints is a joint dim (SciPy/JAX); a list stays a TypeError, as in torch
    x = np.ones((2, 3))
    with pytest.raises(TypeError):
        softmax(x, dim)
    with pytest.raises(TypeError):
        softmax(x, axis=dim)
    with pytest.raises(TypeError):
        Softmax(dim)(x)


@pytest.mark.parametrize(
    "shape, dim, low, high",
    [((2, 3), 2, -2, 1), ((2, 3), -3, -2, 1), ((4,), 1, -1, 0), ((4,), -2, -1, 0), ((2, 3, 4), 3, -3, 2),
     ((2, 3, 4), -4, -3, 2), ((1, 1, 1, 1, 1), 5, -5, 4), ((1, 1, 1, 1, 1), -6, -5, 4), ((), 1, -1, 0),
     ((), -2, -1, 0), ((3,), 10**20, -1, 0), ((3,), -(10**20), -1, 0)],
)
def test_out_of_range_dim_raises_axis_error_with_torch_message(shape, dim, low, high):
    x = np.ones(shape, dtype=np.float32)
    message = f"Dimension out of range (expected to be in range of [{low}, {high}], but got {dim})"
    for call in (lambda: softmax(x, dim), lambda: softmax(x, axis=dim), lambda: Softmax(dim)(x)):
        with pytest.raises(AxisError) as info:
            call()
        assert str(info.value) == message
        assert isinstance(info.value, IndexError)
        assert isinstance(info.value, ValueError)


def test_out_of_range_dim_message_matches_the_spec_example():
    with pytest.raises(IndexError, match=re.escape(
            "Dimension out of range (expected to be in range of [-2, 1], but got 2)")):
        softmax(np.zeros((3, 3)), 2)


def test_axis_keyword_is_an_alias_of_dim(rng):
    x = rng.standard_normal((3, 4, 5))
    for d in range(-3, 3):
        np.testing.assert_array_equal(softmax(x, axis=d), softmax(x, dim=d))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_spelling_of_the_same_call_gives_bit_identical_results(dtype, rng):
    # dim as int, numpy integer, negative alias or axis=; the array itself, a list of it, a read-only or
    # byte-swapped copy, dtype= naming its own type: all the same softmax, to the bit
    x = (rng.standard_normal((4, 9)) * 5).astype(dtype)
    readonly = x.copy()
    readonly.flags.writeable = False
    expected = softmax(x, 1)
    variants = {
        "np.int64 dim": softmax(x, np.int64(1)),
        "negative dim": softmax(x, -1),
        "keyword dim": softmax(x, dim=1),
        "axis": softmax(x, axis=1),
        "own dtype": softmax(x, 1, dtype=dtype),
        "read-only": softmax(readonly, 1),
        "byte-swapped": softmax(x.astype(x.dtype.newbyteorder("S")), 1),
        "module": Softmax(1)(x),
        "subclass": softmax(x.view(np.ma.MaskedArray), 1),
    }
    if dtype == np.float64:
        variants["list"] = softmax(x.tolist(), 1)
    for name, y in variants.items():
        assert type(y) is np.ndarray, name
        assert y.dtype == expected.dtype, name
        np.testing.assert_array_equal(y.view(np.uint8), expected.view(np.uint8), err_msg=name)


def test_axis_keyword_does_not_warn(rng):
    x = rng.standard_normal((3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        softmax(x, axis=0)


@pytest.mark.parametrize("call", [
    lambda x: softmax(x, 0, axis=0),
    lambda x: softmax(x, dim=1, axis=1),
    lambda x: softmax(x, dim=0, axis=1),
    lambda x: softmax(x, 1, None, axis=0),
], ids=["positional-dim", "same", "different", "with-dtype"])
def test_giving_both_dim_and_axis_is_a_type_error(call):
    with pytest.raises(TypeError):
        call(np.ones((2, 3)))


def test_axis_is_keyword_only():
    x = np.ones((2, 3))
    with pytest.raises(TypeError):
        softmax(x, 0, None, 1)  # a fourth positional argument


def test_dim_is_validated_before_anything_is_computed_for_empty_input():
    with pytest.raises(AxisError):
        softmax(np.zeros((0, 3)), 2)
    with pytest.raises(AxisError):
        softmax(np.zeros((3, 0, 2), dtype=np.float32), -4)
    with pytest.raises(TypeError):
        softmax(np.zeros((0,)), 0.0)


# ------------------------------------------------------------------------------------------- the implicit dim


@pytest.mark.parametrize("ndim", [0, 1, 2, 3, 4, 5])
def test_dim_none_uses_torch_legacy_choice_and_warns(ndim, rng):
    x = rng.standard_normal((2, 3, 4, 2, 3)[:ndim])
    with pytest.warns(UserWarning) as record:
        y = softmax(x)
    assert len(record) == 1
    assert str(record[0].message) == IMPLICIT_MESSAGE
    assert record[0].category is UserWarning
    assert_softmax_close(y, reference_softmax(x, _legacy_dim(ndim)), np.float64)


@pytest.mark.parametrize("ndim", [0, 1, 2, 3, 4])
def test_softmax_module_with_dim_none_uses_legacy_choice_and_warns(ndim, rng):
    x = rng.standard_normal((3, 2, 4, 2)[:ndim])
    expected = reference_softmax(x, _legacy_dim(ndim))
    for call in (Softmax(), Softmax(None), Softmax(dim=None).forward):
        with pytest.warns(UserWarning) as record:
            y = call(x)
        assert len(record) == 1
        assert str(record[0].message) == IMPLICIT_MESSAGE
        assert_softmax_close(y, expected, np.float64)


def test_implicit_dim_warning_points_at_the_callers_line_for_softmax():
    x = np.ones((2, 3))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        softmax(x); line = _line()  # noqa: E702  (the call and its line number on one line)
    assert len(record) == 1
    assert record[0].filename == __file__
    assert record[0].lineno == line


def test_implicit_dim_warning_points_at_the_callers_line_for_softmax_module_call():
    x = np.ones((2, 3))
    module = Softmax(None)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        module(x); line = _line()  # noqa: E702
    assert len(record) == 1
    assert record[0].filename == __file__
    assert record[0].lineno == line


def test_implicit_dim_warning_points_at_the_callers_line_for_softmax_module_forward():
    x = np.ones((2, 3))
    module = Softmax()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        module.forward(x); line = _line()  # noqa: E702
    assert len(record) == 1
    assert record[0].filename == __file__
    assert record[0].lineno == line


def _user_helper(x):
    return softmax(x), _line()


def test_implicit_dim_warning_points_at_the_innermost_user_frame_not_at_the_package():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, line = _user_helper(np.ones(3))
    assert len(record) == 1
    assert record[0].filename == __file__
    assert record[0].lineno == line


def test_implicit_dim_warning_is_an_error_under_filterwarnings_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match=re.escape(IMPLICIT_MESSAGE)):
            softmax(np.ones((2, 2)))


def test_explicit_dim_never_warns(rng):
    x = rng.standard_normal((2, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        softmax(x, 1)
        softmax(x, dim=-1)
        Softmax(0)(x)
        Softmax(dim=2).forward(x)


def test_implicit_dim_warns_even_for_empty_input():
    with pytest.warns(UserWarning, match=re.escape(IMPLICIT_MESSAGE)):
        y = softmax(np.zeros((3, 0)))
    assert y.shape == (3, 0)


# ----------------------------------------------------------------------------------------------------- dtype rules


@pytest.mark.parametrize("spelling, expected", [
    (np.float16, np.float16), ("float16", np.float16), ("f2", np.float16), ("e", np.float16), ("half", np.float16),
    (np.dtype("<f2"), np.float16), (np.dtype(">f2"), np.float16),
    (np.float32, np.float32), ("float32", np.float32), ("f4", np.float32), ("single", np.float32),
    (np.dtype("<f4"), np.float32), (np.dtype(">f4"), np.float32), ("=f4", np.float32),
    (np.float64, np.float64), ("float64", np.float64), ("f8", np.float64), ("double", np.float64), ("d", np.float64),
    (np.dtype("<f8"), np.float64), (np.dtype(">f8"), np.float64), (float, np.float64), ("float", np.float64),
], ids=repr)
def test_dtype_argument_accepts_every_spelling_of_the_three_float_types(spelling, expected, rng):
    x = rng.standard_normal((3, 5)) * 3
    y = softmax(x, 1, dtype=spelling)
    assert y.dtype == np.dtype(expected)
    assert y.dtype.isnative
    assert_softmax_close(y, reference_softmax(x.astype(expected), 1), expected)


@pytest.mark.parametrize("spelling", [
    int, np.int32, "i4", "int64", np.uint8, bool, np.bool_, complex, np.complex64, "c16", "U", "U10", "S4", object,
    "O", np.longdouble, "g", "M8[s]", "m8[s]", "V8", "foo", [("a", "f4")], np.dtype([("a", "f8")]),
], ids=repr)
def test_dtype_argument_other_than_a_float_type_is_a_type_error(spelling):
    with pytest.raises(TypeError):
        softmax(np.ones((2, 3)), 1, dtype=spelling)


def test_dtype_argument_casts_the_input_before_the_operation_narrowing_to_float16():
    # 1 + 1e-4 rounds to 1 in float16: after the cast the two entries are equal, so the result is exactly 0.5
    x = np.array([1.0, 1.0 + 1e-4])
    assert np.float16(x[1]) == np.float16(x[0])
    y = softmax(x, 0, dtype=np.float16)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, np.array([0.5, 0.5], dtype=np.float16))


def test_dtype_argument_casts_the_input_before_the_operation_narrowing_to_float32():
    x = np.array([[1.0, 1.0 + 1e-9, 1.0 - 1e-9]])
    y = softmax(x, 1, dtype=np.float32)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.full((1, 3), np.float32(1 / 3)))


def test_narrowing_dtype_overflow_to_inf_gives_nan_row_without_runtime_warning():
    # torch casts first: 1e300 becomes +inf in float32, so the row is NaN; the other row is unaffected.
    # The cast must not emit NumPy's "overflow encountered in cast" RuntimeWarning.
    x = np.array([[1e300, 1.0], [1.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = softmax(x, 1, dtype=np.float32)
    assert y.dtype == np.float32
    assert np.isnan(y[0]).all()
    assert_softmax_close(y[1], reference_softmax(np.float32([1.0, 2.0]), 0), np.float32)


def test_narrowing_dtype_to_float16_overflow_gives_nan_row_without_runtime_warning():
    x = np.array([70000.0, 1.0, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = softmax(x, 0, dtype=np.float16)
    assert y.dtype == np.float16
    assert np.isnan(y).all()


def test_integer_input_with_float16_dtype_overflow_gives_nan_without_runtime_warning():
    x = np.array([[100000, 1], [1, 2]], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = softmax(x, 1, dtype=np.float16)
    assert y.dtype == np.float16
    assert np.isnan(y[0]).all()
    assert_softmax_close(y[1], reference_softmax(np.float16([1, 2]), 0), np.float16)


@pytest.mark.parametrize("src, dst", [(np.float16, np.float32), (np.float16, np.float64), (np.float32, np.float64)])
def test_widening_dtype_argument_computes_in_the_wider_type(src, dst, rng):
    # the result must have dst's accuracy, not src's (a computation in src, widened afterwards, would be ~1e-8 off)
    x = (rng.standard_normal((4, 300)) * 4).astype(src)
    y = softmax(x, 1, dtype=dst)
    assert y.dtype == np.dtype(dst)
    assert_softmax_close(y, reference_softmax(x.astype(dst), 1), dst)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_input_keeps_its_dtype(dtype, rng):
    x = rng.standard_normal((3, 7)).astype(dtype)
    y = softmax(x, 1)
    assert y.dtype == np.dtype(dtype)
    assert_softmax_close(y, reference_softmax(x, 1), dtype)


@pytest.mark.parametrize("dtype", [">f2", ">f4", ">f8", "<f2", "<f4", "<f8"])
def test_result_is_native_endian_whatever_the_input_byte_order(dtype, rng):
    x = rng.standard_normal((3, 9)).astype(dtype)
    y = softmax(x, 1)
    assert y.dtype == np.dtype(dtype).newbyteorder("=")
    assert y.dtype.isnative
    assert_softmax_close(y, reference_softmax(x, 1), y.dtype)


def test_float16_row_of_100000_equal_values_is_computed_in_float32():
    # in float16 arithmetic the sum overflows or each term underflows; torch (and csoftmax) give 1e-5 each
    x = np.full(100000, 3.0, dtype=np.float16)
    y = softmax(x, 0)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, np.full(100000, np.float16(1e-5)))


def test_float16_result_is_within_one_float16_ulp_of_exact(rng):
    x = (rng.standard_normal((50, 40)) * 3).astype(np.float16)
    assert_softmax_close(softmax(x, 1), reference_softmax(x, 1), np.float16, ulps=1.0)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                                   np.bool_])
def test_integer_and_bool_input_becomes_float64(dtype, rng):
    info = np.iinfo(dtype) if dtype is not np.bool_ else None
    if info is None:
        x = rng.integers(0, 2, (4, 6)).astype(bool)
    else:
        x = rng.integers(max(info.min, -50), min(info.max, 50), (4, 6), endpoint=True).astype(dtype)
    y = softmax(x, 1)
    assert y.dtype == np.float64
    assert_softmax_close(y, reference_softmax(x.astype(np.float64), 1), np.float64)


def test_uint8_input_does_not_wrap_around():
    # x - max computed in uint8 would wrap (0 - 255 = 1): the 0 would get the weight of 1
    x = np.array([0, 255, 254], dtype=np.uint8)
    y = softmax(x, 0)
    expected = reference_softmax(np.array([0.0, 255.0, 254.0]), 0)
    assert_softmax_close(y, expected, np.float64)
    assert y[0] < 1e-100


def test_extreme_int64_input_gives_one_and_zeros():
    x = np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min, 0], dtype=np.int64)
    y = softmax(x, 0)
    np.testing.assert_array_equal(y, [1.0, 0.0, 0.0])


@pytest.mark.parametrize("data", [
    [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [1, 2, 3], (1.5, -2.0), [[True, False]], 3.0, 7, [[1, 2.5]],
], ids=repr)
def test_anything_np_asarray_accepts_is_input(data):
    y = softmax(data, -1)
    x = np.asarray(data)
    expected_dtype = x.dtype if x.dtype.kind == "f" else np.float64
    assert isinstance(y, np.ndarray)
    assert_softmax_close(y, reference_softmax(x.astype(expected_dtype), -1), expected_dtype)


def test_objects_with_array_interface_are_accepted():
    class Wrapper:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    x = np.array([[1.0, 3.0], [2.0, -1.0]], dtype=np.float32)
    y = softmax(Wrapper(x), 0)
    assert_softmax_close(y, reference_softmax(x, 0), np.float32)


def test_ndarray_subclass_input_is_handled_as_its_data():
    x = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, False, False])
    y = softmax(x, 0)
    assert_softmax_close(np.asarray(y), reference_softmax(np.array([1.0, 2.0, 3.0]), 0), np.float64)


@pytest.mark.parametrize("data, hint", [
    (np.array([1 + 1j, 2 - 1j]), "real"), (np.array([1.0, 2.0], dtype=np.complex64), "real"),
    (np.array([1.0, 2.0], dtype=np.longdouble), "float64"), (np.array([1.0, None]), "float"),
    (np.array(["1", "2"]), "float"), (np.array([b"1", b"2"]), "float"), (["a", "b"], "float"),
    (np.array([1, 2], dtype="M8[s]"), "float"), (np.array([1, 2], dtype="m8[s]"), "float"),
], ids=["complex128", "complex64", "longdouble", "object", "unicode", "bytes", "list-of-str", "datetime",
        "timedelta"])
def test_unsupported_input_dtype_is_a_type_error_that_says_what_to_pass(data, hint):
    with pytest.raises(TypeError) as info:
        softmax(data, 0)
    message = str(info.value)
    assert "pass" in message.lower()
    assert hint in message


def test_longdouble_input_message_suggests_a_call_that_then_works():
    x = np.array([1.0, 2.0], dtype=np.longdouble)
    with pytest.raises(TypeError, match="dtype=np.float64"):
        softmax(x, 0)
    y = softmax(x, 0, dtype=np.float64)
    assert_softmax_close(y, reference_softmax(x.astype(np.float64), 0), np.float64)
    y = softmax(x.astype(np.float64), 0)
    assert_softmax_close(y, reference_softmax(x.astype(np.float64), 0), np.float64)


# --------------------------------------------------------------------------------------------------- 0-d and empty


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.uint8, np.bool_])
@pytest.mark.parametrize("value", [0, 1, -3, 100])
@pytest.mark.parametrize("dim", [0, -1])
def test_zero_dim_input_gives_one(dtype, value, dim):
    x = np.array(value).astype(dtype)
    y = softmax(x, dim)
    assert isinstance(y, np.ndarray)
    assert y.shape == ()
    assert y.dtype == (np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.float64)
    assert y == 1.0


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_zero_dim_finite_extremes_give_one(dtype):
    info = np.finfo(dtype)
    for v in (info.max, info.min, info.tiny, -info.tiny, info.smallest_subnormal):
        y = softmax(np.array(v, dtype=dtype), 0)
        assert y.shape == () and y.dtype == np.dtype(dtype) and y == 1.0, v


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ">f4"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_zero_dim_nonfinite_gives_nan(dtype, value):
    y = softmax(np.array(value, dtype=dtype), 0)
    assert y.shape == ()
    assert np.isnan(y)


def test_numpy_and_python_scalars_are_zero_dim_input():
    for v, dt in ((np.float32(2.5), np.float32), (np.float16(-1), np.float16), (2.5, np.float64), (3, np.float64),
                  (True, np.float64)):
        y = softmax(v, 0)
        assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == dt and y == 1.0


def test_zero_dim_input_with_dtype_argument():
    y = softmax(np.array(5.0), -1, dtype=np.float16)
    assert y.dtype == np.float16 and y.shape == () and y == 1.0


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (2, 0, 4), (0, 0), (1, 0, 1, 2), (2, 3, 0, 1, 1)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64, np.bool_, ">f8"])
def test_empty_input_gives_empty_result_of_same_shape_and_dtype(shape, dtype):
    x = np.zeros(shape, dtype=dtype)
    expected_dtype = np.dtype(dtype).newbyteorder("=") if np.dtype(dtype).kind == "f" else np.dtype(np.float64)
    for d in range(-len(shape), len(shape)):
        y = softmax(x, d)
        assert y.shape == shape
        assert y.dtype == expected_dtype
        assert y.size == 0


def test_empty_input_with_dtype_argument_has_that_dtype():
    assert softmax(np.zeros((0, 4)), 1, dtype="f2").dtype == np.float16
    assert softmax(np.zeros((4, 0), dtype=np.int8), 0, dtype=np.float32).dtype == np.float32


def test_empty_fortran_input_gives_empty_fortran_result():
    x = np.zeros((0, 3, 2), order="F")
    y = softmax(x, 1)
    assert y.shape == (0, 3, 2)
    assert y.strides == np.empty_like(x).strides


# ------------------------------------------------------------------------------------------------- the module


def test_softmax_module_stores_dim_and_applies_softmax(rng):
    x = rng.standard_normal((3, 4, 2))
    for d in (0, 1, 2, -1, -3):
        m = Softmax(d)
        assert m.dim == d
        assert Softmax(dim=d).dim == d
        expected = reference_softmax(x, d)
        assert_softmax_close(m(x), expected, np.float64)
        assert_softmax_close(m.forward(x), expected, np.float64)


def test_softmax_module_default_dim_is_none():
    assert Softmax().dim is None


def test_softmax_module_dim_can_be_changed_after_construction(rng):
    x = rng.standard_normal((3, 4))
    m = Softmax(0)
    m.dim = 1
    assert_softmax_close(m(x), reference_softmax(x, 1), np.float64)
    m.dim = None
    with pytest.warns(UserWarning, match=re.escape(IMPLICIT_MESSAGE)):
        assert_softmax_close(m(x), reference_softmax(x, 1), np.float64)


def test_softmax_module_rejects_bad_dims_like_the_function():
    with pytest.raises(AxisError):
        Softmax(2)(np.ones((2, 2)))
    with pytest.raises(TypeError):
        Softmax(0.5)(np.ones((2, 2)))


@pytest.mark.parametrize("dim, text", [(1, "Softmax(dim=1)"), (None, "Softmax(dim=None)"), (-2, "Softmax(dim=-2)"),
                                       (0, "Softmax(dim=0)")])
def test_softmax_module_repr_is_torch_style(dim, text):
    assert repr(Softmax(dim)) == text
    assert repr(Softmax(dim=dim)) == text


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_softmax_module_pickles_with_its_dim(protocol, dim, rng):
    m = Softmax(dim)
    clone = pickle.loads(pickle.dumps(m, protocol=protocol))
    assert type(clone) is Softmax
    assert clone.dim == dim
    assert repr(clone) == repr(m)
    if dim is not None:
        x = rng.standard_normal((2, 3))
        np.testing.assert_array_equal(clone(x), m(x))


def test_softmax_module_copies_keep_dim():
    m = Softmax(1)
    assert copy.copy(m).dim == 1
    assert copy.deepcopy(m).dim == 1


def test_unpickling_an_old_module_state_without_dim_gives_dim_none():
    old = Softmax(1)
    del old.__dict__["dim"]  # what an old torch module's state looks like: other attributes, no "dim"
    old.training = True
    old._parameters = {}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(old, protocol=protocol))
        assert clone.dim is None
        assert clone.training is True
        assert repr(clone) == "Softmax(dim=None)"
        with pytest.warns(UserWarning, match=re.escape(IMPLICIT_MESSAGE)):
            y = clone(np.array([[1.0, 2.0]]))
        assert_softmax_close(y, reference_softmax(np.array([[1.0, 2.0]]), 1), np.float64)


def test_unpickling_an_empty_state_without_dim_gives_dim_none():
    # an instance whose state is empty: pickle stores no state at all and never calls __setstate__, so the
    # default must come from somewhere else (a class attribute, say); the spec promises dim=None for any state
    # without "dim"
    old = Softmax(1)
    del old.__dict__["dim"]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(old, protocol=protocol))
        assert getattr(clone, "dim", "missing") is None, f"protocol {protocol}"
        assert repr(clone) == "Softmax(dim=None)"


def test_setstate_keeps_other_attributes_and_defaults_dim():
    m = Softmax.__new__(Softmax)
    m.__setstate__({"extra": 5})
    assert m.dim is None and m.extra == 5
    m.__setstate__({"dim": 2})
    assert m.dim == 2


# ------------------------------------------------------------------------------------------ package surface


def test_version_is_a_pep440_string():
    assert isinstance(csoftmax.__version__, str)
    assert re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[\w.]+)?", csoftmax.__version__)


def _api_checks():
    """Every public name with a call that must give the documented result (the list is the API: a name missing
    from the package, or one added to __all__ without a line here, fails test_the_whole_public_api_works)."""
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    g = np.array([[0.5, -1.0, 2.0], [1.0, 1.0, -3.0]])
    e = np.exp(x - x.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    q = np.exp(-x - (-x).max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    x4 = np.arange(24.0).reshape(1, 2, 3, 4) / 7
    e4 = np.exp(x4 - x4.max(1, keepdims=True))

    def close(got, want):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-300)

    def threads():
        before = csoftmax.get_num_threads()
        csoftmax.set_num_threads(1)
        try:
            assert csoftmax.get_num_threads() == 1
        finally:
            csoftmax.set_num_threads(before)
        assert csoftmax.get_num_threads() == before

    def output_cache():
        previous = csoftmax.set_output_cache(1 << 20)
        assert csoftmax.set_output_cache(previous) == 1 << 20

    return {
        "softmax": lambda: close(csoftmax.softmax(x, 1), p),
        "log_softmax": lambda: close(csoftmax.log_softmax(x, 1), np.log(p)),
        "softmin": lambda: close(csoftmax.softmin(x, 1), q),
        "softmax_backward": lambda: close(csoftmax.softmax_backward(g, p, 1), p * (g - (g * p).sum(1, keepdims=True))),
        "log_softmax_backward": lambda: close(csoftmax.log_softmax_backward(g, np.log(p), 1),
                                              g - p * g.sum(1, keepdims=True)),
        "Softmax": lambda: close(csoftmax.Softmax(dim=1)(x), p),
        "LogSoftmax": lambda: close(csoftmax.LogSoftmax(dim=1)(x), np.log(p)),
        "Softmin": lambda: close(csoftmax.Softmin(dim=1)(x), q),
        "Softmax2d": lambda: close(csoftmax.Softmax2d()(x4), e4 / e4.sum(1, keepdims=True)),
        "show_config": lambda: csoftmax.show_config(),
        "set_num_threads": threads,
        "get_num_threads": threads,
        "set_output_cache": output_cache,
        "__version__": lambda: isinstance(csoftmax.__version__, str) or pytest.fail("__version__ is not a string"),
        "logsumexp": lambda: close(csoftmax.logsumexp(x, axis=1), np.log(np.exp(x).sum(1))),
        "SoftmaxState": lambda: close(csoftmax.SoftmaxState.of(x[:, :1], 1).merge(csoftmax.SoftmaxState.of(
            x[:, 1:], 1)).softmax(x), p),
    }


def test_the_whole_public_api_works(capsys):
    checks = _api_checks()
    assert sorted(csoftmax.__all__) == sorted(checks)
    for name, check in checks.items():
        assert hasattr(csoftmax, name), f"csoftmax.{name} is missing"
        if name != "__version__":
            assert getattr(csoftmax, name).__doc__, f"csoftmax.{name} has no docstring"
        check()
    public = {n for n in dir(csoftmax) if not n.startswith("_")} - {"dask"}     # the optional Dask submodule
    assert public <= set(checks), f"public but not in __all__: {sorted(public - set(checks))}"


def test_show_config_prints_version_and_every_kernel_set_marking_the_active_one(capsys):
    from csoftmax import _csoftmax

    assert csoftmax.show_config() is None
    out = capsys.readouterr().out
    assert csoftmax.__version__ in out
    for name in _csoftmax.available_kernels():
        assert name in out
    marked = [line for line in out.splitlines() if line.lstrip().startswith("*")]
    assert len(marked) == 1
    assert _csoftmax.active_kernels() in marked[0]


def test_show_config_follows_a_kernel_switch(kernel_set, capsys):
    csoftmax.show_config()
    marked = [line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("*")]
    assert len(marked) == 1 and kernel_set in marked[0]


def test_unknown_kernel_set_name_is_a_value_error():
    from csoftmax import _csoftmax

    with pytest.raises(ValueError):
        _csoftmax.use_kernels("no-such-kernels")


def _run_python(code, **env):
    full_env = dict(os.environ)
    full_env.update(env)
    full_env["PYTHONPATH"] = REPO_ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=REPO_ROOT,
                          timeout=60)


def test_csoftmax_isa_environment_variable_selects_the_kernel_set():
    from csoftmax import _csoftmax

    last = _csoftmax.available_kernels()[-1]
    proc = _run_python("import csoftmax._csoftmax as c, csoftmax; print(c.active_kernels())", CSOFTMAX_ISA=last)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == last


def test_csoftmax_isa_environment_variable_with_unknown_name_warns_and_keeps_the_best():
    from csoftmax import _csoftmax

    best = _csoftmax.available_kernels()[0]
    proc = _run_python("import warnings; warnings.simplefilter('always')\n"
                       "import csoftmax._csoftmax as c, csoftmax; print(c.active_kernels())", CSOFTMAX_ISA="bogus")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == best
    assert "RuntimeWarning" in proc.stderr and "bogus" in proc.stderr


def test_csoftmax_isa_environment_variable_ignores_case():
    from csoftmax import _csoftmax

    last = _csoftmax.available_kernels()[-1]
    proc = _run_python("import warnings; warnings.simplefilter('always')\n"
                       "import csoftmax._csoftmax as c, csoftmax; print(c.active_kernels())", CSOFTMAX_ISA=last.upper())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == last and "Warning" not in proc.stderr


# ------------------------------------------------------------------------------------------------- input safety


def test_input_array_is_not_modified_and_result_is_new(rng):
    x = rng.standard_normal((5, 6))
    before = snapshot(x)
    for d in (0, 1):
        y = softmax(x, d)
        assert not np.shares_memory(x, y)
        assert y.flags.writeable and y.flags.owndata
    assert snapshot(x) == before


def test_result_does_not_alias_for_zero_dim_input():
    x = np.array(3.0)
    y = softmax(x, 0)
    assert not np.shares_memory(x, y)
    assert x == 3.0
