/* The engine: per-communicator state, the eligibility policy, warm-up, the settings check, and
 * the dispatch of a compressed call to its collective algorithm with a dense fallback. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "coll/sqz_coll.h"
#include "coll/sqz_coll_hier.h"
#include "sqz_callseq.h"
#include "sqz_ctx.h"
#include "sqz_dgc.h"
#include "sqz_ef.h"
#include "sqz_identity.h"
#include "sqz_log.h"
#include "sqz_policy.h"
#include "sqz_pool.h"
#include "sqz_residual.h"
#include "sqz_runner.h"
#include "adapt/sqz_adapt_seg.h"
#include "lossless/sqz_entropy.h"

void sqz_comm_account_state(sqz_comm_t *comm, size_t bytes)
{
    if (bytes == comm->state_bytes_seen) {
        return;
    }
    pthread_mutex_lock(&comm->ctx->lock);
    sqz_ctx_t *const ctx = comm->ctx;
    ctx->state_bytes += (int64_t)bytes - (int64_t)comm->state_bytes_seen;
    ctx->state_bytes_peak = ctx->state_bytes > ctx->state_bytes_peak ? ctx->state_bytes
                                                                       : ctx->state_bytes_peak;
    pthread_mutex_unlock(&comm->ctx->lock);
    comm->state_bytes_seen = bytes;
}

sqz_status_t sqz_comm_create(sqz_ctx_t *ctx, const sqz_transport_t *t, sqz_comm_t **out)
{
    *out = NULL;
    if (NULL == ctx || NULL == t || t->size < offsetof(sqz_transport_t, isend) || t->nranks < 1 ||
        t->rank < 0 || t->rank >= t->nranks || NULL == t->allgatherv || NULL == t->alltoallv ||
        NULL == t->allreduce_f32_sum) {
        return SQZ_ERR_INVALID_PARAM;
    }
    sqz_comm_t *comm = calloc(1, sizeof(*comm));
    if (NULL == comm) {
        return SQZ_ERR_NO_MEMORY;
    }
    comm->ctx    = ctx;
    memcpy(&comm->t, t, t->size < sizeof(comm->t) ? t->size : sizeof(comm->t));
    comm->rank   = t->rank;
    comm->nranks = t->nranks;
    comm->store.nranks = t->nranks;
    comm->p2p    = t->size >= sizeof(sqz_transport_t) && t->isend && t->irecv && t->test && t->wait;
    if (!comm->p2p) {
        comm->t.isend = NULL, comm->t.irecv = NULL, comm->t.test = NULL, comm->t.wait = NULL;
    }
    pthread_mutex_init(&comm->lock, NULL);
    comm->scratch.counts    = calloc(7 * (size_t)t->nranks, sizeof(size_t));
    comm->scratch.sharedptr = calloc((size_t)t->nranks, sizeof(*comm->scratch.sharedptr));
    comm->scratch.agreebuf  = calloc((size_t)t->nranks, SQZ_AGREE_BYTES);
    comm->seq       = sqz_callseq_create();
    const sqz_compressor_env_v1_t env = {
        .size = sizeof(env), .rank = t->rank, .nranks = t->nranks, .seed = (uint64_t)ctx->p.seed};
    sqz_status_t st = (comm->scratch.counts && comm->scratch.sharedptr &&
                       comm->scratch.agreebuf && comm->seq)
                          ? SQZ_OK
                          : SQZ_ERR_NO_MEMORY;
    if (SQZ_OK == st) {
        st = sqz_pool_create((int)ctx->p.threads, &comm->pool);
    }
    const int nthreads = sqz_pool_size(comm->pool);
    if (SQZ_OK == st) {
        comm->cstates = calloc((size_t)nthreads, sizeof(void *));
        st            = comm->cstates ? SQZ_OK : SQZ_ERR_NO_MEMORY;
    }
    for (int i = 0; SQZ_OK == st && i < nthreads; i++) {
        st = ctx->method->create(ctx->configs[ctx->method_index], &env, &comm->cstates[i]);
    }
    if (SQZ_OK == st) {
        comm->cstate  = comm->cstates[0];
        comm->entropy = calloc((size_t)nthreads, sizeof(*comm->entropy));
        st            = comm->entropy ? SQZ_OK : SQZ_ERR_NO_MEMORY;
    }
    for (int i = 0; SQZ_OK == st && i < nthreads; i++) {
        comm->entropy[i] = sqz_entropy_create();
        st               = comm->entropy[i] ? SQZ_OK : SQZ_ERR_NO_MEMORY;
    }
    if (SQZ_OK == st && ctx->p.adapt && sqz_seg_supported(ctx)) {
        comm->segs = calloc((size_t)nthreads, sizeof(*comm->segs));
        st         = comm->segs ? SQZ_OK : SQZ_ERR_NO_MEMORY;
        for (int i = 0; SQZ_OK == st && i < nthreads; i++) {
            st = sqz_seg_create(ctx, &env, &comm->segs[i]);
        }
    }
    if (SQZ_OK != st) {
        SQZ_ERROR("compressor '%s' could not be created: %s", ctx->method->name,
                  sqz_status_string(st));
        sqz_comm_destroy(comm);
        return st;
    }
    *out = comm;
    return SQZ_OK;
}

sqz_status_t sqz_comm_create_hier(sqz_ctx_t *ctx, const sqz_transport_t *local,
                                  const sqz_transport_t *inter, sqz_comm_t **out)
{
    *out = NULL;
    if (NULL == local) {
        return SQZ_ERR_INVALID_PARAM;
    }
    sqz_comm_t  *comm;
    sqz_status_t st = sqz_comm_create(ctx, inter, &comm);
    if (SQZ_OK != st) {
        return st;
    }
    if (SQZ_OK != (st = sqz_hier_attach(comm, local))) {
        sqz_comm_destroy(comm);
        return st;
    }
    *out = comm;
    return SQZ_OK;
}

void sqz_comm_destroy(sqz_comm_t *comm)
{
    if (NULL == comm) {
        return;
    }
    sqz_hier_free(comm->hier);
    if (comm->device) {
        comm->device->destroy(comm);
    }
    sqz_layouts_fini(comm);
    sqz_moe_comm_free(comm);
    for (int i = 0; comm->cstates && i < sqz_pool_size(comm->pool); i++) {
        if (comm->cstates[i]) {
            comm->ctx->method->destroy(comm->cstates[i]);
        }
    }
    free(comm->cstates);
    for (int i = 0; comm->segs && i < sqz_pool_size(comm->pool); i++) {
        sqz_seg_destroy(comm->segs[i]);
    }
    free(comm->segs);
    for (int i = 0; comm->entropy && i < sqz_pool_size(comm->pool); i++) {
        sqz_entropy_destroy(comm->entropy[i]);
    }
    free(comm->entropy);
    sqz_pool_destroy(comm->pool);
    sqz_comm_account_state(comm, 0);
    sqz_state_store_fini(&comm->store);
    sqz_callseq_destroy(comm->seq);
    free(comm->scratch.sendbuf);
    free(comm->scratch.recvbuf);
    free(comm->scratch.chunkbuf);
    free(comm->scratch.taskbuf);
    free(comm->scratch.efbuf);
    free(comm->scratch.resbuf);
    free(comm->scratch.sharedbuf);
    free((void *)comm->scratch.sharedptr);
    free(comm->scratch.counts);
    free(comm->scratch.agreebuf);
    free(comm->scratch.pseudo);
    free(comm->scratch.adaptbuf);
    pthread_mutex_destroy(&comm->lock);
    free(comm);
}

int sqz_comm_method_takes(const sqz_comm_t *comm, size_t count, sqz_dtype_t dtype, sqz_op_t op,
                          int memory, int reduce_scatter)
{
    const sqz_ctx_t *ctx = comm->ctx;
    if (count > (size_t)UINT32_MAX) {
        return 0; /* payload indices are 32-bit */
    }
    if (ctx->method->query) {
        const sqz_query_v1_t q = {.size = sizeof(q), .count = count, .nranks = comm->nranks,
                                  .dtype = (int)dtype, .op = (int)op, .memory = memory,
                                  .reduce_scatter = reduce_scatter};
        if (SQZ_OK != ctx->method->query(comm->cstate, &q)) {
            return 0;
        }
    }
    return 1;
}

