/*
 * The engine: from a call (softmax.h) to kernel calls. No policy (that is Python's) and no arithmetic on elements
 * (that is the kernels'); this file decides which kernel sees which memory, stages what a kernel cannot read or
 * write in place, cuts the work into bounded tasks and merges the state of pieces.
 *
 *   1. Remove the reduction axis; order the other axes by output stride (the output follows the input's memory
 *      order) and merge neighbours whose strides chain in every operand, so a C- or F-ordered array becomes at most
 *      one "lane" axis and one outer axis. The innermost remaining axis is the lanes; the rest are walked with an
 *      odometer.
 *   2. A path by geometry:
 *      rows:   the input's axis is contiguous (or neither axis is, and the axis is the closer one): each lane is a
 *              row. Rows that fit in cache go whole to the rows kernel (short ones to the short-rows kernel, which
 *              vectorises across rows); longer ones are runs (below).
 *      runs:   a contiguous run of the axis walked in passes by the row passes, in pieces: long rows, and blocks
 *              of p interleaved lanes (p dividing the vector width: (4, 65536, 4) dim 1), whose vector lanes carry
 *              p classes of state instead of partial vectors at every step.
 *      lanes:  the input's lanes are contiguous and the axis is strided: a whole row of lanes at a time in memory
 *              order, with per-lane state (a walk down one lane would touch a new page per element); a short axis
 *              whose strips stay in cache goes to the fused lanes kernel, its state in registers.
 *   3. Operands the path cannot use as they are (float16, a widening or narrowing dtype, byte order, alignment,
 *      strides, negation, a mask) are staged through tiles of the compute type by the kernels' converters: rows
 *      and strips whole, runs and streamed lanes a block at a time. A mask stages masked-out entries as -inf.
 *   4. Axes longer than a piece are cut into pieces, run as phases of the thread pool's job (reduce, merge,
 *      reduce, merge, output): no task holds more than about CSM_PIECE elements, so Ctrl-C is seen within
 *      milliseconds at any thread count. Sums merge as exact integers, so pieces change no bit.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"                    /* (exp's glibc version) */
#include "softmax.h"
#include "threads.h"

#define MAX_DIMS 64                  /* NumPy 2's NPY_MAXDIMS (NumPy 1 allows 32) */

enum { OPD_IN, OPD_GRAD, OPD_MASK, OPD_OUT, OPD_STATE, N_OPD };
enum { PATH_ROWS, PATH_RUNS, PATH_LANES };

/* The functions as the engine walks them: what they read and how many passes over the axis they take (two
 * reductions and an output, or one reduction and an output; logsumexp's output is the rows' state, written once
 * per row). The kernels take the function as a value. */
typedef struct {
    int operands;                    /* 1: in; 2: in (the forward's y) and grad */
    int phases;                      /* passes over the axis */
} csm_function;

static const csm_function functions[CSM_N_FUNCS] = {
    [CSM_SOFTMAX] = {.operands = 1, .phases = 3},
    [CSM_LOG_SOFTMAX] = {.operands = 1, .phases = 3},
    [CSM_SOFTMAX_BACKWARD] = {.operands = 2, .phases = 2},
    [CSM_LOG_SOFTMAX_BACKWARD] = {.operands = 2, .phases = 2},
    [CSM_LOGSUMEXP] = {.operands = 1, .phases = 3},
};

/* log_softmax's reductions: the top two, then the sum below the top with the count of maxima */
static int log_family(int func) { return func == CSM_LOG_SOFTMAX || func == CSM_LOGSUMEXP; }


typedef struct {
    csm_idx axis_len, n_lanes;
    int n_outer;
    csm_idx outer_shape[MAX_DIMS];
    csm_idx axis[N_OPD], lane[N_OPD], outer[N_OPD][MAX_DIMS];   /* byte strides of each operand */
} layout;

static csm_idx abs_idx(csm_idx v) { return v < 0 ? -v : v; }
static csm_idx dtype_size(int dtype) { return dtype == CSM_F16 ? 2 : dtype == CSM_F64 ? 8 : dtype == CSM_BOOL ? 1 : 4; }

static const csm_operand *operand(const csm_call *c, int o)
{
    return o == OPD_IN ? &c->in : o == OPD_GRAD ? &c->grad : o == OPD_MASK ? &c->mask : o == OPD_OUT ? &c->out
                                                                                           : &c->state;
}

static csm_idx stride_of(const csm_call *c, int o, int d)
{
    const csm_operand *p = operand(c, o);
    return p->data ? p->strides[d] : 0;
}

static void decompose(const csm_call *c, layout *L)
{
    csm_idx shape[MAX_DIMS], s[MAX_DIMS][N_OPD];
    int n = 0;
    L->axis_len = c->shape[c->axis];
    for (int o = 0; o < N_OPD; o++) L->axis[o] = stride_of(c, o, c->axis);
    for (int d = 0; d < c->ndim; d++) {
        if (d == c->axis || c->shape[d] == 1) continue;
        const csm_idx out_s = abs_idx(stride_of(c, OPD_OUT, d)), in_s = abs_idx(stride_of(c, OPD_IN, d));
        int at = n;                  /* insertion by descending output stride, then input stride: outermost first */
        while (at > 0 && (abs_idx(s[at - 1][OPD_OUT]) < out_s ||
                          (abs_idx(s[at - 1][OPD_OUT]) == out_s && abs_idx(s[at - 1][OPD_IN]) < in_s))) {
            shape[at] = shape[at - 1];
            memcpy(s[at], s[at - 1], sizeof s[at]);
            at--;
        }
        shape[at] = c->shape[d];
        for (int o = 0; o < N_OPD; o++) s[at][o] = stride_of(c, o, d);
        n++;
    }
    int m = 0;                       /* merge an axis into the one outside it when every operand's strides chain */
    for (int d = 0; d < n; d++) {
        int chain = m > 0;
        for (int o = 0; o < N_OPD && chain; o++) chain = s[m - 1][o] == s[d][o] * shape[d];
        if (chain) {
            shape[m - 1] *= shape[d];
            memcpy(s[m - 1], s[d], sizeof s[d]);
        } else {
            shape[m] = shape[d];
            memcpy(s[m], s[d], sizeof s[d]);
            m++;
        }
    }
    L->n_lanes = 1;
    for (int o = 0; o < N_OPD; o++) L->lane[o] = 0;
    if (m > 0) {
        m--;
        L->n_lanes = shape[m];
        for (int o = 0; o < N_OPD; o++) L->lane[o] = s[m][o];
    }
    L->n_outer = m;
    for (int d = 0; d < m; d++) {
        L->outer_shape[d] = shape[d];
        for (int o = 0; o < N_OPD; o++) L->outer[o][d] = s[d][o];
    }
}

/* ------------------------------------------------------------------------------------------ merged state */

typedef __int128 wide_t;             /* exact sums of any number of pieces */

/* The value of a fixed-point sum, as every kernel computes it (kernels.inc's fix_value) */
static double sum_value(wide_t hi, wide_t lo)
{
    const double unit = 1.0 / 1099511627776.0;       /* 2^-40 */
    return (double)hi * unit + (double)lo * (unit * unit);
}

static double reciprocal(int ct, double m, double total)
{
    if (!isfinite(m)) return NAN;
    return ct == CSM_F32 ? (double)(float)(1.0 / total) : 1.0 / total;
}

static double load_t(int ct, const void *a, csm_idx i)
{
    return ct == CSM_F32 ? (double)((const float *)a)[i] : ((const double *)a)[i];
}
static void store_t(int ct, void *a, csm_idx i, double v)
{
    if (ct == CSM_F32) ((float *)a)[i] = (float)v;
    else ((double *)a)[i] = v;
}

/* Per-lane state of one piece: what the kernels' first and second passes fill */
typedef struct {
    void *m, *m2;                    /* compute type */
    int64_t *hi, *lo, *count;
    double *dot;
    uint64_t *raw_hi, *raw_lo;       /* the lanes passes' running parts, flushed to hi, lo, count */
    int64_t *raw_count;
} slot;

/* The merged state of a run or panel as the later passes read it: one value per lane, of the compute type */
typedef struct {
    void *m;                         /* the maximum */
    void *m2;                        /* log_softmax: the largest entry below it (-inf: none) */
    void *m2e;                       /* log_softmax: m2, or m when there is none (the terms below m are then 0) */
    void *a;                         /* softmax: 1/S; log_softmax: log S (high part); backward: the sum */
    void *b;                         /* log_softmax: log S (low part) */
} patterns;

/* a slot or a patterns block: 8 bytes per lane per field, lanes rounded up to whole vectors of any kernel set */
#define SLOT_LANES(lanes) (((size_t)(lanes) + 15) / 16 * 16)
#define SLOT_BYTES(lanes) (9 * 8 * SLOT_LANES(lanes))

