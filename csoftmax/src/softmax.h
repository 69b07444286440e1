/*
 * The one C contract of csoftmax: the call, the functions, the kernel table and every tuning limit.
 *
 * Design (docs/design.md tells the whole story):
 *   - Python decides policy (dim, dtypes, errors, out=, where=) and hands over a csm_call: operands by data pointer,
 *     storage type and byte strides over one shape, and the axis the function reduces.
 *   - engine.c is the one walk. It removes the axis, merges the other axes where every operand's strides chain,
 *     picks a path by geometry (rows: the axis is contiguous; lanes: the other axis is; periodic: a few lanes
 *     interleaved along a contiguous axis), cuts the work into bounded tasks (pieces of the axis when it is long),
 *     and stages any operand the path cannot read or write in place (float16, byte order, strides, masks, negation)
 *     through small tiles of the compute type.
 *   - kernels.inc holds the kernels, written once for float32 and float64 (kernels_type.inc, included per type) and
 *     compiled once per instruction set (kernels_*.c); dispatch.c picks a set at import. Kernels see only contiguous
 *     memory of the compute type; a function is a value (csm_func), never a separate walk.
 *
 * Numerics (identical for every layout, path and thread count of one instruction set):
 *   m = max_i x_i (exact; NaN if any x_i is NaN); a row whose m is not finite is all NaN (as in torch).
 *   e_i = exp(x_i - m), the subtraction's rounding carried (2Sum) into the exponential where it matters.
 *   S = sum_i e_i, each e_i rounded to fixed point (2^-40; float64 adds a 2^-80 limb) and added as integers:
 *       integer addition is associative, so S does not depend on the order of the walk.
 *   softmax: y_i = e_i * (1/S); log_softmax: y_i = (x_i - m) - log S, log S from the top entries (see kernels.inc).
 *   logsumexp: the rows' state (m, log S), log S in float64 for every compute type (kernels.inc's store_states);
 *   given a state, softmax and log_softmax run their output pass against it (1/S taken as exp(-log S)).
 */
#ifndef CSOFTMAX_SOFTMAX_H
#define CSOFTMAX_SOFTMAX_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t csm_idx;            /* element counts and byte strides: 64-bit on every supported platform */

/* ------------------------------------------------------------------------------------------------ tuning limits */

/* Fixed-point sums: a kernel call adds at most CSM_PIECE terms per row or lane (each below 2^40 units, so int64
 * parts cannot overflow); the engine merges pieces in 128-bit integers. */
#define CSM_PIECE ((csm_idx)1 << 20)
/* float32 kernels accumulate 32-bit parts and flush them every CSM_F32_FLUSH terms per lane: 512 * 2^22 = 2^31. */
#define CSM_F32_FLUSH 512
/* Rows up to this many bytes (of the compute type) are computed whole by the rows kernel, in cache; longer ones are
 * streamed in pieces. */
#define CSM_FUSED_ROW_BYTES (64 * 1024)
/* The rows kernel interleaves this many rows (latency hiding: one row's chain is too long for the core alone). */
#define CSM_ROW_GROUP 4
/* Rows up to this length take the across-rows kernel (vectors hold one column of several rows): measured
 * crossover with the rows kernel, see docs/performance.md. */
#define CSM_SHORT_ROW_MAX 16
/* CASE(n) for every short row length 1..CSM_SHORT_ROW_MAX, for kernels that make n a constant of each case */
#define CSM_EACH_SHORT_LENGTH(CASE)                                                                           \
    CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11) CASE(12) CASE(13)   \
    CASE(14) CASE(15) CASE(16)
_Static_assert(CSM_SHORT_ROW_MAX == 16, "CSM_EACH_SHORT_LENGTH lists the lengths up to CSM_SHORT_ROW_MAX");
/* float16 rows up to this length are read and written by the rows kernel itself (its scratch holds a group's rows
 * as float32 in L1); longer ones are staged. */
#define CSM_HALF_ROW_MAX 2048
/* Rows of at least this many bytes start their vectors where the output is vector-aligned (a store that splits a
 * cache line costs 5-15% on misaligned outputs; shorter rows lose more to the extra pieces): tuned. */
#define CSM_ALIGN_ROW_BYTES 3072
/* float32 short rows: the most groups (a vector's lanes of rows each) the transposing kernels run step by step
 * together (short_rows_x86.inc; each set tunes its own number up to this). */
