/* Data sets whose examples a callback makes on demand (gim_examples.source):
 * a source that gives what an array holds trains the same bits under every
 * schedule and extracts the same features; a source whose examples change
 * with the epoch is asked for each epoch's examples, and training sees the
 * change; a failing source stops training with its message. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gim_train.h"
#include "gim_util.h"
#include "harness_model.h"
#include "testutil.h"

#define SIDE 8
#define NX (SIDE * SIDE)
#define N 44          /* 5 batches of 8 and 4 left over */
#define BATCH 8
#define CLASSES 3

/* Two greedy modules and a classifier on labels: the source's labels reach
 * a loss. */
static const char model_src[] =
    "model src {\n"
    "    input x: [batch, 1, 8, 8]\n"
    "    input y: labels[batch]\n"
    "    p = patches(x, size=4, stride=2)\n"
    "    h1 = relu(conv2d(p, 4, k=3, pad=1))\n"
    "    infonce(spatial_mean(h1), steps=1, negatives=4)\n"
    "    h2 = relu(conv2d(gradient_block(h1), 4, k=3, pad=1))\n"
    "    z = spatial_mean(h2)\n"
    "    infonce(z, steps=1, negatives=4)\n"
    "    cross_entropy(linear(reshape(gradient_block(z), [batch, -1]), 3), y)\n"
    "    output z\n"
    "}\n";

static gim_exec_model *model;
static float xs[N * NX];
static int32_t ys[N];

static void setup(void) {
    if (model) return;
    model = gim_hm_compile("src", model_src, BATCH, false);
    CU_ASSERT_FATAL(model != NULL);
    /* stripes whose period follows the class, a phase per example */
    for (int i = 0; i < N; i++) {
        ys[i] = i % CLASSES;
        for (int r = 0; r < SIDE; r++)
            for (int c = 0; c < SIDE; c++)
                xs[i * NX + r * SIDE + c] = sinf(6.2831853f * (float)(c + i) / (float)(2 + ys[i])) + 0.01f * (float)r;
    }
}

static gim_examples array_set(void) {
    gim_examples d = {.n = N, .x_rank = 3, .x_shape = {1, SIDE, SIDE}, .x_numel = NX, .x = xs, .labels = ys,
                      .n_classes = CLASSES};
    return d;
}

/* What a source was asked. */
typedef struct src_ctx {
    float shift_epoch1;        /* added to every pixel in epoch 1 (0: as the array) */
    int64_t calls[4];          /* per epoch 0..3 */
    int64_t calls_none;        /* GIM_EPOCH_NONE */
    int64_t calls_other;       /* any other epoch, or an index out of range */
    int fail_at;               /* > 0: fail on this call */
    int64_t total;
} src_ctx;

static int fill(void *vctx, int64_t epoch, int64_t i, float *x, int32_t *label, char *err, size_t errlen) {
    src_ctx *c = vctx;
    c->total++;
    if (c->fail_at > 0 && c->total == c->fail_at) {
        snprintf(err, errlen, "utterance %lld: cannot read", (long long)i);
        return -1;
    }
    if (i < 0 || i >= N) c->calls_other++;
    else if (epoch == GIM_EPOCH_NONE) c->calls_none++;
    else if (epoch >= 0 && epoch < 4) c->calls[epoch]++;
    else c->calls_other++;
    if (i < 0 || i >= N) i = 0;
    float add = epoch == 1 ? c->shift_epoch1 : 0.0f;
    for (int k = 0; k < NX; k++) x[k] = xs[i * NX + k] + add;
    if (label) *label = ys[i];
    return 0;
}

static gim_examples source_set(src_ctx *c) {
    gim_examples d = {.n = N, .x_rank = 3, .x_shape = {1, SIDE, SIDE}, .x_numel = NX, .n_classes = CLASSES,
                      .source = fill, .source_ctx = c, .source_labels = true};
    return d;
}

/* Trains a fresh state *st (caller frees) for `epochs` epochs; gim_train's result. */
static int train(gim_schedule sched, int64_t epochs, const gim_examples *d, gim_train_state *st, char *err,
                 size_t errlen) {
    gim_train_config cfg;
    gim_train_config_defaults(&cfg);
    cfg.batch = BATCH;
    cfg.epochs = epochs;
    cfg.seed = 5;
    cfg.schedule = sched;
    CU_ASSERT_FATAL(gim_train_state_init(st, model, cfg.seed, err, errlen) == 0);
    gim_train_report rep;
    int rc = gim_train(model, &cfg, st, d, NULL, &rep, err, errlen);
    gim_free(rep.last_loss);
    return rc;
}

/* Whether two states hold the same bits in one module's parameters. */
static bool same_params(const gim_train_state *a, const gim_train_state *b, int module) {
    const gim_exec_module *mod = &model->modules[module];
    return memcmp(a->params[module], b->params[module], sizeof(float) * (size_t)mod->n_param_floats) == 0;
}

static const gim_schedule scheds[] = {GIM_SCHED_SIMULTANEOUS, GIM_SCHED_SEQUENTIAL, GIM_SCHED_ASYNC};
static const char *const sched_names[] = {"simultaneous", "sequential", "async"};

