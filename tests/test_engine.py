"""The engine's paths, each value-checked against an independent NumPy reference and bit-checked across layouts
and thread counts, for every function, storage type, mask and dtype= variant.

A cell of the grid is (function, dtype, path, variant). The paths are shapes chosen to land on each of the engine's
walks (src/engine.c): rows (whole, short, float16 in the kernel), runs (long rows in one piece and in several, and
interleaved lanes), lanes (fused strips, streamed, streamed in pieces), and staged operands (every hostile layout).
Adding a path or a function is one line in PATHS or FUNCTIONS.
"""
import numpy as np
import pytest

import csoftmax
from csoftmax import _csoftmax

from _helpers import bits, make_layout

FUNCTIONS = ("softmax", "softmin", "log_softmax", "softmax_backward", "log_softmax_backward")
FORWARD = ("softmax", "softmin", "log_softmax")

# name: (shape, dim). Comments say which walk the shape takes (with float32 on any kernel set).
PATHS = {
    "rows": ((37, 100), -1),                      # whole rows, groups of four and single rows
    "rows aligned split": ((9, 1000), 1),         # rows long enough to align their stores
    "short rows": ((300, 3), -1),                 # across rows, transposed or gathered
    "short rows at the limit": ((77, _csoftmax.CSM_SHORT_ROW_MAX), 1),
    "half rows": ((13, 2048), -1),                # float16 in the rows kernel (at its limit)
    "long rows": ((2, 70_000), -1),               # runs of one piece (beyond the rows kernel's 64 KiB)
    "long row in pieces": ((1, 2_500_000), -1),   # a run cut into pieces: phases and merges
    "interleaved lanes": ((5, 301, 4), 1),        # runs whose vector lanes carry 4 classes
    "interleaved pairs": ((3, 1001, 2), 1),
    "lanes fused": ((50, 3, 64), 0),              # strips in registers
    "lanes few": ((7, 3), 0),                     # three lanes: partial vectors
    "lanes few, long axis": ((3000, 3), 0),       # streamed, staged blocks of more steps than a flush holds
    "lanes streamed": ((600, 40), 0),             # beyond the fused kernel's 512 steps
    "lanes in pieces": ((3000, 400), 0),          # the axis cut into pieces: phases and merges
    "middle": ((4, 19, 33), 1),
}

REFERENCE = {np.dtype(np.float16): np.float64, np.dtype(np.float32): np.float64, np.dtype(np.float64): np.longdouble}


def reference(function, x, dim, mask=None, g=None):
    """The function in a wide type, from the values as given (x already rounded to the result's type)."""
    w = np.asarray(x).astype(REFERENCE.get(np.asarray(x).dtype, np.longdouble))
    if function in ("softmax_backward", "log_softmax_backward"):
        gw = np.asarray(g).astype(w.dtype)
        if function == "softmax_backward":
            return w * (gw - (gw * w).sum(dim, keepdims=True))
        return gw - np.exp(w) * gw.sum(dim, keepdims=True)
    if function == "softmin":
        w = -w
    if mask is not None:
        w = np.where(mask, w, -np.inf)
    with np.errstate(all="ignore"):
        m = w.max(dim, keepdims=True)
        s = w - m
        e = np.exp(s)
        total = e.sum(dim, keepdims=True)
        if function == "log_softmax":
            top = s == 0
            out = s - np.log1p((top.sum(dim, keepdims=True) - 1) + np.where(top, 0, e).sum(dim, keepdims=True))
        else:
            out = e / total
        out = np.where(np.isfinite(m), out, np.nan)
        if mask is not None:
            out = np.where(mask, out, -np.inf if function == "log_softmax" else 0.0)
    return out


def tolerance(dtype, function):
    """Absolute tolerance against the wide reference: a few ulp of the result's type at its largest values (the
    tests of test_accuracy.py and test_family.py hold the ulp bounds themselves)."""
    eps = float(np.finfo(dtype).eps)
    return {"softmax": 64, "softmin": 64, "log_softmax": 16}.get(function, 64) * eps


