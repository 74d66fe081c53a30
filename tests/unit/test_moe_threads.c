/* MoE token all-to-alls on 1 to 4 ranks in threads: exact and de-duplicated exchanges are
 * bit-exact at the callers' counts and displacements (zero counts and gaps included), LSH
 * dispatch keeps the error small on clustered tokens at a rate under 25 %, combine adds the
 * residuals back, the backward calls give the exact gradient of an LSH-MoE layer (and, after
 * an exact dispatch, of a plain one), every rank derives the same hash, a corrupted block is
 * rejected, and the MoE parameters are checked.  Every case runs over the collectives (two
 * rounds) and over point-to-point messages (one round). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_ctx.h"
#include "sqz_lsh.h"
#include "sqz_moe.h"
#include "sqz_test.h"
#include "sqz_thread_transport.h"

#define MAXR 4
#define DIM  32
#define K    6 /* clusters per (source, destination) pair */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    return x ^ (x >> 32);
}

static double unif(uint64_t k) { return (double)(mix(k) >> 11) * 0x1p-53; }

/* Tokens src sends dst: 0 for some pairs, a few dozen for the others. */
static size_t count_of(int src, int dst) { return (size_t)((src * 7 + dst * 3) % 5) * 64; }

/* Token t of (src, dst): one of K centers plus noise of relative size `noise`. */
static float token(int src, int dst, size_t t, size_t j, double noise)
{
    const uint64_t pair = (uint64_t)src * 131 + (uint64_t)dst;
    const uint64_t k    = mix(pair * 1000003 + t) % K;
    const double   c    = unif(pair * 7919 + k * 101 + j) * 2.0 - 1.0;
    return (float)(c + noise * (unif(pair * 104729 + t * 977 + j + 1) * 2.0 - 1.0));
}

typedef struct {
    int                 P;
    double              noise;
    sqz_thread_group_t *g;
    int                 corrupt;       /* rank 1's payload exchange is scrambled */
    int                 p2p;           /* the transport offers point-to-point messages */
    double              err[MAXR], rate[MAXR];
    int                 fail[MAXR];
    sqz_status_t        corrupt_st[MAXR];
} job_t;

/* Corruption: rank 1 scrambles the header of rank 0's block in the second all-to-all-v (the
 * payloads) of the first exchange. */
static sqz_transport_t inner[MAXR];
static int             a2a_calls[MAXR], corrupting[MAXR];
static int scrambling_alltoallv(void *self, const void *sb, const size_t *sc, const size_t *sd,
                                void *rb, const size_t *rc, const size_t *rd)
{
    const int rank = (int)(intptr_t)self;
    const int rc0  = inner[rank].alltoallv(inner[rank].self, sb, sc, sd, rb, rc, rd);
    if (corrupting[rank] && 1 == rank && 2 == ++a2a_calls[rank] && rc[0] >= 8) {
        ((unsigned char *)rb + rd[0])[0] ^= 0xff; /* the magic */
    }
    return rc0;
}
static int fwd_allgatherv(void *self, const void *s, size_t sb, void *r, const size_t *rb,
                          const size_t *d)
{
    const int rank = (int)(intptr_t)self;
    return inner[rank].allgatherv(inner[rank].self, s, sb, r, rb, d);
}
static int fwd_allreduce(void *self, const float *in, float *out, size_t n)
{
    const int rank = (int)(intptr_t)self;
    return inner[rank].allreduce_f32_sum(inner[rank].self, in, out, n);
}

/* Layouts: send blocks in rank order with a 2-token gap after each; receive blocks in reverse
 * rank order with a 1-token gap, so displacements are neither packed nor ordered. */
static size_t layouts(int me, int P, size_t *sc, size_t *sd, size_t *rc, size_t *rd, size_t *nr)
{
    size_t off = 0;
    for (int r = 0; r < P; r++) {
        sc[r] = count_of(me, r);
        sd[r] = off;
        off += sc[r] + 2;
    }
    const size_t ns = off;
    off             = 0;
    for (int r = P - 1; r >= 0; r--) {
        rc[r] = count_of(r, me);
        rd[r] = off;
        off += rc[r] + 1;
    }
    *nr = off;
    return ns;
}

/* The backward calls on a layer Y = E(c) + x - c with the expert E(y) = a y + 1 (a = 2) and the
 * loss L = sum_t w_t . Y_t (w_t = a token's own weights): dL/dx_t = w_t + (a - 1) mean_c(w)_t
 * (c = the mean of x over t's centroid), and dL/da = sum_t w_t . c_t, which the expert computes
 * from what reaches it as sum over its rows of g_row . y_row.  \return nonzero on a mismatch. */
