/* The policy both engines ask, tested without a GPU: the plan of a call (sqz_policy_plan: error
 * feedback, DGC, damping and exchange, host and device buffers), the exchange of device buffers
 * (sqz_policy_choose_device, from the facts the device engine measures: which calls take the
 * scatter-reduce, which the all-gather, which go dense, in the bytes and the time model), and
 * each call's error feedback (sqz_policy_ef). */
#include <stdio.h>
#include <string.h>

#include <squeeze.h>

#include "coll/sqz_coll.h"
#include "sqz_ctx.h"
#include "sqz_ef.h"
#include "sqz_policy.h"
#include "sqz_test.h"

enum { H = SQZ_MEMORY_HOST, D = SQZ_MEMORY_DEVICE };

/* Transport stubs: the policy never communicates. */
static int stub_allgatherv(void *self, const void *s, size_t sb, void *r, const size_t *rb,
                           const size_t *d)
{
    (void)self, (void)s, (void)sb, (void)r, (void)rb, (void)d;
    return -1;
}
static int stub_alltoallv(void *self, const void *sb, const size_t *sc, const size_t *sd,
                          void *rb, const size_t *rc, const size_t *rd)
{
    (void)self, (void)sb, (void)sc, (void)sd, (void)rb, (void)rc, (void)rd;
    return -1;
}
static int stub_allreduce(void *self, const float *in, float *out, size_t n)
{
    (void)self, (void)in, (void)out, (void)n;
    return -1;
}

/* A communicator of rank 0 among nranks, with settings kv ("SQZ_NAME", "value", ..., NULL). */
static sqz_comm_t *make_comm(int nranks, const char *const *kv, sqz_ctx_t **ctx)
{
    sqz_config_t *cfg = NULL;
    char          err[256];
    REQUIRE(SQZ_OK == sqz_config_create(&cfg));
    for (size_t i = 0; kv[i]; i += 2) {
        REQUIRE(SQZ_OK == sqz_config_set(cfg, kv[i], kv[i + 1]));
    }
    REQUIRE(SQZ_OK == sqz_ctx_create(cfg, ctx, err, sizeof(err)));
    sqz_config_destroy(cfg);
    sqz_transport_t t = {.size = sizeof(t), .rank = 0, .nranks = nranks,
                         .allgatherv = stub_allgatherv, .alltoallv = stub_alltoallv,
                         .allreduce_f32_sum = stub_allreduce};
    sqz_comm_t *comm = NULL;
    REQUIRE(SQZ_OK == sqz_comm_create(*ctx, &t, &comm));
    return comm;
}

typedef struct {
    const char *what;
    const char *kv[11];
    int         nranks, rs, sra_ok;
    double      bytes, sra_sent, ag_sent; /* ag_sent: (N - 1) payloads */
    int         want;
} policy_case_t;

