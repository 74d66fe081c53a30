/*
 * PowerSGD (plugins/powersgd) and layer-adaptive selection (src/adapt):
 *  - the plugin alone (one rank): rank-r matrices are recovered exactly, the error-feedback
 *    invariant holds, exact parts (1-D layers, small layers, gaps) are exact, the dense start
 *    phase, the probe's errors, NaN handling with the residual restored;
 *  - the engine on 3 ranks in threads: bit-identical outputs, the exact sum of rank-r inputs
 *    sharing a column space (layout file), error feedback delivering the sum over calls, a NaN
 *    on one rank sending the call dense on every rank, reduce-scatter;
 *  - SQZ_ADAPT=lgreco on 2 ranks: every rank applies the same levels, the chosen error never
 *    exceeds the uniform setting's, fewer bytes than uniform on layers of different spectra.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <squeeze.h>
#include <squeeze/compressor_v1.h>

#include "sqz_registry.h"
#include "sqz_test.h"
#include "sqz_thread_transport.h"

/* ---------------------------------------------------------------------------------------------
 * The plugin alone, one rank: the all-reduce is the identity.
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    int64_t rank, iters;
    double  min_rate;
    int64_t start;
} psgd_cfg_t; /* the plugin's config struct, filled by hand: same field order and types */

static int identity_sum(void *arg, float *buf, size_t n)
{
    (void)arg, (void)buf, (void)n;
    return 0;
}

static void *make_state(int64_t rank, int64_t start)
{
    const psgd_cfg_t              cfg = {rank, 1, 2.0, start};
    const sqz_compressor_env_v1_t env = {sizeof env, 0, 1, 99};
    void                         *st  = NULL;
    REQUIRE(SQZ_OK == sqz_compressor_powersgd.create(&cfg, &env, &st));
    return st;
}

/* a = U V^T with U (rows x r), V (cols x r) */
static void low_rank(float *a, size_t rows, size_t cols, size_t r, double scale)
{
    float *u = alloc_floats(rows * r), *v = alloc_floats(cols * r);
    fill_random(u, rows * r, 1.0);
    fill_random(v, cols * r, scale);
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < cols; j++) {
            double s = 0;
            for (size_t k = 0; k < r; k++) {
                s += (double)u[i * r + k] * v[j * r + k];
            }
            a[i * cols + j] = (float)s;
        }
    }
    free(u), free(v);
}

