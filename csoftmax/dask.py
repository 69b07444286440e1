"""Softmax, log-softmax, softmin and logsumexp of Dask arrays, with the semantics of the in-memory csoftmax functions.

Optional extra: ``pip install 'csoftmax[dask]'``. The core package never imports Dask; only this module does
(``csoftmax.softmax(dask_array)`` and its siblings come here through :func:`dispatch`).

Design: everything is built on the two row primitives of ``csoftmax._rows``: ``row_parts`` (the per-row state
``(m, l)``, m the max and l = log(sum(exp(x - m))), of a block) and ``apply`` (a block's softmax against given
states). This module only arranges them in a graph; it never computes an exponential itself.

* The axis lies in one chunk. Every block holds whole rows and goes through the in-memory kernel: one blockwise
  layer, nothing else.
* The axis spans several chunks. The axis is never rechunked (that would make a chunk as long as the axis):

  1. pass 1: ``row_parts`` of every block, merged by Dask's tree reduction with the order-independent rule
     m = max(m1, m2),  l = log(exp(l1 + m1 - m) + exp(l2 + m2 - m)), evaluated as the largest term plus log1p of
     the others so that a row whose l is tiny (log_softmax of its maximum) keeps its relative accuracy. Merges run
     in long double and keep l in long double between merges; the final l is rounded once to float64.
  2. pass 2: ``apply`` on every block, with its rows' merged state.

  Memory. Pass 2 cannot start on a row before pass 1 has seen every block of that row. Fed from the same input
  tasks, Dask would keep every input block in memory in between. So by default (``recompute=True``) pass 2 reads
  its input from a copy of the input's graph whose first tasks wait for the merged states of the rows they feed
  (:func:`_bound_copy`): each block is produced a second time after its own rows' states are known, and released
  as soon as it has been used. A worker holds about two chunks at a time (its input and output blocks), and no
  block waits for rows other than its own: there is no whole-array barrier.

  The price is that the input is computed (or read) twice. Two consequences:

  * An input that is not the same when computed again (random numbers drawn without a fixed seed, a file or
    table that changes) gives rows that do not sum to 1. Pass ``recompute=False`` (pass 2 reuses pass 1's blocks:
    they stay in memory until their rows' states are known, up to the whole array), or ``x = x.persist()`` first.
  * An input that is expensive to produce and fits in the cluster's memory is better persisted: both passes then
    read the persisted blocks.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

try:
    import dask.array as da
    from dask._task_spec import DataNode, Task, TaskRef, convert_legacy_graph
    from dask.base import clone_key, tokenize
    from dask.core import flatten
    from dask.highlevelgraph import HighLevelGraph
except ImportError as exc:  # pragma: no cover - exercised only without Dask
    raise ImportError(
        "csoftmax.dask needs Dask, which is not installed (or incomplete): "
        "pip install 'csoftmax[dask]'  (or: pip install 'dask[array]')"
    ) from exc

import csoftmax as _csoftmax

from . import _rows
from ._api import _normalize_dim, _normalize_dims, _result_dtype, needs_cast, quiet_cast

__all__ = ["softmax", "log_softmax", "softmin", "logsumexp", "dispatch"]

# The per-row state carried by Dask's reduction: m (float64, an input value, exact) and l in long double, so that a
# tree of merges adds no rounding of its own; the final l is rounded to float64 once, for apply.
_STATE = np.dtype([("m", np.float64), ("l", np.longdouble)])


# ------------------------------------------------------------------------------------------------- public functions


def softmax(x: "da.Array", dim: Any = None, dtype: Any = None, *, axis: Any = None, out: Any = None,
            where: Any = None, recompute: bool = True, split_every: Any = None) -> "da.Array":
    """Softmax of the Dask array ``x`` along ``dim`` (or its alias ``axis``), lazily.

    Same semantics as ``csoftmax.softmax`` (negative dims, torch's range error, dtype rules, NaN rules), except that
    ``dim`` is required and is one int. Returns a Dask array with ``x``'s shape and chunks and the result dtype.
    The axis is never rechunked: when it spans several chunks, per-row states are merged by a tree reduction
    (``split_every`` as in ``dask.array.reduction``), then every block is normalised.

    ``recompute=True`` (the default) produces the input a second time for the normalisation, after its rows'
    states are known, which bounds memory to about two chunks per worker; an input that is not the same when
    computed again (unseeded random numbers, a changing source) then gives rows that do not sum to 1: pass
    ``recompute=False`` to keep pass 1's blocks instead (up to the whole array in memory), or persist ``x`` first.

    ``out=`` is refused (the result is lazy: ``dask.array.store`` it), so are ``where=`` and masked arrays.
    """
    return _family("softmax", x, dim, dtype, axis, out, where, recompute, split_every)


def log_softmax(x: "da.Array", dim: Any = None, dtype: Any = None, *, axis: Any = None, out: Any = None,
                where: Any = None, recompute: bool = True, split_every: Any = None) -> "da.Array":
    """Log-softmax of the Dask array ``x`` along ``dim``, lazily: ``(x - m) - l`` with the rows' merged states.

    Same rules and options as :func:`softmax` (and as ``csoftmax.log_softmax`` in memory).
    """
    return _family("log_softmax", x, dim, dtype, axis, out, where, recompute, split_every)


def softmin(x: "da.Array", dim: Any = None, dtype: Any = None, *, axis: Any = None, out: Any = None,
            where: Any = None, recompute: bool = True, split_every: Any = None) -> "da.Array":
    """softmax(-x) of the Dask array ``x`` along ``dim``, lazily; rules and options as :func:`softmax`."""
    return _family("softmin", x, dim, dtype, axis, out, where, recompute, split_every)


def logsumexp(x: "da.Array", axis: Any = None, b: Any = None, keepdims: bool = False, return_sign: bool = False,
              where: Any = None, *, dim: Any = None, split_every: Any = None) -> "da.Array":
    """log(sum(exp(x))) of the Dask array ``x`` over ``axis``, lazily, with scipy.special.logsumexp's semantics.

    ``axis``: None (every axis), an int or a tuple of ints (``dim`` is accepted as torch's spelling). NaN anywhere
    in a row gives NaN, else +inf gives +inf; a row that is all -inf, or empty, gives -inf. The result dtype is
    the input's float dtype (float64 for integers and bools). One pass: per-block states merged by a tree
    reduction (``split_every``), the input read once. ``b=``, ``return_sign=True`` and ``where=`` are not
    supported for Dask arrays and raise NotImplementedError.
    """
    name = "logsumexp"
    _check_input(name, x)
    for option, given in (("b", b is not None), ("return_sign", bool(return_sign)), ("where", where is not None)):
        if given:
            raise NotImplementedError(
                f"csoftmax.dask.{name}(): {option}= is not supported for Dask arrays; compute "
                f"csoftmax.{name} on in-memory blocks (x.map_blocks) or on the computed array instead"
            )
    if dim is not None:
        if axis is not None:
            raise TypeError(f"{name}(): got both axis and its alias dim; pass only one")
        axis = dim
    out_dtype = _result_dtype(name, x, None)
    if x.ndim == 0:
        # a 0-d array is one row of one entry: reduced as a 1-element axis, put back to 0-d
        if axis is not None:
            _normalize_dims(name, axis, 0)
        return logsumexp(x.reshape(1), 0, split_every=split_every).reshape(())
    axes = tuple(range(x.ndim)) if axis is None else _normalize_dims(name, axis, x.ndim)
    x = _cast_input(x, out_dtype)
    state = _row_states(x, axes, f"csoftmax-{name}-stats", split_every)
    # (a map_blocks of its own: Dask's reduction would give its chunk step the result's dtype; blockwise fusion
    # puts it in the reduction's last task)
    return state.map_blocks(
        partial(_finish_logsumexp, axes=axes, keepdims=keepdims, out_dtype=out_dtype),
        dtype=out_dtype,
        drop_axis=() if keepdims else axes,
        meta=np.empty((0,) * (x.ndim if keepdims else x.ndim - len(axes)), dtype=out_dtype),
        name=f"csoftmax-{name}-{tokenize(x, axes, keepdims, split_every)}",
    )


def dispatch(name: str, input: Any, *args: Any, **kwargs: Any) -> Any:
    """``csoftmax.<name>(input, *args, **kwargs)`` for a Dask array: the lazy result of ``csoftmax.dask.<name>``.

    Returns NotImplemented when ``input`` is not a Dask object (the caller then computes in memory); a Dask object
    that is not an array (a DataFrame, a Delayed) is a TypeError rather than a silent ``compute()``. The public
    functions reach this through ``csoftmax._dask_dispatch``, which imports Dask only for Dask inputs.
    """
    if not type(input).__module__.startswith("dask"):
        return NotImplemented
    if not isinstance(input, da.Array):
        raise TypeError(
            f"csoftmax.{name}(): {type(input).__module__}.{type(input).__name__} is not supported; pass a "
            "dask.array.Array (for a Dask DataFrame: .to_dask_array(lengths=True)) or an in-memory array"
        )
    return _LAZY[name](input, *args, **kwargs)


_LAZY = {"softmax": softmax, "log_softmax": log_softmax, "softmin": softmin, "logsumexp": logsumexp}


# ------------------------------------------------------------------------------------------------------ the plans


def _check_input(name: str, x: Any) -> None:
    if not isinstance(x, da.Array):
        raise TypeError(
            f"csoftmax.dask.{name}(): x must be a dask.array.Array, not {type(x).__module__}.{type(x).__name__}; "
            f"use csoftmax.{name} for in-memory arrays, or wrap it with dask.array.from_array"
        )
    if isinstance(x._meta, np.ma.MaskedArray):
        raise TypeError(_masked_message(name))


def _masked_message(name: str) -> str:
    return (
        f"csoftmax.dask.{name}(): masked Dask arrays (blocks that are numpy.ma.MaskedArray) are not supported; "
        "fill the masked entries first, e.g. dask.array.ma.filled(x, -numpy.inf) (a masked entry then takes no "
        "part; a row with nothing left is NaN), or compute and call the in-memory function, which honours masks"
    )


def _family(name: str, x: Any, dim: Any, dtype: Any, axis: Any, out: Any, where: Any, recompute: bool,
            split_every: Any) -> "da.Array":
    _check_input(name, x)
    if out is not None:
        raise TypeError(
            f"csoftmax.dask.{name}(): out= is not supported: the result is a lazy Dask array; write it where it "
            "should go with dask.array.store(result, target) (or result.to_zarr(...))"
        )
    if where is not None:
        raise NotImplementedError(
            f"csoftmax.dask.{name}(): where= is not supported for Dask arrays; set the entries that take no part "
            "to -inf instead (dask.array.where(mask, x, -numpy.inf)): they then get 0 (-inf for log_softmax)"
        )
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{name}(): got both dim and its alias axis; pass only one")
        dim = axis
    # The same checks, in the same order, as the in-memory functions (csoftmax._api._prepare).
    out_dtype = _result_dtype(name, x, dtype)
    if dim is None:
        # no deprecated implicit choice here: a distributed computation should not guess its axis
        raise TypeError(f"csoftmax.dask.{name}(): dim is required (there is no implicit choice); pass dim=X")
    axis = _normalize_dim(name, dim, x.ndim)
    x = _cast_input(x, out_dtype)
    if name == "softmin":
        x = -x  # exact for floats; integers were converted above, so -(-128) does not wrap
    kind = "log_softmax" if name == "log_softmax" else "softmax"

    token = tokenize(name, x, axis, out_dtype, recompute, split_every)
    out_meta = np.empty((0,) * x.ndim, dtype=out_dtype)

    if x.ndim == 0 or x.numblocks[axis] == 1 or 0 in x.shape:
        # Whole rows in every block: the in-memory kernel does everything, block by block.
        return x.map_blocks(
            partial(_whole_rows, kind=kind, axis=axis, out_dtype=out_dtype),
            dtype=out_dtype,
            meta=out_meta,
            name=f"csoftmax-{name}-{token}",
        )

    # Pass 1: every row's merged state, one block per row-block (length 1 along the axis).
    state = _row_states(x, (axis,), f"csoftmax-{name}-stats", split_every)
    # Pass 2 reads either a copy of x's graph whose tasks wait for their own rows' states (bounded memory), or x's
    # own blocks, which then stay in memory between the passes.
    source = _bound_copy(x, state, (axis,), seed=token) if recompute else x
    # state has one block along the axis: blockwise pairs block (i, j) with its row-block's state (i, 0).
    return da.map_blocks(
        partial(_apply_block, log=kind == "log_softmax", axis=axis, out_dtype=out_dtype),
        source,
        state,
        dtype=out_dtype,
        meta=out_meta,
        name=f"csoftmax-{name}-{token}",
    )


def _cast_input(x: "da.Array", out_dtype: np.dtype) -> "da.Array":
    """The input cast of the in-memory functions (csoftmax._api.needs_cast / quiet_cast), block by block; and a
    float64 result of narrower floats widened first, so that pass 1's states are computed in float64 too."""
    widen = out_dtype == np.float64 and x.dtype != np.float64
    if needs_cast(x.dtype, out_dtype) or widen:
        return x.map_blocks(quiet_cast, out_dtype, dtype=out_dtype, meta=np.empty((0,) * x.ndim, dtype=out_dtype))
    return x


def _row_states(x: "da.Array", axes: tuple, name: str, split_every: Any) -> "da.Array":
    """Pass 1: the merged (m, l) of every row over `axes`, keepdims (length 1 along them), cut like x elsewhere."""
    return da.reduction(
        x,
        _block_state,
        _merge_states,
        combine=_merge_states,
        axis=axes,
        keepdims=True,
        dtype=_STATE,
        split_every=split_every,
        concatenate=True,
        meta=np.empty((0,) * x.ndim, dtype=_STATE),
        name=name,
    )


def _bound_copy(x: "da.Array", state: "da.Array", axes: tuple, seed: Any) -> "da.Array":
    """A copy of x computed again, each of its first tasks waiting for the states of the rows that it feeds.

    dask.graph_manipulation.bind would make every task of the copy wait for all of `state` (one blocker key for
    the whole collection): no block could be normalised before the last row of the array was merged. Here the
    graph of x is copied task by task; a task with no dependency inside x's graph (a read, a generator, a
    persisted block) gets the state keys of the rows below it as extra arguments. Persisted blocks (data in the
    graph) are referred to by their key, not copied: they are read, not recomputed.
    """
    graph = convert_legacy_graph(dict(x.__dask_graph__()))
    outputs = list(flatten(x.__dask_keys__()))

    def inside(key):  # (a block persisted on a distributed cluster is a Future, which has no task in the graph)
        return graph[key].dependencies & graph.keys() if key in graph else ()

    # Dependencies come before dependents in `order`: a depth-first walk from x's blocks (x's graph may hold keys
    # that x does not need, e.g. the rest of an array that x slices; they are left out).
    order, seen = [], set()
    for root in outputs:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(inside(root)))]
        while stack:
            key, deps = stack[-1]
            for dep in deps:
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, iter(inside(dep))))
                    break
            else:
                stack.pop()
                order.append(key)
    # The rows below every task: a block's row-block is its index with 0 along the reduced axes.
    rows: dict = {key: set() for key in order}
    for key in outputs:
        index = list(key[1:])
        for a in axes:
            index[a] = 0
        rows[key].add((state.name, *index))
    for key in reversed(order):
        for dep in inside(key):
            rows[dep] |= rows[key]

    copy, refers_to_x = {}, False
    for key in order:
        node, deps = graph.get(key), inside(key)
        new_key = clone_key(key, seed)
        if deps:
            copy[new_key] = node.substitute({dep: clone_key(dep, seed) for dep in deps}, key=new_key)
            continue
        waits = [TaskRef(k) for k in sorted(rows[key])]
        if node is None or isinstance(node, DataNode):
            refers_to_x = True
            copy[new_key] = Task(new_key, _after, TaskRef(key), *waits)
        else:
            copy[new_key] = Task(new_key, _after, node, *waits, _data_producer=node.data_producer)
    name = clone_key(x.name, seed)
    graph = HighLevelGraph.from_collections(name, copy, dependencies=[state, x] if refers_to_x else [state])
    return da.Array(graph, name, chunks=x.chunks, meta=x._meta)


