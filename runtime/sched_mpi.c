/* The schedules under mpirun: each rank steps a contiguous group of modules
 * (cfg->placement); batches flow from rank r to r + 1 as messages carrying
 * the slots later ranks read (the modules' outputs, the labels); losses,
 * states and reports flow to rank 0, which reads the data, draws progress,
 * writes metrics.csv and the one checkpoint of the whole model.
 *
 *   lockstep (--schedule simultaneous)  every module steps exactly once per
 *       batch, in the data order: module k's inputs are what module k - 1
 *       made of that batch in its own step, as in one process, so the
 *       weights are the single process's bit for bit; ranks overlap only in
 *       working on different batches (a pipeline at most RT_WINDOW deep).
 *   async (--schedule async)  rank 0 produces as fast as it steps; every
 *       other rank keeps a replay buffer of received batches (capacity
 *       cfg->replay_capacity), takes the newest it has used fewer than
 *       cfg->max_reuse times, and waits only when it has none.
 *   refresh (--refresh N, lockstep framing)  at epochs 0, N, 2N, ... the
 *       modules' outputs over every example flow down once, each rank
 *       keeping what its modules read in caches (as sched_refresh.c does in
 *       one process); in the other batches only a tick flows down and each
 *       rank trains on its caches: the single process's --refresh weights
 *       bit for bit.
 *
 * Checkpoints: rank 0 sends a SAVE marker down the data stream; a rank
 * that meets it passes it on and sends rank 0 its modules' state, which is
 * thus taken between two of its steps, in lockstep after the same batch on
 * every rank. Every wait is bounded by cfg->peer_timeout; any error ends
 * every rank (cmd_train aborts the job). */
#define _GNU_SOURCE
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dist_internal.h"
#include "gim_util.h"
#include "train_internal.h"

#ifdef GIM_HAVE_MPI

enum { RT_WINDOW = 4, RT_OUTBOX = 4 };

typedef struct rt_dist {
    const gim_exec_model *m;
    const gim_train_config *cfg;
    gim_train_state *s;
    const gim_examples *d;
    const rt_binding *b;
    rt_progress *p;
    gim_train_report *rep;
    bool lockstep;
    int rank, size, n;
    int first, last;                 /* this rank's modules [first, last) */
    int *rank_of;                    /* per module */
    int *in, n_in, *out, n_out;      /* slots received from rank - 1, sent to rank + 1 */
    size_t in_bytes, out_bytes;      /* their payloads */
    int n_hdr;                       /* int64 words before a data message's payload */
    double timeout;
    int64_t nb, first_batch, last_batch;
    rt_outbox *down, *to0;
    char up_name[96], down_name[96];
    gim_dist_stats *stats;           /* per module (only this rank's are filled) */
    int64_t losses_sent;             /* messages to rank 0 on RT_TAG_LOSS */
    /* --refresh: every rank trains on caches of what it receives, rebuilt
     * every cfg->refresh epochs (see refresh_batch) */
    bool refresh;
    rt_cache *caches;                /* per slot; module slots in cfg->cache_dtype, data slots f32 */
    rt_order order;                  /* ranks other than 0: the data order, for the caches */
} rt_dist;

static void rank_name(const rt_dist *x, int r, char *buf, size_t n) {
    int a = -1, z = -1;
    for (int i = 0; i < x->n; i++)
        if (x->rank_of[i] == r) {
            if (a < 0) a = i;
            z = i;
        }
    if (a == z) snprintf(buf, n, "rank %d (module %d)", r, a + 1);
    else snprintf(buf, n, "rank %d (modules %d-%d)", r, a + 1, z + 1);
}

/* Where a slot's value comes from: the rank of its producer; data: rank 0. */
static int origin(const rt_dist *x, int sl) {
    int pr = x->m->slots[sl].producer;
    return pr < 0 ? 0 : x->rank_of[pr];
}

/* The slots rank r receives: read by a module at rank >= r, made before r. */
static int slots_into(const rt_dist *x, int r, int *list) {
    int count = 0;
    for (int sl = 0; sl < x->m->n_slots; sl++) {
        if (r == 0 || origin(x, sl) >= r) continue;
        bool read = false;
        for (int mi = 0; mi < x->n && !read; mi++) {
            if (x->rank_of[mi] < r) continue;
            for (int k = 0; k < x->m->modules[mi].n_inputs; k++) read = read || x->m->modules[mi].inputs[k] == sl;
        }
        if (read) list[count++] = sl;
    }
    return count;
}

static size_t payload_bytes(const rt_dist *x, const int *list, int count) {
    size_t bytes = 0;
    for (int i = 0; i < count; i++) bytes += sizeof(float) * (size_t)x->m->slots[list[i]].numel;
    return bytes;
}

/* ---- messages ------------------------------------------------------------------------ */

/* A data message: int64 [kind, batch_no or flag, made_at per module], then
 * the payload slots in order. */
