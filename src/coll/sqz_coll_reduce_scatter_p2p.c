/* The scatter-reduce / all-gather exchange of sqz_coll_reduce_scatter.c, pipelined over
 * point-to-point messages.
 *
 * Phase 1: the receives of this rank's chunk from every peer are posted first; then the chunks are
 * compressed in the order me+1, me+2, ... and each is sent as soon as it is compressed, so the link
 * carries chunk r while the CPU compresses chunk r+1 (the transport is tested between chunks to
 * keep the messages moving).  The received chunks are decoded in rank order (a fixed order: the
 * reduced chunk is the same bits run after run) while later ones may still be arriving.
 * Phase 2: the reduced chunk is compressed again and sent to every peer; received chunks are
 * decoded as they arrive when the output is not the input (a late fallback then simply overwrites
 * the output with the dense result), after all have arrived otherwise.
 *
 * Fallback agreement: a phase-1 problem (a peer's non-finite input, a malformed payload) may be
 * visible to some ranks only, because a rank that fails half-way has already sent some good
 * chunks.  Every rank therefore states its verdict in its phase-2 frame (or, for a reduce-scatter,
 * in a 4-byte all-gather), and all ranks decide from the same set of verdicts. */
#include "config.h"

#include <string.h>

#include "sqz_coll.h"
#include "sqz_log.h"

/* One call's layout, scratch, requests and clocks (rows of comm->counts, comm's scratch). */
typedef struct sqz_p2p {
    sqz_coll_call_t       *call;
    sqz_comm_t            *comm;
    const sqz_transport_t *t;
    int                    P, me;
    size_t *off, *len, *slot; /* chunk r: elements [off, off + len), its phase-1 payload slot */
    size_t *sdis;             /* where chunk r's phase-1 frame is in sendbuf */
    size_t *rdis, *slot2;     /* phase 2: where rank r's frame lands in recvbuf, and its slot */
    size_t  send1, mylen;     /* phase-1 bytes; this rank's chunk */
    float  *y;                /* this rank's reduced chunk */
    sqz_round_t rd;           /* the phase's point-to-point round */
    sqz_status_t local;       /* phase 1's verdict as this rank sees it */
    int          abort;       /* a transport (or memory) failure: no restore, no verdict */
    double       t_comm, t_comp, mark;
} sqz_p2p_t;

/* The time since the last lap, added to *bucket (communication or compression). */
static void sqz_p2p_lap(sqz_p2p_t *x, double *bucket)
{
    const double now = sqz_time_now();
    *bucket += now - x->mark;
    x->mark = now;
}

/* The largest of the P slots. */
static size_t sqz_p2p_max(const size_t *slot, int P)
{
    size_t m = 0;
    for (int r = 0; r < P; r++) {
        m = slot[r] > m ? slot[r] : m;
    }
    return m;
}

/* A transport call's failure: the exchange stops where it is (the engine reports it). */
static sqz_status_t sqz_p2p_failed(sqz_p2p_t *x)
{
    x->abort = 1;
    return SQZ_ERR_TRANSPORT;
}

/* The layout, the slots of both phases and the scratch of a call into x. */
static sqz_status_t sqz_p2p_setup(sqz_coll_call_t *call, sqz_p2p_t *x)
{
    sqz_comm_t *const comm = call->comm;
    const int         P    = comm->nranks;
    *x = (sqz_p2p_t){.call = call, .comm = comm, .t = &comm->t, .P = P, .me = comm->rank,
                     .off = comm->scratch.counts, .len = comm->scratch.counts + P,
                     .slot = comm->scratch.counts + 2 * P,
                     .sdis = comm->scratch.counts + 3 * P, .rdis = comm->scratch.counts + 4 * P,
                     .slot2 = comm->scratch.counts + 5 * P, .local = SQZ_OK};
    sqz_rs_layout(call, x->off, x->len);
    /* Phase-2 slots: the compressor's bound, or the exact encoding's in a split all-gather. */
    size_t recv2 = 0;
    for (int r = 0; r < P; r++) {
        x->slot[r] = sqz_coll_round8(sizeof(sqz_frame_t) +
                                     call->c->max_payload(call->cstate, x->len[r]));
        x->sdis[r] = x->send1;
        x->send1 += x->slot[r];
        x->slot2[r] = call->exact2 ? sqz_coll_exact_bound(x->len[r]) : x->slot[r];
        x->rdis[r]  = recv2;
        recv2 += x->slot2[r];
    }
    x->mylen = x->len[x->me];
    /* Everything both phases take, before the first message: the phases' rounds too, so that
     * phase 2 cannot run out of memory on one rank half-way through the exchange. */
    sqz_scratch_need_t need;
    sqz_rs_need(call, x->len, x->slot, x->slot2, &need);
    need.send += x->send1;
    const size_t task1 = sqz_round_scratch(P, sqz_p2p_max(x->slot, P));
    const size_t task2 = sqz_round_scratch(P, sqz_p2p_max(x->slot2, P));
    need.task          = task1 > task2 ? task1 : task2;
    SQZ_CHECK(sqz_coll_reserve(comm, &need));
    x->y = comm->scratch.chunkbuf;
    SQZ_CHECK(sqz_coll_shared(call, P, x->off, x->len, comm->scratch.sharedptr));
    x->mark = sqz_time_now();
    return SQZ_OK;
}

