/*
 * AVX2 + FMA + F16C kernels (x86-64 only). The target pragma applies to this file alone: the build's global flags
 * stay at the x86-64 baseline, and dispatch.c selects this table only when the CPU and OS support it.
 */
#include "softmax.h"

#if defined(__x86_64__) || defined(_M_X64)

#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#define CSM_VBYTES 32
#define CSM_FMA_F32(a, b, c) ((vf)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#define CSM_FMA_F64(a, b, c) ((vd)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#define CSM_FNMA_F32(a, b, c) ((vf)_mm256_fnmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#define CSM_FNMA_F64(a, b, c) ((vd)_mm256_fnmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#define CSM_ANY
#define CSM_WIDEN
#include "simd_vec.h"
static inline int vi_any(vi m) { return !_mm256_testz_si256((__m256i)m, (__m256i)m); }
static inline int vl_any(vl m) { return !_mm256_testz_si256((__m256i)m, (__m256i)m); }
static inline vd vf_lo_to_vd(vf v) { return (vd)_mm256_cvtps_pd(_mm256_castps256_ps128((__m256)v)); }
static inline vd vf_hi_to_vd(vf v) { return (vd)_mm256_cvtps_pd(_mm256_extractf128_ps((__m256)v, 1)); }

/* F16C converts 8 halves per instruction, with round-to-nearest-even on the way down as the scalar code does. */
#define CSM_F16_BLOCK_CONVERT
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

#define CSM_KERNELS_TABLE csm_kernels_avx2
#define CSM_ISA_NAME "avx2"
#define CSM_ISA_DESCRIPTION "x86-64 AVX2 + FMA + F16C (8 floats per vector)"
#include "kernels.inc"

#endif