static double rel_diff(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

static sqz_status_t run_reduce(void *st, const float *in, float *res, float *out, size_t n,
                               const sqz_matrix_v1_t *layers, size_t nl, float *bufstate,
                               uint64_t seq, const int *levels, sqz_reduce_args_v1_t *a_out)
{
    sqz_reduce_args_v1_t a = {.size          = sizeof(a),
                              .in            = in,
                              .residual      = res,
                              .out           = out,
                              .n             = n,
                              .seq           = seq,
                              .layers        = layers,
                              .nlayers       = nl,
                              .bufstate      = bufstate,
                              .levels        = levels,
                              .allreduce_sum = identity_sum};
    if (a_out) {
        a.probe      = a_out->probe;
        a.nprobe     = a_out->nprobe;
        a.probe_err  = a_out->probe_err;
        a.probe_norm = a_out->probe_norm;
    }
    const sqz_status_t s = sqz_compressor_powersgd.reduce(st, &a);
    if (a_out) {
        *a_out = a;
    }
    return s;
}

static void test_plugin(void)
{
    const sqz_compressor_v1_t *C = &sqz_compressor_powersgd;
    enum { R = 40, K = 30, BIAS = 7, GAP = 5, SR = 3, SC = 2 };
    /* [matrix R x K | gap | bias (BIAS x 1) | small SR x SC | tail of 3] */
    const size_t          n        = R * K + GAP + BIAS + SR * SC + 3;
    const sqz_matrix_v1_t layers[] = {
        {0, R, K, 1}, {R * K + GAP, BIAS, 1, 2}, {R * K + GAP + BIAS, SR, SC, 3}};
    void        *st  = make_state(4, 0);
    const size_t bsl = C->bufstate_len(st, layers, 3, n);
    CHECK_MSG(bsl > (size_t)K * 4, "warm-start memory of %zu floats", bsl);
    float *bs = alloc_floats(bsl), *in = alloc_floats(n), *res = alloc_floats(n),
          *out = alloc_floats(n), *want = alloc_floats(n), *old = alloc_floats(n);

    /* 1. A rank-2 matrix at rank 4 comes back exactly; so does everything exact. */
    low_rank(in, R, K, 2, 1.0);
    fill_random(in + R * K, n - R * K, 1.0);
    CHECK_EQ_INT(run_reduce(st, in, res, out, n, layers, 3, bs, 0, NULL, NULL), SQZ_OK);
    CHECK_MSG(rel_diff(out, in, R * K) < 1e-5, "rank-2 matrix: relative error %g",
              rel_diff(out, in, R * K));
    double rmax = 0;
    for (size_t i = 0; i < R * K; i++) {
        rmax = fmax(rmax, fabs(res[i]));
    }
    CHECK_MSG(rmax < 1e-4, "rank-2 matrix: residual %g", rmax);
    CHECK_MSG(0 == memcmp(out + R * K, in + R * K, (n - R * K) * sizeof(float)),
              "gap, 1-D layer, small layer and tail are not exact");
    for (size_t i = R * K; i < n; i++) {
        CHECK(0.0f == res[i]);
    }

    /* 2. Error feedback on a full-rank matrix: out + residual_new == in + residual_old. */
    for (int call = 1; call < 4; call++) {
        fill_random(in, n, 1.0);
        memcpy(old, res, n * sizeof(float));
        CHECK_EQ_INT(run_reduce(st, in, res, out, n, layers, 3, bs, (uint64_t)call, NULL, NULL),
                     SQZ_OK);
        double worst = 0;
        for (size_t i = 0; i < n; i++) {
            worst = fmax(worst, fabs(((double)out[i] + res[i]) - ((double)in[i] + old[i])));
        }
        CHECK_MSG(worst < 1e-4, "call %d: EF invariant off by %g", call, worst);
        CHECK_MSG(rel_diff(out, in, R * K) > 0.05, "a full-rank matrix compressed without loss?");
    }

    /* 3. NaN: every call reports it and the residual comes back. */
    memcpy(old, res, n * sizeof(float));
    fill_random(in, n, 1.0);
    in[17] = NAN;
    CHECK_EQ_INT(run_reduce(st, in, res, out, n, layers, 3, bs, 9, NULL, NULL), SQZ_ERR_NONFINITE);
    in[17]       = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        worst = (i == 17) ? worst : fmax(worst, fabs(res[i] - old[i]));
    }
    CHECK_MSG(worst < 1e-5, "NaN: residual not restored (off by %g)", worst);
    in[R * K + GAP] = INFINITY; /* in an exact part: seen in the exact sum */
    CHECK_EQ_INT(run_reduce(st, in, res, out, n, layers, 3, bs, 10, NULL, NULL), SQZ_ERR_NONFINITE);
    C->destroy(st);

    /* 4. The dense start phase: exact, residual included and emptied. */
    st = make_state(4, 2);
    memset(bs, 0, bsl * sizeof(float));
    fill_random(res, n, 0.1);
    fill_random(in, n, 1.0);
    for (size_t i = 0; i < n; i++) {
        want[i] = in[i] + res[i];
    }
    CHECK_EQ_INT(run_reduce(st, in, res, out, n, layers, 3, bs, 0, NULL, NULL), SQZ_OK);
    CHECK_MSG(0 == memcmp(out, want, n * sizeof(float)), "start phase is not exact");
    for (size_t i = 0; i < n; i++) {
        CHECK(0.0f == res[i]);
    }
    C->destroy(st);

    /* 5. The probe: errors fall with the level and vanish at the true rank; the call sends what
     *    a call at its own rank sends (the probe is local), and the probe's error at that rank,
     *    one power step further from the call's basis, is at most the call's. */
    st = make_state(2, 0);
    memset(bs, 0, bsl * sizeof(float));
    memset(res, 0, n * sizeof(float));
    low_rank(in, R, K, 3, 1.0);
    const int            probe[] = {1, 2, 4, 8};
    double               perr[3 * 4], pnorm[3];
    sqz_reduce_args_v1_t a       = {.probe = probe, .nprobe = 4, .probe_err = perr, .probe_norm = pnorm};
    CHECK_EQ_INT(run_reduce(st, in, res, out, n, layers, 3, bs, 0, NULL, &a), SQZ_OK);
    CHECK(a.probed);
    CHECK_MSG(perr[0] >= perr[1] && perr[1] >= perr[2] && perr[2] >= perr[3],
              "probe errors not monotone: %g %g %g %g", perr[0], perr[1], perr[2], perr[3]);
    CHECK_MSG(perr[2] < 1e-6 * pnorm[0] && perr[0] > 1e-3 * pnorm[0],
              "rank-3 matrix: errors %g (rank 1) %g (rank 4) of %g", perr[0], perr[2], pnorm[0]);
    CHECK_MSG(0 == perr[4 + 0] && 0 == perr[8 + 3], "exact layers must report no error");
    CHECK_MSG(perr[1] <= a.norm2_err * (1 + 1e-3) + 1e-9,
              "the probe's error at the call's rank %g exceeds the call's %g", perr[1], a.norm2_err);
    sqz_reduce_args_v1_t plain = {0};
    CHECK_EQ_INT(run_reduce(st, in, res, out, n, layers, 3, bs, 1, NULL, &plain), SQZ_OK);
    CHECK_MSG(!plain.probed && plain.bytes_wire == a.bytes_wire,
              "a probing call sent %zu bytes, a plain one %zu", (size_t)a.bytes_wire,
              (size_t)plain.bytes_wire);
    /* Levels: a layer at rank 1 sends (R + K) floats plus the exact rest. */
    const int lv[] = {1, 4, 4};
    CHECK_EQ_INT(run_reduce(st, in, res, out, n, layers, 3, bs, 1, lv, &(sqz_reduce_args_v1_t){0}),
                 SQZ_OK);
    CHECK_EQ_INT(C->level_bytes(st, &layers[0], 1), (R + K) * 4);
    CHECK_EQ_INT(C->level_bytes(st, &layers[1], 4), BIAS * 4);
    C->destroy(st);
    free(bs), free(in), free(res), free(out), free(want), free(old);
    printf("%s: plugin\n", sqz_test_failures ? "FAIL" : "ok");
}