static int send_down(rt_dist *x, int64_t kind, int64_t batch_no, const rt_item *it, char *err, size_t errlen) {
    if (x->rank == x->size - 1) return 0;
    int64_t *hdr = gim_calloc((size_t)x->n_hdr, sizeof(int64_t));
    const void *parts[1 + 64];
    size_t sizes[1 + 64];
    if (!hdr) return gim_errf(err, errlen, "out of memory");
    hdr[0] = kind;
    hdr[1] = batch_no;
    if (it)
        for (int i = 0; i < x->n; i++) hdr[2 + i] = (int64_t)it->made_at[i];
    parts[0] = hdr;
    sizes[0] = sizeof(int64_t) * (size_t)x->n_hdr;
    int np = 1;
    if (kind == RT_MSG_BATCH || kind == RT_MSG_REFRESH)
        for (int i = 0; i < x->n_out; i++, np++) {
            parts[np] = it->slot[x->out[i]];
            sizes[np] = sizeof(float) * (size_t)x->m->slots[x->out[i]].numel;
        }
    int rc = rt_outbox_send(x->down, x->rank + 1, RT_TAG_DATA, parts, sizes, np, x->timeout, x->down_name, err, errlen);
    gim_free(hdr);
    return rc;
}

/* Unpacks a data message into an item: header fields, payload slots. */
static void unpack(const rt_dist *x, const void *msg, rt_item *it, int64_t *kind, int64_t *batch_no) {
    const int64_t *hdr = msg;
    *kind = hdr[0];
    *batch_no = hdr[1];
    if (*kind != RT_MSG_BATCH && *kind != RT_MSG_REFRESH) return;
    it->batch_no = hdr[1];
    for (int i = 0; i < x->n; i++) it->made_at[i] = (uint64_t)hdr[2 + i];
    const char *at = (const char *)msg + sizeof(int64_t) * (size_t)x->n_hdr;
    for (int i = 0; i < x->n_in; i++) {
        size_t bytes = sizeof(float) * (size_t)x->m->slots[x->in[i]].numel;
        memcpy(it->slot[x->in[i]], at, bytes);
        at += bytes;
    }
}

/* Losses of this rank's modules on a batch, to rank 0: int64 batch_no,
 * then one float per module. */
static int send_losses(rt_dist *x, int64_t batch_no, const float *losses, char *err, size_t errlen) {
    const void *parts[2] = {&batch_no, losses + x->first};
    size_t sizes[2] = {sizeof batch_no, sizeof(float) * (size_t)(x->last - x->first)};
    x->losses_sent++;
    return rt_outbox_send(x->to0, 0, RT_TAG_LOSS, parts, sizes, 2, x->timeout, "rank 0", err, errlen);
}

/* This rank's state to rank 0: int64 [losses sent], step counters, then
 * per module its parameters and optimizer state, then its stats. */
static int send_state(rt_dist *x, char *err, size_t errlen) {
    int k = x->last - x->first;
    const void *parts[2 + 2 * 64 + 1];
    size_t sizes[2 + 2 * 64 + 1];
    int np = 0;
    parts[np] = &x->losses_sent, sizes[np++] = sizeof x->losses_sent;
    parts[np] = x->s->module_step + x->first, sizes[np++] = sizeof(uint64_t) * (size_t)k;
    for (int i = x->first; i < x->last; i++) {
        parts[np] = x->s->params[i], sizes[np++] = sizeof(float) * (size_t)x->m->modules[i].n_param_floats;
        parts[np] = x->s->opt[i], sizes[np++] = sizeof(float) * (size_t)x->m->modules[i].n_opt_floats;
    }
    if (x->down) x->stats[x->first].bytes_sent = rt_outbox_bytes(x->down);
    parts[np] = x->stats + x->first, sizes[np++] = sizeof(gim_dist_stats) * (size_t)k;
    return rt_outbox_send(x->to0, 0, RT_TAG_STATE, parts, sizes, np, x->timeout, "rank 0", err, errlen);
}

/* ---- rank 0 ------------------------------------------------------------------------- */

typedef struct rt_lossbook {
    float *row;          /* RT_WINDOW rows of n losses (lockstep) */
    int *reported;       /* ranks (other than 0) that reported the row's batch */
    int64_t done;        /* lockstep: batches whose rows are recorded */
    int64_t *got;        /* per rank: loss messages received */
} rt_lossbook;

/* Records one batch's losses of modules [a, z): metrics rows and progress,
 * stopping at the first non-finite loss. */
static int record(rt_dist *x, int a, int z, const float *loss, int64_t batch_no, char *err, size_t errlen) {
    for (int mi = a; mi < z; mi++) {
        rt_progress_record(x->p, mi, loss[mi - a], batch_no + 1, batch_no / x->nb + 1);
        if (!isfinite(loss[mi - a])) {
            x->rep->diverged = true;
            return rt_diverged(x->m, mi, loss[mi - a], (uint64_t)(batch_no + 1), err, errlen);
        }
    }
    return 0;
}

/* Takes every loss message waiting (or, when `wait_for` > done, waits for
 * them until it is reached). */
