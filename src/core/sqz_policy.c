/* The host engine's policy (see sqz_policy.h). */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "coll/sqz_coll.h"
#include "sqz_cost.h"
#include "sqz_log.h"
#include "sqz_pool.h"
#include "sqz_policy.h"

/* The calibration buffer (1 MiB of floats) and the least time it is worked on: long enough for
 * ranks that share cores to be scheduled in turn, so that the rates are those they get. */
enum { SQZ_CAL_ELEMS = 1 << 18, SQZ_CAL_MAX_ITERS = 256 };
static const double SQZ_CAL_SECONDS = 0.01;

/* Deterministic values shaped like a gradient (a sum of uniforms, some entries much larger). */
static void sqz_cal_fill(float *x, size_t n)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const float u = (float)(s >> 40) / (float)(1u << 24) - 0.5f;
        x[i]          = (i % 97 == 0) ? 8.0f * u : u;
    }
}

/* This rank's compress and decode rates (input bytes per second) on a throwaway compressor
 * state, so that the communicator's own states are untouched.  {0, 0} when it cannot measure. */
static void sqz_cal_measure(const sqz_comm_t *comm, double rates[2])
{
    const sqz_ctx_t *const           ctx = comm->ctx;
    const sqz_compressor_v1_t *const c   = ctx->method;
    const sqz_compressor_env_v1_t    env = {.size = sizeof(env), .rank = comm->rank,
                                            .nranks = comm->nranks, .seed = (uint64_t)ctx->p.seed};
    const size_t n  = SQZ_CAL_ELEMS;
    void        *st = NULL;
    rates[0] = rates[1] = 0.0;
    if (SQZ_OK != c->create(ctx->configs[ctx->method_index], &env, &st)) {
        return;
    }
    const size_t cap  = c->max_payload(st, n);
    const size_t nsh  = c->size > offsetof(sqz_compressor_v1_t, shared_len) && c->shared_len
                            ? c->shared_len(st, n) : 0;
    float       *in   = malloc(n * sizeof(float));
    float       *out  = calloc(n, sizeof(float));
    float       *sh   = nsh ? malloc(nsh * sizeof(float)) : NULL;
    void        *pl   = malloc(cap ? cap : 1);
    double       tc = 0, td = 0;
    int          it = 0;
    if (in && out && pl && (sh || 0 == nsh)) {
        sqz_cal_fill(in, n);
        if (nsh) {
            c->shared_fill(st, in, NULL, n, sh);
        }
        for (; it < SQZ_CAL_MAX_ITERS && (it < 2 || tc + td < SQZ_CAL_SECONDS); it++) {
            sqz_compress_args_v1_t a = {.size = sizeof(a), .in = in, .n = n, .seq = (uint64_t)it,
                                        .payload = pl, .capacity = cap, .shared = sh};
            const double t0 = sqz_time_now();
            if (SQZ_OK != c->compress(st, &a)) {
                break;
            }
            const double t1 = sqz_time_now();
            if (SQZ_OK != c->decompress(st, pl, a.payload_bytes, out, n)) {
                break;
            }
            tc += t1 - t0;
            td += sqz_time_now() - t1;
        }
    }
    if (it >= 2 && tc > 0 && td > 0) {
        rates[0] = (double)it * (double)(n * sizeof(float)) / tc;
        rates[1] = (double)it * (double)(n * sizeof(float)) / td;
    }
    free(pl), free(sh), free(out), free(in);
    c->destroy(st);
}

/* The link measurement's buffers: a send and a receive area of `per` bytes for every rank
 * (128 KiB, less on large communicators: at most 16 MiB each), or NULL. */
static void *sqz_cal_link_buffers(const sqz_comm_t *comm, size_t *per)
{
    const size_t P = (size_t)comm->nranks;
    *per           = (size_t)1 << 17;
    while (*per > 4096 && *per * P > ((size_t)16 << 20)) {
        *per /= 2;
    }
    return calloc(2 * P, *per + 2 * sizeof(size_t) * 2);
}

/* One all-to-all of `per` bytes to every peer (0: 8 bytes); 
eturn its seconds, the ranks'
 * mean (the same on every rank), or a negative value when the transport failed. */
static double sqz_cal_alltoall(sqz_comm_t *comm, unsigned char *buf, size_t per, size_t bytes)
{
    const size_t   P     = (size_t)comm->nranks;
    unsigned char *send  = buf, *recv = buf + P * per;
    size_t        *cnt   = (size_t *)(buf + 2 * P * per), *dsp = cnt + P;
    for (size_t r = 0; r < P; r++) {
        cnt[r] = r == (size_t)comm->rank ? 0 : bytes;
        dsp[r] = r * per;
    }
    const double t0 = sqz_time_now();
    if (0 != comm->t.alltoallv(comm->t.self, send, cnt, dsp, recv, cnt, dsp)) {
        return -1.0;
    }
    float t = (float)(sqz_time_now() - t0);
    if (0 != comm->t.allreduce_f32_sum(comm->t.self, &t, &t, 1)) {
        return -1.0;
    }
    return (double)t / (double)P;
}

