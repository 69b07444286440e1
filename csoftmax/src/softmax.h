/*
 * The one C contract of csoftmax.
 *
 * Design:
 *   - The Python layer decides policy (dim, dtype, errors) and allocates the output.
 *   - driver.c receives any N-d input/output pair by data pointer, shape and byte strides, removes the reduction
 *     axis, merges the remaining axes where the strides allow, and walks them: the innermost as "lanes", the rest
 *     with an odometer. It routes each panel of lanes to a kernel of the active instruction set.
 *   - kernels.inc is the one kernel source. It is compiled once per instruction set (kernels_baseline.c,
 *     kernels_avx2.c), each filling a csm_kernels table; dispatch.c picks one at import.
 *
 * Numerics (identical for every layout and thread split of one instruction set):
 *   m = max_i x_i (exact; NaN if any x_i is NaN); a row whose m is not finite is all NaN (as in torch).
 *   e_i = exp(x_i - m), the subtraction carried with its rounding error (2Sum) into the exponential.
 *   S = sum_i e_i, each e_i rounded to fixed point (2^-40 for float32; 2^-40 + 2^-80 limbs for float64) and added
 *       as 64-bit integers: integer addition is associative, so S does not depend on the order of the walk.
 *   y_i = e_i * (1/S), the reciprocal rounded to the compute type.
 */
#ifndef CSOFTMAX_SOFTMAX_H
#define CSOFTMAX_SOFTMAX_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t csm_idx;            /* element counts and byte strides: 64-bit on every supported platform */

enum csm_dtype { CSM_F16 = 0, CSM_F32 = 1, CSM_F64 = 2 };

/*
 * Fixed-point partial sums of exponentials. float32 uses hi only (units of 2^-40); float64 adds lo (units of
 * 2^-80). Each e_i <= 1, so a chunk of CSM_SUM_CHUNK terms stays below 2^62 and cannot overflow.
 */
typedef struct { int64_t hi, lo; } csm_fixsum;

static inline double csm_fixsum_value(csm_fixsum s)
{
    const double unit = 1.0 / 1099511627776.0;     /* 2^-40 */
    return (double)s.hi * unit + (double)s.lo * (unit * unit);
}

/* 1/S in the compute type, or NaN for a row whose maximum is NaN or infinite (torch gives NaN there too). */
static inline double csm_reciprocal(int ct, double row_max, double total)
{
    if (!isfinite(row_max)) return NAN;
    return ct == CSM_F32 ? (double)(float)(1.0 / total) : 1.0 / total;
}
#define CSM_SUM_CHUNK ((csm_idx)1 << 22)

#define CSM_LANES_FLUSH 512           /* float32 raw parts are 32-bit: 512 terms of at most 2^22 fit */
#define CSM_FUSED_ROW_BYTES (64 * 1024) /* rows up to this size take rows_softmax (L1/L2-resident) */
#define CSM_ROW_GROUP 4               /* rows_softmax interleaves this many rows (float32) */
#define CSM_SHORT_ROW_MAX 32         /* longest row the across-rows kernel takes (kernels.inc sizes its columns) */

/* One switch for the float32 exponential of both x86 FMA sets (AVX2 and AVX-512; kernels.inc: table-driven when
 * set): AVX-512 borrows AVX2's short-rows kernel, so the two sets must compute the same float32 bits. */
#define CSM_X86_EXP_TABLE_F32 1

/*
 * Kernels of one instruction set, for one compute type (float32 or float64). Arrays are contiguous and of the
 * compute type; scalars travel as double (exact for float32 values). "Lanes" functions process one row of a
 * strided reduction: x[l] for l < n_lanes are neighbouring lanes at the same axis position, with per-lane state.
 */
