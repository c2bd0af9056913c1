/* Progress on the console, shared by training, feature extraction and the
 * probe: a bar redrawn in place (about five times a second) when the output
 * is a terminal, plain lines otherwise (a log gets a line every 5% of the
 * work, at most one every `min_gap` seconds, and one at the end), a rate
 * over windows of about a second, and the time left from that rate. Callers say what the line is about (`head`),
 * the word that counts its steps in plain lines (`step`), and what follows
 * the count (`tail`: losses, rate, ETA). */
#define _GNU_SOURCE
#include "gim_train.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

static double progress_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void gim_progress_init(gim_progress *p, FILE *out) {
    p->out = out;
    p->tty = out && isatty(fileno(out));
    p->t_start = p->t_window = p->t_last_draw = progress_now();
    p->window_n = 0;
    p->rate = 0;
    p->min_gap = 0;
}

void gim_progress_count(gim_progress *p, int64_t n) {
    p->window_n += n;
    double t = progress_now();
    if (t - p->t_window >= 1.0 || p->rate == 0) {
        if (t > p->t_window) p->rate = (double)p->window_n / (t - p->t_window);
        p->window_n = 0;
        p->t_window = t;
    }
}

bool gim_progress_due(gim_progress *p, int64_t done, int64_t total) {
    if (done == total) return true;
    if (p->tty) {
        double t = progress_now();
        if (t - p->t_last_draw < 0.2) return false;
        p->t_last_draw = t;
        return true;
    }
    int64_t every = total / 20 > 0 ? total / 20 : 1;
    if (done % every) return false;
    double t = progress_now();
    if (t - p->t_last_draw < p->min_gap) return false;
    p->t_last_draw = t;
    return true;
}

double gim_progress_elapsed(const gim_progress *p) { return progress_now() - p->t_start; }

char *gim_progress_eta(char *buf, size_t n, double seconds) {
    if (!(seconds >= 0) || seconds > 360000) {
        snprintf(buf, n, "--:--");
        return buf;
    }
    int t = (int)(seconds + 0.5);
    if (t >= 3600) snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%d:%02d", t / 60, t % 60);
    return buf;
}

void gim_progress_show(const gim_progress *p, const char *head, const char *step, int64_t done, int64_t total,
                       const char *tail, bool final) {
    if (!p->out) return;
    if (p->tty) {
        enum { WIDTH = 24 };
        int fill = total > 0 ? (int)(WIDTH * (done < total ? done : total) / total) : WIDTH;
        char bar[WIDTH + 1];
        for (int i = 0; i < WIDTH; i++) bar[i] = i < fill ? '#' : '.';
        bar[WIDTH] = 0;
        fprintf(p->out, "\r\033[K%s [%s] %lld/%lld%s", head, bar, (long long)done, (long long)total, tail);
        if (final) fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s %s %lld/%lld%s\n", head, step, (long long)done, (long long)total, tail);
    }
    fflush(p->out);
}
