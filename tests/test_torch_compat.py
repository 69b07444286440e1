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

from _helpers import LAYOUTS, make_layout, native, with_forward_override  # noqa: E402

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


# ---------------------------------------------------------------------------------------------------- the family
# (the same functions against independent NumPy references, without torch: test_family.py)

FAMILY_SHAPES = [(7,), (5, 9), (3, 4, 5), (2, 3, 4, 5), (4, 1, 6), (3, 70)]
FAMILY_RNG = np.random.default_rng(2025)
TOL = {np.float16: dict(rtol=2e-3, atol=1e-4), np.float32: dict(rtol=2e-5, atol=1e-6),
       np.float64: dict(rtol=1e-12, atol=1e-14)}


def _torch(fn, x, dim):
    t = torch.from_numpy(np.ascontiguousarray(x))
    return getattr(F, fn)(t, dim).numpy()


@pytest.mark.parametrize("fn", ["log_softmax", "softmin"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", FAMILY_SHAPES, ids=str)
def test_family_matches_torch_on_every_dim_and_layout(kernel_set, fn, dtype, shape):
    x = (FAMILY_RNG.standard_normal(shape) * 5).astype(dtype)
    for layout in ("C", "F", "reversed"):
        view = {"C": x, "F": np.asfortranarray(x), "reversed": x[::-1]}[layout]
        for dim in range(-x.ndim, x.ndim):
            got = getattr(csoftmax, fn)(view, dim)
            assert got.dtype == x.dtype
            if dtype == np.float16:
                # torch rounds float16 log_softmax less carefully than we do: compare both with the float64
                # result, ours within one float16 ulp of it
                exact = _torch(fn, view.astype(np.float64), dim)
                np.testing.assert_array_less(np.abs(got.astype(np.float64) - exact),
                                             np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64) + 1e-7,
                                             err_msg=f"{fn} {layout} dim={dim}")
                continue
            np.testing.assert_allclose(got.astype(np.float64), _torch(fn, view, dim).astype(np.float64),
                                       **TOL[dtype], err_msg=f"{fn} {layout} dim={dim}")


def test_log_softmax_keeps_the_top_entry_that_torch_loses():
    y = csoftmax.log_softmax(np.array([0.0, -30.0]), 0)
    exact = -np.log1p(np.exp(np.longdouble(-30)))
    assert abs(np.longdouble(y[0]) - exact) <= 2 * np.spacing(abs(y[0]))
    assert abs(np.longdouble(float(F.log_softmax(torch.tensor([0.0, -30.0], dtype=torch.float64), 0)[0])) - exact) \
        > 100 * np.spacing(abs(y[0]))


@pytest.mark.parametrize("values", [[1.0, np.nan, 2.0], [1.0, np.inf], [-np.inf, -np.inf], [5.0, -np.inf],
                                    [3.0, 3.0, 3.0]])
def test_log_softmax_special_values_match_torch(values):
    got = csoftmax.log_softmax(np.array(values), 0)
    np.testing.assert_allclose(got, F.log_softmax(torch.tensor(values, dtype=torch.float64), 0).numpy(), rtol=1e-15)


@pytest.mark.parametrize("name", ["log_softmax", "softmin"])
def test_family_implicit_dim_warns_with_torchs_words(name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(csoftmax, name)(np.ones((2, 3)))
    with warnings.catch_warnings(record=True) as torch_caught:
        warnings.simplefilter("always")
        getattr(F, name)(torch.ones(2, 3))
    assert [str(w.message) for w in caught] == [str(w.message) for w in torch_caught]


@pytest.mark.parametrize("cls", ["LogSoftmax", "Softmin", "Softmax", "Softmax2d"])
def test_family_classes_match_torch_modules(cls):
    x = FAMILY_RNG.standard_normal((2, 3, 4))
    args = () if cls == "Softmax2d" else (1,)
    assert repr(getattr(csoftmax, cls)(*args)) == repr(getattr(torch.nn, cls)(*args))
    np.testing.assert_allclose(getattr(csoftmax, cls)(*args)(x),
                               getattr(torch.nn, cls)(*args)(torch.from_numpy(x)).numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax", "Softmin", "Softmax2d"])
def test_a_subclass_with_a_forward_override_matches_torchs(name):
    x = FAMILY_RNG.standard_normal((2, 3, 4))
    args = () if name == "Softmax2d" else (1,)
    ours = with_forward_override(getattr(csoftmax, name))(*args)
    theirs = with_forward_override(getattr(torch.nn, name))(*args)
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).numpy(), rtol=1e-12)


def test_softmax2d_rejects_other_ranks_with_torchs_message():
    x = FAMILY_RNG.standard_normal((2, 3, 4, 5))
    for bad in (x[0, 0], x[0, 0, 0], x[None]):
        with pytest.raises(ValueError) as ours:
            csoftmax.Softmax2d()(bad)
        with pytest.raises(ValueError) as theirs:
            torch.nn.Softmax2d()(torch.from_numpy(np.ascontiguousarray(bad)))
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_0d_input_matches_torch(name):
    x = np.array(0.5)
    for dim in (0, -1, (0,), (-1,)):
        expected = getattr(F, name)(torch.tensor(0.5, dtype=torch.float64), dim=dim if isinstance(dim, int) else dim[0])
        np.testing.assert_array_equal(getattr(csoftmax, name)(x, dim), expected.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_backward_matches_torch_autograd(dtype, dim):
    x = FAMILY_RNG.standard_normal((5, 6, 7)).astype(dtype)
    g = FAMILY_RNG.standard_normal((5, 6, 7)).astype(dtype)
    for fn, back in (("softmax", csoftmax.softmax_backward), ("log_softmax", csoftmax.log_softmax_backward)):
        xt = torch.from_numpy(x).requires_grad_()
        yt = getattr(F, fn)(xt, dim)
        yt.backward(torch.from_numpy(g))
        got = back(g, yt.detach().numpy(), dim)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-4 if dtype == np.float32 else 1e-10,
                                   atol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("dim", [0, -1])
def test_backward_of_a_0d_array_matches_torch_autograd(dim):
    for fn, back in (("softmax", csoftmax.softmax_backward), ("log_softmax", csoftmax.log_softmax_backward)):
        xt = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        yt = getattr(F, fn)(xt, dim)
        yt.backward(torch.tensor(3.0, dtype=torch.float64))
        got = back(np.array(3.0), yt.detach().numpy(), dim)
        assert got.shape == () and got == xt.grad.item()

