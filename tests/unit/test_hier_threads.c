/* sqz_comm_create_hier on H hosts x L ranks in threads (one context per rank, as in separate
 * processes; a thread group per host and one per local index): every rank bit-identical, close to
 * the exact sum, SUM and AVG, in place and not, counts no L divides; each rank compresses its
 * shard only; a NaN on one rank makes the call the exact dense sum and keeps every residual; a
 * rank without memory for the scratch; the rates shared by a host's exchanges; the reduce-scatter
 * (each rank's block close, compressed, a NaN call exact); the calls a hierarchy does not take
 * say so. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "coll/sqz_coll_hier.h"
#include "sqz_ctx.h"
#include "sqz_log.h"
#include "sqz_test.h"
#include "sqz_thread_transport.h"

#define MAXR 8

typedef struct {
    const char *method;
    const char *sparse_algo; /* SQZ_SPARSE_ALGO, or NULL: auto */
    int         H, L;
    size_t      n;
    int         calls, in_place, avg;
    int         nan_call;   /* >= 0: rank H*L-1 puts a NaN into its input of that call */
    int         skip_call;  /* >= 0: that call is not made (the twin of a NaN run) */
    int         two_bufs;   /* 1: odd calls go to a second buffer of the same size, inputs x1000 */
    int         timed;      /* 1: SQZ_EXCHANGE_MODEL=time with the link and the host measured */
    int         rs;         /* 1: the calls are reduce-scatters of n / (H L) per rank */
    double      link[MAXR], compress[MAXR]; /* each rank's engine's rates after the calls */
    double      intra[MAXR];                /* sqz_hier_intra_seconds(n) after the calls */
    float      *out[MAXR];  /* the last call's output per rank */
    sqz_stats_t stats[MAXR];
    uint64_t    algos[MAXR][SQZ_ALGO_COUNT]; /* calls per exchange (stats "algorithms") */
    sqz_status_t status[MAXR], ef_status;
    sqz_thread_group_t *local[MAXR], *inter[MAXR];
} job_t;

/* Rank r's input: integers in [-64, 64), so every dense sum is exact in float. */
static float input(int r, int call, size_t i)
{
    unsigned x = (unsigned)(i * 2654435761u) ^ (unsigned)(r * 40503 + call * 977);
    x ^= x >> 13, x *= 0x5bd1e995u, x ^= x >> 15;
    return (float)((int)(x % 128) - 64);
}