#define CSM_SHORT_GROUPS 4
/* The most rows in one group of those kernels (AVX-512's sixteen lanes), and the most bytes they read and write
 * from a row's start (two 32-byte halves): staged short rows come in whole groups with rows after them to cover
 * that reach, so a tile leaves no group to the rows kernel. */
#define CSM_SHORT_GROUP_MAX 16
#define CSM_SHORT_REACH 64
/* The fused lanes kernel walks axes of at most this many steps (its float32 sums flush once). */
#define CSM_LANES_FUSED_MAX CSM_F32_FLUSH
/* The backward functions' fused lane strips (float16 only) walk axes of at most this many steps; longer ones
 * stream faster (tuned). */
#define CSM_LANES_BACKWARD_FUSED_MAX 3
/* Lanes walked together by the streamed lanes passes: 16-32 KB per axis step; per-lane state below 200 KB. */
#define CSM_LANES_PANEL 4096
/* Pieces of runs when the pool needs more tasks than there are runs, and always for the backward functions (their
 * float64 sums then merge in the same order whatever the thread count). Divides CSM_PIECE. */
#define CSM_SMALL_PIECE ((csm_idx)1 << 16)
/* The streamed lanes passes ask for the lanes this many bytes of axis steps ahead (the hardware prefetcher falls
 * behind their arithmetic): tuned. */
#define CSM_PREFETCH_BYTES 4096
/* Staging converts this many elements at a time through its stack buffers. */
#define CSM_STAGE_BLOCK 512
/* Tiles through which staged operands pass: sized to stay in L1 with their inputs and outputs. */
#define CSM_TILE_BYTES (16 * 1024)
/* Work per task: about 20-200 us, so a pool round trip (~10 us) pays and Ctrl-C is seen within milliseconds. */
#define CSM_TASK_ELEMENTS ((csm_idx)1 << 16)
/* Below this many elements a call runs on the calling thread without the pool. */
#define CSM_PARALLEL_MIN ((csm_idx)1 << 17)
/* Calls this big go through the pool even at one thread, so the caller can take Ctrl-C between tasks. */
#define CSM_POOL_MIN_SERIAL ((csm_idx)1 << 22)
/* Streamed rows up to this size store their exponentials and rescale them (the row is still in L2/L3 for the last
 * pass); longer rows compute them again instead of reading them back (tuned, docs/performance.md). */
#define CSM_STORE_BUDGET ((size_t)8 << 20)
/* A streamed lanes panel up to this size stores its exponentials in the output; bigger ones recompute. */
#define CSM_LANES_STORE_BUDGET ((size_t)16 << 20)
/* The thread pool: at most this many workers; an idle one polls for new work this long before it sleeps (a
 * sleeping vCPU takes 20-100 us or more to wake, which a burst of short calls would otherwise pay each time). */
#define CSM_MAX_WORKERS 256
#define CSM_SPIN_MS 1.0
/* Result buffers kept for reuse (blocks.h): at most this many, this many bytes by default; from this size on they
 * ask for transparent huge pages, as NumPy does. */
#define CSM_BLOCKS_MAX 8
#define CSM_BLOCKS_DEFAULT_LIMIT ((size_t)256 << 20)
#define CSM_HUGE_PAGES_MIN ((size_t)4 << 20)
/* Entries with x - m below this take the exponential's careful branch (the rounding of x - m would otherwise cost
 * more than 32 ulp); at or below the underflow limit (kernels.inc) they are exact zeros. */
#define CSM_NEAR_LIMIT (-64.0)
/* The float32 exponential of both x86 FMA sets (AVX2 and AVX-512) is table-driven: the two compute the same float32
 * bits. */
#define CSM_X86_EXP_TABLE_F32 1

/* ------------------------------------------------------------------------------------------------ the call */

enum csm_dtype { CSM_F16 = 0, CSM_F32 = 1, CSM_F64 = 2, CSM_BOOL = 3 };

/* The functions. Forward functions read `in` (x); the backward functions read the forward's output y from `in` and
 * the upstream gradient from `grad`. */
