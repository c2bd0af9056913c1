/* libFuzzer target for the two readers of untrusted files: the checkpoint
 * (safetensors) reader and the IDX data reader. Any bytes in, an error
 * message or a valid result out: no crash, no sanitizer report, no leak, no
 * allocation sized by a lying header (ASan's malloc_limit_mb in
 * scripts/ci-fuzz.sh turns one into a failure).
 *
 * The first byte picks the reader (even: safetensors, odd: IDX); the rest is
 * the file. The readers take paths, so the bytes go to a file in /dev/shm
 * (or $TMPDIR). A result is checked against what the reader promises: the
 * tensors tile the data and fit in the file; IDX dims multiply to the data
 * size. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gim_checkpoint.h"
#include "gim_data.h"
#include "gim_util.h"

static const char *fuzz_path(void) {
    static char path[256];
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(path, sizeof path, "%s/gim-fuzz-readers.%d", dir, (int)getpid());
    }
    return path;
}

static void fuzz_write(const uint8_t *data, size_t size) {
    FILE *f = fopen(fuzz_path(), "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f)) abort();
}

static void fuzz_safetensors(size_t file_size) {
    char err[512];
    gim_ckpt *c = gim_safetensors_read(fuzz_path(), err, sizeof err);
    if (!c) {
        if (!err[0]) abort();  /* an error must say what is wrong */
        return;
    }
    int64_t total = 0;
    for (int i = 0; i < c->n_tensors; i++) {
        const gim_ckpt_tensor *t = &c->tensors[i];
        if (t->rank < 0 || t->rank > GIM_RT_MAX_RANK || t->numel < 0) abort();
        int64_t bytes = t->numel * gim_dtype_size(t->dtype);
        if (bytes > (int64_t)file_size) abort();
        if (bytes && !t->data) abort();
        /* touch every byte: ASan checks the buffer really is that long */
        volatile uint8_t sink = 0;
        for (int64_t b = 0; b < bytes; b++) sink ^= ((const uint8_t *)t->data)[b];
        (void)sink;
        total += bytes;
        if (gim_ckpt_find(c, t->name) == NULL) abort();
    }
    if (total > (int64_t)file_size) abort();
    for (int i = 0; i < c->n_meta; i++)
        if (!c->meta[i].key || !c->meta[i].value) abort();
    gim_ckpt_free(c);
}

static void fuzz_idx(int ndims) {
    char err[512];
    gim_idx idx;
    memset(&idx, 0, sizeof idx);
    if (gim_idx_read(fuzz_path(), ndims, &idx, err, sizeof err) != 0) {
        if (!err[0]) abort();
        return;
    }
    int64_t n = 1;
    if (idx.ndims != ndims) abort();
    for (int i = 0; i < idx.ndims; i++) {
        if (idx.dims[i] < 0) abort();
        n *= idx.dims[i];
    }
    if (n != idx.n_bytes) abort();
    volatile uint8_t sink = 0;
    for (int64_t b = 0; b < idx.n_bytes; b++) sink ^= idx.data[b];
    (void)sink;
    gim_free(idx.data);
}

/* Also compiled into tests/test_regress.c (with GIM_FUZZ_NO_MAIN), which
 * replays tests/regress/readers/ through it. */
void gim_fuzz_readers(const uint8_t *data, size_t size) {
    if (size < 1) return;
    fuzz_write(data + 1, size - 1);
    if (data[0] % 2 == 0) fuzz_safetensors(size - 1);
    else fuzz_idx(data[0] % 4 == 1 ? 3 : 1);
    unlink(fuzz_path());
}

#ifndef GIM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gim_fuzz_readers(data, size);
    return 0;
}
#endif