static int take_losses(rt_dist *x, rt_lossbook *lb, int64_t wait_for, char *err, size_t errlen) {
    float buf[64 + 2];
    for (;;) {
        int src, tag;
        size_t bytes;
        bool more = rt_dist_poll(-1, RT_TAG_LOSS, &src, &tag, &bytes);
        if (!more && (!x->lockstep || lb->done >= wait_for)) return 0;
        if (!more) {
            char who[96];
            int r = 1;
            for (int q = 1; q < x->size; q++)
                if (lb->got[q] < lb->got[r]) r = q;
            rank_name(x, r, who, sizeof who);
            if (rt_dist_wait(-1, RT_TAG_LOSS, x->timeout, who, &src, &tag, &bytes, err, errlen)) return -1;
        }
        char msg[sizeof(int64_t) + sizeof buf];
        if (bytes > sizeof msg) return gim_errf(err, errlen, "rank %d sent a malformed message", src);
        rt_dist_recv(src, RT_TAG_LOSS, msg, bytes);
        int64_t batch_no;
        memcpy(&batch_no, msg, sizeof batch_no);
        int a = -1, z = -1;
        for (int i = 0; i < x->n; i++)
            if (x->rank_of[i] == src) {
                if (a < 0) a = i;
                z = i + 1;
            }
        memcpy(buf, msg + sizeof batch_no, sizeof(float) * (size_t)(z - a));
        lb->got[src]++;
        if (!x->lockstep) {
            if (record(x, a, z, buf, batch_no, err, errlen)) return -1;
            continue;
        }
        float *row = lb->row + (size_t)(batch_no % RT_WINDOW) * (size_t)x->n;
        memcpy(row + a, buf, sizeof(float) * (size_t)(z - a));
        lb->reported[batch_no % RT_WINDOW]++;
        /* rows complete in batch order: every rank handles batches in order */
        while (lb->reported[lb->done % RT_WINDOW] == x->size - 1) {
            int64_t g = lb->done;
            float *r0 = lb->row + (size_t)(g % RT_WINDOW) * (size_t)x->n;
            lb->reported[g % RT_WINDOW] = 0;
            lb->done++;
            x->rep->steps++;
            rt_progress_examples(x->p, x->m->batch);
            if (record(x, 0, x->n, r0, g, err, errlen)) return -1;
            int64_t in_epoch = g % x->nb + 1;
            if (rt_progress_due(x->p, in_epoch, x->nb))
                rt_progress_line(x->p, g / x->nb, x->cfg->epochs, in_epoch, x->nb, in_epoch == x->nb);
        }
    }
}

/* Every other rank's state (and stats) into s; `final`: also waits for the
 * loss messages each rank says it sent. */
static int gather_states(rt_dist *x, rt_lossbook *lb, bool final, char *err, size_t errlen) {
    for (int r = 1; r < x->size; r++) {
        char who[96];
        rank_name(x, r, who, sizeof who);
        int src, tag;
        size_t bytes;
        if (rt_dist_wait(r, RT_TAG_STATE, x->timeout, who, &src, &tag, &bytes, err, errlen)) return -1;
        char *msg = gim_malloc(bytes ? bytes : 1);
        if (!msg) return gim_errf(err, errlen, "out of memory for %s's state", who);
        rt_dist_recv(r, RT_TAG_STATE, msg, bytes);
        int a = -1, z = -1;
        for (int i = 0; i < x->n; i++)
            if (x->rank_of[i] == r) {
                if (a < 0) a = i;
                z = i + 1;
            }
        size_t want = sizeof(int64_t) + sizeof(uint64_t) * (size_t)(z - a) + sizeof(gim_dist_stats) * (size_t)(z - a);
        for (int i = a; i < z; i++)
            want += sizeof(float) * (size_t)(x->m->modules[i].n_param_floats + x->m->modules[i].n_opt_floats);
        if (bytes != want) {
            gim_free(msg);
            return gim_errf(err, errlen, "%s sent a state of %zu bytes, not %zu: do the ranks run the same model?", who,
                            bytes, want);
        }
        const char *at = msg;
        int64_t sent;
        memcpy(&sent, at, sizeof sent);
        at += sizeof sent;
        memcpy(x->s->module_step + a, at, sizeof(uint64_t) * (size_t)(z - a));
        at += sizeof(uint64_t) * (size_t)(z - a);
        for (int i = a; i < z; i++) {
            size_t pb = sizeof(float) * (size_t)x->m->modules[i].n_param_floats;
            size_t ob = sizeof(float) * (size_t)x->m->modules[i].n_opt_floats;
            memcpy(x->s->params[i], at, pb);
            memcpy(x->s->opt[i], at + pb, ob);
            at += pb + ob;
        }
        memcpy(x->stats + a, at, sizeof(gim_dist_stats) * (size_t)(z - a));
        gim_free(msg);
        /* the losses this state comes after (another tag: not ordered with it) */
        while (final && lb->got[r] < sent) {
            if (rt_dist_wait(r, RT_TAG_LOSS, x->timeout, who, &src, &tag, &bytes, err, errlen)) return -1;
            if (take_losses(x, lb, 0, err, errlen)) return -1;
        }
    }
    return 0;
}

