"""The fuzzing harness for csoftmax: builds hostile inputs from a stream of decisions and checks every invariant.

One decoder, two engines:

* ``build_case(draw)`` turns a sequence of decisions into a *case*: dtype (float16/32/64, native or byte-swapped),
  shape (0-5 dims, small, sometimes one long axis, rarely a big one that takes the thread pool's paths), byte
  strides (compact in any axis order, sliced, negative, zero, overlapping, misaligned), byte offset into a base
  buffer, values (Gaussian at many scales, ties, specials: subnormals, +-inf, NaN payloads, +-max, -0.0, values
  around the kernels' internal limits), the function (softmax, log_softmax, softmin: those the package has), dim
  (in and out of range, as int / NumPy int / __index__ object / axis= / a tuple of axes), dtype= (none, same,
  widening), out= (fresh, byte-swapped, misaligned, strided, the input itself), where= (a seeded random mask),
  the kernel set, and whether the input is read-only, a NumPy scalar or a list.
* ``BytesDraw`` reads the decisions from raw bytes (atheris/libFuzzer); ``HypothesisDraw`` from hypothesis's
  ``data.draw`` (shrinkable). Both drive the same ``build_case``.

A case is plain data (the base buffer's bytes, dtype string, shape, strides, offset, ...), independent of the
decoder, so failures are saved as regression files (``save_case``: .npz with a JSON header) that stay meaningful
when the decoder changes. ``check_case(case)`` runs csoftmax and raises ``FuzzFailure`` (an AssertionError) with a
``kind`` tag when anything is wrong:

* the call: no exception except AxisError exactly for an invalid dim; no warning of any kind;
* the result: an exact ndarray (the out= array itself when given), the input's shape, the expected dtype, not
  sharing memory with the input, C order for C input and F order for F input;
* values: NaN exactly where the long-double reference (csoftmax._reference.softmax_reference; log_softmax with
  log1p for exact top entries) is NaN, elsewhere within the per-dtype ulp bound of it (float16: 1, float32 and
  float64: 64); softmax/softmin in [0, 1] with no -0.0 and non-NaN rows summing to 1 within a bound growing with
  their length; log_softmax never above 0 and its infinities exact; where= entries masked out exactly 0 / -inf;
* layout independence (documented: "bit-identical whatever the memory layout"): the same bits as a plain call on
  a C-contiguous, aligned, native copy of the input (NaNs compared as NaN: their sign differs between paths);
* the input: its whole base buffer (bytes), dtype, shape, strides, flags and data pointer unchanged (unless it
  is its own out=).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import warnings

import numpy as np

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    AxisError = np.AxisError

import csoftmax
from csoftmax import _csoftmax
from csoftmax._reference import softmax_reference

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS_DIR = os.environ.get("CSOFTMAX_FUZZ_CORPUS") or os.path.join(HERE, "corpus")

MAX_ELEMENTS = 6000            # per case: keeps a case well under a millisecond of reference work
ULP_BOUND = {"f2": 1.0, "f4": 64.0, "f8": 64.0}
WIDENING = {"f2": ("f4", "f8"), "f4": ("f8",), "f8": ()}


def round_to(wide, dtype):
    """A long-double array rounded once to `dtype`. (NumPy casts long double to float16 through float32, which
    double-rounds: -32.015625000000012 becomes -32.0 instead of -32.03125; through float64 the second rounding
    is exact enough. Spacings are taken of magnitudes: np.spacing(float16(-32)) is the spacing below 32.)"""
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):
        if dtype.itemsize < 8:
            return np.asarray(wide).astype(np.float64).astype(dtype)
        return np.asarray(wide).astype(dtype)


class FuzzFailure(AssertionError):
    """A broken invariant; ``kind`` groups failures with the same cause (used to de-duplicate saved cases)."""

    def __init__(self, kind, message):
        super().__init__(f"[{kind}] {message}")
        self.kind = kind


# ------------------------------------------------------------------------------------------------ decisions


class BytesDraw:
    """Decisions read from a byte string (libFuzzer's input). Past its end, the decisions come from a generator
    seeded with the bytes, so every byte string is a valid case, short inputs still give rich cases, and mutating
    the prefix steers the first (most structural) decisions."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.pos = 0
        self._rng = None

    def _take(self, n):
        if self.pos + n <= len(self.data):
            chunk = self.data[self.pos:self.pos + n]
            self.pos += n
            return int.from_bytes(chunk, "little")
        if self._rng is None:
            import random

            self._rng = random.Random(hashlib.sha1(self.data).digest())
        self.pos += n
        return self._rng.getrandbits(8 * n)

    def int(self, lo, hi):
        span = hi - lo + 1
        if span <= 1:
            return lo
        n = (span.bit_length() + 7) // 8
        return lo + self._take(n) % span

    def choice(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def bool(self, p=0.5):
        return self._take(1) < int(p * 256)


class HypothesisDraw:
    """Decisions drawn from hypothesis's ``st.data()`` (shrinks towards the first choice / smallest integer)."""

    def __init__(self, data):
        from hypothesis import strategies as st

        self._data = data
        self._st = st

    def int(self, lo, hi):
        return self._data.draw(self._st.integers(lo, hi))

    def choice(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def bool(self, p=0.5):
        # 0 shrinks to "no": rare features (specials, odd layouts) disappear when a failure is minimised
        return self.int(0, 255) >= 256 - int(p * 256)


# ------------------------------------------------------------------------------------------------ values


def special_values(code):
    """Edge values of float type `code` ('f2', 'f4', 'f8') as an array of that type (NaN payloads included)."""
    dt = np.dtype(code)
    fi = np.finfo(dt)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dt.itemsize]
    nan_bits = {
        "f2": [0x7E00, 0x7E01, 0x7C01, 0xFE00, 0x7FFF, 0xFC01],
        "f4": [0x7FC00000, 0x7FC00001, 0x7F800001, 0xFFC00000, 0x7FFFFFFF, 0xFF800001],
        "f8": [0x7FF8000000000000, 0x7FF8000000000001, 0x7FF0000000000001, 0xFFF8000000000000,
               0x7FFFFFFFFFFFFFFF, 0xFFF0000000000001],
    }[code]
    # exp limits of the type and of the kernels (CSM_NEAR_LIMIT = -64, float32 clamp -104, float64 clamp -746)
    limits = {"f2": [11.09, -17.3, -16.6, -10.0], "f4": [88.72, -87.33, -103.97, -104.0, -64.0, -64.00001],
              "f8": [709.78, -708.4, -745.13, -746.0, -64.0, -64.0000000001]}[code]
    with np.errstate(all="ignore"):
        vals = np.array(
            [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, float(fi.smallest_subnormal), -float(fi.smallest_subnormal),
             float(fi.tiny) - float(fi.smallest_subnormal), float(fi.tiny), -float(fi.tiny), float(fi.max),
             -float(fi.max), float(fi.max) / 2, -float(fi.max) / 2, np.inf, -np.inf, float(fi.eps), 1 - float(fi.eps),
             *limits],
            dtype=np.float64,
        ).astype(dt)
    nans = np.array(nan_bits, dtype=uint).view(dt)
    return np.concatenate([vals, nans])


def make_values(draw, code, n):
    """n values of type `code` (native), from a recipe of a few decisions and a seeded generator."""
    dt = np.dtype(code)
    rng = np.random.default_rng(draw.int(0, 2**32 - 1))
    specials = special_values(code)
    recipe = draw.choice(("normal", "normal", "normal", "ints", "equal", "specials", "sprinkle", "sprinkle",
                          "spread", "far-boundary"))
    big = {"f2": 1e4, "f4": 1e30, "f8": 1e300}[code]
    scale = draw.choice((1.0, 1e-3, 0.1, 3.0, 30.0, 300.0, 1e4, big))
    with np.errstate(all="ignore"):
        if recipe == "normal":
            v = rng.standard_normal(n) * scale
        elif recipe == "ints":
            v = rng.integers(-3, 4, n).astype(np.float64)
        elif recipe == "equal":
            v = np.full(n, specials[draw.int(0, len(specials) - 1)] if draw.bool(0.5) else rng.standard_normal())
        elif recipe == "specials":
            return specials[rng.integers(0, len(specials), n)].astype(dt)
        elif recipe == "spread":
            # exponentials from 1 down to underflow: the kernels' far (subnormal-correct) branch
            low = {"f2": -20.0, "f4": -120.0, "f8": -800.0}[code]
            v = rng.uniform(low, 0.0, n)
        else:  # "far-boundary": x - max just above and below the near/far split and the clamps
            base = rng.choice([-64.0, -104.0, -746.0, -17.0], n)
            v = base + rng.standard_normal(n) * draw.choice((1e-6, 1e-3, 1.0))
            if n:
                v[rng.integers(0, n)] = 0.0
        v = v.astype(dt)
        if recipe == "sprinkle" and n:
            k = draw.int(1, 3)
            v[rng.integers(0, n, k)] = specials[rng.integers(0, len(specials), k)]
    return v


# ------------------------------------------------------------------------------------------------ layouts


def _extent(shape, strides, itemsize):
    """(lowest, highest + itemsize) byte offsets touched by a view; (0, 0) when it is empty."""
    if any(s == 0 for s in shape):
        return 0, 0
    lo = sum(min(0, (n - 1) * st) for n, st in zip(shape, strides))
    hi = sum(max(0, (n - 1) * st) for n, st in zip(shape, strides))
    return lo, hi + itemsize


BIG_SHAPES = ((2**18 + 3,), (2**18 + 2**16 + 5,), (2, 2**18 + 1), (3, 2**17 + 7), (2**17 + 9, 3), (4097, 40),
              (40, 4097), (600, 300), (5, 70001), (70001, 5), (9, 128, 130), (2, 3, 40000))


# Either side of the engine's limits (src/softmax.h), for float32 and float64 alike: CSM_FUSED_ROW_BYTES (rows kernel,
# 64 KiB), CSM_HALF_ROW_MAX (float16 rows, 2048), CSM_ALIGN_ROW_BYTES (3072), CSM_TILE_BYTES (16 KiB staging tiles),
# CSM_LANES_FUSED_MAX (512 steps), CSM_LANES_PANEL (4096), CSM_SMALL_PIECE (2^16) and CSM_PIECE (2^20 elements: a
# call of 4 to 8 MB).
BOUNDARY_SHAPES = ((2, 16383), (2, 16385), (2, 8191), (2, 8193), (3, 2047), (3, 2049), (5, 767), (5, 769),
                   (1, 4095), (1, 4097), (511, 9), (513, 9), (4095, 3), (4097, 3), (3, 65535), (3, 65537),
                   (1, 2**20 - 1), (1, 2**20 + 1), (2**20 + 3, 1))


def _draw_shape(draw):
    """A small shape (at most MAX_ELEMENTS), or rarely a big one that takes the thread pool's paths (a call of
    2^17+ elements is cut into tasks; rows of 2^18+ elements into pieces) or one either side of a limit of the
    engine's. Returns (shape, big)."""
    if draw.bool(0.005):
        return draw.choice(BIG_SHAPES), True
    if draw.bool(0.01):
        return draw.choice(BOUNDARY_SHAPES), True
    ndim = draw.choice((0, 1, 1, 2, 2, 2, 3, 3, 4, 5))
    shape = [draw.choice((1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 0)) if draw.bool(0.85) else draw.int(0, 40)
             for _ in range(ndim)]
    if ndim and draw.bool(0.25):          # one long axis: past the vector widths, unrolls and short-row limits
        shape[draw.int(0, ndim - 1)] = draw.choice((31, 32, 33, 63, 64, 65, 100, 127, 129, 255, 513, 1025, 4097))
    while math.prod(shape) > MAX_ELEMENTS:
        i = int(np.argmax(shape))
        shape[i] = max(1, shape[i] // 2)
    return tuple(shape), False


def _draw_strides(draw, shape, itemsize, big=False):
    """Byte strides for `shape`, and a byte misalignment to add to the offset."""
    ndim = len(shape)
    mode = draw.choice(("compact", "compact", "sliced", "sliced", "wild", "broadcast"))
    if big and mode == "wild":
        mode = "sliced"
    if mode == "wild":
        strides = []
        for _ in range(ndim):
            kind = draw.choice(("item", "item", "zero", "small", "odd", "big"))
            if kind == "item":
                s = itemsize * draw.int(1, 4)
            elif kind == "zero":
                s = 0
            elif kind == "small":                      # overlapping elements
                s = draw.int(1, max(1, itemsize - 1))
            elif kind == "odd":                        # misaligned stride
                s = itemsize * draw.int(1, 3) + draw.int(1, max(1, itemsize - 1))
            else:
                s = itemsize * draw.int(5, 300)
            strides.append(-s if draw.bool(0.3) else s)
        misalign = draw.int(0, itemsize - 1) if draw.bool(0.3) else 0
        return tuple(strides), misalign
    order = list(range(ndim))
    if draw.bool(0.5):                                 # memory order: C, F or any permutation
        kind = draw.choice(("F", "perm"))
        order = order[::-1] if kind == "F" else [order[i] for i in np.random.default_rng(draw.int(0, 999)).permutation(ndim)]
    steps = [1] * ndim
    if mode == "sliced":
        steps = [draw.choice((1, 1, 2, 3, -1, -2)) for _ in range(ndim)]
    strides = [0] * ndim
    acc = itemsize * (draw.choice((1, 1, 2)) if mode == "sliced" else 1)
    for ax in reversed(order):                         # innermost last in `order`
        strides[ax] = acc * steps[ax]
        acc *= max(1, shape[ax] * abs(steps[ax]))
    if mode == "broadcast":
        for ax in range(ndim):
            if draw.bool(0.5):
                strides[ax] = 0
    misalign = draw.int(1, itemsize - 1) if draw.bool(0.2) else 0
    return tuple(strides), misalign


def _self_overlapping(shape, strides, itemsize):
    """Whether two elements of a view share a byte (zero strides, strides below the item size, ...)."""
    if any(n == 0 for n in shape):
        return False
    offsets = np.zeros(1, dtype=np.int64)
    for n, st in zip(shape, strides):
        offsets = (offsets[:, None] + np.arange(n, dtype=np.int64)[None, :] * st).ravel()
    offsets.sort()
    return bool(np.any(np.diff(offsets) < itemsize))


def build_case(draw):
    """A case (a dict of plain data) from a source of decisions."""
    code = draw.choice(("f2", "f4", "f8"))
    swapped = draw.bool(0.25)
    dt = np.dtype(code).newbyteorder(">" if swapped == (np.little_endian) else "<")
    itemsize = dt.itemsize
    shape, big = _draw_shape(draw)
    strides, misalign = _draw_strides(draw, shape, itemsize, big)
    lo, hi = _extent(shape, strides, itemsize)
    pad_before = draw.int(0, 8) if draw.bool(0.3) else 0
    pad_after = draw.int(0, 8) if draw.bool(0.3) else 0
    offset = -lo + misalign + pad_before
    nbytes = offset + hi + pad_after
    rng = np.random.default_rng(draw.int(0, 2**32 - 1))
    buffer = np.frombuffer(bytearray(rng.bytes(nbytes)), dtype=np.uint8)   # gaps hold garbage
    view = np.ndarray(shape, dt, buffer=buffer, offset=offset, strides=strides)
    values = make_values(draw, code, view.size)
    with np.errstate(all="ignore"):
        view[...] = values.reshape(shape)              # through the view: overlapping elements keep the last write
    ndim = len(shape)
    if draw.bool(0.06):                                # out of range
        dim = draw.choice((ndim, ndim + 1, -ndim - 1, 2**31, -2**31 - 1, 2**63))
        if ndim == 0:
            dim = draw.choice((1, -2, 2**31))
    else:
        dim = draw.int(-ndim, ndim - 1) if ndim else draw.choice((0, -1))
    dim = int(dim)
    dim_kind = draw.choice(("int", "int", "int", "np.int64", "index", "axis"))
    if ndim and _tuple_dims_supported() and draw.bool(0.12):   # dim as a tuple of distinct axes (joint softmax)
        order = list(np.random.default_rng(draw.int(0, 999)).permutation(ndim))
        dim = [int(a) - (ndim if draw.bool(0.5) else 0) for a in order[:draw.int(1, ndim)]]
        dim_kind = "tuple"
    dtype_arg = None
    if draw.bool(0.2):
        dtype_arg = draw.choice((code,) + WIDENING[code])
    names = _kernel_sets()
    input_kind = draw.choice(("array",) * 12 + ("scalar", "list"))
    if (input_kind == "scalar" and ndim) or (input_kind == "list" and (0 in shape or big)):
        input_kind = "array"                           # (tolist of an empty array loses axes)
    funcs = _functions()
    func = draw.choice(funcs) if len(funcs) > 1 and draw.bool(0.4) else "softmax"
    readonly = bool(draw.bool(0.25))
    out_kind = draw.choice(OUT_KINDS) if func in funcs and draw.bool(0.15) else None
    if out_kind == "input" and (readonly or input_kind != "array" or dtype_arg not in (None, code)
                                or _self_overlapping(shape, strides, itemsize)):
        out_kind = "fresh"                             # in place needs a writeable, non-overlapping array of the
                                                       # result's dtype (into overlapping elements, any is "right")
    where_seed = where_p = None
    if draw.bool(0.1):
        where_seed, where_p = draw.int(0, 2**31), draw.choice((0.0, 0.3, 0.7, 0.95, 1.0))
    return {
        "func": func,
        "out_kind": out_kind,
        "where_seed": where_seed,
        "where_p": where_p,
        "dtype": dt.str,
        "shape": list(shape),
        "strides": list(strides),
        "offset": int(offset),
        "buffer": buffer.tobytes(),
        "readonly": readonly,
        "dim": dim,
        "dim_kind": dim_kind,
        "dtype_arg": dtype_arg,
        "input_kind": input_kind,
        "kernels": draw.choice(names) if names and draw.bool(0.5) else None,
    }


# ------------------------------------------------------------------------------------------------ running


def _kernel_sets():
    return list(_csoftmax.available_kernels())


@contextlib.contextmanager
def kernel_set(name):
    """Makes kernel set `name` active (None: leave the current one) and restores the previous one. A set this CPU
    lacks (a corpus case saved on another machine) runs on the current one."""
    core = _csoftmax
    if name is None or name not in _kernel_sets():
        yield
        return
    before = core.active_kernels()
    core.use_kernels(name)
    try:
        yield
    finally:
        core.use_kernels(before)


class _Index:
    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


def materialize(case):
    """The input array of a case (a fresh, writable-then-flagged view of a fresh copy of its buffer)."""
    buffer = np.frombuffer(bytearray(case["buffer"]), dtype=np.uint8)
    x = np.ndarray(tuple(case["shape"]), np.dtype(case["dtype"]), buffer=buffer, offset=case["offset"],
                   strides=tuple(case["strides"]))
    if case["readonly"]:
        x.flags.writeable = False
    return x


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def snapshot(x):
    root = _root(x)
    f = x.flags
    return (root.tobytes(), x.dtype.str, x.shape, x.strides, f.writeable, f.aligned, f.c_contiguous,
            f.f_contiguous, x.__array_interface__["data"][0])


FUNCTIONS = ("softmax", "log_softmax", "softmin")
OUT_KINDS = ("fresh", "swapped", "misaligned", "strided", "input")


_TUPLE_DIMS = []


def _tuple_dims_supported():
    if not _TUPLE_DIMS:
        try:
            csoftmax.softmax(np.ones((2, 2)), (0, 1))
            _TUPLE_DIMS.append(True)
        except Exception:
            _TUPLE_DIMS.append(False)
    return _TUPLE_DIMS[0]


def _axes(case, ndim):
    """The case's dim as a tuple of non-negative axes, or None when it is not a valid dim for ndim."""
    dims = case["dim"] if case["dim_kind"] == "tuple" else [case["dim"]]
    if ndim == 0:
        return (0,) if case["dim_kind"] != "tuple" and dims[0] in (0, -1) else None
    if not dims or any(not -ndim <= d < ndim for d in dims):
        return None
    axes = tuple(d % ndim for d in dims)
    return axes if len(set(axes)) == len(axes) else None


def _functions():
    return list(FUNCTIONS)


def _where_mask(case, shape):
    if case.get("where_seed") is None:
        return None
    return np.random.default_rng(case["where_seed"]).random(shape) < case["where_p"]


def _out_dtype(case):
    if case["dtype_arg"] is not None:
        return np.dtype(np.dtype(case["dtype_arg"]).str[1:])
    if case["input_kind"] == "list":
        return np.dtype("f8")                          # np.asarray of a list of Python floats
    return np.dtype(np.dtype(case["dtype"]).str[1:])


def _make_out(kind, x, out_dtype):
    """An out= array of the result's shape and dtype: fresh, byte-swapped, misaligned, strided, or x itself."""
    if kind == "input":
        return x
    if kind == "fresh":
        return np.full(x.shape, 0.25, dtype=out_dtype)
    if kind == "swapped":
        return np.full(x.shape, 0.25, dtype=out_dtype.newbyteorder("S"))
    if kind == "misaligned":
        n = max(1, x.size) * out_dtype.itemsize
        buf = np.zeros(n + 1, np.uint8)
        return buf[1:1 + x.size * out_dtype.itemsize].view(out_dtype).reshape(x.shape)
    big = np.zeros(tuple(2 * n for n in x.shape), dtype=out_dtype)
    return big[tuple(slice(None, None, -2) for _ in x.shape)] if x.ndim else big


def call_function(case, x):
    """Calls csoftmax.<func> the way the case says; returns the result."""
    f = getattr(csoftmax, case.get("func", "softmax"))
    kind = case["input_kind"]
    arg = x
    if kind == "scalar" and x.ndim == 0:
        arg = x[()]                                    # a NumPy scalar of the (possibly byte-swapped) dtype
    elif kind == "list":
        arg = x.tolist()
    dim = case["dim"]
    dtype = case["dtype_arg"]
    dk = case["dim_kind"]
    kw = {}
    if case.get("out_kind"):
        kw["out"] = _make_out(case["out_kind"], x, _out_dtype(case))
    mask = _where_mask(case, x.shape)
    if mask is not None:
        kw["where"] = mask
    if dk == "tuple":
        dim = tuple(dim)
    if dk == "axis":
        return f(arg, axis=dim, dtype=dtype, **kw), kw
    if dk == "np.int64" and -2**63 <= dim < 2**63:
        dim = np.int64(dim)
    elif dk == "index":
        dim = _Index(dim)
    if dtype is None and dk == "int" and not kw:
        return f(arg, dim), kw                         # softmax's fast path: this exact signature
    return f(arg, dim, dtype, **kw), kw


def describe(case):
    c = dict(case)
    c["buffer"] = f"<{len(case['buffer'])} bytes>"
    return json.dumps(c)


def _ulp_errors(got, ref_wide, out_dtype):
    with np.errstate(all="ignore"):
        rounded = round_to(ref_wide, out_dtype)
        spacing = np.spacing(np.abs(rounded)).astype(np.longdouble)
        return np.abs(got.astype(np.longdouble) - ref_wide) / spacing


def _log_softmax_reference(w, axis):
    """log_softmax in long double, log(sum) as log1p of everything but one maximum (exact top entries)."""
    with np.errstate(all="ignore"):
        if w.ndim == 0:
            return _log_softmax_reference(w.reshape(1), 0).reshape(())
        m = np.max(w, axis=axis, keepdims=True)
        top = w == m
        rest = np.sum(np.where(top, 0, np.exp(w - m)), axis=axis, keepdims=True)
        r = (w - m) - np.log1p((np.sum(top, axis=axis, keepdims=True) - 1) + rest)
        return np.where(np.isfinite(m), r, np.nan)


def reference(case, values, axes, mask):
    """The long-double result of the case's function on `values` (the input's values, as given) along the
    (jointly normalised) axes, unrounded."""
    w = np.asarray(values).astype(np.longdouble)
    if w.ndim and len(axes) > 1:
        k = len(axes)
        moved = np.moveaxis(w, axes, range(-k, 0))
        mmask = None if mask is None else np.moveaxis(mask, axes, range(-k, 0)).reshape(moved.shape[:-k] + (-1,))
        r = reference(case, moved.reshape(moved.shape[:-k] + (-1,)), (moved.ndim - k,), mmask)
        return np.moveaxis(r.reshape(moved.shape), range(-k, 0), axes)
    axis = axes[0]
    func = case.get("func", "softmax")
    with np.errstate(all="ignore"):
        if mask is not None:
            w = np.where(mask, w, np.longdouble(np.inf if func == "softmin" else -np.inf))
        if func == "softmin":
            w = -w
        if func == "log_softmax":
            r = _log_softmax_reference(w, axis)
        else:
            r = softmax_reference(w, axis, out_dtype=np.longdouble, work_dtype=np.longdouble)
        if mask is not None:
            r = np.where(mask, r, np.longdouble(-np.inf if func == "log_softmax" else 0.0))
    return r


def check_case(case):
    """Runs the case; raises FuzzFailure if any invariant breaks."""
    x = materialize(case)
    in_place = case.get("out_kind") == "input"
    original = x.copy() if in_place else x             # in place: the values before the call
    before = snapshot(x)
    ndim = x.ndim
    dim = case["dim"]
    in_range = _axes(case, ndim) is not None
    with kernel_set(case["kernels"]), warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            y, kw = call_function(case, x)
        except AxisError as e:
            if in_range:
                raise FuzzFailure("axis-error-in-range", f"AxisError for dim {dim} of a {ndim}-d input: {e}")
            if not (isinstance(e, IndexError) and isinstance(e, ValueError)):
                raise FuzzFailure("axis-error-type", f"AxisError is not an IndexError and a ValueError: {e!r}")
            y = None
        except Warning as w:
            raise FuzzFailure("warning", f"{type(w).__name__}: {w}")
        except Exception as e:
            raise FuzzFailure(f"exception-{type(e).__name__}", f"{type(e).__name__}: {e}")
        if y is not None and not in_range:
            raise FuzzFailure("no-axis-error", f"dim {dim} of a {ndim}-d input gave a result, not AxisError")
        if y is None:
            if snapshot(x) != before:
                raise FuzzFailure("input-modified", "a call that raised changed the input")
            return
        if not in_place and snapshot(x) != before:
            raise FuzzFailure("input-modified", "the input's buffer, dtype, strides or flags changed")
        if "out" in kw and y is not kw["out"]:
            raise FuzzFailure("out-not-returned", "with out=, the result is not the out array")
        _check_result(case, original, y, "out" in kw)
        _check_layout_independence(case, original, y)
        _check_backward(case, y, tuple(_axes(case, ndim)))
        if not in_place and snapshot(x) != before:
            raise FuzzFailure("input-modified", "the input's buffer, dtype, strides or flags changed")


def _check_result(case, x, y, given_out):
    func = case.get("func", "softmax")
    out_dtype = _out_dtype(case)                       # native
    if type(y) is not np.ndarray:
        raise FuzzFailure("result-type", f"result is {type(y).__name__}, not numpy.ndarray")
    if y.shape != x.shape:
        raise FuzzFailure("shape", f"result shape {y.shape}, input shape {x.shape}")
    if y.dtype.newbyteorder("=") != out_dtype or (not given_out and not y.dtype.isnative):
        raise FuzzFailure("dtype", f"result dtype {y.dtype.str}, expected {out_dtype.str}")
    if not given_out:
        if y.size and np.may_share_memory(y, _root(x)):
            raise FuzzFailure("aliasing", "the result shares memory with the input")
        if case["input_kind"] == "array" and x.ndim >= 2 and x.size > 1:
            if x.flags.c_contiguous and not x.flags.f_contiguous and not y.flags.c_contiguous:
                raise FuzzFailure("order", f"C-contiguous input gave strides {y.strides}")
            if x.flags.f_contiguous and not x.flags.c_contiguous and not y.flags.f_contiguous:
                raise FuzzFailure("order", f"F-contiguous input gave strides {y.strides}")
    if y.size == 0:
        return
    y = np.array(y, dtype=out_dtype)                  # native, contiguous (out= may be neither)
    axes = _axes(case, x.ndim)
    mask = _where_mask(case, x.shape)
    with np.errstate(all="ignore"):                   # casting a signalling NaN raises "invalid"
        src = np.asarray(x.tolist(), dtype=np.float64) if case["input_kind"] == "list" else x
        ref = reference(case, src, axes, mask)
    nan_y, nan_r = np.isnan(y), np.isnan(ref)
    if not np.array_equal(nan_y, nan_r):
        where = np.argwhere(nan_y != nan_r)[:3].tolist()
        raise FuzzFailure(f"nan-pattern-{func}", f"NaN pattern differs from the reference at {where}")
    ok = ~nan_r
    code = out_dtype.str[1:]
    if ok.any():
        vals = y[ok]
        ref_ok = ref[ok]
        if func == "log_softmax":
            with np.errstate(all="ignore"):
                rounded = round_to(ref_ok, out_dtype)
            inf = np.isinf(rounded)
            if not np.array_equal(vals[inf], rounded[inf]):
                raise FuzzFailure("log-softmax-infinities", "infinite results differ from the reference")
            vals, ref_ok = vals[~inf], ref_ok[~inf]
            if np.any(vals > 0):
                raise FuzzFailure("log-softmax-positive", f"log_softmax above 0: {vals[vals > 0][:3]!r}")
        if vals.size:
            err = _ulp_errors(vals, ref_ok, out_dtype)
            worst = float(err.max())
            if not worst <= ULP_BOUND[code]:
                i = int(np.argmax(err))
                raise FuzzFailure(f"ulp-{func}-{code}", f"{worst:.3g} ulp from the reference (bound "
                                  f"{ULP_BOUND[code]}): got {vals[i]!r}, reference {ref_ok[i]!r}")
        if func != "log_softmax":
            if not np.all((vals >= 0) & (vals <= 1)):
                raise FuzzFailure("range", f"values outside [0, 1]: {vals[(vals < 0) | (vals > 1)][:3]!r}")
            if np.any(np.signbit(vals)):
                raise FuzzFailure("negative-zero", "a result is -0.0")
    if y.ndim and func != "log_softmax":
        n = math.prod(y.shape[a] for a in axes)
        fi = np.finfo(out_dtype)
        bound = 1.5 * (ULP_BOUND[code] * float(fi.eps) + n * float(fi.smallest_subnormal)) + n * 2.0**-40
        with np.errstate(all="ignore"):
            sums = np.sum(y.astype(np.longdouble), axis=axes)
        rows_ok = ~np.any(nan_y, axis=axes)
        if mask is not None:
            rows_ok &= np.any(mask, axis=axes)         # a fully masked row is all 0
        dev = np.abs(sums[rows_ok] - 1)
        if dev.size and not float(dev.max()) <= bound:
            raise FuzzFailure("row-sum", f"a row sums to 1 +- {float(dev.max()):.3g} (bound {bound:.3g}, n={n})")


def _check_layout_independence(case, x, y):
    """The same bits as a plain call (no out=) on a C-contiguous, aligned, native copy of the input."""
    if case["input_kind"] == "list":
        return
    compact = np.array(x, dtype=x.dtype.newbyteorder("="), order="C", copy=True)   # a fresh, aligned allocation
    f = getattr(csoftmax, case.get("func", "softmax"))
    mask = _where_mask(case, x.shape)
    kw = {} if mask is None else {"where": mask}
    dim = tuple(case["dim"]) if case["dim_kind"] == "tuple" else case["dim"]
    y2 = f(compact, dim, case["dtype_arg"], **kw)
    # NaN rows may differ in the NaN's sign/payload between paths (x86's default NaN is negative): compare NaN
    # positions, and the bits of everything else
    out_dtype = y2.dtype
    a, b = np.array(y, dtype=out_dtype, order="C"), np.ascontiguousarray(y2)
    na, nb = np.isnan(a), np.isnan(b)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    differ = (na != nb) | (~na & (a.view(uint) != b.view(uint)))
    if differ.any():
        where = np.argwhere(differ)[:3].tolist() if a.ndim else "0-d"
        raise FuzzFailure("layout-bits", f"not bit-identical to the result for a C-contiguous native copy "
                                         f"(first differences at {where})")


def _check_backward(case, y, axes):
    """The matching backward function on the forward's result y, in whatever layout y came back (out= kinds
    included), against a long-double gradient: within 8 eps of the size of the terms it is made of."""
    func = case.get("func", "softmax")
    if func not in ("softmax", "log_softmax") or y.ndim == 0 or y.size == 0:
        return
    back = getattr(csoftmax, func + "_backward")
    g = np.random.default_rng(y.size).standard_normal(y.shape).astype(y.dtype.newbyteorder("="))
    dim = axes if len(axes) > 1 else axes[0]
    before = snapshot(y)
    try:
        got = back(g, y, dim)
    except Exception as e:
        raise FuzzFailure(f"backward-exception-{type(e).__name__}", f"{func}_backward: {type(e).__name__}: {e}")
    if snapshot(y) != before:
        raise FuzzFailure("backward-input-modified", f"{func}_backward changed its output argument")
    gw, yw = g.astype(np.longdouble), y.astype(np.longdouble)
    with np.errstate(all="ignore"):
        if func == "log_softmax":
            e = np.exp(yw)
            want = gw - e * gw.sum(axis=axes, keepdims=True)
            scale = np.abs(gw) + e * np.abs(gw).sum(axis=axes, keepdims=True)
        else:
            want = yw * (gw - (gw * yw).sum(axis=axes, keepdims=True))
            scale = np.abs(yw) * (np.abs(gw) + np.abs(gw * yw).sum(axis=axes, keepdims=True))
        eps = float(np.finfo(np.float32 if y.dtype == np.float16 else y.dtype).eps)   # the compute type's
        rounding = float(np.finfo(y.dtype).eps) * np.abs(want)                         # the result's rounding
        tiny = float(np.finfo(y.dtype).smallest_subnormal)
        # the row sums' rounding grows with their length (float64 sums in a fixed number of chains): sqrt(n)
        n = int(np.prod([y.shape[a] for a in axes]))
        wrong = ~(np.abs(got.astype(np.longdouble) - want) <= (8 + np.sqrt(n)) * eps * scale + rounding + tiny)
    wrong &= ~(np.isnan(want) & np.isnan(got))           # NaN where the reference is NaN
    if got.dtype != y.dtype.newbyteorder("=") or got.shape != y.shape or wrong.any():
        where = np.argwhere(wrong)[:3].tolist()
        raise FuzzFailure("backward-value", f"{func}_backward differs from the long-double gradient at {where}")


# ------------------------------------------------------------------------------------------------ corpus


def compact_case(case):
    """The case with its buffer cut down to the bytes its view spans (a shrunk case keeps the big buffer it was
    found with), keeping the data pointer's offset modulo 16 and so its alignment."""
    itemsize = np.dtype(case["dtype"]).itemsize
    lo, hi = _extent(case["shape"], case["strides"], itemsize)
    if hi == lo:
        return dict(case, buffer=b"", offset=0)
    start = case["offset"] + lo
    start -= start % 16
    return dict(case, buffer=case["buffer"][start:case["offset"] + hi], offset=case["offset"] - start)


def save_case(case, kind, directory=None):
    """Saves a case as <kind>-<hash>.npz (buffer as uint8, everything else as a JSON header); returns the path."""
    directory = directory or CORPUS_DIR
    case = compact_case(case)
    os.makedirs(directory, exist_ok=True)
    meta = {k: v for k, v in case.items() if k != "buffer"}
    meta["kind"] = kind
    header = json.dumps(meta, sort_keys=True)
    digest = hashlib.sha1(header.encode() + case["buffer"]).hexdigest()[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in kind)[:40]
    path = os.path.join(directory, f"{safe}-{digest}.npz")
    bio = io.BytesIO()
    np.savez(bio, buffer=np.frombuffer(case["buffer"], dtype=np.uint8), meta=np.array(header))
    with open(path, "wb") as f:
        f.write(bio.getvalue())
    return path


def load_case(path):
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        meta["buffer"] = z["buffer"].tobytes()
    meta.pop("kind", None)
    meta.setdefault("input_kind", "array")
    meta.setdefault("kernels", None)
    meta.setdefault("dtype_arg", None)
    meta.setdefault("dim_kind", "int")
    meta.setdefault("readonly", False)
    meta.setdefault("func", "softmax")
    meta.setdefault("out_kind", None)
    meta.setdefault("where_seed", None)
    meta.setdefault("where_p", None)
    if meta["kernels"] is not None and meta["kernels"] not in _kernel_sets():
        meta["kernels"] = None                         # saved on a CPU with other kernel sets: use the active one
    return meta


def corpus_files(directory=None):
    directory = directory or CORPUS_DIR
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".npz"))


# ------------------------------------------------------------------------------------------------ engines


def hypothesis_engine(seconds, on_failure, seed=0, batch=300, max_failures=5, before_call=None):
    """Runs hypothesis-driven cases for about `seconds`; calls on_failure(case, error) for each distinct failure
    kind (after hypothesis has shrunk it). Returns (cases run, failures)."""
    import time

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    deadline = time.monotonic() + seconds
    count = 0
    failures = []
    seen = set()
    last = {}

    def one(data):
        nonlocal count
        case = build_case(HypothesisDraw(data))
        count += 1
        if before_call:
            before_call(case)
        try:
            check_case(case)
        except FuzzFailure as e:
            last["case"], last["error"] = case, e
            raise

    round_ = 0
    while time.monotonic() < deadline and len(failures) < max_failures:
        round_ += 1
        test = settings(max_examples=batch, deadline=None, database=None, derandomize=False,
                        suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink),
                        print_blob=False, report_multiple_bugs=False)(given(st.data())(one))
        test = hseed(seed * 1000003 + round_)(test)
        try:
            test()
        except FuzzFailure:
            case, err = last["case"], last["error"]   # the shrunk example is the last one run
            key = err.kind
            if key not in seen:
                seen.add(key)
                failures.append((case, err))
                on_failure(case, err)
    return count, failures


