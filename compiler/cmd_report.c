/* gimc report RUN_DIR: the run's page, RUN_DIR/report.html (report.c). */
#include <stdio.h>

#include "commands.h"
#include "report.h"

static const char report_usage[] =
    "usage: gimc report RUN_DIR [-o FILE]\n"
    "\n"
    "Writes one self-contained page (RUN_DIR/report.html; -o FILE elsewhere) from\n"
    "what the run directory holds: each module's training loss against steps,\n"
    "raw and smoothed, and examples/s (metrics.csv); the settings and the model's\n"
    "table (run.json); the linear probe's accuracies beside random init\n"
    "(eval.json, from gimc eval). The plots are drawn by gnuplot (gnuplot-nox;\n"
    "GIM_GNUPLOT names another). `gimc train --report` refreshes the page at\n"
    "every checkpoint.\n"
    "\n"
    "  -o FILE            write the page to FILE\n"
    "  -h, --help         show this help\n"
    "\n"
    "Exit status: 0 written; 1 written but an input is broken (said on the page\n"
    "and here), or not written (no run there, gnuplot missing or failing); 2 bad usage.\n";

int cmd_report(int argc, char **argv) {
    gim_cli o;
    int status;
    if (gim_cli_parse(argc, argv, GIM_CLI_OUTPUT, report_usage, &o, &status)) return status;
    char err[4096];
    int rc = gim_report_write(o.file, o.output, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "gimc report: error: %s\n", err);
        return GIMC_BAD_INPUT;
    }
    if (o.output) printf("report: %s\n", o.output);
    else printf("report: %s/report.html\n", o.file);
    if (rc > 0) {
        fprintf(stderr, "gimc report: error: %s\n", err);
        return GIMC_BAD_INPUT;
    }
    return GIMC_OK;
}