/* Whether a host call (rs: a reduce-scatter) is compressed: the policy's answer. */
static int sqz_comm_eligible_as(const sqz_comm_t *comm, size_t count, sqz_dtype_t dtype,
                                sqz_op_t op, int rs)
{
    const sqz_call_facts_t f = {.count = count, .block = rs ? count / (size_t)comm->nranks : 0,
                                .dtype = dtype, .op = op, .memory = SQZ_MEMORY_HOST};
    return sqz_policy_admit(comm, &f);
}

int sqz_comm_eligible(const sqz_comm_t *comm, size_t count, sqz_dtype_t dtype, sqz_op_t op)
{
    return sqz_comm_eligible_as(comm, count, dtype, op, 0);
}

static void sqz_scale(float *x, size_t n, float s)
{
    for (size_t i = 0; i < n; i++) {
        x[i] *= s;
    }
}

/* The dense path: the transport's exact all-reduce. */
static sqz_status_t sqz_dense_allreduce(sqz_comm_t *comm, const float *in, float *out, size_t n,
                                        sqz_op_t op)
{
    if (0 != comm->t.allreduce_f32_sum(comm->t.self, in, out, n)) {
        return SQZ_ERR_TRANSPORT;
    }
    if (SQZ_OP_AVG == op) {
        sqz_scale(out, n, 1.0f / (float)comm->nranks);
    }
    return SQZ_OK;
}

/* Statuses by which every rank agreed to send the call dense (see sqz_coll.h); any other error
 * leaves the ranks out of step. */
static int sqz_agreed_fallback(sqz_status_t st)
{
    return SQZ_ERR_NONFINITE == st || SQZ_ERR_NOT_SUPPORTED == st || SQZ_ERR_CORRUPT == st ||
           SQZ_ERR_MISMATCH == st;
}

/* The dense side of the switch: what the compressor would have seen (input plus residual) goes
 * exactly, so the residual is emptied: error feedback loses nothing. */
