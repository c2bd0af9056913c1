/* gimc bench: how fast a model trains here.
 *
 * Times the compilation (source to native code for every module) and then
 * training steps on synthetic batches (the speed of a step does not depend on
 * the data), with every module stepping in turn as in the simultaneous
 * schedule. Prints a table on stderr and one JSON line on stdout, the format
 * bench/run.sh reads (bench/README.md). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "commands.h"
#include "gim_train.h"

/* CPU seconds of the process (every thread) or of the calling thread. */
static double bench_cpu(clockid_t which) {
    struct timespec t;
    clock_gettime(which, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const char bench_usage[] =
    "usage: gimc bench FILE.gim [--steps N] [--e2e] [--batch B] [--threads T] [--stdlib DIR]\n"
    "\n"
    "Times compilation and training steps (every module's forward, loss, backward\n"
    "and update on one batch; synthetic data). Prints a table on standard error and\n"
    "one JSON line on standard output: ms/step (median after 3 warm-up steps),\n"
    "examples/s, FLOPs per step, GFLOP/s, peak RSS, compile time, and the planned\n"
    "work memory per module.\n"
    "\n"
    "  --steps N      timed steps (default 50)\n"
    "  --e2e          the end-to-end variant: one module, the last loss\n"
    "  --batch B      batch size (default: the train block's)\n"
    "  --threads T    threads for parallel loops and matrix products (default: GIM_THREADS, else all cores)\n"
    "  --stdlib DIR   where imports not found next to the file are looked up\n"
    "  -h, --help     show this help\n";

int cmd_bench(int argc, char **argv) {
    gim_cli o;
    int status;
    if (gim_cli_parse(argc, argv, GIM_CLI_STEPS | GIM_CLI_E2E | GIM_CLI_BATCH | GIM_CLI_THREADS | GIM_CLI_STDLIB,
                      bench_usage, &o, &status))
        return status;
    int64_t steps = (o.given & GIM_CLI_STEPS) && o.steps > 0 ? o.steps : 50;
    const int warmup = 3;
    gim_session s;
    gim_session_init(&s);
    gim_exec_model *m = NULL;
    gim_train_state st;
    memset(&st, 0, sizeof st);
    float **slot = NULL;
    double *times = NULL;
    char err[1024];

    double t0 = bench_now();
    status = gim_session_compile(&s, &o, GIM_STAGE_NATIVE);
    if (status != GIMC_OK) goto done;
    m = s.model;
    double compile_s = bench_now() - t0;
    gim_rt_set_threads(s.cfg.threads);   /* 0: GIM_THREADS, else all cores; OpenBLAS one thread */
    int threads = gim_rt_threads();
    if (gim_train_state_init(&st, m, s.cfg.seed, err, sizeof err)) {
        fprintf(stderr, "gimc bench: error: %s\n", err);
        status = GIMC_BAD_INPUT;
        goto done;
    }
    /* One buffer per slot; inputs hold a fixed pseudo-random batch, labels 0..9. */
    slot = gim_calloc((size_t)m->n_slots, sizeof(float *));
    times = gim_calloc((size_t)steps, sizeof(double));
    if (!slot || !times) goto oom;
    for (int i = 0; i < m->n_slots; i++) {
        if (!(slot[i] = gim_malloc_aligned((size_t)m->slots[i].numel * sizeof(float)))) goto oom;
        if (m->slots[i].producer >= 0) continue;
        uint32_t x = 2463534242u;
        for (int64_t k = 0; k < m->slots[i].numel; k++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            if (m->slots[i].is_labels) ((int32_t *)slot[i])[k] = (int32_t)(x % 10);
            else slot[i][k] = (float)(x >> 8) / 16777216.0f * 2.0f - 1.0f;
        }
    }
    const float *in[64];
    float *out[64];
    double loss_sum = 0;
    double cpu_all = 0, cpu_main = 0;
    for (int64_t k = 0; k < warmup + steps; k++) {
        if (k == warmup) {
            cpu_all = bench_cpu(CLOCK_PROCESS_CPUTIME_ID);
            cpu_main = bench_cpu(CLOCK_THREAD_CPUTIME_ID);
        }
        double ts = bench_now();
        for (int mi = 0; mi < m->n_modules; mi++) {
            const gim_exec_module *mod = &m->modules[mi];
            const int32_t *labels = NULL;
            for (int i = 0; i < mod->n_inputs && i < 64; i++) {
                in[i] = slot[mod->inputs[i]];
                if (m->slots[mod->inputs[i]].is_labels) labels = (const int32_t *)in[i];
            }
            for (int i = 0; i < mod->n_exports && i < 64; i++) out[i] = slot[mod->exports[i]];
            gim_call c = {.inputs = in, .labels = labels, .params = st.params[mi], .grads = st.grads[mi],
                          .opt = st.opt[mi], .work = st.work[mi], .outputs = out, .step = (uint64_t)k + 1,
                          .seed = s.cfg.seed, .lr = (float)s.cfg.lr};
            loss_sum += mod->step(&c);
        }
        if (k >= warmup) times[k - warmup] = bench_now() - ts;
    }
    cpu_all = (bench_cpu(CLOCK_PROCESS_CPUTIME_ID) - cpu_all) / (double)steps;
    cpu_main = (bench_cpu(CLOCK_THREAD_CPUTIME_ID) - cpu_main) / (double)steps;
    if (!isfinite(loss_sum)) fprintf(stderr, "gimc bench: warning: a loss was not finite during the run\n");
    qsort(times, (size_t)steps, sizeof(double), cmp_double);
    double med = steps % 2 ? times[steps / 2] : 0.5 * (times[steps / 2 - 1] + times[steps / 2]);
    double flops = 0;
    double products = 0;   /* what the code multiplies: Winograd's fewer products, no dead gradients */
    for (int mi = 0; mi < m->n_modules; mi++) {
        flops += m->modules[mi].step_flops;
        products += m->modules[mi].step_products;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = (double)ru.ru_maxrss / 1024.0;
    const char *mode = s.cfg.e2e ? "e2e" : "greedy";

    fprintf(stderr, "%s (%s), batch %" PRId64 ", %d thread%s\n", m->name, mode, m->batch, threads, threads == 1 ? "" : "s");
    fprintf(stderr, "  compile        %8.3f s (source to native code, %d module%s)\n", compile_s, m->n_modules,
            m->n_modules == 1 ? "" : "s");
    fprintf(stderr, "  step           %8.2f ms median of %" PRId64 " (min %.2f, max %.2f)\n", 1e3 * med, steps,
            1e3 * times[0], 1e3 * times[steps - 1]);
    /* On a loaded machine the wall time mostly measures the others' load; the
     * CPU time per step does not: all threads' is the work, the calling
     * thread's bounds the step on an otherwise idle machine from below. */
    fprintf(stderr, "  cpu            %8.2f ms/step all threads, %.2f ms/step calling thread\n", 1e3 * cpu_all,
            1e3 * cpu_main);
    fprintf(stderr, "  throughput     %8.1f examples/s\n", (double)m->batch / med);
    fprintf(stderr, "  arithmetic     %8.2f GFLOP/step, %.1f GFLOP/s\n", flops / 1e9, flops / med / 1e9);
    fprintf(stderr, "  products       %8.2f GFLOP/step executed, %.1f GFLOP per CPU-second\n", products / 1e9,
            cpu_all > 0 ? products / cpu_all / 1e9 : 0.0);
    fprintf(stderr, "  peak RSS       %8.1f MiB\n", rss_mb);
    int64_t arena = 0;
    for (int mi = 0; mi < m->n_modules; mi++) {
        fprintf(stderr, "  module %-2d      %8.1f MiB planned work memory, %.1f MiB parameters\n", mi + 1,
                4.0 * (double)m->modules[mi].n_work_floats / (1 << 20),
                4.0 * (double)m->modules[mi].n_param_floats / (1 << 20));
        if (m->modules[mi].n_work_floats > arena) arena = m->modules[mi].n_work_floats;
    }
    if (m->n_modules > 1)
        fprintf(stderr, "  work arena     %8.1f MiB, the largest module's: the modules step one at a time\n",
                4.0 * (double)arena / (1 << 20));

    printf("{\"impl\": \"gim\", \"mode\": \"%s\", \"model\": \"%s\", \"batch\": %" PRId64 ", \"steps\": %" PRId64
           ", \"threads\": %d, \"ms_per_step\": %.3f, \"cpu_ms_per_step\": %.3f, \"examples_per_s\": %.1f, "
           "\"flops_per_step\": %.0f, \"products_per_step\": %.0f, \"gflops\": %.2f, \"peak_rss_mb\": %.1f, "
           "\"compile_s\": %.4f, \"activation_bytes\": [",
           mode, m->name, m->batch, steps, threads, 1e3 * med, 1e3 * cpu_all, (double)m->batch / med, flops, products,
           flops / med / 1e9, rss_mb, compile_s);
    for (int mi = 0; mi < m->n_modules; mi++)
        printf("%s%" PRId64, mi ? ", " : "", 4 * m->modules[mi].n_work_floats);
    printf("], \"work_arena_bytes\": %" PRId64 "}\n", 4 * arena);
    goto done;
oom:
    fprintf(stderr, "gimc bench: error: out of memory\n");
    status = GIMC_BAD_INPUT;
done:
    if (slot && m)
        for (int i = 0; i < m->n_slots; i++) gim_free(slot[i]);
    gim_free(slot);
    gim_free(times);
    if (m) gim_train_state_free(&st, m);
    gim_session_release(&s);
    return status;
}
