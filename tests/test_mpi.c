/* gimc train under mpirun on this machine (--oversubscribe): lockstep is the
 * single process bit for bit on 2 and 3 ranks; the merged checkpoint resumes
 * in one process and a single process's checkpoint resumes under mpirun;
 * --refresh on 3 ranks is the single process's --refresh bit for bit;
 * async with replay buffers lowers every module's loss; ranks started with
 * different models or batch sizes refuse; more ranks than modules is an
 * error; a rank killed with kill -9 stops the job naming it, leaving the
 * last checkpoint intact; a rank that stops answering ends the run within
 * --peer-timeout; SIGTERM to mpirun checkpoints every rank, and SIGUSR1
 * does too with mpirun's exit status 130.
 * Skipped, saying so, where mpirun is absent. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gim_checkpoint.h"
#include "gim_util.h"
#include "harness_train.h"
#include "testutil.h"

static const char *data12, *model3, *model2, *model3b;

static void setup(void) {
    if (data12) return;
    data12 = tt_dataset("d12", 12, 256, 128, false);
    model3 = tt_model("tiny3.gim", 12, 3);
    model2 = tt_model("tiny2.gim", 12, 2);
    /* the same model under a batch of 8 */
    size_t n;
    char *text = gim_read_file(model3, &n);
    CU_ASSERT_FATAL(text != NULL);
    char *at = strstr(text, "batch 16");
    CU_ASSERT_FATAL(at != NULL);
    memcpy(at, "batch 08", 8);
    model3b = gim_tmpfile("tiny3b.gim", text, n);
    gim_free(text);
}

/* Runs a shell command; its stdout and stderr together in *out (heap, or
 * freed when out is NULL); returns its exit status (-1 if it did not exit). */
static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[8300];
    snprintf(full, sizeof full, "(%s) 2>&1 </dev/null", cmd);
    fflush(NULL);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t cap = 1 << 16, len = 0;
    char *buf = gim_xmalloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 4096) buf = gim_xrealloc(buf, cap *= 2);
    }
    buf[len] = 0;
    int st = pclose(p);
    if (out) *out = buf;
    else gim_free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define MPIRUN "mpirun --oversubscribe -np"
/* Every run: one thread per rank, -O0 (compiles fast), a bounded wait. */
#define COMMON "--threads 1 -O0 --peer-timeout 60"

static int train(char **out, int ranks, const char *model, const char *dir, const char *extra) {
    if (ranks == 0)
        return run(out, "'%s' train '%s' --data '%s' --out '%s' " COMMON " %s", GIMC_PATH, model, data12, dir, extra);
    return run(out, MPIRUN " %d '%s' train '%s' --data '%s' --out '%s' " COMMON " %s", ranks, GIMC_PATH, model, data12,
               dir, extra);
}

static void expect_ok(int rc, char *out, const char *what) {
    CU_ASSERT_EQUAL(rc, 0);
    if (rc) fprintf(stderr, "\n%s: exit %d\n%s\n", what, rc, out ? out : "");
    gim_free(out);
}

static void expect_same(const char *a, const char *b, const char *what) {
    bool same = tt_same_file(tt_weights(a), tt_weights(b));
    CU_ASSERT(same);
    if (!same) fprintf(stderr, "\n%s: the weights differ\n", what);
}

/* ---- lockstep --------------------------------------------------------------------- */

static const char *ref;   /* one process, 2 epochs */

static void test_lockstep_bits(void) {
    setup();
    char *out = NULL;
    ref = tt_path("ref");
    int rc = train(&out, 0, model3, ref, "--epochs 2");
    expect_ok(rc, out, "one process");
    /* 2 ranks: modules 1-2 | 3 (the balanced split of this model) */
    const char *two = tt_path("lock2");
    out = NULL;
    rc = train(&out, 2, model3, two, "--epochs 2");
    CU_ASSERT(tt_has(out, "distributed over 2 ranks"));
    expect_ok(rc, out, "mpirun -np 2");
    expect_same(ref, two, "lockstep on 2 ranks");
    /* the same metrics rows, step by step (the rate column aside) */
    tt_row *ra = NULL, *rb = NULL;
    int na = tt_metrics(ref, &ra), nb = tt_metrics(two, &rb);
    CU_ASSERT(na == 96 && nb == na);
    for (int i = 0; i < na && i < nb; i++)
        CU_ASSERT(ra[i].step == rb[i].step && ra[i].module == rb[i].module && ra[i].loss == rb[i].loss);
    gim_free(ra);
    gim_free(rb);
}

