/* eval.json: what `gimc eval` measured, for people and for `gimc report`.
 *
 *   {"gim_eval": 1, "model": ..., "model_file": ..., "weights": ... | null,
 *    "data": ..., "seed": N, "seconds": S,
 *    "probes": [{"task": "classes", "features": "flattened", "classes": 10,
 *                "train_examples": N, "test_examples": N,
 *                "epochs": 10, "batch": 256, "lr": 0.001,
 *                "modules": [{"module": 1, "features": 1152,
 *                             "trained": {"train_acc": F, "test_acc": F, "loss": F} | null,
 *                             "random":  {...} | null}, ...]}, ...]}
 *
 * Accuracies are fractions in [0, 1] in full precision; the table gimc eval
 * prints rounds the same numbers to two decimals of a percent. docs/cli.md
 * documents the format for other readers. */
#include "gim_records.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gim_util.h"

static void eval_score_write(FILE *f, const gim_probe_score *s) {
    if (!s->have) {
        fputs("null", f);
        return;
    }
    fputs("{\"train_acc\": ", f);
    gim_json_num(f, s->train_acc);
    fputs(", \"test_acc\": ", f);
    gim_json_num(f, s->test_acc);
    fputs(", \"loss\": ", f);
    gim_json_num(f, s->loss);
    fputs("}", f);
}

int gim_eval_write(const char *path, const gim_eval_results *r, char *err, size_t errlen) {
    char tmp[4200];
    FILE *f = gim_file_begin(path, tmp, sizeof tmp, err, errlen);
    if (!f) return -1;
    fputs("{\n  \"gim_eval\": 1,\n  \"model\": ", f);
    gim_json_str(f, r->model);
    fputs(",\n  \"model_file\": ", f);
    gim_json_str(f, r->model_file);
    fputs(",\n  \"weights\": ", f);
    gim_json_str(f, r->weights);
    fputs(",\n  \"data\": ", f);
    gim_json_str(f, r->data);
    fprintf(f, ",\n  \"seed\": %llu,\n  \"seconds\": ", (unsigned long long)r->seed);
    gim_json_num(f, r->seconds);
    fputs(",\n  \"probes\": [", f);
    for (int p = 0; p < r->n_probes; p++) {
        const gim_eval_probe *pr = &r->probes[p];
        fputs(p ? ",\n    {\"task\": " : "\n    {\"task\": ", f);
        gim_json_str(f, pr->task);
        fputs(", \"features\": ", f);
        gim_json_str(f, pr->features);
        fprintf(f, ", \"classes\": %d, \"train_examples\": %lld, \"test_examples\": %lld,\n", pr->classes,
                (long long)pr->train_examples, (long long)pr->test_examples);
        fprintf(f, "     \"epochs\": %d, \"batch\": %d, \"lr\": ", pr->epochs, pr->batch);
        gim_json_num(f, pr->lr);
        fputs(",\n     \"modules\": [", f);
        for (int i = 0; i < pr->n_modules; i++) {
            const gim_eval_module *mo = &pr->modules[i];
            fprintf(f, "%s\n       {\"module\": %d, \"features\": %lld,\n        \"trained\": ", i ? "," : "",
                    mo->module, (long long)mo->features);
            eval_score_write(f, &mo->trained);
            fputs(",\n        \"random\": ", f);
            eval_score_write(f, &mo->random);
            fputs("}", f);
        }
        fputs("]}", f);
    }
    fputs("\n  ]\n}\n", f);
    return gim_file_commit(f, tmp, path, err, errlen);
}

/* ---- reading ------------------------------------------------------------------- */

typedef struct eval_reader {
    const char *name;
    char *err;
    size_t errlen;
    char where[160];           /* the path of the value being read: probes[0].modules[1] */
} eval_reader;

static int eval_bad(eval_reader *e, const gim_json *at, const char *key, const char *what) {
    if (at) return gim_errf(e->err, e->errlen, "%s:%d:%d: %s%s%s: %s", e->name, at->line, at->col, e->where,
                            e->where[0] ? "." : "", key, what);
    return gim_errf(e->err, e->errlen, "%s: %s%s%s: %s", e->name, e->where, e->where[0] ? "." : "", key, what);
}

