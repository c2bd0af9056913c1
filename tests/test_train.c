/* gimc train on a small synthetic data set: every schedule lowers every
 * module's loss; module 1 learns the same under all three; the sequential
 * schedule's cache feeds module 2 what module 1 computes; --e2e sends the
 * last loss's gradients into module 1; divergence, progress lines and the
 * errors reported before training (shapes, output directory). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gim_checkpoint.h"
#include "gim_util.h"
#include "harness_train.h"
#include "testutil.h"

static const char *data12;     /* 256 + 128 images of 12 x 12 */
static const char *model3;     /* 3 modules */
static const char *model2;     /* 2 modules */

static void setup(void) {
    if (data12) return;
    data12 = tt_dataset("d12", 12, 256, 128, true);
    model3 = tt_model("tiny3.gim", 12, 3);
    model2 = tt_model("tiny2.gim", 12, 2);
}

/* ---- schedules ------------------------------------------------------------------ */

static const char *const schedules[] = {"simultaneous", "sequential", "async"};

/* 4 epochs of 16 batches, lr 1e-2: the InfoNCE loss of 4 negatives starts
 * at ln 5 = 1.609 and falls clearly below it for every module. Compares
 * the mean of each module's first 8 steps with its last 8. */
static void test_schedules_lower_losses(void) {
    setup();
    tt_row *rows[3] = {NULL, NULL, NULL};
    int n[3];
    for (int s = 0; s < 3; s++) {
        char name[64];
        snprintf(name, sizeof name, "sched_%s", schedules[s]);
        const char *out = tt_path(name);
        char *so = NULL, *se = NULL;
        /* one BLAS thread for all three, as async uses: the same sums in the same order */
        int rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' --epochs 4 --threads 1 --schedule %s", model3,
                         data12, out, schedules[s]);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc) fprintf(stderr, "\n%s: %s\n", schedules[s], se);
        n[s] = tt_metrics(out, &rows[s]);
        CU_ASSERT_EQUAL_FATAL(n[s], 3 * 64);
        for (int mi = 1; mi <= 3; mi++) {
            CU_ASSERT_EQUAL(tt_count(rows[s], n[s], mi), 64);
            double first = tt_mean_loss(rows[s], n[s], mi, 8, false), last = tt_mean_loss(rows[s], n[s], mi, 8, true);
            /* the first steps sit near ln 5: nothing learnt yet (except
             * under sequential, where modules 2 and 3 start on features
             * module 1 has finished learning, and go faster) */
            bool fresh = s != 1 || mi == 1;
            CU_ASSERT(!fresh || fabs(first - log(5.0)) < 0.1);
            CU_ASSERT(last < first - 0.1);
            if (fresh && !(fabs(first - log(5.0)) < 0.1))
                fprintf(stderr, "\n%s module %d: first %.4f\n", schedules[s], mi, first);
            if (!(last < first - 0.1))
                fprintf(stderr, "\n%s module %d: first %.4f last %.4f\n", schedules[s], mi, first, last);
        }
        if (s == 1) {
            /* sequential: module 1 for all its epochs, then module 2, then 3 */
            bool ordered = true;
            for (int i = 1; i < n[s]; i++) ordered &= rows[s][i].module >= rows[s][i - 1].module;
            CU_ASSERT(ordered);
            CU_ASSERT(tt_has(so, "module 1: caching its outputs"));
            CU_ASSERT(tt_has(so, "module 2: caching its outputs"));
        }
        if (s == 2) {
            /* async states how stale an input may be and how stale one was */
            CU_ASSERT(tt_has(so, "async:"));
            CU_ASSERT(tt_has(so, "stale"));
        }
        gim_free(so);
        gim_free(se);
    }
    /* Module 1 reads only the data, so its trajectory is the same whoever
     * schedules the modules after it: the same losses, step for step. */
    for (int s = 1; s < 3; s++) {
        int same = 0, total = 0;
        for (int i = 0; i < n[0]; i++) {
            if (rows[0][i].module != 1) continue;
            total++;
            for (int j = 0; j < n[s]; j++)
                if (rows[s][j].module == 1 && rows[s][j].step == rows[0][i].step) {
                    same += rows[s][j].loss == rows[0][i].loss;
                    break;
                }
        }
        CU_ASSERT_EQUAL(total, 64);
        CU_ASSERT_EQUAL(same, total);
    }
    for (int s = 0; s < 3; s++) gim_free(rows[s]);
}