/* 3 ranks, a module each, interrupted at step 20 by --steps; resumed in one
 * process it ends as the single process's run; and the other way round. */
static void test_lockstep_resume_across(void) {
    setup();
    CU_ASSERT_FATAL(ref != NULL);
    char *out = NULL;
    const char *a = tt_path("mpi_then_one"), *b = tt_path("one_then_mpi"), *s20 = tt_path("one20");
    int rc = train(&out, 3, model3, a, "--epochs 2 --steps 20 --placement 0,1,2");
    CU_ASSERT(tt_has(out, "rank 2: module 3"));
    expect_ok(rc, out, "mpirun -np 3 --steps 20");
    out = NULL;
    rc = train(&out, 0, model3, s20, "--epochs 2 --steps 20");
    expect_ok(rc, out, "one process --steps 20");
    expect_same(s20, a, "lockstep on 3 ranks, 20 steps");
    out = NULL;
    rc = train(&out, 0, model3, a, "--epochs 2 --resume");
    expect_ok(rc, out, "resume in one process");
    expect_same(ref, a, "3 ranks, then one process");

    out = NULL;
    rc = train(&out, 0, model3, b, "--epochs 2 --steps 20");
    expect_ok(rc, out, "one process --steps 20");
    out = NULL;
    rc = train(&out, 3, model3, b, "--epochs 2 --resume");
    CU_ASSERT(tt_has(out, "resuming from"));
    expect_ok(rc, out, "resume under mpirun -np 3");
    expect_same(ref, b, "one process, then 3 ranks");
}

/* --refresh across ranks: each rank trains on caches of what it received,
 * rebuilt every 2 epochs: the single process's --refresh bit for bit. */
static void test_refresh_bits(void) {
    setup();
    char *out = NULL;
    const char *one = tt_path("refresh1"), *three = tt_path("refresh3");
    int rc = train(&out, 0, model3, one, "--epochs 4 --refresh 2");
    expect_ok(rc, out, "one process --refresh 2");
    out = NULL;
    rc = train(&out, 3, model3, three, "--epochs 4 --refresh 2");
    CU_ASSERT(tt_has(out, "refresh (epoch 3)"));
    expect_ok(rc, out, "mpirun -np 3 --refresh 2");
    expect_same(one, three, "--refresh 2 on 3 ranks");
}

/* ---- async ------------------------------------------------------------------------- */

static void test_async_lowers_losses(void) {
    setup();
    char *out = NULL;
    const char *dir = tt_path("async3");
    int rc = train(&out, 3, model3, dir, "--epochs 4 --schedule async --replay 3 --max-reuse 2");
    CU_ASSERT(tt_has(out, "m2 rank 1: received"));
    CU_ASSERT(tt_has(out, "staleness"));
    CU_ASSERT(tt_has(out, "reuse"));
    expect_ok(rc, out, "async on 3 ranks");
    tt_row *r = NULL;
    int n = tt_metrics(dir, &r);
    CU_ASSERT_FATAL(n > 0);
    for (int mi = 1; mi <= 3; mi++) {
        double first = tt_mean_loss(r, n, mi, 8, false), last = tt_mean_loss(r, n, mi, 8, true);
        CU_ASSERT(last < first - 0.05);
        if (!(last < first - 0.05)) fprintf(stderr, "\nasync module %d: loss %.4f -> %.4f\n", mi, first, last);
    }
    /* every module trained: at least a step per batch module 1 produced */
    CU_ASSERT(tt_count(r, n, 1) == 64);
    CU_ASSERT(tt_count(r, n, 2) >= 32 && tt_count(r, n, 3) >= 16);
    gim_free(r);
    /* the merged checkpoint is a whole model's */
    char err[512];
    gim_ckpt *c = gim_safetensors_read(tt_weights(dir), err, sizeof err);
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT(gim_ckpt_find(c, "conv2d.1/w") && gim_ckpt_find(c, "conv2d.3/w") && gim_ckpt_find(c, "infonce.3/w"));
    gim_ckpt_free(c);
}

/* ---- refusals ---------------------------------------------------------------------- */

