/* Every method at its defaults converges wherever dense does: plain gradient descent on a
 * heterogeneous quadratic (4 ranks in threads), at two step sizes that dense handles, must end
 * finite and well below its starting error.  The ranks pull towards different points (their
 * gradients do not vanish at the optimum, only their sum does): a biased compressor without error
 * feedback stalls, and error feedback on a compressor that is not contractive (rand-k, TernGrad,
 * QSGD) blows its variance up; the defaults must pick what converges for each method.
 *
 *   f_r(x) = 1/2 sum_i a_ri (x_i - b_ri)^2,  a_ri in [0.5, 2],  b_ri = c_i + d_ri
 *   x <- x - lr * AVG_r grad f_r(x)        (the compressed all-reduce, SQZ_OP_AVG)
 *
 * Dense GD contracts every coordinate when lr * a < 2 for every a (lr < 1): lr = 0.1 and 0.4 both
 * converge, to 1e-7 in 300 steps.  (At 0.9, near dense's limit, every form of error feedback
 * diverges for the sparsifiers: docs/methods.md has the table.)
 * Usage: test_defaults [METHOD ...] [--ef MODE] [--steps N]  (no method: all registered ones). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_log.h"
#include "sqz_test.h"
#include "sqz_thread_transport.h"

#define P 4
#define N 65536

static const char *extra[16]; /* --set NAME=VALUE pairs (exploration) */

typedef struct run {
    const char *method;
    const char *ef;    /* NULL: the default */
    double      lr;
    int         steps;
    double      dist0, dist; /* relative distance to the optimum, at the start and the end */
    int         finite;
    sqz_thread_group_t *g;
} run_t;

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unif(uint64_t stream, size_t i, double lo, double hi)
{
    return lo + (hi - lo) * (double)(mix(mix(stream * 0x9e3779b97f4a7c15ull + 7) + i) >> 11) * 0x1p-53;
}

static double coef_a(int r, size_t i) { return unif(100 + (uint64_t)r, i, 0.5, 2.0); }
static double coef_b(int r, size_t i) { return unif(1, i, -1, 1) + unif(200 + (uint64_t)r, i, -1, 1); }

static double distance(const float *x, const double *xs)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < N; i++) {
        num += ((double)x[i] - xs[i]) * ((double)x[i] - xs[i]);
        den += xs[i] * xs[i];
    }
    return sqrt(num / den);
}

static void rank_main(int rank, void *arg)
{
    run_t        *run = arg;
    sqz_config_t *cfg;
    sqz_ctx_t    *ctx  = NULL;
    sqz_comm_t   *comm = NULL;
    char          err[512];
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    sqz_config_set(cfg, "SQZ_METHOD", run->method);
    if (run->ef) {
        sqz_config_set(cfg, "SQZ_EF", run->ef);
    }
    for (int i = 0; extra[i]; i++) {
        char        name[128];
        const char *eq = strchr(extra[i], '=');
        snprintf(name, sizeof(name), "%.*s", (int)(eq - extra[i]), extra[i]);
        sqz_config_set(cfg, name, eq + 1);
    }
    REQUIRE(SQZ_OK == sqz_ctx_create(cfg, &ctx, err, sizeof(err)));
    sqz_config_destroy(cfg);
    sqz_transport_t t;
    sqz_thread_transport(run->g, rank, &t);
    REQUIRE(SQZ_OK == sqz_comm_create(ctx, &t, &comm));
    float  *x = calloc(N, sizeof(float)), *g = malloc(N * sizeof(float));
    double *xs = malloc(N * sizeof(double));
    for (size_t i = 0; i < N; i++) {
        double sa = 0, sab = 0;
        for (int r = 0; r < P; r++) {
            sa += coef_a(r, i);
            sab += coef_a(r, i) * coef_b(r, i);
        }
        xs[i] = sab / sa;
    }
    const double d0 = distance(x, xs);
    for (int step = 0; step < run->steps; step++) {
        for (size_t i = 0; i < N; i++) {
            g[i] = (float)(coef_a(rank, i) * ((double)x[i] - coef_b(rank, i)));
        }
        REQUIRE(SQZ_OK == sqz_allreduce(comm, NULL, g, N, SQZ_DTYPE_FLOAT32, SQZ_OP_AVG, 0));
        for (size_t i = 0; i < N; i++) {
            x[i] -= (float)run->lr * g[i];
        }
    }
    if (0 == rank) {
        run->dist0  = d0;
        run->dist   = distance(x, xs);
        run->finite = isfinite(run->dist);
    }
    free(x);
    free(g);
    free(xs);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

/* One method at one step size: finite, and at most three quarters of the starting distance
 * (rand-k at 1 % touches each coordinate about 3 times in 300 steps: it is the slowest). */
static void check(const char *method, const char *ef, double lr, int steps)
{
    run_t run = {.method = method, .ef = ef, .lr = lr, .steps = steps};
    run.g     = sqz_thread_group_create(P);
    sqz_thread_run(P, rank_main, &run);
    sqz_thread_group_destroy(run.g);
    printf("%-10s ef %-8s lr %.1f: distance to the optimum %.3g -> %.3g\n", method,
           ef ? ef : "default", lr, run.dist0, run.dist);
    CHECK_MSG(run.finite && run.dist <= 0.75 * run.dist0,
              "%s (SQZ_EF %s) at lr %.1f ends at %.3g of a start at %.3g", method,
              ef ? ef : "default", lr, run.dist, run.dist0);
}

static void collect(void *arg, const sqz_compressor_v1_t *c, const char *origin)
{
    (void)origin;
    const char **names = arg;
    for (int i = 0; i < 63; i++) {
        if (NULL == names[i]) {
            names[i] = c->name;
            return;
        }
    }
}

int main(int argc, char **argv)
{
    sqz_log_set_level(SQZ_LOG_ERROR);
    const char *names[64] = {0};
    const char *ef        = NULL;
    int         steps = 300, nnames = 0;
    for (int i = 1; i < argc; i++) {
        if (0 == strcmp(argv[i], "--ef") && i + 1 < argc) {
            ef = argv[++i];
        } else if (0 == strcmp(argv[i], "--set") && i + 1 < argc && strchr(argv[i + 1], '=')) {
            for (int k = 0; k < 15; k++) {
                if (NULL == extra[k]) {
                    extra[k] = argv[++i];
                    break;
                }
            }
        } else if (0 == strcmp(argv[i], "--steps") && i + 1 < argc) {
            steps = atoi(argv[++i]);
        } else if (nnames < 63) {
            names[nnames++] = argv[i];
        }
    }
    if (0 == nnames) {
        sqz_config_t *cfg;
        sqz_ctx_t    *ctx;
        REQUIRE(SQZ_OK == sqz_config_create(&cfg) && SQZ_OK == sqz_ctx_create(cfg, &ctx, NULL, 0));
        sqz_ctx_visit_compressors(ctx, collect, names);
        sqz_config_destroy(cfg);
        /* (the names are static strings of the built-in descriptors) */
        sqz_ctx_destroy(ctx);
    }
    const char *lrs = getenv("SQZ_TEST_LRS"); /* (exploration: other step sizes) */
    for (int i = 0; names[i]; i++) {
        if (lrs) {
            for (const char *p = lrs; *p;) {
                char *end;
                check(names[i], ef, strtod(p, &end), steps);
                p = *end ? end + 1 : end;
            }
            continue;
        }
        check(names[i], ef, 0.1, steps);
        check(names[i], ef, 0.4, steps);
    }
    return sqz_test_result("test_defaults");
}
