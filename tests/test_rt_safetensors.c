/* safetensors: layout against the format's definition, round trips, every
 * kind of corrupt file, and atomic replacement. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gim_checkpoint.h"
#include "gim_util.h"
#include "testutil.h"

static char *tmp_path(const char *name) {
    char *p = gim_xmalloc(strlen(gim_tmpdir()) + strlen(name) + 2);
    sprintf(p, "%s/%s", gim_tmpdir(), name);
    return p;
}

/* A file of: 8-byte LE header length, the header text as given, data bytes. */
static const char *raw_file(const char *name, uint64_t hlen, const char *hdr, const void *data,
                            size_t dlen) {
    size_t n = strlen(hdr);
    char *buf = gim_xmalloc(8 + n + dlen + 1);
    for (int i = 0; i < 8; i++) buf[i] = (char)(hlen >> (8 * i));
    memcpy(buf + 8, hdr, n);
    if (dlen) memcpy(buf + 8 + n, data, dlen);
    const char *p = gim_tmpfile(name, buf, 8 + n + dlen);
    gim_free(buf);
    return p;
}
static const char *st_file(const char *name, const char *hdr, const void *data, size_t dlen) {
    return raw_file(name, strlen(hdr), hdr, data, dlen);
}

/* Reading must fail with a message containing `needle` (and the path). */
static void expect_bad(const char *path, const char *needle) {
    char err[512] = "";
    gim_ckpt *c = gim_safetensors_read(path, err, sizeof err);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT(strstr(err, needle) != NULL);
    CU_ASSERT(strstr(err, path) != NULL);
    if (c || !strstr(err, needle)) fprintf(stderr, "\n  wanted '%s', got '%s'\n", needle, err);
    gim_ckpt_free(c);
}

/* One tensor "a" F32 [2]: the exact bytes the format defines. */
static void test_layout(void) {
    char *path = tmp_path("layout.safetensors"), err[256];
    const float a[2] = {1.5f, -2.0f};
    gim_ckpt_tensor t = {.name = "a", .dtype = GIM_DT_F32, .rank = 1, .shape = {2}, .data = a};
    CU_ASSERT_FATAL(gim_safetensors_write(path, &t, 1, NULL, 0, err, sizeof err) == 0);
    size_t n;
    char *f = gim_read_file(path, &n);
    CU_ASSERT_FATAL(f != NULL);
    const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t jl = strlen(json), hl = (jl + 7) / 8 * 8;
    CU_ASSERT_EQUAL(n, 8 + hl + 8);
    uint64_t len = 0;
    for (int i = 7; i >= 0; i--) len = len << 8 | (unsigned char)f[i];
    CU_ASSERT_EQUAL(len, hl);
    CU_ASSERT(memcmp(f + 8, json, jl) == 0);
    for (size_t i = jl; i < hl; i++) CU_ASSERT_EQUAL(f[8 + i], ' ');
    /* 1.5f = 0x3fc00000, -2.0f = 0xc0000000, little-endian */
    static const unsigned char data[8] = {0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0};
    CU_ASSERT(memcmp(f + 8 + hl, data, 8) == 0);
    gim_free(f);

    /* 8-byte elements are laid out first, so they stay 8-byte aligned */
    const float b3[3] = {1, 2, 3};
    const int64_t c2[2] = {-5, 6};
    gim_ckpt_tensor two[2] = {{.name = "f", .dtype = GIM_DT_F32, .rank = 1, .shape = {3}, .data = b3},
                              {.name = "i", .dtype = GIM_DT_I64, .rank = 1, .shape = {2}, .data = c2}};
    CU_ASSERT_FATAL(gim_safetensors_write(path, two, 2, NULL, 0, err, sizeof err) == 0);
    f = gim_read_file(path, &n);
    CU_ASSERT_FATAL(f != NULL);
    len = 0;
    for (int i = 7; i >= 0; i--) len = len << 8 | (unsigned char)f[i];
    CU_ASSERT_EQUAL(len % 8, 0);
    CU_ASSERT_EQUAL(n, 8 + len + 16 + 12);
    CU_ASSERT(strstr(f + 8, "\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}") != NULL);
    CU_ASSERT(strstr(f + 8, "\"f\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[16,28]}") != NULL);
    CU_ASSERT(memcmp(f + 8 + len, c2, 16) == 0);
    CU_ASSERT(memcmp(f + 8 + len + 16, b3, 12) == 0);
    gim_free(f);
    gim_free(path);
}

