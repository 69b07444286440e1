/*
 * AVX2 + FMA + F16C kernels (x86-64 only). The target pragma applies to this file alone: the build's global flags
 * stay at the x86-64 baseline, and dispatch.c selects this table only when the CPU and OS support it.
 */
#include "softmax.h"
#include "compiler.h"

#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
CSM_TARGET_BEGIN("avx2,fma,f16c")

#define CSM_VBYTES 32
#define CSM_FMA_F32(a, b, c) ((vf)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#define CSM_FMA_F64(a, b, c) ((vd)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#define CSM_FNMA_F32(a, b, c) ((vf)_mm256_fnmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#define CSM_FNMA_F64(a, b, c) ((vd)_mm256_fnmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#define CSM_ANY
#define CSM_WIDEN
#define CSM_NARROW
#define CSM_ANY_LESS
#define CSM_GATHER
#define CSM_MAX_NUM
#define CSM_ANY_NAN2
#define CSM_PARTIAL
#define CSM_TAKEN
#include "simd_vec.h"
static inline vi vi_taken(const uint8_t *p) { return (vi)_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)) != 0; }
static inline vl vl_taken(const uint8_t *p)
{
    int32_t b;
    memcpy(&b, p, 4);
    return (vl)_mm256_cvtepu8_epi64(_mm_cvtsi32_si128(b)) != 0;
}
/* Row tails by masked loads and stores: the masked-off lanes are neither read nor written (no fault either). */
static inline __m256i mask32x8(csm_idx n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256i mask64x4(csm_idx n)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n < 4 ? n : 4), _mm256_setr_epi64x(0, 1, 2, 3));
}
static inline vf vf_load_part(const float *p, csm_idx n, float fill)
{
    __m256i k = mask32x8(n);
    return (vf)_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, k), _mm256_castsi256_ps(k));
}
static inline void vf_store_part(float *p, vf v, csm_idx n) { _mm256_maskstore_ps(p, mask32x8(n), (__m256)v); }
static inline vd vd_load_part(const double *p, csm_idx n, double fill)
{
    __m256i k = mask64x4(n);
    return (vd)_mm256_blendv_pd(_mm256_set1_pd(fill), _mm256_maskload_pd(p, k), _mm256_castsi256_pd(k));
}
static inline void vd_store_part(double *p, vd v, csm_idx n) { _mm256_maskstore_pd(p, mask64x4(n), (__m256d)v); }
static inline vf vf_max_num(vf acc, vf x) { return (vf)_mm256_max_ps((__m256)x, (__m256)acc); }
static inline vd vd_max_num(vd acc, vd x) { return (vd)_mm256_max_pd((__m256d)x, (__m256d)acc); }
static inline vf vf_min_num(vf a, vf b) { return (vf)_mm256_min_ps((__m256)a, (__m256)b); }
static inline vd vd_min_num(vd a, vd b) { return (vd)_mm256_min_pd((__m256d)a, (__m256d)b); }
static inline int any_nan2_f32(vf a, vf b)
{
    return _mm256_movemask_ps(_mm256_cmp_ps((__m256)a, (__m256)b, _CMP_UNORD_Q));
}
static inline int any_nan2_f64(vd a, vd b)
{
    return _mm256_movemask_pd(_mm256_cmp_pd((__m256d)a, (__m256d)b, _CMP_UNORD_Q));
}
/* AVX2 gathers with 32-bit byte offsets k * stride (the driver only sends strides with 16 * |stride| < 2^31);
 * AVX2 has no scatter, so stores go lane by lane. */
