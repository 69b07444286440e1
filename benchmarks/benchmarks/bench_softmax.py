"""asv benchmarks of csoftmax.softmax, log_softmax and the backward functions.

Sizes are moderate (at most a few million elements) so that a full `asv run` stays at a few minutes; the
large, issue-target cases and the comparison with torch/scipy/NumPy live in benchmarks/compare.py.

Every timed class also times a floor with the same parameters (time_copy_floor: allocate and copy the input),
so a change in csoftmax can be told apart from a machine that got slower: look at the ratio of the two.
"""
import numpy as np

import csoftmax
from csoftmax import _csoftmax

DTYPES = ["float16", "float32", "float64"]

# C: C-contiguous. F: Fortran order (the softmax axis strides differently). strided: every other element of
# the last axis of a twice-as-wide array, so no axis is contiguous and csoftmax has to gather.
LAYOUTS = ["C", "F", "strided"]


def make_input(shape, dtype, layout, seed=0):
    """A standard-normal array of `shape` and `dtype` in the given memory layout. Built without temporary copies
    of float32 data (copy=False, a transpose for F order), so the Memory benchmarks' setup peak is only the
    input itself."""
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    if layout == "C":
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
    if layout == "F":
        # the transpose of a C array of the reversed shape is an F-ordered array of `shape`
        return rng.standard_normal(shape[::-1], dtype=np.float32).astype(dtype, copy=False).T
    if layout == "strided":
        wide = rng.standard_normal(shape[:-1] + (2 * shape[-1],), dtype=np.float32).astype(dtype, copy=False)
        return wide[..., ::2]
    raise ValueError(f"unknown layout {layout!r}")


class Softmax2D:
    """dtype x shape x dim x layout over 2-D arrays: long rows, medium rows and very short rows (the reduction
    length, not only the size, decides which kernel path runs), each reduced along either axis."""

    params = (DTYPES, [(1024, 1024), (64, 1000), (65536, 16)], [0, -1], LAYOUTS)
    param_names = ["dtype", "shape", "dim", "layout"]

    def setup(self, dtype, shape, dim, layout):
        self.x = make_input(shape, dtype, layout)
        self.dim = dim
        csoftmax.softmax(self.x, dim)  # warm-up: first-touch page faults and lazy initialisation not timed

    def time_softmax(self, dtype, shape, dim, layout):
        csoftmax.softmax(self.x, self.dim)

    def time_copy_floor(self, dtype, shape, dim, layout):
        # the least an out-of-place operation does: allocate the result and stream the input once
        self.x.copy()


class SoftmaxND:
    """Shapes from real uses, each with its own dim: a middle axis (channels), attention scores, a long 1-D
    vector and a tiny vector (pure call overhead)."""

    params = (
        DTYPES,
        ["(32,128,128) dim=1", "(4,12,128,128) dim=-1", "(1000000,) dim=0", "(3,) dim=0"],
        LAYOUTS,
    )
    param_names = ["dtype", "case", "layout"]

    _CASES = {
        "(32,128,128) dim=1": ((32, 128, 128), 1),
        "(4,12,128,128) dim=-1": ((4, 12, 128, 128), -1),
        "(1000000,) dim=0": ((1_000_000,), 0),
        "(3,) dim=0": ((3,), 0),
    }

    def setup(self, dtype, case, layout):
        shape, self.dim = self._CASES[case]
        if layout == "F" and len(shape) == 1:
            raise NotImplementedError("F order is C order for 1-D arrays")  # asv skips this combination
        self.x = make_input(shape, dtype, layout)
        csoftmax.softmax(self.x, self.dim)

    def time_softmax(self, dtype, case, layout):
        csoftmax.softmax(self.x, self.dim)

    def time_copy_floor(self, dtype, case, layout):
        self.x.copy()


