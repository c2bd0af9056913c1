/* gimc eval: the linear probe of every module, the trained encoder and/or
 * the same encoder at its random initialisation.
 *
 *   source -> modules -> native code -> weights -> features -> probes -> table, eval.json
 *
 * It talks while it works (gim_progress, as gimc train): the feature pass
 * over both splits with images/s and the time left, in all and per module,
 * then each probe's epochs
 * with their loss. The numbers go to a table on stdout and to eval.json
 * (gim_records.h), which `gimc report` reads. A probe is one row of a
 * table of modules with train and test accuracy, the random encoder's beside
 * it: further probing tasks add a gim_eval_probe of the same shape. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "commands.h"
#include "gim_checkpoint.h"
#include "gim_probe.h"
#include "gim_records.h"
#include "gim_train.h"

static const char eval_usage[] =
    "usage: gimc eval FILE.gim --weights FILE [options]\n"
    "\n"
    "The linear probe: for each module, a linear softmax classifier trained on\n"
    "that module's frozen features of the training set (Adam, lr 1e-3, 10 epochs,\n"
    "batch 256, features standardised), reported as train and test accuracy.\n"
    "\n"
    "  --weights FILE     trained weights (weights.safetensors)\n"
    "  --random-init      probe the encoder at its random initialisation instead\n"
    "  --compare-random   probe both, side by side\n"
    "  --pool mean        average each module's features over the grid/sequence\n"
    "                     (default: flatten them)\n"
    "  --data PATH        data set (default: the train block's)\n"
    "  --batch B          batch size for feature extraction\n"
    "  --seed S           seed of the random initialisation and of the probe\n"
    "  --out DIR          write DIR/eval.json (default: beside the weights)\n"
    "  -O0 .. -O3         optimisation of the generated code (default -O2)\n"
    "  --stdlib DIR       where imports not found next to the file are looked up\n"
    "  -h, --help         show this help\n"
    "\n"
    "Progress goes to standard output: a bar on a terminal, plain lines otherwise.\n"
    "Exit status: 0 done, 1 bad model, weights or data, 2 bad usage.\n";

/* ---- progress ----------------------------------------------------------------------- */

typedef struct eval_progress {
    gim_progress con;
    const char *encoder;       /* "trained" or "random" */
    int64_t offset, total;     /* features: images of the splits before this one; of all */
    int64_t counted;           /* features: images counted into the rate so far */
    int64_t batch;             /* features: images per batch (lines every 5% of the batches) */
    int64_t offset_batches, total_batches;
    int n_modules;             /* features: seconds in each module's forward passes, */
    double *module_split;      /* of the splits before this one and */
    double *module_now;        /* of both splits so far */
    int module, epochs;        /* probe: the module (1-based), its epochs */
} eval_progress;

/* The feature pass: one count over both splits, the test split continuing
 * the training split's. The rate is the last second's; the time left is the
 * average pace of the pass so far, split by module: every batch runs through
 * each module in turn, so module k's images/s is that of its forward passes
 * alone, and its ETA the part of the time left its passes will take. */
static void show_features(void *arg, int64_t done_in_split, int64_t split_n, const double *module_s) {
    eval_progress *e = arg;
    (void)split_n;
    int64_t done = e->offset + done_in_split;
    for (int i = 0; i < e->n_modules; i++) e->module_now[i] = e->module_split[i] + module_s[i];
    gim_progress_count(&e->con, done - e->counted);
    e->counted = done;
    int64_t batches = e->offset_batches + (done_in_split + e->batch - 1) / e->batch;
    if (!gim_progress_due(&e->con, batches, e->total_batches)) return;
    char head[96], tail[512], eta[32];
    double left = (double)(e->total - done) / (double)(done > 0 ? done : 1);
    gim_progress_eta(eta, sizeof eta, done > 0 ? gim_progress_elapsed(&e->con) * left : -1.0);
    snprintf(head, sizeof head, "features (%s encoder)", e->encoder);
    int at = snprintf(tail, sizeof tail, "  %.0f images/s  ETA %s  per module:", e->con.rate, eta);
    for (int i = 0; i < e->n_modules && at > 0 && (size_t)at < sizeof tail; i++) {
        double sec = e->module_now[i];
        gim_progress_eta(eta, sizeof eta, sec > 0 ? sec * left : -1.0);
        at += snprintf(tail + at, sizeof tail - (size_t)at, "%s %d %.0f/s %s", i ? "," : "", i + 1,
                       sec > 0 ? (double)done / sec : 0.0, eta);
    }
    gim_progress_show(&e->con, head, "images", done, e->total, tail, done == e->total);
}

