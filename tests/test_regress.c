/* Replays every crash regression in tests/regress/ (see its README.md):
 * front-end inputs through the fuzz target's pipeline in this process and
 * through `gimc check`, which must exit with the status the file's first
 * line names; reader inputs through the readers' fuzz target, audio files
 * through the audio reader's. In the
 * sanitizer build a regression is an ASan/UBSan report that kills this
 * program; in every build a wrong status or a contract broken (the fuzz
 * targets abort) fails it. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gim_util.h"
#include "testutil.h"

#define GIM_FUZZ_NO_MAIN
#include "fuzz/fuzz_frontend.c"
#include "fuzz/fuzz_readers.c"
#include "fuzz/fuzz_audio.c"
#include "fuzz/fuzz_records.c"

/* Names of the regular files in dir (not starting with '.'), sorted;
 * returns how many (*names: heap). */
static int list_dir(const char *dir, char ***names) {
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    *names = NULL;
    if (n < 0) return 0;
    int k = 0;
    *names = gim_xmalloc(sizeof(char *) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) {
        if (ents[i]->d_name[0] != '.') (*names)[k++] = gim_xstrdup(ents[i]->d_name);
        free(ents[i]);
    }
    free(ents);
    return k;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) gim_free(names[i]);
    gim_free(names);
}

static void test_frontend(void) {
    char **names;
    int n = list_dir(GIM_TEST_DIR "/regress/frontend", &names);
    CU_ASSERT(n > 0);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/regress/frontend/%s", GIM_TEST_DIR, names[i]);
        size_t len;
        char *text = gim_read_file(path, &len);
        CU_ASSERT_FATAL(text != NULL);
        int want = -1;
        if (sscanf(text, "# gimc check: %d", &want) != 1) fprintf(stderr, "\n  %s: no '# gimc check: N' line\n", path);
        CU_ASSERT(want == 0 || want == 1);
        int got = gim_fuzz_frontend((const uint8_t *)text, len);
        char args[1200], *err = NULL;
        snprintf(args, sizeof args, "check '%s'", path);
        int st = gim_run_gimc(args, NULL, &err);
        if (got != want || st != want)
            fprintf(stderr, "\n  %s: in-process %d, gimc check %d, want %d; stderr: %.300s\n", names[i], got, st, want,
                    err);
        CU_ASSERT_EQUAL(got, want);
        CU_ASSERT_EQUAL(st, want);
        gim_free(err);
        gim_free(text);
    }
    free_names(names, n);
}

static void test_readers(void) {
    char **names;
    int n = list_dir(GIM_TEST_DIR "/regress/readers", &names);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/regress/readers/%s", GIM_TEST_DIR, names[i]);
        size_t len;
        char *bytes = gim_read_file(path, &len);
        CU_ASSERT_FATAL(bytes != NULL);
        gim_fuzz_readers((const uint8_t *)bytes, len);   /* aborts on a broken contract */
        gim_free(bytes);
    }
    free_names(names, n);
    /* and the fuzzer's own seeds, which must all read back as valid */
    n = list_dir(GIM_TEST_DIR "/fuzz/corpus/readers", &names);
    CU_ASSERT(n > 0);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/fuzz/corpus/readers/%s", GIM_TEST_DIR, names[i]);
        size_t len;
        char *bytes = gim_read_file(path, &len);
        CU_ASSERT_FATAL(bytes != NULL && len > 0);
        fuzz_write((const uint8_t *)bytes + 1, len - 1);
        char err[512] = "";
        if (bytes[0] % 2 == 0) {
            gim_ckpt *c = gim_safetensors_read(fuzz_path(), err, sizeof err);
            if (!c) fprintf(stderr, "\n  %s: %s\n", names[i], err);
            CU_ASSERT(c != NULL);
            if (c) gim_ckpt_free(c);
        } else {
            gim_idx idx;
            int r = gim_idx_read(fuzz_path(), bytes[0] % 4 == 1 ? 3 : 1, &idx, err, sizeof err);
            if (r) fprintf(stderr, "\n  %s: %s\n", names[i], err);
            CU_ASSERT_EQUAL(r, 0);
            if (!r) gim_free(idx.data);
        }
        unlink(fuzz_path());
        gim_free(bytes);
    }
    free_names(names, n);
}

