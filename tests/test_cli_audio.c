/* gimc on audio: train and eval on a tree of audio files (the cache, the
 * speaker probe's table, progress and eval.json, gimc report's page of the
 * run), the errors a wrong tree or model gives, and
 * gimc data speech (its layout, that a seed fixes its bytes, the missing
 * tool and usage errors). */
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gim_data.h"
#include "gim_probe.h"
#include "gim_records.h"
#include "gim_train.h"
#include "harness_model.h"
#include "gim_util.h"
#include "testutil.h"

/* Speaker s's utterances are tones of 300 (s + 1) Hz with a random phase
 * and a little noise: the speaker is visible in any spectral feature. */
static const char *tone_tree(void) {
    static char root[1024];
    if (root[0]) return root;
    snprintf(root, sizeof root, "%s/tones", gim_tmpdir());
    mkdir(root, 0755);
    float x[3000], noise[3000];
    for (int s = 0; s < 3; s++) {
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/%d", root, 10 + s);
        mkdir(dir, 0755);
        snprintf(dir, sizeof dir, "%s/%d/1", root, 10 + s);
        mkdir(dir, 0755);
        for (int u = 0; u < 5; u++) {
            char path[1200];
            snprintf(path, sizeof path, "%s/%d-1-%d.flac", dir, 10 + s, u);
            gim_test_fill(noise, 3000, (unsigned)(s * 10 + u + 1), -0.05f, 0.05f);
            double phase = u * 0.7;
            for (int i = 0; i < 3000; i++) x[i] = (float)(0.5 * sin(2 * M_PI * 300.0 * (s + 1) * i / 16000 + phase)) + noise[i];
            SF_INFO info = {.samplerate = 16000, .channels = 1, .format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16};
            SNDFILE *f = sf_open(path, SFM_WRITE, &info);
            CU_ASSERT_FATAL(f != NULL);
            sf_writef_float(f, x, 3000);
            sf_close(f);
        }
    }
    return root;
}

/* Two conv modules over 256 samples. */
static const char tiny_text[] =
        "def frames(h) { return transpose(h, 1, 2) }\n"
        "model tiny_audio {\n"
        "    input x: [batch, 1, 256]\n"
        "    h1 = relu(conv1d(x, 8, k=8, stride=4, pad=2))\n"
        "    infonce(frames(h1), steps=2, negatives=3)\n"
        "    h2 = relu(conv1d(gradient_block(h1), 8, k=4, stride=2, pad=1))\n"
        "    infonce(frames(h2), steps=2, negatives=3)\n"
        "    output h2\n"
        "}\n"
        "train {\n    batch 4\n    optimizer adam(lr=1e-3)\n}\n";

static const char *tiny_model(void) { return gim_tmpfile("tiny_audio.gim", tiny_text, sizeof tiny_text - 1); }