static int eval_string(eval_reader *e, const gim_json *obj, const char *key, bool nullable, char **out) {
    const gim_json *v = gim_json_get(obj, key);
    *out = NULL;
    if (v && v->kind == GIM_JSON_STRING) {
        *out = gim_xstrdup(v->str);
        return 0;
    }
    if (nullable && v && v->kind == GIM_JSON_NULL) return 0;
    return eval_bad(e, v ? v : obj, key, v ? (nullable ? "expected a string or null" : "expected a string") : "missing");
}

static int eval_number(eval_reader *e, const gim_json *obj, const char *key, double lo, double hi, bool whole,
                       double *out) {
    const gim_json *v = gim_json_get(obj, key);
    if (!v) return eval_bad(e, obj, key, "missing");
    if (v->kind != GIM_JSON_NUMBER || v->num < lo || v->num > hi || (whole && v->num != floor(v->num))) {
        char what[120];
        snprintf(what, sizeof what, "expected %s from %g to %g", whole ? "a whole number" : "a number", lo, hi);
        return eval_bad(e, v, key, what);
    }
    *out = v->num;
    return 0;
}

static int eval_score(eval_reader *e, const gim_json *mod, const char *key, gim_probe_score *s) {
    const gim_json *v = gim_json_get(mod, key);
    memset(s, 0, sizeof *s);
    if (!v || v->kind == GIM_JSON_NULL) return 0;   /* not measured */
    if (v->kind != GIM_JSON_OBJECT) return eval_bad(e, v, key, "expected an object or null");
    size_t at = strlen(e->where);
    snprintf(e->where + at, sizeof e->where - at, "%s%s", at ? "." : "", key);
    double loss = NAN;
    const gim_json *l = gim_json_get(v, "loss");
    int rc = eval_number(e, v, "train_acc", 0, 1, false, &s->train_acc) ||
             eval_number(e, v, "test_acc", 0, 1, false, &s->test_acc);
    if (!rc && l && l->kind != GIM_JSON_NULL) rc = eval_number(e, v, "loss", 0, 1e30, false, &loss);
    e->where[at] = 0;
    if (rc) return -1;
    s->loss = loss;
    s->have = true;
    return 0;
}

