/* MoE token all-to-all: the public API (sqz_moe_alltoallv, dispatch/combine with residual
 * compensation), the per-communicator state, the interposers' policy (SQZ_MOE, SQZ_MOE_CYCLE)
 * and the statistics rows.  The exchange itself is src/coll/sqz_coll_alltoall.c, the codecs
 * sqz_lsh.c. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "coll/sqz_coll.h"
#include "sqz_ctx.h"
#include "sqz_log.h"

const char *const sqz_moe_codec_names[SQZ_MOE_NCODECS] = {"exact", "dedup", "lsh"};

struct sqz_moe_handle {
    int     nranks, rank;
    size_t  dim;
    size_t *counts;     /* 4 * nranks: sendcounts, sdispls, recvcounts, rdispls (tokens) */
    size_t  ntok;       /* tokens of the sendbuf layout: max over r of sdispls[r] + sendcounts[r] */
    float  *residual;   /* ntok * dim: x - centroid (0 for exact tokens and gaps) */
    uint32_t *group;    /* ntok: a number shared by the tokens of one centroid (token's own index
                           for exact tokens) */
    size_t  sent, rows; /* tokens sent to other ranks, centroids sent for them */
    float  *scratch;    /* ntok * dim: the backward passes' gradients in the sendbuf layout */
    float  *sum;        /* ntok * dim: per-group sums of sqz_moe_centroid_mean */
    uint32_t *cnt;      /* ntok: per-group counts of sqz_moe_centroid_mean */
};

void sqz_moe_comm_free(sqz_comm_t *comm)
{
    if (comm->moe) {
        sqz_lsh_destroy(comm->moe->lsh);
        sqz_lsh_destroy(comm->moe->scratch);
        free(comm->moe->sizes);
        free(comm->moe->bytes);
        free(comm->moe);
        comm->moe = NULL;
    }
}

/* The MoE state of comm, with an LSH codec for `width` when lsh is set. */
static sqz_status_t sqz_moe_comm_get(sqz_comm_t *comm, size_t width, int lsh)
{
    if (NULL == comm->moe) {
        sqz_moe_comm_t *m = calloc(1, sizeof(*m));
        if (NULL == m) {
            return SQZ_ERR_NO_MEMORY;
        }
        comm->moe = m;
        m->sizes  = calloc(2 * (size_t)comm->nranks, sizeof(uint64_t));
        m->bytes  = calloc(4 * (size_t)comm->nranks, sizeof(size_t));
        if (NULL == m->sizes || NULL == m->bytes ||
            SQZ_OK != sqz_lsh_create(1, 1, 1, 64, 0, &m->scratch)) {
            sqz_moe_comm_free(comm);
            return SQZ_ERR_NO_MEMORY;
        }
    }
    sqz_moe_comm_t *const m = comm->moe;
    if (lsh && (NULL == m->lsh || sqz_lsh_width(m->lsh) != width)) {
        /* A new width (another layer's d_model, say) draws its projections again from the seed:
         * the same on every rank. */
        sqz_lsh_destroy(m->lsh);
        m->lsh                     = NULL;
        const sqz_core_params_t *p = &comm->ctx->p;
        SQZ_CHECK(sqz_lsh_create(width, (int)p->lsh_dim, (int)p->lsh_hashes,
                                 (size_t)p->lsh_sample, (uint64_t)p->seed, &m->lsh));
    }
    return SQZ_OK;
}

void sqz_moe_stats_record(sqz_ctx_t *ctx, int codec, const sqz_moe_stats_t *cs)
{
    pthread_mutex_lock(&ctx->lock);
    sqz_moe_stats_t *s = &ctx->moe_stats[codec];
    s->calls++;
    s->tokens += cs->tokens;
    s->rows += cs->rows;
    s->bytes_in += cs->bytes_in;
    s->bytes_wire += cs->bytes_wire;
    s->seconds_compress += cs->seconds_compress;
    s->seconds_comm += cs->seconds_comm;
    pthread_mutex_unlock(&ctx->lock);
}

