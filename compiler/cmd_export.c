/* `gimc export`: a trained module as a C function another program links:
 * DIR/<model>_m<K>.o (code and weights) and DIR/<model>_m<K>.h. The
 * weights file is checked against the model as `gimc eval` checks it; the
 * object is made by gim_export (compiler/export.c). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "gim_train.h"

static const char export_usage[] =
    "usage: gimc export FILE.gim --weights W [--module K] -o DIR\n"
    "\n"
    "Writes DIR/<model>_m<K>.o and DIR/<model>_m<K>.h: a C function,\n"
    "<model>_m<K>_features(x, n, features), computing module K's features (the\n"
    "ones `gimc eval` probes) for n examples, with the weights of W inside the\n"
    "object. Link it with OpenBLAS and libm only: cc prog.c DIR/<model>_m<K>.o\n"
    "-lopenblas -lm.\n"
    "\n"
    "  --weights W    trained weights (weights.safetensors); a file that does not\n"
    "                 fit the model is refused, naming the first difference\n"
    "  --module K     the module whose features to compute (1-based; default: the last)\n"
    "  -o DIR         output directory (created if missing)\n"
    "  --batch N      examples computed at once (default: the train block's, else 32)\n"
    "  -O0 .. -O3     optimisation level (default -O2)\n"
    "  --stdlib DIR   where imports not found next to the file are looked up\n"
    "  -h, --help     show this help\n";

/* <model>_m<K> with every character that cannot be in a C identifier made '_'. */
static void export_prefix(char *buf, size_t size, const char *model, int module) {
    snprintf(buf, size, "%s%s_m%d", isdigit((unsigned char)model[0]) ? "m_" : "", model, module);
    for (char *p = buf; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_') *p = '_';
}

static FILE *open_out(const char *dir, const char *name, const char *ext, char *path, size_t size) {
    snprintf(path, size, "%s/%s%s", dir, name, ext);
    FILE *f = fopen(path, "wb");
    if (!f) fprintf(stderr, "gimc export: cannot write '%s': %s\n", path, strerror(errno));
    return f;
}

int cmd_export(int argc, char **argv) {
    gim_cli o;
    int status;
    if (gim_cli_parse(argc, argv,
                      GIM_CLI_WEIGHTS | GIM_CLI_MODULE | GIM_CLI_OUTPUT | GIM_CLI_BATCH | GIM_CLI_OPT_LEVEL |
                          GIM_CLI_STDLIB,
                      export_usage, &o, &status))
        return status;
    if (!o.weights) {
        fprintf(stderr, "gimc export: --weights FILE is required\n\n%s", export_usage);
        return GIMC_USAGE;
    }
    if (!o.output) {
        fprintf(stderr, "gimc export: -o DIR is required\n\n%s", export_usage);
        return GIMC_USAGE;
    }
    /* profiling hooks live in gimc; an exported object must not call them */
    unsetenv("GIM_PROFILE");
    gim_session s;
    gim_session_init(&s);
    gim_exec_model *em = NULL;
    gim_train_state st;
    bool have_st = false;
    FILE *obj = NULL, *hdr = NULL;
    char obj_path[4096] = "", hdr_path[4096] = "";
    char err[2048];
    status = gim_session_compile(&s, &o, GIM_STAGE_AUTODIFF);
    if (status != GIMC_OK) goto done;
    status = GIMC_BAD_INPUT;
    gim_fuse(s.graph);   /* the code gimc eval runs */
    gim_cg_options co = {.opt_level = o.opt_level, .cfg = &s.cfg};
    if (!(em = gim_describe(&s.diag, s.graph, &co))) goto done;
    int module = o.module ? o.module : em->n_modules;
    if (module > em->n_modules) {
        fprintf(stderr, "gimc export: --module %d does not exist: %s has %d module%s\n", module, o.file, em->n_modules,
                em->n_modules == 1 ? "" : "s");
        status = GIMC_USAGE;
        goto done;
    }
    /* the weights, checked as gimc eval checks them (an end-to-end file may
     * lack the intermediate InfoNCE maps, which no feature reads) */
    if (gim_train_state_init(&st, em, s.cfg.seed, err, sizeof err)) goto fail;
    have_st = true;
    char note[2048];
    if (gim_weights_load_probe(em, &st, o.weights, note, sizeof note, err, sizeof err)) goto fail;
    if (note[0]) fprintf(stderr, "gimc export: note: %s\n", note);

    if (mkdir(o.output, 0777) && errno != EEXIST) {
        fprintf(stderr, "gimc export: cannot create the directory '%s': %s\n", o.output, strerror(errno));
        goto done;
    }
    char prefix[256];
    export_prefix(prefix, sizeof prefix, em->name, module);
    if (!(obj = open_out(o.output, prefix, ".o", obj_path, sizeof obj_path)) ||
        !(hdr = open_out(o.output, prefix, ".h", hdr_path, sizeof hdr_path)))
        goto done;
    gim_export_options xo = {.module = module - 1, .prefix = prefix, .model_file = o.file, .layout = em,
                             .params = st.params};
    if (gim_export(&s.diag, s.graph, &co, &xo, obj, hdr) != 0) goto done;
    int bad = ferror(obj) | ferror(hdr);
    bad |= fclose(obj);
    bad |= fclose(hdr);
    obj = hdr = NULL;
    if (bad) {
        fprintf(stderr, "gimc export: cannot write '%s' or '%s': %s\n", obj_path, hdr_path, strerror(errno));
        goto done;
    }
    printf("module %d of %s: %s, %s\n", module, em->name, obj_path, hdr_path);
    status = GIMC_OK;
    goto done;
fail:
    fprintf(stderr, "gimc export: error: %s\n", err);
done:
    if (obj) fclose(obj);
    if (hdr) fclose(hdr);
    /* no half-written files on failure */
    if (status != GIMC_OK) {
        if (obj_path[0]) remove(obj_path);
        if (hdr_path[0]) remove(hdr_path);
    }
    if (have_st) gim_train_state_free(&st, em);
    gim_exec_model_free(em);
    gim_session_release(&s);
    return status;
}
