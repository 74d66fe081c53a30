/* The coded token all-to-all-v of LSH-MoE (sqz_coll.h).  Payload sizes depend on the data.  With
 * the transport's point-to-point messages (and SQZ_PIPELINE) there is one round: every receive is
 * posted for its bound (the RAW size of the tokens the receiver expects) and learns the real size
 * on completion, each block is sent as soon as it is encoded, and blocks are decoded while later
 * ones are still arriving.  Without them the sizes travel first (one small all-to-all), then the
 * blocks (one all-to-all-v).  Either way each block is sent once to its destination and decoded
 * there straight into the caller's receive buffer at the caller's displacement. */
#include "config.h"

#include <string.h>

#include "sqz_coll.h"
#include "sqz_log.h"

/* EXACT: the bytes as they are, in one all-to-all-v. */
static sqz_status_t sqz_a2a_exact(sqz_a2a_call_t *call, size_t rowbytes)
{
    sqz_comm_t *const comm = call->comm;
    const int         P    = comm->nranks;
    size_t *const     sb = comm->moe->bytes, *const sd = sb + P, *const rb = sb + 2 * P,
                  *const rd = sb + 3 * P;
    for (int r = 0; r < P; r++) {
        sb[r] = call->scounts[r] * rowbytes;
        sd[r] = call->sdispls[r] * rowbytes;
        rb[r] = call->rcounts[r] * rowbytes;
        rd[r] = call->rdispls[r] * rowbytes;
        if (r != comm->rank) {
            call->cs.tokens += call->scounts[r];
            call->cs.rows += call->scounts[r];
            call->cs.bytes_in += sb[r];
            call->cs.bytes_wire += sb[r];
        }
    }
    const double t0 = sqz_time_now();
    const int    rc = comm->t.alltoallv(comm->t.self, call->sendbuf, sb, sd, call->recvbuf, rb, rd);
    call->cs.seconds_comm += sqz_time_now() - t0;
    return 0 == rc ? SQZ_OK : SQZ_ERR_TRANSPORT;
}

/* Encodes the block for peer r at dst; \return its size in *bytes. */
static sqz_status_t sqz_a2a_encode(sqz_a2a_call_t *call, int r, void *dst, size_t *bytes)
{
    sqz_moe_comm_t *const m     = call->comm->moe;
    const size_t          es    = sqz_tok_esize(call->dtype);
    const unsigned char  *src   = (const unsigned char *)call->sendbuf +
                               call->sdispls[r] * call->width * es;
    const size_t          n     = call->scounts[r];
    if (SQZ_MOE_LSH == call->codec) {
        return sqz_lsh_encode(m->lsh, (const float *)(const void *)src, n, dst, bytes, NULL);
    }
    return sqz_dedup_encode(m->scratch, src, n, call->width, call->dtype, dst, bytes);
}

/* Encodes the block for peer r into its send slot, hands it to call->encoded and counts it. */
static sqz_status_t sqz_a2a_encode_peer(sqz_a2a_call_t *call, int r, size_t rowbytes)
{
    sqz_comm_t *const   comm = call->comm;
    size_t *const       sb = comm->moe->bytes, *const sd = sb + comm->nranks;
    unsigned char *const blk = comm->scratch.sendbuf + sd[r];
    SQZ_CHECK(sqz_a2a_encode(call, r, blk, &sb[r]));
    if (call->encoded) {
        call->encoded(call->arg, r, blk);
    }
    sqz_tok_view_t v;
    sqz_tok_view(blk, &v);
    call->cs.tokens += call->scounts[r];
    call->cs.rows += v.rows;
    call->cs.bytes_in += call->scounts[r] * rowbytes;
    call->cs.bytes_wire += sb[r];
    return SQZ_OK;
}

/* Validates and decodes the block of `bytes` bytes received from peer r (in its receive slot). */
static sqz_status_t sqz_a2a_decode_peer(sqz_a2a_call_t *call, int r, size_t bytes, size_t rowbytes)
{
    sqz_comm_t *const comm = call->comm;
    const size_t     *rd   = comm->moe->bytes + 3 * comm->nranks;
    if (bytes < SQZ_TOKFRAME_HEADER ||
        bytes > sqz_tok_raw_bytes(call->rcounts[r], call->width, call->dtype)) {
        /* Its count and ours disagree (an erroneous program, or other settings there). */
        SQZ_ERROR("MoE all-to-all: rank %d announces a block of %zu bytes for %zu tokens", r, bytes,
                  call->rcounts[r]);
        return SQZ_ERR_MISMATCH;
    }
    void *const dst = (unsigned char *)call->recvbuf + call->rdispls[r] * rowbytes;
    if (SQZ_OK != sqz_tok_decode(comm->scratch.recvbuf + rd[r], bytes, call->rcounts[r],
                                 call->width, call->dtype, dst)) {
        SQZ_LOG_ONCE(SQZ_LOG_ERROR, "MoE all-to-all: a malformed block from rank %d", r);
        return SQZ_ERR_CORRUPT;
    }
    return SQZ_OK;
}