enum csm_func {
    CSM_SOFTMAX = 0,
    CSM_LOG_SOFTMAX = 1,
    CSM_SOFTMAX_BACKWARD = 2,
    CSM_LOG_SOFTMAX_BACKWARD = 3,
    CSM_LOGSUMEXP = 4,           /* the rows' state (m, log S) into `state`: log_softmax's reductions, no output */
    CSM_N_FUNCS
};
#define CSM_IS_BACKWARD(func) ((func) == CSM_SOFTMAX_BACKWARD || (func) == CSM_LOG_SOFTMAX_BACKWARD)

typedef struct {
    const char *data;            /* NULL: absent */
    const csm_idx *strides;      /* bytes, one per dimension of the call's shape (0: broadcast) */
    int dtype;                   /* csm_dtype */
    int swapped;                 /* non-native byte order */
    int aligned;                 /* data pointer and strides aligned to the item size */
} csm_operand;

/* One call: any shape and byte strides. out has the call's shape; it may be `in` itself (the same pointer and
 * strides: computed in place) but must not overlap it otherwise. The result is computed in float32 (float16 and
 * float32 results) or float64; an input narrower than the result is widened exactly, a wider one is rounded to
 * the result's type first (float16 results: straight to float16), as a cast before the call would. */
typedef struct {
    int func;                    /* csm_func */
    int negate;                  /* forward functions of -x (softmin), exact */
    int ndim;
    const csm_idx *shape;
    int axis;
    csm_operand in;
    csm_operand grad;            /* backward functions */
    csm_operand mask;            /* forward functions: CSM_BOOL, entries where it is 0 take no part and give 0
                                    (log_softmax: -inf); optional */
    csm_operand out;             /* native byte order, aligned; absent for CSM_LOGSUMEXP */
    csm_operand state;           /* per row two doubles (m, log S), native and aligned, its axis stride 0:
                                    written by CSM_LOGSUMEXP; given to softmax or log_softmax, only their output
                                    pass runs, against it (m must be at least the row's maximum) */
} csm_call;

struct csm_kernels;
struct csm_job;

/* A call cut into tasks for the thread pool (threads.h): csm_plan_new decides the cut (NULL: no memory);
 * run its job inline or in the pool; csm_plan_free returns -1 if a task could not get scratch memory. The call
 * struct must outlive the plan. Results do not depend on the thread count. */
typedef struct csm_plan csm_plan;
csm_plan *csm_plan_new(const csm_call *call, const struct csm_kernels *kernels, int threads);
int csm_plan_parallel(const csm_plan *plan);      /* whether the pool pays for this call */
struct csm_job *csm_plan_job(csm_plan *plan);
int csm_plan_free(csm_plan *plan);
/* A call too small for the pool, run at once without allocating a plan: 0 (done), -1 (no memory), or 1 when the
 * call is not small (nothing done: plan it). */
int csm_run_small(const csm_call *call, const struct csm_kernels *kernels);

/* ------------------------------------------------------------------------------------------------ kernels */

/* Exact fixed-point sum parts: hi in units of 2^-40, lo (float64 only) in units of 2^-80. */
typedef struct { int64_t hi, lo; } csm_fixsum;

/* A row's exact total as CSM_LOGSUMEXP takes it: float32 rows split into two floats (48 bits, as log_softmax takes
 * it on every float32 path, which agree to these bits), float64 rows whole */
static inline double csm_state_total(int f32, double total)
{
    if (!f32) return total;
    const float hi = (float)total;
    return (double)hi + (double)(float)(total - (double)hi);
}

/* log S per row or lane from merged state (csm_type_kernels.log_sums) */
typedef void (*csm_log_sums_fn)(const void *m, const void *m2, const double *total, const int64_t *count,
                                void *log_hi, void *log_lo, csm_idx n);

/* How the forward row and lanes passes read x (and write y): negated (softmin), float16 storage (float32 kernels
 * where half_rows, x and y both float16: widened as loaded, rounded as stored; not logsumexp's) */
enum csm_in { CSM_IN_NEGATE = 1, CSM_IN_HALF = 2 };

/* The fused kernels' arguments: n_rows rows (or one strip of lanes) of n elements, compute type, contiguous along
 * the vector dimension; strides in bytes. y may be x itself (in place). */
