/* Training checkpoints: the weights, and the optimizer state beside them.
 *
 *   DIR/weights.safetensors          one F32 tensor per parameter, by its
 *                                     source name; loads in Python as is
 *   DIR/optimizer-<id>.safetensors   each module's optimizer state and the
 *                                     run's counters
 *
 * Both files are written atomically, the optimizer state first; the weights'
 * metadata names the optimizer file that belongs to them, and only then are
 * older optimizer files removed. A crash at any moment therefore leaves a
 * weights file whose optimizer file exists: the pair always resumes. */
#define _GNU_SOURCE
#include "gim_train.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gim_checkpoint.h"
#include "gim_util.h"

enum { CK_COUNTERS_EXTRA = 3 };   /* epoch, batch_in_epoch, sequential_module */

static uint64_t save_id_of(const gim_exec_model *m, const gim_train_state *s) {
    uint64_t id = 0;
    for (int i = 0; i < m->n_modules; i++) id += s->module_step[i];
    return id;
}

gim_ckpt_tensor *gim_checkpoint_weight_tensors(const gim_exec_model *m, const gim_train_state *s, int *n) {
    int n_w = 0;
    for (int i = 0; i < m->n_modules; i++) n_w += m->modules[i].n_params;
    gim_ckpt_tensor *wt = gim_calloc((size_t)(n_w ? n_w : 1), sizeof *wt);
    if (!wt) return NULL;
    int k = 0;
    for (int i = 0; i < m->n_modules; i++)
        for (int j = 0; j < m->modules[i].n_params; j++) {
            const gim_param_info *p = &m->modules[i].params[j];
            wt[k] = (gim_ckpt_tensor){.name = p->name, .dtype = GIM_DT_F32, .rank = p->rank,
                                      .data = s->params[i] + p->offset};
            memcpy(wt[k].shape, p->shape, sizeof p->shape);
            k++;
        }
    *n = n_w;
    return wt;
}

int gim_checkpoint_save(const gim_exec_model *m, const gim_train_state *s, const char *dir,
                        char *err, size_t errlen) {
    return gim_checkpoint_save_meta(m, s, dir, NULL, 0, err, errlen);
}

enum { CK_MAX_EXTRA_META = 8 };