/* Ranks above 32 (up to SQZ_PSGD_QMAX = 128): the warm-start memory grows with the rank (32
 * columns up to rank 32, then the rank rounded up to a power of two), a matrix of rank below the
 * configured one comes back exactly, and a full-rank one keeps the error-feedback invariant. */
static void test_high_rank(void)
{
    const sqz_compressor_v1_t *C = &sqz_compressor_powersgd;
    const struct { int rank, true_rank; size_t rows, cols, qcols; } cases[] = {
        {32, 20, 150, 130, 32}, {40, 40, 200, 180, 64}, {64, 50, 300, 280, 64},
        {128, 100, 600, 560, 128}, {128, 128, 600, 560, 128}}; /* (compressed: PyTorch's rule) */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const size_t          R = cases[c].rows, K = cases[c].cols, n = R * K + 5;
        const sqz_matrix_v1_t layer[] = {{0, R, K, 1}};
        void                 *st      = make_state(cases[c].rank, 0);
        const size_t          bsl     = C->bufstate_len(st, layer, 1, n);
        CHECK_MSG(bsl == 1 + K * cases[c].qcols, "rank %d: warm-start memory %zu floats, want %zu",
                  cases[c].rank, bsl, 1 + K * cases[c].qcols);
        float *bs = alloc_floats(bsl), *in = alloc_floats(n), *res = alloc_floats(n),
              *out = alloc_floats(n), *old = alloc_floats(n);
        low_rank(in, R, K, (size_t)cases[c].true_rank, 1.0);
        fill_random(in + R * K, 5, 1.0);
        sqz_reduce_args_v1_t a = {0};
        CHECK_EQ_INT(run_reduce(st, in, res, out, n, layer, 1, bs, 0, NULL, &a), SQZ_OK);
        CHECK_MSG(rel_diff(out, in, R * K) < 1e-4, "rank %d, a rank-%d matrix: relative error %g",
                  cases[c].rank, cases[c].true_rank, rel_diff(out, in, R * K));
        CHECK_EQ_INT(a.bytes_wire, ((R + K) * (size_t)cases[c].rank + 5) * sizeof(float));
        fill_random(in, n, 1.0);
        memcpy(old, res, n * sizeof(float));
        CHECK_EQ_INT(run_reduce(st, in, res, out, n, layer, 1, bs, 1, NULL, NULL), SQZ_OK);
        double worst = 0;
        for (size_t i = 0; i < n; i++) {
            worst = fmax(worst, fabs(((double)out[i] + res[i]) - ((double)in[i] + old[i])));
        }
        CHECK_MSG(worst < 1e-4, "rank %d: EF invariant off by %g", cases[c].rank, worst);
        C->destroy(st);
        free(bs), free(in), free(res), free(out), free(old);
    }
    printf("%s: high rank\n", sqz_test_failures ? "FAIL" : "ok");
}

/* ---------------------------------------------------------------------------------------------
 * The engine on ranks in threads.
 * ------------------------------------------------------------------------------------------- */

#define MAXR 4
enum { ER = 48, EK = 40, EB = 16 };
#define EN ((size_t)(ER * EK + EB))

