/* Counter-based random numbers.
 *
 * Generator: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random
 * numbers: as easy as 1, 2, 3", SC 2011). Why a counter-based generator: a
 * draw is a pure function of (seed, stream, counter), so the backward pass of
 * infonce re-draws its forward pass's negatives without storing them, any
 * thread can draw any element of any sequence with no shared state, and a run
 * is reproducible from its seed alone. Why Philox rather than an ad hoc
 * 64-bit mix: it passes TestU01's BigCrush with margin, has published
 * known-answer vectors (checked in tests/test_rt_rng.c), and ten rounds of
 * two 32x32->64 multiplies cost a few nanoseconds, far below the work each
 * draw feeds.
 *
 * Mapping: key = (seed lo, seed hi); counter block = (counter lo, counter hi,
 * stream lo, stream hi). One block gives 128 bits; we use the first 64. */
#include <stddef.h>

#include "gim_runtime.h"
#include "rt_internal.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u   /* golden ratio */
#define PHILOX_W1 0xBB67AE85u   /* sqrt(3) - 1 */

void gim_rt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

uint64_t gim_rt_rand_u64(uint64_t seed, uint64_t stream, uint64_t counter) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)counter, (uint32_t)(counter >> 32), (uint32_t)stream,
                             (uint32_t)(stream >> 32)};
    uint32_t out[4];
    gim_rt_philox4x32_10(ctr, key, out);
    return (uint64_t)out[1] << 32 | out[0];
}

/* Lemire's multiply-shift without the rejection step: floor(r * n / 2^64)
 * for a uniform 64-bit r. Each of the n results is hit by either
 * floor(2^64/n) or ceil(2^64/n) values of r, so the relative bias is at most
 * n / 2^64 (< 2^-32 for any n < 2^32): far below what any test or training
 * run can observe. Rejection would need a variable number of draws, breaking
 * the one-counter-one-draw rule the backward pass relies on. */
uint64_t gim_rt_rand_below64(uint64_t seed, uint64_t stream, uint64_t counter, uint64_t n) {
    unsigned __int128 p = (unsigned __int128)gim_rt_rand_u64(seed, stream, counter) * n;
    return (uint64_t)(p >> 64);
}

uint32_t gim_rt_rand_below(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t n) {
    return (uint32_t)gim_rt_rand_below64(seed, stream, counter, n);
}

float gim_rt_rand_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
    return (float)(gim_rt_rand_u64(seed, stream, counter) >> 40) * (1.0f / 16777216.0f);
}

void gim_rt_shuffle_i64(int64_t *a, int64_t n, uint64_t seed, uint64_t stream) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)gim_rt_rand_below64(seed, stream, (uint64_t)i, (uint64_t)i + 1);
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

uint64_t gim_rt_hash_name(const char *s) {
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}
