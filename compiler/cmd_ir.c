/* `gimc ir`: the generated code of a model, for reading and for other tools:
 * LLVM IR before (-O0) or after optimisation, the host assembly, or an
 * object file. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"

static const char ir_usage[] =
    "usage: gimc ir FILE.gim [--module N] [--fn forward|step] [-O0..-O3] [--asm] [-c -o F.o]\n"
    "\n"
    "Prints the LLVM IR generated for the model: per module, gim_m<N>_step (forward,\n"
    "loss, backward, optimizer update) and gim_m<N>_forward, each calling one\n"
    "function per graph node, named by its source path (e.g. conv_pair.1/conv2d.1).\n"
    "\n"
    "  --module N     only module N (1-based; default: every module)\n"
    "  --fn F         only the forward or the step function\n"
    "  -O0 .. -O3     optimisation level (default -O2; -O0 prints the IR as generated)\n"
    "  --asm          print the host assembly instead of IR\n"
    "  -c             write an object file (needs -o)\n"
    "  -o FILE        write to FILE instead of standard output\n"
    "  --batch N      bind the batch size (default: the train block's, else 32)\n"
    "  --e2e          the end-to-end variant (one module, the last loss)\n"
    "  --stdlib DIR   where imports not found next to the file are looked up\n"
    "  -h, --help     show this help\n";

int cmd_ir(int argc, char **argv) {
    gim_cli o;
    int status;
    unsigned allowed = GIM_CLI_MODULE | GIM_CLI_FN | GIM_CLI_OPT_LEVEL | GIM_CLI_ASM | GIM_CLI_OBJECT |
                       GIM_CLI_OUTPUT | GIM_CLI_BATCH | GIM_CLI_E2E | GIM_CLI_STDLIB;
    if (gim_cli_parse(argc, argv, allowed, ir_usage, &o, &status)) return status;
    if (o.fn && strcmp(o.fn, "forward") && strcmp(o.fn, "step")) {
        fprintf(stderr, "gimc ir: --fn expects forward or step; got '%s'\n%s", o.fn, ir_usage);
        return GIMC_USAGE;
    }
    if (o.object && !o.output) {
        fprintf(stderr, "gimc ir: -c writes an object file and needs -o FILE.o\n%s", ir_usage);
        return GIMC_USAGE;
    }
    if (o.object && o.asm_out) {
        fprintf(stderr, "gimc ir: --asm and -c exclude each other\n%s", ir_usage);
        return GIMC_USAGE;
    }
    gim_session s;
    gim_session_init(&s);
    status = gim_session_compile(&s, &o, GIM_STAGE_AUTODIFF);
    if (status == GIMC_OK) {
        FILE *out = stdout;
        if (o.output && !(out = fopen(o.output, o.object ? "wb" : "w"))) {
            fprintf(stderr, "gimc ir: cannot write '%s': %s\n", o.output, strerror(errno));
            status = GIMC_BAD_INPUT;
        } else {
            gim_fuse(s.graph);   /* the code gimc train runs */
            gim_cg_options co = {.opt_level = o.opt_level, .cfg = &s.cfg};
            gim_ir_what what = o.object ? GIM_IR_OBJECT : o.asm_out ? GIM_IR_ASM : GIM_IR_LLVM;
            if (gim_emit_ir(&s.diag, s.graph, &co, o.module - 1, o.fn, what, out) != 0) status = GIMC_BAD_INPUT;
            if (out != stdout && fclose(out)) {
                fprintf(stderr, "gimc ir: cannot write '%s': %s\n", o.output, strerror(errno));
                status = GIMC_BAD_INPUT;
            }
        }
    }
    gim_session_release(&s);
    return status;
}
