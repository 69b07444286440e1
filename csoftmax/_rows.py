"""Per-row state of the softmax family: the two primitives that logsumexp, the mergeable state and the Dask passes
are built on.

For rows along `axis` (the entries where `mask` is true, all when it is None):
  m = the largest entry (NaN if any entry is NaN, -inf if there is none or all are -inf);
  l = log(sum(exp(x - m))) >= 0, NaN where m is not finite.
logsumexp is m + l; softmax is exp(x - m - l), log_softmax (x - m) - l; `merge` combines the states of parts of
the same rows (SoftmaxState and the Dask passes). row_parts and apply run on the C engine's kernels
(CSM_LOGSUMEXP, and softmax / log_softmax against a given state).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import _csoftmax


def _new_state(x: np.ndarray, axis: int) -> np.ndarray:
    """An uninitialised state for x's rows: float64, x's shape without the axis and then 2, its dimensions laid
    out in x's memory order (so the engine walks the state as it walks x)."""
    dims = [d for d in range(x.ndim) if d != axis]
    strides = [abs(x.strides[d]) for d in dims]
    if all(a >= b for a, b in zip(strides, strides[1:])):     # (C order and the like: no transpose)
        return np.empty(tuple(x.shape[d] for d in dims) + (2,))
    order = sorted(range(len(dims)), key=lambda i: -strides[i])
    state = np.empty(tuple(x.shape[dims[i]] for i in order) + (2,))
    return state.transpose(tuple(np.argsort(order)) + (len(dims),))


def _as_input(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind != "f" or x.dtype.itemsize not in (2, 4, 8):
        raise TypeError(f"internal: the row state needs float16, float32 or float64 input, not {x.dtype}")
    return x


def row_parts(x: np.ndarray, axis: int, mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(m, l) of every row of x (float16/32/64, ndim >= 1, any strides and byte order) along axis, as two float64
    arrays of x's shape without the axis. l is as exact as log_softmax's log S: float16/float32 rows to float32
    precision, float64 rows to float64's."""
    x = _as_input(x)
    state = _new_state(x, axis)
    if x.shape[axis] == 0:
        state[..., 0] = -np.inf
        state[..., 1] = np.nan
    elif state.size:
        if mask is not None:
            mask = np.broadcast_to(mask, x.shape)
        _csoftmax.row_state(x, state, axis, mask)
    return state[..., 0], state[..., 1]


def apply(x: np.ndarray, axis: int, m: np.ndarray, l: np.ndarray, log: bool, out: np.ndarray) -> np.ndarray:
    """softmax (log: log_softmax) of x's rows along axis against given (m, l) (float64, x's shape without the
    axis), into out (x's shape, float16/32/64, native and aligned, x itself or clear of it): exp(x - m - l) or
    (x - m) - l, NaN in rows whose m is not finite. Entries of x above m give values above 1 (above 0): the
    caller's m must be the rows' maximum."""
    x = _as_input(x)
    if out.size == 0:
        return out
    state = _new_state(x, axis)
    state[..., 0] = m
    state[..., 1] = l
    _csoftmax.apply_state(x, state, out, axis, _csoftmax.OP_LOG_SOFTMAX if log else _csoftmax.OP_SOFTMAX)
    return out


def merge(m: np.ndarray, l: np.ndarray, axes: tuple, work: type) -> Tuple[np.ndarray, np.ndarray]:
    """The states (m, l) of parts of the same rows, stacked along `axes`, merged into one per row (keepdims), in
    the working type `work` (l's type; m stays float64).

    m = max(m_i); with a_i = l_i + (m_i - m) (each part's log-sum on the merged scale, <= l of the part at the
    max), l = A + log1p(sum of exp(a_i - A) over the terms other than one largest, A) -- never 1 + small, which
    would round a small l's digits away. Ties with A add exactly 1 each. Parts whose m is -inf (nothing, or all
    -inf) add nothing; a row whose merged m is not finite has l = NaN, as row_parts gives. The result does not
    depend on the parts' order (the same bits).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        m_max = np.max(m, axis=axes, keepdims=True, initial=-np.inf)   # NaN propagates, +inf wins
        finite = np.isfinite(m_max)
        takes_part = np.isfinite(m) & finite
        shift = np.where(finite, m_max, 0.0).astype(work)
        a = np.where(takes_part, np.asarray(l, work) + (np.asarray(m, work) - shift), -np.inf).astype(work)
        top = np.max(a, axis=axes, keepdims=True, initial=-np.inf)
        is_top = a == top
        rest = np.sum(np.where(is_top, 0, np.exp(a - np.where(np.isfinite(top), top, 0))), axis=axes,
                      keepdims=True)
        rest += np.count_nonzero(is_top, axis=axes, keepdims=True) - 1
        return m_max, np.where(finite, top + np.log1p(rest), np.nan).astype(work)
