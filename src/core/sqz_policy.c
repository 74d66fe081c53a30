/* The policy of both engines (see sqz_policy.h). */
#include "config.h"

#include <math.h>

#include "coll/sqz_coll.h"
#include "sqz_cost.h"
#include "sqz_dgc.h"
#include "sqz_ef.h"
#include "sqz_policy.h"
#include "sqz_registry.h"

sqz_cost_net_t sqz_policy_net(const sqz_comm_t *comm)
{
    const sqz_core_params_t *p = &comm->ctx->p;
    const sqz_comm_cost_t   *c = &comm->cost;
    sqz_cost_net_t net = {.ranks = comm->nranks, .hosts = c->hosts ? c->hosts : comm->nranks,
                          .per_host = c->per_host ? c->per_host : 1,
                          .link_Bps = p->link_gbps * 1e9 / 8,
                          .intra_Bps = (p->intra_gbps > 0 ? p->intra_gbps : 200) * 1e9 / 8,
                          .latency_s = p->link_latency_us * 1e-6};
    if (c->link_Bps > 0) {
        /* Measured as one rank sees it, its host's link shared as the exchanges share it. */
        net.hosts = net.ranks, net.per_host = 1;
        net.link_Bps = c->link_Bps, net.latency_s = c->latency_s;
    } else {
        if (net.link_Bps <= 0) {
            net.link_Bps = 10e9 / 8; /* SQZ_LINK_GBPS=0 without a measurement */
        }
        /* (a measured rate already is this rank's share: the sharers calibrate together) */
        net.link_Bps /= c->link_share > 1 ? c->link_share : 1;
    }
    return net;
}

static double sqz_policy_seconds(const sqz_comm_t *comm, const sqz_cost_net_t *net,
                                 sqz_cost_work_t w)
{
    const sqz_cost_rates_t rates = {comm->cost.compress_Bps, comm->cost.decode_Bps};
    return sqz_cost_seconds(net, &rates, &w);
}

double sqz_policy_dense_seconds(const sqz_comm_t *comm, size_t n)
{
    const sqz_cost_net_t net = sqz_policy_net(comm);
    return sqz_policy_seconds(comm, &net, sqz_cost_dense_ring(&net, 4.0 * (double)n));
}

/* A compressor's payload bound for m elements at a stage (0: a rank's own data; 1: a reduced
 * chunk compressed again): its stage_payload where the descriptor has one, else max_payload;
 * with its frame under the time model, whose latency term counts messages (the bytes model
 * compares payloads alone, as it always has). */
static double sqz_policy_payload(const sqz_comm_t *comm, size_t m, int stage)
{
    const sqz_compressor_v1_t *c     = comm->ctx->method;
    const int                  timed = SQZ_EXCHANGE_MODEL_TIME == comm->ctx->p.exchange_model;
    const size_t b = SQZ_HAS_STAGE_PAYLOAD(c) ? c->stage_payload(comm->cstate, m, stage)
                                              : c->max_payload(comm->cstate, m);
    return (double)b + (timed ? (double)sizeof(sqz_frame_t) : 0.0);
}

static sqz_choice_t sqz_policy_scatter(const sqz_comm_t *comm, size_t n, size_t block);

/* The sparsifiers' exchanges (all-gather, SparCML's split all-gather, or the scatter-reduce with
 * re-sparsification).  Bytes one rank sends:
 *   all-gather:       (P - 1) payloads of up to max_payload(n);
 *   split all-gather: (P - 1) pieces of max_payload(n/P), then (P - 1) reduced chunks sent
 *                     exactly: at most P times a piece's entries (8 bytes each) or n/P floats;
 *   scatter-reduce:   (P - 1) pieces of max_payload(n/P), then the reduced chunk compressed again
 *                     (its server residual keeps what the second selection drops) to P - 1 peers:
 *                     2 (P - 1) pieces (the second at the stage-1 bound: TOPK_RESELECT's),
 *                     independent of how the ranks' supports overlap (Ok-Topk's shape).  Only
 *                     when asked (SQZ_SPARSE_ALGO=scatter): each call applies k entries instead
 *                     of up to P k, which costs accuracy at the same density
 *                     (docs/performance.md), so no cost model of time alone may pick it;
 *   dense ring:       2 (P - 1) / P * 4n. */
