/*
 * The walk: from an N-d softmax call to kernel calls. No policy (that is Python's) and no arithmetic on elements
 * (that is the kernels'); this file only decides which kernel sees which memory.
 *
 *   1. Remove the reduction axis; order the other axes by output stride (the output follows the input's memory
 *      order) and merge neighbours whose strides chain, so a C- or F-ordered array becomes at most one "lane" axis
 *      and one outer axis. The innermost remaining axis is the lanes; the rest are walked with an odometer.
 *   2. Each panel of lanes goes to one of three paths:
 *      rows:    the reduction axis is contiguous: each lane is a contiguous row (short rows: vectorised across
 *               rows instead);
 *      lanes:   the lanes are contiguous and the axis is strided: walk the axis in memory order, a whole row of
 *               lanes at a time, carrying per-lane max and sum (a strided walk down one lane would touch a new
 *               page per element); a short axis whose strips of a few vectors of lanes stay in cache is walked
 *               one strip at a time instead, its state in registers (lanes_softmax);
 *      general: anything else (other strides, byte-swapped, misaligned, float16): gather blocks of one row into
 *               a small buffer of the compute type, run the row kernels on it, scatter the result.
 *   All three produce bit-identical results, see softmax.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softmax.h"
#include "threads.h"

#define MAX_DIMS 64                  /* NumPy 2's NPY_MAXDIMS (NumPy 1 allows 32) */
#define SHORT_ROW_MAX 16             /* rows up to this length take the across-rows kernel: measured crossover */
#define GATHER_BLOCK 1024            /* elements per gather block: 8 KB of float64, well inside L1 */
#define LANES_PANEL 4096             /* lanes walked together: 16-32 KB contiguous per axis step; per-lane state
                                        (max, two sums, total, reciprocal) stays below 160 KB */
#define CACHE_BUDGET ((size_t)8 << 20) /* rows up to this many bytes store their exponentials and rescale them
                                        in place (the row is still in L2/L3 for the last pass); longer rows
                                        recompute them rather than re-read. Measured (Zen 5, 32 MiB L3): a 1e6
                                        float64 row 908 -> 676 us, 1e5: 91 -> 65 us, against a 256 KiB budget */
#define ROW_BUFFER_MAX (256 * 1024)  /* the general path converts rows up to this size into a buffer once */
#define LANES_STORE_BUDGET (16 << 20) /* a lanes panel up to this size stores its exponentials in the output and
                                        rescales them there (the panel stays in L3 for the last pass); a bigger
                                        one computes them again in the last pass instead, reading x three times
                                        and writing y once (5 -> 4 array-sized transfers). Measured since the
                                        passes walk and prefetch (Zen 5, 32 MiB L3): (4096, 4096) dim 0 at 1 / 2
                                        threads 11.1-12.4 / 7.3-7.5 ms storing, 8.9-9.4 / 5.8-5.9 ms recomputing;
                                        8 MiB panels ((1024, 2048), (512, 2048) float64) stay faster storing */

typedef struct {
    csm_idx axis_len, in_axis_stride, out_axis_stride;
    csm_idx n_lanes, in_lane_stride, out_lane_stride;
    int n_outer;
    csm_idx outer_shape[MAX_DIMS], in_outer_stride[MAX_DIMS], out_outer_stride[MAX_DIMS];
} layout;

static csm_idx abs_idx(csm_idx v) { return v < 0 ? -v : v; }

static void decompose(const csm_call *c, layout *L)
{
    csm_idx shape[MAX_DIMS], in_s[MAX_DIMS], out_s[MAX_DIMS];
    int n = 0;
    L->axis_len = c->shape[c->axis];
    L->in_axis_stride = c->in_strides[c->axis];
    L->out_axis_stride = c->out_strides[c->axis];
    for (int d = 0; d < c->ndim; d++) {
        if (d == c->axis || c->shape[d] == 1) continue;
        /* insertion by descending output stride, then input stride: the outermost first */
        int at = n;
        while (at > 0 && (abs_idx(out_s[at - 1]) < abs_idx(c->out_strides[d]) ||
                          (abs_idx(out_s[at - 1]) == abs_idx(c->out_strides[d]) &&
                           abs_idx(in_s[at - 1]) < abs_idx(c->in_strides[d])))) {
            shape[at] = shape[at - 1];
            in_s[at] = in_s[at - 1];
            out_s[at] = out_s[at - 1];
            at--;
        }
        shape[at] = c->shape[d];
        in_s[at] = c->in_strides[d];
        out_s[at] = c->out_strides[d];
        n++;
    }
    int m = 0;                       /* merge an axis into the one outside it when both strides chain */
    for (int d = 0; d < n; d++) {
        if (m > 0 && in_s[m - 1] == in_s[d] * shape[d] && out_s[m - 1] == out_s[d] * shape[d]) {
            shape[m - 1] *= shape[d];
            in_s[m - 1] = in_s[d];
            out_s[m - 1] = out_s[d];
        } else {
            shape[m] = shape[d];
            in_s[m] = in_s[d];
            out_s[m] = out_s[d];
            m++;
        }
    }
    if (m == 0) {
        L->n_lanes = 1;
        L->in_lane_stride = L->out_lane_stride = 0;
    } else {
        m--;
        L->n_lanes = shape[m];
        L->in_lane_stride = in_s[m];
        L->out_lane_stride = out_s[m];
    }
    L->n_outer = m;
    for (int d = 0; d < m; d++) {
        L->outer_shape[d] = shape[d];
        L->in_outer_stride[d] = in_s[d];
        L->out_outer_stride[d] = out_s[d];
    }
}

static size_t dtype_size(int dtype) { return dtype == CSM_F16 ? 2 : dtype == CSM_F32 ? 4 : 8; }

/* Sum of exp(x - m) over a contiguous row, in pieces of CSM_SUM_CHUNK so the fixed-point sums cannot overflow. */
static double row_total(const csm_type_kernels *k, const char *x, char *e, csm_idx n, double m, size_t es)
{
    double total = 0.0;
    for (csm_idx start = 0; start < n; start += CSM_SUM_CHUNK) {
        csm_idx len = n - start < CSM_SUM_CHUNK ? n - start : CSM_SUM_CHUNK;
        csm_fixsum s = {0, 0};
        k->row_exp_sum(x + start * es, e ? e + start * es : NULL, len, m, &s);
        total += csm_fixsum_value(s);
    }
    return total;
}

/* ------------------------------------------------------------------------------------------ rows path */

