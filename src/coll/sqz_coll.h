/* Compressed collective algorithms over the transport interface.
 *
 * Every algorithm keeps three promises:
 *  - bit-identical output on every rank: each rank decodes the same bytes, in the same order, into
 *    a zeroed buffer (a rank's own contribution is decoded from its compressed form too);
 *  - a collective fallback decision: every reason to fall back (a rank's non-finite input, a
 *    malformed payload, mismatched call sequences) becomes known to every rank through the frames
 *    they exchange anyway, before any rank writes its output, so all ranks take the dense path
 *    together and nobody hangs;
 *  - error feedback that loses nothing: on a fallback the residuals are restored to what they
 *    were before the call (up to float rounding), because the dense path sends the input itself.
 */
#ifndef SQZ_COLL_H
#define SQZ_COLL_H

#include "sqz_ctx.h"

/** Prepended to every payload.  32 bytes, so payloads stay 8-byte aligned. */
typedef struct sqz_frame {
    uint32_t magic;  /* SQZ_FRAME_MAGIC */
    uint32_t flags;  /* SQZ_FRAME_* */
    uint32_t seq;    /* the buffer's call counter (low 32 bits): catches diverged call sequences */
    uint32_t method; /* hash of the compressor name: catches mismatched methods */
    uint64_t count;  /* elements this payload describes */
    uint64_t bytes;  /* payload bytes following the frame */
} sqz_frame_t;

#define SQZ_FRAME_MAGIC     0x315a5153u /* "SQZ1" */
#define SQZ_FRAME_FALLBACK  0x1u        /* this rank asks every rank to go dense */
#define SQZ_FRAME_NONFINITE 0x2u        /* ... because its input was not finite */
#define SQZ_FRAME_EXACT_SPARSE 0x4u     /* exact payload: u32 m, m u32 indices, m f32 values */
#define SQZ_FRAME_EXACT_DENSE  0x8u     /* exact payload: the floats */
#define SQZ_FRAME_ZSTD         0x10u    /* the compressor's payload, zstd-compressed (SQZ_ENTROPY) */
#define SQZ_FRAME_POSITIONS    0x20u    /* ... with position-coded indices (sqz_entropy.h) */

/** One compressed call, as the engine hands it to an algorithm. */
typedef struct sqz_coll_call {
    sqz_comm_t                *comm;
    const sqz_compressor_v1_t *c;
    void                      *cstate;
    void                     **cstates;  /* one state of c per pool thread (cstates[0] == cstate) */
    const float               *in;
    float                     *out;
    size_t                     n;        /* elements of in */
    size_t                     block;    /* reduce-scatter: elements per rank; 0 for all-reduce */
    float                     *residual; /* worker residual (n) or NULL */
    sqz_buf_state_t           *state;    /* for the server residual; NULL without EF */
    sqz_buf_state_t           *bstate;   /* the buffer's state, always */
    uint64_t                   seq;
    /** The caller's output is its input (in place): nothing may be written to out before every
     *  rank has agreed not to fall back, since the dense fallback reads the input from there.
     *  (in may be a transformed copy, so in != out does not tell.) */
    int                        out_is_input;
    /** SparCML's split all-gather (DSAR): phase 2 sends the reduced chunk exactly, as sparse
     *  (index, value) pairs or dense floats, whichever is smaller, instead of compressing it again.
     *  For sparsifiers, whose reduced chunks are sparse unless their supports grew. */
    int                        exact2;
    /** This rank could not prepare the call (no state, no memory for error feedback): it takes
     *  part in the exchange with fallback frames only, so that every rank goes dense together. */
    int                        poisoned;
    sqz_call_stats_t           cs;
} sqz_coll_call_t;

/* The algorithms return SQZ_OK when the output is written.  SQZ_ERR_NONFINITE, SQZ_ERR_CORRUPT,
 * SQZ_ERR_MISMATCH and SQZ_ERR_NOT_SUPPORTED mean every rank agreed to fall back (output untouched,
 * residuals restored).  Any other error (transport) leaves the communicator unusable. */
