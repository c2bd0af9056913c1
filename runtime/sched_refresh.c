/* The refresh schedule (--refresh N): Greedy InfoMax's other recipe. Every
 * module trains in every epoch, one batch after another as under the
 * simultaneous schedule, but a module above the first reads what the
 * modules below it made not live, from this step, but from a cache of
 * their outputs over the whole training set, recomputed from the current
 * lower modules at the start of epochs 0, N, 2N, ... Between two refreshes
 * no module depends on another's progress: each could run anywhere, which
 * is what makes the recipe worth having across machines.
 *
 * A refresh runs module k's forward pass over every example into the
 * caches of its exports, for k = 1, 2, ... in turn, module k reading its
 * inputs from the caches just rebuilt below it (so the values a module
 * trains on and the values its own cache is computed from are the same).
 * A source's examples are those of the refresh's epoch.
 *
 * Resume: a checkpoint inside a period holds parameters the period's cache
 * was not computed from. Each refresh therefore first writes the
 * parameters it computes from to OUT/refresh.safetensors (tensors named as
 * in weights.safetensors, metadata "epoch"), and a run resumed inside a
 * period rebuilds its cache from them: the same bits as the run that was
 * not interrupted. The pending checkpoint of the epoch before goes to disk
 * before that file is replaced, so the newest checkpoint is never older
 * than the period the file belongs to. */
#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gim_checkpoint.h"
#include "gim_util.h"
#include "train_internal.h"

/* OUT/refresh.safetensors: every module's parameters now, and the epoch. */
static int write_refresh_params(const gim_exec_model *m, const gim_train_state *s, const gim_train_config *cfg,
                                int64_t epoch, char *err, size_t errlen) {
    if (!cfg->out_dir) return 0;
    int n_w = 0;
    gim_ckpt_tensor *wt = gim_checkpoint_weight_tensors(m, s, &n_w);
    if (!wt) {
        gim_errf(err, errlen, "out of memory writing %s/refresh.safetensors", cfg->out_dir);
        return -1;
    }
    char ebuf[32], nbuf[32], path[4096];
    snprintf(ebuf, sizeof ebuf, "%" PRId64, epoch);
    snprintf(nbuf, sizeof nbuf, "%" PRId64, cfg->refresh);
    gim_ckpt_meta meta[] = {{"format", "gim-refresh-1"}, {"model", m->name ? m->name : ""}, {"epoch", ebuf},
                            {"refresh", nbuf}};
    snprintf(path, sizeof path, "%s/refresh.safetensors", cfg->out_dir);
    int rc = gim_safetensors_write(path, wt, n_w, meta, 4, err, errlen);
    gim_free(wt);
    /* the temporary file of a run killed mid-write will never be renamed */
    DIR *dp = rc ? NULL : opendir(cfg->out_dir);
    if (dp) {
        char mine[64];
        snprintf(mine, sizeof mine, "refresh.safetensors.tmp.%ld", (long)getpid());
        struct dirent *e;
        while ((e = readdir(dp)))
            if (!strncmp(e->d_name, "refresh.safetensors.tmp.", 24) && strcmp(e->d_name, mine)) {
                snprintf(path, sizeof path, "%s/%s", cfg->out_dir, e->d_name);
                unlink(path);
            }
        closedir(dp);
    }
    return rc;
}

