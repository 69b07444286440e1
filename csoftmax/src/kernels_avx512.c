/*
 * AVX-512 kernels (x86-64 only): F, DQ, VL and BW, as on Intel since Skylake-SP and AMD since Zen 4. Sixteen floats
 * per vector halve the instruction count of the AVX2 kernels, which matters for arrays that fit in cache. As for
 * AVX2, the target pragma is confined to this file and dispatch.c selects the table at run time.
 */
#include "softmax.h"
#include "compiler.h"

#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
CSM_TARGET_BEGIN("avx512f,avx512dq,avx512vl,avx512bw,fma,f16c")

#define CSM_VBYTES 64
#define CSM_FMA_F32(a, b, c) ((vf)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#define CSM_FMA_F64(a, b, c) ((vd)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
#define CSM_FNMA_F32(a, b, c) ((vf)_mm512_fnmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#define CSM_FNMA_F64(a, b, c) ((vd)_mm512_fnmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
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
static inline vi vi_taken(const uint8_t *p) { return (vi)_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)) != 0; }
static inline vl vl_taken(const uint8_t *p) { return (vl)_mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)p)) != 0; }
/* Row tails by masked loads and stores: the masked-off lanes are neither read nor written (no fault either). */
static inline __mmask16 mask16(csm_idx n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }
static inline __mmask8 mask8(csm_idx n) { return n >= 8 ? (__mmask8)0xff : (__mmask8)((1u << n) - 1); }
static inline vf vf_load_part(const float *p, csm_idx n, float fill)
{
    return (vf)_mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask16(n), p);
}
static inline void vf_store_part(float *p, vf v, csm_idx n) { _mm512_mask_storeu_ps(p, mask16(n), (__m512)v); }
static inline vd vd_load_part(const double *p, csm_idx n, double fill)
{
    return (vd)_mm512_mask_loadu_pd(_mm512_set1_pd(fill), mask8(n), p);
}
static inline void vd_store_part(double *p, vd v, csm_idx n) { _mm512_mask_storeu_pd(p, mask8(n), (__m512d)v); }
static inline vf vf_max_num(vf acc, vf x) { return (vf)_mm512_max_ps((__m512)x, (__m512)acc); }
static inline vd vd_max_num(vd acc, vd x) { return (vd)_mm512_max_pd((__m512d)x, (__m512d)acc); }
static inline vf vf_min_num(vf a, vf b) { return (vf)_mm512_min_ps((__m512)a, (__m512)b); }
static inline vd vd_min_num(vd a, vd b) { return (vd)_mm512_min_pd((__m512d)a, (__m512d)b); }
static inline int any_nan2_f32(vf a, vf b) { return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_UNORD_Q) != 0; }
static inline int any_nan2_f64(vd a, vd b) { return _mm512_cmp_pd_mask((__m512d)a, (__m512d)b, _CMP_UNORD_Q) != 0; }
/* Byte offsets k * stride as 32-bit indices: the driver only sends strides with 16 * |stride| < 2^31. */
static inline __m512i lane_offsets16(csm_idx stride)
{
    return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32((int)stride));
}
static inline __m256i lane_offsets8(csm_idx stride)
{
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)stride));
}
static inline vf vf_gather(const char *p, csm_idx stride) { return (vf)_mm512_i32gather_ps(lane_offsets16(stride), p, 1); }
static inline void vf_scatter(char *p, csm_idx stride, vf v) { _mm512_i32scatter_ps(p, lane_offsets16(stride), (__m512)v, 1); }
static inline vd vd_gather(const char *p, csm_idx stride) { return (vd)_mm512_i32gather_pd(lane_offsets8(stride), p, 1); }
static inline void vd_scatter(char *p, csm_idx stride, vd v) { _mm512_i32scatter_pd(p, lane_offsets8(stride), (__m512d)v, 1); }
static inline int any_less_f32(vf a, vf b) { return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_LT_OQ) != 0; }
static inline int any_less_f64(vd a, vd b) { return _mm512_cmp_pd_mask((__m512d)a, (__m512d)b, _CMP_LT_OQ) != 0; }
static inline int vi_any(vi m) { return _mm512_test_epi32_mask((__m512i)m, (__m512i)m) != 0; }
#define CSM_ANY_ANDNOT
static inline int vi_any_andnot(vi lanes, vi except) { return _mm512_mask_test_epi32_mask(~_mm512_test_epi32_mask((__m512i)except, (__m512i)except), (__m512i)lanes, (__m512i)lanes) != 0; }
static inline int vl_any_andnot(vl lanes, vl except) { return _mm512_mask_test_epi64_mask(~_mm512_test_epi64_mask((__m512i)except, (__m512i)except), (__m512i)lanes, (__m512i)lanes) != 0; }
static inline int vl_any(vl m) { return _mm512_test_epi64_mask((__m512i)m, (__m512i)m) != 0; }
static inline vd vf_lo_to_vd(vf v) { return (vd)_mm512_cvtps_pd(_mm512_castps512_ps256((__m512)v)); }
static inline vd vf_hi_to_vd(vf v)
{
    return (vd)_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)v), 1)));
}
static inline vf vd_pair_to_vf(vd lo, vd hi)
{
    __m512d joined = _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm512_cvtpd_ps((__m512d)lo))),
                                        _mm256_castps_pd(_mm512_cvtpd_ps((__m512d)hi)), 1);
    return (vf)_mm512_castpd_ps(joined);
}

