/* The call sequence of a communicator: which logical buffer an intercepted call belongs to.
 *
 * An intercepted all-reduce carries no name, only a receive address, a count, a dtype and an op.
 * Addresses are no identity: allocators move buffers between steps (torch.cat of gradients,
 * FSDP's caching allocator, malloc/free churn) and hand one buffer's memory to another, each
 * rank's allocator differently.  What every rank shares is the sequence of calls: a training step
 * makes the same collectives in the same order, step after step.  So a call's logical buffer (its
 * "slot") is its position in the repeating pattern of call signatures (count, dtype, op, kind),
 * found by the same deterministic procedure on every rank from the same signatures: every rank
 * derives the same slot for the same call whatever its allocator does, and the state of a slot
 * (call counter, residual, estimators) follows the buffer.
 *
 * How the pattern is found (per communicator):
 *  - learning: until a period is known every call gets a fresh slot.  A period P is proposed when
 *    the last L calls are P-periodic in signature, L = max(2P, half the calls of the episode),
 *    the smallest such P: a pattern must repeat twice and outweigh what came before it (the first
 *    step of a DDP job, whose buckets are rebuilt after it, or a run of one size inside a longer
 *    step that only looks periodic).
 *  - confirmation: each rank looks at its own addresses over the calls P explains: if
 *    (signature, address) repeats with a period m P (m <= 16), its buffers are stable and there
 *    are m P of them a period (a size reduced K times a step has period 1 in signatures and K in
 *    addresses).  The ranks agree (sqz_callseq_refine: the engine exchanges one number per rank,
 *    at a call every rank identifies alike).  When all confirm the same m P, it is the period at
 *    once.  Otherwise (addresses that move, ranks that differ) P is accepted only once it explains
 *    SQZ_SEQ_MIN_EVIDENCE calls, and a rank whose addresses said otherwise drops its local state
 *    whenever a slot's address moves (never adds one buffer's residual to another's).
 *  - steady state: the last period is a template of P slots and a cursor.  A call that matches
 *    the template takes its slot; a call that matches the next entry (one call of the step was
 *    skipped) takes that; anything else is irregular and takes the irregular slot of its
 *    signature.  More than one miss in 32 calls (over max(64, 4 P) calls) ends the template:
 *    learning again (a periodic extra call then becomes part of the period).
 *
 * A fresh slot starts its call counter where the slot of the call one proposed period back is (a
 * buffer keeps counting while its pattern is confirmed), or, with no proposal, at the number of
 * earlier calls of its signature (agreed either way); and it may take over, on
 * this rank only, the local state (ef14 residual, DGC momentum) of a live slot of the same
 * signature whose last call used the same address: stable buffers lose nothing while the pattern
 * is learned.
 *
 * Memory: a slot not used within the horizon (2 P calls, at least 64; half the episode while
 * learning), and under a template every slot of the learning phase that it did not take, is
 * stale: sqz_callseq_evict hands it to the engine, which frees its state.  While a proposed
 * period waits for evidence, each signature keeps at most twice as many learning slots as the
 * proposal has calls of it: the oldest go (their residuals are dropped, never applied elsewhere;
 * a stable buffer's were taken over by address already), so that learning costs at most twice
 * the live set even for one large buffer reduced over and over at new addresses.  This is
 * decided from signatures alone, like everything that frees records: slot ids stay the same on
 * every rank.
 *
 * Everything here is deterministic in the signatures (identical on every rank) except the address
 * hints, which only ever touch state that lives on this rank alone.
 */
#ifndef SQZ_CALLSEQ_H
#define SQZ_CALLSEQ_H

#include <stddef.h>
#include <stdint.h>

#include <squeeze.h>

/** Calls of history kept (signatures, slots, addresses): periods up to half of it are found. */
#define SQZ_SEQ_WINDOW 4096
/** Calls a period must explain to be accepted on signatures alone (without every rank's addresses
 *  confirming it). */
#define SQZ_SEQ_MIN_EVIDENCE 64
/** Largest multiple of the signature period that address refinement considers. */
#define SQZ_SEQ_MAX_REFINE 16