static slot slot_at(char *block, csm_idx lanes)
{
    const size_t each = SLOT_LANES(lanes) * 8;
    slot s = {block, block + each, (int64_t *)(block + 2 * each), (int64_t *)(block + 3 * each),
              (int64_t *)(block + 4 * each), (double *)(block + 5 * each), (uint64_t *)(block + 6 * each),
              (uint64_t *)(block + 7 * each), (int64_t *)(block + 8 * each)};
    return s;
}

static patterns patterns_at(char *block, csm_idx lanes)
{
    const size_t each = SLOT_LANES(lanes) * 8;
    patterns t = {block, block + each, block + 2 * each, block + 3 * each, block + 4 * each};
    return t;
}

/* Clears what `phase` of `func` fills in a slot: the maxima (to -inf), or the sums and counts, or the dot */
static void slot_reset(slot *s, int func, int phase, int ct, csm_idx lanes)
{
    if (func == CSM_SOFTMAX_BACKWARD || func == CSM_LOG_SOFTMAX_BACKWARD) {
        memset(s->dot, 0, lanes * 8);
    } else if (phase == 0) {
        if (ct == CSM_F32)
            for (csm_idx l = 0; l < lanes; l++) ((float *)s->m)[l] = ((float *)s->m2)[l] = -INFINITY;
        else
            for (csm_idx l = 0; l < lanes; l++) ((double *)s->m)[l] = ((double *)s->m2)[l] = -INFINITY;
    } else {
        memset(s->hi, 0, lanes * 8);
        memset(s->lo, 0, lanes * 8);
        memset(s->raw_hi, 0, SLOT_LANES(lanes) * 8);
        memset(s->raw_lo, 0, SLOT_LANES(lanes) * 8);
        if (log_family(func)) {
            memset(s->count, 0, lanes * 8);
            memset(s->raw_count, 0, SLOT_LANES(lanes) * 8);
        }
    }
}

/* The merged state of one row, lane or class */
typedef struct {
    double m, m2, dot;
    wide_t hi, lo;
    int64_t count;
} merged;

static void merge_first(int func, int ct, merged *to, const slot *from, csm_idx l)
{
    if (func == CSM_SOFTMAX_BACKWARD || func == CSM_LOG_SOFTMAX_BACKWARD) {
        to->dot += from->dot[l];
        return;
    }
    const double m = load_t(ct, from->m, l);
    if (func == CSM_SOFTMAX) {
        if (m != m || (to->m == to->m && m > to->m)) to->m = m;
        return;
    }
    /* the top two of {to->m, to->m2, m, m2}; a NaN takes the top for good */
    const double m2 = load_t(ct, from->m2, l);
    if (to->m != to->m) return;
    if (m != m) {
        to->m = m;
        return;
    }
    const double top = m > to->m ? m : to->m, cand[4] = {to->m, to->m2, m, m2};
    double second = -INFINITY;
    for (int i = 0; i < 4; i++)
        if (cand[i] < top && cand[i] > second) second = cand[i];
    to->m = top;
    to->m2 = second;
}

static void merge_second(merged *to, const slot *from, csm_idx l)
{
    to->hi += from->hi[l];
    to->lo += from->lo[l];
    to->count += from->count[l];
}

/* Where the pieces of a unit keep their slots: in the plan's state (multi-phase), or one slot of a single task */
typedef struct {
    const struct csm_plan *plan;
    csm_idx unit, pieces;
    const slot *single;
} slot_list;

static slot piece_slot(const slot_list *list, csm_idx i);

/*
 * Merges `n` values (lane or class index q of n) after `phase` from a unit's piece slots into its patterns: lanes
 * j of a slot with j % n == q belong to q, lanes of `width` per slot (a run's classes: n classes, width the vector
 * width; a panel: n lanes, width n). Then the patterns for the next pass: m, m2, m2e after the first reduction (or
 * the backward sum), 1/S or log S (all n at once, vectorised) after the second.
 */
static void merge_state(const struct csm_plan *p, int phase, const slot_list *list, csm_idx n, csm_idx width,
                        csm_idx pattern_lanes, patterns *pt);

/* ------------------------------------------------------------------------------------------ the plan */

struct csm_plan {
    csm_job job;
    const csm_call *c;
    const csm_kernels *kt;
    const csm_type_kernels *k;
    const csm_function *f;
    int ct, path, width, round_to;
    csm_idx es;
    int direct[N_OPD];               /* the path's kernels read or write the operand where it is */
    int fused, short_rows;
    int half;                        /* float16 operands the kernels convert themselves (see plan_init) */
    int mask_direct;                 /* the rows kernel or the strips read the where= mask themselves (plan_init) */
    int store_e;                     /* runs and streamed lanes keep exp in the output for the last pass */
    int apply;                       /* softmax or log_softmax against a given state: the output pass alone */
    csm_idx n_outer, elements;
    csm_idx per_task, tasks_per_outer;   /* rows and lanes: lanes per task (lanes: the panel), tasks per outer */
    csm_idx classes, run_len, units;     /* runs: classes per run, its length, how many runs */
    csm_idx piece_len, pieces;           /* runs and lanes: pieces along the axis (lanes: in steps) */
    char *state;                         /* multi-phase: per unit, a slot per piece and then its patterns */
    csm_idx slot_lanes;
    int failed;
    layout L;                        /* last: a plan is zeroed up to here (decompose fills what it uses) */
};

static slot piece_slot(const slot_list *list, csm_idx i)
{
    if (list->single) return *list->single;
    const csm_plan *p = list->plan;
    return slot_at(p->state + (list->unit * (p->pieces + 1) + i) * SLOT_BYTES(p->slot_lanes), p->slot_lanes);
}

static patterns unit_patterns(const csm_plan *p, csm_idx unit)
{
    return patterns_at(p->state + (unit * (p->pieces + 1) + p->pieces) * SLOT_BYTES(p->slot_lanes), p->slot_lanes);
}

static void merge_state(const csm_plan *p, int phase, const slot_list *list, csm_idx n, csm_idx width,
                        csm_idx pattern_lanes, patterns *pt)
{
    const int ct = p->ct, func = p->c->func;
    double *total = NULL;
    int64_t *count = NULL;
    char *top = NULL, *second = NULL, *lh = NULL, *ll = NULL;
    if (phase == 1 && log_family(func)) {
        char *block = malloc((size_t)n * 8 * 6);
        if (!block) {
            ((csm_plan *)p)->failed = 1;
            return;
        }
        total = (double *)block;
        count = (int64_t *)(block + n * 8);
        top = block + 2 * n * 8, second = block + 3 * n * 8, lh = block + 4 * n * 8, ll = block + 5 * n * 8;
    }
    for (csm_idx q = 0; q < n; q++) {
        merged t;
        memset(&t, 0, sizeof t);
        t.m = t.m2 = -INFINITY;
        for (csm_idx i = 0; i < list->pieces; i++) {
            slot s = piece_slot(list, i);
            for (csm_idx j = q; j < width; j += n) {
                if (phase == 0) merge_first(func, ct, &t, &s, j);
                else merge_second(&t, &s, j);
            }
        }
        if (phase == 0 && p->f->operands == 2) {
            store_t(ct, pt->a, q, t.dot);
        } else if (phase == 0) {
            store_t(ct, pt->m, q, t.m);
            store_t(ct, pt->m2, q, t.m2);
            store_t(ct, pt->m2e, q, t.m2 > -INFINITY ? t.m2 : t.m);
        } else if (func == CSM_SOFTMAX) {
            store_t(ct, pt->a, q, reciprocal(ct, load_t(ct, pt->m, q), sum_value(t.hi, t.lo)));
        } else {
            total[q] = sum_value(t.hi, t.lo);
            count[q] = t.count;
            store_t(ct, top, q, load_t(ct, pt->m, q));
            store_t(ct, second, q, load_t(ct, pt->m2, q));
        }
    }
    if (total && func == CSM_LOGSUMEXP) {
        /* logsumexp: log S in float64 whatever the compute type, into `a` as doubles (store_states, kernels.inc) */
        for (csm_idx q = n - 1; q >= 0; q--) {        /* (widened in place, from the top down) */
            ((double *)top)[q] = load_t(ct, top, q);
            ((double *)second)[q] = load_t(ct, second, q);
            total[q] = csm_state_total(ct == CSM_F32, total[q]);
        }
        p->kt->f64.log_sums(top, second, total, count, pt->a, ll, n);
        free(total);
        return;
    }
    if (total) {
        p->k->log_sums(top, second, total, count, lh, ll, n);
        for (csm_idx q = 0; q < n; q++) {
            store_t(ct, pt->a, q, load_t(ct, lh, q));
            store_t(ct, pt->b, q, load_t(ct, ll, q));
        }
        free(total);
    }
    /* a run's classes repeat across the vector's lanes */
    void *fields[5] = {pt->m, pt->m2, pt->m2e, pt->a, pt->b};
    for (int f = 0; f < 5; f++)
        for (csm_idx j = n; j < pattern_lanes; j++) store_t(ct, fields[f], j, load_t(ct, fields[f], j % n));
}