def check(function, got, want, dtype, scale=1.0, what=""):
    got = np.asarray(got).astype(np.float64)
    want = np.asarray(want).astype(np.float64)
    assert got.shape == want.shape, what
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    assert np.array_equal(nan_g, nan_w), f"{what}: NaN pattern differs"
    inf_w = np.isinf(want)
    assert np.array_equal(got[inf_w], want[inf_w]), f"{what}: infinities differ"
    ok = ~nan_w & ~inf_w
    if not ok.any():
        return
    mag = np.abs(want[ok]) + (1.0 if function == "log_softmax" else 0.0)
    err = np.abs(got[ok] - want[ok]) / np.maximum(mag, float(np.finfo(dtype).tiny))
    worst = float(err.max())
    assert worst <= tolerance(dtype, function) * (8 if dtype == np.float16 else 1) + (
        2 ** -11 if dtype == np.float16 else 0), f"{what}: relative error {worst:.3g}"


def call(function, x, dim, **kw):
    return getattr(csoftmax, function)(x, dim, **kw)


def values(rng, shape, dtype, function):
    scale = 6.0 if function == "log_softmax" else 3.0
    return (rng.standard_normal(shape) * scale).astype(dtype)


def backward_args(rng, function, shape, dim, dtype):
    x = values(rng, shape, np.float64, "softmax")
    forward = csoftmax.softmax if function == "softmax_backward" else csoftmax.log_softmax
    y = forward(x, dim).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    return g, y


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_dtype_and_path_matches_the_reference(function, dtype, path, kernel_set, rng):
    shape, dim = PATHS[path]
    if np.prod(shape) > 1_000_000 and (kernel_set == "baseline" or dtype == np.float16):
        shape = (1, 1_100_000)                    # (still more than one piece; keeps the slow sets brief)
    if function in FORWARD:
        x = values(rng, shape, dtype, function)
        got = call(function, x, dim)
        assert got.dtype == dtype
        check(function, got, reference(function, x, dim), dtype, what=f"{function} {path}")
    else:
        g, y = backward_args(rng, function, shape, dim, dtype)
        got = getattr(csoftmax, function)(g, y, dim)
        assert got.dtype == dtype
        want = reference(function, y, dim, g=g)
        scale = float(np.max(np.abs(want))) or 1.0
        err = np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))) / scale
        assert err <= {np.float16: 4e-3, np.float32: 4e-6, np.float64: 1e-13}[dtype], (path, err)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("function", FORWARD)
def test_where_masks_on_every_path_match_the_reference(function, path, kernel_set, rng):
    shape, dim = PATHS[path]
    if np.prod(shape) > 1_000_000:
        shape = (1, 1_100_000)
    x = values(rng, shape, np.float32, function)
    mask = rng.random(shape) < 0.7
    # a fully masked row (all entries of one slice along dim), and a masked NaN that must take no part
    index = [slice(None)] * len(shape)
    index[dim] = slice(None)
    first = tuple(0 if d != (dim % len(shape)) else slice(None) for d in range(len(shape)))
    mask[first] = False
    x.flat[np.flatnonzero(~mask)[1:2]] = np.nan
    got = call(function, x, dim, where=mask)
    check(function, got, reference(function, x, dim, mask=mask), np.float32, what=f"{function} where {path}")
    # a broadcast mask (zero strides along the other axes) gives the same as its full copy
    along = [1] * len(shape)
    along[dim] = shape[dim]
    row_mask = rng.random(along) < 0.6
    full = np.broadcast_to(row_mask, shape)
    a = call(function, x, dim, where=full)
    b = call(function, x, dim, where=full.copy())
    assert np.array_equal(bits(a), bits(b))