static sqz_status_t sqz_dense_switch(sqz_coll_call_t *call)
{
    sqz_comm_t *const comm = call->comm;
    const size_t      n    = call->n;
    int               bad  = 0;
    for (size_t i = 0; i < n; i++) {
        bad |= !isfinite(call->in[i]);
    }
    if (call->residual && !bad) {
        /* (A non-finite input goes as it is, and the residual stays for the next call.) */
        for (size_t i = 0; i < n; i++) {
            call->residual[i] += call->in[i];
        }
        if (0 != comm->t.allreduce_f32_sum(comm->t.self, call->residual, call->out, n)) {
            return SQZ_ERR_TRANSPORT;
        }
        memset(call->residual, 0, n * sizeof(float));
    } else if (0 != comm->t.allreduce_f32_sum(comm->t.self, call->in, call->out, n)) {
        return SQZ_ERR_TRANSPORT;
    }
    call->cs.bytes_wire = n * sizeof(float);
    call->cs.bytes_sent = 2 * (size_t)(comm->nranks - 1) * n * sizeof(float) / (size_t)comm->nranks;
    return SQZ_OK;
}

/* Runs one call: block == 0 for an all-reduce of n elements, else a reduce-scatter of n = P*block
 * elements.  `in` is the input, `out` the output (n or block elements). */
typedef struct sqz_carry {
    sqz_comm_t *comm;
    float      *dst;
} sqz_carry_t;

/* sqz_carry_fn of the CPU engine (fp32 residuals). */
static void sqz_carry_residual(void *arg, uint64_t src_key, size_t src_count, size_t src_offset,
                               size_t dst_offset, size_t len)
{
    const sqz_carry_t     *c   = arg;
    const sqz_buf_state_t *src = sqz_state_find(&c->comm->store, src_key, src_count);
    if (src && src->residual) {
        memcpy(c->dst + dst_offset, src->residual + src_offset, len * sizeof(float));
        memset(src->residual + src_offset, 0, len * sizeof(float));
    }
}

/* SQZ_ADAPT with an all-gather method: the call goes through the segmented composite (one per
 * pool thread, src/adapt/sqz_adapt_seg.h) planned with the buffer's layout and levels; a probing
 * call first measures every layer at every candidate level (*probe, pr). */
static sqz_status_t sqz_engine_segments(sqz_comm_t *comm, sqz_coll_call_t *call, uint64_t key,
                                        const sqz_layer_t **layers, size_t *nl,
                                        sqz_adapt_probe_t *pr, int *probe)
{
    uint64_t digest;
    *layers = sqz_layout_resolve(comm, key, call->n, nl, &digest);
    if (NULL == *layers) {
        return SQZ_ERR_NO_MEMORY;
    }
    sqz_buf_state_t *bs = call->bstate;
    const int        p  = sqz_adapt_begin(comm, &bs->adapt, call->seq, *nl, pr);
    if (p < 0) {
        return (sqz_status_t)p;
    }
    *probe = p;
    if (p) {
        pr->bytes = pr->norm + *nl; /* sqz_adapt_begin reserved room for them */
        SQZ_CHECK(sqz_seg_probe(comm->segs[0], call->in, call->residual, *layers, *nl, call->seq,
                                pr));
    }
    const int *levels = (bs->adapt.levels && bs->adapt.n == *nl) ? bs->adapt.levels : NULL;
    for (int i = 0; i < sqz_pool_size(comm->pool); i++) {
        SQZ_CHECK(sqz_seg_plan(comm->segs[i], *layers, *nl, call->n, levels));
    }
    call->c       = &sqz_seg_compressor;
    call->cstates = (void **)comm->segs;
    call->cstate  = comm->segs[0];
    return SQZ_OK;
}

/* The state of one call and its counter (sqz_call_state): by the caller's key, or by the call
 * sequence (ef21 / econtrol's estimators are shared by the ranks: no heir takes them over). */
static sqz_status_t sqz_engine_state(sqz_comm_t *comm, const sqz_plan_t *plan, uint64_t key,
                                     size_t n, size_t block, const void *addr,
                                     sqz_buf_state_t **bs, uint64_t *seq)
{
    const sqz_state_query_t q = {.key = key, .count = n, .addr = addr, .shared = plan->transform,
                                 .sig = sqz_identity_sig(n, SQZ_DTYPE_FLOAT32, block != 0)};
    return sqz_call_state(comm, &q, bs, seq);
}

/* The exchange of a prepared call: the plan's (call->cs.algo, the same on every rank: the policy
 * decides it from settings and sizes only).  `key` names the buffer's layout (0: none
 * registered). */
static sqz_status_t sqz_engine_exchange(sqz_coll_call_t *call, uint64_t key)
{
    switch (call->cs.algo) {
    case SQZ_ALGO_SUMMABLE:
        if (call->poisoned) {
            /* Its rounds are native sums with no frame to carry a fallback request. */
            SQZ_ERROR("out of memory for a buffer's state: the ranks cannot stay in step");
            return SQZ_ERR_NO_MEMORY;
        }
        return sqz_coll_summable(call, key);
    case SQZ_ALGO_DENSE_SWITCH: return sqz_dense_switch(call);
    case SQZ_ALGO_SPLIT_ALLGATHER: call->exact2 = 1; return sqz_coll_reduce_scatter_p2p(call);
    case SQZ_ALGO_ALLGATHER_P2P: return sqz_coll_allgather_p2p(call);
    case SQZ_ALGO_ALLGATHER: return sqz_coll_allgather(call);
    case SQZ_ALGO_REDUCE_SCATTER_P2P: return sqz_coll_reduce_scatter_p2p(call);
    default: return sqz_coll_reduce_scatter(call);
    }
}