/* Phase 1, sending: the receives of this rank's chunk posted, then every chunk compressed in the
 * order me+1, me+2, ... and sent at once (this rank's own last).  After a chunk fails, the later
 * ones are fallback frames; x->local gets the failure. */
static sqz_status_t sqz_p2p_scatter(sqz_p2p_t *x)
{
    sqz_coll_call_t *const       call = x->call;
    sqz_comm_t *const            comm = x->comm;
    const int                    P = x->P, me = x->me;
    if (SQZ_OK != sqz_round_init(&x->rd, comm, sqz_p2p_max(x->slot, P))) {
        x->abort = 1; /* (its scratch was agreed at the setup: not expected) */
        return SQZ_ERR_NO_MEMORY;
    }
    for (int k = 1; k < P; k++) {
        const int s = (me + P - k) % P;
        if (0 != sqz_round_recv(&x->rd, s, comm->scratch.recvbuf + (size_t)s * x->slot[me],
                                x->slot[me])) {
            return sqz_p2p_failed(x);
        }
    }
    sqz_status_t mine = SQZ_OK; /* this rank's own compression */
    for (int k = 1; k <= P; k++) {
        const int r = (me + k) % P; /* k == P: the own chunk, last, while the others travel */
        sqz_p2p_lap(x, &x->t_comm);
        if (SQZ_OK == mine) {
            double norms[2] = {0, 0};
            mine = sqz_coll_compress(call, 0, call->in + x->off[r],
                                     call->residual ? call->residual + x->off[r] : NULL,
                                     x->len[r], 0, comm->scratch.sendbuf + x->sdis[r], x->slot[r],
                                     norms, comm->scratch.sharedptr[r]);
            call->cs.norm2_in += norms[0];
            call->cs.norm2_err += norms[1];
        } else {
            sqz_coll_frame_set(call, comm->scratch.sendbuf + x->sdis[r],
                               SQZ_FRAME_FALLBACK |
                                   (SQZ_ERR_NONFINITE == mine ? SQZ_FRAME_NONFINITE : 0),
                               x->len[r], 0);
        }
        sqz_frame_t f;
        memcpy(&f, comm->scratch.sendbuf + x->sdis[r], sizeof(f));
        call->cs.bytes_wire += sizeof(f) + (size_t)f.bytes;
        sqz_p2p_lap(x, &x->t_comp);
        if (r != me) {
            /* Only the bytes the compressor produced travel (a receive may get less than its
             * slot): variable-size payloads such as zstd's save on the wire too. */
            const size_t len_r = sqz_coll_round8(sizeof(f) + (size_t)f.bytes);
            if (0 != sqz_round_send(&x->rd, r, comm->scratch.sendbuf + x->sdis[r], len_r) ||
                0 != sqz_round_poll(&x->rd)) {
                return sqz_p2p_failed(x);
            }
            call->cs.bytes_sent += len_r;
        }
    }
    x->local = mine;
    return SQZ_OK;
}

/* Phase 1, receiving: the chunks decoded into y in rank order (the same bits run after run) as
 * they arrive; every frame checked.  Then the sends completed. */
