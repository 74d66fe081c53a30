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

/* Chunk r of a call: its first element and its length. */
static void sqz_rs_chunk(const sqz_coll_call_t *call, int r, size_t *off, size_t *len)
{
    const int    P = call->comm->nranks;
    const size_t n = call->n;
    if (call->block) {
        *off = (size_t)r * call->block, *len = call->block;
        return;
    }
    size_t per = (n + (size_t)P - 1) / (size_t)P;
    per        = (per + SQZ_CHUNK_QUANTUM - 1) / SQZ_CHUNK_QUANTUM * SQZ_CHUNK_QUANTUM;
    const size_t a = (size_t)r * per < n ? (size_t)r * per : n;
    const size_t b = a + per < n ? a + per : n;
    *off = a, *len = b - a;
}

void sqz_rs_layout(const sqz_coll_call_t *call, size_t *off, size_t *len)
{
    for (int r = 0; r < call->comm->nranks; r++) {
        sqz_rs_chunk(call, r, &off[r], &len[r]);
    }
}

void sqz_rs_need(const sqz_coll_call_t *call, const size_t *len, const size_t *slot,
                 const size_t *slot2, sqz_scratch_need_t *need)
{
    const size_t P = (size_t)call->comm->nranks;
    size_t       maxlen = 1, max1 = 0, max2 = 0, recv2 = 0;
    for (size_t r = 0; r < P; r++) {
        maxlen = len[r] > maxlen ? len[r] : maxlen;
        max1   = slot[r] > max1 ? slot[r] : max1;
        max2   = slot2[r] > max2 ? slot2[r] : max2;
        recv2 += slot2[r];
    }
    const size_t dense = sqz_coll_dense_scratch(call);
    *need = (sqz_scratch_need_t){
        .send   = max2,
        .recv   = P * max1 > recv2 ? P * max1 : recv2,
        .chunk  = maxlen * sizeof(float) > dense ? maxlen * sizeof(float) : dense,
        .shared = sqz_coll_shared_scratch(call, (int)P, len)};
}

sqz_status_t sqz_rs_reserve_server(sqz_coll_call_t *call)
{
    size_t off, len;
    sqz_rs_chunk(call, call->comm->rank, &off, &len);
    /* (a rank whose chunk is empty keeps one element) */
    return sqz_state_reserve(&call->comm->store, call->state, 0, len ? len : 1);
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
                                     call->comm->scratch.sharedptr[r]);
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

/* One call's layout, counts and scratch (rows of comm->counts, comm's scratch buffers). */
typedef struct sqz_rs {
    sqz_coll_call_t *call;
    sqz_comm_t      *comm;
    int              P, me, fixed;
    size_t          *off, *len, *slot; /* chunk r: elements [off, off + len), its payload slot */
    size_t          *sdis, *scnt;      /* phase 1: where chunk r's frame is, the bytes it sends */
    size_t          *rcnt, *rdis;      /* received bytes from each rank, and where */
    size_t           send1, mylen;     /* phase-1 bytes sent; this rank's chunk */
    float           *y;                /* this rank's reduced chunk */
    uint64_t        *srow, *rcol;      /* the size exchanges' rows */
    sqz_status_t     local;            /* what only this rank can see: malformed payloads */
    int              failed;           /* a chunk that failed to compress, or -1 */
} sqz_rs_t;