static void test_train_and_probe(void) {
    char *out, *err, args[4096];
    const char *run = gim_tmppath("audio-run");
    snprintf(args, sizeof args, "train '%s' --data '%s' --steps 3 --out '%s'", tiny_model(), tone_tree(), run);
    int rc = gim_run_gimc(args, &out, &err);
    if (rc) fprintf(stderr, "%s%s", out, err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(strstr(out, "audio: 15 utterances of 3 speakers (12 train, 3 test) at 16000 Hz, crops of 256 samples; 0 "
                          "files skipped, 0 too short; decoded into") != NULL);
    CU_ASSERT(strstr(out, "done after 3 steps") != NULL);
    char cache[1200];
    snprintf(cache, sizeof cache, "%s/%s", run, GIM_AUDIO_CACHE_NAME);
    CU_ASSERT(access(cache, R_OK) == 0);
    gim_free(out);
    gim_free(err);

    snprintf(args, sizeof args, "eval '%s' --data '%s' --weights '%s/weights.safetensors' --compare-random", tiny_model(),
             tone_tree(), run);
    rc = gim_run_gimc(args, &out, &err);
    if (rc) fprintf(stderr, "%s%s", out, err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(strstr(out, "mapped from") != NULL);   /* the run's cache, not decoded again */
    CU_ASSERT(strstr(out, "speaker probe on") != NULL && strstr(out, "3 speakers, 12 train / 3 test utterances"));
    int rows = 0;
    double test_acc[2][2] = {{-1, -1}, {-1, -1}};   /* per module: trained, random (%) */
    for (const char *line = out; line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        int module;
        long features;
        double tr, te, rtr, rte;
        if (sscanf(line, "%d %ld %lf%% %lf%% %lf%% %lf%%", &module, &features, &tr, &te, &rtr, &rte) != 6) continue;
        rows++;
        CU_ASSERT_EQUAL(module, rows);
        CU_ASSERT_EQUAL(features, 8);   /* time-averaged: the channels */
        /* three tones apart by their pitch: even a random encoder's spectrum tells them */
        bool ok = te >= 0 && te <= 100 && rtr >= 60 && rte >= 0 && rte <= 100;
        if (!ok) fprintf(stderr, "%s", out);
        CU_ASSERT(ok);
        if (module <= 2) test_acc[module - 1][0] = te, test_acc[module - 1][1] = rte;
    }
    CU_ASSERT_EQUAL(rows, 2);
    /* progress off a terminal, as the image probe's: plain lines; the
     * feature pass counts 4 crops of each of the 12 training utterances and
     * the 3 test ones; each probe's 1000 epochs print every 50th */
    CU_ASSERT(strchr(out, '\r') == NULL && strstr(out, "\033[") == NULL);
    CU_ASSERT(strstr(out, "features (random encoder) crops 51/51  ") != NULL);
    CU_ASSERT(strstr(out, "features (trained encoder) crops 51/51  ") != NULL);
    CU_ASSERT(strstr(out, " crops/s  ETA ") != NULL);
    CU_ASSERT(strstr(out, "probe module 2 (trained) epoch 50/1000 batch 1/1  loss ") != NULL);
    CU_ASSERT(strstr(out, "probe module 2 (random) epoch 1000/1000 batch 1/1  loss ") != NULL);
    CU_ASSERT(strstr(out, "probe module 1 (trained) epoch 1/1000 ") == NULL);
    gim_free(out);
    gim_free(err);

    /* eval.json beside the weights: the speaker task with the table's numbers */
    char path[1300];
    snprintf(path, sizeof path, "%s/eval.json", run);
    gim_eval_results ev;
    char msg[512];
    CU_ASSERT_FATAL(gim_eval_read(path, &ev, msg, sizeof msg) == 0);
    CU_ASSERT_FATAL(ev.n_probes == 1 && ev.probes[0].n_modules == 2);
    CU_ASSERT_STRING_EQUAL(ev.probes[0].task, "speakers");
    CU_ASSERT_EQUAL(ev.probes[0].classes, 3);
    CU_ASSERT_EQUAL(ev.probes[0].train_examples, 12 * 4);
    CU_ASSERT_EQUAL(ev.probes[0].test_examples, 3);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT(fabs(100 * ev.probes[0].modules[i].trained.test_acc - test_acc[i][0]) < 0.006);
        CU_ASSERT(fabs(100 * ev.probes[0].modules[i].random.test_acc - test_acc[i][1]) < 0.006);
    }

    /* gimc report on the run: the page shows the speaker probe's numbers */
    snprintf(args, sizeof args, "report '%s'", run);
    rc = gim_run_gimc(args, &out, &err);
    if (rc) fprintf(stderr, "%s%s", out, err);
    CU_ASSERT_EQUAL(rc, 0);
    gim_free(out);
    gim_free(err);
    snprintf(path, sizeof path, "%s/report.html", run);
    size_t len;
    char *page = gim_read_file(path, &len);
    CU_ASSERT_FATAL(page != NULL);
    CU_ASSERT(strstr(page, "(speakers: 3 classes)") != NULL);
    for (int i = 0; i < 2; i++) {
        char row[256];
        snprintf(row, sizeof row, "<tr><td>%d</td><td>8</td><td>%.2f%%</td><td>%.2f%%</td><td>%.2f%%</td><td>%.2f%%</td>",
                 i + 1, 100 * ev.probes[0].modules[i].trained.train_acc, 100 * ev.probes[0].modules[i].trained.test_acc,
                 100 * ev.probes[0].modules[i].random.train_acc, 100 * ev.probes[0].modules[i].random.test_acc);
        CU_ASSERT(strstr(page, row) != NULL);
        if (!strstr(page, row)) fprintf(stderr, "no row %s in the report\n", row);
    }
    CU_ASSERT(strstr(page, "48 training and 3 test examples") != NULL);
    gim_free(page);
    gim_eval_results_free(&ev);
}

/* The speaker probe's feature pass (gim_audio_features: batches side by
 * side, each crop's frames averaged as its batch comes) gives the bits of
 * the plain way, every crop's frames kept and then averaged, and the same
 * bits on one thread and two: 12 utterances of 4 crops (12 batches of 4), and
 * the 3 test utterances' centred crops (one partial batch). */
static void test_features_lanes(void) {
    gim_audio_options o;
    gim_audio_defaults(&o);
    o.crop = 256;
    gim_audio_corpus c;
    char err[512];
    CU_ASSERT_FATAL(gim_audio_open(tone_tree(), &o, &c, NULL, err, sizeof err) == 0);
    gim_exec_model *em = gim_hm_compile("tiny_audio", tiny_text, 4, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    CU_ASSERT_EQUAL_FATAL(em->n_modules, 2);
    gim_train_state st;
    CU_ASSERT_FATAL(gim_train_state_init(&st, em, 7, err, sizeof err) == 0);
    int keep = gim_rt_threads();
    float *feats[2][2][2];   /* [split][threads - 1][module] */
    int64_t dims[2];
    for (int t = 1; t <= 2; t++) {
        gim_rt_set_threads(t);
        CU_ASSERT_FATAL(gim_audio_features(em, &st, &c, c.train, c.n_train, 4, feats[0][t - 1], dims, NULL, NULL, err,
                                           sizeof err) == 0);
        CU_ASSERT_FATAL(gim_audio_features(em, &st, &c, c.test, c.n_test, 1, feats[1][t - 1], dims, NULL, NULL, err,
                                           sizeof err) == 0);
    }
    gim_rt_set_threads(keep);
    CU_ASSERT_EQUAL(dims[0], 8);
    CU_ASSERT_EQUAL(dims[1], 8);
    const int64_t rows[2] = {c.n_train * 4, c.n_test};
    CU_ASSERT_EQUAL(rows[0], 48);
    CU_ASSERT_EQUAL(rows[1], 3);
    for (int sp = 0; sp < 2; sp++)
        for (int i = 0; i < 2; i++)
            CU_ASSERT(memcmp(feats[sp][0][i], feats[sp][1][i], sizeof(float) * (size_t)(rows[sp] * dims[i])) == 0);
    /* the plain way: the crops laid out (the test split's centred, by
     * gim_audio_examples; the training split's 4 per utterance, the first at
     * its start, the last at its end), all frames kept, then averaged */
    gim_examples ex[2];
    float *x[2];
    int32_t *y;
    CU_ASSERT_FATAL(gim_audio_examples(&c, c.test, c.n_test, -1, &ex[1], &x[1], &y, err, sizeof err) == 0);
    x[0] = gim_malloc(sizeof(float) * (size_t)(rows[0] * c.crop));
    CU_ASSERT_FATAL(x[0] != NULL);
    for (int64_t r = 0; r < rows[0]; r++) {
        const gim_audio_utt *u = &c.utts[c.train[r / 4]];
        int64_t from = (u->length - c.crop) * (r % 4) / 3;
        memcpy(x[0] + r * c.crop, c.samples + u->offset + from, sizeof(float) * (size_t)c.crop);
    }
    ex[0] = ex[1];
    ex[0].n = rows[0], ex[0].x = x[0], ex[0].labels = NULL;
    for (int sp = 0; sp < 2; sp++) {
        float *all[2];
        int64_t numel[2];
        CU_ASSERT_FATAL(gim_extract_features(em, &st, &ex[sp], all, numel, NULL, NULL, err, sizeof err) == 0);
        for (int i = 0; i < 2; i++) {
            gim_probe_pool_mean(all[i], rows[sp], numel[i] / dims[i], dims[i]);
            CU_ASSERT(memcmp(all[i], feats[sp][1][i], sizeof(float) * (size_t)(rows[sp] * dims[i])) == 0);
            /* and the features are not all alike */
            CU_ASSERT(memcmp(all[i], all[i] + dims[i], sizeof(float) * (size_t)dims[i]) != 0);
            gim_free(all[i]);
        }
        gim_free(x[sp]);
    }
    gim_free(y);
    for (int sp = 0; sp < 2; sp++)
        for (int t = 0; t < 2; t++)
            for (int i = 0; i < 2; i++) gim_free(feats[sp][t][i]);
    gim_train_state_free(&st, em);
    gim_exec_model_free(em);
    gim_audio_close(&c);
}

static void test_errors(void) {
    char *out, *err, args[4096];
    /* a model whose input is not [batch, 1, samples] */
    static const char image_model[] = "model img {\n  input x: [batch, 28, 28]\n"
                                      "  h = relu(conv1d(x, 4, k=3))\n"
                                      "  infonce(transpose(h, 1, 2), steps=2, negatives=3)\n  output h\n}\n";
    const char *img = gim_tmpfile("img.gim", image_model, sizeof image_model - 1);
    snprintf(args, sizeof args, "train '%s' --data '%s' --steps 1 --out '%s'", img, tone_tree(), gim_tmppath("r-img"));
    int rc = gim_run_gimc(args, &out, &err);
    CU_ASSERT_EQUAL(rc, 1);
    if (!strstr(err, "an audio data set gives")) fprintf(stderr, "%s", err);
    CU_ASSERT(strstr(err, "gimc train: error: the model's input 'x' is [") &&
              strstr(err, "an audio data set gives [batch, 1, samples]"));
    gim_free(out);
    gim_free(err);
    /* a directory with nothing usable in it */
    char empty[1100];
    snprintf(empty, sizeof empty, "%s/no-audio", gim_tmpdir());
    mkdir(empty, 0755);
    snprintf(empty, sizeof empty, "%s/no-audio/spk", gim_tmpdir());
    mkdir(empty, 0755);
    gim_tmpfile("no-audio/spk/notes.md", "nothing here\n", 13);
    snprintf(empty, sizeof empty, "%s/no-audio", gim_tmpdir());
    snprintf(args, sizeof args, "train '%s' --data '%s' --steps 1 --out '%s'", tiny_model(), empty, gim_tmppath("r-none"));
    rc = gim_run_gimc(args, &out, &err);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(strstr(err, "no usable audio among 1 files") && strstr(err, "notes.md: skipped: not audio"));
    gim_free(out);
    gim_free(err);
}

/* Files under dir, sorted, with their bytes: two corpora are equal when
 * these are. */
static char *listing(const char *dir) {
    char cmd[2048], *text;
    snprintf(cmd, sizeof cmd, "cd '%s' && find . -type f | sort | xargs md5sum > '%s/listing.txt'", dir, gim_tmpdir());
    CU_ASSERT_FATAL(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "%s/listing.txt", gim_tmpdir());
    size_t n;
    text = gim_read_file(cmd, &n);
    CU_ASSERT_FATAL(text != NULL);
    return text;
}

static void test_data_speech(void) {
    char *out, *err, args[4096];
    const char *a = gim_tmppath("speech-a"), *b = gim_tmppath("speech-b"), *c = gim_tmppath("speech-c");
    snprintf(args, sizeof args, "data speech -o '%s' --speakers 2 --utterances 2 --seed 3", a);
    int rc = gim_run_gimc(args, &out, &err);
    if (rc) fprintf(stderr, "%s%s", out, err);
    CU_ASSERT_FATAL(rc == 0);
    CU_ASSERT(strstr(out, "made 4 utterances of 2 speakers") != NULL);
    gim_free(out);
    gim_free(err);
    snprintf(args, sizeof args, "data speech -o '%s' --speakers 2 --utterances 2 --seed 3 --jobs 1", b);
    CU_ASSERT_EQUAL(gim_run_gimc(args, NULL, NULL), 0);
    snprintf(args, sizeof args, "data speech -o '%s' --speakers 2 --utterances 2 --seed 4", c);
    CU_ASSERT_EQUAL(gim_run_gimc(args, NULL, NULL), 0);
    char *la = listing(a), *lb = listing(b), *lc = listing(c);
    CU_ASSERT_STRING_EQUAL(la, lb);      /* the seed fixes every byte, however many processes */
    CU_ASSERT(strcmp(la, lc) != 0);
    /* LibriSpeech's layout: SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac, four of them */
    int flac = 0;
    for (const char *p = la; (p = strstr(p, ".flac")); p++) flac++;
    CU_ASSERT_EQUAL(flac, 4);
    CU_ASSERT(strstr(la, "./speakers.txt") != NULL);
    gim_free(la);
    gim_free(lb);
    gim_free(lc);
    /* the reader takes it: 2 speakers, 16 kHz, utterances longer than a second */
    gim_audio_options o;
    gim_audio_defaults(&o);
    o.crop = 16000;
    gim_audio_corpus corpus;
    char e[2048];
    CU_ASSERT_FATAL(gim_audio_open(a, &o, &corpus, NULL, e, sizeof e) == 0);
    CU_ASSERT_EQUAL(corpus.n_speakers, 2);
    CU_ASSERT_EQUAL(corpus.n_utts, 4);
    CU_ASSERT_EQUAL(corpus.n_bad, 0);
    gim_audio_close(&corpus);

    /* an existing directory is not written over */
    snprintf(args, sizeof args, "data speech -o '%s' --speakers 2 --utterances 1", a);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 1);
    CU_ASSERT(strstr(err, "exists") != NULL);
    gim_free(out);
    gim_free(err);
    /* the tools missing */
    snprintf(args, sizeof args, "data speech -o '%s/none' --speakers 2 --utterances 1", gim_tmpdir());
    char *saved = gim_xstrdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    setenv("PATH", "/nonexistent", 1);
    rc = gim_run_gimc(args, &out, &err);
    setenv("PATH", saved, 1);
    gim_free(saved);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(strstr(err, "espeak-ng is not on PATH") != NULL);
    gim_free(out);
    gim_free(err);
    /* usage */
    static const char *const bad[] = {"data", "data speech", "data speech -o x --speakers 1", "data speech -o x --seed -1",
                                      "data music -o x", "data speech -o x --bogus"};
    for (int i = 0; i < 6; i++) {
        rc = gim_run_gimc(bad[i], &out, &err);
        if (rc != 2) fprintf(stderr, "%s: status %d\n", bad[i], rc);
        CU_ASSERT_EQUAL(rc, 2);
        gim_free(out);
        gim_free(err);
    }
}

int main(void) {
    static const gim_test tests[] = {
        {"train and the speaker probe on an audio tree", test_train_and_probe},
        {"the speaker probe's features: side by side, the plain way's bits", test_features_lanes},
        {"a wrong model or an empty tree", test_errors},
        {"gimc data speech", test_data_speech},
        {NULL, NULL},
    };
    return gim_run_suite("cli_audio", tests);
}
