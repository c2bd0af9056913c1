/* The train block: `key value` lines -> gim_train_config.
 *
 *   train {
 *       dataset   "fashion-mnist"     # a string: a name the runtime knows, or a path
 *       batch     32                  # 1 .. GIM_MAX_BATCH
 *       epochs    1                   # >= 0
 *       steps     0                   # >= 0; 0: whole epochs
 *       optimizer adam(lr=1e-3)       # adam(lr, beta1, beta2, eps, weight_decay)
 *                                     # sgd(lr, momentum, weight_decay); or bare `adam`
 *       schedule  simultaneous        # simultaneous | sequential | async
 *       seed      0                   # >= 0
 *       threads   0                   # >= 0; 0: all cores
 *       save_every 0                  # steps between checkpoints; 0: default
 *       out       "runs/fashion"      # output directory
 *       sample_rate 16000             # audio data: Hz the files are converted to
 *   }
 *
 * Every key and value is checked; unknown ones are located errors with the
 * nearest valid name. A key given twice is an error. */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "config.h"
#include "gim_compiler.h"
#include "suggest.h"

static const char *const cfg_keys[] = {"dataset", "batch",   "epochs",     "steps", "optimizer", "schedule",
                                       "seed",    "threads", "save_every", "out",   "sample_rate", NULL};

static const char *const cfg_schedules[] = {"simultaneous", "sequential", "async", NULL};

/* Reports `what` unknown among `cands`, with the nearest one. */
static void cfg_unknown(gim_diag *d, gim_loc loc, const char *what, const char *name, const char *const *cands) {
    gim_suggest s;
    gim_suggest_init(&s, name);
    for (int i = 0; cands[i]; i++) gim_suggest_add(&s, cands[i]);
    const char *best = gim_suggest_best(&s);
    if (best) gim_error(d, loc, "unknown %s '%s'; did you mean '%s'?", what, name, best);
    else {
        char list[256] = "";
        for (int i = 0; cands[i]; i++) {
            if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, cands[i], sizeof list - strlen(list) - 1);
        }
        gim_error(d, loc, "unknown %s '%s' (expected one of: %s)", what, name, list);
    }
}

/* A number literal, possibly negated. */
static bool cfg_number(const gim_expr *e, double *out, bool *is_int) {
    if (!e) return false;
    if (e->kind == GIM_EXPR_NEG && cfg_number(e->lhs, out, is_int)) {
        *out = -*out;
        return true;
    }
    if (e->kind == GIM_EXPR_INT) { *out = (double)e->ival; *is_int = true; return true; }
    if (e->kind == GIM_EXPR_FLOAT) { *out = e->fval; *is_int = false; return true; }
    return false;
}

/* An integer in [lo, hi]. */
static int cfg_int(gim_diag *d, const gim_train_entry *t, int64_t lo, int64_t hi, int64_t *out) {
    double v;
    bool is_int = false;
    if (!cfg_number(t->value, &v, &is_int) || !is_int) {
        gim_error(d, t->value ? t->value->loc : t->loc, "'%s' expects an integer", t->key);
        return -1;
    }
    const gim_expr *e = t->value;
    int64_t iv = 0;
    bool neg = false;
    while (e->kind == GIM_EXPR_NEG) { neg = !neg; e = e->lhs; }
    iv = neg ? -e->ival : e->ival;
    e = t->value;
    if (iv < lo || iv > hi) {
        gim_error(d, e->loc, "'%s' must be between %" PRId64 " and %" PRId64 "; got %" PRId64, t->key, lo, hi, iv);
        return -1;
    }
    *out = iv;
    return 0;
}

static int cfg_string(gim_diag *d, const gim_train_entry *t, const char **out) {
    if (!t->value || t->value->kind != GIM_EXPR_STRING) {
        gim_error(d, t->value ? t->value->loc : t->loc, "'%s' expects a string in double quotes", t->key);
        return -1;
    }
    if (!t->value->sval[0]) {
        gim_error(d, t->value->loc, "'%s' must not be empty", t->key);
        return -1;
    }
    *out = t->value->sval;
    return 0;
}

/* A named choice: a bare name or a string. */
static const char *cfg_word(const gim_expr *e) {
    if (!e) return NULL;
    if (e->kind == GIM_EXPR_NAME) return e->name;
    if (e->kind == GIM_EXPR_STRING) return e->sval;
    return NULL;
}

/* optimizer adam(lr=.., beta1=.., beta2=.., eps=.., weight_decay=..)
 *         | sgd(lr=.., momentum=.., weight_decay=..) | adam | sgd
 * A single positional argument is the learning rate. */
