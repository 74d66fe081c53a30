#include "config.h"

#include <string.h>

#include "sqz_coll.h"
#include "sqz_log.h"
#include "sqz_policy.h"
#include "lossless/sqz_entropy.h"

uint32_t sqz_coll_method_id(const sqz_compressor_v1_t *c)
{
    uint32_t h = 2166136261u;
    for (const char *p = c->name; *p; p++) {
        h = (h ^ (unsigned char)*p) * 16777619u;
    }
    return h;
}

size_t sqz_coll_round8(size_t x) { return (x + 7) & ~(size_t)7; }

void sqz_coll_frame_set(const sqz_coll_call_t *call, void *where, uint32_t flags, size_t count,
                        size_t bytes)
{
    const sqz_frame_t f = {
        .magic  = SQZ_FRAME_MAGIC,
        .flags  = flags,
        .seq    = (uint32_t)call->seq,
        .method = sqz_coll_method_id(call->c),
        .count  = count,
        .bytes  = bytes,
    };
    memcpy(where, &f, sizeof(f));
}

sqz_status_t sqz_coll_frame_check(const sqz_coll_call_t *call, const void *where, size_t count,
                                  size_t slot)
{
    sqz_frame_t f;
    memcpy(&f, where, sizeof(f));
    if (SQZ_FRAME_MAGIC != f.magic) {
        return SQZ_ERR_CORRUPT;
    }
    /* A fallback request first: its sender may not know the call's counter (a rank that could
     * not find its buffer's state still takes part, asking for the dense path). */
    if (f.flags & SQZ_FRAME_FALLBACK) {
        return (f.flags & SQZ_FRAME_NONFINITE) ? SQZ_ERR_NONFINITE : SQZ_ERR_CORRUPT;
    }
    if (f.method != sqz_coll_method_id(call->c) || f.count != count || f.seq != (uint32_t)call->seq) {
        return SQZ_ERR_MISMATCH;
    }
    if (f.bytes > slot - sizeof(sqz_frame_t)) {
        return SQZ_ERR_CORRUPT;
    }
    return SQZ_OK;
}

void sqz_coll_restore_chunks(sqz_coll_call_t *call, int nchunks, const size_t *off,
                             const size_t *len, const unsigned char *base, const size_t *dis)
{
    for (int r = 0; r < nchunks; r++) {
        sqz_coll_restore(call, call->in + off[r], call->residual ? call->residual + off[r] : NULL,
                         len[r], base + dis[r]);
    }
}

int sqz_coll_fixed_size(const sqz_coll_call_t *call)
{
    return SQZ_FIXED_PAYLOAD(call->c) && SQZ_ENTROPY_NONE == call->comm->ctx->p.entropy;
}

sqz_status_t sqz_coll_worse(sqz_status_t a, sqz_status_t b)
{
    if (SQZ_OK == a) {
        return b;
    }
    if (SQZ_ERR_MISMATCH == b) {
        return b;
    }
    return a;
}

sqz_status_t sqz_coll_compress(const sqz_coll_call_t *call, int worker, const float *in,
                               float *residual, size_t n, int stage, void *dst, size_t cap,
                               double *norms, const float *shared)
{
    if (call->poisoned) {
        sqz_coll_frame_set(call, dst, SQZ_FRAME_FALLBACK, n, 0);
        return SQZ_ERR_NO_MEMORY;
    }
    void *const cstate = call->cstates[worker];
    sqz_compress_args_v1_t a = {
        .size     = sizeof(a),
        .in       = in,
        .residual = residual,
        .n        = n,
        .seq      = call->seq,
        .stage    = stage,
        .payload  = (unsigned char *)dst + sizeof(sqz_frame_t),
        .capacity = cap - sizeof(sqz_frame_t),
        .shared   = shared,
    };
    sqz_status_t st = call->c->compress(cstate, &a);
    if (SQZ_OK == st && a.payload_bytes > a.capacity) {
        SQZ_LOG_ONCE(SQZ_LOG_ERROR, "compressor '%s' overran its payload bound; calls go dense",
                     call->c->name);
        st = SQZ_ERR_INTERNAL;
    }
    if (SQZ_OK != st) {
        if (SQZ_ERR_NONFINITE != st) {
            SQZ_LOG_ONCE(SQZ_LOG_WARN, "compressor '%s' failed (%s); the call goes dense",
                         call->c->name, sqz_status_string(st));
        }
        sqz_coll_frame_set(call, dst,
                           SQZ_FRAME_FALLBACK | (SQZ_ERR_NONFINITE == st ? SQZ_FRAME_NONFINITE : 0),
                           n, 0);
        return st;
    }
    if (norms) {
        norms[0] = a.norm2_in;
        norms[1] = a.norm2_err;
    }
    const sqz_core_params_t *p       = &call->comm->ctx->p;
    size_t                   bytes   = a.payload_bytes;
    /* (The cost model's link: SQZ_LINK_GBPS, or the rate it measured, or 10 Gbit/s.) */
    const double link = sqz_policy_net(call->comm).link_Bps * 8e-9;
    const int    bits = sqz_entropy_wrap(call->comm->entropy[worker], p->entropy, link,
                                         call->comm->nranks, a.payload, &bytes);
    sqz_coll_frame_set(call, dst,
                       ((bits & SQZ_ENTROPY_ZSTD_BIT) ? SQZ_FRAME_ZSTD : 0) |
                           ((bits & SQZ_ENTROPY_POSITIONS_BIT) ? SQZ_FRAME_POSITIONS : 0),
                       n, bytes);
    return SQZ_OK;
}

