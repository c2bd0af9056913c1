/*
 * bench-sgemm: the hardware yardstick for gim's benchmarks.
 *
 * Times square single-precision matrix products C = A B through OpenBLAS's
 * cblas_sgemm on all cores, for a few sizes, and prints one JSON line:
 *
 *   {"threads": 2, "sgemm": [{"n": 64, "runs": R, "best_gflops": ..,
 *     "median_gflops": .., "best_ms": .., "median_ms": ..}, ...],
 *    "gflops_2048_best": .., "gflops_2048_median": ..}
 *
 * A product of two n x n matrices costs 2 n^3 floating-point operations.
 * Small sizes are repeated inside one timed run so that a run lasts long
 * enough to be measured (at least ~20 ms); the reported time is per product.
 *
 * Usage: bench-sgemm [--runs R] [--threads T] [SIZE...]   (default sizes 64 512 2048,
 *        all cores)
 * Build: cc -O2 bench/sgemm.c -lopenblas -o build/bench-sgemm
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* OpenBLAS extensions (declared in its cblas.h, repeated here in case the
 * cblas.h found first is the reference one). */
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the whole process (every thread). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Fills m with reproducible values in [-1, 1): a small LCG, no libc rand(). */
static void fill(float *m, size_t count, unsigned seed)
{
    unsigned s = seed;
    for (size_t i = 0; i < count; i++) {
        s = s * 1664525u + 1013904223u;
        m[i] = (float)((s >> 8) * (1.0 / 8388608.0)) - 1.0f;
    }
}

/* Times `runs` runs of `reps` products each; writes seconds per product
 * (wall clock: best, median; CPU time of all threads: median). */
static int time_size(int n, int runs, double *best_s, double *median_s, double *cpu_median_s)
{
    size_t count = (size_t)n * (size_t)n;
    float *a = malloc(count * sizeof *a);
    float *b = malloc(count * sizeof *b);
    float *c = malloc(count * sizeof *c);
    double *t = malloc((size_t)runs * sizeof *t);
    double *u = malloc((size_t)runs * sizeof *u);
    if (!a || !b || !c || !t || !u) {
        free(a), free(b), free(c), free(t), free(u);
        return -1;
    }
    fill(a, count, 1u), fill(b, count, 2u), memset(c, 0, count * sizeof *c);

    /* Warm up (thread pool start, page faults, caches), and size the
     * repetition count so that one timed run lasts at least ~20 ms. */
    double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n,
                1.0f, a, n, b, n, 0.0f, c, n);
    double one = now_s() - t0;
    int reps = 1;
    if (one < 0.02)
        reps = (int)(0.02 / (one > 1e-7 ? one : 1e-7)) + 1;

    for (int r = 0; r < runs; r++) {
        t0 = now_s();
        double u0 = cpu_s();
        for (int i = 0; i < reps; i++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n,
                        1.0f, a, n, b, n, 0.0f, c, n);
        u[r] = (cpu_s() - u0) / reps;
        t[r] = (now_s() - t0) / reps;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    qsort(u, (size_t)runs, sizeof *u, cmp_double);
    *best_s = t[0];
    *median_s = (runs % 2) ? t[runs / 2] : 0.5 * (t[runs / 2 - 1] + t[runs / 2]);
    *cpu_median_s = (runs % 2) ? u[runs / 2] : 0.5 * (u[runs / 2 - 1] + u[runs / 2]);

    /* Keep the result live so the products cannot be dropped. */
    volatile float sink = c[count / 2];
    (void)sink;
    free(a), free(b), free(c), free(t), free(u);
    return 0;
}

int main(int argc, char **argv)
{
    int runs = 7, threads = 0;
    int sizes[16], nsizes = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s [--runs R] [--threads T] [SIZE...]   (default sizes 64 512 2048, "
                   "all cores)\n", argv[0]);
            return 0;
        } else if (argv[i][0] != '-' && nsizes < 16 && atoi(argv[i]) > 0) {
            sizes[nsizes++] = atoi(argv[i]);
        } else {
            fprintf(stderr, "%s: bad argument '%s' (try --help)\n", argv[0], argv[i]);
            return 2;
        }
    }
    if (runs < 1) {
        fprintf(stderr, "%s: --runs must be at least 1\n", argv[0]);
        return 2;
    }
    if (nsizes == 0) {
        sizes[0] = 64, sizes[1] = 512, sizes[2] = 2048;
        nsizes = 3;
    }

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads <= 0)
        threads = cores > 0 ? (int)cores : 1;
    openblas_set_num_threads(threads);

    double g2048_best = 0.0, g2048_median = 0.0, g2048_cpu = 0.0;
    printf("{\"threads\": %d, \"sgemm\": [", openblas_get_num_threads());
    for (int s = 0; s < nsizes; s++) {
        int n = sizes[s];
        double best, median, cpu;
        if (time_size(n, runs, &best, &median, &cpu) != 0) {
            fprintf(stderr, "%s: out of memory for n = %d\n", argv[0], n);
            return 1;
        }
        double flop = 2.0 * (double)n * (double)n * (double)n;
        printf("%s{\"n\": %d, \"runs\": %d, \"best_gflops\": %.1f, \"median_gflops\": %.1f, "
               "\"best_ms\": %.4f, \"median_ms\": %.4f, \"cpu_gflops_median\": %.1f}",
               s ? ", " : "", n, runs, flop / best * 1e-9, flop / median * 1e-9,
               best * 1e3, median * 1e3, flop / cpu * 1e-9);
        if (n == 2048)
            g2048_best = flop / best * 1e-9, g2048_median = flop / median * 1e-9,
            g2048_cpu = flop / cpu * 1e-9;
    }
    printf("]");
    if (g2048_best > 0.0)
        printf(", \"gflops_2048_best\": %.1f, \"gflops_2048_median\": %.1f, "
               "\"cpu_gflops_2048_median\": %.1f", g2048_best, g2048_median, g2048_cpu);
    printf("}\n");
    return 0;
}
