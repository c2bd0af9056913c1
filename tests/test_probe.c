/* The linear probe on synthetic data whose answer is known. */
#include <math.h>
#include <string.h>

#include "gim_probe.h"
#include "gim_runtime.h"
#include "gim_util.h"
#include "rt_internal.h"
#include "testutil.h"

/* Classes are Gaussian blobs around well separated means: a linear
 * classifier must separate them almost perfectly, train and test. */
static void make_blobs(float *x, int32_t *y, int64_t n, int64_t dim, int classes, unsigned seed, float spread) {
    float *noise = gim_xmalloc(sizeof(float) * (size_t)(n * dim));
    gim_test_fill(noise, (size_t)(n * dim), seed, -spread, spread);
    for (int64_t i = 0; i < n; i++) {
        y[i] = (int32_t)(i % classes);
        for (int64_t j = 0; j < dim; j++)
            x[i * dim + j] = noise[i * dim + j] + (j % classes == y[i] ? 3.0f : 0.0f) + 100.0f; /* offset: standardisation must remove it */
    }
    gim_free(noise);
}

static void test_separable(void) {
    int64_t ntr = 2000, nte = 500, dim = 20;
    int classes = 4;
    float *xtr = gim_xmalloc(sizeof(float) * (size_t)(ntr * dim)), *xte = gim_xmalloc(sizeof(float) * (size_t)(nte * dim));
    int32_t *ytr = gim_xmalloc(sizeof(int32_t) * (size_t)ntr), *yte = gim_xmalloc(sizeof(int32_t) * (size_t)nte);
    make_blobs(xtr, ytr, ntr, dim, classes, 1, 1.0f);
    make_blobs(xte, yte, nte, dim, classes, 2, 1.0f);
    gim_probe_options o;
    gim_probe_defaults(&o);
    o.epochs = 5;
    o.lr = 1e-2;   /* 8 steps an epoch: a larger step than the default to converge in 40 */
    gim_probe_result r;
    CU_ASSERT_EQUAL(gim_probe_run(xtr, ytr, ntr, xte, yte, nte, dim, classes, &o, &r), 0);
    CU_ASSERT(r.train_acc > 0.98);
    CU_ASSERT(r.test_acc > 0.98);
    CU_ASSERT(r.final_loss < 0.2);
    gim_free(xtr); gim_free(xte); gim_free(ytr); gim_free(yte);
}

/* Labels unrelated to the features: test accuracy must stay near chance,
 * which catches a probe that leaks test labels or scores the wrong set. */
static void test_random_labels(void) {
    int64_t ntr = 1000, nte = 2000, dim = 8;
    int classes = 2;
    float *xtr = gim_xmalloc(sizeof(float) * (size_t)(ntr * dim)), *xte = gim_xmalloc(sizeof(float) * (size_t)(nte * dim));
    int32_t *ytr = gim_xmalloc(sizeof(int32_t) * (size_t)ntr), *yte = gim_xmalloc(sizeof(int32_t) * (size_t)nte);
    gim_test_fill(xtr, (size_t)(ntr * dim), 3, -1, 1);
    gim_test_fill(xte, (size_t)(nte * dim), 4, -1, 1);
    float *coin = gim_xmalloc(sizeof(float) * (size_t)(ntr + nte));
    gim_test_fill(coin, (size_t)(ntr + nte), 5, 0, 1);
    for (int64_t i = 0; i < ntr; i++) ytr[i] = coin[i] < 0.5f;
    for (int64_t i = 0; i < nte; i++) yte[i] = coin[ntr + i] < 0.5f;
    gim_probe_options o;
    gim_probe_defaults(&o);
    gim_probe_result r;
    CU_ASSERT_EQUAL(gim_probe_run(xtr, ytr, ntr, xte, yte, nte, dim, classes, &o, &r), 0);
    CU_ASSERT(fabs(r.test_acc - 0.5) < 0.06);
    gim_free(xtr); gim_free(xte); gim_free(ytr); gim_free(yte); gim_free(coin);
}

/* The probe as its header describes it, written plainly (one row at a time,
 * in double): standardise with the training set's statistics, initialise
 * W and b as U(-1/sqrt(dim), 1/sqrt(dim)) from the probe's stream, shuffle
 * each epoch, Adam on the mean cross-entropy of each batch. Returns the last
 * epoch's mean loss; w receives W then b. */