typedef struct {
    int                 P;
    const char *const  *kv;
    sqz_thread_group_t *g;
    int                 mode; /* 0: rank-r exact sum, 1: EF over calls, 2: NaN, 3: adapt, 4: RS,
                                 6: a fixed full-rank part plus a growing rank-1 change */
    float              *out[MAXR];
    float              *common_u;  /* modes 0 and 6: the shared column space */
    double              err_track; /* mode 6: the largest relative error of calls 1.. */
    double              err_mean;  /* mode 1 */
    double              err_first;
    sqz_status_t        st[MAXR];
    sqz_stats_t         stats[MAXR];
    char               *json[MAXR];
} job_t;

static sqz_ctx_t *make_ctx(const char *const *kv)
{
    sqz_config_t *cfg;
    char          err[512];
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    for (int i = 0; kv[i]; i += 2) {
        sqz_config_set(cfg, kv[i], kv[i + 1]);
    }
    sqz_ctx_t         *ctx = NULL;
    const sqz_status_t st  = sqz_ctx_create(cfg, &ctx, err, sizeof(err));
    sqz_config_destroy(cfg);
    if (SQZ_OK != st) {
        fprintf(stderr, "ctx: %s\n", err);
    }
    REQUIRE(SQZ_OK == st);
    return ctx;
}

/* The input of rank r at call c: mode 0 a matrix U V_r^T sharing U; otherwise noise plus a
 * low-rank part, which makes the spectrum interesting. */
/* The test's generator (sqz_test.h) is one global state: the rank threads take turns. */
static pthread_mutex_t input_lock = PTHREAD_MUTEX_INITIALIZER;

static void engine_input_locked(const job_t *j, int r, int c, float *x);
static void engine_input(const job_t *j, int r, int c, float *x)
{
    pthread_mutex_lock(&input_lock);
    engine_input_locked(j, r, c, x);
    pthread_mutex_unlock(&input_lock);
}

static void engine_input_locked(const job_t *j, int r, int c, float *x)
{
    rng_state = 1000003u * (uint64_t)(r + 1) + 7919u * (uint64_t)(j->mode == 1 ? 0 : c);
    if (0 == j->mode) {
        float v[EK * 2];
        fill_random(v, EK * 2, 1.0);
        for (size_t i = 0; i < ER; i++) {
            for (size_t k = 0; k < EK; k++) {
                x[i * EK + k] = j->common_u[i * 2] * v[k * 2] + j->common_u[i * 2 + 1] * v[k * 2 + 1];
            }
        }
        fill_random(x + ER * EK, EB, 1.0);
        return;
    }
    if (6 == j->mode) {
        /* A_r (noise, the same every call) + c u v_r^T: after the dense first call the change of
         * every rank's gradient is rank 1 in the common column u. */
        rng_state = 1000003u * (uint64_t)(r + 1);
        fill_random(x, EN, 1.0);
        float v[EK];
        fill_random(v, EK, 1.0);
        for (size_t i = 0; i < ER; i++) {
            for (size_t k = 0; k < EK; k++) {
                x[i * EK + k] += (float)c * j->common_u[i * 2] * v[k];
            }
        }
        return;
    }
    fill_random(x, EN, 1.0);
    if (5 == j->mode) {
        /* The first 800 elements nearly sparse (a few spikes over a faint floor), the rest noise:
         * top-k's error per byte differs between the layers. */
        for (size_t i = 0; i < 800; i++) {
            x[i] = (i % 97 == 0) ? 20.0f * x[i] : 0.01f * x[i];
        }
        return;
    }
    low_rank(x, ER, EK, 1, 3.0);
    for (size_t i = 0; i < ER * EK; i++) {
        x[i] += 0.3f * rng_gauss(1.0);
    }
}