/* SQZ_LINK_GBPS=0: the latency (a round of 8-byte messages to every peer at once, after one that
 * opens the connections; the mean of 3) and the rate one rank gets sending `per` bytes to every
 * peer at once (the mean of 3), as the exchanges do, so congestion and shared cores are in it. */
static sqz_status_t sqz_cal_link(sqz_comm_t *comm, unsigned char *buf, size_t per)
{
    double lat = 0.0;
    for (int i = 0; i < 4; i++) {
        const double t = sqz_cal_alltoall(comm, buf, per, 8);
        if (t < 0) {
            return SQZ_ERR_TRANSPORT;
        }
        lat = i ? lat + t / 3 : 0.0;
    }
    double t = 0.0;
    for (int i = 0; i < 3; i++) {
        const double ti = sqz_cal_alltoall(comm, buf, per, per);
        if (ti < 0) {
            return SQZ_ERR_TRANSPORT;
        }
        t += ti / 3;
    }
    comm->latency_s = lat;
    comm->link_Bps  = (double)(comm->nranks - 1) * (double)per / fmax(t - lat, 1e-9);
    return SQZ_OK;
}

static sqz_cost_net_t sqz_policy_net(const sqz_comm_t *comm);

sqz_status_t sqz_policy_calibrate(sqz_comm_t *comm)
{
    const sqz_core_params_t *p = &comm->ctx->p;
    if (comm->calibrated || SQZ_EXCHANGE_MODEL_TIME != p->exchange_model ||
        SQZ_EXCHANGE_SUMMABLE == comm->ctx->method->exchange) {
        return SQZ_OK;
    }
    const int kernels = 0 == p->kernel_gbps, link = 0 == p->link_gbps;
    comm->compress_Bps = comm->decode_Bps = p->kernel_gbps * 1e9;
    if ((!kernels && !link) || comm->nranks < 2) {
        comm->calibrated = 1; /* settings: the same on every rank, nothing to measure */
        return SQZ_OK;
    }
    /* Agreed through one all-reduce (no allocation, so no rank can drop out): the ranks' mean
     * seconds per GB (a rank that could not measure counts as infinitely fast), and whether
     * every rank has the buffers of the link measurement. */
    size_t per  = 0;
    void  *lbuf = link ? sqz_cal_link_buffers(comm, &per) : NULL;
    double mine[2] = {0, 0};
    if (kernels) {
        sqz_cal_measure(comm, mine);
    }
    float agree[3] = {mine[0] > 0 ? (float)(1e9 / mine[0]) : 0.0f,
                      mine[1] > 0 ? (float)(1e9 / mine[1]) : 0.0f, lbuf ? 1.0f : 0.0f};
    if (0 != comm->t.allreduce_f32_sum(comm->t.self, agree, agree, 3)) {
        free(lbuf);
        return SQZ_ERR_TRANSPORT;
    }
    if (kernels) {
        comm->compress_Bps = agree[0] > 0 ? comm->nranks * 1e9 / agree[0] : 0.0;
        comm->decode_Bps   = agree[1] > 0 ? comm->nranks * 1e9 / agree[1] : 0.0;
    }
    sqz_status_t st = SQZ_OK;
    if (link && (int)agree[2] == comm->nranks) {
        st = sqz_cal_link(comm, lbuf, per);
    }
    free(lbuf);
    comm->calibrated = SQZ_OK == st;
    if (SQZ_OK == st && 0 == comm->rank) {
        const sqz_cost_net_t net = sqz_policy_net(comm);
        SQZ_INFO("cost model: %d ranks, link %.4g Gbit/s%s, latency %.3g us, compress %.3g GB/s, "
                 "decode %.3g GB/s per rank", comm->nranks, net.link_Bps * 8e-9,
                 comm->link_Bps > 0 ? " (measured)" : "", net.latency_s * 1e6,
                 comm->compress_Bps * 1e-9, comm->decode_Bps * 1e-9);
    }
    return st;
}

static sqz_cost_net_t sqz_policy_net(const sqz_comm_t *comm)
{
    const sqz_core_params_t *p = &comm->ctx->p;
    sqz_cost_net_t net = {.ranks = comm->nranks, .hosts = comm->hosts ? comm->hosts : comm->nranks,
                          .per_host = comm->per_host ? comm->per_host : 1,
                          .link_Bps = p->link_gbps * 1e9 / 8, .intra_Bps = p->intra_gbps * 1e9 / 8,
                          .latency_s = p->link_latency_us * 1e-6};
    if (comm->link_Bps > 0) {
        /* Measured as one rank sees it, its host's link shared as the exchanges share it. */
        net.hosts = net.ranks, net.per_host = 1;
        net.link_Bps = comm->link_Bps, net.latency_s = comm->latency_s;
    } else if (net.link_Bps <= 0) {
        net.link_Bps = 10e9 / 8; /* SQZ_LINK_GBPS=0 without a measurement */
    }
    return net;
}

