/* An exported Fashion-MNIST encoder in a plain C program.
 *
 * `gimc export models/fashion_gim.gim --weights W --module 3 -o DIR` wrote
 * DIR/fashion_gim_m3.o and .h: one function computing module 3's features.
 * This program links that object with OpenBLAS and libm (and zlib, for the
 * gzipped data set), nothing of gim or LLVM. It reads the first --count test
 * images, computes their features, prints statistics of them and the
 * accuracy of a nearest-neighbour classifier (cosine similarity, each image
 * labelled by its nearest other image among them), and with --dump FILE
 * writes the features as raw float32, count x FASHION_GIM_M3_FEATURES.
 *
 * usage: fashion_features [--data DIR] [--count N] [--dump FILE]
 */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fashion_gim_m3.h"

/* Fashion-MNIST's pixel statistics, the normalisation gimc trains and
 * evaluates with: pixel p becomes (p / 255 - mean) / std, in float. */
#define PIXEL_MEAN 0.2860f
#define PIXEL_STD 0.3530f

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Reads dir/base.gz (or dir/base): an IDX file with the given magic; checks
 * the header and returns the first `want` items (all when want is 0) of
 * item_size bytes, or NULL after a message. */
static unsigned char *read_idx(const char *dir, const char *base, uint32_t magic, size_t item_size, long want,
                               long *count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gz", dir, base);
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(path, sizeof path, "%s/%s", dir, base);
        f = gzopen(path, "rb");
    }
    if (!f) {
        fprintf(stderr, "fashion_features: cannot open %s/%s(.gz): %s\n", dir, base, strerror(errno));
        return NULL;
    }
    int ndims = (int)(magic & 0xff);
    unsigned char head[16];
    size_t head_len = 4 + 4 * (size_t)ndims;
    if (gzread(f, head, (unsigned)head_len) != (int)head_len || be32(head) != magic) {
        fprintf(stderr, "fashion_features: %s: not an IDX file of the expected kind\n", path);
        gzclose(f);
        return NULL;
    }
    size_t size = 1;
    for (int i = 1; i < ndims; i++) size *= be32(head + 4 + 4 * i);
    long n = (long)be32(head + 4);
    if (size != item_size) {
        fprintf(stderr, "fashion_features: %s: items of %zu bytes, expected %zu\n", path, size, item_size);
        gzclose(f);
        return NULL;
    }
    if (want > 0 && want < n) n = want;
    unsigned char *data = malloc((size_t)n * item_size + 1);
    if (!data || gzread(f, data, (unsigned)((size_t)n * item_size)) != (int)((size_t)n * item_size)) {
        fprintf(stderr, "fashion_features: %s: %s\n", path, data ? "truncated" : "out of memory");
        free(data);
        gzclose(f);
        return NULL;
    }
    gzclose(f);
    *count = n;
    return data;
}

int main(int argc, char **argv) {
    const char *dir = "/usr/share/datasets/fashion-mnist", *dump = NULL;
    long count = 2000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--count") && i + 1 < argc) count = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
        else {
            fprintf(stderr, "usage: fashion_features [--data DIR] [--count N] [--dump FILE]\n");
            return 2;
        }
    }
    if (count < 2) {
        fprintf(stderr, "fashion_features: --count expects at least 2\n");
        return 2;
    }
    const size_t in = FASHION_GIM_M3_INPUT_SIZE, dim = FASHION_GIM_M3_FEATURES;
    long n = 0, nl = 0;
    unsigned char *pixels = read_idx(dir, "t10k-images-idx3-ubyte", 0x803, in, count, &n);
    unsigned char *labels = pixels ? read_idx(dir, "t10k-labels-idx1-ubyte", 0x801, 1, count, &nl) : NULL;
    if (!labels) return 1;
    if (nl != n) {
        fprintf(stderr, "fashion_features: %ld images but %ld labels\n", n, nl);
        return 1;
    }

    float lut[256];
    for (int p = 0; p < 256; p++) lut[p] = ((float)p / 255.0f - PIXEL_MEAN) / PIXEL_STD;
    float *x = malloc((size_t)n * in * sizeof *x), *feat = malloc((size_t)n * dim * sizeof *feat);
    if (!x || !feat) {
        fprintf(stderr, "fashion_features: out of memory\n");
        return 1;
    }
    for (size_t k = 0; k < (size_t)n * in; k++) x[k] = lut[pixels[k]];
    if (fashion_gim_m3_features(x, n, feat) != 0) {
        fprintf(stderr, "fashion_features: the encoder failed (out of memory)\n");
        return 1;
    }

    if (dump) {
        FILE *f = fopen(dump, "wb");
        if (!f || fwrite(feat, sizeof *feat, (size_t)n * dim, f) != (size_t)n * dim || fclose(f)) {
            fprintf(stderr, "fashion_features: cannot write %s: %s\n", dump, strerror(errno));
            return 1;
        }
    }

    /* statistics over all values, and how many features are ever non-zero */
    double sum = 0, sum2 = 0;
    size_t active = 0;
    for (size_t j = 0; j < dim; j++) {
        int on = 0;
        for (long e = 0; e < n; e++) {
            double v = feat[(size_t)e * dim + j];
            sum += v;
            sum2 += v * v;
            on |= v != 0;
        }
        active += (size_t)on;
    }
    double total = (double)n * (double)dim, mean = sum / total;
    printf("%ld test images, %zu features each (module 3 of fashion_gim)\n", n, dim);
    printf("feature mean %.6f, std %.6f; %zu of %zu features non-zero somewhere\n", mean,
           sqrt(sum2 / total - mean * mean), active, dim);

    /* nearest neighbour by cosine similarity: normalise, one Gram matrix */
    for (long e = 0; e < n; e++) {
        float *v = feat + (size_t)e * dim;
        double s = 0;
        for (size_t j = 0; j < dim; j++) s += (double)v[j] * v[j];
        float inv = s > 0 ? (float)(1 / sqrt(s)) : 0;
        for (size_t j = 0; j < dim; j++) v[j] *= inv;
    }
    float *gram = malloc((size_t)n * (size_t)n * sizeof *gram);
    if (!gram) {
        fprintf(stderr, "fashion_features: out of memory for the %ld x %ld similarities\n", n, n);
        return 1;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, (int)dim, 1.0f, feat, (int)dim, feat,
                (int)dim, 0.0f, gram, (int)n);
    long right = 0;
    for (long e = 0; e < n; e++) {
        long best = -1;
        for (long o = 0; o < n; o++)
            if (o != e && (best < 0 || gram[(size_t)e * n + o] > gram[(size_t)e * n + best])) best = o;
        right += labels[best] == labels[e];
    }
    printf("nearest-neighbour accuracy among them: %.2f%%\n", 100.0 * (double)right / (double)n);
    free(gram);
    free(x);
    free(feat);
    free(pixels);
    free(labels);
    return 0;
}