static void softmax_row(const csm_type_kernels *k, int ct, const char *x, char *y, csm_idx n, size_t es)
{
    if ((size_t)n * es <= CSM_FUSED_ROW_BYTES) {
        k->rows_softmax(x, 0, y, 0, 1, n);
        return;
    }
    double m = k->row_max(x, n);
    if ((size_t)n * es <= CACHE_BUDGET) {
        double inv = csm_reciprocal(ct, m, row_total(k, x, y, n, m, es));
        k->row_scale(y, n, inv);
    } else {
        double inv = csm_reciprocal(ct, m, row_total(k, x, NULL, n, m, es));
        k->row_exp_scale(x, y, n, m, inv);
    }
}

/* log S from the parts of log_softmax (kernels.inc): S = c + exp(m2 - m) T, log S = log1p((c - 1) + S'). */
static double log_sum(int ct, double m, double m2, double t, csm_idx count)
{
    if (!isfinite(m)) return NAN;
    double scale = 0.0;
    if (m2 > -INFINITY) {
        double d = m2 - m;                             /* exact for float32; for float64 add back its rounding */
        scale = exp(d);
        if (ct == CSM_F64 && isfinite(d)) {            /* (m2 - m overflows to -inf for m2 = -max, m = max) */
            double back = d - m2, err = (m2 - (d - back)) + (-m - back);
            if (isfinite(back)) scale += scale * err;  /* (and d - m2 can: then d is within an ulp anyway) */
        }
    }
    return log1p((double)(count - 1) + scale * t);
}

static void log_softmax_row(const csm_type_kernels *k, int ct, const char *x, char *y, csm_idx n, size_t es)
{
    double m, m2;
    k->row_max2(x, n, &m, &m2);
    double m2_eff = m2 > -INFINITY ? m2 : m;          /* no entry below m but -inf ones: their terms are 0 */
    double t = 0.0;
    csm_idx count = 0;
    if (isfinite(m)) {
        for (csm_idx start = 0; start < n; start += CSM_SUM_CHUNK) {
            csm_idx len = n - start < CSM_SUM_CHUNK ? n - start : CSM_SUM_CHUNK;
            csm_fixsum s = {0, 0};
            k->row_logsum(x + start * es, len, m, m2_eff, &s, &count);
            t += csm_fixsum_value(s);
        }
    }
    k->row_log_out(x, y, n, m, log_sum(ct, m, m2, t, count));
}

/* ------------------------------------------------------------------------------------------ lanes path */

typedef struct {
    void *max, *inv;                 /* compute type */
    uint64_t *raw_hi, *raw_lo;       /* the kernels' running parts, flushed every CSM_LANES_FLUSH steps */
    int64_t *sum_hi, *sum_lo;        /* exact fixed-point sums of the current CSM_SUM_CHUNK */
    double *total;
    void *max2, *log_lo;             /* log_softmax: second maxima; log S as (inv = hi, log_lo) */
    int32_t *count;                  /* log_softmax: entries equal to the maximum since the last flush */
    int64_t *count_total;
} lane_state;

/* All per-lane arrays of a panel of up to `width` lanes in one allocation (a task used to make eleven). */
static int lane_state_alloc(lane_state *st, csm_idx width)
{
    void **arrays[] = {&st->max, &st->inv, (void **)&st->raw_hi, (void **)&st->raw_lo, (void **)&st->sum_hi,
                       (void **)&st->sum_lo, (void **)&st->total, &st->max2, &st->log_lo, (void **)&st->count,
                       (void **)&st->count_total};
    const size_t n = sizeof arrays / sizeof arrays[0];
    const size_t each = ((size_t)width * 8 + 63) / 64 * 64;        /* 8 bytes per lane covers every type */
    char *block = malloc(n * each);
    if (!block) return -1;
    for (size_t i = 0; i < n; i++) *arrays[i] = block + i * each;
    return 0;
}

static void lane_state_free(lane_state *st) { free(st->max); }   /* the block starts with max */

static double load_ct(int ct, const void *a, csm_idx i)
{
    return ct == CSM_F32 ? (double)((const float *)a)[i] : ((const double *)a)[i];
}

static void store_ct(int ct, void *a, csm_idx i, double v)
{
    if (ct == CSM_F32) ((float *)a)[i] = (float)v;
    else ((double *)a)[i] = v;
}

static void softmax_lanes(const csm_type_kernels *k, int ct, const layout *L, const char *x, char *y,
                          csm_idx n_lanes, lane_state *st)
{
    const size_t es = dtype_size(ct);
    const csm_idx n = L->axis_len;
    for (csm_idx l = 0; l < n_lanes; l++) store_ct(ct, st->max, l, -INFINITY);
    k->lanes_max(x, L->in_axis_stride, n, st->max, n_lanes);

    const int store = (size_t)n * n_lanes * es <= LANES_STORE_BUDGET;
    memset(st->total, 0, n_lanes * sizeof(double));
    for (csm_idx start = 0; start < n; start += CSM_SUM_CHUNK) {
        csm_idx stop = n - start < CSM_SUM_CHUNK ? n : start + CSM_SUM_CHUNK;
        memset(st->sum_hi, 0, n_lanes * sizeof(int64_t));
        memset(st->sum_lo, 0, n_lanes * sizeof(int64_t));
        memset(st->raw_hi, 0, n_lanes * sizeof(uint64_t));
        memset(st->raw_lo, 0, n_lanes * sizeof(uint64_t));
        for (csm_idx i = start; i < stop; i += CSM_LANES_FLUSH) {
            csm_idx steps = stop - i < CSM_LANES_FLUSH ? stop - i : CSM_LANES_FLUSH;
            k->lanes_exp_sum(x + i * L->in_axis_stride, L->in_axis_stride, store ? y + i * L->out_axis_stride : NULL,
                             L->out_axis_stride, steps, st->max, st->raw_hi, st->raw_lo, n_lanes);
            k->lanes_flush(st->raw_hi, st->raw_lo, steps, st->sum_hi, st->sum_lo, n_lanes);
        }
        for (csm_idx l = 0; l < n_lanes; l++) {
            csm_fixsum s = {st->sum_hi[l], st->sum_lo[l]};
            st->total[l] += csm_fixsum_value(s);
        }
    }
    for (csm_idx l = 0; l < n_lanes; l++)
        store_ct(ct, st->inv, l, csm_reciprocal(ct, load_ct(ct, st->max, l), st->total[l]));

    if (store) k->lanes_scale(y, L->out_axis_stride, n, st->inv, n_lanes);
    else k->lanes_exp_scale(x, L->in_axis_stride, y, L->out_axis_stride, n, st->max, st->inv, n_lanes);
}