sqz_status_t sqz_coll_allgather(sqz_coll_call_t *call);
/** The same over point-to-point messages (the transport's isend/irecv/test/wait). */
sqz_status_t sqz_coll_allgather_p2p(sqz_coll_call_t *call);
sqz_status_t sqz_coll_reduce_scatter(sqz_coll_call_t *call);
/** The same exchange over point-to-point messages, pipelined: chunk r is sent while chunk r+1 is
 *  compressed, and received chunks are decoded while later ones arrive.  Needs the transport's
 *  isend/irecv/test/wait. */
sqz_status_t sqz_coll_reduce_scatter_p2p(sqz_coll_call_t *call);

/** The summable exchange (SQZ_EXCHANGE_SUMMABLE): the compressor's reduce() over the transport's
 *  SUM all-reduce, with the layout of buffer `key` (sqz_layout_resolve) and, under SQZ_ADAPT,
 *  the per-layer levels and probes (src/adapt).  A reduce-scatter (block > 0) forms the whole sum
 *  and keeps its block. */
sqz_status_t sqz_coll_summable(sqz_coll_call_t *call, uint64_t key);
/** One token all-to-all-v (sqz_moe_alltoallv: counts and displacements in tokens of `width`
 *  elements of dtype). */
typedef struct sqz_a2a_call {
    sqz_comm_t   *comm;
    int           codec; /* sqz_moe_codec_t */
    int           dtype; /* sqz_dtype_t */
    size_t        width;
    const void   *sendbuf;
    const size_t *scounts, *sdispls;
    void         *recvbuf;
    const size_t *rcounts, *rdispls;
    /** Called (when not NULL) once the block for `peer` (another rank) is encoded, before it is
     *  sent: the API takes the residuals of a dispatch from it. */
    void        (*encoded)(void *arg, int peer, const void *block);
    void         *arg;
    sqz_moe_stats_t cs;  /* this call's accounting (filled) */
} sqz_a2a_call_t;

/** The coded all-to-all-v: each block for another rank is encoded (sqz_lsh.h format) into the
 *  communicator's send scratch and sent; each received block is validated and decoded at its
 *  displacement.  With point-to-point messages in the transport and SQZ_PIPELINE on, one round
 *  (receives posted for their bound, encoding overlapped with sending, decoding with receiving);
 *  otherwise the block sizes are exchanged first (one all-to-all of 8 bytes a peer: a receiver
 *  cannot know them), then the blocks (one all-to-all-v).  The block a rank sends itself is
 *  copied.  EXACT skips the frames: one all-to-all-v of the bytes.  \return SQZ_OK,
 *  SQZ_ERR_CORRUPT (a received block was malformed; its recv block is untouched),
 *  SQZ_ERR_MISMATCH (a peer announced more than its count allows; over point-to-point a block
 *  larger than the receive fails as SQZ_ERR_TRANSPORT), SQZ_ERR_NO_MEMORY, SQZ_ERR_TRANSPORT. */
sqz_status_t sqz_coll_alltoallv_tokens(sqz_a2a_call_t *call);

/** Chunk boundaries of the reduce-scatter exchanges: off[r], len[r] for r in [0, nranks). */
void sqz_rs_layout(const sqz_coll_call_t *call, size_t *off, size_t *len);

/** The scratch of the scatter-reduce exchanges, from the P chunks' lengths and their phase-1 and
 *  phase-2 slots (the same on every rank): send, the largest phase-2 slot (the caller adds its
 *  phase-1 row); recv, the larger of P slots of the largest chunk and every phase-2 slot; chunk,
 *  the largest chunk or the dense path's; the P chunks' shared values; task 0 (the caller's). */
void         sqz_rs_need(const sqz_coll_call_t *call, const size_t *len, const size_t *slot,
                         const size_t *slot2, sqz_scratch_need_t *need);

/** The server residual of this rank's chunk in call->state (an all-reduce of the scatter-reduce
 *  family with error feedback), reserved before the exchange: phase 2 then finds it, and a rank
 *  without the memory takes the dense path that every rank agrees on instead of failing alone
 *  in the middle of the exchange.  \return SQZ_OK or SQZ_ERR_NO_MEMORY. */
sqz_status_t sqz_rs_reserve_server(sqz_coll_call_t *call);

