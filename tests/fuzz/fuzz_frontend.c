/* libFuzzer target for the front end: any bytes as a .gim source file go
 * through parsing, the train block, lowering (shapes), partitioning and
 * autodiff, the same stages `gimc check` and `gimc graph --backward` run.
 * Every input must end in diagnostics or a checked graph: no crash, no
 * sanitizer report, no leak, no hang.
 * The batch is the train block's (default 32), as in `gimc check`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "gim_compiler.h"

static FILE *fuzz_sink(void) {
    static FILE *sink;
    if (!sink) sink = fopen("/dev/null", "w");
    return sink;
}

/* Also compiled into tests/test_regress.c (with GIM_FUZZ_NO_MAIN), which
 * replays tests/regress/frontend/ through it. Returns gimc check's status:
 * 0 a checked graph, 1 diagnostics. */
int gim_fuzz_frontend(const uint8_t *data, size_t size) {
    int status = 1;
    gim_diag d;
    gim_diag_init(&d, fuzz_sink());
    gim_arena *arena = gim_arena_new();
    /* "fuzz.gim" in the stdlib directory: `import "conv.gim"` resolves as in a model */
    gim_program *p = gim_parse_program_text(&d, arena, "fuzz.gim", (const char *)data, size, NULL);
    if (p && !d.n_errors) {
        gim_train_config cfg;
        gim_train_config_defaults(&cfg);
        if (gim_config_from_program(&d, p, &cfg) == 0) {
            gim_graph *g = gim_lower(&d, p, cfg.batch);
            if (g) {
                gim_config_finish(&cfg, arena, g->model_name);
                if (gim_partition(&d, g, cfg.e2e) == 0) {
                    gim_print_check_table(fuzz_sink(), g);
                    status = 0;
                    if (gim_autodiff(&d, g) == 0) gim_print_dot(fuzz_sink(), g, true);
                }
                gim_graph_free(g);
            }
        }
    }
    gim_arena_free(arena);
    gim_diag_release(&d);
    return status;
}

#ifndef GIM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gim_fuzz_frontend(data, size);
    return 0;
}
#endif