static sqz_choice_t sqz_policy_sparse(const sqz_comm_t *comm, size_t n)
{
    const sqz_core_params_t *p     = &comm->ctx->p;
    const sqz_cost_net_t     net   = sqz_policy_net(comm);
    const double             P     = comm->nranks, B = 4.0 * (double)n;
    const double             per   = ceil((double)n / P);
    const double             mp    = sqz_policy_payload(comm, n, 0);
    const double             mpper = sqz_policy_payload(comm, (size_t)per, 0);
    const double             mpre  = sqz_policy_payload(comm, (size_t)per, 1);
    const double             exact = fmin(P * mpper, 4 * per + 8);
    const int                timed = SQZ_EXCHANGE_MODEL_TIME == p->exchange_model;
    double ag = (P - 1) * mp, split = (P - 1) * (mpper + exact), dense = 2.0 * (P - 1) / P * B;
    if (timed) {
        ag    = sqz_policy_seconds(comm, &net, sqz_cost_allgather(&net, B, mp));
        split = sqz_policy_seconds(comm, &net, sqz_cost_split(&net, B, mpper, exact));
        dense = sqz_policy_dense_seconds(comm, n);
    }
    /* (Not for SQZ_ADAPT's segmented composite: the split's and the scatter's chunks would cut
     * across layers.) */
    const int chunked   = comm->nranks > 1 && NULL == comm->segs;
    const int can_split = chunked && comm->p2p && p->pipeline;
    if (chunked && comm->nranks > 2 && SQZ_SPARSE_SCATTER == p->sparse_algo) {
        /* (At 2 ranks it would send what the all-gather sends, and lose more.)  Its dense switch
         * is the time model's there, and the bytes model's here, as for the all-gather. */
        sqz_choice_t sra = sqz_policy_scatter(comm, n, 0);
        if (!timed && p->sparse_dense_switch > 0 &&
            (P - 1) * (mpper + mpre) > p->sparse_dense_switch * dense) {
            sra.algo = SQZ_ALGO_DENSE_SWITCH;
        }
        return sra;
    }
    sqz_choice_t ch;
    /* (the all-gather also for a scatter that does not apply) */
    if (SQZ_SPARSE_SPLIT != p->sparse_algo &&
        (SQZ_SPARSE_AUTO != p->sparse_algo || !can_split || ag <= split)) {
        ch.algo      = (comm->p2p && p->pipeline) ? SQZ_ALGO_ALLGATHER_P2P : SQZ_ALGO_ALLGATHER;
        ch.predicted = ag;
    } else {
        ch.algo      = can_split ? SQZ_ALGO_SPLIT_ALLGATHER : SQZ_ALGO_ALLGATHER;
        ch.predicted = can_split ? split : ag;
    }
    if (p->sparse_dense_switch > 0 && comm->nranks > 1 &&
        ch.predicted > p->sparse_dense_switch * dense) {
        ch.algo      = SQZ_ALGO_DENSE_SWITCH;
        ch.predicted = dense;
    }
    if (!timed) {
        ch.predicted = 0;
    }
    return ch;
}

/* The scatter-reduce family (quant, sign, ...), and every method's reduce-scatter (its first
 * phase alone: each rank's chunk r compressed and sent to rank r, which decodes and sums what it
 * receives; for the sparsifiers, the split exchange's first phase): pipelined over point-to-point
 * messages when it can be; under the time model, the dense all-reduce when it is predicted
 * faster. */
static sqz_choice_t sqz_policy_scatter(const sqz_comm_t *comm, size_t n, size_t block)
{
    const sqz_core_params_t *p  = &comm->ctx->p;
    sqz_choice_t             ch = {SQZ_ALGO_REDUCE_SCATTER, 0};
    /* (SQZ_THREADS, the setting every rank checked, not the threads this rank could start: a
     * rank whose pool came up short still runs the exchange its peers run) */
    if (comm->p2p && p->pipeline && p->threads <= 1) {
        ch.algo = SQZ_ALGO_REDUCE_SCATTER_P2P;
    }
    if (SQZ_EXCHANGE_MODEL_TIME != p->exchange_model || comm->nranks < 2) {
        return ch;
    }
    const sqz_cost_net_t net = sqz_policy_net(comm);
    const double         B   = 4.0 * (double)n;
    const size_t per    = (size_t)ceil((double)n / comm->nranks);
    const double piece  = sqz_policy_payload(comm, per, 0);
    const double piece2 = sqz_policy_payload(comm, per, 1);
    ch.predicted        = sqz_policy_seconds(
        comm, &net, block ? sqz_cost_reduce_scatter_block(&net, B, piece)
                          : sqz_cost_scatter_reduce(&net, B, piece, piece2));
    const double dense = sqz_policy_dense_seconds(comm, n);
    /* (A reduce-scatter has no dense switch: the transport's dense form is an all-reduce.) */
    if (0 == block && p->sparse_dense_switch > 0 && ch.predicted > p->sparse_dense_switch * dense) {
        ch.algo      = SQZ_ALGO_DENSE_SWITCH;
        ch.predicted = dense;
    }
    return ch;
}

