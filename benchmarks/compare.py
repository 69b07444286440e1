#!/usr/bin/env python
"""Side-by-side timing of csoftmax against its peers and against memory-bound floors.

Run from the repository root::

    python benchmarks/compare.py             # full run, 1-3 minutes (a ~10 s budget per case)
    python benchmarks/compare.py --quick     # fewer repeats, under a minute (a ~3 s budget per case)
    python benchmarks/compare.py --cases f16 dim0 --kernels baseline
    python benchmarks/compare.py --family    # log_softmax and the backward functions instead
    python benchmarks/compare.py --threads   # 1 vs 2 threads (csoftmax's pool, torch, two Python threads)
    python benchmarks/compare.py --lse       # logsumexp against x.copy(), scipy, torch and NumPy
    python benchmarks/compare.py --all       # the four tables (--quick --all: a few minutes)
    python benchmarks/compare.py --sweep     # every function x dtype x layout x mask x values (sweep.py)
    python benchmarks/compare.py --sweep --cases float16 where    # the sweep's cells matching any word

For every case (shape, dtype, dim, layout) it times, INTERLEAVED: one sample of every implementation per
round, the order shuffled each round, rounds repeated until the case's time budget is spent, then the median
per implementation. A noisy neighbour on this shared machine therefore slows all implementations of a round
alike instead of ruining one column, and the median discards the rounds it hit hardest.

Implementations (columns) of the main table (softmax):
  csoftmax       csoftmax.softmax(x, dim), the kernel set named at the top, pinned to 1 thread
                 (csoftmax.set_num_threads(1) before every sample: its default is all CPUs)
  torch 1t       torch.softmax(t, dim) with torch.set_num_threads(1) - the like-for-like comparison
  torch Nt       the same with torch's default thread count (all cores)
  scipy          scipy.special.softmax(x, axis=dim)
  numpy          the three-line NumPy softmax (x - max, exp, / sum, keepdims)
  x.copy()       floor: allocate + copy the input (what any out-of-place op must at least do)
  copyto         floor: np.copyto(out, x) into a preallocated out (pure memory traffic, no allocation)
  np.exp         floor of the tiny (3,) case only: np.exp(x), the cost of one ufunc call

The --family table has the same columns for csoftmax.log_softmax (torch.log_softmax, scipy.special.log_softmax,
the three-line NumPy log-softmax) and for csoftmax.softmax_backward / log_softmax_backward (torch's backward
kernels torch._softmax_backward_data / torch._log_softmax_backward_data, the ops autograd calls, timed
directly; NumPy's formula; the floors copy the upstream gradient). The --threads table times csoftmax and torch
with 1 and 2 threads, and two Python threads calling csoftmax at once. The --lse table times csoftmax.logsumexp
against x.copy() (a reduction reads the input once and writes almost nothing: a copy reads it and writes it
again), scipy.special.logsumexp, torch.logsumexp (1 thread) and the two-line NumPy logsumexp; every
implementation's result is checked against a longdouble reference first, and a wrong one stops the run.

Peers that are not installed are skipped with a note. The table ends with the ratios the issue sets targets
for: torch(1 thread)/csoftmax (a speedup: higher is better) and csoftmax/floor (lower is better).
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)

# `python benchmarks/compare.py` puts benchmarks/ (not the repository root) first on sys.path. Put the root
# there so `import csoftmax` finds the source folder: csoftmax/__init__.py uses an in-place build
# (`python setup.py build_ext --inplace`) when there is one, and otherwise hands over to a pip-installed copy.
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

try:
    import csoftmax
    from csoftmax import _csoftmax
    from csoftmax._config import config as cs_config
except ImportError as exc:  # no in-place build and nothing installed: nothing to benchmark
    sys.exit(f"cannot import csoftmax: {exc}")

# Optional peers: each one missing only removes its column.
NOTES: list[str] = []
try:
    import torch

    # Read the default before anything changes it: "all threads" means what torch would use on its own.
    TORCH_ALL_THREADS = torch.get_num_threads()
except ImportError:
    torch = None
    TORCH_ALL_THREADS = 0
    NOTES.append("torch is not installed: the torch columns are skipped")
try:
    import scipy
    import scipy.special
except ImportError:
    scipy = None
    NOTES.append("scipy is not installed: the scipy column is skipped")


# --------------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    make: Callable[[np.random.Generator], np.ndarray]  # builds the input (may be a strided view)
    dim: int
    floor: str = "x.copy()"  # which implementation the "cs/floor" ratio divides by
    floor_target: Optional[float] = None  # the target: csoftmax / floor <= this (None: no target)
    torch_target: Optional[float] = None  # the target: torch(1 thread) / csoftmax >= this
    # what is timed: "softmax" (main table), "log_softmax", "softmax_backward", "log_softmax_backward" (--family),
    # "logsumexp" (--lse)
    op: str = "softmax"
    scipy_target: Optional[float] = None  # --lse only: scipy / csoftmax >= this


def _randn(shape, dtype):
    """Standard-normal input; generated in float32/float64 directly (fast for 16M elements), then cast."""
    def make(rng):
        gen_dtype = np.float64 if np.dtype(dtype) == np.float64 else np.float32
        return rng.standard_normal(shape, dtype=gen_dtype).astype(dtype, copy=False)

    return make


def _strided_view(rng):
    # Every other column of a C-contiguous (2048, 4096) array: the rows are not contiguous (element stride 8
    # bytes), the case that tests csoftmax's gather path against copying the same view.
    return rng.standard_normal((2048, 4096), dtype=np.float32)[:, ::2]


def _transposed_view(rng):
    # The transpose of a C-contiguous (4096, 4096) array, reduced along its last axis: the elements of a row are
    # 16 KiB apart. The same memory walk as dim 0 of the C array, reached through the view's strides instead.
    return rng.standard_normal((4096, 4096), dtype=np.float32).T


CASES = [
    Case("(4096,4096) last", _randn((4096, 4096), np.float32), -1, floor_target=1.5, torch_target=3),
    Case("(4096,4096) dim0", _randn((4096, 4096), np.float32), 0, floor_target=2, torch_target=5),
    Case("(32,128,128) dim1", _randn((32, 128, 128), np.float32), 1, floor_target=2, torch_target=5),
    Case("(1e6,10) last", _randn((1_000_000, 10), np.float32), -1, floor_target=2, torch_target=8),
    Case("(8,12,256,256) last", _randn((8, 12, 256, 256), np.float32), -1, floor_target=1.3, torch_target=1.5),
    Case("(64,1000) last", _randn((64, 1000), np.float32), -1, torch_target=3),
    Case("(1e6,) f64", _randn((1_000_000,), np.float64), -1, floor_target=1.5, torch_target=2),
    Case("(4096,1024) f16 last", _randn((4096, 1024), np.float16), -1, torch_target=2),
    # the floor is x.copy() of the *view*, i.e. gathering the same strided elements into a new array
    Case("(2048,4096)[:,::2] last", _strided_view, -1, floor_target=2, torch_target=1.5),
    # 3 elements: all overhead. The comparator is one NumPy ufunc call on the same array.
    Case("(3,) f32", _randn((3,), np.float32), -1, floor="np.exp", floor_target=2, torch_target=3),
]

# --family: the targets for log_softmax and the backward functions are torch(1 thread)/csoftmax >= 3 on
# the big last-dim shape and >= 5 on dim 0, and csoftmax within 2x of x.copy() (there). The smaller log_softmax
# shapes have no target: their ratios are for information. For the backward rows x.copy() copies the upstream
# gradient, one input-sized array (the backward reads two such arrays and writes one).
FAMILY_CASES = [
    Case("log_softmax (4096,4096) last", _randn((4096, 4096), np.float32), -1, floor_target=2, torch_target=3,
         op="log_softmax"),
    Case("log_softmax (4096,4096) dim0", _randn((4096, 4096), np.float32), 0, floor_target=2, torch_target=5,
         op="log_softmax"),
    Case("log_softmax (64,1000) last", _randn((64, 1000), np.float32), -1, op="log_softmax"),
    Case("log_softmax (1e6,) f64", _randn((1_000_000,), np.float64), -1, op="log_softmax"),
    Case("softmax_backward (4096,4096) last", _randn((4096, 4096), np.float32), -1, floor_target=2,
         torch_target=3, op="softmax_backward"),
    Case("softmax_backward (4096,4096) dim0", _randn((4096, 4096), np.float32), 0, floor_target=2,
         torch_target=5, op="softmax_backward"),
    Case("log_softmax_backward (4096,4096) last", _randn((4096, 4096), np.float32), -1, floor_target=2,
         torch_target=3, op="log_softmax_backward"),
    Case("log_softmax_backward (4096,4096) dim0", _randn((4096, 4096), np.float32), 0, floor_target=2,
         torch_target=5, op="log_softmax_backward"),
]


# --lse: csoftmax.logsumexp. The targets: on float32 (4096,4096), last dim and dim 0, csoftmax at most 1x
# the time of x.copy() (a reduction reads the input once and writes a row of results; a copy reads and writes the
# whole array), at least 10x faster than scipy.special.logsumexp and 3x faster than torch.logsumexp (1 thread);
# on (1e6,10) at least 8x faster than torch. The other rows have no target: a grid over dtype and layout.
LSE_CASES = [
    Case("logsumexp (4096,4096) last", _randn((4096, 4096), np.float32), -1, floor_target=1.0, torch_target=3,
         scipy_target=10, op="logsumexp"),
    Case("logsumexp (4096,4096) dim0", _randn((4096, 4096), np.float32), 0, floor_target=1.0, torch_target=3,
         scipy_target=10, op="logsumexp"),
    Case("logsumexp (1e6,10) last", _randn((1_000_000, 10), np.float32), -1, torch_target=8, op="logsumexp"),
    Case("logsumexp (4096,4096) f64 last", _randn((4096, 4096), np.float64), -1, op="logsumexp"),
    Case("logsumexp (4096,4096) f16 last", _randn((4096, 4096), np.float16), -1, op="logsumexp"),
    Case("logsumexp (64,1000) last", _randn((64, 1000), np.float32), -1, op="logsumexp"),
    # the floors copy the *view* (a gather of the same elements, a transposing copy)
    Case("logsumexp (2048,4096)[:,::2] last", _strided_view, -1, op="logsumexp"),
    Case("logsumexp (4096,4096).T last", _transposed_view, -1, op="logsumexp"),
]
# A result further than this from the exact one (in units in the last place of the result's dtype) is wrong and
# stops the run. Not an accuracy target (the is 2 ulp for csoftmax in float32, shown in its own column):
# it separates a broken kernel from the rounding of a plain float32 sum, which reached 4 ulp (scipy and NumPy,
# (4096,4096) dim 0) when this was written.
LSE_WRONG_ULP = 16
LSE_ULP_TARGET = {np.dtype(np.float32): 2.0}  # the issue: csoftmax's float32 logsumexp within 2 ulp of exact
_lse_cs_ulp: dict = {}  # case name -> (csoftmax's worst error in ulp, the input dtype), measured by check_lse


@dataclass
class ThreadCase:
    name: str
    make: Callable[[np.random.Generator], np.ndarray]
    dim: int
    kind: str  # "L3": fits the last-level cache; "memory": memory-bound; "python threads" (+ " copyto"): GIL rows
    torch_target: Optional[float] = None  # torch(2 threads)/csoftmax(2 threads) >= this: the single-thread target

    @property
    def speedup_target(self) -> Optional[float]:
        """The issue's target for csoftmax 2 threads vs 1: >= 1.7x where the data fits the cache (and for two Python
        threads), never slower (>= 1x) where memory bandwidth, shared by both cores, is the limit."""
        return 1.0 if self.kind == "memory" else None if self.kind == "python threads copyto" else 1.7


THREADS = 2  # the thread count compared with 1 (the machine this was written for has 2 cores)
PY_THREAD_MIN_CALLS = 10  # calls per Python thread in a "two Python threads" sample, at least, and as many more as
# make one thread's share last THREAD_MIN_SAMPLE: with 10 calls of (512,2048) (2 ms) the threads' start and the idle
# vCPU's wake-up (see THREAD_MIN_SAMPLE) were a good part of the sample, and the row read 1.2x where a program
# calling softmax in two threads gets 1.8x (measured with 50 calls per thread)
_py_thread_calls: dict = {}  # case name -> calls per thread, chosen when its implementations are built

# --threads: every big shape of the main table, with its single-thread torch target (the issue: csoftmax ahead of
# torch at the same thread count "by at least the same factors as single-threaded"), and two shapes of 8 MiB that
# fit in L3, which have the 1.7x thread-speedup target and no torch target of their own. Kinds: "memory" (input +
# output beyond the 32 MiB L3 of the reference machine), "L3" (within it). The Python-threads rows: two threads
# each calling softmax on its own array, against one thread making both threads' calls, on arrays beyond L3 and on
# arrays whose inputs and outputs together fit in it (4 MiB each: two (1024,2048) pairs, 32 MiB, thrashed it); the
# np.copyto row measures the same for a plain copy of the big arrays, i.e. the memory bandwidth a second core adds.
THREAD_CASES = [
    ThreadCase("(4096,4096) last", _randn((4096, 4096), np.float32), -1, "memory", torch_target=3),
    ThreadCase("(4096,4096) dim0", _randn((4096, 4096), np.float32), 0, "memory", torch_target=5),
    ThreadCase("(1e6,10) last", _randn((1_000_000, 10), np.float32), -1, "memory", torch_target=8),
    ThreadCase("(8,12,256,256) last", _randn((8, 12, 256, 256), np.float32), -1, "memory", torch_target=1.5),
    ThreadCase("(1e6,) f64", _randn((1_000_000,), np.float64), -1, "L3", torch_target=2),
    ThreadCase("(4096,1024) f16 last", _randn((4096, 1024), np.float16), -1, "L3", torch_target=2),
    ThreadCase("(2048,4096)[:,::2] last", _strided_view, -1, "memory", torch_target=1.5),
    ThreadCase("(1024,2048) last", _randn((1024, 2048), np.float32), -1, "L3"),
    ThreadCase("(1024,2048) dim0", _randn((1024, 2048), np.float32), 0, "L3"),
    ThreadCase("(512,2048) f64 last", _randn((512, 2048), np.float64), -1, "L3"),
    ThreadCase("(512,2048) f64 dim0", _randn((512, 2048), np.float64), 0, "L3"),
    # two Python threads, each with its own array (csoftmax at 1 thread)
    ThreadCase("two Python threads (4096,2048) last", _randn((2, 4096, 2048), np.float32), -1, "python threads"),
    ThreadCase("two Python threads (512,2048) last", _randn((2, 512, 2048), np.float32), -1, "python threads"),
    ThreadCase("two Python threads np.copyto (4096,2048)", _randn((2, 4096, 2048), np.float32), -1,
               "python threads copyto"),
]


# --------------------------------------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------------------------------------


def numpy_softmax(x, axis):
    """The three-line softmax most NumPy users write."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def numpy_log_softmax(x, axis):
    """The three-line log-softmax most NumPy users write (shift by the max, then subtract the log of the sum)."""
    s = x - x.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def numpy_softmax_backward(g, y, axis):
    """Gradient of softmax from its output y and the upstream gradient g: y * (g - sum(g * y))."""
    return y * (g - (g * y).sum(axis=axis, keepdims=True))