/* logsumexp's result: n rows' state (m, log S) from their patterns (log S as doubles, see merge_state), rows
 * `stride` bytes apart from `at` */
static void store_state(const csm_plan *p, char *at, csm_idx stride, csm_idx n, const patterns *pt)
{
    for (csm_idx q = 0; q < n; q++) {
        double *st = (double *)(at + q * stride);
        st[0] = load_t(p->ct, pt->m, q);
        st[1] = ((const double *)pt->a)[q];
    }
}

/* A given state as the output pass's patterns: m, and 1/S = exp(-log S) (softmax) or log S split into two parts
 * of the compute type (log_softmax); NaN where m is not finite, as the functions' own merge gives. Classes repeat
 * across `pattern_lanes` (see merge_state). */
static void load_state(const csm_plan *p, const char *at, csm_idx stride, csm_idx n, csm_idx pattern_lanes,
                       patterns *pt)
{
    const int ct = p->ct;
    for (csm_idx j = 0; j < pattern_lanes; j++) {
        const double *st = (const double *)(at + (j % n) * stride), m = st[0], l = st[1];
        const double hi = isfinite(m) ? (ct == CSM_F32 ? (double)(float)l : l) : NAN;
        store_t(ct, pt->m, j, m);
        if (p->c->func == CSM_SOFTMAX) {
            store_t(ct, pt->a, j, isfinite(m) ? exp(-l) : NAN);
        } else {
            store_t(ct, pt->a, j, hi);
            store_t(ct, pt->b, j, isfinite(m) ? l - hi : NAN);
        }
    }
}

static void outer_offsets(const layout *L, csm_idx outer, csm_idx off[N_OPD])
{
    for (int o = 0; o < N_OPD; o++) off[o] = 0;
    for (int d = L->n_outer - 1; d >= 0; d--) {
        csm_idx i = outer % L->outer_shape[d];
        outer /= L->outer_shape[d];
        for (int o = 0; o < N_OPD; o++) off[o] += i * L->outer[o][d];
    }
}

/* An operand's line through `off`, `stride` bytes between elements, as the converters see it */
static csm_strided line(const csm_call *c, int o, csm_idx off, csm_idx stride)
{
    const csm_operand *p = operand(c, o);
    csm_strided s = {p->data + off, stride, p->dtype, p->swapped, p->aligned};
    return s;
}

static void stage_line(const csm_plan *p, int o, csm_idx off, csm_idx stride, csm_idx n, csm_idx mask_off,
                       csm_idx mask_stride, void *tile)
{
    const csm_call *c = p->c;
    csm_strided src = line(c, o, off, stride), mask = line(c, OPD_MASK, mask_off, mask_stride);
    p->kt->stage_in(&src, p->ct, o == OPD_IN ? p->round_to : -1, o == OPD_IN && c->negate,
                    o == OPD_IN && c->mask.data ? &mask : NULL, n, tile);
}

/* Masked entries give 0 (log_softmax: -inf) in rows that are otherwise NaN (their maximum is NaN or infinite, or
 * every entry is masked or -inf: the kernels write those rows as NaN throughout). A row is such a row exactly when
 * its first output is NaN: every other row's outputs are numbers. */
static int out_is_nan(const csm_call *c, const char *q, csm_idx stride, csm_idx n)   /* any of n, stride apart */
{
    int nan = 0;                                       /* (no early exit: a scan without branches) */
    if (c->out.dtype == CSM_F16)
        for (csm_idx i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, q + i * stride, 2);
            nan |= (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        }
    else if (c->out.dtype == CSM_F32)
        for (csm_idx i = 0; i < n; i++) {
            float v;
            memcpy(&v, q + i * stride, 4);
            nan |= v != v;
        }
    else
        for (csm_idx i = 0; i < n; i++) {
            double v;
            memcpy(&v, q + i * stride, 8);
            nan |= v != v;
        }
    return nan;
}

static void mask_fixup(const csm_plan *p, csm_idx out_off, csm_idx out_stride, csm_idx mask_off, csm_idx mask_stride,
                       csm_idx n)
{
    const csm_call *c = p->c;
    /* (logsumexp's result is the rows' state: no entry of its own) */
    if (!c->mask.data || c->func == CSM_LOGSUMEXP || n == 0) return;
    char *q = (char *)c->out.data + out_off;
    if (!out_is_nan(c, q, 0, 1)) return;
    const uint8_t *mk = (const uint8_t *)c->mask.data + mask_off;
    const int log = c->func == CSM_LOG_SOFTMAX;
    const uint16_t h = log ? 0xfc00 : 0;
    const float f = log ? -INFINITY : 0.0f;
    const double d = log ? -INFINITY : 0.0;
    for (csm_idx i = 0; i < n; i++) {
        if (mk[i * mask_stride]) continue;
        char *at = q + i * out_stride;
        if (c->out.dtype == CSM_F16) memcpy(at, &h, 2);
        else if (c->out.dtype == CSM_F32) memcpy(at, &f, 4);
        else memcpy(at, &d, 8);
    }
}

/* mask_fixup for lanes (rows) [l0, l1) of one outer index; first a scan of their first outputs, as most have none */
static void lanes_fixup(const csm_plan *p, const csm_idx off[N_OPD], csm_idx l0, csm_idx l1)
{
    const layout *L = &p->L;
    const csm_call *c = p->c;
    if (!c->mask.data || c->func == CSM_LOGSUMEXP || L->axis_len == 0 ||
        !out_is_nan(c, (const char *)c->out.data + off[OPD_OUT] + l0 * L->lane[OPD_OUT], L->lane[OPD_OUT], l1 - l0))
        return;
    for (csm_idx l = l0; l < l1; l++)
        mask_fixup(p, off[OPD_OUT] + l * L->lane[OPD_OUT], L->axis[OPD_OUT], off[OPD_MASK] + l * L->lane[OPD_MASK],
                   L->axis[OPD_MASK], L->axis_len);
}

/* ------------------------------------------------------------------------------------------ rows */

/* A block of rows x cols of operand o at off (rows rs bytes apart, cols cs apart; the mask's at moff, mrs, mcs) into
 * a tile of the compute type, rows ts bytes apart: one converter call when the block lies packed in the operand (and
 * the tile), else a call per row */
static void stage_2d(const csm_plan *p, int o, csm_idx off, csm_idx rs, csm_idx cs, csm_idx moff, csm_idx mrs,
                     csm_idx mcs, csm_idx rows, csm_idx cols, char *tile, csm_idx ts)
{
    const int masked = o == OPD_IN && p->c->mask.data;
    if (ts == cols * p->es && rs == cols * cs && (!masked || mrs == cols * mcs)) {
        stage_line(p, o, off, cs, rows * cols, moff, mcs, tile);
        return;
    }
    for (csm_idx r = 0; r < rows; r++) stage_line(p, o, off + r * rs, cs, cols, moff + r * mrs, mcs, tile + r * ts);
}

/* The reverse, from a tile to the output */
static void unstage_2d(const csm_plan *p, csm_idx off, csm_idx rs, csm_idx cs, csm_idx rows, csm_idx cols,
                       const char *tile, csm_idx ts)
{
    if (ts == cols * p->es && rs == cols * cs) {
        csm_strided dst = line(p->c, OPD_OUT, off, cs);
        p->kt->stage_out(tile, p->ct, &dst, rows * cols);
        return;
    }
    for (csm_idx r = 0; r < rows; r++) {
        csm_strided dst = line(p->c, OPD_OUT, off + r * rs, cs);
        p->kt->stage_out(tile + r * ts, p->ct, &dst, cols);
    }
}

/* Rows [l, l + rows) of operand o (and the mask, for the input) into a tile, rows ts bytes apart */
static void stage_rows(const csm_plan *p, int o, const csm_idx off[N_OPD], csm_idx l, csm_idx rows, char *tile,
                       csm_idx ts)
{
    const layout *L = &p->L;
    stage_2d(p, o, off[o] + l * L->lane[o], L->lane[o], L->axis[o], off[OPD_MASK] + l * L->lane[OPD_MASK],
             L->lane[OPD_MASK], L->axis[OPD_MASK], rows, L->axis_len, tile, ts);
}

static void unstage_rows(const csm_plan *p, const csm_idx off[N_OPD], csm_idx l, csm_idx rows, const char *tile,
                         csm_idx ts)
{
    const layout *L = &p->L;
    unstage_2d(p, off[OPD_OUT] + l * L->lane[OPD_OUT], L->lane[OPD_OUT], L->axis[OPD_OUT], rows, L->axis_len, tile,
               ts);
}

