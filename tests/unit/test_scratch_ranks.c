/* Out of memory for an exchange's scratch on one rank, 4 ranks in threads.
 *
 * The exchanges grow their scratch (send, receive, chunk, request and shared-value buffers) when
 * a call is larger than any before.  A rank that cannot grow it must not leave its peers waiting
 * for its messages: every rank agrees first (sqz_coll_reserve), and the call goes dense on every
 * rank.  Each case runs 6 calls, the last 3 three times larger; rank 2 cannot grow any scratch
 * during call 3 (sqz_coll_scratch_fails).  Required:
 *  - all-reduce: every call returns SQZ_OK; call 3 is the dense sum bit for bit (SQZ_METHOD=none's
 *    output), counted as one fallback on every rank; the other calls are compressed; replicas
 *    identical after every call;
 *  - reduce-scatter: call 3 returns SQZ_ERR_NOT_SUPPORTED on every rank (its dense path needs the
 *    whole sum in scratch too: the caller's own reduce-scatter runs), the others SQZ_OK;
 *  - for the exchanges over collectives (a transport without point-to-point messages) and over
 *    point-to-point rounds (scatter-reduce, all-gather, split all-gather, top-k's scatter), and a
 *    method with shared values (terngrad).
 * A hang (the bug this guards against) ends the test by alarm.
 *
 * A rank whose thread pool came up short (SQZ_THREADS=2, its second thread not started) runs the
 * exchange its peers run.
 *
 * Also the in-process transport's truncation report: a receive matched while the caller waited
 * on a later one still reports that its message did not fit. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <squeeze.h>

#include "coll/sqz_coll.h"
#include "sqz_pool.h"
#include "sqz_test.h"
#include "sqz_thread_transport.h"

#define P         4
#define N1        (3 * 1000 + 1) /* chunks that do not divide evenly */
#define CALLS     6
#define GROW_CALL 3 /* calls from here on are 3 x N1 elements */
#define FAIL_RANK 2

static size_t count_of(int call) { return call < GROW_CALL ? N1 : 3 * N1; }

typedef struct job {
    sqz_thread_group_t *g;
    const char         *kv[20];
    int                 no_p2p, rs;
    float              *out[P][CALLS]; /* each call's output (block for a reduce-scatter) */
    sqz_status_t        st[P][CALLS];
    sqz_stats_t         stats[P];
} job_t;

static _Thread_local int tl_rank = -1, tl_call = -1;

static int fail_rank_at_growth(const sqz_comm_t *comm)
{
    (void)comm;
    return FAIL_RANK == tl_rank && GROW_CALL == tl_call;
}

static void fill(float *x, size_t n, int rank, int call)
{
    for (size_t i = 0; i < n; i++) {
        const unsigned h = (unsigned)(rank * 7919 + call * 104729) ^ (unsigned)(i * 2654435761u);
        x[i]             = (float)((int)((h ^ (h >> 13)) % 2001u) - 1000) * 1e-3f;
    }
}