def numpy_log_softmax_backward(g, y, axis):
    """Gradient of log_softmax from its output y and the upstream gradient g: g - exp(y) * sum(g)."""
    return g - np.exp(y) * g.sum(axis=axis, keepdims=True)


def numpy_logsumexp(x, axis):
    """The two-line logsumexp most NumPy users write (shift by the max, log of the sum of exp, shift back)."""
    m = x.max(axis=axis, keepdims=True)
    return np.log(np.exp(x - m).sum(axis=axis)) + np.squeeze(m, axis=axis)


CS_FUNCS = {"log_softmax": csoftmax.log_softmax, "softmax_backward": csoftmax.softmax_backward,
            "log_softmax_backward": csoftmax.log_softmax_backward}
NUMPY_FUNCS = {"log_softmax": numpy_log_softmax, "softmax_backward": numpy_softmax_backward,
               "log_softmax_backward": numpy_log_softmax_backward}


@dataclass
class Impl:
    name: str
    fn: Callable[[], object]  # zero-argument call that does exactly the timed work
    before: Optional[Callable[[], None]] = None  # untimed setup before each sample (torch's thread count)
    number: int = 1  # calls per sample, calibrated so one sample is long enough to time
    # --threads only: seconds to wait (untimed) after this implementation's sample, before the next one
    settle: float = 0.0
    warm: bool = False  # --threads only: one untimed call right before every sample (after `before`)
    times: list = field(default_factory=list)  # seconds per call, one entry per round