/* Steps [s, s + steps) of lanes [l, l + lanes) of operand o into a tile, steps ts bytes apart */
static void stage_steps(const csm_plan *p, int o, const csm_idx off[N_OPD], csm_idx s, csm_idx steps, csm_idx l,
                        csm_idx lanes, char *tile, csm_idx ts)
{
    const layout *L = &p->L;
    stage_2d(p, o, off[o] + s * L->axis[o] + l * L->lane[o], L->axis[o], L->lane[o],
             off[OPD_MASK] + s * L->axis[OPD_MASK] + l * L->lane[OPD_MASK], L->axis[OPD_MASK], L->lane[OPD_MASK],
             steps, lanes, tile, ts);
}

static void unstage_steps(const csm_plan *p, const csm_idx off[N_OPD], csm_idx s, csm_idx steps, csm_idx l,
                          csm_idx lanes, const char *tile, csm_idx ts)
{
    const layout *L = &p->L;
    unstage_2d(p, off[OPD_OUT] + s * L->axis[OPD_OUT] + l * L->lane[OPD_OUT], L->axis[OPD_OUT], L->lane[OPD_OUT],
               steps, lanes, tile, ts);
}

/* Rows [l0, l1) of one outer index, whole: straight to the kernels when every operand is usable where it is, else a
 * block of rows at a time through tiles (or staged into the output itself and computed there in place). */
static void run_rows(csm_plan *p, csm_idx outer, csm_idx l0, csm_idx l1)
{
    const layout *L = &p->L;
    const csm_call *c = p->c;
    const csm_idx n = L->axis_len, es = p->es, row_bytes = n * es;
    csm_idx off[N_OPD];
    outer_offsets(L, outer, off);
    const int backward = p->f->operands == 2;
    /* where the kernels put their results: the output, or logsumexp's state */
    const int res = c->func == CSM_LOGSUMEXP ? OPD_STATE : OPD_OUT;
    char *const res_at = (char *)operand(c, res)->data + off[res];
    const csm_idx res_lane = L->lane[res];
    csm_fused a = {.func = c->func, .n = n, .state_log_sums = p->kt->f64.log_sums};
    if (p->half) {
        a.x = c->in.data + off[OPD_IN] + l0 * L->lane[OPD_IN];
        a.xs = L->lane[OPD_IN];
        a.g = backward ? c->grad.data + off[OPD_GRAD] + l0 * L->lane[OPD_GRAD] : NULL;
        a.gs = L->lane[OPD_GRAD];
        a.y = res_at + l0 * res_lane;
        a.ys = res_lane;
        a.n_rows = l1 - l0;
        a.half = 1;
        a.negate = c->negate;
        if (p->mask_direct) {
            a.mask = (const uint8_t *)c->mask.data + off[OPD_MASK] + l0 * L->lane[OPD_MASK];
            a.ms = L->lane[OPD_MASK];
        }
        if (!backward && !(a.scratch = csm_scratch(0, (size_t)CSM_ROW_GROUP * n * sizeof(float)))) {
            p->failed = 1;
            return;
        }
        p->k->rows(&a);
        return;
    }
    if (p->direct[OPD_IN] && p->direct[OPD_OUT] && (!backward || p->direct[OPD_GRAD])) {
        a.x = c->in.data + off[OPD_IN] + l0 * L->lane[OPD_IN];
        a.xs = L->lane[OPD_IN];
        a.g = backward ? c->grad.data + off[OPD_GRAD] + l0 * L->lane[OPD_GRAD] : NULL;
        a.gs = L->lane[OPD_GRAD];
        a.y = res_at + l0 * res_lane;
        a.ys = res_lane;
        a.n_rows = l1 - l0;
        a.negate = c->negate;
        if (p->mask_direct) {
            a.mask = (const uint8_t *)c->mask.data + off[OPD_MASK] + l0 * L->lane[OPD_MASK];
            a.ms = L->lane[OPD_MASK];
            p->k->rows(&a);             /* (fully masked rows included) */
            return;
        }
        const csm_idx done = p->short_rows ? p->k->short_rows(&a) : 0;
        a.x += done * a.xs;
        a.g = a.g ? a.g + done * a.gs : NULL;
        a.y += done * a.ys;
        a.n_rows -= done;
        if (a.n_rows > 0) p->k->rows(&a);
        return;
    }
    /* through tiles: rows of the compute type packed one after another (x, and g for the backward functions); the
     * result in place over x's tile, or x staged straight into the output when that is usable where it is */
    csm_idx block = CSM_TILE_BYTES / row_bytes > CSM_ROW_GROUP ? CSM_TILE_BYTES / row_bytes : CSM_ROW_GROUP;
    if (p->short_rows) {
        const csm_idx reach = (CSM_SHORT_REACH + row_bytes - 1) / row_bytes;
        if (block >= CSM_SHORT_GROUP_MAX + reach)
            block = (block - reach) / CSM_SHORT_GROUP_MAX * CSM_SHORT_GROUP_MAX + reach;
    }
    const int into_out = p->direct[OPD_OUT] && !backward && res == OPD_OUT;
    char *tile = NULL;
    if (!into_out) {
        tile = csm_scratch(0, (size_t)block * row_bytes * (backward ? 2 : 1));
        if (!tile) {
            p->failed = 1;
            return;
        }
    }
    for (csm_idx l = l0; l < l1; l += block) {
        const csm_idx rows = l1 - l < block ? l1 - l : block;
        char *x = into_out ? (char *)c->out.data + off[OPD_OUT] + l * L->lane[OPD_OUT] : tile;
        const csm_idx xs = into_out ? L->lane[OPD_OUT] : row_bytes;
        stage_rows(p, OPD_IN, off, l, rows, x, xs);
        a.x = x;
        a.xs = xs;
        if (backward) {
            char *g = tile + block * row_bytes;
            stage_rows(p, OPD_GRAD, off, l, rows, g, row_bytes);
            a.g = g;
            a.gs = row_bytes;
        }
        const int out_here = p->direct[OPD_OUT];
        a.y = out_here ? res_at + l * res_lane : x;
        a.ys = out_here ? res_lane : xs;
        a.n_rows = rows;
        csm_fused rest = a;
        const csm_idx done = p->short_rows ? p->k->short_rows(&a) : 0;
        rest.x += done * a.xs;
        rest.g = a.g ? a.g + done * a.gs : NULL;
        rest.y += done * a.ys;
        rest.n_rows -= done;
        if (rest.n_rows > 0) p->k->rows(&rest);
        if (!out_here) unstage_rows(p, off, l, rows, x, xs);
        if (res == OPD_OUT) lanes_fixup(p, off, l, l + rows);
    }
}

/* ------------------------------------------------------------------------------------------ runs */

/* Where unit u's run starts in each operand, and the stride of its elements */
static void run_offsets(const csm_plan *p, csm_idx u, csm_idx off[N_OPD], csm_idx step[N_OPD])
{
    const layout *L = &p->L;
    if (p->classes == 1) {                             /* a row: (outer, lane) */
        outer_offsets(L, u / L->n_lanes, off);
        for (int o = 0; o < N_OPD; o++) {
            off[o] += (u % L->n_lanes) * L->lane[o];
            step[o] = L->axis[o];
        }
    } else {                                           /* interleaved lanes: one outer index */
        outer_offsets(L, u, off);
        for (int o = 0; o < N_OPD; o++) step[o] = L->lane[o];
    }
}

/* How the forward row and lanes passes read the input: negated unless staging negated it, float16 when the path
 * takes it as it is */
static int read_in(const csm_plan *p)
{
    return (p->c->negate && p->direct[OPD_IN] ? CSM_IN_NEGATE : 0) |
           (p->half && !CSM_IS_BACKWARD(p->c->func) ? CSM_IN_HALF : 0);
}

/* One pass over [i0, i0 + len) of run u: `phase` 0 (the first reduction, into s), 1 (softmax's and log_softmax's
 * sums, into s) or the last (the output), the later ones with the merged patterns pt. */
