"""Softmax and log-softmax of Dask arrays, with the semantics of the in-memory csoftmax functions.

Optional extra: ``pip install 'csoftmax[dask]'``. The core package never imports Dask; only this module does.

Two plans, chosen from the chunks of the softmax axis:

* The axis lies in one chunk. Every block then holds whole rows, so each block goes through csoftmax's kernel on
  its own: one blockwise layer, nothing else.
* The axis spans several chunks. No block sees a whole row, and gathering rows into one chunk would make a chunk
  as large as the axis, which is what chunking was meant to avoid. Instead:

  1. pass 1: every block gives per-row partials (m = max, s = sum(exp(x - m))), merged by Dask's tree reduction
     with the associative rule  m = max(m1, m2),  s = s1*exp(m1 - m) + s2*exp(m2 - m);
  2. pass 2: every block is normalised against its rows' totals: exp(x - m) / s, or x - m - log(s).

  Partials and the normalisation are computed in float64 (in cache-sized pieces of a block), whatever the input
  dtype, and the result is rounded once to the output dtype: float16 and float32 results are within 1 ulp of
  the exact softmax however the axis is chunked. s is carried as r = s - 1 so that log(s) = log1p(r) keeps the
  log-softmax of a row's maximum accurate when the other terms are tiny (as the in-memory log_softmax does).

  Pass 2 cannot start before pass 1 has seen every block of a row. Fed from the same tasks, Dask would keep every
  input block in memory in between: the whole array. So pass 2 reads its input from a copy of the input's graph
  that is bound to the statistics (``dask.graph_manipulation.bind``): the input is produced a second time, after
  pass 1, and every block is released as soon as it has been used. A worker then holds a few blocks at a time.
  The price is that the input is computed (or read) twice; if it is expensive to compute and fits in memory,
  ``persist()`` it first, and both passes read the persisted blocks.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np

try:
    import dask.array as da
    from dask.base import tokenize
    from dask.graph_manipulation import bind
except ImportError as exc:  # pragma: no cover - exercised only without Dask
    raise ImportError(
        "csoftmax.dask needs Dask, which is not installed (or incomplete): "
        "pip install 'csoftmax[dask]'  (or: pip install 'dask[array]')"
    ) from exc

import csoftmax as _csoftmax
from ._api import _FLOAT_TYPES, _normalize_dim, _result_dtype, needs_cast, quiet_cast

__all__ = ["softmax", "log_softmax"]

# Per-row statistics of pass 1, kept together in one array so that Dask's reduction can carry them;
# m is the row maximum, r = sum(exp(x - m)) - 1 (see _chunk_stats).
_STATS = np.dtype([("m", np.float64), ("r", np.float64)])

# Pieces of a block converted to float64 at a time: 2**17 elements are 1 MiB, which stays in cache between the
# few NumPy operations on it (measured: 20-25% faster than 2**16 or 2**20 on a 64 MiB block), and the temporaries
# of a task stay small next to its block.
_PIECE_ELEMENTS = 1 << 17


def softmax(x: "da.Array", dim: Any, dtype: Any = None) -> "da.Array":
    """Softmax of the Dask array ``x`` along ``dim``, lazily: ``exp(x - max) / sum(exp(x - max))``.

    Same semantics as ``csoftmax.softmax`` (negative dims, torch's range error, dtype rules, NaN rules), except that
    ``dim`` is required. Returns a Dask array with ``x``'s shape and chunks and the result dtype. The softmax axis
    is never rechunked: when it spans several chunks, the row statistics are combined by a tree reduction.
    """
    return _apply("softmax", x, dim, dtype)


def log_softmax(x: "da.Array", dim: Any, dtype: Any = None) -> "da.Array":
    """Log-softmax of the Dask array ``x`` along ``dim``, lazily: ``x - max - log(sum(exp(x - max)))``.

    Same rules as :func:`softmax` (and as ``csoftmax.log_softmax`` in memory).
    """
    return _apply("log_softmax", x, dim, dtype)


def _apply(name: str, x: Any, dim: Any, dtype: Any) -> "da.Array":
    if not isinstance(x, da.Array):
        raise TypeError(
            f"csoftmax.dask.{name}(): x must be a dask.array.Array, not {type(x).__module__}.{type(x).__name__}; "
            f"use csoftmax.{name} for in-memory arrays, or wrap it with dask.array.from_array"
        )
    # The same checks, in the same order, as the in-memory functions (csoftmax._api._prepare).
    out_dtype = _result_dtype(name, x, dtype)
    if dim is None:
        # no deprecated implicit choice here: a distributed computation should not guess its axis
        raise TypeError(f"csoftmax.dask.{name}(): dim is required (there is no implicit choice); pass dim=X")
    axis = _normalize_dim(name, dim, x.ndim)
    x = _cast_input(x, out_dtype)

    token = tokenize(name, x, axis, out_dtype)
    out_meta = np.empty((0,) * x.ndim, dtype=out_dtype)

    if x.ndim == 0 or x.numblocks[axis] == 1 or 0 in x.shape:
        # Whole rows in every block: the kernel does everything, block by block.
        return x.map_blocks(
            partial(_whole_rows, kind=name, axis=axis, out_dtype=out_dtype),
            dtype=out_dtype,
            meta=out_meta,
            name=f"csoftmax-{name}-{token}",
        )

    # Pass 1: per-row (max, sum of exp) of the whole axis, by a tree reduction over the axis's chunks.
    stats = da.reduction(
        x,
        _chunk_stats,
        _final_stats,
        combine=_merge_stats,
        axis=axis,
        keepdims=True,
        dtype=_STATS,
        concatenate=True,
        meta=np.empty((0,) * x.ndim, dtype=_STATS),
        name=f"csoftmax-{name}-stats",
    )
    # Pass 2 reads a copy of x's graph that starts only once the statistics are done (see the module docstring):
    # otherwise every block of x would stay in memory between the two passes.
    x_again = bind(x, stats, seed=token)
    # stats has one block along the axis; blockwise broadcasts it against every block of that row of blocks.
    return da.map_blocks(
        partial(_normalise, kind=name, axis=axis, out_dtype=out_dtype),
        x_again,
        stats,
        dtype=out_dtype,
        meta=out_meta,
        name=f"csoftmax-{name}-{token}",
    )


def _cast_input(x: "da.Array", out_dtype: np.dtype) -> "da.Array":
    """The input cast of the in-memory functions (csoftmax._api.needs_cast / quiet_cast), block by block."""
    if needs_cast(x.dtype, out_dtype):
        return x.map_blocks(quiet_cast, out_dtype, dtype=out_dtype, meta=np.empty((0,) * x.ndim, dtype=out_dtype))
    return x


# ---------------------------------------------------------------------------------------------------------------
# Block functions. They run on the workers; everything they need comes in as arguments.


def _whole_rows(block: np.ndarray, kind: str, axis: int, out_dtype: np.dtype) -> np.ndarray:
    """The in-memory function on a block that holds whole rows."""
    if kind == "softmax":
        return _csoftmax.softmax(block, dim=axis, dtype=out_dtype)
    in_memory = getattr(_csoftmax, "log_softmax", None)
    if in_memory is not None:
        return in_memory(block, dim=axis, dtype=out_dtype)
    # No in-memory log_softmax in this csoftmax: the two-pass arithmetic below, applied to the block alone.
    if block.ndim == 0:
        return _whole_rows(block.reshape(1), kind, 0, out_dtype).reshape(())
    return _normalise(block, _final_stats(_chunk_stats(block, axis), axis), kind, axis, out_dtype)


def _one_axis(axis) -> int:
    """Dask's reduction passes the axis as a 1-tuple."""
    return axis[0] if isinstance(axis, tuple) else axis


def _pieces(shape: tuple, axis: int):
    """Cuts a block of `shape` into pieces of about _PIECE_ELEMENTS along its longest dimension.

    Returns (the largest piece's size, [(index of a piece, index of its rows in a keepdims statistics array)]).
    """
    full = (slice(None),) * len(shape)
    size = math.prod(shape)
    if size <= _PIECE_ELEMENTS:
        return size, [(full, full)]
    d = max(range(len(shape)), key=shape.__getitem__)
    step = max(1, _PIECE_ELEMENTS * shape[d] // size)
    pieces = []
    for start in range(0, shape[d], step):
        piece = full[:d] + (slice(start, start + step),) + full[d + 1 :]
        # the statistics have length 1 along the softmax axis: a piece of the axis uses all of them
        pieces.append((piece, piece if d != axis else full))
    return size // shape[d] * step, pieces


def _scratch(flat: np.ndarray, shape: tuple) -> np.ndarray:
    """The first prod(shape) elements of the flat scratch array, shaped like a piece."""
    return flat[: math.prod(shape)].reshape(shape)


def _pack(m: np.ndarray, r: np.ndarray) -> np.ndarray:
    stats = np.empty(m.shape, dtype=_STATS)
    stats["m"] = m
    stats["r"] = r
    return stats


def _chunk_stats(block: np.ndarray, axis, keepdims: bool = True) -> np.ndarray:
    """Pass 1 on one block: per row, m = max and r = sum(exp(x - m)) - 1 over the block's part of the axis.

    r leaves out the 1 that the maximum contributes, summing the other terms directly: log_softmax needs
    log(sum) = log1p(r), and when the other terms are tiny, 1 + r would round most of their digits away
    (log_softmax([0, -30])[0]: -log(1 + exp(-30)) = -9.348e-14, where -log1p(exp(-30)) = -9.357623e-14, the value
    of the in-memory csoftmax.log_softmax).
    """
    axis = _one_axis(axis)
    with np.errstate(all="ignore"):  # NaN and infinities are expected input; _final_stats settles those rows
        # the max is exact in the input's type; initial=-inf gives empty parts of the axis m = -inf
        m = np.max(block, axis=axis, keepdims=True, initial=-np.inf).astype(np.float64)
        # rows whose max is not finite end up NaN (or, all -inf in this block, contribute nothing): any finite
        # shift keeps exp quiet for them
        shift = np.where(np.isfinite(m), m, 0.0)
        r = np.zeros(m.shape, dtype=np.float64)
        ones = np.zeros(m.shape, dtype=np.float64)  # terms equal to 1: the maximum (and its ties)
        largest, pieces = _pieces(block.shape, axis)
        # scratch allocated once per block and reused by every piece (see _normalise)
        work, flags = np.empty(largest, np.float64), np.empty(largest, np.bool_)
        for piece, rows in pieces:
            x = block[piece]
            e, is_one = _scratch(work, x.shape), _scratch(flags, x.shape)
            np.copyto(e, x)  # converted to float64: exact (faster than letting subtract convert)
            np.subtract(e, shift[rows], out=e)
            np.exp(e, out=e)
            np.equal(e, 1.0, out=is_one)
            ones[rows] += is_one.sum(axis=axis, keepdims=True)
            np.copyto(e, 0.0, where=is_one)
            r[rows] += e.sum(axis=axis, keepdims=True)
        # one term of 1 is implicit; ties of the max add whole ones (exactly). A part with no finite value (all
        # -inf, or empty) has no term of 1 and gets r = -1, i.e. a sum of 0.
        r += ones - 1.0
    return _pack(m, r)


def _merge_stats(parts: np.ndarray, axis, keepdims: bool = True) -> np.ndarray:
    """Merges the partials of several blocks (concatenated along the axis) into one per row.

    With s_i = 1 + r_i:  m = max(m_i),  s = sum(s_i * exp(m_i - m)), associative, so Dask may merge in any tree
    shape. Kept as r = s - 1 without ever forming 1 + r_i: parts at the new max scale by exactly 1, one of them
    keeps the implicit 1, each other one adds 1 exactly; parts below add (1 + r_i) * exp(m_i - m).
    """
    axis = _one_axis(axis)
    m_i, r_i = parts["m"], parts["r"]
    with np.errstate(all="ignore"):
        m = np.max(m_i, axis=axis, keepdims=True, initial=-np.inf)  # NaN propagates, +inf wins
        at_max = m_i == m
        # comparing, not subtracting, for parts at the max: this also covers parts that are all -inf, whose
        # exp(-inf - -inf) would be NaN and poison the sum of a row with finite values in other blocks
        scale = np.where(at_max, 1.0, np.exp(m_i - m))
        r = (
            np.sum(r_i * scale, axis=axis, keepdims=True)
            + np.sum(np.where(at_max, 0.0, scale), axis=axis, keepdims=True)
            + (np.count_nonzero(at_max, axis=axis, keepdims=True) - 1.0)
        )
    return _pack(m, r)


def _final_stats(parts: np.ndarray, axis, keepdims: bool = True) -> np.ndarray:
    """The last merge, and torch's rule: a row whose max is NaN or +inf, or that is all -inf, is NaN throughout.

    Setting r = NaN for those rows makes pass 2 produce NaN for them with no further test.
    """
    stats = _merge_stats(parts, axis)
    stats["r"][~np.isfinite(stats["m"])] = np.nan
    return stats


def _normalise(block: np.ndarray, stats: np.ndarray, kind: str, axis: int, out_dtype: np.dtype) -> np.ndarray:
    """Pass 2 on one block: exp(x - m) / s (softmax) or x - m - log(s) (log_softmax), cast to out_dtype."""
    out = np.empty_like(block, dtype=out_dtype)  # the block's memory order, as the in-memory functions keep it
    m = stats["m"]
    largest, pieces = _pieces(block.shape, axis)
    # One float64 scratch array for all pieces: allocating per piece would cost an mmap, page faults and a munmap
    # every time in Dask's worker processes, whose malloc settings (MALLOC_TRIM_THRESHOLD_) keep arrays of this
    # size out of the reusable heap (measured with MALLOC_TRIM_THRESHOLD_=65536: about 3x slower).
    work = np.empty(largest, np.float64)
    with np.errstate(all="ignore"):
        if kind == "softmax":
            s = 1.0 + stats["r"]
            for piece, rows in pieces:
                x = block[piece]
                e = _scratch(work, x.shape)
                np.copyto(e, x)  # float64, exactly
                np.subtract(e, m[rows], out=e)
                np.exp(e, out=e)
                np.divide(e, s[rows], out=out[piece], casting="same_kind")  # rounds once, to the output dtype
        else:
            log_s = np.log1p(stats["r"])
            for piece, rows in pieces:
                x = block[piece]
                e = _scratch(work, x.shape)
                np.copyto(e, x)
                np.subtract(e, m[rows], out=e)
                np.subtract(e, log_s[rows], out=out[piece], casting="same_kind")
    return out