/* A probe: a bar per epoch on a terminal, a line per epoch otherwise. */
static void show_probe(void *arg, int epoch, int64_t batch, int64_t batches, double loss) {
    eval_progress *e = arg;
    bool epoch_end = batch == batches;
    if (e->con.tty ? !gim_progress_due(&e->con, batch, batches) : !epoch_end) return;
    double done = (double)epoch * (double)batches + (double)batch, total = (double)e->epochs * (double)batches;
    double t = gim_progress_elapsed(&e->con);
    char head[96], tail[96], eta[32];
    gim_progress_eta(eta, sizeof eta, done > 0 ? t * (total - done) / done : -1.0);
    snprintf(head, sizeof head, "probe module %d (%s) epoch %d/%d", e->module, e->encoder, epoch + 1, e->epochs);
    snprintf(tail, sizeof tail, "  loss %.4f  ETA %s", loss, eta);
    gim_progress_show(&e->con, head, "batch", batch, batches, tail, epoch_end && epoch + 1 == e->epochs);
}

/* ---- probing -------------------------------------------------------------------------- */

/* Features of every module for both splits (one pass of the encoder over
 * each), then one probe per module, its score into mods[i].trained or
 * .random. */
static int probe_encoder(const gim_exec_model *m, const gim_train_state *st, const gim_dataset *ds, bool pool_mean,
                         uint64_t seed, bool random, gim_eval_module *mods, char *err, size_t errlen) {
    gim_examples tr, te;
    float *str = NULL, *ste = NULL;
    int n = m->n_modules, rc = -1;
    float **ftr = gim_calloc((size_t)n, sizeof(float *)), **fte = gim_calloc((size_t)n, sizeof(float *));
    int64_t *dtr = gim_calloc((size_t)n, sizeof(int64_t)), *dte = gim_calloc((size_t)n, sizeof(int64_t));
    eval_progress ep = {.encoder = random ? "random" : "trained", .n_modules = n};
    ep.module_split = gim_calloc((size_t)n, sizeof(double));
    ep.module_now = gim_calloc((size_t)n, sizeof(double));
    if (!ftr || !fte || !dtr || !dte || !ep.module_split || !ep.module_now) {
        gim_errf(err, errlen, "out of memory");
        goto done;
    }
    if (gim_dataset_examples(ds, &ds->train, &tr, &str, err, errlen) ||
        gim_dataset_examples(ds, &ds->test, &te, &ste, err, errlen))
        goto done;
    gim_progress_init(&ep.con, stdout);
    ep.total = tr.n + te.n;
    ep.batch = m->batch;
    ep.total_batches = (tr.n + m->batch - 1) / m->batch + (te.n + m->batch - 1) / m->batch;
    if (gim_extract_features(m, st, &tr, ftr, dtr, show_features, &ep, err, errlen)) goto done;
    ep.offset = tr.n;
    ep.offset_batches = (tr.n + m->batch - 1) / m->batch;
    memcpy(ep.module_split, ep.module_now, sizeof(double) * (size_t)n);
    if (gim_extract_features(m, st, &te, fte, dte, show_features, &ep, err, errlen)) goto done;
    gim_free(str);
    gim_free(ste);
    str = ste = NULL;
    gim_probe_options po;
    gim_probe_defaults(&po);
    po.seed = seed;
    po.progress = show_probe;
    po.progress_arg = &ep;
    for (int i = 0; i < n; i++) {
        gim_eval_module *mo = &mods[i];
        mo->module = i + 1;
        if (!ftr[i]) continue;   /* a module without features (no loss reads it) */
        int64_t dim = dtr[i];
        int fs = m->modules[i].feature_slot;
        if (pool_mean) {
            /* [..., C] per example: average over everything before the channels */
            const gim_slot_info *sl = &m->slots[fs];
            int64_t c = sl->shape[sl->rank - 1];
            gim_probe_pool_mean(ftr[i], tr.n, dim / c, c);
            gim_probe_pool_mean(fte[i], te.n, dim / c, c);
            dim = c;
        }
        mo->features = dim;
        gim_progress_init(&ep.con, stdout);
        ep.module = i + 1;
        ep.epochs = po.epochs;
        gim_probe_result r;
        if (gim_probe_run(ftr[i], tr.labels, tr.n, fte[i], te.labels, te.n, dim, ds->n_classes, &po, &r)) {
            gim_errf(err, errlen, "out of memory in the probe of module %d", i + 1);
            goto done;
        }
        gim_probe_score *sc = random ? &mo->random : &mo->trained;
        *sc = (gim_probe_score){.have = true, .train_acc = r.train_acc, .test_acc = r.test_acc, .loss = r.final_loss};
        gim_free(ftr[i]);
        gim_free(fte[i]);
        ftr[i] = fte[i] = NULL;
    }
    rc = 0;
done:
    for (int i = 0; ftr && fte && i < n; i++) {
        gim_free(ftr[i]);
        gim_free(fte[i]);
    }
    gim_free(ftr);
    gim_free(fte);
    gim_free(dtr);
    gim_free(dte);
    gim_free(ep.module_split);
    gim_free(ep.module_now);
    gim_free(str);
    gim_free(ste);
    return rc;
}

