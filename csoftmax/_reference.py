"""Slow, obviously correct softmax in NumPy: the oracle for tests and for the self-check of `python -m csoftmax`.

It follows the same semantics as csoftmax.softmax (output dtype, NaN rules) but computes in long double (or float64
when asked), one NumPy operation at a time.
"""
import numpy as np

__all__ = ["softmax_reference"]


def softmax_reference(x, axis, out_dtype=None, work_dtype=np.longdouble):
    """exp(x - max) / sum(exp(x - max)) along `axis`, computed in `work_dtype`, returned as `out_dtype`
    (default: x's dtype, float64 for integers and bools)."""
    x = np.asarray(x)
    if out_dtype is None:
        out_dtype = x.dtype if x.dtype.kind == "f" else np.float64
    work = x.astype(work_dtype)
    if work.ndim == 0:
        work = work.reshape(1)
        axis = 0
        scalar = True
    else:
        scalar = False
    with np.errstate(all="ignore"):
        row_max = np.max(work, axis=axis, keepdims=True)
        e = np.exp(work - row_max)
        result = e / np.sum(e, axis=axis, keepdims=True)
        # a row whose max is NaN or infinite is NaN throughout (exp(inf - inf), or 0/0 for all -inf)
        result = np.where(np.isfinite(row_max), result, np.nan)
    result = result.astype(out_dtype)
    return result.reshape(()) if scalar else result
