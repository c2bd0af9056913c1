/* The runtime's thread pool: parallel loops for generated code and for
 * large matrix products.
 *
 * gim_rt_parallel_for(n, fn, env) cuts [0, n) into P = min(GIM_RT_PARTS, n)
 * contiguous parts, part t being [t·n/P, (t+1)·n/P), and calls fn once per
 * part with the part's index. The cut depends on n alone, never on the
 * number of threads or on timing: a part indexes its own scratch and its own
 * partial sums, and partial sums reduced in part order give the same bits
 * whichever threads ran the parts, how many there were, or whether the pool
 * was busy. Parts are claimed dynamically by the workers and the calling
 * thread, which balances them on a shared machine.
 *
 * The pool runs one loop at a time. A call made while it is busy (another
 * thread's loop: the async schedule runs a module per thread), from inside a
 * part, or with one thread configured runs its parts in order on the caller.
 *
 * All parallelism is the pool's: OpenBLAS is set to one thread when the pool
 * is configured or first used, and gim_rt_sgemm cuts a large product into
 * row blocks over the pool itself (see kernels.c). */
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "gim_runtime.h"

#define POOL_MAX_THREADS 64

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_work_cv = PTHREAD_COND_INITIALIZER;  /* a loop was posted */
static pthread_cond_t pool_done_cv = PTHREAD_COND_INITIALIZER;  /* a loop's last part finished */

/* Guarded by pool_mu. */
static int pool_threads;          /* configured threads, the caller included; 0: not yet decided */
static int pool_started;          /* workers created */

/* The current loop, written by its caller under pool_mu before it is posted
 * (a worker copies it under pool_mu). */
static gim_rt_part_fn pool_fn;
static void *pool_env;
static int64_t pool_n;
static int pool_parts;
static _Atomic uint32_t pool_gen;     /* loops posted so far (written under pool_mu) */
/* (generation << 32) | next part to claim: a worker still holding an older
 * loop's copy fails its claim, so a loop is over once its parts are done,
 * without waiting for the workers to leave it. */
static _Atomic uint64_t pool_claim;
static atomic_int pool_done;          /* parts of the current loop finished */

static atomic_flag pool_busy = ATOMIC_FLAG_INIT;
static _Thread_local bool rt_in_part;

/* Waits spin this many rounds (a few microseconds) before sleeping. Longer
 * spins were measured slower on the shared 2-core machine under load (a
 * spinning thread burns its session's CPU share: 20000 rounds cost ~6% in
 * step time and CPU time against 100). */
#define POOL_SPIN 200

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int default_threads(void) {
    const char *e = getenv("GIM_THREADS");
    long n = e && *e ? strtol(e, NULL, 10) : 0;
    if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > POOL_MAX_THREADS) n = POOL_MAX_THREADS;
    return (int)n;
}

static void part_range(int64_t n, int parts, int t, int64_t *b, int64_t *e) {
    *b = (int64_t)((__int128)n * t / parts);
    *e = (int64_t)((__int128)n * (t + 1) / parts);
}

/* The next part of loop gen, or -1 when none is left (or the loop is over). */
static int claim(uint32_t gen, int parts) {
    uint64_t cur = atomic_load(&pool_claim);
    for (;;) {
        if ((uint32_t)(cur >> 32) != gen) return -1;
        int t = (int)(uint32_t)cur;
        if (t >= parts) return -1;
        if (atomic_compare_exchange_weak(&pool_claim, &cur, cur + 1)) return t;
    }
}

/* Claims and runs parts of loop gen until none is left. */
static void run_parts(uint32_t gen, gim_rt_part_fn fn, void *env, int64_t n, int parts) {
    bool outer = rt_in_part;
    rt_in_part = true;
    for (int t; (t = claim(gen, parts)) >= 0;) {
        int64_t b, e;
        part_range(n, parts, t, &b, &e);
        if (b < e) fn(env, b, e, t);
        if (atomic_fetch_add(&pool_done, 1) + 1 == parts) {
            pthread_mutex_lock(&pool_mu);
            pthread_cond_broadcast(&pool_done_cv);
            pthread_mutex_unlock(&pool_mu);
        }
    }
    rt_in_part = outer;
}

