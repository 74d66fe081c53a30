/* Scatter-reduce / all-gather with re-compression (CGX max-min quantization, 1-bit Adam's
 * two-phase sign all-reduce).
 *
 * Phase 1 (all-to-all): the vector is cut into one chunk per rank; chunk r is compressed (with the
 * worker residual) and sent to rank r, which sums what it receives in rank order, its own chunk
 * decoded from its compressed form like every other.
 * Phase 2 (all-gather): each rank compresses its reduced chunk again (with the server residual of
 * that chunk) and all-gathers it; every rank decodes every chunk from the same bytes.
 * A reduce-scatter stops after phase 1.
 *
 * Transfer sizes.  Each payload is compressed into a slot of the compressor's max_payload bound,
 * and only the bytes it holds travel.  A receiver must know them before the transport moves
 * anything (alltoallv/allgatherv take exact counts), so:
 *  - fixed-size payloads (sqz_coll_fixed_size: quant, sign, qsgd, ... without an entropy stage)
 *    fill their slots exactly: every rank knows every count in advance and no size is exchanged;
 *  - variable-size payloads (lossless, any payload behind SQZ_ENTROPY) first exchange their sizes:
 *    phase 1 with an all-to-all of one 8-byte size per peer (each receiver needs only the sizes of
 *    what it receives: the smallest exchange that tells it), phase 2 with an all-gather of one
 *    size per rank.  No exchange that already happens can carry them: the shared-value all-gather
 *    (TernGrad) runs before anything is compressed, and the reduce-scatter's verdict all-gather
 *    after phase 1.  Each costs one latency-bound round against up to (slot - size) bytes saved
 *    per peer, e.g. ZSTD_compressBound's margin plus what zstd saves for lossless.
 * The pipelined exchange (sqz_coll_reduce_scatter_p2p.c) needs neither: a receive accepts fewer
 * bytes than it posted. */
#include "config.h"

#include <string.h>

#include "sqz_coll.h"
#include "sqz_log.h"
#include "sqz_pool.h"

/* Chunk boundaries are multiples of this many elements, so that the buckets of a quantizer stay
 * aligned with the chunks and the vector loops start aligned. */
#define SQZ_CHUNK_QUANTUM 512

void sqz_rs_layout(const sqz_coll_call_t *call, size_t *off, size_t *len)
{
    const int    P = call->comm->nranks;
    const size_t n = call->n;
    if (call->block) {
        for (int r = 0; r < P; r++) {
            off[r] = (size_t)r * call->block;
            len[r] = call->block;
        }
        return;
    }
    size_t per = (n + (size_t)P - 1) / (size_t)P;
    per        = (per + SQZ_CHUNK_QUANTUM - 1) / SQZ_CHUNK_QUANTUM * SQZ_CHUNK_QUANTUM;
    for (int r = 0; r < P; r++) {
        const size_t a = (size_t)r * per < n ? (size_t)r * per : n;
        const size_t b = a + per < n ? a + per : n;
        off[r]         = a;
        len[r]         = b - a;
    }
}

/* Per-chunk work handed to the thread pool: chunk r lives at buf + dis[r]. */
typedef struct {
    const sqz_coll_call_t *call;
    const size_t          *off, *len, *slot, *dis;
    unsigned char         *buf;
    sqz_status_t          *status; /* compress: one per chunk */
    double                *norms;  /* compress: two per chunk */
} sqz_rs_job_t;

static void sqz_rs_compress_task(size_t r, int worker, void *arg)
{
    const sqz_rs_job_t    *j    = arg;
    const sqz_coll_call_t *call = j->call;
    j->status[r] = sqz_coll_compress(call, worker, call->in + j->off[r],
                                     call->residual ? call->residual + j->off[r] : NULL, j->len[r],
                                     0, j->buf + j->dis[r], j->slot[r], j->norms + 2 * r,
                                     call->comm->sharedptr[r]);
}

/* Phase 2: chunk r of the output from its all-gathered payload (validated before). */
static void sqz_rs_decode_task(size_t r, int worker, void *arg)
{
    const sqz_rs_job_t    *j    = arg;
    const sqz_coll_call_t *call = j->call;
    const unsigned char   *fr   = j->buf + j->dis[r];
    sqz_frame_t            f;
    memcpy(&f, fr, sizeof(f));
    memset(call->out + j->off[r], 0, j->len[r] * sizeof(float));
    (void)sqz_coll_decode(call, worker, fr, call->out + j->off[r], j->len[r]);
}