/** One logical buffer. */
typedef struct sqz_seq_slot {
    uint64_t id;        /* the same on every rank; 0: the record is free */
    uint64_t sig;
    uint64_t calls;     /* calls made on it so far (agreed across ranks) */
    uint64_t last_use;  /* the communicator's call index of its last call */
    uintptr_t addr;     /* the address of its last call on this rank (a hint) */
    int      pinned;    /* referenced by the template */
    int      doomed;    /* to be evicted at the next sweep (a learning slot over budget) */
} sqz_seq_slot_t;

/** Where sqz_callseq_place put a call. */
typedef struct sqz_seq_place {
    sqz_seq_slot_t *slot;  /* valid until the next call into the tracker */
    uint64_t        seq;   /* the call's counter on this slot (slot->calls before the call) */
    int             fresh; /* the slot is new: it has no state yet */
    /** fresh only: the id of a live slot of the same signature whose last call used this
     *  address on this rank, whose local state this call may take over; 0 when none. */
    uint64_t        heir_of;
    /** fresh only: another live slot of the same signature exists (this call might be its
     *  buffer: an identity the pattern could not settle). */
    int             has_kin;
    /** The slot's address moved and this rank sees several buffers behind one slot (its
     *  refined period exceeded the agreed one): local state must not be applied. */
    int             moved_ambiguous;
    /** A period was just found: the engine must agree on the refined period with
     *  sqz_callseq_refine before it uses `slot` (which is NULL until then). */
    int             refine;
    /** This rank's candidate for the refinement (valid when refine is set). */
    uint64_t        local_period;
    /** A template was set at this call (sqz_callseq_refine), or learning slots went over their
     *  budget: the engine should sweep (sqz_callseq_evict) now. */
    int             established;
} sqz_seq_place_t;

typedef struct sqz_callseq sqz_callseq_t;

/** \return a tracker, or NULL when out of memory. */
sqz_callseq_t *sqz_callseq_create(void);
void           sqz_callseq_destroy(sqz_callseq_t *q);

/** Places the next call, of signature `sig` (identical on every rank for the same call) and
 *  receive address `addr` (this rank's hint).  \return SQZ_OK or SQZ_ERR_NO_MEMORY (the tracker
 *  is then reset: every rank runs out of the same memory only by chance, so the engine treats it
 *  as a local failure of this call). */
sqz_status_t sqz_callseq_place(sqz_callseq_t *q, uint64_t sig, uintptr_t addr,
                               sqz_seq_place_t *out);

/** Completes a placement whose `refine` was set, with the period every rank agreed on: the
 *  common local_period when all ranks proposed the same, else the signature period (pass 0 to
 *  say "they differed").  Fills out->slot and the rest.  \return SQZ_OK or SQZ_ERR_NO_MEMORY. */
sqz_status_t sqz_callseq_refine(sqz_callseq_t *q, uint64_t agreed, sqz_seq_place_t *out);

/** Calls after which a state not used is stale. */
uint64_t sqz_callseq_horizon(const sqz_callseq_t *q);

/** The communicator's call index (calls placed so far). */
uint64_t sqz_callseq_now(const sqz_callseq_t *q);

/** Slots alive (not yet evicted). */
size_t sqz_callseq_live(const sqz_callseq_t *q);

/** The period in force (0: learning). */
uint64_t sqz_callseq_period(const sqz_callseq_t *q);

/** Frees the records of stale slots, calling fn(arg, id) for each first.  \return how many. */
size_t sqz_callseq_evict(sqz_callseq_t *q, void (*fn)(void *arg, uint64_t id), void *arg);

/** Forgets the pattern (not the slots): every rank calls it at the same call (after an agreed
 *  mismatch), so they learn again in step. */
void sqz_callseq_reset(sqz_callseq_t *q);

/** \return the live slot with this id, or NULL. */
sqz_seq_slot_t *sqz_callseq_slot(sqz_callseq_t *q, uint64_t id);

/** Serialization for checkpoints (sqz_state_io.c): writes the whole tracker to buf when len is
 *  large enough.  \return the bytes it takes (written or not). */
size_t sqz_callseq_save(const sqz_callseq_t *q, void *buf, size_t len);
/** A new tracker from the bytes of sqz_callseq_save.  \return SQZ_OK, SQZ_ERR_CORRUPT (bytes of
 *  another form) or SQZ_ERR_NO_MEMORY. */
sqz_status_t sqz_callseq_load(const void *buf, size_t len, sqz_callseq_t **out);

#endif
