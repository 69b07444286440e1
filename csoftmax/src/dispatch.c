/*
 * Run-time choice of the kernel table: the CPU's features are read once (cpuid, and xgetbv for the OS's promise
 * to save the 256-bit registers), never inferred from compile flags.
 */
#include <string.h>

#include "softmax.h"

#if defined(__x86_64__) || defined(_M_X64)
/* cpuid(leaf, subleaf) into r[] = {eax, ebx, ecx, edx}: 0 if the CPU has no such leaf. xcr0(): the register state
 * the OS saves on a context switch (bits 1, 2: XMM, YMM; 5-7: opmask and ZMM), read only where cpuid leaf 1 says
 * OSXSAVE. GCC and clang (clang-cl too) use <cpuid.h> and inline assembly, MSVC its intrinsics. */
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>

static int cpuid(unsigned int leaf, unsigned int subleaf, unsigned int r[4])
{
    int regs[4];
    __cpuid(regs, (int)(leaf & 0x80000000u));
    if ((unsigned int)regs[0] < leaf) return 0;
    __cpuidex(regs, (int)leaf, (int)subleaf);
    for (int i = 0; i < 4; i++) r[i] = (unsigned int)regs[i];
    return 1;
}

static unsigned int xcr0(void) { return (unsigned int)_xgetbv(0); }
#else
#include <cpuid.h>

static int cpuid(unsigned int leaf, unsigned int subleaf, unsigned int r[4])
{
    return __get_cpuid_count(leaf, subleaf, &r[0], &r[1], &r[2], &r[3]);
}

static unsigned int xcr0(void)
{
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return lo;
}
#endif

static int x86_probe_avx2_fma_f16c(void)
{
    unsigned int r[4];
    if (!cpuid(1, 0, r)) return 0;
    const unsigned int fma = 1u << 12, osxsave = 1u << 27, avx = 1u << 28, f16c = 1u << 29;
    if ((r[2] & (fma | osxsave | avx | f16c)) != (fma | osxsave | avx | f16c)) return 0;
    if ((xcr0() & 6u) != 6u) return 0;                 /* XMM and YMM state enabled by the OS */
    if (!cpuid(7, 0, r)) return 0;
    return (r[1] >> 5) & 1u;                           /* AVX2 */
}

static int x86_probe_avx512(void)
{
    unsigned int r[4];
    if (!x86_probe_avx2_fma_f16c()) return 0;
    if ((xcr0() & 0xe6u) != 0xe6u) return 0;           /* plus opmask and both halves of the ZMM state */
    if (!cpuid(7, 0, r)) return 0;
    const unsigned int f = 1u << 16, dq = 1u << 17, bw = 1u << 30, vl = 1u << 31;
    return (r[1] & (f | dq | bw | vl)) == (f | dq | bw | vl);
}

/* cpuid traps to the hypervisor on a virtual machine (microseconds each): probe once, remember. The first call
 * happens at import, under the GIL; a racing second probe would only store the same value. */
static int x86_features = -1;                          /* bit 0: AVX2+FMA+F16C, bit 1: AVX-512 */

static int x86_probe(void)
{
    if (x86_features < 0) x86_features = x86_probe_avx2_fma_f16c() | (x86_probe_avx512() << 1);
    return x86_features;
}

static int x86_has_avx2_fma_f16c(void) { return x86_probe() & 1; }
static int x86_has_avx512(void) { return (x86_probe() >> 1) & 1; }
#endif

#if defined(__aarch64__)
/* Advanced SIMD (with its fused multiply-adds and float16 conversions) is part of ARMv8-A, but the architecture lets
 * an implementation leave it out: Linux says in the auxiliary vector (HWCAP_FP, bit 0; HWCAP_ASIMD, bit 1). The
 * other systems that run on aarch64 (macOS, Windows) require it. */
#if defined(__linux__)
#include <sys/auxv.h>
static int aarch64_has_neon(void) { return (getauxval(AT_HWCAP) & 3u) == 3u; }
#else
static int aarch64_has_neon(void) { return 1; }
#endif
#endif

int csm_available_kernels(const csm_kernels **list, int max)
{
    int n = 0;
#if defined(__x86_64__) || defined(_M_X64)
    if (n < max && x86_has_avx512()) list[n++] = &csm_kernels_avx512;
    if (n < max && x86_has_avx2_fma_f16c()) list[n++] = &csm_kernels_avx2;
#elif defined(__aarch64__)
    if (n < max && aarch64_has_neon()) list[n++] = &csm_kernels_neon;
#endif
    if (n < max) list[n++] = &csm_kernels_baseline;
    return n;
}

const csm_kernels *csm_best_kernels(void)
{
    const csm_kernels *list[4];
    csm_available_kernels(list, 4);
    return list[0];
}

const csm_kernels *csm_kernels_by_name(const char *name)
{
    const csm_kernels *list[4];
    int n = csm_available_kernels(list, 4);
    for (int i = 0; i < n; i++)
        if (strcmp(list[i]->name, name) == 0) return list[i];
    return NULL;
}

const char *csm_cpu_features(void)
{
#if defined(__x86_64__) || defined(_M_X64)
    if (x86_has_avx512()) return "x86-64 with AVX-512 (F, DQ, VL, BW), AVX2, FMA, F16C";
    return x86_has_avx2_fma_f16c() ? "x86-64 with AVX2, FMA, F16C" : "x86-64 without AVX2/FMA/F16C";
#elif defined(__aarch64__)
    return aarch64_has_neon() ? "aarch64 with Advanced SIMD (NEON)" : "aarch64 without Advanced SIMD";
#else
    return "unknown architecture";
#endif
}
