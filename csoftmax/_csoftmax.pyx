# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The bridge between Python and the C kernels.

Design: _api.py decides everything (dim, dtypes, errors, output allocation) and defines every public function;
this module only translates an ndarray call into the C contract (src/softmax.h, declared for Cython in
_csoftmax.pxd: data pointers, shape, byte strides, dtype codes) and calls the engine with the GIL released. Its
fast path (fast_or_none) takes the common small calls without the policy layer's Python work. It holds the active
kernel table, chosen by dispatch.c at import.
"""
cimport numpy as cnp
import operator

import numpy as np
from libc.stdint cimport SIZE_MAX, uintptr_t
from cpython.pyport cimport PY_SSIZE_T_MAX

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    object PyArray_NewLikeArray(cnp.ndarray prototype, cnp.NPY_ORDER order, void *descr, int subok)
    object PyArray_NewFromDescr(void *subtype, void *descr, int nd, cnp.npy_intp *dims, cnp.npy_intp *strides,
                                void *data, int flags, void *obj)

cdef extern from "Python.h":
    # declared without Cython's "except -1", so that a pending KeyboardInterrupt does not jump past the cleanup
    int check_signals "PyErr_CheckSignals"()
    int PyTraceMalloc_Track(unsigned int domain, uintptr_t ptr, size_t size)
    int PyTraceMalloc_Untrack(unsigned int domain, uintptr_t ptr)
    void Py_INCREF(object o)

cdef const csm_kernels *_active = csm_best_kernels()

# How often the calling thread, which works with the pool, takes the GIL to look for Ctrl-C.
DEF WAIT_SLICE_MS = 20
# Calls of at most this many elements keep the GIL, as NumPy's ufuncs do below 500: such a call is over before
# another thread could make use of the GIL, and releasing and retaking it is a good part of its cost
# (docs/performance.md).
DEF KEEP_GIL_MAX = 512


cdef int _dtype_code(cnp.ndarray a) except -1:
    cdef int num = cnp.PyArray_TYPE(a)
    if num == cnp.NPY_FLOAT:
        return CSM_F32
    if num == cnp.NPY_DOUBLE:
        return CSM_F64
    if num == cnp.NPY_FLOAT16:
        return CSM_F16
    raise TypeError(f"internal: the kernel has no code for {a.dtype}")


# ------------------------------------------------------------------------------------------------ outputs

# Outputs of at least this size come from the buffer cache of src/blocks.h (smaller ones are cheap for malloc).
DEF CACHED_OUTPUT_MIN = 256 * 1024
# NumPy's tracemalloc domain: cached outputs are traced like NumPy's own allocations.
DEF NUMPY_TRACE_DOMAIN = 389047


cdef class _OutputBuffer:
    """Owns the memory of a cached output array (its base): when the array and all its views are gone, the buffer
    goes back to the cache instead of to the OS."""
    cdef void *ptr
    cdef size_t size

    def __dealloc__(self):
        if self.ptr != NULL:
            PyTraceMalloc_Untrack(NUMPY_TRACE_DOMAIN, <uintptr_t>self.ptr)
            csm_block_put(self.ptr, self.size)


cdef cnp.ndarray _new_output(cnp.ndarray like, cnp.dtype descr):
    """An uninitialised array of like's shape and memory order (as np.empty_like) with dtype descr."""
    cdef int nd = cnp.PyArray_NDIM(like), i
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(like)
    cdef cnp.npy_intp strides[64]
    cdef cnp.npy_intp step = descr.itemsize
    cdef size_t nbytes = <size_t>cnp.PyArray_SIZE(like) * <size_t>descr.itemsize
    cdef int fortran = not cnp.PyArray_IS_C_CONTIGUOUS(like) and cnp.PyArray_IS_F_CONTIGUOUS(like)
    if nbytes < CACHED_OUTPUT_MIN or not (cnp.PyArray_IS_C_CONTIGUOUS(like) or fortran) or nd > 64:
        Py_INCREF(descr)                                 # (NewLikeArray steals it)
        return PyArray_NewLikeArray(like, cnp.NPY_KEEPORDER, <void *>descr, 0)
    for i in range(nd):                                  # C order, or F order for an F-contiguous input
        strides[i if fortran else nd - 1 - i] = step
        step *= dims[i if fortran else nd - 1 - i]
    cdef _OutputBuffer owner = _OutputBuffer.__new__(_OutputBuffer)
    cdef size_t size = nbytes
    owner.ptr = csm_block_get(&size)
    if owner.ptr == NULL:
        raise MemoryError(f"csoftmax: could not allocate {nbytes} bytes for the result")
    owner.size = size
    PyTraceMalloc_Track(NUMPY_TRACE_DOMAIN, <uintptr_t>owner.ptr, size)
    Py_INCREF(descr)                                     # (NewFromDescr steals it)
    cdef cnp.ndarray result = PyArray_NewFromDescr(
        <void *>cnp.ndarray, <void *>descr, nd, dims, strides, owner.ptr,
        cnp.NPY_ARRAY_WRITEABLE | cnp.NPY_ARRAY_ALIGNED, NULL)
    cnp.set_array_base(result, owner)
    return result


