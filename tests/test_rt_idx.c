/* IDX reading and data sets: small files written here (plain and gzip), every
 * kind of broken file, the batch iterator, and the installed Fashion-MNIST
 * when present. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "gim_data.h"
#include "gim_train.h"
#include "gim_util.h"
#include "testutil.h"

enum { R = 4, C = 3, NTRAIN = 10, NTEST = 5 };

/* A buffer of bytes being built. */
typedef struct bytes { uint8_t *p; size_t n; } bytes;

static void put32(bytes *b, uint32_t v) {
    b->p = gim_xrealloc(b->p, b->n + 4);
    b->p[b->n++] = (uint8_t)(v >> 24);
    b->p[b->n++] = (uint8_t)(v >> 16);
    b->p[b->n++] = (uint8_t)(v >> 8);
    b->p[b->n++] = (uint8_t)v;
}
static void put8(bytes *b, uint8_t v) {
    b->p = gim_xrealloc(b->p, b->n + 1);
    b->p[b->n++] = v;
}

/* Image i has pixel k = (i * 7 + k * 3) & 255 (so pixel 0 is 7i: the image
 * identifies itself); its label is i % 10. */
static uint8_t pixel(int64_t i, int64_t k) { return (uint8_t)((i * 7 + k * 3) & 255); }

static bytes images_file(int n, int rows, int cols) {
    bytes b = {0};
    put32(&b, 0x803);
    put32(&b, (uint32_t)n);
    put32(&b, (uint32_t)rows);
    put32(&b, (uint32_t)cols);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < rows * cols; k++) put8(&b, pixel(i, k));
    return b;
}
static bytes labels_file(int n) {
    bytes b = {0};
    put32(&b, 0x801);
    put32(&b, (uint32_t)n);
    for (int i = 0; i < n; i++) put8(&b, (uint8_t)(i % 10));
    return b;
}

static char *mkdir_tmp(const char *name) {
    char *d = gim_xmalloc(strlen(gim_tmpdir()) + strlen(name) + 2);
    sprintf(d, "%s/%s", gim_tmpdir(), name);
    mkdir(d, 0755);
    return d;
}

static void write_file(const char *dir, const char *name, const uint8_t *p, size_t n, int gz) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s%s", dir, name, gz ? ".gz" : "");
    unlink(path);   /* a fresh file: truncating one in place makes ext4 flush it on close */
    if (gz) {
        gzFile f = gzopen(path, "wb");
        CU_ASSERT_FATAL(f != NULL);
        if (n) CU_ASSERT_FATAL(gzwrite(f, p, (unsigned)n) == (int)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        CU_ASSERT_FATAL(f != NULL);
        if (n) fwrite(p, 1, n, f);
        fclose(f);
    }
}

/* A complete small data set in `name`; gz_mask bit i compresses file i. */
static char *good_dir(const char *name, int gz_mask) {
    char *d = mkdir_tmp(name);
    bytes a = images_file(NTRAIN, R, C), b = labels_file(NTRAIN);
    bytes c = images_file(NTEST, R, C), e = labels_file(NTEST);
    write_file(d, "train-images-idx3-ubyte", a.p, a.n, gz_mask & 1);
    write_file(d, "train-labels-idx1-ubyte", b.p, b.n, gz_mask & 2);
    write_file(d, "t10k-images-idx3-ubyte", c.p, c.n, gz_mask & 4);
    write_file(d, "t10k-labels-idx1-ubyte", e.p, e.n, gz_mask & 8);
    gim_free(a.p); gim_free(b.p); gim_free(c.p); gim_free(e.p);
    return d;
}

