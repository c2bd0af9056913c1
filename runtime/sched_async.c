/* The async schedule: a thread per module, bounded queues of batches in
 * flight between them; a module never waits for gradients, only for its
 * input batch. The main thread reports progress and writes checkpoints. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gim_util.h"
#include "train_internal.h"

/* A bounded FIFO of items between two modules (or the free list). */
typedef struct rt_queue {
    rt_item *head, *tail;
    int len, cap;
    bool closed;
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
} rt_queue;

static void queue_init(rt_queue *q, int cap) {
    memset(q, 0, sizeof *q);
    q->cap = cap;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
}

static void queue_destroy(rt_queue *q) {
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
}

static void queue_push(rt_queue *q, rt_item *it) {
    pthread_mutex_lock(&q->mu);
    while (q->len >= q->cap && !q->closed) pthread_cond_wait(&q->not_full, &q->mu);
    it->next = NULL;
    if (q->tail) q->tail->next = it;
    else q->head = it;
    q->tail = it;
    q->len++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

/* NULL once the queue is closed and empty. */
static rt_item *queue_pop(rt_queue *q) {
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->closed) pthread_cond_wait(&q->not_empty, &q->mu);
    rt_item *it = q->head;
    if (it) {
        q->head = it->next;
        if (!q->head) q->tail = NULL;
        q->len--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->mu);
    return it;
}

static void queue_close(rt_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
}

typedef struct rt_async {
    const gim_exec_model *m;
    const gim_train_config *cfg;
    gim_train_state *s;
    const gim_examples *d;
    const rt_binding *b;
    rt_queue *queues;          /* queues[i]: into module i; queues[n]: free items */
    int64_t first_batch, last_batch;   /* global batch numbers [first, last) */
    int64_t nb;
    rt_order order;
    /* held shared by a module while it steps, exclusively by a checkpoint:
     * a checkpoint sees every module between two of its steps */
    pthread_rwlock_t step_lock;
    bool abort;                /* a checkpoint failed: stop feeding batches */
    /* shared progress, under mu */
    pthread_mutex_t mu;
    double *loss_sum;
    int64_t *loss_count;
    int64_t *done;             /* batches finished per module */
    int max_stale;
    int failed_module;         /* -1: none */
    float failed_loss;
    bool source_failed;        /* the data set's source failed: source_err says why */
    char source_err[512];
    rt_progress *p;
} rt_async;

typedef struct rt_worker {
    rt_async *a;
    int mi;
} rt_worker;

static void *async_worker(void *arg) {
    rt_worker *w = arg;
    rt_async *a = w->a;
    const gim_exec_model *m = a->m;
    int mi = w->mi, n = m->n_modules;
    for (int64_t k = a->first_batch; k < a->last_batch; k++) {
        rt_item *it;
        if (mi == 0) {
            if (rt_stop_now() || __atomic_load_n(&a->failed_module, __ATOMIC_RELAXED) >= 0 ||
                __atomic_load_n(&a->abort, __ATOMIC_RELAXED))
                break;
            it = queue_pop(&a->queues[n]);
            if (!it) break;
            int64_t epoch = k / a->nb, in_epoch = k % a->nb;
            const int64_t *perm = rt_order_for(&a->order, a->cfg->seed, epoch);
            if (rt_fill_data(m, a->b, a->d, epoch, perm + in_epoch * m->batch, it, a->source_err,
                             sizeof a->source_err)) {
                __atomic_store_n(&a->source_failed, true, __ATOMIC_RELAXED);
                queue_push(&a->queues[n], it);
                break;
            }
            it->batch_no = k;
        } else {
            it = queue_pop(&a->queues[mi]);
            if (!it) break;
        }
        /* staleness: how many steps the producer has taken since it made this input */
        int stale = 0;
        if (mi > 0) stale = (int)(__atomic_load_n(&a->s->module_step[mi - 1], __ATOMIC_RELAXED) - it->made_at[mi - 1]);
        pthread_rwlock_rdlock(&a->step_lock);
        float loss = rt_module_step(m, a->s, mi, it, a->cfg);
        pthread_mutex_lock(&a->mu);
        if (stale > a->max_stale) a->max_stale = stale;
        if (!isfinite(loss) && a->failed_module < 0) {
            __atomic_store_n(&a->failed_module, mi, __ATOMIC_RELAXED);
            a->failed_loss = loss;
        }
        a->loss_sum[mi] += loss;
        a->loss_count[mi]++;
        a->done[mi]++;
        if (a->p->csv) fprintf(a->p->csv, "%lld,%lld,%d,%.6g,%.1f\n", (long long)it->batch_no + 1,
                               (long long)(it->batch_no / a->nb) + 1, mi + 1, loss, a->p->rate);
        pthread_mutex_unlock(&a->mu);
        pthread_rwlock_unlock(&a->step_lock);
        queue_push(mi + 1 < n ? &a->queues[mi + 1] : &a->queues[n], it);
        if (__atomic_load_n(&a->failed_module, __ATOMIC_RELAXED) >= 0) break;
    }
    if (mi + 1 < n) queue_close(&a->queues[mi + 1]);
    if (mi == n - 1) queue_close(&a->queues[n]);
    return NULL;
}