/* log_softmax over a panel of lanes: the row steps of log_softmax_row, each a walk down the axis in memory order. */
static void log_softmax_lanes(const csm_type_kernels *k, int ct, const layout *L, const char *x, char *y,
                              csm_idx n_lanes, lane_state *st)
{
    const csm_idx n = L->axis_len;
    for (csm_idx l = 0; l < n_lanes; l++) {
        store_ct(ct, st->max, l, -INFINITY);
        store_ct(ct, st->max2, l, -INFINITY);
    }
    k->lanes_max2(x, L->in_axis_stride, n, st->max, st->max2, n_lanes);
    /* lanes with nothing below the maximum but -inf sum relative to the maximum itself: their terms are 0 */
    void *m2_eff = st->inv;                            /* free until the last pass */
    for (csm_idx l = 0; l < n_lanes; l++) {
        double m2 = load_ct(ct, st->max2, l);
        store_ct(ct, m2_eff, l, m2 > -INFINITY ? m2 : load_ct(ct, st->max, l));
    }
    memset(st->total, 0, n_lanes * sizeof(double));
    memset(st->count_total, 0, n_lanes * sizeof(int64_t));
    for (csm_idx start = 0; start < n; start += CSM_SUM_CHUNK) {
        csm_idx stop = n - start < CSM_SUM_CHUNK ? n : start + CSM_SUM_CHUNK;
        memset(st->sum_hi, 0, n_lanes * sizeof(int64_t));
        memset(st->sum_lo, 0, n_lanes * sizeof(int64_t));
        memset(st->raw_hi, 0, n_lanes * sizeof(uint64_t));
        memset(st->raw_lo, 0, n_lanes * sizeof(uint64_t));
        memset(st->count, 0, n_lanes * sizeof(int32_t));
        for (csm_idx i = start; i < stop; i += CSM_LANES_FLUSH) {
            csm_idx steps = stop - i < CSM_LANES_FLUSH ? stop - i : CSM_LANES_FLUSH;
            k->lanes_logsum(x + i * L->in_axis_stride, L->in_axis_stride, steps, st->max, m2_eff, st->raw_hi,
                            st->raw_lo, st->count, n_lanes);
            k->lanes_flush(st->raw_hi, st->raw_lo, steps, st->sum_hi, st->sum_lo, n_lanes);
            for (csm_idx l = 0; l < n_lanes; l++) {
                st->count_total[l] += st->count[l];
                st->count[l] = 0;
            }
        }
        for (csm_idx l = 0; l < n_lanes; l++) {
            csm_fixsum s = {st->sum_hi[l], st->sum_lo[l]};
            st->total[l] += csm_fixsum_value(s);
        }
    }
    for (csm_idx l = 0; l < n_lanes; l++) {
        double log_s = log_sum(ct, load_ct(ct, st->max, l), load_ct(ct, st->max2, l), st->total[l],
                               st->count_total[l]);
        if (ct == CSM_F32) {                           /* as row_log_out_f32 splits it */
            float hi = (float)log_s;
            ((float *)st->inv)[l] = hi;
            ((float *)st->log_lo)[l] = (float)(log_s - hi);
        } else {
            ((double *)st->inv)[l] = log_s;
        }
    }
    k->lanes_log_out(x, L->in_axis_stride, y, L->out_axis_stride, n, st->max, st->inv, st->log_lo, n_lanes);
}

/* ------------------------------------------------------------------------------------------ backward */

/* The backward ops read y from the call's input and g from the same offset in its grad array. */
static const char *grad_of(const csm_call *c, const char *y) { return c->grad + (y - c->in); }

static void backward_row(const csm_type_kernels *k, int log, const char *g, const char *y, char *out, csm_idx n)
{
    double s = k->row_grad_sum(g, log ? NULL : y, n);
    k->row_grad_out(g, y, out, n, s, log);
}

static void backward_lanes(const csm_type_kernels *k, int ct, int log, const layout *L, const char *g,
                           const char *y, char *out, csm_idx n_lanes, lane_state *st)
{
    const csm_idx n = L->axis_len;
    memset(st->total, 0, n_lanes * sizeof(double));
    for (csm_idx i = 0; i < n; i++)
        k->lanes_grad_sum(g + i * L->in_axis_stride, log ? NULL : y + i * L->in_axis_stride, st->total, n_lanes);
    for (csm_idx l = 0; l < n_lanes; l++) store_ct(ct, st->inv, l, st->total[l]);
    for (csm_idx i = 0; i < n; i++)
        k->lanes_grad_out(g + i * L->in_axis_stride, y + i * L->in_axis_stride, out + i * L->out_axis_stride,
                          st->inv, n_lanes, log);
}

/* A strided row: blocks of y and g loaded into buffers twice (sum, then gradient), the result stored back. */
static void backward_general(const csm_type_kernels *k, int ct, int log, const layout *L, const char *g,
                             const char *y, char *out)
{
    double gbuf[GATHER_BLOCK], ybuf[GATHER_BLOCK];
    const csm_idx n = L->axis_len, is = L->in_axis_stride, os = L->out_axis_stride;
    double s = 0.0;
    for (csm_idx b = 0; b < n; b += GATHER_BLOCK) {
        csm_idx len = n - b < GATHER_BLOCK ? n - b : GATHER_BLOCK;
        k->strided_load(g + b * is, is, len, gbuf);
        if (!log) k->strided_load(y + b * is, is, len, ybuf);
        s += k->row_grad_sum(gbuf, log ? NULL : ybuf, len);
    }
    for (csm_idx b = 0; b < n; b += GATHER_BLOCK) {
        csm_idx len = n - b < GATHER_BLOCK ? n - b : GATHER_BLOCK;
        k->strided_load(g + b * is, is, len, gbuf);
        k->strided_load(y + b * is, is, len, ybuf);
        k->row_grad_out(gbuf, ybuf, ybuf, len, s, log);
        char *q = out + b * os;
        if (ct == CSM_F32) for (csm_idx i = 0; i < len; i++) *(float *)(q + i * os) = ((float *)ybuf)[i];
        else for (csm_idx i = 0; i < len; i++) *(double *)(q + i * os) = ybuf[i];
    }
}

/* ------------------------------------------------------------------------------------------ general path */

