"""Argument policy of csoftmax: everything torch.nn.functional.softmax decides before it computes.

Policy lives here, loops live in C (src/), and _csoftmax.pyx only translates between the two. Every public
function is defined here the same way: the extension's fast path first (an exact ndarray of native float32/float64
and an int dim, see _csoftmax.fast_or_none), the policy layer (_family, _backward) for everything else.
"""
from __future__ import annotations

import functools
import operator
import os
import sys
import warnings
from typing import Any, Iterable, Optional, Tuple

import numpy as np

from . import _csoftmax, _dask_dispatch, _rows
from ._csoftmax import OP_LOG_SOFTMAX, OP_LOG_SOFTMAX_BACKWARD, OP_SOFTMAX, OP_SOFTMAX_BACKWARD
from ._csoftmax import fast_or_none as _fast_or_none
from ._csoftmax import fast_backward_or_none as _fast_backward_or_none

try:  # NumPy >= 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover - NumPy 1.23/1.24
    AxisError = np.AxisError

__all__ = ["softmax", "log_softmax", "softmin", "softmax_backward", "log_softmax_backward",
           "Softmax", "LogSoftmax", "Softmin", "Softmax2d", "logsumexp", "SoftmaxState"]

_FLOAT_TYPES = (np.float16, np.float32, np.float64)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_stacklevel() -> int:
    """The stacklevel, for a warning issued from this package, that points at the first frame outside it."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame = frame.f_back
        level += 1
    return level


def _normalize_dim(name: str, dim: Any, ndim: int) -> int:
    """torch's dim rules: an integer in [-ndim, ndim-1] ([-1, 0] for 0-d); None means the legacy implicit choice."""
    if dim is None:
        dim = 0 if ndim in (0, 1, 3) else 1
        warnings.warn(
            f"Implicit dimension choice for {name} has been deprecated. "
            "Change the call to include dim=X as an argument.",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )
    if isinstance(dim, (bool, np.bool_)):
        raise TypeError(f"{name}(): dim must be an integer, not {type(dim).__name__}")
    try:
        dim = operator.index(dim)
    except TypeError:
        raise TypeError(f"{name}(): dim must be an integer, not {type(dim).__name__}") from None
    low, high = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not low <= dim <= high:
        raise AxisError(f"Dimension out of range (expected to be in range of [{low}, {high}], but got {dim})")
    return dim % ndim if ndim else 0                     # (0-d: -1 and 0 name the same single position)


def _result_dtype(name: str, x: np.ndarray, dtype: Any) -> np.dtype:
    """The dtype of the result (always native byte order)."""
    kind = x.dtype.kind
    if dtype is not None and kind not in "fiub":
        # dtype= casts numbers; it must not turn strings, objects or dates into numbers, nor drop imaginary parts
        raise TypeError(
            f"{name}(): input of dtype {x.dtype} is not supported, with or without dtype=; pass a float16, float32 "
            "or float64 array (integers and bools are converted to float64)"
        )
    if dtype is not None:
        try:
            target = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"{name}(): dtype must be float16, float32 or float64, not {dtype!r}") from None
        if target.type not in _FLOAT_TYPES:
            raise TypeError(f"{name}(): dtype must be float16, float32 or float64, not {target}")
        return target.newbyteorder("=")
    if x.dtype.type in _FLOAT_TYPES:
        return x.dtype.newbyteorder("=")
    if kind in "iub":
        return np.dtype(np.float64)
    if kind == "f":
        raise TypeError(
            f"{name}(): {x.dtype} input is not supported; pass x.astype(np.float64) or dtype=np.float64"
        )
    if kind == "c":
        raise TypeError(
            f"{name}(): complex input is not supported; pass the real part (x.real) or abs(x) as a float array"
        )
    raise TypeError(
        f"{name}(): input of dtype {x.dtype} is not supported; pass a float16, float32 or float64 array "
        "(integers and bools are converted to float64)"
    )


def _normalize_dims(name: str, dim: Any, ndim: int) -> tuple:
    """dim as a tuple of distinct non-negative axes: an int (torch's rules, None included) or a tuple of ints
    normalised jointly (SciPy's and JAX's axis=tuple; a list stays a TypeError, as in torch)."""
    if not isinstance(dim, tuple):
        return (_normalize_dim(name, dim, ndim),)
    if len(dim) == 0:
        raise AxisError(f"{name}(): dim=() names no dimension; pass an int or a non-empty tuple of ints")
    axes = tuple(_normalize_dim(name, d, ndim) if d is not None else _no_none(name) for d in dim)
    if len(set(axes)) != len(axes):
        raise AxisError(f"{name}(): dim {tuple(dim)} repeats a dimension; each may appear once")
    return axes