void sqz_moe_count_passthrough(sqz_comm_t *comm)
{
    __atomic_fetch_add(&comm->ctx->moe_passthrough, 1, __ATOMIC_RELAXED);
}

int sqz_moe_parse_cycle(const char *s, signed char *codes, int cap)
{
    int n = 0;
    for (const char *p = s; p && *p;) {
        const char  *comma = strchr(p, ',');
        const size_t len   = comma ? (size_t)(comma - p) : strlen(p);
        int          code;
        if (3 == len && 0 == strncmp(p, "lsh", 3)) {
            code = SQZ_MOE_LSH;
        } else if (5 == len && 0 == strncmp(p, "dedup", 5)) {
            code = SQZ_MOE_DEDUP;
        } else if (4 == len && 0 == strncmp(p, "none", 4)) {
            code = SQZ_MOE_NONE;
        } else {
            return -1;
        }
        if (n == cap) {
            return -1;
        }
        codes[n++] = (signed char)code;
        p          = comma ? comma + 1 : p + len;
        if (comma && '\0' == *p) {
            return -1; /* a trailing comma */
        }
    }
    return n;
}

int sqz_moe_next_codec(sqz_comm_t *comm)
{
    const sqz_ctx_t *ctx = comm->ctx;
    switch (ctx->p.moe) {
    case SQZ_MOE_ALL_DEDUP: return SQZ_MOE_DEDUP;
    case SQZ_MOE_ALL_LSH: return SQZ_MOE_LSH;
    case SQZ_MOE_CYCLE: break;
    default: return SQZ_MOE_NONE;
    }
    pthread_mutex_lock(&comm->lock);
    const int c = SQZ_OK == sqz_moe_comm_get(comm, 0, 0)
                      ? ctx->moe_cycle[comm->moe->ncalls++ % (uint64_t)ctx->moe_ncycle]
                      : SQZ_MOE_NONE;
    pthread_mutex_unlock(&comm->lock);
    return c;
}

/* Argument checks that need no communication (an erroneous call fails on its own rank). */
static sqz_status_t sqz_moe_check(const sqz_comm_t *comm, int codec, const void *sendbuf,
                                  const size_t *sc, const size_t *sd, const void *recvbuf,
                                  const size_t *rc, const size_t *rd, size_t dim, int dtype)
{
    if (NULL == comm || NULL == sc || NULL == sd || NULL == rc || NULL == rd || 0 == dim ||
        dim > UINT32_MAX || 0 == sqz_tok_esize(dtype) || codec < 0 || codec >= SQZ_MOE_NCODECS ||
        (SQZ_MOE_LSH == codec && SQZ_DTYPE_FLOAT32 != dtype) || NULL != comm->gpu) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (comm->hier) {
        return SQZ_ERR_NOT_SUPPORTED; /* (a hierarchical communicator is for all-reduces) */
    }
    size_t ns = 0, nr = 0;
    for (int r = 0; r < comm->nranks; r++) {
        if (sc[r] > UINT32_MAX || rc[r] > UINT32_MAX) {
            return SQZ_ERR_INVALID_PARAM; /* a block's header counts tokens in 32 bits */
        }
        ns += sc[r];
        nr += rc[r];
    }
    if ((ns && NULL == sendbuf) || (nr && NULL == recvbuf) ||
        sc[comm->rank] != rc[comm->rank]) {
        return SQZ_ERR_INVALID_PARAM;
    }
    return SQZ_OK;
}

/* Runs one coded all-to-all with comm->lock held. */
static sqz_status_t sqz_moe_run(sqz_a2a_call_t *call)
{
    sqz_comm_t *const comm = call->comm;
    sqz_status_t      st   = sqz_moe_comm_get(comm, call->width, SQZ_MOE_LSH == call->codec);
    if (SQZ_OK == st) {
        st = sqz_coll_alltoallv_tokens(call);
    }
    if (SQZ_OK == st) {
        sqz_moe_stats_record(comm->ctx, call->codec, &call->cs);
    }
    return st;
}