static float load_f32_swapped(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    v = __builtin_bswap32(v);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static double load_f64_swapped(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    v = __builtin_bswap64(v);
    double f;
    memcpy(&f, &v, 8);
    return f;
}

/* Contiguous byte-swapped input, 16 bytes at a time by shifts and masks (plain SSE2 or NEON; the compiler keeps a
 * scalar bswap loop scalar). Any alignment: the vectors are copied in with memcpy. */
typedef uint32_t v4u32 __attribute__((vector_size(16)));
typedef uint64_t v2u64 __attribute__((vector_size(16)));
static void swap_bytes32(const char *p, csm_idx n, void *out)
{
    csm_idx i = 0;
    for (; i + 4 <= n; i += 4) {
        v4u32 v;
        memcpy(&v, p + 4 * i, 16);
        v = (v << 16) | (v >> 16);                                          /* swap the halves, then the bytes */
        v = ((v & 0x00ff00ffu) << 8) | ((v >> 8) & 0x00ff00ffu);
        memcpy((char *)out + 4 * i, &v, 16);
    }
    for (; i < n; i++) ((float *)out)[i] = load_f32_swapped(p + 4 * i);
}
static void swap_bytes64(const char *p, csm_idx n, void *out)
{
    csm_idx i = 0;
    for (; i + 2 <= n; i += 2) {
        v2u64 v;
        memcpy(&v, p + 8 * i, 16);
        v = (v << 32) | (v >> 32);
        v = ((v & 0x0000ffff0000ffffull) << 16) | ((v >> 16) & 0x0000ffff0000ffffull);
        v = ((v & 0x00ff00ff00ff00ffull) << 8) | ((v >> 8) & 0x00ff00ff00ff00ffull);
        memcpy((char *)out + 8 * i, &v, 16);
    }
    for (; i < n; i++) ((double *)out)[i] = load_f64_swapped(p + 8 * i);
}

static uint16_t load_u16(const char *p, int swapped)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return swapped ? (uint16_t)((v >> 8) | (v << 8)) : v;
}

/* Converts n elements of the input at p (byte stride, any alignment and byte order) into buf of the compute type.
 * One loop per case, so the common ones (native, aligned) are plain strided loads. */
static void gather_values(const csm_kernels *kt, const csm_call *c, const char *p, csm_idx stride, csm_idx n,
                          int ct, void *buf);

/* gather_values, then the exact negation softmin asks for */
static void gather(const csm_kernels *kt, const csm_call *c, const char *p, csm_idx stride, csm_idx n, int ct,
                   void *buf)
{
    gather_values(kt, c, p, stride, n, ct, buf);
    if (c->negate) {
        if (ct == CSM_F32) for (csm_idx i = 0; i < n; i++) ((float *)buf)[i] = -((float *)buf)[i];
        else for (csm_idx i = 0; i < n; i++) ((double *)buf)[i] = -((double *)buf)[i];
    }
}

static void gather_values(const csm_kernels *kt, const csm_call *c, const char *p, csm_idx stride, csm_idx n,
                          int ct, void *buf)
{
    float *bf = buf;
    double *bd = buf;
    const int plain = !c->in_swapped && c->in_aligned;
    if (c->in_dtype == CSM_F16) {
        uint16_t half[GATHER_BLOCK];
        for (csm_idx s = 0; s < n; s += GATHER_BLOCK) {
            csm_idx len = n - s < GATHER_BLOCK ? n - s : GATHER_BLOCK;
            const char *q = p + s * stride;
            if (plain && stride == 2 && ct == CSM_F32) {        /* the common case: convert in place of copying */
                kt->f16_to_f32((const uint16_t *)q, bf + s, len);
                continue;
            }
            for (csm_idx i = 0; i < len; i++) half[i] = load_u16(q + i * stride, c->in_swapped);
            if (ct == CSM_F32) {
                kt->f16_to_f32(half, bf + s, len);
            } else {
                for (csm_idx i = 0; i < len; i++) bd[s + i] = csm_half_to_float(half[i]);
            }
        }
    } else if (c->in_dtype == CSM_F32 && ct == CSM_F32) {
        if (plain) kt->f32.strided_load(p, stride, n, bf);
        else if (!c->in_swapped) for (csm_idx i = 0; i < n; i++) memcpy(bf + i, p + i * stride, 4);
        else if (stride == 4) swap_bytes32(p, n, bf);
        else for (csm_idx i = 0; i < n; i++) bf[i] = load_f32_swapped(p + i * stride);
    } else if (c->in_dtype == CSM_F64 && ct == CSM_F64) {
        if (plain) kt->f64.strided_load(p, stride, n, bd);
        else if (!c->in_swapped) for (csm_idx i = 0; i < n; i++) memcpy(bd + i, p + i * stride, 8);
        else if (stride == 8) swap_bytes64(p, n, bd);
        else for (csm_idx i = 0; i < n; i++) bd[i] = load_f64_swapped(p + i * stride);
    } else if (c->in_dtype == CSM_F32) {          /* float32 input computed in float64 (widening, exact) */
        for (csm_idx i = 0; i < n; i++) {
            float f;
            if (c->in_swapped) f = load_f32_swapped(p + i * stride);
            else memcpy(&f, p + i * stride, 4);
            bd[i] = f;
        }
    } else {                                       /* float64 input computed in float32 (rounds, as a cast) */
        for (csm_idx i = 0; i < n; i++) {
            double v;
            if (c->in_swapped) v = load_f64_swapped(p + i * stride);
            else memcpy(&v, p + i * stride, 8);
            bf[i] = (float)v;
        }
    }
}

/* Writes n results from buf (compute type) to the output at p (native byte order, aligned, byte stride). */
static void scatter(const csm_kernels *kt, const csm_call *c, const void *buf, int ct, char *p, csm_idx stride,
                    csm_idx n)
{
    const float *bf = buf;
    const double *bd = buf;
    if (c->out_dtype == CSM_F16) {
        uint16_t half[GATHER_BLOCK];
        for (csm_idx s = 0; s < n; s += GATHER_BLOCK) {
            csm_idx len = n - s < GATHER_BLOCK ? n - s : GATHER_BLOCK;
            if (ct == CSM_F32 && stride == 2) {
                kt->f32_to_f16(bf + s, (uint16_t *)(p + s * stride), len);
                continue;
            }
            if (ct == CSM_F32) kt->f32_to_f16(bf + s, half, len);
            else for (csm_idx i = 0; i < len; i++) half[i] = csm_float_to_half((float)bd[s + i]);
            char *q = p + s * stride;
            if (stride == 2) memcpy(q, half, len * 2);
            else for (csm_idx i = 0; i < len; i++) memcpy(q + i * stride, half + i, 2);
        }
    } else if (c->out_dtype == CSM_F32) {
        if (ct == CSM_F32) for (csm_idx i = 0; i < n; i++) *(float *)(p + i * stride) = bf[i];
        else for (csm_idx i = 0; i < n; i++) *(float *)(p + i * stride) = (float)bd[i];
    } else {
        if (ct == CSM_F64) for (csm_idx i = 0; i < n; i++) *(double *)(p + i * stride) = bd[i];
        else for (csm_idx i = 0; i < n; i++) *(double *)(p + i * stride) = bf[i];
    }
}

