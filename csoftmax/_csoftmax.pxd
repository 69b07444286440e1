# The C contract of src/softmax.h, threads.h and blocks.h, declared once for Cython. Cython reads this file with
# _csoftmax.pyx (a .pxd beside a .pyx of the same name is its declaration file); the headers stay the one source of
# truth: names only, every value comes from C.
from libc.stddef cimport ptrdiff_t

cdef extern from "src/softmax.h" nogil:
    ctypedef ptrdiff_t csm_idx
    enum:
        CSM_F16
        CSM_F32
        CSM_F64
        CSM_BOOL
        CSM_SOFTMAX
        CSM_LOG_SOFTMAX
        CSM_SOFTMAX_BACKWARD
        CSM_LOG_SOFTMAX_BACKWARD
        CSM_LOGSUMEXP
        CSM_MAX_WORKERS
    # Tuning limits the tests place their cases around. Cython cannot give a Python name the name of a C constant,
    # so these are read here under a private alias and exported under their C names by _csoftmax.pyx.
    const int c_SHORT_ROW_MAX "CSM_SHORT_ROW_MAX"
    const double c_NEAR_LIMIT "CSM_NEAR_LIMIT"
    ctypedef struct csm_type_kernels:
        int width
        void (*row_exp_scale)(const void *x, void *y, csm_idx n, const void *m, const void *inv, int negate) noexcept nogil
    ctypedef struct csm_kernels:
        const char *name
        const char *description
        csm_type_kernels f32
        csm_type_kernels f64
    ctypedef struct csm_operand:
        const char *data
        const csm_idx *strides
        int dtype
        int swapped
        int aligned
    ctypedef struct csm_call:
        int func
        int negate
        int ndim
        const csm_idx *shape
        int axis
        csm_operand in_ "in"
        csm_operand grad
        csm_operand mask
        csm_operand out
        csm_operand state
    ctypedef struct csm_plan:
        pass
    ctypedef struct csm_job:
        pass
    csm_plan *csm_plan_new(const csm_call *call, const csm_kernels *kernels, int threads)
    int csm_plan_parallel(const csm_plan *plan)
    csm_job *csm_plan_job(csm_plan *plan)
    int csm_plan_free(csm_plan *plan)
    int csm_run_small(const csm_call *call, const csm_kernels *kernels)
    const csm_kernels *csm_best_kernels()
    const csm_kernels *csm_kernels_by_name(const char *name)
    int csm_available_kernels(const csm_kernels **lst, int max)
    const char *csm_cpu_features()

cdef extern from "src/threads.h" nogil:
    int csm_job_start(csm_job *job)
    int csm_job_help(csm_job *job, int budget_ms)
    void csm_job_cancel(csm_job *job)
    void csm_job_run_inline(csm_job *job)
    int csm_default_threads()
    int csm_cpu_quota_threads(const char *path, int n)
    int csm_get_num_threads()
    void csm_set_num_threads(int n)
    void csm_pool_state(int *workers, int *parked)

cdef extern from "src/blocks.h" nogil:
    void *csm_block_get(size_t *size)
    void csm_block_put(void *block, size_t size)
    size_t csm_block_limit()
    void csm_block_set_limit(size_t limit)
    size_t csm_block_cached_bytes()