def _torch_tensor(x: np.ndarray, notes: list):
    """torch.from_numpy, converted once, outside the timing; a contiguous copy only when torch refuses the view
    (e.g. negative strides). A copy changes torch's work (it then reads contiguous memory), so it is noted."""
    try:
        return torch.from_numpy(x)
    except (ValueError, RuntimeError, TypeError):
        notes.append("torch got a contiguous copy of the input (torch.from_numpy refused the view)")
        return torch.from_numpy(np.ascontiguousarray(x))


def build_impls(case: Case, x: np.ndarray, notes: list) -> list[Impl]:
    """The timed callables for one case. functools.partial rather than lambdas where possible: every column
    then pays the same small per-call Python overhead, which matters for the tiny cases."""
    dim = case.dim
    # csoftmax's thread count is process-wide too (its default is all CPUs): pinned to 1 before every sample
    impls = [Impl("csoftmax", functools.partial(csoftmax.softmax, x, dim),
                  before=functools.partial(csoftmax.set_num_threads, 1))]
    if torch is not None:
        t = _torch_tensor(x, notes)
        # The thread count is global to torch, so it is set before every sample, outside the timed region.
        impls.append(Impl("torch 1t", functools.partial(torch.softmax, t, dim),
                          before=functools.partial(torch.set_num_threads, 1)))
        if TORCH_ALL_THREADS > 1:
            impls.append(Impl(f"torch {TORCH_ALL_THREADS}t", functools.partial(torch.softmax, t, dim),
                              before=functools.partial(torch.set_num_threads, TORCH_ALL_THREADS)))
    if scipy is not None:
        impls.append(Impl("scipy", functools.partial(scipy.special.softmax, x, axis=dim)))
    impls.append(Impl("numpy", functools.partial(numpy_softmax, x, dim)))
    impls.append(Impl("x.copy()", x.copy))
    out = np.empty(x.shape, x.dtype)  # allocated once: copyto is the no-allocation floor
    impls.append(Impl("copyto", functools.partial(np.copyto, out, x)))
    if case.floor == "np.exp":
        impls.append(Impl("np.exp", functools.partial(np.exp, x)))
    return impls


def prepare_family(case: Case, rng: np.random.Generator) -> tuple:
    """The inputs of one --family case: (x,) for log_softmax; (g, y) for a backward function, y being the
    forward's output (computed in float64 by NumPy, so it does not depend on the kernels under test) and g a
    standard-normal upstream gradient."""
    x = case.make(rng)
    if case.op == "log_softmax":
        return (x,)
    forward = numpy_softmax if case.op == "softmax_backward" else numpy_log_softmax
    y = forward(x.astype(np.float64), case.dim).astype(x.dtype)
    del x
    g = rng.standard_normal(y.shape, dtype=np.float32).astype(y.dtype, copy=False)
    return g, y


def _reference(case: Case, args: tuple) -> np.ndarray:
    """float64 result of case.op on args (the NumPy formulas in float64)."""
    return NUMPY_FUNCS[case.op](*(a.astype(np.float64) for a in args), case.dim)


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    # log_softmax values are O(10) and backward values are small: an absolute tolerance scaled to the result
    scale = float(np.max(np.abs(want))) or 1.0
    return bool(np.allclose(got.astype(np.float64), want, rtol=1e-4, atol=1e-5 * scale))


def check_family(case: Case, args: tuple) -> Optional[str]:
    """check_result for the --family ops: csoftmax against a float64 NumPy reference before timing."""
    try:
        got = CS_FUNCS[case.op](*args, case.dim)
    except Exception as exc:
        return f"csoftmax raised {type(exc).__name__}: {exc}"
    if got.shape != args[0].shape or got.dtype != args[0].dtype:
        return f"csoftmax returned {got.dtype}{got.shape}, expected {args[0].dtype}{args[0].shape}"
    if not _close(got, _reference(case, args)):
        return f"csoftmax.{case.op} result differs from the NumPy reference"
    return None


# How torch's backward is timed (reported in the notes): the op autograd's SoftmaxBackward0 /
# LogSoftmaxBackward0 nodes call, directly, when this torch has it; otherwise torch.autograd.grad on a graph
# built once (which adds autograd's bookkeeping: checks, a ones-free grad accumulation, Python overhead).
TORCH_BACKWARD_OPS = {"softmax_backward": "_softmax_backward_data",
                      "log_softmax_backward": "_log_softmax_backward_data"}


def _torch_family_fn(case: Case, args: tuple, notes: list) -> Callable[[], object]:
    dim = case.dim
    if case.op == "log_softmax":
        return functools.partial(torch.log_softmax, _torch_tensor(args[0], notes), dim)
    g, y = args
    gt, yt = _torch_tensor(g, notes), _torch_tensor(y, notes)
    op = getattr(torch, TORCH_BACKWARD_OPS[case.op], None)
    if op is not None:
        # signature (grad_output, output, dim, input_dtype); input_dtype: the forward's input dtype (no cast here)
        fn = functools.partial(op, gt, yt, dim, yt.dtype)
        how = f"torch.{TORCH_BACKWARD_OPS[case.op]}(g, y, dim, dtype) (the kernel autograd runs, called directly)"
    else:
        # A graph whose output is y (to rounding), built once; only the backward is timed. Inputs with that
        # output: softmax(log y) = y since y sums to 1, log_softmax(y) = y since exp(y) sums to 1.
        if case.op == "softmax_backward":
            xt, forward = torch.log(torch.from_numpy(y)), torch.softmax
        else:
            xt, forward = torch.from_numpy(y).clone(), torch.log_softmax
        xt.requires_grad_()
        yt = forward(xt, dim)
        fn = functools.partial(torch.autograd.grad, yt, xt, gt, retain_graph=True)
        how = "torch.autograd.grad(y, x, g, retain_graph=True) on a graph built once"
    notes.append(f"torch backward timed as {how}")
    # the timed callable must compute the same gradient (same y, same g) as csoftmax, or the comparison is moot
    got = fn()
    got = got[0] if isinstance(got, tuple) else got
    if not _close(got.detach().numpy(), _reference(case, args)):
        notes.append("torch's backward result differs from the NumPy reference: its timing may be of other work")
    return fn