typedef struct {
    /* contiguous row x[0..n) */
    double (*row_max)(const void *x, csm_idx n);                       /* NaN if any NaN; -inf if n == 0 */
    void (*row_exp_sum)(const void *x, void *e, csm_idx n, double m, csm_fixsum *sum);  /* e may be NULL */
    void (*row_exp_scale)(const void *x, void *y, csm_idx n, double m, double inv);
    void (*row_scale)(void *y, csm_idx n, double inv);
    /* `steps` axis positions of n_lanes contiguous lanes, xs/ys/es bytes apart (a walk down the axis in one call:
     * a panel of a few vectors would otherwise pay a call and the constants' set-up per position); m, inv: arrays
     * of the compute type */
    void (*lanes_max)(const char *x, csm_idx xs, csm_idx steps, void *m, csm_idx n_lanes);
    /* adds each lane's fixed-point parts as raw patterns to raw_hi/raw_lo (8 bytes per lane, opaque); e may be
     * NULL; at most CSM_LANES_FLUSH steps */
    void (*lanes_exp_sum)(const char *x, csm_idx xs, char *e, csm_idx es, csm_idx steps, const void *m,
                          uint64_t *raw_hi, uint64_t *raw_lo, csm_idx n_lanes);
    /* adds the exact values of raw parts that received `terms` terms per lane to sum_hi/sum_lo, zeroes raw;
     * at most CSM_LANES_FLUSH terms between flushes */
    void (*lanes_flush)(uint64_t *raw_hi, uint64_t *raw_lo, csm_idx terms, int64_t *sum_hi, int64_t *sum_lo,
                        csm_idx n_lanes);
    void (*lanes_exp_scale)(const char *x, csm_idx xs, char *y, csm_idx ys, csm_idx steps, const void *m,
                            const void *inv, csm_idx n_lanes);
    void (*lanes_scale)(char *y, csm_idx ys, csm_idx steps, const void *inv, csm_idx n_lanes);
    /* many short contiguous rows (n <= CSM_SHORT_ROW_MAX): whole softmax, vectorised across rows; row strides in
     * bytes with 16 * |stride| < 2^31. Does whole groups of vector-width rows; returns how many rows it did. */
    csm_idx (*short_rows)(const char *x, csm_idx x_row_stride, char *y, csm_idx y_row_stride, csm_idx n_rows,
                          csm_idx n);
    /* whole softmax of n_rows contiguous rows of n elements (row strides in bytes), for rows that fit in cache
     * (the driver sends rows of at most CSM_FUSED_ROW_BYTES): the row kernels' steps in one call, same bits */
    void (*rows_softmax)(const char *x, csm_idx x_row_stride, char *y, csm_idx y_row_stride, csm_idx n_rows,
                         csm_idx n);
    /* whole softmax down a strided axis of n <= CSM_LANES_FLUSH steps whose strips of four vectors of lanes stay
     * in cache (the driver's strips_stay_in_cache): lanes_max, _exp_sum, _flush and _scale in one call with the
     * state in registers, same bits */
    void (*lanes_softmax)(const char *x, csm_idx xs, char *y, csm_idx ys, csm_idx n, csm_idx n_lanes);
    /* n elements at p + i * stride (bytes; native, aligned) into the contiguous buf */
    void (*strided_load)(const char *p, csm_idx stride, csm_idx n, void *buf);
    /* log_softmax of a contiguous row (see kernels.inc): top two values; fixed-point sum of exp(x - m2) over
     * x < m plus the count of x == m; the output (x - m) - log_s */
    void (*row_max2)(const void *x, csm_idx n, double *m, double *m2);
    void (*row_logsum)(const void *x, csm_idx n, double m, double m2, csm_fixsum *sum, csm_idx *count);
    void (*row_log_out)(const void *x, void *y, csm_idx n, double m, double log_s);
    /* the same for `steps` axis positions of n_lanes lanes (a walk, as for softmax's lanes), per-lane state;
     * count: entries equal to m so far (at most CSM_LANES_FLUSH steps per logsum call: the caller flushes raw parts
     * and counts in between); log_s per lane as (hi, lo) for float32, (value, unused) for float64 */
    void (*lanes_max2)(const char *x, csm_idx xs, csm_idx steps, void *m, void *m2, csm_idx n_lanes);
    void (*lanes_logsum)(const char *x, csm_idx xs, csm_idx steps, const void *m, const void *m2, uint64_t *raw_hi,
                         uint64_t *raw_lo, int32_t *count, csm_idx n_lanes);
    void (*lanes_log_out)(const char *x, csm_idx xs, char *y, csm_idx ys, csm_idx steps, const void *m,
                          const void *log_hi, const void *log_lo, csm_idx n_lanes);
    /* backward: the float64 sum of g * y (y non-NULL: softmax) or of g (y NULL: log_softmax) over a contiguous
     * row, and the gradient from it: y * (g - s), or with log set g - exp(y) * s */
    double (*row_grad_sum)(const void *g, const void *y, csm_idx n);
    void (*row_grad_out)(const void *g, const void *y, void *out, csm_idx n, double s, int log);
    /* the same for one axis position of n_lanes lanes: acc (float64 per lane) += g * y or g; s per lane in the
     * compute type */
    void (*lanes_grad_sum)(const void *g, const void *y, double *acc, csm_idx n_lanes);
    void (*lanes_grad_out)(const void *g, const void *y, void *out, const void *s, csm_idx n_lanes, int log);
} csm_type_kernels;

