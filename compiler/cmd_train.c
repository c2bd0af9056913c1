/* gimc train and gimc eval: compile, load data, train or probe.
 *
 *   train: source -> modules -> native code -> data -> gim_train -> checkpoint
 *   eval:  source -> modules -> native code -> weights -> features -> probe */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "commands.h"
#include "gim_checkpoint.h"
#include "gim_data.h"
#include "gim_probe.h"
#include "gim_train.h"

/* Data: the configured name or directory, the train block's `dataset`. */
static int load_data(const char *cmd, const gim_train_config *cfg, gim_dataset *ds) {
    char err[1024];
    const char *name = cfg->dataset ? cfg->dataset : "fashion-mnist";
    if (gim_dataset_load(name, ds, err, sizeof err)) {
        fprintf(stderr, "gimc %s: error: %s\n", cmd, err);
        return GIMC_BAD_INPUT;
    }
    return GIMC_OK;
}

static gim_exec_model *compile_model(gim_session *s, int opt_level) {
    gim_cg_options cg = {.opt_level = opt_level, .cfg = &s->cfg};
    return gim_jit(&s->diag, s->graph, &cg);
}

/* The runtime pool's threads (OpenBLAS then runs one; the pool cuts the
 * work): GIM_THREADS or all cores unless asked, one per module thread under the async
 * schedule (the modules themselves then share the cores). */
static void set_blas_threads(const gim_train_config *cfg) {
    int n = cfg->threads > 0 ? cfg->threads : 0;   /* 0: GIM_THREADS, else all cores */
    if (cfg->schedule == GIM_SCHED_ASYNC) n = 1;
    gim_rt_set_threads(n);
}

/* ---- gimc train ---------------------------------------------------------------- */

/* A sequential run's position (the module in training, its epoch) means
 * something else to the other schedules: resuming across that line is
 * refused. Checkpoints without the metadata are let through. */
static int resume_schedule_check(const gim_train_config *cfg, char *err, size_t errlen) {
    static const char *const names[] = {"simultaneous", "sequential", "async"};
    char path[4096];
    snprintf(path, sizeof path, "%s/weights.safetensors", cfg->out_dir);
    gim_ckpt *c = gim_safetensors_read(path, err, errlen);
    if (!c) return -1;
    const char *was = gim_ckpt_meta_get(c, "schedule");
    const char *now = names[cfg->schedule];
    int rc = 0;
    if (!cfg->e2e && was && strcmp(was, now) && (!strcmp(was, "sequential") || !strcmp(now, "sequential"))) {
        snprintf(err, errlen, "%.1024s was saved by a %s run; resume it with --schedule %s (not %s)", path, was, was, now);
        rc = -1;
    }
    /* --refresh: the position within a period says which cache to rebuild */
    const char *rf = gim_ckpt_meta_get(c, "refresh");
    long long was_refresh = rf ? strtoll(rf, NULL, 10) : 0;
    if (rc == 0 && was_refresh != (long long)cfg->refresh) {
        if (was_refresh > 0)
            snprintf(err, errlen, "%.1024s was saved by a run with --refresh %lld; resume it with the same (not %s)",
                     path, was_refresh, cfg->refresh > 0 ? "another period" : "without --refresh");
        else
            snprintf(err, errlen, "%.1024s was saved by a run without --refresh; resume it without --refresh", path);
        rc = -1;
    }
    gim_ckpt_free(c);
    return rc;
}