def build_family_impls(case: Case, args: tuple, notes: list) -> list[Impl]:
    """The timed callables of one --family case: the same columns as the main table."""
    dim = case.dim
    impls = [Impl("csoftmax", functools.partial(CS_FUNCS[case.op], *args, dim),
                  before=functools.partial(csoftmax.set_num_threads, 1))]
    if torch is not None:
        fn = _torch_family_fn(case, args, notes)
        impls.append(Impl("torch 1t", fn, before=functools.partial(torch.set_num_threads, 1)))
        if TORCH_ALL_THREADS > 1:
            impls.append(Impl(f"torch {TORCH_ALL_THREADS}t", fn,
                              before=functools.partial(torch.set_num_threads, TORCH_ALL_THREADS)))
    if scipy is not None and case.op == "log_softmax":  # SciPy has no softmax gradients
        impls.append(Impl("scipy", functools.partial(scipy.special.log_softmax, args[0], axis=dim)))
    impls.append(Impl("numpy", functools.partial(NUMPY_FUNCS[case.op], *args, dim)))
    x = args[0]  # the input (log_softmax) or the upstream gradient (backward): one input-sized array
    impls.append(Impl("x.copy()", x.copy))
    out = np.empty(x.shape, x.dtype)
    impls.append(Impl("copyto", functools.partial(np.copyto, out, x)))
    return impls


def _lse_funcs(case: Case, x: np.ndarray, notes: list) -> dict:
    """The logsumexp of every implementation, as zero-argument calls (name -> (call, thread-count setter)):
    the same callables are checked by check_lse and timed by build_lse_impls."""
    dim = case.dim
    funcs = {"csoftmax": (functools.partial(csoftmax.logsumexp, x, dim),
                          functools.partial(csoftmax.set_num_threads, 1))}
    if torch is not None:
        funcs["torch 1t"] = (functools.partial(torch.logsumexp, _torch_tensor(x, notes), dim),
                             functools.partial(torch.set_num_threads, 1))
    if scipy is not None:
        funcs["scipy"] = (functools.partial(scipy.special.logsumexp, x, axis=dim), None)
    funcs["numpy"] = (functools.partial(numpy_logsumexp, x, dim), None)
    return funcs


def _lse_reference(x: np.ndarray, axis: int) -> np.ndarray:
    """logsumexp in long double (80-bit extended on x86: 11 more bits than float64), from the input's exact values."""
    xl = x.astype(np.longdouble)
    m = xl.max(axis=axis, keepdims=True)
    return np.log(np.exp(xl - m).sum(axis=axis)) + np.squeeze(m, axis=axis)


def _ulp_error(got: np.ndarray, want: np.ndarray, dtype) -> float:
    """Worst |got - want| in units in the last place of dtype at the exact result."""
    ulp = np.spacing(np.abs(want).astype(dtype)).astype(np.longdouble)
    return float(np.max(np.abs(np.asarray(got).astype(np.longdouble) - want) / ulp))


def check_lse(case: Case, x: np.ndarray) -> Optional[str]:
    """Every implementation's logsumexp against a long-double reference, before timing: a problem here is fatal
    for the run (Table.strict). csoftmax must also keep the input's dtype and drop the reduced axis."""
    want = _lse_reference(x, case.dim)
    problems = []
    for name, (fn, set_threads) in _lse_funcs(case, x, []).items():
        try:
            if set_threads is not None:
                set_threads()
            got = fn()
            got = got.numpy() if hasattr(got, "numpy") else np.asarray(got)
        except Exception as exc:
            problems.append(f"{name} raised {type(exc).__name__}: {exc}")
            continue
        if got.shape != want.shape or (name == "csoftmax" and got.dtype != x.dtype):
            problems.append(f"{name} returned {got.dtype}{got.shape}, expected {x.dtype}{want.shape}")
            continue
        err = _ulp_error(got, want, x.dtype)
        if name == "csoftmax":
            _lse_cs_ulp[case.name] = (err, x.dtype)
        if not err <= LSE_WRONG_ULP:  # also catches NaN
            problems.append(f"{name}'s logsumexp is {err:.3g} ulp from the long-double reference "
                            f"(more than {LSE_WRONG_ULP}: wrong)")
    return "; ".join(problems) or None


def build_lse_impls(case: Case, x: np.ndarray, notes: list) -> list[Impl]:
    """The timed callables of one --lse case: csoftmax, torch (1 thread), scipy, NumPy, and x.copy()."""
    impls = [Impl(name, fn, before=set_threads) for name, (fn, set_threads) in _lse_funcs(case, x, notes).items()]
    impls.append(Impl("x.copy()", x.copy))
    return impls


def prepare_threads(case: ThreadCase, rng: np.random.Generator):
    x = case.make(rng)
    return (x[0], x[1]) if case.kind.startswith("python threads") else x


def _repeat_softmax(x: np.ndarray, dim: int, calls: int) -> None:
    for _ in range(calls):
        csoftmax.softmax(x, dim)


def _repeat_copyto(x: np.ndarray, dim: int, calls: int) -> None:
    out = np.empty_like(x)
    for _ in range(calls):
        np.copyto(out, x)


def _one_python_thread(a: np.ndarray, b: np.ndarray, dim: int, calls: int, repeat=_repeat_softmax) -> None:
    """Both arrays' calls, one after the other, on the calling thread."""
    repeat(a, dim, calls)
    repeat(b, dim, calls)


def _two_python_threads(a: np.ndarray, b: np.ndarray, dim: int, calls: int, repeat=_repeat_softmax) -> None:
    """The same calls, a's on one Python thread and b's on another, at once (the kernels release the GIL)."""
    errors = []

    def work(x):
        try:
            repeat(x, dim, calls)
        except BaseException as exc:  # re-raised on the calling thread: a failing sample must not pass silently
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(x,)) for x in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def check_threads(case: ThreadCase, data) -> Optional[str]:
    """csoftmax with 1 and THREADS threads: both right, and bit-identical (as csoftmax promises)."""
    saved = csoftmax.get_num_threads()
    if case.kind == "python threads copyto":
        return None
    x = data[0] if case.kind == "python threads" else data
    try:
        problem = check_result(case, x)
        if problem:
            return problem
        results = []
        for n in (1, THREADS):
            csoftmax.set_num_threads(n)
            results.append(csoftmax.softmax(x, case.dim))
        if not np.array_equal(results[0].view(np.uint8), results[1].view(np.uint8)):
            return f"csoftmax's results with 1 and {THREADS} threads are not bit-identical"
    except Exception as exc:
        return f"csoftmax raised {type(exc).__name__}: {exc}"
    finally:
        csoftmax.set_num_threads(saved)
    return None


# torch's OpenMP workers (libgomp) keep spinning on their cores for ~5 ms after a multi-threaded call, so that
# torch's next call starts at once. A sample of another column within that time finds a core taken: csoftmax's
# 2-thread calls ran ~15% slower right after a torch 2-thread call (and a 1-thread (4096,4096) call ~20%). So in
# the threads table, after each multi-threaded torch sample the timing waits this long (untimed) first.
TORCH_SPIN_SETTLE = 0.02

# A threads-table sample is a burst of back-to-back calls lasting at least this long: the 1.7x target is about the
# throughput of a program that calls softmax repeatedly. Single-call samples of the 8 MiB shapes (~0.3-0.6 ms) timed
# the VM's wake-up transients instead: after any pause the vCPUs run 1.5-3x slower for the next few milliseconds
# (measured: per-call times 0.6-1.3 ms for the first calls after a 50-500 ms sleep, 0.3 ms from the 5th call on),
# and which column a transient hit decided the row.
THREAD_MIN_SAMPLE = 0.02