sqz_status_t sqz_coll_reduce_scatter(sqz_coll_call_t *call)
{
    sqz_comm_t *const comm = call->comm;
    const int         P    = comm->nranks;
    const int         me   = comm->rank;
    size_t *const     off  = comm->counts;         /* P */
    size_t *const     len  = comm->counts + P;     /* P */
    size_t *const     slot = comm->counts + 2 * P; /* P */
    size_t *const     sdis = comm->counts + 3 * P; /* P */
    size_t *const     rcnt = comm->counts + 4 * P; /* P */
    size_t *const     rdis = comm->counts + 5 * P; /* P */
    size_t *const     scnt = comm->counts + 6 * P; /* P: phase-1 bytes sent to each rank */
    const int         fixed = sqz_coll_fixed_size(call);
    sqz_status_t      st   = SQZ_OK;
    sqz_frame_t       f;

    sqz_rs_layout(call, off, len);
    size_t send1 = 0;
    for (int r = 0; r < P; r++) {
        slot[r] = sqz_coll_round8(sizeof(sqz_frame_t) + call->c->max_payload(call->cstate, len[r]));
        sdis[r] = send1;
        send1 += slot[r];
    }
    const size_t mylen = len[me];
    /* sendbuf: phase-1 slots, then this rank's phase-2 slot (phase-1 payloads are kept until the
     * end: a fallback needs them to restore the residual). */
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->sendbuf, &comm->sendcap, send1 + slot[me]));
    const size_t recv1 = (size_t)P * slot[me];
    size_t       recv2 = 0;
    for (int r = 0; r < P; r++) {
        recv2 += slot[r];
    }
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->recvbuf, &comm->recvcap,
                                  recv1 > recv2 ? recv1 : recv2));
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->chunkbuf, &comm->chunkcap,
                                  (mylen ? mylen : 1) * sizeof(float)));
    /* taskbuf: 2P norms, 2P sizes (the phase-1 row this rank sends, the column it receives), then
     * P statuses. */
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->taskbuf, &comm->taskcap,
                                  (size_t)P * (sizeof(sqz_status_t) + 2 * sizeof(double) +
                                               2 * sizeof(uint64_t)) + 16));
    float *const    y    = comm->chunkbuf;
    uint64_t *const srow = (uint64_t *)(comm->taskbuf + 2 * (size_t)P * sizeof(double));
    uint64_t *const rcol = srow + P;

    /* ---- phase 1: compress every chunk (in parallel with SQZ_THREADS) ---- */
    SQZ_CHECK(sqz_coll_shared(call, P, off, len, comm->sharedptr));
    double      t0 = sqz_time_now();
    sqz_rs_job_t job = {.call = call, .off = off, .len = len, .slot = slot, .dis = sdis,
                        .buf = comm->sendbuf, .norms = (double *)comm->taskbuf,
                        .status = (sqz_status_t *)(rcol + P)};
    sqz_pool_run(comm->pool, (size_t)P, sqz_rs_compress_task, &job);
    int          failed = -1;
    sqz_status_t cst    = SQZ_OK;
    for (int r = 0; r < P; r++) {
        call->cs.norm2_in += job.norms[2 * r];
        call->cs.norm2_err += job.norms[2 * r + 1];
        if (SQZ_OK != job.status[r] && (failed < 0 || SQZ_ERR_NONFINITE == job.status[r])) {
            failed = r;
            cst    = job.status[r];
        }
    }
    if (failed >= 0) {
        /* Some chunk failed: this whole rank asks for the dense path.  Undo the chunks that were
         * compressed (their frames say so) and mark every frame. */
        sqz_coll_restore_chunks(call, P, off, len, comm->sendbuf, sdis);
        for (int r = 0; r < P; r++) {
            sqz_coll_frame_set(call, comm->sendbuf + sdis[r],
                               SQZ_FRAME_FALLBACK | (SQZ_ERR_NONFINITE == cst ? SQZ_FRAME_NONFINITE : 0),
                               len[r], 0);
        }
    }
    for (int r = 0; r < P; r++) {
        memcpy(&f, comm->sendbuf + sdis[r], sizeof(f));
        call->cs.bytes_wire += sizeof(f) + (size_t)f.bytes;
        scnt[r] = fixed ? slot[r] : sqz_coll_round8(sizeof(f) + (size_t)f.bytes);
        srow[r] = scnt[r];
        call->cs.bytes_sent += (r == me) ? 0 : scnt[r];
    }
    double t1 = sqz_time_now();
    call->cs.t_compress += t1 - t0;
    if (fixed) {
        for (int r = 0; r < P; r++) {
            rcnt[r] = slot[me];
        }
    } else {
        /* rcnt/rdis serve as the size exchange's counts before they get the payloads'. */
        for (int r = 0; r < P; r++) {
            rcnt[r] = sizeof(uint64_t);
            rdis[r] = (size_t)r * sizeof(uint64_t);
        }
        SQZ_TRANSPORT_CHECK_GOTO(comm->t.alltoallv(comm->t.self, srow, rcnt, rdis, rcol, rcnt, rdis),
                                 st, out);
        call->cs.bytes_sent += (size_t)(P - 1) * sizeof(uint64_t);
        for (int r = 0; r < P; r++) {
            rcnt[r] = (size_t)rcol[r];
        }
    }
    size_t recv1n = 0;
    for (int r = 0; r < P; r++) {
        rdis[r] = recv1n;
        recv1n += rcnt[r];
    }
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->recvbuf, &comm->recvcap, recv1n));
    SQZ_TRANSPORT_CHECK_GOTO(comm->t.alltoallv(comm->t.self, comm->sendbuf, scnt, sdis, comm->recvbuf,
                                               rcnt, rdis),
                             st, out);
    double t2 = sqz_time_now();
    call->cs.t_comm += t2 - t1;

    /* Every rank received one frame from every rank: fallback requests are seen by all. */
    sqz_status_t local = SQZ_OK; /* reasons only this rank can see: malformed payloads */
    for (int s = 0; s < P; s++) {
        const unsigned char *fr = comm->recvbuf + rdis[s];
        if (rcnt[s] < sizeof(sqz_frame_t) || rcnt[s] > slot[me]) {
            local = SQZ_ERR_CORRUPT; /* an announced size out of bounds: not even a frame to read */
            continue;
        }
        const sqz_status_t fs = sqz_coll_frame_check(call, fr, mylen, rcnt[s]);
        if (SQZ_OK != fs) {
            st = sqz_coll_worse(st, fs);
            continue;
        }
        memcpy(&f, fr, sizeof(f));
        if (SQZ_OK != sqz_coll_decode(call, 0, fr, NULL, mylen)) {
            local = SQZ_ERR_CORRUPT;
        }
    }
    if (SQZ_OK == st && SQZ_OK == local) {
        memset(y, 0, mylen * sizeof(float));
        for (int s = 0; s < P; s++) {
            (void)sqz_coll_decode(call, 0, comm->recvbuf + rdis[s], y, mylen);
        }
    }
    double t3 = sqz_time_now();
    call->cs.t_compress += t3 - t2;

    if (call->block) {
        /* Reduce-scatter: a malformed payload is seen by its receiver only; agree on it with one
         * small all-gather before anybody keeps a result. */
        if (SQZ_OK == st) {
            int32_t  mine = (SQZ_OK == local) ? 0 : 1;
            int32_t *all  = (int32_t *)comm->recvbuf; /* phase-1 data is no longer needed */
            for (int r = 0; r < P; r++) {
                rcnt[r] = sizeof(int32_t);
                rdis[r] = (size_t)r * sizeof(int32_t);
            }
            SQZ_TRANSPORT_CHECK_GOTO(comm->t.allgatherv(comm->t.self, &mine, sizeof(mine), all, rcnt, rdis),
                                     st, out);
            for (int r = 0; r < P; r++) {
                st = sqz_coll_worse(st, all[r] ? SQZ_ERR_CORRUPT : SQZ_OK);
            }
            call->cs.t_comm += sqz_time_now() - t3;
        }
        if (SQZ_OK == st) {
            memcpy(call->out, y, mylen * sizeof(float));
        }
        goto restore;
    }

    /* ---- phase 2: compress the reduced chunk again and all-gather it ---- */
    if (SQZ_OK != st) {
        goto restore; /* every rank knows already: no need to run phase 2 */
    }
    unsigned char *const mine2 = comm->sendbuf + send1;
    float               *sres  = NULL;
    if (call->state) {
        SQZ_CHECK(sqz_state_reserve(&comm->store, call->state, 0, mylen ? mylen : 1));
        sres = call->state->server_residual;
    }
    if (SQZ_OK == local) {
        (void)sqz_coll_compress(call, 0, y, sres, mylen, 1, mine2, slot[me], NULL, NULL);
    } else {
        sqz_coll_frame_set(call, mine2, SQZ_FRAME_FALLBACK, mylen, 0);
    }
    double t4 = sqz_time_now();
    call->cs.t_compress += t4 - t3;
    size_t *const cnt2 = rcnt; /* phase-2 bytes from each rank (phase 1's counts are spent) */
    sqz_status_t  st2  = SQZ_OK;
    if (fixed) {
        memcpy(cnt2, slot, (size_t)P * sizeof(size_t));
    } else {
        memcpy(&f, mine2, sizeof(f));
        const uint64_t my2 = sqz_coll_round8(sizeof(f) + (size_t)f.bytes);
        for (int r = 0; r < P; r++) {
            cnt2[r] = sizeof(uint64_t);
            rdis[r] = (size_t)r * sizeof(uint64_t);
        }
        SQZ_TRANSPORT_CHECK_GOTO(comm->t.allgatherv(comm->t.self, &my2, sizeof(my2), rcol, cnt2, rdis),
                                 st, out);
        call->cs.bytes_sent += (size_t)(P - 1) * sizeof(uint64_t);
        for (int r = 0; r < P; r++) {
            cnt2[r] = (size_t)rcol[r];
            if (cnt2[r] < sizeof(sqz_frame_t) || cnt2[r] > slot[r]) {
                /* Every rank sees the same sizes and clamps them alike (the sender its own send
                 * too), so the exchange stays aligned and all fall back together. */
                st2     = SQZ_ERR_CORRUPT;
                cnt2[r] = cnt2[r] < sizeof(sqz_frame_t) ? sizeof(sqz_frame_t) : slot[r];
            }
        }
    }
    size_t total = 0;
    for (int r = 0; r < P; r++) {
        rdis[r] = total;
        total += cnt2[r];
    }
    call->cs.bytes_sent += cnt2[me] * (size_t)(P - 1);
    SQZ_TRANSPORT_CHECK_GOTO(comm->t.allgatherv(comm->t.self, mine2, cnt2[me], comm->recvbuf, cnt2, rdis),
                             st, out);
    double t5 = sqz_time_now();
    call->cs.t_comm += t5 - t4;
    for (int r = 0; r < P; r++) {
        const unsigned char *fr = comm->recvbuf + rdis[r];
        sqz_status_t         fs = sqz_coll_frame_check(call, fr, len[r], cnt2[r]);
        if (SQZ_OK == fs) {
            memcpy(&f, fr, sizeof(f));
            fs = sqz_coll_decode(call, 0, fr, NULL, len[r]);
        }
        st2 = sqz_coll_worse(st2, fs);
    }
    /* Phase-1 reasons are already known to all; phase-2 frames carry everybody's local ones. */
    st = sqz_coll_worse(st, st2);
    if (SQZ_OK != st) {
        sqz_coll_restore(call, y, sres, mylen, mine2);
        goto restore;
    }
    sqz_rs_job_t dec = {.call = call, .off = off, .len = len, .slot = slot, .dis = rdis,
                        .buf = comm->recvbuf};
    sqz_pool_run(comm->pool, (size_t)P, sqz_rs_decode_task, &dec);
    call->cs.t_compress += sqz_time_now() - t5;
restore:
    if (SQZ_OK != st) {
        call->cs.nonfinite = (SQZ_ERR_NONFINITE == st);
        if (failed < 0) {
            sqz_coll_restore_chunks(call, P, off, len, comm->sendbuf, sdis);
        }
    }
out:
    return st;
}