static int save_all(rt_dist *x, rt_lossbook *lb, char *err, size_t errlen) {
    if (send_down(x, RT_MSG_SAVE, 0, NULL, err, errlen)) return -1;
    if (gather_states(x, lb, false, err, errlen)) return -1;
    return rt_save_now(x->m, x->s, x->cfg, x->p, err, errlen);
}

/* ---- --refresh ---------------------------------------------------------------------- */

/* Opens this rank's caches: every slot its modules read from another
 * module (cfg->cache_dtype), and on ranks other than 0 the data slots they
 * read (f32: they stand for the data this rank never reads). */
static int refresh_open(rt_dist *x, char *err, size_t errlen) {
    const gim_exec_model *m = x->m;
    bool *cached = gim_calloc((size_t)m->n_slots, sizeof(bool));
    bool *mine = gim_calloc((size_t)m->n_slots, sizeof(bool));
    bool *data = gim_calloc((size_t)m->n_slots, sizeof(bool));
    x->caches = gim_calloc((size_t)m->n_slots, sizeof(rt_cache));
    int rc = 0;
    if (!cached || !mine || !data || !x->caches) {
        rc = gim_errf(err, errlen, "out of memory for the caches");
        goto done;
    }
    if ((rc = rt_cache_slots(m, cached, "--refresh", err, errlen))) goto done;
    for (int mi = x->first; mi < x->last; mi++)
        for (int k = 0; k < m->modules[mi].n_inputs; k++) {
            int sl = m->modules[mi].inputs[k];
            if (m->slots[sl].producer < 0) data[sl] = x->rank > 0;
            else if (cached[sl] && m->slots[sl].producer != mi) mine[sl] = true;
        }
    char what[96];
    snprintf(what, sizeof what, "refresh, rank %d: caches of module outputs", x->rank);
    const char *dir = x->rank == 0 ? x->cfg->out_dir : NULL;
    if ((rc = rt_cache_open_slots(x->caches, mine, m, dir, x->d->n, x->cfg->cache_dtype, x->p->out, what, err,
                                  errlen)))
        goto done;
    rc = rt_cache_open_slots(x->caches, data, m, dir, x->d->n, GIM_CACHE_F32, NULL, what, err, errlen);
done:
    gim_free(cached);
    gim_free(mine);
    gim_free(data);
    return rc;
}

/* Examples [start, start + batch) (the last batch padded with its last
 * example) of a refresh: the item holds the data (rank 0) or what rank - 1
 * sent; received slots go into the caches, then each module of the rank in
 * turn reads its inputs from the caches, runs forward and caches its
 * exports, exactly as a refresh in one process builds module by module. */
static void refresh_batch(rt_dist *x, int64_t start, int64_t *seq, rt_item *it) {
    const gim_exec_model *m = x->m;
    int64_t n = x->d->n, count = n - start < m->batch ? n - start : m->batch;
    for (int64_t e = 0; e < m->batch; e++) seq[e] = start + (e < count ? e : count - 1);
    for (int i = 0; i < x->n_in; i++)
        if (x->caches[x->in[i]].data) rt_cache_put(&x->caches[x->in[i]], start, count, it->slot[x->in[i]]);
    for (int mi = x->first; mi < x->last; mi++) {
        rt_cache_fill_inputs(m, x->caches, mi, seq, it);
        rt_module_forward(m, x->s, mi, it);
        for (int e = 0; e < m->modules[mi].n_exports; e++) {
            int sl = m->modules[mi].exports[e];
            if (x->caches[sl].data) rt_cache_put(&x->caches[sl], start, count, it->slot[sl]);
        }
    }
}

/* A training batch's inputs from the caches: the data slots (ranks other
 * than 0) and, module by module, what the modules below made. */
static void refresh_inputs(rt_dist *x, int mi, const int64_t *idx, rt_item *it) {
    const gim_exec_model *m = x->m;
    if (mi == x->first && x->rank > 0)
        for (int i = 0; i < x->n_in; i++) {
            int sl = x->in[i];
            if (m->slots[sl].producer < 0 && x->caches[sl].data) rt_cache_get(&x->caches[sl], idx, m->batch, it->slot[sl]);
        }
    rt_cache_fill_inputs(m, x->caches, mi, idx, it);
}

/* Rank 0: a refresh, every example through its modules and down. */
static int refresh_rank0(rt_dist *x, int64_t epoch, rt_item *it, char *err, size_t errlen) {
    int64_t *seq = gim_malloc(sizeof(int64_t) * (size_t)x->m->batch);
    if (!seq) return gim_errf(err, errlen, "out of memory");
    int rc = 0;
    if (x->p->out) {
        fprintf(x->p->out, "refresh (epoch %lld): the modules' outputs over %lld examples, down every rank\n",
                (long long)epoch + 1, (long long)x->d->n);
        fflush(x->p->out);
    }
    for (int64_t start = 0; start < x->d->n && rc == 0; start += x->m->batch) {
        int64_t count = x->d->n - start < x->m->batch ? x->d->n - start : x->m->batch;
        for (int64_t e = 0; e < x->m->batch; e++) seq[e] = start + (e < count ? e : count - 1);
        if ((rc = rt_fill_data(x->m, x->b, x->d, epoch, seq, it, err, errlen))) break;
        refresh_batch(x, start, seq, it);
        rc = send_down(x, RT_MSG_REFRESH, start, it, err, errlen);
    }
    gim_free(seq);
    return rc;
}