static void run_block(csm_plan *p, csm_idx u, csm_idx i0, csm_idx len, int phase, slot *s, const patterns *pt,
                      char *tile)
{
    const csm_call *c = p->c;
    const csm_type_kernels *k = p->k;
    const csm_idx es = p->es;
    csm_idx off[N_OPD], step[N_OPD];
    run_offsets(p, u, off, step);
    const int last = phase == p->f->phases - 1, backward = p->f->operands == 2;
    const void *x = c->in.data + off[OPD_IN] + i0 * step[OPD_IN];
    const void *g = backward ? c->grad.data + off[OPD_GRAD] + i0 * step[OPD_GRAD] : NULL;
    char *y = (char *)c->out.data + off[OPD_OUT] + i0 * step[OPD_OUT];
    const int staged_out = last && !p->direct[OPD_OUT];
    const int need_x = !(last && c->func == CSM_SOFTMAX && p->store_e);
    const int in = read_in(p);
    if (need_x && !p->direct[OPD_IN]) {
        stage_line(p, OPD_IN, off[OPD_IN] + i0 * step[OPD_IN], step[OPD_IN], len,
                   off[OPD_MASK] + i0 * step[OPD_MASK], step[OPD_MASK], tile);
        x = tile;
    }
    if (backward && !p->direct[OPD_GRAD]) {
        stage_line(p, OPD_GRAD, off[OPD_GRAD] + i0 * step[OPD_GRAD], step[OPD_GRAD], len, 0, 0, tile + len * es);
        g = tile + len * es;
    }
    /* a staged output is computed in place over a tile (x's, or the other half), then converted out */
    char *dest = staged_out ? (x == (const void *)tile ? tile : tile + len * es) : y;
    if (phase == 0) {
        if (c->func == CSM_SOFTMAX) k->row_max(x, len, s->m, NULL, in);
        else if (log_family(c->func)) k->row_top2(x, len, s->m, s->m2, in);
        else k->row_dot(g, c->func == CSM_SOFTMAX_BACKWARD ? x : NULL, len, s->dot, p->half);
    } else if (!last) {
        if (c->func == CSM_SOFTMAX) k->row_exp_sum(x, p->store_e ? y : NULL, len, pt->m, s->hi, s->lo, in);
        else k->row_log_sum(x, len, pt->m, pt->m2e, s->hi, s->lo, s->count, in);
    }
    if (last) {
        if (c->func == CSM_SOFTMAX && p->store_e) k->row_scale(y, len, pt->a);
        else if (c->func == CSM_SOFTMAX) k->row_exp_scale(x, dest, len, pt->m, pt->a, in);
        else if (c->func == CSM_LOG_SOFTMAX) k->row_log_out(x, dest, len, pt->m, pt->a, pt->b, in);
        else k->row_grad_out(c->func, g, x, dest, len, pt->a, p->half);
        if (staged_out) {
            csm_strided dst = line(c, OPD_OUT, off[OPD_OUT] + i0 * step[OPD_OUT], step[OPD_OUT]);
            p->kt->stage_out(dest, p->ct, &dst, len);
        }
    }
}

/* A piece of a run in one pass: whole when every operand is used where it is, else a tile's worth at a time
 * (blocks of whole vectors: each lane keeps its class) */
static void run_piece(csm_plan *p, csm_idx u, csm_idx i0, csm_idx len, int phase, slot *s, const patterns *pt)
{
    const int last = phase == p->f->phases - 1, backward = p->f->operands == 2;
    if (last && p->c->func == CSM_LOGSUMEXP) {         /* the state, by the run's first piece */
        if (i0 == 0) {
            csm_idx off[N_OPD], step[N_OPD];
            run_offsets(p, u, off, step);
            store_state(p, (char *)p->c->state.data + off[OPD_STATE], step[OPD_STATE], p->classes, pt);
        }
        return;
    }
    const int need_x = !(last && p->c->func == CSM_SOFTMAX && p->store_e);
    if (!((need_x && !p->direct[OPD_IN]) || (backward && !p->direct[OPD_GRAD]) || (last && !p->direct[OPD_OUT]))) {
        run_block(p, u, i0, len, phase, s, pt, NULL);
        return;
    }
    const csm_idx block = CSM_TILE_BYTES / p->es / p->width * p->width;
    char *tile = csm_scratch(0, (size_t)block * p->es * 2);
    if (!tile) {
        p->failed = 1;
        return;
    }
    for (csm_idx j = 0; j < len; j += block)
        run_block(p, u, i0 + j, len - j < block ? len - j : block, phase, s, pt, tile);
}

static void run_fixup(const csm_plan *p, csm_idx u)
{
    csm_idx off[N_OPD], step[N_OPD];
    run_offsets(p, u, off, step);
    for (csm_idx q = 0; q < p->classes; q++)
        mask_fixup(p, off[OPD_OUT] + q * step[OPD_OUT], step[OPD_OUT] * p->classes,
                   off[OPD_MASK] + q * step[OPD_MASK], step[OPD_MASK] * p->classes, p->run_len / p->classes);
}

/* A whole run of one piece in one task, its state on the stack */
static void run_whole(csm_plan *p, csm_idx u)
{
    char a[SLOT_BYTES(16)], b[SLOT_BYTES(16)];
    slot s = slot_at(a, p->width);
    patterns pt = patterns_at(b, p->width);
    slot_list list = {p, u, 1, &s};
    if (p->apply) {
        csm_idx off[N_OPD], step[N_OPD];
        run_offsets(p, u, off, step);
        load_state(p, p->c->state.data + off[OPD_STATE], step[OPD_STATE], p->classes, p->width, &pt);
        run_piece(p, u, 0, p->run_len, p->f->phases - 1, &s, &pt);
        return;
    }
    for (int phase = 0; phase < p->f->phases; phase++) {
        const int last = phase == p->f->phases - 1;
        if (!last) slot_reset(&s, p->c->func, phase, p->ct, p->width);
        run_piece(p, u, 0, p->run_len, phase, &s, &pt);
        if (!last) merge_state(p, phase, &list, p->classes, p->width, p->width, &pt);
    }
    if (p->c->mask.data) run_fixup(p, u);
}

/* ------------------------------------------------------------------------------------------ lanes */

/* Whether the fused lanes kernel suits an axis: it walks a strip of four vectors of lanes (at most 256 bytes, 4
 * cache lines) per axis step three times, so the strip, input and output, must stay in cache meanwhile. Its steps
 * land in the cache sets that a stride reaches: a multiple of 4 KiB sends them all to a few sets. Modelled on a
 * 1 MiB 16-way L2 (1024 sets of 64-byte lines): the strips may take three quarters of the ways of the sets they
 * reach (tuned, docs/performance.md). */
static int strips_stay_in_cache(csm_idx axis_len, csm_idx stride)
{
    const csm_idx l2_sets = 1024, line_bytes = 64;
    stride = abs_idx(stride);
    if (stride % line_bytes != 0) return 1;            /* odd strides drift across every set */
    csm_idx step = (stride / line_bytes) % l2_sets, a = l2_sets;
    while (step) {                                     /* a = gcd(stride in lines, sets) */
        csm_idx t = a % step;
        a = step;
        step = t;
    }
    const csm_idx sets = 4 * (l2_sets / a) < l2_sets ? 4 * (l2_sets / a) : l2_sets;
    return 2 * (4 * axis_len) <= 16 * sets * 3 / 4;    /* input + output lines <= 3/4 of the ways */
}

/* Lanes [l0, l1) of one outer index down the whole axis with the fused kernel, straight or through a tile */
static void run_lanes_fused(csm_plan *p, const csm_idx off[N_OPD], csm_idx l0, csm_idx l1)
{
    const layout *L = &p->L;
    const csm_call *c = p->c;
    const csm_idx n = L->axis_len, es = p->es;
    csm_fused a = {.func = c->func, .n = n, .half = p->half};
    if (p->half || (p->direct[OPD_IN] && p->direct[OPD_OUT])) {    /* backward: always half, see plan_init */
        if (p->mask_direct) {
            a.mask = (const uint8_t *)c->mask.data + off[OPD_MASK] + l0;
            a.ms = L->axis[OPD_MASK];
        }
        const csm_idx size = p->half ? 2 : es;
        a.x = c->in.data + off[OPD_IN] + l0 * size;
        a.xs = L->axis[OPD_IN];
        a.g = c->grad.data ? c->grad.data + off[OPD_GRAD] + l0 * size : NULL;
        a.gs = L->axis[OPD_GRAD];
        a.y = (char *)c->out.data + off[OPD_OUT] + l0 * size;
        a.ys = L->axis[OPD_OUT];
        a.n_rows = l1 - l0;
        a.negate = c->negate;
        if (p->half && c->func == CSM_SOFTMAX &&
            !(a.scratch = csm_scratch(0, (size_t)4 * p->width * n * sizeof(float)))) {
            p->failed = 1;
            return;
        }
        p->k->lanes(&a);
        return;
    }
    /* a tile of w lanes by n steps, computed in place */
    csm_idx w = CSM_TILE_BYTES * 4 / (n * es) / p->width * p->width;
    if (w < p->width) w = p->width;
    char *tile = csm_scratch(0, (size_t)w * n * es);
    if (!tile) {
        p->failed = 1;
        return;
    }
    for (csm_idx l = l0; l < l1; l += w) {
        const csm_idx lanes = l1 - l < w ? l1 - l : w;
        stage_steps(p, OPD_IN, off, 0, n, l, lanes, tile, w * es);
        a.x = tile;
        a.xs = w * es;
        a.y = tile;
        a.ys = w * es;
        a.n_rows = lanes;
        p->k->lanes(&a);
        unstage_steps(p, off, 0, n, l, lanes, tile, w * es);
    }
}