/* log_softmax of a row too long for a row buffer: blocks streamed three times (top two, sum, output). */
static void log_softmax_streamed(const csm_kernels *kt, const csm_call *c, int ct, const layout *L, const char *x,
                                 char *y)
{
    const csm_type_kernels *k = ct == CSM_F32 ? &kt->f32 : &kt->f64;
    double buf[GATHER_BLOCK];
    const csm_idx n = L->axis_len, is = L->in_axis_stride, os = L->out_axis_stride;
    double m = -INFINITY, m2 = -INFINITY;
    for (csm_idx s = 0; s < n && m == m; s += GATHER_BLOCK) {
        csm_idx len = n - s < GATHER_BLOCK ? n - s : GATHER_BLOCK;
        gather(kt, c, x + s * is, is, len, ct, buf);
        double bm, bm2;
        k->row_max2(buf, len, &bm, &bm2);
        if (bm != bm) { m = bm; break; }
        /* merge the top two of {m, m2} and {bm, bm2} */
        double top = bm > m ? bm : m;
        double cands[4] = {m, m2, bm, bm2}, second = -INFINITY;
        for (int i = 0; i < 4; i++)
            if (cands[i] < top && cands[i] > second) second = cands[i];
        m = top;
        m2 = second;
    }
    double m2_eff = m2 > -INFINITY ? m2 : m, t = 0.0;
    csm_idx count = 0;
    csm_fixsum sum = {0, 0};
    for (csm_idx s = 0; isfinite(m) && s < n; s += GATHER_BLOCK) {
        csm_idx len = n - s < GATHER_BLOCK ? n - s : GATHER_BLOCK;
        gather(kt, c, x + s * is, is, len, ct, buf);
        k->row_logsum(buf, len, m, m2_eff, &sum, &count);
        if ((s + len) % CSM_SUM_CHUNK == 0 || s + len == n) {
            t += csm_fixsum_value(sum);
            sum.hi = sum.lo = 0;
        }
    }
    double log_s = log_sum(ct, m, m2, t, count);
    for (csm_idx s = 0; s < n; s += GATHER_BLOCK) {
        csm_idx len = n - s < GATHER_BLOCK ? n - s : GATHER_BLOCK;
        gather(kt, c, x + s * is, is, len, ct, buf);
        k->row_log_out(buf, buf, len, m, log_s);
        scatter(kt, c, buf, ct, y + s * os, os, len);
    }
}

/* A row that is not plain contiguous memory of the compute type. With a row buffer (rows up to ROW_BUFFER_MAX), the
 * row is converted once, computed in place like a contiguous row, and converted back; longer rows are streamed in
 * blocks three times (max, sum, result), so scratch memory stays bounded whatever the row length. */
static void softmax_general(const csm_kernels *kt, const csm_call *c, int ct, const layout *L, const char *x,
                            char *y, void *row_buffer)
{
    const csm_type_kernels *k = ct == CSM_F32 ? &kt->f32 : &kt->f64;
    const size_t es = dtype_size(ct);
    const csm_idx n = L->axis_len, is = L->in_axis_stride, os = L->out_axis_stride;
    if (row_buffer) {
        gather(kt, c, x, is, n, ct, row_buffer);
        /* a contiguous output row of the compute type takes the result directly */
        const int direct = c->out_dtype == ct && os == (csm_idx)es;
        char *dest = direct ? y : row_buffer;
        if (c->op == CSM_LOG_SOFTMAX) log_softmax_row(k, ct, row_buffer, dest, n, es);
        else softmax_row(k, ct, row_buffer, dest, n, es);
        if (!direct) scatter(kt, c, row_buffer, ct, y, os, n);
        return;
    }
    if (c->op == CSM_LOG_SOFTMAX) {
        log_softmax_streamed(kt, c, ct, L, x, y);
        return;
    }
    double buf[GATHER_BLOCK];
    double m = -INFINITY;
    for (csm_idx s = 0; s < n && m == m; s += GATHER_BLOCK) {
        csm_idx len = n - s < GATHER_BLOCK ? n - s : GATHER_BLOCK;
        gather(kt, c, x + s * is, is, len, ct, buf);
        double bm = k->row_max(buf, len);
        if (bm != bm || bm > m) m = bm;
    }
    double total = 0.0;
    csm_fixsum sum = {0, 0};
    for (csm_idx s = 0; s < n; s += GATHER_BLOCK) {   /* GATHER_BLOCK divides CSM_SUM_CHUNK */
        csm_idx len = n - s < GATHER_BLOCK ? n - s : GATHER_BLOCK;
        gather(kt, c, x + s * is, is, len, ct, buf);
        k->row_exp_sum(buf, NULL, len, m, &sum);
        if ((s + len) % CSM_SUM_CHUNK == 0 || s + len == n) {
            total += csm_fixsum_value(sum);
            sum.hi = sum.lo = 0;
        }
    }
    double inv = csm_reciprocal(ct, m, total);
    for (csm_idx s = 0; s < n; s += GATHER_BLOCK) {
        csm_idx len = n - s < GATHER_BLOCK ? n - s : GATHER_BLOCK;
        gather(kt, c, x + s * is, is, len, ct, buf);
        k->row_exp_scale(buf, buf, len, m, inv);
        scatter(kt, c, buf, ct, y + s * os, os, len);
    }
}

/* ------------------------------------------------------------------------------------------ plan and tasks */

#define TASK_ELEMENTS ((csm_idx)1 << 16)   /* work per task: ~20-60 us, so a pool round trip (~10 us) pays */
#define PARALLEL_MIN ((csm_idx)1 << 17)    /* below this many elements the call runs on the calling thread */
#define POOL_MIN_SERIAL ((csm_idx)1 << 24) /* single-threaded calls this big still go through a worker, so the
                                              caller can notice Ctrl-C while waiting */
#define LONG_ROW ((csm_idx)1 << 18)        /* rows this long are split into pieces across threads */
#define ROW_PIECE ((csm_idx)1 << 16)       /* piece of a long row; divides CSM_SUM_CHUNK, so pieces' integer sums
                                              merge into exactly the serial chunk sums */

enum { PATH_ROWS, PATH_LANES, PATH_GENERAL };