/* The speaker probe of an audio corpus (cmd_audio.c), its scores into
 * mods[i].trained or .random. */
static int probe_audio(const gim_exec_model *m, const gim_train_state *st, const gim_audio_corpus *c, uint64_t seed,
                       bool random, gim_eval_module *mods, char *err, size_t errlen) {
    int n = m->n_modules, rc = -1;
    gim_probe_result *res = gim_calloc((size_t)n, sizeof *res);
    int64_t *dims = gim_calloc((size_t)n, sizeof *dims);
    if (!res || !dims) gim_errf(err, errlen, "out of memory");
    else if (!(rc = cmd_audio_probe(m, st, c, seed, res, dims, err, errlen)))
        for (int i = 0; i < n; i++) {
            if (!dims[i]) continue;
            mods[i].features = dims[i];
            gim_probe_score *sc = random ? &mods[i].random : &mods[i].trained;
            *sc = (gim_probe_score){.have = true, .train_acc = res[i].train_acc, .test_acc = res[i].test_acc,
                                    .loss = res[i].final_loss};
        }
    gim_free(res);
    gim_free(dims);
    return rc;
}

/* Where eval.json goes: --out DIR, else beside the weights; NULL (not
 * written) for a random encoder alone without --out. */
static char *eval_json_path(const gim_cli *o, const gim_train_config *cfg) {
    char path[4200];
    if (o->given & GIM_CLI_OUT) {
        if (gim_make_dirs(cfg->out_dir)) return NULL;
        snprintf(path, sizeof path, "%s/eval.json", cfg->out_dir);
        return gim_xstrdup(path);
    }
    if (!o->weights) return NULL;
    const char *slash = strrchr(o->weights, '/');
    if (!slash) return gim_xstrdup("eval.json");
    snprintf(path, sizeof path, "%.*s/eval.json", (int)(slash - o->weights), o->weights);
    return gim_xstrdup(path);
}

