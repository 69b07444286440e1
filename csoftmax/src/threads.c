/* The thread pool behind csoftmax's parallel kernels: see threads.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "compiler.h"
#include "threads.h"

/* glibc 2.34 moved the thread functions into libc under a new symbol version; binding those used here to their
 * original versions keeps the wheel loadable on the older glibc that manylinux_2_28 promises (it exists in both). */
#ifdef CSM_GLIBC_BASE
__asm__(".symver pthread_create, pthread_create@" CSM_GLIBC_BASE);
__asm__(".symver pthread_key_create, pthread_key_create@" CSM_GLIBC_BASE);
__asm__(".symver pthread_getspecific, pthread_getspecific@" CSM_GLIBC_BASE);
__asm__(".symver pthread_setspecific, pthread_setspecific@" CSM_GLIBC_BASE);
__asm__(".symver pthread_once, pthread_once@" CSM_GLIBC_BASE);
#endif

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work;          /* a job has tasks (or phases) to take */
    pthread_cond_t finished;      /* a job finished */
    pthread_cond_t park;          /* pool.active grew: parked workers below it may run again */
    int n_workers;
    int active;                   /* workers (ids 0..active-1) the latest job could use; the others are parked */
    int parked;                   /* workers waiting on pool.park */
    csm_job *job;                 /* the one job in the pool, or NULL */
    unsigned generation;          /* bumped (under the lock) whenever pool.work is signalled: spinners watch it */
    unsigned progress;            /* the same for pool.finished */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          0, 0, 0, NULL, 0, 0};

static int atfork_registered = 0;                /* under pool.lock */

/* In a forked child the workers do not exist and the lock may have been held by one of them: start afresh. */
static void forget_pool_in_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.work, NULL);
    pthread_cond_init(&pool.finished, NULL);
    pthread_cond_init(&pool.park, NULL);
    pool.n_workers = pool.active = pool.parked = 0;
    pool.job = NULL;
}


static void signal_work(void)
{
    __atomic_add_fetch(&pool.generation, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool.work);
}

static void signal_progress(void)
{
    __atomic_add_fetch(&pool.progress, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool.finished);
}

static double now_ms(void);

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Polls, without the lock, until *word differs from seen (1) or max_ms passed (0). */
static int spin_until_changed(const unsigned *word, unsigned seen, double max_ms)
{
    const double deadline = now_ms() + max_ms;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != seen) return 1;
            cpu_relax();
        }
        if (now_ms() > deadline) return 0;
    }
}

/* Called with the lock held when a phase's last task is done (or the job was cancelled). */
static void advance(csm_job *job)
{
    for (;;) {
        if (job->cancelled) break;
        if (job->between) job->between(job, job->phase);
        if (++job->phase >= job->n_phases) break;
        job->total = job->n_tasks(job, job->phase);
        job->next = job->done = 0;
        if (job->total > 0) {
            signal_work();
            signal_progress();                           /* a helping caller waits there: new tasks */
            return;
        }
    }
    job->finished = 1;
    pool.job = NULL;
    signal_progress();
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

/* Takes the next task of the job's current phase, runs it without the lock, and records it done (advancing the
 * phase after its last task). Called with the lock held and a task available; returns with the lock held. Workers
 * and the helping caller share this one protocol. */
static void run_next_task(csm_job *job)
{
    int phase = job->phase;
    csm_idx task = job->next++;
    pthread_mutex_unlock(&pool.lock);
    job->run(job, phase, task);
    pthread_mutex_lock(&pool.lock);
    job->done++;
    if (job->done == job->total || (job->cancelled && job->done == job->next)) advance(job);
}

static void *worker_main(void *arg)
{
    const int id = (int)(intptr_t)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        if (id >= pool.active) {
            /* surplus since the thread count dropped: asleep, neither spinning nor woken by pool.work, until a job
             * needs this worker again */
            pool.parked++;
            while (id >= pool.active) pthread_cond_wait(&pool.park, &pool.lock);
            pool.parked--;
            continue;
        }
        csm_job *job = pool.job;
        if (job && id < job->threads - 1 && !job->cancelled && job->next < job->total) {
            run_next_task(job);
        } else {
            unsigned seen = pool.generation;
            pthread_mutex_unlock(&pool.lock);
            spin_until_changed(&pool.generation, seen, CSM_SPIN_MS);
            pthread_mutex_lock(&pool.lock);
            /* the generation only changes under the lock, before the broadcast: no wake-up can be missed */
            if (pool.generation == seen) pthread_cond_wait(&pool.work, &pool.lock);
        }
    }
    return NULL;
}