/* The all-gather family under SQZ_ADAPT: the segmented composite, probes included. */
static sqz_status_t sqz_engine_exchange_segments(sqz_coll_call_t *call, uint64_t key)
{
    sqz_adapt_probe_t  pr     = {0};
    int                probe  = 0;
    size_t             nl     = 0;
    const sqz_layer_t *layers = NULL;
    sqz_status_t       st     = SQZ_OK;
    if (0 == call->block) {
        st = sqz_engine_segments(call->comm, call, key, &layers, &nl, &pr, &probe);
    }
    if (SQZ_OK == st) {
        st = sqz_engine_exchange(call, key);
    }
    if (SQZ_OK == st && probe) {
        st = sqz_adapt_end(call->comm, &call->bstate->adapt, call->seq, call->n, layers, nl, &pr);
    }
    return st;
}

/* The dense path of an eligible call (warm-up or an agreed fallback). */
static sqz_status_t sqz_engine_dense(sqz_comm_t *comm, const float *in, float *out, size_t n,
                                     size_t block, sqz_op_t op)
{
    if (0 == block) {
        return sqz_dense_allreduce(comm, in, out, n, op);
    }
    /* Dense reduce-scatter: the transport has an all-reduce only, into scratch that every rank
     * must hold (else every rank returns SQZ_ERR_NOT_SUPPORTED: the caller's dense
     * reduce-scatter runs). */
    const sqz_scratch_need_t need = {.chunk = n * sizeof(float)};
    SQZ_CHECK(sqz_coll_reserve(comm, &need));
    SQZ_CHECK(sqz_dense_allreduce(comm, in, comm->scratch.chunkbuf, n, op));
    memcpy(out, comm->scratch.chunkbuf + (size_t)comm->rank * block, block * sizeof(float));
    return SQZ_OK;
}

/* After the exchange: a failed one that the ranks agreed on goes dense (logged once, counted);
 * an agreed mismatch of the call sequences makes every rank learn it again. */
static sqz_status_t sqz_engine_fallback(sqz_coll_call_t *call, const float *in, float *out,
                                        sqz_op_t op, sqz_status_t st)
{
    sqz_comm_t *const comm = call->comm;
    sqz_ctx_t *const  ctx  = comm->ctx;
    if (!sqz_agreed_fallback(st)) {
        SQZ_ERROR("compressed %s failed: %s", call->block ? "reduce-scatter" : "all-reduce",
                  sqz_status_string(st));
        return st; /* the ranks did not agree: the dense path could hang */
    }
    if (SQZ_ERR_MISMATCH == st) {
        SQZ_LOG_ONCE(SQZ_LOG_ERROR, "ranks disagree on a call (different buffer sizes, call order "
                                    "or method): it goes dense and the ranks learn their call "
                                    "sequence again");
        sqz_callseq_reset(comm->seq);
    } else if (SQZ_ERR_NONFINITE == st) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "a rank's gradient holds NaN or Inf: that call goes dense "
                                   "(counted as calls_nonfinite)");
    }
    sqz_stats_record(ctx, ctx->method_index, 'f', 0, &call->cs);
    return sqz_engine_dense(comm, in, out, call->n, call->block, op);
}

/* A call this rank could not prepare (no_memory), or knows must go dense (sqz_engine_shard):
 * it takes part in the exchange with fallback frames only (every rank then goes dense together),
 * with no error feedback. */
static sqz_status_t sqz_engine_poisoned(sqz_comm_t *comm, const sqz_plan_t *plan,
                                        const float *in, float *out, size_t n, size_t block,
                                        sqz_op_t op, uint64_t seq, int no_memory)
{
    if (no_memory) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "out of memory for a buffer's state: its call goes dense on "
                                   "every rank");
    }
    sqz_coll_call_t call = {.comm = comm, .c = comm->ctx->method, .cstate = comm->cstate,
                            .cstates = comm->cstates, .in = in, .out = out, .n = n,
                            .block = block, .seq = seq, .poisoned = 1,
                            .out_is_input = ((const float *)out == in),
                            .cs = {.algo = plan->algo, .predicted = plan->predicted}};
    const sqz_status_t st = sqz_engine_exchange(&call, 0);
    if (SQZ_OK == st && SQZ_ALGO_DENSE_SWITCH == call.cs.algo) {
        /* Every rank chose the dense switch and it ran: the output is the exact sum. */
        if (SQZ_OP_AVG == op) {
            sqz_scale(out, n, 1.0f / (float)comm->nranks);
        }
        return SQZ_OK;
    }
    return sqz_engine_fallback(&call, in, out, op, SQZ_OK == st ? SQZ_ERR_INTERNAL : st);
}