/** Reserves an exchange's scratch before any of its messages: `need` must be the same on every
 *  rank for the same call (computed from the call's count, the ranks and the settings, never
 *  from this rank's chunk or payload).  A need within what the ranks agreed before is there on
 *  every rank; one beyond it is reserved on every rank and agreed (sqz_coll_agree; the same calls
 *  on every rank, so every rank asks alike).  So a rank that runs out of memory never leaves its
 *  peers waiting for its messages.  \return SQZ_OK, SQZ_ERR_NOT_SUPPORTED on every rank when
 *  some rank could not reserve (nothing has moved: the call goes dense, or back to the caller for
 *  a reduce-scatter, whose dense path needs scratch too), or SQZ_ERR_TRANSPORT. */
sqz_status_t sqz_coll_reserve(sqz_comm_t *comm, const sqz_scratch_need_t *need);
/** The chunkbuf bytes the dense path of the call takes if the ranks fall back: a reduce-scatter
 *  forms the whole sum there (reserved with the exchange's scratch, so that a fallback finds it). */
size_t       sqz_coll_dense_scratch(const sqz_coll_call_t *call);
/** Whether every rank is ok: each rank's flag to every other in point-to-point messages, else
 *  one float all-reduce (no memory needed: the comm's agreement area).  Collective.
 *  \return 1, 0 (some rank is not), or -1 (the transport failed). */
int          sqz_coll_agree(sqz_comm_t *comm, int ok);
/** A test hook: when set and it returns nonzero, this rank's sqz_coll_reserve cannot grow. */
extern int (*sqz_coll_scratch_fails)(const sqz_comm_t *comm);

/** One point-to-point round of the pipelined exchanges (sqz_coll_round.c): every rank posts its
 *  receives from all peers first, then sends to me+1, me+2, ... in that order (the exchanges
 *  call sqz_round_send so).  Every message travels as the same number of segments of
 *  SQZ_ROUND_SEG bytes (enough for the round's largest; the tail ones may be empty), and this
 *  rank's send number j waits for its receive number j - SQZ_P2P_WINDOW (auto: 4 when a rank
 *  sends at most SQZ_ROUND_WINDOWED segments in the round, else 0: all at once).  So a rank has
 *  about that many segments arriving at once instead of one message from every peer.  Without
 *  it, at 16 hosts, 15 peers sending to one rank overflow a switch's (or an emulated link's)
 *  queue, packets are dropped, and a short TCP flow that loses its last packets waits out the
 *  retransmission timeout, 200 ms on Linux (incast; docs/performance.md). */
enum { SQZ_ROUND_SEG = 48 << 10, SQZ_ROUND_WINDOWED = 64 };
typedef struct sqz_round {
    const sqz_transport_t *t;
    int                    P, me;
    size_t                 seg, window;  /* window in segments; 0: every segment at once */
    size_t                 maxseg;       /* segments of every message */
    void                 **rreq, **sreq; /* P x maxseg each, peer-major */
    size_t                *got;
} sqz_round_t;

/** A round whose messages hold at most maxcap bytes (its scratch in comm->taskbuf). */
sqz_status_t sqz_round_init(sqz_round_t *r, sqz_comm_t *comm, size_t maxcap);
/** The taskbuf bytes sqz_round_init takes for P ranks and messages of at most maxcap bytes. */
size_t       sqz_round_scratch(int P, size_t maxcap);
/** Posts the receive of peer's message (at most cap <= maxcap bytes) into buf.  \return 0 or -1. */
int          sqz_round_recv(sqz_round_t *r, int peer, void *buf, size_t cap);
/** Sends len bytes (at most the receiver's cap) to peer, after the window's receive.
 *  \return 0 or -1. */
int          sqz_round_send(sqz_round_t *r, int peer, const void *buf, size_t len);
/** Tests every pending request once (moves the transport along).  \return 0 or -1. */
int          sqz_round_poll(sqz_round_t *r);
/** Waits for peer's message; *bytes gets its length (0 when its segments do not join up: a
 *  malformed message).  \return 0 or -1. */
int          sqz_round_wait(sqz_round_t *r, int peer, size_t *bytes);
/** Completes every send and receive still pending.  \return 0 or -1. */
int          sqz_round_finish(sqz_round_t *r);

