/* The hierarchical all-reduce over two transports (see sqz_coll_hier.h). */
#include "config.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coll/sqz_coll_hier.h"
#include "sqz_policy.h"

struct sqz_hier {
    pthread_mutex_t lock;   /* one call at a time (as the engine's lock does for flat calls) */
    sqz_transport_t local;
    size_t         *counts; /* 6 x L: send bytes, send offsets, receive bytes, receive offsets,
                             * shard elements, shard offsets */
    const float   **pieces; /* L: where step 1 reads each rank's piece of this rank's shard */
    float          *scratch;
    size_t          cap;    /* bytes of scratch */
    size_t          agreed; /* bytes of scratch every rank of the host is known to have */
    size_t          agreed_all; /* bytes of scratch every rank of every host is known to have */
    int             shared; /* 1: the measured rates are the host's mean (sqz_hier_share) */
    double          intra_s; /* SQZ_INTRA_GBPS=0: seconds of the stages inside the host per
                              * element of a shard, measured once (0: not yet) */
};

sqz_status_t sqz_hier_attach(sqz_comm_t *comm, const sqz_transport_t *local)
{
    if (NULL == local || local->size < offsetof(sqz_transport_t, isend) || local->nranks < 1 ||
        local->rank < 0 || local->rank >= local->nranks || NULL == local->allgatherv ||
        NULL == local->alltoallv || NULL == local->allreduce_f32_sum) {
        return SQZ_ERR_INVALID_PARAM;
    }
    sqz_hier_t *h = calloc(1, sizeof(*h));
    if (NULL == h || NULL == (h->counts = calloc(6 * (size_t)local->nranks, sizeof(size_t))) ||
        NULL == (h->pieces = calloc((size_t)local->nranks, sizeof(*h->pieces)))) {
        sqz_hier_free(h);
        return SQZ_ERR_NO_MEMORY;
    }
    memcpy(&h->local, local, local->size < sizeof(h->local) ? local->size : sizeof(h->local));
    pthread_mutex_init(&h->lock, NULL);
    comm->hier = h;
    /* The cost model: one rank per host, the host's L exchanges sharing its link. */
    comm->cost.hosts = comm->nranks, comm->cost.per_host = 1, comm->cost.link_share = local->nranks;
    return SQZ_OK;
}

void sqz_hier_free(sqz_hier_t *h)
{
    if (h) {
        if (h->counts && h->pieces) {
            pthread_mutex_destroy(&h->lock); /* (initialized once both were allocated) */
        }
        free(h->counts);
        free(h->pieces);
        free(h->scratch);
        free(h);
    }
}

/* \return 1 when x[0..n-1] holds NaN or Inf (NaN compares false; vectorizes). */
static int sqz_hier_nonfinite(const float *x, size_t n)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad |= !(fabsf(x[i]) <= FLT_MAX);
    }
    return bad;
}

/* mine = the sum of the L pieces of n elements at pieces[0..L-1], in that order, in blocks that
 * stay in cache; mine may be pieces[0] (in place), no other.  \return 1 when the sum holds NaN
 * or Inf (what a NaN or Inf input leaves). */
static int sqz_hier_sum_pieces(const float *const *pieces, size_t L, size_t n, float *mine)
{
    enum { BLOCK = 4096 };
    int bad = 0;
    for (size_t b = 0; b < n; b += BLOCK) {
        const size_t m = n - b < BLOCK ? n - b : BLOCK;
        float       *d = mine + b;
        if (pieces[0] + b != d) {
            memmove(d, pieces[0] + b, m * sizeof(float));
        }
        for (size_t j = 1; j < L; j++) {
            const float *p = pieces[j] + b;
            for (size_t i = 0; i < m; i++) {
                d[i] += p[i];
            }
        }
        bad |= sqz_hier_nonfinite(d, m);
    }
    return bad;
}

/* Step 1: this rank's shard of the host's sum (the pieces at the offsets h->counts holds) into
 * dst; *bad = 1 when it holds NaN or Inf.  The other ranks' pieces of the shard arrive in the
 * scratch; this rank's own is read where it is (dst may be that piece: in place).
 * \return SQZ_OK or SQZ_ERR_TRANSPORT. */