def _after(value: Any, *states: Any) -> Any:
    """`value`: the states are arguments only so that the task runs after them."""
    return value


# ---------------------------------------------------------------------------------------------------------------
# Block functions. They run on the workers; everything they need comes in as arguments.


def _refuse_masked(block: Any) -> None:
    """A dask array can claim plain blocks (its meta) and still produce masked ones."""
    if isinstance(block, np.ma.MaskedArray):
        raise TypeError(_masked_message("softmax family"))


def _whole_rows(block: np.ndarray, kind: str, axis: int, out_dtype: np.dtype) -> np.ndarray:
    """The in-memory function on a block that holds whole rows."""
    _refuse_masked(block)
    return getattr(_csoftmax, kind)(block, dim=axis, dtype=out_dtype)


def _as_axes(axis: Any) -> tuple:
    """Dask's reduction passes the axes as a tuple (possibly of one)."""
    return tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)


def _block_state(block: np.ndarray, axis: Any, keepdims: bool = True) -> np.ndarray:
    """Pass 1 on one block: row_parts over the block's part of the rows, keepdims."""
    _refuse_masked(block)
    axes = _as_axes(axis)
    kept = tuple(n for i, n in enumerate(block.shape) if i not in axes)
    if len(axes) > 1:
        # several axes: moved last and merged into one (a copy only when their strides do not chain)
        moved = np.moveaxis(block, axes, range(-len(axes), 0))
        block, axis1 = moved.reshape(kept + (-1,)), len(kept)
    else:
        axis1 = axes[0]
    m, l = _rows.row_parts(block, axis1)
    state = np.empty(kept, dtype=_STATE)
    state["m"] = m
    state["l"] = l
    return state.reshape(_keepdims_shape(kept, axes))


