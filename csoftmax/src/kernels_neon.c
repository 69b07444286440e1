/*
 * NEON kernels (aarch64 only): the baseline's 16-byte vectors plus what every ARMv8-A core has beyond plain vector
 * arithmetic: fused multiply-adds (fmla/fmls), float16 conversions four lanes per instruction (fcvtl/fcvtn), and
 * across-lane reductions (umaxv) for the branch tests. All of these are part of the architecture's Advanced SIMD, so
 * the file needs no target pragma; dispatch.c still asks the OS for Advanced SIMD before choosing it, and the
 * baseline table stays available for comparisons (its results are the same bits as x86-64's baseline).
 */
#include "softmax.h"

#if defined(__aarch64__)

#include <arm_neon.h>

#define CSM_VBYTES 16
#define CSM_FMA_F32(a, b, c) ((vf)vfmaq_f32((float32x4_t)(c), (float32x4_t)(a), (float32x4_t)(b)))
#define CSM_FMA_F64(a, b, c) ((vd)vfmaq_f64((float64x2_t)(c), (float64x2_t)(a), (float64x2_t)(b)))
#define CSM_FNMA_F32(a, b, c) ((vf)vfmsq_f32((float32x4_t)(c), (float32x4_t)(a), (float32x4_t)(b)))
#define CSM_FNMA_F64(a, b, c) ((vd)vfmsq_f64((float64x2_t)(c), (float64x2_t)(a), (float64x2_t)(b)))
#define CSM_ANY
#define CSM_NARROW
#include "simd_vec.h"

/* Whether any lane of a comparison mask is set: the largest 32-bit lane, one instruction. */
static inline int vi_any(vi m) { return vmaxvq_u32((uint32x4_t)m) != 0; }
static inline int vl_any(vl m) { return vmaxvq_u32((uint32x4_t)m) != 0; }

static inline vf vd_pair_to_vf(vd lo, vd hi)
{
    return (vf)vcvt_high_f32_f64(vcvt_f32_f64((float64x2_t)lo), (float64x2_t)hi);
}

/* float16 storage converted four lanes at a time, rounding to nearest even on the way down (the FPCR's default
 * mode, which is what the scalar converters do) */
#define CSM_F16_BLOCK_CONVERT
#define CSM_F16_VECTOR
static inline vf vf_load_f16(const uint16_t *p) { return (vf)vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
static inline void vf_store_f16(uint16_t *p, vf v) { vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32((float32x4_t)v))); }
static void f16_to_f32_block(const uint16_t *src, float *dst, csm_idx n)
{
    csm_idx i = 0;
    for (; i + 4 <= n; i += 4) vf_store(dst + i, vf_load_f16(src + i));
    for (; i < n; i++) dst[i] = csm_half_to_float(src[i]);
}
static void f32_to_f16_block(const float *src, uint16_t *dst, csm_idx n)
{
    csm_idx i = 0;
    for (; i + 4 <= n; i += 4) vf_store_f16(dst + i, vf_load(src + i));
    for (; i < n; i++) dst[i] = csm_float_to_half(src[i]);
}

#define CSM_KERNELS_TABLE csm_kernels_neon
#define CSM_ISA_NAME "neon"
#define CSM_ISA_DESCRIPTION "aarch64 NEON + FMA + float16 conversions (4 floats per vector)"
#include "kernels.inc"

#endif