static void test_round_trip(void) {
    char *path = tmp_path("rt.safetensors"), err[256];
    float w[12], s = 3.25f;
    for (int i = 0; i < 12; i++) w[i] = (float)i * 0.1f - 0.5f;
    w[3] = -0.0f;
    w[4] = 1e-38f;
    int64_t steps[2] = {1234567890123LL, -1};
    int32_t cnt[3] = {7, -8, 9};
    gim_ckpt_tensor t[] = {
        {.name = "conv_pair.1/conv2d.1/w", .dtype = GIM_DT_F32, .rank = 4, .shape = {3, 1, 2, 2}, .data = w},
        {.name = "scalar", .dtype = GIM_DT_F32, .rank = 0, .data = &s},
        {.name = "empty", .dtype = GIM_DT_F32, .rank = 2, .shape = {0, 5}, .data = NULL},
        {.name = "step \"q\"\\\n", .dtype = GIM_DT_I64, .rank = 1, .shape = {2}, .data = steps},
        {.name = "counts", .dtype = GIM_DT_I32, .rank = 1, .shape = {3}, .data = cnt},
    };
    gim_ckpt_meta meta[] = {{"format", "pt"}, {"model", "fashion \"gim\"\t\xc3\xa9"}};
    CU_ASSERT_FATAL(gim_safetensors_write(path, t, 5, meta, 2, err, sizeof err) == 0);
    gim_ckpt *c = gim_safetensors_read(path, err, sizeof err);
    if (!c) fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_EQUAL(c->n_tensors, 5);
    for (int i = 0; i < 5; i++) {
        const gim_ckpt_tensor *r = gim_ckpt_find(c, t[i].name);
        CU_ASSERT_FATAL(r != NULL);
        CU_ASSERT_EQUAL(r->dtype, t[i].dtype);
        CU_ASSERT_EQUAL(r->rank, t[i].rank);
        int64_t numel = 1;
        for (int d = 0; d < r->rank; d++) { CU_ASSERT_EQUAL(r->shape[d], t[i].shape[d]); numel *= t[i].shape[d]; }
        CU_ASSERT_EQUAL(r->numel, numel);
        CU_ASSERT_EQUAL((uintptr_t)r->data % 64, 0);
        if (numel) CU_ASSERT(memcmp(r->data, t[i].data, (size_t)(numel * gim_dtype_size(r->dtype))) == 0);
    }
    CU_ASSERT(signbit(((const float *)gim_ckpt_find(c, t[0].name)->data)[3]));
    CU_ASSERT_PTR_NULL(gim_ckpt_find(c, "nope"));
    CU_ASSERT_PTR_NULL(gim_ckpt_find(c, "__metadata__"));
    CU_ASSERT_STRING_EQUAL(gim_ckpt_meta_get(c, "model"), "fashion \"gim\"\t\xc3\xa9");
    CU_ASSERT_STRING_EQUAL(gim_ckpt_meta_get(c, "format"), "pt");
    CU_ASSERT_PTR_NULL(gim_ckpt_meta_get(c, "x"));
    gim_ckpt_free(c);
    gim_free(path);
}

/* A file written by hand the way another writer might: members out of offset
 * order, whitespace, escapes, no metadata, unpadded header. */
static void test_foreign_file(void) {
    float data[5] = {1, 2, 3, 4, 5};
    const char *p = st_file("foreign.safetensors",
        "{ \"b\" : {\"shape\": [3], \"dtype\": \"F32\", \"data_offsets\": [8, 20]},\n"
        "  \"\\u00e9\\ud83d\\ude00\\/\" : {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]} }",
        data, sizeof data);
    char err[256];
    gim_ckpt *c = gim_safetensors_read(p, err, sizeof err);
    if (!c) fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_FATAL(c != NULL);
    const gim_ckpt_tensor *b = gim_ckpt_find(c, "b");
    const gim_ckpt_tensor *e = gim_ckpt_find(c, "\xc3\xa9\xf0\x9f\x98\x80/");
    CU_ASSERT_FATAL(b && e);
    CU_ASSERT_EQUAL(((const float *)b->data)[0], 3.0f);
    CU_ASSERT_EQUAL(((const float *)b->data)[2], 5.0f);
    CU_ASSERT_EQUAL(((const float *)e->data)[1], 2.0f);
    gim_ckpt_free(c);
}