struct csm_plan {
    csm_job job;
    const csm_call *c;
    const csm_kernels *kt;
    const csm_type_kernels *k;
    layout L;
    int ct, path, short_rows, failed;
    int fused_lanes;                 /* PATH_LANES: panels go to lanes_softmax */
    size_t es;
    csm_idx n_outer, lanes_per_task, tasks_per_outer, elements;
    /* long rows: one entry per (row, piece) and per row */
    int long_rows;
    csm_idx n_rows, pieces;
    double *piece_max, *row_max, *row_inv;
    csm_fixsum *piece_sum;
};

static void outer_offsets(const layout *L, csm_idx outer, csm_idx *in_off, csm_idx *out_off)
{
    *in_off = *out_off = 0;
    for (int d = L->n_outer - 1; d >= 0; d--) {
        csm_idx i = outer % L->outer_shape[d];
        outer /= L->outer_shape[d];
        *in_off += i * L->in_outer_stride[d];
        *out_off += i * L->out_outer_stride[d];
    }
}

/* One panel of `width` contiguous lanes (x: input, y: output, at the panel's first lane), by the call's op. */
static void run_lanes_panel(csm_plan *p, const char *x, char *y, csm_idx width, lane_state *st)
{
    switch (p->c->op) {
    case CSM_LOG_SOFTMAX:
        log_softmax_lanes(p->k, p->ct, &p->L, x, y, width, st);
        break;
    case CSM_SOFTMAX_BACKWARD:
    case CSM_LOG_SOFTMAX_BACKWARD:
        backward_lanes(p->k, p->ct, p->c->op == CSM_LOG_SOFTMAX_BACKWARD, &p->L, grad_of(p->c, x), x, y, width, st);
        break;
    default:
        softmax_lanes(p->k, p->ct, &p->L, x, y, width, st);
    }
}

/*
 * Short rows on the general path (float16, strided, byte-swapped, misaligned): a block of rows is gathered into one
 * buffer and handed to rows_softmax at once, so they get its interleaved groups instead of one row at a time; a
 * contiguous output of the compute type receives the results directly. Same kernel, so the same bits.
 */
#define GENERAL_BLOCK_BYTES (16 * 1024)   /* on the stack (a heap block is faulted in anew by every task); with
                                             its input and output rows, within L1 */

static void softmax_general_rows(csm_plan *p, const char *x, char *y, csm_idx l0, csm_idx l1)
{
    const layout *L = &p->L;
    const csm_call *c = p->c;
    const csm_idx n = L->axis_len, row_bytes = n * (csm_idx)p->es;
    const csm_idx os = L->out_axis_stride, per_block = GENERAL_BLOCK_BYTES / row_bytes;
    const int direct = c->out_dtype == p->ct && os == (csm_idx)p->es;
    char buf[GENERAL_BLOCK_BYTES] __attribute__((aligned(64)));
    if (p->kt->rows_softmax_f16 && c->in_dtype == CSM_F16 && c->out_dtype == CSM_F16 && !c->in_swapped &&
        c->in_aligned && !c->negate && L->in_axis_stride == 2 && os == 2) {
        /* float16 rows as they are: widened and rounded inside the kernel (n <= 1024 here) */
        p->kt->rows_softmax_f16(x + l0 * L->in_lane_stride, L->in_lane_stride, y + l0 * L->out_lane_stride,
                                L->out_lane_stride, l1 - l0, n, (float *)buf);
        return;
    }
    for (csm_idx l = l0; l < l1; l += per_block) {
        const csm_idx rows = l1 - l < per_block ? l1 - l : per_block;
        for (csm_idx r = 0; r < rows; r++)
            gather(p->kt, c, x + (l + r) * L->in_lane_stride, L->in_axis_stride, n, p->ct, buf + r * row_bytes);
        if (direct) {
            p->k->rows_softmax(buf, row_bytes, y + l * L->out_lane_stride, L->out_lane_stride, rows, n);
        } else {
            p->k->rows_softmax(buf, row_bytes, buf, row_bytes, rows, n);
            for (csm_idx r = 0; r < rows; r++)
                scatter(p->kt, c, buf + r * row_bytes, p->ct, y + (l + r) * L->out_lane_stride, os, n);
        }
    }
}

/* Lanes [l0, l1) of one outer index, by the plan's path. */
static void run_lanes_block(csm_plan *p, csm_idx outer, csm_idx l0, csm_idx l1)
{
    const layout *L = &p->L;
    csm_idx in_off, out_off;
    outer_offsets(L, outer, &in_off, &out_off);
    const char *x = p->c->in + in_off;
    char *y = p->c->out + out_off;
    if (p->path == PATH_LANES && p->fused_lanes) {
        const csm_idx es = (csm_idx)p->es;
        p->k->lanes_softmax(x + l0 * es, L->in_axis_stride, y + l0 * es, L->out_axis_stride, L->axis_len, l1 - l0);
    } else if (p->path == PATH_LANES) {
        lane_state st = {0};
        if (lane_state_alloc(&st, l1 - l0 < LANES_PANEL ? l1 - l0 : LANES_PANEL) != 0) {
            p->failed = 1;
        } else {
            for (csm_idx l = l0; l < l1; l += LANES_PANEL)
                run_lanes_panel(p, x + l * (csm_idx)p->es, y + l * (csm_idx)p->es,
                                l1 - l < LANES_PANEL ? l1 - l : LANES_PANEL, &st);
        }
        lane_state_free(&st);
    } else if (p->c->op >= CSM_SOFTMAX_BACKWARD) {   /* rows or strided rows of y, with g beside them */
        const int log = p->c->op == CSM_LOG_SOFTMAX_BACKWARD;
        for (csm_idx l = l0; l < l1; l++) {
            const char *yl = x + l * L->in_lane_stride;
            if (p->path == PATH_ROWS)
                backward_row(p->k, log, grad_of(p->c, yl), yl, y + l * L->out_lane_stride, L->axis_len);
            else
                backward_general(p->k, p->ct, log, L, grad_of(p->c, yl), yl, y + l * L->out_lane_stride);
        }
    } else if (p->path == PATH_ROWS) {
        csm_idx l = l0;
        if (p->short_rows)
            l += p->k->short_rows(x + l * L->in_lane_stride, L->in_lane_stride, y + l * L->out_lane_stride,
                                  L->out_lane_stride, l1 - l0, L->axis_len);
        if (p->c->op == CSM_SOFTMAX && (size_t)L->axis_len * p->es <= CSM_FUSED_ROW_BYTES)
            p->k->rows_softmax(x + l * L->in_lane_stride, L->in_lane_stride, y + l * L->out_lane_stride,
                               L->out_lane_stride, l1 - l, L->axis_len);
        else
            for (; l < l1; l++) {
                if (p->c->op == CSM_LOG_SOFTMAX)
                    log_softmax_row(p->k, p->ct, x + l * L->in_lane_stride, y + l * L->out_lane_stride,
                                    L->axis_len, p->es);
                else
                    softmax_row(p->k, p->ct, x + l * L->in_lane_stride, y + l * L->out_lane_stride, L->axis_len,
                                p->es);
            }
    } else if (p->c->op == CSM_SOFTMAX && (size_t)L->axis_len * p->es * CSM_ROW_GROUP <= GENERAL_BLOCK_BYTES) {
        softmax_general_rows(p, x, y, l0, l1);
    } else {
        void *row_buffer = NULL;
        if ((size_t)L->axis_len * p->es <= ROW_BUFFER_MAX && !(row_buffer = malloc((size_t)L->axis_len * p->es))) {
            p->failed = 1;
            return;
        }
        for (csm_idx l = l0; l < l1; l++)
            softmax_general(p->kt, p->c, p->ct, L, x + l * L->in_lane_stride, y + l * L->out_lane_stride,
                            row_buffer);
        free(row_buffer);
    }
}