/* The exchange of a compressed call of host buffers, n elements (block: a reduce-scatter's
 * elements per rank; 0 for an all-reduce), a summable method's aside (sqz_policy_exchange). */
static sqz_choice_t sqz_policy_choose(const sqz_comm_t *comm, size_t n, size_t block)
{
    if (SQZ_EXCHANGE_ALLGATHER == comm->ctx->method->exchange && 0 == block) {
        return sqz_policy_sparse(comm, n);
    }
    return sqz_policy_scatter(comm, n, block);
}

double sqz_policy_dense_bytes(const sqz_comm_t *comm, double bytes, int rs)
{
    /* (the ring's reduce-scatter is its first half) */
    const sqz_cost_net_t net = {.ranks = comm->nranks};
    return sqz_cost_dense_ring(&net, bytes).sent / (rs ? 2.0 : 1.0);
}

/* SQZ_EXCHANGE_MODEL=time for device buffers: the chosen compressed exchange (sra: the
 * scatter-reduce, sending `sent` bytes; else the all-gather) against the dense collective. */
static sqz_choice_t sqz_policy_device_time(const sqz_comm_t *comm, const sqz_device_call_t *f,
                                           int sra, double sent, double factor)
{
    const sqz_core_params_t *p     = &comm->ctx->p;
    const double             B     = (double)f->bytes;
    const double             kern  = (p->kernel_gbps > 0 ? p->kernel_gbps : 1000.0) * 1e9;
    const sqz_cost_rates_t   rates = {kern, kern};
    const sqz_cost_net_t     net   = sqz_policy_net(comm);
    sqz_cost_work_t c =
        sra ? sqz_cost_scatter_reduce(&net, B, 0.0, 0.0) : sqz_cost_allgather(&net, B, 0.0);
    c.sent            = sent; /* the engine's own count of what the exchange sends */
    sqz_cost_work_t d = sqz_cost_dense_ring(&net, B);
    if (f->rs) {
        /* A reduce-scatter stops after its first half: one round of chunks, one decode pass. */
        c.rounds = 1, c.decode = sra ? B : c.decode, c.compress = B;
        d.rounds /= 2, d.sent /= 2;
    }
    const double compressed = sqz_cost_seconds(&net, &rates, &c);
    const double dense      = sqz_cost_seconds(&net, &rates, &d);
    sqz_choice_t ch = {sra ? SQZ_ALGO_REDUCE_SCATTER : SQZ_ALGO_NCCL_ALLGATHER, compressed};
    if (factor > 0 && compressed > factor * dense) {
        ch.algo = SQZ_ALGO_DENSE_SWITCH, ch.predicted = dense;
    }
    return ch;
}

sqz_choice_t sqz_policy_choose_device(const sqz_comm_t *comm, const sqz_device_call_t *f)
{
    const sqz_core_params_t *p     = &comm->ctx->p;
    const int                exch  = comm->ctx->method->exchange;
    const int                timed = SQZ_EXCHANGE_MODEL_TIME == p->exchange_model && comm->nranks > 1;
    const double             factor     = p->sparse_dense_switch;
    const int                summarizes = SQZ_EXCHANGE_REDUCE_SCATTER == exch;
    /* A sparsifier's all-reduce takes the scatter-reduce with re-sparsification when asked (as
     * sqz_policy_sparse on host buffers). */
    const int sparse = f->sra_ok && !f->rs && SQZ_EXCHANGE_ALLGATHER == exch && comm->nranks > 2;
    const int sra    = (f->sra_ok && (f->rs || (summarizes && comm->nranks > 2))) ||
                    (sparse && SQZ_SPARSE_SCATTER == p->sparse_algo);
    const double sent = sra ? f->sra_sent : f->ag_sent;
    if (timed) {
        return sqz_policy_device_time(comm, f, sra, sent, factor);
    }
    sqz_choice_t ch = {sra ? SQZ_ALGO_REDUCE_SCATTER : SQZ_ALGO_NCCL_ALLGATHER, 0};
    if (factor > 0 && comm->nranks > 1 &&
        sent > factor * sqz_policy_dense_bytes(comm, (double)f->bytes, f->rs)) {
        ch.algo = SQZ_ALGO_DENSE_SWITCH;
    }
    return ch;
}

