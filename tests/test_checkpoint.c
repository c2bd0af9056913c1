/* Checkpoints of gimc train: what the files hold, a load-save round trip,
 * resume equal to an uninterrupted run, kill -9 at any moment leaving a
 * checkpoint that loads and resumes to the same result, SIGTERM/SIGINT
 * writing one and exiting with 130, and refusal of another model's. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gim_checkpoint.h"
#include "gim_util.h"
#include "harness_train.h"
#include "testutil.h"

static const char *data12, *model2, *model3;

static void setup(void) {
    if (data12) return;
    data12 = tt_dataset("d12", 12, 256, 128, false);
    model2 = tt_model("tiny2.gim", 12, 2);
    model3 = tt_model("tiny3.gim", 12, 3);
}

/* The optimizer file a weights file names, read; NULL on any problem. */
static gim_ckpt *optimizer_of(const char *dir) {
    char err[512], path[1024];
    gim_ckpt *w = gim_safetensors_read(tt_weights(dir), err, sizeof err);
    if (!w) {
        fprintf(stderr, "\n%s\n", err);
        return NULL;
    }
    const char *name = gim_ckpt_meta_get(w, "optimizer");
    if (!name) {
        gim_ckpt_free(w);
        return NULL;
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    gim_ckpt_free(w);
    gim_ckpt *o = gim_safetensors_read(path, err, sizeof err);
    if (!o) fprintf(stderr, "\n%s\n", err);
    return o;
}

/* counters: steps per module, then epoch, batch within it, sequential module */
static const int64_t *counters_of(const gim_ckpt *o, int n_modules) {
    const gim_ckpt_tensor *t = o ? gim_ckpt_find(o, "counters") : NULL;
    if (!t || t->dtype != GIM_DT_I64 || t->rank != 1 || t->shape[0] != n_modules + 3) return NULL;
    return t->data;
}

/* Rows of two metrics files equal in step, epoch, module and loss. */
static bool same_metrics(const char *a, const char *b) {
    tt_row *ra = NULL, *rb = NULL;
    int na = tt_metrics(a, &ra), nb = tt_metrics(b, &rb);
    bool same = na > 0 && na == nb;
    for (int i = 0; same && i < na; i++)
        same = ra[i].step == rb[i].step && ra[i].epoch == rb[i].epoch && ra[i].module == rb[i].module &&
               ra[i].loss == rb[i].loss;
    if (!same) fprintf(stderr, "\nmetrics differ: %s (%d rows) vs %s (%d rows)\n", a, na, b, nb);
    gim_free(ra);
    gim_free(rb);
    return same;
}

/* Files of a checkpoint directory that are neither the checkpoint pair
 * nor metrics.csv (leftover temporaries, older optimizer files). */
static int stray_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int stray = 0, opt = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' ) continue;   /* ., .., the sequential cache (unlinked anyway) */
        if (!strcmp(e->d_name, "weights.safetensors") || !strcmp(e->d_name, "metrics.csv") ||
            !strcmp(e->d_name, "run.json"))
            continue;
        if (!strcmp(e->d_name, "refresh.safetensors")) continue;   /* --refresh: the period's parameters */
        size_t n = strlen(e->d_name);
        if (!strncmp(e->d_name, "optimizer-", 10) && n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) {
            opt++;
            continue;
        }
        fprintf(stderr, "\nstray file %s/%s\n", dir, e->d_name);
        stray++;
    }
    closedir(d);
    return stray + (opt != 1);
}

/* ---- what a checkpoint holds --------------------------------------------------- */