static sqz_status_t sqz_hier_reduce_scatter(sqz_hier_t *h, const float *in, float *dst, int *bad)
{
    const size_t L = (size_t)h->local.nranks, me = (size_t)h->local.rank;
    size_t *sb = h->counts, *sd = sb + L, *rb = sd + L, *rd = rb + L, *n = rd + L, *at = n + L;
    for (size_t j = 0; j < L; j++) {
        /* (no slot for this rank's own piece) */
        const size_t slot = j < me ? j : (j > me ? j - 1 : 0);
        sb[j] = j == me ? 0 : n[j] * sizeof(float), sd[j] = at[j] * sizeof(float);
        rb[j] = j == me ? 0 : n[me] * sizeof(float), rd[j] = slot * n[me] * sizeof(float);
    }
    if (0 != h->local.alltoallv(h->local.self, in, sb, sd, h->scratch, rb, rd)) {
        return SQZ_ERR_TRANSPORT;
    }
    /* This rank's own piece first (an in-place output is that piece), then the others in
     * local-rank order: the same order whether in place or not. */
    const float **pieces = h->pieces;
    pieces[0]            = in + at[me];
    for (size_t slot = 0; slot + 1 < L; slot++) {
        pieces[slot + 1] = h->scratch + slot * n[me];
    }
    *bad = sqz_hier_sum_pieces(pieces, L, n[me], dst);
    return SQZ_OK;
}

/* Step 4: every rank's shard (this rank's at `shard`, which must not lie in out) into out at
 * the shards' offsets.  \return SQZ_OK or SQZ_ERR_TRANSPORT. */
static sqz_status_t sqz_hier_all_gather(sqz_hier_t *h, const float *shard, float *out)
{
    const size_t L = (size_t)h->local.nranks, me = (size_t)h->local.rank;
    size_t *rb = h->counts, *rd = rb + L, *n = h->counts + 4 * L, *at = n + L;
    for (size_t j = 0; j < L; j++) {
        rb[j] = n[j] * sizeof(float), rd[j] = at[j] * sizeof(float);
    }
    return 0 == h->local.allgatherv(h->local.self, shard, n[me] * sizeof(float), out, rb, rd)
               ? SQZ_OK
               : SQZ_ERR_TRANSPORT;
}

int (*sqz_hier_alloc_fails)(int host, int local_rank);

/* Whether every rank of the host has scratch for a call of this size: agreed over local when the
 * size grows past what was agreed before (the same calls on every rank of the host, so the same
 * decision to agree).  \return 1, 0 (some rank has no memory), or -1 (transport failure). */
static int sqz_hier_roomy(const sqz_comm_t *comm, sqz_hier_t *h, size_t need)
{
    if (need <= h->agreed) {
        return 1;
    }
    const int fails = sqz_hier_alloc_fails && sqz_hier_alloc_fails(comm->rank, h->local.rank);
    float     ok    = !fails && SQZ_OK == sqz_scratch_reserve((void **)&h->scratch, &h->cap, need);
    float     all   = ok;
    if (0 != h->local.allreduce_f32_sum(h->local.self, &ok, &all, 1)) {
        return -1;
    }
    if (all != (float)h->local.nranks) {
        return 0;
    }
    h->agreed = need;
    return 1;
}

/* Steps 1 and 4 without scratch (no memory on some rank of the host): the host's whole sum by a
 * dense all-reduce (step 1: twice the bytes), or every shard by a sum in which each element has
 * one contribution and zeros (step 4: x + 0 is x).  \return SQZ_OK or SQZ_ERR_TRANSPORT. */
static sqz_status_t sqz_hier_whole(sqz_hier_t *h, const float *in, float *out, size_t count,
                                   const size_t *n, const size_t *at, int gather)
{
    const size_t me = (size_t)h->local.rank;
    if (gather) {
        memset(out, 0, at[me] * sizeof(float));
        memset(out + at[me] + n[me], 0, (count - at[me] - n[me]) * sizeof(float));
        in = out;
    }
    return 0 == h->local.allreduce_f32_sum(h->local.self, in, out, count) ? SQZ_OK
                                                                          : SQZ_ERR_TRANSPORT;
}

/* After the first call that calibrated every exchange of the host (SQZ_EXCHANGE_MODEL=time): the
 * L exchanges measured their rates at once, each its own share of the host's link, and the
 * shares come out uneven; they get the host's mean, the share each has when they all run.  The
 * host's ranks hold the same L engines' values, so every engine gets the same mean on every host
 * (a choice made on it stays the same on every rank of an engine).  The condition reads only
 * what every rank of the host shares (settings, the call's size and eligibility).  \return 0, or
 * -1 when the transport failed. */