/* Each module on its own thread, fed through a queue of at most
 * GIM_ASYNC_DEPTH batches. Staleness: when a module starts a step, its
 * input was made by its producer at most GIM_ASYNC_DEPTH + 1 producer steps
 * ago (the other batches in the queue, one more the producer has finished
 * and waits to push; a producer then blocks). Checkpoints (every
 * --save-every steps of the last module, or a minute, at each of its
 * epoch's ends, and at the end) take the step lock exclusively, so each
 * module's saved parameters, optimizer state and step count agree; the
 * saved data position is the last module's, and on resume the modules
 * before it see again the few batches they had run ahead. */
int rt_train_async(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
                   const gim_examples *d, const rt_binding *b, rt_progress *p, gim_train_report *rep,
                   char *err, size_t errlen) {
    int n = m->n_modules;
    const int depth = GIM_ASYNC_DEPTH;
    int n_items = n * (depth + 1);
    rt_async a;
    memset(&a, 0, sizeof a);
    a.m = m;
    a.cfg = cfg;
    a.s = s;
    a.d = d;
    a.b = b;
    a.p = p;
    a.nb = d->n / m->batch;
    a.failed_module = -1;
    a.first_batch = s->epoch * a.nb + s->batch_in_epoch;
    a.last_batch = cfg->epochs * a.nb;
    if (cfg->steps > 0 && cfg->steps < a.last_batch) a.last_batch = cfg->steps;
    a.order.n = d->n;
    a.order.epoch = -1;
    a.order.perm = gim_malloc(sizeof(int64_t) * (size_t)d->n);
    a.queues = gim_calloc((size_t)n + 1, sizeof(rt_queue));
    a.loss_sum = gim_calloc((size_t)n, sizeof(double));
    a.loss_count = gim_calloc((size_t)n, sizeof(int64_t));
    a.done = gim_calloc((size_t)n, sizeof(int64_t));
    rt_item **items = gim_calloc((size_t)n_items, sizeof(rt_item *));
    pthread_t *threads = gim_calloc((size_t)n, sizeof(pthread_t));
    rt_worker *workers = gim_calloc((size_t)n, sizeof(rt_worker));
    /* modules step at once here: each but the first gets a work arena of its
     * own for the run (the first keeps the state's shared one) */
    float **own_work = gim_calloc((size_t)n, sizeof(float *));
    int rc = 0;
    if (!a.order.perm || !a.queues || !a.loss_sum || !a.loss_count || !a.done || !items || !threads || !workers ||
        !own_work) {
        gim_errf(err, errlen, "out of memory for the async schedule");
        rc = -1;
        goto done;
    }
    for (int i = 1; i < n; i++)
        if (!(own_work[i] = rt_alloc_floats(m->modules[i].n_work_floats))) {
            gim_errf(err, errlen, "out of memory for the async schedule: module %d's work arena needs %.1f MiB",
                     i + 1, 4.0 * (double)m->modules[i].n_work_floats / (1 << 20));
            rc = -1;
            goto done;
        }
    for (int i = 1; i < n; i++) s->work[i] = own_work[i];
    pthread_mutex_init(&a.mu, NULL);
    {
        /* writer preference: a checkpoint must not wait for the modules to
         * stop stepping of their own accord */
        pthread_rwlockattr_t ra;
        pthread_rwlockattr_init(&ra);
        pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&a.step_lock, &ra);
        pthread_rwlockattr_destroy(&ra);
    }
    for (int i = 0; i < n; i++) queue_init(&a.queues[i], depth);
    queue_init(&a.queues[n], n_items);
    for (int i = 0; i < n_items; i++) {
        if (!(items[i] = rt_item_new(m))) {
            gim_errf(err, errlen, "out of memory for the async schedule's batches");
            rc = -1;
            goto joined;
        }
        queue_push(&a.queues[n], items[i]);
    }
    int started = 0;
    for (int i = 0; i < n; i++) {
        workers[i].a = &a;
        workers[i].mi = i;
        if (pthread_create(&threads[i], NULL, async_worker, &workers[i])) break;
        started++;
    }
    if (started < n) {
        rt_set_stop(1);
        for (int i = 0; i <= n; i++) queue_close(&a.queues[i]);
        gim_errf(err, errlen, "cannot start a thread per module");
        rc = -1;
    }
    /* The main thread reports progress and saves checkpoints while the
     * modules run: a checkpoint takes the step lock exclusively, so no
     * module is between reading and updating its parameters while it is
     * written. */
    int64_t total = a.last_batch - a.first_batch;
    int64_t saved_g = a.first_batch;
    int64_t line_g = a.first_batch, line_epoch = a.first_batch / a.nb;   /* progress drawn up to */
    const int64_t every = a.nb / 20 > 0 ? a.nb / 20 : 1;
    while (rc == 0) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&a.mu);
        int64_t last_done = a.done[n - 1];
        for (int i = 0; i < n; i++) {
            p->sum[i] += a.loss_sum[i];
            p->count[i] += a.loss_count[i];
            a.loss_sum[i] = 0;
            a.loss_count[i] = 0;
        }
        bool failed = a.failed_module >= 0 || __atomic_load_n(&a.source_failed, __ATOMIC_RELAXED);
        bool finished = last_done >= total || failed;
        int64_t delta = last_done - rep->steps;
        rep->steps = last_done;
        rt_progress_examples(p, delta * m->batch);   /* under mu: the workers read p->rate */
        pthread_mutex_unlock(&a.mu);
        int64_t g = a.first_batch + last_done;
        int64_t epoch = g / a.nb, in_epoch = g % a.nb;
        if (in_epoch == 0 && g > a.first_batch) { epoch--; in_epoch = a.nb; }
        /* The poll lands anywhere in an epoch: finish the bar of an epoch
         * it stepped over, and print a plain line whenever a 5% mark was
         * passed since the last one (not only when landing on one). */
        if (line_epoch >= 0 && epoch > line_epoch && line_g < (line_epoch + 1) * a.nb) {
            rt_progress_line(p, line_epoch, cfg->epochs, a.nb, a.nb, true);
            line_g = (line_epoch + 1) * a.nb;
        }
        bool draw = finished;
        if (p->tty) draw = draw || rt_progress_due(p, in_epoch, a.nb);
        else draw = draw || (g > line_g && (g / every != line_g / every || in_epoch == a.nb));
        if (draw) {
            rt_progress_line(p, epoch, cfg->epochs, in_epoch, a.nb, finished || in_epoch == a.nb);
            line_g = g;
        }
        line_epoch = epoch;
        if (finished) {
            /* after a divergence, modules before the failed one may wait to
             * push into its queue, which nobody pops any more */
            if (failed)
                for (int i = 0; i <= n; i++) queue_close(&a.queues[i]);
            break;
        }
        bool due = g / a.nb > saved_g / a.nb;
        if (cfg->save_every > 0) due = due || g / cfg->save_every > saved_g / cfg->save_every;
        else due = due || rt_now() - p->t_last_save >= 60.0;
        if (cfg->out_dir && due && !rt_stop_now()) {
            pthread_rwlock_wrlock(&a.step_lock);
            int64_t gg = a.first_batch + a.done[n - 1];
            s->epoch = gg / a.nb;
            s->batch_in_epoch = gg % a.nb;
            rc = rt_save_now(m, s, cfg, p, err, errlen);
            pthread_rwlock_unlock(&a.step_lock);
            saved_g = gg;
            if (rc) {
                __atomic_store_n(&a.abort, true, __ATOMIC_RELAXED);
                for (int i = 0; i <= n; i++) queue_close(&a.queues[i]);
                break;
            }
        }
        if (rt_stop_now()) {
            for (int i = 0; i <= n; i++) queue_close(&a.queues[i]);
            break;
        }
    }
    for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
