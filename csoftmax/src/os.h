/*
 * What csoftmax asks of the operating system, in one place: POSIX (Linux, macOS) or Win32, chosen here and
 * nowhere else. threads.c and blocks.c include this header first (it selects the POSIX feature set).
 *
 *   csm_mutex, csm_cond       a lock and a condition variable, statically initialised (CSM_MUTEX_INIT, CSM_COND_INIT)
 *   csm_cond_wait_ms          waits at most `ms` milliseconds; 0 when that time passed without a wake-up
 *   csm_thread_start          starts a detached thread running fn(arg); 0 on success
 *   csm_once, csm_tls         run-once initialisation; a per-thread pointer whose destructor runs when a thread
 *                             that set it ends (declared CSM_OS_CALLBACK: Win32 has its own calling convention)
 *   csm_at_fork_child         a handler the child of fork() runs (Win32 has no fork: nothing to do)
 *   csm_now_ms                a monotonic clock in milliseconds
 *   csm_usable_cpus           CPUs this process may run on (affinity; on Linux also a cgroup v2 CPU quota), >= 1
 *   csm_cpu_quota_limit       (POSIX) a count lowered to the limit of a cgroup v2 cpu.max file
 *   csm_aligned_alloc/free    heap blocks with an alignment (a power of two, at least sizeof(void *))
 *   csm_page_size, csm_pages_map/unmap   zeroed, page-aligned memory straight from the OS; `huge` asks for huge
 *                             pages where the OS takes that hint (Linux transparent huge pages)
 */
#ifndef CSOFTMAX_OS_H
#define CSOFTMAX_OS_H

#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE                      /* before any system header: sched_getaffinity, CPU_COUNT, MADV_HUGEPAGE */
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "compiler.h"                    /* CSM_GLIBC_BASE */

/* what csm_thread_start hands its new thread (freed by the thread): the OSes' thread functions have other types */
typedef struct { void (*fn)(void *); void *arg; } csm_thread_start_args;

#ifdef _WIN32

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX                         /* no min/max macros: csoftmax's headers use those names */
#endif
#include <windows.h>
#include <malloc.h>
#include <process.h>

#define CSM_OS_CALLBACK WINAPI

typedef SRWLOCK csm_mutex;
typedef CONDITION_VARIABLE csm_cond;
typedef INIT_ONCE csm_once;
typedef DWORD csm_tls;
#define CSM_MUTEX_INIT SRWLOCK_INIT
#define CSM_COND_INIT CONDITION_VARIABLE_INIT
#define CSM_ONCE_INIT INIT_ONCE_STATIC_INIT

static inline void csm_mutex_init(csm_mutex *m) { InitializeSRWLock(m); }
static inline void csm_mutex_lock(csm_mutex *m) { AcquireSRWLockExclusive(m); }
static inline void csm_mutex_unlock(csm_mutex *m) { ReleaseSRWLockExclusive(m); }
static inline void csm_cond_init(csm_cond *c) { InitializeConditionVariable(c); }
static inline void csm_cond_broadcast(csm_cond *c) { WakeAllConditionVariable(c); }
static inline void csm_cond_wait(csm_cond *c, csm_mutex *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }

static inline int csm_cond_wait_ms(csm_cond *c, csm_mutex *m, double ms)
{
    DWORD wait = 0;                                                       /* whole milliseconds, rounded up */
    if (ms > 0) wait = ms < 4e9 ? (DWORD)ms + ((DWORD)ms < ms) : INFINITE - 1;
    return SleepConditionVariableSRW(c, m, wait, 0) || GetLastError() != ERROR_TIMEOUT;
}

static inline unsigned __stdcall csm_thread_trampoline(void *p)
{
    csm_thread_start_args args = *(csm_thread_start_args *)p;
    free(p);
    args.fn(args.arg);
    return 0;
}

