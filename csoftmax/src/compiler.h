/*
 * The compiler differences the kernels meet, in one place. The kernels are written in GNU C (vector extensions and
 * builtins), which GCC and clang both implement; MSVC does not, so Windows builds use clang (clang-cl) or MinGW GCC.
 *
 *   CSM_TARGET_BEGIN(isa) / CSM_TARGET_END: compile the functions between them for an instruction-set extension
 *       ("avx2,fma,f16c"). GCC takes a target pragma; clang ignores that pragma and needs the target attribute
 *       applied to every function instead. The build's global flags stay at the architecture's baseline.
 *   CSM_SHUFFLE(v, idx): lane i of the result is lane idx[i] of v (idx an integer vector of v's lane count).
 *   CSM_ALWAYS_INLINE: inline even where the compiler's heuristics would not (with `static inline`).
 *   csm_spin_pause(): tells the CPU that this thread is polling (x86 pause, Arm yield; nothing elsewhere), so a
 *       spin-wait leaves the core's resources to its sibling thread and does not flood the memory system.
 *   CSM_GLIBC_BASE: on glibc, the first symbol version of the architecture, for `.symver` bindings that keep the
 *       extension loadable on the oldest glibc its wheel promises (os.h, and exp/expf below for every file that
 *       includes this one).
 */
#ifndef CSOFTMAX_COMPILER_H
#define CSOFTMAX_COMPILER_H

#include <limits.h>   /* (any libc header: defines __GLIBC__ on glibc) */

#if defined(__GLIBC__) && defined(__x86_64__)
#define CSM_GLIBC_BASE "GLIBC_2.2.5"
#elif defined(__GLIBC__) && defined(__aarch64__)
#define CSM_GLIBC_BASE "GLIBC_2.17"
#endif

/* Linked to libm, exp and expf would need the versions glibc 2.29 and 2.27 gave them (a faster exp without the
 * SVID error handling): more than manylinux_2_28 promises. Their original versions, which every glibc has, give
 * the same values on a current glibc (its error handling only sets errno, which -fno-math-errno ignores). */
#ifdef CSM_GLIBC_BASE
__asm__(".symver exp, exp@" CSM_GLIBC_BASE);
__asm__(".symver expf, expf@" CSM_GLIBC_BASE);
#endif

#define CSM_PRAGMA(text) _Pragma(#text)

#if defined(__clang__)
#define CSM_TARGET_BEGIN(isa) CSM_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define CSM_TARGET_END CSM_PRAGMA(clang attribute pop)
#define CSM_SHUFFLE(v, idx) __builtin_shufflevector(v, idx)
#elif defined(__GNUC__)
#define CSM_TARGET_BEGIN(isa) CSM_PRAGMA(GCC push_options) CSM_PRAGMA(GCC target(isa))
#define CSM_TARGET_END CSM_PRAGMA(GCC pop_options)
#define CSM_SHUFFLE(v, idx) __builtin_shuffle(v, idx)
#else
#error "csoftmax's kernels need GNU C vector extensions: build with GCC or clang (clang-cl on Windows)"
#endif

#define CSM_ALWAYS_INLINE __attribute__((always_inline))
/* a variant of a kernel body kept in a function of its own: register allocation per variant (one function holding
 * every variant keeps their constants on the stack) */
#define CSM_NOINLINE __attribute__((noinline))

static inline void csm_spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