static void test_checkpoint_contents(void) {
    setup();
    const char *out = tt_path("contents");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train '%s' --data '%s' --out '%s' --steps 10", model2, data12, out), 0);
    char err[512];
    gim_ckpt *w = gim_safetensors_read(tt_weights(out), err, sizeof err);
    CU_ASSERT_FATAL(w != NULL);
    /* every parameter of the model, by its source name, with its shape */
    static const struct {
        const char *name;
        int rank;
        int64_t shape[4];
    } want[] = {
        {"conv2d.1/w", 4, {4, 1, 3, 3}}, {"conv2d.1/b", 1, {4}}, {"infonce.1/w", 3, {2, 4, 4}},
        {"conv2d.2/w", 4, {8, 4, 3, 3}}, {"conv2d.2/b", 1, {8}}, {"infonce.2/w", 3, {2, 8, 8}},
    };
    CU_ASSERT_EQUAL(w->n_tensors, 6);
    for (int i = 0; i < 6; i++) {
        const gim_ckpt_tensor *t = gim_ckpt_find(w, want[i].name);
        CU_ASSERT_FATAL(t != NULL);
        CU_ASSERT_EQUAL(t->dtype, GIM_DT_F32);
        CU_ASSERT_EQUAL(t->rank, want[i].rank);
        for (int d = 0; d < want[i].rank; d++) CU_ASSERT_EQUAL(t->shape[d], want[i].shape[d]);
        const float *x = t->data;
        int bad = 0;
        for (int64_t k = 0; k < t->numel; k++) bad += !isfinite(x[k]);
        CU_ASSERT_EQUAL(bad, 0);
    }
    CU_ASSERT_STRING_EQUAL(gim_ckpt_meta_get(w, "model"), "tiny2");
    CU_ASSERT(gim_ckpt_meta_get(w, "training") && !strcmp(gim_ckpt_meta_get(w, "training"), "greedy"));
    CU_ASSERT(gim_ckpt_meta_get(w, "schedule") && !strcmp(gim_ckpt_meta_get(w, "schedule"), "simultaneous"));
    gim_ckpt_free(w);
    gim_ckpt *o = optimizer_of(out);
    CU_ASSERT_FATAL(o != NULL);
    /* Adam: two moments per parameter; 72 and 424 parameters */
    const gim_ckpt_tensor *m1 = gim_ckpt_find(o, "module1/optimizer"), *m2 = gim_ckpt_find(o, "module2/optimizer");
    CU_ASSERT_FATAL(m1 && m2);
    CU_ASSERT_EQUAL(m1->numel, 2 * 72);
    CU_ASSERT_EQUAL(m2->numel, 2 * 424);
    const int64_t *c = counters_of(o, 2);
    CU_ASSERT_FATAL(c != NULL);
    /* 10 steps of each module: epoch 0 (of 16 batches), next batch 10 */
    CU_ASSERT_EQUAL(c[0], 10);
    CU_ASSERT_EQUAL(c[1], 10);
    CU_ASSERT_EQUAL(c[2], 0);
    CU_ASSERT_EQUAL(c[3], 10);
    CU_ASSERT_EQUAL(c[4], 0);
    gim_ckpt_free(o);
    CU_ASSERT_EQUAL(stray_files(out), 0);

    /* Round trip: resuming with nothing left to do loads the checkpoint
     * into the model's buffers and saves it again, byte for byte. */
    size_t n0, n1;
    char *before = gim_read_file(tt_weights(out), &n0);
    CU_ASSERT_EQUAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 10 --resume", model2, data12, out), 0);
    char *after = gim_read_file(tt_weights(out), &n1);
    CU_ASSERT_FATAL(before && after);
    CU_ASSERT(n0 == n1 && memcmp(before, after, n0) == 0);
    gim_free(before);
    gim_free(after);
}

/* ---- resume ------------------------------------------------------------------------ */

/* A: 24 steps. B: 10 steps, then --resume to 24 (across the end of epoch 1
 * at 16). Same weights, optimizer state and losses. */
static void test_resume_equals_uninterrupted(void) {
    setup();
    const char *a = tt_path("resume_a"), *b = tt_path("resume_b");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --epochs 3 --steps 24 --seed 7", model2,
                                  data12, a), 0);
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --epochs 3 --steps 10 --seed 7", model2,
                                  data12, b), 0);
    CU_ASSERT(!tt_same_file(tt_weights(a), tt_weights(b)));
    char *so = NULL;
    CU_ASSERT_EQUAL_FATAL(tt_gimc(&so, NULL, "train -O0 '%s' --data '%s' --out '%s' --epochs 3 --steps 24 --seed 7 --resume",
                                  model2, data12, b), 0);
    CU_ASSERT(tt_has(so, "resuming"));
    gim_free(so);
    CU_ASSERT(tt_same_file(tt_weights(a), tt_weights(b)));
    gim_ckpt *oa = optimizer_of(a), *ob = optimizer_of(b);
    CU_ASSERT_FATAL(oa && ob);
    for (int i = 0; i < oa->n_tensors; i++) {
        const gim_ckpt_tensor *x = &oa->tensors[i], *y = gim_ckpt_find(ob, x->name);
        CU_ASSERT_FATAL(y != NULL);
        CU_ASSERT(x->numel == y->numel && memcmp(x->data, y->data, (size_t)x->numel * gim_dtype_size(x->dtype)) == 0);
    }
    gim_ckpt_free(oa);
    gim_ckpt_free(ob);
    CU_ASSERT(same_metrics(a, b));
    /* a different seed gives different weights: the comparison can fail */
    const char *c = tt_path("resume_c");
    CU_ASSERT_EQUAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --epochs 3 --steps 24 --seed 8", model2,
                            data12, c), 0);
    CU_ASSERT(!tt_same_file(tt_weights(a), tt_weights(c)));
}

