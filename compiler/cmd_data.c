/* gimc data speech: a synthetic speaker-identification corpus.
 *
 * A "speaker" is a fixed choice of espeak-ng voice and variant, pitch and
 * speed, plus a recording channel made of sox effects (a high-pass and a
 * low-pass edge and one peaking equaliser band). Each utterance reads a
 * sentence from stdlib/sentences.txt with the speaker's settings moved a
 * little (pitch, speed, loudness) and a background noise at a random level,
 * so no single number tells two speakers apart. Files land in LibriSpeech's
 * layout, SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac (16 kHz, 16 bit), which
 * the audio reader (runtime/audio.c) reads like the real corpus.
 *
 * Every choice is drawn from (seed, stream, counter), espeak-ng is
 * deterministic, the noise is written here from the same generator, and sox
 * runs with -R: the same seed gives the same files. The corpus is built in
 * DIR.partial and renamed to DIR when complete, so an interrupted run never
 * leaves something that looks finished. espeak-ng and sox run as child
 * processes, a few at a time. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "gim_runtime.h"
#include "gim_util.h"

#define SP_RATE 16000
#define SP_NOISES 8              /* noise files; each utterance picks one */
#define SP_NOISE_SECONDS 20      /* longer than any sentence */
#define SP_MAX_JOBS 16

/* Random streams of the generator (their own seed space: the corpus seed). */
enum { SP_STREAM_SPEAKER = 1, SP_STREAM_UTT = 2, SP_STREAM_NOISE = 3 };

static const char *const sp_voices[] = {"en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp",
                                        "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"};
static const char *const sp_variants[] = {"m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"};
#define SP_COUNT(a) ((int)(sizeof a / sizeof a[0]))

typedef struct sp_speaker {
    int id, chapter;
    const char *voice, *variant;
    double pitch, speed;           /* espeak-ng -p (0..99), -s (words per minute) */
    double highpass, lowpass;      /* Hz */
    double eq_freq, eq_gain;       /* Hz, dB */
} sp_speaker;

typedef struct sp_utt {
    int speaker, index;
    const char *text;
    int pitch, speed, amplitude;   /* espeak-ng -p, -s, -a */
    int noise;                     /* which noise file */
    double noise_level;            /* its amplitude in the mix */
    char out[1400];                /* the .flac */
} sp_utt;

/* Uniform in [lo, hi) from (seed, stream, counter). */
static double sp_uniform(uint64_t seed, uint64_t stream, uint64_t counter, double lo, double hi) {
    return lo + (hi - lo) * (double)(gim_rt_rand_u64(seed, stream, counter) >> 11) * 0x1p-53;
}

static int sp_pick(uint64_t seed, uint64_t stream, uint64_t counter, int n) {
    return (int)(gim_rt_rand_u64(seed, stream, counter) % (uint64_t)n);
}

static void sp_make_speaker(uint64_t seed, int s, sp_speaker *p) {
    uint64_t c = (uint64_t)s * 16;
    p->id = 100 + 37 * s + sp_pick(seed, SP_STREAM_SPEAKER, c, 37);
    p->chapter = 1000 + sp_pick(seed, SP_STREAM_SPEAKER, c + 1, 9000);
    p->voice = sp_voices[sp_pick(seed, SP_STREAM_SPEAKER, c + 2, SP_COUNT(sp_voices))];
    p->variant = sp_variants[sp_pick(seed, SP_STREAM_SPEAKER, c + 3, SP_COUNT(sp_variants))];
    p->pitch = sp_uniform(seed, SP_STREAM_SPEAKER, c + 4, 25, 75);
    p->speed = sp_uniform(seed, SP_STREAM_SPEAKER, c + 5, 135, 185);
    p->highpass = sp_uniform(seed, SP_STREAM_SPEAKER, c + 6, 50, 300);
    p->lowpass = sp_uniform(seed, SP_STREAM_SPEAKER, c + 7, 3000, 7500);
    p->eq_freq = sp_uniform(seed, SP_STREAM_SPEAKER, c + 8, 300, 3000);
    p->eq_gain = sp_uniform(seed, SP_STREAM_SPEAKER, c + 9, -8, 8);
}

