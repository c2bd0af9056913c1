/* Plots by gnuplot (Debian gnuplot-nox): the report writes a script and its
 * data into a temporary directory, runs `gnuplot SCRIPT` there with its
 * standard error captured in a file, and reads back the SVG the script
 * wrote. gnuplot is found on PATH, or named by GIM_GNUPLOT. */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gim_util.h"

/* The gnuplot to run: $GIM_GNUPLOT, else the first executable `gnuplot` on
 * PATH; false when there is none. */
bool gim_gnuplot_find(char *path, size_t n) {
    const char *env = getenv("GIM_GNUPLOT");
    if (env && *env) {
        snprintf(path, n, "%s", env);
        return access(path, X_OK) == 0;
    }
    const char *p = getenv("PATH");
    if (!p || !*p) p = "/usr/local/bin:/usr/bin:/bin";
    while (*p) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        snprintf(path, n, "%.*s/gnuplot", (int)len, len ? p : ".");
        if (access(path, X_OK) == 0) return true;
        p += len + (colon ? 1 : 0);
    }
    snprintf(path, n, "gnuplot");
    return false;
}

int gim_gnuplot_check(char *err, size_t errlen) {
    char exe[1024];
    if (!gim_gnuplot_find(exe, sizeof exe))
        return gim_errf(err, errlen,
                        "gnuplot not found (%s): the report's plots are drawn by gnuplot; install it with "
                        "'apt-get install gnuplot-nox' (scripts/setup.sh does), or name it in GIM_GNUPLOT",
                        getenv("GIM_GNUPLOT") && *getenv("GIM_GNUPLOT") ? exe : "not on PATH");
    return 0;
}

int gim_gnuplot_run(const char *dir, const char *script_name, char *err, size_t errlen) {
    char exe[1024], log[1200];
    if (!gim_gnuplot_find(exe, sizeof exe)) return gim_gnuplot_check(err, errlen);
    snprintf(log, sizeof log, "%s/gnuplot.err", dir);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return gim_errf(err, errlen, "cannot run gnuplot: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nul = open("/dev/null", O_RDWR);
        if (fd < 0 || nul < 0 || chdir(dir)) _exit(126);
        dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        signal(SIGPIPE, SIG_DFL);
        execl(exe, "gnuplot", script_name, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return gim_errf(err, errlen, "cannot wait for gnuplot: %s", strerror(errno));
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    /* gnuplot's own words, first lines */
    size_t len = 0;
    char *text = gim_read_file(log, &len);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        gim_errf(err, errlen, "cannot run %s", exe);
    else if (WIFSIGNALED(st))
        gim_errf(err, errlen, "gnuplot (%s) was killed by signal %d", exe, WTERMSIG(st));
    else
        gim_errf(err, errlen, "gnuplot (%s) failed with status %d: %.600s", exe, WEXITSTATUS(st),
                 text && len ? text : "(no message)");
    gim_free(text);
    return -1;
}
