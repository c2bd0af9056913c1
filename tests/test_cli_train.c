/* The command lines of gimc train and gimc eval: the probe's table, the
 * progress bar on a terminal, the default output directory, the async
 * report, and usage and input errors with their exit statuses. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pty.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gim_util.h"
#include "harness_train.h"
#include "testutil.h"

static const char *data12, *model2;

static void setup(void) {
    if (data12) return;
    data12 = tt_dataset("d12", 12, 256, 128, false);
    model2 = tt_model("tiny2.gim", 12, 2);
}

/* ---- gimc eval -------------------------------------------------------------------- */

typedef struct probe_line {
    int module;
    long features;
    double train, test, rtrain, rtest;
} probe_line;

/* Parses the table's rows ("1  100  21.48%  15.62%" and, with
 * --compare-random, two more columns); returns how many. */
static int parse_table(const char *text, probe_line *rows, int max, bool compare) {
    int n = 0;
    const char *line = text;
    while (line && *line && n < max) {
        probe_line r = {0};
        int got = compare ? sscanf(line, "%d %ld %lf%% %lf%% %lf%% %lf%%", &r.module, &r.features, &r.train, &r.test,
                                   &r.rtrain, &r.rtest)
                          : sscanf(line, "%d %ld %lf%% %lf%%", &r.module, &r.features, &r.train, &r.test);
        if (got == (compare ? 6 : 4)) rows[n++] = r;
        line = strchr(line, '\n');
        if (line) line++;
    }
    return n;
}

static bool percent(double x) { return x >= 0 && x <= 100; }

/* One row per module: module 1's features are its 5 x 5 grid of 4-channel
 * vectors (100), module 2's of 8 channels (200); mean pooling leaves the
 * channels. --compare-random repeats both other tables' numbers: the same
 * weights, initialisation and probe seed give the same probe. */
static void test_eval_table(void) {
    setup();
    const char *out = tt_path("eval_run");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --epochs 2", model2, data12, out), 0);
    const char *w = tt_weights(out);
    probe_line flat[4], mean[4], rnd[4], both[4];
    char *so = NULL, *se = NULL;
    CU_ASSERT_EQUAL(tt_gimc(&so, &se, "eval -O0 '%s' --data '%s' --weights '%s'", model2, data12, w), 0);
    CU_ASSERT(tt_has(so, "flattened"));
    int n = parse_table(so, flat, 4, false);
    CU_ASSERT_EQUAL(n, 2);
    if (n != 2) fprintf(stderr, "\n%s%s\n", so, se);
    gim_free(so);
    gim_free(se);
    CU_ASSERT_EQUAL(tt_gimc(&so, NULL, "eval -O0 '%s' --data '%s' --weights '%s' --pool mean", model2, data12, w), 0);
    CU_ASSERT(tt_has(so, "mean-pooled"));
    CU_ASSERT_EQUAL(parse_table(so, mean, 4, false), 2);
    gim_free(so);
    CU_ASSERT_EQUAL(tt_gimc(&so, NULL, "eval -O0 '%s' --data '%s' --random-init", model2, data12), 0);
    CU_ASSERT_EQUAL(parse_table(so, rnd, 4, false), 2);
    gim_free(so);
    CU_ASSERT_EQUAL(tt_gimc(&so, NULL, "eval -O0 '%s' --data '%s' --weights '%s' --compare-random", model2, data12, w), 0);
    CU_ASSERT_EQUAL_FATAL(parse_table(so, both, 4, true), 2);
    gim_free(so);
    if (n != 2) return;
    static const long flat_dims[] = {100, 200}, mean_dims[] = {4, 8};
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(flat[i].module, i + 1);
        CU_ASSERT_EQUAL(flat[i].features, flat_dims[i]);
        CU_ASSERT_EQUAL(mean[i].features, mean_dims[i]);
        CU_ASSERT_EQUAL(rnd[i].features, flat_dims[i]);
        CU_ASSERT(percent(flat[i].train) && percent(flat[i].test) && percent(mean[i].train) && percent(mean[i].test));
        CU_ASSERT(percent(rnd[i].train) && percent(rnd[i].test));
        CU_ASSERT(both[i].train == flat[i].train && both[i].test == flat[i].test);
        CU_ASSERT(both[i].rtrain == rnd[i].train && both[i].rtest == rnd[i].test);
    }
    /* trained and random encoders are different encoders */
    CU_ASSERT(flat[0].train != rnd[0].train || flat[0].test != rnd[0].test || flat[1].train != rnd[1].train ||
              flat[1].test != rnd[1].test);
}

