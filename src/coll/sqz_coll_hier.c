/* The hierarchical all-reduce over two transports (see sqz_coll_hier.h). */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coll/sqz_coll_hier.h"

struct sqz_hier {
    sqz_transport_t local;
    size_t         *counts; /* 6 x L: send bytes, send offsets, receive bytes, receive offsets,
                             * shard elements, shard offsets */
    float          *scratch;
    size_t          cap;    /* bytes of scratch */
    size_t          agreed; /* bytes of scratch every rank of the host is known to have */
};

sqz_status_t sqz_hier_attach(sqz_comm_t *comm, const sqz_transport_t *local)
{
    if (NULL == local || local->size < offsetof(sqz_transport_t, isend) || local->nranks < 1 ||
        local->rank < 0 || local->rank >= local->nranks || NULL == local->allgatherv ||
        NULL == local->alltoallv || NULL == local->allreduce_f32_sum) {
        return SQZ_ERR_INVALID_PARAM;
    }
    sqz_hier_t *h = calloc(1, sizeof(*h));
    if (NULL == h || NULL == (h->counts = calloc(6 * (size_t)local->nranks, sizeof(size_t)))) {
        free(h);
        return SQZ_ERR_NO_MEMORY;
    }
    memcpy(&h->local, local, local->size < sizeof(h->local) ? local->size : sizeof(h->local));
    comm->hier = h;
    /* The cost model: one rank per host, the host's L exchanges sharing its link. */
    comm->hosts = comm->nranks, comm->per_host = 1, comm->link_share = local->nranks;
    return SQZ_OK;
}

void sqz_hier_free(sqz_hier_t *h)
{
    if (h) {
        free(h->counts);
        free(h->scratch);
        free(h);
    }
}

/* \return 1 when x[0..n-1] holds NaN or Inf (exponent bits all set; vectorizes). */
static int sqz_hier_nonfinite(const float *x, size_t n)
{
    const uint32_t *u   = (const uint32_t *)x;
    uint32_t        bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    }
    return 0 != bad;
}

/* Step 1: this rank's shard of the host's sum into out + its offset.  \return SQZ_OK or an error
 * on this rank (then the peers of the host fail in their all-to-all too, or complete it). */
static sqz_status_t sqz_hier_reduce_scatter(sqz_hier_t *h, const float *in, float *out)
{
    const size_t L = (size_t)h->local.nranks, me = (size_t)h->local.rank;
    size_t *sb = h->counts, *sd = sb + L, *rb = sd + L, *rd = rb + L, *n = rd + L, *at = n + L;
    for (size_t j = 0; j < L; j++) {
        sb[j] = n[j] * sizeof(float), sd[j] = at[j] * sizeof(float);
        rb[j] = n[me] * sizeof(float), rd[j] = j * n[me] * sizeof(float);
    }
    if (0 != h->local.alltoallv(h->local.self, in, sb, sd, h->scratch, rb, rd)) {
        return SQZ_ERR_TRANSPORT;
    }
    /* (in is no longer read: an in-place output may overwrite it) */
    float *mine = out + at[me];
    memcpy(mine, h->scratch, n[me] * sizeof(float));
    for (size_t j = 1; j < L; j++) {
        const float *piece = h->scratch + j * n[me];
        for (size_t i = 0; i < n[me]; i++) {
            mine[i] += piece[i];
        }
    }
    return SQZ_OK;
}

/* Whether every rank of the host has scratch for a call of this size: agreed over local when the
 * size grows past what was agreed before (the same calls on every rank of the host, so the same
 * decision to agree).  \return 1, 0 (some rank has no memory), or -1 (transport failure). */
static int sqz_hier_roomy(sqz_hier_t *h, size_t need)
{
    if (need <= h->agreed) {
        return 1;
    }
    float ok = SQZ_OK == sqz_scratch_reserve((void **)&h->scratch, &h->cap, need), all = ok;
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

sqz_status_t sqz_hier_allreduce(sqz_comm_t *comm, const float *in, float *out, size_t count,
                                sqz_op_t op, uint64_t key)
{
    sqz_hier_t  *h = comm->hier;
    const size_t L = (size_t)h->local.nranks, me = (size_t)h->local.rank;
    size_t      *n = h->counts + 4 * L, *at = n + L;
    for (size_t j = 0, pos = 0; j < L; j++) {
        n[j] = count / L + (j < count % L), at[j] = pos;
        pos += n[j];
    }
    /* Scratch: the L pieces of this rank's shard (n[0] is the largest). */
    const int roomy = sqz_hier_roomy(h, L * n[0] * sizeof(float));
    if (roomy < 0) {
        return SQZ_ERR_TRANSPORT;
    }
    sqz_status_t st = roomy ? sqz_hier_reduce_scatter(h, in, out)
                            : sqz_hier_whole(h, in, out, count, n, at, 0);
    float *mine = out + at[me];
    float  bad  = SQZ_OK == st ? (float)sqz_hier_nonfinite(mine, n[me]) : 1.0f, any = bad;
    if (0 != h->local.allreduce_f32_sum(h->local.self, &bad, &any, 1) || SQZ_OK != st) {
        return SQZ_ERR_TRANSPORT; /* (the host's transport failed: nothing more can be agreed) */
    }
    if (n[me] > 0) {
        const int eligible = sqz_comm_eligible(comm, count, SQZ_DTYPE_FLOAT32, op);
        st = sqz_engine_shard(comm, mine, n[me], key, eligible, any != 0.0f);
        if (SQZ_OP_AVG == op) {
            const float s = 1.0f / (float)(L * (size_t)comm->nranks);
            for (size_t i = 0; i < n[me]; i++) {
                mine[i] *= s;
            }
        }
    }
    /* Step 4 even after a failure of step 2, from a copy of the shard (the transport's send and
     * receive buffers are distinct). */
    if (!roomy) {
        const sqz_status_t gst = sqz_hier_whole(h, NULL, out, count, n, at, 1);
        return SQZ_OK == st ? gst : st;
    }
    memcpy(h->scratch, mine, n[me] * sizeof(float));
    size_t *rb = h->counts, *rd = rb + L;
    for (size_t j = 0; j < L; j++) {
        rb[j] = n[j] * sizeof(float), rd[j] = at[j] * sizeof(float);
    }
    if (0 != h->local.allgatherv(h->local.self, h->scratch, n[me] * sizeof(float), out, rb, rd)) {
        return SQZ_ERR_TRANSPORT;
    }
    return st;
}
