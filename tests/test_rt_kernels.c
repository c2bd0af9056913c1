/* SGEMM transposes and leading dimensions, and the JIT symbol table.
 * (Convolutions are generated code, tested in test_op_conv.c.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gim_runtime.h"
#include "gim_util.h"
#include "testutil.h"

static void test_sgemm_transposes(void) {
    const int64_t M = 7, N = 5, K = 6, pad = 3;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
            int64_t lda = ac + pad, ldb = bc + pad, ldc = N + pad;
            float A[64 * 16], B[64 * 16], Cm[64 * 16];
            gim_test_fill(A, (size_t)(ar * lda), 7 + (unsigned)ta, -1, 1);
            gim_test_fill(B, (size_t)(br * ldb), 9 + (unsigned)tb, -1, 1);
            gim_test_fill(Cm, (size_t)(M * ldc), 11, -1, 1);
            double ref[7][5];
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    double s = 0;
                    for (int64_t k = 0; k < K; k++)
                        s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) *
                             (tb ? B[j * ldb + k] : B[k * ldb + j]);
                    ref[i][j] = 0.5 * s - 2.0 * Cm[i * ldc + j];
                }
            gim_rt_sgemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, -2.0f, Cm, ldc);
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) CU_ASSERT(fabs(Cm[i * ldc + j] - ref[i][j]) < 1e-5);
        }
}

static void test_symbols(void) {
    const char *const *names;
    void *const *addrs;
    int n = gim_rt_symbols(&names, &addrs);
    CU_ASSERT(n >= 6);
    int found = 0;
    for (int i = 0; i < n; i++) {
        CU_ASSERT_PTR_NOT_NULL(names[i]);
        CU_ASSERT_PTR_NOT_NULL(addrs[i]);
        for (int j = 0; j < i; j++) CU_ASSERT(strcmp(names[i], names[j]) != 0);
        if (!strcmp(names[i], "gim_rt_sgemm")) found += addrs[i] == (void *)&gim_rt_sgemm;
        if (!strcmp(names[i], "gim_rt_rand_below")) found += addrs[i] == (void *)&gim_rt_rand_below;
        if (!strcmp(names[i], "cblas_sgemm")) found++;
        if (!strcmp(names[i], "expf")) found += addrs[i] == (void *)&expf;
    }
    CU_ASSERT_EQUAL(found, 4);
}

int main(void) {
    static const gim_test tests[] = {
        {"sgemm transposes and leading dims", test_sgemm_transposes},
        {"symbol table", test_symbols},
        {NULL, NULL},
    };
    return gim_run_suite("rt_kernels", tests);
}