/* The layout, the slots and the scratch of a call into rs. */
static sqz_status_t sqz_rs_setup(sqz_coll_call_t *call, sqz_rs_t *rs)
{
    sqz_comm_t *const comm = call->comm;
    const int         P    = comm->nranks;
    *rs = (sqz_rs_t){.call = call, .comm = comm, .P = P, .me = comm->rank,
                     .fixed = sqz_coll_fixed_size(call), .off = comm->scratch.counts,
                     .len = comm->scratch.counts + P, .slot = comm->scratch.counts + 2 * P,
                     .sdis = comm->scratch.counts + 3 * P, .rcnt = comm->scratch.counts + 4 * P,
                     .rdis = comm->scratch.counts + 5 * P, .scnt = comm->scratch.counts + 6 * P,
                     .local = SQZ_OK, .failed = -1};
    sqz_rs_layout(call, rs->off, rs->len);
    for (int r = 0; r < P; r++) {
        rs->slot[r] = sqz_coll_round8(sizeof(sqz_frame_t) +
                                      call->c->max_payload(call->cstate, rs->len[r]));
        rs->sdis[r] = rs->send1;
        rs->send1 += rs->slot[r];
    }
    rs->mylen = rs->len[rs->me];
    /* sendbuf: phase-1 slots, then this rank's phase-2 slot (phase-1 payloads are kept until the
     * end: a fallback needs them to restore the residual); recvbuf: this rank's column of phase 1
     * or every rank's phase-2 frame; taskbuf: 2P norms, 2P sizes (the phase-1 row this rank
     * sends, the column it receives), then P statuses.  Every rank's largest chunk, so that the
     * need is the same on every rank. */
    sqz_scratch_need_t need;
    sqz_rs_need(call, rs->len, rs->slot, rs->slot, &need);
    need.send = rs->send1 + need.send;
    need.task = (size_t)P * (sizeof(sqz_status_t) + 2 * sizeof(double) + 2 * sizeof(uint64_t)) +
                16;
    SQZ_CHECK(sqz_coll_reserve(comm, &need));
    rs->y    = comm->scratch.chunkbuf;
    rs->srow = (uint64_t *)(comm->scratch.taskbuf + 2 * (size_t)P * sizeof(double));
    rs->rcol = rs->srow + P;
    return SQZ_OK;
}

/* Phase 1, local: every chunk compressed (in parallel with SQZ_THREADS) into its slot; when one
 * fails, every frame asks for the dense path (and the compressed chunks are undone).  Sets the
 * bytes each peer is sent. */
static sqz_status_t sqz_rs_compress(sqz_rs_t *rs)
{
    sqz_coll_call_t *const call = rs->call;
    sqz_comm_t *const      comm = rs->comm;
    const int              P    = rs->P;
    SQZ_CHECK(sqz_coll_shared(call, P, rs->off, rs->len, comm->scratch.sharedptr));
    const double t0  = sqz_time_now();
    sqz_rs_job_t job = {.call = call, .off = rs->off, .len = rs->len, .slot = rs->slot,
                        .dis = rs->sdis, .buf = comm->scratch.sendbuf,
                        .norms = (double *)comm->scratch.taskbuf,
                        .status = (sqz_status_t *)(rs->rcol + P)};
    sqz_pool_run(comm->pool, (size_t)P, sqz_rs_compress_task, &job);
    sqz_status_t cst = SQZ_OK;
    for (int r = 0; r < P; r++) {
        call->cs.norm2_in += job.norms[2 * r];
        call->cs.norm2_err += job.norms[2 * r + 1];
        if (SQZ_OK != job.status[r] && (rs->failed < 0 || SQZ_ERR_NONFINITE == job.status[r])) {
            rs->failed = r;
            cst        = job.status[r];
        }
    }
    if (rs->failed >= 0) {
        sqz_coll_restore_chunks(call, P, rs->off, rs->len, comm->scratch.sendbuf, rs->sdis);
        for (int r = 0; r < P; r++) {
            sqz_coll_frame_set(call, comm->scratch.sendbuf + rs->sdis[r],
                               SQZ_FRAME_FALLBACK |
                                   (SQZ_ERR_NONFINITE == cst ? SQZ_FRAME_NONFINITE : 0),
                               rs->len[r], 0);
        }
    }
    for (int r = 0; r < P; r++) {
        sqz_frame_t f;
        memcpy(&f, comm->scratch.sendbuf + rs->sdis[r], sizeof(f));
        call->cs.bytes_wire += sizeof(f) + (size_t)f.bytes;
        rs->scnt[r] = rs->fixed ? rs->slot[r] : sqz_coll_round8(sizeof(f) + (size_t)f.bytes);
        rs->srow[r] = rs->scnt[r];
        call->cs.bytes_sent += (r == rs->me) ? 0 : rs->scnt[r];
    }
    call->cs.t_compress += sqz_time_now() - t0;
    return SQZ_OK;
}