static void engine_rank(int rank, void *arg)
{
    job_t          *j   = arg;
    sqz_ctx_t      *ctx = make_ctx(j->kv);
    sqz_transport_t t;
    sqz_thread_transport(j->g, rank, &t);
    sqz_comm_t *comm = NULL;
    REQUIRE(SQZ_OK == sqz_comm_create(ctx, &t, &comm));
    float *x = alloc_floats(EN), *y = alloc_floats(EN), *mean = alloc_floats(EN),
          *exact = alloc_floats(EN), *tmp = alloc_floats(EN);
    const int calls = (1 == j->mode || 3 == j->mode || 5 == j->mode) ? 40 : 6 == j->mode ? 6 : 3;
    for (int c = 0; c < calls; c++) {
        memset(exact, 0, EN * sizeof(float));
        for (int r = 0; r < j->P; r++) {
            engine_input(j, r, c, tmp);
            for (size_t i = 0; i < EN; i++) {
                exact[i] += tmp[i];
            }
        }
        engine_input(j, rank, c, x);
        if (2 == j->mode && 1 == rank && 1 == c) {
            x[5] = NAN;
        }
        if (4 == j->mode) {
            j->st[rank] = sqz_reduce_scatter_block(comm, x, y, EN / (size_t)j->P,
                                                   SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 77);
        } else {
            j->st[rank] = sqz_allreduce(comm, x, y, EN, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 77);
        }
        if (SQZ_OK != j->st[rank]) {
            break;
        }
        for (size_t i = 0; i < EN; i++) {
            mean[i] += (y[i] - mean[i]) / (float)(c + 1);
        }
        if (0 == c) {
            j->err_first = rel_diff(y, exact, ER * EK);
        }
        if (6 == j->mode && c > 0 && 0 == rank) {
            const double e = rel_diff(y, exact, EN);
            j->err_track   = e > j->err_track ? e : j->err_track;
        }
        if (4 == j->mode && 0 == c) {
            /* (Later calls add the residual of the earlier ones: only the first compares.) */
            const size_t blk = EN / (size_t)j->P;
            CHECK_MSG(rel_diff(y, exact + rank * blk, blk) < 0.5, "rank %d: reduce-scatter block "
                      "off by %g", rank, rel_diff(y, exact + rank * blk, blk));
        }
        if (2 == j->mode && 1 == c) {
            CHECK_MSG(isnan(y[5]) && fabsf(y[6] - exact[6]) <= 1e-5f * (1 + fabsf(exact[6])),
                      "rank %d: the NaN call is not dense", rank);
        }
    }
    if (1 == j->mode) {
        j->err_mean = rel_diff(mean, exact, ER * EK);
    }
    memcpy(j->out[rank], y, EN * sizeof(float));
    if (0 == j->mode) {
        CHECK_MSG(rel_diff(y, exact, EN) < 1e-4, "rank %d: rank-2 sum off by %g", rank,
                  rel_diff(y, exact, EN));
    }
    sqz_stats_get(ctx, &j->stats[rank]);
    const size_t len = sqz_stats_json(ctx, rank, NULL, 0);
    j->json[rank]    = malloc(len + 1);
    sqz_stats_json(ctx, rank, j->json[rank], len + 1);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    free(x), free(y), free(mean), free(exact), free(tmp);
}

static void run_job(job_t *j)
{
    j->g = sqz_thread_group_create(j->P);
    for (int r = 0; r < j->P; r++) {
        j->out[r] = alloc_floats(EN);
    }
    sqz_thread_run(j->P, engine_rank, j);
    sqz_thread_group_destroy(j->g);
}

static void free_job(job_t *j)
{
    for (int r = 0; r < j->P; r++) {
        free(j->out[r]);
        free(j->json[r]);
    }
}

static void check_identical(const job_t *j, const char *what)
{
    for (int r = 0; r < j->P; r++) {
        CHECK_MSG(SQZ_OK == j->st[r], "%s: rank %d: %s", what, r, sqz_status_string(j->st[r]));
        CHECK_MSG(0 == memcmp(j->out[r], j->out[0], (4 == j->mode ? EN / (size_t)j->P : EN) *
                                                        sizeof(float)) || 4 == j->mode,
                  "%s: rank %d's output differs from rank 0's", what, r);
    }
}

static const char *write_layout_file(void)
{
    static char path[] = "/tmp/sqz_psgd_layoutXXXXXX";
    const int   fd     = mkstemp(path);
    REQUIRE(fd >= 0);
    char text[256];
    const int len = snprintf(text, sizeof text,
                             "# test layout\nbuffer %zu\n%d %d  weight\n%d bias\n", EN, ER, EK, EB);
    REQUIRE(len == (int)write(fd, text, (size_t)len));
    close(fd);
    return path;
}

/* Rank 1's second of 3 calls holds a NaN: that call is dense on every rank (NaN where the input
 * was, the exact sum elsewhere: checked in engine_rank), the other two compressed. */
static void check_nan_call(const char *const *kv, const char *what)
{
    job_t j = {.P = 3, .kv = kv, .mode = 2};
    run_job(&j);
    check_identical(&j, what);
    for (int r = 0; r < 3; r++) {
        CHECK_MSG(1 == j.stats[r].calls_nonfinite && 2 == j.stats[r].calls_compressed,
                  "%s: rank %d: %llu non-finite, %llu compressed", what, r,
                  (unsigned long long)j.stats[r].calls_nonfinite,
                  (unsigned long long)j.stats[r].calls_compressed);
    }
    free_job(&j);
}

