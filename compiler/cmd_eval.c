/* gimc eval: the linear probe of every module, the trained encoder and/or
 * the same encoder at its random initialisation.
 *
 *   source -> modules -> native code -> weights -> features -> probes -> table, eval.json
 *
 * It talks while it works (gim_progress, as gimc train): the feature pass
 * over both splits with images (or audio crops) per second and the time
 * left (images: per module too), then each probe's epochs with their loss. Images and audio differ
 * only in how the features are made (image_features, audio_features); the
 * probes, progress, table and record are one code. The numbers go to a table on stdout and to eval.json
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
    const char *unit;          /* what the feature pass counts: "images", "crops" */
    int64_t offset, total;     /* features: examples of the splits before this one; of all */
    int64_t counted;           /* features: examples counted into the rate so far */
    int64_t batch;             /* features: examples per batch (lines every 5% of the batches) */
    int64_t offset_batches, total_batches;
    int n_modules;             /* features: the seconds of each module's forward passes */
    double *module_s;          /* over both splits so far (images; NULL: not measured) */
    int module, epochs;        /* probe: the module (1-based), its epochs */
} eval_progress;

/* The feature pass: one count over both splits, the test split continuing
 * the training split's. The rate is the last second's; the time left is the
 * average pace of the pass so far. Per module (images): every batch runs
 * through each module in turn, so module k's rate is that of its forward
 * passes alone, and its ETA the part of the time left they will take. */
static void show_features(void *arg, int64_t done_in_split, int64_t split_n) {
    eval_progress *e = arg;
    (void)split_n;
    int64_t done = e->offset + done_in_split;
    gim_progress_count(&e->con, done - e->counted);
    e->counted = done;
    int64_t batches = e->offset_batches + (done_in_split + e->batch - 1) / e->batch;
    if (!gim_progress_due(&e->con, batches, e->total_batches)) return;
    char head[96], tail[512], eta[32];
    double left = (double)(e->total - done) / (double)(done > 0 ? done : 1);
    gim_progress_eta(eta, sizeof eta, done > 0 ? gim_progress_elapsed(&e->con) * left : -1.0);
    snprintf(head, sizeof head, "features (%s encoder)", e->encoder);
    int at = snprintf(tail, sizeof tail, "  %.0f %s/s  ETA %s", e->con.rate, e->unit, eta);
    for (int i = 0; e->module_s && i < e->n_modules && at > 0 && (size_t)at < sizeof tail; i++) {
        double sec = e->module_s[i];
        gim_progress_eta(eta, sizeof eta, sec > 0 ? sec * left : -1.0);
        at += snprintf(tail + at, sizeof tail - (size_t)at, "%s %d %.0f/s %s", i ? "," : "  per module:", i + 1,
                       sec > 0 ? (double)done / sec : 0.0, eta);
    }
    gim_progress_show(&e->con, head, e->unit, done, e->total, tail, done == e->total);
}

/* Starts the count of a feature pass over both splits (ntr and nte examples). */
static void features_begin(eval_progress *e, int64_t batch, int64_t ntr, int64_t nte) {
    gim_progress_init(&e->con, stdout);
    e->offset = e->counted = 0;
    e->total = ntr + nte;
    e->batch = batch;
    e->offset_batches = 0;
    e->total_batches = (ntr + batch - 1) / batch + (nte + batch - 1) / batch;
}

/* The test split's pass continues the training split's count. */
static void features_next_split(eval_progress *e, int64_t ntr) {
    e->offset = ntr;
    e->offset_batches = (ntr + e->batch - 1) / e->batch;
}

/* A probe: a bar per epoch on a terminal; otherwise a line at the end of
 * every epoch, or of every 5% of them when there are more than 20. */
static void show_probe(void *arg, int epoch, int64_t batch, int64_t batches, double loss) {
    eval_progress *e = arg;
    bool epoch_end = batch == batches;
    int every = e->epochs > 20 ? e->epochs / 20 : 1;
    if (e->con.tty ? !gim_progress_due(&e->con, batch, batches)
                   : !epoch_end || ((epoch + 1) % every != 0 && epoch + 1 != e->epochs))
        return;
    double done = (double)epoch * (double)batches + (double)batch, total = (double)e->epochs * (double)batches;
    double t = gim_progress_elapsed(&e->con);
    char head[96], tail[96], eta[32];
    gim_progress_eta(eta, sizeof eta, done > 0 ? t * (total - done) / done : -1.0);
    snprintf(head, sizeof head, "probe module %d (%s) epoch %d/%d", e->module, e->encoder, epoch + 1, e->epochs);
    snprintf(tail, sizeof tail, "  loss %.4f  ETA %s", loss, eta);
    gim_progress_show(&e->con, head, "batch", batch, batches, tail, epoch_end && epoch + 1 == e->epochs);
}

/* ---- probing -------------------------------------------------------------------------- */