/* Steps [s0, s1) of `lanes` lanes (from lane l) in one pass: phase 0 and 1 into s, the last from pt (see
 * run_piece) */
static void lanes_pass(csm_plan *p, const csm_idx off[N_OPD], csm_idx l, csm_idx lanes, csm_idx s0, csm_idx s1,
                       int phase, slot *s, const patterns *pt)
{
    const layout *L = &p->L;
    const csm_call *c = p->c;
    const csm_type_kernels *k = p->k;
    const csm_idx es = p->es;
    const int last = phase == p->f->phases - 1, backward = p->f->operands == 2;
    if (last && c->func == CSM_LOGSUMEXP) {            /* the state, by the lanes' first piece */
        if (s0 == 0)
            store_state(p, (char *)c->state.data + off[OPD_STATE] + l * L->lane[OPD_STATE], L->lane[OPD_STATE],
                        lanes, pt);
        return;
    }
    const int need_x = !(last && c->func == CSM_SOFTMAX && p->store_e);
    const int staged_out = last && !p->direct[OPD_OUT];
    const int staged = (need_x && !p->direct[OPD_IN]) || (backward && !p->direct[OPD_GRAD]) || staged_out;
    const int in = read_in(p);
    /* steps per block: all of them when nothing is staged, else as many as a tile holds */
    csm_idx block = s1 - s0, pending = 0;                /* pending: steps in the raw sums since a flush */
    const int sums = !last && phase == 1;
    int64_t *counts = sums && log_family(c->func) ? s->count : NULL;
    char *tile = NULL;
    if (staged) {
        block = CSM_TILE_BYTES / (lanes * es);
        if (block < 1) block = 1;
    }
    if (sums && block > CSM_F32_FLUSH) block = CSM_F32_FLUSH;     /* (the raw sums hold that many steps) */
    if (staged) {
        if (!(tile = csm_scratch(0, (size_t)block * lanes * es * 2))) {
            p->failed = 1;
            return;
        }
    }
    for (csm_idx b0 = s0; b0 < s1; b0 += block) {
        const csm_idx steps = s1 - b0 < block ? s1 - b0 : block;
        const char *x = c->in.data + off[OPD_IN] + b0 * L->axis[OPD_IN] + l * L->lane[OPD_IN];
        csm_idx xs = L->axis[OPD_IN];
        const char *g = backward ? c->grad.data + off[OPD_GRAD] + b0 * L->axis[OPD_GRAD] + l * L->lane[OPD_GRAD]
                                 : NULL;
        csm_idx gs = L->axis[OPD_GRAD];
        char *y = (char *)c->out.data + off[OPD_OUT] + b0 * L->axis[OPD_OUT] + l * L->lane[OPD_OUT];
        const csm_idx ys = L->axis[OPD_OUT];
        if (need_x && !p->direct[OPD_IN]) {
            stage_steps(p, OPD_IN, off, b0, steps, l, lanes, tile, lanes * es);
            x = tile;
            xs = lanes * es;
        }
        if (backward && !p->direct[OPD_GRAD]) {
            char *gt = tile + block * lanes * es;
            stage_steps(p, OPD_GRAD, off, b0, steps, l, lanes, gt, lanes * es);
            g = gt;
            gs = lanes * es;
        }
        char *dest = staged_out ? (x == tile ? tile : tile + block * lanes * es) : y;
        const csm_idx ds = staged_out ? lanes * es : ys;
        if (phase == 0) {
            if (c->func == CSM_SOFTMAX) k->lanes_max(x, xs, steps, s->m, lanes, in);
            else if (log_family(c->func)) k->lanes_top2(x, xs, steps, s->m, s->m2, lanes, in);
            else k->lanes_dot(g, gs, c->func == CSM_SOFTMAX_BACKWARD ? x : NULL, xs, steps, s->dot, lanes, p->half);
        } else if (sums) {
            if (pending + steps > CSM_F32_FLUSH) {
                k->lanes_flush(s->raw_hi, s->raw_lo, s->raw_count, pending, s->hi, s->lo, counts, lanes);
                pending = 0;
            }
            if (c->func == CSM_SOFTMAX)
                k->lanes_exp_sum(x, xs, p->store_e ? y : NULL, ys, steps, pt->m, s->raw_hi, s->raw_lo, lanes, in);
            else
                k->lanes_log_sum(x, xs, steps, pt->m, pt->m2e, s->raw_hi, s->raw_lo, s->raw_count, lanes, in);
            pending += steps;
        }
        if (last) {
            if (c->func == CSM_SOFTMAX && p->store_e) k->lanes_scale(y, ys, steps, pt->a, lanes);
            else if (c->func == CSM_SOFTMAX) k->lanes_exp_scale(x, xs, dest, ds, steps, pt->m, pt->a, lanes, in);
            else if (c->func == CSM_LOG_SOFTMAX)
                k->lanes_log_out(x, xs, dest, ds, steps, pt->m, pt->a, pt->b, lanes, in);
            else k->lanes_grad_out(c->func, g, gs, x, xs, dest, ds, steps, pt->a, lanes, p->half);
            if (staged_out) unstage_steps(p, off, b0, steps, l, lanes, dest, lanes * es);
        }
    }
    if (sums && pending) k->lanes_flush(s->raw_hi, s->raw_lo, s->raw_count, pending, s->hi, s->lo, counts, lanes);
}


/* merge_state for one piece of lanes, whose slot is already each lane's state: its patterns directly */
static void finish_lanes(const csm_plan *p, int phase, slot *s, csm_idx lanes, patterns *pt)
{
    const int ct = p->ct, func = p->c->func;
    const size_t bytes = (size_t)lanes * p->es;
    if (phase == 0 && p->f->operands == 2) {
        if (ct == CSM_F32)
            for (csm_idx l = 0; l < lanes; l++) ((float *)pt->a)[l] = (float)s->dot[l];
        else
            memcpy(pt->a, s->dot, bytes);
    } else if (phase == 0) {
        memcpy(pt->m, s->m, bytes);
        if (log_family(func)) {
            memcpy(pt->m2, s->m2, bytes);
            for (csm_idx l = 0; l < lanes; l++) {
                const double m2 = load_t(ct, s->m2, l);
                store_t(ct, pt->m2e, l, m2 > -INFINITY ? m2 : load_t(ct, s->m, l));
            }
        }
    } else {
        double *total = s->dot;                        /* (free in the forward functions) */
        for (csm_idx l = 0; l < lanes; l++) total[l] = sum_value(s->hi[l], s->lo[l]);
        if (func == CSM_LOGSUMEXP) {                   /* as in merge_state; the raw parts are free now */
            double *m = (double *)s->raw_hi, *m2 = (double *)s->raw_lo;
            for (csm_idx l = 0; l < lanes; l++) {
                m[l] = load_t(ct, pt->m, l), m2[l] = load_t(ct, pt->m2, l);
                total[l] = csm_state_total(ct == CSM_F32, total[l]);
            }
            p->kt->f64.log_sums(m, m2, total, s->count, pt->a, pt->b, lanes);
        } else if (log_family(func))
            p->k->log_sums(pt->m, pt->m2, total, s->count, pt->a, pt->b, lanes);
        else
            for (csm_idx l = 0; l < lanes; l++) store_t(ct, pt->a, l, reciprocal(ct, load_t(ct, pt->m, l), total[l]));
    }
}

/* ------------------------------------------------------------------------------------------ tasks */

/* Tasks: rows and lanes, (outer, block of lanes) [x pieces of the axis for lanes]; runs, groups of runs (one
 * piece each) or (run, piece). */
static csm_idx plan_tasks(csm_job *job, int phase)
{
    csm_plan *p = job->ctx;
    (void)phase;
    if (p->path == PATH_RUNS) return p->pieces > 1 ? p->units * p->pieces : (p->units + p->per_task - 1) / p->per_task;
    return p->n_outer * p->tasks_per_outer * p->pieces;
}

static void block_lanes(const csm_plan *p, csm_idx block, csm_idx *l0, csm_idx *l1)
{
    *l0 = block * p->per_task;
    *l1 = *l0 + p->per_task < p->L.n_lanes ? *l0 + p->per_task : p->L.n_lanes;
}

