"""Per-row state of the softmax family: the two primitives that logsumexp, the mergeable state and the Dask passes
are built on.

For rows along `axis` (the entries where `mask` is true, all when it is None):
  m = the largest entry (NaN if any entry is NaN, -inf if there is none or all are -inf);
  l = log(sum(exp(x - m))) >= 0, NaN where m is not finite.
logsumexp is m + l; softmax is exp(x - m - l), log_softmax (x - m) - l.

These bodies are NumPy stand-ins (extended precision, slow) with the final contract; the C engine replaces them.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def row_parts(x: np.ndarray, axis: int, mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(m, l) of every row of x (float16/32/64, any strides and byte order) along axis, as two float64 arrays of
    x's shape without the axis. float16/float32 rows give l to about 2^-45 relative, float64 rows to an ulp."""
    wide = np.asarray(x, dtype=np.longdouble)
    if mask is not None:
        wide = np.where(mask, wide, -np.inf)
    shape = wide.shape[:axis] + wide.shape[axis + 1:]
    if wide.shape[axis] == 0:
        return np.full(shape, -np.inf), np.full(shape, np.nan)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # rows whose m is not finite: l = NaN
        m = np.max(wide, axis=axis, keepdims=True)
        finite = np.isfinite(m)
        e = np.exp(wide - np.where(finite, m, 0))
        # l = log1p of the terms other than one maximum's 1 (ties add exactly 1 each): forming 1 + r would round
        # away the digits of a tiny l, which is log_softmax of the row's maximum
        top = wide == m
        r = np.sum(np.where(top, 0, e), axis=axis, keepdims=True) + (np.count_nonzero(top, axis, keepdims=True) - 1)
        l = np.where(finite, np.log1p(r), np.nan)
    return np.squeeze(m, axis).astype(np.float64), np.squeeze(l, axis).astype(np.float64)


def apply(x: np.ndarray, axis: int, m: np.ndarray, l: np.ndarray, log: bool, out: np.ndarray) -> np.ndarray:
    """softmax (log: log_softmax) of x's rows along axis against given (m, l) (float64, x's shape without the
    axis), into out (x's shape, float16/32/64): exp(x - m - l) or (x - m) - l, NaN in rows whose m is not
    finite. Entries of x above m give values above 1 (above 0): the caller's m must be the rows' maximum."""
    wide = np.asarray(x, dtype=np.longdouble)
    mm = np.expand_dims(np.asarray(m, np.longdouble), axis)
    ll = np.expand_dims(np.asarray(l, np.longdouble), axis)
    with np.errstate(invalid="ignore", over="ignore"):
        y = (wide - mm) - ll
        if not log:
            y = np.exp(y)
        y = np.where(np.isfinite(mm), y, np.nan)
        np.copyto(out, y, casting="unsafe")  # below float16's range: -inf, quietly, as the in-memory functions
    return out