def build_thread_impls(case: ThreadCase, data, notes: list) -> list[Impl]:
    """csoftmax and torch with 1 and THREADS threads (each thread count set before every sample, outside the
    timing); for the Python-threads row, one Python thread doing both arrays' calls vs two doing one array each,
    csoftmax at 1 thread either way. Their columns reuse "cs 1t" / "cs 2t"; times are per softmax call.

    Every sample of a shape row starts with one untimed call (warm=True): the cache-sized inputs and outputs are
    then in L3 and the pool's threads (and the idle vCPU they run on) are awake, i.e. the regime of a program
    calling softmax repeatedly, which is what the 1.7x target is about. Without it a sample follows other
    columns' samples (and a settle pause): on this VM an 8 MiB call then ran 1.5-2x slower, mostly from DRAM,
    and 2 threads gained little over 1."""
    cs1 = functools.partial(csoftmax.set_num_threads, 1)
    if case.kind.startswith("python threads"):  # samples of many calls: the first call's warm-up does not matter
        a, b = data
        repeat = _repeat_copyto if case.kind.endswith("copyto") else _repeat_softmax
        cs1()
        repeat(a, case.dim, 3)
        t0 = time.perf_counter()
        repeat(a, case.dim, 3)
        per_call = (time.perf_counter() - t0) / 3
        calls = max(PY_THREAD_MIN_CALLS, math.ceil(THREAD_MIN_SAMPLE / max(per_call, 1e-9)))
        _py_thread_calls[case.name] = calls
        return [Impl("cs 1t", functools.partial(_one_python_thread, a, b, case.dim, calls, repeat), before=cs1),
                Impl(f"cs {THREADS}t", functools.partial(_two_python_threads, a, b, case.dim, calls, repeat),
                     before=cs1)]
    x, dim = data, case.dim
    impls = [Impl("cs 1t", functools.partial(csoftmax.softmax, x, dim), before=cs1, warm=True),
             Impl(f"cs {THREADS}t", functools.partial(csoftmax.softmax, x, dim),
                  before=functools.partial(csoftmax.set_num_threads, THREADS), warm=True)]
    if torch is not None:
        t = _torch_tensor(x, notes)
        for n in (1, THREADS):
            impls.append(Impl(f"torch {n}t", functools.partial(torch.softmax, t, dim),
                              before=functools.partial(torch.set_num_threads, n), warm=True,
                              settle=TORCH_SPIN_SETTLE if n > 1 else 0.0))
    return impls


# --------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------


def _sample(impl: Impl) -> float:
    """Seconds per call over impl.number back-to-back calls (gc off, as timeit does, so a collection triggered
    by one implementation's garbage is not billed to another)."""
    if impl.before is not None:
        impl.before()
    fn = impl.fn
    if impl.warm:
        fn()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(impl.number):
            fn()
        elapsed = time.perf_counter() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / impl.number


def _calibrate(impl: Impl, min_sample: float) -> None:
    """Warm up once, then double the calls per sample until a sample lasts min_sample seconds: short calls are
    timed in a loop so perf_counter's resolution and the loop's own cost stay negligible."""
    if impl.before is not None:
        impl.before()
    impl.fn()  # warm-up: first-call costs (lazy imports, page faults, torch's thread pool) are not timed
    impl.number = 1
    while True:
        per_call = _sample(impl)
        if per_call * impl.number >= min_sample or impl.number >= 1 << 20:
            return
        # jump close to the target instead of doubling many times when a call is very short
        impl.number = max(impl.number * 2, min(1 << 20, int(min_sample / max(per_call, 1e-9) * 1.2)))


def time_case(impls: list[Impl], budget: float, min_rounds: int, max_rounds: int, min_sample: float,
              rng: random.Random, notes: list) -> int:
    """Round-robin timing: each round takes one sample of every implementation in a shuffled order. Stops
    when the case has used its budget (and has min_rounds), or at max_rounds. Returns the rounds run.
    An implementation that raises (e.g. a peer that rejects a dtype) is dropped from the case with a note."""
    for impl in impls[:]:
        try:
            _calibrate(impl, min_sample)
        except Exception as exc:
            notes.append(f"{impl.name} skipped: {type(exc).__name__}: {exc}")
            impls.remove(impl)
        if impl.settle:
            time.sleep(impl.settle)
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget):
        order = impls[:]
        rng.shuffle(order)  # no implementation always runs right after the same other one (caches, clocks)
        for impl in order:
            impl.times.append(_sample(impl))
            if impl.settle:
                time.sleep(impl.settle)  # untimed: see TORCH_SPIN_SETTLE (threads table)
        rounds += 1
    return rounds


class LoadMeter:
    """How many CPUs other processes kept busy while a case ran: the machine's busy time (/proc/stat, steal time
    included: another VM on the same host) minus this process's CPU time, over the wall time. On 2 cores even
    0.5 of a core used elsewhere ruins a 2-thread timing; the threads table shows it per row, the other tables
    in a note. None where /proc/stat is unreadable (not Linux)."""

    _TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @classmethod
    def _machine_busy(cls) -> Optional[float]:
        try:
            with open("/proc/stat") as f:
                v = [int(n) for n in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        except (OSError, ValueError):
            return None
        return (sum(v) - v[3] - v[4]) / cls._TICK

    def __init__(self):
        self.busy, self.own, self.wall = self._machine_busy(), time.process_time(), time.perf_counter()

    def other_cpus(self) -> Optional[float]:
        busy = self._machine_busy()
        if busy is None or self.busy is None:
            return None
        wall = time.perf_counter() - self.wall
        other = (busy - self.busy) - (time.process_time() - self.own)
        return max(0.0, other / wall) if wall > 0 else None


# --------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------


def fmt_time(seconds: Optional[float]) -> str:
    """Three significant digits in the largest unit that keeps the number >= 1 (999.96 us prints as 1 ms)."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if float(f"{seconds / scale:.3g}") >= 1:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_ratio(r: Optional[float]) -> str:
    return "-" if r is None else f"{r:.2f}x"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def check_result(case: Case, x: np.ndarray) -> Optional[str]:
    """A benchmark of a wrong answer is worthless (the kernels are being edited concurrently): compare with a
    float64 NumPy reference before timing. Returns a problem description, or None."""
    try:
        got = csoftmax.softmax(x, case.dim)
    except Exception as exc:  # report, don't abort the whole run
        return f"csoftmax raised {type(exc).__name__}: {exc}"
    want = numpy_softmax(x.astype(np.float64), case.dim)
    rtol = 1e-2 if x.dtype == np.float16 else 1e-4
    if got.shape != x.shape or got.dtype != x.dtype:
        return f"csoftmax returned {got.dtype}{got.shape}, expected {x.dtype}{x.shape}"
    if not np.allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol * 1e-3):
        return "csoftmax result differs from the NumPy reference"
    return None


def target_check(value: Optional[float], target: Optional[float], higher_is_better: bool) -> str:
    if target is None:
        return "-"
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def _iqr_pct(times: list) -> Optional[float]:
    """Interquartile range of a column's samples relative to their median, in percent."""
    if len(times) < 2:
        return None
    q = statistics.quantiles(times, n=4)
    return 100 * (q[2] - q[0]) / q[1] if q[1] else None


def summarize(case: Case, impls: list[Impl]) -> dict:
    med = {i.name: statistics.median(i.times) for i in impls if i.times}
    cs = med.get("csoftmax")
    t1 = med.get("torch 1t")
    tn = med.get(f"torch {TORCH_ALL_THREADS}t")
    floor = med.get(case.floor)
    speedup = t1 / cs if (cs and t1) else None
    speedup_n = tn / cs if (cs and tn) else None
    floor_ratio = cs / floor if (cs and floor) else None
    check = target_check

    # spread of csoftmax's samples (interquartile range relative to the median): how much to trust the row
    cs_times = next((i.times for i in impls if i.name == "csoftmax"), [])
    q = statistics.quantiles(cs_times, n=4) if len(cs_times) >= 2 else None
    return {
        "case": case.name,
        "medians": med,
        "rounds": max((len(i.times) for i in impls), default=0),
        "cs_iqr_pct": 100 * (q[2] - q[0]) / cs if (cs and q) else None,
        "speedup_torch1": speedup,
        "speedup_torchN": speedup_n,
        "floor": case.floor,
        "floor_ratio": floor_ratio,
        "floor_target": case.floor_target,
        "torch_target": case.torch_target,
        "floor_check": check(floor_ratio, case.floor_target, False),
        "torch_check": check(speedup, case.torch_target, True),
    }


def print_table(rows: list[dict], columns: list[str]) -> None:
    tn = f"torch {TORCH_ALL_THREADS}t"
    head = (["case"] + columns + ["torch1t/cs (speedup)", f"{tn}/cs" if TORCH_ALL_THREADS > 1 else None,
                                  "cs/floor", "target (floor, torch)", "meets (floor, torch)", "cs IQR"])
    head = [h for h in head if h is not None]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if h == "case" else "--:" for h in head) + "|")
    for r in rows:
        ft = f"<={r['floor_target']:g}x {r['floor']}" if r["floor_target"] is not None else "-"
        tt = f">={r['torch_target']:g}x" if r["torch_target"] is not None else "-"
        cells = [r["case"] + (" **WRONG**" if r.get("problem") else "")]
        cells += [fmt_time(r["medians"].get(c)) for c in columns]
        cells.append(fmt_ratio(r["speedup_torch1"]))
        if TORCH_ALL_THREADS > 1:
            cells.append(fmt_ratio(r["speedup_torchN"]))
        cells.append(fmt_ratio(r["floor_ratio"]) + ("" if r["floor"] == "x.copy()" else f" ({r['floor']})"))
        cells += [f"{ft}, {tt}", f"{r['floor_check']}, {r['torch_check']}",
                  "-" if r["cs_iqr_pct"] is None else f"{r['cs_iqr_pct']:.0f}%"]
        print("| " + " | ".join(cells) + " |")