/* Error feedback's buffers for a call (what it does is the plan's): what the compressor sees
 * (call->in) and the residual it updates, from the buffer's state.  \return SQZ_OK or
 * SQZ_ERR_NO_MEMORY (this rank alone). */
typedef struct sqz_engine_ef {
    float       *residual; /* ef14's working residual, or NULL */
    float       *m, *r;    /* ef21/econtrol: message and its compression residual */
    const float *dgc_unew; /* DGC: the momentum this call commits if it is compressed, or NULL */
} sqz_engine_ef_t;

static sqz_status_t sqz_engine_ef_open(sqz_coll_call_t *call, const sqz_plan_t *plan,
                                       const float *in, uint64_t key, sqz_engine_ef_t *ef)
{
    sqz_comm_t *const comm = call->comm;
    sqz_ctx_t *const  ctx  = comm->ctx;
    sqz_buf_state_t  *bs   = call->bstate;
    const size_t      n    = call->n;
    call->in               = in;
    if (plan->transform) {
        SQZ_CHECK(sqz_ef_reserve(&comm->store, bs, plan->ef));
        SQZ_CHECK(sqz_scratch_reserve((void **)&comm->scratch.efbuf, &comm->scratch.efcap,
                                      2 * n * sizeof(float)));
        ef->m = comm->scratch.efbuf, ef->r = comm->scratch.efbuf + n;
        sqz_ef_message(plan->ef, ctx->p.econtrol_eta, bs, in, ef->m, ef->r, n);
        call->in = ef->m, call->residual = ef->r, call->state = bs;
        return SQZ_OK;
    }
    if (SQZ_EF_EF14 != plan->ef) {
        return SQZ_OK;
    }
    const int fresh = NULL == bs->residual && NULL == bs->res_compact;
    SQZ_CHECK(sqz_residual_open(comm, bs, ctx->p.ef_storage, &ef->residual));
    if (fresh && SQZ_EF_STORAGE_FP32 == ctx->p.ef_storage) {
        /* A new buffer (a rebuilt DDP bucket, say): take over its layers' residuals. */
        const sqz_carry_t carry = {comm, ef->residual};
        sqz_layout_carry(comm, key, n, sqz_carry_residual, (void *)&carry);
    }
    call->residual = ef->residual, call->state = bs;
    if (plan->dgc) {
        /* DGC's clipping and momentum correction change what the compressor sees. */
        SQZ_CHECK(sqz_scratch_reserve((void **)&comm->scratch.efbuf, &comm->scratch.efcap,
                                      sqz_dgc_scratch(&ctx->p, n) * sizeof(float)));
        SQZ_CHECK(sqz_dgc_input(&ctx->p, comm->nranks, &comm->store, bs, in, comm->scratch.efbuf,
                                &ef->dgc_unew, n));
        call->in = comm->scratch.efbuf;
    }
    return SQZ_OK;
}

/* The exact gradients of a warm-up call initialize ef21/econtrol's estimators, on every rank or
 * on none: G (H) is the output, so a rank whose estimators were left out would return other
 * values from then on.  A rank without memory for them sums its input as it is, and the ranks
 * agree afterwards whether every one could. */
static sqz_status_t sqz_engine_warmup_transform(sqz_comm_t *comm, sqz_buf_state_t *bs, int mode,
                                                const float *in, float *out, size_t n, sqz_op_t op)
{
    /* (the input is kept in scratch: out may be the input) */
    const int ready = SQZ_OK == sqz_ef_reserve(&comm->store, bs, mode) &&
                      SQZ_OK == sqz_scratch_reserve((void **)&comm->scratch.efbuf,
                                                    &comm->scratch.efcap, n * sizeof(float));
    if (ready) {
        memcpy(comm->scratch.efbuf, in, n * sizeof(float));
    }
    SQZ_CHECK(sqz_dense_allreduce(comm, ready ? comm->scratch.efbuf : in, out, n, SQZ_OP_SUM));
    const int all = sqz_coll_agree(comm, ready);
    if (all < 0) {
        return SQZ_ERR_TRANSPORT;
    }
    if (all) {
        sqz_ef_dense(mode, bs, comm->scratch.efbuf, out, n);
    } else {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "a rank is out of memory for ef21/econtrol's estimators at a "
                                   "warm-up call: every rank starts them from zero");
        sqz_ef_clear(bs, n);
    }
    if (SQZ_OP_AVG == op) {
        sqz_scale(out, n, 1.0f / (float)comm->nranks);
    }
    return SQZ_OK;
}

/* Damped error feedback (SQZ_EF_DECAY): the worker residual and this rank's server residual
 * keep `decay` of themselves for the next call. */
static void sqz_engine_damp(sqz_buf_state_t *bs, float *residual, size_t n, float decay)
{
    sqz_scale(residual, n, decay);
    if (bs->server_residual) {
        sqz_scale(bs->server_residual, bs->server_count, decay);
    }
}

/* Flags of one run: the optimizer-side collective (sqz_ef_allreduce) keeps classic two-level
 * error feedback whatever SQZ_EF says, and has no warm-up: the optimizer decides when to
 * compress.  A hierarchy's shard (sqz_engine_shard) may have to go dense by what another shard
 * holds (SQZ_RUN_DENSE), and is named by its input, the caller's buffer (SQZ_RUN_NAMED_BY_IN). */
