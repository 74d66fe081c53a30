/* The per-buffer state store: error-feedback residuals and call counters, keyed by the logical
 * buffer (an API key, or the receive address and count of an intercepted call). */
#ifndef SQZ_STATE_H
#define SQZ_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <squeeze.h>

/** A buffer's layer-adaptive choice (src/adapt): the level of each of n layers (NULL: the
 *  uniform setting), and the call counter of its next probe. */
typedef struct sqz_levels {
    int     *levels;
    size_t   n;
    uint64_t next_probe;
} sqz_levels_t;

/** How the store handles what another memory backend attaches to a state (`ext`: the device
 *  engine's buffer, src/cuda/sqz_gpu_engine.c): its memory goes with the state (eviction, a
 *  reset, the store's end), its local error feedback is zeroed by sqz_state_forget_local and
 *  taken over by sqz_state_inherit, as the host arrays are.  Every hook gets `arg` first. */
typedef struct sqz_state_ext_ops {
    void (*free)(void *arg, void *ext);
    /** Zeroes ext's local error-feedback state (this rank's own).  \return 1 when it had some. */
    int (*forget_local)(void *arg, void *ext);
    /** Moves from's local error-feedback state into to's (which holds none yet) and zeroes it in
     *  from.  \return 1 when something moved. */
    int (*inherit)(void *arg, void *to, void *from);
    void *arg;
} sqz_state_ext_ops_t;

typedef struct sqz_buf_state {
    uint64_t              key;             /* an API key, or a call-sequence slot id (auto) */
    size_t                count;
    int                   automatic;       /* keyed by the call sequence (sqz_callseq.h) */
    uint64_t              calls;           /* calls seen for an API-keyed buffer (warm-up, RNG
                                              seeds); the call sequence counts automatic ones */
    uint64_t              last_use;        /* the store's tick at its last call */
    size_t                bytes;           /* memory held by the arrays below */
    float                *residual;        /* worker residual, count floats, or NULL */
    float                *server_residual; /* residual of this rank's reduced chunk, or NULL */
    size_t                server_count;
    float                *ef_est;          /* ef21: g_i; econtrol: h_i (count floats) or NULL */
    float                *ef_err;          /* econtrol: e_i */
    float                *ef_shared;       /* ef21: G; econtrol: H (identical on every rank) */
    float                *dgc_momentum;    /* DGC momentum correction u, or NULL */
    void                 *res_compact;     /* SQZ_EF_STORAGE=bf16/int8: the compact residual */
    float                *res_scale;       /* int8: one scale per 256 elements */
    size_t                res_bytes;       /* bytes of res_compact and res_scale */
    /* SQZ_EXCHANGE_SUMMABLE compressors: their per-buffer memory (warm starts), for the layout
     * whose digest is `layout`; reset when the layout changes. */
    float                *plugin_state;
    size_t                plugin_len;
    uint64_t              layout;
    sqz_levels_t          adapt;           /* layer-adaptive selection (src/adapt) */
    void                 *ext;             /* another backend's memory (sqz_state_ext_ops_t) */
    size_t                ext_bytes;       /* its bytes, as every rank counts them */
    struct sqz_buf_state *next;            /* hash chain */
    struct sqz_buf_state *newer, *older;   /* recency list */
} sqz_buf_state_t;

/** The states of one communicator, bounded (SQZ_STATE_MAX_BYTES): a hash by (key, count) and a
 *  recency list.  `tick` counts the calls with an API key (sqz_call_state): the clock of the
 *  stale rule (sqz_state_evict), so that keyed states used now and then among many calls without
 *  a key stay; call-sequence slots have their own stale rule (sqz_identity_sweep). */
