/*
 * A small thread pool for csoftmax's kernels (threads.c).
 *
 * A job is a sequence of phases; each phase is a set of independent tasks that any thread may run, and between two
 * phases one thread runs the job's `between` step (merging per-task results). Workers are created on first use.
 * The submitting thread does not run tasks: it waits with a timeout, so that the Python layer can take the GIL
 * between waits and react to Ctrl-C (csm_job_cancel stops the job at the next task boundary).
 *
 * After fork() the child has none of the parent's threads: a pthread_atfork handler forgets them, and the next
 * job in the child creates its own workers.
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
    int threads;                                    /* workers that may take part */
    /* managed by the pool */
    int phase, cancelled, finished;
    csm_idx total, next, done;
};

int csm_job_start(csm_job *job);                    /* 0, or -1 if the pool is busy or threads failed: run inline */
int csm_job_wait(csm_job *job, int timeout_ms);     /* 1 when finished, 0 on timeout; timeout < 0: wait forever */
void csm_job_cancel(csm_job *job);
void csm_job_run_inline(csm_job *job);              /* all phases on the calling thread */

int csm_default_threads(void);                      /* CPUs this process may use (affinity and cgroup quota) */
int csm_get_num_threads(void);                      /* the setting (default: csm_default_threads) */
void csm_set_num_threads(int n);

#endif