enum { SQZ_RUN_OPTIMIZER = 1, SQZ_RUN_DENSE = 2, SQZ_RUN_NAMED_BY_IN = 4 };

/* A call's plan (sqz_policy_plan): decided after the communicator's one-time collective steps,
 * before the call's state is looked up. */
static sqz_status_t sqz_engine_plan(sqz_comm_t *comm, size_t n, size_t block, sqz_op_t op,
                                    uint64_t key, int opt, sqz_plan_t *plan)
{
    SQZ_CHECK(sqz_comm_check_settings(comm));
    SQZ_CHECK(sqz_policy_calibrate(comm));
    const sqz_call_facts_t facts = {.count = n, .block = block, .dtype = SQZ_DTYPE_FLOAT32,
                                    .op = op, .memory = SQZ_MEMORY_HOST, .opt = opt, .key = key};
    *plan = sqz_policy_plan(comm, &facts);
    return SQZ_OK;
}

/* After the exchange of a compressed call (st its status): classic error feedback's residual
 * closes (DGC's momentum committed and the residual damped when the exchange ran; restored on a
 * fallback). */
static void sqz_engine_ef_close(sqz_comm_t *comm, const sqz_plan_t *plan, sqz_buf_state_t *bs,
                                const sqz_engine_ef_t *ef, size_t n, sqz_status_t st)
{
    sqz_ctx_t *const ctx = comm->ctx;
    if (NULL == ef->residual || !(SQZ_OK == st || sqz_agreed_fallback(st))) {
        return;
    }
    if (SQZ_OK == st && plan->dgc) {
        sqz_dgc_commit(&ctx->p, bs, ef->dgc_unew, ef->residual, n);
    }
    if (SQZ_OK == st && plan->damp) {
        sqz_engine_damp(bs, ef->residual, n, ctx->ef_decay);
    }
    sqz_residual_close(bs, ctx->p.ef_storage, ef->residual);
}

/* ---------------------------------------------------------------------------------------------
 * The host memory backend of the runner (sqz_runner.h)
 * ------------------------------------------------------------------------------------------- */

/* One call of host buffers: its arguments, then what the runner's steps find and make. */
typedef struct sqz_host_run {
    sqz_comm_t      *comm;
    const float     *in;
    float           *out;
    size_t           n, block;
    sqz_op_t         op;
    uint64_t         key;
    unsigned         flags;
    sqz_buf_state_t *bs;
    uint64_t         seq;
    sqz_engine_ef_t  ef;
    sqz_coll_call_t  coll;
} sqz_host_run_t;

static sqz_status_t sqz_host_state(void *arg, const sqz_plan_t *plan, sqz_buf_state_t **bs,
                                   uint64_t *seq)
{
    sqz_host_run_t *const r = arg;
    /* (an intercepted call's buffer is named by its address: the output's, or the input's where
     * the output is scratch) */
    const void *named = (r->flags & SQZ_RUN_NAMED_BY_IN) ? (const void *)r->in
                                                          : (const void *)r->out;
    SQZ_CHECK(sqz_engine_state(r->comm, plan, r->key, r->n, r->block, named, bs, seq));
    sqz_comm_account_state(r->comm, r->comm->store.bytes);
    r->bs = *bs, r->seq = *seq;
    return SQZ_OK;
}

static int sqz_host_path(void *arg, const sqz_plan_t *plan)
{
    const sqz_host_run_t *const r = arg;
    if (plan->warm) {
        return SQZ_RUN_WARMUP;
    }
    /* (after the warm-up, whose calls are dense alike).  A summable exchange has no frame to
     * carry the request: it runs, and the NaN that made the request travels in its sums, where
     * every rank sees it (reduce() returns SQZ_ERR_NONFINITE on every rank). */
    return (r->flags & SQZ_RUN_DENSE) && SQZ_ALGO_SUMMABLE != plan->algo ? SQZ_RUN_FALLBACK
                                                                           : SQZ_RUN_COMPRESS;
}

/* The warm-up (its exact gradients initialize ef21/econtrol's estimators), or the exchange with
 * fallback frames that every rank then sends dense (sqz_engine_poisoned). */
static sqz_status_t sqz_host_dense(void *arg, const sqz_plan_t *plan, int path)
{
    sqz_host_run_t *const r    = arg;
    sqz_comm_t *const     comm = r->comm;
    sqz_ctx_t *const      ctx  = comm->ctx;
    if (SQZ_RUN_WARMUP != path) {
        return sqz_engine_poisoned(comm, plan, r->in, r->out, r->n, r->block, r->op, r->seq,
                                   SQZ_RUN_NO_STATE == path);
    }
    sqz_stats_record(ctx, ctx->method_index, 'w', 0, NULL);
    if (plan->transform) {
        return sqz_engine_warmup_transform(comm, r->bs, plan->ef, r->in, r->out, r->n, r->op);
    }
    return sqz_engine_dense(comm, r->in, r->out, r->n, r->block, r->op);
}