int csm_job_start(csm_job *job)
{
    pthread_mutex_lock(&pool.lock);
    if (!atfork_registered) {
        pthread_atfork(NULL, NULL, forget_pool_in_child);
        atfork_registered = 1;
    }
    if (pool.job) {                                   /* another Python thread's job: run this one inline */
        pthread_mutex_unlock(&pool.lock);
        return -1;
    }
    int wanted = job->threads - 1 < CSM_MAX_WORKERS ? job->threads - 1 : CSM_MAX_WORKERS;   /* the caller is one */
    while (pool.n_workers < wanted) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&thread, &attr, worker_main, (void *)(intptr_t)pool.n_workers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pool.n_workers++;
    }
    if (job->threads - 1 > pool.n_workers) job->threads = pool.n_workers + 1;
    if (job->threads - 1 > pool.active && pool.parked > 0) pthread_cond_broadcast(&pool.park);
    pool.active = job->threads - 1;                   /* workers above it park when they next look */
    job->phase = job->cancelled = job->finished = 0;
    job->total = job->n_tasks(job, 0);
    job->next = job->done = 0;
    pool.job = job;
    if (job->total == 0) {
        advance(job);
    } else {
        signal_work();
    }
    pthread_mutex_unlock(&pool.lock);
    return 0;
}

int csm_job_help(csm_job *job, int budget_ms)
{
    const double deadline = budget_ms < 0 ? 1e300 : now_ms() + budget_ms;
    pthread_mutex_lock(&pool.lock);
    while (!job->finished) {
        if (!job->cancelled && job->next < job->total) {
            run_next_task(job);
            if (now_ms() > deadline) break;
        } else {
            /* the workers hold the last tasks of this phase: wait for the phase or the job to end */
            unsigned seen = pool.progress;
            double left = deadline - now_ms();
            if (left <= 0) break;
            pthread_mutex_unlock(&pool.lock);
            spin_until_changed(&pool.progress, seen, left < CSM_SPIN_MS ? left : CSM_SPIN_MS);
            pthread_mutex_lock(&pool.lock);
            if (pool.progress != seen) continue;
            if (budget_ms < 0) {
                pthread_cond_wait(&pool.finished, &pool.lock);
            } else {
                left = deadline - now_ms();
                if (left <= 0) break;
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                long nsec = until.tv_nsec + (long)(left * 1e6);
                until.tv_sec += nsec / 1000000000L;
                until.tv_nsec = nsec % 1000000000L;
                if (pthread_cond_timedwait(&pool.finished, &pool.lock, &until) == ETIMEDOUT) break;
            }
        }
    }
    int finished = job->finished;
    pthread_mutex_unlock(&pool.lock);
    return finished;
}

void csm_pool_state(int *workers, int *parked)
{
    pthread_mutex_lock(&pool.lock);
    *workers = pool.n_workers;
    *parked = pool.parked;
    pthread_mutex_unlock(&pool.lock);
}

void csm_job_cancel(csm_job *job)
{
    pthread_mutex_lock(&pool.lock);
    if (!job->finished) {
        job->cancelled = 1;
        if (job->done == job->next) advance(job);       /* nothing running: finish now */
    }
    pthread_mutex_unlock(&pool.lock);
}

/* Per-thread scratch: a heap block per thread (a new block per task would be faulted in anew every time), freed by
 * the key's destructor when the thread exits. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
typedef struct { void *block[CSM_SCRATCH_BUFFERS]; size_t size[CSM_SCRATCH_BUFFERS]; } scratch_t;

static void scratch_free(void *p)
{
    scratch_t *s = p;
    for (int i = 0; i < CSM_SCRATCH_BUFFERS; i++) free(s->block[i]);
    free(s);
}

static void scratch_key_create(void) { pthread_key_create(&scratch_key, scratch_free); }

void *csm_scratch(int which, size_t bytes)
{
    pthread_once(&scratch_once, scratch_key_create);
    scratch_t *s = pthread_getspecific(scratch_key);
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) return NULL;
        if (pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->size[which] < bytes) {
        void *block = NULL;
        if (posix_memalign(&block, 64, bytes) != 0) return NULL;
        free(s->block[which]);
        s->block[which] = block;
        s->size[which] = bytes;
    }
    return s->block[which];
}

void csm_job_run_inline(csm_job *job)
{
    for (int phase = 0; phase < job->n_phases; phase++) {
        csm_idx total = job->n_tasks(job, phase);
        for (csm_idx t = 0; t < total; t++) job->run(job, phase, t);
        if (job->between) job->between(job, phase);
    }
    job->finished = 1;
}

/* The thread count for csoftmax's jobs; exported (not static) so that threadpoolctl can read and set it. */
static int num_threads = 0;

/* Clamped to [1, the caller and CSM_MAX_WORKERS]: threadpoolctl calls this directly. */
void csm_set_num_threads(int n) { num_threads = n < 1 ? 1 : n > CSM_MAX_WORKERS + 1 ? CSM_MAX_WORKERS + 1 : n; }

int csm_get_num_threads(void)
{
    if (num_threads <= 0) csm_set_num_threads(csm_default_threads());
    return num_threads;
}

/* CPUs this process may run on, lowered by a cgroup v2 CPU quota (containers), at least 1. */
int csm_default_threads(void)
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
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char quota[32];
        long period;
        if (fscanf(f, "%31s %ld", quota, &period) == 2 && quota[0] != 'm' && period > 0) {
            long q = atol(quota);
            int limit = (int)((q + period - 1) / period);
            if (limit >= 1 && limit < n) n = limit;
        }
        fclose(f);
    }
    return n < 1 ? 1 : n;
}