static int cfg_optimizer(gim_diag *d, const gim_train_entry *t, gim_train_config *c) {
    static const char *const kinds[] = {"adam", "sgd", NULL};
    static const char *const adam_keys[] = {"lr", "beta1", "beta2", "eps", "weight_decay", NULL};
    static const char *const sgd_keys[] = {"lr", "momentum", "weight_decay", NULL};
    const gim_expr *e = t->value;
    const char *kind = e && (e->kind == GIM_EXPR_NAME || e->kind == GIM_EXPR_CALL) ? e->name : NULL;
    if (!kind) {
        gim_error(d, e ? e->loc : t->loc, "'optimizer' expects adam(...) or sgd(...)");
        return -1;
    }
    bool adam = !strcmp(kind, "adam");
    if (!adam && strcmp(kind, "sgd")) {
        cfg_unknown(d, e->loc, "optimizer", kind, kinds);
        return -1;
    }
    gim_train_config n = *c;
    n.optimizer = adam ? GIM_OPT_ADAM : GIM_OPT_SGD;
    if (!adam) n.momentum = 0;
    int errors = 0;
    for (int i = 0; e->kind == GIM_EXPR_CALL && i < e->n_args; i++) {
        const gim_arg *a = &e->args[i];
        const char *key = a->name;
        gim_loc at = a->name ? a->name_loc : a->value->loc;
        if (!key) {
            if (i > 0) {
                gim_error(d, at, "%s takes only the learning rate positionally; name the others (e.g. beta1=0.9)", kind);
                errors++;
                continue;
            }
            key = "lr";
        }
        const char *const *keys = adam ? adam_keys : sgd_keys;
        int which = -1;
        for (int j = 0; keys[j]; j++)
            if (!strcmp(keys[j], key)) which = j;
        if (which < 0) {
            cfg_unknown(d, at, adam ? "adam argument" : "sgd argument", key, keys);
            errors++;
            continue;
        }
        double v;
        bool is_int;
        if (!cfg_number(a->value, &v, &is_int) || !isfinite(v)) {
            gim_error(d, a->value->loc, "%s's '%s' expects a number", kind, key);
            errors++;
            continue;
        }
        bool ok = true;
        const char *rule = "";
        if (!strcmp(key, "lr")) { ok = v > 0; rule = "> 0"; n.lr = v; }
        else if (!strcmp(key, "beta1")) { ok = v >= 0 && v < 1; rule = "in [0, 1)"; n.beta1 = v; }
        else if (!strcmp(key, "beta2")) { ok = v >= 0 && v < 1; rule = "in [0, 1)"; n.beta2 = v; }
        else if (!strcmp(key, "eps")) { ok = v > 0; rule = "> 0"; n.eps = v; }
        else if (!strcmp(key, "weight_decay")) { ok = v >= 0; rule = ">= 0"; n.weight_decay = v; }
        else if (!strcmp(key, "momentum")) { ok = v >= 0 && v < 1; rule = "in [0, 1)"; n.momentum = v; }
        if (!ok) {
            gim_error(d, a->value->loc, "%s's '%s' must be %s; got %g", kind, key, rule, v);
            errors++;
        }
    }
    if (errors) return -1;
    *c = n;
    return 0;
}

static int cfg_entry(gim_diag *d, const gim_train_entry *t, gim_train_config *c) {
    int64_t v;
    const char *k = t->key;
    if (!strcmp(k, "dataset")) return cfg_string(d, t, &c->dataset);
    if (!strcmp(k, "out")) return cfg_string(d, t, &c->out_dir);
    if (!strcmp(k, "optimizer")) return cfg_optimizer(d, t, c);
    if (!strcmp(k, "schedule")) {
        const char *w = cfg_word(t->value);
        if (!w) {
            gim_error(d, t->value ? t->value->loc : t->loc, "'schedule' expects simultaneous, sequential or async");
            return -1;
        }
        for (int i = 0; cfg_schedules[i]; i++)
            if (!strcmp(w, cfg_schedules[i])) {
                c->schedule = (gim_schedule)i;
                return 0;
            }
        cfg_unknown(d, t->value->loc, "schedule", w, cfg_schedules);
        return -1;
    }
    if (!strcmp(k, "batch")) {
        if (cfg_int(d, t, 1, GIM_MAX_BATCH, &v)) return -1;
        c->batch = v;
        return 0;
    }
    int64_t *dst = !strcmp(k, "epochs") ? &c->epochs : !strcmp(k, "steps") ? &c->steps
                 : !strcmp(k, "save_every") ? &c->save_every : NULL;
    if (dst) {
        if (cfg_int(d, t, 0, INT64_C(1) << 40, &v)) return -1;
        *dst = v;
        return 0;
    }
    if (!strcmp(k, "seed")) {
        if (cfg_int(d, t, 0, INT64_MAX, &v)) return -1;
        c->seed = (uint64_t)v;
        return 0;
    }
    if (!strcmp(k, "sample_rate")) {
        if (cfg_int(d, t, 1000, 768000, &v)) return -1;
        c->sample_rate = (int)v;
        return 0;
    }
    if (!strcmp(k, "threads")) {
        if (cfg_int(d, t, 0, 4096, &v)) return -1;
        c->threads = (int)v;
        return 0;
    }
    cfg_unknown(d, t->loc, "train key", k, cfg_keys);
    return -1;
}

int gim_config_from_program(gim_diag *d, const gim_program *p, gim_train_config *cfg) {
    int errors = 0;
    for (int i = 0; p && i < p->n_train; i++) {
        const gim_train_entry *t = &p->train[i];
        bool dup = false;
        for (int j = 0; j < i && !dup; j++)
            if (!strcmp(p->train[j].key, t->key)) {
                gim_error(d, t->loc, "train key '%s' given twice", t->key);
                gim_note(d, p->train[j].loc, "first given here");
                dup = true;
            }
        if (dup || cfg_entry(d, t, cfg)) errors++;
    }
    return errors ? -1 : 0;
}

void gim_config_finish(gim_train_config *cfg, gim_arena *a, const char *model_name) {
    if (!cfg->out_dir) cfg->out_dir = gim_arena_printf(a, "runs/%s", model_name ? model_name : "model");
}