static inline int csm_thread_start(void (*fn)(void *), void *arg)
{
    csm_thread_start_args *args = malloc(sizeof *args);
    if (!args) return -1;
    args->fn = fn;
    args->arg = arg;
    /* _beginthreadex rather than CreateThread: the C runtime sets up its per-thread state for the new thread */
    uintptr_t thread = _beginthreadex(NULL, 0, csm_thread_trampoline, args, 0, NULL);
    if (!thread) {
        free(args);
        return -1;
    }
    CloseHandle((HANDLE)thread);                                           /* detached */
    return 0;
}

typedef struct { void (*fn)(void); } csm_once_call;

static inline BOOL CALLBACK csm_once_trampoline(PINIT_ONCE once, PVOID call, PVOID *context)
{
    (void)once;
    (void)context;
    ((csm_once_call *)call)->fn();
    return TRUE;
}

static inline void csm_call_once(csm_once *once, void (*fn)(void))
{
    csm_once_call call = {fn};
    InitOnceExecuteOnce(once, csm_once_trampoline, &call, NULL);
}

/* Fiber-local storage: unlike TlsAlloc's slots, its callback runs when a thread ends, as a pthread key's does. */
static inline int csm_tls_create(csm_tls *key, void (CSM_OS_CALLBACK *destructor)(void *))
{
    *key = FlsAlloc(destructor);
    return *key == FLS_OUT_OF_INDEXES ? -1 : 0;
}
static inline void *csm_tls_get(csm_tls key) { return FlsGetValue(key); }
static inline int csm_tls_set(csm_tls key, void *value) { return FlsSetValue(key, value) ? 0 : -1; }

static inline void csm_at_fork_child(void (*handler)(void)) { (void)handler; }

static inline double csm_now_ms(void)
{
    LARGE_INTEGER count, frequency;
    QueryPerformanceCounter(&count);
    QueryPerformanceFrequency(&frequency);
    return (double)count.QuadPart * 1e3 / (double)frequency.QuadPart;
}

/* The affinity mask covers one processor group (at most 64 CPUs): with several groups, count them all. */
static inline int csm_usable_cpus(void)
{
    DWORD_PTR process_mask, system_mask;
    int n = 0;
    if (GetActiveProcessorGroupCount() == 1 && GetProcessAffinityMask(GetCurrentProcess(), &process_mask, &system_mask))
        for (; process_mask; process_mask &= process_mask - 1) n++;
    else
        n = (int)GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
    return n < 1 ? 1 : n;
}

static inline void *csm_aligned_alloc(size_t alignment, size_t bytes) { return _aligned_malloc(bytes, alignment); }
static inline void csm_aligned_free(void *p) { _aligned_free(p); }

static inline size_t csm_page_size(void)
{
    SYSTEM_INFO info;
    GetSystemInfo(&info);
    return info.dwPageSize;
}

