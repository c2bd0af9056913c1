/* Hostile inputs to gimc: every one must end in a clear error and exit
 * status 1 (2 for a bad command line, as docs/cli.md says), never in a
 * crash, a hang or a huge allocation.
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

/* The captured output of the last run. */
static char *hx_out, *hx_err;
static double hx_secs;

/* Runs `gimc ARGS` (shell-quoted) under the limits; returns its exit status,
 * 124 on timeout, 128+N when killed by signal N. */
static int hx_gimc(const char *args) {
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

/* A model file from text; returns its path. */
static const char *hx_model(const char *name, const char *text) { return gim_tmpfile(name, text, strlen(text)); }

/* A tiny two-module model over 8x8 images, batch 8. */
static const char hx_tiny[] = "model tiny {\n"
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

static void hx_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* An IDX file's bytes: images [n, 8, 8] (ndims 3) or labels [n] (ndims 1). */
static uint8_t *hx_idx(int ndims, uint32_t n, size_t *len) {
    size_t head = 4 + 4 * (size_t)ndims, body = ndims == 3 ? (size_t)n * 64 : n;
    uint8_t *b = gim_xmalloc(head + body);
    hx_be32(b, 0x800u + (uint32_t)ndims);
    hx_be32(b + 4, n);
    if (ndims == 3) hx_be32(b + 8, 8), hx_be32(b + 12, 8);
    for (size_t i = 0; i < body; i++) b[head + i] = ndims == 3 ? (uint8_t)(i * 37 % 251) : (uint8_t)(i % 10);
    *len = head + body;
    return b;
}

static void hx_write(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    if (len) CU_ASSERT_FATAL(fwrite(data, 1, len, f) == len);
    CU_ASSERT_FATAL(fclose(f) == 0);
}

static const char *const hx_files[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                        "t10k-labels-idx1-ubyte"};

/* A directory `name` with a valid data set: 64 training, 32 test examples. */
static const char *hx_dataset(const char *name) {
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

/* ---- batch ----------------------------------------------------------------------- */

/* In the train block a batch out of range is a located error (status 1); on
 * the command line it is a usage error (status 2, docs/cli.md). */
static void test_batch_bounds(void) {
    static const char *const batches[] = {"0", "1000000000", "-1", "99999999999999999999"};
    for (int i = 0; i < 4; i++) {
        char text[1024], args[1024];
        snprintf(text, sizeof text, "model m {\n    input x: [batch, 4]\n    output relu(x)\n}\ntrain {\n    batch %s\n}\n",
                 batches[i]);
        const char *path = hx_model("batch.gim", text);
        snprintf(args, sizeof args, "check '%s'", path);
        HX_EXPECT(hx_gimc(args), 1, "batch.gim:6:11: error:");
        snprintf(args, sizeof args, "check '%s' --batch %s", hx_model("ok.gim", hx_tiny), batches[i]);
        HX_EXPECT(hx_gimc(args), 2, "--batch expects an integer from 1 to");
        snprintf(args, sizeof args, "train '%s' --batch %s --steps 1", hx_model("ok.gim", hx_tiny), batches[i]);
        HX_EXPECT(hx_gimc(args), 2, "--batch expects an integer from 1 to");
    }
}

/* ---- shapes ----------------------------------------------------------------------- */

/* Shapes whose element counts, parameter counts or FLOPs overflow 64 bits
 * (or pass 2^40 elements): located errors at any batch, even the largest. */
static void test_overflowing_shapes(void) {
    static const char *const bodies[] = {
        "    input x: [batch, 4000000000, 4000000000, 4000000000]\n    output relu(x)\n",
        "    input x: [batch, 3037000500, 3037000500]\n    output relu(x)\n",
        "    input x: [batch, 4]\n    output linear(x, 9223372036854775807)\n",
        "    input x: [batch, 3000000000]\n    output linear(x, 3000000000)\n",
        "    input x: [batch, 4]\n    output reshape(x, [batch, 4294967296, 4294967296])\n",
        "    input x: [batch, 4]\n    output reshape(x, [-1, 4294967296, 4294967296, 4294967296])\n",
        "    input x: [batch, 3, 8, 8]\n    output conv2d(x, 2000000000, k=3, pad=2000000000)\n",
        "    input x: [batch, 3, 8, 8]\n    output conv2d(x, 4, k=4000000000, pad=2000000000)\n",
        /* the parameter, not the output, is what overflows: infonce's W [1, C, C] */
        "    input x: [batch, 4, 16]\n    h = linear(x, 4000000000)\n    infonce(h)\n    output h\n",
        "    input x: [batch, 4, 16]\n    h = gru(x, 2000000000)\n    infonce(h)\n    output h\n",
        "    input x: [batch, 4]\n    output x * 1e400\n",
        "    input x: [batch, 0]\n    output relu(x)\n",
    };
    static const char *const batches[] = {"1", "1048576"};
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++)
        for (int b = 0; b < 2; b++) {
            char text[1024], args[1024];
            snprintf(text, sizeof text, "model m {\n%s}\n", bodies[i]);
            snprintf(args, sizeof args, "check '%s' --batch %s", hx_model("shape.gim", text), batches[b]);
            HX_EXPECT(hx_gimc(args), 1, "shape.gim:");
            if (strstr(hx_err, "internal") || !strstr(hx_err, "shape.gim:"))
                fprintf(stderr, "\n  case %zu, batch %s:\n%s", i, batches[b], text);
            CU_ASSERT(strstr(hx_err, "internal") == NULL);
        }
}

/* ---- huge and malformed source ------------------------------------------------------ */

/* A file of `prefix`, `n` copies of `unit`, then `suffix`. */
static const char *hx_repeat(const char *name, const char *prefix, const char *unit, size_t n, const char *suffix) {
    size_t lp = strlen(prefix), lu = strlen(unit), ls = strlen(suffix), len = lp + lu * n + ls;
    char *t = gim_xmalloc(len + 1);
    memcpy(t, prefix, lp);
    for (size_t i = 0; i < n; i++) memcpy(t + lp + i * lu, unit, lu);
    memcpy(t + lp + lu * n, suffix, ls);
    const char *path = gim_tmpfile(name, t, len);
    gim_free(t);
    return path;
}

static void hx_check(const char *path, int want, const char *needle) {
    char args[1024];
    snprintf(args, sizeof args, "check '%s'", path);
    HX_EXPECT(hx_gimc(args), want, needle);
}

/* 10 MB lines: a name, a number, a string, a comment. Errors quote at most
 * a window of the line and a bounded message. */
static void test_long_lines(void) {
    size_t mb10 = 10u << 20;
    hx_check(hx_repeat("name.gim", "model m {\n    input x: [batch, 4]\n    output relu(", "a", mb10, ")\n}\n"), 1,
             "name.gim:3:17: error: unknown name 'aaaa");
    CU_ASSERT(strlen(hx_err) < 16384);
    hx_check(hx_repeat("num.gim", "model m {\n    input x: [batch, 4]\n    output x * ", "9", mb10, "\n}\n"), 1,
             "num.gim:3:16: error:");
    CU_ASSERT(strlen(hx_err) < 16384);
    hx_check(hx_repeat("str.gim", "import \"", "q", mb10, "\"\nmodel m {\n    input x: [batch, 4]\n    output x\n}\n"), 1,
             "str.gim:1:8: error:");
    CU_ASSERT(strlen(hx_err) < 16384);
    hx_check(hx_repeat("comment.gim", "# ", "c", mb10, "\nmodel m {\n    input x: [batch, 4]\n    output relu(x)\n}\n"),
             0, "");
}

/* Deep nesting: 10,000 parentheses, calls and lists, a 100,000-deep unary
 * minus, a 200,000-term sum, 100,000 unclosed parentheses. */
static void test_deep_nesting(void) {
    static const char head[] = "model m {\n    input x: [batch, 4]\n    output ";
    char *t = gim_xmalloc(10000 * (12 + 2) + 1024);
    static const char *const opens[] = {"(", "relu(", "reshape(x, ["};
    static const char *const closes[] = {")", ")", "])"};
    for (int k = 0; k < 3; k++) {
        size_t at = (size_t)sprintf(t, "%s", head);
        for (int i = 0; i < 10000; i++) at += (size_t)sprintf(t + at, "%s", opens[k]);
        at += (size_t)sprintf(t + at, "%s", k == 2 ? "" : "x");
        for (int i = 0; i < 10000; i++) at += (size_t)sprintf(t + at, "%s", closes[k]);
        at += (size_t)sprintf(t + at, "\n}\n");
        hx_check(gim_tmpfile("nest.gim", t, at), 1, "nest.gim:3:");
        CU_ASSERT(strstr(hx_err, "nested") != NULL);
    }
    gim_free(t);
    hx_check(hx_repeat("neg.gim", head, "-", 100000, "x\n}\n"), 1, "neg.gim:3:");
    hx_check(hx_repeat("sum.gim", head, "x + ", 200000, "x\n}\n"), 1, "sum.gim:3:");
    hx_check(hx_repeat("open.gim", head, "(", 100000, "\n"), 1, "open.gim:3:");
}

/* Many statements and defs: the op budget and the inlining depth are
 * errors, reached quickly. */
static void test_huge_files(void) {
    gim_sb sb = {0};
    gim_sb_puts(&sb, "model m {\n    input x: [batch, 4]\n    h0 = relu(x)\n");
    for (int i = 1; i < 120000; i++) gim_sb_printf(&sb, "    h%d = relu(h%d)\n", i, i - 1);
    gim_sb_puts(&sb, "    output h119999\n}\n");
    hx_check(gim_tmpfile("many.gim", sb.buf, sb.len), 1, "many.gim:");
    CU_ASSERT(hx_secs < 30);
    gim_sb_free(&sb);
    gim_sb sd = {0};
    gim_sb_puts(&sd, "def f0(x) {\n    return relu(x)\n}\n");
    for (int i = 1; i < 2000; i++) gim_sb_printf(&sd, "def f%d(x) {\n    return f%d(x)\n}\n", i, i - 1);
    gim_sb_puts(&sd, "model m {\n    input x: [batch, 4]\n    output f1999(x)\n}\n");
    hx_check(gim_tmpfile("defs.gim", sd.buf, sd.len), 1, "defs.gim:");
    CU_ASSERT(hx_secs < 30);
    gim_sb_free(&sd);
}

/* Not a model at all: random bytes (with NULs), a NUL alone, UTF-16, an
 * empty file, a directory, a missing file. */
static void test_binary_garbage(void) {
    uint8_t *g = gim_xmalloc(65536);
    uint32_t s = 7;
    for (int i = 0; i < 65536; i++) {
        s = s * 1664525u + 1013904223u;
        g[i] = (uint8_t)(s >> 24);
    }
    hx_check(gim_tmpfile("garbage.gim", (const char *)g, 65536), 1, "garbage.gim:1:");
    for (int i = 0; i < 65536; i++) g[i] = (uint8_t)(i % 3 ? 'a' : 0);
    hx_check(gim_tmpfile("nuls.gim", (const char *)g, 65536), 1, "nuls.gim:");
    gim_free(g);
    hx_check(gim_tmpfile("nul.gim", "model m {\0}\n", 12), 1, "nul.gim:1:");
    static const char utf16[] = "\xff\xfem\0o\0d\0e\0l\0 \0m\0 \0{\0}\0";
    hx_check(gim_tmpfile("utf16.gim", utf16, sizeof utf16 - 1), 1, "utf16.gim:1:");
    hx_check(gim_tmpfile("empty.gim", "", 0), 1, "empty.gim");
    hx_check(gim_tmpdir(), 1, "error");
    hx_check("/nonexistent/model.gim", 1, "/nonexistent/model.gim");
}

/* ---- checkpoints that lie --------------------------------------------------------- */

/* A safetensors file: 8-byte little-endian length `hlen` (not necessarily
 * the header's), the header text, then `dlen` bytes of data. */
static const char *hx_st(const char *name, uint64_t hlen, const char *hdr, size_t dlen) {
    size_t n = strlen(hdr);
    uint8_t *b = gim_xmalloc(8 + n + dlen + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, hdr, n);
    for (size_t i = 0; i < dlen; i++) b[8 + n + i] = 0;
    const char *path = gim_tmppath(name);
    hx_write(path, b, 8 + n + dlen);
    gim_free(b);
    return path;
}

/* `gimc eval --weights` with headers that lie about lengths, offsets,
 * sizes and shapes: located errors naming the file, status 1. The tiny
 * model's parameters: conv2d.1/w [4,1,3,3] b [4], infonce.1/w [2,4,4],
 * conv2d.2/w [4,4,3,3] b [4], infonce.2/w [2,4,4]. */
static void test_lying_checkpoints(void) {
    const char *data = hx_dataset("data_ckpt");
    const char *model = hx_model("tiny.gim", hx_tiny);
    /* one valid tensor, to lie about */
    static const char good[] = "{\"conv2d.1/b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    struct {
        const char *name;
        uint64_t hlen;      /* 0: the header's own length */
        const char *hdr;
        size_t dlen;
        const char *needle;
    } cases[] = {
        {"hlen_past_end.st", 1000000, good, 16, "hlen_past_end.st"},
        {"hlen_huge.st", UINT64_C(0xfffffffffffffff0), good, 16, "hlen_huge.st"},
        {"offsets_past_end.st", 0, "{\"conv2d.1/b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,1099511627776]}}",
         16, "offsets_past_end.st"},
        {"offsets_backwards.st", 0, "{\"conv2d.1/b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", 16,
         "offsets_backwards.st"},
        {"size_lie.st", 0, "{\"conv2d.1/b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", 12,
         "size_lie.st"},
        {"shape_huge.st", 0,
         "{\"conv2d.1/b\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,16]}}", 16,
         "shape_huge.st"},
        {"shape_negative.st", 0, "{\"conv2d.1/b\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", 16,
         "shape_negative.st"},
        {"truncated.st", 0, good, 7, "truncated.st"},
        {"empty.st", 0, "", 0, "empty.st"},
        {"wrong_shape.st", 0, "{\"conv2d.1/b\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16,
         "wrong_shape.st"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint64_t hlen = cases[i].hlen ? cases[i].hlen : strlen(cases[i].hdr);
        const char *path = cases[i].hdr[0] || cases[i].dlen ? hx_st(cases[i].name, hlen, cases[i].hdr, cases[i].dlen)
                                                            : gim_tmpfile(cases[i].name, "", 0);
        char args[2048];
        snprintf(args, sizeof args, "eval '%s' --data '%s' --weights '%s'", model, data, path);
        HX_EXPECT(hx_gimc(args), 1, cases[i].needle);
    }
}

/* ---- data files ------------------------------------------------------------------- */

/* Each of the four data files truncated at every byte of its header (and
 * inside its data, and with a header claiming 10^9 examples): `gimc train
 * --data DIR` names the file and exits 1, without reading past the file or
 * allocating what the header claims. */
static void test_truncated_data(void) {
    const char *model = hx_model("tiny.gim", hx_tiny);
    const char *dir = hx_dataset("data_trunc");
    for (int f = 0; f < 4; f++) {
        size_t len;
        uint8_t *b = hx_idx(f % 2 ? 1 : 3, f < 2 ? 64 : 32, &len);
        size_t head = f % 2 ? 8 : 16;
        char path[1024], args[2048];
        snprintf(path, sizeof path, "%s/%s", dir, hx_files[f]);
        /* every header length, then halfway through the data, then a lying count */
        for (size_t cut = 0; cut <= head + 1; cut++) {
            size_t at = cut <= head ? cut : head + (len - head) / 2;
            hx_write(path, b, at);
            snprintf(args, sizeof args, "train '%s' --data '%s' --steps 1 --out '%s/run'", model, dir, dir);
            HX_EXPECT(hx_gimc(args), 1, hx_files[f]);
        }
        uint8_t lie[16];
        memcpy(lie, b, head);
        hx_be32(lie + 4, 1000000000u);
        hx_write(path, lie, head);
        HX_EXPECT(hx_gimc(args), 1, hx_files[f]);
        /* gzip that stops halfway */
        gzFile gz;
        char gzpath[1100];
        snprintf(gzpath, sizeof gzpath, "%s.gz", path);
        gz = gzopen(gzpath, "wb");
        CU_ASSERT_FATAL(gz != NULL);
        gzwrite(gz, b, (unsigned)len);
        gzclose(gz);
        size_t glen;
        char *gbytes = gim_read_file(gzpath, &glen);
        CU_ASSERT_FATAL(gbytes != NULL);
        hx_write(gzpath, gbytes, glen / 2);
        HX_EXPECT(hx_gimc(args), 1, hx_files[f]);
        gim_free(gbytes);
        unlink(gzpath);
        hx_write(path, b, len);  /* whole again for the next file's cases */
        gim_free(b);
    }
}

/* ---- a full disk ------------------------------------------------------------------ */

/* A save that fails (the file-size limit makes every write past 16 KiB fail
 * with EFBIG, as a full disk fails with ENOSPC) is reported with the file
 * and the reason, exit 1, and the previous checkpoint is left as it was,
 * with no temporary files beside it. */
static void test_full_disk(void) {
    const char *data = hx_dataset("data_disk");
    const char *model = hx_model("wide.gim", "model wide {\n"
                                             "    input x: [batch, 1, 8, 8]\n"
                                             "    p = patches(x, size=4, stride=2)\n"
                                             "    h1 = relu(conv2d(p, 64, k=3, pad=1))\n"
                                             "    infonce(spatial_mean(h1), steps=2, negatives=4)\n"
                                             "    output spatial_mean(h1)\n"
                                             "}\n"
                                             "train {\n"
                                             "    batch 8\n"
                                             "}\n");
    char out[1024], args[4096], wpath[1100];
    snprintf(out, sizeof out, "%s/disk_run", gim_tmpdir());
    snprintf(wpath, sizeof wpath, "%s/weights.safetensors", out);
    snprintf(args, sizeof args, "train '%s' --data '%s' --steps 2 --out '%s'", model, data, out);
    HX_EXPECT(hx_gimc(args), 0, "");
    size_t len0, len1;
    char *before = gim_read_file(wpath, &len0);
    CU_ASSERT_FATAL(before != NULL && len0 > 16384);
    /* the same run again, now with every file limited to 16 KiB (32 blocks
     * of 512 bytes; SIGXFSZ ignored so the write fails instead) */
    char sh[8192];
    snprintf(sh, sizeof sh, "sh -c \"trap '' XFSZ; ulimit -f 32; exec '%s' train '%s' --data '%s' --steps 4 --save-every 2 --out '%s'\"",
             GIMC_PATH, model, data, out);
    /* gimc runs inside sh here (for the trap and the limit), so not through hx_gimc */
    char o[1100], e[1100];
    snprintf(o, sizeof o, "%s/disk.out", gim_tmpdir());
    snprintf(e, sizeof e, "%s/disk.err", gim_tmpdir());
    char cmd[12000];
    snprintf(cmd, sizeof cmd, "%s timeout -k 5 %d %s >'%s' 2>'%s' </dev/null", HX_LIMIT, HX_TIMEOUT, sh, o, e);
    int st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    size_t elen;
    char *err = gim_read_file(e, &elen);
    CU_ASSERT_FATAL(err != NULL);
    CU_ASSERT(strstr(err, "File too large") != NULL && strstr(err, out) != NULL);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 1)) fprintf(stderr, "\n  full disk: status %d, stderr: %.400s\n", st, err);
    gim_free(err);
    char *after = gim_read_file(wpath, &len1);
    CU_ASSERT_FATAL(after != NULL);
    CU_ASSERT(len1 == len0 && memcmp(before, after, len0) == 0);
    gim_free(before);
    gim_free(after);
    /* nothing half-written left beside it */
    char ls[2048];
    snprintf(ls, sizeof ls, "ls '%s' | grep -q tmp", out);
    CU_ASSERT(system(ls) != 0);
}

int main(void) {
    static const gim_test tests[] = {
        {"batch 0, 10^9, -1, 10^20", test_batch_bounds},
        {"shapes that overflow", test_overflowing_shapes},
        {"10 MB lines", test_long_lines},
        {"10,000-deep nesting", test_deep_nesting},
        {"huge files", test_huge_files},
        {"binary garbage, empty, directory, missing", test_binary_garbage},
        {"checkpoint headers that lie (gimc eval --weights)", test_lying_checkpoints},
        {"data files truncated at every header byte", test_truncated_data},
        {"a full disk at a save keeps the last checkpoint", test_full_disk},
        {NULL, NULL},
    };
    int rc = gim_run_suite("hostile", tests);
    gim_free(hx_out);
    gim_free(hx_err);
    return rc;
}
