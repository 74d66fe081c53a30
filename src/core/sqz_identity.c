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
