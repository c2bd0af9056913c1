/* The sequential schedule: module 1 for all its epochs; then its outputs
 * over the whole training set are computed once into a cache that is
 * module 2's data set; and so on. A source's examples are cached as epoch
 * 0 gives them (a resumed run rebuilds the same cache); the data slots a
 * module reads directly come from the epoch it trains. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gim_util.h"
#include "train_internal.h"

/* Per-example storage of one slot for the whole training set: memory-mapped
 * from an unlinked file in the output directory, so a cache larger than
 * memory pages to disk instead of failing. */
typedef struct rt_cache {
    float *data;
    size_t bytes;
    int64_t per_example;
} rt_cache;

static int cache_open(rt_cache *c, const char *dir, int64_t n, int64_t per_example, char *err, size_t errlen) {
    c->per_example = per_example;
    c->bytes = (size_t)n * (size_t)per_example * sizeof(float);
    char path[4096];
    snprintf(path, sizeof path, "%s/.cache.XXXXXX", dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        gim_errf(err, errlen, "cannot create a cache file in %s: %s", dir ? dir : "/tmp", strerror(errno));
        return -1;
    }
    unlink(path);
    int e = posix_fallocate(fd, 0, (off_t)c->bytes);
    if (e) {
        close(fd);
        gim_errf(err, errlen, "cannot reserve %.2f GiB for the sequential schedule's cache in %s: %s",
                 (double)c->bytes / (1 << 30), dir ? dir : "/tmp", strerror(e));
        return -1;
    }
    c->data = mmap(NULL, c->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (c->data == MAP_FAILED) {
        c->data = NULL;
        gim_errf(err, errlen, "cannot map the cache: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void cache_close(rt_cache *c) {
    if (c->data) munmap(c->data, c->bytes);
    c->data = NULL;
}

/* Sources of each slot while module `mi` trains sequentially: data slots
 * come from the data set, earlier modules' exports from caches. */
static int fill_sequential(const gim_exec_model *m, const rt_binding *b, const gim_examples *d, int64_t epoch,
                           rt_cache *caches, int mi, const int64_t *idx, rt_item *it, char *err, size_t errlen) {
    if (rt_fill_data(m, b, d, epoch, idx, it, err, errlen)) return -1;
    const gim_exec_module *mod = &m->modules[mi];
    for (int i = 0; i < mod->n_inputs; i++) {
        int sl = mod->inputs[i];
        if (m->slots[sl].producer < 0) continue;
        rt_cache *c = &caches[sl];
        for (int64_t e = 0; e < m->batch; e++)
            memcpy(it->slot[sl] + e * c->per_example, c->data + idx[e] * c->per_example,
                   (size_t)c->per_example * sizeof(float));
    }
    return 0;
}

int rt_train_sequential(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s,
                        const gim_examples *d, const rt_binding *b, rt_progress *p, gim_train_report *rep,
                        char *err, size_t errlen) {
    int64_t nb = d->n / m->batch;
    for (int i = 0; i < m->n_slots; i++)
        if (m->slots[i].producer >= 0 && (m->slots[i].rank < 1 || m->slots[i].shape[0] != m->batch)) {
            gim_errf(err, errlen, "the sequential schedule caches module outputs per example, but '%s' "
                     "does not have the batch as its first dimension", m->slots[i].name);
            return -1;
        }
    rt_cache *caches = gim_calloc((size_t)m->n_slots, sizeof(rt_cache));
    rt_item *it = rt_item_new(m);
    rt_order order = {.perm = gim_malloc(sizeof(int64_t) * (size_t)d->n), .epoch = -1, .n = d->n};
    int64_t *seq = gim_malloc(sizeof(int64_t) * (size_t)m->batch);
    bool *need = gim_calloc((size_t)m->n_slots, sizeof(bool));
    int rc = 0;
    if (!caches || !it || !order.perm || !seq || !need) {
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
                for (int e = 0; e < prev->n_exports; e++) {
                    int sl = prev->exports[e];
                    if (need[sl] && !caches[sl].data) {
                        if ((rc = cache_open(&caches[sl], cfg->out_dir, d->n, m->slots[sl].numel / m->batch, err, errlen))) break;
                        needed = true;
                    }
                }
                if (rc || !needed) continue;
                double bytes = 0;
                for (int e = 0; e < prev->n_exports; e++)
                    if (caches[prev->exports[e]].data) bytes += (double)caches[prev->exports[e]].bytes;
                if (p->out) {
                    fprintf(p->out, "module %d: caching its outputs over %lld examples (%.2f GiB in %s)\n", pm + 1,
                            (long long)d->n, bytes / (1 << 30), cfg->out_dir ? cfg->out_dir : "/tmp");
                    fflush(p->out);
                }
                double t_cache = rt_now(), t_drawn = t_cache;
                int64_t every = d->n / 20 > m->batch ? d->n / 20 : m->batch, next_line = every;
                /* Every example, not only the first nb * batch: the shuffled
                 * order draws its batches from all n. The final partial batch
                 * is padded by repeating its last example. */
                for (int64_t start = 0; start < d->n && !rt_stop_now(); start += m->batch) {
                    int64_t count = d->n - start < m->batch ? d->n - start : m->batch;
                    for (int64_t e = 0; e < m->batch; e++) seq[e] = start + (e < count ? e : count - 1);
                    if ((rc = fill_sequential(m, b, d, 0, caches, pm, seq, it, err, errlen))) break;
                    rt_module_forward(m, s, pm, it);
                    for (int e = 0; e < prev->n_exports; e++) {
                        int sl = prev->exports[e];
                        if (!caches[sl].data) continue;
                        memcpy(caches[sl].data + start * caches[sl].per_example, it->slot[sl],
                               (size_t)(count * caches[sl].per_example) * sizeof(float));
                    }
                    /* progress: minutes of work on a full data set */
                    int64_t done = start + count;
                    double t = rt_now();
                    bool last = done == d->n;
                    if (p->out && (p->tty ? (t - t_drawn >= 0.2 || last) : (done >= next_line || last))) {
                        double rate = t > t_cache ? (double)done / (t - t_cache) : 0;
                        fprintf(p->out, p->tty ? "\r\033[Kcaching %lld/%lld examples  %.0f ex/s%s"
                                               : "caching %lld/%lld examples  %.0f ex/s%s\n",
                                (long long)done, (long long)d->n, rate, p->tty && last ? "\n" : "");
                        fflush(p->out);
                        t_drawn = t;
                        while (next_line <= done) next_line += every;
                    }
                }
            }
            /* Caches module mi does not read served only to build the ones
             * it does: give their memory and disk back. (Module 1's output
             * over Fashion-MNIST's 60000 images is 16.5 GiB.) */
            for (int i = 0; i < m->n_slots; i++) {
                bool read = false;
                for (int k = 0; k < m->modules[mi].n_inputs; k++) read = read || m->modules[mi].inputs[k] == i;
                if (!read) cache_close(&caches[i]);
            }
        }
        if (rc || mi < s->sequential_module) continue;
        if (p->out) fprintf(p->out, "module %d: training\n", mi + 1);
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
        for (int i = 0; i < m->n_slots; i++) cache_close(&caches[i]);
    gim_free(caches);
    gim_free(need);
    rt_item_free(m, it);
    gim_free(order.perm);
    gim_free(seq);
    return rc;
}