static csm_idx plan_tasks(csm_job *job, int phase)
{
    csm_plan *p = job->ctx;
    (void)phase;
    return p->long_rows ? p->n_rows * p->pieces : p->n_outer * p->tasks_per_outer;
}

static void plan_run(csm_job *job, int phase, csm_idx task)
{
    csm_plan *p = job->ctx;
    if (!p->long_rows) {
        csm_idx outer = task / p->tasks_per_outer, block = task % p->tasks_per_outer;
        csm_idx l0 = block * p->lanes_per_task;
        csm_idx l1 = l0 + p->lanes_per_task < p->L.n_lanes ? l0 + p->lanes_per_task : p->L.n_lanes;
        run_lanes_block(p, outer, l0, l1);
        return;
    }
    /* a piece of a long contiguous row: row = (outer, lane) in order */
    const layout *L = &p->L;
    csm_idx row = task / p->pieces, piece = task % p->pieces;
    csm_idx in_off, out_off;
    outer_offsets(L, row / L->n_lanes, &in_off, &out_off);
    csm_idx lane = row % L->n_lanes, start = piece * ROW_PIECE;
    csm_idx len = L->axis_len - start < ROW_PIECE ? L->axis_len - start : ROW_PIECE;
    const char *x = p->c->in + in_off + lane * L->in_lane_stride + start * (csm_idx)p->es;
    char *y = p->c->out + out_off + lane * L->out_lane_stride + start * (csm_idx)p->es;
    const int store = (size_t)L->axis_len * p->es <= CACHE_BUDGET;     /* as softmax_row decides */
    if (phase == 0) {
        p->piece_max[task] = p->k->row_max(x, len);
    } else if (phase == 1) {
        csm_fixsum s = {0, 0};
        p->k->row_exp_sum(x, store ? y : NULL, len, p->row_max[row], &s);
        p->piece_sum[task] = s;
    } else if (store) {
        p->k->row_scale(y, len, p->row_inv[row]);
    } else {
        p->k->row_exp_scale(x, y, len, p->row_max[row], p->row_inv[row]);
    }
}

/* Between the phases of long rows: merge piece maxima, then piece sums (as softmax_row would have summed them). */
static void plan_between(csm_job *job, int phase)
{
    csm_plan *p = job->ctx;
    if (!p->long_rows) return;
    for (csm_idx r = 0; r < p->n_rows; r++) {
        if (phase == 0) {
            double m = -INFINITY;
            for (csm_idx i = 0; i < p->pieces; i++) {
                double v = p->piece_max[r * p->pieces + i];
                if (v != v || (m == m && v > m)) m = v;
            }
            p->row_max[r] = m;
        } else if (phase == 1) {
            const csm_idx per_chunk = CSM_SUM_CHUNK / ROW_PIECE;
            double total = 0.0;
            for (csm_idx i0 = 0; i0 < p->pieces; i0 += per_chunk) {
                csm_fixsum chunk = {0, 0};
                for (csm_idx i = i0; i < i0 + per_chunk && i < p->pieces; i++) {
                    chunk.hi += p->piece_sum[r * p->pieces + i].hi;
                    chunk.lo += p->piece_sum[r * p->pieces + i].lo;
                }
                total += csm_fixsum_value(chunk);
            }
            p->row_inv[r] = csm_reciprocal(p->ct, p->row_max[r], total);
        }
    }
}

static int plan_release(csm_plan *p)
{
    free(p->piece_max);
    free(p->piece_sum);
    free(p->row_max);
    free(p->row_inv);
    return p->failed ? -1 : 0;
}

/*
 * Whether lanes_softmax suits an axis: it walks a strip of four vectors of lanes (at most 256 bytes, 4 cache lines)
 * per axis step three times, so the strip, input and output, must stay in cache meanwhile. Its steps land in the
 * cache sets that a stride of `stride` bytes reaches: a multiple of 4 KiB sends them all to a few sets. Modelled on
 * a 1 MiB 16-way L2 (1024 sets of 64-byte lines, Zen 4/5): the strips may take three quarters of the ways of the
 * sets they reach. Measured (Zen 5, the three-pass walk -> lanes_softmax): (32, 128, 128) dim 1 (stride 512 bytes,
 * 512 sets) 146-156 -> 114-129 us, (64, 19, 64, 64) dim 1 (16 KiB, 16 sets, 19 steps) 3.3 -> 2.7 ms,
 * (500, 20000) dim 0 7.1 -> 4.4 ms, (64, 3, 1000, 1000) dim 1 282 -> 211 ms; kept off: (8, 128, 32, 32) dim 1
 * (4 KiB, 64 sets, 128 steps) 0.30 -> 0.42 ms, (512, 4096) dim 0 (16 KiB, 16 sets, 512 steps) 0.72 -> 1.14 ms.
 */
static int strips_stay_in_cache(csm_idx axis_len, csm_idx stride)
{
    const csm_idx l2_sets = 1024, line = 64;
    stride = abs_idx(stride);
    if (stride % line != 0) return 1;                  /* odd strides drift across every set */
    csm_idx step = (stride / line) % l2_sets, a = l2_sets;
    while (step) {                                     /* a = gcd(stride in lines, sets) */
        csm_idx t = a % step;
        a = step;
        step = t;
    }
    const csm_idx sets = 4 * (l2_sets / a) < l2_sets ? 4 * (l2_sets / a) : l2_sets;
    return 2 * (4 * axis_len) <= 16 * sets * 3 / 4;    /* input + output lines <= 3/4 of the ways */
}

