/* Which logical buffer a call belongs to, the same answer on every rank: the caller's API key, or
 * the call's position in its communicator's call sequence (sqz_callseq.h) for intercepted calls,
 * which name nothing but an address.  Both engines (host and device buffers) ask here, so that a
 * buffer's state follows it whatever the allocators of the ranks do. */
#ifndef SQZ_IDENTITY_H
#define SQZ_IDENTITY_H

#include "sqz_ctx.h"

/** The identity of one call. */
typedef struct sqz_call_identity {
    uint64_t key;             /* the state's key: the API key, or the slot id */
    int      automatic;       /* key is a call-sequence slot */
    uint64_t seq;             /* the buffer's call counter (automatic keys; identical on every rank) */
    int      fresh;           /* a slot seen for the first time: its state starts empty */
    uint64_t heir_of;         /* fresh: a slot whose local state this rank may take over, or 0 */
    int      uncertain;       /* fresh with kin and no heir: a residual of an earlier buffer of
                                 this signature may have been this one's (counted as dropped) */
    int      moved_ambiguous; /* this rank must not apply the slot's local state (see
                                 sqz_callseq.h) */
    int      sweep;           /* stale slots are due: call sqz_identity_sweep once heir_of's
                                 state has been taken over */
} sqz_call_identity_t;

/** The signature of an intercepted call: what every rank knows of it. */
uint64_t sqz_identity_sig(size_t count, sqz_dtype_t dtype, int reduce_scatter);

/** Identifies a call with key 0 by the call sequence of comm (comm->lock held).  Collective when
 *  the sequence asks for an agreement (every rank reaches it at the same call).  \return SQZ_OK,
 *  SQZ_ERR_NO_MEMORY (this rank alone: the call must still take part in the exchange) or
 *  SQZ_ERR_TRANSPORT. */
sqz_status_t sqz_identity_place(sqz_comm_t *comm, uint64_t sig, const void *addr,
                                sqz_call_identity_t *id);

/** When id->sweep is set, after the caller has taken over the state of id->heir_of (a slot the
 *  sweep may free: which slots go is decided from signatures alone, the same on every rank, so a
 *  stable buffer's state must have moved first): hands every stale slot to evict(arg, slot id),
 *  which frees its state. */
void sqz_identity_sweep(sqz_comm_t *comm, void (*evict)(void *arg, uint64_t id), void *arg);

/** What the state of a call is looked up by (sqz_call_state). */
typedef struct sqz_state_query {
    uint64_t    key;    /* the caller's key, or 0: the call sequence names the buffer */
    size_t      count;  /* elements */
    uint64_t    sig;    /* key 0: sqz_identity_sig of the call */
    const void *addr;   /* key 0: the address that names the buffer on this rank */
    int         shared; /* its state must be the same on every rank (ef21 / econtrol's
                           estimators, PowerSGD's device state): nothing of it follows an address
                           from an heir */
    /* Called once the state is found or made and before an heir's state is taken over (NULL:
     * nothing), at the same call on every rank, with the state or NULL (this rank could not make
     * one): where a backend attaches its memory to a new state (its ranks agreeing on it).
     * \return SQZ_OK; SQZ_ERR_NO_MEMORY, answered alike on every rank (agreed), to drop the
     * state everywhere (the call then has none: dense on every rank); SQZ_ERR_TRANSPORT (the
     * agreement failed: the ranks are out of step). */
    sqz_status_t (*ready)(void *arg, sqz_buf_state_t *bs);
    void        *ready_arg;
} sqz_state_query_t;

/** The state of one call in comm->store and its counter, identical on every rank: by the
 *  caller's key (the state's own counter), or by the call sequence, with the local repairs the
 *  identity asks for (an heir's local state taken over unless q->shared, an ambiguous one
 *  dropped, stale slots swept); then the store kept within SQZ_STATE_MAX_BYTES (the call's
 *  state kept).  Both engines' one lookup (comm->lock held; a keyed call advances the store's
 *  tick, the clock of its stale rule).  *bs is
 *  NULL when this rank could not make it (the call must still take part in the exchange, so
 *  that all ranks go dense together).  \return SQZ_OK or SQZ_ERR_TRANSPORT (an agreement failed,
 *  q->ready's included). */
sqz_status_t sqz_call_state(sqz_comm_t *comm, const sqz_state_query_t *q, sqz_buf_state_t **bs,
                            uint64_t *seq);

/** Every rank's `bytes` bytes at `mine` into all[r * bytes] (collective: one all-gather).
 *  \return SQZ_OK, SQZ_ERR_NO_MEMORY or SQZ_ERR_TRANSPORT. */
sqz_status_t sqz_comm_allgather_fixed(sqz_comm_t *comm, const void *mine, size_t bytes, void *all);

/** Whether every rank of comm proposes `mine` (collective: one all-gather of 8 bytes a rank).
 *  \return SQZ_OK with *same set, or SQZ_ERR_NO_MEMORY / SQZ_ERR_TRANSPORT. */
sqz_status_t sqz_comm_agree_u64(sqz_comm_t *comm, uint64_t mine, int *same);

/** Counts identity events in the context's stats (comm->lock held): dropped residuals and states
 *  freed. */
void sqz_identity_count(sqz_comm_t *comm, uint64_t dropped, uint64_t evicted);

#endif