/* The block to self never leaves: copied exactly. */
static sqz_status_t sqz_a2a_copy_self(sqz_a2a_call_t *call, size_t rowbytes)
{
    const int me = call->comm->rank;
    if (call->scounts[me] != call->rcounts[me]) {
        return SQZ_ERR_INVALID_PARAM;
    }
    memcpy((unsigned char *)call->recvbuf + call->rdispls[me] * rowbytes,
           (const unsigned char *)call->sendbuf + call->sdispls[me] * rowbytes,
           call->scounts[me] * rowbytes);
    return SQZ_OK;
}

/* Two rounds over the collectives: every block encoded, the sizes (8 bytes to every rank, self
 * included, to keep one plain all-to-all), the blocks, then every block decoded. */
static sqz_status_t sqz_a2a_two_rounds(sqz_a2a_call_t *call, size_t rowbytes)
{
    sqz_comm_t *const comm = call->comm;
    const int         P    = comm->nranks, me = comm->rank;
    size_t *const     sb = comm->moe->bytes, *const sd = sb + P, *const rb = sb + 2 * P,
                  *const rd = sb + 3 * P;
    uint64_t *const szout = comm->moe->sizes, *const szin = szout + P;
    sqz_status_t    st    = SQZ_OK;
    const double    t0    = sqz_time_now();
    for (int r = 0; r < P; r++) {
        sb[r] = 0;
        if (r != me) {
            SQZ_CHECK(sqz_a2a_encode_peer(call, r, rowbytes));
        }
    }
    /* (before the exchanges, which may take a while; sendbuf and recvbuf do not overlap) */
    SQZ_CHECK(sqz_a2a_copy_self(call, rowbytes));
    const double t1 = sqz_time_now();
    call->cs.seconds_compress += t1 - t0;

    /* 2P of the engine's 7P */
    size_t *const eb = comm->scratch.counts, *const ed = comm->scratch.counts + P;
    for (int r = 0; r < P; r++) {
        szout[r] = sb[r];
        eb[r]    = sizeof(uint64_t);
        ed[r]    = (size_t)r * sizeof(uint64_t);
    }
    SQZ_TRANSPORT_CHECK_GOTO(comm->t.alltoallv(comm->t.self, szout, eb, ed, szin, eb, ed), st, out);
    for (int r = 0; r < P; r++) {
        rb[r] = r == me ? 0 : (size_t)szin[r];
        if (r != me && (rb[r] < SQZ_TOKFRAME_HEADER ||
                        rb[r] > sqz_tok_raw_bytes(call->rcounts[r], call->width, call->dtype))) {
            SQZ_ERROR("MoE all-to-all: rank %d announces a block of %zu bytes for %zu tokens",
                      r, rb[r], call->rcounts[r]);
            return SQZ_ERR_MISMATCH;
        }
    }
    SQZ_TRANSPORT_CHECK_GOTO(comm->t.alltoallv(comm->t.self, comm->scratch.sendbuf, sb, sd,
                                               comm->scratch.recvbuf, rb, rd),
                             st, out);
    const double t2 = sqz_time_now();
    call->cs.seconds_comm += t2 - t1;
    for (int r = 0; r < P; r++) {
        if (r != me) {
            st = sqz_coll_worse(st, sqz_a2a_decode_peer(call, r, rb[r], rowbytes));
        }
    }
    call->cs.seconds_compress += sqz_time_now() - t2;
out:
    return st;
}

/* One round over point-to-point messages.  Every receive is posted first, for its bound (a peer
 * that sends more than our count allows fails the receive: SQZ_ERR_TRANSPORT); the block for peer
 * me + k is encoded and sent while the earlier ones travel, and the block of peer me - k is decoded
 * when it has arrived, in that order (the order in which the peers send to us).  Every request is
 * completed before returning, also after a malformed block. */