typedef struct sqz_state_store {
    sqz_buf_state_t **buckets;
    size_t            nbuckets, n;
    size_t            nexplicit;           /* states with an API key */
    size_t            bytes;               /* memory held by every state, as every rank counts it
                                              (eviction compares it with SQZ_STATE_MAX_BYTES) */
    int               nranks;              /* ranks of the communicator (0: one) */
    const sqz_state_ext_ops_t *ext_ops;    /* for states' ext (NULL: no state has one) */
    uint64_t          tick;
    sqz_buf_state_t  *newest, *oldest;
} sqz_state_store_t;

/** \return the state for (key, count), created (zeroed) when absent, and marks it used now.  A
 *  state found under the same key with another count is reset: the buffer was reused with a
 *  different size.  NULL when out of memory. */
sqz_buf_state_t *sqz_state_get(sqz_state_store_t *s, uint64_t key, size_t count, int automatic);

/** \return the state for (key, count), or NULL when there is none (nothing is created). */
sqz_buf_state_t *sqz_state_find(const sqz_state_store_t *s, uint64_t key, size_t count);

/** Makes sure the worker residual (count floats) and, when server_count > 0, the server residual
 *  exist (zeroed on creation). */
sqz_status_t sqz_state_reserve(sqz_state_store_t *s, sqz_buf_state_t *b, int worker,
                               size_t server_count);

/** Allocates *p (n floats, zeroed) when it is NULL, counted in b's bytes.  \return SQZ_OK or
 *  SQZ_ERR_NO_MEMORY. */
sqz_status_t sqz_state_alloc(sqz_state_store_t *s, sqz_buf_state_t *b, float **p, size_t n);

/** Tests only (NULL otherwise): when set and it returns nonzero for an array of n floats,
 *  sqz_state_alloc (sqz_state_reserve's arrays included) fails as if calloc had, so that a test
 *  makes one rank run out of memory for a state. */
extern int (*sqz_state_alloc_fails)(size_t n);

/** Recounts b's memory after its arrays changed outside sqz_state_alloc/reserve. */
void sqz_state_account(sqz_state_store_t *s, sqz_buf_state_t *b);

/** Attaches ext (another backend's memory, freed through s->ext_ops with the state; NULL: none)
 *  holding `bytes`, as every rank counts them, or recounts them when ext is already b's. */
void sqz_state_set_ext(sqz_state_store_t *s, sqz_buf_state_t *b, void *ext, size_t bytes);

/** Frees state b (every rank dropping it together: see sqz_call_state). */
void sqz_state_discard(sqz_state_store_t *s, sqz_buf_state_t *b);

/** Frees the states under `key` (an evicted call-sequence slot). */
void sqz_state_drop(sqz_state_store_t *s, uint64_t key);

/** Frees every state with an API key unused for more than max(4 x such states, 256) keyed
 *  calls (ticks), then, while the store holds more than max_bytes (0: no limit), the least
 *  recently used states other than `keep`.  \return the states freed. */
size_t sqz_state_evict(sqz_state_store_t *s, size_t max_bytes, const sqz_buf_state_t *keep);

/** Moves the local state of `from` (worker and server residuals, compact residual, DGC momentum,
 *  and its ext's through s->ext_ops->inherit when both have an ext) into `to` when `to` has none
 *  and the sizes match: a buffer that kept its address across a relearning of
 *  the call sequence keeps its error feedback. \return 1 when something moved. */
int sqz_state_inherit(sqz_state_store_t *s, sqz_buf_state_t *to, sqz_buf_state_t *from);

/** Drops the local error-feedback state of b (zeroes it, its ext's too): its identity is
 *  uncertain.  \return 1 when there was some. */
int sqz_state_forget_local(const sqz_state_store_t *s, sqz_buf_state_t *b);

void sqz_state_store_fini(sqz_state_store_t *s);

/** A loaded store `to` takes over the ext memory of `from`'s states (a device buffer stays
 *  allocated across a checkpoint load: its record was applied to it), each by (key, count). */
void sqz_state_store_move_ext(sqz_state_store_t *to, sqz_state_store_t *from);

/** A 64-bit mix for keys (splitmix64 finalizer). */
uint64_t sqz_hash64(uint64_t x);

#endif
