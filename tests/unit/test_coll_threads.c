/* The compressed collective algorithms on 1 to 8 ranks in threads (one context per rank, as in
 * separate processes): bit-identical outputs, accuracy, SUM/AVG, in place, reduce-scatter,
 * warm-up, error feedback over repeated calls, non-finite input, a corrupted payload, mismatched
 * settings, and the grouping of ranks by host. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "coll/sqz_coll.h"
#include "sqz_cost.h"
#include "sqz_log.h"
#include "sqz_param.h"
#include "sqz_test.h"
#include "sqz_thread_transport.h"
#include "topo/sqz_hosts.h"

#define MAXR 8

typedef struct {
    const char *const *kv;       /* settings of every rank */
    const char *const *kv_rank1; /* extra settings of rank 1 (mismatch test), or NULL */
    int                P;
    size_t             n;
    int                in_place, avg, calls, nan_rank, nan_call, corrupt_call, rs;
    int                no_p2p;     /* 1: a transport without point-to-point (collective path) */
    int                shorten;    /* 1: in call 0, rank 0's first payload to rank 1 goes 8 bytes
                                      short (point-to-point) */
    float             *out[MAXR];  /* result of the last call, per rank */
    float             *exact;      /* exact sum of the last call's inputs */
    sqz_stats_t        stats[MAXR];
    uint64_t           sent[MAXR];       /* the method's bytes_sent (bytes put on the transport) */
    int                alltoallvs[MAXR]; /* collective calls the rank made, over all its calls */
    int                allgathervs[MAXR];
    uint64_t           algos[MAXR][SQZ_ALGO_COUNT]; /* calls per exchange (stats "algorithms") */
    uint64_t           predicted[MAXR];             /* calls with a cost-model prediction */
    double             seconds_predicted[MAXR];
    sqz_status_t       status[MAXR];
    double             err_first, err_avg; /* relative error of call 0 and of the mean output */
    sqz_thread_group_t *g;
} job_t;

static float input_value(int rank, int call, size_t i)
{
    /* Deterministic, rank-dependent, with a heavy tail so that top-k has structure. */
    uint64_t x = (uint64_t)rank * 0x9e3779b97f4a7c15ull ^ (uint64_t)i * 0xbf58476d1ce4e5b9ull;
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 29;
    const double u = (double)(x >> 11) * (1.0 / 9007199254740992.0);
    const double v = (u - 0.5) * (1.0 + 4.0 * (i % 97 == 0)) + 0.01 * call;
    return (float)v;
}

/* A transport that corrupts what rank 1 receives in one all-to-all. */
static sqz_transport_t inner[MAXR];
static int             corrupt_now[MAXR], shorten_now[MAXR];
static int             n_alltoallv[MAXR], n_allgatherv[MAXR];
static int corrupting_alltoallv(void *self, const void *sb, const size_t *sc, const size_t *sd,
                                void *rb, const size_t *rc, const size_t *rd)
{
    const int rank = (int)(intptr_t)self;
    n_alltoallv[rank]++;
    const int rc0  = inner[rank].alltoallv(inner[rank].self, sb, sc, sd, rb, rc, rd);
    if (corrupt_now[rank] && 1 == rank) {
        /* Rank 0's payload for us: past its 32-byte frame, scramble the metadata. */
        unsigned char *p = (unsigned char *)rb + rd[0] + 32;
        memset(p, 0xff, rc[0] > 40 ? 8 : 0);
    }
    return rc0;
}
static int fwd_allgatherv(void *self, const void *s, size_t sb, void *r, const size_t *rb, const size_t *d)
{
    const int rank = (int)(intptr_t)self;
    n_allgatherv[rank]++;
    return inner[rank].allgatherv(inner[rank].self, s, sb, r, rb, d);
}
static int fwd_allreduce(void *self, const float *in, float *out, size_t n)
{
    const int rank = (int)(intptr_t)self;
    return inner[rank].allreduce_f32_sum(inner[rank].self, in, out, n);
}
/* Every request is wrapped (buf NULL for a send); when corrupting, rank 1 scrambles the first
 * payload it receives from rank 0 (phase 1: a receive of more than a frame; the scratch
 * agreement's one-byte flags before it are not payloads). */
typedef struct {
    void  *req, *buf;
    size_t bytes;
    int    corrupt;
} recv_wrap_t;
static int fwd_isend(void *self, const void *buf, size_t bytes, int peer, void **req)
{
    const int    rank = (int)(intptr_t)self;
    recv_wrap_t *w    = calloc(1, sizeof(*w));
    *req              = w;
    if (shorten_now[rank] && 1 == peer && bytes > 40) {
        shorten_now[rank] = 0; /* once */
        bytes -= 8;
    }
    return inner[rank].isend(inner[rank].self, buf, bytes, peer, &w->req);
}
static int fwd_irecv(void *self, void *buf, size_t bytes, int peer, size_t *got, void **req)
{
    const int    rank = (int)(intptr_t)self;
    recv_wrap_t *w    = calloc(1, sizeof(*w));
    w->buf            = buf;
    w->bytes          = bytes;
    w->corrupt        = corrupt_now[rank] && 1 == rank && 0 == peer && bytes > 40;
    corrupt_now[rank] = corrupt_now[rank] && !w->corrupt; /* once */
    *req              = w;
    return inner[rank].irecv(inner[rank].self, buf, bytes, peer, got, &w->req);
}
static void maybe_corrupt(recv_wrap_t *w)
{
    if (w->buf && w->corrupt && w->bytes > 40) {
        memset((unsigned char *)w->buf + 32, 0xff, 8);
    }
}
static int fwd_test(void *self, void *req, int *done)
{
    const int    rank = (int)(intptr_t)self;
    recv_wrap_t *w    = req;
    const int    rc   = inner[rank].test(inner[rank].self, w->req, done);
    if (*done) {
        maybe_corrupt(w);
        free(w);
    }
    return rc;
}
static int fwd_wait(void *self, void *req)
{
    const int    rank = (int)(intptr_t)self;
    recv_wrap_t *w    = req;
    const int    rc   = inner[rank].wait(inner[rank].self, w->req);
    maybe_corrupt(w);
    free(w);
    return rc;
}