static void test_engine(const char *layout)
{
    const char *const base[] = {"METHOD", "powersgd", "MIN_BYTES", "0", "POWERSGD_START_STEPS",
                                "0", "POWERSGD_RANK", "2", "LAYOUT", layout, NULL};
    job_t j0 = {.P = 3, .kv = base, .mode = 0};
    j0.common_u = alloc_floats(ER * 2);
    rng_state   = 5;
    fill_random(j0.common_u, ER * 2, 1.0);
    run_job(&j0);
    check_identical(&j0, "rank-2 sum");
    for (int r = 0; r < 3; r++) {
        CHECK_EQ_INT(j0.stats[r].calls_compressed, 3);
        /* P (48 x 2) plus the bias, then Q (40 x 2), floats. */
        CHECK_EQ_INT(j0.stats[r].bytes_wire, 3 * 4 * (ER * 2 + EB + EK * 2));
    }
    CHECK_MSG(strstr(j0.json[0], "\"allreduce_summable\": 3"), "stats name the exchange: %s",
              j0.json[0]);
    free(j0.common_u);
    free_job(&j0);

    job_t j1 = {.P = 3, .kv = base, .mode = 1};
    run_job(&j1);
    check_identical(&j1, "EF");
    CHECK_MSG(j1.err_mean < 0.25 * j1.err_first,
              "error feedback: the mean of 40 outputs is off by %g, one call by %g", j1.err_mean,
              j1.err_first);
    free_job(&j1);

    check_nan_call(base, "NaN");

    /* SQZ_EF=ef21: the estimators start from the exact gradients of the dense first call and
     * take rank-2 updates, so a rank-1 change of the gradients is delivered exactly, however far
     * from low rank the gradients are; ef14 returns a rank-2 picture of the whole sum. */
    const char *const ef21[] = {"METHOD", "powersgd", "MIN_BYTES", "0", "POWERSGD_START_STEPS",
                                "1", "POWERSGD_RANK", "2", "LAYOUT", layout, "EF", "ef21", NULL};
    const char *const ef14[] = {"METHOD", "powersgd", "MIN_BYTES", "0", "POWERSGD_START_STEPS",
                                "1", "POWERSGD_RANK", "2", "LAYOUT", layout, NULL};
    for (int v = 0; v < 2; v++) {
        job_t j6    = {.P = 3, .kv = v ? ef14 : ef21, .mode = 6};
        j6.common_u = alloc_floats(ER * 2);
        rng_state   = 11;
        fill_random(j6.common_u, ER * 2, 1.0);
        run_job(&j6);
        check_identical(&j6, v ? "ef14 tracking" : "ef21 tracking");
        if (0 == v) {
            CHECK_MSG(j6.err_track < 1e-4, "ef21: a rank-1 change is off by %g", j6.err_track);
        } else {
            CHECK_MSG(j6.err_track > 0.1, "ef14 is as good as ef21 here (%g): the test cannot "
                      "tell them apart", j6.err_track);
        }
        printf("%s tracking: largest relative error %.3g\n", v ? "ef14" : "ef21", j6.err_track);
        for (int r = 0; r < 3; r++) {
            CHECK_EQ_INT(j6.stats[r].calls_compressed, 5);
        }
        free(j6.common_u);
        free_job(&j6);
    }
    const char *const ef21_nan[] = {"METHOD", "powersgd", "MIN_BYTES", "0",
                                    "POWERSGD_START_STEPS", "0", "POWERSGD_RANK", "2", "LAYOUT",
                                    layout, "EF", "ef21", NULL};
    check_nan_call(ef21_nan, "ef21 NaN");

    job_t j4 = {.P = 2, .kv = base, .mode = 4};
    run_job(&j4);
    for (int r = 0; r < 2; r++) {
        CHECK_MSG(SQZ_OK == j4.st[r] && 3 == j4.stats[r].calls_compressed,
                  "reduce-scatter rank %d: %s", r, sqz_status_string(j4.st[r]));
    }
    free_job(&j4);
    printf("%s: engine\n", sqz_test_failures ? "FAIL" : "ok");
}

