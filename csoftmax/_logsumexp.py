"""logsumexp and the mergeable per-row state of the softmax family, built on the two row primitives of _rows.

Design: every reduction here is _rows.row_parts (per-row max m and l = log sum exp(x - m)) and every per-entry
output is _rows.apply; this module only decides arguments, folds the weights `b` and the masks into the rows, and
combines (m, l) pairs per row. So when the engine's C kernels take over those two primitives, logsumexp, the state
and everything built on them speed up at once.

Precision: (m, l) arrive as float64 (l to about 2^-45 relative for float16/float32 rows, an ulp for float64 rows).
Combinations of pairs (signed weights, merges of states) run in float64 for float16/float32 results and in
np.longdouble for float64 results where it is wider (x86-64: 64-bit significand), and each result is rounded once.
Where long double is no wider than float64 (MSVC, aarch64 macOS) the float64 combinations round at every step:
still within a few ulp, but not the "one rounding" described here.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Optional, Tuple

import numpy as np

from . import _rows
from ._api import _as_array, _mask, _merge_axes, _normalize_dims, _result_dtype

__all__ = ["logsumexp", "SoftmaxState"]

_FLOAT_TYPES = (np.float16, np.float32, np.float64)

# The working type of float64 results: long double where its significand is wider than float64's.
_WIDE = np.longdouble if np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant else np.float64


def _work_type(result_dtype: np.dtype) -> type:
    """float64 carries float16/float32 results with 29 bits to spare; float64 results need the wide type."""
    return _WIDE if result_dtype == np.float64 else np.float64


def _split_masked(name: str, a: Any, where: Any) -> Tuple[Any, Any]:
    """A masked array's mask means "takes no part", as where=False (combined with any where= given), exactly as
    the softmax family reads it."""
    if not isinstance(a, np.ma.MaskedArray):
        return a, where
    hidden = np.ma.getmaskarray(a)
    data = np.ma.getdata(a)
    if hidden.any():
        shown = ~hidden
        where = shown if where is None else np.logical_and(shown, _mask(name, where, shown.shape))
    return data, where


def _parts(x: np.ndarray, axes: tuple, mask: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """_rows.row_parts over one or several axes (merged into one) or none (each entry its own row): (m, l) of x's
    shape without the axes, in the remaining axes' order."""
    if len(axes) == 0:
        x = x[..., np.newaxis]
        mask = None if mask is None else mask[..., np.newaxis]
        return _rows.row_parts(x, x.ndim - 1, mask)
    if len(axes) == 1:
        return _rows.row_parts(x, axes[0], mask)
    merged = _merge_axes(x, axes)
    mask = None if mask is None else _merge_axes(mask, axes)
    return _rows.row_parts(merged, merged.ndim - 1, mask)


