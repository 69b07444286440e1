"""torch.nn.functional.softmax is the specification: same values, NaN patterns, warnings and error types."""
import re
import warnings

import numpy as np
import pytest

import os

if os.environ.get("CSOFTMAX_REQUIRE_TORCH"):    # CI sets it: the compatibility tests must run, not skip
    import torch
else:
    torch = pytest.importorskip("torch")
F = torch.nn.functional

import csoftmax  # noqa: E402
from csoftmax import Softmax, softmax  # noqa: E402

from _helpers import LAYOUTS, make_layout, native  # noqa: E402

TORCH_DTYPE = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
               np.dtype(np.float64): torch.float64}
FLOAT_DTYPES = [np.float16, np.float32, np.float64]
# torch's own result is less exact (its x - max rounds: up to ~0.5 ulp(x - max) relative, over 100 ulps for spread
# rows); csoftmax's accuracy is tested against exact references elsewhere. Here: "the same to float tolerance",
# in ulps of torch's result (float16: both round a float32 computation, so at most one ulp apart).
ULPS = {np.dtype(np.float16): 1.0, np.dtype(np.float32): 256.0, np.dtype(np.float64): 256.0}


def to_torch(x):
    """torch refuses non-writable, negatively strided and byte-swapped numpy arrays: give it a plain copy."""
    x = np.asarray(x)
    return torch.from_numpy(np.array(x, dtype=native(x.dtype), order="C"))  # (ascontiguousarray makes 0-d 1-d)


def torch_softmax(x, dim=None, dtype=None):
    t = to_torch(x)
    kwargs = {} if dtype is None else {"dtype": TORCH_DTYPE[np.dtype(dtype)]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return F.softmax(t, dim, **kwargs).numpy()


def assert_same_as_torch(ours, theirs, what=""):
    assert ours.dtype == theirs.dtype, what
    assert ours.shape == theirs.shape, what
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=f"{what}: NaN pattern")
    ok = ~np.isnan(theirs)
    if ok.any():
        a = ours[ok].astype(np.float64)
        b = theirs[ok].astype(np.float64)
        spacing = np.spacing(np.abs(theirs[ok])).astype(np.float64)
        err = np.abs(a - b) / spacing
        assert err.max() <= ULPS[ours.dtype], f"{what}: {err.max():.3g} ulp from torch"
    # exact zeros (from -inf entries or underflow far below the result's range) agree exactly
    big_gap = ok & (theirs == 0)
    assert (ours[big_gap] <= np.finfo(ours.dtype).smallest_subnormal * ULPS[ours.dtype]).all(), what


def random_shape(rng, ndim):
    return tuple(int(s) for s in rng.integers(1, {1: 300, 2: 40, 3: 12, 4: 7, 5: 5}.get(ndim, 4), ndim))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ndim", [1, 2, 3, 4, 5])
def test_values_match_torch_on_random_shapes_for_every_dim(dtype, ndim, rng):
    for _ in range(4):
        shape = random_shape(rng, ndim)
        x = (rng.standard_normal(shape) * rng.choice([0.1, 3.0, 30.0])).astype(dtype)
        for dim in range(-ndim, ndim):
            assert_same_as_torch(softmax(x, dim), torch_softmax(x, dim), f"{shape} dim={dim}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_values_and_nan_pattern_match_torch_with_special_values(dtype, kernel_set, rng):
    values = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 5.0, -40.0, np.finfo(dtype).max,
                       -np.finfo(dtype).max], dtype=dtype)
    for shape in [(40, 3), (3, 40), (6, 5, 4)]:
        p = np.full(len(values), 0.3 / (len(values) - 3))
        p[3:6] = 0.7 / 3 - 0.0
        p = p / p.sum()
        x = rng.choice(values, shape, p=p)
        for dim in range(-len(shape), len(shape)):
            assert_same_as_torch(softmax(x, dim), torch_softmax(x, dim), f"{shape} dim={dim}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_values_match_torch_for_every_layout(layout, rng):
    for dtype in FLOAT_DTYPES:
        x = make_layout((rng.standard_normal((5, 6, 7)) * 4).astype(dtype), layout)
        for dim in range(-3, 3):
            assert_same_as_torch(softmax(x, dim), torch_softmax(x, dim), f"{np.dtype(dtype).name} dim={dim}")


@pytest.mark.parametrize("src", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dst", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_dtype_argument_matches_torch(src, dst, rng):
    x = (rng.standard_normal((4, 50)) * 10).astype(src)
    x[0, 3] = 6e4  # a large entry that still fits float16 (cast overflow is tested in test_api)
    for dim in (0, 1):
        assert_same_as_torch(softmax(x, dim, dtype=dst), torch_softmax(x, dim, dtype=dst), f"dim={dim}")


def test_zero_dim_input_matches_torch():
    for dtype in FLOAT_DTYPES:
        for v in (0.0, 7.5, -3.0, np.inf, -np.inf, np.nan):
            x = np.array(v, dtype=dtype)
            for dim in (0, -1):
                ours, theirs = softmax(x, dim), torch_softmax(x, dim)
                assert ours.shape == theirs.shape == ()
                assert_same_as_torch(ours, theirs, f"{v} dim={dim}")


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (2, 0, 4)])
def test_empty_input_matches_torch(shape):
    x = np.zeros(shape, dtype=np.float32)
    for dim in range(-len(shape), len(shape)):
        ours, theirs = softmax(x, dim), torch_softmax(x, dim)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype


@pytest.mark.parametrize("shape", [(), (3,), (2, 3), (2, 3, 4), (1, 2, 1, 2, 1)])
def test_out_of_range_dims_raise_the_same_error_type_and_message_as_torch(shape):
    x = np.ones(shape, dtype=np.float32)
    t = torch.from_numpy(x)
    ndim = len(shape)
    bound = max(ndim, 1)
    for dim in (bound, bound + 3, -bound - 1, -bound - 7):
        with pytest.raises(Exception) as torch_info:
            F.softmax(t, dim)
        with pytest.raises(Exception) as our_info:
            softmax(x, dim)
        assert isinstance(our_info.value, type(torch_info.value)), (type(our_info.value), type(torch_info.value))
        assert str(our_info.value) == str(torch_info.value)


@pytest.mark.parametrize("dim", [1.0, True, "1", 0.5])
def test_non_integer_dims_are_type_errors_like_in_torch(dim):
    x = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(TypeError):
        F.softmax(torch.from_numpy(x), dim)
    with pytest.raises(TypeError):
        softmax(x, dim)


@pytest.mark.parametrize("ndim", [0, 1, 2, 3, 4, 5])
def test_implicit_dim_choice_and_warning_match_torch(ndim, rng):
    x = rng.standard_normal((2, 3, 4, 2, 3)[:ndim]).astype(np.float32)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        expected = F.softmax(torch.from_numpy(x)).numpy()
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        got = softmax(x)
    assert len(ours) == len(theirs) == 1
    assert ours[0].category is theirs[0].category
    assert str(ours[0].message) == str(theirs[0].message)
    # torch's functional form points the warning at the caller's line too
    assert ours[0].filename == theirs[0].filename == __file__
    assert_same_as_torch(got, expected)


def test_softmax_module_matches_torch_module(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for dim in (None, 0, 1, 2, -1):
        with warnings.catch_warnings(record=True) as theirs:
            warnings.simplefilter("always")
            expected = torch.nn.Softmax(dim)(torch.from_numpy(x)).numpy()
        with warnings.catch_warnings(record=True) as ours:
            warnings.simplefilter("always")
            got = Softmax(dim)(x)
        assert [(w.category, str(w.message)) for w in ours] == [(w.category, str(w.message)) for w in theirs]
        assert_same_as_torch(got, expected, f"dim={dim}")
    assert repr(Softmax(1)) == repr(torch.nn.Softmax(1))
    assert repr(Softmax(dim=None)) == repr(torch.nn.Softmax(dim=None))


def test_float16_long_row_matches_torch_where_naive_float16_would_not():
    x = np.full(100000, 3.0, dtype=np.float16)
    assert_same_as_torch(softmax(x, 0), torch_softmax(x, 0))


def test_integer_input_is_float64_softmax_of_the_values(rng):
    # torch has no integer softmax; csoftmax's rule is "convert to float64 first": same as torch on the float64 copy
    x = rng.integers(-100, 100, (5, 8)).astype(np.int32)
    ours = softmax(x, 1)
    assert_same_as_torch(ours, torch_softmax(x.astype(np.float64), 1))
    assert csoftmax.softmax(x.astype(np.uint8), 1).dtype == np.float64