static void test_corrupt(void) {
    float d[32] = {0};
    const char *ok = "{\"x\":{\"dtype\":\"F32\",\"shape\":[3,3],\"data_offsets\":[0,36]}}";
    /* header length lies */
    expect_bad(raw_file("c1", strlen(ok) + 100, ok, d, 36), "header length");
    expect_bad(raw_file("c2", (uint64_t)-1, ok, d, 36), "header length");
    expect_bad(raw_file("c3", 0, ok, d, 36), "header length");
    expect_bad(raw_file("c4", strlen(ok) - 1, ok, d, 36), "bad JSON");
    /* offsets */
    expect_bad(st_file("c5", "{\"x\":{\"dtype\":\"F32\",\"shape\":[3,3],\"data_offsets\":[0,100]}}", d, 36),
               "tensor 'x': data_offsets [0, 100] outside the 36 bytes");
    expect_bad(st_file("c6", "{\"x\":{\"dtype\":\"F32\",\"shape\":[3,3],\"data_offsets\":[0,100]}}", d, 100 > 36 ? 36 : 0),
               "outside");
    {
        float big[30] = {0};
        expect_bad(st_file("c7", "{\"x\":{\"dtype\":\"F32\",\"shape\":[3,3],\"data_offsets\":[0,100]}}", big, 100),
                   "tensor 'x': data_offsets [0, 100] but shape [3, 3] needs 36 bytes");
    }
    expect_bad(st_file("c8", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,4]}}", d, 8), "data_offsets [8, 4]");
    expect_bad(st_file("c9", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-4,4]}}", d, 8), "outside");
    /* overlap, gap, trailing bytes */
    expect_bad(st_file("c10", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d, 12), "overlap");
    expect_bad(st_file("c11", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", d, 12), "belong to no tensor");
    expect_bad(st_file("c12", ok, d, 36 + 4), "belong to no tensor");
    /* dtype, shape, fields */
    expect_bad(st_file("c13", "{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", d, 4), "F16 is not supported");
    expect_bad(st_file("c14", "{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", d, 4), "non-negative");
    expect_bad(st_file("c15", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", d, 4), "rank 9");
    expect_bad(st_file("c16", "{\"x\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", d, 4), "too large");
    expect_bad(st_file("c17", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", d, 4), "unknown field");
    expect_bad(st_file("c18", "{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", d, 4), "missing \"shape\"");
    expect_bad(st_file("c19", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", d, 4), "[begin, end]");
    expect_bad(st_file("c20", "{\"x\":[1]}", d, 0), "expected an object");
    expect_bad(st_file("c21", "{\"__metadata__\":{\"a\":1}}", d, 0), "not a string");
    expect_bad(st_file("c22", "{\"x\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", d, 4), "dtype is not a string");
}

static void test_bad_json(void) {
    static const char *bad[] = {
        "[]", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{,}", "{\"a\":1.5}", "{\"a\":1e3}",
        "{\"a\":true}", "{\"a\":null}", "{\"a\":\"x}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"\\u0000\"}", "{\"a\":01}", "{\"a\":-}",
        "{\"a\":99999999999999999999}", "{\"a\":1,\"a\":2}", "{\"a\":1} x", "{\"a\":\"\x01\"}",
        "{\"a\":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}", "{'a':1}", "{\"a\" 1}", "{\"a\":[1 2]}", "  ",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "json%zu", i);
        const char *p = st_file(name, bad[i], NULL, 0);
        char err[512] = "";
        gim_ckpt *c = gim_safetensors_read(p, err, sizeof err);
        CU_ASSERT_PTR_NULL(c);
        CU_ASSERT(strstr(err, p) != NULL);
        if (c) fprintf(stderr, "\n  accepted bad JSON %s\n", bad[i]);
        gim_ckpt_free(c);
    }
    /* the empty object is a valid (empty) file */
    char err[256];
    gim_ckpt *c = gim_safetensors_read(st_file("json_ok", "{}", NULL, 0), err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL(c);
    if (c) CU_ASSERT_EQUAL(c->n_tensors, 0);
    gim_ckpt_free(c);
}

/* A valid file cut at every length is always refused, never crashes. */
static void test_truncated_everywhere(void) {
    char *path = tmp_path("whole.safetensors"), err[512];
    float w[6] = {1, 2, 3, 4, 5, 6};
    gim_ckpt_tensor t[] = {{.name = "w", .dtype = GIM_DT_F32, .rank = 2, .shape = {2, 2}, .data = w},
                           {.name = "b", .dtype = GIM_DT_F32, .rank = 1, .shape = {2}, .data = w + 4}};
    gim_ckpt_meta m = {"k", "v"};
    CU_ASSERT_FATAL(gim_safetensors_write(path, t, 2, &m, 1, err, sizeof err) == 0);
    size_t n;
    char *f = gim_read_file(path, &n);
    CU_ASSERT_FATAL(f != NULL);
    int refused = 0;
    for (size_t cut = 0; cut < n; cut++) {
        char cutname[64];
        snprintf(cutname, sizeof cutname, "cut%zu.safetensors", cut);
        const char *p = gim_tmpfile(cutname, f, cut);
        gim_ckpt *c = gim_safetensors_read(p, err, sizeof err);
        refused += c == NULL;
        gim_ckpt_free(c);
    }
    CU_ASSERT_EQUAL(refused, (int)n);
    gim_free(f);
    gim_free(path);
}

static int tmp_leftovers(void) {
    DIR *d = opendir(gim_tmpdir());
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, "atomic.safetensors.tmp.")) n++;
    closedir(d);
    return n;
}

/* A failed write at any point leaves the previous file whole, and no
 * temporary file behind. */
static void test_atomic(void) {
    char *path = tmp_path("atomic.safetensors"), err[512];
    float v1[4] = {1, 1, 1, 1}, v2[4] = {2, 2, 2, 2};
    gim_ckpt_tensor t = {.name = "p", .dtype = GIM_DT_F32, .rank = 1, .shape = {4}, .data = v1};
    CU_ASSERT_FATAL(gim_safetensors_write(path, &t, 1, NULL, 0, err, sizeof err) == 0);
    size_t n1;
    char *old = gim_read_file(path, &n1);
    t.data = v2;
    const int64_t cuts[] = {0, 3, 8, 20, (int64_t)n1 - 17, (int64_t)n1 - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        gim_safetensors_fail_after_bytes(cuts[i]);
        err[0] = 0;
        CU_ASSERT_EQUAL(gim_safetensors_write(path, &t, 1, NULL, 0, err, sizeof err), -1);
        CU_ASSERT(strstr(err, "No space left") != NULL);
        size_t n;
        char *now = gim_read_file(path, &n);
        CU_ASSERT(now && n == n1 && memcmp(now, old, n) == 0);
        gim_free(now);
        CU_ASSERT_EQUAL(tmp_leftovers(), 0);
    }
    gim_safetensors_fail_after_bytes(-1);
    /* the temporary name is taken by a directory: creating it fails */
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CU_ASSERT_FATAL(mkdir(tmp, 0755) == 0);
    CU_ASSERT_EQUAL(gim_safetensors_write(path, &t, 1, NULL, 0, err, sizeof err), -1);
    rmdir(tmp);
    gim_ckpt *c = gim_safetensors_read(path, err, sizeof err);
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_EQUAL(((const float *)gim_ckpt_find(c, "p")->data)[0], 1.0f);
    gim_ckpt_free(c);
    /* a directory that does not exist */
    CU_ASSERT_EQUAL(gim_safetensors_write("/nonexistent/dir/w.safetensors", &t, 1, NULL, 0, err, sizeof err), -1);
    CU_ASSERT(strstr(err, "/nonexistent/dir/w.safetensors") != NULL);
    /* and a successful write replaces the file */
    CU_ASSERT_FATAL(gim_safetensors_write(path, &t, 1, NULL, 0, err, sizeof err) == 0);
    c = gim_safetensors_read(path, err, sizeof err);
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_EQUAL(((const float *)gim_ckpt_find(c, "p")->data)[3], 2.0f);
    gim_ckpt_free(c);
    CU_ASSERT_EQUAL(tmp_leftovers(), 0);
    gim_free(old);
    gim_free(path);
}

static void test_writer_refuses(void) {
    char *path = tmp_path("refuse.safetensors"), err[256];
    float x[2] = {0};
    gim_ckpt_tensor dup[2] = {{.name = "a", .rank = 1, .shape = {2}, .data = x},
                              {.name = "a", .rank = 1, .shape = {2}, .data = x}};
    CU_ASSERT_EQUAL(gim_safetensors_write(path, dup, 2, NULL, 0, err, sizeof err), -1);
    gim_ckpt_tensor res = {.name = "__metadata__", .rank = 0, .data = x};
    CU_ASSERT_EQUAL(gim_safetensors_write(path, &res, 1, NULL, 0, err, sizeof err), -1);
    gim_ckpt_tensor neg = {.name = "n", .rank = 1, .shape = {-2}, .data = x};
    CU_ASSERT_EQUAL(gim_safetensors_write(path, &neg, 1, NULL, 0, err, sizeof err), -1);
    gim_ckpt_meta m[2] = {{"k", "1"}, {"k", "2"}};
    CU_ASSERT_EQUAL(gim_safetensors_write(path, NULL, 0, m, 2, err, sizeof err), -1);
    struct stat st;
    CU_ASSERT(stat(path, &st) != 0);
    gim_free(path);
}

/* Random byte mutations of a valid file (mostly in the header): the reader
 * never crashes, and whatever it accepts is consistent: the tensors' bytes
 * add up to exactly the data after the header. */
static void test_mutations(void) {
    char *path = tmp_path("fuzz.safetensors"), err[512];
    float w[10];
    int64_t k[1] = {3};
    for (int i = 0; i < 10; i++) w[i] = (float)i;
    gim_ckpt_tensor t[] = {{.name = "w", .dtype = GIM_DT_F32, .rank = 2, .shape = {2, 3}, .data = w},
                           {.name = "b", .dtype = GIM_DT_F32, .rank = 1, .shape = {4}, .data = w + 6},
                           {.name = "k", .dtype = GIM_DT_I64, .rank = 1, .shape = {1}, .data = k}};
    gim_ckpt_meta m = {"step", "12"};
    CU_ASSERT_FATAL(gim_safetensors_write(path, t, 3, &m, 1, err, sizeof err) == 0);
    size_t n;
    char *orig = gim_read_file(path, &n);
    CU_ASSERT_FATAL(orig != NULL);
    char *buf = gim_xmalloc(n);
    unsigned s = 12345;
    int accepted = 0, consistent = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, orig, n);
        int muts = 1 + iter % 3;
        for (int j = 0; j < muts; j++) {
            s = s * 1103515245u + 12345u;
            size_t pos = (s >> 8) % (n - 40);   /* the header and a little data */
            s = s * 1103515245u + 12345u;
            static const char pick[] = "{}[]\":,0123456789-.e \\u";
            buf[pos] = (s >> 16) % 2 ? (char)(s >> 20) : pick[(s >> 20) % (sizeof pick - 1)];
        }
        unlink(path);   /* a fresh file: truncating one in place makes ext4 flush it on close */
        FILE *f = fopen(path, "wb");
        fwrite(buf, 1, n, f);
        fclose(f);
        gim_ckpt *c = gim_safetensors_read(path, err, sizeof err);
        if (!c) continue;
        accepted++;
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)buf[i];
        int64_t total = 0;
        for (int i = 0; i < c->n_tensors; i++)
            total += c->tensors[i].numel * gim_dtype_size(c->tensors[i].dtype);
        consistent += total == (int64_t)(n - 8 - hlen);
        gim_ckpt_free(c);
    }
    CU_ASSERT_EQUAL(consistent, accepted);
    gim_free(buf);
    gim_free(orig);
    gim_free(path);
}

int main(void) {
    static const gim_test tests[] = {
        {"layout per the format", test_layout},
        {"round trip", test_round_trip},
        {"foreign file: order, escapes, whitespace", test_foreign_file},
        {"corrupt headers and offsets", test_corrupt},
        {"bad JSON", test_bad_json},
        {"truncated at every byte", test_truncated_everywhere},
        {"atomic replacement", test_atomic},
        {"writer refuses bad requests", test_writer_refuses},
        {"random mutations", test_mutations},
        {NULL, NULL},
    };
    return gim_run_suite("rt_safetensors", tests);
}