def _lse(m: np.ndarray, l: np.ndarray, work: type) -> np.ndarray:
    """log sum exp of rows given as (m, l), in the working type: m + l where m is finite, else m itself (-inf for
    no entries or only -inf ones, +inf, NaN)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.isfinite(m), np.asarray(m, work) + np.asarray(l, work), np.asarray(m, work))


def _log1mexp(t: np.ndarray) -> np.ndarray:
    """log(1 - exp(t)) for t <= 0, accurate at both ends (Maechler's switch at -log 2): -inf at t = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        near = t > -np.log(2)
        return np.where(near, np.log(-np.expm1(np.where(near, t, -1))), np.log1p(-np.exp(np.where(near, -1, t))))


def _signed_lse(pos: Tuple[np.ndarray, np.ndarray], neg: Tuple[np.ndarray, np.ndarray],
                work: type) -> Tuple[np.ndarray, np.ndarray]:
    """log|P - N| and sign(P - N) for P = sum over the positive part, N over the negative, each given as (m, l):
    the larger in magnitude plus log1mexp of the difference of logs, so the result is as exact as the condition
    of P - N allows (an exact cancellation gives -inf with sign 0; inf - inf and NaN give NaN)."""
    lse_p = _lse(*pos, work)
    lse_n = _lse(*neg, work)
    with np.errstate(invalid="ignore", over="ignore"):
        # log N - log P from the parts, so (m_n - m_p) is formed before l's are added: no rounding of m + l
        m_p, l_p = (np.asarray(v, work) for v in pos)
        m_n, l_n = (np.asarray(v, work) for v in neg)
        d = (m_n - m_p) + (l_n - l_p)
        finite = np.isfinite(lse_p) & np.isfinite(lse_n)
        d = np.where(finite, d, 0)
        negative_wins = finite & (d > 0)
        big = np.where(negative_wins, lse_n, lse_p)
        out = big + _log1mexp(-np.abs(d))
        sign = np.where(negative_wins, -1.0, np.where(d == 0, 0.0, 1.0))
        # one side has no finite log: the other decides (both -inf: -inf, sign 0; +inf on one side: +inf with
        # that side's sign; +inf on both, or NaN: NaN)
        special = ~finite
        lone_p = special & (lse_p > lse_n)
        lone_n = special & (lse_n > lse_p)
        both_empty = special & (lse_p == -np.inf) & (lse_n == -np.inf)
        out = np.select([lone_p, lone_n, both_empty, special], [lse_p, lse_n, -np.inf, np.nan], out)
        sign = np.select([lone_p, lone_n, both_empty, special], [1.0, -1.0, 0.0, np.nan], sign)
    return out, sign


def _weights_dtype(name: str, a: np.ndarray, b_arg: Any, b: np.ndarray) -> np.dtype:
    """The result dtype of a and b together, SciPy's rule: NumPy's promotion (a Python number weak), integers and
    bools then float64."""
    if b.dtype.kind == "c":
        raise TypeError(f"{name}(): complex b is not supported; pass real weights (the real part, or abs(b) with "
                        "the signs separately)")
    if b.dtype.kind not in "biuf" or (b.dtype.kind == "f" and b.dtype.type not in _FLOAT_TYPES):
        raise TypeError(f"{name}(): b of dtype {b.dtype} is not supported; pass real weights as a float16, float32, "
                        "float64, integer or bool array")
    other = b_arg if isinstance(b_arg, (bool, int, float)) else b.dtype
    common = np.result_type(a.dtype, other)
    return np.dtype(np.float64) if common.kind in "biu" else common


def logsumexp(a: Any, axis: Any = None, b: Any = None, keepdims: bool = False, return_sign: bool = False,
              where: Any = None, *, dim: Any = None):
    """log(sum(b * exp(a))) over ``axis``, as ``scipy.special.logsumexp`` (SciPy 1.17), computed without overflow
    and as exactly as the row sums of softmax.

    ``axis``: None (all axes), an int (negative counts from the end) or a tuple of ints; ``()`` reduces nothing.
    ``dim`` is torch's spelling of it (giving both is a TypeError). ``b``: weights broadcast with ``a`` (the result
    has their joint shape), possibly zero (the entry takes no part, even if it is inf or NaN) or negative; a
    negative total gives NaN, or with ``return_sign=True`` the pair ``(log|total|, sign)``, sign +1, -1 or 0 (an
    exact cancellation, or nothing to sum: log is -inf). ``where``: a boolean mask broadcastable to that shape;
    entries where it is False take no part (as in a ``numpy.ma.MaskedArray``'s mask); a row with no entries gives
    -inf. ``keepdims`` keeps the reduced axes as size 1.

    Result dtype as SciPy's: float16, float32 and float64 stay (float16 and float32 are computed in float64 and
    rounded once), integers and bools give float64, ``b`` promotes with ``a`` as NumPy does. A 0-d input counts as
    1-d (SciPy's rule). Complex input is a TypeError.

    >>> import numpy as np, csoftmax
    >>> float(csoftmax.logsumexp(np.array([0.0, -60.0])))       # log1p(exp(-60)), to the last digit
    8.75651076269652e-27
    >>> csoftmax.logsumexp([1.0, 2.0], b=[1, -1], return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    """
    name = "logsumexp"
    if dim is not None:
        if axis is not None:
            raise TypeError(f"{name}(): got both axis and its alias dim; pass only one")
        axis = dim
    data, where = _split_masked(name, a, where)
    x = data if type(data) is np.ndarray else _as_array(name, data)
    x_dtype = _result_dtype(name, x, None)                   # TypeError for complex, longdouble, objects, strings
    if b is None:
        weights = None
        out_dtype = x_dtype
        shape = x.shape
    else:
        weights = _as_array(name, b)
        out_dtype = _weights_dtype(name, x, b, weights)
        try:
            shape = np.broadcast_shapes(x.shape, weights.shape)
        except ValueError:
            raise ValueError(f"{name}(): b of shape {weights.shape} does not broadcast with a of shape "
                             f"{x.shape}") from None
    if shape == ():
        shape = (1,)                                         # SciPy's atleast_1d
    ndim = len(shape)
    if axis is None:
        axes = tuple(range(ndim))
    elif isinstance(axis, tuple) and len(axis) == 0:
        axes = ()
    else:
        axes = _normalize_dims(name, axis, ndim)
    mask = None if where is None else _mask(name, where, shape)
    work = _work_type(out_dtype)

    if weights is None:
        if x.dtype != out_dtype and x.dtype.type not in _FLOAT_TYPES:
            with np.errstate(over="ignore", invalid="ignore"):
                x = x.astype(out_dtype)                      # integers and bools, before any arithmetic
        x = x.reshape(shape)
        value = _lse(*_parts(x, axes, mask), np.float64)     # (m + l of two float64s: one rounding)
        sign = None
        if return_sign:
            with np.errstate(invalid="ignore"):
                sign = np.where(np.isnan(value), np.nan, np.where(value == -np.inf, 0.0, 1.0))
    else:
        value, sign = _weighted(x, weights, shape, axes, mask, out_dtype, work)
        if not return_sign:
            value = np.where(sign < 0, np.nan, value)

    def finish(r):
        r = np.asarray(r)
        if r.dtype != out_dtype:
            with np.errstate(over="ignore", invalid="ignore"):
                # long double rounds to float16 through float32 in NumPy (twice); float64 rounds to it once
                r = (r.astype(np.float64) if out_dtype.itemsize < 8 else r).astype(out_dtype)
        if keepdims:
            r = np.expand_dims(r, axes) if axes else r
        return r[()] if r.ndim == 0 else r

    if return_sign:
        return finish(value), finish(sign)
    return finish(value)


def _weighted(x: np.ndarray, weights: np.ndarray, shape: tuple, axes: tuple, mask: Optional[np.ndarray],
              out_dtype: np.dtype, work: type) -> Tuple[np.ndarray, np.ndarray]:
    """log|sum(b exp(a))| and its sign: the weights folded into the exponents (a + log|b|, formed in the working
    type and rounded once to float64), the positive and the negative part each one row_parts, combined per row."""
    bw = np.broadcast_to(weights, shape)
    if x.dtype.type not in _FLOAT_TYPES:
        with np.errstate(over="ignore", invalid="ignore"):
            x = x.astype(out_dtype)                          # integers and bools first, as SciPy promotes them
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        folded = (np.asarray(x, work) + np.log(np.abs(np.asarray(bw, work)))).reshape(shape)
        folded = folded.astype(np.float64)
        # b == 0 takes no part whatever a is (SciPy's rule); NaN weights go with the positive part and make it NaN
        positive = ~(bw <= 0)
        negative = bw < 0
    if mask is not None:
        positive = positive & mask
        negative = negative & mask
    pos = _parts(folded, axes, positive if not positive.all() else None)
    if not negative.any():
        value = _lse(*pos, work)
        with np.errstate(invalid="ignore"):
            sign = np.where(np.isnan(value), np.nan, np.where(value == -np.inf, 0.0, 1.0))
        return value, sign
    neg = _parts(folded, axes, negative)
    return _signed_lse(pos, neg, work)


class SoftmaxState:
    """The per-row state of the softmax family along ``dim``, mergeable across blocks of the rows.

    For every row (the entries along ``dim``; several dims together when ``dim`` is a tuple): ``max`` is the
    largest entry and ``logsum`` = log(sum(exp(x - max))), both arrays of the block's shape with ``dim`` kept as
    size 1, so they broadcast against a block. A block's state comes from :meth:`of`; states of blocks that split
    the same rows along ``dim`` (other dims equal) combine with :meth:`merge` or :meth:`merge_all`, in any order and
    grouping; :meth:`logsumexp` finishes the rows, :meth:`softmax` and :meth:`log_softmax` normalise any block of
    them against the merged rows. The results are within an ulp or two of the one-shot functions on the whole rows.

    Precision: ``max`` is float64 (exactly the entry); ``logsum`` is float64 for float16/float32 input and
    np.longdouble for float64 input (where it is no wider than float64, float64: merges then round in the last
    bit). ``dtype`` is the result dtype of the block(s) (integers and bools: float64; merged states: the wider).

    Rows with no entries (an empty block, or every entry masked) have max -inf and logsum NaN, and merge as
    nothing; a row with a NaN has max NaN, one with +inf max +inf: their results follow the one-shot functions
    (logsumexp -inf, NaN, +inf; softmax NaN).

    >>> import numpy as np, csoftmax
    >>> x = np.array([[0.0, 1.0, 2.0, 3.0]])
    >>> s = csoftmax.SoftmaxState.of(x[:, :2], dim=1).merge(csoftmax.SoftmaxState.of(x[:, 2:], dim=1))
    >>> s.logsumexp().round(6), csoftmax.logsumexp(x, axis=1).round(6)
    (array([3.44019]), array([3.44019]))
    >>> np.allclose(s.softmax(x[:, 2:]), csoftmax.softmax(x, dim=1)[:, 2:])
    True
    """

    __slots__ = ("max", "logsum", "dim", "dtype")

    def __init__(self, max: np.ndarray, logsum: np.ndarray, dim: Any, dtype: Any) -> None:
        """A state from its parts (as :meth:`of` and :meth:`merge` make them, or as saved): ``max`` and ``logsum``
        of one shape with size 1 along ``dim`` (an int or a tuple of ints, non-negative), ``dtype`` the result
        dtype (float16, float32 or float64)."""
        dtype = np.dtype(dtype)
        if dtype.type not in _FLOAT_TYPES:
            raise TypeError(f"SoftmaxState: dtype must be float16, float32 or float64, not {dtype}")
        m = np.asarray(max, dtype=np.float64)
        l = np.asarray(logsum, dtype=_work_type(dtype))
        if m.shape != l.shape:
            raise ValueError(f"SoftmaxState: max has shape {m.shape}, logsum has shape {l.shape}; they must match")
        dims = _state_dims("SoftmaxState", dim, m.ndim)
        if any(m.shape[d] != 1 for d in dims):
            raise ValueError(f"SoftmaxState: max and logsum must have size 1 along dim {dim}, not shape {m.shape}")
        self.max = m
        self.logsum = l
        self.dim = dims if isinstance(dim, tuple) else dims[0]
        self.dtype = dtype

    @classmethod
    def of(cls, block: Any, dim: Any, *, where: Any = None) -> "SoftmaxState":
        """The state of ``block``'s rows along ``dim`` (an int or a tuple of ints, negative counting from the end):
        entries where ``where`` is False (or masked in a ``numpy.ma.MaskedArray``) take no part."""
        name = "SoftmaxState.of"
        data, where = _split_masked(name, block, where)
        x = data if type(data) is np.ndarray else _as_array(name, data)
        dtype = _result_dtype(name, x, None)
        if x.ndim == 0:
            raise ValueError(f"{name}(): a block has at least one dimension (the rows' dim); pass x.reshape(1)")
        if dim is None:
            raise TypeError(f"{name}(): dim is required (an int or a tuple of ints)")
        axes = _normalize_dims(name, dim, x.ndim)
        if x.dtype.type not in _FLOAT_TYPES:
            with np.errstate(over="ignore", invalid="ignore"):
                x = x.astype(dtype)
        mask = None if where is None else _mask(name, where, x.shape)
        m, l = _parts(x, axes, mask)
        norm = axes if isinstance(dim, tuple) else axes[0]
        return cls(np.expand_dims(m, axes), np.expand_dims(l, axes), norm, dtype)

    @property
    def shape(self) -> tuple:
        return self.max.shape

    @property
    def _dims(self) -> tuple:
        return self.dim if isinstance(self.dim, tuple) else (self.dim,)

    def merge(self, other: "SoftmaxState") -> "SoftmaxState":
        """The state of the rows made of both states' entries. Commutative (the same bits either way round) and
        associative to the working type's rounding."""
        if not isinstance(other, SoftmaxState):
            raise TypeError(f"SoftmaxState.merge(): other must be a SoftmaxState, not {type(other).__name__}")
        if set(self._dims) != set(other._dims):
            raise ValueError(f"SoftmaxState.merge(): the states are along different dims ({self.dim} and "
                             f"{other.dim})")
        if self.shape != other.shape:
            raise ValueError(f"SoftmaxState.merge(): the states have shapes {self.shape} and {other.shape}; they "
                             "must describe the same rows")
        dtype = np.promote_types(self.dtype, other.dtype)
        work = _work_type(dtype)
        m1, m2 = self.max, other.max
        l1, l2 = np.asarray(self.logsum, work), np.asarray(other.logsum, work)
        with np.errstate(invalid="ignore", over="ignore"):
            m = np.maximum(m1, m2)
            # each part's log-sum relative to the common max: exactly l for the part that holds it
            t1 = np.where(m1 == -np.inf, -np.inf, (np.asarray(m1, work) - m) + l1)
            t2 = np.where(m2 == -np.inf, -np.inf, (np.asarray(m2, work) - m) + l2)
            hi = np.maximum(t1, t2)
            lo = np.minimum(t1, t2)
            l = np.where(np.isfinite(m), hi + np.log1p(np.exp(lo - hi)), np.nan)
        return SoftmaxState(m, l, self.dim, dtype)

    @staticmethod
    def merge_all(states: Iterable["SoftmaxState"]) -> "SoftmaxState":
        """All the states merged (any iterable, e.g. a generator of per-chunk states); at least one."""
        iterator = iter(states)
        try:
            first = next(iterator)
        except StopIteration:
            raise ValueError("SoftmaxState.merge_all(): no states to merge; pass at least one") from None
        if not isinstance(first, SoftmaxState):
            raise TypeError(f"SoftmaxState.merge_all(): expected SoftmaxState items, not {type(first).__name__}")
        return functools.reduce(SoftmaxState.merge, iterator, first)

    def logsumexp(self, keepdims: bool = False) -> np.ndarray:
        """log(sum(exp(x))) of every row, in the state's dtype (rounded once from the working type): -inf for a row
        with no entries or only -inf ones, +inf with a +inf entry, NaN with a NaN."""
        value = _lse(self.max, self.logsum, _work_type(self.dtype))
        with np.errstate(over="ignore", invalid="ignore"):
            r = (value.astype(np.float64) if self.dtype.itemsize < 8 else value).astype(self.dtype)
        return r if keepdims else np.squeeze(r, self._dims)

    def softmax(self, block: Any, *, where: Any = None) -> np.ndarray:
        """softmax of ``block`` (entries of the rows this state describes: its shape is the state's except along
        dim) against the merged rows: exp(x - max - logsum), in the block's result dtype. Entries where ``where`` is
        False give 0; rows whose max is not finite give NaN elsewhere, as the one-shot softmax does."""
        return self._apply("SoftmaxState.softmax", block, where, False)

    def log_softmax(self, block: Any, *, where: Any = None) -> np.ndarray:
        """log_softmax of ``block`` against the merged rows: (x - max) - logsum; masked entries give -inf."""
        return self._apply("SoftmaxState.log_softmax", block, where, True)

    def _apply(self, name: str, block: Any, where: Any, log: bool) -> np.ndarray:
        data, where = _split_masked(name, block, where)
        x = data if type(data) is np.ndarray else _as_array(name, data)
        out_dtype = _result_dtype(name, x, None)
        dims = self._dims
        if x.ndim != len(self.shape) or any(x.shape[i] != n for i, n in enumerate(self.shape) if i not in dims):
            raise ValueError(f"{name}(): block of shape {x.shape} is not made of the state's rows (state shape "
                             f"{self.shape}, dim {self.dim}): only the size along dim may differ")
        if x.dtype.type not in _FLOAT_TYPES:
            with np.errstate(over="ignore", invalid="ignore"):
                x = x.astype(out_dtype)
        mask = None if where is None else _mask(name, where, x.shape)
        # apply takes float64 (m, l): a long double logsum rounds once here (within half an ulp of l)
        m = np.squeeze(self.max, dims)
        l = np.squeeze(self.logsum, dims).astype(np.float64)
        out = np.empty_like(x, dtype=out_dtype, subok=False)
        if out.size:
            if len(dims) == 1:
                _rows.apply(x, dims[0], m, l, log, out)
            else:
                k = len(dims)
                merged = _merge_axes(x, dims)
                result = np.empty(merged.shape, out_dtype)
                _rows.apply(merged, merged.ndim - 1, m, l, log, result)
                moved_shape = np.moveaxis(x, dims, range(-k, 0)).shape
                np.copyto(out, np.moveaxis(result.reshape(moved_shape), range(-k, 0), dims))
        if mask is not None:
            np.copyto(out, -np.inf if log else 0, where=~mask)
        return out

    def __reduce__(self):
        return (SoftmaxState, (self.max, self.logsum, self.dim, self.dtype))

    def __repr__(self) -> str:
        return f"SoftmaxState(shape={self.shape}, dim={self.dim}, dtype={self.dtype})"


def _state_dims(name: str, dim: Any, ndim: int) -> tuple:
    if dim is None:
        raise TypeError(f"{name}: dim is required (an int or a tuple of ints)")
    return _normalize_dims(name, dim, ndim)