/* The utterance's variation around its speaker. */
static void sp_make_utt(uint64_t seed, const sp_speaker *p, int s, int u, char **sentences, int n_sentences,
                        sp_utt *t) {
    uint64_t c = ((uint64_t)s << 32 | (uint64_t)u) * 8;
    t->speaker = s;
    t->index = u;
    t->text = sentences[sp_pick(seed, SP_STREAM_UTT, c, n_sentences)];
    t->pitch = (int)lround(p->pitch + sp_uniform(seed, SP_STREAM_UTT, c + 1, -5, 5));
    t->speed = (int)lround(p->speed * sp_uniform(seed, SP_STREAM_UTT, c + 2, 0.92, 1.08));
    t->amplitude = (int)lround(sp_uniform(seed, SP_STREAM_UTT, c + 3, 70, 130));
    t->noise = sp_pick(seed, SP_STREAM_UTT, c + 4, SP_NOISES);
    t->noise_level = sp_uniform(seed, SP_STREAM_UTT, c + 5, 0.005, 0.05);
}

/* ---- child processes -------------------------------------------------------------- */

/* True when `name` is an executable on PATH. */
static bool sp_on_path(const char *name) {
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path; *p;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char full[4096];
        if (n && n + strlen(name) + 2 < sizeof full) {
            snprintf(full, sizeof full, "%.*s/%s", (int)n, p, name);
            if (access(full, X_OK) == 0) return true;
        }
        p += n + (e ? 1 : 0);
    }
    return false;
}

/* Starts argv[0] with its standard output and error going to `log`. */
static pid_t sp_spawn(char *const *argv, const char *log) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid != 0) return pid;   /* the parent, or -1 */
    FILE *f = freopen(log, "w", stdout);
    if (f) dup2(fileno(stdout), 2);
    execvp(argv[0], argv);
    _exit(127);
}

/* ---- the noise ------------------------------------------------------------------------ */

/* A noise darker than white (white noise plus some of it through a one-pole
 * low-pass, scaled to a peak of 0.9), seeded, at the speech's rate. */
static int sp_write_noise(const char *path, int rate, uint64_t seed, int k, char *err, size_t errlen) {
    SF_INFO info = {.samplerate = rate, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_FLOAT};
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    if (!f) return gim_errf(err, errlen, "%s: cannot write: %s", path, sf_strerror(NULL));
    int64_t n = (int64_t)rate * SP_NOISE_SECONDS;
    float *x = gim_malloc(sizeof(float) * (size_t)n);
    if (!x) {
        sf_close(f);
        return gim_errf(err, errlen, "out of memory");
    }
    double y = 0, peak = 1e-9;
    for (int64_t i = 0; i < n; i++) {
        double w = sp_uniform(seed, SP_STREAM_NOISE, (uint64_t)k << 40 | (uint64_t)i, -1, 1);
        y = 0.95 * y + w;
        double v = 0.3 * y + w;
        x[i] = (float)v;
        if (fabs(v) > peak) peak = fabs(v);
    }
    for (int64_t i = 0; i < n; i++) x[i] = (float)(x[i] / peak * 0.9);
    int rc = sf_writef_float(f, x, n) == n ? 0 : gim_errf(err, errlen, "%s: cannot write: %s", path, sf_strerror(f));
    sf_close(f);
    gim_free(x);
    return rc;
}

/* ---- the job list --------------------------------------------------------------------- */

typedef struct sp_job {
    pid_t pid;                 /* 0: free */
    int stage;                 /* 1 espeak-ng, 2 sox */
    int64_t utt;
    char wav[1400], log[1400];
} sp_job;

typedef struct sp_run {
    const char *dir;           /* DIR.partial */
    sp_speaker *speakers;
    sp_utt *utts;
    int64_t n_utts;
    int noise_rate;            /* espeak-ng's rate, learnt from the first file */
} sp_run;