/* Shared helpers (sqz_coll_common.c). */
uint32_t     sqz_coll_method_id(const sqz_compressor_v1_t *c);
size_t       sqz_coll_round8(size_t x);
void         sqz_coll_frame_set(const sqz_coll_call_t *call, void *where, uint32_t flags, size_t count,
                                size_t bytes);
/** Checks a received frame: \return SQZ_OK, SQZ_ERR_NONFINITE or SQZ_ERR_CORRUPT (fallback
 *  flag), SQZ_ERR_MISMATCH (another method, count or call sequence). */
sqz_status_t sqz_coll_frame_check(const sqz_coll_call_t *call, const void *where, size_t count,
                                  size_t slot);
/** Compresses in[0, n) (+ residual) with the compressor state of thread `worker` into a frame + payload at dst
 *  (capacity cap).  On failure (or for a poisoned call) writes a fallback frame and returns the
 *  compressor's status (SQZ_ERR_NO_MEMORY for a poisoned call).
 *  norms (may be NULL) receives {norm2_in, norm2_err}.  Safe to call from several threads on
 *  distinct chunks with distinct compressor states. */
sqz_status_t sqz_coll_compress(const sqz_coll_call_t *call, int worker, const float *in,
                               float *residual, size_t n, int stage, void *dst, size_t cap,
                               double *norms, const float *shared);

/** For a compressor with shared values (SQZ_HAS_SHARED): fills the values of each of the nchunks
 *  chunks (off[r], len[r]) of the stage-0 input, takes their element-wise MAX over all ranks with
 *  one all-gather, and sets shared[r] to chunk r's agreed values.  Without the hooks it sets every
 *  shared[r] to NULL and exchanges nothing.  Collective.  \return SQZ_OK or SQZ_ERR_TRANSPORT. */
sqz_status_t sqz_coll_shared(sqz_coll_call_t *call, int nchunks, const size_t *off,
                             const size_t *len, const float **shared);
/** The sharedbuf bytes sqz_coll_shared takes for these chunks (0 without shared values). */
size_t       sqz_coll_shared_scratch(const sqz_coll_call_t *call, int nchunks, const size_t *len);
/** Undoes a successful compress on the residual: residual += decode(payload) - in. */
void         sqz_coll_restore(sqz_coll_call_t *call, const float *in, float *residual, size_t n,
                              const void *frame);
/** Exact encoding of a reduced chunk (split all-gather): sparse pairs when they are smaller than
 *  the floats.  Writes frame + payload at dst (capacity >= sqz_coll_exact_bound(n)). */
size_t       sqz_coll_exact_bound(size_t n);
void         sqz_coll_exact_encode(const sqz_coll_call_t *call, const float *y, size_t n, void *dst);
/** Decodes (out != NULL: adds into out) or validates an exact payload described by its frame.
 *  Validates everything before writing.  \return SQZ_OK or SQZ_ERR_CORRUPT. */
sqz_status_t sqz_coll_exact_decode(const void *frame, float *out, size_t n);
/** Decodes one frame + payload (adds into out; out == NULL validates only), whatever its form:
 *  exact payloads by the engine, the others by the compressor state of thread `worker` (0 outside
 *  the thread pool).  Validates everything before writing.  \return SQZ_OK or SQZ_ERR_CORRUPT. */
sqz_status_t sqz_coll_decode(const sqz_coll_call_t *call, int worker, const void *frame,
                             float *out, size_t n);

/** sqz_coll_restore for every chunk r of the worker input (off[r], len[r]) whose frame is at
 *  base + dis[r]. */
void         sqz_coll_restore_chunks(sqz_coll_call_t *call, int nchunks, const size_t *off,
                                     const size_t *len, const unsigned char *base,
                                     const size_t *dis);

/** Whether every payload of this call is known in advance to be exactly max_payload bytes: the
 *  compressor claims SQZ_COMPRESSOR_FIXED_PAYLOAD and no entropy stage (SQZ_ENTROPY) may shrink
 *  it.  Same answer on every rank (settings are checked to agree).  The collective exchanges then
 *  send whole slots and skip their size exchange. */
int          sqz_coll_fixed_size(const sqz_coll_call_t *call);

/** Merges two fallback reasons, keeping the most specific. */
sqz_status_t sqz_coll_worse(sqz_status_t a, sqz_status_t b);

#endif