/* What is probed: an image data set (its labels) or an audio corpus (its
 * speakers). */
typedef struct eval_data {
    const gim_dataset *ds;           /* images, or NULL */
    const gim_audio_corpus *corpus;  /* audio, or NULL */
    bool pool_mean;                  /* images: average over the grid/sequence */
} eval_data;

/* One encoder's frozen features of both splits, per module, as the probe
 * reads them: rows of dim[i] floats (NULL: the module has none), labelled. */
typedef struct eval_features {
    int n;
    float **tr, **te;
    int64_t *dim;
    int32_t *ytr, *yte;
    int64_t ntr, nte;
    int classes;
} eval_features;

static void eval_features_free(eval_features *f) {
    for (int i = 0; i < f->n && f->tr && f->te; i++) {
        gim_free(f->tr[i]);
        gim_free(f->te[i]);
    }
    gim_free(f->tr);
    gim_free(f->te);
    gim_free(f->dim);
    gim_free(f->ytr);
    gim_free(f->yte);
    memset(f, 0, sizeof *f);
}

static int32_t *copy_labels(const int32_t *y, int64_t n, int64_t repeat) {
    int32_t *out = gim_malloc(sizeof(int32_t) * (size_t)(n * repeat + 1));
    for (int64_t i = 0; out && i < n * repeat; i++) out[i] = y[i / repeat];
    return out;
}

/* Images: one pass of the encoder over each split (flattened or
 * mean-pooled features). */
static int image_features(const gim_exec_model *m, const gim_train_state *st, const eval_data *d, eval_progress *ep,
                          eval_features *f, char *err, size_t errlen) {
    const gim_dataset *ds = d->ds;
    gim_examples tr, te;
    float *str = NULL, *ste = NULL;
    int64_t *dte = gim_calloc((size_t)f->n, sizeof(int64_t));
    int rc = -1;
    if (!dte) {
        gim_errf(err, errlen, "out of memory");
        goto done;
    }
    if (gim_dataset_examples(ds, &ds->train, &tr, &str, err, errlen) ||
        gim_dataset_examples(ds, &ds->test, &te, &ste, err, errlen))
        goto done;
    features_begin(ep, m->batch, tr.n, te.n);
    ep->n_modules = m->n_modules;
    if (!(ep->module_s = gim_calloc((size_t)m->n_modules, sizeof(double)))) {
        gim_errf(err, errlen, "out of memory");
        goto done;
    }
    if (gim_extract_features_timed(m, st, &tr, f->tr, f->dim, show_features, ep, ep->module_s, err, errlen))
        goto done;
    features_next_split(ep, tr.n);
    if (gim_extract_features_timed(m, st, &te, f->te, dte, show_features, ep, ep->module_s, err, errlen)) goto done;
    f->ntr = tr.n;
    f->nte = te.n;
    f->classes = ds->n_classes;
    if (!(f->ytr = copy_labels(tr.labels, tr.n, 1)) || !(f->yte = copy_labels(te.labels, te.n, 1))) {
        gim_errf(err, errlen, "out of memory");
        goto done;
    }
    for (int i = 0; d->pool_mean && i < f->n; i++) {
        if (!f->tr[i]) continue;
        /* [..., C] per example: average over everything before the channels */
        const gim_slot_info *sl = &m->slots[m->modules[i].feature_slot];
        int64_t c = sl->shape[sl->rank - 1];
        gim_probe_pool_mean(f->tr[i], tr.n, f->dim[i] / c, c);
        gim_probe_pool_mean(f->te[i], te.n, f->dim[i] / c, c);
        f->dim[i] = c;
    }
    rc = 0;
done:
    gim_free(dte);
    gim_free(str);
    gim_free(ste);
    return rc;
}

/* Audio: time-averaged features of cmd_audio_probe_crops() crops of every
 * training utterance and of the centred crop of every test one. */