static int run_rank0(rt_dist *x, char *err, size_t errlen) {
    const gim_exec_model *m = x->m;
    gim_train_state *s = x->s;
    const gim_train_config *cfg = x->cfg;
    rt_progress *p = x->p;
    rt_item *it = rt_item_new(m);
    rt_order order = {.perm = gim_malloc(sizeof(int64_t) * (size_t)x->d->n), .epoch = -1, .n = x->d->n};
    float *losses = gim_calloc((size_t)x->n, sizeof(float));
    rt_lossbook lb = {.row = gim_calloc((size_t)RT_WINDOW * (size_t)x->n, sizeof(float)),
                      .reported = gim_calloc(RT_WINDOW, sizeof(int)),
                      .done = x->first_batch,
                      .got = gim_calloc((size_t)x->size, sizeof(int64_t))};
    int rc = 0;
    if (!it || !order.perm || !losses || !lb.row || !lb.reported || !lb.got) {
        rc = gim_errf(err, errlen, "out of memory for a batch");
        goto done;
    }
    int64_t g = x->first_batch, nb = x->nb;
    while (g < x->last_batch) {
        int src;
        size_t bytes;
        if (rt_dist_poll(-1, RT_TAG_STOP, &src, NULL, &bytes)) {
            char c[8];
            rt_dist_recv(src, RT_TAG_STOP, c, bytes <= sizeof c ? bytes : sizeof c);
            rt_set_stop(1);   /* a rank was interrupted: the run stops as if this one was */
        }
        if (rt_stop_now()) break;
        int64_t epoch = g / nb, in_epoch = g % nb;
        if (x->refresh && in_epoch == 0 && epoch % cfg->refresh == 0 &&
            (rc = refresh_rank0(x, epoch, it, err, errlen)))
            break;
        const int64_t *perm = rt_order_for(&order, cfg->seed, epoch);
        const int64_t *idx = perm + in_epoch * m->batch;
        if ((rc = rt_fill_data(m, x->b, x->d, epoch, idx, it, err, errlen))) break;
        it->batch_no = g;
        for (int mi = x->first; mi < x->last; mi++) {
            if (x->refresh) refresh_inputs(x, mi, idx, it);
            losses[mi] = rt_module_step(m, s, mi, it, cfg);
            x->stats[mi].steps++;
        }
        if ((rc = send_down(x, x->refresh ? RT_MSG_TICK : RT_MSG_BATCH, g, it, err, errlen))) break;
        g++;
        s->epoch = g / nb;
        s->batch_in_epoch = g % nb;
        if (x->lockstep) {
            memcpy(lb.row + (size_t)((g - 1) % RT_WINDOW) * (size_t)x->n, losses, sizeof(float) * (size_t)x->last);
            rc = take_losses(x, &lb, g - (RT_WINDOW - 1), err, errlen);
        } else {
            x->rep->steps++;
            rt_progress_examples(p, m->batch);
            if (!(rc = record(x, x->first, x->last, losses, g - 1, err, errlen))) rc = take_losses(x, &lb, 0, err, errlen);
            if (rt_progress_due(p, in_epoch + 1, nb))
                rt_progress_line(p, epoch, cfg->epochs, in_epoch + 1, nb, in_epoch + 1 == nb);
        }
        if (rc) break;
        bool due = g % nb == 0;
        if (cfg->save_every > 0) due = due || g % cfg->save_every == 0;
        else due = due || rt_now() - p->t_last_save >= 60.0;
        if (cfg->out_dir && due && g < x->last_batch) {
            /* metrics.csv up to the position first: a resume trims it there */
            if (x->lockstep && (rc = take_losses(x, &lb, g, err, errlen))) break;
            if ((rc = save_all(x, &lb, err, errlen))) break;
        }
    }
    if (rc) goto done;
    /* the end (or a stop): every rank passes END on and sends its state */
    if ((rc = send_down(x, RT_MSG_END, rt_stop_now() ? 1 : 0, NULL, err, errlen))) goto done;
    if (x->lockstep && (rc = take_losses(x, &lb, g, err, errlen))) goto done;
    if ((rc = gather_states(x, &lb, true, err, errlen))) goto done;
    if (s->batch_in_epoch != 0 && p->tty)
        rt_progress_line(p, s->epoch, cfg->epochs, s->batch_in_epoch, nb, true);
done:
    rt_item_free(m, it);
    gim_free(order.perm);
    gim_free(losses);
    gim_free(lb.row);
    gim_free(lb.reported);
    gim_free(lb.got);
    return rc;
}

/* ---- the other ranks ------------------------------------------------------------------ */