def summarize_threads(case: ThreadCase, impls: list[Impl]) -> dict:
    # the Python-threads samples each make 2 * calls softmax calls: report the time per call
    per = 2 * _py_thread_calls[case.name] if case.kind.startswith("python threads") else 1
    med = {i.name: statistics.median(i.times) / per for i in impls if i.times}
    c1, c2 = med.get("cs 1t"), med.get(f"cs {THREADS}t")
    t1, t2 = med.get("torch 1t"), med.get(f"torch {THREADS}t")
    speedup = c1 / c2 if (c1 and c2) else None
    vs_t2 = t2 / c2 if (t2 and c2) else None
    by_name = {i.name: i.times for i in impls}
    return {
        "case": case.name,
        "kind": case.kind,
        "medians": med,
        "rounds": max((len(i.times) for i in impls), default=0),
        "speedup_threads": speedup,
        "speedup_torch1": t1 / c1 if (t1 and c1) else None,
        "speedup_torch2": vs_t2,
        "speedup_target": case.speedup_target,
        "torch_target": case.torch_target,
        "speedup_check": target_check(speedup, case.speedup_target, True),
        "torch_check": target_check(vs_t2, case.torch_target, True),
        "cs_iqr_pct": [_iqr_pct(by_name.get("cs 1t", [])), _iqr_pct(by_name.get(f"cs {THREADS}t", []))],
    }


def print_threads_table(rows: list[dict]) -> None:
    n = THREADS
    head = ["case", "cs 1t", f"cs {n}t", "torch 1t", f"torch {n}t", f"cs {n}t/1t (speedup)", "torch1t/cs1t",
            f"torch{n}t/cs{n}t", f"target ({n}t/1t, torch{n}t/cs{n}t)", "meets", f"cs IQR (1t, {n}t)",
            "other load"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if h == "case" else "--:" for h in head) + "|")
    for r in rows:
        m = r["medians"]
        tt = f">={r['torch_target']:g}x" if r["torch_target"] is not None else "-"
        iqr = ", ".join("-" if v is None else f"{v:.0f}%" for v in r["cs_iqr_pct"])
        cells = [r["case"] + (" **WRONG**" if r.get("problem") else ""),
                 fmt_time(m.get("cs 1t")), fmt_time(m.get(f"cs {n}t")),
                 fmt_time(m.get("torch 1t")), fmt_time(m.get(f"torch {n}t")),
                 fmt_ratio(r["speedup_threads"]), fmt_ratio(r["speedup_torch1"]), fmt_ratio(r["speedup_torch2"]),
                 ("-" if r["speedup_target"] is None else f">={r['speedup_target']:g}x") + f", {tt}",
                 f"{r['speedup_check']}, {r['torch_check']}", iqr,
                 "-" if r.get("other_load") is None else f"{r['other_load']:.2f} CPU"]
        print("| " + " | ".join(cells) + " |")


# --lse ratio columns: (name, the Case field holding its target or None, True when higher is better)
LSE_RATIOS = [("cs/copy", "floor_target", False), ("scipy/cs", "scipy_target", True),
              ("torch1t/cs", "torch_target", True), ("numpy/cs", None, True)]


def summarize_lse(case: Case, impls: list[Impl]) -> dict:
    med = {i.name: statistics.median(i.times) for i in impls if i.times}
    cs = med.get("csoftmax")

    def ratio(num, den):
        return num / den if (num and den) else None

    ratios = {"cs/copy": ratio(cs, med.get("x.copy()")), "scipy/cs": ratio(med.get("scipy"), cs),
              "torch1t/cs": ratio(med.get("torch 1t"), cs), "numpy/cs": ratio(med.get("numpy"), cs)}
    targets = {name: getattr(case, field) if field else None for name, field, _ in LSE_RATIOS}
    checks = {name: target_check(ratios[name], targets[name], higher) for name, _, higher in LSE_RATIOS}
    err, dtype = _lse_cs_ulp.get(case.name, (None, None))
    err_target = LSE_ULP_TARGET.get(dtype)
    cs_times = next((i.times for i in impls if i.name == "csoftmax"), [])
    return {
        "case": case.name,
        "medians": med,
        "rounds": max((len(i.times) for i in impls), default=0),
        "cs_iqr_pct": _iqr_pct(cs_times),
        "ratios": ratios,
        "targets": targets,
        "checks": checks,
        "cs_err_ulp": err,
        "err_target": err_target,
        "err_check": target_check(err, err_target, False),
    }


def print_lse_table(rows: list[dict], columns: list[str]) -> None:
    head = (["case"] + columns + [name for name, _, _ in LSE_RATIOS]
            + ["cs err (ulp)", "targets", "meets", "cs IQR"])
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if h == "case" else "--:" for h in head) + "|")
    for r in rows:
        named = [(name, higher) for name, _, higher in LSE_RATIOS if r["targets"][name] is not None]
        targets = [f"{name} {'>=' if higher else '<='}{r['targets'][name]:g}x" for name, higher in named]
        meets = [r["checks"][name] for name, _ in named]
        if r["err_target"] is not None:
            targets.append(f"err <={r['err_target']:g} ulp")
            meets.append(r["err_check"])
        targets, meets = ", ".join(targets), ", ".join(meets)
        cells = [r["case"] + (" **WRONG**" if r.get("problem") else "")]
        cells += [fmt_time(r["medians"].get(c)) for c in columns]
        cells += [fmt_ratio(r["ratios"][name]) for name, _, _ in LSE_RATIOS]
        cells += ["-" if r["cs_err_ulp"] is None else f"{r['cs_err_ulp']:.2f}", targets or "-", meets or "-",
                  "-" if r["cs_iqr_pct"] is None else f"{r['cs_iqr_pct']:.0f}%"]
        print("| " + " | ".join(cells) + " |")