static int audio_features(const gim_exec_model *m, const gim_train_state *st, const eval_data *d, eval_progress *ep,
                          eval_features *f, char *err, size_t errlen) {
    const gim_audio_corpus *c = d->corpus;
    const int64_t crops = cmd_audio_probe_crops();
    int64_t *dte = gim_calloc((size_t)f->n, sizeof(int64_t));
    int32_t *ytr = gim_malloc(sizeof(int32_t) * (size_t)(c->n_train + 1));
    int32_t *yte = gim_malloc(sizeof(int32_t) * (size_t)(c->n_test + 1));
    int rc = -1;
    if (!dte || !ytr || !yte) {
        gim_errf(err, errlen, "out of memory");
        goto done;
    }
    if (c->n_test == 0) {
        gim_errf(err, errlen, "%s: no test utterances to probe on (every speaker has a single usable one)", c->dir);
        goto done;
    }
    for (int64_t i = 0; i < c->n_train; i++) ytr[i] = c->utts[c->train[i]].speaker;
    for (int64_t i = 0; i < c->n_test; i++) yte[i] = c->utts[c->test[i]].speaker;
    ep->unit = "crops";
    features_begin(ep, m->batch, c->n_train * crops, c->n_test);
    if (gim_audio_features(m, st, c, c->train, c->n_train, crops, f->tr, f->dim, show_features, ep, err, errlen))
        goto done;
    features_next_split(ep, c->n_train * crops);
    if (gim_audio_features(m, st, c, c->test, c->n_test, 1, f->te, dte, show_features, ep, err, errlen)) goto done;
    f->ntr = c->n_train * crops;
    f->nte = c->n_test;
    f->classes = c->n_speakers;
    if (!(f->ytr = copy_labels(ytr, c->n_train, crops)) || !(f->yte = copy_labels(yte, c->n_test, 1))) {
        gim_errf(err, errlen, "out of memory");
        goto done;
    }
    rc = 0;
done:
    gim_free(dte);
    gim_free(ytr);
    gim_free(yte);
    return rc;
}

/* The probe's settings: the image probe's, or the speaker probe's
 * (cmd_audio.c). */
static void eval_probe_options(const eval_data *d, uint64_t seed, gim_probe_options *po) {
    gim_probe_defaults(po);
    if (d->corpus) cmd_audio_probe_options(po);
    po->seed = seed;
}

/* Features of every module for both splits (one pass of the encoder over
 * each), then one probe per module, its score into mods[i].trained or
 * .random. */
static int probe_encoder(const gim_exec_model *m, const gim_train_state *st, const eval_data *d, uint64_t seed,
                         bool random, gim_eval_module *mods, char *err, size_t errlen) {
    int n = m->n_modules, rc = -1;
    eval_features f = {.n = n};
    eval_progress ep = {.encoder = random ? "random" : "trained", .unit = "images"};
    f.tr = gim_calloc((size_t)n, sizeof(float *));
    f.te = gim_calloc((size_t)n, sizeof(float *));
    f.dim = gim_calloc((size_t)n, sizeof(int64_t));
    if (!f.tr || !f.te || !f.dim) {
        gim_errf(err, errlen, "out of memory");
        goto done;
    }
    if (d->corpus ? audio_features(m, st, d, &ep, &f, err, errlen) : image_features(m, st, d, &ep, &f, err, errlen))
        goto done;
    gim_probe_options po;
    eval_probe_options(d, seed, &po);
    po.progress = show_probe;
    po.progress_arg = &ep;
    for (int i = 0; i < n; i++) {
        gim_eval_module *mo = &mods[i];
        mo->module = i + 1;
        if (!f.tr[i]) continue;   /* a module without features (no loss reads it) */
        mo->features = f.dim[i];
        gim_progress_init(&ep.con, stdout);
        ep.module = i + 1;
        ep.epochs = po.epochs;
        gim_probe_result r;
        if (gim_probe_run(f.tr[i], f.ytr, f.ntr, f.te[i], f.yte, f.nte, f.dim[i], f.classes, &po, &r)) {
            gim_errf(err, errlen, "out of memory in the probe of module %d", i + 1);
            goto done;
        }
        gim_probe_score *sc = random ? &mo->random : &mo->trained;
        *sc = (gim_probe_score){.have = true, .train_acc = r.train_acc, .test_acc = r.test_acc, .loss = r.final_loss};
        gim_free(f.tr[i]);
        gim_free(f.te[i]);
        f.tr[i] = f.te[i] = NULL;
    }
    rc = 0;
done:
    eval_features_free(&f);
    gim_free(ep.module_s);
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
    eval_data data = {.ds = audio ? NULL : &ds, .corpus = audio ? &corpus : NULL, .pool_mean = o.pool_mean};
    if ((random_only || compare) && probe_encoder(m, &st, &data, s.cfg.seed, true, mods, err, sizeof err)) goto fail;
    if (!random_only && probe_encoder(m, &wst, &data, s.cfg.seed, false, mods, err, sizeof err)) goto fail;
    const char *features = audio ? "time-averaged" : o.pool_mean ? "mean-pooled" : "flattened";
    if (audio)
        printf("speaker probe on %s (%d speakers, %" PRId64 " train / %" PRId64 " test utterances; time-averaged "
               "features of %" PRId64 " crops of each training utterance, of the centred crop of each test one)\n",
               corpus.dir, corpus.n_speakers, corpus.n_train, corpus.n_test, cmd_audio_probe_crops());
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
        eval_probe_options(&data, s.cfg.seed, &po);
        gim_eval_probe probe = {
            .task = (char *)(audio ? "speakers" : "classes"),
            .features = (char *)features,
            .classes = audio ? corpus.n_speakers : ds.n_classes,
            .train_examples = audio ? corpus.n_train * cmd_audio_probe_crops() : ds.train.n,
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