/* Rebuilds every cache, module by module, from the parameters in s. */
static int build_all(const gim_exec_model *m, const gim_train_state *s, const gim_examples *d, const rt_binding *b,
                     int64_t epoch, rt_cache *caches, rt_progress *p, char *err, size_t errlen) {
    for (int mi = 0; mi < m->n_modules; mi++) {
        bool any = false;
        for (int e = 0; e < m->modules[mi].n_exports; e++) any = any || caches[m->modules[mi].exports[e]].data;
        if (!any) continue;
        if (p->out) {
            fprintf(p->out, "refresh (epoch %lld): module %d's outputs over %lld examples\n", (long long)epoch + 1,
                    mi + 1, (long long)d->n);
            fflush(p->out);
        }
        int rc = rt_cache_build(m, s, d, b, epoch, caches, mi, p, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

/* A run resumed inside the period that began at `epoch`: the caches from
 * the parameters OUT/refresh.safetensors holds; s's own are put back. */
static int rebuild_from_file(const gim_exec_model *m, gim_train_state *s, const gim_train_config *cfg,
                             const gim_examples *d, const rt_binding *b, int64_t epoch, rt_cache *caches,
                             rt_progress *p, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/refresh.safetensors", cfg->out_dir ? cfg->out_dir : ".");
    if (!cfg->out_dir) {
        gim_errf(err, errlen, "cannot resume --refresh inside a period without an output directory");
        return -1;
    }
    char rerr[1024];
    gim_ckpt *c = gim_safetensors_read(path, rerr, sizeof rerr);
    if (!c) {
        gim_errf(err, errlen, "cannot resume inside a refresh period (from epoch %lld): the parameters its cache "
                 "was computed from are not readable: %s", (long long)epoch + 1, rerr);
        return -1;
    }
    const char *fe = gim_ckpt_meta_get(c, "epoch"), *fmt = gim_ckpt_meta_get(c, "format");
    long long file_epoch = fe ? strtoll(fe, NULL, 10) : -1;
    bool ok = fmt && !strcmp(fmt, "gim-refresh-1") && file_epoch == epoch;
    if (!ok) {
        /* epochs counted from 1, as the progress lines do */
        gim_errf(err, errlen, "cannot resume: %s holds the parameters of the refresh at epoch %lld, but the "
                 "checkpoint is inside the period that began at epoch %lld", path, file_epoch + 1, (long long)epoch + 1);
        gim_ckpt_free(c);
        return -1;
    }
    gim_ckpt_free(c);
    int n = m->n_modules, rc = 0;
    float **mine = gim_calloc((size_t)n, sizeof(float *));
    for (int i = 0; mine && i < n && rc == 0; i++) {
        if (!(mine[i] = rt_alloc_floats(m->modules[i].n_param_floats))) rc = -1;
        else memcpy(mine[i], s->params[i], sizeof(float) * (size_t)m->modules[i].n_param_floats);
    }
    if (!mine || rc) {
        gim_errf(err, errlen, "out of memory resuming a refresh period");
        rc = -1;
        goto done;
    }
    if ((rc = gim_weights_load(m, s, path, err, errlen)) == 0) rc = build_all(m, s, d, b, epoch, caches, p, err, errlen);
    for (int i = 0; i < n; i++) memcpy(s->params[i], mine[i], sizeof(float) * (size_t)m->modules[i].n_param_floats);
done:
    for (int i = 0; mine && i < n; i++) gim_free(mine[i]);
    gim_free(mine);
    return rc;
}

int rt_train_refresh(const gim_exec_model *m, const gim_train_config *cfg, gim_train_state *s, const gim_examples *d,
                     const rt_binding *b, rt_progress *p, gim_train_report *rep, char *err, size_t errlen) {
    int64_t nb = d->n / m->batch, every = cfg->refresh;
    bool *cached = gim_calloc((size_t)m->n_slots, sizeof(bool));
    rt_cache *caches = gim_calloc((size_t)m->n_slots, sizeof(rt_cache));
    rt_item *it = rt_item_new(m);
    rt_order order = {.perm = gim_malloc(sizeof(int64_t) * (size_t)d->n), .epoch = -1, .n = d->n};
    float *losses = gim_malloc(sizeof(float) * (size_t)m->n_modules);
    int rc = 0;
    if (!cached || !caches || !it || !order.perm || !losses) {
        gim_errf(err, errlen, "out of memory for the refresh schedule");
        rc = -1;
        goto done;
    }
    if ((rc = rt_cache_slots(m, cached, "--refresh", err, errlen))) goto done;
    /* opened once, rewritten at each refresh */
    if (s->epoch < cfg->epochs &&
        (rc = rt_cache_open_slots(caches, cached, m, cfg->out_dir, d->n, cfg->cache_dtype, p->out,
                                  "refresh: caches of module outputs", err, errlen)))
        goto done;
    int64_t limit = cfg->steps > 0 ? cfg->steps : INT64_MAX;
    bool built = false;
    for (; s->epoch < cfg->epochs && rc == 0; s->epoch++, s->batch_in_epoch = 0) {
        if (s->batch_in_epoch >= nb) continue;   /* resumed at an epoch's end */
        if (s->epoch * nb + s->batch_in_epoch >= limit || rt_stop_now()) break;
        int64_t start = s->epoch / every * every;
        if (s->batch_in_epoch == 0 && s->epoch == start) {
            /* a refresh: the checkpoint due before it first, then the
             * parameters it computes from, then the caches */
            if ((rc = rt_confirm_save(m, cfg, p, err, errlen)) ||
                (rc = write_refresh_params(m, s, cfg, s->epoch, err, errlen)))
                break;
            rc = build_all(m, s, d, b, s->epoch, caches, p, err, errlen);
        } else if (!built) {
            rc = rebuild_from_file(m, s, cfg, d, b, start, caches, p, err, errlen);
        }
        if (rc) {
            if (rc > 0) rc = 0;   /* stopped while building: resumes with a refresh */
            break;
        }
        built = true;
        const int64_t *perm = rt_order_for(&order, cfg->seed, s->epoch);
        for (; s->batch_in_epoch < nb;) {
            int64_t step = s->epoch * nb + s->batch_in_epoch;
            if (step >= limit || rt_stop_now()) break;
            if ((rc = rt_simultaneous_batch(m, cfg, s, d, b, caches, perm + s->batch_in_epoch * m->batch, it, losses,
                                            p, rep, err, errlen)))
                break;
        }
        if (rc || rt_stop_now() || s->epoch * nb + s->batch_in_epoch >= limit) {
            if (!rc && s->batch_in_epoch < nb && p->tty)
                rt_progress_line(p, s->epoch, cfg->epochs, s->batch_in_epoch, nb, true);
            if (!rc && s->batch_in_epoch == nb) {
                s->epoch++;
                s->batch_in_epoch = 0;
            }
            break;
        }
        /* end of epoch: always a checkpoint */
        if ((rc = rt_maybe_save(m, s, cfg, p, s->epoch * nb + s->batch_in_epoch, true, err, errlen))) break;
    }
done:
    if (caches)
        for (int i = 0; i < m->n_slots; i++) rt_cache_close(&caches[i]);
    gim_free(caches);
    gim_free(cached);
    rt_item_free(m, it);
    gim_free(order.perm);
    gim_free(losses);
    return rc;
}
