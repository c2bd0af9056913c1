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
#include "report.h"

/* Data: the configured name or directory, the train block's `dataset`. */
int cmd_load_data(const char *cmd, const gim_train_config *cfg, gim_dataset *ds) {
    char err[1024];
    const char *name = cfg->dataset ? cfg->dataset : "fashion-mnist";
    if (gim_dataset_load(name, ds, err, sizeof err)) {
        fprintf(stderr, "gimc %s: error: %s\n", cmd, err);
        return GIMC_BAD_INPUT;
    }
    return GIMC_OK;
}

/* The code gimc bench measures and gimc export writes: ReLUs fused into the
 * convolutions around them (gim_fuse), then native code. */
gim_exec_model *cmd_compile_model(gim_session *s, int opt_level) {
    gim_fuse(s->graph);
    gim_cg_options cg = {.opt_level = opt_level, .cfg = &s->cfg};
    return gim_jit(&s->diag, s->graph, &cg);
}

/* The runtime pool's threads (OpenBLAS then runs one; the pool cuts the
 * work): GIM_THREADS or all cores unless asked, one per module thread under the async
 * schedule (the modules themselves then share the cores). */
void cmd_set_threads(const gim_train_config *cfg) {
    int n = cfg->threads > 0 ? cfg->threads : 0;   /* 0: GIM_THREADS, else all cores */
    if (cfg->schedule == GIM_SCHED_ASYNC && gim_dist_size() == 1) n = 1;
    /* under mpirun: the machine's cores shared among the ranks on it */
    if (n == 0 && gim_dist_size() > 1 && !getenv("GIM_THREADS")) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = cores > gim_dist_local_size() ? (int)(cores / gim_dist_local_size()) : 1;
    }
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

/* gimc train --report: the page refreshed after each checkpoint. A page
 * that cannot be written is said once; training goes on. */
typedef struct train_report {
    const char *dir;
    bool warned;
} train_report;