static inline void *csm_pages_map(size_t bytes, int huge)
{
    (void)huge;                          /* large pages need a privilege most accounts lack: not asked for */
    return VirtualAlloc(NULL, bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
}
static inline void csm_pages_unmap(void *p, size_t bytes)
{
    (void)bytes;
    VirtualFree(p, 0, MEM_RELEASE);
}

#else /* POSIX */

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* glibc 2.34 moved the thread functions into libc under a new symbol version; binding those used here to their
 * original versions keeps the wheel loadable on the older glibc that manylinux_2_28 promises (it exists in both).
 * A directive for a function a file does not call adds nothing to its object. */
#ifdef CSM_GLIBC_BASE
__asm__(".symver pthread_create, pthread_create@" CSM_GLIBC_BASE);
__asm__(".symver pthread_key_create, pthread_key_create@" CSM_GLIBC_BASE);
__asm__(".symver pthread_getspecific, pthread_getspecific@" CSM_GLIBC_BASE);
__asm__(".symver pthread_setspecific, pthread_setspecific@" CSM_GLIBC_BASE);
__asm__(".symver pthread_once, pthread_once@" CSM_GLIBC_BASE);
#endif

#define CSM_OS_CALLBACK

typedef pthread_mutex_t csm_mutex;
typedef pthread_cond_t csm_cond;
typedef pthread_once_t csm_once;
typedef pthread_key_t csm_tls;
#define CSM_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define CSM_COND_INIT PTHREAD_COND_INITIALIZER
#define CSM_ONCE_INIT PTHREAD_ONCE_INIT

static inline void csm_mutex_init(csm_mutex *m) { pthread_mutex_init(m, NULL); }
static inline void csm_mutex_lock(csm_mutex *m) { pthread_mutex_lock(m); }
static inline void csm_mutex_unlock(csm_mutex *m) { pthread_mutex_unlock(m); }
static inline void csm_cond_init(csm_cond *c) { pthread_cond_init(c, NULL); }
static inline void csm_cond_broadcast(csm_cond *c) { pthread_cond_broadcast(c); }
static inline void csm_cond_wait(csm_cond *c, csm_mutex *m) { pthread_cond_wait(c, m); }

/* pthread_cond_timedwait takes a deadline on the condition variable's clock, CLOCK_REALTIME by default. */
static inline int csm_cond_wait_ms(csm_cond *c, csm_mutex *m, double ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long nsec = until.tv_nsec + (long)(ms * 1e6);
    until.tv_sec += nsec / 1000000000L;
    until.tv_nsec = nsec % 1000000000L;
    return pthread_cond_timedwait(c, m, &until) != ETIMEDOUT;
}

static inline void *csm_thread_trampoline(void *p)
{
    csm_thread_start_args args = *(csm_thread_start_args *)p;
    free(p);
    args.fn(args.arg);
    return NULL;
}

static inline int csm_thread_start(void (*fn)(void *), void *arg)
{
    csm_thread_start_args *args = malloc(sizeof *args);
    if (!args) return -1;
    args->fn = fn;
    args->arg = arg;
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&thread, &attr, csm_thread_trampoline, args);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(args);
        return -1;
    }
    return 0;
}

static inline void csm_call_once(csm_once *once, void (*fn)(void)) { pthread_once(once, fn); }

static inline int csm_tls_create(csm_tls *key, void (CSM_OS_CALLBACK *destructor)(void *))
{
    return pthread_key_create(key, destructor);
}
static inline void *csm_tls_get(csm_tls key) { return pthread_getspecific(key); }
static inline int csm_tls_set(csm_tls key, void *value) { return pthread_setspecific(key, value); }

static inline void csm_at_fork_child(void (*handler)(void)) { pthread_atfork(NULL, NULL, handler); }

static inline double csm_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

/* n lowered to the CPU limit of a cgroup v2 cpu.max file at path ("max", or "<quota> <period>": microseconds of
 * CPU time per period, rounded up to whole CPUs; a container's limit); n itself when there is no such file or limit */
static inline int csm_cpu_quota_limit(const char *path, int n)
{
    FILE *f = fopen(path, "r");
    if (!f) return n;
    char quota[32];
    long period;
    if (fscanf(f, "%31s %ld", quota, &period) == 2 && quota[0] != 'm' && period > 0) {
        long q = atol(quota);
        long limit = (q + period - 1) / period;
        if (limit >= 1 && limit < n) n = (int)limit;
    }
    fclose(f);
    return n;
}

static inline int csm_usable_cpus(void)
{
    int n = 1;
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    else
#endif
    {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online > 0 ? (int)online : 1;
    }
    return csm_cpu_quota_limit("/sys/fs/cgroup/cpu.max", n < 1 ? 1 : n);
}

static inline void *csm_aligned_alloc(size_t alignment, size_t bytes)
{
    void *p = NULL;
    return posix_memalign(&p, alignment, bytes) == 0 ? p : NULL;
}
static inline void csm_aligned_free(void *p) { free(p); }

static inline size_t csm_page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

static inline void *csm_pages_map(size_t bytes, int huge)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    if (huge) madvise(p, bytes, MADV_HUGEPAGE);
#else
    (void)huge;
#endif
    return p;
}
static inline void csm_pages_unmap(void *p, size_t bytes) { munmap(p, bytes); }

#endif

#endif