def empty_like(cnp.ndarray like, dtype):
    """np.empty_like(like, dtype) for results, big ones from the output buffer cache."""
    return _new_output(like, <cnp.dtype>np.dtype(dtype))


def same_view(cnp.ndarray a, cnp.ndarray b):
    """Whether a and b are the same view of the same memory: data pointer, dtype, shape and strides."""
    cdef int nd = cnp.PyArray_NDIM(a), d
    if (nd != cnp.PyArray_NDIM(b) or cnp.PyArray_DATA(a) != cnp.PyArray_DATA(b)
            or a.dtype != b.dtype):
        return False
    for d in range(nd):
        if cnp.PyArray_DIMS(a)[d] != cnp.PyArray_DIMS(b)[d] or cnp.PyArray_STRIDES(a)[d] != cnp.PyArray_STRIDES(b)[d]:
            return False
    return True


def output_cache_limit():
    """Bytes of freed result buffers csoftmax keeps for reuse at most."""
    return csm_block_limit()


def set_output_cache_limit(limit):
    """Sets the bytes of freed result buffers kept for reuse: limit >= 0 (else ValueError); a limit beyond size_t
    keeps as much as SIZE_MAX does (everything that fits the buffer count)."""
    limit = operator.index(limit)
    if limit < 0:
        raise ValueError(f"set_output_cache(): max_bytes must be >= 0, not {limit}")
    csm_block_set_limit(min(limit, SIZE_MAX))


def output_cache_bytes():
    """Bytes of freed result buffers kept right now."""
    return csm_block_cached_bytes()


# ------------------------------------------------------------------------------------------------ calls

# The functions, as the C enum numbers them
OP_SOFTMAX = CSM_SOFTMAX
OP_LOG_SOFTMAX = CSM_LOG_SOFTMAX
OP_SOFTMAX_BACKWARD = CSM_SOFTMAX_BACKWARD
OP_LOG_SOFTMAX_BACKWARD = CSM_LOG_SOFTMAX_BACKWARD
OP_LOGSUMEXP = CSM_LOGSUMEXP


cdef void _operand(csm_operand *o, cnp.ndarray a, int dtype):
    o.data = <const char *>cnp.PyArray_DATA(a)
    o.strides = <const csm_idx *>cnp.PyArray_STRIDES(a)
    o.dtype = dtype
    o.swapped = not cnp.PyArray_ISNOTSWAPPED(a)
    o.aligned = cnp.PyArray_ISALIGNED(a)


cdef int _mask_code(cnp.ndarray a) except -1:
    if cnp.PyArray_TYPE(a) != cnp.NPY_BOOL:
        raise TypeError(f"internal: a mask must be bool, not {a.dtype}")
    return CSM_BOOL


def run_into(cnp.ndarray x, cnp.ndarray out, int axis, int op=CSM_SOFTMAX, bint negate=False,
             cnp.ndarray mask=None, cnp.ndarray grad=None):
    """Writes op (a forward function of x, or of -x with negate; a backward function of the forward's output x and
    the upstream gradient grad) along axis into out. Every array has out's shape (the mask: a broadcast view is
    fine); x and grad: float16/32/64, any strides and byte order; out: native, aligned, x itself or clear of it."""
    cdef int nd = cnp.PyArray_NDIM(out), d
    for a in (x, mask, grad):
        if a is not None and (cnp.PyArray_NDIM(a) != nd or any(
                cnp.PyArray_DIMS(a)[d] != cnp.PyArray_DIMS(out)[d] for d in range(nd))):
            raise ValueError("internal: run_into needs arrays of out's shape")
    if not (cnp.PyArray_ISNOTSWAPPED(out) and cnp.PyArray_ISALIGNED(out)):
        raise ValueError("internal: run_into needs a native, aligned out")
    _run_into(x, out, axis, op, negate, mask, grad)
    return out