static sqz_status_t sqz_a2a_p2p(sqz_a2a_call_t *call, size_t rowbytes)
{
    sqz_comm_t *const      comm = call->comm;
    const sqz_transport_t *t    = &comm->t;
    const int              P    = comm->nranks, me = comm->rank;
    size_t *const          sb = comm->moe->bytes, *const sd = sb + P, *const rb = sb + 2 * P,
                  *const rd = sb + 3 * P;
    sqz_status_t           st = SQZ_OK;
    double                 tc = 0;
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->scratch.taskbuf, &comm->scratch.taskcap,
                                  2 * (size_t)P * sizeof(void *)));
    void **const sreq = (void **)comm->scratch.taskbuf, **const rreq = sreq + P;
    memset(sreq, 0, 2 * (size_t)P * sizeof(void *));
    const double t0 = sqz_time_now();
    for (int k = 1; k < P; k++) {
        const int s = (me + P - k) % P;
        rb[s]       = 0;
        SQZ_TRANSPORT_CHECK_GOTO(t->irecv(t->self, comm->scratch.recvbuf + rd[s],
                                          sqz_tok_raw_bytes(call->rcounts[s], call->width, call->dtype),
                                          s, &rb[s], &rreq[s]),
                                 st, fail);
    }
    for (int k = 1; k < P; k++) {
        const int    r  = (me + k) % P;
        const double ta = sqz_time_now();
        SQZ_CHECK_GOTO(sqz_a2a_encode_peer(call, r, rowbytes), st, fail);
        tc += sqz_time_now() - ta;
        SQZ_TRANSPORT_CHECK_GOTO(
            t->isend(t->self, comm->scratch.sendbuf + sd[r], sb[r], r, &sreq[r]), st, fail);
    }
    SQZ_CHECK_GOTO(sqz_a2a_copy_self(call, rowbytes), st, fail);
    for (int k = 1; k < P; k++) {
        const int s = (me + P - k) % P;
        SQZ_TRANSPORT_CHECK_GOTO(t->wait(t->self, rreq[s]), st, fail);
        rreq[s]         = NULL;
        const double ta = sqz_time_now();
        st              = sqz_coll_worse(st, sqz_a2a_decode_peer(call, s, rb[s], rowbytes));
        tc += sqz_time_now() - ta;
    }
    for (int r = 0; r < P; r++) {
        if (sreq[r]) {
            SQZ_TRANSPORT_CHECK_GOTO(t->wait(t->self, sreq[r]), st, fail);
            sreq[r] = NULL;
        }
    }
    call->cs.seconds_compress += tc;
    call->cs.seconds_comm += sqz_time_now() - t0 - tc;
    return st;
fail:
    /* Complete what was started (a request left behind would write into our scratch later). */
    for (int r = 0; r < 2 * P; r++) {
        if (sreq[r]) {
            (void)t->wait(t->self, sreq[r]);
        }
    }
    return st;
}

sqz_status_t sqz_coll_alltoallv_tokens(sqz_a2a_call_t *call)
{
    sqz_comm_t *const comm     = call->comm;
    const int         P        = comm->nranks, me = comm->rank;
    const size_t      rowbytes = call->width * sqz_tok_esize(call->dtype);
    if (SQZ_MOE_EXACT == call->codec) {
        return sqz_a2a_exact(call, rowbytes);
    }
    size_t *const sb = comm->moe->bytes, *const sd = sb + P, *const rd = sb + 3 * P;

    /* Layout: each peer's block in a slot of its bound (the RAW size), 8-byte aligned. */
    size_t stotal = 0, rtotal = 0;
    for (int r = 0; r < P; r++) {
        sd[r] = stotal;
        rd[r] = rtotal;
        sb[r] = 0;
        if (r != me) {
            stotal += sqz_coll_round8(sqz_tok_raw_bytes(call->scounts[r], call->width, call->dtype));
            rtotal += sqz_coll_round8(sqz_tok_raw_bytes(call->rcounts[r], call->width, call->dtype));
        }
    }
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->scratch.sendbuf, &comm->scratch.sendcap,
                                  stotal ? stotal : 8));
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->scratch.recvbuf, &comm->scratch.recvcap,
                                  rtotal ? rtotal : 8));
    if (comm->p2p && comm->ctx->p.pipeline) {
        return sqz_a2a_p2p(call, rowbytes);
    }
    return sqz_a2a_two_rounds(call, rowbytes);
}
