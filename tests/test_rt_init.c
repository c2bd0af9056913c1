/* Parameter initialisation: U(-bound, bound) per parameter, keyed by name and
 * seed; and gim_exec_model_free. */
#include <math.h>
#include <string.h>

#include "gim_runtime.h"
#include "gim_util.h"
#include "testutil.h"

static gim_param_info param(const char *name, int64_t offset, int64_t numel, float bound) {
    gim_param_info p = {.name = name, .rank = 1, .offset = offset, .numel = numel, .init_bound = bound};
    p.shape[0] = numel;
    return p;
}

enum { NW = 20000, NB = 64, GUARD = 8 };

static void test_bounds_and_moments(void) {
    gim_param_info ps[2] = {param("enc.1/conv2d.1/w", 0, NW, 1.0f / 3), param("enc.1/conv2d.1/b", NW, NB, 0.125f)};
    gim_exec_module m = {.index = 1, .params = ps, .n_params = 2, .n_param_floats = NW + NB};
    float *p = gim_xmalloc(sizeof(float) * (NW + NB + GUARD));
    for (int i = 0; i < NW + NB + GUARD; i++) p[i] = 1234.0f;
    gim_rt_init_params(&m, p, 7);
    int out = 0;
    double s = 0, s2 = 0;
    for (int i = 0; i < NW; i++) {
        out += !(p[i] >= -1.0f / 3 && p[i] < 1.0f / 3);
        s += p[i];
        s2 += (double)p[i] * p[i];
    }
    for (int i = NW; i < NW + NB; i++) out += !(p[i] >= -0.125f && p[i] < 0.125f);
    CU_ASSERT_EQUAL(out, 0);
    for (int i = NW + NB; i < NW + NB + GUARD; i++) CU_ASSERT_EQUAL(p[i], 1234.0f);
    /* U(-b, b): mean 0 (sd of the mean b/sqrt(3n) = 0.0014), variance b^2/3 = 0.037 */
    double mean = s / NW, var = s2 / NW - mean * mean;
    CU_ASSERT(fabs(mean) < 0.008);
    CU_ASSERT(fabs(var - 1.0 / 27) < 0.0015);
    /* both signs and values near the bound occur */
    float lo = 1, hi = -1;
    for (int i = 0; i < NW; i++) { lo = fminf(lo, p[i]); hi = fmaxf(hi, p[i]); }
    CU_ASSERT(lo < -0.33f && hi > 0.33f);
    gim_free(p);
}

static void test_deterministic_and_keyed(void) {
    gim_param_info a[2] = {param("m/linear.1/w", 0, 100, 0.5f), param("m/linear.1/b", 100, 100, 0.5f)};
    gim_exec_module m = {.index = 1, .params = a, .n_params = 2};
    float x[200], y[200], z[200];
    gim_rt_init_params(&m, x, 1);
    gim_rt_init_params(&m, y, 1);
    CU_ASSERT(memcmp(x, y, sizeof x) == 0);
    gim_rt_init_params(&m, z, 2);
    int same_seed = 0, same_param = 0;
    for (int i = 0; i < 100; i++) { same_seed += x[i] == z[i]; same_param += x[i] == x[100 + i]; }
    CU_ASSERT(same_seed < 3);   /* another seed: other values */
    CU_ASSERT(same_param < 3);  /* w and b are not the same draws */
    /* the same parameter in another module at another offset: the same values
     * (greedy and end-to-end runs start from one network) */
    gim_param_info b[2] = {param("other", 0, 50, 0.5f), param("m/linear.1/w", 50, 100, 0.5f)};
    gim_exec_module m2 = {.index = 3, .params = b, .n_params = 2};
    float w[150];
    gim_rt_init_params(&m2, w, 1);
    CU_ASSERT(memcmp(w + 50, x, sizeof(float) * 100) == 0);
    /* a zero bound gives zeros */
    gim_param_info zb = param("zero", 0, 10, 0.0f);
    gim_exec_module m3 = {.index = 1, .params = &zb, .n_params = 1};
    float q[10];
    gim_rt_init_params(&m3, q, 5);
    for (int i = 0; i < 10; i++) CU_ASSERT_EQUAL(fabsf(q[i]), 0.0f);
}

static int released;
static void release(gim_exec_model *m) { released++; (void)m; }

static void test_model_free(void) {
    gim_exec_model m = {.release = release};
    gim_exec_model_free(&m);
    CU_ASSERT_EQUAL(released, 1);
    gim_exec_model n = {0};
    gim_exec_model_free(&n);
    gim_exec_model_free(NULL);
    CU_ASSERT_EQUAL(released, 1);
}

int main(void) {
    static const gim_test tests[] = {
        {"bounds and moments", test_bounds_and_moments},
        {"deterministic, keyed by seed and name", test_deterministic_and_keyed},
        {"exec model free", test_model_free},
        {NULL, NULL},
    };
    return gim_run_suite("rt_init", tests);
}