typedef struct {
    int func;                    /* csm_func */
    const char *x;               /* forward: the input; backward: y */
    csm_idx xs;
    const char *g;               /* backward: the upstream gradient */
    csm_idx gs;
    char *y;                     /* the result */
    csm_idx ys;
    csm_idx n_rows;              /* rows kernel: rows (xs, gs, ys apart); lanes kernel: lanes (contiguous) */
    csm_idx n;                   /* elements per row / axis steps (xs, gs, ys apart) */
                                 /* CSM_LOGSUMEXP (rows and short rows only): y receives each row's state,
                                    (m, log S) as two doubles, rows ys apart */
    int half;                    /* float32: x, g and y are float16 (widened as loaded, rounded as stored; the
                                    bits of staging them): the rows kernel with n <= CSM_HALF_ROW_MAX, and the
                                    lanes kernel */
    float *scratch;              /* half forward rows: CSM_ROW_GROUP * n floats; half softmax lanes: 4 * width *
                                    n floats */
    int negate;                  /* CSM_SOFTMAX of -x (softmin): x negated as loaded */
    const uint8_t *mask;         /* CSM_SOFTMAX and CSM_LOG_SOFTMAX, not half: where=, a byte per entry
                                    (nonzero: taken; the others are -inf after any negation, and give 0, or -inf
                                    from log_softmax, also in rows whose maximum is not finite). Rows kernel:
                                    contiguous along each row, rows ms bytes apart (0: one mask row for all);
                                    lanes kernel: contiguous along the lanes, steps ms bytes apart. NULL: none */
    csm_idx ms;
    csm_log_sums_fn state_log_sums;  /* CSM_LOGSUMEXP: the active kernel set's float64 log_sums, which every path
                                        uses for log S (so a kernel borrowed from another set gives the same bits) */
} csm_fused;

/*
 * Kernels of one instruction set for one compute type. Arrays are contiguous and of the compute type (T).
 *
 * Row passes stream a piece of a contiguous row whose vector lanes carry their own state: lane j of every vector
 * holds element i with i % width == j. State arrays have `width` entries; a row is one class (the engine reduces
 * the lanes), a block of p interleaved lanes (p dividing `width`) p classes. Pieces start at multiples of `width`.
 *
 * Lanes passes walk `steps` axis positions xs bytes apart of n_lanes contiguous lanes, with per-lane state arrays
 * of n_lanes entries.
 */