static sqz_status_t sqz_host_open(void *arg, const sqz_plan_t *plan)
{
    sqz_host_run_t *const r   = arg;
    sqz_ctx_t *const      ctx = r->comm->ctx;
    r->coll = (sqz_coll_call_t){
        .comm = r->comm, .c = ctx->method, .cstate = r->comm->cstate, .cstates = r->comm->cstates,
        .out = r->out, .n = r->n, .block = r->block, .bstate = r->bs, .seq = r->seq,
        /* A reduce-scatter's output block is the start of an in-place input as well. */
        .out_is_input = ((const float *)r->out == r->in),
        .cs = {.algo = plan->algo, .predicted = plan->predicted},
    };
    /* (what fails here is this rank's memory) */
    sqz_status_t st = sqz_engine_ef_open(&r->coll, plan, r->in, r->key, &r->ef);
    const int    sra = SQZ_ALGO_REDUCE_SCATTER == plan->algo ||
                    SQZ_ALGO_REDUCE_SCATTER_P2P == plan->algo;
    if (SQZ_OK == st && sra && 0 == r->block && r->coll.state) {
        st = sqz_rs_reserve_server(&r->coll);
    }
    return SQZ_OK == st ? SQZ_OK : SQZ_ERR_NO_MEMORY;
}

static sqz_status_t sqz_host_exchange(void *arg, const sqz_plan_t *plan)
{
    sqz_host_run_t *const r = arg;
    (void)plan; /* (r->coll carries its algorithm) */
    const double       t0 = sqz_time_now();
    const sqz_status_t st = r->comm->segs ? sqz_engine_exchange_segments(&r->coll, r->key)
                                          : sqz_engine_exchange(&r->coll, r->key);
    r->coll.cs.t_exchange = sqz_time_now() - t0;
    return st;
}

static sqz_status_t sqz_host_close(void *arg, const sqz_plan_t *plan, sqz_status_t st)
{
    sqz_host_run_t *const r    = arg;
    sqz_comm_t *const     comm = r->comm;
    sqz_ctx_t *const      ctx  = comm->ctx;
    sqz_engine_ef_close(comm, plan, r->bs, &r->ef, r->n, st);
    sqz_comm_account_state(comm, comm->store.bytes);
    if (SQZ_OK != st) {
        return sqz_engine_fallback(&r->coll, r->in, r->out, r->op, st);
    }
    if (plan->transform) {
        sqz_ef_commit(plan->ef, ctx->p.econtrol_eta, r->bs, r->ef.m, r->ef.r, r->out, r->out,
                      r->n);
    }
    if (SQZ_OP_AVG == r->op) {
        sqz_scale(r->out, r->block ? r->block : r->n, 1.0f / (float)comm->nranks);
    }
    sqz_stats_record(ctx, ctx->method_index, r->coll.cs.exact ? 'w' : 'c', r->n * sizeof(float),
                     &r->coll.cs);
    return SQZ_OK;
}

static const sqz_run_backend_t sqz_host_backend = {
    .state = sqz_host_state, .path = sqz_host_path, .dense = sqz_host_dense,
    .open = sqz_host_open, .exchange = sqz_host_exchange, .close = sqz_host_close,
};

static sqz_status_t sqz_engine_run(sqz_comm_t *comm, const float *in, float *out, size_t n,
                                   size_t block, sqz_op_t op, uint64_t key, unsigned flags)
{
    const int  opt = 0 != (flags & SQZ_RUN_OPTIMIZER);
    sqz_plan_t plan;
    SQZ_CHECK(sqz_engine_plan(comm, n, block, op, key, opt, &plan));
    sqz_host_run_t r = {.comm = comm, .in = in, .out = out, .n = n, .block = block, .op = op,
                        .key = key, .flags = flags};
    return sqz_run_call(comm, &sqz_host_backend, &r, &plan, opt);
}

/* The settings check at a communicator's first call, before anything reads the settings:
 * eligibility first of all (a rank with another SQZ_MIN_BYTES would otherwise pass a call through
 * while the others compress it, or enter the check alone). */
static sqz_status_t sqz_comm_checked(sqz_comm_t *comm)
{
    pthread_mutex_lock(&comm->lock);
    const sqz_status_t st = sqz_comm_check_settings(comm);
    pthread_mutex_unlock(&comm->lock);
    return st;
}

sqz_status_t sqz_allreduce(sqz_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                           sqz_dtype_t dtype, sqz_op_t op, uint64_t key)
{
    if (NULL == comm || NULL == recvbuf) {
        return SQZ_ERR_INVALID_PARAM;
    }
    SQZ_CHECK(sqz_comm_checked(comm));
    const float *in = sendbuf ? (const float *)sendbuf : (const float *)recvbuf;
    if (comm->hier) {
        return SQZ_DTYPE_FLOAT32 == dtype && (SQZ_OP_SUM == op || SQZ_OP_AVG == op)
                   ? sqz_hier_allreduce(comm, in, recvbuf, count, op, key)
                   : SQZ_ERR_NOT_SUPPORTED;
    }
    pthread_mutex_lock(&comm->lock);
    sqz_status_t st;
    if (!sqz_comm_eligible(comm, count, dtype, op)) {
        sqz_comm_count_passthrough(comm);
        st = (SQZ_DTYPE_FLOAT32 == dtype) ? sqz_dense_allreduce(comm, in, recvbuf, count, op)
                                          : SQZ_ERR_NOT_SUPPORTED;
    } else {
        st = sqz_engine_run(comm, in, recvbuf, count, 0, op, key, 0);
    }
    pthread_mutex_unlock(&comm->lock);
    return st;
}