void sqz_coll_restore(sqz_coll_call_t *call, const float *in, float *residual, size_t n,
                      const void *frame)
{
    sqz_frame_t f;
    memcpy(&f, frame, sizeof(f));
    if (NULL == residual || (f.flags & SQZ_FRAME_FALLBACK)) {
        return; /* nothing was written to the residual */
    }
    /* Our own payload was valid when we made it; if decoding it fails the residual is lost: reset
     * it rather than keep a half-updated one. */
    if (SQZ_OK != sqz_coll_decode(call, 0, frame, residual, n)) {
        memset(residual, 0, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        residual[i] -= in[i];
    }
}

/* The shared values of these chunks, in floats. */
static size_t sqz_coll_shared_total(const sqz_coll_call_t *call, int nchunks, const size_t *len)
{
    size_t total = 0;
    for (int r = 0; r < nchunks; r++) {
        total += call->c->shared_len(call->cstate, len[r]);
    }
    return total;
}

/* Layout of sharedbuf: P contributions of `total` floats (the all-gather), then the MAX, then
 * the all-gather's counts and displacements, 8-byte aligned: they start at this float. */
static size_t sqz_coll_shared_counts_at(size_t P, size_t total)
{
    const size_t floats = (P + 1) * (total ? total : 1);
    return (floats + 1) / 2 * 2;
}

/* The bytes of that layout. */
static size_t sqz_coll_shared_bytes(size_t P, size_t total)
{
    return sqz_coll_shared_counts_at(P, total) * sizeof(float) + 2 * P * sizeof(size_t);
}

size_t sqz_coll_shared_scratch(const sqz_coll_call_t *call, int nchunks, const size_t *len)
{
    return SQZ_HAS_SHARED(call->c)
               ? sqz_coll_shared_bytes((size_t)call->comm->nranks,
                                       sqz_coll_shared_total(call, nchunks, len))
               : 0;
}

sqz_status_t sqz_coll_shared(sqz_coll_call_t *call, int nchunks, const size_t *off,
                             const size_t *len, const float **shared)
{
    sqz_comm_t *const                comm = call->comm;
    const sqz_compressor_v1_t *const c    = call->c;
    for (int r = 0; r < nchunks; r++) {
        shared[r] = NULL;
    }
    if (!SQZ_HAS_SHARED(c)) {
        return SQZ_OK;
    }
    const int    P     = comm->nranks;
    const size_t total = sqz_coll_shared_total(call, nchunks, len);
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->scratch.sharedbuf, &comm->scratch.sharedcap,
                                  sqz_coll_shared_bytes((size_t)P, total)));
    float *const  all  = comm->scratch.sharedbuf;
    float *const  mine = all + (size_t)P * total;
    size_t *const rb   = (size_t *)(all + sqz_coll_shared_counts_at((size_t)P, total));
    size_t *const ds   = rb + P;
    size_t        o    = 0;
    for (int r = 0; r < nchunks; r++) {
        c->shared_fill(call->cstate, call->in + off[r], call->residual ? call->residual + off[r] : NULL,
                       len[r], mine + o);
        o += c->shared_len(call->cstate, len[r]);
    }
    for (int r = 0; r < P; r++) {
        rb[r] = total * sizeof(float);
        ds[r] = (size_t)r * total * sizeof(float);
    }
    if (0 != comm->t.allgatherv(comm->t.self, mine, total * sizeof(float), all, rb, ds)) {
        return SQZ_ERR_TRANSPORT;
    }
    /* Element-wise MAX, in rank order (NaN-free inputs give the same bits on every rank). */
    for (size_t i = 0; i < total; i++) {
        float m = all[i];
        for (int r = 1; r < P; r++) {
            const float v = all[(size_t)r * total + i];
            m             = v > m ? v : m;
        }
        mine[i] = m;
    }
    o = 0;
    for (int r = 0; r < nchunks; r++) {
        shared[r] = mine + o;
        o += c->shared_len(call->cstate, len[r]);
    }
    return SQZ_OK;
}

