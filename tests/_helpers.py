"""Independent oracles and comparison helpers for the csoftmax tests.

Nothing here calls csoftmax: the reference softmax is written out again (one NumPy operation at a time, in a wider
type) so that a bug shared by the package and its own csoftmax._reference cannot hide itself.
"""
import numpy as np

FLOATS = (np.float16, np.float32, np.float64)

# Accuracy figures measured by test_accuracy.py, printed in the terminal summary (see conftest.py).
MEASURED = {}

# The reference's working type: float32 results are judged against float64, float16 against float64 (exactly
# representable), float64 against long double (80-bit on x86-64).
WIDE = {np.dtype(np.float16): np.float64, np.dtype(np.float32): np.float64, np.dtype(np.float64): np.longdouble}

# Accuracy bounds in units in the last place of the correctly rounded result (see the brief / README).
ULP_BOUND = {np.dtype(np.float16): 1.0, np.dtype(np.float32): 64.0, np.dtype(np.float64): 64.0}


def round_to(wide, dtype):
    """A long-double array rounded once to `dtype`. (NumPy casts long double to float16 through float32, which
    double-rounds: -32.015625000000012 becomes -32.0 instead of -32.03125; through float64 the second rounding
    is exact enough. Spacings are taken of magnitudes: np.spacing(float16(-32)) is the spacing below 32.)"""
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):
        if dtype.itemsize < 8:
            return np.asarray(wide).astype(np.float64).astype(dtype)
        return np.asarray(wide).astype(dtype)


def native(dtype):
    return np.dtype(dtype).newbyteorder("=")


def reference_softmax(x, dim, work=None):
    """softmax of x along dim in a wide working type (returned in that type, not rounded).

    Rules (torch's): a row whose maximum is NaN or +inf, or that is entirely -inf, is NaN throughout.
    """
    x = np.array(x)  # a plain copy: any byte order, layout or alignment becomes ordinary data
    if work is None:
        work = WIDE.get(native(x.dtype), np.longdouble) if x.dtype.kind == "f" else np.longdouble
    w = x.astype(work)
    scalar = w.ndim == 0
    if scalar:
        w = w.reshape(1)
        dim = 0
    with np.errstate(all="ignore"):
        m = np.max(w, axis=dim, keepdims=True, initial=-np.inf)  # initial: empty rows
        e = np.exp(w - m)
        s = np.sum(e, axis=dim, keepdims=True)
        r = e / s
        r = np.where(np.isfinite(m), r, np.nan)
    return r.reshape(()) if scalar else r


def reference_log_softmax(x, dim):
    """log_softmax of x along dim in long double (unrounded), log(sum) as log1p of everything but one maximum, so
    the top entries keep their value however small the rest is. torch's rules for rows whose maximum is not finite."""
    w = np.moveaxis(np.array(x).astype(np.longdouble), dim, -1)
    with np.errstate(all="ignore"):
        m = w.max(-1, keepdims=True)
        top = w == m
        rest = np.where(top, 0, np.exp(w - m)).sum(-1, keepdims=True)
        y = (w - m) - np.log1p((top.sum(-1, keepdims=True) - 1) + rest)
        y = np.where(np.isfinite(m), y, np.nan)
    return np.moveaxis(y, -1, dim)


def ulp_errors(actual, ref_wide, dtype):
    """|actual - ref| in units of np.spacing(ref rounded to dtype) (absolute ulps in the subnormal range)."""
    dtype = native(dtype)
    wide = ref_wide.dtype
    rounded = ref_wide.astype(dtype)
    spacing = np.abs(np.spacing(rounded)).astype(wide)
    with np.errstate(all="ignore"):
        return np.abs(np.asarray(actual).astype(wide) - ref_wide) / spacing


def assert_softmax_close(actual, ref_wide, dtype, ulps=None, what=""):
    """NaN exactly where the reference is NaN; elsewhere within `ulps` ulps of it."""
    dtype = native(dtype)
    if ulps is None:
        ulps = ULP_BOUND[dtype]
    actual = np.asarray(actual)
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == ref_wide.shape, f"{what}: shape {actual.shape}, expected {ref_wide.shape}"
    nan_a, nan_r = np.isnan(actual), np.isnan(ref_wide)
    if not np.array_equal(nan_a, nan_r):
        bad = np.argwhere(nan_a != nan_r)[:5]
        raise AssertionError(f"{what}: NaN pattern differs from the reference at {bad.tolist()}")
    if actual.size and not nan_r.all():
        err = ulp_errors(actual[~nan_r], ref_wide[~nan_r], dtype)
        worst = float(err.max())
        if not worst <= ulps:
            i = int(np.argmax(err))
            raise AssertionError(
                f"{what}: {worst:.3g} ulp from the reference (bound {ulps}); "
                f"got {actual[~nan_r][i]!r}, reference {ref_wide[~nan_r][i]!r}"
            )


