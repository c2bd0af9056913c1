/* The sequential schedule: module 1 for all its epochs; then its outputs
 * over the whole training set are computed once into a cache that is
 * module 2's data set; and so on. A source's examples are cached as epoch
 * 0 gives them (a resumed run rebuilds the same cache); the data slots a
 * module reads directly come from the epoch it trains. */
#include <stdint.h>
#include <stdio.h>

#include "gim_util.h"
#include "train_internal.h"

/* Sources of each slot while module `mi` trains sequentially: data slots
 * come from the data set, earlier modules' exports from caches. */
static int fill_sequential(const gim_exec_model *m, const rt_binding *b, const gim_examples *d, int64_t epoch,
                           const rt_cache *caches, int mi, const int64_t *idx, rt_item *it, char *err, size_t errlen) {
    if (rt_fill_data(m, b, d, epoch, idx, it, err, errlen)) return -1;
    rt_cache_fill_inputs(m, caches, mi, idx, it);
    return 0;
}

int rt_train_sequential(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
                        const gim_examples *d, const rt_binding *b, rt_progress *p, gim_train_report *rep,
                        char *err, size_t errlen) {
    int64_t nb = d->n / m->batch;
    bool *cached = gim_calloc((size_t)m->n_slots, sizeof(bool));
    if (!cached) {
        gim_errf(err, errlen, "out of memory for the sequential schedule");
        return -1;
    }
    if (rt_cache_slots(m, cached, "the sequential schedule", err, errlen)) {
        gim_free(cached);
        return -1;
    }
    /* Refused before module 1 trains, not hours later when its cache is
     * due: the most the caches hold at once is every cached slot (the
     * last module's build keeps the chain below it open). */
    uint64_t peak = 0;
    for (int i = 0; i < m->n_slots; i++)
        if (cached[i]) peak += rt_cache_bytes(d->n, m->slots[i].numel / m->batch, cfg->cache_dtype);
    gim_free(cached);
    if (peak && s->sequential_module < m->n_modules) {
        if (p->out) {
            char size[32];
            fprintf(p->out, "sequential: the caches of module outputs take up to %s (%s) in %s\n",
                    rt_cache_size_text(size, sizeof size, peak), rt_cache_dtype_name(cfg->cache_dtype),
                    cfg->out_dir ? cfg->out_dir : "/tmp");
            fflush(p->out);
        }
        if (rt_cache_check_room(cfg->out_dir, peak, "the sequential schedule's caches", cfg->cache_dtype, err, errlen))
            return -1;
    }
    rt_cache *caches = gim_calloc((size_t)m->n_slots, sizeof(rt_cache));
    rt_item *it = rt_item_new(m);
    rt_order order = {.perm = gim_malloc(sizeof(int64_t) * (size_t)d->n), .epoch = -1, .n = d->n};
    bool *need = gim_calloc((size_t)m->n_slots, sizeof(bool));
    bool *want = gim_calloc((size_t)m->n_slots, sizeof(bool));
    int rc = 0;
    if (!caches || !it || !order.perm || !need || !want) {
        gim_errf(err, errlen, "out of memory for the sequential schedule");
        rc = -1;
        goto done;
    }
    int64_t limit = cfg->steps > 0 ? cfg->steps : INT64_MAX;
    for (int mi = 0; mi < m->n_modules && rc == 0; mi++) {
        /* Caches of the slots this module reads from earlier modules: built
         * by running those modules' forward passes over the data once. On
         * resume they are rebuilt from the loaded parameters. */
        if (mi >= s->sequential_module) {
            s->sequential_module = mi;
            /* Needed: the slots module mi reads from earlier modules and,
             * going back, those their producers read (a resumed run starts
             * with no cache at all). */
            for (int i = 0; i < m->n_slots; i++) need[i] = false;
            for (int i = 0; i < m->modules[mi].n_inputs; i++)
                if (m->slots[m->modules[mi].inputs[i]].producer >= 0) need[m->modules[mi].inputs[i]] = true;
            for (int pm = mi - 1; pm >= 0; pm--) {
                const gim_exec_module *prev = &m->modules[pm];
                bool any = false;
                for (int e = 0; e < prev->n_exports; e++) any = any || need[prev->exports[e]];
                for (int i = 0; any && i < prev->n_inputs; i++)
                    if (m->slots[prev->inputs[i]].producer >= 0) need[prev->inputs[i]] = true;
            }
            for (int pm = 0; pm < mi && rc == 0; pm++) {
                const gim_exec_module *prev = &m->modules[pm];
                bool needed = false;
                for (int i = 0; i < m->n_slots; i++) want[i] = false;
                for (int e = 0; e < prev->n_exports; e++) {
                    int sl = prev->exports[e];
                    if (need[sl] && !caches[sl].data) want[sl] = needed = true;
                }
                if (!needed) continue;
                char what[96];
                snprintf(what, sizeof what, "module %d: caching its outputs over %lld examples", pm + 1, (long long)d->n);
                if ((rc = rt_cache_open_slots(caches, want, m, cfg->out_dir, d->n, cfg->cache_dtype, p->out, what, err,
                                              errlen)))
                    break;
                /* a source's examples as epoch 0 gives them */
                int brc = rt_cache_build(m, s, d, b, 0, caches, pm, p, err, errlen);
                if (brc < 0) rc = -1;
                if (brc) break;
            }
            /* Caches module mi does not read served only to build the ones
             * it does: give their memory and disk back. (Module 1's output
             * over Fashion-MNIST's 60000 images is 16.5 GiB.) */
            for (int i = 0; i < m->n_slots; i++) {
                bool read = false;
                for (int k = 0; k < m->modules[mi].n_inputs; k++) read = read || m->modules[mi].inputs[k] == i;
                if (!read) rt_cache_close(&caches[i]);
            }
        }
        if (rc || rt_stop_now()) break;   /* stopped while caching: resumes by building again */
        if (mi < s->sequential_module) continue;
        if (p->out) {
            fprintf(p->out, "module %d: training\n", mi + 1);
            fflush(p->out);   /* a log shows it now, not with the next progress line */
        }
        for (; s->epoch < cfg->epochs && rc == 0; s->epoch++, s->batch_in_epoch = 0) {
            const int64_t *perm = rt_order_for(&order, cfg->seed, s->epoch);
            for (; s->batch_in_epoch < nb && rc == 0;) {
                int64_t step = s->epoch * nb + s->batch_in_epoch;
                if (step >= limit || rt_stop_now()) break;
                if ((rc = fill_sequential(m, b, d, s->epoch, caches, mi, perm + s->batch_in_epoch * m->batch, it, err,
                                          errlen)))
                    break;
                float loss = rt_module_step(m, s, mi, it, cfg);
                if ((rc = rt_diverged(m, mi, loss, s->module_step[mi], err, errlen))) {
                    rep->diverged = true;
                    break;
                }
                if ((rc = rt_confirm_save(m, cfg, p, err, errlen))) break;
                s->batch_in_epoch++;
                rep->steps++;
                rt_progress_examples(p, m->batch);
                rt_progress_record(p, mi, loss, step + 1, s->epoch + 1);
                if (rt_progress_due(p, s->batch_in_epoch, nb))
                    rt_progress_line(p, s->epoch, cfg->epochs, s->batch_in_epoch, nb, s->batch_in_epoch == nb);
                if (s->batch_in_epoch < nb) rc = rt_maybe_save(m, s, cfg, p, step + 1, false, err, errlen);
            }
            if (rc || rt_stop_now() || s->epoch * nb + s->batch_in_epoch >= limit) {
                /* a bar cut short ends its line before what follows */
                if (!rc && s->batch_in_epoch < nb && p->tty)
                    rt_progress_line(p, s->epoch, cfg->epochs, s->batch_in_epoch, nb, true);
                break;
            }
            rc = rt_maybe_save(m, s, cfg, p, s->epoch * nb + nb, true, err, errlen);
        }
        if (rc || rt_stop_now()) break;
        /* module mi is done: its pending checkpoint goes to disk before the
         * next module's caches (possibly minutes of work) are built */
        if ((rc = rt_confirm_save(m, cfg, p, err, errlen))) break;
        /* next module starts from epoch 0 */
        s->epoch = 0;
        s->batch_in_epoch = 0;
        if (mi + 1 < m->n_modules) s->sequential_module = mi + 1;
        else s->epoch = cfg->epochs;
    }
done:
    if (caches)
        for (int i = 0; i < m->n_slots; i++) rt_cache_close(&caches[i]);
    gim_free(caches);
    gim_free(need);
    gim_free(want);
    rt_item_free(m, it);
    gim_free(order.perm);
    return rc;
}
