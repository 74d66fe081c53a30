/* A training job whose allocator moves its gradient buffers: every step allocates each buffer
 * anew (at an offset that differs by rank, step and buffer, so no two ranks ever see the same
 * addresses and no address repeats), all-reduces it in place with MPI_Allreduce (float SUM, as a
 * data-parallel step does) and frees it.  Run under the interposer.
 *
 *   mpi_churn [--calls N] [--stable] [--sizes a,b,c,...] [--check-every K] [--rss-out FILE]
 *             [--from STEP] [--dump FILE]
 *
 * Each step reduces one buffer per entry of --sizes (floats; default a step with a repeated size
 * in it).  --stable keeps one buffer per position for the whole run (the reference).  Every
 * --check-every steps the ranks compare a hash of their results (replicas must be identical) and
 * the resident set size is sampled; --rss-out writes "calls rss_kib" lines (rank 0).  The
 * gradients are a fixed function of (position, step, rank) so that error feedback has something
 * to carry: the mean relative error of the last 100 steps is printed (with the stats JSON it
 * tells whether residuals followed their buffers).  --from numbers the steps from STEP (a run
 * restarted from a checkpoint continues the gradients where it stopped); --dump writes the
 * results of the last step (rank 0, raw floats).  Exit 1 when replicas differ. */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_rank, g_size;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Gradient of buffer `pos` at `step` on this rank: a slowly varying field plus rank noise. */
static void fill(float *x, size_t n, int pos, long step)
{
    for (size_t i = 0; i < n; i++) {
        const uint64_t h = mix((uint64_t)pos << 40 ^ i ^ (uint64_t)g_rank << 56);
        const double   u = (double)(h >> 11) * 0x1p-53 - 0.5;
        x[i] = (float)(u * (1.0 + 0.01 * (double)(step % 7)) + 0.1 * sin(0.001 * (double)i + pos));
    }
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char  line[256];
    long  kib = -1;
    while (f && fgets(line, sizeof(line), f)) {
        if (0 == strncmp(line, "VmRSS:", 6)) {
            kib = strtol(line + 6, NULL, 10);
        }
    }
    if (f) {
        fclose(f);
    }
    return kib;
}

static int parse_sizes(const char *s, size_t *sizes, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        sizes[n++] = (size_t)strtoull(s, (char **)&s, 10);
        s += (',' == *s);
    }
    return n;
}

/* Whether every rank holds the same bits (a 64-bit hash compared with MIN and MAX). */
static int replicas_agree(const float *x, size_t n)
{
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        h = mix(h ^ u);
    }
    unsigned long long mn = 0, mx = 0, v = h;
    MPI_Allreduce(&v, &mn, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&v, &mx, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    return mn == mx;
}

/* The relative error of the reduced x against the exact sum over ranks. */
static double rel_error(const float *x, size_t n, int pos, long step)
{
    float *t   = malloc(n * sizeof(float));
    double num = 0, den = 0;
    double *exact = calloc(n, sizeof(double));
    const int mine = g_rank;
    for (int r = 0; r < g_size; r++) {
        g_rank = r;
        fill(t, n, pos, step);
        for (size_t i = 0; i < n; i++) {
            exact[i] += t[i];
        }
    }
    g_rank = mine;
    for (size_t i = 0; i < n; i++) {
        num += (x[i] - exact[i]) * (x[i] - exact[i]);
        den += exact[i] * exact[i];
    }
    free(t);
    free(exact);
    return den > 0 ? sqrt(num / den) : 0;
}