def bytes_engine(seconds, on_failure, seed=0, max_failures=5, before_call=None):
    """Random byte strings through BytesDraw (no coverage guidance): the engine for environments without
    atheris or hypothesis. Returns (cases run, failures)."""
    import time

    rng = np.random.default_rng(seed)
    deadline = time.monotonic() + seconds
    count, failures, seen = 0, [], set()
    while time.monotonic() < deadline and len(failures) < max_failures:
        case = build_case(BytesDraw(rng.bytes(int(rng.integers(0, 200)))))
        count += 1
        if before_call:
            before_call(case)
        try:
            check_case(case)
        except FuzzFailure as e:
            if e.kind not in seen:
                seen.add(e.kind)
                failures.append((case, e))
                on_failure(case, e)
    return count, failures


def shrink_case(case):
    """Greedy minimisation of a failing case without a decoder (for atheris finds): drop axes of length > 1 by
    halving them while the failure kind stays the same. Returns the smallest failing case found."""
    try:
        check_case(case)
        return case
    except FuzzFailure as e:
        kind = e.kind
    best = case
    improved = True
    while improved:
        improved = False
        for ax, n in enumerate(best["shape"]):
            if n <= 1:
                continue
            for new in (1, n // 2, n - 1):
                trial = dict(best)
                shape = list(best["shape"])
                shape[ax] = new
                trial["shape"] = shape
                try:
                    check_case(trial)
                except FuzzFailure as e:
                    if e.kind == kind:
                        best = trial
                        improved = True
                        break
                except Exception:
                    continue
            if improved:
                break
    return best


__all__ = ["BytesDraw", "HypothesisDraw", "FuzzFailure", "build_case", "check_case", "materialize", "save_case",
           "load_case", "corpus_files", "hypothesis_engine", "bytes_engine", "shrink_case", "describe", "CORPUS_DIR"]