static void test_mismatch_refused(void) {
    setup();
    char *out = NULL;
    const char *dir = tt_path("mismatch");
    int rc = run(&out, MPIRUN " 1 '%s' train '%s' --data '%s' --out '%s' " COMMON " : -np 1 '%s' train '%s' --data '%s' "
                 "--out '%s' " COMMON, GIMC_PATH, model3, data12, dir, GIMC_PATH, model2, data12, dir);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    CU_ASSERT(tt_has(out, "rank 1 was started with model 'tiny2', rank 0 model 'tiny3'"));
    if (!tt_has(out, "rank 1 was started with model")) fprintf(stderr, "\n%s\n", out);
    gim_free(out);
    out = NULL;
    rc = run(&out, MPIRUN " 1 '%s' train '%s' --data '%s' --out '%s' " COMMON " : -np 1 '%s' train '%s' --data '%s' "
             "--out '%s' " COMMON, GIMC_PATH, model3, data12, dir, GIMC_PATH, model3b, data12, dir);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    CU_ASSERT(tt_has(out, "rank 1 was started with --batch 8, rank 0 --batch 16"));
    if (!tt_has(out, "--batch 8")) fprintf(stderr, "\n%s\n", out);
    gim_free(out);
    out = NULL;
    rc = run(&out, MPIRUN " 1 '%s' train '%s' --data '%s' --out '%s' " COMMON " : -np 1 '%s' train '%s' --data '%s' "
             "--out '%s' " COMMON " --seed 7", GIMC_PATH, model3, data12, dir, GIMC_PATH, model3, data12, dir);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    CU_ASSERT(tt_has(out, "rank 1 was started with --seed 7, rank 0 --seed 0"));
    if (!tt_has(out, "--seed 7")) fprintf(stderr, "\n%s\n", out);
    gim_free(out);
    out = NULL;
    rc = train(&out, 3, model2, dir, "");
    CU_ASSERT_NOT_EQUAL(rc, 0);
    CU_ASSERT(tt_has(out, "3 ranks for 2 modules"));
    gim_free(out);
}

/* ---- faults -------------------------------------------------------------------------- */

/* mpirun in the background on a long run; its pid. */
static pid_t spawn(const char *dir, const char *log, int ranks, const char *extra) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec " MPIRUN " %d '%s' train '%s' --data '%s' --out '%s' " COMMON
             " --epochs 100000 --save-every 5 %s >'%s' 2>&1 </dev/null", ranks, GIMC_PATH, model3, data12, dir, extra,
             log);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Waits (at most ~120 s) until dir holds a checkpoint. */
