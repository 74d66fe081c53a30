#include "config.h"

#include <string.h>

#include "sqz_coll.h"
#include "sqz_log.h"

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
    if (f.method != sqz_coll_method_id(call->c) || f.count != count || f.seq != (uint32_t)call->seq) {
        return SQZ_ERR_MISMATCH;
    }
    if (f.flags & SQZ_FRAME_FALLBACK) {
        return (f.flags & SQZ_FRAME_NONFINITE) ? SQZ_ERR_NONFINITE : SQZ_ERR_CORRUPT;
    }
    if (f.bytes > slot - sizeof(sqz_frame_t)) {
        return SQZ_ERR_CORRUPT;
    }
    return SQZ_OK;
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

sqz_status_t sqz_coll_compress(const sqz_coll_call_t *call, void *cstate, const float *in,
                               float *residual, size_t n, int stage, void *dst, size_t cap,
                               double *norms, const float *shared)
{
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
    sqz_coll_frame_set(call, dst, 0, n, a.payload_bytes);
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
    if (SQZ_OK != call->c->decompress(call->cstate, (const unsigned char *)frame + sizeof(f),
                                      (size_t)f.bytes, residual, n)) {
        memset(residual, 0, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        residual[i] -= in[i];
    }
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
    const int P     = comm->nranks;
    size_t    total = 0;
    for (int r = 0; r < nchunks; r++) {
        total += c->shared_len(call->cstate, len[r]);
    }
    /* Layout of sharedbuf: P contributions of `total` floats (the all-gather), then the MAX. */
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->sharedbuf, &comm->sharedcap,
                                  ((size_t)P + 1) * (total ? total : 1) * sizeof(float) +
                                      2 * (size_t)P * sizeof(size_t)));
    float *const  all  = comm->sharedbuf;
    float *const  mine = all + (size_t)P * total;
    size_t *const rb   = (size_t *)(mine + total), *const ds = rb + P;
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