static void check_good(const gim_dataset *ds) {
    CU_ASSERT_EQUAL(ds->train.n, NTRAIN);
    CU_ASSERT_EQUAL(ds->test.n, NTEST);
    CU_ASSERT_EQUAL(ds->train.rows, R);
    CU_ASSERT_EQUAL(ds->train.cols, C);
    CU_ASSERT_EQUAL(ds->n_classes, 10);
    float img[NTRAIN * R * C];
    gim_dataset_images(ds, &ds->train, 0, NTRAIN, img);
    int bad = 0;
    for (int i = 0; i < NTRAIN; i++) {
        bad += ds->train.labels[i] != i % 10;
        for (int k = 0; k < R * C; k++) {
            float want = ((float)pixel(i, k) / 255.0f - 0.2860f) / 0.3530f;
            bad += fabsf(img[i * R * C + k] - want) > 1e-6f;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(ds->test.labels[4], 4);
}

static void test_load_plain_and_gzip(void) {
    static const int masks[] = {0, 15, 5, 10};
    for (int t = 0; t < 4; t++) {
        char name[32], err[512] = "";
        snprintf(name, sizeof name, "good%d", t);
        char *d = good_dir(name, masks[t]);
        gim_dataset ds;
        int rc = gim_dataset_load(d, &ds, err, sizeof err);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc) fprintf(stderr, "\n%s\n", err);
        else check_good(&ds);
        gim_dataset_free(&ds);
        gim_free(d);
    }
}

/* Loads dir and expects failure with a message containing every needle. */
static void expect_error(const char *dir, const char *n1, const char *n2) {
    gim_dataset ds;
    char err[512] = "";
    int rc = gim_dataset_load(dir, &ds, err, sizeof err);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT(strstr(err, n1) != NULL);
    if (n2) CU_ASSERT(strstr(err, n2) != NULL);
    if (rc != -1 || !strstr(err, n1) || (n2 && !strstr(err, n2)))
        fprintf(stderr, "\n  dir %s: got '%s', wanted '%s' '%s'\n", dir, err, n1, n2 ? n2 : "");
    gim_dataset_free(&ds);
}

/* The training images cut at every byte of the header and at a sample of
 * data positions, plain and gzip: always an error naming the file. */
static void test_truncated_everywhere(void) {
    bytes a = images_file(NTRAIN, R, C), lab = labels_file(NTRAIN);
    for (int gz = 0; gz < 2; gz++) {
        char *d = good_dir(gz ? "trunc_gz" : "trunc", gz ? 15 : 0);
        for (size_t cut = 0; cut < a.n; cut += cut < 20 ? 1 : 7) {
            write_file(d, "train-images-idx3-ubyte", a.p, cut, gz);
            expect_error(d, "train-images-idx3-ubyte", "truncated");
        }
        for (size_t cut = 0; cut < lab.n; cut++) {
            write_file(d, "train-images-idx3-ubyte", a.p, a.n, gz);
            write_file(d, "train-labels-idx1-ubyte", lab.p, cut, gz);
            expect_error(d, "train-labels-idx1-ubyte", "truncated");
        }
        gim_free(d);
    }
    gim_free(a.p);
    gim_free(lab.p);
}

/* A gzip file whose compressed bytes are cut short is an error too. */
static void test_truncated_gzip_stream(void) {
    char *d = good_dir("gzcut", 15);
    char path[1024];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", d);
    size_t n;
    char *whole = gim_read_file(path, &n);
    CU_ASSERT_FATAL(whole != NULL);
    for (size_t cut = 0; cut + 1 < n; cut += 3) {
        unlink(path);
        FILE *f = fopen(path, "wb");
        fwrite(whole, 1, cut, f);
        fclose(f);
        expect_error(d, "train-images-idx3-ubyte.gz", NULL);
    }
    gim_free(whole);
    gim_free(d);
}

static void test_bad_magic_and_sizes(void) {
    char *d = good_dir("badhdr", 0);
    bytes a = images_file(NTRAIN, R, C);
    static const uint32_t magics[] = {0x801, 0x802, 0x903, 0x0d03, 0x1000803, 0x08030000};
    for (size_t t = 0; t < sizeof magics / sizeof magics[0]; t++) {
        bytes b = {0};
        put32(&b, magics[t]);
        b.p = gim_xrealloc(b.p, a.n);
        memcpy(b.p + 4, a.p + 4, a.n - 4);
        write_file(d, "train-images-idx3-ubyte", b.p, a.n, 0);
        expect_error(d, "train-images-idx3-ubyte", "bad magic");
        gim_free(b.p);
    }
    /* trailing bytes */
    bytes b = images_file(NTRAIN, R, C);
    put8(&b, 1);
    write_file(d, "train-images-idx3-ubyte", b.p, b.n, 0);
    expect_error(d, "train-images-idx3-ubyte", "size mismatch");
    gim_free(b.p);
    /* a header claiming 2^32-1 x 2^32-1 x 2^32-1 over a few bytes: refused by size, no huge allocation */
    b = (bytes){0};
    put32(&b, 0x803); put32(&b, 0xffffffffu); put32(&b, 0xffffffffu); put32(&b, 0xffffffffu);
    put32(&b, 0);
    write_file(d, "train-images-idx3-ubyte", b.p, b.n, 0);
    expect_error(d, "train-images-idx3-ubyte", "truncated");
    gim_free(b.p);
    /* a zero dimension */
    b = (bytes){0};
    put32(&b, 0x803); put32(&b, 0); put32(&b, R); put32(&b, C);
    write_file(d, "train-images-idx3-ubyte", b.p, b.n, 0);
    expect_error(d, "train-images-idx3-ubyte", "is 0");
    gim_free(b.p);
    /* image count and label count disagree */
    write_file(d, "train-images-idx3-ubyte", a.p, a.n, 0);
    bytes l = labels_file(NTRAIN - 1);
    write_file(d, "train-labels-idx1-ubyte", l.p, l.n, 0);
    expect_error(d, "train-labels-idx1-ubyte", "9 labels");
    gim_free(l.p);
    /* a label out of range */
    l = labels_file(NTRAIN);
    l.p[8 + 6] = 10;
    write_file(d, "train-labels-idx1-ubyte", l.p, l.n, 0);
    expect_error(d, "train-labels-idx1-ubyte", "label 10 of example 6");
    gim_free(l.p);
    /* test images of another size than the training images */
    l = labels_file(NTRAIN);
    write_file(d, "train-labels-idx1-ubyte", l.p, l.n, 0);
    bytes t = images_file(NTEST, R, C + 1);
    write_file(d, "t10k-images-idx3-ubyte", t.p, t.n, 0);
    expect_error(d, "test images are 4 x 4", "training images are 4 x 3");
    gim_free(t.p);
    gim_free(l.p);
    gim_free(a.p);
    gim_free(d);
}

static void test_missing(void) {
    char *d = good_dir("missing", 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte", d);
    unlink(path);
    expect_error(d, "t10k-labels-idx1-ubyte", "cannot open");
    expect_error("/nonexistent/gim-data", "/nonexistent/gim-data", "not a directory");
    gim_free(d);
}

/* A shuffled epoch is a permutation; batches carry matching labels; the
 * order is a function of (seed, epoch); seek reproduces a position. */
static void test_iterator(void) {
    char err[512];
    char *d = good_dir("iter", 0);
    gim_dataset ds;
    CU_ASSERT_FATAL(gim_dataset_load(d, &ds, err, sizeof err) == 0);
    gim_batch_iter it, it2;
    CU_ASSERT_FATAL(gim_batch_iter_init(&it, &ds, &ds.train, 3, 42, true, true, err, sizeof err) == 0);
    CU_ASSERT_EQUAL(gim_batch_iter_batches(&it), 3);
    float x[3 * R * C];
    int32_t y[3];
    int seen[NTRAIN] = {0}, batches = 0;
    int64_t got, first_epoch[9];
    while ((got = gim_batch_iter_next(&it, x, y)) > 0) {
        CU_ASSERT_EQUAL(got, 3);
        for (int i = 0; i < 3; i++) {
            /* pixel 0 of image e is 7e: recover e, check the label travelled with it */
            int e = (int)lroundf((x[i * R * C] * 0.3530f + 0.2860f) * 255.0f) / 7;
            CU_ASSERT_FATAL(e >= 0 && e < NTRAIN);
            CU_ASSERT_EQUAL(y[i], e % 10);
            seen[e]++;
            first_epoch[batches * 3 + i] = e;
        }
        batches++;
    }
    CU_ASSERT_EQUAL(batches, 3);   /* 10 / 3, the partial batch dropped */
    int distinct = 0;
    for (int i = 0; i < NTRAIN; i++) { CU_ASSERT(seen[i] <= 1); distinct += seen[i]; }
    CU_ASSERT_EQUAL(distinct, 9);
    CU_ASSERT_EQUAL(gim_batch_iter_next(&it, x, y), 0);

    /* the same seed and epoch, another iterator: the same order; seek to batch 2 */
    CU_ASSERT_FATAL(gim_batch_iter_init(&it2, &ds, &ds.train, 3, 42, true, true, err, sizeof err) == 0);
    gim_batch_iter_seek(&it2, 0, 2);
    CU_ASSERT_EQUAL(gim_batch_iter_next(&it2, x, y), 3);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(it2.order[6 + i], first_epoch[6 + i]);
    /* another epoch: another order */
    gim_batch_iter_seek(&it, 1, 0);
    CU_ASSERT_EQUAL(it.epoch, 1);
    int same = 1;
    for (int i = 0; i < 9; i++) same &= it.order[i] == first_epoch[i];
    CU_ASSERT_FALSE(same);
    gim_batch_iter_free(&it);
    gim_batch_iter_free(&it2);

    /* no shuffle, keep the last partial batch: file order, zero-filled tail */
    CU_ASSERT_FATAL(gim_batch_iter_init(&it, &ds, &ds.test, 4, 1, false, false, err, sizeof err) == 0);
    float x4[4 * R * C];
    int32_t y4[4];
    CU_ASSERT_EQUAL(gim_batch_iter_batches(&it), 2);
    CU_ASSERT_EQUAL(gim_batch_iter_next(&it, x4, y4), 4);
    CU_ASSERT_EQUAL(y4[3], 3);
    for (int i = 0; i < 4 * R * C; i++) x4[i] = 99;
    CU_ASSERT_EQUAL(gim_batch_iter_next(&it, x4, y4), 1);
    CU_ASSERT_EQUAL(y4[0], 4);
    CU_ASSERT(fabsf(x4[0] - ((28.0f / 255.0f - 0.2860f) / 0.3530f)) < 1e-6f);
    CU_ASSERT_EQUAL(x4[R * C], 0.0f);
    CU_ASSERT_EQUAL(x4[4 * R * C - 1], 0.0f);
    CU_ASSERT_EQUAL(y4[3], 0);
    CU_ASSERT_EQUAL(gim_batch_iter_next(&it, x4, y4), 0);
    gim_batch_iter_free(&it);
    CU_ASSERT_EQUAL(gim_batch_iter_init(&it, &ds, &ds.test, 0, 1, false, false, err, sizeof err), -1);

    /* the whole split as gim_examples */
    gim_examples ex;
    float *store;
    CU_ASSERT_FATAL(gim_dataset_examples(&ds, &ds.train, &ex, &store, err, sizeof err) == 0);
    CU_ASSERT_EQUAL(ex.n, NTRAIN);
    CU_ASSERT_EQUAL(ex.x_numel, R * C);
    CU_ASSERT_EQUAL(ex.x_shape[1], R);
    CU_ASSERT_EQUAL(ex.labels[7], 7);
    CU_ASSERT(fabsf(ex.x[7 * R * C] - ((49.0f / 255.0f - 0.2860f) / 0.3530f)) < 1e-6f);
    gim_free(store);
    gim_dataset_free(&ds);
    gim_free(d);
}

/* Random byte mutations of the images file's header: loading never crashes
 * and, when it succeeds, the data matches the header exactly. */
static void test_mutations(void) {
    char *d = good_dir("fuzz", 0);
    bytes a = images_file(NTRAIN, R, C);
    uint8_t *buf = gim_xmalloc(a.n);
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", d);
    unsigned s = 777;
    int accepted = 0, consistent = 0;
    for (int iter = 0; iter < 1500; iter++) {
        memcpy(buf, a.p, a.n);
        size_t len = a.n;
        for (int j = 0; j < 1 + iter % 2; j++) {
            s = s * 1103515245u + 12345u;
            size_t pos = (s >> 8) % 16;
            s = s * 1103515245u + 12345u;
            buf[pos] = (s >> 16) % 3 ? (uint8_t)(s >> 20) : (uint8_t)((s >> 20) % 16);
        }
        s = s * 1103515245u + 12345u;
        if ((s >> 16) % 4 == 0) len -= (s >> 20) % len;
        unlink(path);
        FILE *f = fopen(path, "wb");
        fwrite(buf, 1, len, f);
        fclose(f);
        gim_idx idx;
        if (gim_idx_read(path, 3, &idx, err, sizeof err) != 0) continue;
        accepted++;
        consistent += idx.dims[0] * idx.dims[1] * idx.dims[2] == idx.n_bytes &&
                      idx.n_bytes == (int64_t)len - 16;
        gim_free(idx.data);
    }
    CU_ASSERT_EQUAL(consistent, accepted);
    CU_ASSERT(accepted < 1500);
    gim_free(buf);
    gim_free(a.p);
    gim_free(d);
}

/* The installed Fashion-MNIST: 60000/10000 examples of 28 x 28; normalised
 * with the default statistics, the training pixels have mean ~0 and std ~1. */
static void test_fashion_mnist(void) {
    struct stat st;
    if (stat(GIM_DATA_DIR "/fashion-mnist", &st) != 0) {
        fprintf(stderr, " (skipped: no %s/fashion-mnist) ", GIM_DATA_DIR);
        return;
    }
    gim_dataset ds;
    char err[512];
    int rc = gim_dataset_load("fashion-mnist", &ds, err, sizeof err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(ds.train.n, 60000);
    CU_ASSERT_EQUAL(ds.test.n, 10000);
    CU_ASSERT_EQUAL(ds.train.rows, 28);
    CU_ASSERT_EQUAL(ds.train.cols, 28);
    double hist[256] = {0}, s = 0, s2 = 0;
    int64_t n = ds.train.n * 784;
    for (int64_t i = 0; i < n; i++) hist[ds.train.pixels[i]]++;
    for (int p = 0; p < 256; p++) {
        s += hist[p] * ds.lut[p];
        s2 += hist[p] * ds.lut[p] * ds.lut[p];
    }
    double mean = s / n, sd = sqrt(s2 / n - mean * mean);
    CU_ASSERT(fabs(mean) < 0.01);
    CU_ASSERT(fabs(sd - 1.0) < 0.01);
    long per_class[10] = {0};
    for (int64_t i = 0; i < ds.train.n; i++) per_class[ds.train.labels[i]]++;
    for (int c = 0; c < 10; c++) CU_ASSERT_EQUAL(per_class[c], 6000);
    gim_dataset_free(&ds);
}

int main(void) {
    static const gim_test tests[] = {
        {"load plain, gzip and mixed", test_load_plain_and_gzip},
        {"truncated at every header byte", test_truncated_everywhere},
        {"truncated gzip stream", test_truncated_gzip_stream},
        {"bad magic, sizes, counts, labels", test_bad_magic_and_sizes},
        {"missing files", test_missing},
        {"batch iterator", test_iterator},
        {"random header mutations", test_mutations},
        {"installed fashion-mnist", test_fashion_mnist},
        {NULL, NULL},
    };
    return gim_run_suite("rt_idx", tests);
}
