/* The counter-based generator: Philox known answers, determinism, streams,
 * rough uniformity (chi-square with generous but real bounds). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gim_runtime.h"
#include "rt_internal.h"
#include "testutil.h"

/* Known-answer vectors published with Random123 (kat_vectors):
 * counter[4] key[2] -> output[4]. */
static void test_philox_known_answers(void) {
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
         0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        gim_rt_philox4x32_10(kat[t], kat[t] + 4, out);
        for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL(out[i], kat[t][6 + i]);
    }
    /* The u64 mapping: key = seed halves, ctr = counter halves then stream halves. */
    uint64_t seed = (uint64_t)0x299f31d0 << 32 | 0xa4093822;
    uint64_t ctr = (uint64_t)0x85a308d3 << 32 | 0x243f6a88;
    uint64_t stream = (uint64_t)0x03707344 << 32 | 0x13198a2e;
    CU_ASSERT_EQUAL(gim_rt_rand_u64(seed, stream, ctr), (uint64_t)0x94fdcceb << 32 | 0xd16cfe09);
}

static void test_deterministic(void) {
    for (uint64_t c = 0; c < 1000; c++) {
        CU_ASSERT_EQUAL(gim_rt_rand_u64(42, 7, c), gim_rt_rand_u64(42, 7, c));
        CU_ASSERT_EQUAL(gim_rt_rand_below(42, 7, c, 1000), gim_rt_rand_below(42, 7, c, 1000));
    }
}

/* Different streams, seeds or counters give unrelated numbers: equal 64-bit
 * outputs should essentially never happen, and equal small draws at the rate
 * 1/n. */
static void test_streams_differ(void) {
    int same64 = 0, same_below = 0;
    for (uint64_t c = 0; c < 10000; c++) {
        same64 += gim_rt_rand_u64(1, 1, c) == gim_rt_rand_u64(1, 2, c);
        same64 += gim_rt_rand_u64(1, 1, c) == gim_rt_rand_u64(2, 1, c);
        same64 += gim_rt_rand_u64(1, 1, c) == gim_rt_rand_u64(1, 1, c + 1);
        same_below += gim_rt_rand_below(5, 1, c, 16) == gim_rt_rand_below(5, 2, c, 16);
    }
    CU_ASSERT_EQUAL(same64, 0);
    /* expected 625, sd ~24 */
    CU_ASSERT(same_below > 500 && same_below < 750);
    /* the init and data stream tags do not alias small loss streams */
    CU_ASSERT_NOT_EQUAL(gim_rt_rand_u64(0, GIM_RT_STREAM_INIT | 1, 0), gim_rt_rand_u64(0, 1, 0));
}

static double chi_square(const long *counts, int k, long n) {
    double e = (double)n / k, x = 0;
    for (int i = 0; i < k; i++) x += (counts[i] - e) * (counts[i] - e) / e;
    return x;
}

/* Chi-square of 200000 draws into 10 and into 97 cells. Critical values at
 * p = 1e-4: df 9 -> 33.7, df 96 -> 151; we allow 40 and 170 (a broken
 * generator, e.g. a modulo of a low-quality counter, lands in the thousands). */
static void test_below_uniform(void) {
    long c10[10] = {0}, c97[97] = {0};
    const long n = 200000;
    for (long i = 0; i < n; i++) {
        uint32_t a = gim_rt_rand_below(123, 1, (uint64_t)i, 10);
        uint32_t b = gim_rt_rand_below(123, 2, (uint64_t)i, 97);
        CU_ASSERT_FATAL(a < 10 && b < 97);
        c10[a]++;
        c97[b]++;
    }
    CU_ASSERT(chi_square(c10, 10, n) < 40.0);
    CU_ASSERT(chi_square(c97, 97, n) < 170.0);
    /* n = 1 always gives 0 */
    for (uint64_t i = 0; i < 100; i++) CU_ASSERT_EQUAL(gim_rt_rand_below(9, 9, i, 1), 0);
    /* large n: the top of the range is reached too (values above 2^31 half the time) */
    long high = 0;
    for (uint64_t i = 0; i < 10000; i++) high += gim_rt_rand_below(3, 3, i, 0xffffffffu) >= 0x80000000u;
    CU_ASSERT(high > 4700 && high < 5300);
}