sqz_status_t sqz_moe_alltoallv(sqz_comm_t *comm, sqz_moe_codec_t codec, const void *sendbuf,
                               const size_t *sendcounts, const size_t *sdispls, void *recvbuf,
                               const size_t *recvcounts, const size_t *rdispls, size_t dim,
                               sqz_dtype_t dtype)
{
    SQZ_CHECK(sqz_moe_check(comm, (int)codec, sendbuf, sendcounts, sdispls, recvbuf, recvcounts,
                            rdispls, dim, (int)dtype));
    sqz_a2a_call_t call = {
        .comm = comm, .codec = (int)codec, .dtype = (int)dtype, .width = dim,
        .sendbuf = sendbuf, .scounts = sendcounts, .sdispls = sdispls,
        .recvbuf = recvbuf, .rcounts = recvcounts, .rdispls = rdispls,
    };
    pthread_mutex_lock(&comm->lock);
    const sqz_status_t st = sqz_moe_run(&call);
    pthread_mutex_unlock(&comm->lock);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * Dispatch / combine
 * ------------------------------------------------------------------------------------------- */
typedef struct sqz_moe_dispatch_arg {
    sqz_moe_handle_t *h;
    const float      *x;
} sqz_moe_dispatch_arg_t;

/* sqz_a2a_call_t.encoded of a dispatch: residuals and groups of peer r's tokens. */
static void sqz_moe_take_residuals(void *arg, int r, const void *block)
{
    const sqz_moe_dispatch_arg_t *a = arg;
    sqz_moe_handle_t *const       h = a->h;
    const size_t                  d = h->dim, off = h->counts[h->nranks + r], n = h->counts[r];
    sqz_tok_view_t                v;
    sqz_tok_view(block, &v);
    h->sent += n;
    h->rows += v.rows;
    if (SQZ_TOKFRAME_RAW == v.kind) {
        return; /* exact: residual 0, each token its own group (as initialized) */
    }
    for (size_t t = 0; t < n; t++) {
        const uint32_t g = sqz_tok_view_index(&v, t);
        float          c[1];
        /* The centroid row in the block (unaligned-safe copies, element by element). */
        for (size_t j = 0; j < d; j++) {
            memcpy(c, v.rowdata + ((size_t)g * d + j) * sizeof(float), sizeof(float));
            h->residual[(off + t) * d + j] = a->x[(off + t) * d + j] - c[0];
        }
        /* Tokens of one centroid share the index of the first of them (blocks do not overlap). */
        h->group[off + t] = (uint32_t)off + g;
    }
}

void sqz_moe_handle_free(sqz_moe_handle_t *h)
{
    if (h) {
        free(h->counts);
        free(h->residual);
        free(h->group);
        free(h->scratch);
        free(h->sum);
        free(h->cnt);
        free(h);
    }
}

size_t sqz_moe_handle_tokens(const sqz_moe_handle_t *h, size_t *centroids)
{
    if (centroids) {
        *centroids = h ? h->rows : 0;
    }
    return h ? h->sent : 0;
}

sqz_status_t sqz_moe_dispatch(sqz_comm_t *comm, sqz_moe_codec_t codec, const float *sendbuf,
                              const size_t *sendcounts, const size_t *sdispls, float *recvbuf,
                              const size_t *recvcounts, const size_t *rdispls, size_t dim,
                              sqz_moe_handle_t **handle)
{
    if (NULL == handle) {
        return SQZ_ERR_INVALID_PARAM;
    }
    *handle = NULL;
    SQZ_CHECK(sqz_moe_check(comm, (int)codec, sendbuf, sendcounts, sdispls, recvbuf, recvcounts,
                            rdispls, dim, SQZ_DTYPE_FLOAT32));
    const int         P = comm->nranks;
    sqz_moe_handle_t *h = calloc(1, sizeof(*h));
    if (NULL == h) {
        return SQZ_ERR_NO_MEMORY;
    }
    h->nranks = P;
    h->rank   = comm->rank;
    h->dim    = dim;
    h->counts = malloc(4 * (size_t)P * sizeof(size_t));
    for (int r = 0; h->counts && r < P; r++) {
        h->counts[r]         = sendcounts[r];
        h->counts[P + r]     = sdispls[r];
        h->counts[2 * P + r] = recvcounts[r];
        h->counts[3 * P + r] = rdispls[r];
        if (sendcounts[r] && sdispls[r] + sendcounts[r] > h->ntok) {
            h->ntok = sdispls[r] + sendcounts[r];
        }
    }
    const size_t nt = h->ntok ? h->ntok : 1;
    h->residual     = calloc(nt * dim, sizeof(float));
    h->group        = malloc(nt * sizeof(uint32_t));
    h->scratch      = malloc(nt * dim * sizeof(float));
    h->sum          = malloc(nt * dim * sizeof(float));
    h->cnt          = malloc(nt * sizeof(uint32_t));
    if (NULL == h->counts || NULL == h->residual || NULL == h->group || NULL == h->scratch ||
        NULL == h->sum || NULL == h->cnt || h->ntok > UINT32_MAX) {
        const sqz_status_t st = h->ntok > UINT32_MAX ? SQZ_ERR_INVALID_PARAM : SQZ_ERR_NO_MEMORY;
        sqz_moe_handle_free(h);
        return st;
    }
    for (size_t t = 0; t < h->ntok; t++) {
        h->group[t] = (uint32_t)t;
    }
    sqz_moe_dispatch_arg_t arg  = {h, sendbuf};
    sqz_a2a_call_t         call = {
        .comm = comm, .codec = (int)codec, .dtype = SQZ_DTYPE_FLOAT32, .width = dim,
        .sendbuf = sendbuf, .scounts = sendcounts, .sdispls = sdispls,
        .recvbuf = recvbuf, .rcounts = recvcounts, .rdispls = rdispls,
        .encoded = sqz_moe_take_residuals, .arg = &arg,
    };
    pthread_mutex_lock(&comm->lock);
    const sqz_status_t st = sqz_moe_run(&call);
    pthread_mutex_unlock(&comm->lock);
    if (SQZ_OK != st) {
        sqz_moe_handle_free(h);
        return st;
    }
    if (SQZ_MOE_EXACT == codec) { /* no frames were built: every token travelled as itself */
        for (int r = 0; r < P; r++) {
            h->sent += r == h->rank ? 0 : sendcounts[r];
        }
        h->rows = h->sent;
    }
    *handle = h;
    return SQZ_OK;
}

sqz_status_t sqz_moe_combine(sqz_comm_t *comm, const sqz_moe_handle_t *h, const float *expert_out,
                             float *out)
{
    if (NULL == comm || NULL == h || h->nranks != comm->nranks || h->rank != comm->rank) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const int     P  = h->nranks;
    const size_t *hc = h->counts;
    /* The reverse exchange: the dispatch's receive layout is the send layout now. */
    SQZ_CHECK(sqz_moe_alltoallv(comm, SQZ_MOE_DEDUP, expert_out, hc + 2 * P, hc + 3 * P, out, hc,
                                hc + P, h->dim, SQZ_DTYPE_FLOAT32));
    for (int r = 0; r < P; r++) {
        float *const       y   = out + hc[P + r] * h->dim;
        const float *const res = h->residual + hc[P + r] * h->dim;
        for (size_t i = 0; i < hc[r] * h->dim; i++) {
            y[i] += res[i];
        }
    }
    return SQZ_OK;
}

sqz_status_t sqz_moe_centroid_mean(sqz_moe_handle_t *h, const float *g, float *out)
{
    if (NULL == h || (h->ntok && (NULL == g || NULL == out))) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const size_t d = h->dim;
    memset(h->sum, 0, h->ntok * d * sizeof(float));
    memset(h->cnt, 0, h->ntok * sizeof(uint32_t));
    /* Sums per group (indexed by the group's number), then each token takes its group's mean,
     * computed once per group so that the copies are bit-identical (DEDUP sends them once).
     * Tokens outside every block (gaps) are their own group and keep their value. */
    for (size_t t = 0; t < h->ntok; t++) {
        float *const s = h->sum + (size_t)h->group[t] * d;
        for (size_t j = 0; j < d; j++) {
            s[j] += g[t * d + j];
        }
        h->cnt[h->group[t]]++;
    }
    for (size_t k = 0; k < h->ntok; k++) {
        if (h->cnt[k] > 1) {
            float *const      s   = h->sum + k * d;
            const float       inv = 1.0f / (float)h->cnt[k];
            for (size_t j = 0; j < d; j++) {
                s[j] *= inv;
            }
        }
    }
    for (size_t t = 0; t < h->ntok; t++) {
        memcpy(out + t * d, h->sum + (size_t)h->group[t] * d, d * sizeof(float));
    }
    return SQZ_OK;
}

sqz_status_t sqz_moe_combine_backward(sqz_comm_t *comm, sqz_moe_handle_t *h, const float *grad_out,
                                      float *grad_expert_out, float *grad_x)
{
    if (NULL == comm || NULL == h || h->nranks != comm->nranks || h->rank != comm->rank ||
        (h->ntok && NULL == grad_out)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const int     P  = h->nranks;
    const size_t *hc = h->counts, n = h->ntok * h->dim;
    /* Each centroid's copies get the mean of their tokens' gradients: identical rows, which DEDUP
     * sends once per centroid. */
    SQZ_CHECK(sqz_moe_centroid_mean(h, grad_out, h->scratch));
    SQZ_CHECK(sqz_moe_alltoallv(comm, SQZ_MOE_DEDUP, h->scratch, hc, hc + P, grad_expert_out,
                                hc + 2 * P, hc + 3 * P, h->dim, SQZ_DTYPE_FLOAT32));
    if (grad_x) { /* the residual x - c: identity minus the centroid mean */
        for (size_t i = 0; i < n; i++) {
            grad_x[i] = grad_out[i] - h->scratch[i];
        }
    }
    return SQZ_OK;
}

sqz_status_t sqz_moe_dispatch_backward(sqz_comm_t *comm, sqz_moe_handle_t *h,
                                       const float *grad_expert_in, float *grad_x)
{
    if (NULL == comm || NULL == h || h->nranks != comm->nranks || h->rank != comm->rank ||
        (h->ntok && NULL == grad_x)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const int     P  = h->nranks;
    const size_t *hc = h->counts;
    /* Gaps of the sendbuf layout receive nothing: they read as zero gradients. */
    memset(h->scratch, 0, h->ntok * h->dim * sizeof(float));
    SQZ_CHECK(sqz_moe_alltoallv(comm, SQZ_MOE_DEDUP, grad_expert_in, hc + 2 * P, hc + 3 * P,
                                h->scratch, hc, hc + P, h->dim, SQZ_DTYPE_FLOAT32));
    /* c = mean of its tokens, so each token gets 1/n of the sum over the centroid's copies. */
    return sqz_moe_centroid_mean(h, h->scratch, grad_x);
}

void sqz_moe_stats_get(const sqz_ctx_t *ctx, sqz_moe_codec_t codec, sqz_moe_stats_t *out)
{
    if (NULL == out) {
        return;
    }
    memset(out, 0, sizeof(*out));
    if (NULL == ctx || (int)codec < 0 || (int)codec >= SQZ_MOE_NCODECS) {
        return;
    }
    pthread_mutex_lock((pthread_mutex_t *)&ctx->lock);
    *out = ctx->moe_stats[codec];
    pthread_mutex_unlock((pthread_mutex_t *)&ctx->lock);
}