def _no_none(name: str):
    raise TypeError(f"{name}(): a tuple dim must hold integers, not None")


def _as_array(name: str, input: Any) -> np.ndarray:
    """np.asarray(input), with NumPy's message for ragged nested sequences replaced by one that says what to pass.
    Only NumPy's own error counts as raggedness: one raised inside the input's code (an ``__array__`` that fails,
    whatever its words) has a frame below this one and propagates unchanged."""
    try:
        return np.asarray(input)
    except ValueError as exc:
        if "inhomogeneous" in str(exc) and exc.__traceback__.tb_next is None:
            raise ValueError(f"{name}(): the input is ragged (nested sequences of different lengths); pass a "
                             "rectangular array, or pad the rows (with -inf for entries that take no part)") from exc
        raise


def _prepare(name: str, input: Any, dim: Any, dtype: Any, axis: Any):
    """Common argument handling: returns (x ready for the kernel, normalised axes, result dtype)."""
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{name}(): got both dim and its alias axis; pass only one")
        dim = axis
    x = input if type(input) is np.ndarray else _as_array(name, input)
    out_dtype = _result_dtype(name, x, dtype)
    axes = _normalize_dims(name, dim, x.ndim)
    if x.dtype.type not in _FLOAT_TYPES:
        x = quiet_cast(x, out_dtype)                     # integers and bools: before any arithmetic
    return x, axes, out_dtype


def needs_cast(dtype: np.dtype, out_dtype: np.dtype) -> bool:
    """Integers and bools are converted before any arithmetic, so uint8 cannot wrap around. A narrowing dtype=
    rounds the input first, as torch's cast-then-compute does; widening needs no copy: the kernel converts block
    by block."""
    return dtype.type not in _FLOAT_TYPES or out_dtype.itemsize < dtype.itemsize