static int sqz_hier_share(sqz_comm_t *comm, const size_t *n, int eligible)
{
    sqz_hier_t *h = comm->hier;
    const size_t L = (size_t)h->local.nranks;
    if (h->shared || !eligible || 0 == n[L - 1] ||
        SQZ_EXCHANGE_MODEL_TIME != comm->ctx->p.exchange_model) {
        return 0;
    }
    h->shared  = 1;
    float v[4] = {(float)comm->cost.link_Bps, (float)comm->cost.latency_s,
                  (float)comm->cost.compress_Bps, (float)comm->cost.decode_Bps};
    if (0 != h->local.allreduce_f32_sum(h->local.self, v, v, 4)) {
        return -1;
    }
    comm->cost.link_Bps = v[0] / (double)L, comm->cost.latency_s = v[1] / (double)L;
    comm->cost.compress_Bps = v[2] / (double)L, comm->cost.decode_Bps = v[3] / (double)L;
    return 0;
}

/* SQZ_INTRA_GBPS=0 under the time model: the dense stages inside the host timed once, at the
 * end of the first call whose scratch (`room` elements) holds shards of at least 64K elements:
 * 3 rounds of steps 1 and 4 on shards of m elements, within the scratch (the received pieces
 * first, then the buffer of L m elements); the host's mean seconds per element of a shard.  The
 * condition reads what every rank of the host shares.  \return 0, or -1 (transport). */
static int sqz_hier_measure_intra(const sqz_comm_t *comm, sqz_hier_t *h, size_t room)
{
    const size_t L = (size_t)h->local.nranks, m = room / (2 * L - 1);
    if (h->intra_s > 0 || m < 65536 || L < 2 || comm->ctx->p.intra_gbps > 0 ||
        SQZ_EXCHANGE_MODEL_TIME != comm->ctx->p.exchange_model) {
        return 0;
    }
    size_t *n = h->counts + 4 * L, *at = n + L; /* (the call's are no longer needed) */
    for (size_t j = 0; j < L; j++) {
        n[j] = m, at[j] = j * m;
    }
    float *buf = h->scratch + (L - 1) * m;
    memset(h->scratch, 0, (2 * L - 1) * m * sizeof(float)); /* (no NaN or denormal timed) */
    const double t0 = sqz_time_now();
    int          rc = 0, bad = 0;
    for (int it = 0; it < 3 && 0 == rc; it++) {
        rc = SQZ_OK != sqz_hier_reduce_scatter(h, buf, buf + at[h->local.rank], &bad) ||
             SQZ_OK != sqz_hier_all_gather(h, h->scratch, buf);
    }
    float t = (float)((sqz_time_now() - t0) / 3 / (double)m);
    if (0 != rc || 0 != h->local.allreduce_f32_sum(h->local.self, &t, &t, 1)) {
        return -1;
    }
    h->intra_s = (double)t / (double)L;
    return 0;
}

static sqz_status_t sqz_hier_run(sqz_comm_t *comm, const float *in, float *out, size_t count,
                                 sqz_op_t op, uint64_t key)
{
    sqz_hier_t  *h = comm->hier;
    const size_t L = (size_t)h->local.nranks, me = (size_t)h->local.rank;
    size_t      *n = h->counts + 4 * L, *at = n + L;
    for (size_t j = 0, pos = 0; j < L; j++) {
        n[j] = count / L + (j < count % L), at[j] = pos;
        pos += n[j];
    }
    /* Scratch: the other ranks' pieces of this rank's shard, then its all-reduced shard (n[0] is
     * the largest; at least one shard). */
    const int roomy = sqz_hier_roomy(comm, h, (L > 1 ? L - 1 : 1) * n[0] * sizeof(float));
    if (roomy < 0) {
        return SQZ_ERR_TRANSPORT;
    }
    int          bad = 0;
    sqz_status_t st  = roomy ? sqz_hier_reduce_scatter(h, in, out + at[me], &bad)
                             : sqz_hier_whole(h, in, out, count, n, at, 0);
    float *mine = out + at[me];
    if (!roomy && SQZ_OK == st) {
        bad = sqz_hier_nonfinite(mine, n[me]);
    }
    float flag = SQZ_OK == st ? (float)bad : 1.0f, any = flag;
    if (0 != h->local.allreduce_f32_sum(h->local.self, &flag, &any, 1) || SQZ_OK != st) {
        return SQZ_ERR_TRANSPORT; /* (the host's transport failed: nothing more can be agreed) */
    }
    /* Step 2 into the scratch (its pieces are summed already), from which step 4 sends: the
     * transport's send and receive buffers must be distinct.  Without scratch: in place. */
    float    *shard    = roomy ? h->scratch : mine;
    const int eligible = sqz_comm_eligible(comm, count, SQZ_DTYPE_FLOAT32, op);
    if (n[me] > 0) {
        st = sqz_engine_shard(comm, mine, shard, n[me], 0, key, eligible, any != 0.0f);
        if (SQZ_OP_AVG == op) {
            const float s = 1.0f / (float)(L * (size_t)comm->nranks);
            for (size_t i = 0; i < n[me]; i++) {
                shard[i] *= s;
            }
        }
    }
    if (0 != sqz_hier_share(comm, n, eligible)) {
        return SQZ_ERR_TRANSPORT;
    }
    /* Step 4, even after a failure of step 2. */
    if (!roomy) {
        const sqz_status_t gst = sqz_hier_whole(h, NULL, out, count, n, at, 1);
        return SQZ_OK == st ? gst : st;
    }
    if (SQZ_OK != sqz_hier_all_gather(h, shard, out) ||
        0 != sqz_hier_measure_intra(comm, h, h->agreed / sizeof(float))) {
        return SQZ_ERR_TRANSPORT;
    }
    return st;
}

