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
 * A SIZE may also be a rectangular product MxNxK[:OP], C [M, N] = op(A) op(B)
 * with K the inner dimension and OP two letters, n or t, for A and B (default
 * nn), as a model's own products are shaped: bench/cpc.sh times the InfoNCE
 * products of models/cpc_audio.gim this way. Such an entry prints "m", "n",
 * "k" and "op" instead of "n" alone.
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

/* One product: C [m, n] = op(A) op(B), inner dimension k; square when m = n = k
 * and both ops are n. */
typedef struct shape {
    int m, n, k, ta, tb;
} shape;

static int square(const shape *p)
{
    return p->m == p->n && p->n == p->k && !p->ta && !p->tb;
}

/* "N" or "MxNxK[:OP]"; 0 when the text is not one. */
static int parse_shape(const char *text, shape *p)
{
    char op[3] = "nn", tail;
    int m, n, k, got = sscanf(text, "%dx%dx%d%c", &m, &n, &k, &tail);
    if (got == 1) {
        if (text[strspn(text, "0123456789")] != '\0')
            return 0;
        n = k = m;
    } else if (got == 4) {
        if (tail != ':' || sscanf(strchr(text, ':') + 1, "%2[nt]%c", op, &tail) != 1 || strlen(op) != 2)
            return 0;
    } else if (got != 3) {
        return 0;
    }
    if (m < 1 || n < 1 || k < 1)
        return 0;
    p->m = m, p->n = n, p->k = k, p->ta = op[0] == 't', p->tb = op[1] == 't';
    return 1;
}

static void product(const shape *p, const float *a, const float *b, float *c)
{
    cblas_sgemm(CblasRowMajor, p->ta ? CblasTrans : CblasNoTrans, p->tb ? CblasTrans : CblasNoTrans,
                p->m, p->n, p->k, 1.0f, a, p->ta ? p->m : p->k, b, p->tb ? p->k : p->n, 0.0f, c, p->n);
}

/* Times `runs` runs of `reps` products each; writes seconds per product
 * (wall clock: best, median; CPU time of all threads: median). */
static int time_size(const shape *p, int runs, double *best_s, double *median_s, double *cpu_median_s)
{
    size_t na = (size_t)p->m * (size_t)p->k, nb = (size_t)p->k * (size_t)p->n, nc = (size_t)p->m * (size_t)p->n;
    float *a = malloc(na * sizeof *a);
    float *b = malloc(nb * sizeof *b);
    float *c = malloc(nc * sizeof *c);
    double *t = malloc((size_t)runs * sizeof *t);
    double *u = malloc((size_t)runs * sizeof *u);
    if (!a || !b || !c || !t || !u) {
        free(a), free(b), free(c), free(t), free(u);
        return -1;
    }
    fill(a, na, 1u), fill(b, nb, 2u), memset(c, 0, nc * sizeof *c);

    /* Warm up (thread pool start, page faults, caches), and size the
     * repetition count so that one timed run lasts at least ~20 ms. */
    double t0 = now_s();
    product(p, a, b, c);
    double one = now_s() - t0;
    int reps = 1;
    if (one < 0.02)
        reps = (int)(0.02 / (one > 1e-7 ? one : 1e-7)) + 1;

    for (int r = 0; r < runs; r++) {
        t0 = now_s();
        double u0 = cpu_s();
        for (int i = 0; i < reps; i++)
            product(p, a, b, c);
        u[r] = (cpu_s() - u0) / reps;
        t[r] = (now_s() - t0) / reps;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    qsort(u, (size_t)runs, sizeof *u, cmp_double);
    *best_s = t[0];
    *median_s = (runs % 2) ? t[runs / 2] : 0.5 * (t[runs / 2 - 1] + t[runs / 2]);
    *cpu_median_s = (runs % 2) ? u[runs / 2] : 0.5 * (u[runs / 2 - 1] + u[runs / 2]);

    /* Keep the result live so the products cannot be dropped. */
    volatile float sink = c[nc / 2];
    (void)sink;
    free(a), free(b), free(c), free(t), free(u);
    return 0;
}

int main(int argc, char **argv)
{
    int runs = 7, threads = 0;
    shape sizes[16];
    int nsizes = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s [--runs R] [--threads T] [SIZE...]   (default sizes 64 512 2048, "
                   "all cores)\n  SIZE: N (square) or MxNxK[:OP], OP two of n/t (op(A) op(B))\n", argv[0]);
            return 0;
        } else if (argv[i][0] != '-' && nsizes < 16 && parse_shape(argv[i], &sizes[nsizes])) {
            nsizes++;
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
        const int deflt[3] = {64, 512, 2048};
        for (nsizes = 0; nsizes < 3; nsizes++)
            sizes[nsizes] = (shape){deflt[nsizes], deflt[nsizes], deflt[nsizes], 0, 0};
    }

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads <= 0)
        threads = cores > 0 ? (int)cores : 1;
    openblas_set_num_threads(threads);

    double g2048_best = 0.0, g2048_median = 0.0, g2048_cpu = 0.0;
    printf("{\"threads\": %d, \"sgemm\": [", openblas_get_num_threads());
    for (int s = 0; s < nsizes; s++) {
        const shape *p = &sizes[s];
        double best, median, cpu;
        if (time_size(p, runs, &best, &median, &cpu) != 0) {
            fprintf(stderr, "%s: out of memory for %dx%dx%d\n", argv[0], p->m, p->n, p->k);
            return 1;
        }
        double flop = 2.0 * (double)p->m * (double)p->n * (double)p->k;
        if (square(p))
            printf("%s{\"n\": %d", s ? ", " : "", p->n);
        else
            printf("%s{\"m\": %d, \"n\": %d, \"k\": %d, \"op\": \"%c%c\"", s ? ", " : "", p->m, p->n, p->k,
                   p->ta ? 't' : 'n', p->tb ? 't' : 'n');
        printf(", \"runs\": %d, \"best_gflops\": %.1f, \"median_gflops\": %.1f, "
               "\"best_ms\": %.4f, \"median_ms\": %.4f, \"cpu_gflops_median\": %.1f}",
               runs, flop / best * 1e-9, flop / median * 1e-9,
               best * 1e3, median * 1e3, flop / cpu * 1e-9);
        if (square(p) && p->n == 2048)
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