typedef struct {
    int width;                   /* elements per vector */
    int half_rows;               /* the kernels take float16 operands (csm_fused.half, the backward passes' half,
                                  * CSM_IN_HALF): vector conversions */
    /* fused: the whole function, state in registers (rows: n * sizeof(T) <= CSM_FUSED_ROW_BYTES; lanes: n <=
     * CSM_LANES_FUSED_MAX) */
    void (*rows)(const csm_fused *a);
    void (*lanes)(const csm_fused *a);
    /* rows of n <= CSM_SHORT_ROW_MAX, vectorised across rows; returns how many rows it did (whole groups only, the
     * engine finishes the rest with `rows`); row strides with 16 |stride| < 2^31 */
    csm_idx (*short_rows)(const csm_fused *a);

    /* row passes. m, m2, inv, s, log_hi, log_lo: T per lane; hi, lo, count: int64 per lane; acc: double per lane */
    /* `in`: how the forward passes read x (and write y), enum csm_in */
    void (*row_max)(const void *x, csm_idx n, void *m, void *least, int in);   /* running; least: running
                                                                                  minimum */
    void (*row_top2)(const void *x, csm_idx n, void *m, void *m2, int in);
    void (*row_exp_sum)(const void *x, void *e, csm_idx n, const void *m, int64_t *hi, int64_t *lo,
                        int in);   /* e may be NULL (always with CSM_IN_HALF) */
    void (*row_scale)(void *y, csm_idx n, const void *inv);
    void (*row_exp_scale)(const void *x, void *y, csm_idx n, const void *m, const void *inv, int in);
    void (*row_log_sum)(const void *x, csm_idx n, const void *m, const void *m2, int64_t *hi, int64_t *lo,
                        int64_t *count, int in);
    void (*row_log_out)(const void *x, void *y, csm_idx n, const void *m, const void *log_hi, const void *log_lo,
                        int in);
    /* the backward passes: y NULL: the sum of g; half: g, y and out float16 (only where half_rows) */
    void (*row_dot)(const void *g, const void *y, csm_idx n, double *acc, int half);
    void (*row_grad_out)(int func, const void *g, const void *y, void *out, csm_idx n, const void *s, int half);

    /* lanes passes. The sums go to raw per-lane parts (8 bytes per lane, arrays rounded up to whole vectors,
     * zeroed), at most CSM_F32_FLUSH steps between lanes_flush calls, which add them to the int64 sums (and the raw
     * counts of entries equal to m, when count is given) and zero them */
    void (*lanes_max)(const char *x, csm_idx xs, csm_idx steps, void *m, csm_idx n_lanes, int in);
    void (*lanes_top2)(const char *x, csm_idx xs, csm_idx steps, void *m, void *m2, csm_idx n_lanes, int in);
    void (*lanes_exp_sum)(const char *x, csm_idx xs, char *e, csm_idx es, csm_idx steps, const void *m,
                          uint64_t *raw_hi, uint64_t *raw_lo, csm_idx n_lanes, int in);   /* e: as row_exp_sum */
    void (*lanes_flush)(uint64_t *raw_hi, uint64_t *raw_lo, int64_t *raw_count, csm_idx terms, int64_t *hi,
                        int64_t *lo, int64_t *count, csm_idx n_lanes);
    void (*lanes_scale)(char *y, csm_idx ys, csm_idx steps, const void *inv, csm_idx n_lanes);
    void (*lanes_exp_scale)(const char *x, csm_idx xs, char *y, csm_idx ys, csm_idx steps, const void *m,
                            const void *inv, csm_idx n_lanes, int in);
    void (*lanes_log_sum)(const char *x, csm_idx xs, csm_idx steps, const void *m, const void *m2, uint64_t *raw_hi,
                          uint64_t *raw_lo, int64_t *raw_count, csm_idx n_lanes, int in);
    void (*lanes_log_out)(const char *x, csm_idx xs, char *y, csm_idx ys, csm_idx steps, const void *m,
                          const void *log_hi, const void *log_lo, csm_idx n_lanes, int in);
    void (*lanes_dot)(const char *g, csm_idx gs, const char *y, csm_idx ys, csm_idx steps, double *acc,
                      csm_idx n_lanes, int half);
    void (*lanes_grad_out)(int func, const char *g, csm_idx gs, const char *y, csm_idx ys, char *out, csm_idx os,
                           csm_idx steps, const void *s, csm_idx n_lanes, int half);

    /* log S per row or lane from merged state, n at once, vectorised (never a C library call per row): split into
     * T parts (log_hi + log_lo; float64: log_lo 0), NaN where m is not finite; m2 the largest entry below m */
    csm_log_sums_fn log_sums;
} csm_type_kernels;

/* Staging: a block of an operand to or from a contiguous tile of the compute type. */
typedef struct {
    const char *p;               /* first element */
    csm_idx stride;              /* bytes between elements */
    int dtype, swapped, aligned;
} csm_strided;

typedef struct csm_kernels {
    const char *name;            /* "avx512", "avx2", "neon", "baseline" */
    const char *description;
    csm_type_kernels f32, f64;
    /* n elements of src (any storage, stride, byte order, alignment) into tile (compute type ct), rounded to
     * `round_to` on the way (CSM_F16: float16 results of wider input; else -1), negated if asked, and -inf (+inf
     * before negation: the mask applies after it) where mask is given and 0 */
    void (*stage_in)(const csm_strided *src, int ct, int round_to, int negate, const csm_strided *mask, csm_idx n,
                     void *tile);
    /* n elements of tile (compute type ct) to dst (native, aligned; any stride), converted to its dtype */
    void (*stage_out)(const void *tile, int ct, const csm_strided *dst, csm_idx n);
} csm_kernels;

/* dispatch.c */
const csm_kernels *csm_best_kernels(void);
const csm_kernels *csm_kernels_by_name(const char *name);   /* NULL if unknown or not supported by this CPU */
int csm_available_kernels(const csm_kernels **list, int max);
const char *csm_cpu_features(void);

/* per-ISA tables (kernels_*.c) */
extern const csm_kernels csm_kernels_baseline;
#if defined(__x86_64__) || defined(_M_X64)
extern const csm_kernels csm_kernels_avx2;
extern const csm_kernels csm_kernels_avx512;
#endif
#if defined(__aarch64__)
extern const csm_kernels csm_kernels_neon;
#endif

/* scalar float16 conversions (round to nearest even), shared by every instruction set's fallback */
float csm_half_to_float(uint16_t h);
uint16_t csm_float_to_half(float f);
uint16_t csm_double_to_half(double d);

#endif
