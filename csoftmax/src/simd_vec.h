/*
 * A minimal vector vocabulary for kernels.inc, on GCC/Clang vector extensions (compiler.h: their differences).
 *
 * The including file defines CSM_VBYTES (16 or 32) and may define CSM_FMA_F32/CSM_FMA_F64 (a fused multiply-add
 * for the target). Everything else is plain vector arithmetic that the compiler maps onto the target's registers:
 * 16 bytes are SSE2 on x86-64 and NEON on aarch64; 32 bytes are AVX2 when the including file enables it.
 * Built with -ffp-contract=off, so a*b+c is two roundings unless a kernel asks for fma explicitly: the results of
 * one instruction set never depend on how the compiler schedules it.
 */
#ifndef CSOFTMAX_SIMD_VEC_H
#define CSOFTMAX_SIMD_VEC_H

#include <stdint.h>
#include <string.h>

#include "compiler.h"

#define CSM_NF (CSM_VBYTES / 4)     /* float32 lanes */
#define CSM_ND (CSM_VBYTES / 8)     /* float64 lanes */

typedef float vf __attribute__((vector_size(CSM_VBYTES)));
typedef int32_t vi __attribute__((vector_size(CSM_VBYTES)));
typedef double vd __attribute__((vector_size(CSM_VBYTES)));
typedef int64_t vl __attribute__((vector_size(CSM_VBYTES)));
typedef float vf_half __attribute__((vector_size(CSM_VBYTES / 2)));   /* CSM_ND floats */