/* ---- interruption ------------------------------------------------------------------- */

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Waits until `path` exists and, when `needle` is given, contains it:
 * returns 1; 0 when the process exited first (reaped); -1 after 20 s. */
static int wait_for(pid_t pid, const char *path, const char *needle) {
    for (int i = 0; i < 4000; i++) {
        if (exists(path)) {
            if (!needle) return 1;
            size_t n;
            char *t = gim_read_file(path, &n);
            bool ok = t && strstr(t, needle);
            gim_free(t);
            if (ok) return 1;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) return 0;
        sleep_ms(5);
    }
    return -1;
}

/* Runs the same training (`args`) uninterrupted into ref, then into dir
 * killed with `sig` `delay_ms` after its first checkpoint (or after its
 * output shows `after`), checks what the signal leaves, resumes it to the
 * end and compares with ref when the schedule is deterministic. */
static void interrupt_and_resume(const char *args, const char *ref, const char *dir, int sig, int delay_ms,
                                 const char *after, bool deterministic, int save_every) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "train %s --out '%s' --save-every %d", args, dir, save_every);
    const char *bg_out;
    pid_t pid = tt_spawn_gimc(cmd, &bg_out);
    CU_ASSERT_FATAL(pid > 0);
    /* `after` is looked for in the output, or with a "metrics.csv:" prefix in that file */
    char metrics[1024];
    snprintf(metrics, sizeof metrics, "%s/metrics.csv", dir);
    bool in_metrics = after && !strncmp(after, "metrics.csv:", 12);
    int ready = !after ? wait_for(pid, tt_weights(dir), NULL)
                : in_metrics ? wait_for(pid, metrics, after + 12)
                             : wait_for(pid, bg_out, after);
    CU_ASSERT_EQUAL(ready, 1);
    if (ready != 1) {
        fprintf(stderr, "\n%s: %s before the signal\n", dir, ready ? "stuck" : "finished");
        if (ready < 0) {   /* still ours and running: stop it */
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        return;
    }
    sleep_ms(delay_ms);
    kill(pid, sig);
    int st = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
    if (sig == SIGKILL) {
        CU_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    } else {
        /* a clean stop: checkpoint written, status 130 */
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 130);
        size_t n;
        char *text = gim_read_file(bg_out, &n);
        CU_ASSERT(tt_has(text, "interrupted"));
        gim_free(text);
    }
    /* the checkpoint left behind loads, and names an optimizer file that does */
    char err[512];
    gim_ckpt *w = gim_safetensors_read(tt_weights(dir), err, sizeof err);
    CU_ASSERT(w != NULL);
    if (!w) fprintf(stderr, "\n%s\n", err);
    gim_ckpt_free(w);
    gim_ckpt *o = optimizer_of(dir);
    CU_ASSERT(o != NULL);
    gim_ckpt_free(o);
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "train %s --out '%s' --resume", args, dir);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc) fprintf(stderr, "\nresume of %s: %s\n", dir, se);
    gim_free(so);
    gim_free(se);
    CU_ASSERT_EQUAL(stray_files(dir), 0);
    if (deterministic) {
        CU_ASSERT(tt_same_file(tt_weights(ref), tt_weights(dir)));
        CU_ASSERT(same_metrics(ref, dir));
    }
}

/* kill -9 at several moments of a simultaneous run with a checkpoint after
 * every step: whatever moment it hits (mid-step, mid-write of either file,
 * between them), the run resumes and ends exactly as the uninterrupted one. */