static const char train_usage[] =
    "usage: gimc train FILE.gim [options]\n"
    "       gimc FILE.gim [options]\n"
    "\n"
    "Compiles the model and trains it: every module from its own loss, no\n"
    "gradient crossing a gradient_block. Options override the train block.\n"
    "\n"
    "  --data PATH        data set: fashion-mnist, mnist, or a directory of IDX files\n"
    "  --epochs N         epochs to train (default 1)\n"
    "  --steps N          stop after N batches in all (sequential: N per module; 0: whole\n"
    "                     epochs)\n"
    "  --batch B          batch size, bound at compile time (default 32)\n"
    "  --lr X             learning rate\n"
    "  --schedule S       simultaneous (default), sequential or async\n"
    "  --threads T        threads for parallel loops and matrix products (default: GIM_THREADS, else all cores)\n"
    "  --seed S           fixes initialisation, negatives and data order (default 0)\n"
    "  --e2e              train end to end from the last module's loss instead\n"
    "  --out DIR          metrics.csv and checkpoints (default runs/<model>)\n"
    "  --save-every N     checkpoint every N steps (default: once a minute)\n"
    "  --resume           continue from DIR's checkpoint\n"
    "  --refresh N        modules above the first train on a cache of the outputs of the\n"
    "                     modules below, recomputed every N epochs (simultaneous schedule)\n"
    "  --cache-dtype T    f32 (default) or bf16 (half the disk): the caches of\n"
    "                     --schedule sequential and --refresh\n"
    "  -O0 .. -O3         optimisation of the generated code (default -O2)\n"
    "  --stdlib DIR       where imports not found next to the file are looked up\n"
    "  -h, --help         show this help\n"
    "\n"
    "Progress goes to standard output: a bar on a terminal, plain lines otherwise.\n"
    "Ctrl-C or SIGTERM writes a checkpoint and stops (exit status 130).\n"
    "Exit status: 0 trained, 1 bad model or data, a diverged loss or no disk room for\n"
    "the caches, 2 bad usage.\n";

int cmd_train(int argc, char **argv) {
    gim_cli o;
    int status;
    if (gim_cli_parse(argc, argv, GIM_CLI_TRAIN_OPTS | GIM_CLI_OPT_LEVEL, train_usage, &o, &status)) return status;
    gim_session s;
    gim_session_init(&s);
    gim_exec_model *m = NULL;
    gim_dataset ds;
    memset(&ds, 0, sizeof ds);
    gim_train_state st;
    memset(&st, 0, sizeof st);
    float *storage = NULL;
    char err[2048];

    /* the pipeline, source to native code */
    double t0 = 0;
    status = gim_session_compile(&s, &o, GIM_STAGE_AUTODIFF);
    if (status != GIMC_OK) goto done;
    /* --refresh needs every module training at once on cached inputs, and
     * --cache-dtype a cache to apply to */
    if (s.cfg.refresh > 0 && (s.cfg.e2e || s.cfg.schedule != GIM_SCHED_SIMULTANEOUS)) {
        fprintf(stderr, "gimc train: --refresh trains every module in every epoch on cached outputs of the modules "
                "below it: it takes the simultaneous schedule (the default), not %s\n%s",
                s.cfg.e2e ? "--e2e" : s.cfg.schedule == GIM_SCHED_SEQUENTIAL ? "--schedule sequential (which builds "
                "each cache once, after the module below has finished)" : "--schedule async",
                "see 'gimc train --help'\n");
        status = GIMC_USAGE;
        goto done;
    }
    if ((o.given & GIM_CLI_CACHE_DTYPE) && s.cfg.refresh == 0 && (s.cfg.e2e || s.cfg.schedule != GIM_SCHED_SEQUENTIAL)) {
        fprintf(stderr, "gimc train: --cache-dtype applies to the caches of --schedule sequential and --refresh; "
                "this run has none\nsee 'gimc train --help'\n");
        status = GIMC_USAGE;
        goto done;
    }
    if (s.graph->losses.len == 0) {
        fprintf(stderr, "gimc train: error: %s has no loss: nothing would be trained\n", o.file);
        status = GIMC_BAD_INPUT;
        goto done;
    }
    if ((status = load_data("train", &s.cfg, &ds)) != GIMC_OK) goto done;
    if (!(m = compile_model(&s, o.opt_level))) {
        status = GIMC_BAD_INPUT;
        goto done;
    }
    (void)t0;
    gim_examples ex;
    if (gim_dataset_examples(&ds, &ds.train, &ex, &storage, err, sizeof err) ||
        gim_train_state_init(&st, m, s.cfg.seed, err, sizeof err)) {
        fprintf(stderr, "gimc train: error: %s\n", err);
        status = GIMC_BAD_INPUT;
        goto done;
    }
    if (s.cfg.resume) {
        if (resume_schedule_check(&s.cfg, err, sizeof err) ||
            gim_checkpoint_load(m, &st, s.cfg.out_dir, true, err, sizeof err)) {
            fprintf(stderr, "gimc train: error: cannot resume: %s\n", err);
            status = GIMC_BAD_INPUT;
            goto done;
        }
        printf("resuming from %s/weights.safetensors (epoch %" PRId64 ", batch %" PRId64 ")\n", s.cfg.out_dir,
               st.epoch + 1, st.batch_in_epoch);
    }
    set_blas_threads(&s.cfg);
    static const char *const sched_names[] = {"simultaneous", "sequential", "async"};
    char sched[64];
    if (s.cfg.refresh > 0) snprintf(sched, sizeof sched, "cached inputs refreshed every %" PRId64 " epoch%s", s.cfg.refresh,
                                    s.cfg.refresh == 1 ? "" : "s");
    else snprintf(sched, sizeof sched, "%s", s.cfg.e2e ? "end to end" : sched_names[s.cfg.schedule]);
    printf("training %s: %d module%s, %s, batch %" PRId64 ", %" PRId64 " epoch%s, %s data in %s\n",
           m->name, m->n_modules, m->n_modules == 1 ? "" : "s", sched,
           m->batch, s.cfg.epochs, s.cfg.epochs == 1 ? "" : "s", s.cfg.dataset ? s.cfg.dataset : "fashion-mnist",
           ds.dir);
    fflush(stdout);
    gim_train_report rep;
    int rc = gim_train(m, &s.cfg, &st, &ex, stdout, &rep, err, sizeof err);
    if (rc) {
        fprintf(stderr, "gimc train: error: %s\n", err);
        status = GIMC_BAD_INPUT;
    } else {
        printf("%s after %" PRId64 " steps in %.1f s (%.0f examples/s); final loss", rep.interrupted ? "interrupted" : "done",
               rep.steps, rep.seconds, rep.examples_per_s);
        for (int i = 0; i < m->n_modules; i++) {
            if (isnan(rep.last_loss[i])) printf(" m%d -", i + 1);   /* not trained in this run */
            else printf(" m%d %.4f", i + 1, rep.last_loss[i]);
        }
        printf("\ncheckpoint: %s/weights.safetensors\n", s.cfg.out_dir);
        if (s.cfg.schedule == GIM_SCHED_ASYNC)
            printf("async: a module's input is at most %d of its producer's steps old (queues of %d batches); "
                   "the most stale seen was %d\n",
                   GIM_ASYNC_DEPTH + 1, GIM_ASYNC_DEPTH, rep.async_max_staleness);
        if (rep.interrupted) status = 130;
    }
    gim_free(rep.last_loss);
done:
    if (m) gim_train_state_free(&st, m);
    gim_free(storage);
    gim_dataset_free(&ds);
    gim_exec_model_free(m);
    gim_session_release(&s);
    return status;
}