static int sp_start_espeak(sp_run *r, sp_job *j, int64_t u) {
    const sp_utt *t = &r->utts[u];
    const sp_speaker *p = &r->speakers[t->speaker];
    char voice[64], pitch[16], speed[16], amp[16];
    snprintf(voice, sizeof voice, "%s+%s", p->voice, p->variant);
    snprintf(pitch, sizeof pitch, "%d", t->pitch);
    snprintf(speed, sizeof speed, "%d", t->speed);
    snprintf(amp, sizeof amp, "%d", t->amplitude);
    char *argv[] = {"espeak-ng", "-v", voice, "-p", pitch, "-s", speed, "-a", amp, "-w", j->wav, (char *)t->text, NULL};
    j->utt = u;
    j->stage = 1;
    j->pid = sp_spawn(argv, j->log);
    return j->pid > 0 ? 0 : -1;
}

static int sp_start_sox(sp_run *r, sp_job *j, char *err, size_t errlen) {
    const sp_utt *t = &r->utts[j->utt];
    const sp_speaker *p = &r->speakers[t->speaker];
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *f = sf_open(j->wav, SFM_READ, &info);
    if (!f) return gim_errf(err, errlen, "espeak-ng wrote no readable audio to %s: %s", j->wav, sf_strerror(NULL));
    sf_close(f);
    if (info.samplerate != r->noise_rate)
        return gim_errf(err, errlen, "%s: espeak-ng wrote %d Hz, expected %d Hz", j->wav, info.samplerate, r->noise_rate);
    if (info.frames > (int64_t)r->noise_rate * SP_NOISE_SECONDS)
        return gim_errf(err, errlen, "%s: longer than %d s: make the sentence shorter", j->wav, SP_NOISE_SECONDS);
    char noise[1400], level[32], len[32], hp[32], lp[32], eqf[32], eqg[32];
    snprintf(noise, sizeof noise, "%s/.noise-%d.wav", r->dir, t->noise);
    snprintf(level, sizeof level, "%.4f", t->noise_level);
    snprintf(len, sizeof len, "%" PRId64 "s", (int64_t)info.frames);
    snprintf(hp, sizeof hp, "%.0f", p->highpass);
    snprintf(lp, sizeof lp, "%.0f", p->lowpass);
    snprintf(eqf, sizeof eqf, "%.0f", p->eq_freq);
    snprintf(eqg, sizeof eqg, "%.1f", p->eq_gain);
    /* speech + noise (mixed, then cut to the speech's length), the channel,
     * then conversion to 16 kHz, 16 bit */
    char *argv[] = {"sox", "-R", "-V1", "-m", "-v", "0.7", j->wav, "-v", level, noise,
                    "-r", "16000", "-b", "16", (char *)t->out, "trim", "0", len,
                    "highpass", hp, "lowpass", lp, "equalizer", eqf, "1q", eqg, NULL};
    j->stage = 2;
    j->pid = sp_spawn(argv, j->log);
    return j->pid > 0 ? 0 : gim_errf(err, errlen, "cannot start sox: %s", strerror(errno));
}

/* The log of a failed child, for the error message. */
static void sp_failure(const sp_job *j, const char *what, int status, char *err, size_t errlen) {
    size_t n = 0;
    char *log = gim_read_file(j->log, &n);
    if (log)
        while (n && (log[n - 1] == '\n' || log[n - 1] == '\r')) log[--n] = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        gim_errf(err, errlen, "%s could not be run", what);
    else
        gim_errf(err, errlen, "%s failed (%s %d) on utterance %" PRId64 ": %.400s", what,
                 WIFEXITED(status) ? "exit status" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                 j->utt, log && *log ? log : "(no message)");
    gim_free(log);
}