/* An end-to-end checkpoint lacks module 1's InfoNCE map (only the last
 * loss trains); the probe loads the rest, says what it left out, and
 * reports both modules. A greedy checkpoint with a tensor removed is still
 * refused. */
static void test_eval_e2e_weights(void) {
    setup();
    const char *out = tt_path("eval_e2e");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 4 --e2e", model2, data12, out), 0);
    const char *w = tt_weights(out);
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "eval -O0 '%s' --data '%s' --weights '%s'", model2, data12, w);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(tt_has(se, "end to end"));
    CU_ASSERT(tt_has(se, "'infonce.1/w'"));
    CU_ASSERT(!tt_has(se, "'conv2d.1/w'"));
    probe_line rows[4];
    CU_ASSERT_EQUAL(parse_table(so, rows, 4, false), 2);
    if (rc) fprintf(stderr, "\n%s\n", se);
    gim_free(so);
    gim_free(se);
    /* the same tensors without the end-to-end mark: refused */
    size_t n;
    char *text = gim_read_file(w, &n);
    CU_ASSERT_FATAL(text != NULL);
    /* same length, so the header's offsets stay right; the header follows
     * the 8-byte length (which holds NUL bytes) */
    const char *key = "\"training\":\"e2e\"";
    char *at = memmem(text, n, key, strlen(key));
    CU_ASSERT_FATAL(at != NULL);
    memcpy(at, "\"training\":\"xxx\"", 16);
    const char *forged = gim_tmpfile("forged.safetensors", text, n);
    gim_free(text);
    rc = tt_gimc(NULL, &se, "eval -O0 '%s' --data '%s' --weights '%s'", model2, data12, forged);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "no tensor 'infonce.1/w'"));
    gim_free(se);
}

/* ---- progress on a terminal ------------------------------------------------------- */

/* Under a pseudo-terminal the progress is a bar redrawn in place: carriage
 * returns and erase-line sequences, '#' filling, one finished bar (ending
 * its line) per epoch. */
static void test_progress_bar_on_terminal(void) {
    setup();
    const char *out = tt_path("tty_run");
    int master;
    fflush(NULL);
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        execl(GIMC_PATH, "gimc", "train", "-O0", model2, "--data", data12, "--out", out, "--epochs", "2", (char *)NULL);
        _exit(127);
    }
    char *s = NULL;
    size_t len = 0;
    char buf[4096];
    for (;;) {
        ssize_t k = read(master, buf, sizeof buf);
        if (k > 0) {
            s = gim_xrealloc(s, len + (size_t)k + 1);
            memcpy(s + len, buf, (size_t)k);
            len += (size_t)k;
            s[len] = 0;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        break;   /* EIO once the child has gone */
    }
    int st = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(master);
    CU_ASSERT(tt_has(s, "\r\033[Kepoch 1/2 ["));
    CU_ASSERT(tt_has(s, "[########################] 16/16"));
    CU_ASSERT(tt_has(s, "epoch 2/2 [########################] 16/16"));
    CU_ASSERT(!tt_has(s, "epoch 1/2 step"));   /* not the plain lines */
    gim_free(s);
}

/* ---- the output directory ----------------------------------------------------------- */

