/* Shared by the hostile-input tests (tests/test_hostile*.c): gimc run as a
 * child under a timeout and a memory limit, its output captured; a tiny
 * model; small IDX data sets. */
#ifndef GIM_HARNESS_HOSTILE_H
#define GIM_HARNESS_HOSTILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define HX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HX_ASAN 1
#endif
#endif

#ifdef HX_ASAN
#define HX_LIMIT "ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}max_allocation_size_mb=1024\" "
#else
#define HX_LIMIT "ulimit -v 4194304; "
#endif

/* Seconds any one hostile run may take before it counts as a hang. */
#define HX_TIMEOUT 60

/* The captured stdout and stderr of the last hx_gimc run, and its time. */
extern char *hx_out, *hx_err;
extern double hx_secs;

/* Runs `gimc ARGS` (shell-quoted) under HX_LIMIT and a HX_TIMEOUT-second
 * timeout; returns its exit status, 124 on timeout, 128+N when killed by
 * signal N. */
int hx_gimc(const char *args);
/* Frees the captured output (at the end of a test program). */
void hx_release(void);

/* Asserts the last run exited with `want` and said `needle` on stderr
 * (NULL: anything starting with a located or plain error), and reports
 * what it did when not. */
#define HX_EXPECT(status, want, needle)                                                                          \
    do {                                                                                                         \
        int hx_st_ = (status);                                                                                   \
        bool hx_ok_ = hx_st_ == (want) && (needle ? strstr(hx_err, needle) != NULL : strstr(hx_err, "error") != NULL); \
        if (!hx_ok_)                                                                                             \
            fprintf(stderr, "\n  %s:%d: status %d (want %d), %.1f s, stderr: %.400s\n", __FILE__, __LINE__, hx_st_, \
                    (want), hx_secs, hx_err);                                                                    \
        CU_ASSERT(hx_ok_);                                                                                       \
    } while (0)

/* A model file from text under gim_tmpdir(); returns its path. */
const char *hx_model(const char *name, const char *text);
/* A tiny two-module model over 8x8 images, batch 8. */
extern const char hx_tiny[];

/* Big-endian u32 at p. */
void hx_be32(uint8_t *p, uint32_t v);
/* An IDX file's bytes (heap): images [n, 8, 8] (ndims 3) or labels [n]
 * (ndims 1); *len its length. */
uint8_t *hx_idx(int ndims, uint32_t n, size_t *len);
/* Writes a fresh file (asserting it worked). */
void hx_write(const char *path, const void *data, size_t len);
/* The four file names of a data set directory. */
extern const char *const hx_files[4];
/* A directory `name` under gim_tmpdir() with a valid data set of 8x8
 * images: 64 training, 32 test examples. */
const char *hx_dataset(const char *name);

#endif