def quiet_cast(x: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    """x.astype(out_dtype) where values beyond the new range become inf (and their rows NaN) without NumPy's
    overflow warning."""
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(out_dtype)


def _check_out(name: str, out: Any, shape: tuple, dtype: np.dtype) -> None:
    """out= must be a writeable ndarray of exactly the result's shape and dtype: checked before anything runs."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}(): out must be a numpy.ndarray, not {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name}(): out has shape {out.shape}, the result has shape {shape}")
    if out.dtype.newbyteorder("=") != dtype:
        raise TypeError(f"{name}(): out has dtype {out.dtype}, the result is {dtype}; pass an out of {dtype} "
                        f"(or dtype= to choose the result's dtype)")
    if not out.flags.writeable:
        raise ValueError(f"{name}(): out is read-only")
    overlap = _has_internal_overlap(out)
    if overlap is None:
        raise ValueError(f"{name}(): out's strides do not nest and it has over {_OVERLAP_CHECK_MAX} elements, too "
                         f"many to check that no two share memory; pass a contiguous array, e.g. out.copy()")
    if overlap:
        raise ValueError(f"{name}(): elements of out share memory (a zero stride, or overlapping strides), so one "
                         f"would overwrite another; pass an array whose elements are distinct, e.g. out.copy()")


# Beyond this many elements a non-nested out (as_strided only) is not checked element by element (64 MiB of offsets).
_OVERLAP_CHECK_MAX = 1 << 23


def _has_internal_overlap(a: np.ndarray) -> Optional[bool]:
    """Whether two elements of a share bytes (None: not known, a is too big to check). Strides that nest (each at
    least the extent of the smaller ones: every array NumPy itself makes, views included) cannot; anything else
    (as_strided) is checked offset by offset."""
    if a.size == 0:                                  # (whose strides may well be 0)
        return False
    dims = sorted((abs(st), n) for st, n in zip(a.strides, a.shape) if n > 1)
    extent = a.itemsize
    for stride, n in dims:
        if stride < extent:
            break
        extent = stride * (n - 1) + extent
    else:
        return False
    if any(stride == 0 for stride, _ in dims):
        return True
    if a.size > _OVERLAP_CHECK_MAX:
        return None
    offsets = np.zeros(1, np.int64)
    for stride, n in zip(a.strides, a.shape):
        offsets = (offsets[:, None] + np.arange(n, dtype=np.int64) * stride).ravel()
    offsets.sort()
    return bool(np.any(np.diff(offsets) < a.itemsize))


def _mask(name: str, where: Any, shape: tuple) -> np.ndarray:
    if type(where) is np.ndarray and where.dtype == np.bool_ and where.shape == shape:
        return where                                     # (the common case, without broadcast_to's cost)
    # a masked entry of a masked-array mask is not known to take part: it takes none, as False
    mask = where.filled(False) if isinstance(where, np.ma.MaskedArray) else np.asarray(where)
    if mask.dtype != np.bool_:
        raise TypeError(f"{name}(): where must be a boolean mask, not {mask.dtype}")
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(f"{name}(): where of shape {mask.shape} does not broadcast to the input's {shape}") from None


def _merge_axes(a: np.ndarray, axes: tuple) -> np.ndarray:
    """a with `axes` moved last and merged into one (a view when their strides chain, else a copy)."""
    k = len(axes)
    moved = np.moveaxis(a, axes, range(-k, 0))
    return moved.reshape(moved.shape[:-k] + (int(np.prod(moved.shape[-k:])),))


def _compute(x: np.ndarray, axes: tuple, out_dtype: np.dtype, op: int, negate: bool, mask=None,
             grad=None, out=None) -> np.ndarray:
    """The engine on a prepared input: into out (native, aligned, x itself or clear of it) or a new array of
    out_dtype in x's memory order. The engine converts float16, widens and narrows (dtype=), negates and masks as
    it loads: nothing here copies the input."""
    if out is None:
        out = _csoftmax.empty_like(x, out_dtype)
    if out.size == 0:
        return out
    if len(axes) > 1:
        # normalise jointly: the axes moved last and merged (copies only when their strides don't chain)
        k = len(axes)
        merged = [None if a is None else _merge_axes(a, axes) for a in (x, mask, grad)]
        target = _merge_axes(out, axes)
        direct = np.shares_memory(target, out) and target.flags.aligned
        result = target if direct else _csoftmax.empty_like(merged[0], out_dtype)
        _compute(merged[0], (merged[0].ndim - 1,), out_dtype, op, negate, merged[1], merged[2], result)
        if not direct:
            moved_shape = np.moveaxis(out, axes, range(-k, 0)).shape
            np.copyto(out, np.moveaxis(result.reshape(moved_shape), range(-k, 0), axes))
        return out
    if x.ndim == 0:
        x, out1 = x.reshape(1), out.reshape(1)
        mask = None if mask is None else mask.reshape(1)
        grad = None if grad is None else grad.reshape(1)
        _csoftmax.run_into(x, out1, 0, op, negate, mask, grad)
    else:
        _csoftmax.run_into(x, out, axes[0], op, negate, mask, grad)
    return out


def _into(out: np.ndarray, *inputs) -> bool:
    """Whether the engine can write straight into the caller's out: native, aligned, and each input either is
    out itself (the same memory, strides and dtype: computed in place) or lies clear of it."""
    if not (out.dtype.isnative and out.flags.aligned):
        return False
    for a in inputs:
        if a is None or not np.may_share_memory(out, a):
            continue
        if not _csoftmax.same_view(a, out):
            return False
    return True


def _family(name: str, op: int, negate: bool, input: Any, dim: Any, dtype: Any, axis: Any, out: Any,
            where: Any) -> np.ndarray:
    if type(input).__module__.startswith("dask"):               # a Dask array: csoftmax.dask's lazy result
        return _dask_dispatch.dispatch(name, input, dim, dtype, axis=axis, out=out, where=where)
    if isinstance(input, np.ma.MaskedArray):
        # a masked array's mask means "takes no part": the same as where=False (combined with any where= given)
        hidden = np.ma.getmaskarray(input)
        if hidden.any():
            shown = ~hidden
            where = shown if where is None else np.logical_and(shown, _mask(name, where, shown.shape))
        input = np.ma.getdata(input)
    x, axes, out_dtype = _prepare(name, input, dim, dtype, axis)
    if out is not None:
        _check_out(name, out, x.shape, out_dtype)
    # masked-out entries take no part and get 0 (-inf for log_softmax); a fully masked row is all 0 / -inf rather
    # than NaN, as in JAX. The mask goes to the engine as a (possibly broadcast) view.
    mask = None if where is None else _mask(name, where, x.shape)
    if out is not None and _into(out, x):
        return _compute(x, axes, out_dtype, op, negate, mask, out=out)
    result = _compute(x, axes, out_dtype, op, negate, mask)
    if out is None:
        return result
    np.copyto(out, result)                                       # overlapping or unusual out
    return out


def softmax(input: Any, dim: Any = None, dtype: Any = None, *, axis: Any = None, out: Any = None,
            where: Any = None) -> np.ndarray:
    """Softmax along one dimension: ``exp(x - max) / sum(exp(x - max))``, as ``torch.nn.functional.softmax``.

    Parameters
    ----------
    input : array_like
        Any shape, any strides (transposed, sliced, negative, broadcast, byte-swapped, read-only); never modified
        and never copied whole. float16 is computed in float32; integers and bools become float64. The masked
        entries of a ``numpy.ma.MaskedArray`` act as ``where=False``.
    dim : int, optional
        The dimension that sums to one; negative counts from the end. ``None`` is torch's deprecated implicit
        choice (0 for 0-, 1- and 3-d input, else 1) and warns.
    dtype : float16, float32 or float64, optional
        The input is cast to it before the operation; the result has this dtype.
    axis : int, optional
        Keyword alias of ``dim`` (NumPy spelling); giving both is a TypeError.
    out : numpy.ndarray, optional
        Receives the result and is returned: exactly the result's shape and dtype, any strides; it may be the input
        itself. A wrong shape (ValueError) or dtype (TypeError), or elements that share memory (ValueError), are
        refused before anything is written.
    where : array_like of bool, optional
        Broadcastable to the input: masked-out entries take no part and give 0; a fully masked row is all 0. The
        masked entries of a masked-array ``where`` count as False.

    ``dim`` may also be a tuple of ints: the entries of each slice over those dimensions sum to one together.

    Returns
    -------
    numpy.ndarray
        A new native-endian array of the input's shape and memory order. Rows containing NaN or +inf, and rows
        that are entirely -inf, are NaN; -inf entries elsewhere give 0.

    Raises
    ------
    numpy.exceptions.AxisError
        ``dim`` out of range (an IndexError and a ValueError).
    TypeError
        non-integer ``dim``, or an unsupported input or ``dtype``.

    Examples
    --------
    >>> import numpy as np, csoftmax
    >>> csoftmax.softmax(np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]), dim=1).round(4)
    array([[0.09  , 0.2447, 0.6652],
           [0.3333, 0.3333, 0.3333]])
    """
    if dtype is None and axis is None and where is None:
        result = _fast_or_none(input, dim, OP_SOFTMAX, False, out)
        if result is not None:
            return result
    return _family("softmax", OP_SOFTMAX, False, input, dim, dtype, axis, out, where)


def log_softmax(input: Any, dim: Any = None, dtype: Any = None, *, axis: Any = None, out: Any = None,
                where: Any = None) -> np.ndarray:
    """log(softmax(x)) along ``dim``, computed as ``x - max - log(sum(exp(x - max)))``, as
    ``torch.nn.functional.log_softmax``; arguments and result rules as :func:`softmax`.

    The largest entry keeps its accuracy when the others are small: log(sum) is evaluated as
    ``log1p((count of maxima - 1) + exp(m2 - max) * sum(exp(x - m2)))`` with m2 the largest entry below the
    maximum, so ``log_softmax([0., -30.])[0]`` is ``-log1p(exp(-30)) = -9.357622968839737e-14`` (torch and SciPy:
    about 1e-14 off). With ``where=``, masked-out entries give ``-inf`` (a fully masked row: all ``-inf``).

    >>> import numpy as np, csoftmax
    >>> csoftmax.log_softmax(np.array([0.0, -30.0]), dim=0)
    array([-9.35762297e-14, -3.00000000e+01])
    """
    if dtype is None and axis is None and where is None:
        result = _fast_or_none(input, dim, OP_LOG_SOFTMAX, False, out)
        if result is not None:
            return result
    return _family("log_softmax", OP_LOG_SOFTMAX, False, input, dim, dtype, axis, out, where)


def softmin(input: Any, dim: Any = None, dtype: Any = None, *, axis: Any = None, out: Any = None,
            where: Any = None) -> np.ndarray:
    """softmax(-x) along ``dim``, as ``torch.nn.functional.softmin`` (the negation is exact and never
    materialised); arguments and result rules as :func:`softmax`.

    >>> import numpy as np, csoftmax
    >>> csoftmax.softmin(np.array([1.0, 2.0, 3.0]), dim=0).round(4)
    array([0.6652, 0.2447, 0.09  ])
    """
    if dtype is None and axis is None and where is None:
        result = _fast_or_none(input, dim, OP_SOFTMAX, True, out)
        if result is not None:
            return result
    return _family("softmin", OP_SOFTMAX, True, input, dim, dtype, axis, out, where)


def _backward(name: str, op: int, grad: Any, output: Any, dim: Any, out: Any) -> np.ndarray:
    """The fused backward kernel on (grad, output): the two are brought to one layout and dtype (copies only when
    they differ), tuple dims are merged into one axis, and the result lands in out or a new array."""
    if dim is None:
        raise TypeError(f"{name}(): dim is required (an int or a tuple of ints, the forward call's dim)")
    result = _fast_backward_or_none(grad, output, dim, op, out)
    if result is not None:
        return result
    g = _as_array(name, grad)
    y = _as_array(name, output)
    if g.shape != y.shape:
        raise ValueError(f"{name}(): grad has shape {g.shape}, output has shape {y.shape}; they must match")
    hidden = None
    if isinstance(grad, np.ma.MaskedArray) or isinstance(output, np.ma.MaskedArray):
        # entries masked in either take no part, as where=False in the forward call: they add nothing to the row
        # sums (grad 0; output 0, or -inf for log_softmax, whose exp is 0) and their gradient is 0
        hidden = np.ma.getmaskarray(grad) | np.ma.getmaskarray(output)
        g = np.where(hidden, 0, g)
        y = np.where(hidden, -np.inf if op == OP_LOG_SOFTMAX_BACKWARD else 0, y)
    if y.dtype.type not in _FLOAT_TYPES:
        raise TypeError(f"{name}(): output must be float16, float32 or float64 (a softmax result), not {y.dtype}")
    if g.dtype.kind not in "biuf":
        raise TypeError(f"{name}(): grad must be a real numeric array, not {g.dtype}")
    axes = _normalize_dims(name, dim, y.ndim)
    result_dtype = y.dtype.newbyteorder("=")
    if out is not None:
        _check_out(name, out, y.shape, result_dtype)
    if g.dtype.type not in _FLOAT_TYPES:
        g = quiet_cast(g, result_dtype)                 # integers and bools; floats convert in the engine
    if out is not None and _into(out, y, g):
        result = _compute(y, axes, result_dtype, op, False, grad=g, out=out)
    else:
        result = _compute(y, axes, result_dtype, op, False, grad=g)
        if out is not None:
            np.copyto(out, result)
            result = out
    if hidden is not None:
        np.copyto(result, 0, where=hidden)             # (also where a row's sum is not finite)
    return result


def softmax_backward(grad: Any, output: Any, dim: Any, *, out: Any = None) -> np.ndarray:
    """Gradient of softmax: ``output * (grad - sum(grad * output, dim))``, as torch's autograd gives for
    ``y = softmax(x, dim)`` and upstream gradient ``grad``; ``dim`` as in :func:`softmax` (a tuple too), but required:
    ``None`` is a TypeError, as torch's backward has no implicit choice. One fused kernel (the sum accumulates in
    float64); the result has output's dtype, or is written to ``out``. Entries masked in a ``numpy.ma.MaskedArray``
    grad or output take no part, as ``where=False`` did in the forward call: their gradient is 0.

    >>> import numpy as np, csoftmax
    >>> y = csoftmax.softmax(np.array([1.0, 2.0, 3.0]), dim=0)
    >>> csoftmax.softmax_backward(np.array([1.0, 0.0, 0.0]), y, dim=0).round(4)
    array([ 0.0819, -0.022 , -0.0599])
    """
    return _backward("softmax_backward", OP_SOFTMAX_BACKWARD, grad, output, dim, out)


def log_softmax_backward(grad: Any, output: Any, dim: Any, *, out: Any = None) -> np.ndarray:
    """Gradient of log_softmax: ``grad - exp(output) * sum(grad, dim)``, as torch's autograd gives for
    ``y = log_softmax(x, dim)``; one fused kernel, arguments and result as :func:`softmax_backward`.

    >>> import numpy as np, csoftmax
    >>> y = csoftmax.log_softmax(np.array([1.0, 2.0, 3.0]), dim=0)
    >>> csoftmax.log_softmax_backward(np.array([1.0, 0.0, 0.0]), y, dim=0).round(4)
    array([ 0.91  , -0.2447, -0.6652])
    """
    return _backward("log_softmax_backward", OP_LOG_SOFTMAX_BACKWARD, grad, output, dim, out)


class _Module:
    """Calling a module runs its ``forward``, as in torch. The package's classes define a ``__call__`` that skips the
    extra method call; a subclass that overrides ``forward`` (and not ``__call__``) gets one that calls it."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__ and "__call__" not in cls.__dict__:
            cls.__call__ = _Module.__call__

    def __call__(self, input: Any) -> np.ndarray:
        return self.forward(input)


