/* The summable exchange (SQZ_EXCHANGE_SUMMABLE, PowerSGD): the compressor runs the call itself
 * through rounds of the transport's exact SUM all-reduce (sqz_reduce_args_v1_t).  The engine
 * provides the layout, the per-buffer memory, the levels and probes of layer-adaptive selection,
 * and the timing.  Sums are identical on every rank, so the output is bit-identical everywhere,
 * and a non-finite input shows in them on every rank: the fallback is agreed without a flag. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "adapt/sqz_adapt.h"
#include "core/sqz_log.h"
#include "sqz_coll.h"

typedef struct sqz_summable_ctx {
    sqz_comm_t *comm;
    double      t_comm;
    size_t      rounds;
} sqz_summable_ctx_t;

static int sqz_summable_sum(void *arg, float *buf, size_t n)
{
    sqz_summable_ctx_t *c  = arg;
    const double        t0 = sqz_time_now();
    const int rc = c->comm->t.allreduce_f32_sum(c->comm->t.self, buf, buf, n);
    c->t_comm += sqz_time_now() - t0;
    c->rounds++;
    return rc;
}

_Static_assert(sizeof(sqz_layer_t) == sizeof(sqz_matrix_v1_t) &&
                   offsetof(sqz_layer_t, rows) == offsetof(sqz_matrix_v1_t, rows) &&
                   offsetof(sqz_layer_t, cols) == offsetof(sqz_matrix_v1_t, cols) &&
                   offsetof(sqz_layer_t, id) == offsetof(sqz_matrix_v1_t, id),
               "sqz_layer_t and sqz_matrix_v1_t must share one layout");

sqz_status_t sqz_coll_summable(sqz_coll_call_t *call, uint64_t key)
{
    sqz_comm_t *const          comm = call->comm;
    const sqz_compressor_v1_t *c    = call->c;
    sqz_buf_state_t *const     b    = call->bstate;
    size_t                     nl   = 0;
    uint64_t                   digest;
    const sqz_layer_t *layers = sqz_layout_resolve(comm, key, call->n, &nl, &digest);
    if (NULL == layers && call->n > 0) {
        return SQZ_ERR_NO_MEMORY;
    }
    /* Per-buffer memory for this layout (warm starts): reset when the layout changes. */
    const sqz_matrix_v1_t *ml = (const sqz_matrix_v1_t *)layers;
    if (NULL == b->plugin_state || b->layout != digest) {
        const size_t len = c->bufstate_len(call->cstate, ml, nl, call->n);
        float       *st  = calloc(len ? len : 1, sizeof(float));
        if (NULL == st) {
            return SQZ_ERR_NO_MEMORY;
        }
        free(b->plugin_state);
        b->plugin_state = st;
        b->plugin_len   = len;
        b->layout       = digest;
        sqz_state_account(&comm->store, b);
    }
    sqz_adapt_probe_t pr    = {0};
    const int         probe = sqz_adapt_begin(comm, &b->adapt, call->seq, nl, &pr);
    if (probe < 0) {
        return (sqz_status_t)probe;
    }
    /* A reduce-scatter's output is one block: the whole sum is formed in scratch. */
    float *out = call->out;
    if (call->block) {
        const sqz_scratch_need_t need = {.chunk = sqz_coll_dense_scratch(call)};
        SQZ_CHECK(sqz_coll_reserve(comm, &need));
        out = comm->scratch.chunkbuf;
    }
    sqz_summable_ctx_t   sc = {.comm = comm};
    sqz_reduce_args_v1_t a  = {
         .size          = sizeof(a),
         .in            = call->in,
         .residual      = call->residual,
         .out           = out,
         .n             = call->n,
         .seq           = call->seq,
         .layers        = ml,
         .nlayers       = nl,
         .bufstate      = b->plugin_state,
         .levels        = (b->adapt.levels && b->adapt.n == nl) ? b->adapt.levels : NULL,
         .probe         = probe ? pr.cand : NULL,
         .nprobe        = probe ? pr.ncand : 0,
         .probe_err     = probe ? pr.err : NULL,
         .probe_norm    = probe ? pr.norm : NULL,
         .allreduce_sum = sqz_summable_sum,
         .allreduce_arg = &sc,
    };
    const double       t0 = sqz_time_now();
    const sqz_status_t st = c->reduce(call->cstate, &a);
    call->cs.t_comm       = sc.t_comm;
    call->cs.t_compress   = sqz_time_now() - t0 - sc.t_comm;
    call->cs.bytes_wire   = a.bytes_wire;
    /* A ring all-reduce sends 2 (P - 1) / P of its message. */
    call->cs.bytes_sent = 2 * (size_t)(comm->nranks - 1) * a.bytes_wire / (size_t)comm->nranks;
    call->cs.norm2_in   = a.norm2_in;
    call->cs.norm2_err  = a.norm2_err;
    call->cs.nonfinite  = SQZ_ERR_NONFINITE == st;
    call->cs.exact      = a.exact;
    if (SQZ_OK != st) {
        return st;
    }
    if (call->block) {
        memcpy(call->out, out + (size_t)comm->rank * call->block, call->block * sizeof(float));
    }
    if (probe && a.probed) {
        SQZ_CHECK(sqz_adapt_end(comm, &b->adapt, call->seq, b->count, layers, nl, &pr));
    }
    return SQZ_OK;
}