def bits(a):
    """The array's bits as unsigned integers (native order, C copy), for bit-identity comparisons."""
    a = np.ascontiguousarray(a, dtype=native(a.dtype))
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize])


def root_buffer(a):
    """The ndarray that owns a's memory (for views: the whole buffer, including the parts a skips over)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def snapshot(a):
    """Everything about an input that softmax must leave alone: its values (bitwise), its whole buffer, its
    dtype (byte order included), strides and flags."""
    root = root_buffer(a)
    return (
        a.copy().tobytes(),
        root.tobytes(),
        a.dtype.str,
        a.shape,
        a.strides,
        a.flags.writeable,
        a.flags.aligned,
        a.flags.c_contiguous,
        a.flags.f_contiguous,
        a.__array_interface__["data"][0],
    )


def row_reduce_dims(ndim):
    """Every valid dim for an ndim-d array, negative ones included (0-d: [-1, 0])."""
    if ndim == 0:
        return [-1, 0]
    return list(range(-ndim, ndim))


# ------------------------------------------------------------------------------------------------ hostile layouts

# Layouts that hold exactly the same logical values as the base array.
SAME_VALUE_LAYOUTS = ("C", "F", "transposed", "strided", "reversed", "byteswapped", "readonly", "misaligned",
                      "everything")
# broadcast_to repeats one slice: its values are those of base[:1] broadcast, not base's.
LAYOUTS = SAME_VALUE_LAYOUTS + ("broadcast",)


def _misaligned_copy(a, offset=1):
    """A copy of a whose data pointer is `offset` bytes past an allocation (not aligned to its item size)."""
    buf = np.zeros(a.nbytes + a.itemsize + offset, dtype=np.uint8)
    view = buf[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def make_layout(base, layout):
    """The data of `base` (any ndim, float dtype) laid out in memory as `layout` (see LAYOUTS)."""
    base = np.ascontiguousarray(base)
    nd = base.ndim
    if nd == 0 and layout in ("strided", "reversed", "everything"):
        # nothing to stride or reverse; indexing a 0-d array with () would give a scalar, not a view
        layout = {"strided": "C", "reversed": "C", "everything": "misaligned_swapped_readonly"}[layout]
    if layout == "C":
        return base.copy()
    if layout == "F":
        return np.asfortranarray(base).copy(order="F")
    if layout == "transposed":
        # memory order rotated: axis 0 is the fastest-varying one (F for 2-d, neither C nor F above that)
        perm = tuple(range(1, nd)) + (0,) if nd else ()
        inverse = tuple(np.argsort(perm)) if nd else ()
        return np.ascontiguousarray(base.transpose(inverse)).transpose(perm)
    if layout == "strided":
        # every axis has twice its natural stride: [::2] of an array repeated along every axis
        big = base
        for ax in range(nd):
            big = np.repeat(big, 2, axis=ax)
        return big[(slice(None, None, 2),) * nd]
    if layout == "reversed":
        flip = (slice(None, None, -1),) * nd
        return np.ascontiguousarray(base[flip])[flip]
    if layout == "byteswapped":
        return base.astype(base.dtype.newbyteorder("S"))
    if layout == "readonly":
        a = base.copy()
        a.flags.writeable = False
        return a
    if layout == "misaligned":
        return _misaligned_copy(base)
    if layout == "everything":
        # byte-swapped, misaligned, negatively strided, non-contiguous and read-only at once
        flip = (slice(None, None, -1),) * nd
        big = base[flip]
        for ax in range(nd):
            big = np.repeat(big, 2, axis=ax)
        big = _misaligned_copy(big.astype(big.dtype.newbyteorder("S")), offset=3)
        a = big[(slice(None, None, 2),) * nd][flip]
        a.flags.writeable = False
        return a
    if layout == "misaligned_swapped_readonly":
        a = _misaligned_copy(base.astype(base.dtype.newbyteorder("S")), offset=3)
        a.flags.writeable = False
        return a
    if layout == "broadcast":
        if nd == 0:
            return np.broadcast_to(base, ())
        return np.broadcast_to(base[:1], base.shape)
    raise ValueError(layout)


def with_forward_override(base):
    """A subclass of the module class `base` whose forward is 2 * base's forward + 1 (calling it must run it)."""
    class Shifted(base):
        def forward(self, input):
            return 2 * super().forward(input) + 1
    return Shifted