joined:
    rep->async_max_staleness = a.max_stale;
    if (rc == 0 && a.source_failed) {
        gim_errf(err, errlen, "%s", a.source_err);
        rc = -1;
    }
    if (rc == 0 && a.failed_module >= 0) {
        rep->diverged = true;
        rc = rt_diverged(m, a.failed_module, a.failed_loss, s->module_step[a.failed_module], err, errlen);
    }
    /* The position in the data is the last module's: batches it never saw
     * are trained again on resume. */
    {
        int64_t g = a.first_batch + a.done[n - 1];
        s->epoch = g / a.nb;
        s->batch_in_epoch = g % a.nb;
    }
    for (int i = 0; i < n_items; i++) rt_item_free(m, items[i]);
    for (int i = 0; i <= n; i++) queue_destroy(&a.queues[i]);
    pthread_mutex_destroy(&a.mu);
    pthread_rwlock_destroy(&a.step_lock);
done:
    if (own_work) {
        for (int i = 1; i < n; i++) {
            s->work[i] = s->work_shared;
            gim_free(own_work[i]);
        }
        gim_free(own_work);
    }
    gim_free(a.order.perm);
    gim_free(a.queues);
    gim_free(a.loss_sum);
    gim_free(a.loss_count);
    gim_free(a.done);
    gim_free(items);
    gim_free(threads);
    gim_free(workers);
    return rc;
}