size_t sqz_coll_exact_bound(size_t n) { return sqz_coll_round8(sizeof(sqz_frame_t) + 4 * n + 8); }

void sqz_coll_exact_encode(const sqz_coll_call_t *call, const float *y, size_t n, void *dst)
{
    size_t nnz = 0;
    for (size_t i = 0; i < n; i++) {
        nnz += (0.0f != y[i]);
    }
    unsigned char *p = (unsigned char *)dst + sizeof(sqz_frame_t);
    if (4 + 8 * nnz < 4 * n) {
        const uint32_t m = (uint32_t)nnz;
        memcpy(p, &m, 4);
        unsigned char *idx = p + 4, *val = p + 4 + 4 * nnz;
        size_t         j   = 0;
        for (size_t i = 0; i < n; i++) {
            if (0.0f != y[i]) {
                const uint32_t u = (uint32_t)i;
                memcpy(idx + 4 * j, &u, 4);
                memcpy(val + 4 * j, &y[i], 4);
                j++;
            }
        }
        sqz_coll_frame_set(call, dst, SQZ_FRAME_EXACT_SPARSE, n, 4 + 8 * nnz);
    } else {
        memcpy(p, y, 4 * n);
        sqz_coll_frame_set(call, dst, SQZ_FRAME_EXACT_DENSE, n, 4 * n);
    }
}

sqz_status_t sqz_coll_exact_decode(const void *frame, float *out, size_t n)
{
    sqz_frame_t f;
    memcpy(&f, frame, sizeof(f));
    const unsigned char *p = (const unsigned char *)frame + sizeof(f);
    if (f.flags & SQZ_FRAME_EXACT_DENSE) {
        if (f.bytes != 4 * (uint64_t)n) {
            return SQZ_ERR_CORRUPT;
        }
        if (out) {
            for (size_t i = 0; i < n; i++) {
                float v;
                memcpy(&v, p + 4 * i, 4);
                out[i] += v;
            }
        }
        return SQZ_OK;
    }
    uint32_t m;
    if (f.bytes < 4) {
        return SQZ_ERR_CORRUPT;
    }
    memcpy(&m, p, 4);
    if (m > n || f.bytes != 4 + 8 * (uint64_t)m) {
        return SQZ_ERR_CORRUPT;
    }
    const unsigned char *idx = p + 4, *val = p + 4 + 4 * (size_t)m;
    uint32_t             prev = 0;
    for (uint32_t j = 0; j < m; j++) { /* strictly increasing and in range, before any write */
        uint32_t u;
        memcpy(&u, idx + 4 * (size_t)j, 4);
        if (u >= n || (j > 0 && u <= prev)) {
            return SQZ_ERR_CORRUPT;
        }
        prev = u;
    }
    for (uint32_t j = 0; out && j < m; j++) {
        uint32_t u;
        float    v;
        memcpy(&u, idx + 4 * (size_t)j, 4);
        memcpy(&v, val + 4 * (size_t)j, 4);
        out[u] += v;
    }
    return SQZ_OK;
}

sqz_status_t sqz_coll_decode(const sqz_coll_call_t *call, int worker, const void *frame,
                             float *out, size_t n)
{
    sqz_frame_t f;
    memcpy(&f, frame, sizeof(f));
    if (f.flags & (SQZ_FRAME_EXACT_SPARSE | SQZ_FRAME_EXACT_DENSE)) {
        return sqz_coll_exact_decode(frame, out, n);
    }
    const unsigned char *payload = (const unsigned char *)frame + sizeof(f);
    size_t               bytes   = (size_t)f.bytes;
    if (f.flags & (SQZ_FRAME_ZSTD | SQZ_FRAME_POSITIONS)) {
        const size_t bound = call->c->max_payload(call->cstates[worker], n);
        const int    bits  = ((f.flags & SQZ_FRAME_ZSTD) ? SQZ_ENTROPY_ZSTD_BIT : 0) |
                         ((f.flags & SQZ_FRAME_POSITIONS) ? SQZ_ENTROPY_POSITIONS_BIT : 0);
        if (SQZ_OK != sqz_entropy_unwrap(call->comm->entropy[worker], bits, payload, bytes, bound,
                                         &payload, &bytes)) {
            return SQZ_ERR_CORRUPT;
        }
    }
    const sqz_status_t st = call->c->decompress(call->cstates[worker], payload, bytes, out, n);
    return SQZ_OK == st ? SQZ_OK : SQZ_ERR_CORRUPT;
}

