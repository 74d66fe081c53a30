#include "config.h"

#include <stdlib.h>

#include "sqz_callseq.h"
#include "sqz_identity.h"
#include "sqz_log.h"

/* Calls between two sweeps for stale slots. */
#define SQZ_EVICT_EVERY 64

uint64_t sqz_identity_sig(size_t count, sqz_dtype_t dtype, int reduce_scatter)
{
    return sqz_hash64(sqz_hash64((uint64_t)count) ^ ((uint64_t)dtype << 8) ^
                      (uint64_t)(reduce_scatter != 0));
}

sqz_status_t sqz_comm_allgather_fixed(sqz_comm_t *comm, const void *mine, size_t bytes, void *all)
{
    const int P  = comm->nranks;
    size_t   *rb = calloc(2 * (size_t)P, sizeof(size_t));
    if (NULL == rb) {
        return SQZ_ERR_NO_MEMORY;
    }
    for (int r = 0; r < P; r++) {
        rb[r]     = bytes;
        rb[P + r] = (size_t)r * bytes;
    }
    const int rc = comm->t.allgatherv(comm->t.self, mine, bytes, all, rb, rb + P);
    free(rb);
    return 0 == rc ? SQZ_OK : SQZ_ERR_TRANSPORT;
}

sqz_status_t sqz_comm_agree_u64(sqz_comm_t *comm, uint64_t mine, int *same)
{
    const int P = comm->nranks;
    *same       = 1;
    if (P < 2) {
        return SQZ_OK;
    }
    uint64_t *all = calloc((size_t)P, sizeof(uint64_t));
    if (NULL == all) {
        return SQZ_ERR_NO_MEMORY;
    }
    const sqz_status_t st = sqz_comm_allgather_fixed(comm, &mine, sizeof(mine), all);
    for (int r = 0; SQZ_OK == st && r < P; r++) {
        *same &= all[r] == mine;
    }
    free(all);
    return st;
}

void sqz_identity_count(sqz_comm_t *comm, uint64_t dropped, uint64_t evicted)
{
    if (0 == dropped && 0 == evicted) {
        return;
    }
    sqz_ctx_t *ctx = comm->ctx;
    pthread_mutex_lock(&ctx->lock);
    ctx->residuals_dropped += dropped;
    ctx->state_evictions += evicted;
    pthread_mutex_unlock(&ctx->lock);
}

sqz_status_t sqz_identity_place(sqz_comm_t *comm, uint64_t sig, const void *addr,
                                sqz_call_identity_t *id)
{
    sqz_seq_place_t pl;
    *id                = (sqz_call_identity_t){.automatic = 1};
    const sqz_status_t st = sqz_callseq_place(comm->seq, sig, (uintptr_t)addr, &pl);
    if (SQZ_OK != st) {
        return st;
    }
    if (pl.refine) {
        /* A period was found (the same call on every rank): agree on its refinement. */
        int                same = 0;
        const sqz_status_t ast  = sqz_comm_agree_u64(comm, pl.local_period, &same);
        if (SQZ_ERR_TRANSPORT == ast) {
            return ast;
        }
        SQZ_CHECK(sqz_callseq_refine(comm->seq, SQZ_OK == ast && same ? pl.local_period : 0, &pl));
        SQZ_DEBUG("call sequence: period %llu", (unsigned long long)sqz_callseq_period(comm->seq));
    }
    id->key             = pl.slot->id;
    id->seq             = pl.seq;
    id->fresh           = pl.fresh;
    id->heir_of         = pl.heir_of;
    id->uncertain       = pl.fresh && pl.has_kin && 0 == pl.heir_of;
    id->moved_ambiguous = pl.moved_ambiguous;
    id->sweep           = pl.established || 0 == sqz_callseq_now(comm->seq) % SQZ_EVICT_EVERY;
    return SQZ_OK;
}

void sqz_identity_sweep(sqz_comm_t *comm, void (*evict)(void *arg, uint64_t id), void *arg)
{
    sqz_identity_count(comm, 0, sqz_callseq_evict(comm->seq, evict, arg));
}

/* sqz_identity_sweep's eviction callback: a stale slot's state goes. */
static void sqz_call_state_evict_slot(void *arg, uint64_t id)
{
    sqz_state_drop(&((sqz_comm_t *)arg)->store, id);
}

/* q's ready hook on *bs; a state the ranks agreed to drop goes (*bs NULL). */
static sqz_status_t sqz_call_state_ready(sqz_comm_t *comm, const sqz_state_query_t *q,
                                         sqz_buf_state_t **bs)
{
    const sqz_status_t st = q->ready ? q->ready(q->ready_arg, *bs) : SQZ_OK;
    if (SQZ_ERR_NO_MEMORY == st && *bs) {
        sqz_state_discard(&comm->store, *bs);
        *bs = NULL;
    }
    return SQZ_ERR_NO_MEMORY == st ? SQZ_OK : st;
}

/* The state of an intercepted call (key 0): its call-sequence slot, with the local repairs the
 * identity asks for (an heir's residual taken over, an ambiguous one dropped). */
static sqz_status_t sqz_call_state_slot(sqz_comm_t *comm, const sqz_state_query_t *q,
                                        sqz_buf_state_t **bs, uint64_t *seq, uint64_t *dropped)
{
    sqz_call_identity_t id;
    SQZ_CHECK(sqz_identity_place(comm, q->sig, q->addr, &id));
    *seq                       = id.seq;
    const sqz_buf_state_t *had = sqz_state_find(&comm->store, id.key, q->count);
    *bs                        = sqz_state_get(&comm->store, id.key, q->count, 1);
    SQZ_CHECK(sqz_call_state_ready(comm, q, bs));
    if (NULL == *bs) {
        return SQZ_ERR_NO_MEMORY;
    }
    sqz_buf_state_t *heir = id.heir_of && !q->shared
                                ? sqz_state_find(&comm->store, id.heir_of, q->count)
                                : NULL;
    if (heir) {
        (void)sqz_state_inherit(&comm->store, *bs, heir);
    } else if (id.uncertain || (NULL == had && !id.fresh)) {
        *dropped += 1; /* a buffer of this size had a residual that nobody can claim for sure */
    }
    if (id.moved_ambiguous && sqz_state_forget_local(&comm->store, *bs)) {
        *dropped += 1;
    }
    if (id.sweep) {
        /* (*bs is a live slot's: the sweep frees stale ones only, each state on its own) */
        sqz_identity_sweep(comm, sqz_call_state_evict_slot, comm);
    }
    return SQZ_OK;
}

sqz_status_t sqz_call_state(sqz_comm_t *comm, const sqz_state_query_t *q, sqz_buf_state_t **bs,
                            uint64_t *seq)
{
    uint64_t     dropped = 0;
    sqz_status_t st      = SQZ_OK;
    *bs  = NULL;
    *seq = 0;
    if (q->key) {
        comm->store.tick++;
        *bs = sqz_state_get(&comm->store, q->key, q->count, 0);
        st  = sqz_call_state_ready(comm, q, bs);
        if (*bs) {
            *seq = (*bs)->calls++; /* (after ready: a checkpoint may have set the counter) */
        }
    } else {
        st = sqz_call_state_slot(comm, q, bs, seq, &dropped);
        st = SQZ_ERR_TRANSPORT == st ? st : SQZ_OK; /* no memory: poisoned, not failed */
    }
    const size_t evicted = sqz_state_evict(&comm->store, comm->ctx->p.state_max_bytes, *bs);
    sqz_identity_count(comm, dropped, evicted);
    return st;
}