static void rank_main(int rank, void *arg)
{
    job_t        *j = arg;
    sqz_config_t *cfg;
    sqz_ctx_t    *ctx  = NULL;
    sqz_comm_t   *comm = NULL;
    char          err[512];
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    for (size_t i = 0; j->kv[i]; i += 2) {
        sqz_config_set(cfg, j->kv[i], j->kv[i + 1]);
    }
    for (size_t i = 0; 1 == rank && j->kv_rank1 && j->kv_rank1[i]; i += 2) {
        sqz_config_set(cfg, j->kv_rank1[i], j->kv_rank1[i + 1]);
    }
    REQUIRE(SQZ_OK == sqz_ctx_create(cfg, &ctx, err, sizeof(err)));
    sqz_config_destroy(cfg);
    sqz_thread_transport(j->g, rank, &inner[rank]);
    sqz_transport_t t = inner[rank];
    t.self            = (void *)(intptr_t)rank;
    t.alltoallv       = corrupting_alltoallv;
    t.allgatherv      = fwd_allgatherv;
    t.allreduce_f32_sum = fwd_allreduce;
    t.isend             = j->no_p2p ? NULL : fwd_isend;
    t.irecv             = j->no_p2p ? NULL : fwd_irecv;
    t.test              = j->no_p2p ? NULL : fwd_test;
    t.wait              = j->no_p2p ? NULL : fwd_wait;
    REQUIRE(SQZ_OK == sqz_comm_create(ctx, &t, &comm));
    n_alltoallv[rank] = n_allgatherv[rank] = 0;

    const size_t n    = j->n;
    const size_t outn = j->rs ? n / (size_t)j->P : n;
    float       *in   = malloc(n * sizeof(float));
    float       *buf  = malloc(n * sizeof(float));
    float       *acc  = calloc(outn, sizeof(float));
    for (int call = 0; call < j->calls; call++) {
        for (size_t i = 0; i < n; i++) {
            in[i] = input_value(rank, 0, i);
        }
        if (rank == j->nan_rank && call == j->nan_call) {
            in[n / 3] = NAN;
        }
        corrupt_now[rank] = (call == j->corrupt_call);
        shorten_now[rank] = j->shorten && 0 == call && 0 == rank;
        memcpy(buf, in, n * sizeof(float));
        const sqz_op_t op = j->avg ? SQZ_OP_AVG : SQZ_OP_SUM;
        sqz_status_t   st;
        if (j->rs) {
            st = sqz_reduce_scatter_block(comm, j->in_place ? NULL : in, buf, outn, SQZ_DTYPE_FLOAT32, op, 7);
        } else {
            st = sqz_allreduce(comm, j->in_place ? NULL : in, buf, n, SQZ_DTYPE_FLOAT32, op, 0);
        }
        j->status[rank] = st;
        if (SQZ_OK != st) {
            break;
        }
        for (size_t i = 0; i < outn; i++) {
            acc[i] += buf[i];
        }
        if (0 == rank && j->exact && 0 == call) {
            double e = 0, x = 0;
            for (size_t i = 0; i < outn; i++) {
                e += (buf[i] - (double)j->exact[i]) * (buf[i] - (double)j->exact[i]);
                x += (double)j->exact[i] * j->exact[i];
            }
            j->err_first = sqrt(e / x);
        }
    }
    if (0 == rank && j->exact && SQZ_OK == j->status[0]) {
        double e = 0, x = 0;
        for (size_t i = 0; i < outn; i++) {
            const double m = acc[i] / j->calls;
            e += (m - j->exact[i]) * (m - j->exact[i]);
            x += (double)j->exact[i] * j->exact[i];
        }
        j->err_avg = sqrt(e / x);
    }
    memcpy(j->out[rank], buf, outn * sizeof(float));
    sqz_stats_get(ctx, &j->stats[rank]);
    j->sent[rank]        = ctx->stats[ctx->method_index].bytes_sent;
    memcpy(j->algos[rank], ctx->stats[ctx->method_index].algo_calls, sizeof(j->algos[rank]));
    j->predicted[rank]         = ctx->stats[ctx->method_index].calls_predicted;
    j->seconds_predicted[rank] = ctx->stats[ctx->method_index].seconds_predicted;
    j->alltoallvs[rank]  = n_alltoallv[rank];
    j->allgathervs[rank] = n_allgatherv[rank];
    free(in);
    free(buf);
    free(acc);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

/* Runs a job; fills exact with the exact SUM (or AVG) of call 0's inputs (own block for RS). */
static void run(job_t *j)
{
    const size_t outn = j->rs ? j->n / (size_t)j->P : j->n;
    j->exact          = calloc(j->n, sizeof(float));
    /* Summed in float in rank order, then scaled, as the dense path does: exact comparisons. */
    for (size_t i = 0; i < j->n; i++) {
        float s = 0;
        for (int r = 0; r < j->P; r++) {
            s += input_value(r, 0, i);
        }
        j->exact[i] = j->avg ? s * (1.0f / (float)j->P) : s;
    }
    for (int r = 0; r < j->P; r++) {
        j->out[r] = calloc(j->n, sizeof(float));
    }
    j->g = sqz_thread_group_create(j->P);
    sqz_thread_run(j->P, rank_main, j);
    sqz_thread_group_destroy(j->g);
    (void)outn;
}

static void done(job_t *j)
{
    for (int r = 0; r < j->P; r++) {
        free(j->out[r]);
    }
    free(j->exact);
}

static int identical(const job_t *j)
{
    for (int r = 1; r < j->P; r++) {
        if (0 != memcmp(j->out[0], j->out[r], j->n * sizeof(float))) {
            return 0;
        }
    }
    return 1;
}

typedef struct {
    const char *name;
    const char *kv[12];
    double      max_err;     /* bound on the relative error of one call */
    double      ef_gain;     /* the mean over 60 calls must be this much more accurate */
} method_case_t;

static const method_case_t cases[] = {
    {"topk-exact", {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", NULL}, 0.99, 3},
    {"topk-sampled", {"SQZ_METHOD", "topk", "SQZ_TOPK_SELECT", "sampled", "SQZ_TOPK_DENSITY", "0.05", NULL}, 0.99, 3},
    {"quant4", {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "4", NULL}, 0.45, 10},
    {"quant2-stoch", {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "2", "SQZ_QUANT_ROUNDING", "stochastic", NULL}, 3.5, 10},
    {"quant8", {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "8", NULL}, 0.03, 10},
    /* Classic error feedback (SQZ_EF_DECAY=1), and sign's default, which damps the residuals
     * to 0.8 a call: the mean then keeps a bias (about 0.57 of one call's error). */
    {"sign", {"SQZ_METHOD", "sign", "SQZ_EF_DECAY", "1", NULL}, 1.2, 2},
    {"sign-l2", {"SQZ_METHOD", "sign", "SQZ_SIGN_SCALE", "l2", "SQZ_EF_DECAY", "1", NULL}, 1.5, 2},
    {"sign-damped", {"SQZ_METHOD", "sign", NULL}, 1.2, 1.5},
};

static void test_methods(void)
{
    const int    ranks[] = {1, 2, 3, 4, 5, 8};
    const size_t sizes[] = {70001, 131072};
    for (size_t m = 0; m < sizeof(cases) / sizeof(cases[0]); m++) {
        for (size_t ri = 0; ri < sizeof(ranks) / sizeof(ranks[0]); ri++) {
            for (size_t si = 0; si < 2; si++) {
                job_t j = {.kv = cases[m].kv, .P = ranks[ri], .n = sizes[si], .calls = 1,
                           .in_place = (int)(si & 1), .avg = (int)(ri & 1), .nan_rank = -1,
                           .corrupt_call = -1, .no_p2p = (int)((ri + si) & 1)};
                run(&j);
                CHECK_MSG(identical(&j), "%s P=%d n=%zu: outputs differ", cases[m].name, j.P, j.n);
                CHECK_MSG(j.err_first <= cases[m].max_err, "%s P=%d n=%zu: rel err %.4f > %.4f",
                          cases[m].name, j.P, j.n, j.err_first, cases[m].max_err);
                for (int r = 0; r < j.P; r++) {
                    CHECK_EQ_INT(j.status[r], SQZ_OK);
                    CHECK_EQ_INT(j.stats[r].calls_compressed, 1);
                    CHECK(j.stats[r].bytes_wire > 0 && j.stats[r].bytes_wire < j.stats[r].bytes_in);
                }
                done(&j);
            }
        }
        /* Error feedback: the mean of 60 outputs of the same input approaches the exact sum. */
        job_t j = {.kv = cases[m].kv, .P = 4, .n = 65536, .calls = 60, .nan_rank = -1, .corrupt_call = -1};
        run(&j);
        printf("%-13s one call: rel err %.4f; mean of %d calls: %.4f\n", cases[m].name, j.err_first,
               j.calls, j.err_avg);
        CHECK_MSG(j.err_avg * cases[m].ef_gain <= j.err_first,
                  "%s: EF mean error %.4f not %.1fx below one call's %.4f", cases[m].name, j.err_avg,
                  cases[m].ef_gain, j.err_first);
        done(&j);
    }
}

static void test_none_is_exact(void)
{
    const char *kv[] = {"SQZ_METHOD", "none", NULL};
    job_t       j    = {.kv = kv, .P = 4, .n = 100000, .calls = 1, .nan_rank = -1, .corrupt_call = -1};
    run(&j);
    CHECK(identical(&j));
    CHECK_EQ_INT(j.stats[0].calls_compressed, 0);
    CHECK_EQ_INT(j.stats[0].calls, 1);
    CHECK(j.err_first < 1e-6);
    done(&j);
}

static void test_reduce_scatter(void)
{
    const char *kv[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "8", NULL};
    for (int P = 1; P <= 4; P++) {
        job_t j = {.kv = kv, .P = P, .n = (size_t)P * 40000, .calls = 1, .rs = 1, .nan_rank = -1,
                   .corrupt_call = -1, .in_place = P & 1};
        run(&j);
        /* Rank 0's block against the exact sum. */
        double e = 0, x = 0;
        for (size_t i = 0; i < j.n / (size_t)P; i++) {
            e += pow(j.out[0][i] - j.exact[i], 2);
            x += pow(j.exact[i], 2);
        }
        CHECK_MSG(sqrt(e / x) < 0.03, "RS P=%d err %.4f", P, sqrt(e / x));
        CHECK_EQ_INT(j.stats[0].calls_compressed, 1);
        done(&j);
    }
    /* topk: the split exchange's first phase (chunk r compressed and sent to rank r), on both
     * paths; every call compressed, a tenth of the dense bytes, and with error feedback the mean
     * output of a constant input closes in on the exact block (nothing lost). */
    const char *kv2[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.25", "SQZ_WARMUP_STEPS", "0",
                         NULL};
    for (int P = 2; P <= 4; P++) {
        for (int no_p2p = 0; no_p2p < 2; no_p2p++) {
            job_t j = {.kv = kv2, .P = P, .n = (size_t)P * 40000, .calls = 20, .rs = 1,
                       .nan_rank = -1, .corrupt_call = -1, .no_p2p = no_p2p, .in_place = P & 1};
            run(&j);
            const uint64_t algo = no_p2p ? SQZ_ALGO_REDUCE_SCATTER : SQZ_ALGO_REDUCE_SCATTER_P2P;
            for (int r = 0; r < P; r++) {
                CHECK_EQ_INT(j.status[r], SQZ_OK);
                CHECK_EQ_INT(j.stats[r].calls_compressed, 20);
                CHECK_EQ_INT(j.algos[r][algo], 20);
                CHECK_MSG(j.sent[r] < 20 * j.n * sizeof(float) / 2,
                          "topk RS P=%d: rank %d sent %llu bytes in 20 calls", P, r,
                          (unsigned long long)j.sent[r]);
            }
            printf("topk reduce-scatter P=%d %s: one call %.4f, mean of 20 calls %.4f, rank 0 "
                   "sent %.3f of the input bytes\n", P, no_p2p ? "collective" : "p2p", j.err_first,
                   j.err_avg, (double)j.sent[0] / (20.0 * (double)j.n * sizeof(float)));
            CHECK_MSG(j.err_first > 0.05 && j.err_avg < 0.4 * j.err_first,
                      "topk RS P=%d no_p2p=%d: error of call 0 %.4f, of the mean of 20 %.4f", P,
                      no_p2p, j.err_first, j.err_avg);
            done(&j);
        }
    }
}

static void test_warmup(void)
{
    const char *kv[] = {"SQZ_METHOD", "sign", "SQZ_WARMUP_STEPS", "2", NULL};
    job_t       j    = {.kv = kv, .P = 3, .n = 65536, .calls = 2, .nan_rank = -1, .corrupt_call = -1};
    run(&j);
    CHECK(j.err_first < 1e-6 && j.err_avg < 1e-6);
    CHECK_EQ_INT(j.stats[0].calls_warmup, 2);
    CHECK_EQ_INT(j.stats[0].calls_compressed, 0);
    done(&j);
    j = (job_t){.kv = kv, .P = 3, .n = 65536, .calls = 3, .nan_rank = -1, .corrupt_call = -1};
    run(&j);
    CHECK_EQ_INT(j.stats[2].calls_compressed, 1);
    done(&j);
}

static void test_nonfinite(void)
{
    const char *kv_ag[] = {"SQZ_METHOD", "topk", NULL};
    const char *kv_rs[] = {"SQZ_METHOD", "quant", NULL};
    const char *const *kvs[] = {kv_ag, kv_rs};
    for (int k = 0; k < 4; k++) {
        job_t j = {.kv = kvs[k & 1], .P = 4, .n = 65536, .calls = 1, .nan_rank = 2, .nan_call = 0,
                   .corrupt_call = -1, .no_p2p = k >> 1};
        run(&j);
        CHECK(identical(&j));
        for (int r = 0; r < 4; r++) {
            CHECK_EQ_INT(j.status[r], SQZ_OK);
            CHECK_EQ_INT(j.stats[r].calls_fallback, 1);
            CHECK_EQ_INT(j.stats[r].calls_nonfinite, 1);
        }
        /* The dense result: NaN where the NaN was, exact elsewhere. */
        CHECK(isnan(j.out[0][j.n / 3]));
        CHECK(j.out[0][5] == j.exact[5]);
        done(&j);
    }
}

/* A NaN step does not end compression: every method and error feedback keeps its per-buffer
 * state (residuals, estimators, momenta, warm starts) as it was, so the calls after the NaN call
 * are compressed again (one fallback of four calls, on every rank). */
static void test_nonfinite_recovers(void)
{
    static const char *const cfgs[][8] = {
        {"SQZ_METHOD", "topk", "SQZ_EF", "ef14", NULL},
        {"SQZ_METHOD", "topk", "SQZ_EF", "ef21", NULL},
        {"SQZ_METHOD", "quant", "SQZ_EF", "econtrol", NULL},
        {"SQZ_METHOD", "sign", NULL},
        {"SQZ_METHOD", "randk", NULL},
        {"SQZ_METHOD", "qsgd", NULL},
        {"SQZ_METHOD", "terngrad", NULL},
        {"SQZ_METHOD", "fedzip", NULL},
        {"SQZ_METHOD", "powersgd", "SQZ_POWERSGD_START_STEPS", "0", NULL},
        {"SQZ_METHOD", "powersgd", "SQZ_POWERSGD_START_STEPS", "0", "SQZ_EF", "ef21", NULL},
    };
    for (size_t c = 0; c < sizeof(cfgs) / sizeof(cfgs[0]); c++) {
        const char *kv[12] = {"SQZ_WARMUP_STEPS", "0"};
        for (int q = 0; q < 8 && cfgs[c][q]; q++) {
            kv[2 + q] = cfgs[c][q];
        }
        job_t j = {.kv = kv, .P = 3, .n = 65536, .calls = 4, .nan_rank = 1, .nan_call = 1,
                   .corrupt_call = -1};
        run(&j);
        for (int r = 0; r < j.P; r++) {
            const char *opt = cfgs[c][2] ? cfgs[c][2] : "", *val = cfgs[c][3] ? cfgs[c][3] : "";
            CHECK_MSG(j.stats[r].calls_fallback == 1 && j.stats[r].calls_compressed == 3,
                      "%s %s %s: rank %d: %llu fallbacks, %llu compressed of 4 calls (a NaN at "
                      "call 1)", cfgs[c][1], opt, val, r,
                      (unsigned long long)j.stats[r].calls_fallback,
                      (unsigned long long)j.stats[r].calls_compressed);
        }
        CHECK(identical(&j));
        done(&j);
    }
}

/* A payload scrambled in transit: every rank falls back together, with fixed-size payloads and
 * with variable-size ones (lossless: exact sizes, exchanged first without the pipeline). */
static void test_corrupt(void)
{
    for (int k = 0; k < 4; k++) {
        const int   p2p  = k & 1;
        const char *kv[] = {"SQZ_METHOD", k < 2 ? "quant" : "lossless", NULL};
        job_t j = {.kv = kv, .P = 3, .n = 65536, .calls = 1, .nan_rank = -1, .corrupt_call = 0,
                   .no_p2p = !p2p};
        run(&j);
        CHECK(identical(&j));
        for (int r = 0; r < 3; r++) {
            CHECK_EQ_INT(j.status[r], SQZ_OK);
            CHECK_EQ_INT(j.stats[r].calls_fallback, 1);
        }
        CHECK(j.out[0][11] == j.exact[11]);
        done(&j);
    }
}

/* A payload that arrives short (rank 0's first to rank 1 loses its last 8 bytes, over
 * point-to-point): its frame promises more than arrived, so it is malformed, and every rank
 * falls back together to the exact sum (before, the frame was checked against the receive's
 * slot, and the decoder read what an earlier call had left past the message's end). */
static void test_short_payload(void)
{
    static const char *const methods[][5] = {
        {"SQZ_METHOD", "quant", NULL},
        {"SQZ_METHOD", "topk", "SQZ_SPARSE_ALGO", "split", NULL},
    };
    for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
        job_t j = {.kv = methods[m], .P = 3, .n = 65536, .calls = 1, .nan_rank = -1,
                   .corrupt_call = -1, .shorten = 1};
        run(&j);
        CHECK(identical(&j));
        for (int r = 0; r < 3; r++) {
            CHECK_MSG(SQZ_OK == j.status[r] && 1 == j.stats[r].calls_fallback,
                      "%s, a short payload: rank %d: %s, %llu fallbacks", methods[m][1], r,
                      sqz_status_string(j.status[r]),
                      (unsigned long long)j.stats[r].calls_fallback);
        }
        CHECK_MSG(0 == memcmp(j.out[0], j.exact, j.n * sizeof(float)),
                  "%s, a short payload: not the exact sum", methods[m][1]);
        done(&j);
    }
}

/* Top-k's reduce-scatter, a NaN on one rank or a payload corrupted on its way to rank 1, on both
 * paths: every rank falls back together (the verdicts travel after phase 1), and the dense
 * blocks are exact, NaN where the NaN was. */
static void test_topk_reduce_scatter_faults(void)
{
    const char *kv[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", NULL};
    for (int k = 0; k < 4; k++) {
        const int nan = k & 1, P = 3;
        job_t     j   = {.kv = kv, .P = P, .n = (size_t)P * 20000, .calls = 1, .rs = 1,
                         .nan_rank = nan ? 2 : -1, .nan_call = 0, .corrupt_call = nan ? -1 : 0,
                         .no_p2p = k >> 1};
        run(&j);
        const size_t blk = j.n / (size_t)P, at = j.n / 3;
        for (int r = 0; r < P; r++) {
            CHECK_EQ_INT(j.status[r], SQZ_OK);
            CHECK_EQ_INT(j.stats[r].calls_fallback, 1);
            CHECK_EQ_INT(j.stats[r].calls_nonfinite, (uint64_t)nan);
            for (size_t i = 0; i < blk; i++) {
                const size_t g = (size_t)r * blk + i;
                if (nan && g == at) {
                    CHECK(isnan(j.out[r][i]));
                } else if (j.out[r][i] != j.exact[g]) {
                    CHECK_MSG(0, "topk RS %s%s, rank %d, element %zu: %g, exact %g",
                              nan ? "NaN" : "corrupt", k >> 1 ? " (collective)" : "", r, g,
                              (double)j.out[r][i], (double)j.exact[g]);
                    break;
                }
            }
        }
        done(&j);
    }
}

/* The pipelined (point-to-point) and collective exchanges give the same bits. */
static void test_p2p_same_bits(void)
{
    const char *kvs[][6] = {{"SQZ_METHOD", "quant", NULL}, {"SQZ_METHOD", "sign", NULL},
                            {"SQZ_METHOD", "topk", NULL}};
    for (int m = 0; m < 3; m++) {
        for (int P = 1; P <= 5; P += 2) {
            job_t a = {.kv = kvs[m], .P = P, .n = 200000, .calls = 3, .nan_rank = -1, .corrupt_call = -1};
            job_t b = a;
            b.no_p2p = 1;
            run(&a);
            run(&b);
            CHECK_MSG(0 == memcmp(a.out[P - 1], b.out[P - 1], a.n * sizeof(float)),
                      "%s P=%d: pipelined and collective exchanges differ", kvs[m][1], P);
            CHECK_EQ_INT(a.stats[0].bytes_wire, b.stats[0].bytes_wire);
            done(&a);
            done(&b);
        }
    }
}

/* SQZ_THREADS changes who computes, not what: outputs and stats equal the single-thread run. */
static void test_threads(void)
{
    const char *one[][8] = {{"SQZ_METHOD", "quant", "SQZ_QUANT_ROUNDING", "stochastic", NULL},
                            {"SQZ_METHOD", "sign", NULL}};
    const char *many[][10] = {{"SQZ_METHOD", "quant", "SQZ_QUANT_ROUNDING", "stochastic", "SQZ_THREADS", "3", NULL},
                              {"SQZ_METHOD", "sign", "SQZ_THREADS", "2", NULL}};
    for (int m = 0; m < 2; m++) {
        job_t a = {.kv = one[m], .P = 4, .n = 300000, .calls = 3, .nan_rank = -1, .corrupt_call = -1};
        job_t b = {.kv = many[m], .P = 4, .n = 300000, .calls = 3, .nan_rank = -1, .corrupt_call = -1};
        run(&a);
        run(&b);
        CHECK(identical(&b));
        CHECK_MSG(0 == memcmp(a.out[0], b.out[0], a.n * sizeof(float)), "%s: threads change the result",
                  one[m][1]);
        CHECK_EQ_INT(a.stats[1].bytes_wire, b.stats[1].bytes_wire);
        CHECK_EQ_INT(b.stats[1].calls_compressed, 3);
        done(&a);
        done(&b);
        /* A NaN on one rank with threads: every rank goes dense together. */
        job_t c = {.kv = many[m], .P = 3, .n = 100000, .calls = 1, .nan_rank = 1, .nan_call = 0,
                   .corrupt_call = -1};
        run(&c);
        CHECK(identical(&c));
        CHECK_EQ_INT(c.stats[0].calls_nonfinite, 1);
        CHECK(c.out[0][7] == c.exact[7]);
        done(&c);
    }
}

/* ef21 / econtrol: the returned estimator is bit-identical on every rank and, for a repeated
 * input, converges to the exact sum (each call sends the compressed change of the estimators). */
static double last_error(const job_t *j)
{
    double e = 0, x = 0;
    for (size_t i = 0; i < j->n; i++) {
        e += pow((double)j->out[0][i] - j->exact[i], 2);
        x += pow(j->exact[i], 2);
    }
    return sqrt(e / x);
}

static void test_ef_variants(void)
{
    const char *kvs[][10] = {
        {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_EF", "ef21", NULL},
        {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_EF", "econtrol", NULL},
        {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "2", "SQZ_EF", "ef21", NULL},
        {"SQZ_METHOD", "sign", "SQZ_EF", "econtrol", "SQZ_ECONTROL_ETA", "0.1", NULL},
    };
    for (size_t m = 0; m < sizeof(kvs) / sizeof(kvs[0]); m++) {
        for (int no_p2p = 0; no_p2p < 2; no_p2p++) {
            job_t j = {.kv = kvs[m], .P = 3, .n = 65536, .calls = 80, .nan_rank = -1,
                       .corrupt_call = -1, .no_p2p = no_p2p, .in_place = 1};
            run(&j);
            CHECK(identical(&j));
            const double last = last_error(&j);
            printf("%s %s: rel err of call 1 %.4f, of call %d %.6f\n", kvs[m][1], kvs[m][5] ? kvs[m][5] : "",
                   j.err_first, j.calls, last);
            CHECK_MSG(last * 5 < j.err_first, "%s/%s: the estimator does not converge (%.4f -> %.4f)",
                      kvs[m][1], kvs[m][5], j.err_first, last);
            CHECK_EQ_INT(j.stats[0].calls_compressed, 80);
            done(&j);
        }
    }
    /* A NaN on one rank, in place, with the transformed input: the dense fallback must still see
     * the caller's input (nothing decoded into it before the verdict). */
    for (int m = 0; m < 2; m++) {
        const char *kn[] = {"SQZ_METHOD", m ? "quant" : "topk", "SQZ_EF", "ef21", NULL};
        job_t       j    = {.kv = kn, .P = 3, .n = 65536, .calls = 1, .nan_rank = 2, .nan_call = 0,
                            .corrupt_call = -1, .in_place = 1};
        run(&j);
        CHECK(identical(&j));
        CHECK_EQ_INT(j.stats[0].calls_nonfinite, 1);
        CHECK_MSG(j.out[0][5] == j.exact[5] && j.out[0][40000] == j.exact[40000],
                  "%s ef21 in place: the fallback did not get the input", kn[1]);
        done(&j);
    }
    /* Warm-up calls are dense and initialize the estimators with the exact gradients: the first
     * compressed call then sends a zero change and returns the exact sum again. */
    const char *kv[] = {"SQZ_METHOD", "topk", "SQZ_EF", "ef21", "SQZ_WARMUP_STEPS", "1", NULL};
    job_t       j    = {.kv = kv, .P = 2, .n = 65536, .calls = 2, .nan_rank = -1, .corrupt_call = -1};
    run(&j);
    CHECK(last_error(&j) < 1e-6);
    done(&j);
}

/* DGC around the compressor: momentum correction with masking, and local clipping. */
static void test_dgc(void)
{
    /* Constant gradients: with momentum m the corrected stream converges to x / (1 - m), so
     * without masking the output approaches 10x the exact sum at m = 0.9 (the momentum the
     * optimizer no longer applies); masking clears the momentum of what was sent, so it stays
     * between 1x and that. */
    double proj[2];
    for (int masking = 0; masking < 2; masking++) {
        const char *kv[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.1", "SQZ_DGC_MOMENTUM", "0.9",
                            "SQZ_DGC_MASKING", masking ? "1" : "0", NULL};
        job_t j = {.kv = kv, .P = 3, .n = 65536, .calls = 150, .nan_rank = -1, .corrupt_call = -1};
        run(&j);
        CHECK(identical(&j));
        double dot = 0, xx = 0;
        for (size_t i = 0; i < j.n; i++) {
            dot += (double)j.out[0][i] * j.exact[i];
            xx += (double)j.exact[i] * j.exact[i];
        }
        proj[masking] = dot / xx;
        printf("dgc momentum 0.9, masking %d: last output / exact sum (projection) %.2f\n", masking,
               proj[masking]);
        done(&j);
    }
    CHECK_MSG(proj[0] > 8 && proj[0] < 12, "momentum correction: projection %.2f, expected ~10", proj[0]);
    CHECK_MSG(proj[1] > 1.5 && proj[1] < proj[0], "masking: projection %.2f", proj[1]);
    /* A NaN gradient on one rank (an AMP overflow step) sends that call dense and leaves the
     * momentum as it was: the calls after it are compressed and finite again, as without DGC. */
    for (int nesterov = 0; nesterov < 2; nesterov++) {
        const char *kn[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.1", "SQZ_DGC_MOMENTUM",
                            "0.9", "SQZ_DGC_NESTEROV", nesterov ? "1" : "0", NULL};
        job_t j = {.kv = kn, .P = 3, .n = 65536, .calls = 4, .nan_rank = 1, .nan_call = 1,
                   .corrupt_call = -1};
        run(&j);
        size_t bad = 0;
        for (int r = 0; r < j.P; r++) {
            for (size_t i = 0; i < j.n; i++) {
                bad += !isfinite(j.out[r][i]);
            }
        }
        CHECK_MSG(bad == 0, "dgc (nesterov %d) after a NaN call: %zu outputs not finite",
                  nesterov, bad);
        for (int r = 0; r < j.P; r++) {
            CHECK_MSG(j.stats[r].calls_fallback == 1 && j.stats[r].calls_compressed == 3,
                      "dgc (nesterov %d), rank %d: %llu fallbacks and %llu compressed calls of 4 "
                      "(the NaN call alone should fall back)", nesterov, r,
                      (unsigned long long)j.stats[r].calls_fallback,
                      (unsigned long long)j.stats[r].calls_compressed);
        }
        CHECK(identical(&j));
        done(&j);
    }
    /* Clipping: each rank's buffer is scaled to norm <= clip / sqrt(P) before compression. */
    const char *kc[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "8", "SQZ_DGC_CLIP", "2.0", NULL};
    job_t       c    = {.kv = kc, .P = 4, .n = 65536, .calls = 1, .nan_rank = -1, .corrupt_call = -1};
    run(&c);
    double nrm = 0;
    for (size_t i = 0; i < c.n; i++) {
        nrm += (double)c.out[0][i] * c.out[0][i];
    }
    CHECK_MSG(sqrt(nrm) <= 1.05 * 2.0 * sqrt(4.0), "clipped sum has norm %.3f", sqrt(nrm));
    CHECK(identical(&c));
    done(&c);
}

/* SQZ_EF_STORAGE: compact residuals keep error feedback working (the mean of repeated calls still
 * approaches the exact sum) and replicas identical. */
static void test_ef_storage(void)
{
    const char *st[] = {"fp32", "bf16", "int8"};
    double      errs[3];
    for (int k = 0; k < 3; k++) {
        const char *kv[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_EF_STORAGE", st[k], NULL};
        job_t       j    = {.kv = kv, .P = 3, .n = 65536, .calls = 60, .nan_rank = -1, .corrupt_call = -1};
        run(&j);
        CHECK(identical(&j));
        errs[k] = j.err_avg;
        printf("SQZ_EF_STORAGE=%s: one call %.4f, mean of %d calls %.4f\n", st[k], j.err_first, j.calls,
               j.err_avg);
        CHECK_MSG(j.err_avg * 3 < j.err_first, "%s: error feedback lost", st[k]);
        done(&j);
    }
    CHECK(errs[1] < 2 * errs[0] + 0.01 && errs[2] < 3 * errs[0] + 0.02);
    /* A NaN call with compact storage: dense on every rank, nothing lost. */
    const char *kv[] = {"SQZ_METHOD", "quant", "SQZ_EF_STORAGE", "int8", NULL};
    job_t       j    = {.kv = kv, .P = 3, .n = 65536, .calls = 2, .nan_rank = 1, .nan_call = 1, .corrupt_call = -1};
    run(&j);
    CHECK(identical(&j));
    CHECK_EQ_INT(j.stats[0].calls_nonfinite, 1);
    done(&j);
}

/* The sparse all-gather's cost model: at density 0.5 on 4 ranks the payloads would outweigh a
 * dense all-reduce, so the call goes dense (exactly, residual emptied); at 0.01 it stays sparse. */
static void test_dense_switch(void)
{
    const char *kv[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.5", NULL};
    job_t       j    = {.kv = kv, .P = 4, .n = 65536, .calls = 2, .nan_rank = -1, .corrupt_call = -1};
    run(&j);
    CHECK(identical(&j));
    CHECK(j.err_first < 1e-6); /* exact: the dense all-reduce */
    CHECK_EQ_INT(j.stats[0].calls_compressed, 2);
    CHECK_EQ_INT(j.stats[0].bytes_wire, 2 * 65536 * 4);
    done(&j);
    const char *kv2[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.5", "SQZ_SPARSE_DENSE_SWITCH", "0", NULL};
    job_t       k    = {.kv = kv2, .P = 4, .n = 65536, .calls = 1, .nan_rank = -1, .corrupt_call = -1};
    run(&k);
    CHECK(k.err_first > 1e-3); /* switched off: top-k's error */
    CHECK(k.stats[0].bytes_wire < 65536 * 4 * 2);
    done(&k);
}

/* SQZ_P2P_WINDOW: the point-to-point exchanges in 48 KiB segments, their sends held back behind
 * the receives by windows of 0 (all at once), 1, 2, 7 segments and auto, give the same bits
 * (decoding keeps its rank order), in place or not, NaN included. */
static void test_p2p_window(void)
{
    static const char *const methods[][4] = {
        {"quant", "SQZ_QUANT_BITS", "4", "auto"}, {"sign", "SQZ_QUANT_BITS", "4", "auto"},
        {"topk", "SQZ_TOPK_DENSITY", "0.05", "allgather"}, {"topk", "SQZ_TOPK_DENSITY", "0.05", "split"}};
    const int ranks[] = {2, 5, 8};
    for (size_t m = 0; m < 4; m++) {
        for (size_t ri = 0; ri < 3; ri++) {
            float *ref = NULL;
            for (int w = 0; w < 5; w++) {
                const char *win[] = {"0", "1", "2", "7", "-1"};
                const char *kv[]  = {"SQZ_METHOD", methods[m][0], methods[m][1], methods[m][2],
                                     "SQZ_SPARSE_ALGO", methods[m][3], "SQZ_P2P_WINDOW", win[w],
                                     NULL};
                /* (400000 floats: messages of several 48 KiB segments) */
                job_t j = {.kv = kv, .P = ranks[ri], .n = 400000, .calls = 2, .nan_rank = -1,
                           .corrupt_call = -1, .in_place = w & 1};
                run(&j);
                CHECK_MSG(identical(&j), "%s window %d P=%d: outputs differ", methods[m][0], w,
                          j.P);
                CHECK_EQ_INT(j.stats[0].calls_compressed, 2);
                if (0 == w) {
                    ref = malloc(j.n * sizeof(float));
                    memcpy(ref, j.out[0], j.n * sizeof(float));
                } else {
                    CHECK_MSG(0 == memcmp(ref, j.out[0], j.n * sizeof(float)),
                              "%s window %d P=%d: other bits than window 0", methods[m][0], w, j.P);
                }
                done(&j);
            }
            free(ref);
        }
    }
    /* Windows differ between ranks (a per-rank setting): the segments still match. */
    const char *kv0[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "8", "SQZ_P2P_WINDOW", "0", NULL};
    const char *kv1[] = {"SQZ_P2P_WINDOW", "1", NULL};
    job_t       mix   = {.kv = kv0, .kv_rank1 = kv1, .P = 4, .n = 400000, .calls = 2,
                         .nan_rank = -1, .corrupt_call = -1};
    run(&mix);
    CHECK(identical(&mix));
    CHECK_EQ_INT(mix.stats[1].calls_compressed, 2);
    done(&mix);
    /* A non-finite input on one rank: every rank still goes dense together. */
    const char *kv[] = {"SQZ_METHOD", "quant", "SQZ_P2P_WINDOW", "1", NULL};
    job_t       nan  = {.kv = kv, .P = 5, .n = 40000, .calls = 2, .nan_rank = 3, .nan_call = 1,
                        .corrupt_call = -1};
    run(&nan);
    CHECK(identical(&nan));
    CHECK_EQ_INT(nan.stats[0].calls_nonfinite, 1);
    done(&nan);
}

/* The cost model's formulas (src/core/sqz_cost.h) against hand computations. */
static void test_cost_formulas(void)
{
    const double B = 16777216.0, link = 12.5e6, lat = 1e-3;
    sqz_cost_net_t         net   = {16, 16, 1, link, 25e9, lat};
    const sqz_cost_rates_t none  = {0, 0}, rates = {1e9, 4e9};
    sqz_cost_work_t        w     = sqz_cost_dense_ring(&net, B);
    CHECK(fabs(sqz_cost_seconds(&net, &none, &w) - (30 * lat + 2.0 * 15 / 16 * B / link)) < 1e-9);
    /* all-gather of 1 MB payloads: one round, 15 payloads out, 16 decodes of the input */
    w = sqz_cost_allgather(&net, B, 1e6);
    CHECK(fabs(sqz_cost_seconds(&net, &rates, &w) - (lat + 15e6 / link + B / 1e9 + 16 * B / 4e9)) <
          1e-9);
    /* scatter-reduce: 2 rounds, 2 x 15 pieces, (1 + 1/16) B compressed, 2 B decoded */
    w = sqz_cost_scatter_reduce(&net, B, 1e5, 1e5);
    CHECK(fabs(sqz_cost_seconds(&net, &rates, &w) -
               (2 * lat + 30e5 / link + B * 17 / 16 / 1e9 + 2 * B / 4e9)) < 1e-9);
    /* reduce-scatter: its first phase alone, 1 round, 15 pieces, B compressed, B decoded */
    w = sqz_cost_reduce_scatter_block(&net, B, 1e5);
    CHECK(fabs(sqz_cost_seconds(&net, &rates, &w) - (lat + 15e5 / link + B / 1e9 + B / 4e9)) <
          1e-9);
    /* 8 hosts x 8 ranks: a rank's 56 off-host peers of 63 share its host's link 8 ways; the rest
     * goes at the intra-host rate */
    sqz_cost_net_t h8 = {64, 8, 8, link, 25e9, lat};
    w = sqz_cost_split(&h8, B, 1e4, 2e4);
    const double sent = 63 * 3e4;
    CHECK(fabs(sqz_cost_seconds(&h8, &none, &w) -
               (2 * lat + 8 * sent * 56 / 63 / link + sent * 7 / 63 / 25e9)) < 1e-9);
    /* one host: no network latency, everything at the intra-host rate */
    sqz_cost_net_t one = {8, 1, 8, link, 25e9, lat};
    w = sqz_cost_dense_ring(&one, B);
    CHECK(fabs(sqz_cost_seconds(&one, &none, &w) - 2.0 * 7 / 8 * B / 25e9) < 1e-12);
}

/* SQZ_EXCHANGE_MODEL=time: the exchange the cost model predicts fastest, the dense all-reduce
 * included, the same on every rank; with the network and kernel rates given (deterministic) and
 * measured (SQZ_KERNEL_GBPS=0, SQZ_LINK_GBPS=0: a collective at the first compressed call). */
static void test_cost_model(void)
{
    static const struct {
        const char *method, *density, *link, *kernel;
        int         P, algo; /* the exchange every call must take; -1: any, the same on all */
    } model_cases[] = {
        /* a slow link: compression pays */
        {"quant", "0", "0.01", "1000", 4, SQZ_ALGO_REDUCE_SCATTER_P2P},
        {"sign", "0", "0.01", "1000", 3, SQZ_ALGO_REDUCE_SCATTER_P2P},
        {"topk", "0.01", "0.01", "1000", 4, SQZ_ALGO_ALLGATHER_P2P},
        /* density 0.1 on 8 ranks: the split all-gather sends less (docs/performance.md); the
         * scatter-reduce with re-sparsification would send less still, but only when asked */
        {"topk", "0.1", "0.01", "1000", 8, SQZ_ALGO_SPLIT_ALLGATHER},
        /* a fast link and slow kernels: the dense all-reduce is faster, for every family */
        {"quant", "0", "100000", "0.001", 4, SQZ_ALGO_DENSE_SWITCH},
        {"topk", "0.01", "100000", "0.001", 4, SQZ_ALGO_DENSE_SWITCH},
        /* measured rates (every rank measures, all agree): whatever the choice, the same */
        {"quant", "0", "0", "0", 4, -1},
        {"topk", "0.01", "0", "0", 5, -1},
        {"sign", "0", "10", "0", 2, -1},
    };
    for (size_t c = 0; c < sizeof(model_cases) / sizeof(model_cases[0]); c++) {
        const char *kv[] = {"SQZ_METHOD", model_cases[c].method, "SQZ_EXCHANGE_MODEL", "time",
                            "SQZ_LINK_GBPS", model_cases[c].link, "SQZ_KERNEL_GBPS", model_cases[c].kernel,
                            "SQZ_TOPK_DENSITY", strcmp(model_cases[c].density, "0") ? model_cases[c].density : "0.01",
                            NULL};
        job_t j = {.kv = kv, .P = model_cases[c].P, .n = 65536, .calls = 2, .nan_rank = -1,
                   .corrupt_call = -1};
        run(&j);
        CHECK_MSG(identical(&j), "cost model case %zu: outputs differ", c);
        for (int r = 0; r < j.P; r++) {
            CHECK_MSG(SQZ_OK == j.status[r], "cost model case %zu rank %d: %s", c, r,
                      sqz_status_string(j.status[r]));
            CHECK_EQ_INT(j.predicted[r], 2);
            CHECK_MSG(j.seconds_predicted[r] > 0, "case %zu: no prediction", c);
            CHECK_MSG(0 == memcmp(j.algos[r], j.algos[0], sizeof(j.algos[0])),
                      "case %zu: rank %d chose another exchange", c, r);
            if (model_cases[c].algo >= 0) {
                CHECK_MSG(2 == j.algos[r][model_cases[c].algo], "case %zu rank %d: not the %s exchange",
                          c, r, sqz_algo_names[model_cases[c].algo]);
            }
        }
        if (SQZ_ALGO_DENSE_SWITCH == model_cases[c].algo) {
            CHECK(j.err_first < 1e-6); /* the exact sum */
        }
        done(&j);
    }
    /* The link measured without point-to-point messages (one all-to-all-v per round). */
    const char *kvm[] = {"SQZ_METHOD", "quant", "SQZ_EXCHANGE_MODEL", "time", "SQZ_LINK_GBPS", "0",
                         NULL};
    job_t       m     = {.kv = kvm, .P = 3, .n = 65536, .calls = 2, .nan_rank = -1,
                         .corrupt_call = -1, .no_p2p = 1};
    run(&m);
    CHECK(identical(&m));
    for (int r = 0; r < m.P; r++) {
        CHECK_MSG(SQZ_OK == m.status[r], "measured link without p2p, rank %d: %s", r,
                  sqz_status_string(m.status[r]));
        CHECK_EQ_INT(m.predicted[r], 2);
    }
    done(&m);
    /* The bytes model (default) makes no prediction and keeps its choices. */
    const char *kv[] = {"SQZ_METHOD", "quant", "SQZ_KERNEL_GBPS", "0.001", NULL};
    job_t       b    = {.kv = kv, .P = 4, .n = 65536, .calls = 1, .nan_rank = -1, .corrupt_call = -1};
    run(&b);
    CHECK_EQ_INT(b.predicted[0], 0);
    CHECK_EQ_INT(b.algos[0][SQZ_ALGO_REDUCE_SCATTER_P2P], 1);
    done(&b);
}

/* A NaN in one rank's input of a 4-rank in-place call: that call goes dense (the exact sum where
 * the input is finite), the same on every rank, counted as non-finite. */
static void check_nan_goes_dense(const char *const *kv, int nan_rank)
{
    job_t f = {.kv = kv, .P = 4, .n = 65536, .calls = 1, .nan_rank = nan_rank, .nan_call = 0,
               .corrupt_call = -1, .in_place = 1};
    run(&f);
    CHECK(identical(&f));
    CHECK_EQ_INT(f.stats[0].calls_nonfinite, 1);
    CHECK(f.out[0][9] == f.exact[9]);
    done(&f);
}

/* SparCML's split all-gather for the sparsifiers: bit-identical, as accurate as the all-gather
 * (both send each rank's top entries; here per chunk), error feedback intact, NaN handled. */
static void test_split_allgather(void)
{
    const int ranks[] = {1, 2, 3, 5, 8};
    for (size_t ri = 0; ri < 5; ri++) {
        const char *kv[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_SPARSE_ALGO", "split", NULL};
        job_t       j    = {.kv = kv, .P = ranks[ri], .n = 70001, .calls = 1, .nan_rank = -1,
                            .corrupt_call = -1, .in_place = (int)(ri & 1)};
        run(&j);
        CHECK_MSG(identical(&j), "split P=%d: outputs differ", j.P);
        CHECK_MSG(j.err_first < 0.99, "split P=%d: rel err %.4f", j.P, j.err_first);
        CHECK_EQ_INT(j.stats[0].calls_compressed, 1);
        done(&j);
    }
    /* Error feedback through the split exchange: the mean of repeated calls approaches the exact
     * sum as fast as with the all-gather. */
    double avg[2];
    for (int a = 0; a < 2; a++) {
        const char *kv[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_SPARSE_ALGO",
                            a ? "split" : "allgather", NULL};
        job_t       e    = {.kv = kv, .P = 4, .n = 65536, .calls = 60, .nan_rank = -1, .corrupt_call = -1};
        run(&e);
        CHECK(identical(&e));
        avg[a] = e.err_avg;
        printf("topk %s: one call %.4f, mean of 60 calls %.4f\n", a ? "split" : "allgather",
               e.err_first, e.err_avg);
        CHECK_MSG(e.err_avg * 3 < e.err_first, "EF: %.4f -> %.4f", e.err_first, e.err_avg);
        done(&e);
    }
    CHECK(avg[1] < 1.5 * avg[0]);
    const char *kn[] = {"SQZ_METHOD", "topk", "SQZ_SPARSE_ALGO", "split", NULL};
    check_nan_goes_dense(kn, 3);
}

/* SQZ_SPARSE_ALGO=scatter, the scatter-reduce with re-sparsification: each rank reduces one
 * chunk and sends its top entries again, its server residual keeping the rest.  Bit-identical on
 * every rank and path, 2 (P - 1) pieces a rank instead of the all-gather's P - 1 payloads,
 * error feedback on both sides (the mean of repeated calls approaches the exact sum), NaN on one
 * rank handled; the time model's `auto` never takes it (test_cost_model). */
static void test_sparse_scatter(void)
{
    const int ranks[] = {1, 2, 3, 5, 8};
    for (size_t ri = 0; ri < 5; ri++) {
        const char *ka[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", NULL};
        const char *ks[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_SPARSE_ALGO",
                            "scatter", NULL};
        job_t a = {.kv = ka, .P = ranks[ri], .n = 70001, .calls = 2, .nan_rank = -1,
                   .corrupt_call = -1, .in_place = (int)(ri & 1), .no_p2p = (int)(ri == 3)};
        job_t s = a;
        s.kv    = ks;
        run(&a);
        run(&s);
        CHECK_MSG(identical(&s), "scatter P=%d: outputs differ", s.P);
        CHECK_MSG(s.err_first < 0.99, "scatter P=%d: rel err %.4f", s.P, s.err_first);
        /* (at 2 ranks the all-gather: it sends as much and loses less) */
        const int algo = s.P < 3         ? SQZ_ALGO_ALLGATHER_P2P
                         : s.no_p2p ? SQZ_ALGO_REDUCE_SCATTER
                                    : SQZ_ALGO_REDUCE_SCATTER_P2P;
        for (int r = 0; s.P > 1 && r < s.P; r++) {
            CHECK_MSG(2 == s.algos[r][algo], "scatter P=%d rank %d: not the %s exchange", s.P, r,
                      sqz_algo_names[algo]);
        }
        CHECK_EQ_INT(s.stats[0].calls_compressed, 2);
        if (s.P >= 3) {
            CHECK_MSG(s.sent[0] < a.sent[0], "scatter P=%d: %llu bytes, all-gather %llu", s.P,
                      (unsigned long long)s.sent[0], (unsigned long long)a.sent[0]);
        }
        if (s.P >= 5) {
            /* 2 (P - 1) pieces of n/P against (P - 1) payloads of n: about 2/P of the bytes */
            CHECK_MSG(s.sent[0] < 3.0 / s.P * a.sent[0], "scatter P=%d: %llu bytes, all-gather %llu",
                      s.P, (unsigned long long)s.sent[0], (unsigned long long)a.sent[0]);
        }
        printf("topk scatter P=%d: rel err %.4f (all-gather %.4f), bytes sent %.3f of the "
               "all-gather's\n", s.P, s.err_first, a.err_first,
               a.sent[0] ? (double)s.sent[0] / (double)a.sent[0] : 0.0);
        done(&a);
        done(&s);
    }
    /* Error feedback through both residuals (worker and server). */
    const char *ke[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_SPARSE_ALGO",
                        "scatter", NULL};
    job_t       e    = {.kv = ke, .P = 4, .n = 65536, .calls = 60, .nan_rank = -1, .corrupt_call = -1};
    run(&e);
    CHECK(identical(&e));
    printf("topk scatter: one call %.4f, mean of 60 calls %.4f\n", e.err_first, e.err_avg);
    CHECK_MSG(e.err_avg * 3 < e.err_first, "EF: %.4f -> %.4f", e.err_first, e.err_avg);
    /* (the same calls through the all-gather: 0.090; the second selection costs, within 2x) */
    const char *kg[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", NULL};
    job_t       ga   = {.kv = kg, .P = 4, .n = 65536, .calls = 60, .nan_rank = -1,
                        .corrupt_call = -1};
    run(&ga);
    CHECK_MSG(e.err_avg < 2 * ga.err_avg, "scatter's mean error %.4f, the all-gather's %.4f",
              e.err_avg, ga.err_avg);
    /* TOPK_RESELECT=2: each owner keeps twice the density of its reduced chunk, closer to the
     * all-gather.  (At 4 ranks a factor of 4 would keep every entry the first round sent.) */
    const char *kr[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_SPARSE_ALGO",
                        "scatter", "SQZ_TOPK_RESELECT", "2", NULL};
    job_t       re   = {.kv = kr, .P = 4, .n = 65536, .calls = 60, .nan_rank = -1,
                        .corrupt_call = -1};
    run(&re);
    CHECK(identical(&re));
    printf("topk scatter, TOPK_RESELECT=2: one call %.4f, mean of 60 calls %.4f (1: %.4f, "
           "all-gather %.4f)\n", re.err_first, re.err_avg, e.err_avg, ga.err_avg);
    CHECK_MSG(re.err_avg < e.err_avg, "TOPK_RESELECT=2: mean error %.4f, not below 1's %.4f",
              re.err_avg, e.err_avg);
    done(&re);
    done(&ga);
    done(&e);
    /* ... and at 8 ranks it sends (7/8)(1 + 4) payloads of k, fewer than the all-gather's 7. */
    const char *kr8[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.01", "SQZ_SPARSE_ALGO",
                         "scatter", "SQZ_TOPK_RESELECT", "4", NULL};
    const char *ka8[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.01", NULL};
    job_t       r8    = {.kv = kr8, .P = 8, .n = 200000, .calls = 2, .nan_rank = -1,
                         .corrupt_call = -1};
    job_t       a8    = r8;
    a8.kv             = ka8;
    run(&r8);
    run(&a8);
    CHECK(identical(&r8));
    printf("topk scatter, TOPK_RESELECT=4, 8 ranks: %.3f of the all-gather's bytes\n",
           (double)r8.sent[0] / (double)a8.sent[0]);
    CHECK_MSG(r8.sent[0] < 0.75 * a8.sent[0] && r8.sent[0] > 0.5 * a8.sent[0],
              "TOPK_RESELECT=4 at 8 ranks: %llu bytes, the all-gather %llu",
              (unsigned long long)r8.sent[0], (unsigned long long)a8.sent[0]);
    done(&r8);
    done(&a8);
    /* The time model predicts the bytes each phase sends (the compressor's stage_payload): with
     * the wire dominant, TOPK_RESELECT=4 about (1 + 4) / 2 times the seconds of F = 1 (the
     * stage-1 bound for both phases, as before, would give 4). */
    double pred[2];
    for (int i = 0; i < 2; i++) {
        const char *kp[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.01", "SQZ_SPARSE_ALGO",
                            "scatter", "SQZ_TOPK_RESELECT", i ? "4" : "1",
                            "SQZ_EXCHANGE_MODEL", "time", "SQZ_LINK_GBPS", "0.001",
                            "SQZ_KERNEL_GBPS", "1000", NULL};
        job_t       jp   = {.kv = kp, .P = 8, .n = 200000, .calls = 1, .nan_rank = -1,
                            .corrupt_call = -1};
        run(&jp);
        CHECK(identical(&jp));
        CHECK_EQ_INT(jp.predicted[0], 1);
        pred[i] = jp.seconds_predicted[0];
        done(&jp);
    }
    printf("topk scatter, time model: TOPK_RESELECT=4 predicted %.3f times F = 1's seconds\n",
           pred[1] / pred[0]);
    CHECK_MSG(pred[1] > 2.2 * pred[0] && pred[1] < 2.8 * pred[0],
              "TOPK_RESELECT=4 predicted %.4g s against F = 1's %.4g s", pred[1], pred[0]);
    /* The dense switch (SQZ_SPARSE_DENSE_SWITCH) under the bytes model: at density 0.6 the two
     * rounds send more than a dense ring; the call goes dense, exactly. */
    const char *kd[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.6", "SQZ_SPARSE_ALGO",
                        "scatter", NULL};
    job_t       d    = {.kv = kd, .P = 8, .n = 65536, .calls = 1, .nan_rank = -1,
                        .corrupt_call = -1};
    run(&d);
    CHECK(identical(&d));
    for (int r = 0; r < d.P; r++) {
        CHECK_MSG(1 == d.algos[r][SQZ_ALGO_DENSE_SWITCH], "density 0.6 scatter: rank %d not dense",
                  r);
    }
    CHECK(d.err_first < 1e-6);
    done(&d);
    /* fedzip, the other sparsifier: variable-size payloads (a size round in each phase). */
    for (int no_p2p = 0; no_p2p < 2; no_p2p++) {
        const char *kz[] = {"SQZ_METHOD", "fedzip", "SQZ_SPARSE_ALGO", "scatter", NULL};
        job_t       z    = {.kv = kz, .P = 5, .n = 65536, .calls = 3, .nan_rank = -1,
                            .corrupt_call = -1, .no_p2p = no_p2p};
        run(&z);
        CHECK_MSG(identical(&z), "fedzip scatter%s: outputs differ", no_p2p ? " collective" : "");
        CHECK_MSG(z.err_first < 0.99, "fedzip scatter: rel err %.4f", z.err_first);
        const int algo = no_p2p ? SQZ_ALGO_REDUCE_SCATTER : SQZ_ALGO_REDUCE_SCATTER_P2P;
        for (int r = 0; r < z.P; r++) {
            CHECK_MSG(3 == z.algos[r][algo], "fedzip scatter rank %d: not the %s exchange", r,
                      sqz_algo_names[algo]);
        }
        done(&z);
    }
    check_nan_goes_dense(ke, 2);
}

/* SQZ_ENTROPY: a lossless stage, so the outputs are the same bits as without it, on every exchange;
 * the payloads shrink where zstd finds redundancy (top-k's sorted indices, quant's codes of
 * smooth data). */
static void test_entropy(void)
{
    const char *methods[][6] = {{"SQZ_METHOD", "topk", NULL},
                                {"SQZ_METHOD", "quant", NULL},
                                {"SQZ_METHOD", "topk", "SQZ_SPARSE_ALGO", "split", NULL},
                                {"SQZ_METHOD", "sign", NULL}};
    for (int m = 0; m < 4; m++) {
        for (int path = 0; path < 3; path++) { /* pipelined, collective, threads */
            const char *kv[12];
            int         k = 0;
            for (int i = 0; methods[m][i]; i++) {
                kv[k++] = methods[m][i];
            }
            const char *base[12];
            memcpy(base, kv, sizeof(kv));
            base[k] = NULL;
            if (2 == path) {
                kv[k++] = "SQZ_THREADS";
                kv[k++] = "2";
            }
            kv[k++] = "SQZ_ENTROPY";
            kv[k++] = "zstd";
            kv[k]   = NULL;
            job_t a = {.kv = base, .P = 3, .n = 100000, .calls = 2, .nan_rank = -1,
                       .corrupt_call = -1, .no_p2p = (1 == path)};
            job_t b = a;
            b.kv    = kv;
            run(&a);
            run(&b);
            CHECK(identical(&b));
            CHECK_MSG(0 == memcmp(a.out[2], b.out[2], a.n * sizeof(float)),
                      "%s path %d: the entropy stage changed the result", methods[m][1], path);
            CHECK(b.stats[0].bytes_wire <= a.stats[0].bytes_wire);
            if (0 == m) {
                CHECK_MSG(b.stats[0].bytes_wire < 0.95 * (double)a.stats[0].bytes_wire,
                          "topk payloads did not shrink: %llu vs %llu",
                          (unsigned long long)b.stats[0].bytes_wire, (unsigned long long)a.stats[0].bytes_wire);
            }
            done(&a);
            done(&b);
        }
    }
}

/* A state of compressor c with its default settings (destroy with c->destroy, free *config). */
static void *default_state(const sqz_compressor_v1_t *c, void **config)
{
    char                          err[256] = "";
    void                         *st       = NULL;
    const sqz_compressor_env_v1_t env      = {sizeof env, 0, 1, 0};
    REQUIRE(SQZ_OK == sqz_plugin_config_make(c, NULL, config, err, sizeof err));
    REQUIRE(SQZ_OK == c->create(*config, &env, &st));
    return st;
}

/* The bytes of c's payload for x[0, n), compressed on its own. */
static size_t payload_bytes(const sqz_compressor_v1_t *c, const float *x, size_t n, int stage)
{
    void          *config;
    void          *st  = default_state(c, &config);
    const size_t   cap = c->max_payload(st, n);
    unsigned char *p   = malloc(cap);
    REQUIRE(NULL != p);
    sqz_compress_args_v1_t a = {.size = sizeof(a), .in = x, .n = n, .seq = 0, .stage = stage,
                                .payload = p, .capacity = cap};
    REQUIRE(SQZ_OK == c->compress(st, &a));
    free(p);
    c->destroy(st);
    free(config);
    return a.payload_bytes;
}

/* The collective (not pipelined) scatter-reduce exchange sends variable-size payloads at their
 * exact sizes.  Lossless's chunks, compressed here one by one, give every byte a rank must report
 * (bytes_wire: its frames and payloads; bytes_sent: what left it, sizes included), the outputs are
 * the bits of the pipelined exchange, and each phase takes one size exchange more.  Fixed-size
 * payloads (quant) take none: one collective a phase, whole slots, as before. */
static void test_exact_sizes(void)
{
    enum { P = 3 };
    const size_t n          = 100000;
    const size_t F          = sizeof(sqz_frame_t);
    const char  *kv_pipe[]  = {"SQZ_METHOD", "lossless", NULL};
    const char  *kv_off[]   = {"SQZ_METHOD", "lossless", "SQZ_PIPELINE", "0", NULL};
    job_t        ref        = {.kv = kv_pipe, .P = P, .n = n, .calls = 1, .nan_rank = -1,
                               .corrupt_call = -1};
    job_t        jobs[2]    = {ref, ref};
    jobs[0].no_p2p          = 1;       /* a transport without point-to-point operations */
    jobs[1].kv              = kv_off;  /* SQZ_PIPELINE=0 */
    run(&ref);
    run(&jobs[0]);
    run(&jobs[1]);

    size_t          off[P], len[P];
    sqz_comm_t      fake = {.nranks = P};
    sqz_coll_call_t call = {.comm = &fake, .n = n};
    sqz_rs_layout(&call, off, len);
    void        *config;
    void        *st = default_state(&sqz_compressor_lossless, &config);
    float       *x  = malloc(n * sizeof(float));
    REQUIRE(NULL != x);
    for (int r = 0; r < P; r++) {
        for (size_t i = 0; i < n; i++) {
            x[i] = input_value(r, 0, i);
        }
        size_t wire = 0, sent = 0, slots = 0;
        for (int c = 0; c < P; c++) {
            const size_t b = payload_bytes(&sqz_compressor_lossless, x + off[c], len[c], 0);
            wire += F + b;
            sent += (c == r) ? 0 : sqz_coll_round8(F + b);
            slots += (c == r) ? 0 : sqz_coll_round8(F + sqz_compressor_lossless.max_payload(st, len[c]));
        }
        /* Phase 2: rank r's reduced chunk, the rank-order float sum (exact: lossless). */
        const size_t b2 = payload_bytes(&sqz_compressor_lossless, ref.exact + off[r], len[r], 1);
        sent += (P - 1) * (sqz_coll_round8(F + b2) + 2 * sizeof(uint64_t));
        slots += (P - 1) * sqz_coll_round8(F + sqz_compressor_lossless.max_payload(st, len[r]));
        CHECK_EQ_INT(ref.stats[r].bytes_wire, wire);
        for (int k = 0; k < 2; k++) {
            const job_t *j = &jobs[k];
            CHECK_EQ_INT(j->status[r], SQZ_OK);
            CHECK_EQ_INT(j->stats[r].calls_compressed, 1);
            CHECK_MSG(0 == memcmp(j->out[r], ref.out[r], n * sizeof(float)),
                      "exchange %d rank %d: not the pipelined exchange's bits", k, r);
            CHECK_EQ_INT(j->stats[r].bytes_wire, wire);
            CHECK_EQ_INT(j->sent[r], sent);
            CHECK_MSG(j->sent[r] < slots, "rank %d: %llu bytes sent, whole slots were %zu", r,
                      (unsigned long long)j->sent[r], slots);
            CHECK_EQ_INT(j->alltoallvs[r], 2);  /* sizes, payloads */
            CHECK_EQ_INT(j->allgathervs[r], 3); /* settings check, sizes, payloads */
        }
    }
    free(x);
    sqz_compressor_lossless.destroy(st);
    free(config);
    done(&ref);
    done(&jobs[0]);
    done(&jobs[1]);

    /* Fixed size: no size exchange, whole slots; an entropy stage makes the same method variable. */
    for (int entropy = 0; entropy < 2; entropy++) {
        const char *kv[] = {"SQZ_METHOD", "quant", "SQZ_ENTROPY", entropy ? "zstd" : "none", NULL};
        job_t       j    = {.kv = kv, .P = P, .n = n, .calls = 2, .nan_rank = -1, .corrupt_call = -1,
                            .no_p2p = 1};
        run(&j);
        CHECK(identical(&j));
        st = default_state(&sqz_compressor_quant, &config);
        for (int r = 0; r < P; r++) {
            CHECK_EQ_INT(j.stats[r].calls_compressed, 2);
            CHECK_EQ_INT(j.alltoallvs[r], entropy ? 4 : 2);
            /* settings check, the identity agreement of the second call (the buffer's period is
             * proposed there: sqz_callseq.h), and one phase-2 all-gather (+ sizes) per call */
            CHECK_EQ_INT(j.allgathervs[r], entropy ? 6 : 4);
            size_t slots = 0;
            for (int c = 0; c < P; c++) {
                const size_t slot = sqz_coll_round8(F + sqz_compressor_quant.max_payload(st, len[c]));
                slots += (c == r) ? (P - 1) * slot : slot;
            }
            if (entropy) {
                CHECK(j.sent[r] < 2 * slots);
            } else {
                CHECK_EQ_INT(j.sent[r], 2 * slots);
            }
        }
        sqz_compressor_quant.destroy(st);
        free(config);
        done(&j);
    }
}

static void test_mismatch(void)
{
    const char *kv[]  = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.1", NULL};
    const char *kv1[] = {"SQZ_TOPK_DENSITY", "0.2", NULL};
    job_t       j     = {.kv = kv, .kv_rank1 = kv1, .P = 3, .n = 65536, .calls = 1, .nan_rank = -1,
                         .corrupt_call = -1};
    run(&j);
    for (int r = 0; r < 3; r++) {
        CHECK_EQ_INT(j.status[r], SQZ_ERR_MISMATCH);
    }
    done(&j);
    /* SQZ_ENTROPY differs: a mismatch like any setting that changes the exchange (with the
     * collective exchange the zstd rank would run a size exchange the others skip). */
    const char *kq[]  = {"SQZ_METHOD", "quant", "SQZ_PIPELINE", "0", NULL};
    const char *kq1[] = {"SQZ_ENTROPY", "zstd", NULL};
    job_t       je    = {.kv = kq, .kv_rank1 = kq1, .P = 3, .n = 65536, .calls = 1,
                         .nan_rank = -1, .corrupt_call = -1, .no_p2p = 1};
    run(&je);
    for (int r = 0; r < 3; r++) {
        CHECK_EQ_INT(je.status[r], SQZ_ERR_MISMATCH);
    }
    done(&je);
    /* The same with the check off on every rank, over point-to-point: receivers read both forms
     * of a payload, so the zstd rank's frames decode everywhere and replicas stay identical. */
    const char *kp[]  = {"SQZ_METHOD", "quant", "SQZ_CHECK_SETTINGS", "0", NULL};
    job_t       jp    = {.kv = kp, .kv_rank1 = kq1, .P = 3, .n = 65536, .calls = 3,
                         .nan_rank = -1, .corrupt_call = -1};
    run(&jp);
    CHECK(identical(&jp));
    for (int r = 0; r < 3; r++) {
        CHECK_EQ_INT(jp.status[r], SQZ_OK);
        CHECK_EQ_INT(jp.stats[r].calls_compressed, 3);
    }
    done(&jp);
    /* SQZ_MIN_BYTES differs, with a call that one side passes through and the other compresses:
     * the check comes before eligibility, so every rank is told, instead of rank 1 running the
     * dense all-reduce while the others check settings. */
    const char *km[]  = {"SQZ_METHOD", "quant", "SQZ_MIN_BYTES", "1", NULL};
    const char *km1[] = {"SQZ_MIN_BYTES", "1000000", NULL};
    for (int rs = 0; rs < 2; rs++) {
        job_t jm = {.kv = km, .kv_rank1 = km1, .P = 3, .n = 3 * 20000, .calls = 1, .rs = rs,
                    .nan_rank = -1, .corrupt_call = -1};
        run(&jm);
        for (int r = 0; r < 3; r++) {
            CHECK_MSG(SQZ_ERR_MISMATCH == jm.status[r], "SQZ_MIN_BYTES differs on rank 1 (%s): "
                      "rank %d: %s", rs ? "reduce-scatter" : "all-reduce", r,
                      sqz_status_string(jm.status[r]));
        }
        done(&jm);
    }
}

/* Ranks grouped by host key: hosts numbered by first rank, local ranks in rank order, uniform
 * only when every host holds as many ranks, host-major only when uniform hosts hold runs of
 * consecutive ranks (the same answer on every rank). */
static void test_host_layout(void)
{
    const uint64_t    blocks[] = {7, 7, 9, 9}, interleaved[] = {7, 9, 7, 9, 7, 9};
    const uint64_t    uneven[] = {5, 3, 5};
    sqz_host_layout_t l;
    const uint64_t    runs_uneven[] = {5, 5, 3};
    sqz_host_layout(blocks, 4, 3, &l);
    CHECK(1 == l.host && 2 == l.hosts && 1 == l.local_rank && 2 == l.local_size && l.uniform);
    for (int me = 0; me < 4; me++) {
        sqz_host_layout(blocks, 4, me, &l);
        CHECK(l.host_major && l.host * 2 + l.local_rank == me);
    }
    sqz_host_layout(interleaved, 6, 4, &l);
    CHECK(0 == l.host && 2 == l.hosts && 2 == l.local_rank && 3 == l.local_size && l.uniform);
    CHECK_EQ_INT(l.most, 3);
    CHECK(!l.host_major);
    sqz_host_layout(uneven, 3, 1, &l);
    CHECK(1 == l.host && 0 == l.local_rank && 1 == l.local_size && !l.uniform && 2 == l.most);
    CHECK(!l.host_major);
    sqz_host_layout(runs_uneven, 3, 0, &l);
    CHECK(!l.uniform && !l.host_major);
    CHECK(sqz_host_key("a") != sqz_host_key("b") && sqz_host_key("a") == sqz_host_key("a"));
}

int main(void)
{
    sqz_log_set_level(SQZ_LOG_ERROR);
    test_methods();
    test_none_is_exact();
    test_reduce_scatter();
    test_topk_reduce_scatter_faults();
    test_warmup();
    test_nonfinite();
    test_nonfinite_recovers();
    test_corrupt();
    test_short_payload();
    test_p2p_same_bits();
    test_threads();
    test_ef_variants();
    test_dgc();
    test_ef_storage();
    test_dense_switch();
    test_p2p_window();
    test_cost_formulas();
    test_cost_model();
    test_split_allgather();
    test_sparse_scatter();
    test_entropy();
    test_exact_sizes();
    test_host_layout();
    sqz_log_set_level(-1); /* the mismatch test logs errors on purpose */
    test_mismatch();
    return sqz_test_result("test_coll_threads");
}