#define CSM_F16_BLOCK_CONVERT
#define CSM_F16_VECTOR
static inline vf vf_load_f16(const uint16_t *p) { return (vf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline void vf_store_f16(uint16_t *p, vf v)
{
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT));
}
static void f16_to_f32_block(const uint16_t *src, float *dst, csm_idx n)
{
    csm_idx i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    for (; i < n; i++) dst[i] = csm_half_to_float(src[i]);
}
static void f32_to_f16_block(const float *src, uint16_t *dst, csm_idx n)
{
    csm_idx i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = csm_float_to_half(src[i]);
}

/* The exponential's 16-entry table of 2^(j/16), indexed by the low four bits of t's pattern: one permute (float32:
 * with AVX2's switch, softmax.h) */
#if CSM_X86_EXP_TABLE_F32
#define CSM_EXP_TABLE_F32
static inline vf vf_table16(const void *table, vf t)    /* the bits of 16 floats */
{
    return (vf)_mm512_permutexvar_ps((__m512i)t, _mm512_loadu_ps(table));
}
#endif
#define CSM_EXP_TABLE_F64
static inline vd vd_table16(const void *table, vd t)    /* the bits of 16 doubles */
{
    return (vd)_mm512_permutex2var_pd(_mm512_loadu_pd(table), (__m512i)t, _mm512_loadu_pd((const double *)table + 8));
}

/* Short float32 rows by transposes, sixteen rows per vector (short_rows_x86.inc): contiguous loads and stores, where
 * gathers and scatters are slow (AMD, and Intel CPUs with the GDS microcode). */
#define CSM_SHORT_ROWS_F32 short_rows_x86
static csm_idx short_rows_x86(const csm_fused *a);
#define CSM_KERNELS_TABLE csm_kernels_avx512
#define CSM_ISA_NAME "avx512"
#define CSM_ISA_DESCRIPTION "x86-64 AVX-512 F/DQ/VL/BW + FMA + F16C (16 floats per vector)"
#include "kernels.inc"

#include "transpose_x86.h"

/* A group's rows 0..7 in the low halves of its columns, rows 8..15 in the high halves; stored back in row order */
#define CSM_GROUP_ROWS 16
/* Two groups at a time (three spill the columns of 16-element rows); backward rows longer than 12 go to the rows
 * kernel, which takes them faster than 16-lane columns of both g and y (tuned) */
#define CSM_GROUPS_TOGETHER(n) 2
#define CSM_SHORT_BACKWARD_MAX 12
static inline CSM_ALWAYS_INLINE void columns_in(const char *p, csm_idx stride, int h, vf *col)
{
    __m256 lo[8], hi[8];
    for (int r = 0; r < 8; r++) {
        lo[r] = _mm256_loadu_ps((const float *)(p + r * stride) + 8 * h);
        hi[r] = _mm256_loadu_ps((const float *)(p + (8 + r) * stride) + 8 * h);
    }
    transpose8x8(lo);
    transpose8x8(hi);
    for (int r = 0; r < 8; r++) col[8 * h + r] = (vf)_mm512_insertf32x8(_mm512_castps256_ps512(lo[r]), hi[r], 1);
}
static inline CSM_ALWAYS_INLINE void columns_out(char *p, csm_idx stride, int halves, const vf *col)
{
    __m256 t[2][2][8];                                 /* [rows 0..7 or 8..15][half][row] */
    for (int h = 0; h < halves; h++) {
        for (int r = 0; r < 8; r++) {
            t[0][h][r] = _mm512_castps512_ps256((__m512)col[8 * h + r]);
            t[1][h][r] = _mm512_extractf32x8_ps((__m512)col[8 * h + r], 1);
        }
        transpose8x8(t[0][h]);
        transpose8x8(t[1][h]);
    }
    for (int q = 0; q < 2; q++)
        for (int r = 0; r < 8; r++)
            for (int h = 0; h < halves; h++) _mm256_storeu_ps((float *)(p + (8 * q + r) * stride) + 8 * h, t[q][h][r]);
}
#include "short_rows_x86.inc"

CSM_TARGET_END

#endif