static void test_kill9_simultaneous(void) {
    setup();
    char args[2048];
    snprintf(args, sizeof args, "-O0 '%s' --data '%s' --epochs 3", model2, data12);
    const char *ref = tt_path("kill_ref");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train %s --out '%s'", args, ref), 0);
    static const int delays[] = {0, 13, 61};
    for (int k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "kill_%d", k);
        interrupt_and_resume(args, ref, tt_path(name), SIGKILL, delays[k], NULL, true, 1);
    }
}

/* Batches of 1: 256 steps an epoch, a checkpoint at its end and none in
 * between. Killed once metrics.csv's buffer has gone to disk with rows past
 * step 256's checkpoint (up to a 4 KiB boundary, most likely a torn line):
 * the resumed run drops those rows and writes them again. */
static void test_kill9_between_checkpoints(void) {
    setup();
    char args[2048];
    snprintf(args, sizeof args, "-O0 '%s' --data '%s' --epochs 2 --batch 1", model2, data12);
    const char *ref = tt_path("kbetween_ref");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train %s --out '%s'", args, ref), 0);
    interrupt_and_resume(args, ref, tt_path("kbetween"), SIGKILL, 0, "metrics.csv:\n270,2,", true, 100000);
}

/* The sequential schedule killed while module 2 trains: the resumed run
 * rebuilds module 1's cache from the checkpoint and ends as the
 * uninterrupted run. Two epochs: with one, module 3's 16 steps could end
 * before the SIGTERM sent 5 ms after it starts arrived, on a loaded machine. */
static void test_kill9_sequential(void) {
    setup();
    char args[2048];
    snprintf(args, sizeof args, "-O0 '%s' --data '%s' --epochs 2 --schedule sequential", model3, data12);
    const char *ref = tt_path("kseq_ref");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train %s --out '%s'", args, ref), 0);
    interrupt_and_resume(args, ref, tt_path("kseq_1"), SIGKILL, 5, NULL, true, 1);
    interrupt_and_resume(args, ref, tt_path("kseq_2"), SIGKILL, 40, "module 2: training", true, 1);
    interrupt_and_resume(args, ref, tt_path("kseq_3"), SIGTERM, 5, "module 3: training", true, 1);
}

/* --refresh 2 killed after a checkpoint inside the first period, and while
 * the second refresh writes its parameters or rebuilds the caches: the
 * resumed run ends as the uninterrupted one. */
static void test_kill9_refresh(void) {
    setup();
    char args[2048];
    snprintf(args, sizeof args, "-O0 '%s' --data '%s' --epochs 3 --refresh 2", model2, data12);
    const char *ref = tt_path("krefresh_ref");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train %s --out '%s'", args, ref), 0);
    interrupt_and_resume(args, ref, tt_path("krefresh_1"), SIGKILL, 20, NULL, true, 1);
    interrupt_and_resume(args, ref, tt_path("krefresh_2"), SIGKILL, 0, "refresh (epoch 3)", true, 1);
    interrupt_and_resume(args, ref, tt_path("krefresh_3"), SIGKILL, 3, "refresh (epoch 3)", true, 1);
}

/* The async schedule killed: its checkpoint loads and resumes; the last
 * module ends having seen each batch position once. */
static void test_kill9_async(void) {
    setup();
    char args[2048];
    snprintf(args, sizeof args, "-O0 '%s' --data '%s' --epochs 16 --schedule async", model3, data12);
    const char *dir = tt_path("kasync");
    interrupt_and_resume(args, NULL, dir, SIGKILL, 20, NULL, false, 1);
    gim_ckpt *o = optimizer_of(dir);
    const int64_t *c = counters_of(o, 3);
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_EQUAL(c[2], 256);   /* module 3: 16 epochs of 16 batches */
    CU_ASSERT(c[0] >= 256 && c[1] >= 256);
    CU_ASSERT_EQUAL(c[3], 16);    /* epoch: past the last */
    gim_ckpt_free(o);
}

/* SIGTERM and SIGINT (Ctrl-C): a checkpoint, exit status 130, and the run
 * resumes to the uninterrupted result. */
static void test_sigterm_sigint(void) {
    setup();
    char args[2048];
    snprintf(args, sizeof args, "-O0 '%s' --data '%s' --epochs 3", model2, data12);
    const char *ref = tt_path("term_ref");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train %s --out '%s'", args, ref), 0);
    interrupt_and_resume(args, ref, tt_path("term"), SIGTERM, 30, NULL, true, 1);
    interrupt_and_resume(args, ref, tt_path("int"), SIGINT, 10, NULL, true, 1);
}