/* Reads one tensor of a safetensors file as floats (heap), or NULL. */
static float *read_tensor(const char *path, const char *name, int64_t *numel) {
    char err[512];
    gim_ckpt *c = gim_safetensors_read(path, err, sizeof err);
    if (!c) {
        fprintf(stderr, "\n%s\n", err);
        return NULL;
    }
    const gim_ckpt_tensor *t = gim_ckpt_find(c, name);
    float *x = NULL;
    if (t && t->dtype == GIM_DT_F32) {
        x = gim_xmalloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
        memcpy(x, t->data, sizeof(float) * (size_t)t->numel);
        *numel = t->numel;
    }
    gim_ckpt_free(c);
    return x;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* The sequential schedule trains module 2 on module 1's outputs computed
 * once and cached. Its first loss must be what module 2 (at its initial
 * parameters) computes on module 1's live output for that batch: the
 * simultaneous schedule, resumed from a checkpoint holding module 1's
 * trained parameters and module 2's initial ones with every counter at 0,
 * computes exactly that in its first step. Batch 24 does not divide the 256
 * examples, so the shuffled batch draws on examples past the last whole
 * batch too. */
static void test_sequential_cache_matches_live_forward(void) {
    setup();
    const char *seq = tt_path("cache_seq"), *sim = tt_path("cache_sim"), *init = tt_path("cache_init"),
               *mix = tt_path("cache_mix");
    char *se = NULL;
    int rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 6 --batch 24 --schedule sequential", model2,
                     data12, seq);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    gim_free(se);
    /* module 1's parameters after 6 steps: the same under both schedules */
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 6 --batch 24", model2, data12, sim), 0);
    /* initial parameters: one step whose Adam update (about lr = 1e-30 per
     * element) vanishes next to every weight; zero biases become at most
     * 1e-30, far below what changes a loss in its sixth digit */
    CU_ASSERT_EQUAL_FATAL(
        tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 1 --batch 24 --lr 1e-30", model2, data12, init), 0);
    const char *p_seq = tt_weights(seq), *p_sim = tt_weights(sim), *p_init = tt_weights(init),
               *p_mix = tt_weights(mix);
    int64_t n1 = 0, n2 = 0;
    float *a = read_tensor(p_seq, "conv2d.1/w", &n1), *b = read_tensor(p_sim, "conv2d.1/w", &n2);
    CU_ASSERT_FATAL(a && b && n1 == n2 && n1 == 36);
    CU_ASSERT_EQUAL(max_abs_diff(a, b, n1), 0.0);
    gim_free(a);
    gim_free(b);

    /* the mixed checkpoint: module 1 from sim, module 2 from init */
    char err[512];
    gim_ckpt *cs = gim_safetensors_read(p_sim, err, sizeof err), *ci = gim_safetensors_read(p_init, err, sizeof err);
    CU_ASSERT_FATAL(cs && ci);
    gim_ckpt_tensor t[16];
    int nt = 0;
    for (int i = 0; i < cs->n_tensors && nt < 16; i++) {
        const char *name = cs->tensors[i].name;
        bool m1 = !strcmp(name, "conv2d.1/w") || !strcmp(name, "conv2d.1/b") || !strcmp(name, "infonce.1/w");
        t[nt++] = m1 ? cs->tensors[i] : *gim_ckpt_find(ci, name);
    }
    CU_ASSERT_EQUAL(nt, 6);
    /* optimizer state of zeros and counters at 0: a fresh run */
    gim_ckpt_meta meta[] = {{"format", "gim-weights-1"}, {"optimizer", "optimizer-0.safetensors"}};
    CU_ASSERT_EQUAL(mkdir(mix, 0755), 0);
    CU_ASSERT_EQUAL_FATAL(gim_safetensors_write(p_mix, t, nt, meta, 2, err, sizeof err), 0);
    gim_ckpt_free(cs);
    gim_ckpt_free(ci);
    char p_opt[1024];
    gim_ckpt *wi = gim_safetensors_read(p_init, err, sizeof err);
    CU_ASSERT_FATAL(wi && gim_ckpt_meta_get(wi, "optimizer"));
    snprintf(p_opt, sizeof p_opt, "%s/%s", init, gim_ckpt_meta_get(wi, "optimizer"));
    gim_ckpt_free(wi);
    gim_ckpt *co = gim_safetensors_read(p_opt, err, sizeof err);
    CU_ASSERT_FATAL(co != NULL);
    gim_ckpt_tensor ot[3];
    float *zeros[2];
    int64_t counters[2 + 3] = {0, 0, 0, 0, 0};
    for (int i = 0; i < 2; i++) {
        char name[32];
        snprintf(name, sizeof name, "module%d/optimizer", i + 1);
        const gim_ckpt_tensor *x = gim_ckpt_find(co, name);
        CU_ASSERT_FATAL(x != NULL);
        zeros[i] = gim_calloc((size_t)x->numel + 1, sizeof(float));
        ot[i] = *x;
        ot[i].name = i ? "module2/optimizer" : "module1/optimizer";
        ot[i].data = zeros[i];
    }
    ot[2] = (gim_ckpt_tensor){.name = "counters", .dtype = GIM_DT_I64, .rank = 1, .shape = {5}, .data = counters};
    snprintf(p_opt, sizeof p_opt, "%s/optimizer-0.safetensors", mix);
    CU_ASSERT_EQUAL_FATAL(gim_safetensors_write(p_opt, ot, 3, NULL, 0, err, sizeof err), 0);
    gim_ckpt_free(co);
    gim_free(zeros[0]);
    gim_free(zeros[1]);

    se = NULL;
    rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 1 --batch 24 --resume", model2, data12, mix);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc) fprintf(stderr, "\n%s\n", se);
    gim_free(se);
    tt_row *rs = NULL, *rm = NULL;
    int ns = tt_metrics(seq, &rs), nm = tt_metrics(mix, &rm);
    CU_ASSERT_FATAL(ns == 12 && nm == 2);
    double want = tt_mean_loss(rm, nm, 2, 1, false), got = tt_mean_loss(rs, ns, 2, 1, false);
    CU_ASSERT(fabs(want - got) <= 2e-6 * fabs(want));
    if (!(fabs(want - got) <= 2e-6 * fabs(want))) fprintf(stderr, "\nmodule 2 first loss: cached %.7g, live %.7g\n", got, want);
    /* and it differs from module 2's first loss on the untrained module 1 */
    tt_row *ri = NULL;
    int ni = tt_metrics(init, &ri);
    CU_ASSERT_FATAL(ni == 2);
    CU_ASSERT(fabs(tt_mean_loss(ri, ni, 2, 1, false) - got) > 1e-5);
    gim_free(rs);
    gim_free(rm);
    gim_free(ri);
}

/* --e2e: one module, the last loss; its gradients reach module 1's
 * convolution (which moves away from its initial values), and module 1
 * then learns differently from greedy training. */
static void test_e2e_gradients_reach_module_1(void) {
    setup();
    const char *e2e = tt_path("e2e"), *greedy = tt_path("greedy"), *init = tt_path("e2e_init");
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 8 --e2e", model3, data12, e2e);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT(tt_has(so, "end to end"));
    gim_free(so);
    gim_free(se);
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 8", model3, data12, greedy), 0);
    CU_ASSERT_EQUAL_FATAL(
        tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 1 --e2e --lr 1e-30", model3, data12, init), 0);
    tt_row *r = NULL;
    int n = tt_metrics(e2e, &r);
    CU_ASSERT_EQUAL(n, 8);
    CU_ASSERT_EQUAL(tt_count(r, n, 1), 8);
    gim_free(r);
    const char *pe = tt_weights(e2e), *pg = tt_weights(greedy), *pi = tt_weights(init);
    static const char *const blocks[] = {"conv2d.1/w", "conv2d.2/w", "conv2d.3/w"};
    for (int k = 0; k < 3; k++) {
        int64_t ne = 0, ng = 0, ni = 0;
        float *we = read_tensor(pe, blocks[k], &ne), *wg = read_tensor(pg, blocks[k], &ng),
              *wi = read_tensor(pi, blocks[k], &ni);
        CU_ASSERT_FATAL(we && wg && wi && ne == ng && ne == ni && ne > 0);
        /* Adam moves every weight with a gradient by about lr = 1e-2 a step */
        double moved = max_abs_diff(we, wi, ne);
        CU_ASSERT(moved > 1e-3);
        if (!(moved > 1e-3)) fprintf(stderr, "\n%s did not move under --e2e (%g)\n", blocks[k], moved);
        if (k < 2) CU_ASSERT(max_abs_diff(we, wg, ne) > 1e-4);
        gim_free(we);
        gim_free(wg);
        gim_free(wi);
    }
}

/* Five good steps and a checkpoint; then, resumed with a learning rate of
 * 1e30, step 6's Adam update sends the parameters far out (its loss, from
 * the good parameters, is finite) and step 7's loss is NaN or infinite.
 * Training stops naming module and step, exit 1; the checkpoint left is
 * the last good one: not the state after step 6 (checkpoints are due after
 * every step here), but one whose parameters give a finite loss when
 * training goes on from it. */
static void test_divergence_stops(void) {
    setup();
    const char *out = tt_path("nan");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 5", model2, data12, out), 0);
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 16 --lr 1e30 --save-every 1 --resume",
                     model2, data12, out);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "module 1's loss became"));
    CU_ASSERT(tt_has(se, "NaN") || tt_has(se, "infinite"));
    CU_ASSERT(tt_has(se, "step 7;"));
    if (rc != 1 || !tt_has(se, "step 7;")) fprintf(stderr, "\nrc %d\n%s\n%s\n", rc, so, se);
    gim_free(so);
    gim_free(se);
    char err[512];
    const char *path = tt_weights(out);
    gim_ckpt *c = gim_safetensors_read(path, err, sizeof err);
    CU_ASSERT_FATAL(c != NULL);
    int bad = 0;
    for (int i = 0; i < c->n_tensors; i++) {
        const float *x = c->tensors[i].data;
        for (int64_t k = 0; k < c->tensors[i].numel; k++) bad += !isfinite(x[k]) || fabsf(x[k]) > 100;
    }
    CU_ASSERT_EQUAL(bad, 0);
    gim_ckpt_free(c);
    /* going on from it at a sane rate: finite losses again */
    rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 8 --resume", model2, data12, out);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc) fprintf(stderr, "\n%s\n", se);
    gim_free(se);
    tt_row *r = NULL;
    int n = tt_metrics(out, &r);
    CU_ASSERT_EQUAL(n, 16);
    for (int i = 0; i < n; i++) CU_ASSERT(r[i].step == i / 2 + 1 && isfinite(r[i].loss) && r[i].loss < 3);
    gim_free(r);
}