static sqz_status_t sqz_p2p_reduce(sqz_p2p_t *x)
{
    const int me = x->me;
    memset(x->y, 0, x->mylen * sizeof(float));
    for (int s = 0; s < x->P; s++) {
        sqz_p2p_lap(x, &x->t_comp);
        size_t got = x->slot[me];
        if (s != me && 0 != sqz_round_wait(&x->rd, s, &got)) {
            return sqz_p2p_failed(x);
        }
        sqz_p2p_lap(x, &x->t_comm);
        const unsigned char *fr = (s == me) ? x->comm->scratch.sendbuf + x->sdis[me]
                                            : x->comm->scratch.recvbuf + (size_t)s * x->slot[me];
        /* (checked against the bytes that arrived, at most the slot: a short message must not
         * let the decoder read what an earlier call left in the buffer) */
        sqz_status_t fs = got < sizeof(sqz_frame_t)
                              ? SQZ_ERR_CORRUPT
                              : sqz_coll_frame_check(x->call, fr, x->mylen, got);
        if (SQZ_OK == fs && SQZ_OK == x->local) {
            fs = sqz_coll_decode(x->call, 0, fr, x->y, x->mylen);
            fs = SQZ_OK == fs ? SQZ_OK : SQZ_ERR_CORRUPT;
        }
        x->local = sqz_coll_worse(x->local, fs);
    }
    sqz_p2p_lap(x, &x->t_comp);
    if (0 != sqz_round_finish(&x->rd)) {
        return sqz_p2p_failed(x);
    }
    sqz_p2p_lap(x, &x->t_comm);
    return SQZ_OK;
}

/* A reduce-scatter ends after phase 1: the ranks agree on their verdicts with one small
 * all-gather (a rank that failed half-way has sent some good chunks), then keep y. */
static sqz_status_t sqz_p2p_finish_block(sqz_p2p_t *x)
{
    const int32_t v   = (SQZ_OK == x->local) ? 0 : (SQZ_ERR_NONFINITE == x->local ? 2 : 1);
    int32_t      *all = (int32_t *)x->comm->scratch.recvbuf;
    size_t *const cnt = x->slot2; /* phase 2's rows are free */
    for (int r = 0; r < x->P; r++) {
        cnt[r]     = sizeof(int32_t);
        x->rdis[r] = (size_t)r * sizeof(int32_t);
    }
    if (0 != x->t->allgatherv(x->t->self, &v, sizeof(v), all, cnt, x->rdis)) {
        return sqz_p2p_failed(x);
    }
    sqz_status_t st = SQZ_OK;
    for (int r = 0; r < x->P; r++) {
        st = sqz_coll_worse(st, 0 == all[r] ? SQZ_OK
                                            : (2 == all[r] ? SQZ_ERR_NONFINITE : SQZ_ERR_CORRUPT));
    }
    if (SQZ_OK == st) {
        memcpy(x->call->out, x->y, x->mylen * sizeof(float));
    }
    sqz_p2p_lap(x, &x->t_comm);
    return st;
}

/* Phase 2's own frame in mine2: the reduced chunk compressed again (with the server residual
 * sres), encoded exactly (split all-gather), or this rank's phase-1 verdict.  \return its bytes. */
static size_t sqz_p2p_encode2(sqz_p2p_t *x, float *sres, unsigned char *mine2)
{
    sqz_coll_call_t *const call = x->call;
    if (SQZ_OK == x->local && call->exact2) {
        sqz_coll_exact_encode(call, x->y, x->mylen, mine2);
    } else if (SQZ_OK == x->local) {
        (void)sqz_coll_compress(call, 0, x->y, sres, x->mylen, 1, mine2, x->slot[x->me], NULL,
                                NULL);
    } else {
        /* State the verdict: every rank will see it. */
        sqz_coll_frame_set(call, mine2,
                           SQZ_FRAME_FALLBACK |
                               (SQZ_ERR_NONFINITE == x->local ? SQZ_FRAME_NONFINITE : 0),
                           x->mylen, 0);
    }
    sqz_frame_t f;
    memcpy(&f, mine2, sizeof(f));
    return sqz_coll_round8(sizeof(f) + (size_t)f.bytes);
}

/* Phase 2's receive side: every rank's frame checked as it arrives, and decoded straight into
 * the output when out is not in (a late fallback rewrites all of out from in); in place, nothing
 * is written before every verdict is known.  \return the verdict. */