cdef int _run_into(cnp.ndarray x, cnp.ndarray out, int axis, int op, bint negate, cnp.ndarray mask=None,
                   cnp.ndarray grad=None) except -1:
    cdef csm_call call
    call.func = op
    call.negate = negate
    call.ndim = cnp.PyArray_NDIM(x)
    call.shape = <const csm_idx *>cnp.PyArray_DIMS(x)
    call.axis = axis
    _operand(&call.in_, x, _dtype_code(x))
    _operand(&call.out, out, _dtype_code(out))
    call.mask.data = NULL
    call.grad.data = NULL
    call.state.data = NULL
    if mask is not None:
        _operand(&call.mask, mask, _mask_code(mask))
    if grad is not None:
        _operand(&call.grad, grad, _dtype_code(grad))
    return _run(&call)


cdef bint _is_state_of(cnp.ndarray state, cnp.ndarray x, int axis):
    """Whether state is a native, aligned float64 array of x's shape without axis, then 2 (contiguous)."""
    cdef int nd = cnp.PyArray_NDIM(x), d
    if cnp.PyArray_TYPE(state) != cnp.NPY_FLOAT64 or cnp.PyArray_NDIM(state) != nd or not (
            cnp.PyArray_ISNOTSWAPPED(state) and cnp.PyArray_ISALIGNED(state)):
        return False
    if cnp.PyArray_DIMS(state)[nd - 1] != 2 or cnp.PyArray_STRIDES(state)[nd - 1] != 8:
        return False
    for d in range(nd):
        if d != axis and cnp.PyArray_DIMS(state)[d - (d > axis)] != cnp.PyArray_DIMS(x)[d]:
            return False
    return True


def row_state(cnp.ndarray x, cnp.ndarray state, int axis, cnp.ndarray mask=None):
    """Writes the state of x's rows along axis (x: float16/32/64, ndim >= 1, any strides and byte order; mask: bool
    of x's shape, a broadcast view is fine) into state, float64 of x's shape without the axis and then 2: per row
    the maximum m and log S, S = sum exp(x - m) (NaN where m is not finite)."""
    if cnp.PyArray_NDIM(x) == 0 or not 0 <= axis < cnp.PyArray_NDIM(x) or not _is_state_of(state, x, axis):
        raise ValueError("internal: row_state needs a state of x's shape without the axis, then 2 float64")
    if mask is not None and not cnp.PyArray_SAMESHAPE(mask, x):
        raise ValueError("internal: row_state needs a mask of x's shape")
    cdef csm_call call
    cdef cnp.npy_intp strides[64]
    _state_call(&call, x, state, axis, strides)
    call.func = CSM_LOGSUMEXP
    if mask is not None:
        _operand(&call.mask, mask, _mask_code(mask))
    _run(&call)
    return state


def apply_state(cnp.ndarray x, cnp.ndarray state, cnp.ndarray out, int axis, int op):
    """Writes softmax or log_softmax (op) of x's rows along axis against a given state (see row_state) into out
    (x's shape, native, aligned, x itself or clear of it): exp(x - m - log S), or (x - m) - log S."""
    if cnp.PyArray_NDIM(x) == 0 or not 0 <= axis < cnp.PyArray_NDIM(x) or not _is_state_of(state, x, axis):
        raise ValueError("internal: apply_state needs a state of x's shape without the axis, then 2 float64")
    if not cnp.PyArray_SAMESHAPE(out, x) or not (cnp.PyArray_ISNOTSWAPPED(out) and cnp.PyArray_ISALIGNED(out)):
        raise ValueError("internal: apply_state needs a native, aligned out of x's shape")
    if op != CSM_SOFTMAX and op != CSM_LOG_SOFTMAX:
        raise ValueError("internal: apply_state computes softmax or log_softmax")
    cdef csm_call call
    cdef cnp.npy_intp strides[64]
    _state_call(&call, x, state, axis, strides)
    call.func = op
    _operand(&call.out, out, _dtype_code(out))
    _run(&call)
    return out