/* Without --out: runs/<model name>, parents made as needed. */
static void test_default_out_dir(void) {
    setup();
    const char *cwd = tt_path("cwd");
    CU_ASSERT_EQUAL_FATAL(mkdir(cwd, 0755), 0);
    char here[4096];
    CU_ASSERT_FATAL(getcwd(here, sizeof here) != NULL);
    CU_ASSERT_EQUAL_FATAL(chdir(cwd), 0);
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "'%s' -O0 --data '%s' --steps 3", model2, data12);   /* `gimc FILE` trains */
    CU_ASSERT_EQUAL(chdir(here), 0);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc) fprintf(stderr, "\n%s\n", se);
    CU_ASSERT(tt_has(so, "runs/tiny2/weights.safetensors"));
    char path[1024];
    snprintf(path, sizeof path, "%s/runs/tiny2/weights.safetensors", cwd);
    struct stat stt;
    CU_ASSERT_EQUAL(stat(path, &stt), 0);
    tt_row *rows = NULL;
    snprintf(path, sizeof path, "%s/runs/tiny2", cwd);
    CU_ASSERT_EQUAL(tt_metrics(path, &rows), 6);
    gim_free(rows);
    gim_free(so);
    gim_free(se);
}

/* ---- async ---------------------------------------------------------------------------- */

/* The async run states its staleness bound and what it saw, within it. */
static void test_async_staleness_reported(void) {
    setup();
    char *so = NULL;
    CU_ASSERT_EQUAL_FATAL(tt_gimc(&so, NULL, "train -O0 '%s' --data '%s' --out '%s' --epochs 2 --schedule async",
                                  model2, data12, tt_path("async_run")),
                          0);
    const char *at = so ? strstr(so, "async: a module's input is at most ") : NULL;
    CU_ASSERT_FATAL(at != NULL);
    int bound = -1, seen = -1;
    const char *s2 = strstr(at, "the most stale seen was ");
    CU_ASSERT_FATAL(s2 != NULL);
    CU_ASSERT_EQUAL(sscanf(at + strlen("async: a module's input is at most "), "%d", &bound), 1);
    CU_ASSERT_EQUAL(sscanf(s2 + strlen("the most stale seen was "), "%d", &seen), 1);
    CU_ASSERT_EQUAL(bound, 3);
    CU_ASSERT(seen >= 0 && seen <= bound);
    CU_ASSERT(tt_has(so, "examples/s"));
    /* plain lines close every epoch, however the progress polls fall */
    CU_ASSERT(tt_has(so, "epoch 1/2 step 16/16"));
    CU_ASSERT(tt_has(so, "epoch 2/2 step 16/16"));
    gim_free(so);
}

/* ---- the code that runs ------------------------------------------------------------ */

/* gimc train and gimc eval run the fused code gimc bench measures and gimc
 * export writes: with GIM_PROFILE=1 every generated node function is a row
 * of the profile, and a ReLU fused into its convolution has no row, forward
 * (relu) or backward (relu_bwd); its gradient's target keeps the name
 * ("grad/relu.1:spatial_mean_bwd"). */
static void test_train_and_eval_run_fused_code(void) {
    setup();
    setenv("GIM_PROFILE", "1", 1);
    char *se = NULL;
    const char *dir = tt_path("fused_run");
    int rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --steps 2", model2, data12, dir);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(tt_has(se, "gim profile"));
    CU_ASSERT(tt_has(se, "conv2d"));
    CU_ASSERT(!tt_has(se, " relu."));       /* a forward row: "m1 relu.1" */
    CU_ASSERT(!tt_has(se, ":relu_bwd"));    /* a backward one: "m1 grad/conv2d.1:relu_bwd" */
    gim_free(se);
    se = NULL;
    rc = tt_gimc(NULL, &se, "eval -O0 '%s' --data '%s' --weights '%s/weights.safetensors'", model2, data12, dir);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(tt_has(se, "(forward fn)"));
    CU_ASSERT(!tt_has(se, " relu."));
    gim_free(se);
    unsetenv("GIM_PROFILE");
}