/* Fills a zeroed plan; -1 when the long-row arrays could not be allocated (nothing is then held). */
static int plan_init(csm_plan *p, const csm_call *c, const csm_kernels *kt, int threads)
{
    p->c = c;
    p->kt = kt;
    layout *L = &p->L;
    decompose(c, L);
    p->ct = c->in_dtype == CSM_F64 || c->out_dtype == CSM_F64 ? CSM_F64 : CSM_F32;
    p->es = dtype_size(p->ct);
    p->k = p->ct == CSM_F32 ? &kt->f32 : &kt->f64;
    p->n_outer = 1;
    for (int d = 0; d < L->n_outer; d++) p->n_outer *= L->outer_shape[d];
    if (L->axis_len == 0 || L->n_lanes == 0) p->n_outer = 0;
    p->elements = p->n_outer * L->n_lanes * L->axis_len;

    const csm_idx es = (csm_idx)p->es;
    const int native = c->in_dtype == p->ct && c->out_dtype == p->ct && !c->in_swapped && c->in_aligned &&
                       !c->negate;
    const int plain_softmax = c->op == CSM_SOFTMAX;   /* log_softmax has no short-row or split-row kernels */
    if (native && L->in_axis_stride == es && L->out_axis_stride == es) p->path = PATH_ROWS;
    else if (native && L->n_lanes > 1 && L->in_lane_stride == es && L->out_lane_stride == es)
        p->path = PATH_LANES;
    else p->path = PATH_GENERAL;
    const csm_idx gather_limit = ((csm_idx)1 << 31) / 16;   /* 32-bit gather offsets */
    p->short_rows = p->path == PATH_ROWS && plain_softmax && L->axis_len <= SHORT_ROW_MAX && L->axis_len <= CSM_SHORT_ROW_MAX &&
                    abs_idx(L->in_lane_stride) < gather_limit && abs_idx(L->out_lane_stride) < gather_limit;

    /* how the work is cut: results never depend on it (every lane is computed alone), only speed does */
    if (threads < 1) threads = 1;
    p->n_rows = p->n_outer * L->n_lanes;
    if (p->path == PATH_ROWS && plain_softmax && threads > 1 && L->axis_len >= LONG_ROW && p->n_rows < 2 * threads) {
        p->long_rows = 1;
        p->pieces = (L->axis_len + ROW_PIECE - 1) / ROW_PIECE;
        p->piece_max = malloc(p->n_rows * p->pieces * sizeof(double));
        p->piece_sum = malloc(p->n_rows * p->pieces * sizeof(csm_fixsum));
        p->row_max = malloc(p->n_rows * sizeof(double));
        p->row_inv = malloc(p->n_rows * sizeof(double));
        if (!p->piece_max || !p->piece_sum || !p->row_max || !p->row_inv) {
            plan_release(p);
            return -1;
        }
    } else if (p->path == PATH_LANES) {
        csm_idx width = LANES_PANEL;
        /* one panel per thread when the outer axes give too few: a panel walks the whole axis, and a narrower one
         * (a shorter contiguous run per axis step) streams worse than it balances better */
        csm_idx wanted = (csm_idx)threads;
        csm_idx panels = p->n_outer * ((L->n_lanes + width - 1) / width);
        if (threads > 1 && panels < wanted && p->n_outer > 0) {
            csm_idx per_outer = (wanted + p->n_outer - 1) / p->n_outer;
            width = (L->n_lanes + per_outer - 1) / per_outer;
            width = (width + 255) / 256 * 256;         /* whole vectors, 1 KB or more per axis step */
            if (width > LANES_PANEL) width = LANES_PANEL;
        }
        p->lanes_per_task = width;
        p->fused_lanes = plain_softmax && L->axis_len <= CSM_LANES_FLUSH &&
                         strips_stay_in_cache(L->axis_len, L->in_axis_stride);
    } else {
        csm_idx per_task = TASK_ELEMENTS / (L->axis_len > 0 ? L->axis_len : 1);
        if (per_task < 1) per_task = 1;
        if (p->short_rows) per_task = (per_task + 15) / 16 * 16;
        p->lanes_per_task = per_task;
    }
    if (!p->long_rows) p->tasks_per_outer = (L->n_lanes + p->lanes_per_task - 1) / p->lanes_per_task;

    p->job.n_phases = p->long_rows ? 3 : 1;
    p->job.n_tasks = plan_tasks;
    p->job.run = plan_run;
    p->job.between = plan_between;
    p->job.ctx = p;
    p->job.threads = threads;
    return 0;
}

csm_plan *csm_plan_new(const csm_call *c, const csm_kernels *kt, int threads)
{
    csm_plan *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    if (plan_init(p, c, kt, threads) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

int csm_softmax_small(const csm_call *c, const csm_kernels *kt)
{
    csm_plan p = {0};                                 /* on the stack: a small call skips the allocation */
    if (plan_init(&p, c, kt, 1) != 0) return -1;
    if (p.elements >= PARALLEL_MIN) {
        plan_release(&p);
        return 1;
    }
    csm_job_run_inline(&p.job);
    return plan_release(&p);
}

int csm_plan_parallel(const csm_plan *p)
{
    if (p->elements < PARALLEL_MIN) return 0;
    return p->job.threads > 1 || p->elements >= POOL_MIN_SERIAL;
}

csm_job *csm_plan_job(csm_plan *p) { return &p->job; }

int csm_plan_free(csm_plan *p)
{
    int result = plan_release(p);
    free(p);
    return result;
}

int csm_softmax(const csm_call *c, const csm_kernels *kt)
{
    csm_plan *p = csm_plan_new(c, kt, 1);
    if (!p) return -1;
    csm_job_run_inline(&p->job);
    return csm_plan_free(p);
}

/* ------------------------------------------------------------------------------------------ float16 */

float csm_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent == 0) {
        float f = (float)mantissa * 0x1p-24f;         /* zero or subnormal: exact */
        return sign ? -f : f;
    } else {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t csm_float_to_half(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t mag = bits & 0x7fffffffu;
    if (mag > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((mag >> 13) & 0x3ffu);   /* NaN stays NaN */
    if (mag >= 0x477ff000u) return sign | 0x7c00u;     /* >= 65520 rounds to infinity */
    if (mag < 0x38800000u) {                           /* below 2^-14: subnormal half, units of 2^-24 */
        float a;
        memcpy(&a, &mag, 4);
        a = a * 0x1p24f;
        a = (a + 8388608.0f) - 8388608.0f;             /* round to nearest even integer */
        return sign | (uint16_t)a;
    }
    /* rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even; a carry bumps the exponent */
    uint32_t r = mag + 0xc8000fffu + ((mag >> 13) & 1u);
    return sign | (uint16_t)(r >> 13);
}
