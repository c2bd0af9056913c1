/* Shared by the hostile-input tests (tests/test_hostile*.c): running gimc
 * as a child under a timeout and a memory limit, and small IDX data sets.
 *
 * gimc runs as a child under `timeout` (a hang fails the test with status
 * 124) and a memory limit: `ulimit -v` 4 GiB in the plain build; under
 * AddressSanitizer (which reserves terabytes of address space, so ulimit
 * cannot be used) ASan's max_allocation_size_mb=1024 makes any single
 * allocation over 1 GiB a crash, and a crash is a failure here. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "gim_util.h"
#include "testutil.h"
#include "harness_hostile.h"

/* The captured output of the last run. */
char *hx_out, *hx_err;
double hx_secs;

/* Runs `gimc ARGS` (shell-quoted) under the limits; returns its exit status,
 * 124 on timeout, 128+N when killed by signal N. */
int hx_gimc(const char *args) {
    static int count;
    char o[512], e[512];
    snprintf(o, sizeof o, "%s/hx.%d.out", gim_tmpdir(), count);
    snprintf(e, sizeof e, "%s/hx.%d.err", gim_tmpdir(), count++);
    size_t n = strlen(GIMC_PATH) + strlen(args) + 2 * 512 + 256;
    char *cmd = gim_xmalloc(n);
    snprintf(cmd, n, "%s exec timeout -k 5 %d '%s' %s >'%s' 2>'%s' </dev/null", HX_LIMIT, HX_TIMEOUT, GIMC_PATH,
             args, o, e);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int st = system(cmd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    hx_secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    gim_free(cmd);
    gim_free(hx_out);
    gim_free(hx_err);
    size_t len;
    hx_out = gim_read_file(o, &len);
    hx_err = gim_read_file(e, &len);
    if (!hx_out) hx_out = gim_xstrdup("");
    if (!hx_err) hx_err = gim_xstrdup("");
    if (st == -1) return -1;
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return WEXITSTATUS(st);
}

/* A model file from text; returns its path. */
const char *hx_model(const char *name, const char *text) { return gim_tmpfile(name, text, strlen(text)); }

/* A tiny two-module model over 8x8 images, batch 8. */
const char hx_tiny[] = "model tiny {\n"
                              "    input x: [batch, 1, 8, 8]\n"
                              "    p = patches(x, size=4, stride=2)\n"
                              "    h1 = relu(conv2d(p, 4, k=3, pad=1))\n"
                              "    infonce(spatial_mean(h1), steps=2, negatives=4)\n"
                              "    h2 = relu(conv2d(gradient_block(h1), 4, k=3, pad=1))\n"
                              "    infonce(spatial_mean(h2), steps=2, negatives=4)\n"
                              "    output spatial_mean(h2)\n"
                              "}\n"
                              "train {\n"
                              "    batch 8\n"
                              "    seed 0\n"
                              "}\n";

/* ---- the data set: IDX files of 8x8 images ---------------------------------------- */

void hx_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* An IDX file's bytes: images [n, 8, 8] (ndims 3) or labels [n] (ndims 1). */
uint8_t *hx_idx(int ndims, uint32_t n, size_t *len) {
    size_t head = 4 + 4 * (size_t)ndims, body = ndims == 3 ? (size_t)n * 64 : n;
    uint8_t *b = gim_xmalloc(head + body);
    hx_be32(b, 0x800u + (uint32_t)ndims);
    hx_be32(b + 4, n);
    if (ndims == 3) hx_be32(b + 8, 8), hx_be32(b + 12, 8);
    for (size_t i = 0; i < body; i++) b[head + i] = ndims == 3 ? (uint8_t)(i * 37 % 251) : (uint8_t)(i % 10);
    *len = head + body;
    return b;
}

void hx_write(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    if (len) CU_ASSERT_FATAL(fwrite(data, 1, len, f) == len);
    CU_ASSERT_FATAL(fclose(f) == 0);
}

const char *const hx_files[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                        "t10k-labels-idx1-ubyte"};

/* A directory `name` with a valid data set: 64 training, 32 test examples. */
const char *hx_dataset(const char *name) {
    const char *dir = gim_tmppath(name);
    mkdir(dir, 0755);
    for (int f = 0; f < 4; f++) {
        size_t len;
        uint8_t *b = hx_idx(f % 2 ? 1 : 3, f < 2 ? 64 : 32, &len);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, hx_files[f]);
        hx_write(path, b, len);
        gim_free(b);
    }
    return dir;
}

void hx_release(void) {
    gim_free(hx_out);
    gim_free(hx_err);
    hx_out = hx_err = NULL;
}