/* Each of the 64 bits is set about half of the time (sd of the count 0.5*sqrt(n)). */
static void test_bits_balanced(void) {
    long ones[64] = {0};
    const long n = 40000;
    for (long i = 0; i < n; i++) {
        uint64_t r = gim_rt_rand_u64(77, 3, (uint64_t)i);
        for (int b = 0; b < 64; b++) ones[b] += (r >> b) & 1;
    }
    for (int b = 0; b < 64; b++) CU_ASSERT(labs(ones[b] - n / 2) < 600); /* 6 sd */
}

static void test_uniform_float(void) {
    const int n = 100000;
    double sum = 0, sum2 = 0;
    long cells[20] = {0};
    for (int i = 0; i < n; i++) {
        float u = gim_rt_rand_uniform(5, 6, (uint64_t)i);
        CU_ASSERT_FATAL(u >= 0.0f && u < 1.0f);
        sum += u;
        sum2 += (double)u * u;
        cells[(int)(u * 20)]++;
    }
    double mean = sum / n, var = sum2 / n - mean * mean;
    CU_ASSERT(fabs(mean - 0.5) < 0.005);         /* sd of the mean 0.0009 */
    CU_ASSERT(fabs(var - 1.0 / 12) < 0.002);
    CU_ASSERT(chi_square(cells, 20, n) < 50.0);  /* df 19, p=1e-4 at 45.2 */
}

static void test_shuffle(void) {
    enum { N = 50 };
    int64_t a[N], b[N];
    for (int i = 0; i < N; i++) a[i] = b[i] = i;
    gim_rt_shuffle_i64(a, N, 11, GIM_RT_STREAM_DATA);
    gim_rt_shuffle_i64(b, N, 11, GIM_RT_STREAM_DATA);
    CU_ASSERT(memcmp(a, b, sizeof a) == 0);
    int seen[N] = {0}, moved = 0;
    for (int i = 0; i < N; i++) {
        CU_ASSERT_FATAL(a[i] >= 0 && a[i] < N);
        seen[a[i]]++;
        moved += a[i] != i;
    }
    for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(seen[i], 1);
    CU_ASSERT(moved > N / 2);
    for (int i = 0; i < N; i++) b[i] = i;
    gim_rt_shuffle_i64(b, N, 11, GIM_RT_STREAM_DATA | 1);
    CU_ASSERT(memcmp(a, b, sizeof a) != 0);

    /* Where element 0 ends up over 20000 shuffles of 8: uniform over 8 places. */
    long where[8] = {0};
    for (uint64_t s = 0; s < 20000; s++) {
        int64_t c[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        gim_rt_shuffle_i64(c, 8, 99, s);
        for (int i = 0; i < 8; i++)
            if (c[i] == 0) where[i]++;
    }
    CU_ASSERT(chi_square(where, 8, 20000) < 35.0);   /* df 7, p=1e-4 at 29.9 */
    /* trivial sizes do nothing */
    int64_t one = 5;
    gim_rt_shuffle_i64(&one, 1, 1, 1);
    gim_rt_shuffle_i64(NULL, 0, 1, 1);
    CU_ASSERT_EQUAL(one, 5);
}

static void test_hash_name(void) {
    /* FNV-1a 64 reference values: "" -> offset basis, "a" -> af63dc4c8601ec8c */
    CU_ASSERT_EQUAL(gim_rt_hash_name(""), UINT64_C(0xcbf29ce484222325));
    CU_ASSERT_EQUAL(gim_rt_hash_name("a"), UINT64_C(0xaf63dc4c8601ec8c));
    CU_ASSERT_NOT_EQUAL(gim_rt_hash_name("m/conv2d.1/w"), gim_rt_hash_name("m/conv2d.1/b"));
}

int main(void) {
    static const gim_test tests[] = {
        {"philox known answers", test_philox_known_answers},
        {"deterministic", test_deterministic},
        {"streams, seeds, counters differ", test_streams_differ},
        {"rand_below uniform (chi-square)", test_below_uniform},
        {"u64 bits balanced", test_bits_balanced},
        {"uniform float", test_uniform_float},
        {"shuffle", test_shuffle},
        {"hash name", test_hash_name},
        {NULL, NULL},
    };
    return gim_run_suite("rt_rng", tests);
}
