/* The simultaneous schedule: one batch in flight; every module steps on it
 * in order, module 1 first, so module k trains on what module k - 1 made
 * from that batch with the parameters it had just before its own step.
 * Checkpoints: every --save-every steps (or a minute) and at each epoch's
 * end, each written once the next step's losses came out finite. */
#include <stdint.h>

#include "gim_util.h"
#include "train_internal.h"

int rt_simultaneous_batch(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
                          const gim_examples *d, const rt_binding *b, const rt_cache *caches, const int64_t *idx,
                          rt_item *it, float *losses, rt_progress *p, gim_train_report *rep, char *err,
                          size_t errlen) {
    int64_t nb = d->n / m->batch, step = s->epoch * nb + s->batch_in_epoch;
    int rc = rt_fill_data(m, b, d, s->epoch, idx, it, err, errlen);
    if (rc) return rc;
    for (int mi = 0; mi < m->n_modules; mi++) {
        /* overwrites what the module below just exported */
        if (caches) rt_cache_fill_inputs(m, caches, mi, idx, it);
        losses[mi] = rt_module_step(m, s, mi, it, cfg);
        if ((rc = rt_diverged(m, mi, losses[mi], s->module_step[mi], err, errlen))) {
            rep->diverged = true;
            return rc;
        }
    }
    if ((rc = rt_confirm_save(m, cfg, p, err, errlen))) return rc;
    s->batch_in_epoch++;
    rep->steps++;
    rt_progress_examples(p, m->batch);   /* first: the rows carry this step's rate */
    for (int mi = 0; mi < m->n_modules; mi++) rt_progress_record(p, mi, losses[mi], step + 1, s->epoch + 1);
    if (rt_progress_due(p, s->batch_in_epoch, nb))
        rt_progress_line(p, s->epoch, cfg->epochs, s->batch_in_epoch, nb, s->batch_in_epoch == nb);
    if (s->batch_in_epoch < nb) rc = rt_maybe_save(m, s, cfg, p, step + 1, false, err, errlen);
    return rc;
}

int rt_train_simultaneous(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
                          const gim_examples *d, const rt_binding *b, rt_progress *p, gim_train_report *rep,
                          char *err, size_t errlen) {
    int64_t nb = d->n / m->batch;
    rt_item *it = rt_item_new(m);
    rt_order order = {.perm = gim_malloc(sizeof(int64_t) * (size_t)d->n), .epoch = -1, .n = d->n};
    float *losses = gim_malloc(sizeof(float) * (size_t)m->n_modules);
    if (!it || !order.perm || !losses) {
        rt_item_free(m, it);
        gim_free(order.perm);
        gim_free(losses);
        gim_errf(err, errlen, "out of memory for a batch");
        return -1;
    }
    int rc = 0;
    int64_t limit = cfg->steps > 0 ? cfg->steps : INT64_MAX;
    for (; s->epoch < cfg->epochs && rc == 0; s->epoch++, s->batch_in_epoch = 0) {
        const int64_t *perm = rt_order_for(&order, cfg->seed, s->epoch);
        for (; s->batch_in_epoch < nb; ) {
            int64_t step = s->epoch * nb + s->batch_in_epoch;
            if (step >= limit || rt_stop_now()) break;
            if ((rc = rt_simultaneous_batch(m, cfg, s, d, b, NULL, perm + s->batch_in_epoch * m->batch, it, losses, p,
                                            rep, err, errlen)))
                break;
        }
        if (rc || rt_stop_now() || s->epoch * nb + s->batch_in_epoch >= limit) {
            if (!rc && s->batch_in_epoch < nb && p->tty) rt_progress_line(p, s->epoch, cfg->epochs, s->batch_in_epoch, nb, true);
            if (!rc && s->batch_in_epoch == nb) { s->epoch++; s->batch_in_epoch = 0; }
            break;
        }
        /* end of epoch: always a checkpoint */
        if ((rc = rt_maybe_save(m, s, cfg, p, s->epoch * nb + s->batch_in_epoch, true, err, errlen))) break;
    }
    rt_item_free(m, it);
    gim_free(order.perm);
    gim_free(losses);
    return rc;
}