int sqz_policy_ef(const sqz_comm_t *comm, int rs, int opt, uint64_t key, size_t n)
{
    const sqz_ctx_t *ctx = comm->ctx;
    if (opt || (rs && sqz_ef_transforms(ctx->ef))) {
        return SQZ_EF_EF14;
    }
    if (ctx->ef_auto && SQZ_EXCHANGE_SUMMABLE == ctx->method->exchange &&
        !sqz_layout_known(comm, key, n)) {
        return SQZ_EF_NONE;
    }
    return ctx->ef;
}

int sqz_policy_eligible(const sqz_comm_t *comm, size_t count, sqz_dtype_t dtype, sqz_op_t op,
                        int memory, int rs, int opt)
{
    const int host_type   = SQZ_DTYPE_FLOAT32 == dtype;
    const int device_type = host_type || SQZ_DTYPE_FLOAT16 == dtype || SQZ_DTYPE_BFLOAT16 == dtype;
    const size_t esz      = host_type ? 4 : 2;
    if (!(SQZ_MEMORY_HOST == memory ? host_type : device_type) ||
        (SQZ_OP_SUM != op && SQZ_OP_AVG != op) || 0 == count ||
        (!opt && count * esz < comm->ctx->p.min_bytes)) {
        return 0;
    }
    return sqz_comm_method_takes(comm, count, dtype, op, memory, rs);
}

int sqz_policy_warm(const sqz_comm_t *comm, uint64_t calls, int opt)
{
    return !opt && calls < (uint64_t)comm->ctx->p.warmup_steps;
}

int sqz_policy_admit(const sqz_comm_t *comm, const sqz_call_facts_t *f)
{
    return sqz_policy_eligible(comm, f->count, f->dtype, f->op, f->memory, 0 != f->block, f->opt);
}

/* The exchange of a planned call: the method's family, and the models' choice among its
 * exchanges (device buffers: the scatter-reduce only where no estimator shared by the ranks runs
 * the call). */
static sqz_choice_t sqz_policy_exchange(const sqz_comm_t *comm, const sqz_call_facts_t *f,
                                        int transform)
{
    if (SQZ_EXCHANGE_SUMMABLE == comm->ctx->method->exchange) {
        const sqz_choice_t summable = {SQZ_ALGO_SUMMABLE, 0};
        return summable;
    }
    if (NULL == f->device) {
        return sqz_policy_choose(comm, f->count, f->block);
    }
    sqz_device_call_t d = *f->device;
    d.sra_ok            = d.sra_ok && !transform;
    d.rs                = 0 != f->block;
    return sqz_policy_choose_device(comm, &d);
}

sqz_plan_t sqz_policy_plan(const sqz_comm_t *comm, const sqz_call_facts_t *f)
{
    const sqz_ctx_t *ctx  = comm->ctx;
    sqz_plan_t       plan = {.ef = sqz_policy_ef(comm, 0 != f->block, f->opt, f->key, f->count)};
    plan.transform        = sqz_ef_transforms(plan.ef);
    /* DGC and damping belong to classic error feedback of the gradient (not the optimizer's
     * collective: its buffers are momenta, which the optimizer corrects itself). */
    const int classic = !f->opt && SQZ_EF_EF14 == plan.ef;
    plan.dgc          = classic && sqz_dgc_active(&ctx->p);
    plan.damp         = classic && ctx->ef_decay < 1.0f;
    const sqz_choice_t ch = sqz_policy_exchange(comm, f, plan.transform);
    plan.algo             = ch.algo;
    plan.predicted        = ch.predicted;
    return plan;
}

void sqz_policy_plan_warm(const sqz_comm_t *comm, sqz_plan_t *plan, uint64_t calls, int opt)
{
    plan->warm = sqz_policy_warm(comm, calls, opt);
}