class Kernels:
    """The same float32 work under each kernel set this CPU can run (the list is read at import, so it is the
    running machine's), to see what the SIMD kernels gain over the portable baseline."""

    params = (list(_csoftmax.available_kernels()), ["(1024,1024) dim=-1", "(1024,1024) dim=0", "(65536,16) dim=-1"])
    param_names = ["kernels", "case"]

    _CASES = {
        "(1024,1024) dim=-1": ((1024, 1024), -1),
        "(1024,1024) dim=0": ((1024, 1024), 0),
        "(65536,16) dim=-1": ((65536, 16), -1),
    }

    def setup(self, kernels, case):
        shape, self.dim = self._CASES[case]
        self.x = make_input(shape, "float32", "C")
        self.previous = _csoftmax.active_kernels()
        _csoftmax.use_kernels(kernels)
        csoftmax.softmax(self.x, self.dim)

    def teardown(self, kernels, case):
        _csoftmax.use_kernels(self.previous)  # other benchmarks in this process run with the default set

    def time_softmax(self, kernels, case):
        csoftmax.softmax(self.x, self.dim)


class Memory:
    """Peak memory (max RSS of the benchmark process) for a 16 MiB float32 input in each layout. softmax must
    allocate only its output: peakmem_softmax - peakmem_input_only should stay at one output (16 MiB) for every
    layout and dim, and would grow by a whole array if a layout made csoftmax copy its input."""

    params = (LAYOUTS, [0, -1])
    param_names = ["layout", "dim"]

    def setup(self, layout, dim):
        self.x = make_input((2048, 2048), "float32", layout)
        self.dim = dim

    def peakmem_input_only(self, layout, dim):
        # the reference: interpreter + NumPy + csoftmax + the input (and, for "strided", its wide base)
        pass

    def peakmem_softmax(self, layout, dim):
        csoftmax.softmax(self.x, self.dim)


# The family: log_softmax and the two backward functions over the same 2-D shapes as Softmax2D (C order only; the
# layouts are Softmax2D's concern, and the forward functions share its kernel paths).
FAMILY_SHAPES = [(1024, 1024), (64, 1000), (65536, 16)]


class LogSoftmax:
    """csoftmax.log_softmax, dtype x shape x dim, with the same copy floor as Softmax2D."""

    params = (DTYPES, FAMILY_SHAPES, [0, -1])
    param_names = ["dtype", "shape", "dim"]

    def setup(self, dtype, shape, dim):
        self.x = make_input(shape, dtype, "C")
        self.dim = dim
        csoftmax.log_softmax(self.x, dim)  # warm-up

    def time_log_softmax(self, dtype, shape, dim):
        csoftmax.log_softmax(self.x, self.dim)

    def time_copy_floor(self, dtype, shape, dim):
        self.x.copy()


class Backward:
    """csoftmax.softmax_backward(grad, output, dim) and log_softmax_backward(grad, output, dim), dtype x shape x
    dim. The outputs are the forward functions' results on a standard-normal input (computed once, in setup) and
    grad is another standard-normal array: the backward reads two arrays and writes one, so its floor, a copy of
    grad, is a lower bound rather than a like-for-like."""

    params = (DTYPES, FAMILY_SHAPES, [0, -1])
    param_names = ["dtype", "shape", "dim"]

    def setup(self, dtype, shape, dim):
        x = make_input(shape, dtype, "C")
        self.dim = dim
        self.y = csoftmax.softmax(x, dim)
        self.log_y = csoftmax.log_softmax(x, dim)
        self.grad = make_input(shape, dtype, "C", seed=1)
        csoftmax.softmax_backward(self.grad, self.y, dim)  # warm-up
        csoftmax.log_softmax_backward(self.grad, self.log_y, dim)

    def time_softmax_backward(self, dtype, shape, dim):
        csoftmax.softmax_backward(self.grad, self.y, self.dim)

    def time_log_softmax_backward(self, dtype, shape, dim):
        csoftmax.log_softmax_backward(self.grad, self.log_y, self.dim)

    def time_copy_floor(self, dtype, shape, dim):
        self.grad.copy()
