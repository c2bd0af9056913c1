/* Hostile files around training: checkpoints whose headers lie, data files
 * truncated everywhere, a disk that fills at a save. Each must end in an
 * error naming the file and exit status 1, never a crash, a hang or a huge
 * allocation (tests/harness_hostile.c runs gimc under a timeout and a
 * memory limit), and a failed save must keep the previous checkpoint. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zlib.h>

#include "gim_util.h"
#include "harness_hostile.h"
#include "testutil.h"

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
 * sizes and shapes: errors naming the file, status 1. The model is one
 * small module (each eval compiles it before reading the weights); its
 * parameters: conv2d.1/w [4,1,3,3], conv2d.1/b [4], infonce.1/w [2,4,4]. */
static void test_lying_checkpoints(void) {
    const char *data = hx_dataset("data_ckpt");
    const char *model = hx_model("one.gim", "model one {\n"
                                            "    input x: [batch, 1, 8, 8]\n"
                                            "    p = patches(x, size=4, stride=2)\n"
                                            "    h = relu(conv2d(p, 4, k=3, pad=1))\n"
                                            "    infonce(spatial_mean(h), steps=2, negatives=4)\n"
                                            "    output spatial_mean(h)\n"
                                            "}\n");
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
        {"checkpoint headers that lie (gimc eval --weights)", test_lying_checkpoints},
        {"data files truncated at every header byte", test_truncated_data},
        {"a full disk at a save keeps the last checkpoint", test_full_disk},
        {NULL, NULL},
    };
    int rc = gim_run_suite("hostile files", tests);
    hx_release();
    return rc;
}