static bool wait_checkpoint(const char *dir) {
    for (int i = 0; i < 1200; i++) {
        struct stat st;
        if (stat(tt_weights(dir), &st) == 0) return true;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* The child of mpirun that is MPI rank r (from its environment). */
static pid_t rank_pid(pid_t mpirun, int r) {
    char cmd[256], *out = NULL;
    snprintf(cmd, sizeof cmd, "for p in $(pgrep -P %d); do tr '\\0' '\\n' < /proc/$p/environ | "
             "grep -qx OMPI_COMM_WORLD_RANK=%d && echo $p; done", (int)mpirun, r);
    run(&out, "%s", cmd);
    pid_t pid = out ? (pid_t)atoi(out) : 0;
    gim_free(out);
    return pid;
}

static int wait_exit(pid_t pid) {
    int st = 0;
    for (int i = 0; i < 600; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(-pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

/* The checkpoint left behind loads and resumes in one process. */
static void expect_resumable(const char *dir, const char *what) {
    char *out = NULL;
    int rc = train(&out, 0, model3, dir, "--epochs 1000000 --steps 1 --resume");
    /* --steps 1 is behind the saved position: nothing to train, a checkpoint */
    CU_ASSERT(tt_has(out, "resuming from"));
    if (!tt_has(out, "resuming from")) fprintf(stderr, "\n%s: %s\n", what, out ? out : "");
    expect_ok(rc, out, what);
}

/* Starts 3 ranks, and once a checkpoint exists sends sig to rank `victim`;
 * the job must end with a failure (not hang: wait_exit gives up after 60 s).
 * Returns mpirun's output (heap); the checkpoint left must resume. */
static char *signal_rank(const char *name, const char *extra, int victim_rank, int sig) {
    char dir[64], log[64];
    snprintf(dir, sizeof dir, "victim_%s", name);
    snprintf(log, sizeof log, "victim_%s.log", name);
    const char *d = tt_path(dir), *l = tt_path(log);
    pid_t pid = spawn(d, l, 3, extra);
    bool ok = wait_checkpoint(d);
    CU_ASSERT(ok);
    pid_t victim = ok ? rank_pid(pid, victim_rank) : 0;
    CU_ASSERT(victim > 0);
    if (victim > 0) kill(victim, sig);
    int rc = wait_exit(pid);
    CU_ASSERT(rc != 0 && rc != -1);
    size_t n;
    char *text = gim_read_file(l, &n);
    if (rc == 0 || rc == -1) fprintf(stderr, "\n%s: exit %d\n%s\n", name, rc, text ? text : "");
    expect_resumable(d, name);
    return text;
}

static void test_kill_9(void) {
    setup();
    char *text = signal_rank("kill9", "", 2, SIGKILL);
    /* mpirun names the rank; the start line names its module */
    CU_ASSERT(tt_has(text, "rank 2") && tt_has(text, "rank 2: module 3"));
    if (!tt_has(text, "rank 2")) fprintf(stderr, "\n%s\n", text ? text : "");
    gim_free(text);
}

/* A rank that stops answering (SIGSTOP: a hung machine) ends the run
 * within --peer-timeout, naming it; the last checkpoint resumes. */
static void test_peer_timeout(void) {
    setup();
    char *text = signal_rank("hang", "--peer-timeout 3", 1, SIGSTOP);
    CU_ASSERT(tt_has(text, "rank 1 (module 2) sent nothing for 3 s; stopping"));
    if (!tt_has(text, "sent nothing for 3 s")) fprintf(stderr, "\n%s\n", text ? text : "");
    gim_free(text);
}

/* Sends sig to mpirun running `ranks` ranks once a checkpoint exists; the
 * ranks must write the final one ("interrupted after"), which resumes;
 * mpirun's exit status is `want` (-1: any). */
static void expect_stopped_by(int sig, int ranks, int want, const char *name) {
    setup();
    char dir[64], log[64];
    snprintf(dir, sizeof dir, "stop_%s", name);
    snprintf(log, sizeof log, "stop_%s.log", name);
    const char *d = tt_path(dir), *l = tt_path(log);
    pid_t pid = spawn(d, l, ranks, "");
    CU_ASSERT(wait_checkpoint(d));
    kill(pid, sig);
    int rc = wait_exit(pid);
    CU_ASSERT(rc != -1);
    if (want >= 0) CU_ASSERT_EQUAL(rc, want);
    size_t n;
    char *text = gim_read_file(l, &n);
    CU_ASSERT(tt_has(text, "interrupted after"));
    if (!tt_has(text, "interrupted after") || (want >= 0 && rc != want))
        fprintf(stderr, "\n%s: exit %d\n%s\n", name, rc, text ? text : "");
    gim_free(text);
    expect_resumable(d, name);
}

/* SIGTERM (or Ctrl-C) to mpirun: Open MPI passes it on and kills the ranks
 * 1 s later, time enough for this model's final checkpoint; mpirun's own
 * exit status is then 1, whatever the ranks return. */
static void test_sigterm(void) { expect_stopped_by(SIGTERM, 2, -1, "SIGTERM"); }

/* SIGUSR1 to mpirun: passed on to every rank without a kill behind it;
 * every rank checkpoints and exits 130, and so does mpirun. */
static void test_sigusr1(void) { expect_stopped_by(SIGUSR1, 3, 130, "SIGUSR1"); }

int main(void) {
    if (run(NULL, "command -v mpirun") != 0) {
        printf("test_mpi: skipped: mpirun not found (scripts/setup.sh installs Open MPI)\n");
        return 0;
    }
    /* CI runs as root; Open MPI refuses that unless told twice */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    static gim_test tests[] = {
        {"lockstep on 2 ranks = one process, bit for bit", test_lockstep_bits},
        {"3 ranks <-> one process: checkpoints resume across", test_lockstep_resume_across},
        {"--refresh on 3 ranks = one process, bit for bit", test_refresh_bits},
        {"async on 3 ranks lowers every module's loss", test_async_lowers_losses},
        {"mismatched model, batch or seed refused; too many ranks", test_mismatch_refused},
        {"kill -9 of a rank: the job stops, the checkpoint resumes", test_kill_9},
        {"a rank that stops answering ends the run in --peer-timeout", test_peer_timeout},
        {"SIGTERM to mpirun: every rank checkpointed", test_sigterm},
        {"SIGUSR1 to mpirun: every rank checkpointed, exit 130", test_sigusr1},
        {NULL, NULL},
    };
    return tt_cleanup(gim_run_suite("mpi", tests));
}