@pytest.mark.parametrize("path", ["rows", "rows aligned split", "short rows", "half rows", "long rows",
                                  "interleaved lanes", "lanes fused", "lanes few", "middle"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("function", FORWARD)
def test_where_gives_the_bits_of_c_order_on_every_layout_and_thread_count(function, dtype, path, kernel_set, rng):
    # the kernels that read the mask with the input and the staged operands must agree bit for bit
    shape, dim = PATHS[path]
    base = values(rng, shape, dtype, function)
    mask = rng.random(shape) < 0.7
    first = tuple(0 if d != (dim % len(shape)) else slice(None) for d in range(len(shape)))
    mask[first] = False                           # a fully masked row
    saved = csoftmax.get_num_threads()
    try:
        csoftmax.set_num_threads(1)
        want = call(function, base, dim, where=mask)
        check(function, want, reference(function, base, dim, mask=mask), dtype, what=f"{function} where {path}")
        for layout in ("F", "transposed", "strided", "reversed"):
            x = make_layout(base, layout)
            for mask_layout in ("C", layout):
                m = make_layout(mask, mask_layout)
                for threads in (1, 2):
                    csoftmax.set_num_threads(threads)
                    got = call(function, x, dim, where=m)
                    assert np.array_equal(bits(got), bits(want)), (
                        f"{function} {path} {layout} (mask {mask_layout}) at {threads} threads")
        x = base.copy()                           # in place, the mask read with the input
        call(function, x, dim, where=mask, out=x)
        assert np.array_equal(bits(x), bits(want)), f"{function} {path} in place"
    finally:
        csoftmax.set_num_threads(saved)


@pytest.mark.parametrize("path", ["rows", "short rows", "long rows", "interleaved lanes", "lanes fused",
                                  "lanes streamed"])
@pytest.mark.parametrize("src,dst", [(np.float16, np.float32), (np.float32, np.float64), (np.float64, np.float32),
                                     (np.float32, np.float16), (np.float64, np.float16), (np.float16, np.float64)])
@pytest.mark.parametrize("function", FORWARD)
def test_dtype_argument_casts_as_it_loads_on_every_path(function, src, dst, path, rng):
    shape, dim = PATHS[path]
    x = values(rng, shape, src, function)
    got = call(function, x, dim, dtype=dst)
    assert got.dtype == dst
    cast = x.astype(dst)                          # torch's semantics: cast first (once, straight to dst)
    want = call(function, cast, dim)
    assert np.array_equal(bits(got), bits(want)), f"{function} {src.__name__}->{dst.__name__} {path}"


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("function", FORWARD)
def test_every_layout_and_thread_count_gives_the_bits_of_c_order(function, dtype, path, rng):
    shape, dim = PATHS[path]
    if np.prod(shape) > 1_000_000:
        shape = (1, 1_100_000)
    base = values(rng, shape, dtype, function)
    saved = csoftmax.get_num_threads()
    try:
        csoftmax.set_num_threads(1)
        want = bits(call(function, base, dim))
        for layout in ("F", "transposed", "strided", "reversed", "byteswapped", "misaligned"):
            x = make_layout(base, layout)
            for threads in (1, 2, 3):
                csoftmax.set_num_threads(threads)
                got = call(function, x, dim)
                assert np.array_equal(bits(got), want), f"{function} {path} {layout} at {threads} threads"
    finally:
        csoftmax.set_num_threads(saved)


@pytest.mark.parametrize("path", ["rows", "short rows", "half rows", "long rows", "interleaved lanes",
                                  "lanes fused", "lanes streamed", "lanes in pieces"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_out_equal_to_the_input_computes_in_place(function, path, rng):
    shape, dim = PATHS[path]
    dtype = np.float16 if path == "half rows" else np.float32
    if function in FORWARD:
        x = values(rng, shape, dtype, function)
        want = call(function, x, dim)
        work = x.copy()
        assert call(function, work, dim, out=work) is work
        assert np.array_equal(bits(work), bits(want))
    else:
        g, y = backward_args(rng, function, shape, dim, dtype)
        want = getattr(csoftmax, function)(g, y, dim)
        for target in ("g", "y"):
            gg, yy = g.copy(), y.copy()
            out = gg if target == "g" else yy
            assert getattr(csoftmax, function)(gg, yy, dim, out=out) is out
            assert np.array_equal(bits(out), bits(want)), f"{function} {path} out={target}"


@pytest.mark.parametrize("function", FORWARD)
def test_neg_inf_and_far_entries_give_exact_zeros_on_every_path(function, kernel_set, rng):
    for path, (shape, dim) in PATHS.items():
        if np.prod(shape) > 1_000_000:
            continue
        x = values(rng, shape, np.float32, function)
        pick = rng.random(shape)
        x[pick < 0.15] = -np.inf
        x[(pick >= 0.15) & (pick < 0.25)] = -1e4
        x[(pick >= 0.25) & (pick < 0.3)] = -90.0          # subnormal results (float32), rounded not flushed
        got = call(function, x, dim)
        want = reference(function, x, dim)
        check(function, got, want, np.float32, what=f"{function} -inf {path}")
        if function == "softmax":
            assert np.all(got[np.isneginf(x) & ~np.isnan(want)] == 0)
