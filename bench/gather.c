/*
 * bench-gather: how fast a core reads random rows of a float matrix, by the
 * matrix's size, as InfoNCE reads its candidates: one row of C floats per
 * (position, step, candidate), drawn anywhere in z.
 *
 * For matrices of 512 rows up to --max-rows rows of C floats (doubling), it
 * reads n random rows, each as a dot product with a fixed vector (so the
 * reads cannot be dropped), and prints one line per size: the matrix's MB,
 * GB/s read and ns per row. The rows are independent, so the core keeps as
 * many in flight as it can, as generated code does with its prefetches.
 * Where the rate falls is where the matrix leaves the caches.
 *
 * Usage: bench-gather [--cols C] [--max-rows N] [--reads n]  (defaults 512, 65536, 200000)
 * Build: cc -O3 -march=native -ffast-math bench/gather.c -o build-bench/bench-gather
 * (-ffast-math lets the dot product vectorise: the reads, not the adds, are timed)
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long arg_long(const char *s, const char *name)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1) {
        fprintf(stderr, "bench-gather: %s expects a positive integer; got '%s'\n", name, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    long cols = 512, max_rows = 65536, reads = 200000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cols") == 0 && i + 1 < argc) {
            cols = arg_long(argv[++i], "--cols");
        } else if (strcmp(argv[i], "--max-rows") == 0 && i + 1 < argc) {
            max_rows = arg_long(argv[++i], "--max-rows");
        } else if (strcmp(argv[i], "--reads") == 0 && i + 1 < argc) {
            reads = arg_long(argv[++i], "--reads");
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s [--cols C] [--max-rows N] [--reads n]\n", argv[0]);
            return 0;
        } else {
            fprintf(stderr, "%s: bad argument '%s' (try --help)\n", argv[0], argv[i]);
            return 2;
        }
    }
    float *z = malloc((size_t)max_rows * (size_t)cols * sizeof *z);
    float *v = malloc((size_t)cols * sizeof *v);
    if (!z || !v) {
        fprintf(stderr, "bench-gather: out of memory for %ld x %ld floats\n", max_rows, cols);
        return 1;
    }
    for (long i = 0; i < max_rows * cols; i++) z[i] = (float)(i % 1000) * 1e-3f;
    for (long c = 0; c < cols; c++) v[c] = (float)c;

    double sink = 0;
    for (long rows = 512; rows <= max_rows; rows *= 2) {
        unsigned s = 1u;
        double t0 = now_s();
        for (long it = 0; it < reads; it++) {
            s = s * 1664525u + 1013904223u;
            const float *row = z + (long)((s >> 8) % (unsigned long)rows) * cols;
            float d = 0;
            for (long c = 0; c < cols; c++) d += row[c] * v[c];
            sink += d;
        }
        double t = now_s() - t0;
        double bytes = (double)reads * (double)cols * sizeof(float);
        printf("%7ld rows (%7.1f MB): %6.1f GB/s, %6.0f ns per row\n", rows,
               (double)rows * (double)cols * sizeof(float) / 1e6, bytes / t / 1e9, t / (double)reads * 1e9);
    }
    volatile double keep = sink;
    (void)keep;
    free(z), free(v);
    return 0;
}