static void rank_main(int rank, void *arg)
{
    job_t      *j = arg;
    sqz_ctx_t  *ctx;
    tl_rank          = rank; /* (before the communicator: its thread pool starts there) */
    sqz_comm_t *comm = sqz_thread_comm(j->g, rank, j->kv, &ctx);
    if (j->no_p2p) {
        /* (the exchanges over all-to-all-v and all-gather-v) */
        comm->t.isend = NULL, comm->t.irecv = NULL, comm->t.test = NULL, comm->t.wait = NULL;
        comm->p2p     = 0;
    }
    float *x = malloc(3 * N1 * sizeof(float));
    for (int c = 0; c < CALLS; c++) {
        const size_t n = count_of(c);
        fill(x, n, rank, c);
        tl_call          = c;
        j->out[rank][c]  = calloc(n, sizeof(float));
        j->st[rank][c]   = j->rs ? sqz_reduce_scatter_block(comm, x, j->out[rank][c], n / P,
                                                            SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 9)
                                 : sqz_allreduce(comm, x, j->out[rank][c], n, SQZ_DTYPE_FLOAT32,
                                                 SQZ_OP_SUM, 9);
        tl_call = -1;
    }
    sqz_stats_get(ctx, &j->stats[rank]);
    free(x);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

static void run(sqz_thread_group_t *g, const char *const *kv, int no_p2p, int rs, job_t *j)
{
    *j = (job_t){.g = g, .no_p2p = no_p2p, .rs = rs};
    size_t k = 0;
    for (; kv[k]; k++) {
        j->kv[k] = kv[k];
    }
    static const char *const common[] = {"SQZ_WARMUP_STEPS", "0", "SQZ_MIN_BYTES", "0",
                                         "SQZ_LOG", "error", NULL};
    for (size_t i = 0; common[i]; i++) {
        j->kv[k++] = common[i];
    }
    j->kv[k] = NULL;
    sqz_thread_run(P, rank_main, j);
}

static void release(job_t *j)
{
    for (int r = 0; r < P; r++) {
        for (int c = 0; c < CALLS; c++) {
            free(j->out[r][c]);
        }
    }
}

static void check_case(sqz_thread_group_t *g, const char *name, const char *const *kv, int no_p2p,
                       int rs)
{
    job_t a, dense;
    sqz_coll_scratch_fails = fail_rank_at_growth;
    run(g, kv, no_p2p, rs, &a);
    sqz_coll_scratch_fails = NULL;
    static const char *const none[] = {"SQZ_METHOD", "none", NULL};
    run(g, none, no_p2p, rs, &dense);
    const char *const how = no_p2p ? "collectives" : "point-to-point";
    for (int r = 0; r < P; r++) {
        for (int c = 0; c < CALLS; c++) {
            const size_t       bytes = count_of(c) / (rs ? P : 1) * sizeof(float);
            const sqz_status_t want  = (rs && GROW_CALL == c) ? SQZ_ERR_NOT_SUPPORTED : SQZ_OK;
            CHECK_MSG(want == a.st[r][c], "%s over %s%s: call %d on rank %d: %s", name, how,
                      rs ? ", reduce-scatter" : "", c, r, sqz_status_string(a.st[r][c]));
            if (rs || SQZ_OK != a.st[r][c]) {
                continue; /* (reduce-scatter blocks differ by rank) */
            }
            const int same  = 0 == memcmp(a.out[r][c], a.out[0][c], bytes);
            const int exact = 0 == memcmp(a.out[r][c], dense.out[r][c], bytes);
            CHECK_MSG(same, "%s over %s: call %d: rank %d differs from rank 0", name, how, c, r);
            CHECK_MSG(GROW_CALL == c ? exact : !exact, "%s over %s: call %d on rank %d %s the "
                      "dense sum", name, how, c, r, GROW_CALL == c ? "is not" : "is");
        }
        CHECK_MSG(1 == a.stats[r].calls_fallback && CALLS - 1 == a.stats[r].calls_compressed,
                  "%s over %s%s: rank %d counts %llu fallbacks, %llu compressed", name, how,
                  rs ? ", reduce-scatter" : "", r, (unsigned long long)a.stats[r].calls_fallback,
                  (unsigned long long)a.stats[r].calls_compressed);
    }
    release(&a), release(&dense);
    printf("%-14s over %-14s %s: no scratch on rank %d at call %d: %s on every rank\n", name, how,
           rs ? "reduce-scatter" : "all-reduce    ", FAIL_RANK, GROW_CALL,
           rs ? "SQZ_ERR_NOT_SUPPORTED" : "the dense sum");
}

/* SQZ_THREADS=2 on every rank, but rank 1 cannot start its second thread: the exchange is
 * chosen from the setting, not from the threads a rank got, so every rank runs the same one
 * (before, rank 1 took the point-to-point exchange and the others the collective one: a hang). */
static int fail_rank1_worker(int worker)
{
    (void)worker;
    return 1 == tl_rank;
}

static void test_pool_short(sqz_thread_group_t *g)
{
    static const char *const kv[] = {"SQZ_METHOD", "quant", "SQZ_THREADS", "2", NULL};
    job_t                    a;
    sqz_pool_start_fails = fail_rank1_worker;
    run(g, kv, 0, 0, &a);
    sqz_pool_start_fails = NULL;
    for (int r = 0; r < P; r++) {
        for (int c = 0; c < CALLS; c++) {
            CHECK_MSG(SQZ_OK == a.st[r][c] &&
                          0 == memcmp(a.out[r][c], a.out[0][c], count_of(c) * sizeof(float)),
                      "SQZ_THREADS=2, one thread short on rank 1: call %d on rank %d: %s%s", c, r,
                      sqz_status_string(a.st[r][c]), SQZ_OK == a.st[r][c] ? ", differs" : "");
        }
        CHECK_MSG(CALLS == a.stats[r].calls_compressed, "SQZ_THREADS=2, one thread short on rank "
                  "1: rank %d compressed %llu calls of %d", r,
                  (unsigned long long)a.stats[r].calls_compressed, CALLS);
    }
    release(&a);
    printf("SQZ_THREADS=2 with rank 1's second thread not started: every call compressed, "
           "replicas identical\n");
}

/* Receives of 4 and 64 bytes posted, messages of 16 and 16 bytes sent: the first does not fit.
 * Waiting on the second matches both; the first's wait must still fail, with only its 4 bytes
 * written. */
static void test_truncation_reported(void)
{
    sqz_thread_group_t *g = sqz_thread_group_create(2);
    sqz_transport_t     t0, t1;
    sqz_thread_transport(g, 0, &t0);
    sqz_thread_transport(g, 1, &t1);
    unsigned char small[4] = {0}, big[64] = {0}, msg[2][16];
    memset(msg[0], 0xab, sizeof(msg[0]));
    memset(msg[1], 0xcd, sizeof(msg[1]));
    size_t got_small = 0, got_big = 0;
    void  *r_small = NULL, *r_big = NULL, *s[2] = {NULL, NULL};
    REQUIRE(0 == t1.irecv(t1.self, small, sizeof(small), 0, &got_small, &r_small));
    REQUIRE(0 == t1.irecv(t1.self, big, sizeof(big), 0, &got_big, &r_big));
    REQUIRE(0 == t0.isend(t0.self, msg[0], sizeof(msg[0]), 1, &s[0]));
    REQUIRE(0 == t0.isend(t0.self, msg[1], sizeof(msg[1]), 1, &s[1]));
    CHECK_MSG(0 == t1.wait(t1.self, r_big) && 16 == got_big && 0xcd == big[15],
              "the message that fits: received, 16 bytes (got %zu)", got_big);
    CHECK_MSG(0 != t1.wait(t1.self, r_small), "a truncated receive completed while waiting on "
                                               "another one is reported as failed");
    CHECK_MSG(sizeof(small) == got_small, "a truncated receive reports the %zu bytes written, not "
                                          "%zu", sizeof(small), got_small);
    for (int k = 0; k < 2; k++) {
        REQUIRE(0 == t0.wait(t0.self, s[k]));
    }
    sqz_thread_group_destroy(g);
    printf("in-process transport: a truncated receive is reported whichever wait matched it\n");
}

int main(void)
{
    alarm(300); /* a hang fails the test (SIGALRM) instead of the suite's timeout */
    test_truncation_reported();
    sqz_thread_group_t *g = sqz_thread_group_create(P);
    test_pool_short(g);
    static const struct {
        const char *name;
        const char *kv[8];
    } cases[] = {
        {"quant", {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "4", NULL}},
        {"topk", {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", NULL}},
        {"topk-split", {"SQZ_METHOD", "topk", "SQZ_SPARSE_ALGO", "split", NULL}},
        {"topk-scatter", {"SQZ_METHOD", "topk", "SQZ_SPARSE_ALGO", "scatter", NULL}},
        {"terngrad", {"SQZ_METHOD", "terngrad", NULL}},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        for (int no_p2p = 0; no_p2p < 2; no_p2p++) {
            for (int rs = 0; rs < 2; rs++) {
                check_case(g, cases[k].name, cases[k].kv, no_p2p, rs);
            }
        }
    }
    sqz_thread_group_destroy(g);
    return sqz_test_result("test_scratch_ranks");
}