cdef void _state_call(csm_call *call, cnp.ndarray x, cnp.ndarray state, int axis, cnp.npy_intp *strides):
    """A call on x with state as its state operand: the state's strides over x's dimensions (0 along the axis)."""
    cdef int nd = cnp.PyArray_NDIM(x), d
    for d in range(nd):
        strides[d] = 0 if d == axis else cnp.PyArray_STRIDES(state)[d - (d > axis)]
    call.negate = 0
    call.ndim = nd
    call.shape = <const csm_idx *>cnp.PyArray_DIMS(x)
    call.axis = axis
    _operand(&call.in_, x, _dtype_code(x))
    call.out.data = NULL
    call.mask.data = NULL
    call.grad.data = NULL
    _operand(&call.state, state, CSM_F64)
    call.state.strides = <const csm_idx *>strides


cdef int _run(csm_call *call) except -1:
    """Runs a call inline (small) or in the pool, waiting in slices so that Ctrl-C interrupts it."""
    cdef int small
    cdef csm_idx n = 1
    cdef int d
    for d in range(call.ndim):
        n *= call.shape[d]
    if n <= KEEP_GIL_MAX:
        small = csm_run_small(call, _active)
    else:
        with nogil:
            small = csm_run_small(call, _active)
    if small == 0:
        return 0
    if small < 0:
        raise MemoryError("csoftmax: could not allocate the kernel's scratch memory")
    cdef csm_plan *plan = csm_plan_new(call, _active, csm_get_num_threads())
    cdef csm_job *job
    cdef int finished
    if plan == NULL:
        raise MemoryError("csoftmax: could not allocate the kernel's scratch memory")
    job = csm_plan_job(plan)
    if not csm_plan_parallel(plan) or csm_job_start(job) != 0:
        with nogil:
            csm_job_run_inline(job)
    else:
        while True:
            with nogil:
                finished = csm_job_help(job, WAIT_SLICE_MS)
            if finished:
                break
            if check_signals() < 0:          # e.g. KeyboardInterrupt: stop at the next task boundary
                csm_job_cancel(job)
                with nogil:
                    csm_job_help(job, -1)
                csm_plan_free(plan)
                return -1
    if csm_plan_free(plan) != 0:
        raise MemoryError("csoftmax: could not allocate the kernel's scratch memory")
    return 0


def get_num_threads():
    """Threads csoftmax uses for large arrays."""
    return csm_get_num_threads()


# The most threads a call can use: the calling thread and the pool's CSM_MAX_WORKERS workers.
MAX_THREADS = CSM_MAX_WORKERS + 1

# Engine limits the tests place their cases around, under their names in src/softmax.h (see _csoftmax.pxd).
CSM_SHORT_ROW_MAX = c_SHORT_ROW_MAX
CSM_NEAR_LIMIT = c_NEAR_LIMIT


def set_num_threads(n):
    """Sets the threads csoftmax uses for large arrays: n >= 1 (else ValueError); above MAX_THREADS, MAX_THREADS."""
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"set_num_threads(): n must be at least 1, not {n}")
    csm_set_num_threads(min(n, MAX_THREADS))


def pool_state():
    """(workers created, workers parked): the parked ones sleep until a call uses more threads than the last one."""
    cdef int workers, parked
    csm_pool_state(&workers, &parked)
    return workers, parked


def default_num_threads():
    """CPUs this process may use: its affinity mask, lowered by a cgroup CPU quota."""
    return csm_default_threads()


def cpu_quota_threads(str path, int n):
    """n lowered to the CPU limit of the cgroup v2 cpu.max file at path: the rule default_num_threads applies."""
    cdef bytes encoded = path.encode()
    return csm_cpu_quota_threads(encoded, n)