static const policy_case_t cases[] = {
    /* quant 4 bits: 1/8 of the input a payload */
    {"quant all-reduce, 8 ranks", {"SQZ_METHOD", "quant", NULL}, 8, 0, 1, 4e6, 0.219e6, 3.5e6,
     SQZ_ALGO_REDUCE_SCATTER},
    {"quant all-reduce, 2 ranks", {"SQZ_METHOD", "quant", NULL}, 2, 0, 1, 4e6, 0.5e6, 0.5e6,
     SQZ_ALGO_NCCL_ALLGATHER},
    {"quant under ef21 (no scatter-reduce)", {"SQZ_METHOD", "quant", NULL}, 8, 0, 0, 4e6, 0,
     3.5e6, SQZ_ALGO_NCCL_ALLGATHER},
    {"quant reduce-scatter, 8 ranks", {"SQZ_METHOD", "quant", NULL}, 8, 1, 1, 4e6, 0.44e6, 3.5e6,
     SQZ_ALGO_REDUCE_SCATTER},
    /* top-k 1 %: 8 bytes a kept element, 0.02 of the input a payload */
    {"topk all-reduce, 8 ranks", {"SQZ_METHOD", "topk", NULL}, 8, 0, 1, 4e6, 0.07e6, 0.56e6,
     SQZ_ALGO_NCCL_ALLGATHER},
    {"topk reduce-scatter, 8 ranks", {"SQZ_METHOD", "topk", NULL}, 8, 1, 1, 4e6, 0.07e6, 0.56e6,
     SQZ_ALGO_REDUCE_SCATTER},
    /* the scatter-reduce with re-sparsification: when asked for, never by the time model alone */
    {"topk all-reduce, 8 ranks, SQZ_SPARSE_ALGO=scatter",
     {"SQZ_METHOD", "topk", "SQZ_SPARSE_ALGO", "scatter", NULL}, 8, 0, 1, 4e6, 0.14e6, 0.56e6,
     SQZ_ALGO_REDUCE_SCATTER},
    {"topk all-reduce, 2 ranks, SQZ_SPARSE_ALGO=scatter (the all-gather sends as much)",
     {"SQZ_METHOD", "topk", "SQZ_SPARSE_ALGO", "scatter", NULL}, 2, 0, 1, 4e6, 0.08e6, 0.08e6,
     SQZ_ALGO_NCCL_ALLGATHER},
    {"topk all-reduce, 8 ranks, time model, slow link: auto keeps the all-gather",
     {"SQZ_METHOD", "topk", "SQZ_EXCHANGE_MODEL", "time", "SQZ_LINK_GBPS", "0.01",
      "SQZ_KERNEL_GBPS", "1000", NULL},
     8, 0, 1, 4e6, 0.14e6, 0.56e6, SQZ_ALGO_NCCL_ALLGATHER},
    {"topk all-reduce, 8 ranks, time model, scatter asked for",
     {"SQZ_METHOD", "topk", "SQZ_SPARSE_ALGO", "scatter", "SQZ_EXCHANGE_MODEL", "time",
      "SQZ_LINK_GBPS", "0.01", "SQZ_KERNEL_GBPS", "1000", NULL},
     8, 0, 1, 4e6, 0.14e6, 0.56e6, SQZ_ALGO_REDUCE_SCATTER},
    {"topk 50 % all-reduce, 8 ranks (more than a dense ring)", {"SQZ_METHOD", "topk", NULL}, 8,
     0, 1, 4e6, 3.5e6, 28e6, SQZ_ALGO_DENSE_SWITCH},
    {"topk 50 %, the switch off", {"SQZ_METHOD", "topk", "SQZ_SPARSE_DENSE_SWITCH", "0", NULL},
     8, 0, 1, 4e6, 3.5e6, 28e6, SQZ_ALGO_NCCL_ALLGATHER},
    {"time model, fast link, slow kernels",
     {"SQZ_METHOD", "quant", "SQZ_EXCHANGE_MODEL", "time", "SQZ_LINK_GBPS", "100000",
      "SQZ_KERNEL_GBPS", "0.01", NULL},
     8, 0, 1, 4e6, 0.219e6, 3.5e6, SQZ_ALGO_DENSE_SWITCH},
    {"time model, slow link, fast kernels",
     {"SQZ_METHOD", "quant", "SQZ_EXCHANGE_MODEL", "time", "SQZ_LINK_GBPS", "0.01",
      "SQZ_KERNEL_GBPS", "1000", NULL},
     8, 0, 1, 4e6, 0.219e6, 3.5e6, SQZ_ALGO_REDUCE_SCATTER},
};

typedef struct {
    const char *method, *ef;
    int         rs, opt;
    int         want;
} ef_case_t;

static const ef_case_t ef_cases[] = {
    {"quant", "ef21", 0, 0, SQZ_EF_EF21},   {"quant", "ef21", 1, 0, SQZ_EF_EF14},
    {"quant", "ef21", 0, 1, SQZ_EF_EF14},   {"quant", "econtrol", 0, 0, SQZ_EF_ECONTROL},
    {"quant", "econtrol", 1, 0, SQZ_EF_EF14}, {"quant", "none", 0, 0, SQZ_EF_NONE},
    {"quant", "none", 0, 1, SQZ_EF_EF14},   {"topk", "auto", 0, 0, SQZ_EF_EF21},
    {"topk", "auto", 1, 0, SQZ_EF_EF14},    {"qsgd", "auto", 0, 0, SQZ_EF_NONE},
    {"sign", "auto", 0, 0, SQZ_EF_EF14},    {"powersgd", "auto", 0, 0, SQZ_EF_NONE},
    {"powersgd", "ef14", 0, 0, SQZ_EF_EF14},
};

/* Each call's error feedback: the context's, ef21/econtrol for all-reduces only, classic for
 * the optimizer's collective, none for powersgd's pseudo-layers under auto. */
static void test_ef(void)
{
    for (size_t i = 0; i < sizeof(ef_cases) / sizeof(ef_cases[0]); i++) {
        const ef_case_t  *c   = &ef_cases[i];
        const char *const kv[] = {"SQZ_METHOD", c->method, "SQZ_EF", c->ef, NULL};
        sqz_ctx_t        *ctx = NULL;
        sqz_comm_t       *comm = make_comm(4, kv, &ctx);
        const int got = sqz_policy_ef(comm, c->rs, c->opt, 77, 4096);
        CHECK_MSG(got == c->want, "%s with SQZ_EF=%s%s%s: error feedback %d, want %d", c->method,
                  c->ef, c->rs ? ", reduce-scatter" : "", c->opt ? ", optimizer" : "", got,
                  c->want);
        sqz_comm_destroy(comm);
        sqz_ctx_destroy(ctx);
    }
}