/* ---- another model's checkpoint -------------------------------------------------- */

static void test_mismatch_refused(void) {
    setup();
    const char *two = tt_path("mm_two"), *three = tt_path("mm_three");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 2", model2, data12, two), 0);
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 2", model3, data12, three), 0);
    char *se = NULL;
    /* a parameter missing from the file */
    int rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 4 --resume", model3, data12, two);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "'conv2d.3/w'"));
    CU_ASSERT(tt_has(se, "weights.safetensors"));
    gim_free(se);
    /* a tensor the model does not have */
    rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 4 --resume", model2, data12, three);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "'conv2d.3/"));
    CU_ASSERT(tt_has(se, "not a parameter"));
    gim_free(se);
    /* a shape: module 1 with 6 channels instead of 4 */
    static const char wide[] = "model tiny2 {\n"
                               "    input x: [batch, 1, 12, 12]\n"
                               "    p = patches(x, size=4, stride=2)\n"
                               "    h1 = relu(conv2d(p, 6, k=3, pad=1))\n"
                               "    infonce(spatial_mean(h1), steps=2, negatives=4)\n"
                               "    h2 = relu(conv2d(gradient_block(h1), 8, k=3, stride=2, pad=1))\n"
                               "    infonce(spatial_mean(h2), steps=2, negatives=4)\n"
                               "    output spatial_mean(h2)\n"
                               "}\n"
                               "train {\n"
                               "    batch 16\n"
                               "}\n";
    const char *mw = gim_tmpfile("wide.gim", wide, sizeof wide - 1);
    rc = tt_gimc(NULL, &se, "eval -O0 '%s' --data '%s' --weights '%s'", mw, data12, tt_weights(two));
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "'conv2d.1/w'"));
    CU_ASSERT(tt_has(se, "[4, 1, 3, 3]"));
    CU_ASSERT(tt_has(se, "[6, 1, 3, 3]"));
    if (rc != 1 || !tt_has(se, "'conv2d.1/w'")) fprintf(stderr, "\n%s\n", se);
    gim_free(se);
    /* a damaged file: cut in the middle of its data */
    size_t n;
    char *bytes = gim_read_file(tt_weights(two), &n);
    CU_ASSERT_FATAL(bytes && n > 100);
    const char *cut = gim_tmpfile("cut.safetensors", bytes, n - 40);
    gim_free(bytes);
    rc = tt_gimc(NULL, &se, "eval -O0 '%s' --data '%s' --weights '%s'", model2, data12, cut);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "cut.safetensors"));
    gim_free(se);
    /* resuming with another batch size: the data position would be wrong */
    rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 4 --resume --batch 8", model2, data12, two);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "--batch 16"));
    gim_free(se);
    /* a sequential run's position means nothing to the simultaneous schedule */
    const char *seq = tt_path("mm_seq");
    CU_ASSERT_EQUAL_FATAL(
        tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 2 --schedule sequential", model2, data12, seq), 0);
    rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 4 --resume", model2, data12, seq);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "--schedule sequential"));
    gim_free(se);
    /* --resume with no checkpoint at all */
    rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 2 --resume", model2, data12, tt_path("nothing"));
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "resume"));
    gim_free(se);
}

int main(void) {
    static const gim_test tests[] = {
        {"what a checkpoint holds; load-save round trip", test_checkpoint_contents},
        {"resume = uninterrupted run", test_resume_equals_uninterrupted},
        {"kill -9 at several moments (simultaneous)", test_kill9_simultaneous},
        {"kill -9 between checkpoints: metrics trimmed", test_kill9_between_checkpoints},
        {"kill -9 / SIGTERM in each module (sequential)", test_kill9_sequential},
        {"kill -9 inside and at a refresh (--refresh)", test_kill9_refresh},
        {"kill -9 (async)", test_kill9_async},
        {"SIGTERM and SIGINT: checkpoint, status 130", test_sigterm_sigint},
        {"another model's checkpoint is refused", test_mismatch_refused},
        {NULL, NULL},
    };
    return tt_cleanup(gim_run_suite("checkpoint", tests));
}