cdef object _fast(object input, object dim, int op, bint negate, object out=None):
    """The fast path, kept short because small arrays are dominated by it: for an exact ndarray of native, aligned
    float32/float64 and an int dim in range, a new result in the input's memory order, or the result written into
    `out` when that is an exact ndarray of the input's shape and dtype, native, aligned, writeable and clear of the
    input's memory; else None (the caller takes the policy layer, which also checks and reports a bad out)."""
    cdef cnp.ndarray x, result
    cdef int num, nd
    if type(input) is not cnp.ndarray or type(dim) is not int:
        return None
    x = <cnp.ndarray>input
    num = cnp.PyArray_TYPE(x)
    nd = cnp.PyArray_NDIM(x)
    if not ((num == cnp.NPY_FLOAT or num == cnp.NPY_DOUBLE) and nd > 0 and cnp.PyArray_ISNOTSWAPPED(x)
            and cnp.PyArray_ISALIGNED(x) and cnp.PyArray_SIZE(x) > 0 and -nd <= dim < nd):
        return None
    if out is not None:
        if not _fits_out(x, out):
            return None
        result = <cnp.ndarray>out
    elif cnp.PyArray_NBYTES(x) < CACHED_OUTPUT_MIN:  # (small: skip even the dtype lookup)
        result = PyArray_NewLikeArray(x, cnp.NPY_KEEPORDER, NULL, 0)
    else:
        result = _new_output(x, x.dtype)
    _run_into(x, result, dim + nd if dim < 0 else dim, op, negate)
    return result


cdef object _fast_backward(object grad, object output, object dim, int op, object out=None):
    """The backward functions' fast path, as _fast: grad and output exact ndarrays of the same shape and dtype
    (native, aligned float16/32/64), an int dim in range, out None or fit for both; else None."""
    cdef cnp.ndarray g, y, result
    cdef int num, nd, d
    if type(grad) is not cnp.ndarray or type(output) is not cnp.ndarray or type(dim) is not int:
        return None
    g = <cnp.ndarray>grad
    y = <cnp.ndarray>output
    num = cnp.PyArray_TYPE(y)
    nd = cnp.PyArray_NDIM(y)
    if not ((num == cnp.NPY_FLOAT16 or num == cnp.NPY_FLOAT or num == cnp.NPY_DOUBLE) and cnp.PyArray_TYPE(g) == num
            and cnp.PyArray_NDIM(g) == nd and nd > 0 and cnp.PyArray_SIZE(y) > 0 and -nd <= dim < nd
            and cnp.PyArray_ISNOTSWAPPED(y) and cnp.PyArray_ISALIGNED(y)
            and cnp.PyArray_ISNOTSWAPPED(g) and cnp.PyArray_ISALIGNED(g)):
        return None
    for d in range(nd):
        if cnp.PyArray_DIMS(g)[d] != cnp.PyArray_DIMS(y)[d]:
            return None
    if out is not None:
        if not (_fits_out(y, out) and _fits_out(g, out)):
            return None
        result = <cnp.ndarray>out
    elif cnp.PyArray_NBYTES(y) < CACHED_OUTPUT_MIN:
        result = PyArray_NewLikeArray(y, cnp.NPY_KEEPORDER, NULL, 0)
    else:
        result = _new_output(y, y.dtype)
    _run_into(y, result, dim + nd if dim < 0 else dim, op, False, None, g)
    return result


cdef bint _fits_out(cnp.ndarray x, object out):
    """Whether the kernel can write straight into out: an exact ndarray of x's shape and dtype, native, aligned,
    writeable, whose memory lies clear of x's (the bounds of both, as np.may_share_memory compares them) and whose
    elements are distinct."""
    cdef cnp.ndarray o
    cdef int d, nd = cnp.PyArray_NDIM(x)
    cdef cnp.npy_intp n, xs, os, x_lo, x_hi, o_lo, o_hi
    if type(out) is not cnp.ndarray:
        return False
    o = <cnp.ndarray>out
    if not (cnp.PyArray_TYPE(o) == cnp.PyArray_TYPE(x) and cnp.PyArray_NDIM(o) == nd
            and cnp.PyArray_ISNOTSWAPPED(o) and cnp.PyArray_ISALIGNED(o) and cnp.PyArray_ISWRITEABLE(o)):
        return False
    x_lo = x_hi = <cnp.npy_intp>cnp.PyArray_DATA(x)
    o_lo = o_hi = <cnp.npy_intp>cnp.PyArray_DATA(o)
    for d in range(nd):
        n = cnp.PyArray_DIMS(x)[d]
        if cnp.PyArray_DIMS(o)[d] != n:
            return False
        xs = cnp.PyArray_STRIDES(x)[d] * (n - 1)
        os = cnp.PyArray_STRIDES(o)[d] * (n - 1)
        if xs > 0:
            x_hi += xs
        else:
            x_lo += xs
        if os > 0:
            o_hi += os
        else:
            o_lo += os
    x_hi += cnp.PyArray_ITEMSIZE(x)
    o_hi += cnp.PyArray_ITEMSIZE(o)
    return (x_hi <= o_lo or o_hi <= x_lo) and _strides_nest(o)