static sqz_status_t sqz_p2p_gather(sqz_p2p_t *x, int stream)
{
    sqz_coll_call_t *const call = x->call;
    sqz_status_t           st   = SQZ_OK;
    for (int s = 0; s < x->P; s++) {
        sqz_p2p_lap(x, &x->t_comp);
        size_t got = x->slot2[s];
        if (s != x->me && 0 != sqz_round_wait(&x->rd, s, &got)) {
            return sqz_p2p_failed(x);
        }
        sqz_p2p_lap(x, &x->t_comm);
        const unsigned char *fr = x->comm->scratch.recvbuf + x->rdis[s];
        sqz_status_t         fs = got < sizeof(sqz_frame_t)
                                      ? SQZ_ERR_CORRUPT
                                      : sqz_coll_frame_check(call, fr, x->len[s], got);
        if (SQZ_OK == fs) {
            /* Streaming, decoding is the validation (nothing is written on failure, and a later
             * fallback rewrites out anyway); in place, only validate now. */
            float *const dst = (stream && SQZ_OK == st) ? call->out + x->off[s] : NULL;
            if (dst) {
                memset(dst, 0, x->len[s] * sizeof(float));
            }
            fs = sqz_coll_decode(call, 0, fr, dst, x->len[s]);
            fs = SQZ_OK == fs ? SQZ_OK : SQZ_ERR_CORRUPT;
        }
        st = sqz_coll_worse(st, fs);
    }
    sqz_p2p_lap(x, &x->t_comp);
    if (0 != sqz_round_finish(&x->rd)) {
        return sqz_p2p_failed(x);
    }
    sqz_p2p_lap(x, &x->t_comm);
    return st;
}

/* Phase 2 (all-reduce): this rank's frame sent to every peer, every rank's received, checked and
 * decoded.  \return the verdict every rank reaches (phase-2 frames carry everybody's phase-1
 * verdicts). */
static sqz_status_t sqz_p2p_phase2(sqz_p2p_t *x)
{
    sqz_coll_call_t *const call  = x->call;
    sqz_comm_t *const      comm  = x->comm;
    const int              P = x->P, me = x->me;
    unsigned char *const   mine2 = comm->scratch.sendbuf + x->send1;
    float                 *sres  = NULL;
    if (SQZ_OK == x->local && call->state && !call->exact2) {
        const sqz_status_t rst = sqz_rs_reserve_server(call); /* (reserved at the open) */
        if (SQZ_OK != rst) {
            x->abort = 1;
            return rst;
        }
        sres = call->state->server_residual;
    }
    const size_t len2 = sqz_p2p_encode2(x, sres, mine2);
    sqz_p2p_lap(x, &x->t_comp);
    if (SQZ_OK != sqz_round_init(&x->rd, comm, sqz_p2p_max(x->slot2, P))) {
        x->abort = 1; /* (as phase 1's) */
        return SQZ_ERR_NO_MEMORY;
    }
    for (int k = 1; k < P; k++) {
        const int s = (me + P - k) % P;
        if (0 != sqz_round_recv(&x->rd, s, comm->scratch.recvbuf + x->rdis[s], x->slot2[s])) {
            return sqz_p2p_failed(x);
        }
    }
    for (int k = 1; k < P; k++) {
        if (0 != sqz_round_send(&x->rd, (me + k) % P, mine2, len2)) {
            return sqz_p2p_failed(x);
        }
    }
    call->cs.bytes_sent += len2 * (size_t)(P - 1);
    memcpy(comm->scratch.recvbuf + x->rdis[me], mine2, len2);
    const int          stream = !call->out_is_input;
    const sqz_status_t st     = sqz_p2p_gather(x, stream);
    if (x->abort) {
        return st;
    }
    if (SQZ_OK != st) {
        sqz_coll_restore(call, x->y, sres, x->mylen, mine2);
        return st;
    }
    if (!stream) {
        for (int s = 0; s < P; s++) {
            memset(call->out + x->off[s], 0, x->len[s] * sizeof(float));
            (void)sqz_coll_decode(call, 0, comm->scratch.recvbuf + x->rdis[s],
                                  call->out + x->off[s], x->len[s]);
        }
        sqz_p2p_lap(x, &x->t_comp);
    }
    return SQZ_OK;
}

sqz_status_t sqz_coll_reduce_scatter_p2p(sqz_coll_call_t *call)
{
    sqz_p2p_t x;
    SQZ_CHECK(sqz_p2p_setup(call, &x));
    sqz_status_t st = sqz_p2p_scatter(&x);
    if (SQZ_OK == st) {
        st = sqz_p2p_reduce(&x);
    }
    if (SQZ_OK == st) {
        st = call->block ? sqz_p2p_finish_block(&x) : sqz_p2p_phase2(&x);
    }
    if (x.abort) {
        /* A transport failure: the ranks may no longer agree; the engine reports it. */
        return st;
    }
    if (SQZ_OK != st) {
        call->cs.nonfinite = (SQZ_ERR_NONFINITE == st);
        sqz_coll_restore_chunks(call, x.P, x.off, x.len, x.comm->scratch.sendbuf, x.sdis);
    }
    call->cs.t_comm += x.t_comm;
    call->cs.t_compress += x.t_comp;
    return st;
}