static double eval_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cmd_eval(int argc, char **argv) {
    gim_cli o;
    int status;
    if (gim_cli_parse(argc, argv,
                      GIM_CLI_WEIGHTS | GIM_CLI_DATA | GIM_CLI_BATCH | GIM_CLI_SEED | GIM_CLI_STDLIB | GIM_CLI_POOL |
                          GIM_CLI_RANDOM_INIT | GIM_CLI_COMPARE_RANDOM | GIM_CLI_OPT_LEVEL | GIM_CLI_OUT,
                      eval_usage, &o, &status))
        return status;
    bool random_only = o.random_init, compare = o.compare_random;
    if (!o.weights && !random_only) {
        fprintf(stderr, "gimc eval: --weights FILE is required (or --random-init)\n\n%s", eval_usage);
        return GIMC_USAGE;
    }
    double t0 = eval_now();
    gim_session s;
    gim_session_init(&s);
    gim_exec_model *m = NULL;
    gim_dataset ds;
    memset(&ds, 0, sizeof ds);
    gim_train_state st, wst;
    memset(&st, 0, sizeof st);
    memset(&wst, 0, sizeof wst);
    bool have_wst = false;
    gim_eval_module *mods = NULL;
    gim_audio_corpus corpus;
    memset(&corpus, 0, sizeof corpus);
    char *json_path = NULL;
    char err[2048];
    status = gim_session_compile(&s, &o, GIM_STAGE_AUTODIFF);
    if (status != GIMC_OK) goto done;
    bool audio = cmd_audio_data(&s.cfg);
    if (!audio && (status = cmd_load_data("eval", &s.cfg, &ds)) != GIMC_OK) goto done;
    if (!(m = cmd_compile_model(&s, o.opt_level))) {
        status = GIMC_BAD_INPUT;
        goto done;
    }
    /* audio: the cache the training run left beside the weights, if any */
    char cache_dir[4096] = "";
    if (o.weights) {
        snprintf(cache_dir, sizeof cache_dir, "%s", o.weights);
        char *slash = strrchr(cache_dir, '/');
        if (slash) *slash = 0;
        else snprintf(cache_dir, sizeof cache_dir, ".");
    }
    if (audio && (status = cmd_audio_open("eval", &s.cfg, m, cache_dir[0] ? cache_dir : NULL, &corpus)) != GIMC_OK)
        goto done;
    cmd_set_threads(&s.cfg);
    mods = gim_calloc((size_t)m->n_modules, sizeof *mods);
    if (!mods) {
        gim_errf(err, sizeof err, "out of memory");
        goto fail;
    }
    /* the weights first (into their own state): a file that does not match
     * is reported before minutes of probing the random encoder */
    if (gim_train_state_init(&st, m, s.cfg.seed, err, sizeof err)) goto fail;
    if (!random_only) {
        char note[2048];
        if (gim_train_state_init(&wst, m, s.cfg.seed, err, sizeof err)) goto fail;
        have_wst = true;
        if (gim_weights_load_probe(m, &wst, o.weights, note, sizeof note, err, sizeof err)) goto fail;
        if (note[0]) fprintf(stderr, "gimc eval: note: %s\n", note);
    }
    if (random_only || compare) {
        if (audio ? probe_audio(m, &st, &corpus, s.cfg.seed, true, mods, err, sizeof err)
                  : probe_encoder(m, &st, &ds, o.pool_mean, s.cfg.seed, true, mods, err, sizeof err))
            goto fail;
    }
    if (!random_only) {
        if (audio ? probe_audio(m, &wst, &corpus, s.cfg.seed, false, mods, err, sizeof err)
                  : probe_encoder(m, &wst, &ds, o.pool_mean, s.cfg.seed, false, mods, err, sizeof err))
            goto fail;
    }
    const char *features = audio ? "time-averaged" : o.pool_mean ? "mean-pooled" : "flattened";
    if (audio)
        printf("speaker probe on %s (%d speakers, %" PRId64 " train / %" PRId64 " test utterances, time-averaged "
               "features of the centred crop)\n", corpus.dir, corpus.n_speakers, corpus.n_train, corpus.n_test);
    else
        printf("linear probe on %s (%s features)\n", ds.dir, features);
    if (compare)
        printf("%-8s %9s %10s %10s %13s %13s\n", "module", "features", "train acc", "test acc", "random train",
               "random test");
    else
        printf("%-8s %9s %10s %10s\n", "module", "features", "train acc", "test acc");
    for (int i = 0; i < m->n_modules; i++) {
        const gim_eval_module *r = &mods[i];
        const gim_probe_score *sc = random_only ? &r->random : &r->trained;
        if (!r->features) {
            printf("%-8d %9s\n", i + 1, "-");
            continue;
        }
        printf("%-8d %9" PRId64 " %9.2f%% %9.2f%%", i + 1, r->features, 100 * sc->train_acc, 100 * sc->test_acc);
        if (compare) printf(" %12.2f%% %12.2f%%", 100 * r->random.train_acc, 100 * r->random.test_acc);
        printf("\n");
    }
    fflush(stdout);
    /* the record: eval.json */
    json_path = eval_json_path(&o, &s.cfg);
    if (!json_path && (o.given & GIM_CLI_OUT)) {
        gim_errf(err, sizeof err, "cannot create the output directory %s: %s", s.cfg.out_dir, strerror(errno));
        goto fail;
    }
    if (json_path) {
        gim_probe_options po;
        gim_probe_defaults(&po);
        if (audio) po.epochs = 200, po.batch = 64;   /* as cmd_audio_probe */
        gim_eval_probe probe = {
            .task = (char *)(audio ? "speakers" : "classes"),
            .features = (char *)features,
            .classes = audio ? corpus.n_speakers : ds.n_classes,
            .train_examples = audio ? corpus.n_train : ds.train.n,
            .test_examples = audio ? corpus.n_test : ds.test.n,
            .epochs = po.epochs,
            .batch = po.batch,
            .lr = po.lr,
            .n_modules = m->n_modules,
            .modules = mods,
        };
        gim_eval_results res = {
            .model = (char *)m->name,
            .model_file = (char *)o.file,
            .weights = random_only ? NULL : (char *)o.weights,
            .data = (char *)(audio ? corpus.dir : ds.dir),
            .seed = s.cfg.seed,
            .seconds = eval_now() - t0,
            .n_probes = 1,
            .probes = &probe,
        };
        if (gim_eval_write(json_path, &res, err, sizeof err)) goto fail;
        printf("results: %s\n", json_path);
    } else {
        fprintf(stderr, "gimc eval: note: no --weights and no --out: eval.json not written\n");
    }
    goto done;
fail:
    fprintf(stderr, "gimc eval: error: %s\n", err);
    status = GIMC_BAD_INPUT;
done:
    if (m) gim_train_state_free(&st, m);
    gim_audio_close(&corpus);
    if (m && have_wst) gim_train_state_free(&wst, m);
    gim_free(mods);
    gim_free(json_path);
    gim_dataset_free(&ds);
    gim_exec_model_free(m);
    gim_session_release(&s);
    return status;
}