static int backward(sqz_comm_t *comm, const sqz_transport_t *t, sqz_moe_handle_t *h, int me,
                    int P, const float *x, const float *y, const size_t *sc, const size_t *sd,
                    const size_t *rc, const size_t *rd, size_t ns, size_t nr)
{
    float *w = alloc_floats(ns * DIM), *ge = alloc_floats(nr * DIM), *gx = alloc_floats(ns * DIM);
    float *gr = alloc_floats(ns * DIM), *cw = alloc_floats(ns * DIM), *cx = alloc_floats(ns * DIM);
    int    bad = 0;
    for (size_t i = 0; i < ns * DIM; i++) {
        w[i] = (float)(unif((uint64_t)me * 65537 + i) - 0.5);
    }
    bad |= SQZ_OK != sqz_moe_combine_backward(comm, h, w, ge, gr);
    float da[2] = {0, 0}; /* through the API, exact */
    for (int r = 0; r < P; r++) {
        for (size_t i = rd[r] * DIM; i < (rd[r] + rc[r]) * DIM; i++) {
            da[0] += ge[i] * y[i];
            ge[i] *= 2.0f; /* dE/dy = a */
        }
    }
    bad |= SQZ_OK != sqz_moe_dispatch_backward(comm, h, ge, gx);
    bad |= SQZ_OK != sqz_moe_centroid_mean(h, w, cw);
    bad |= SQZ_OK != sqz_moe_centroid_mean(h, x, cx);
    for (int r = 0; r < P; r++) {
        for (size_t i = sd[r] * DIM; i < (sd[r] + sc[r]) * DIM; i++) {
            const float want = w[i] + cw[i];
            bad |= fabsf(gx[i] + gr[i] - want) > 1e-5f * (1.0f + fabsf(want));
            da[1] += w[i] * cx[i];
        }
    }
    REQUIRE(0 == t->allreduce_f32_sum(t->self, da, da, 2));
    bad |= fabs((double)da[0] - da[1]) > 1e-4 * (1.0 + fabs((double)da[1]));
    free(w), free(ge), free(gx), free(gr), free(cw), free(cx);
    return bad;
}