/* Phase 1, on the wire: the sizes each rank receives (known in advance for fixed-size payloads,
 * else one all-to-all of sizes), then the all-to-all of the payloads. */
static sqz_status_t sqz_rs_exchange(sqz_rs_t *rs)
{
    sqz_comm_t *const comm = rs->comm;
    const int         P    = rs->P;
    const double      t1   = sqz_time_now();
    if (rs->fixed) {
        for (int r = 0; r < P; r++) {
            rs->rcnt[r] = rs->slot[rs->me];
        }
    } else {
        /* rcnt/rdis serve as the size exchange's counts before they get the payloads'. */
        for (int r = 0; r < P; r++) {
            rs->rcnt[r] = sizeof(uint64_t);
            rs->rdis[r] = (size_t)r * sizeof(uint64_t);
        }
        if (0 != comm->t.alltoallv(comm->t.self, rs->srow, rs->rcnt, rs->rdis, rs->rcol, rs->rcnt,
                                   rs->rdis)) {
            return SQZ_ERR_TRANSPORT;
        }
        rs->call->cs.bytes_sent += (size_t)(P - 1) * sizeof(uint64_t);
        for (int r = 0; r < P; r++) {
            rs->rcnt[r] = (size_t)rs->rcol[r];
        }
    }
    size_t recv1n = 0;
    for (int r = 0; r < P; r++) {
        rs->rdis[r] = recv1n;
        recv1n += rs->rcnt[r];
    }
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->scratch.recvbuf, &comm->scratch.recvcap, recv1n));
    if (0 != comm->t.alltoallv(comm->t.self, comm->scratch.sendbuf, rs->scnt, rs->sdis,
                               comm->scratch.recvbuf, rs->rcnt, rs->rdis)) {
        return SQZ_ERR_TRANSPORT;
    }
    rs->call->cs.t_comm += sqz_time_now() - t1;
    return SQZ_OK;
}

/* Phase 1, received: every frame checked (fallback requests are seen by every rank: each
 * received one frame from each), then this rank's chunk summed into y in rank order.  \return
 * the shared verdict; malformed payloads, seen here only, go to rs->local. */
static sqz_status_t sqz_rs_reduce(sqz_rs_t *rs)
{
    sqz_coll_call_t *const call = rs->call;
    sqz_comm_t *const      comm = rs->comm;
    const double           t2   = sqz_time_now();
    sqz_status_t           st   = SQZ_OK;
    for (int s = 0; s < rs->P; s++) {
        const unsigned char *fr = comm->scratch.recvbuf + rs->rdis[s];
        if (rs->rcnt[s] < sizeof(sqz_frame_t) || rs->rcnt[s] > rs->slot[rs->me]) {
            rs->local = SQZ_ERR_CORRUPT; /* a size out of bounds: not even a frame to read */
            continue;
        }
        const sqz_status_t fs = sqz_coll_frame_check(call, fr, rs->mylen, rs->rcnt[s]);
        if (SQZ_OK != fs) {
            st = sqz_coll_worse(st, fs);
            continue;
        }
        if (SQZ_OK != sqz_coll_decode(call, 0, fr, NULL, rs->mylen)) {
            rs->local = SQZ_ERR_CORRUPT;
        }
    }
    if (SQZ_OK == st && SQZ_OK == rs->local) {
        memset(rs->y, 0, rs->mylen * sizeof(float));
        for (int s = 0; s < rs->P; s++) {
            (void)sqz_coll_decode(call, 0, comm->scratch.recvbuf + rs->rdis[s], rs->y, rs->mylen);
        }
    }
    call->cs.t_compress += sqz_time_now() - t2;
    return st;
}