def _keepdims_shape(kept: tuple, axes: tuple) -> tuple:
    """The shape of kept with a 1 put back at every position of axes."""
    shape = list(kept)
    for a in sorted(axes):
        shape.insert(a, 1)
    return tuple(shape)


def _merge_states(parts: np.ndarray, axis: Any, keepdims: bool = True) -> np.ndarray:
    """Merges the states of several blocks (concatenated along the reduced axes) into one per row (_rows.merge, in
    long double)."""
    m, l = _rows.merge(parts["m"], parts["l"], _as_axes(axis), np.longdouble)
    state = np.empty(m.shape, dtype=_STATE)
    state["m"] = m
    state["l"] = l
    return state


def _finish_logsumexp(state: np.ndarray, axes: tuple, keepdims: bool, out_dtype: np.dtype) -> np.ndarray:
    """m + l of merged states, rounded once to the output dtype; m itself where it is +-inf or NaN."""
    m = state["m"]
    with np.errstate(invalid="ignore", over="ignore"):
        total = np.where(np.isfinite(m), m.astype(np.longdouble) + state["l"], m)
    result = quiet_cast(total, out_dtype)
    return result if keepdims else np.squeeze(result, axis=axes)


def _apply_block(block: np.ndarray, state: np.ndarray, log: bool, axis: int, out_dtype: np.dtype) -> np.ndarray:
    """Pass 2 on one block: apply with its rows' merged state, into a new block of out_dtype in block's order."""
    _refuse_masked(block)
    out = np.empty_like(block, dtype=out_dtype)
    m = np.squeeze(state["m"], axis)
    l = np.squeeze(state["l"], axis).astype(np.float64)
    return _rows.apply(block, axis, m, l, log, out)