int gim_eval_parse(const char *text, size_t len, const char *name, gim_eval_results *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    char jerr[256];
    gim_json_doc *doc = gim_json_parse(text, len, jerr, sizeof jerr);
    if (!doc) return gim_errf(err, errlen, "%s:%s", name, jerr);
    const gim_json *root = gim_json_root(doc);
    eval_reader e = {.name = name, .err = err, .errlen = errlen};
    double v;
    int rc = -1;
    if (root->kind != GIM_JSON_OBJECT) {
        gim_errf(err, errlen, "%s: expected an object at the top", name);
        goto done;
    }
    if (eval_number(&e, root, "gim_eval", 1, 1, true, &v)) goto done;
    if (eval_string(&e, root, "model", false, &r->model) || eval_string(&e, root, "model_file", true, &r->model_file) ||
        eval_string(&e, root, "weights", true, &r->weights) || eval_string(&e, root, "data", true, &r->data))
        goto done;
    if (eval_number(&e, root, "seed", 0, 1.8e19, true, &v)) goto done;
    r->seed = (uint64_t)v;
    const gim_json *secs = gim_json_get(root, "seconds");
    r->seconds = NAN;
    if (secs && secs->kind != GIM_JSON_NULL && eval_number(&e, root, "seconds", 0, 1e12, false, &r->seconds)) goto done;
    const gim_json *probes = gim_json_get(root, "probes");
    if (!probes || probes->kind != GIM_JSON_ARRAY) {
        eval_bad(&e, probes ? probes : root, "probes", probes ? "expected an array" : "missing");
        goto done;
    }
    r->probes = gim_calloc((size_t)probes->n + 1, sizeof *r->probes);
    if (!r->probes) {
        gim_errf(err, errlen, "%s: out of memory", name);
        goto done;
    }
    for (int p = 0; p < probes->n; p++) {
        const gim_json *pj = probes->items[p];
        gim_eval_probe *pr = &r->probes[r->n_probes++];
        snprintf(e.where, sizeof e.where, "probes[%d]", p);
        if (pj->kind != GIM_JSON_OBJECT) {
            gim_errf(err, errlen, "%s:%d:%d: %s: expected an object", name, pj->line, pj->col, e.where);
            goto done;
        }
        double classes, ntr, nte, epochs = 0, batch = 0, lr = NAN;
        if (eval_string(&e, pj, "task", false, &pr->task) || eval_string(&e, pj, "features", false, &pr->features) ||
            eval_number(&e, pj, "classes", 1, 1e9, true, &classes) ||
            eval_number(&e, pj, "train_examples", 0, 1e15, true, &ntr) ||
            eval_number(&e, pj, "test_examples", 0, 1e15, true, &nte))
            goto done;
        /* the probe's settings: optional (other probes may train otherwise) */
        if (gim_json_get(pj, "epochs") && eval_number(&e, pj, "epochs", 0, 1e9, true, &epochs)) goto done;
        if (gim_json_get(pj, "batch") && eval_number(&e, pj, "batch", 0, 1e9, true, &batch)) goto done;
        if (gim_json_get(pj, "lr") && eval_number(&e, pj, "lr", 0, 1e9, false, &lr)) goto done;
        pr->classes = (int)classes;
        pr->train_examples = (int64_t)ntr;
        pr->test_examples = (int64_t)nte;
        pr->epochs = (int)epochs;
        pr->batch = (int)batch;
        pr->lr = lr;
        const gim_json *mods = gim_json_get(pj, "modules");
        if (!mods || mods->kind != GIM_JSON_ARRAY) {
            eval_bad(&e, mods ? mods : pj, "modules", mods ? "expected an array" : "missing");
            goto done;
        }
        pr->modules = gim_calloc((size_t)mods->n + 1, sizeof *pr->modules);
        if (!pr->modules) {
            gim_errf(err, errlen, "%s: out of memory", name);
            goto done;
        }
        for (int i = 0; i < mods->n; i++) {
            const gim_json *mj = mods->items[i];
            gim_eval_module *mo = &pr->modules[pr->n_modules++];
            snprintf(e.where, sizeof e.where, "probes[%d].modules[%d]", p, i);
            if (mj->kind != GIM_JSON_OBJECT) {
                gim_errf(err, errlen, "%s:%d:%d: %s: expected an object", name, mj->line, mj->col, e.where);
                goto done;
            }
            double num, feats;
            if (eval_number(&e, mj, "module", 1, 4096, true, &num) ||
                eval_number(&e, mj, "features", 0, 1e15, true, &feats) || eval_score(&e, mj, "trained", &mo->trained) ||
                eval_score(&e, mj, "random", &mo->random))
                goto done;
            mo->module = (int)num;
            mo->features = (int64_t)feats;
        }
    }
    rc = 0;
done:
    gim_json_free(doc);
    if (rc) gim_eval_results_free(r);
    return rc;
}

int gim_eval_read(const char *path, gim_eval_results *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    size_t len;
    char *text = gim_read_file(path, &len);
    if (!text) return gim_errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    int rc = gim_eval_parse(text, len, path, r, err, errlen);
    gim_free(text);
    return rc;
}

void gim_eval_results_free(gim_eval_results *r) {
    gim_free(r->model);
    gim_free(r->model_file);
    gim_free(r->weights);
    gim_free(r->data);
    for (int p = 0; r->probes && p < r->n_probes; p++) {
        gim_free(r->probes[p].task);
        gim_free(r->probes[p].features);
        gim_free(r->probes[p].modules);
    }
    gim_free(r->probes);
    memset(r, 0, sizeof *r);
}