/* Whether a call is compressed at all, on host and device buffers. */
static void test_eligible(void)
{
    const char *const kv[] = {"SQZ_METHOD", "quant", "SQZ_MIN_BYTES", "4096", NULL};
    sqz_ctx_t        *ctx  = NULL;
    sqz_comm_t       *comm = make_comm(4, kv, &ctx);
    CHECK(sqz_policy_eligible(comm, 1024, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, H, 0, 0));
    CHECK(sqz_policy_eligible(comm, 1024, SQZ_DTYPE_FLOAT32, SQZ_OP_AVG, D, 1, 0));
    CHECK(!sqz_policy_eligible(comm, 1023, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, H, 0, 0));
    CHECK(sqz_policy_eligible(comm, 1023, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, D, 0, 1)); /* opt */
    CHECK(!sqz_policy_eligible(comm, 4096, SQZ_DTYPE_BFLOAT16, SQZ_OP_SUM, H, 0, 0));
    CHECK(sqz_policy_eligible(comm, 4096, SQZ_DTYPE_BFLOAT16, SQZ_OP_SUM, D, 0, 0));
    CHECK(!sqz_policy_eligible(comm, 2047, SQZ_DTYPE_FLOAT16, SQZ_OP_SUM, D, 0, 0));
    CHECK(!sqz_policy_eligible(comm, 0, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, D, 0, 1));
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

typedef struct {
    const char *what;
    const char *kv[9];
    int         memory, rs, opt;
    int         ef, transform, dgc, damp, algo;
} plan_case_t;

static const plan_case_t plan_cases[] = {
    {"quant ef21, host", {"SQZ_METHOD", "quant", "SQZ_EF", "ef21", NULL}, H, 0, 0, SQZ_EF_EF21, 1,
     0, 0, SQZ_ALGO_REDUCE_SCATTER},
    {"quant ef21, device: no scatter-reduce under a shared estimator",
     {"SQZ_METHOD", "quant", "SQZ_EF", "ef21", NULL}, D, 0, 0, SQZ_EF_EF21, 1, 0, 0,
     SQZ_ALGO_NCCL_ALLGATHER},
    {"quant ef21, device reduce-scatter: classic EF, scatter-reduce",
     {"SQZ_METHOD", "quant", "SQZ_EF", "ef21", NULL}, D, 1, 0, SQZ_EF_EF14, 0, 0, 0,
     SQZ_ALGO_REDUCE_SCATTER},
    {"quant ef14, device", {"SQZ_METHOD", "quant", "SQZ_EF", "ef14", NULL}, D, 0, 0, SQZ_EF_EF14,
     0, 0, 0, SQZ_ALGO_REDUCE_SCATTER},
    {"topk with DGC", {"SQZ_METHOD", "topk", "SQZ_DGC_MOMENTUM", "0.9", NULL}, H, 0, 0,
     SQZ_EF_EF14, 0, 1, 0, SQZ_ALGO_ALLGATHER},
    {"topk with DGC, device", {"SQZ_METHOD", "topk", "SQZ_DGC_MOMENTUM", "0.9", NULL}, D, 0, 0,
     SQZ_EF_EF14, 0, 1, 0, SQZ_ALGO_NCCL_ALLGATHER},
    {"topk with DGC, the optimizer's collective",
     {"SQZ_METHOD", "topk", "SQZ_DGC_MOMENTUM", "0.9", NULL}, H, 0, 1, SQZ_EF_EF14, 0, 0, 0,
     SQZ_ALGO_ALLGATHER},
    {"sign damped, host", {"SQZ_METHOD", "sign", "SQZ_EF_DECAY", "0.5", NULL}, H, 0, 0,
     SQZ_EF_EF14, 0, 0, 1, SQZ_ALGO_REDUCE_SCATTER},
    {"sign damped, device", {"SQZ_METHOD", "sign", "SQZ_EF_DECAY", "0.5", NULL}, D, 0, 0,
     SQZ_EF_EF14, 0, 0, 1, SQZ_ALGO_REDUCE_SCATTER},
    {"sign damped, device reduce-scatter", {"SQZ_METHOD", "sign", "SQZ_EF_DECAY", "0.5", NULL},
     D, 1, 0, SQZ_EF_EF14, 0, 0, 1, SQZ_ALGO_REDUCE_SCATTER},
    {"sign damped, the optimizer's collective", {"SQZ_METHOD", "sign", "SQZ_EF_DECAY", "0.5", NULL},
     H, 0, 1, SQZ_EF_EF14, 0, 0, 0, SQZ_ALGO_REDUCE_SCATTER},
    {"powersgd, device", {"SQZ_METHOD", "powersgd", NULL}, D, 0, 0, SQZ_EF_NONE, 0, 0, 0,
     SQZ_ALGO_SUMMABLE},
    {"powersgd, host", {"SQZ_METHOD", "powersgd", "SQZ_EF", "ef14", NULL}, H, 0, 0, SQZ_EF_EF14, 0,
     0, 0, SQZ_ALGO_SUMMABLE},
};

/* The whole plan of a call, host and device buffers (8 ranks, 1M elements; device facts of a
 * compressor sending 1/8 of the input a payload). */
static void test_plan(void)
{
    for (size_t i = 0; i < sizeof(plan_cases) / sizeof(plan_cases[0]); i++) {
        const plan_case_t *c    = &plan_cases[i];
        sqz_ctx_t         *ctx  = NULL;
        sqz_comm_t        *comm = make_comm(8, c->kv, &ctx);
        const size_t       n    = 1 << 20;
        const sqz_device_call_t d = {.bytes = 4 * n, .sra_ok = 1, .sra_sent = 0.875 * n / 2,
                                     .ag_sent = 7.0 * n / 2};
        const sqz_call_facts_t f = {.count = n, .block = c->rs ? n / 8 : 0,
                                    .dtype = SQZ_DTYPE_FLOAT32, .op = SQZ_OP_SUM,
                                    .memory = c->memory, .opt = c->opt, .key = 5,
                                    .device = D == c->memory ? &d : NULL};
        CHECK_MSG(sqz_policy_admit(comm, &f), "%s: not admitted", c->what);
        sqz_plan_t pl = sqz_policy_plan(comm, &f);
        CHECK_MSG(pl.ef == c->ef && pl.transform == c->transform && pl.dgc == c->dgc &&
                      pl.damp == c->damp && pl.algo == c->algo && 0 == pl.warm,
                  "%s: plan ef %d transform %d dgc %d damp %d algo %d warm %d, want %d %d %d %d "
                  "%d 0",
                  c->what, pl.ef, pl.transform, pl.dgc, pl.damp, pl.algo, pl.warm, c->ef,
                  c->transform, c->dgc, c->damp, c->algo);
        sqz_policy_plan_warm(comm, &pl, 0, c->opt);
        CHECK_MSG(0 == pl.warm, "%s: warm without SQZ_WARMUP_STEPS", c->what);
        sqz_comm_destroy(comm);
        sqz_ctx_destroy(ctx);
    }
    /* The warm-up: the first SQZ_WARMUP_STEPS calls of a buffer, never the optimizer's. */
    const char *const kv[] = {"SQZ_METHOD", "quant", "SQZ_WARMUP_STEPS", "2", NULL};
    sqz_ctx_t        *ctx  = NULL;
    sqz_comm_t       *comm = make_comm(4, kv, &ctx);
    sqz_plan_t        pl   = {0};
    sqz_policy_plan_warm(comm, &pl, 1, 0);
    CHECK(pl.warm);
    sqz_policy_plan_warm(comm, &pl, 2, 0);
    CHECK(!pl.warm);
    sqz_policy_plan_warm(comm, &pl, 0, 1);
    CHECK(!pl.warm);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

int main(void)
{
    test_eligible();
    test_plan();
    test_ef();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const policy_case_t *c   = &cases[i];
        sqz_ctx_t           *ctx = NULL;
        sqz_comm_t          *comm = make_comm(c->nranks, c->kv, &ctx);
        const sqz_device_call_t f = {.bytes = (size_t)c->bytes, .rs = c->rs, .sra_ok = c->sra_ok,
                                     .sra_sent = c->sra_sent, .ag_sent = c->ag_sent};
        const int got = sqz_policy_choose_device(comm, &f).algo;
        CHECK_MSG(got == c->want, "%s: exchange %d, want %d", c->what, got, c->want);
        sqz_comm_destroy(comm);
        sqz_ctx_destroy(ctx);
    }
    sqz_ctx_t  *ctx  = NULL;
    sqz_comm_t *comm = make_comm(4, (const char *const[]){"SQZ_METHOD", "none", NULL}, &ctx);
    CHECK_NEAR(sqz_policy_dense_bytes(comm, 4e6, 0), 6e6, 1e-6);
    CHECK_NEAR(sqz_policy_dense_bytes(comm, 4e6, 1), 3e6, 1e-6);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    return sqz_test_result("test_policy");
}