int (*sqz_coll_scratch_fails)(const sqz_comm_t *comm);

size_t sqz_coll_dense_scratch(const sqz_coll_call_t *call)
{
    return call->block ? call->n * sizeof(float) : 0;
}

static size_t sqz_max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Grows this rank's buffers to `need`.  \return 1 when all of them are there. */
static int sqz_coll_grow(sqz_comm_t *comm, const sqz_scratch_need_t *need)
{
    sqz_scratch_t *const s = &comm->scratch;
    if (sqz_coll_scratch_fails && sqz_coll_scratch_fails(comm)) {
        return 0;
    }
    return SQZ_OK == sqz_scratch_reserve((void **)&s->sendbuf, &s->sendcap, need->send) &&
           SQZ_OK == sqz_scratch_reserve((void **)&s->recvbuf, &s->recvcap, need->recv) &&
           SQZ_OK == sqz_scratch_reserve((void **)&s->chunkbuf, &s->chunkcap, need->chunk) &&
           SQZ_OK == sqz_scratch_reserve((void **)&s->taskbuf, &s->taskcap, need->task) &&
           SQZ_OK == sqz_scratch_reserve((void **)&s->sharedbuf, &s->sharedcap, need->shared);
}

/* Point-to-point where the transport has it (so that a peer that is in another collective is
 * diagnosed by the transport's stall watch, as in the exchanges, instead of meeting this rank in
 * a mismatched collective), else one float all-reduce. */
int sqz_coll_agree(sqz_comm_t *comm, int ok)
{
    const int P = comm->nranks, me = comm->rank;
    if (!comm->p2p) {
        float v = ok ? 1.0f : 0.0f, all = v;
        if (0 != comm->t.allreduce_f32_sum(comm->t.self, &v, &all, 1)) {
            return -1;
        }
        return all == (float)P;
    }
    void **const         req  = (void **)comm->scratch.agreebuf; /* P receives, then P sends */
    size_t *const        got  = (size_t *)(req + 2 * (size_t)P);
    unsigned char *const flag = (unsigned char *)(got + P);
    const unsigned char  mine = ok ? 1 : 0;
    const sqz_transport_t *t  = &comm->t;
    int                  rc   = 0;
    memset(req, 0, 2 * (size_t)P * sizeof(void *));
    for (int k = 1; k < P && 0 == rc; k++) {
        const int s = (me + P - k) % P;
        rc = t->irecv(t->self, &flag[s], 1, s, &got[s], &req[s]);
    }
    for (int k = 1; k < P && 0 == rc; k++) {
        const int r = (me + k) % P;
        rc = t->isend(t->self, &mine, 1, r, &req[P + r]);
    }
    int all = ok;
    for (int q = 0; q < 2 * P; q++) {
        if (req[q]) {
            rc |= t->wait(t->self, req[q]);
        }
        if (q < P && q != me) {
            all &= 0 == rc && 1 == got[q] && 1 == flag[q];
        }
    }
    return rc ? -1 : all;
}

sqz_status_t sqz_coll_reserve(sqz_comm_t *comm, const sqz_scratch_need_t *need)
{
    sqz_scratch_need_t *const a = &comm->scratch.agreed;
    if (need->send <= a->send && need->recv <= a->recv && need->chunk <= a->chunk &&
        need->task <= a->task && need->shared <= a->shared) {
        return SQZ_OK; /* (every rank reserved at least this when it was agreed) */
    }
    const int all = sqz_coll_agree(comm, sqz_coll_grow(comm, need));
    if (all < 0) {
        return SQZ_ERR_TRANSPORT;
    }
    if (!all) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "a rank is out of memory for an exchange's scratch: its call "
                                   "goes dense on every rank");
        return SQZ_ERR_NOT_SUPPORTED;
    }
    *a = (sqz_scratch_need_t){.send   = sqz_max_size(a->send, need->send),
                              .recv   = sqz_max_size(a->recv, need->recv),
                              .chunk  = sqz_max_size(a->chunk, need->chunk),
                              .task   = sqz_max_size(a->task, need->task),
                              .shared = sqz_max_size(a->shared, need->shared)};
    return SQZ_OK;
}
