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

/* Tests every pending request once, so that the transport moves what it can. */
static int sqz_p2p_progress(const sqz_transport_t *t, void **reqs, int n)
{
    for (int i = 0; i < n; i++) {
        int done = 0;
        if (reqs[i] && 0 != t->test(t->self, reqs[i], &done)) {
            return -1;
        }
        if (done) {
            reqs[i] = NULL;
        }
    }
    return 0;
}

static int sqz_p2p_wait(const sqz_transport_t *t, void **req)
{
    if (NULL == *req) {
        return 0;
    }
    const int rc = t->wait(t->self, *req);
    *req         = NULL;
    return rc;
}

static int sqz_p2p_wait_all(const sqz_transport_t *t, void **reqs, int n)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        rc |= sqz_p2p_wait(t, &reqs[i]);
    }
    return rc;
}

sqz_status_t sqz_coll_reduce_scatter_p2p(sqz_coll_call_t *call)
{
    sqz_comm_t *const      comm = call->comm;
    const sqz_transport_t *t    = &comm->t;
    const int              P    = comm->nranks;
    const int              me   = comm->rank;
    size_t *const          off  = comm->counts;         /* P */
    size_t *const          len  = comm->counts + P;     /* P */
    size_t *const          slot = comm->counts + 2 * P; /* P */
    size_t *const          sdis = comm->counts + 3 * P; /* P */
    size_t *const          rdis = comm->counts + 4 * P; /* P */
    size_t *const          tmp  = comm->counts + 5 * P; /* P */
    sqz_status_t           st = SQZ_OK, local = SQZ_OK;
    sqz_frame_t            f;

    sqz_rs_layout(call, off, len);
    size_t send1 = 0, recv2 = 0;
    for (int r = 0; r < P; r++) {
        slot[r] = sqz_coll_round8(sizeof(sqz_frame_t) + call->c->max_payload(call->cstate, len[r]));
        sdis[r] = send1;
        send1 += slot[r];
        rdis[r] = recv2;
        recv2 += slot[r];
    }
    /* Phase-2 slots: the compressor's bound, or the exact encoding's in a split all-gather
     * (tmp holds them; rdis their offsets). */
    size_t *const slot2 = tmp;
    recv2               = 0;
    for (int r = 0; r < P; r++) {
        slot2[r] = call->exact2 ? sqz_coll_exact_bound(len[r]) : slot[r];
        rdis[r]  = recv2;
        recv2 += slot2[r];
    }
    const size_t mylen = len[me];
    const size_t recv1 = (size_t)P * slot[me];
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->sendbuf, &comm->sendcap, send1 + slot2[me]));
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->recvbuf, &comm->recvcap, recv1 > recv2 ? recv1 : recv2));
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->chunkbuf, &comm->chunkcap, (mylen ? mylen : 1) * sizeof(float)));
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->taskbuf, &comm->taskcap, 2 * (size_t)P * sizeof(void *)));
    void **const sreq = (void **)comm->taskbuf, **const rreq = sreq + P;
    memset(sreq, 0, 2 * (size_t)P * sizeof(void *));
    float *const y = comm->chunkbuf;

    /* ---- phase 1 ---- */
    SQZ_CHECK(sqz_coll_shared(call, P, off, len, comm->sharedptr));
    double t_comm = 0, t_comp = 0, ta = sqz_time_now(), tb;
    for (int k = 1; k < P; k++) {
        const int s = (me + P - k) % P;
        SQZ_TRANSPORT_CHECK_GOTO(t->irecv(t->self, comm->recvbuf + (size_t)s * slot[me], slot[me], s, NULL, &rreq[s]),
                                 st, out);
    }
    sqz_status_t mine = SQZ_OK; /* this rank's own compression */
    for (int k = 1; k <= P; k++) {
        const int r = (me + k) % P; /* k == P: the own chunk, last, while the others travel */
        tb          = sqz_time_now();
        t_comm += tb - ta;
        if (SQZ_OK == mine) {
            double norms[2] = {0, 0};
            mine = sqz_coll_compress(call, 0, call->in + off[r],
                                     call->residual ? call->residual + off[r] : NULL, len[r], 0,
                                     comm->sendbuf + sdis[r], slot[r], norms, comm->sharedptr[r]);
            call->cs.norm2_in += norms[0];
            call->cs.norm2_err += norms[1];
        } else {
            sqz_coll_frame_set(call, comm->sendbuf + sdis[r],
                               SQZ_FRAME_FALLBACK | (SQZ_ERR_NONFINITE == mine ? SQZ_FRAME_NONFINITE : 0),
                               len[r], 0);
        }
        memcpy(&f, comm->sendbuf + sdis[r], sizeof(f));
        call->cs.bytes_wire += sizeof(f) + (size_t)f.bytes;
        ta = sqz_time_now();
        t_comp += ta - tb;
        if (r != me) {
            /* Only the bytes the compressor produced travel (a receive may get less than its
             * slot): variable-size payloads such as zstd's save on the wire too. */
            const size_t len_r = sqz_coll_round8(sizeof(f) + (size_t)f.bytes);
            SQZ_TRANSPORT_CHECK_GOTO(t->isend(t->self, comm->sendbuf + sdis[r], len_r, r, &sreq[r]), st, out);
            call->cs.bytes_sent += len_r;
            SQZ_TRANSPORT_CHECK_GOTO(sqz_p2p_progress(t, sreq, P), st, out);
        }
    }
    local = mine;
    memset(y, 0, mylen * sizeof(float));
    for (int s = 0; s < P; s++) {
        tb = sqz_time_now();
        t_comp += tb - ta;
        SQZ_TRANSPORT_CHECK_GOTO(sqz_p2p_wait(t, &rreq[s]), st, out);
        ta                      = sqz_time_now();
        t_comm += ta - tb;
        const unsigned char *fr = (s == me) ? comm->sendbuf + sdis[me] : comm->recvbuf + (size_t)s * slot[me];
        sqz_status_t         fs = sqz_coll_frame_check(call, fr, mylen, slot[me]);
        if (SQZ_OK == fs && SQZ_OK == local) {
            memcpy(&f, fr, sizeof(f));
            fs = sqz_coll_decode(call, 0, fr, y, mylen);
            fs = SQZ_OK == fs ? SQZ_OK : SQZ_ERR_CORRUPT;
        }
        local = sqz_coll_worse(local, fs);
    }
    tb = sqz_time_now();
    t_comp += tb - ta;
    SQZ_TRANSPORT_CHECK_GOTO(sqz_p2p_wait_all(t, sreq, P), st, out);
    ta = sqz_time_now();
    t_comm += ta - tb;

    if (call->block) {
        /* Reduce-scatter: agree on the verdicts with one small all-gather. */
        int32_t  v   = (SQZ_OK == local) ? 0 : (SQZ_ERR_NONFINITE == local ? 2 : 1);
        int32_t *all = (int32_t *)comm->recvbuf;
        for (int r = 0; r < P; r++) {
            tmp[r]  = sizeof(int32_t);
            rdis[r] = (size_t)r * sizeof(int32_t);
        }
        SQZ_TRANSPORT_CHECK_GOTO(t->allgatherv(t->self, &v, sizeof(v), all, tmp, rdis), st, out);
        for (int r = 0; r < P; r++) {
            st = sqz_coll_worse(st, 0 == all[r] ? SQZ_OK : (2 == all[r] ? SQZ_ERR_NONFINITE : SQZ_ERR_CORRUPT));
        }
        if (SQZ_OK == st) {
            memcpy(call->out, y, mylen * sizeof(float));
        }
        t_comm += sqz_time_now() - ta;
        goto restore;
    }

    /* ---- phase 2 ---- */
    unsigned char *const mine2 = comm->sendbuf + send1;
    float               *sres  = NULL;
    if (SQZ_OK == local && call->state && !call->exact2) {
        SQZ_CHECK_GOTO(sqz_state_reserve(&comm->store, call->state, 0, mylen ? mylen : 1), st, out);
        sres = call->state->server_residual;
    }
    if (SQZ_OK == local && call->exact2) {
        sqz_coll_exact_encode(call, y, mylen, mine2); /* split all-gather: exact */
    } else if (SQZ_OK == local) {
        (void)sqz_coll_compress(call, 0, y, sres, mylen, 1, mine2, slot[me], NULL, NULL);
    } else {
        /* State the verdict: every rank will see it. */
        sqz_coll_frame_set(call, mine2,
                           SQZ_FRAME_FALLBACK | (SQZ_ERR_NONFINITE == local ? SQZ_FRAME_NONFINITE : 0),
                           mylen, 0);
    }
    tb = sqz_time_now();
    t_comp += tb - ta;
    memcpy(&f, mine2, sizeof(f));
    const size_t len2 = sqz_coll_round8(sizeof(f) + (size_t)f.bytes);
    for (int k = 1; k < P; k++) {
        const int s = (me + P - k) % P, r = (me + k) % P;
        SQZ_TRANSPORT_CHECK_GOTO(t->irecv(t->self, comm->recvbuf + rdis[s], slot2[s], s, NULL, &rreq[s]), st, out);
        SQZ_TRANSPORT_CHECK_GOTO(t->isend(t->self, mine2, len2, r, &sreq[r]), st, out);
    }
    call->cs.bytes_sent += len2 * (size_t)(P - 1);
    memcpy(comm->recvbuf + rdis[me], mine2, len2);
    /* When out is not in, decoding as chunks arrive is safe: a late fallback rewrites all of out
     * from in.  In place, nothing is written before every verdict is known. */
    const int stream = !call->out_is_input;
    for (int s = 0; s < P; s++) {
        tb = sqz_time_now();
        SQZ_TRANSPORT_CHECK_GOTO(sqz_p2p_wait(t, &rreq[s]), st, out);
        ta = sqz_time_now();
        t_comm += ta - tb;
        const unsigned char *fr = comm->recvbuf + rdis[s];
        sqz_status_t         fs = sqz_coll_frame_check(call, fr, len[s], slot2[s]);
        if (SQZ_OK == fs) {
            memcpy(&f, fr, sizeof(f));
            /* Streaming, decoding is the validation (nothing is written on failure, and a later
             * fallback rewrites out anyway); in place, only validate now. */
            float *const dst = (stream && SQZ_OK == st) ? call->out + off[s] : NULL;
            if (dst) {
                memset(dst, 0, len[s] * sizeof(float));
            }
            fs = sqz_coll_decode(call, 0, fr, dst, len[s]);
            fs = SQZ_OK == fs ? SQZ_OK : SQZ_ERR_CORRUPT;
        }
        st = sqz_coll_worse(st, fs);
        t_comp += sqz_time_now() - ta;
    }
    tb = sqz_time_now();
    SQZ_TRANSPORT_CHECK_GOTO(sqz_p2p_wait_all(t, sreq, P), st, out);
    ta = sqz_time_now();
    t_comm += ta - tb;
    if (SQZ_OK != st) {
        sqz_coll_restore(call, y, sres, mylen, mine2);
        goto restore;
    }
    if (!stream) {
        for (int s = 0; s < P; s++) {
            const unsigned char *fr = comm->recvbuf + rdis[s];
            memcpy(&f, fr, sizeof(f));
            memset(call->out + off[s], 0, len[s] * sizeof(float));
            (void)sqz_coll_decode(call, 0, fr, call->out + off[s], len[s]);
        }
        t_comp += sqz_time_now() - ta;
    }
restore:
    if (SQZ_OK != st) {
        call->cs.nonfinite = (SQZ_ERR_NONFINITE == st);
        sqz_coll_restore_chunks(call, P, off, len, comm->sendbuf, sdis);
    }
    call->cs.t_comm += t_comm;
    call->cs.t_compress += t_comp;
    return st;
out:
    /* A transport failure: the ranks may no longer agree; the engine reports it. */
    return SQZ_OK == st ? SQZ_ERR_TRANSPORT : st;
}