/* Module 2's InfoNCE scores scaled by 1e38 overflow at once: its loss is
 * NaN or infinite at its first step while module 1 trains normally. Every
 * schedule stops naming module 2 (async without waiting forever on the
 * queue nobody pops any more); sequential keeps module 1's checkpoint. */
static void test_divergence_in_module_2(void) {
    setup();
    static const char text[] = "model blowup {\n"
                               "    input x: [batch, 1, 12, 12]\n"
                               "    p = patches(x, size=4, stride=2)\n"
                               "    h1 = relu(conv2d(p, 4, k=3, pad=1))\n"
                               "    infonce(spatial_mean(h1), steps=2, negatives=4)\n"
                               "    h2 = relu(conv2d(gradient_block(h1), 8, k=3, stride=2, pad=1))\n"
                               "    infonce(spatial_mean(h2) * 1e38, steps=2, negatives=4)\n"
                               "    output spatial_mean(h2)\n"
                               "}\n"
                               "train {\n"
                               "    batch 16\n"
                               "}\n";
    const char *model = gim_tmpfile("blowup.gim", text, sizeof text - 1);
    for (int s = 0; s < 3; s++) {
        char name[64];
        snprintf(name, sizeof name, "blowup_%s", schedules[s]);
        const char *out = tt_path(name);
        char *se = NULL;
        int rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --epochs 3 --schedule %s --save-every 1", model,
                         data12, out, schedules[s]);
        CU_ASSERT_EQUAL(rc, 1);
        CU_ASSERT(tt_has(se, "module 2's loss became"));
        CU_ASSERT(tt_has(se, "step 1;"));
        if (rc != 1 || !tt_has(se, "module 2's loss became")) fprintf(stderr, "\n%s: rc %d %s\n", schedules[s], rc, se);
        gim_free(se);
        if (s == 1) {
            /* module 1 finished its 48 steps and was saved before module 2 started */
            char err[512];
            const char *path = tt_weights(out);
            gim_ckpt *c = gim_safetensors_read(path, err, sizeof err);
            CU_ASSERT(c != NULL);
            gim_ckpt_free(c);
        }
    }
}