/* Asks rank 0 to stop the run (this rank was interrupted), once. */
static void ask_stop(rt_dist *x, bool *asked) {
    if (*asked || !rt_stop_now()) return;
    *asked = true;
    char e[128];
    const void *part = "stop";
    size_t size = 4;
    rt_outbox_send(x->to0, 0, RT_TAG_STOP, &part, &size, 1, x->timeout, "rank 0", e, sizeof e);
}

/* Receives the next data message from rank - 1 into buf (waiting at most
 * the timeout); its size in *bytes. */
static int receive(rt_dist *x, char *buf, size_t cap, char *err, size_t errlen) {
    int src, tag;
    size_t bytes;
    if (rt_dist_wait(x->rank - 1, RT_TAG_DATA, x->timeout, x->up_name, &src, &tag, &bytes, err, errlen)) return -1;
    size_t hdr = sizeof(int64_t) * (size_t)x->n_hdr;
    if (bytes != hdr && bytes != hdr + x->in_bytes)
        return gim_errf(err, errlen, "%s sent a message of %zu bytes, not %zu: do the ranks run the same model?",
                        x->up_name, bytes, hdr + x->in_bytes);
    rt_dist_recv(x->rank - 1, RT_TAG_DATA, buf, bytes);
    (void)cap;
    return 0;
}

static int run_lockstep_rank(rt_dist *x, char *err, size_t errlen) {
    const gim_exec_model *m = x->m;
    size_t cap = sizeof(int64_t) * (size_t)x->n_hdr + x->in_bytes;
    char *buf = gim_malloc(cap);
    rt_item *it = rt_item_new(m);
    float *losses = gim_calloc((size_t)x->n, sizeof(float));
    int64_t *seq = gim_malloc(sizeof(int64_t) * (size_t)m->batch);
    int rc = 0;
    bool asked = false;
    if (!buf || !it || !losses || !seq) {
        rc = gim_errf(err, errlen, "out of memory for a batch");
        goto done;
    }
    for (;;) {
        ask_stop(x, &asked);
        if ((rc = receive(x, buf, cap, err, errlen))) break;
        int64_t kind, batch_no;
        unpack(x, buf, it, &kind, &batch_no);
        if (kind == RT_MSG_BATCH || kind == RT_MSG_TICK) {
            x->stats[x->first].received += kind == RT_MSG_BATCH;
            const int64_t *idx = NULL;
            if (kind == RT_MSG_TICK) {
                it->batch_no = batch_no;
                idx = rt_order_for(&x->order, x->cfg->seed, batch_no / x->nb) + batch_no % x->nb * m->batch;
            }
            for (int mi = x->first; mi < x->last; mi++) {
                if (idx) refresh_inputs(x, mi, idx, it);
                losses[mi] = rt_module_step(m, x->s, mi, it, x->cfg);
                x->stats[mi].steps++;
            }
            if ((rc = send_losses(x, batch_no, losses, err, errlen))) break;
            if ((rc = send_down(x, (int)kind, batch_no, it, err, errlen))) break;
        } else if (kind == RT_MSG_REFRESH) {
            if (!x->caches) {
                rc = gim_errf(err, errlen, "%s sent a refresh but this rank runs without --refresh", x->up_name);
                break;
            }
            refresh_batch(x, batch_no, seq, it);
            if ((rc = send_down(x, RT_MSG_REFRESH, batch_no, it, err, errlen))) break;
        } else if (kind == RT_MSG_SAVE) {
            if ((rc = send_down(x, RT_MSG_SAVE, 0, NULL, err, errlen)) || (rc = send_state(x, err, errlen))) break;
        } else {
            if (batch_no) rt_set_stop(1);
            rc = send_down(x, RT_MSG_END, batch_no, NULL, err, errlen);
            break;
        }
    }
    if (rc == 0) rc = send_state(x, err, errlen);
done:
    gim_free(buf);
    rt_item_free(m, it);
    gim_free(losses);
    gim_free(seq);
    return rc;
}

/* The replay buffer: received batches, each used at most max_reuse times;
 * the newest usable one is taken; a batch arriving at a full buffer
 * replaces the oldest. */