static void rank_main(int rank, void *arg)
{
    job_t     *j    = arg;
    const int  host = rank / j->L, lr = rank % j->L;
    const char *kv[] = {"SQZ_METHOD", j->method, "SQZ_QUANT_BITS", "8", "SQZ_SPARSE_ALGO",
                        j->sparse_algo ? j->sparse_algo : "auto", j->timed ? "SQZ_EXCHANGE_MODEL" : NULL, "time", "SQZ_LINK_GBPS", "0",
                        "SQZ_INTRA_GBPS", "0", NULL};
    sqz_ctx_t  *ctx;
    sqz_comm_t *flat = sqz_thread_comm(j->local[host], lr, kv, &ctx); /* (only its context) */
    sqz_comm_destroy(flat);
    sqz_transport_t lt, it;
    sqz_thread_transport(j->local[host], lr, &lt);
    sqz_thread_transport(j->inter[lr], host, &it);
    sqz_comm_t *comm = NULL;
    REQUIRE(SQZ_OK == sqz_comm_create_hier(ctx, &lt, &it, &comm));
    float *in    = malloc(j->n * sizeof(float));
    float *bufs[2] = {malloc(j->n * sizeof(float)), malloc(j->n * sizeof(float))}, *buf = bufs[0];
    REQUIRE(in && bufs[0] && bufs[1]);
    for (int call = 0; call < j->calls; call++) {
        if (call == j->skip_call) {
            continue;
        }
        const int other = j->two_bufs && (call & 1);
        buf             = bufs[other];
        for (size_t i = 0; i < j->n; i++) {
            in[i] = input(rank, call, i) * (other ? 1000.0f : 1.0f);
        }
        if (call == j->nan_call && rank == j->H * j->L - 1) {
            in[j->n / 3] = NAN;
        }
        memcpy(buf, in, j->n * sizeof(float));
        const sqz_op_t op = j->avg ? SQZ_OP_AVG : SQZ_OP_SUM;
        j->status[rank] = j->rs ? sqz_reduce_scatter_block(comm, j->in_place ? NULL : in, buf,
                                                           j->n / (size_t)(j->H * j->L),
                                                           SQZ_DTYPE_FLOAT32, op, 0)
                                : sqz_allreduce(comm, j->in_place ? NULL : in, buf, j->n,
                                                SQZ_DTYPE_FLOAT32, op, 0);
        if (SQZ_OK != j->status[rank]) {
            break;
        }
    }
    memcpy(j->out[rank], buf, j->n * sizeof(float));
    if (0 == rank) {
        j->ef_status = sqz_ef_allreduce(comm, buf, j->n, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 1, NULL);
    }
    sqz_stats_get(ctx, &j->stats[rank]);
    memcpy(j->algos[rank], ctx->stats[ctx->method_index].algo_calls, sizeof(j->algos[rank]));
    j->link[rank] = comm->cost.link_Bps, j->compress[rank] = comm->cost.compress_Bps;
    j->intra[rank] = sqz_hier_intra_seconds(comm, j->n);
    free(in);
    free(bufs[0]);
    free(bufs[1]);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

static void run(job_t *j)
{
    const int P = j->H * j->L;
    REQUIRE(P <= MAXR);
    for (int h = 0; h < j->H; h++) {
        j->local[h] = sqz_thread_group_create(j->L);
    }
    for (int l = 0; l < j->L; l++) {
        j->inter[l] = sqz_thread_group_create(j->H);
    }
    for (int r = 0; r < P; r++) {
        j->out[r] = calloc(j->n, sizeof(float));
    }
    sqz_thread_run(P, rank_main, j);
    for (int h = 0; h < j->H; h++) {
        sqz_thread_group_destroy(j->local[h]);
    }
    for (int l = 0; l < j->L; l++) {
        sqz_thread_group_destroy(j->inter[l]);
    }
}

static void done(job_t *j)
{
    for (int r = 0; r < j->H * j->L; r++) {
        free(j->out[r]);
    }
}

static int identical(const job_t *j)
{
    for (int r = 1; r < j->H * j->L; r++) {
        if (0 != memcmp(j->out[0], j->out[r], j->n * sizeof(float))) {
            return 0;
        }
    }
    return 1;
}

/* ||out - exact|| / ||exact|| of the last call (rank 0), exact = the sum (or mean) of the
 * inputs. */
static double rel_error(const job_t *j, int *exactly)
{
    const int P = j->H * j->L, call = j->calls - 1;
    double    e = 0, x = 0;
    *exactly    = 1;
    for (size_t i = 0; i < j->n; i++) {
        double s = 0;
        for (int r = 0; r < P; r++) {
            s += input(r, call, i);
        }
        s = j->avg ? s / P : s;
        e += (j->out[0][i] - s) * (j->out[0][i] - s);
        x += s * s;
        *exactly &= j->out[0][i] == (float)s;
    }
    return sqrt(e / x);
}

/* The last call of j put a NaN at n / 3: 1 when rank 0's output is NaN there and the exact
 * dense sum everywhere else (SUM; the NaN element is set to its sum for the comparison). */
static int nan_call_exact(job_t *j)
{
    const size_t at = j->n / 3;
    if (!isnan(j->out[0][at])) {
        return 0;
    }
    float s = 0;
    for (int r = 0; r < j->H * j->L; r++) {
        s += input(r, j->calls - 1, at);
    }
    j->out[0][at] = s;
    int exactly;
    rel_error(j, &exactly);
    return exactly;
}

/* Shapes, SUM/AVG, in place: bit-identical, close, each rank's bytes_in its shard (top-k in place
 * through the scatter-reduce with re-sparsification between hosts). */
static void test_shapes(void)
{
    static const int shapes[][2] = {{2, 2}, {3, 2}, {2, 3}, {4, 2}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        for (int k = 0; k < 4; k++) {
            job_t j = {.method = (k & 2) ? "topk" : "quant", .sparse_algo = 3 == k ? "scatter" : NULL,
                       .H = shapes[s][0], .L = shapes[s][1],
                       .n = 100003, .calls = 2, .in_place = k & 1, .avg = k == 1,
                       .nan_call = -1, .skip_call = -1};
            run(&j);
            const int P = j.H * j.L;
            int       exactly;
            const double err = rel_error(&j, &exactly);
            CHECK_MSG(identical(&j), "%dx%d %s: ranks differ", j.H, j.L, j.method);
            CHECK_MSG(err < ((k & 2) ? 1.5 : 0.02), "%dx%d %s%s: error %g", j.H, j.L, j.method,
                      j.avg ? " AVG" : "", err);
            CHECK(!exactly); /* (compressed, not dense) */
            for (int r = 0; r < P; r++) {
                CHECK_EQ_INT(j.status[r], SQZ_OK);
                CHECK_EQ_INT(j.stats[r].calls_compressed, 2);
                if (j.sparse_algo && j.H > 2) { /* (2 hosts: the all-gather) */
                    CHECK_EQ_INT(j.algos[r][SQZ_ALGO_REDUCE_SCATTER_P2P], 2);
                }
                /* Local rank l's shard: n / L elements, one more for l < n % L. */
                const size_t l = (size_t)(r % j.L), shard = j.n / j.L + (l < j.n % j.L);
                CHECK_EQ_INT(j.stats[r].bytes_in, 2 * shard * sizeof(float));
            }
            CHECK_EQ_INT(j.ef_status, SQZ_ERR_NOT_SUPPORTED);
            done(&j);
        }
    }
}

/* ||out - exact|| / ||exact|| of rank r's block of a reduce-scatter's call (exact: the sum or
 * mean of every rank's block r, rank r = host r / L, local rank r % L); *exactly as rel_error. */
static double rs_error(const job_t *j, int r, int call, int *exactly)
{
    const int    P = j->H * j->L;
    const size_t c = j->n / (size_t)P;
    double       e = 0, x = 0;
    *exactly       = 1;
    for (size_t i = 0; i < c; i++) {
        double s = 0;
        for (int q = 0; q < P; q++) {
            s += input(q, call, (size_t)r * c + i);
        }
        s = j->avg ? s / P : s;
        e += (j->out[r][i] - s) * (j->out[r][i] - s);
        x += s * s;
        *exactly &= j->out[r][i] == (float)s;
    }
    return sqrt(e / (x > 0 ? x : 1));
}

/* The reduce-scatter on every shape, SUM and AVG, in place or not: each rank's block close to
 * the exact one, compressed (each rank's exchange between hosts carries its column of H blocks),
 * and a NaN call: the exact dense blocks on every rank, NaN only in the block that held it, one
 * fallback, and the next call compressed again. */
static void test_reduce_scatter(void)
{
    static const int shapes[][2] = {{2, 2}, {3, 2}, {2, 3}, {4, 2}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        for (int k = 0; k < 3; k++) {
            const int P = shapes[s][0] * shapes[s][1];
            job_t j = {.method = "quant", .H = shapes[s][0], .L = shapes[s][1],
                       .n = (size_t)P * 20011, .calls = 3, .in_place = k & 1, .avg = k == 1,
                       .rs = 1, .nan_call = k == 2 ? 1 : -1, .skip_call = -1};
            run(&j);
            for (int r = 0; r < P; r++) {
                int exactly;
                const double err = rs_error(&j, r, j.calls - 1, &exactly);
                CHECK_EQ_INT(j.status[r], SQZ_OK);
                CHECK_MSG(err < 0.02 && !exactly, "%dx%d reduce-scatter%s%s, rank %d: error %g%s",
                          j.H, j.L, j.avg ? " AVG" : "", j.in_place ? " in place" : "", r, err,
                          exactly ? " (exact: not compressed)" : "");
                const uint64_t nan_calls = j.nan_call >= 0;
                CHECK_MSG(j.stats[r].calls_compressed == (uint64_t)j.calls - nan_calls &&
                              j.stats[r].calls_fallback == nan_calls &&
                              j.stats[r].bytes_in ==
                                  (j.calls - nan_calls) * (j.n / (size_t)j.L) * sizeof(float),
                          "%dx%d reduce-scatter, rank %d: %llu compressed, %llu fallbacks, "
                          "%llu bytes in", j.H, j.L, r,
                          (unsigned long long)j.stats[r].calls_compressed,
                          (unsigned long long)j.stats[r].calls_fallback,
                          (unsigned long long)j.stats[r].bytes_in);
            }
            done(&j);
        }
    }
    /* top-k: the column's reduce-scatter is compressed too (the split exchange's first phase),
     * 1/L of the input into the engine per call. */
    for (size_t s = 0; s < 4; s += 3) {
        const int P = shapes[s][0] * shapes[s][1];
        job_t     t = {.method = "topk", .H = shapes[s][0], .L = shapes[s][1],
                       .n = (size_t)P * 20011, .calls = 3, .rs = 1, .nan_call = -1,
                       .skip_call = -1};
        run(&t);
        for (int r = 0; r < P; r++) {
            int exactly;
            (void)rs_error(&t, r, t.calls - 1, &exactly);
            CHECK_EQ_INT(t.status[r], SQZ_OK);
            CHECK_MSG(!exactly && t.stats[r].calls_compressed == (uint64_t)t.calls &&
                          t.stats[r].calls_fallback == 0 &&
                          t.stats[r].bytes_in == t.calls * (t.n / (size_t)t.L) * sizeof(float),
                      "%dx%d top-k reduce-scatter, rank %d: %llu compressed, %llu fallbacks%s",
                      t.H, t.L, r, (unsigned long long)t.stats[r].calls_compressed,
                      (unsigned long long)t.stats[r].calls_fallback, exactly ? ", exact" : "");
        }
        done(&t);
    }
    /* The NaN call itself: the exact dense blocks, NaN where it was (rank P-1's element n / 3). */
    job_t j = {.method = "quant", .H = 2, .L = 2, .n = 4 * 20011, .calls = 2, .rs = 1,
               .nan_call = 1, .skip_call = -1};
    run(&j);
    const size_t c = j.n / 4, at = j.n / 3;
    for (int r = 0; r < 4; r++) {
        int exactly = 1;
        if ((size_t)r == at / c) {
            CHECK(isnan(j.out[r][at % c]));
            j.out[r][at % c] = 0;
            for (int q = 0; q < 4; q++) {
                j.out[r][at % c] += input(q, 1, at);
            }
        }
        rs_error(&j, r, 1, &exactly);
        CHECK_MSG(exactly, "reduce-scatter NaN call, rank %d: not the exact dense block", r);
    }
    done(&j);
}

/* Two buffers of the same size, called in turn: each keeps its own residual (a residual of the
 * other's, a thousand times larger, would swamp the last call's result). */
static void test_two_buffers(void)
{
    job_t j = {.method = "quant", .H = 2, .L = 2, .n = 65536, .calls = 5, .nan_call = -1,
               .skip_call = -1, .two_bufs = 1};
    run(&j);
    int          exactly;
    const double err = rel_error(&j, &exactly);
    CHECK(identical(&j));
    CHECK_MSG(err < 0.02, "two buffers: error %g of the last call", err);
    done(&j);
}

/* SQZ_EXCHANGE_MODEL=time with the link measured: the host's exchanges calibrate at once, and
 * all of them then hold the same rates (the host's mean), on every rank. */
static void test_shared_rates(void)
{
    job_t j = {.method = "quant", .H = 2, .L = 3, .n = 600000, .calls = 2, .nan_call = -1,
               .skip_call = -1, .timed = 1};
    run(&j);
    CHECK(identical(&j));
    /* SQZ_INTRA_GBPS=0: the stages inside the host were timed (pieces of 80K elements), not the
     * 200 Gbit/s default (2/3 x 2.4 MB x 2 at 25 GB/s: 0.128 ms). */
    for (int r = 0; r < 6; r++) {
        CHECK_MSG(j.intra[r] > 0 && isfinite(j.intra[r]) && fabs(j.intra[r] - 1.28e-4) > 1e-9,
                  "rank %d: intra seconds %g", r, j.intra[r]);
        CHECK(j.intra[r] == j.intra[r / 3 * 3]); /* (one value per host) */
    }
    for (int r = 0; r < 6; r++) {
        CHECK_MSG(j.link[r] > 0 && j.compress[r] > 0, "rank %d: rates %g %g", r, j.link[r],
                  j.compress[r]);
        CHECK_MSG(j.link[r] == j.link[0] && j.compress[r] == j.compress[0],
                  "rank %d: link %g compress %g, rank 0 %g %g", r, j.link[r], j.compress[r],
                  j.link[0], j.compress[0]);
    }
    done(&j);
}

/* No memory for the scratch on one rank (host 1, local rank 1): its host takes the dense
 * all-reduces inside instead, the other host its all-to-all; the results stay bit-identical
 * and close, and a NaN still makes the call exact. */
static int fail_h1_l1(int host, int local_rank) { return 1 == host && 1 == local_rank; }

static void test_no_memory(void)
{
    sqz_hier_alloc_fails = fail_h1_l1;
    for (int k = 0; k < 2; k++) {
        job_t j = {.method = "quant", .H = 2, .L = 2, .n = 65537, .calls = 2, .in_place = k,
                   .nan_call = -1, .skip_call = -1};
        run(&j);
        int          exactly;
        const double err = rel_error(&j, &exactly);
        CHECK(identical(&j));
        CHECK_MSG(err < 0.02 && !exactly, "no memory on one rank: error %g", err);
        for (int r = 0; r < 4; r++) {
            CHECK_EQ_INT(j.status[r], SQZ_OK);
            CHECK_EQ_INT(j.stats[r].calls_compressed, 2);
        }
        done(&j);
    }
    job_t j = {.method = "quant", .H = 2, .L = 2, .n = 65537, .calls = 2, .nan_call = 1,
               .skip_call = -1};
    run(&j);
    CHECK(identical(&j));
    CHECK_MSG(nan_call_exact(&j), "no memory and a NaN: not the exact dense sum");
    done(&j);
    /* A reduce-scatter needs its scratch on every rank: agreed before any data moves, every rank
     * returns SQZ_ERR_NOT_SUPPORTED (the caller's dense reduce-scatter runs) and none waits. */
    job_t rs = {.method = "quant", .H = 2, .L = 2, .n = 4 * 1000, .calls = 1, .rs = 1,
                .nan_call = -1, .skip_call = -1};
    run(&rs);
    for (int r = 0; r < 4; r++) {
        CHECK_EQ_INT(rs.status[r], SQZ_ERR_NOT_SUPPORTED);
    }
    done(&rs);
    sqz_hier_alloc_fails = NULL;
}

/* A NaN on the last rank (another host and local index than rank 0): the call is the exact dense
 * sum on every rank (NaN where it was), and the next call gives what it gives without the NaN
 * call (every shard's residual kept; up to the float rounding of restoring it). */
static void test_nonfinite(void)
{
    job_t j = {.method = "quant", .H = 2, .L = 2, .n = 65537, .calls = 2, .nan_call = 1,
               .skip_call = -1};
    run(&j);
    CHECK(identical(&j));
    CHECK_MSG(nan_call_exact(&j),
              "the NaN call is not NaN there and the exact dense sum elsewhere");
    for (int r = 0; r < 4; r++) {
        CHECK_EQ_INT(j.status[r], SQZ_OK);
        CHECK_EQ_INT(j.stats[r].calls_fallback, 1);
    }
    done(&j);

    job_t with = {.method = "quant", .H = 2, .L = 2, .n = 65537, .calls = 3, .nan_call = 1,
                  .skip_call = -1};
    job_t without = with;
    without.nan_call = -1, without.skip_call = 1;
    run(&with);
    run(&without);
    double d2 = 0, x2 = 0;
    for (size_t i = 0; i < with.n; i++) {
        const double d = (double)with.out[0][i] - without.out[0][i];
        d2 += d * d;
        x2 += (double)without.out[0][i] * without.out[0][i];
    }
    CHECK_MSG(sqrt(d2 / x2) < 1e-5, "the call after the NaN call differs by %g", sqrt(d2 / x2));
    done(&with);
    done(&without);

    /* A summable method (PowerSGD): its rounds are native sums, with no frame to carry a request
     * to go dense, so the host that saw the NaN does not ask; the NaN travels in the sums of its
     * shard's exchange between hosts, where every rank sees it and goes dense (before, that
     * host's ranks returned an error and the other host waited in PowerSGD's rounds forever).
     * The other shard's exchange has no NaN and stays compressed. */
    job_t ps = {.method = "powersgd", .H = 2, .L = 2, .n = 65537, .calls = 2, .nan_call = 1,
                .skip_call = -1};
    run(&ps);
    CHECK_MSG(identical(&ps), "powersgd, a NaN on one host: replicas differ");
    CHECK_MSG(isnan(ps.out[0][ps.n / 3]), "powersgd, a NaN on one host: no NaN in the output");
    for (int r = 0; r < 4; r++) {
        /* (n / 3 lies in local shard 0: the exchange of the ranks with local index 0) */
        const uint64_t fell = 0 == r % ps.L;
        CHECK_MSG(SQZ_OK == ps.status[r] && fell == ps.stats[r].calls_fallback,
                  "powersgd, a NaN on one host: rank %d: %s, %llu fallbacks", r,
                  sqz_status_string(ps.status[r]),
                  (unsigned long long)ps.stats[r].calls_fallback);
    }
    done(&ps);
}

/* Bad arguments. */
static void test_invalid(void)
{
    sqz_thread_group_t *g = sqz_thread_group_create(1);
    const char         *kv[] = {"SQZ_METHOD", "quant", NULL};
    sqz_ctx_t          *ctx;
    sqz_comm_destroy(sqz_thread_comm(g, 0, kv, &ctx));
    sqz_transport_t t, bad;
    sqz_thread_transport(g, 0, &t);
    bad           = t;
    bad.alltoallv = NULL;
    sqz_comm_t *comm = (sqz_comm_t *)&t;
    CHECK_EQ_INT(sqz_comm_create_hier(ctx, NULL, &t, &comm), SQZ_ERR_INVALID_PARAM);
    CHECK(NULL == comm);
    CHECK_EQ_INT(sqz_comm_create_hier(ctx, &bad, &t, &comm), SQZ_ERR_INVALID_PARAM);
    CHECK_EQ_INT(sqz_comm_create_hier(ctx, &t, &bad, &comm), SQZ_ERR_INVALID_PARAM);
    CHECK(NULL == comm);
    sqz_ctx_destroy(ctx);
    sqz_thread_group_destroy(g);
}

int main(void)
{
    sqz_log_set_level(SQZ_LOG_ERROR);
    test_shapes();
    test_reduce_scatter();
    test_two_buffers();
    test_shared_rates();
    test_nonfinite();
    test_no_memory();
    test_invalid();
    return sqz_test_result("test_hier_threads");
}