sqz_status_t sqz_hier_allreduce(sqz_comm_t *comm, const float *in, float *out, size_t count,
                                sqz_op_t op, uint64_t key)
{
    pthread_mutex_lock(&comm->hier->lock);
    const sqz_status_t st = sqz_hier_run(comm, in, out, count, op, key);
    pthread_mutex_unlock(&comm->hier->lock);
    return st;
}

/* Scratch on every rank of every host (sqz_hier_roomy, then one float all-reduce between hosts
 * when the size grows past what all agreed: every rank decides alike).  \return 1, 0 (some rank
 * has no memory), or -1 (transport failure). */
static int sqz_hier_roomy_all(sqz_comm_t *comm, sqz_hier_t *h, size_t need)
{
    if (need <= h->agreed_all) {
        return 1;
    }
    const int roomy = sqz_hier_roomy(comm, h, need);
    float     v = roomy > 0 ? 1.0f : 0.0f, all = v;
    if (roomy < 0 || 0 != comm->t.allreduce_f32_sum(comm->t.self, &v, &all, 1)) {
        return -1;
    }
    if (all != (float)comm->nranks) {
        return 0;
    }
    h->agreed_all = need;
    return 1;
}

/* The reduce-scatter: rows of L blocks, one row per host (sqz_coll_hier.h). */
static sqz_status_t sqz_hier_rs_run(sqz_comm_t *comm, const float *in, float *out, size_t c,
                                    sqz_op_t op, uint64_t key)
{
    sqz_hier_t  *h = comm->hier;
    const size_t L = (size_t)h->local.nranks, H = (size_t)comm->nranks;
    size_t      *n = h->counts + 4 * L, *at = n + L;
    /* Scratch: the other ranks' pieces of one row's block, then the column of H blocks. */
    const int roomy = sqz_hier_roomy_all(comm, h, (L - 1 + H) * c * sizeof(float));
    if (roomy <= 0) {
        return roomy < 0 ? SQZ_ERR_TRANSPORT : SQZ_ERR_NOT_SUPPORTED; /* (agreed by all) */
    }
    float *column = h->scratch + (L - 1) * c;
    int    bad    = 0;
    for (size_t row = 0; row < H; row++) {
        for (size_t j = 0; j < L; j++) {
            n[j] = c, at[j] = (row * L + j) * c;
        }
        int b = 0;
        if (SQZ_OK != sqz_hier_reduce_scatter(h, in, column + row * c, &b)) {
            return SQZ_ERR_TRANSPORT;
        }
        bad |= b;
    }
    float flag = (float)bad, any = flag;
    if (0 != h->local.allreduce_f32_sum(h->local.self, &flag, &any, 1)) {
        return SQZ_ERR_TRANSPORT;
    }
    const sqz_status_t st = sqz_engine_shard(comm, column, out, H * c, c, key, 1, any != 0.0f);
    if (SQZ_OK == st && SQZ_OP_AVG == op) {
        const float s = 1.0f / (float)(L * H);
        for (size_t i = 0; i < c; i++) {
            out[i] *= s;
        }
    }
    return st;
}

sqz_status_t sqz_hier_reduce_scatter_block(sqz_comm_t *comm, const float *in, float *out,
                                           size_t c, sqz_op_t op, uint64_t key)
{
    if (0 == c) {
        return SQZ_OK;
    }
    pthread_mutex_lock(&comm->hier->lock);
    const sqz_status_t st = sqz_hier_rs_run(comm, in, out, c, op, key);
    pthread_mutex_unlock(&comm->hier->lock);
    return st;
}

double sqz_hier_intra_seconds(const sqz_comm_t *comm, size_t count)
{
    const sqz_hier_t *h = comm->hier;
    const double      L = h->local.nranks;
    return h->intra_s > 0 ? h->intra_s * (double)count / L
                          : 2.0 * (L - 1.0) / L * 4.0 * (double)count /
                                sqz_policy_net(comm).intra_Bps;
}