static int run_async_rank(rt_dist *x, char *err, size_t errlen) {
    const gim_exec_model *m = x->m;
    int cap_items = x->cfg->replay_capacity > 0 ? x->cfg->replay_capacity : 4;
    int reuse = x->cfg->max_reuse > 0 ? x->cfg->max_reuse : 2;
    if (reuse > GIM_DIST_MAX_REUSE) reuse = GIM_DIST_MAX_REUSE;
    size_t cap = sizeof(int64_t) * (size_t)x->n_hdr + x->in_bytes;
    char *buf = gim_malloc(cap);
    rt_item **items = gim_calloc((size_t)cap_items, sizeof(rt_item *));
    int *uses = gim_calloc((size_t)cap_items, sizeof(int));
    int64_t *arrival = gim_calloc((size_t)cap_items, sizeof(int64_t));
    float *losses = gim_calloc((size_t)x->n, sizeof(float));
    gim_dist_stats *st = &x->stats[x->first];
    int rc = 0;
    bool asked = false, ended = false;
    int64_t end_flag = 0, arrivals = 0;
    uint64_t newest = 0;   /* the producer's latest step count this rank has seen */
    int producer = x->first - 1;
    if (!buf || !items || !uses || !arrival || !losses) {
        rc = gim_errf(err, errlen, "out of memory for the replay buffer");
        goto done;
    }
    for (int i = 0; i < cap_items; i++) {
        if (!(items[i] = rt_item_new(m))) {
            rc = gim_errf(err, errlen, "out of memory for the replay buffer (%d batches)", cap_items);
            goto done;
        }
        uses[i] = -1;   /* empty */
    }
    for (;;) {
        ask_stop(x, &asked);
        /* take in whatever arrived; wait only when nothing is usable */
        for (;;) {
            bool usable = false;
            for (int i = 0; i < cap_items; i++) usable = usable || (uses[i] >= 0 && uses[i] < (ended ? 1 : reuse));
            if (ended || (usable && !rt_dist_poll(x->rank - 1, RT_TAG_DATA, NULL, NULL, NULL))) break;
            if ((rc = receive(x, buf, cap, err, errlen))) goto done;
            int64_t kind, batch_no;
            memcpy(&kind, buf, sizeof kind);
            memcpy(&batch_no, buf + sizeof kind, sizeof batch_no);
            if (kind == RT_MSG_BATCH) {
                int slot = -1;
                for (int i = 0; i < cap_items && slot < 0; i++)
                    if (uses[i] < 0) slot = i;
                if (slot < 0) {   /* full: the oldest goes */
                    slot = 0;
                    for (int i = 1; i < cap_items; i++)
                        if (arrival[i] < arrival[slot]) slot = i;
                    st->reuse[uses[slot]]++;
                }
                unpack(x, buf, items[slot], &kind, &batch_no);
                uses[slot] = 0;
                arrival[slot] = arrivals++;
                st->received++;
                if (items[slot]->made_at[producer] > newest) newest = items[slot]->made_at[producer];
            } else if (kind == RT_MSG_SAVE) {
                if ((rc = send_down(x, RT_MSG_SAVE, 0, NULL, err, errlen)) || (rc = send_state(x, err, errlen))) goto done;
            } else {
                ended = true;
                end_flag = batch_no;
            }
        }
        /* the newest usable batch; after the end only those never used */
        int pick = -1;
        for (int i = 0; i < cap_items; i++)
            if (uses[i] >= 0 && uses[i] < (ended ? 1 : reuse) && (pick < 0 || arrival[i] > arrival[pick])) pick = i;
        if (pick < 0) break;
        rt_item *it = items[pick];
        int64_t stale = (int64_t)(newest - it->made_at[producer]);
        for (int mi = x->first; mi < x->last; mi++) {
            losses[mi] = rt_module_step(m, x->s, mi, it, x->cfg);
            x->stats[mi].steps++;
            x->stats[mi].stale_sum += (double)stale;
            if (stale > x->stats[mi].stale_max) x->stats[mi].stale_max = stale;
        }
        uses[pick]++;
        if ((rc = send_losses(x, it->batch_no, losses, err, errlen))) goto done;
        /* downstream sees each batch once, as this rank first made it */
        if (uses[pick] == 1 && (rc = send_down(x, RT_MSG_BATCH, it->batch_no, it, err, errlen))) goto done;
    }
    for (int i = 0; i < cap_items; i++)
        if (uses[i] >= 0) st->reuse[uses[i]]++;
    if (end_flag) rt_set_stop(1);
    if (!(rc = send_down(x, RT_MSG_END, end_flag, NULL, err, errlen))) rc = send_state(x, err, errlen);
done:
    for (int i = 0; items && i < cap_items; i++) rt_item_free(m, items[i]);
    gim_free(items);
    gim_free(uses);
    gim_free(arrival);
    gim_free(buf);
    gim_free(losses);
    return rc;
}

/* ---- entry ---------------------------------------------------------------------------- */