static void plan_run(csm_job *job, int phase, csm_idx task)
{
    csm_plan *p = job->ctx;
    const layout *L = &p->L;
    const int last = phase == p->f->phases - 1;
    if (p->path == PATH_RUNS) {
        if (p->pieces == 1) {
            for (csm_idx u = task * p->per_task; u < (task + 1) * p->per_task && u < p->units; u++) run_whole(p, u);
            return;
        }
        const csm_idx u = task / p->pieces, piece = task % p->pieces, i0 = piece * p->piece_len;
        const csm_idx len = p->run_len - i0 < p->piece_len ? p->run_len - i0 : p->piece_len;
        if (p->apply) {
            char b[SLOT_BYTES(16)];
            patterns pt = patterns_at(b, p->width);
            csm_idx off[N_OPD], step[N_OPD];
            run_offsets(p, u, off, step);
            load_state(p, p->c->state.data + off[OPD_STATE], step[OPD_STATE], p->classes, p->width, &pt);
            run_piece(p, u, i0, len, p->f->phases - 1, NULL, &pt);
            return;
        }
        slot s = slot_at(p->state + (u * (p->pieces + 1) + piece) * SLOT_BYTES(p->slot_lanes), p->slot_lanes);
        patterns pt = unit_patterns(p, u);
        if (!last) slot_reset(&s, p->c->func, phase, p->ct, p->width);
        run_piece(p, u, i0, len, phase, &s, &pt);
        return;
    }
    const csm_idx unit = task / p->pieces, piece = task % p->pieces;
    const csm_idx outer = unit / p->tasks_per_outer;
    csm_idx l0, l1;
    block_lanes(p, unit % p->tasks_per_outer, &l0, &l1);
    if (p->path == PATH_ROWS) {
        run_rows(p, outer, l0, l1);
        return;
    }
    csm_idx off[N_OPD];
    outer_offsets(L, outer, off);
    if (p->fused) {
        run_lanes_fused(p, off, l0, l1);
        if (!p->mask_direct) lanes_fixup(p, off, l0, l1);   /* (the strips mask rows themselves) */
        return;
    }
    const csm_idx lanes = l1 - l0;
    if (p->apply) {                                    /* a piece of the axis against the given state */
        const csm_idx s0 = piece * p->piece_len, s1 = s0 + p->piece_len < L->axis_len ? s0 + p->piece_len : L->axis_len;
        char *mem = csm_scratch(1, SLOT_BYTES(lanes));
        if (!mem) {
            p->failed = 1;
            return;
        }
        patterns pt = patterns_at(mem, lanes);
        load_state(p, p->c->state.data + off[OPD_STATE] + l0 * L->lane[OPD_STATE], L->lane[OPD_STATE], lanes, lanes,
                   &pt);
        lanes_pass(p, off, l0, lanes, s0, s1, p->f->phases - 1, NULL, &pt);
        return;
    }
    if (p->pieces > 1) {                               /* one piece of the axis, one phase */
        const csm_idx s0 = piece * p->piece_len, s1 = s0 + p->piece_len < L->axis_len ? s0 + p->piece_len : L->axis_len;
        slot s = slot_at(p->state + (unit * (p->pieces + 1) + piece) * SLOT_BYTES(p->slot_lanes), p->slot_lanes);
        patterns pt = unit_patterns(p, unit);
        if (!last) slot_reset(&s, p->c->func, phase, p->ct, lanes);
        lanes_pass(p, off, l0, lanes, s0, s1, phase, &s, &pt);
        return;
    }
    /* the whole axis for a panel of lanes, every pass in this task: a piece's slot is the lanes' state */
    char *mem = csm_scratch(1, 2 * SLOT_BYTES(lanes));
    if (!mem) {
        p->failed = 1;
        return;
    }
    slot s = slot_at(mem, lanes);
    patterns pt = patterns_at(mem + SLOT_BYTES(lanes), lanes);
    for (int ph = 0; ph < p->f->phases; ph++) {
        const int ph_last = ph == p->f->phases - 1;
        if (!ph_last) slot_reset(&s, p->c->func, ph, p->ct, lanes);
        lanes_pass(p, off, l0, lanes, 0, L->axis_len, ph, &s, &pt);
        if (!ph_last) finish_lanes(p, ph, &s, lanes, &pt);
    }
    lanes_fixup(p, off, l0, l1);
}

/* Between phases of pieces: each unit's slots merged into its patterns; after the last, the masked rows' fix-up
 * (which reads a row's first output: written by another task) */
static void plan_between(csm_job *job, int phase)
{
    csm_plan *p = job->ctx;
    if (p->pieces == 1 || p->apply) return;
    const int last = phase == p->f->phases - 1;
    if (p->path == PATH_RUNS) {
        for (csm_idx u = 0; u < p->units; u++) {
            if (last) {
                if (p->c->mask.data) run_fixup(p, u);
                continue;
            }
            slot_list list = {p, u, p->pieces, NULL};
            patterns pt = unit_patterns(p, u);
            merge_state(p, phase, &list, p->classes, p->width, p->width, &pt);
        }
        return;
    }
    for (csm_idx unit = 0; unit < p->n_outer * p->tasks_per_outer; unit++) {
        csm_idx l0, l1;
        block_lanes(p, unit % p->tasks_per_outer, &l0, &l1);
        if (last) {
            csm_idx off[N_OPD];
            outer_offsets(&p->L, unit / p->tasks_per_outer, off);
            lanes_fixup(p, off, l0, l1);
            continue;
        }
        slot_list list = {p, unit, p->pieces, NULL};
        patterns pt = unit_patterns(p, unit);
        merge_state(p, phase, &list, l1 - l0, l1 - l0, l1 - l0, &pt);
    }
}

static int plan_release(csm_plan *p)
{
    free(p->state);
    p->state = NULL;
    return p->failed ? -1 : 0;
}

/* Whether an operand can be used where it is by a path whose vectors run along `stride` */
static int usable(const csm_operand *o, int ct, csm_idx stride)
{
    return o->data && o->dtype == ct && !o->swapped && o->aligned && stride == dtype_size(ct);
}

/* Whether the input's lanes are p interleaved lanes along a contiguous axis in every operand (p dividing the
 * vector width): then a block is one run with p classes. */
static int interleaved(const csm_call *c, const layout *L, int width)
{
    const csm_idx p = L->n_lanes;
    if (p < 2 || p > width || width % p != 0) return 0;
    for (int o = 0; o < N_OPD; o++) {
        const csm_operand *op = operand(c, o);
        const csm_idx size = dtype_size(op->dtype);
        if (o != OPD_STATE && op->data && (L->lane[o] != size || L->axis[o] != p * size)) return 0;
    }
    return 1;
}