/* stdout is a file here: plain progress lines, no bar; metrics.csv has one
 * row per module per step, steps 1.. in order, each with a rate. */
static void test_progress_and_metrics(void) {
    setup();
    const char *out = tt_path("progress");
    char *so = NULL;
    CU_ASSERT_EQUAL_FATAL(tt_gimc(&so, NULL, "train '%s' --data '%s' --out '%s' --epochs 2", model2, data12, out), 0);
    CU_ASSERT(tt_has(so, "epoch 1/2 step 16/16"));
    CU_ASSERT(tt_has(so, "epoch 2/2 step 16/16"));
    CU_ASSERT(tt_has(so, " m1 "));
    CU_ASSERT(tt_has(so, " m2 "));
    CU_ASSERT(tt_has(so, "ex/s"));
    CU_ASSERT(!tt_has(so, "\r"));
    CU_ASSERT(!tt_has(so, "\033"));
    gim_free(so);
    tt_row *r = NULL;
    int n = tt_metrics(out, &r);
    CU_ASSERT_EQUAL_FATAL(n, 64);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        bad += r[i].step != i / 2 + 1 || r[i].module != i % 2 + 1 || r[i].epoch != (i / 2) / 16 + 1;
        bad += !(r[i].loss > 0 && r[i].loss < 10);
        bad += !(r[i].rate > 0);
    }
    CU_ASSERT_EQUAL(bad, 0);
    gim_free(r);
    /* a new run (no --resume) into the same directory starts metrics.csv over */
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 3", model2, data12, out), 0);
    CU_ASSERT_EQUAL(tt_metrics(out, &r), 6);
    gim_free(r);
}