int rt_train_mpi(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s, const gim_examples *d,
                 const rt_binding *b, rt_progress *p, gim_train_report *rep, char *err, size_t errlen) {
    if (cfg->schedule == GIM_SCHED_SEQUENTIAL && !cfg->e2e)
        return gim_errf(err, errlen, "the sequential schedule runs in one process; under mpirun use --schedule "
                        "simultaneous (lockstep) or async");
    rt_dist x;
    memset(&x, 0, sizeof x);
    x.m = m, x.cfg = cfg, x.s = s, x.d = d, x.b = b, x.p = p, x.rep = rep;
    x.lockstep = cfg->schedule != GIM_SCHED_ASYNC;
    x.rank = gim_dist_rank();
    x.size = gim_dist_size();
    x.n = m->n_modules;
    int rc = 0;
    x.rank_of = gim_calloc((size_t)x.n, sizeof(int));
    x.in = gim_calloc((size_t)m->n_slots + 1, sizeof(int));
    x.out = gim_calloc((size_t)m->n_slots + 1, sizeof(int));
    x.stats = gim_calloc((size_t)x.n, sizeof(gim_dist_stats));
    if (!x.rank_of || !x.in || !x.out || !x.stats) {
        rc = gim_errf(err, errlen, "out of memory");
        goto done;
    }
    if (cfg->placement) memcpy(x.rank_of, cfg->placement, sizeof(int) * (size_t)x.n);
    else {
        double *ones = gim_calloc((size_t)x.n, sizeof(double));
        for (int i = 0; ones && i < x.n; i++) ones[i] = 1;
        rc = ones ? gim_placement_balance(ones, x.n, x.size, x.rank_of, err, errlen) : -1;
        gim_free(ones);
        if (rc) goto done;
    }
    x.first = -1;
    for (int i = 0; i < x.n; i++) {
        x.stats[i].rank = x.rank_of[i];
        if (x.rank_of[i] == x.rank) {
            if (x.first < 0) x.first = i;
            x.last = i + 1;
        }
    }
    if (x.first < 0 || x.rank_of[x.n - 1] != x.size - 1) {
        rc = gim_errf(err, errlen, "the placement leaves rank %d without a module", x.first < 0 ? x.rank : x.size - 1);
        goto done;
    }
    x.n_in = slots_into(&x, x.rank, x.in);
    x.n_out = x.rank + 1 < x.size ? slots_into(&x, x.rank + 1, x.out) : 0;
    if (x.n_out > 64) {
        rc = gim_errf(err, errlen, "more than 64 slots cross from rank %d to rank %d", x.rank, x.rank + 1);
        goto done;
    }
    x.in_bytes = payload_bytes(&x, x.in, x.n_in);
    x.out_bytes = payload_bytes(&x, x.out, x.n_out);
    x.n_hdr = 2 + x.n;
    x.timeout = cfg->peer_timeout > 0 ? cfg->peer_timeout : 120.0;
    x.nb = d->n / m->batch;
    x.first_batch = s->epoch * x.nb + s->batch_in_epoch;
    x.last_batch = cfg->epochs * x.nb;
    if (cfg->steps > 0 && cfg->steps < x.last_batch) x.last_batch = cfg->steps;
    if (x.rank > 0) rank_name(&x, x.rank - 1, x.up_name, sizeof x.up_name);
    if (x.rank + 1 < x.size) rank_name(&x, x.rank + 1, x.down_name, sizeof x.down_name);
    if ((x.rank + 1 < x.size && !(x.down = rt_outbox_new(RT_OUTBOX))) || (x.rank > 0 && !(x.to0 = rt_outbox_new(16)))) {
        rc = gim_errf(err, errlen, "out of memory");
        goto done;
    }
    x.refresh = cfg->refresh > 0;
    if (x.refresh) {
        if (!x.lockstep) {
            rc = gim_errf(err, errlen, "--refresh under mpirun takes --schedule simultaneous: between refreshes every "
                          "rank trains on its own caches");
            goto done;
        }
        if (s->batch_in_epoch != 0 || s->epoch % cfg->refresh != 0) {
            rc = gim_errf(err, errlen, "under mpirun a --refresh run resumes at the start of a period only (epochs "
                          "1, %lld, ...); this checkpoint is at epoch %lld, batch %lld: resume it in one process",
                          (long long)cfg->refresh + 1, (long long)s->epoch + 1, (long long)s->batch_in_epoch);
            goto done;
        }
        x.order = (rt_order){.perm = gim_malloc(sizeof(int64_t) * (size_t)d->n), .epoch = -1, .n = d->n};
        if (!x.order.perm) {
            rc = gim_errf(err, errlen, "out of memory");
            goto done;
        }
        if ((rc = refresh_open(&x, err, errlen))) goto done;
    }
    if (x.rank == 0) rc = run_rank0(&x, err, errlen);
    else if (x.lockstep) rc = run_lockstep_rank(&x, err, errlen);
    else rc = run_async_rank(&x, err, errlen);
    if (rc == 0 && x.down) rc = rt_outbox_flush(x.down, x.timeout, x.down_name, err, errlen);
    if (rc == 0 && x.to0) rc = rt_outbox_flush(x.to0, x.timeout, "rank 0", err, errlen);
    if (rc == 0 && x.rank == 0) {
        x.stats[0].bytes_sent = x.down ? rt_outbox_bytes(x.down) : 0;
        for (int i = 0; i < x.n; i++)
            if (x.stats[i].stale_max > rep->async_max_staleness) rep->async_max_staleness = (int)x.stats[i].stale_max;
        rep->dist = x.stats;
        x.stats = NULL;
    }
done:
    if (x.caches)
        for (int i = 0; i < m->n_slots; i++) rt_cache_close(&x.caches[i]);
    gim_free(x.caches);
    gim_free(x.order.perm);
    rt_outbox_free(x.down);
    rt_outbox_free(x.to0);
    gim_free(x.rank_of);
    gim_free(x.in);
    gim_free(x.out);
    gim_free(x.stats);
    return rc;
}

#else

int rt_train_mpi(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s, const gim_examples *d,
                 const rt_binding *b, rt_progress *p, gim_train_report *rep, char *err, size_t errlen) {
    return gim_errf(err, errlen, "this gimc was built without MPI");
}

#endif