static double sqz_policy_seconds(const sqz_comm_t *comm, const sqz_cost_net_t *net,
                                 sqz_cost_work_t w)
{
    const sqz_cost_rates_t rates = {comm->compress_Bps, comm->decode_Bps};
    return sqz_cost_seconds(net, &rates, &w);
}

double sqz_policy_dense_seconds(const sqz_comm_t *comm, size_t n)
{
    const sqz_cost_net_t net = sqz_policy_net(comm);
    return sqz_policy_seconds(comm, &net, sqz_cost_dense_ring(&net, 4.0 * (double)n));
}

/* A compressor's payload bound for m elements (with its frame under the time model, whose
 * latency term counts messages; the bytes model compares payloads alone, as it always has). */
static double sqz_policy_payload(const sqz_comm_t *comm, size_t m)
{
    const int timed = SQZ_EXCHANGE_MODEL_TIME == comm->ctx->p.exchange_model;
    return (double)comm->ctx->method->max_payload(comm->cstate, m) +
           (timed ? (double)sizeof(sqz_frame_t) : 0.0);
}

/* The sparsifiers' exchanges (all-gather or SparCML's split all-gather).  Bytes one rank sends:
 *   all-gather:       (P - 1) payloads of up to max_payload(n);
 *   split all-gather: (P - 1) pieces of max_payload(n/P), then (P - 1) reduced chunks sent
 *                     exactly: at most P times a piece's entries (8 bytes each) or n/P floats;
 *   dense ring:       2 (P - 1) / P * 4n. */
static sqz_choice_t sqz_policy_sparse(const sqz_comm_t *comm, size_t n)
{
    const sqz_core_params_t *p     = &comm->ctx->p;
    const sqz_cost_net_t     net   = sqz_policy_net(comm);
    const double             P     = comm->nranks, B = 4.0 * (double)n;
    const double             per   = ceil((double)n / P);
    const double             mp    = sqz_policy_payload(comm, n);
    const double             mpper = sqz_policy_payload(comm, (size_t)per);
    const double             exact = fmin(P * mpper, 4 * per + 8);
    const int                timed = SQZ_EXCHANGE_MODEL_TIME == p->exchange_model;
    double ag = (P - 1) * mp, split = (P - 1) * (mpper + exact), dense = 2.0 * (P - 1) / P * B;
    if (timed) {
        ag    = sqz_policy_seconds(comm, &net, sqz_cost_allgather(&net, B, mp));
        split = sqz_policy_seconds(comm, &net, sqz_cost_split(&net, B, mpper, exact));
        dense = sqz_policy_dense_seconds(comm, n);
    }
    /* (Not for SQZ_ADAPT's segmented composite: the split's chunks would cut across layers.) */
    const int can_split = comm->p2p && p->pipeline && comm->nranks > 1 && NULL == comm->segs;
    sqz_choice_t ch;
    if (1 == p->sparse_algo || (0 == p->sparse_algo && (!can_split || ag <= split))) {
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

/* The scatter-reduce family (quant, sign, ...): pipelined over point-to-point messages when it
 * can be; under the time model, the dense all-reduce when it is predicted faster. */
static sqz_choice_t sqz_policy_scatter(const sqz_comm_t *comm, size_t n, size_t block)
{
    const sqz_core_params_t *p  = &comm->ctx->p;
    sqz_choice_t             ch = {SQZ_ALGO_REDUCE_SCATTER, 0};
    if (comm->p2p && p->pipeline && sqz_pool_size(comm->pool) <= 1) {
        ch.algo = SQZ_ALGO_REDUCE_SCATTER_P2P;
    }
    if (SQZ_EXCHANGE_MODEL_TIME != p->exchange_model || comm->nranks < 2) {
        return ch;
    }
    const sqz_cost_net_t net = sqz_policy_net(comm);
    const double         B   = 4.0 * (double)n;
    const double piece = sqz_policy_payload(comm, (size_t)ceil((double)n / comm->nranks));
    ch.predicted       = sqz_policy_seconds(comm, &net, sqz_cost_scatter_reduce(&net, B, piece));
    const double dense = sqz_policy_dense_seconds(comm, n);
    /* (A reduce-scatter has no dense switch: the transport's dense form is an all-reduce.) */
    if (0 == block && p->sparse_dense_switch > 0 && ch.predicted > p->sparse_dense_switch * dense) {
        ch.algo      = SQZ_ALGO_DENSE_SWITCH;
        ch.predicted = dense;
    }
    return ch;
}

sqz_choice_t sqz_policy_choose(const sqz_comm_t *comm, size_t n, size_t block)
{
    switch (comm->ctx->method->exchange) {
    case SQZ_EXCHANGE_SUMMABLE: {
        const sqz_choice_t ch = {SQZ_ALGO_SUMMABLE, 0};
        return ch;
    }
    case SQZ_EXCHANGE_ALLGATHER: return sqz_policy_sparse(comm, n);
    default: return sqz_policy_scatter(comm, n, block);
    }
}