static int sp_run_all(sp_run *r, int n_jobs, char *err, size_t errlen) {
    sp_job jobs[SP_MAX_JOBS];
    memset(jobs, 0, sizeof jobs);
    for (int k = 0; k < n_jobs; k++) {
        snprintf(jobs[k].wav, sizeof jobs[k].wav, "%s/.job-%d.wav", r->dir, k);
        snprintf(jobs[k].log, sizeof jobs[k].log, "%s/.job-%d.log", r->dir, k);
    }
    int64_t next = 0, done = 0;
    int running = 0, rc = 0;
    time_t last = time(NULL);
    while (done < r->n_utts) {
        for (int k = 0; k < n_jobs && !rc && next < r->n_utts; k++) {
            if (jobs[k].pid) continue;
            if (sp_start_espeak(r, &jobs[k], next)) rc = gim_errf(err, errlen, "cannot start espeak-ng: %s", strerror(errno));
            else next++, running++;
        }
        if (!running) break;
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            rc = gim_errf(err, errlen, "waiting for espeak-ng and sox: %s", strerror(errno));
            break;
        }
        sp_job *j = NULL;
        for (int k = 0; k < n_jobs; k++)
            if (jobs[k].pid == pid) j = &jobs[k];
        if (!j) continue;
        j->pid = 0;
        running--;
        if (rc) continue;                        /* draining after a failure */
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            sp_failure(j, j->stage == 1 ? "espeak-ng" : "sox", status, err, errlen);
            rc = -1;
            continue;
        }
        if (j->stage == 1) {
            if (sp_start_sox(r, j, err, errlen)) rc = -1;
            else running++;
            continue;
        }
        done++;
        if (time(NULL) - last >= 5 || done == r->n_utts) {
            last = time(NULL);
            printf("  %" PRId64 "/%" PRId64 " utterances\n", done, r->n_utts);
            fflush(stdout);
        }
    }
    while (running > 0) {                        /* after a failure: reap what still runs */
        if (waitpid(-1, NULL, 0) < 0 && errno != EINTR) break;
        running--;
    }
    for (int k = 0; k < n_jobs; k++) {
        unlink(jobs[k].wav);
        unlink(jobs[k].log);
    }
    return rc;
}

/* ---- the command ---------------------------------------------------------------------- */

static const char data_usage[] =
    "usage: gimc data speech -o DIR [options]\n"
    "\n"
    "Synthesises a speaker-identification corpus with espeak-ng and sox: each\n"
    "speaker a fixed voice, variant, pitch, speed and recording channel, each\n"
    "utterance a sentence read with small variations and background noise.\n"
    "Files land in LibriSpeech's layout, DIR/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac\n"
    "(16 kHz), with DIR/speakers.txt describing each speaker. The same seed gives\n"
    "the same files. DIR must not exist yet.\n"
    "\n"
    "  -o DIR             where the corpus goes\n"
    "  --speakers N       speakers (default 20)\n"
    "  --utterances M     utterances per speaker (default 30)\n"
    "  --seed S           (default 0)\n"
    "  --text FILE        sentences, one a line (default: stdlib/sentences.txt)\n"
    "  --jobs J           processes at a time (default: cores + 1)\n"
    "  -h, --help         show this help\n"
    "\n"
    "Exit status: 0 made, 1 a tool is missing or failed, or bad text, 2 bad usage.\n";

static int data_usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "gimc data: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s", data_usage);
    return GIMC_USAGE;
}

static bool data_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* Sentences: lines that are neither blank nor '#' comments. */
static char **read_sentences(const char *path, int *n, char **text, char *err, size_t errlen) {
    size_t len;
    *text = gim_read_file(path, &len);
    if (!*text) {
        gim_errf(err, errlen, "%s: cannot read the sentences: %s", path, strerror(errno));
        return NULL;
    }
    if (strlen(*text) != len) {
        gim_errf(err, errlen, "%s: holds a NUL byte: not a text file", path);
        return NULL;
    }
    char **lines = gim_xmalloc(sizeof(char *) * (len / 2 + 2));
    *n = 0;
    int line = 0;
    for (char *s = *text, *next; s && *s; s = next) {
        line++;
        next = strchr(s, '\n');
        if (next) *next++ = 0;
        size_t k = strlen(s);
        while (k && (s[k - 1] == '\r' || s[k - 1] == ' ' || s[k - 1] == '\t')) s[--k] = 0;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s || *s == '#') continue;
        if (*s == '-') {
            gim_errf(err, errlen, "%s:%d: a sentence may not start with '-' (espeak-ng would read it as an option)", path,
                     line);
            gim_free(lines);
            return NULL;
        }
        lines[(*n)++] = s;
    }
    if (*n == 0) {
        gim_errf(err, errlen, "%s: no sentences in it", path);
        gim_free(lines);
        return NULL;
    }
    return lines;
}