sqz_status_t sqz_engine_shard(sqz_comm_t *comm, const float *in, float *out, size_t n,
                              size_t block, uint64_t key, int eligible, int dense)
{
    pthread_mutex_lock(&comm->lock);
    sqz_status_t st;
    if (!eligible) {
        sqz_comm_count_passthrough(comm);
        st = block ? SQZ_ERR_NOT_SUPPORTED : sqz_dense_allreduce(comm, in, out, n, SQZ_OP_SUM);
    } else {
        /* (an all-reduce's shard is named by its input, in the caller's buffer; a
         * reduce-scatter's by its output, the caller's block) */
        st = sqz_engine_run(comm, in, out, n, block, SQZ_OP_SUM, key,
                            (block ? 0 : SQZ_RUN_NAMED_BY_IN) | (dense ? SQZ_RUN_DENSE : 0));
    }
    pthread_mutex_unlock(&comm->lock);
    return st;
}

sqz_status_t sqz_reduce_scatter_block(sqz_comm_t *comm, const void *sendbuf, void *recvbuf,
                                      size_t recvcount, sqz_dtype_t dtype, sqz_op_t op,
                                      uint64_t key)
{
    if (NULL == comm || NULL == recvbuf) {
        return SQZ_ERR_INVALID_PARAM;
    }
    SQZ_CHECK(sqz_comm_checked(comm));
    const size_t n  = recvcount * (size_t)comm->nranks;
    const float *in = sendbuf ? (const float *)sendbuf : (const float *)recvbuf;
    if (comm->hier) {
        /* (eligible by the column each rank exchanges between hosts: recvcount x hosts) */
        if (!sqz_comm_eligible_as(comm, n, dtype, op, 1)) {
            sqz_comm_count_passthrough(comm);
            return SQZ_ERR_NOT_SUPPORTED;
        }
        return sqz_hier_reduce_scatter_block(comm, in, recvbuf, recvcount, op, key);
    }
    pthread_mutex_lock(&comm->lock);
    sqz_status_t st;
    if (!sqz_comm_eligible_as(comm, n, dtype, op, 1)) {
        sqz_comm_count_passthrough(comm);
        st = SQZ_ERR_NOT_SUPPORTED; /* the caller runs its own dense reduce-scatter */
    } else {
        st = sqz_engine_run(comm, in, recvbuf, n, recvcount, op, key, 0);
    }
    pthread_mutex_unlock(&comm->lock);
    return st;
}

sqz_status_t sqz_ef_allreduce(sqz_comm_t *comm, void *buf, size_t count, sqz_dtype_t dtype,
                              sqz_op_t op, uint64_t key, void *stream)
{
    if (NULL == comm || NULL == buf || 0 == key || (SQZ_OP_SUM != op && SQZ_OP_AVG != op)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (comm->hier) {
        return SQZ_ERR_NOT_SUPPORTED; /* (a hierarchical communicator is for sqz_allreduce) */
    }
    if (comm->ctx->ef14_diverges) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN,
                     "sqz_ef_allreduce with SQZ_METHOD=%s: the optimizer-side collective keeps "
                     "classic error feedback, which is known to diverge with this method "
                     "(docs/methods.md); compress momentum with sign or quant",
                     comm->ctx->method->name);
    }
    if (stream || comm->gpu) {
        return comm->device
                   ? comm->device->ef_allreduce(comm, buf, count, dtype, op, key, stream)
                   : SQZ_ERR_NOT_SUPPORTED;
    }
    if (SQZ_DTYPE_FLOAT32 != dtype) {
        return SQZ_ERR_NOT_SUPPORTED; /* host buffers are float32 */
    }
    if (0 == count) {
        return SQZ_OK;
    }
    pthread_mutex_lock(&comm->lock);
    sqz_status_t st;
    if (!sqz_comm_method_takes(comm, count, SQZ_DTYPE_FLOAT32, op, SQZ_MEMORY_HOST, 0)) {
        sqz_comm_count_passthrough(comm);
        st = sqz_dense_allreduce(comm, buf, buf, count, op);
    } else {
        st = sqz_engine_run(comm, buf, buf, count, 0, op, key, SQZ_RUN_OPTIMIZER);
    }
    pthread_mutex_unlock(&comm->lock);
    return st;
}

void sqz_ef_forget(sqz_comm_t *comm, uint64_t key)
{
    if (NULL == comm || 0 == key) {
        return;
    }
    pthread_mutex_lock(&comm->lock);
    if (comm->device) {
        comm->device->ef_forget(comm, key);
    }
    sqz_state_drop(&comm->store, key);
    sqz_comm_account_state(comm, comm->store.bytes);
    pthread_mutex_unlock(&comm->lock);
}