class _DimModule(_Module):
    """torch.nn-style module: attribute ``dim``, ``forward`` and calling apply the function, ``repr`` like torch's,
    pickles (a state without ``dim`` unpickles as ``dim=None``)."""

    dim: Optional[int] = None   # also what an unpickled state without "dim" falls back to
    _function = None
    _op, _negate = OP_SOFTMAX, False    # _function's fast path, which calling the module tries first

    def __init__(self, dim: Optional[int] = None) -> None:
        self.dim = dim

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "dim" not in self.__dict__:
            self.dim = None

    def forward(self, input: Any) -> np.ndarray:
        return type(self)._function(input, self.dim)

    def __call__(self, input: Any) -> np.ndarray:
        result = _fast_or_none(input, self.dim, self._op, self._negate)
        return type(self)._function(input, self.dim) if result is None else result

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Softmax(_DimModule):
    """Applies softmax along ``dim``, as ``torch.nn.Softmax``: ``Softmax(dim=1)(x)``."""

    _function = staticmethod(softmax)


class LogSoftmax(_DimModule):
    """Applies log_softmax along ``dim``, as ``torch.nn.LogSoftmax``."""

    _function = staticmethod(log_softmax)
    _op = OP_LOG_SOFTMAX


class Softmin(_DimModule):
    """Applies softmin along ``dim``, as ``torch.nn.Softmin``."""

    _function = staticmethod(softmin)
    _negate = True