static double reference_probe(const float *x0, const int32_t *y, int64_t n, int64_t dim, int classes,
                              const gim_probe_options *o, double *w) {
    double *x = gim_xmalloc(sizeof(double) * (size_t)(n * dim));
    for (int64_t j = 0; j < dim; j++) {
        double mean = 0, sq = 0;
        for (int64_t i = 0; i < n; i++) mean += x0[i * dim + j], sq += (double)x0[i * dim + j] * x0[i * dim + j];
        mean /= (double)n;
        double var = sq / (double)n - mean * mean, sd = var > 0 ? sqrt(var) : 0;
        for (int64_t i = 0; i < n; i++) {
            /* the probe standardises in float: the same rounding here */
            float shift = (float)mean, scale = sd > 1e-12 ? (float)(1.0 / sd) : 0.0f;
            x[i * dim + j] = (x0[i * dim + j] - shift) * scale;
        }
    }
    int64_t np = (int64_t)classes * dim + classes;
    double *g = gim_xmalloc(sizeof(double) * (size_t)np), *m = gim_xmalloc(sizeof(double) * (size_t)np);
    double *v = gim_xmalloc(sizeof(double) * (size_t)np), *p = gim_xmalloc(sizeof(double) * (size_t)classes);
    int64_t *perm = gim_xmalloc(sizeof(int64_t) * (size_t)n);
    float bound = 1.0f / sqrtf((float)dim);
    for (int64_t i = 0; i < np; i++) {
        w[i] = bound * (2.0f * gim_rt_rand_uniform(o->seed, GIM_RT_STREAM_INIT | 0x9e3779b9u, (uint64_t)i) - 1.0f);
        m[i] = v[i] = 0;
    }
    double loss = 0;
    int64_t t = 0;
    for (int ep = 0; ep < o->epochs; ep++) {
        for (int64_t i = 0; i < n; i++) perm[i] = i;
        gim_rt_shuffle_i64(perm, n, o->seed, GIM_RT_STREAM_DATA | (0x7072u << 16) | (uint64_t)ep);
        loss = 0;
        for (int64_t s = 0; s < n; s += o->batch) {
            int64_t bn = n - s < o->batch ? n - s : o->batch;
            for (int64_t i = 0; i < np; i++) g[i] = 0;
            for (int64_t r = 0; r < bn; r++) {
                const double *xr = x + perm[s + r] * dim;
                int yr = y[perm[s + r]];
                double mx = -INFINITY, z = 0;
                for (int k = 0; k < classes; k++) {
                    p[k] = w[(int64_t)classes * dim + k];
                    for (int64_t j = 0; j < dim; j++) p[k] += w[k * dim + j] * xr[j];
                    mx = p[k] > mx ? p[k] : mx;
                }
                for (int k = 0; k < classes; k++) z += exp(p[k] - mx);
                loss += log(z) - (p[yr] - mx);
                for (int k = 0; k < classes; k++) {
                    double gk = (exp(p[k] - mx) / z - (k == yr)) / (double)bn;
                    for (int64_t j = 0; j < dim; j++) g[k * dim + j] += gk * xr[j];
                    g[(int64_t)classes * dim + k] += gk;
                }
            }
            t++;
            double c1 = 1 - pow(0.9, (double)t), c2 = 1 - pow(0.999, (double)t);
            for (int64_t i = 0; i < np; i++) {
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                w[i] -= o->lr / c1 * m[i] / (sqrt(v[i] / c2) + 1e-8);
            }
        }
        loss /= (double)n;
    }
    gim_free(x); gim_free(g); gim_free(m); gim_free(v); gim_free(p); gim_free(perm);
    return loss;
}

/* The probe must follow the plain reference step for step, at sizes off
 * every round number (300 features, batches of 41 and a ragged last one of
 * 14): the same final loss to float rounding. With one thread and with two:
 * the same bits. */
static void test_matches_reference(void) {
    int64_t ntr = 301, nte = 97, dim = 300;
    int classes = 5;
    float *xtr = gim_xmalloc(sizeof(float) * (size_t)(ntr * dim)), *xte = gim_xmalloc(sizeof(float) * (size_t)(nte * dim));
    int32_t *ytr = gim_xmalloc(sizeof(int32_t) * (size_t)ntr), *yte = gim_xmalloc(sizeof(int32_t) * (size_t)nte);
    make_blobs(xtr, ytr, ntr, dim, classes, 7, 40.0f);   /* overlapping: the loss stays well above 0 */
    make_blobs(xte, yte, nte, dim, classes, 8, 40.0f);
    gim_probe_options o;
    gim_probe_defaults(&o);
    o.epochs = 3;
    o.batch = 41;
    o.lr = 3e-2;
    double *w = gim_xmalloc(sizeof(double) * (size_t)(classes * dim + classes));
    double want = reference_probe(xtr, ytr, ntr, dim, classes, &o, w);
    gim_probe_result r[2];
    for (int threads = 1; threads <= 2; threads++) {
        float *a = gim_xmalloc(sizeof(float) * (size_t)(ntr * dim)), *b = gim_xmalloc(sizeof(float) * (size_t)(nte * dim));
        memcpy(a, xtr, sizeof(float) * (size_t)(ntr * dim));
        memcpy(b, xte, sizeof(float) * (size_t)(nte * dim));
        gim_rt_set_threads(threads);
        CU_ASSERT_EQUAL(gim_probe_run(a, ytr, ntr, b, yte, nte, dim, classes, &o, &r[threads - 1]), 0);
        gim_free(a);
        gim_free(b);
    }
    CU_ASSERT(want > 0.1);
    if (want <= 0.1) fprintf(stderr, "\nreference loss %.8f\n", want);
    CU_ASSERT_DOUBLE_EQUAL(r[0].final_loss, want, 1e-4 * want);
    if (fabs(r[0].final_loss - want) > 1e-4 * want) fprintf(stderr, "\nprobe loss %.8f, reference %.8f\n", r[0].final_loss, want);
    CU_ASSERT(memcmp(&r[0], &r[1], sizeof r[0]) == 0);
    gim_free(w);
    gim_free(xtr); gim_free(xte); gim_free(ytr); gim_free(yte);
}

static void test_pool_mean(void) {
    /* two examples, 3 positions, 2 channels */
    float x[12] = {1, 10, 2, 20, 3, 30, 4, 40, 5, 50, 6, 60};
    gim_probe_pool_mean(x, 2, 3, 2);
    CU_ASSERT_DOUBLE_EQUAL(x[0], 2, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(x[1], 20, 1e-5);
    CU_ASSERT_DOUBLE_EQUAL(x[2], 5, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(x[3], 50, 1e-5);
}

int main(void) {
    static const gim_test tests[] = {
        {"separable blobs are learned", test_separable},
        {"random labels stay at chance", test_random_labels},
        {"batches follow a plain reference, on any thread count", test_matches_reference},
        {"mean pooling over positions", test_pool_mean},
        {NULL, NULL},
    };
    return gim_run_suite("probe", tests);
}