/* ---- gimc eval ------------------------------------------------------------------ */

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
    "  -O0 .. -O3         optimisation of the generated code (default -O2)\n"
    "  --stdlib DIR       where imports not found next to the file are looked up\n"
    "  -h, --help         show this help\n";

typedef struct probe_row {
    gim_probe_result r;
    int64_t dim;
} probe_row;

/* Features of every module for both splits, then one probe per module. */
static int probe_all(const gim_exec_model *m, const gim_train_state *st, const gim_dataset *ds, bool pool_mean,
                     uint64_t seed, probe_row *rows, char *err, size_t errlen) {
    gim_examples tr, te;
    float *str = NULL, *ste = NULL;
    int n = m->n_modules, rc = -1;
    float **ftr = gim_calloc((size_t)n, sizeof(float *)), **fte = gim_calloc((size_t)n, sizeof(float *));
    int64_t *dtr = gim_calloc((size_t)n, sizeof(int64_t)), *dte = gim_calloc((size_t)n, sizeof(int64_t));
    if (!ftr || !fte || !dtr || !dte) goto done;
    if (gim_dataset_examples(ds, &ds->train, &tr, &str, err, errlen) ||
        gim_dataset_examples(ds, &ds->test, &te, &ste, err, errlen))
        goto done;
    if (gim_extract_features(m, st, &tr, ftr, dtr, err, errlen) ||
        gim_extract_features(m, st, &te, fte, dte, err, errlen))
        goto done;
    gim_free(str);
    gim_free(ste);
    str = ste = NULL;
    gim_probe_options po;
    gim_probe_defaults(&po);
    po.seed = seed;
    for (int i = 0; i < n; i++) {
        rows[i].dim = 0;
        if (!ftr[i]) continue;
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
        rows[i].dim = dim;
        if (gim_probe_run(ftr[i], tr.labels, tr.n, fte[i], te.labels, te.n, dim, ds->n_classes, &po, &rows[i].r)) {
            snprintf(err, errlen, "out of memory in the probe of module %d", i + 1);
            goto done;
        }
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
    gim_free(str);
    gim_free(ste);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    gim_cli o;
    int status;
    if (gim_cli_parse(argc, argv,
                      GIM_CLI_WEIGHTS | GIM_CLI_DATA | GIM_CLI_BATCH | GIM_CLI_SEED | GIM_CLI_STDLIB | GIM_CLI_POOL |
                          GIM_CLI_RANDOM_INIT | GIM_CLI_COMPARE_RANDOM | GIM_CLI_OPT_LEVEL,
                      eval_usage, &o, &status))
        return status;
    bool random_only = o.random_init, compare = o.compare_random;
    if (!o.weights && !random_only) {
        fprintf(stderr, "gimc eval: --weights FILE is required (or --random-init)\n\n%s", eval_usage);
        return GIMC_USAGE;
    }
    gim_session s;
    gim_session_init(&s);
    gim_exec_model *m = NULL;
    gim_dataset ds;
    memset(&ds, 0, sizeof ds);
    gim_train_state st, wst;
    memset(&st, 0, sizeof st);
    memset(&wst, 0, sizeof wst);
    bool have_wst = false;
    probe_row *trained = NULL, *random = NULL;
    char err[2048];
    status = gim_session_compile(&s, &o, GIM_STAGE_AUTODIFF);
    if (status != GIMC_OK) goto done;
    if ((status = load_data("eval", &s.cfg, &ds)) != GIMC_OK) goto done;
    if (!(m = compile_model(&s, o.opt_level))) {
        status = GIMC_BAD_INPUT;
        goto done;
    }
    set_blas_threads(&s.cfg);
    trained = gim_calloc((size_t)m->n_modules, sizeof *trained);
    random = gim_calloc((size_t)m->n_modules, sizeof *random);
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
        if (probe_all(m, &st, &ds, o.pool_mean, s.cfg.seed, random, err, sizeof err)) goto fail;
    }
    if (!random_only) {
        if (probe_all(m, &wst, &ds, o.pool_mean, s.cfg.seed, trained, err, sizeof err)) goto fail;
    }
    printf("linear probe on %s (%s features)\n", ds.dir, o.pool_mean ? "mean-pooled" : "flattened");
    if (compare)
        printf("%-8s %9s %10s %10s %13s %13s\n", "module", "features", "train acc", "test acc", "random train",
               "random test");
    else
        printf("%-8s %9s %10s %10s\n", "module", "features", "train acc", "test acc");
    for (int i = 0; i < m->n_modules; i++) {
        const probe_row *r = random_only ? &random[i] : &trained[i];
        if (!r->dim) {
            printf("%-8d %9s\n", i + 1, "-");
            continue;
        }
        printf("%-8d %9" PRId64 " %9.2f%% %9.2f%%", i + 1, r->dim, 100 * r->r.train_acc, 100 * r->r.test_acc);
        if (compare) printf(" %12.2f%% %12.2f%%", 100 * random[i].r.train_acc, 100 * random[i].r.test_acc);
        printf("\n");
    }
    goto done;
fail:
    fprintf(stderr, "gimc eval: error: %s\n", err);
    status = GIMC_BAD_INPUT;
done:
    if (m) gim_train_state_free(&st, m);
    if (m && have_wst) gim_train_state_free(&wst, m);
    gim_free(trained);
    gim_free(random);
    gim_dataset_free(&ds);
    gim_exec_model_free(m);
    gim_session_release(&s);
    return status;
}