class Softmax2d(_Module):
    """Softmax over the channel dimension (-3) of 3-D (C, H, W) or 4-D (N, C, H, W) input, as
    ``torch.nn.Softmax2d``."""

    def forward(self, input: Any) -> np.ndarray:
        x = input if isinstance(input, np.ndarray) else _as_array("Softmax2d", input)
        if x.ndim not in (3, 4):
            raise ValueError(f"Softmax2d: expected input to be 3D or 4D, got {x.ndim}D instead")
        return softmax(x, -3)

    __call__ = forward

    def __repr__(self) -> str:
        return "Softmax2d()"

# ------------------------------------------------------------------------------------------------ logsumexp and the
# mergeable row state: every reduction is _rows.row_parts (per-row max m and l = log sum exp(x - m), float64, from
# the engine's CSM_LOGSUMEXP) and every per-entry output _rows.apply (the engine's output pass against a given
# state); this part decides arguments, folds the weights `b` and the masks into the rows, and combines (m, l) pairs.
# Combinations of pairs (signed weights, merges of states) run in float64 for float16/float32 results and in
# np.longdouble for float64 results where it is wider (x86-64: 64-bit significand), each result rounded once. Where
# long double is no wider than float64 (MSVC, aarch64 macOS) they round at every step: still within a few ulp.

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
    r = np.add(m, l, dtype=work)                         # (l is NaN where m is not finite: no warning)
    special = ~np.isfinite(m)
    return np.where(special, np.asarray(m, work), r) if special.any() else r


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
    if type(a).__module__.startswith("dask"):                   # a Dask array: csoftmax.dask's lazy result
        return _dask_dispatch.dispatch("logsumexp", a, axis, b, keepdims, return_sign, where, dim=dim)
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
                r = (r.astype(np.float64, copy=False) if out_dtype.itemsize < 8 else r).astype(out_dtype)
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
        m, l = _rows.merge(np.stack([self.max, other.max]),
                           np.stack([np.asarray(self.logsum, work), np.asarray(other.logsum, work)]), (0,), work)
        return SoftmaxState(m[0], l[0], self.dim, dtype)

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