cdef bint _strides_nest(cnp.ndarray a):
    """Whether each of a's strides (of axes longer than 1, by size) is at least the extent of the smaller ones: then
    no two elements share memory (the policy layer checks the rest, see _api._has_internal_overlap)."""
    cdef cnp.npy_intp stride[64]
    cdef cnp.npy_intp length[64]
    cdef cnp.npy_intp s, n, extent = cnp.PyArray_ITEMSIZE(a)
    cdef int d, k, m = 0
    for d in range(cnp.PyArray_NDIM(a)):
        n = cnp.PyArray_DIMS(a)[d]
        if n <= 1:
            continue
        s = cnp.PyArray_STRIDES(a)[d]
        s = -s if s < 0 else s
        k = m                                            # insertion sort by stride (ndim <= 64)
        while k > 0 and stride[k - 1] > s:
            stride[k] = stride[k - 1]
            length[k] = length[k - 1]
            k -= 1
        stride[k] = s
        length[k] = n
        m += 1
    for k in range(m):
        if stride[k] < extent or stride[k] > (PY_SSIZE_T_MAX - extent) // (length[k] - 1):
            return False                                 # (the second: no overflow below; no real array gets there)
        extent += stride[k] * (length[k] - 1)
    return True


def fast_or_none(input, dim, int op, bint negate, out=None):
    """The public functions' fast path (they live in _api.py): op (negated input with negate) along dim, or None
    when the call needs the policy layer; see _fast."""
    return _fast(input, dim, op, negate, out)


def fast_backward_or_none(grad, output, dim, int op, out=None):
    """softmax_backward / log_softmax_backward's fast path (op), or None when the call needs the policy layer; see
    _fast_backward."""
    return _fast_backward(grad, output, dim, op, out)


def exp_shifted(cnp.ndarray x, double shift, cnp.ndarray out, str kernels):
    """exp(x - shift) for contiguous 1-d float32/float64 x, by the named kernel set's exponential (for tests)."""
    cdef const csm_kernels *k = _lookup(kernels)
    cdef csm_idx n = cnp.PyArray_SIZE(x)
    cdef const void *src = cnp.PyArray_DATA(x)
    cdef void *dst = cnp.PyArray_DATA(out)
    cdef float m32[16]
    cdef float one32[16]
    cdef double m64[16]
    cdef double one64[16]
    cdef int i
    for i in range(16):
        m32[i] = <float>shift
        one32[i] = 1.0
        m64[i] = shift
        one64[i] = 1.0
    if _dtype_code(x) == CSM_F32:
        with nogil:
            k.f32.row_exp_scale(src, dst, n, m32, one32, 0)
    else:
        with nogil:
            k.f64.row_exp_scale(src, dst, n, m64, one64, 0)
    return out


cdef const csm_kernels *_lookup(str name) except NULL:
    cdef const csm_kernels *k = csm_kernels_by_name(name.encode())
    if k == NULL:
        raise ValueError(f"no kernel set {name!r} on this CPU; available: {available_kernels()}")
    return k


def available_kernels():
    """Names of the kernel sets this CPU can run, best first."""
    cdef const csm_kernels *lst[8]
    cdef int n = csm_available_kernels(lst, 8)
    return [lst[i].name.decode() for i in range(n)]


def kernel_description(str name):
    return _lookup(name).description.decode()


def use_kernels(str name):
    """Makes the named kernel set the active one."""
    global _active
    _active = _lookup(name)


def active_kernels():
    return _active.name.decode()


def cpu_features():
    return csm_cpu_features().decode()