static void refresh_report(void *arg) {
    train_report *t = arg;
    char err[4096];
    if (gim_report_write(t->dir, NULL, err, sizeof err) < 0 && !t->warned) {
        fprintf(stderr, "gimc train: warning: report not written: %s\n", err);
        t->warned = true;
    }
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
    "  --placement L      under mpirun: module -> rank, e.g. 0,0,1 (default: balance the\n"
    "                     ranks' step FLOPs; see gimc check --ranks R)\n"
    "  --replay N         under mpirun, async: input batches a rank keeps (default 4)\n"
    "  --max-reuse N      under mpirun, async: steps on one input batch at most (default 2)\n"
    "  --peer-timeout S   under mpirun: a rank silent for S seconds ends the run (default 120)\n"
    "  --report           refresh DIR/report.html (gimc report) at every checkpoint\n"
    "  --refresh N        modules above the first train on a cache of the outputs of the\n"
    "                     modules below, recomputed every N epochs (simultaneous schedule)\n"
    "  --cache-dtype T    f32 (default) or bf16 (half the disk): the caches of\n"
    "                     --schedule sequential and --refresh\n"
    "  -O0 .. -O3         optimisation of the generated code (default -O2)\n"
    "  --stdlib DIR       where imports not found next to the file are looked up\n"
    "  -h, --help         show this help\n"
    "\n"
    "Progress goes to standard output: a bar on a terminal, plain lines otherwise.\n"
    "DIR also gets run.json, the run's settings (for gimc report).\n"
    "Ctrl-C, SIGTERM or SIGUSR1 writes a checkpoint and stops (exit status 130).\n"
    "Under `mpirun -np R gimc train ...` the modules run on R ranks (docs/distributed.md).\n"
    "Exit status: 0 trained, 1 bad model or data, a diverged loss or no disk room for\n"
    "the caches, 2 bad usage.\n";

/* Under mpirun, rank 0's report of what each module's rank did. */
static void print_dist_report(const gim_exec_model *m, const gim_train_report *rep, bool lockstep) {
    if (!rep->dist) return;
    printf("per module (rank: batches received, steps, staleness mean/max in producer steps, batches used 0/1/2/.. "
           "times, bytes sent per step):\n");
    for (int i = 0; i < m->n_modules; i++) {
        const gim_dist_stats *d = &rep->dist[i];
        printf("  m%d rank %d: received %" PRId64 ", steps %" PRId64, i + 1, d->rank, d->received, d->steps);
        if (!lockstep && i > 0 && rep->dist[i - 1].rank != d->rank) {
            printf(", staleness %.2f/%" PRId64 ", reuse", d->steps ? d->stale_sum / (double)d->steps : 0.0,
                   d->stale_max);
            int top = GIM_DIST_MAX_REUSE;
            while (top > 0 && d->reuse[top] == 0) top--;
            for (int k = 0; k <= top; k++) printf("%s%" PRId64, k ? "/" : " ", d->reuse[k]);
        }
        /* the rank's last module sends; its first module holds the count */
        int first = i;
        while (first > 0 && rep->dist[first - 1].rank == d->rank) first--;
        bool sends = i + 1 < m->n_modules && rep->dist[i + 1].rank != d->rank;
        if (sends && rep->dist[first].bytes_sent > 0) {
            double per = rep->dist[first].bytes_sent / (double)(d->steps ? d->steps : 1);
            printf(", sends %.2f MB/step", per / 1e6);
        }
        printf("\n");
    }
}

/* Under mpirun: the first error of a rank ends every rank. */
static _Noreturn void dist_fail(const char *what, const char *err, int status) {
    fprintf(stderr, "gimc train: rank %d: error: %s%s\n", gim_dist_rank(), what, err);
    gim_dist_abort(status);
}

int cmd_train(int argc, char **argv) {
    gim_cli o;
    int status;
    if (gim_cli_parse(argc, argv, GIM_CLI_TRAIN_OPTS | GIM_CLI_OPT_LEVEL | GIM_CLI_REPORT, train_usage, &o, &status))
        return status;
    if (o.report) {
        char err[1024];
        if (gim_gnuplot_check(err, sizeof err)) {
            fprintf(stderr, "gimc train: error: --report: %s\n", err);
            return GIMC_USAGE;
        }
    }
    gim_session s;
    gim_session_init(&s);
    gim_exec_model *m = NULL;
    gim_dataset ds;
    memset(&ds, 0, sizeof ds);
    gim_train_state st;
    memset(&st, 0, sizeof st);
    float *storage = NULL;
    gim_audio_corpus corpus;
    memset(&corpus, 0, sizeof corpus);
    char *table = NULL;
    char err[2048];
    int *placement = NULL;

    /* Under mpirun: MPI, and the rank decides the role. A plain run never
     * initialises MPI. */
    bool dist = false;
    int rank = 0, ranks = 1;
    if (gim_dist_requested()) {
        if (gim_dist_start(&argc, &argv, err, sizeof err)) {
            fprintf(stderr, "gimc train: error: %s\n", err);
            status = GIMC_BAD_INPUT;
            goto done;
        }
        rank = gim_dist_rank();
        ranks = gim_dist_size();
        dist = ranks > 1;
    }
    if (!dist && (o.placement || o.replay || o.max_reuse || o.peer_timeout > 0))
        fprintf(stderr, "gimc train: note: --placement, --replay, --max-reuse and --peer-timeout apply under mpirun "
                        "only\n");

    /* the pipeline, source to native code */
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
    if (dist) {
        /* every rank computes the same placement (the handshake checks it) */
        placement = gim_calloc((size_t)s.graph->n_modules, sizeof(int));
        if (!placement || gim_choose_placement(s.graph, ranks, o.placement, placement, err, sizeof err)) {
            if (rank == 0) fprintf(stderr, "gimc train: error: %s\n", placement ? err : "out of memory");
            status = GIMC_USAGE;
            goto done;
        }
        s.cfg.placement = placement;
        if (s.cfg.schedule == GIM_SCHED_SEQUENTIAL && !s.cfg.e2e) {
            if (rank == 0)
                fprintf(stderr, "gimc train: error: the sequential schedule runs in one process; under mpirun use "
                                "--schedule simultaneous (lockstep) or async\n");
            status = GIMC_USAGE;
            goto done;
        }
        if (s.cfg.refresh > 0 && s.cfg.schedule != GIM_SCHED_SIMULTANEOUS) {
            if (rank == 0)
                fprintf(stderr, "gimc train: error: --refresh under mpirun takes --schedule simultaneous: between "
                                "refreshes every rank trains on its own caches\n");
            status = GIMC_USAGE;
            goto done;
        }
        if (s.cfg.e2e) {
            if (rank == 0) fprintf(stderr, "gimc train: error: --e2e trains one module: it cannot be spread over ranks\n");
            status = GIMC_USAGE;
            goto done;
        }
    }
    table = gim_check_table_text(s.graph);   /* before code generation fuses nodes */
    bool audio = cmd_audio_data(&s.cfg);
    /* only rank 0 reads the data; the others learn its shape from it */
    if (rank == 0 && !audio && (status = cmd_load_data("train", &s.cfg, &ds)) != GIMC_OK && !dist) goto done;
    int data_status = status;
    if (!(m = cmd_compile_model(&s, o.opt_level))) {
        if (dist) dist_fail("", "the model did not compile", GIMC_BAD_INPUT);
        status = GIMC_BAD_INPUT;
        goto done;
    }
    if (dist && gim_dist_handshake(m, &s.cfg, GIMC_VERSION, err, sizeof err)) {
        if (rank == 0) fprintf(stderr, "gimc train: error: %s\n", err);
        status = GIMC_BAD_INPUT;
        goto done;
    }
    /* audio: the model's input length is the crop, the cache goes with the run */
    if (rank == 0 && audio && data_status == GIMC_OK) {
        data_status = cmd_audio_open("train", &s.cfg, m, s.cfg.out_dir, &corpus);
        if (data_status != GIMC_OK && !dist) {
            status = data_status;
            goto done;
        }
    }
    /* audio examples are made on demand: a fresh crop of every utterance each epoch */
    gim_examples ex;
    memset(&ex, 0, sizeof ex);
    gim_audio_view view = {&corpus, corpus.train, corpus.n_train};
    if (rank == 0 && audio && data_status == GIMC_OK) gim_audio_source(&view, &ex);
    if (rank == 0 && !audio && data_status == GIMC_OK &&
        gim_dataset_examples(&ds, &ds.train, &ex, &storage, err, sizeof err)) {
        fprintf(stderr, "gimc train: error: %s\n", err);
        data_status = GIMC_BAD_INPUT;
    }
    if (dist && gim_dist_share_data(&ex, data_status, err, sizeof err)) {
        status = GIMC_BAD_INPUT;   /* rank 0 said why */
        goto done;
    }
    if (data_status != GIMC_OK) {
        status = data_status;
        goto done;
    }
    if (gim_train_state_init(&st, m, s.cfg.seed, err, sizeof err)) {
        if (dist) dist_fail("", err, GIMC_BAD_INPUT);
        fprintf(stderr, "gimc train: error: %s\n", err);
        status = GIMC_BAD_INPUT;
        goto done;
    }
    if (s.cfg.resume) {
        /* rank 0 reads the checkpoint; every rank starts from it */
        int rs = 0;
        if (rank == 0 && (resume_schedule_check(&s.cfg, err, sizeof err) ||
                          gim_checkpoint_load(m, &st, s.cfg.out_dir, true, err, sizeof err))) {
            fprintf(stderr, "gimc train: error: cannot resume: %s\n", err);
            rs = -1;
        }
        if (dist && gim_dist_share_state(m, &st, rs, err, sizeof err)) rs = -1;
        if (rs) {
            status = GIMC_BAD_INPUT;
            goto done;
        }
        if (rank == 0)
            printf("resuming from %s/weights.safetensors (epoch %" PRId64 ", batch %" PRId64 ")\n", s.cfg.out_dir,
                   st.epoch + 1, st.batch_in_epoch);
    }
    cmd_set_threads(&s.cfg);
    /* the run's settings, for gimc report; the page itself after each checkpoint (rank 0) */
    train_report tr = {.dir = s.cfg.out_dir};
    if (rank == 0) {
        if (gim_make_dirs(s.cfg.out_dir)) {
            if (dist) dist_fail("cannot create the output directory: ", s.cfg.out_dir, GIMC_BAD_INPUT);
            fprintf(stderr, "gimc train: error: cannot create the output directory %s: %s\n", s.cfg.out_dir,
                    strerror(errno));
            status = GIMC_BAD_INPUT;
            goto done;
        }
        if (gim_run_json_write(s.cfg.out_dir, m->name, o.file, m->n_modules, table, &s.cfg, ds.dir, argc, argv, err,
                               sizeof err))
            fprintf(stderr, "gimc train: warning: %s\n", err);
        if (o.report) {
            s.cfg.after_save = refresh_report;
            s.cfg.after_save_arg = &tr;
        }
    }
    static const char *const sched_names[] = {"simultaneous", "sequential", "async"};
    char sched[64];
    if (s.cfg.refresh > 0) snprintf(sched, sizeof sched, "cached inputs refreshed every %" PRId64 " epoch%s", s.cfg.refresh,
                                    s.cfg.refresh == 1 ? "" : "s");
    else snprintf(sched, sizeof sched, "%s", s.cfg.e2e ? "end to end" : sched_names[s.cfg.schedule]);
    if (rank == 0) {
        printf("training %s: %d module%s, %s, batch %" PRId64 ", %" PRId64 " epoch%s, %s data in %s\n",
               m->name, m->n_modules, m->n_modules == 1 ? "" : "s", sched,
               m->batch, s.cfg.epochs, s.cfg.epochs == 1 ? "" : "s", s.cfg.dataset ? s.cfg.dataset : "fashion-mnist",
               audio ? corpus.dir : ds.dir);
        if (dist) {
            printf("distributed over %d ranks (%s):", ranks,
                   s.cfg.schedule == GIM_SCHED_ASYNC ? "async, replay buffers" : "lockstep, the single process's steps");
            for (int r = 0; r < ranks; r++) {
                int a = -1, z = -1;
                for (int i = 0; i < m->n_modules; i++)
                    if (placement[i] == r) {
                        if (a < 0) a = i;
                        z = i;
                    }
                if (a == z) printf("%s rank %d: module %d", r ? "," : "", r, a + 1);
                else printf("%s rank %d: modules %d-%d", r ? "," : "", r, a + 1, z + 1);
            }
            printf("\n");
        }
        fflush(stdout);
    }
    /* ranks other than 0 write nothing: rank 0 holds progress, metrics and
     * the checkpoint of the whole model */
    gim_train_config cfg = s.cfg;
    if (rank != 0) cfg.out_dir = NULL;
    gim_train_report rep;
    int rc = gim_train(m, &cfg, &st, &ex, rank == 0 ? stdout : NULL, &rep, err, sizeof err);
    if (rc) {
        if (dist) dist_fail("", err, GIMC_BAD_INPUT);
        fprintf(stderr, "gimc train: error: %s\n", err);
        status = GIMC_BAD_INPUT;
    } else {
        if (rank == 0) {
            printf("%s after %" PRId64 " steps in %.1f s (%.0f examples/s); final loss",
                   rep.interrupted ? "interrupted" : "done", rep.steps, rep.seconds, rep.examples_per_s);
            for (int i = 0; i < m->n_modules; i++) {
                if (isnan(rep.last_loss[i])) printf(" m%d -", i + 1);   /* not trained in this run */
                else printf(" m%d %.4f", i + 1, rep.last_loss[i]);
            }
            printf("\ncheckpoint: %s/weights.safetensors\n", s.cfg.out_dir);
            if (o.report && !tr.warned) printf("report: %s/report.html\n", s.cfg.out_dir);
            if (s.cfg.schedule == GIM_SCHED_ASYNC && !dist)
                printf("async: a module's input is at most %d of its producer's steps old (queues of %d batches); "
                       "the most stale seen was %d\n",
                       GIM_ASYNC_DEPTH + 1, GIM_ASYNC_DEPTH, rep.async_max_staleness);
            print_dist_report(m, &rep, s.cfg.schedule != GIM_SCHED_ASYNC);
        }
        if (rep.interrupted) status = 130;
    }
    gim_free(rep.last_loss);
    gim_free(rep.dist);
done:
    free(table);
    if (m) gim_train_state_free(&st, m);
    gim_free(storage);
    gim_free(placement);
    gim_audio_close(&corpus);
    gim_dataset_free(&ds);
    gim_exec_model_free(m);
    gim_session_release(&s);
    fflush(stdout);
    gim_dist_finish();
    return status;
}
