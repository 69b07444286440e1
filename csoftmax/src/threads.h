/*
 * A small thread pool for csoftmax's kernels (threads.c).
 *
 * A job is a sequence of phases; each phase is a set of independent tasks that any thread may run, and between two
 * phases one thread runs the job's `between` step (merging per-task results). Workers are created on first use.
 * Each job may use workers 0..threads-2; the ones above that park (sleep without polling, and are not woken by
 * later jobs) until a job asks for more threads again, so lowering the thread count leaves no thread spinning.
 * The submitting thread runs tasks too, in slices of bounded time (csm_job_help), so that between slices the
 * Python layer can take the GIL and react to Ctrl-C (csm_job_cancel stops the job at the next task boundary).
 *
 * After fork() (POSIX) the child has none of the parent's threads: a fork handler forgets them, and the next job
 * in the child creates its own workers.
 */
#ifndef CSOFTMAX_THREADS_H
#define CSOFTMAX_THREADS_H

#include "softmax.h"

typedef struct csm_job csm_job;
struct csm_job {
    int n_phases;
    csm_idx (*n_tasks)(csm_job *job, int phase);
    void (*run)(csm_job *job, int phase, csm_idx task);
    void (*between)(csm_job *job, int phase);      /* may be NULL */
    void *ctx;
    int threads;                                    /* threads that may take part, the caller included */
    /* managed by the pool */
    int phase, cancelled, finished;
    csm_idx total, next, done;
};

int csm_job_start(csm_job *job);                    /* 0, or -1 if the pool is busy: run inline */
/* Runs tasks (or waits for the workers' last ones) for about budget_ms (< 0: until the end); 1 when finished. */
int csm_job_help(csm_job *job, int budget_ms);
void csm_job_cancel(csm_job *job);
void csm_job_run_inline(csm_job *job);              /* all phases on the calling thread */
void csm_pool_state(int *workers, int *parked);     /* workers created, and how many of them are parked */

/* Buffer `which` (0 or 1) of at least `bytes` for the calling thread's tasks (64-byte aligned), kept for its next
 * task and freed when the thread ends; NULL if out of memory. The previous contents are not kept. */
#define CSM_SCRATCH_BUFFERS 2
void *csm_scratch(int which, size_t bytes);

int csm_default_threads(void);                      /* CPUs this process may use (affinity and cgroup quota) */
int csm_cpu_quota_threads(const char *path, int n); /* n lowered to a cgroup v2 cpu.max file's limit (POSIX) */
int csm_get_num_threads(void);                      /* the setting (default: csm_default_threads) */
void csm_set_num_threads(int n);

#endif