/* ---- errors ----------------------------------------------------------------------------- */

static void expect(int want_rc, const char *needle, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void expect(int want_rc, const char *needle, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *so = NULL, *se = NULL;
    int rc = gim_run_gimc(args, &so, &se);
    CU_ASSERT_EQUAL(rc, want_rc);
    CU_ASSERT(tt_has(se, needle));
    if (rc != want_rc || !tt_has(se, needle))
        fprintf(stderr, "\ngimc %s\n  wanted %d '%s', got %d: %s\n", args, want_rc, needle, rc, se);
    gim_free(so);
    gim_free(se);
}

static void test_usage_and_input_errors(void) {
    setup();
    const char *out = tt_path("err_out");
    /* usage: status 2 */
    expect(2, "--schedule", "train '%s' --schedule fastest", model2);
    expect(2, "--save-every", "train '%s' --save-every 0", model2);
    expect(2, "--lr", "train '%s' --lr -1", model2);
    expect(2, "--pool", "eval '%s' --weights x --pool max", model2);
    expect(2, "--weights", "eval '%s' --data '%s'", model2, data12);
    expect(2, "--pool", "train '%s' --pool mean", model2);   /* an eval option */
    /* data: status 1, the file named */
    expect(1, "no_such_dir", "train -O0 '%s' --data '%s' --out '%s'", model2, tt_path("no_such_dir"), out);
    const char *empty = tt_path("empty_dir");
    mkdir(empty, 0755);
    expect(1, "-idx", "train -O0 '%s' --data '%s' --out '%s'", model2, empty, out);
    const char *broken = tt_path("broken");
    mkdir(broken, 0755);
    static const char *const names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    for (int i = 0; i < 4; i++) {
        char src[1024], dst[1024];
        snprintf(src, sizeof src, "%s/%s", data12, names[i]);
        snprintf(dst, sizeof dst, "%s/%s", broken, names[i]);
        size_t n;
        char *b = gim_read_file(src, &n);
        CU_ASSERT_FATAL(b != NULL);
        FILE *f = fopen(dst, "wb");
        CU_ASSERT_FATAL(f != NULL);
        fwrite(b, 1, i == 0 ? n - 7 : n, f);   /* the training images cut short */
        fclose(f);
        gim_free(b);
    }
    expect(1, "train-images-idx3-ubyte", "train -O0 '%s' --data '%s' --out '%s'", model2, broken, out);
    /* a model without a loss: nothing to train */
    static const char noloss[] = "model plain {\n"
                                 "    input x: [batch, 1, 12, 12]\n"
                                 "    output relu(conv2d(x, 4, k=3, pad=1))\n"
                                 "}\n";
    const char *m = gim_tmpfile("noloss.gim", noloss, sizeof noloss - 1);
    expect(1, "no loss", "train -O0 '%s' --data '%s' --out '%s'", m, data12, out);
    /* --help: status 0, the options on stdout */
    char *so = NULL;
    CU_ASSERT_EQUAL(tt_gimc(&so, NULL, "train --help"), 0);
    CU_ASSERT(tt_has(so, "--save-every"));
    CU_ASSERT(tt_has(so, "--resume"));
    CU_ASSERT(tt_has(so, "130"));
    gim_free(so);
}

int main(void) {
    static const gim_test tests[] = {
        {"eval: one row per module, --pool mean, --random-init", test_eval_table},
        {"eval of an end-to-end checkpoint", test_eval_e2e_weights},
        {"progress bar on a terminal", test_progress_bar_on_terminal},
        {"default output directory runs/<model>", test_default_out_dir},
        {"async staleness bound reported", test_async_staleness_reported},
        {"train and eval run the fused code", test_train_and_eval_run_fused_code},
        {"usage and input errors", test_usage_and_input_errors},
        {NULL, NULL},
    };
    return tt_cleanup(gim_run_suite("cli_train", tests));
}