/* A reduce-scatter ends after phase 1: a malformed payload is seen by its receiver only, so the
 * ranks agree on it with one small all-gather before anybody keeps a result.  \return the
 * verdict (st updated), or SQZ_ERR_TRANSPORT. */
static sqz_status_t sqz_rs_finish_block(sqz_rs_t *rs, sqz_status_t st)
{
    sqz_comm_t *const comm = rs->comm;
    if (SQZ_OK == st) {
        const double t3   = sqz_time_now();
        int32_t      mine = (SQZ_OK == rs->local) ? 0 : 1;
        int32_t     *all  = (int32_t *)comm->scratch.recvbuf; /* phase-1 data is no longer needed */
        for (int r = 0; r < rs->P; r++) {
            rs->rcnt[r] = sizeof(int32_t);
            rs->rdis[r] = (size_t)r * sizeof(int32_t);
        }
        if (0 != comm->t.allgatherv(comm->t.self, &mine, sizeof(mine), all, rs->rcnt, rs->rdis)) {
            return SQZ_ERR_TRANSPORT;
        }
        for (int r = 0; r < rs->P; r++) {
            st = sqz_coll_worse(st, all[r] ? SQZ_ERR_CORRUPT : SQZ_OK);
        }
        rs->call->cs.t_comm += sqz_time_now() - t3;
    }
    if (SQZ_OK == st) {
        memcpy(rs->call->out, rs->y, rs->mylen * sizeof(float));
    }
    return st;
}

/* Phase 2's counts: the bytes each rank all-gathers (its slot for fixed-size payloads, else one
 * all-gather of sizes; sizes out of bounds are clamped alike on every rank, the sender's own send
 * too, so the exchange stays aligned, and all fall back together).  \return SQZ_ERR_CORRUPT for
 * such a size, SQZ_ERR_TRANSPORT, or SQZ_OK. */
static sqz_status_t sqz_rs_phase2_counts(sqz_rs_t *rs, const unsigned char *mine2, size_t *cnt2)
{
    sqz_comm_t *const comm = rs->comm;
    if (rs->fixed) {
        memcpy(cnt2, rs->slot, (size_t)rs->P * sizeof(size_t));
        return SQZ_OK;
    }
    sqz_frame_t f;
    memcpy(&f, mine2, sizeof(f));
    const uint64_t my2 = sqz_coll_round8(sizeof(f) + (size_t)f.bytes);
    for (int r = 0; r < rs->P; r++) {
        cnt2[r]     = sizeof(uint64_t);
        rs->rdis[r] = (size_t)r * sizeof(uint64_t);
    }
    if (0 != comm->t.allgatherv(comm->t.self, &my2, sizeof(my2), rs->rcol, cnt2, rs->rdis)) {
        return SQZ_ERR_TRANSPORT;
    }
    rs->call->cs.bytes_sent += (size_t)(rs->P - 1) * sizeof(uint64_t);
    sqz_status_t st = SQZ_OK;
    for (int r = 0; r < rs->P; r++) {
        cnt2[r] = (size_t)rs->rcol[r];
        if (cnt2[r] < sizeof(sqz_frame_t) || cnt2[r] > rs->slot[r]) {
            st      = SQZ_ERR_CORRUPT;
            cnt2[r] = cnt2[r] < sizeof(sqz_frame_t) ? sizeof(sqz_frame_t) : rs->slot[r];
        }
    }
    return st;
}

/* Phase 2 (all-reduce): the reduced chunk compressed again (with the chunk's server residual
 * sres, or none) and all-gathered; every rank checks every frame, then decodes every chunk from the same bytes.
 * A rank whose phase 1 saw a malformed payload sends a fallback frame instead: phase-2 frames
 * carry every rank's local reasons.  \return the verdict, or SQZ_ERR_TRANSPORT. */