static inline vf vf_load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vf_store(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vd vd_load(const double *p) { vd v; memcpy(&v, p, sizeof v); return v; }
static inline void vd_store(double *p, vd v) { memcpy(p, &v, sizeof v); }
static inline vl vl_load(const int64_t *p) { vl v; memcpy(&v, p, sizeof v); return v; }
static inline void vl_store(int64_t *p, vl v) { memcpy(p, &v, sizeof v); }

static inline vf vf_set1(float a) { return (vf){0} + a; }
static inline vd vd_set1(double a) { return (vd){0} + a; }
static inline vi vi_set1(int32_t a) { return (vi){0} + a; }
static inline vl vl_set1(int64_t a) { return (vl){0} + a; }

/* Partial vectors for row tails: the missing lanes hold `fill` (the including file may supply masked versions). */
#ifndef CSM_PARTIAL
static inline vf vf_load_part(const float *p, csm_idx n, float fill)
{
    float t[CSM_NF];
    for (int i = 0; i < CSM_NF; i++) t[i] = i < n ? p[i] : fill;
    return vf_load(t);
}
static inline void vf_store_part(float *p, vf v, csm_idx n)
{
    float t[CSM_NF];
    vf_store(t, v);
    for (int i = 0; i < n; i++) p[i] = t[i];
}
static inline vd vd_load_part(const double *p, csm_idx n, double fill)
{
    double t[CSM_ND];
    for (int i = 0; i < CSM_ND; i++) t[i] = i < n ? p[i] : fill;
    return vd_load(t);
}
static inline void vd_store_part(double *p, vd v, csm_idx n)
{
    double t[CSM_ND];
    vd_store(t, v);
    for (int i = 0; i < n; i++) p[i] = t[i];
}
#endif

/* Strided lane access: lane k at p + k * stride bytes (the including file may use gather/scatter instructions). */
#ifndef CSM_GATHER
static inline vf vf_gather(const char *p, csm_idx stride)
{
    float t[CSM_NF];
    for (int k = 0; k < CSM_NF; k++) memcpy(t + k, p + k * stride, 4);
    return vf_load(t);
}
static inline void vf_scatter(char *p, csm_idx stride, vf v)
{
    float t[CSM_NF];
    vf_store(t, v);
    for (int k = 0; k < CSM_NF; k++) memcpy(p + k * stride, t + k, 4);
}
static inline vd vd_gather(const char *p, csm_idx stride)
{
    double t[CSM_ND];
    for (int k = 0; k < CSM_ND; k++) memcpy(t + k, p + k * stride, 8);
    return vd_load(t);
}
static inline void vd_scatter(char *p, csm_idx stride, vd v)
{
    double t[CSM_ND];
    vd_store(t, v);
    for (int k = 0; k < CSM_ND; k++) memcpy(p + k * stride, t + k, 8);
}
#endif

/* Bitwise select: lanes where mask is all ones take a, the others b. */
static inline vf vf_select(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline vd vd_select(vl mask, vd a, vd b) { return (vd)(((vl)a & mask) | ((vl)b & ~mask)); }

/* Running maximum that keeps a NaN once seen: the result of a comparison with NaN is false, so the NaN lane
 * is forced in with an OR of the unordered mask (all-ones bits are a NaN). */
static inline vf vf_max_nan(vf acc, vf x) { return (vf)((vi)vf_select(x > acc, x, acc) | (x != x)); }
static inline vd vd_max_nan(vd acc, vd x) { return (vd)((vl)vd_select(x > acc, x, acc) | (x != x)); }

/* The running maximum for x without NaN: x > acc ? x : acc, which is x86's maxps(x, acc) and equals vf_max_nan
 * whenever x has no NaN (a NaN acc stays). Kernels take it after a check that x has none (any_nan2). */
#ifndef CSM_MAX_NUM
static inline vf vf_max_num(vf acc, vf x) { return vf_select(x > acc, x, acc); }
static inline vd vd_max_num(vd acc, vd x) { return vd_select(x > acc, x, acc); }
/* a < b ? a : b, which is x86's minps(a, b) */
static inline vf vf_min_num(vf a, vf b) { return vf_select(a < b, a, b); }
static inline vd vd_min_num(vd a, vd b) { return vd_select(a < b, a, b); }
#endif

/* A where= mask's lanes: all ones where the byte at p + lane is nonzero (the including file may supply a
 * vector widening). */
#ifndef CSM_TAKEN
static inline vi vi_taken(const uint8_t *p)
{
    vi m;
    for (int i = 0; i < CSM_NF; i++) m[i] = p[i] ? -1 : 0;
    return m;
}
static inline vl vl_taken(const uint8_t *p)
{
    vl m;
    for (int i = 0; i < CSM_ND; i++) m[i] = p[i] ? -1 : 0;
    return m;
}
#endif

/* Whether any lane of a comparison mask is set (the including file may supply a one-instruction version). */
#ifndef CSM_ANY
static inline int vi_any(vi m)
{
    uint64_t w[CSM_VBYTES / 8], acc = 0;
    memcpy(w, &m, sizeof w);
    for (int i = 0; i < CSM_VBYTES / 8; i++) acc |= w[i];
    return acc != 0;
}
static inline int vl_any(vl m) { return vi_any((vi)m); }
#else
static inline int vi_any(vi m);     /* the including file's, defined after this header */
static inline int vl_any(vl m);
#endif

/* Whether any lane of a is below the matching lane of b. */
#ifndef CSM_ANY_LESS
static inline int any_less_f32(vf a, vf b) { return vi_any(a < b); }
static inline int any_less_f64(vd a, vd b) { return vl_any(a < b); }
#endif

/* Whether any lane of a or of b is NaN (the including file may supply a single unordered compare). */
#ifndef CSM_ANY_NAN2
static inline int any_nan2_f32(vf a, vf b) { return vi_any((a != a) | (b != b)); }
static inline int any_nan2_f64(vd a, vd b) { return vl_any((a != a) | (b != b)); }
#endif

#ifndef CSM_FMA_F32
#define CSM_FMA_F32(a, b, c) ((a) * (b) + (c))
#endif
#ifndef CSM_FMA_F64
#define CSM_FMA_F64(a, b, c) ((a) * (b) + (c))
#endif
#ifndef CSM_FNMA_F32
#define CSM_FNMA_F32(a, b, c) ((c) - (a) * (b))
#endif
#ifndef CSM_FNMA_F64
#define CSM_FNMA_F64(a, b, c) ((c) - (a) * (b))
#endif

/* The two halves of a float vector, widened to double. */
#ifndef CSM_WIDEN
static inline vd vf_lo_to_vd(vf v)
{
    vf_half h;
    memcpy(&h, &v, sizeof h);
    return __builtin_convertvector(h, vd);
}
static inline vd vf_hi_to_vd(vf v)
{
    vf_half h;
    memcpy(&h, (const char *)&v + sizeof h, sizeof h);
    return __builtin_convertvector(h, vd);
}
#endif

/* Two double vectors rounded to float and joined, lo's lanes first: the inverse of the widening above. The fallback
 * goes through memory; the instruction-set files join in registers, which keeps the result's load from waiting on
 * two narrower stores. */
#ifndef CSM_NARROW
static inline vf vd_pair_to_vf(vd lo, vd hi)
{
    vf_half a = __builtin_convertvector(lo, vf_half), b = __builtin_convertvector(hi, vf_half);
    vf v;
    memcpy(&v, &a, sizeof a);
    memcpy((char *)&v + sizeof a, &b, sizeof b);
    return v;
}
#endif

#endif