static void test_source_equals_array(void) {
    setup();
    CU_ASSERT_FATAL(model->n_modules == 3);
    char err[512];
    for (int k = 0; k < 3; k++) {
        gim_train_state a, b;
        gim_examples da = array_set();
        src_ctx c;
        memset(&c, 0, sizeof c);
        gim_examples db = source_set(&c);
        CU_ASSERT_FATAL(train(scheds[k], 2, &da, &a, err, sizeof err) == 0);
        int rc = train(scheds[k], 2, &db, &b, err, sizeof err);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc) fprintf(stderr, "\n%s: %s\n", sched_names[k], err);
        for (int mi = 0; mi < model->n_modules; mi++) {
            CU_ASSERT(same_params(&a, &b, mi));
            if (!same_params(&a, &b, mi)) fprintf(stderr, "\n%s: module %d differs\n", sched_names[k], mi + 1);
        }
        /* asked for each epoch's batches, never outside training's epochs */
        CU_ASSERT_EQUAL(c.calls_other, 0);
        CU_ASSERT_EQUAL(c.calls[2], 0);
        if (scheds[k] == GIM_SCHED_SEQUENTIAL) {
            /* every module trains both epochs; the caches (every example,
             * the last batch padded) are built from epoch 0 */
            int64_t cache = 2 * ((N + BATCH - 1) / BATCH) * BATCH;
            CU_ASSERT_EQUAL(c.calls[0], 3 * (N / BATCH) * BATCH + cache);
            CU_ASSERT_EQUAL(c.calls[1], 3 * (N / BATCH) * BATCH);
        } else {
            CU_ASSERT_EQUAL(c.calls[0], (N / BATCH) * BATCH);
            CU_ASSERT_EQUAL(c.calls[1], (N / BATCH) * BATCH);
        }
        /* training moved the parameters: the comparison was not of two fresh states */
        gim_train_state fresh;
        CU_ASSERT_FATAL(gim_train_state_init(&fresh, model, 5, err, sizeof err) == 0);
        for (int mi = 0; mi < model->n_modules; mi++) CU_ASSERT(!same_params(&a, &fresh, mi));
        gim_train_state_free(&fresh, model);

        /* features: the same from either, the source asked outside training */
        if (k == 0) {
            float *fa[3], *fb[3];
            int64_t na[3], nb[3];
            memset(&c, 0, sizeof c);
            CU_ASSERT_FATAL(gim_extract_features(model, &a, &da, fa, na, NULL, NULL, err, sizeof err) == 0);
            CU_ASSERT_FATAL(gim_extract_features(model, &a, &db, fb, nb, NULL, NULL, err, sizeof err) == 0);
            CU_ASSERT_EQUAL(c.calls_none, ((N + BATCH - 1) / BATCH) * BATCH);
            CU_ASSERT_EQUAL(c.calls[0] + c.calls[1] + c.calls_other, 0);
            for (int mi = 0; mi < 3; mi++) {
                CU_ASSERT_EQUAL(na[mi], nb[mi]);
                if (fa[mi] && fb[mi]) CU_ASSERT(memcmp(fa[mi], fb[mi], sizeof(float) * (size_t)(N * na[mi])) == 0);
                CU_ASSERT((fa[mi] == NULL) == (fb[mi] == NULL));
                gim_free(fa[mi]);
                gim_free(fb[mi]);
            }
        }
        gim_train_state_free(&a, model);
        gim_train_state_free(&b, model);
    }
}

/* A source whose epoch 1 differs from epoch 0: after one epoch the weights
 * equal the array's, after two they differ (module 1 saw epoch 1's data). */
static void test_source_by_epoch(void) {
    setup();
    char err[512];
    for (int k = 0; k < 3; k++) {
        for (int64_t epochs = 1; epochs <= 2; epochs++) {
            gim_train_state a, b;
            gim_examples da = array_set();
            src_ctx c;
            memset(&c, 0, sizeof c);
            c.shift_epoch1 = 0.25f;
            gim_examples db = source_set(&c);
            CU_ASSERT_FATAL(train(scheds[k], epochs, &da, &a, err, sizeof err) == 0);
            CU_ASSERT_FATAL(train(scheds[k], epochs, &db, &b, err, sizeof err) == 0);
            bool same = same_params(&a, &b, 0);
            CU_ASSERT_EQUAL(same, epochs == 1);
            if (same != (epochs == 1))
                fprintf(stderr, "\n%s, %lld epochs: module 1 %s\n", sched_names[k], (long long)epochs,
                        same ? "did not see epoch 1's data" : "differs after epoch 0");
            gim_train_state_free(&a, model);
            gim_train_state_free(&b, model);
        }
    }
}

/* A source that fails stops training with its message, under every schedule. */
static void test_source_fails(void) {
    setup();
    char err[512];
    for (int k = 0; k < 3; k++) {
        gim_train_state b;
        src_ctx c;
        memset(&c, 0, sizeof c);
        c.fail_at = 20;
        gim_examples db = source_set(&c);
        err[0] = 0;
        CU_ASSERT_EQUAL(train(scheds[k], 2, &db, &b, err, sizeof err), -1);
        CU_ASSERT(strstr(err, "cannot read") != NULL);
        if (!strstr(err, "cannot read")) fprintf(stderr, "\n%s: '%s'\n", sched_names[k], err);
        gim_train_state_free(&b, model);
    }
    /* and feature extraction */
    gim_train_state st;
    CU_ASSERT_FATAL(gim_train_state_init(&st, model, 1, err, sizeof err) == 0);
    src_ctx c;
    memset(&c, 0, sizeof c);
    c.fail_at = 3;
    gim_examples db = source_set(&c);
    float *f[3];
    int64_t nf[3];
    CU_ASSERT_EQUAL(gim_extract_features(model, &st, &db, f, nf, NULL, NULL, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "cannot read") != NULL);
    gim_train_state_free(&st, model);
}

int main(void) {
    static const gim_test tests[] = {
        {"a source that gives the array's data: the same bits", test_source_equals_array},
        {"a source that changes with the epoch is seen to change", test_source_by_epoch},
        {"a failing source stops training with its message", test_source_fails},
        {NULL, NULL},
    };
    int rc = gim_run_suite("train_source", tests);
    if (model) gim_exec_model_free(model);
    return rc;
}