int main(int argc, char **argv)
{
    long        calls = 20000, check_every = 50, first = 0;
    const char *dump = NULL;
    int         stable = 0;
    const char *rss_out = NULL;
    size_t      sizes[64];
    int         npos = parse_sizes("70000,20000,20000,20000,40000", sizes, 64);
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    for (int i = 1; i < argc; i++) {
        if (0 == strcmp(argv[i], "--calls") && i + 1 < argc) {
            calls = atol(argv[++i]);
        } else if (0 == strcmp(argv[i], "--stable")) {
            stable = 1;
        } else if (0 == strcmp(argv[i], "--sizes") && i + 1 < argc) {
            npos = parse_sizes(argv[++i], sizes, 64);
        } else if (0 == strcmp(argv[i], "--check-every") && i + 1 < argc) {
            check_every = atol(argv[++i]);
        } else if (0 == strcmp(argv[i], "--rss-out") && i + 1 < argc) {
            rss_out = argv[++i];
        } else if (0 == strcmp(argv[i], "--from") && i + 1 < argc) {
            first = atol(argv[++i]);
        } else if (0 == strcmp(argv[i], "--dump") && i + 1 < argc) {
            dump = argv[++i];
        }
    }
    FILE *rf = (rss_out && 0 == g_rank) ? fopen(rss_out, "w") : NULL;
    float *kept[64] = {0};
    long   steps = calls / npos, bad = 0, rss_first = -1, rss_max = 0;
    double err_tail = 0;
    int    n_tail = 0;
    FILE *df = (dump && 0 == g_rank) ? fopen(dump, "wb") : NULL;
    for (long s = 0; s < steps; s++) {
        const long step = first + s;
        for (int pos = 0; pos < npos; pos++) {
            const size_t n = sizes[pos];
            /* A new block each call, entered at an offset that differs by rank, step and buffer. */
            const size_t pad  = stable ? 0 : 16 * (size_t)(mix((uint64_t)step * 131 + (uint64_t)pos * 7 +
                                                                (uint64_t)g_rank * 1000003) % 4096);
            char        *blk  = stable ? (char *)kept[pos] : malloc(n * sizeof(float) + pad);
            if (stable && NULL == blk) {
                blk = (char *)(kept[pos] = malloc(n * sizeof(float)));
            }
            float *x = (float *)(blk + pad);
            fill(x, n, pos, step);
            MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if (0 == step % check_every && !replicas_agree(x, n)) {
                bad++;
                if (0 == g_rank) {
                    fprintf(stderr, "step %ld buffer %d: replicas differ\n", step, pos);
                }
            }
            if (getenv("CHURN_TRACE") && 0 == pos && 0 == step % 20) {
                const double e = rel_error(x, n, pos, step);
                if (0 == g_rank) {
                    printf("step %ld err %.4f\n", step, e);
                }
            }
            if (df && s == steps - 1) {
                fwrite(x, sizeof(float), n, df);
            }
            if (s >= steps - 100 / npos - 1 && 0 == pos) {
                err_tail += rel_error(x, n, pos, step);
                n_tail++;
            }
            if (!stable) {
                free(blk);
            }
        }
        if (0 == s % check_every) {
            const long r = rss_kib();
            rss_first    = (rss_first < 0 && s * npos >= calls / 10) ? r : rss_first;
            rss_max      = r > rss_max ? r : rss_max;
            if (rf) {
                fprintf(rf, "%ld %ld\n", s * npos, r);
            }
        }
    }
    if (rf) {
        fclose(rf);
    }
    if (df) {
        fclose(df);
    }
    for (int pos = 0; pos < npos; pos++) {
        free(kept[pos]);
    }
    long bad_all = 0, growth = rss_max - rss_first, growth_max = 0;
    MPI_Allreduce(&bad, &bad_all, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&growth, &growth_max, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (0 == g_rank) {
        printf("churn: %ld calls (%ld steps of %d buffers, %s), replicas %s, RSS after 10%%: %ld "
               "KiB, growth after it: %ld KiB (max over ranks), tail rel error %.4f\n",
               steps * npos, steps, npos, stable ? "stable buffers" : "new addresses every call",
               bad_all ? "DIFFER" : "identical", rss_first, growth_max,
               n_tail ? err_tail / n_tail : 0.0);
    }
    MPI_Finalize();
    return bad_all ? 1 : 0;
}