/* Audio: the regressions and the seeds, through the audio target (which
 * aborts on a broken contract); every seed is a file the reader uses. */
static void test_audio(void) {
    static const char *const dirs[] = {"regress/audio", "fuzz/corpus/audio"};
    for (int d = 0; d < 2; d++) {
        char **names, dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", GIM_TEST_DIR, dirs[d]);
        int n = list_dir(dir, &names);
        if (d == 1) CU_ASSERT(n > 0);
        for (int i = 0; i < n; i++) {
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            size_t len;
            char *bytes = gim_read_file(path, &len);
            CU_ASSERT_FATAL(bytes != NULL && len > 1);
            gim_fuzz_audio((const uint8_t *)bytes, len);
            if (d == 1) {
                /* a seed is good audio: the reader takes it */
                gim_audio_options o;
                gim_audio_defaults(&o);
                o.crop = 1 + (uint8_t)bytes[0] % 64;
                FILE *f = fopen(path, "rb");
                char sub[1100];
                snprintf(sub, sizeof sub, "%s/s/1/fuzz.wav", fuzz_root());
                FILE *g = fopen(sub, "wb");
                CU_ASSERT_FATAL(f && g);
                fwrite(bytes + 1, 1, len - 1, g);
                fclose(g);
                fclose(f);
                gim_audio_corpus c;
                char err[1024];
                CU_ASSERT_FATAL(gim_audio_open(fuzz_root(), &o, &c, NULL, err, sizeof err) == 0);
                if (c.n_utts != 2) fprintf(stderr, "\n  %s: %s\n", names[i], c.notes);
                CU_ASSERT_EQUAL(c.n_utts, 2);
                gim_audio_close(&c);
                unlink(sub);
            }
            gim_free(bytes);
        }
        free_names(names, n);
    }
}

/* The run-record readers' regressions, and their seeds: the seeds are
 * valid files and must read back as such. */
static void test_records(void) {
    static const char *const dirs[] = {GIM_TEST_DIR "/regress/records", GIM_TEST_DIR "/fuzz/corpus/records"};
    for (int d = 0; d < 2; d++) {
        char **names;
        int n = list_dir(dirs[d], &names);
        if (d == 1) CU_ASSERT(n > 0);
        for (int i = 0; i < n; i++) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dirs[d], names[i]);
            size_t len;
            char *bytes = gim_read_file(path, &len);
            CU_ASSERT_FATAL(bytes != NULL);
            gim_fuzz_records((const uint8_t *)bytes, len);   /* aborts on a broken contract */
            if (d == 1 && len > 0) {
                char err[512] = "";
                int bad = 0;
                if (bytes[0] % 3 == 0) {
                    gim_metrics m;
                    bad = gim_metrics_parse(bytes + 1, len - 1, names[i], &m, err, sizeof err);
                    if (!bad) gim_metrics_free(&m);
                } else if (bytes[0] % 3 == 1) {
                    gim_eval_results r;
                    bad = gim_eval_parse(bytes + 1, len - 1, names[i], &r, err, sizeof err);
                    if (!bad) gim_eval_results_free(&r);
                } else {
                    gim_json_doc *j = gim_json_parse(bytes + 1, len - 1, err, sizeof err);
                    bad = j == NULL;
                    gim_json_free(j);
                }
                if (bad) fprintf(stderr, "\n  %s: %s\n", names[i], err);
                CU_ASSERT_EQUAL(bad, 0);
            }
            gim_free(bytes);
        }
        free_names(names, n);
    }
}

int main(void) {
    static const gim_test tests[] = {
        {"front-end regressions (in process and gimc check)", test_frontend},
        {"reader regressions and seeds", test_readers},
        {"run-record reader regressions and seeds", test_records},
        {"audio reader regressions and seeds", test_audio},
        {NULL, NULL},
    };
    return gim_run_suite("regress", tests);
}