static void rank_main(int me, void *arg)
{
    job_t *const j = arg;
    const int    P = j->P;
    sqz_config_t *cfg;
    sqz_ctx_t    *ctx;
    sqz_comm_t   *comm;
    char          err[256];
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    REQUIRE(SQZ_OK == sqz_ctx_create(cfg, &ctx, err, sizeof(err)));
    sqz_config_destroy(cfg);
    sqz_transport_t t;
    sqz_thread_transport(j->g, me, &inner[me]);
    t                   = inner[me];
    t.self              = (void *)(intptr_t)me;
    t.alltoallv         = scrambling_alltoallv;
    t.allgatherv        = fwd_allgatherv;
    t.allreduce_f32_sum = fwd_allreduce;
    t.size              = offsetof(sqz_transport_t, isend);
    if (j->p2p) {
        t = inner[me]; /* one round: the collectives are not used by the coded exchanges */
    }
    REQUIRE(SQZ_OK == sqz_comm_create(ctx, &t, &comm));

    size_t sc[MAXR], sd[MAXR], rc[MAXR], rd[MAXR], nr;
    const size_t ns = layouts(me, P, sc, sd, rc, rd, &nr);
    float *x = alloc_floats(ns * DIM), *y = alloc_floats(nr * DIM), *ref = alloc_floats(nr * DIM);
    float *back = alloc_floats(ns * DIM), *e = alloc_floats(nr * DIM), *cm = alloc_floats(ns * DIM);
    for (int r = 0; r < P; r++) {
        for (size_t k = 0; k < sc[r]; k++) {
            for (size_t i = 0; i < DIM; i++) {
                x[(sd[r] + k) * DIM + i] = token(me, r, k, i, j->noise);
            }
        }
        for (size_t k = 0; k < rc[r]; k++) {
            for (size_t i = 0; i < DIM; i++) {
                ref[(rd[r] + k) * DIM + i] = token(r, me, k, i, j->noise);
            }
        }
    }
    int bad = 0;
    /* Exact and de-duplicated: bit-exact, gaps untouched. */
    for (int codec = SQZ_MOE_EXACT; codec <= SQZ_MOE_DEDUP; codec++) {
        for (size_t i = 0; i < nr * DIM; i++) {
            y[i] = -7.0f;
        }
        bad |= SQZ_OK != sqz_moe_alltoallv(comm, (sqz_moe_codec_t)codec, x, sc, sd, y, rc, rd, DIM,
                                           SQZ_DTYPE_FLOAT32);
        for (int r = 0; r < P; r++) {
            bad |= 0 != memcmp(y + rd[r] * DIM, ref + rd[r] * DIM, rc[r] * DIM * sizeof(float));
            bad |= -7.0f != y[(rd[r] + rc[r]) * DIM]; /* the gap after the block */
        }
    }
    /* LSH dispatch, then combine through two experts: y -> y (out = x) and y -> 2y + 1. */
    sqz_moe_handle_t *h = NULL;
    bad |= SQZ_OK != sqz_moe_dispatch(comm, SQZ_MOE_LSH, x, sc, sd, y, rc, rd, DIM, &h);
    REQUIRE(NULL != h);
    double n2 = 0, e2 = 0;
    for (int r = 0; r < P; r++) {
        for (size_t i = 0; i < rc[r] * DIM; i++) {
            const double a = ref[rd[r] * DIM + i], b = y[rd[r] * DIM + i];
            n2 += a * a;
            e2 += (a - b) * (a - b);
        }
    }
    j->err[me] = n2 > 0 ? sqrt(e2 / n2) : 0.0;
    size_t       rows = 0;
    const size_t sent = sqz_moe_handle_tokens(h, &rows);
    j->rate[me]       = sent ? (double)rows / (double)sent : 0.0;
    bad |= SQZ_OK != sqz_moe_combine(comm, h, y, back);
    for (int r = 0; r < P; r++) {
        for (size_t i = 0; i < sc[r] * DIM; i++) {
            const float xi = x[sd[r] * DIM + i];
            bad |= fabsf(back[sd[r] * DIM + i] - xi) > 1e-5f * (1.0f + fabsf(xi));
        }
    }
    for (size_t i = 0; i < nr * DIM; i++) {
        e[i] = 2.0f * y[i] + 1.0f;
    }
    bad |= SQZ_OK != sqz_moe_combine(comm, h, e, back);
    /* back = 2c + 1 + x - c, so back - x - 1 is each token's centroid: the mean of its group. */
    bad |= SQZ_OK != sqz_moe_centroid_mean(h, x, cm);
    for (int r = 0; r < P; r++) {
        for (size_t i = 0; i < sc[r] * DIM; i++) {
            const size_t at = sd[r] * DIM + i;
            bad |= fabsf(back[at] - x[at] - 1.0f - cm[at]) > 1e-4f;
            if (r == me) {
                bad |= back[at] != 2.0f * x[at] + 1.0f; /* its own block: exact */
            }
        }
    }
    bad |= backward(comm, &t, h, me, P, x, y, sc, sd, rc, rd, ns, nr);
    sqz_moe_handle_free(h);
    /* An exact dispatch: the handle's calls are a plain MoE's (no residual, per-token gradients). */
    h = NULL;
    bad |= SQZ_OK != sqz_moe_dispatch(comm, SQZ_MOE_EXACT, x, sc, sd, y, rc, rd, DIM, &h);
    REQUIRE(NULL != h);
    for (int r = 0; r < P; r++) {
        bad |= 0 != memcmp(y + rd[r] * DIM, ref + rd[r] * DIM, rc[r] * DIM * sizeof(float));
    }
    bad |= SQZ_OK != sqz_moe_combine_backward(comm, h, x, e, cm);
    for (int r = 0; r < P; r++) {
        bad |= 0 != memcmp(e + rd[r] * DIM, ref + rd[r] * DIM, rc[r] * DIM * sizeof(float));
        for (size_t i = 0; i < sc[r] * DIM; i++) {
            bad |= 0.0f != cm[sd[r] * DIM + i];
        }
    }
    bad |= backward(comm, &t, h, me, P, x, y, sc, sd, rc, rd, ns, nr);
    sqz_moe_handle_free(h);

    /* Every rank derives the same hash: bucket ids of common tokens, gathered and compared. */
    sqz_lsh_t *l = NULL;
    REQUIRE(SQZ_OK ==
            sqz_lsh_create(DIM, 4, 6, (size_t)ctx->p.lsh_sample, (uint64_t)ctx->p.seed, &l));
    uint64_t ids[64], all[MAXR * 64];
    float    common[64 * DIM];
    for (size_t i = 0; i < 64 * DIM; i++) {
        common[i] = token(0, 0, i / DIM, i % DIM, 0.5);
    }
    sqz_lsh_hash(l, common, 64, ids);
    size_t rb[MAXR], ds[MAXR];
    for (int r = 0; r < P; r++) {
        rb[r] = sizeof(ids);
        ds[r] = (size_t)r * sizeof(ids);
    }
    REQUIRE(0 == t.allgatherv(t.self, ids, sizeof(ids), all, rb, ds));
    for (int r = 1; r < P; r++) {
        bad |= 0 != memcmp(all, all + r * 64, sizeof(ids));
    }
    sqz_lsh_destroy(l);

    /* A scrambled block: its receiver gets SQZ_ERR_CORRUPT and its block stays as it was. */
    if (j->corrupt) {
        for (size_t i = 0; i < nr * DIM; i++) {
            y[i] = -7.0f;
        }
        corrupting[me] = 1;
        a2a_calls[me]  = 0;
        j->corrupt_st[me] = sqz_moe_alltoallv(comm, SQZ_MOE_DEDUP, x, sc, sd, y, rc, rd, DIM,
                                              SQZ_DTYPE_FLOAT32);
        corrupting[me] = 0;
        if (1 == me) {
            bad |= -7.0f != y[rd[0] * DIM];
        }
    }
    j->fail[me] = bad;
    free(x);
    free(y);
    free(ref);
    free(back);
    free(e);
    free(cm);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

static void run(int P, double noise, int corrupt, int p2p)
{
    job_t j = {.P = P, .noise = noise, .corrupt = corrupt, .p2p = p2p};
    j.g     = sqz_thread_group_create(P);
    sqz_thread_run(P, rank_main, &j);
    sqz_thread_group_destroy(j.g);
    for (int r = 0; r < P; r++) {
        CHECK_MSG(0 == j.fail[r], "P=%d rank %d", P, r);
        if (P > 1) {
            printf("P=%d noise %.2f %s rank %d: LSH rate %.3f, relative error %.4f\n", P, noise,
                   p2p ? "p2p" : "coll", r, j.rate[r], j.err[r]);
            CHECK(j.rate[r] <= 0.25);
            CHECK(j.err[r] <= 1.1 * noise + 1e-6); /* the noise itself, no cluster merged */
        }
        if (corrupt) {
            CHECK_EQ_INT(j.corrupt_st[r], 1 == r && count_of(0, 1) ? SQZ_ERR_CORRUPT : SQZ_OK);
        }
    }
}

/* SQZ_MOE=cycle walks SQZ_MOE_CYCLE; bad MoE settings are errors that name the variable. */
static void test_params(void)
{
    const char *const bad[][4] = {
        {"LSH_HASHES", "16", "LSH_DIM", "64"},
        {"LSH_HASHES", "17", NULL, NULL},
        {"LSH_DIM", "0", NULL, NULL},
        {"MOE", "lsh", NULL, NULL},
        {"MOE_CYCLE", "lsh,,dedup", NULL, NULL},
        {"MOE_CYCLE", "lsh,zip", NULL, NULL},
        {"MOE", "maybe", "MOE_DIM", "8"},
    };
    const char *const names[] = {"SQZ_LSH_HASHES", "SQZ_LSH_HASHES", "SQZ_LSH_DIM", "SQZ_MOE_DIM",
                                 "SQZ_MOE_CYCLE", "SQZ_MOE_CYCLE", "SQZ_MOE"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        sqz_config_t *cfg;
        sqz_ctx_t    *ctx = NULL;
        char          err[512];
        REQUIRE(SQZ_OK == sqz_config_create(&cfg));
        sqz_config_set(cfg, bad[k][0], bad[k][1]);
        if (bad[k][2]) {
            sqz_config_set(cfg, bad[k][2], bad[k][3]);
        }
        CHECK(SQZ_ERR_INVALID_PARAM == sqz_ctx_create(cfg, &ctx, err, sizeof(err)));
        CHECK_MSG(NULL != strstr(err, names[k]), "'%s' does not name %s", err, names[k]);
        sqz_config_destroy(cfg);
    }
    sqz_config_t *cfg;
    sqz_ctx_t    *ctx = NULL;
    char          err[512];
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    sqz_config_set(cfg, "MOE", "cycle");
    sqz_config_set(cfg, "MOE_DIM", "8");
    sqz_config_set(cfg, "MOE_CYCLE", "lsh,dedup,none");
    REQUIRE(SQZ_OK == sqz_ctx_create(cfg, &ctx, err, sizeof(err)));
    sqz_config_destroy(cfg);
    sqz_thread_group_t *g = sqz_thread_group_create(1);
    sqz_transport_t     t;
    sqz_comm_t         *comm;
    sqz_thread_transport(g, 0, &t);
    REQUIRE(SQZ_OK == sqz_comm_create(ctx, &t, &comm));
    const int want[] = {SQZ_MOE_LSH, SQZ_MOE_DEDUP, SQZ_MOE_NONE, SQZ_MOE_LSH, SQZ_MOE_DEDUP};
    for (size_t k = 0; k < 5; k++) {
        CHECK_EQ_INT(sqz_moe_next_codec(comm), want[k]);
    }
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    sqz_thread_group_destroy(g);
}

int main(void)
{
    run(1, 0.05, 0, 0);
    run(3, 0.05, 0, 0);
    run(4, 0.1, 1, 0);
    run(1, 0.05, 0, 1);
    run(3, 0.05, 0, 1);
    run(4, 0.1, 0, 1);
    test_params();
    return sqz_test_result("test_moe_threads");
}
