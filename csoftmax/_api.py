"""Argument policy of csoftmax: everything torch.nn.functional.softmax decides before it computes.

Policy lives here, loops live in C (src/), and _core.pyx only translates between the two.
"""
from __future__ import annotations

import operator
import os
import sys
import warnings
from typing import Any, Optional

import numpy as np

from . import _core

try:  # NumPy >= 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover - NumPy 1.23/1.24
    AxisError = np.AxisError

__all__ = ["softmax", "Softmax"]

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
    return dim + ndim if dim < 0 else dim


def _result_dtype(name: str, x: np.ndarray, dtype: Any) -> np.dtype:
    """The dtype of the result (always native byte order)."""
    if dtype is not None:
        try:
            target = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"{name}(): dtype must be float16, float32 or float64, not {dtype!r}") from None
        if target.type not in _FLOAT_TYPES:
            raise TypeError(f"{name}(): dtype must be float16, float32 or float64, not {target}")
        return target.newbyteorder("=")
    kind = x.dtype.kind
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


def _prepare(name: str, input: Any, dim: Any, dtype: Any, axis: Any):
    """Common argument handling: returns (x ready for the kernel, normalised dim, result dtype)."""
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{name}(): got both dim and its alias axis; pass only one")
        dim = axis
    x = input if type(input) is np.ndarray else np.asarray(input)
    out_dtype = _result_dtype(name, x, dtype)
    dim = _normalize_dim(name, dim, x.ndim)
    # Integers and bools are converted before any arithmetic, so uint8 cannot wrap around. A narrowing dtype=
    # rounds the input first, as torch's cast-then-compute does (values beyond the new range become inf, and their
    # rows NaN, without NumPy's overflow warning); widening needs no copy: the kernel converts block by block.
    if x.dtype.type not in _FLOAT_TYPES or out_dtype.itemsize < x.dtype.itemsize:
        with np.errstate(over="ignore", invalid="ignore"):
            x = x.astype(out_dtype)
    return x, dim, out_dtype


def softmax_general(input: Any, dim: Any = None, dtype: Any = None, *, axis: Any = None) -> np.ndarray:
    """csoftmax.softmax for every call its fast path (in _core.pyx, which has the docstring) does not take."""
    x, dim, out_dtype = _prepare("softmax", input, dim, dtype, axis)
    out = np.empty_like(x, dtype=out_dtype)
    if out.size == 0:
        return out
    if x.ndim == 0:
        _core.softmax_into(x.reshape(1), out.reshape(1), 0)
    else:
        _core.softmax_into(x, out, dim)
    return out


_core.set_general_path(softmax_general)
softmax = _core.softmax


class Softmax:
    """Applies softmax along ``dim``, as ``torch.nn.Softmax``: ``Softmax(dim=1)(x)``.

    The attribute ``dim`` may be changed after construction; instances pickle, and unpickling a state without
    ``dim`` (an old torch module's) gives ``dim=None``.
    """

    dim: Optional[int] = None   # also what an unpickled state without "dim" falls back to

    def __init__(self, dim: Optional[int] = None) -> None:
        self.dim = dim

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "dim" not in self.__dict__:
            self.dim = None

    def forward(self, input: Any) -> np.ndarray:
        """softmax(input, self.dim)."""
        return softmax(input, self.dim)

    __call__ = forward

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