static inline vf vf_gather(const char *p, csm_idx stride)
{
    __m256i offsets = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)stride));
    return (vf)_mm256_i32gather_ps((const float *)p, offsets, 1);
}
static inline void vf_scatter(char *p, csm_idx stride, vf v)
{
    float t[CSM_NF];
    vf_store(t, v);
    for (int k = 0; k < CSM_NF; k++) memcpy(p + k * stride, t + k, 4);
}
static inline vd vd_gather(const char *p, csm_idx stride)
{
    __m128i offsets = _mm_mullo_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32((int)stride));
    return (vd)_mm256_i32gather_pd((const double *)p, offsets, 1);
}
static inline void vd_scatter(char *p, csm_idx stride, vd v)
{
    double t[CSM_ND];
    vd_store(t, v);
    for (int k = 0; k < CSM_ND; k++) memcpy(p + k * stride, t + k, 8);
}
static inline int any_less_f32(vf a, vf b) { return _mm256_movemask_ps(_mm256_cmp_ps((__m256)a, (__m256)b, _CMP_LT_OQ)); }
static inline int any_less_f64(vd a, vd b) { return _mm256_movemask_pd(_mm256_cmp_pd((__m256d)a, (__m256d)b, _CMP_LT_OQ)); }
static inline int vi_any(vi m) { return !_mm256_testz_si256((__m256i)m, (__m256i)m); }
/* any lane set in `lanes` outside `except`: vptest's carry flag is clear then */
#define CSM_ANY_ANDNOT
static inline int vi_any_andnot(vi lanes, vi except) { return !_mm256_testc_si256((__m256i)except, (__m256i)lanes); }
static inline int vl_any_andnot(vl lanes, vl except) { return !_mm256_testc_si256((__m256i)except, (__m256i)lanes); }
static inline int vl_any(vl m) { return !_mm256_testz_si256((__m256i)m, (__m256i)m); }
static inline vd vf_lo_to_vd(vf v) { return (vd)_mm256_cvtps_pd(_mm256_castps256_ps128((__m256)v)); }
static inline vd vf_hi_to_vd(vf v) { return (vd)_mm256_cvtps_pd(_mm256_extractf128_ps((__m256)v, 1)); }
static inline vf vd_pair_to_vf(vd lo, vd hi)
{
    return (vf)_mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps((__m256d)lo)), _mm256_cvtpd_ps((__m256d)hi), 1);
}

/* F16C converts 8 halves per instruction, with round-to-nearest-even on the way down as the scalar code does. */
#define CSM_F16_BLOCK_CONVERT
#define CSM_F16_VECTOR
static inline vf vf_load_f16(const uint16_t *p) { return (vf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline void vf_store_f16(uint16_t *p, vf v)
{
    _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT));
}
static void f16_to_f32_block(const uint16_t *src, float *dst, csm_idx n)
{
    csm_idx i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = csm_half_to_float(src[i]);
}
static void f32_to_f16_block(const float *src, uint16_t *dst, csm_idx n)
{
    csm_idx i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = csm_float_to_half(src[i]);
}

/* The float32 exponential's 16-entry table (kernels.inc): two 8-entry permutes, bit 3 of the index picks one.
 * The switch is shared with AVX-512 (softmax.h), so both sets give the same float32 bits. (float64 keeps the plain
 * polynomial here: its table would take four permutes.) */
#if CSM_X86_EXP_TABLE_F32
#define CSM_EXP_TABLE_F32
static inline vf vf_table16(const void *table, vf t)    /* the bits of 16 floats */
{
    __m256i i = (__m256i)t;
    __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps((const float *)table), i);
    __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps((const float *)table + 8), i);
    return (vf)_mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)));
}
#endif

#define CSM_KERNELS_TABLE csm_kernels_avx2
#define CSM_ISA_NAME "avx2"
#define CSM_ISA_DESCRIPTION "x86-64 AVX2 + FMA + F16C (8 floats per vector)"
#define CSM_SHORT_ROWS_F32 short_rows_x86
static csm_idx short_rows_x86(const csm_fused *a);
#include "kernels.inc"

#include "transpose_x86.h"

/* Eight rows per vector (short_rows_x86.inc): rows to columns and back by one 8x8 transpose per eight floats */
#define CSM_GROUP_ROWS 8
/* (rows of 2 or 3 lose with four groups: their columns no longer fit the 16 registers) */
#define CSM_GROUPS_TOGETHER(n) ((n) < 4 ? 3 : 4)
#define CSM_SHORT_BACKWARD_MAX 16
static inline CSM_ALWAYS_INLINE void columns_in(const char *p, csm_idx stride, int h, vf *col)
{
    __m256 t[8];
    for (int r = 0; r < 8; r++) t[r] = _mm256_loadu_ps((const float *)(p + r * stride) + 8 * h);
    transpose8x8(t);
    for (int r = 0; r < 8; r++) col[8 * h + r] = (vf)t[r];
}
static inline CSM_ALWAYS_INLINE void columns_out(char *p, csm_idx stride, int halves, const vf *col)
{
    __m256 t[2][8];
    for (int h = 0; h < halves; h++) {
        for (int r = 0; r < 8; r++) t[h][r] = (__m256)col[8 * h + r];
        transpose8x8(t[h]);
    }
    for (int r = 0; r < 8; r++)
        for (int h = 0; h < halves; h++) _mm256_storeu_ps((float *)(p + r * stride) + 8 * h, t[h][r]);
}
#include "short_rows_x86.inc"

CSM_TARGET_END

#endif