typedef struct {
    const char *name;            /* "avx512", "avx2", "baseline" */
    const char *description;
    csm_type_kernels f32, f64;
    /* block conversions between float16 and float32 (F16C where the instruction set has it) */
    void (*f16_to_f32)(const uint16_t *src, float *dst, csm_idx n);
    void (*f32_to_f16)(const float *src, uint16_t *dst, csm_idx n);
    /* whole softmax of contiguous float16 rows of n <= 1024 elements (row strides in bytes), computed in float32
     * with the bits of rows_softmax; scratch: CSM_ROW_GROUP * n floats. NULL without F16C. */
    void (*rows_softmax_f16)(const char *x, csm_idx x_row_stride, char *y, csm_idx y_row_stride, csm_idx n_rows,
                             csm_idx n, float *scratch);
} csm_kernels;

/* The backward ops read the forward's output y from `in` and the upstream gradient from `grad`. */
enum csm_op { CSM_SOFTMAX = 0, CSM_LOG_SOFTMAX = 1, CSM_SOFTMAX_BACKWARD = 2, CSM_LOG_SOFTMAX_BACKWARD = 3 };

/* One softmax call: any shape and byte strides; out has the same shape and must not overlap in. */
typedef struct {
    int op;                      /* csm_op */
    int negate;                  /* work on -x (softmin), exactly: negation is exact */
    int ndim;
    const csm_idx *shape;
    int axis;
    const char *in;
    const csm_idx *in_strides;
    int in_dtype;
    int in_swapped;              /* non-native byte order */
    int in_aligned;              /* data pointer and strides aligned to the item size */
    char *out;
    const csm_idx *out_strides;
    int out_dtype;               /* native and aligned (the Python layer allocates it) */
    const char *grad;            /* backward ops: the upstream gradient, laid out exactly as `in` (same strides and
                                    dtype, native, aligned, in the compute type); unused otherwise */
} csm_call;

/* Returns 0 on success, -1 when scratch memory could not be allocated (nothing is then promised about out). */
int csm_softmax(const csm_call *call, const csm_kernels *kernels);

/* The same call cut into tasks for the thread pool (threads.h): csm_plan_new decides the cut (NULL: no memory);
 * run its job inline or in the pool; csm_plan_free returns -1 if a task could not get scratch memory. The call
 * struct must outlive the plan. Results do not depend on the thread count. */
typedef struct csm_plan csm_plan;
csm_plan *csm_plan_new(const csm_call *call, const csm_kernels *kernels, int threads);
int csm_plan_parallel(const csm_plan *plan);      /* whether the pool pays for this call */
struct csm_job *csm_plan_job(csm_plan *plan);
int csm_plan_free(csm_plan *plan);
/* A call too small for the pool, run at once without allocating a plan: 0 (done), -1 (no memory), or 1 when the
 * call is not small (nothing done: plan it). */
int csm_softmax_small(const csm_call *call, const csm_kernels *kernels);

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

/* scalar float16 conversions (round to nearest even), shared by every instruction set's fallback */
float csm_half_to_float(uint16_t h);
uint16_t csm_float_to_half(float f);

#endif
