/* The linear probe on synthetic data whose answer is known. */
#include <math.h>
#include <string.h>

#include "gim_probe.h"
#include "gim_util.h"
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
        {"mean pooling over positions", test_pool_mean},
        {NULL, NULL},
    };
    return gim_run_suite("probe", tests);
}