static int data_speech(int argc, char **argv) {
    static const struct option opts[] = {{"speakers", required_argument, NULL, 's'},
                                         {"utterances", required_argument, NULL, 'u'},
                                         {"seed", required_argument, NULL, 'S'},
                                         {"text", required_argument, NULL, 't'},
                                         {"jobs", required_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *out = NULL, *text_path = NULL;
    long speakers = 20, utterances = 30, jobs = sysconf(_SC_NPROCESSORS_ONLN) + 1, v;
    uint64_t seed = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 's':
            if (!data_int(optarg, 2, 10000, &speakers)) return data_usage_error("--speakers expects 2 to 10000; got '%s'", optarg);
            break;
        case 'u':
            if (!data_int(optarg, 1, 100000, &utterances))
                return data_usage_error("--utterances expects 1 to 100000; got '%s'", optarg);
            break;
        case 'S':
            if (!data_int(optarg, 0, LONG_MAX, &v)) return data_usage_error("--seed expects a non-negative integer; got '%s'", optarg);
            seed = (uint64_t)v;
            break;
        case 't': text_path = optarg; break;
        case 'j':
            if (!data_int(optarg, 1, SP_MAX_JOBS, &jobs)) return data_usage_error("--jobs expects 1 to 16; got '%s'", optarg);
            break;
        case 'h': fputs(data_usage, stdout); return GIMC_OK;
        case ':': return data_usage_error("%s needs a value", argv[optind - 1]);
        default: return data_usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return data_usage_error("unexpected argument '%s'", argv[optind]);
    if (!out) return data_usage_error("%s-o DIR is required", "");
    if (strlen(out) > 1000) return data_usage_error("-o: the path is too long: %.60s...", out);
    struct stat st;
    if (stat(out, &st) == 0) {
        fprintf(stderr, "gimc data: error: %s exists: remove it or choose another directory\n", out);
        return GIMC_BAD_INPUT;
    }
    for (int k = 0; k < 2; k++) {
        const char *tool = k ? "sox" : "espeak-ng";
        if (!sp_on_path(tool)) {
            fprintf(stderr, "gimc data: error: %s is not on PATH: it synthesises the corpus (Debian package %s; "
                            "scripts/setup.sh installs it)\n", tool, tool);
            return GIMC_BAD_INPUT;
        }
    }
    char err[2048], default_text[4096];
    if (!text_path) {
        snprintf(default_text, sizeof default_text, "%s/sentences.txt", gim_stdlib_dir());
        text_path = default_text;
    }
    char *text = NULL;
    int n_sentences = 0;
    char **sentences = read_sentences(text_path, &n_sentences, &text, err, sizeof err);
    if (!sentences) {
        fprintf(stderr, "gimc data: error: %s\n", err);
        gim_free(text);
        return GIMC_BAD_INPUT;
    }
    int status = GIMC_BAD_INPUT;
    char partial[1100];
    snprintf(partial, sizeof partial, "%s.partial", out);
    sp_run r = {.dir = partial, .noise_rate = 22050};
    r.speakers = gim_xmalloc(sizeof *r.speakers * (size_t)speakers);
    r.n_utts = (int64_t)speakers * utterances;
    r.utts = gim_calloc((size_t)r.n_utts, sizeof *r.utts);
    FILE *desc = NULL;
    if (!r.utts) {
        fprintf(stderr, "gimc data: error: out of memory\n");
        goto done;
    }
    if (stat(partial, &st) == 0) {
        /* an earlier run that stopped: start again from nothing */
        char *rm[] = {"rm", "-rf", "--", partial, NULL};
        pid_t pid = sp_spawn(rm, "/dev/null");
        int ws;
        if (pid < 0 || waitpid(pid, &ws, 0) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws)) {
            fprintf(stderr, "gimc data: error: cannot remove %s, left by an earlier run\n", partial);
            goto done;
        }
    }
    if (mkdir(partial, 0755) != 0) {
        fprintf(stderr, "gimc data: error: cannot create %s: %s\n", partial, strerror(errno));
        goto done;
    }
    char path[1300];
    snprintf(path, sizeof path, "%s/speakers.txt", partial);
    if (!(desc = fopen(path, "w"))) {
        fprintf(stderr, "gimc data: error: cannot write %s: %s\n", path, strerror(errno));
        goto done;
    }
    fprintf(desc, "# speaker chapter voice pitch speed highpass_hz lowpass_hz eq_hz eq_db (gimc data speech --seed %" PRIu64
                  ")\n", seed);
    for (long s = 0; s < speakers; s++) {
        sp_speaker *p = &r.speakers[s];
        sp_make_speaker(seed, (int)s, p);
        fprintf(desc, "%d %d %s+%s %.0f %.0f %.0f %.0f %.0f %.1f\n", p->id, p->chapter, p->voice, p->variant, p->pitch,
                p->speed, p->highpass, p->lowpass, p->eq_freq, p->eq_gain);
        char d[1300];
        snprintf(d, sizeof d, "%s/%d", partial, p->id);
        int ok = mkdir(d, 0755);
        snprintf(d, sizeof d, "%s/%d/%d", partial, p->id, p->chapter);
        if (ok || mkdir(d, 0755)) {
            fprintf(stderr, "gimc data: error: cannot create %s: %s\n", d, strerror(errno));
            goto done;
        }
        for (long u = 0; u < utterances; u++) {
            sp_utt *t = &r.utts[s * utterances + u];
            sp_make_utt(seed, p, (int)s, (int)u, sentences, n_sentences, t);
            snprintf(t->out, sizeof t->out, "%s/%d-%d-%04ld.flac", d, p->id, p->chapter, u);
        }
    }
    if (fclose(desc)) {
        desc = NULL;
        fprintf(stderr, "gimc data: error: cannot write %s\n", path);
        goto done;
    }
    desc = NULL;
    for (int k = 0; k < SP_NOISES; k++) {
        snprintf(path, sizeof path, "%s/.noise-%d.wav", partial, k);
        if (sp_write_noise(path, r.noise_rate, seed, k, err, sizeof err)) {
            fprintf(stderr, "gimc data: error: %s\n", err);
            goto done;
        }
    }
    printf("synthesising %ld speakers x %ld utterances (seed %" PRIu64 ", %ld processes at a time) into %s\n", speakers,
           utterances, seed, jobs, out);
    fflush(stdout);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (sp_run_all(&r, (int)jobs, err, sizeof err)) {
        fprintf(stderr, "gimc data: error: %s (the partial corpus is in %s)\n", err, partial);
        goto done;
    }
    for (int k = 0; k < SP_NOISES; k++) {
        snprintf(path, sizeof path, "%s/.noise-%d.wav", partial, k);
        unlink(path);
    }
    if (rename(partial, out) != 0) {
        fprintf(stderr, "gimc data: error: cannot rename %s to %s: %s\n", partial, out, strerror(errno));
        goto done;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("made %" PRId64 " utterances of %ld speakers in %.1f s: %s\n", r.n_utts, speakers,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), out);
    status = GIMC_OK;
done:
    if (desc) fclose(desc);
    gim_free(r.speakers);
    gim_free(r.utts);
    gim_free(sentences);
    gim_free(text);
    return status;
}

static const char data_kinds_usage[] =
    "usage: gimc data KIND [options]\n"
    "\n"
    "Makes a data set. Kinds:\n"
    "  speech    a synthetic speaker-identification corpus (gimc data speech --help)\n";

int cmd_data(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "gimc data: no kind given\n\n%s", data_kinds_usage);
        return GIMC_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(data_kinds_usage, stdout);
        return GIMC_OK;
    }
    if (!strcmp(argv[1], "speech")) return data_speech(argc - 1, argv + 1);
    fprintf(stderr, "gimc data: unknown kind '%s'\n\n%s", argv[1], data_kinds_usage);
    return GIMC_USAGE;
}