/* A model for 28 x 28 images on 12 x 12 data: both shapes in the message,
 * exit 1, before any training. */
static void test_input_shape_mismatch(void) {
    setup();
    const char *m28 = tt_model("tiny28.gim", 28, 2);
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 2", m28, data12, tt_path("shape"));
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "[16, 1, 28, 28]"));
    CU_ASSERT(tt_has(se, "[16, 1, 12, 12]"));
    CU_ASSERT(!tt_has(so, "step 1/"));
    if (rc != 1 || !tt_has(se, "[16, 1, 12, 12]")) fprintf(stderr, "\nrc %d: %s\n", rc, se);
    gim_free(so);
    gim_free(se);
}

/* An output directory that cannot exist (below a regular file), or that is
 * a regular file: reported before training, exit 1. */
static void test_unwritable_out(void) {
    setup();
    const char *file = gim_tmpfile("plainfile", "x", 1);
    for (int k = 0; k < 2; k++) {
        char out[1024];
        snprintf(out, sizeof out, k ? "%s" : "%s/sub/dir", file);
        char *so = NULL, *se = NULL;
        int rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 2", model2, data12, out);
        CU_ASSERT_EQUAL(rc, 1);
        CU_ASSERT(tt_has(se, file));
        CU_ASSERT(!tt_has(so, "step 1/"));
        if (rc != 1) fprintf(stderr, "\nrc %d: %s\n", rc, se);
        gim_free(so);
        gim_free(se);
    }
}

