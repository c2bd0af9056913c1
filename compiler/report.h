/* gimc report: one self-contained HTML page of a run (report.c), its plots
 * drawn by gnuplot (gnuplot.c), and run.json, the run's settings as gimc
 * train records them (run_json.c). Private to the driver. */
#ifndef GIM_REPORT_H
#define GIM_REPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "gim_compiler.h"

/* The gnuplot to run ($GIM_GNUPLOT, else `gnuplot` on PATH) into path;
 * false when there is none. */
bool gim_gnuplot_find(char *path, size_t n);
/* 0 when there is a gnuplot to run, else -1 with err saying what to install. */
int gim_gnuplot_check(char *err, size_t errlen);
/* Runs `gnuplot SCRIPT` in dir (SCRIPT a file there that writes its own
 * output files); standard error is kept in dir/gnuplot.err and quoted in
 * err when gnuplot fails. Returns 0 or -1. */
int gim_gnuplot_run(const char *dir, const char *script_name, char *err, size_t errlen);

/* Writes out_path (NULL: RUN_DIR/report.html, atomically) from what run_dir
 * holds: metrics.csv, run.json, eval.json. Returns 0 when every input was
 * read; 1 when the page was written but says that an input is missing or
 * broken (the broken ones also in err, one per line); -1 when no page was
 * written (err). */
int gim_report_write(const char *run_dir, const char *out_path, char *err, size_t errlen);

/* The model's table as `gimc check` prints it (heap, free()), taken before
 * code generation rewrites the graph. */
char *gim_check_table_text(const gim_graph *g);
/* run.json in dir: the model, the command line, the settings of the run,
 * and the model's table (check_table, from gim_check_table_text). Written
 * when training starts. */
int gim_run_json_write(const char *dir, const char *model, const char *model_file, int n_modules,
                       const char *check_table, const gim_train_config *cfg, const char *data_dir, int argc,
                       char **argv, char *err, size_t errlen);

#endif