static void *worker_main(void *arg) {
    int index = (int)(intptr_t)arg;   /* 1.. (0 is the caller) */
    uint32_t seen = 0;
    for (;;) {
        for (int i = 0; i < POOL_SPIN && atomic_load(&pool_gen) == seen; i++) cpu_relax();
        pthread_mutex_lock(&pool_mu);
        while (!(atomic_load(&pool_gen) != seen && index < pool_threads))
            pthread_cond_wait(&pool_work_cv, &pool_mu);
        seen = atomic_load(&pool_gen);
        gim_rt_part_fn fn = pool_fn;
        void *env = pool_env;
        int64_t n = pool_n;
        int parts = pool_parts;
        pthread_mutex_unlock(&pool_mu);
        run_parts(seen, fn, env, n, parts);
    }
    return NULL;
}

/* Starts workers up to the configured count (pool_mu held). */
static void start_workers(void) {
    if (!pool_threads) pool_threads = default_threads();
    if (pool_started == 0) openblas_set_num_threads(1);
    while (pool_started < pool_threads - 1) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &at, worker_main, (void *)(intptr_t)(pool_started + 1));
        pthread_attr_destroy(&at);
        if (rc != 0) {
            pool_threads = pool_started + 1;   /* run with the workers we have */
            break;
        }
        pool_started++;
    }
}

void gim_rt_set_threads(int n) {
    if (n <= 0) n = default_threads();
    if (n > POOL_MAX_THREADS) n = POOL_MAX_THREADS;
    pthread_mutex_lock(&pool_mu);
    pool_threads = n;
    pthread_mutex_unlock(&pool_mu);
    openblas_set_num_threads(1);
}

int gim_rt_threads(void) {
    pthread_mutex_lock(&pool_mu);
    if (!pool_threads) pool_threads = default_threads();
    int n = pool_threads;
    pthread_mutex_unlock(&pool_mu);
    return n;
}

int gim_rt_parts(int64_t n) {
    if (n <= 0) return 0;
    return n < GIM_RT_PARTS ? (int)n : GIM_RT_PARTS;
}

bool gim_rt_in_parallel(void) {
    return rt_in_part;
}

typedef struct lane_job {
    gim_rt_part_fn fn;
    void *env;
} lane_job;

static void lane_part(void *env, int64_t begin, int64_t end, int part) {
    const lane_job *j = env;
    bool outer = rt_in_part;
    rt_in_part = false;
    j->fn(j->env, begin, end, part);
    rt_in_part = outer;
}

void gim_rt_parallel_lanes(int64_t n, gim_rt_part_fn fn, void *env) {
    lane_job j = {fn, env};
    gim_rt_parallel_for(n, lane_part, &j);
}

void gim_rt_parallel_for(int64_t n, gim_rt_part_fn fn, void *env) {
    int parts = gim_rt_parts(n);
    if (parts == 0) return;
    bool inline_run = parts == 1 || rt_in_part || atomic_flag_test_and_set(&pool_busy);
    if (!inline_run) {
        pthread_mutex_lock(&pool_mu);
        start_workers();
        if (pool_threads <= 1) {
            pthread_mutex_unlock(&pool_mu);
            atomic_flag_clear(&pool_busy);
            inline_run = true;
        }
    }
    if (inline_run) {
        bool outer = rt_in_part;
        rt_in_part = true;
        for (int t = 0; t < parts; t++) {
            int64_t b, e;
            part_range(n, parts, t, &b, &e);
            if (b < e) fn(env, b, e, t);
        }
        rt_in_part = outer;
        return;
    }
    /* pool_mu held */
    pool_fn = fn;
    pool_env = env;
    pool_n = n;
    pool_parts = parts;
    atomic_store(&pool_done, 0);
    uint32_t gen = atomic_load(&pool_gen) + 1;
    atomic_store(&pool_claim, (uint64_t)gen << 32);
    atomic_store(&pool_gen, gen);
    pthread_cond_broadcast(&pool_work_cv);
    pthread_mutex_unlock(&pool_mu);

    run_parts(gen, fn, env, n, parts);

    for (int i = 0; i < POOL_SPIN && atomic_load(&pool_done) < parts; i++) cpu_relax();
    if (atomic_load(&pool_done) < parts) {
        pthread_mutex_lock(&pool_mu);
        while (atomic_load(&pool_done) < parts) pthread_cond_wait(&pool_done_cv, &pool_mu);
        pthread_mutex_unlock(&pool_mu);
    }
    atomic_flag_clear(&pool_busy);
}