/* Fills a zeroed plan; -1 when its state could not be allocated (nothing is then held). */
static int plan_init(csm_plan *p, const csm_call *c, const csm_kernels *kt, int threads)
{
    p->c = c;
    p->kt = kt;
    p->f = &functions[c->func];
    layout *L = &p->L;
    decompose(c, L);
    const int lse = c->func == CSM_LOGSUMEXP;
    p->apply = c->state.data && !lse;
    p->ct = (lse ? c->in.dtype : c->out.dtype) == CSM_F64 ? CSM_F64 : CSM_F32;
    p->es = dtype_size(p->ct);
    p->k = p->ct == CSM_F32 ? &kt->f32 : &kt->f64;
    p->width = p->k->width;
    /* a float16 result of wider input: the input rounded to float16 first, as a cast would */
    p->round_to = !lse && c->out.dtype == CSM_F16 && c->in.dtype != CSM_F16 ? CSM_F16 : -1;
    p->n_outer = 1;
    for (int d = 0; d < L->n_outer; d++) p->n_outer *= L->outer_shape[d];
    if (L->axis_len == 0 || L->n_lanes == 0) p->n_outer = 0;
    p->elements = p->n_outer * L->n_lanes * L->axis_len;
    if (threads < 1) threads = 1;
    const int backward = p->f->operands == 2;
    const csm_idx n = L->axis_len, es = p->es, in_size = dtype_size(c->in.dtype);

    /* the path, by the input's geometry: its axis contiguous, or its lanes (interleaved, or far apart) */
    p->classes = 1;
    if (L->axis[OPD_IN] == in_size || L->n_lanes == 1 ||
        (L->lane[OPD_IN] != in_size && abs_idx(L->axis[OPD_IN]) <= abs_idx(L->lane[OPD_IN]))) {
        /* (against a given state only the output pass runs: a run's) */
        p->path = (size_t)n * es <= CSM_FUSED_ROW_BYTES && !p->apply ? PATH_ROWS : PATH_RUNS;
    } else if (interleaved(c, L, p->width)) {
        p->path = PATH_RUNS;
        p->classes = L->n_lanes;
    } else {
        p->path = PATH_LANES;
    }
    /* which operands the path's kernels use where they are: vectors along the axis (rows, long rows) or along the
     * lanes (lanes, interleaved runs: contiguous there) */
    const int along_axis = p->path != PATH_LANES && p->classes == 1;
    for (int o = 0; o < N_OPD; o++)
        p->direct[o] = usable(operand(c, o), p->ct, along_axis ? L->axis[o] : L->lane[o]);
    p->direct[OPD_IN] = p->direct[OPD_IN] && !c->mask.data && p->round_to < 0;   /* (the kernels negate) */
    if (lse) p->direct[OPD_OUT] = 1;                   /* (the kernels write the state where it is) */
    p->pieces = 1;
    /* float16 operands the kernels can convert themselves: every one float16, native, aligned and contiguous
     * where the path's vectors run; which paths take them is decided per path below */
    int f16_ok = p->ct == CSM_F32 && p->k->half_rows;
    for (int o = 0; o < N_OPD && f16_ok; o++) {
        const csm_operand *op = operand(c, o);
        if (op->data && o != OPD_MASK && o != OPD_STATE)
            f16_ok = op->dtype == CSM_F16 && !op->swapped && op->aligned &&
                     (along_axis ? L->axis[o] : L->lane[o]) == 2;
    }
    const int f16_direct = f16_ok && !c->mask.data;    /* (with a mask: where the kernels read it, below) */
    /* where= in the kernels' loads: softmax, softmin and log_softmax, a mask contiguous where the path's vectors
     * run (the rows kernel along the axis, the strips along the lanes) */
    const int masks_as_loaded = c->mask.data && (c->func == CSM_SOFTMAX || c->func == CSM_LOG_SOFTMAX) &&
                                p->round_to < 0 && !p->apply && (along_axis ? L->axis : L->lane)[OPD_MASK] == 1;

    if (p->path == PATH_ROWS) {
        p->half = (f16_direct || (f16_ok && masks_as_loaded)) && n > CSM_SHORT_ROW_MAX && n <= CSM_HALF_ROW_MAX;
        const csm_idx gather_limit = ((csm_idx)1 << 31) / 16;   /* 32-bit gather offsets */
        p->short_rows = n <= CSM_SHORT_ROW_MAX;
        for (int o = 0; o < N_OPD; o++)
            if (o != OPD_MASK && operand(c, o)->data && abs_idx(L->lane[o]) >= gather_limit) p->short_rows = 0;
        csm_idx per_task = CSM_TASK_ELEMENTS / (n > 0 ? n : 1);
        if (per_task < 1) per_task = 1;
        if (p->short_rows) per_task = (per_task + 31) / 32 * 32;
        /* (the short rows kernel takes no mask: those rows are staged) */
        p->mask_direct = masks_as_loaded && !p->short_rows &&
                         (p->half || (p->direct[OPD_OUT] && usable(operand(c, OPD_IN), p->ct, L->axis[OPD_IN])));
        if (p->mask_direct) p->direct[OPD_IN] = 1;
        p->per_task = per_task;
        p->tasks_per_outer = (L->n_lanes + per_task - 1) / per_task;
    } else if (p->path == PATH_RUNS) {
        p->run_len = n * p->classes;
        /* the passes of every function but logsumexp convert float16 themselves */
        p->half = f16_direct && !lse && !p->apply;
        if (p->half) p->direct[OPD_IN] = p->direct[OPD_GRAD] = p->direct[OPD_OUT] = 1;
        p->units = p->n_outer * (p->classes == 1 ? L->n_lanes : 1);
        /* small pieces when the pool needs more tasks than runs, and for the backward functions whatever the
         * thread count (their float64 sums merge piece by piece) */
        p->piece_len = CSM_PIECE;
        if (backward || (threads > 1 && p->units < 2 * threads && p->run_len >= 4 * CSM_SMALL_PIECE))
            p->piece_len = CSM_SMALL_PIECE;
        p->pieces = (p->run_len + p->piece_len - 1) / p->piece_len;
        p->store_e = c->func == CSM_SOFTMAX && !p->apply && !p->half && p->direct[OPD_OUT] &&
                     (size_t)p->run_len * es <= CSM_STORE_BUDGET;
        p->per_task = CSM_TASK_ELEMENTS / (p->run_len > 0 ? p->run_len : 1);
        if (p->per_task < 1) p->per_task = 1;
        p->slot_lanes = p->width;
    } else {
        csm_idx panel = CSM_LANES_PANEL;
        /* one panel per thread when the outer axes give too few: a panel walks the whole axis, and a narrower one
         * (a shorter contiguous run per axis step) streams worse than it balances better */
        const csm_idx panels = p->n_outer * ((L->n_lanes + panel - 1) / panel);
        if (threads > 1 && panels < threads && p->n_outer > 0) {
            const csm_idx per_outer = (threads + p->n_outer - 1) / p->n_outer;
            panel = (L->n_lanes + per_outer - 1) / per_outer;
            panel = (panel + 255) / 256 * 256;         /* whole vectors, 1 KB or more per axis step */
            if (panel > CSM_LANES_PANEL) panel = CSM_LANES_PANEL;
        }
        const csm_idx lanes = panel < L->n_lanes ? panel : L->n_lanes;
        p->per_task = panel;
        p->tasks_per_outer = (L->n_lanes + panel - 1) / panel;
        /* the backward strips only for float16 on short axes: elsewhere the streamed lanes are faster
         * (docs/performance.md) */
        p->fused = !lse && !p->apply && n <= CSM_LANES_FUSED_MAX && strips_stay_in_cache(n, L->axis[OPD_IN]) &&
                   (!backward || (f16_direct && n <= CSM_LANES_BACKWARD_FUSED_MAX));
        /* float16 converted by the kernels: the strips and passes of every function but logsumexp */
        p->mask_direct = masks_as_loaded && p->fused &&
                         (f16_ok || (p->direct[OPD_OUT] && usable(operand(c, OPD_IN), p->ct, L->lane[OPD_IN])));
        p->half = (f16_direct || (f16_ok && p->mask_direct)) && !lse && !p->apply;
        if (p->half) p->direct[OPD_IN] = p->direct[OPD_GRAD] = p->direct[OPD_OUT] = 1;
        if (p->mask_direct) p->direct[OPD_IN] = 1;
        if (!p->fused) {
            /* pieces of the axis when a panel's walk would be a long task; the backward functions' pieces do not
             * depend on the panel (their float64 sums merge piece by piece) */
            p->piece_len = (backward ? CSM_PIECE / CSM_LANES_PANEL : CSM_PIECE / lanes);
            if (p->piece_len < 1) p->piece_len = 1;
            p->pieces = (n + p->piece_len - 1) / p->piece_len;
            p->store_e = c->func == CSM_SOFTMAX && !p->apply && !p->half && p->direct[OPD_OUT] &&
                         (size_t)n * lanes * es <= CSM_LANES_STORE_BUDGET;
            p->slot_lanes = lanes;
        }
    }
    if (p->pieces > 1 && !p->apply) {
        const csm_idx units = p->path == PATH_RUNS ? p->units : p->n_outer * p->tasks_per_outer;
        p->state = malloc((size_t)units * (p->pieces + 1) * SLOT_BYTES(p->slot_lanes));
        if (!p->state) return -1;
    }
    p->job.n_phases = p->pieces > 1 && !p->apply ? p->f->phases : 1;
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

int csm_run_small(const csm_call *c, const csm_kernels *kt)
{
    csm_plan p;                                        /* on the stack: a small call skips the allocation */
    memset(&p, 0, offsetof(csm_plan, L));
    if (plan_init(&p, c, kt, 1) != 0) return -1;
    if (p.elements >= CSM_PARALLEL_MIN || p.pieces > 1) {
        plan_release(&p);
        return 1;
    }
    csm_job_run_inline(&p.job);
    return plan_release(&p);
}

int csm_plan_parallel(const csm_plan *p)
{
    if (p->elements < CSM_PARALLEL_MIN) return 0;
    return p->job.threads > 1 || p->elements >= CSM_POOL_MIN_SERIAL;
}

csm_job *csm_plan_job(csm_plan *p) { return &p->job; }

int csm_plan_free(csm_plan *p)
{
    int result = plan_release(p);
    free(p);
    return result;
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

/* A double rounded once to float16 (through float32 it could round twice): the float32 nearest below or above,
 * whichever the remainder's sign says, with ties decided by the exact value. */
uint16_t csm_double_to_half(double d)
{
    float f = (float)d;
    if (f != f || (double)f == d || isinf(f)) return csm_float_to_half(f);
    /* f is d rounded; d lies strictly between f and its neighbour toward d. Truncating d toward f's side to a
     * float with a sticky low bit keeps the float16 rounding single: f32 has 13 more mantissa bits than f16. */
    uint32_t bits;
    float t = (float)d;
    if ((double)t > d ? d > 0 : d < 0) t = nextafterf(t, 0.0f);   /* t: d truncated toward zero */
    memcpy(&bits, &t, 4);
    bits |= 1u;                                        /* sticky: d is not exactly t */
    memcpy(&t, &bits, 4);
    return csm_float_to_half(t);
}