def print_lse_targets(rows: list[dict]) -> None:
    """One line per target of the issue: the measured ratio and met / MISSED."""
    for r in rows:
        for name, _, higher in LSE_RATIOS:
            target = r["targets"][name]
            if target is not None:
                print(f"target: {r['case']}: {name} {fmt_ratio(r['ratios'][name])} "
                      f"({'>=' if higher else '<='} {target:g}x): {r['checks'][name]}")
        if r["err_target"] is not None:
            print(f"target: {r['case']}: csoftmax error {r['cs_err_ulp']:.2f} ulp (<= {r['err_target']:g} ulp): "
                  f"{r['err_check']}")


def write_png(rows: list[dict], path: str, title: str) -> Optional[str]:
    """Two panels: csoftmax/floor (lower is better) and torch(1t)/csoftmax (higher is better), a bar per case,
    green when the issue's target is met, red when missed, grey without a target; the target is a black tick."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # file output only: works without a display
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart written"
    colour = {"met": "tab:green", "MISSED": "tab:red"}
    names = [r["case"] for r in rows]
    ypos = list(range(len(rows)))[::-1]  # first case at the top
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.8), sharey=True)
    panels = [
        (axes[0], "floor_ratio", "floor_target", "floor_check", "csoftmax time / floor time  (lower is better)"),
        (axes[1], "speedup_torch1", "torch_target", "torch_check", "torch(1 thread) time / csoftmax time  "
                                                                     "(higher is better)"),
    ]
    for ax, key, tkey, ckey, label in panels:
        values = [r[key] or 0.0 for r in rows]
        ax.barh(ypos, values, color=[colour.get(r[ckey], "tab:gray") for r in rows])
        for y, r in zip(ypos, rows):
            if r[tkey] is not None:
                ax.plot([r[tkey]] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
            if r[key]:
                ax.text(r[key], y, f" {r[key]:.2f}x", va="center", fontsize=8,
                        bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.8))  # legible over a tick
        ax.axvline(1.0, color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel(label)
        ax.set_xlim(0, max([v for v in values] + [r[tkey] or 0 for r in rows]) * 1.25 or 1)
    axes[0].set_yticks(ypos)
    axes[0].set_yticklabels(names)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------


@dataclass
class Table:
    key: str  # "main", "family", "threads": the option that selects it and its key in --json
    heading: str
    cases: list
    prepare: Callable  # (case, np_rng) -> the inputs
    check: Callable  # (case, inputs) -> problem or None
    build: Callable  # (case, inputs, notes) -> impls
    summarize: Callable  # (case, impls) -> row
    progress: str  # the column shown on the progress line
    strict: bool = False  # a problem found by check stops the run (WrongResult) instead of marking the row


class WrongResult(Exception):
    """An implementation's result failed the check of a strict table: its timings would be worthless."""


TABLES = [
    Table("main", "softmax (main table)", CASES, lambda case, rng: case.make(rng), check_result, build_impls,
          summarize, "csoftmax"),
    Table("family", "log_softmax and the backward functions (--family)", FAMILY_CASES, prepare_family,
          check_family, build_family_impls, summarize, "csoftmax"),
    Table("threads", f"1 vs {THREADS} threads (--threads)", THREAD_CASES, prepare_threads, check_threads,
          build_thread_impls, summarize_threads, f"cs {THREADS}t"),
    Table("lse", "logsumexp (--lse)", LSE_CASES, lambda case, rng: case.make(rng), check_lse, build_lse_impls,
          summarize_lse, "csoftmax", strict=True),
]