/* The results do not depend on the thread count: a model whose convolutions
 * take every lowering (im2col from one channel, Winograd 16 -> 16 with fused
 * ReLUs, stride 2), trained on one thread and on two, writes the same bits. */
static void test_threads_same_bits(void) {
    setup();
    static const char src[] =
        "model threads {\n"
        "    input x: [batch, 1, 12, 12]\n"
        "    p = patches(x, size=8, stride=4)\n"
        "    h1 = relu(conv2d(relu(conv2d(p, 16, k=3, pad=1)), 16, k=3, pad=1))\n"
        "    infonce(spatial_mean(h1), steps=1, negatives=4)\n"
        "    h2 = relu(conv2d(gradient_block(h1), 16, k=3, stride=2, pad=1))\n"
        "    infonce(spatial_mean(h2), steps=1, negatives=4)\n"
        "    output spatial_mean(h2)\n"
        "}\n"
        "train {\n    batch 16\n    optimizer adam(lr=1e-2)\n    seed 3\n}\n";
    const char *model = gim_tmpfile("threads.gim", src, sizeof src - 1);
    const char *out[2] = {tt_path("threads1"), tt_path("threads2")};
    for (int t = 0; t < 2; t++) {
        char *se = NULL;
        int rc = tt_gimc(NULL, &se, "train '%s' --data '%s' --out '%s' --steps 8 --threads %d", model, data12, out[t],
                         t + 1);
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        gim_free(se);
    }
    size_t n[2] = {0, 0};
    char *w[2];
    for (int t = 0; t < 2; t++) w[t] = gim_read_file(tt_weights(out[t]), &n[t]);
    CU_ASSERT_FATAL(w[0] && w[1]);
    CU_ASSERT(n[0] == n[1] && n[0] > 1000 && memcmp(w[0], w[1], n[0]) == 0);
    gim_free(w[0]);
    gim_free(w[1]);
}

int main(void) {
    static const gim_test tests[] = {
        {"one thread or two: the same weights", test_threads_same_bits},
        {"every schedule lowers every module's loss", test_schedules_lower_losses},
        {"sequential cache = module 1's live output", test_sequential_cache_matches_live_forward},
        {"--e2e: gradients reach module 1", test_e2e_gradients_reach_module_1},
        {"NaN/Inf loss stops training", test_divergence_stops},
        {"a NaN in module 2 under each schedule", test_divergence_in_module_2},
        {"plain progress lines and metrics.csv", test_progress_and_metrics},
        {"input shape mismatch names both shapes", test_input_shape_mismatch},
        {"unwritable --out reported first", test_unwritable_out},
        {NULL, NULL},
    };
    return tt_cleanup(gim_run_suite("train", tests));
}
