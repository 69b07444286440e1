/*
 * Baseline kernels: 16-byte vectors with no instruction-set extension beyond the architecture's minimum. On x86-64
 * this is SSE2 (every x86-64 CPU has it); on aarch64 the same source becomes NEON. No fused multiply-add: the
 * compiler is not allowed to contract (-ffp-contract=off), so results are the same wherever this runs.
 */
#include "softmax.h"

#define CSM_VBYTES 16
#include "simd_vec.h"

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
