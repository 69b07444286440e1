/*
 * Baseline kernels: 16-byte vectors with no instruction-set extension beyond the architecture's minimum. On x86-64
 * this is SSE2 (every x86-64 CPU has it); on aarch64 the same source becomes NEON. No fused multiply-add: the
 * compiler is not allowed to contract (-ffp-contract=off), so results are the same wherever this runs.
 */
#include "softmax.h"

#define CSM_VBYTES 16
#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#define CSM_MAX_NUM
#define CSM_ANY_NAN2
#define CSM_NARROW
#include "simd_vec.h"
static inline vf vf_max_num(vf acc, vf x) { return (vf)_mm_max_ps((__m128)x, (__m128)acc); }
static inline vd vd_max_num(vd acc, vd x) { return (vd)_mm_max_pd((__m128d)x, (__m128d)acc); }
static inline vf vf_min_num(vf a, vf b) { return (vf)_mm_min_ps((__m128)a, (__m128)b); }
static inline vd vd_min_num(vd a, vd b) { return (vd)_mm_min_pd((__m128d)a, (__m128d)b); }
static inline int any_nan2_f32(vf a, vf b) { return _mm_movemask_ps(_mm_cmpunord_ps((__m128)a, (__m128)b)); }
static inline int any_nan2_f64(vd a, vd b) { return _mm_movemask_pd(_mm_cmpunord_pd((__m128d)a, (__m128d)b)); }
static inline vf vd_pair_to_vf(vd lo, vd hi) { return (vf)_mm_movelh_ps(_mm_cvtpd_ps((__m128d)lo), _mm_cvtpd_ps((__m128d)hi)); }
#else
#include "simd_vec.h"
#endif

#define CSM_KERNELS_TABLE csm_kernels_baseline
#define CSM_ISA_NAME "baseline"
#if defined(__x86_64__) || defined(_M_X64)
#define CSM_ISA_DESCRIPTION "x86-64 baseline (SSE2, 4 floats per vector)"
#elif defined(__aarch64__)
#define CSM_ISA_DESCRIPTION "aarch64 baseline (NEON, 4 floats per vector)"
#else
#define CSM_ISA_DESCRIPTION "portable C (16-byte vector extensions)"
#endif
#include "kernels.inc"