def run_table(table: Table, cases: list, timing: tuple, np_rng: np.random.Generator, order_rng: random.Random):
    """Time every case of one table: returns (rows, raw times, columns in order of appearance, notes, seconds)."""
    budget, min_rounds, max_rounds, min_sample = timing
    rows, raw = [], {}
    columns: list[str] = []
    case_notes: list[str] = []
    t_start = time.perf_counter()
    for case in cases:
        data = table.prepare(case, np_rng)
        notes: list[str] = []
        problem = table.check(case, data)
        if problem and table.strict:
            raise WrongResult(f"{case.name}: {problem}")
        impls = table.build(case, data, notes)
        load = LoadMeter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. overflow warnings of the naive float16 NumPy path
            sample = max(min_sample, THREAD_MIN_SAMPLE) if table.key == "threads" else min_sample
            rounds = time_case(impls, budget, min_rounds, max_rounds, sample, order_rng, notes)
        row = table.summarize(case, impls)
        row["problem"] = problem
        row["other_load"] = load.other_cpus()
        rows.append(row)
        raw[case.name] = {i.name: {"number": i.number, "times": i.times} for i in impls}
        for i in impls:
            if i.name not in columns:
                columns.append(i.name)
        for n in notes + ([problem] if problem else []):
            case_notes.append(f"{case.name}: {n}")
        # progress on stderr, so stdout stays a clean report
        print(f"  {case.name}: {rounds} rounds, {table.progress} {fmt_time(row['medians'].get(table.progress))}",
              file=sys.stderr, flush=True)
        del data, impls  # free the large inputs before the next case allocates its own
    return rows, raw, columns, case_notes, time.perf_counter() - t_start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (the main table in about a minute)")
    # Case names contain commas, so several filters are separate words: --cases f16 dim0
    p.add_argument("--cases", nargs="+", action="extend", default=[], metavar="SUBSTRING",
                   help="only cases whose name contains one of these substrings (case-insensitive, spaces "
                        "ignored), e.g. --cases f16 dim0 '(3,)'")
    p.add_argument("--main", action="store_true",
                   help="the main table (softmax); the default when no table is chosen")
    p.add_argument("--family", action="store_true",
                   help="the log_softmax / softmax_backward / log_softmax_backward table")
    p.add_argument("--threads", action="store_true",
                   help=f"the 1 vs {THREADS} threads table (csoftmax's pool, torch, two Python threads)")
    p.add_argument("--lse", action="store_true",
                   help="the logsumexp table (csoftmax, x.copy(), scipy, torch 1 thread, NumPy)")
    p.add_argument("--all", action="store_true", help="the four tables")
    p.add_argument("--sweep", action="store_true",
                   help="the grid of sweep.py instead of the tables: every function x dtype x layout x mask x value "
                        "pattern against torch and against plain softmax, worst ratios first (needs torch)")
    p.add_argument("--worst", type=int, default=20, help="rows of the sweep's worst-ratio tables (default 20)")
    p.add_argument("--kernels", help="switch csoftmax to this kernel set first (see csoftmax.show_config())")
    p.add_argument("--png", default=os.path.join(HERE, "compare.png"),
                   help="chart of the main table (default: %(default)s)")
    p.add_argument("--no-png", action="store_true", help="do not write the chart")
    p.add_argument("--json", help="also write the raw per-round times and the summary to this JSON file")
    p.add_argument("--budget", type=float, help="seconds of timing per case (default 10, --quick 3)")
    args = p.parse_args(argv)

    # Time budget per case. Rounds continue until it is spent; min_rounds guarantees a median of several
    # samples even for the slowest case, max_rounds stops the fast cases from collecting needless samples.
    budget = args.budget if args.budget is not None else (3.0 if args.quick else 10.0)
    min_rounds, max_rounds = (5, 50) if args.quick else (7, 200)
    min_sample = 0.5e-3 if args.quick else 1e-3  # a sample of a short call loops for at least this long

    if args.kernels:
        available = _csoftmax.available_kernels()
        if args.kernels not in available:
            print(f"unknown kernel set {args.kernels!r}; available here: {available}", file=sys.stderr)
            return 2
        _csoftmax.use_kernels(args.kernels)

    if args.sweep:
        if torch is None:
            print("--sweep compares with torch: pip install torch==2.13.0", file=sys.stderr)
            return 2
        import sweep

        print(f"CPU: {cpu_model()}; csoftmax {csoftmax.__version__} [{_csoftmax.active_kernels()}]; torch "
              f"{torch.__version__}; numpy {np.__version__}")
        budget = args.budget if args.budget is not None else (0.3 if args.quick else 1.0)
        sweep.run(csoftmax, torch, budget=budget, match=args.cases, worst=args.worst)
        return 0

    chosen = {t.key for t in TABLES if args.all or getattr(args, t.key)} or {"main"}
    wanted = [s.replace(" ", "").lower() for s in args.cases if s.strip()]
    selected = []  # (table, its cases)
    for table in TABLES:
        if table.key in chosen:
            cases = [c for c in table.cases
                     if not wanted or any(w in c.name.replace(" ", "").lower() for w in wanted)]
            if cases:
                selected.append((table, cases))
    if not selected:
        names = [c.name for t in TABLES if t.key in chosen for c in t.cases]
        print(f"no case matches --cases {args.cases!r}; cases: {names}", file=sys.stderr)
        return 2

    cfg = cs_config()
    default_threads = cfg.get("default_num_threads", csoftmax.get_num_threads())
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs; csoftmax reports: {cfg['cpu']})")
    print(f"csoftmax {cfg['version']} from {os.path.dirname(csoftmax.__file__)}; active kernels: "
          f"{cfg['active']} (available: {', '.join(cfg['available'])})"
          + (f"; forced by CSOFTMAX_ISA={cfg['forced_by']}" if cfg["forced_by"] else ""))
    print(f"csoftmax threads: 1 in the main, family and logsumexp tables (set before every sample; its default "
          f"here: {default_threads})" + (f"; 1 and {THREADS} in the threads table" if "threads" in chosen else ""))
    versions = [f"numpy {np.__version__}", f"python {platform.python_version()}"]
    if torch is not None:
        versions.append(f"torch {torch.__version__} (1 and {TORCH_ALL_THREADS} threads)")
    if scipy is not None:
        versions.append(f"scipy {scipy.__version__}")
    print("; ".join(versions))
    print(f"timing: interleaved rounds, median; {budget:g} s per case, {min_rounds}-{max_rounds} rounds, "
          f"samples >= {min_sample * 1e3:g} ms{' (--quick)' if args.quick else ''}")
    for note in NOTES:
        print(f"note: {note}")
    if "threads" in chosen and (os.cpu_count() or 1) < THREADS:
        print(f"note: this machine has fewer than {THREADS} CPUs: the threads table measures oversubscription")
    print(flush=True)  # the header shows before the progress lines (stderr) when both go to one file

    # glibc's malloc serves big blocks with mmap until a freed mmapped block raises its threshold (up to 32 MiB);
    # after that, same-sized blocks are reused from the heap without fresh page faults. Which cases ran first
    # would otherwise decide whether the 16 MiB outputs of a later case pay page faults. Free one ~31 MiB
    # block now, so every run starts in the steady state of a long-running program whatever --cases selects
    # (blocks over 32 MiB, e.g. the 64 MiB (4096,4096) outputs, are mmapped every call, by every peer alike).
    ballast = np.empty(31 << 20, np.uint8)
    del ballast
    np_rng = np.random.default_rng(0)
    order_rng = random.Random(0)
    timing = (budget, min_rounds, max_rounds, min_sample)
    saved_threads = csoftmax.get_num_threads()
    results = {}
    try:
        for table, cases in selected:
            results[table.key] = run_table(table, cases, timing, np_rng, order_rng)
    except WrongResult as exc:
        print(f"wrong result, run stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        csoftmax.set_num_threads(saved_threads)  # main() may be called from a program that goes on

    several = len(selected) > 1
    for table, _ in selected:
        rows, raw, columns, case_notes, elapsed = results[table.key]
        if several or table.key != "main":  # the default run prints the main table alone, as it always did
            print(f"## {table.heading}")
            print()
        if table.key == "threads":
            print_threads_table(rows)
            print()
            print(f"({len(rows)} cases in {elapsed:.0f} s. cs {THREADS}t/1t: csoftmax's time with 1 thread / with "
                  f"{THREADS} (higher is better); torch1t/cs1t, torch{THREADS}t/cs{THREADS}t: how many times slower "
                  f"torch is at the same thread count; targets: {THREADS}t/1t >= 1.7x on the cache-sized shapes "
                  f"and for two Python threads, >= 1x (never slower) on the memory-bound ones, and "
                  f"torch{THREADS}t/cs{THREADS}t at least the single-thread target. Two Python threads: cs 1t is "
                  f"one Python thread making both arrays' calls (N+N, N >= {PY_THREAD_MIN_CALLS} so that N calls "
                  f"last {THREAD_MIN_SAMPLE * 1e3:g} ms), cs {THREADS}t two Python threads making N each at once, "
                  f"csoftmax at 1 thread; "
                  f"times per call, so the ratio is the throughput gain; the np.copyto row does the same with a "
                  f"plain copy instead of softmax (the memory bandwidth a second core adds). cs IQR: interquartile "
                  f"range of the "
                  f"samples. other load: CPUs kept busy by other processes while the case ran.)")
        elif table.key == "lse":
            print_lse_table(rows, columns)
            print()
            print(f"({len(rows)} cases in {elapsed:.0f} s. cs/copy: csoftmax.logsumexp time / x.copy() time (lower is "
                  f"better); scipy/cs, torch1t/cs, numpy/cs: how many times slower scipy.special.logsumexp, "
                  f"torch.logsumexp with 1 thread and the two-line NumPy logsumexp are (higher is better for "
                  f"csoftmax); cs err: csoftmax's worst error against a long-double reference, in ulp of the dtype "
                  f"(every implementation was checked to be within {LSE_WRONG_ULP} ulp); cs IQR: interquartile "
                  f"range of csoftmax's samples.)")
            print_lse_targets(rows)
        else:
            print_table(rows, columns)
            print()
            print(f"({len(rows)} cases in {elapsed:.0f} s. torch1t/cs: how many times slower single-threaded torch "
                  f"is (higher is better for csoftmax); cs/floor: csoftmax time / x.copy() time, or / the case's "
                  f"floor in parentheses (lower is better)"
                  + ("; for the backward rows x is the upstream gradient" if table.key == "family" else "")
                  + "; cs IQR: interquartile range of csoftmax's samples.)")
        for n in case_notes:
            print(f"note: {n}")
        loads = [r["other_load"] for r in rows if r.get("other_load") is not None]
        if loads and max(loads) >= 0.1:
            print(f"note: other processes kept {statistics.mean(loads):.2f} CPUs busy on average during these cases "
                  f"(up to {max(loads):.2f} during one; this machine has {os.cpu_count()}): expect noise"
                  + (", above all in the 2-thread columns" if table.key == "threads" else ""))
        if several:
            print()

    if "main" in results and not args.no_png:
        title = (f"csoftmax {cfg['version']} [{cfg['active']}] on {cpu_model()}"
                 f"{' (quick)' if args.quick else ''}")
        skipped = write_png(results["main"][0], args.png, title)
        print(f"note: {skipped}" if skipped else f"chart: {args.png}")
    if args.json:
        # the main table keeps its historical keys ("summary", "raw"); the others go under their own keys
        dump = {"config": cfg, "cpu_model": cpu_model()}
        for key, (rows, raw, *_rest) in results.items():
            if key == "main":
                dump.update(summary=rows, raw=raw)
            else:
                dump[key] = {"summary": rows, "raw": raw}
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1)
        print(f"raw times: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