static sqz_status_t sqz_rs_phase2(sqz_rs_t *rs, float *sres)
{
    sqz_coll_call_t *const call  = rs->call;
    sqz_comm_t *const      comm  = rs->comm;
    const int              me    = rs->me;
    unsigned char *const   mine2 = comm->scratch.sendbuf + rs->send1;
    const double           t3    = sqz_time_now();
    if (SQZ_OK == rs->local) {
        (void)sqz_coll_compress(call, 0, rs->y, sres, rs->mylen, 1, mine2, rs->slot[me], NULL,
                                NULL);
    } else {
        sqz_coll_frame_set(call, mine2, SQZ_FRAME_FALLBACK, rs->mylen, 0);
    }
    const double t4 = sqz_time_now();
    call->cs.t_compress += t4 - t3;
    size_t *const cnt2 = rs->rcnt; /* phase-2 bytes from each rank (phase 1's counts are spent) */
    sqz_status_t  st   = sqz_rs_phase2_counts(rs, mine2, cnt2);
    if (SQZ_ERR_TRANSPORT == st) {
        return st;
    }
    size_t total = 0;
    for (int r = 0; r < rs->P; r++) {
        rs->rdis[r] = total;
        total += cnt2[r];
    }
    call->cs.bytes_sent += cnt2[me] * (size_t)(rs->P - 1);
    if (0 != comm->t.allgatherv(comm->t.self, mine2, cnt2[me], comm->scratch.recvbuf, cnt2,
                                rs->rdis)) {
        return SQZ_ERR_TRANSPORT;
    }
    const double t5 = sqz_time_now();
    call->cs.t_comm += t5 - t4;
    for (int r = 0; r < rs->P; r++) {
        const unsigned char *fr = comm->scratch.recvbuf + rs->rdis[r];
        sqz_status_t         fs = sqz_coll_frame_check(call, fr, rs->len[r], cnt2[r]);
        if (SQZ_OK == fs) {
            fs = sqz_coll_decode(call, 0, fr, NULL, rs->len[r]);
        }
        st = sqz_coll_worse(st, fs);
    }
    if (SQZ_OK != st) {
        sqz_coll_restore(call, rs->y, sres, rs->mylen, mine2);
        return st;
    }
    sqz_rs_job_t dec = {.call = call, .off = rs->off, .len = rs->len, .slot = rs->slot,
                        .dis = rs->rdis, .buf = comm->scratch.recvbuf};
    sqz_pool_run(comm->pool, (size_t)rs->P, sqz_rs_decode_task, &dec);
    call->cs.t_compress += sqz_time_now() - t5;
    return SQZ_OK;
}

sqz_status_t sqz_coll_reduce_scatter(sqz_coll_call_t *call)
{
    sqz_rs_t rs;
    SQZ_CHECK(sqz_rs_setup(call, &rs));
    SQZ_CHECK(sqz_rs_compress(&rs));
    sqz_status_t st = sqz_rs_exchange(&rs);
    if (SQZ_OK != st) {
        return st; /* a transport failure (or scratch): nothing to restore here, as before */
    }
    st = sqz_rs_reduce(&rs);
    if (call->block) {
        st = sqz_rs_finish_block(&rs, st);
    } else if (SQZ_OK == st) {
        /* (a phase-1 verdict is known to every rank already: no need to run phase 2) */
        float *sres = NULL; /* the server residual of this rank's chunk */
        if (call->state) {
            SQZ_CHECK(sqz_rs_reserve_server(call)); /* (reserved at the call's open already) */
            sres = call->state->server_residual;
        }
        st = sqz_rs_phase2(&rs, sres);
    }
    if (SQZ_ERR_TRANSPORT == st) {
        return st;
    }
    if (SQZ_OK != st) {
        call->cs.nonfinite = (SQZ_ERR_NONFINITE == st);
        if (rs.failed < 0) {
            sqz_coll_restore_chunks(call, rs.P, rs.off, rs.len, rs.comm->scratch.sendbuf, rs.sdis);
        }
    }
    return st;
}