int gim_checkpoint_save_meta(const gim_exec_model *m, const gim_train_state *s, const char *dir,
                             const gim_ckpt_meta *extra, int n_extra, char *err, size_t errlen) {
    if (n_extra < 0 || n_extra > CK_MAX_EXTRA_META) {
        gim_errf(err, errlen, "a checkpoint takes at most %d extra metadata entries", CK_MAX_EXTRA_META);
        return -1;
    }
    uint64_t id = save_id_of(m, s);
    char opt_name[64], path[4096], idbuf[32];
    snprintf(opt_name, sizeof opt_name, "optimizer-%" PRIu64 ".safetensors", id);
    snprintf(idbuf, sizeof idbuf, "%" PRIu64, id);

    /* 1. optimizer state and counters */
    int n_opt = m->n_modules + 1;
    gim_ckpt_tensor *ot = gim_calloc((size_t)n_opt, sizeof *ot);
    char **names = gim_calloc((size_t)n_opt, sizeof(char *));
    int64_t *counters = gim_calloc((size_t)(m->n_modules + CK_COUNTERS_EXTRA), sizeof(int64_t));
    if (!ot || !names || !counters) {
        gim_free(ot); gim_free(names); gim_free(counters);
        gim_errf(err, errlen, "out of memory writing a checkpoint");
        return -1;
    }
    for (int i = 0; i < m->n_modules; i++) {
        names[i] = gim_xmalloc(32);
        snprintf(names[i], 32, "module%d/optimizer", i + 1);
        ot[i] = (gim_ckpt_tensor){.name = names[i], .dtype = GIM_DT_F32, .rank = 1,
                                  .shape = {m->modules[i].n_opt_floats}, .data = s->opt[i]};
        counters[i] = (int64_t)s->module_step[i];
    }
    counters[m->n_modules] = s->epoch;
    counters[m->n_modules + 1] = s->batch_in_epoch;
    counters[m->n_modules + 2] = s->sequential_module;
    ot[m->n_modules] = (gim_ckpt_tensor){.name = "counters", .dtype = GIM_DT_I64, .rank = 1,
                                         .shape = {m->n_modules + CK_COUNTERS_EXTRA}, .data = counters};
    /* the batch size: the data position (epoch, batch) counts batches of it */
    char batchbuf[32];
    snprintf(batchbuf, sizeof batchbuf, "%" PRId64, m->batch);
    gim_ckpt_meta om[] = {{"format", "gim-optimizer-1"}, {"save_id", idbuf}, {"batch", batchbuf}};
    snprintf(path, sizeof path, "%s/%s", dir, opt_name);
    int rc = gim_safetensors_write(path, ot, n_opt, om, 3, err, errlen);
    for (int i = 0; i < m->n_modules; i++) gim_free(names[i]);
    gim_free(names);
    gim_free(ot);
    gim_free(counters);
    if (rc) return -1;

    /* 2. weights, naming their optimizer file */
    int n_w = 0;
    gim_ckpt_tensor *wt = gim_checkpoint_weight_tensors(m, s, &n_w);
    if (!wt) {
        gim_errf(err, errlen, "out of memory writing a checkpoint");
        return -1;
    }
    gim_ckpt_meta wm[4 + CK_MAX_EXTRA_META] = {{"format", "gim-weights-1"}, {"model", m->name ? m->name : ""},
                                               {"save_id", idbuf}, {"optimizer", opt_name}};
    for (int i = 0; i < n_extra; i++) wm[4 + i] = extra[i];
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    rc = gim_safetensors_write(path, wt, n_w, wm, 4 + n_extra, err, errlen);
    gim_free(wt);
    if (rc) return -1;

    /* 3. older optimizer files are no longer referenced; temporary files
     * of another process (one killed mid-write) will never be renamed */
    DIR *dp = opendir(dir);
    if (dp) {
        struct dirent *e;
        char mine[64];
        snprintf(mine, sizeof mine, ".safetensors.tmp.%ld", (long)getpid());
        while ((e = readdir(dp))) {
            const char *t = strstr(e->d_name, ".safetensors.tmp.");
            if (t && strcmp(t, mine) && (!strncmp(e->d_name, "optimizer-", 10) ||
                                         !strncmp(e->d_name, "weights.safetensors", 19))) {
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                unlink(path);
                continue;
            }
            if (strncmp(e->d_name, "optimizer-", 10) || strcmp(e->d_name, opt_name) == 0) continue;
            size_t len = strlen(e->d_name);
            if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors")) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(dp);
    }
    return 0;
}

static void shape_text(char *buf, size_t n, int rank, const int64_t *shape) {
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

/* Copies every parameter of m out of c into s, or names the first mismatch.
 * With `missing` (probe of an end-to-end checkpoint), parameters absent
 * from the file are listed there and left as they are. */
static int load_params(const gim_exec_model *m, gim_train_state *s, const gim_ckpt *c, const char *path,
                       gim_sb *missing, char *err, size_t errlen) {
    int n_params = 0;
    for (int i = 0; i < m->n_modules; i++)
        for (int j = 0; j < m->modules[i].n_params; j++) {
            const gim_param_info *p = &m->modules[i].params[j];
            const gim_ckpt_tensor *t = gim_ckpt_find(c, p->name);
            if (!t && missing) {
                gim_sb_printf(missing, "%s'%s'", missing->len ? ", " : "", p->name);
                continue;
            }
            n_params++;
            if (!t) {
                gim_errf(err, errlen, "%s does not match the model: it has no tensor '%s' (a parameter of module %d)",
                         path, p->name, i + 1);
                return -1;
            }
            bool same = t->dtype == GIM_DT_F32 && t->rank == p->rank;
            for (int d = 0; same && d < p->rank; d++) same = t->shape[d] == p->shape[d];
            if (!same) {
                char want[160], got[160];
                shape_text(want, sizeof want, p->rank, p->shape);
                shape_text(got, sizeof got, t->rank, t->shape);
                gim_errf(err, errlen, "%s does not match the model: '%s' is %s %s in the file but F32 %s in the model",
                         path, p->name, gim_dtype_name(t->dtype), got, want);
                return -1;
            }
            memcpy(s->params[i] + p->offset, t->data, (size_t)p->numel * sizeof(float));
        }
    if (c->n_tensors != n_params) {
        for (int k = 0; k < c->n_tensors; k++) {
            bool known = false;
            for (int i = 0; i < m->n_modules && !known; i++)
                for (int j = 0; j < m->modules[i].n_params && !known; j++)
                    known = !strcmp(m->modules[i].params[j].name, c->tensors[k].name);
            if (!known) {
                gim_errf(err, errlen, "%s does not match the model: tensor '%s' is not a parameter of the model",
                         path, c->tensors[k].name);
                return -1;
            }
        }
    }
    return 0;
}

int gim_weights_load(const gim_exec_model *m, gim_train_state *s, const char *path, char *err, size_t errlen) {
    gim_ckpt *c = gim_safetensors_read(path, err, errlen);
    if (!c) return -1;
    int rc = load_params(m, s, c, path, NULL, err, errlen);
    gim_ckpt_free(c);
    return rc;
}

int gim_weights_load_probe(const gim_exec_model *m, gim_train_state *s, const char *path,
                           char *note, size_t notelen, char *err, size_t errlen) {
    if (note && notelen) note[0] = 0;
    gim_ckpt *c = gim_safetensors_read(path, err, errlen);
    if (!c) return -1;
    const char *training = gim_ckpt_meta_get(c, "training");
    bool e2e = training && !strcmp(training, "e2e");
    gim_sb missing = {0};
    int rc = load_params(m, s, c, path, e2e ? &missing : NULL, err, errlen);
    if (rc == 0 && missing.len && note)
        snprintf(note, notelen, "%s was trained end to end: %s, loss parameters of greedy training, are not in it "
                 "and stay at their initial values (no feature depends on them)", path, missing.buf);
    gim_sb_free(&missing);
    gim_ckpt_free(c);
    return rc;
}

int gim_checkpoint_load(const gim_exec_model *m, gim_train_state *s, const char *dir, bool opt,
                        char *err, size_t errlen) {
    char path[4096], opath[4096];
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    gim_ckpt *c = gim_safetensors_read(path, err, errlen);
    if (!c) return -1;
    int rc = load_params(m, s, c, path, NULL, err, errlen);
    const char *oname = gim_ckpt_meta_get(c, "optimizer");
    if (rc || !opt) {
        gim_ckpt_free(c);
        return rc;
    }
    if (!oname || strchr(oname, '/')) {
        gim_errf(err, errlen, "%s has no optimizer state to resume from (weights only)", path);
        gim_ckpt_free(c);
        return -1;
    }
    snprintf(opath, sizeof opath, "%s/%s", dir, oname);
    gim_ckpt_free(c);
    gim_ckpt *o = gim_safetensors_read(opath, err, errlen);
    if (!o) return -1;
    rc = -1;
    const char *batch = gim_ckpt_meta_get(o, "batch");
    if (batch && strtoll(batch, NULL, 10) != m->batch) {
        gim_errf(err, errlen, "%s was saved training with batch %s, and its position in the data counts such "
                 "batches; resume with --batch %s (this run has %" PRId64 ")", opath, batch, batch, m->batch);
        goto done;
    }
    const gim_ckpt_tensor *ct = gim_ckpt_find(o, "counters");
    if (!ct || ct->dtype != GIM_DT_I64 || ct->rank != 1 || ct->shape[0] != m->n_modules + CK_COUNTERS_EXTRA) {
        gim_errf(err, errlen, "%s does not match the model: its counters are not for %d modules", opath, m->n_modules);
        goto done;
    }
    for (int i = 0; i < m->n_modules; i++) {
        char name[32];
        snprintf(name, sizeof name, "module%d/optimizer", i + 1);
        const gim_ckpt_tensor *t = gim_ckpt_find(o, name);
        if (!t || t->dtype != GIM_DT_F32 || t->numel != m->modules[i].n_opt_floats) {
            gim_errf(err, errlen, "%s does not match the model: '%s' %s", opath, name,
                     t ? "has the wrong size (another optimizer?)" : "is missing");
            goto done;
        }
        memcpy(s->opt[i], t->data, (size_t)t->numel * sizeof(float));
    }
    const int64_t *cv = ct->data;
    for (int i = 0; i < m->n_modules; i++) s->module_step[i] = (uint64_t)cv[i];
    s->epoch = cv[m->n_modules];
    s->batch_in_epoch = cv[m->n_modules + 1];
    s->sequential_module = (int)cv[m->n_modules + 2];
    if (s->epoch < 0 || s->batch_in_epoch < 0 || s->sequential_module < 0 || s->sequential_module >= m->n_modules) {
        gim_errf(err, errlen, "%s: counters out of range", opath);
        goto done;
    }
    rc = 0;
done:
    gim_ckpt_free(o);
    return rc;
}