/* Reads "key": number from the JSON text. */
static double json_num(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(json, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

static void test_adapt(void)
{
    /* Pseudo-layers of 400 elements (20 x 20) over a buffer whose first layers are nearly
     * rank 1 and whose last are noise: the program should lower the first and raise the last. */
    const char *const kv[] = {"METHOD", "powersgd", "MIN_BYTES", "0", "POWERSGD_START_STEPS", "2",
                              "POWERSGD_RANK", "4", "POWERSGD_MIN_RATE", "1", "ADAPT", "lgreco",
                              "ADAPT_PERIOD", "10", "LAYOUT_CHUNK", "400", "EF", "ef14", NULL};
    job_t j = {.P = 2, .kv = kv, .mode = 3};
    run_job(&j);
    check_identical(&j, "adapt");
    /* Probes send nothing: over the whole run, probing calls included, the adaptive job sends
     * fewer bytes than the same job at the uniform rank. */
    const char *const kv_u[] = {"METHOD", "powersgd", "MIN_BYTES", "0", "POWERSGD_START_STEPS",
                                "2", "POWERSGD_RANK", "4", "POWERSGD_MIN_RATE", "1",
                                "LAYOUT_CHUNK", "400", "EF", "ef14", NULL};
    job_t u = {.P = 2, .kv = kv_u, .mode = 3};
    run_job(&u);
    CHECK_MSG(j.stats[0].calls_compressed == u.stats[0].calls_compressed &&
                  j.stats[0].bytes_wire < u.stats[0].bytes_wire,
              "adaptive run: %llu bytes in %llu calls, uniform %llu in %llu",
              (unsigned long long)j.stats[0].bytes_wire,
              (unsigned long long)j.stats[0].calls_compressed,
              (unsigned long long)u.stats[0].bytes_wire,
              (unsigned long long)u.stats[0].calls_compressed);
    printf("adapt: %llu bytes on the wire against %llu at the uniform rank, probes included\n",
           (unsigned long long)j.stats[0].bytes_wire, (unsigned long long)u.stats[0].bytes_wire);
    const uint64_t uniform_bytes = u.stats[0].bytes_wire;
    free_job(&u);
    /* SQZ_ADAPT_STAT=relative: the budget is the uniform setting's sum of relative errors (each
     * layer's at most 1: below the 5 layers' count, where the absolute errors are hundreds). */
    const char *const kv_r[] = {"METHOD", "powersgd", "MIN_BYTES", "0", "POWERSGD_START_STEPS",
                                "2", "POWERSGD_RANK", "4", "POWERSGD_MIN_RATE", "1", "ADAPT",
                                "lgreco", "ADAPT_PERIOD", "10", "LAYOUT_CHUNK", "400", "EF", "ef14",
                                "ADAPT_STAT", "relative", NULL};
    job_t rel = {.P = 2, .kv = kv_r, .mode = 3};
    run_job(&rel);
    check_identical(&rel, "adapt relative");
    const char *ar = strstr(rel.json[0], "\"adapt\"");
    CHECK_MSG(ar != NULL, "no adapt record: %s", rel.json[0]);
    if (ar) {
        const double budget = json_num(ar, "budget"), error = json_num(ar, "error");
        CHECK_MSG(budget > 0 && budget < 5 && error <= budget * (1 + 1e-9),
                  "relative statistic: budget %g, error %g", budget, error);
        CHECK_MSG(json_num(ar, "bytes") <= json_num(ar, "bytes_uniform"), "relative: no saving");
        CHECK_MSG(rel.stats[0].bytes_wire <= uniform_bytes, "relative: %llu bytes, uniform %llu",
                  (unsigned long long)rel.stats[0].bytes_wire, (unsigned long long)uniform_bytes);
        printf("adapt relative: budget %g, %s\n", budget, strstr(ar, "\"levels\""));
    }
    free_job(&rel);
    const char *a0 = strstr(j.json[0], "\"adapt\""), *a1 = strstr(j.json[1], "\"adapt\"");
    CHECK_MSG(a0 && a1 && strstr(a0, "\"levels\": ["), "no adapt record: %s", j.json[0]);
    if (a0 && a1) {
        const char *l0 = strstr(a0, "\"levels\""), *l1 = strstr(a1, "\"levels\"");
        CHECK_MSG(l0 && l1 && 0 == strncmp(l0, l1, strcspn(l0, "]")), "ranks chose differently");
        const double budget = json_num(a0, "budget"), error = json_num(a0, "error");
        const double bytes = json_num(a0, "bytes"), uniform = json_num(a0, "bytes_uniform");
        CHECK_MSG(error <= budget, "chosen error %g exceeds the budget %g", error, budget);
        CHECK_MSG(bytes < uniform, "no saving: %g bytes against %g uniform", bytes, uniform);
        CHECK_MSG(json_num(a0, "solves") >= 3, "solves: %g", json_num(a0, "solves"));
        printf("adapt: %s\n", l0);
    }
    free_job(&j);
    printf("%s: adapt\n", sqz_test_failures ? "FAIL" : "ok");
}

/* SQZ_ADAPT with top-k: the segmented composite (one state per candidate density) on 3 ranks:
 * identical outputs, the same densities everywhere, within the error budget, never more bytes
 * than uniform. */
static void test_adapt_topk(void)
{
    const char *const kv[] = {"METHOD", "topk", "MIN_BYTES", "0", "TOPK_DENSITY", "0.05",
                              "ADAPT", "lgreco", "ADAPT_PERIOD", "10", "LAYOUT_CHUNK", "400",
                              "SPARSE_DENSE_SWITCH", "0", NULL};
    job_t j = {.P = 3, .kv = kv, .mode = 5};
    run_job(&j);
    check_identical(&j, "adapt topk");
    const char *a0 = strstr(j.json[0], "\"adapt\"");
    CHECK_MSG(a0 && strstr(a0, "\"levels\": ["), "no adapt record: %s", j.json[0]);
    for (int r = 1; a0 && r < 3; r++) {
        const char *ar = strstr(j.json[r], "\"levels\""), *l0 = strstr(a0, "\"levels\"");
        CHECK_MSG(ar && l0 && 0 == strncmp(l0, ar, strcspn(l0, "]")), "rank %d chose differently",
                  r);
    }
    if (a0) {
        const double budget = json_num(a0, "budget"), error = json_num(a0, "error");
        const double bytes = json_num(a0, "bytes"), uniform = json_num(a0, "bytes_uniform");
        CHECK_MSG(error <= budget * (1 + 1e-9), "chosen error %g exceeds the budget %g", error,
                  budget);
        CHECK_MSG(bytes <= uniform, "more bytes than uniform: %g against %g", bytes, uniform);
        CHECK_MSG(json_num(a0, "solves") >= 3, "solves: %g", json_num(a0, "solves"));
        CHECK_MSG(strstr(j.json[0], "\"topk\""), "calls were not counted under topk");
        /* The nearly sparse first layers need less density than the noise of the last. */
        const char *lv = strstr(a0, "\"levels\": [");
        char        arr[256] = "";
        if (lv) {
            snprintf(arr, sizeof arr, "%.*s", (int)strcspn(lv, "]"), lv);
        }
        long        first = lv ? strtol(arr + 11, NULL, 10) : 0;
        const char *last  = strrchr(arr, ',');
        long        lastv = last ? strtol(last + 1, NULL, 10) : 0;
        CHECK_MSG(lv && last && first < lastv && bytes < uniform,
                  "levels did not follow the layers: first %ld, last %ld", first, lastv);
        printf("adapt topk: %.*s\n", (int)strcspn(strstr(a0, "\"levels\""), "]") + 1,
               strstr(a0, "\"levels\""));
    }
    for (int r = 0; r < 3; r++) {
        CHECK_MSG(j.stats[r].calls_compressed == 40, "rank %d: %llu compressed", r,
                  (unsigned long long)j.stats[r].calls_compressed);
    }
    free_job(&j);
    printf("%s: adapt topk\n", sqz_test_failures ? "FAIL" : "ok");
}

static void test_bad_config(void)
{
    const char *const bad[][12] = {
        {"METHOD", "powersgd", "EF", "econtrol", NULL},
        {"METHOD", "powersgd", "DGC_MOMENTUM", "0.9", NULL},
        {"METHOD", "quant", "ADAPT", "lgreco", NULL},
        {"METHOD", "powersgd", "LAYOUT", "/nonexistent/layout.txt", NULL},
        {"METHOD", "powersgd", "POWERSGD_RANK", "0", NULL},
    };
    const char *const expect[] = {"SQZ_EF=econtrol", "SQZ_DGC_MOMENTUM", "SQZ_ADAPT=lgreco",
                                  "SQZ_LAYOUT=/nonexistent/layout.txt", "SQZ_POWERSGD_RANK"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sqz_config_t *cfg;
        char          err[512] = "";
        sqz_config_create(&cfg);
        for (int k = 0; bad[i][k]; k += 2) {
            sqz_config_set(cfg, bad[i][k], bad[i][k + 1]);
        }
        sqz_ctx_t         *ctx = NULL;
        const sqz_status_t st  = sqz_ctx_create(cfg, &ctx, err, sizeof err);
        sqz_config_destroy(cfg);
        CHECK_MSG(SQZ_OK != st && NULL == ctx && strstr(err, expect[i]),
                  "config %zu: %s (%s)", i, sqz_status_string(st), err);
        sqz_ctx_destroy(ctx);
    }
    printf("%s: bad configurations\n", sqz_test_failures ? "FAIL" : "ok");
}

int main(void)
{
    test_plugin();
    test_high_rank();
    const char *layout = write_layout_file();
    test_engine(layout);
    unlink(layout);
    test_adapt();
    test_adapt_topk();
    test_bad_config();
    return sqz_test_result("test_powersgd");
}
