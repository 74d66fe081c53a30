/* The segmented composite compressor of layer-adaptive selection (see sqz_adapt_seg.h). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/sqz_log.h"
#include "sqz_adapt_seg.h"
#include "sqz_plugin_util.h"

#define SQZ_SEG_MAGIC 0x47535153u /* "SQSG" */
#define SQZ_SEG_HDR 8u            /* magic, nseg */
#define SQZ_SEG_ENTRY 12u         /* candidate, elements, bytes */

typedef struct sqz_seg_part {
    size_t offset, n;
    int    cand; /* index into cand[] */
} sqz_seg_part_t;

struct sqz_seg {
    const sqz_compressor_v1_t *c;       /* the method */
    void                      *st[16];  /* one state per candidate level */
    sqz_adapt_probe_t          levels;  /* the candidates (cand, ncand, uniform) */
    int                        uidx;    /* the uniform level's index */
    sqz_seg_part_t            *parts;   /* the plan: segments covering [0, n) */
    size_t                     nparts, partcap, n;
    float                     *scratch; /* a probe's a = in + residual of one layer */
    size_t                     scratchcap;
    void                      *pay;     /* a probe's payload */
    size_t                     paycap;
};

int sqz_seg_supported(const sqz_ctx_t *ctx)
{
    const sqz_compressor_v1_t *c = ctx->method;
    if (SQZ_EXCHANGE_ALLGATHER != c->exchange ||
        c->size < offsetof(sqz_compressor_v1_t, level_scale) + sizeof(double) || NULL == c->levels ||
        NULL == c->level_param) {
        return 0;
    }
    const void               *cfg = NULL;
    const sqz_param_def_v1_t *d   = sqz_ctx_find_param(ctx, c->level_param, &cfg);
    return d && (SQZ_PARAM_INT == d->type || (SQZ_PARAM_DOUBLE == d->type && c->level_scale > 0));
}

sqz_status_t sqz_seg_create(const sqz_ctx_t *ctx, const sqz_compressor_env_v1_t *env,
                            sqz_seg_t **out)
{
    *out = NULL;
    if (!sqz_seg_supported(ctx)) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    sqz_seg_t *s = calloc(1, sizeof(*s));
    if (NULL == s) {
        return SQZ_ERR_NO_MEMORY;
    }
    const sqz_compressor_v1_t *c = ctx->method;
    s->c                         = c;
    sqz_adapt_candidates(ctx, &s->levels);
    const void               *cfg0 = ctx->configs[ctx->method_index];
    const sqz_param_def_v1_t *d    = sqz_ctx_find_param(ctx, c->level_param, NULL);
    unsigned char            *cfg  = malloc(c->config_size ? c->config_size : 1);
    sqz_status_t              st   = cfg ? SQZ_OK : SQZ_ERR_NO_MEMORY;
    for (size_t j = 0; SQZ_OK == st && j < s->levels.ncand; j++) {
        /* The method's configuration with this level written into its level parameter. */
        memcpy(cfg, cfg0, c->config_size);
        const int v = s->levels.cand[j];
        if (SQZ_PARAM_INT == d->type) {
            *(int64_t *)(cfg + d->offset) = v;
        } else {
            *(double *)(cfg + d->offset) = fmin(fmax((double)v / c->level_scale, d->min), d->max);
        }
        st = c->create(cfg, env, &s->st[j]);
        if (v == s->levels.uniform) {
            s->uidx = (int)j;
        }
    }
    free(cfg);
    if (SQZ_OK != st) {
        sqz_seg_destroy(s);
        return st;
    }
    *out = s;
    return SQZ_OK;
}

void sqz_seg_destroy(sqz_seg_t *s)
{
    if (NULL == s) {
        return;
    }
    for (size_t j = 0; j < s->levels.ncand; j++) {
        if (s->st[j]) {
            s->c->destroy(s->st[j]);
        }
    }
    free(s->parts);
    free(s->scratch);
    free(s->pay);
    free(s);
}

static int sqz_seg_cand_index(const sqz_seg_t *s, int level)
{
    for (size_t j = 0; j < s->levels.ncand; j++) {
        if (s->levels.cand[j] == level) {
            return (int)j;
        }
    }
    return s->uidx;
}

sqz_status_t sqz_seg_plan(sqz_seg_t *s, const sqz_layer_t *layers, size_t nlayers, size_t n,
                          const int *levels)
{
    if (!sqz_pu_grow((void **)&s->parts, &s->partcap, (2 * nlayers + 1) * sizeof(*s->parts))) {
        return SQZ_ERR_NO_MEMORY;
    }
    size_t at = 0, k = 0;
    for (size_t l = 0; l < nlayers; l++) {
        if (layers[l].offset > at) {
            s->parts[k++] = (sqz_seg_part_t){at, layers[l].offset - at, s->uidx};
        }
        const size_t len = layers[l].rows * layers[l].cols;
        s->parts[k++] = (sqz_seg_part_t){layers[l].offset, len,
                                         levels ? sqz_seg_cand_index(s, levels[l]) : s->uidx};
        at = layers[l].offset + len;
    }
    if (n > at || 0 == k) {
        s->parts[k++] = (sqz_seg_part_t){at, n - at, s->uidx};
    }
    s->nparts = k;
    s->n      = n;
    return SQZ_OK;
}

static size_t sqz_seg_round8(size_t x) { return (x + 7) & ~(size_t)7; }

static size_t sqz_seg_max_payload(void *state, size_t n)
{
    const sqz_seg_t *s = state;
    if (n != s->n) {
        return SQZ_SEG_HDR; /* no plan for this size: compress refuses it */
    }
    size_t b = sqz_seg_round8(SQZ_SEG_HDR + SQZ_SEG_ENTRY * s->nparts);
    for (size_t k = 0; k < s->nparts; k++) {
        const sqz_seg_part_t *p = &s->parts[k];
        b += sqz_seg_round8(s->c->max_payload(s->st[p->cand], p->n));
    }
    return b;
}

/* Gives the residual of the first `done` segments back after a failure: residual = residual_new
 * + decoded - in (the finiteness contract's restore, segment by segment). */
static void sqz_seg_restore(const sqz_seg_t *s, const sqz_compress_args_v1_t *a, size_t done)
{
    const unsigned char *base = a->payload;
    size_t               pos  = sqz_seg_round8(SQZ_SEG_HDR + SQZ_SEG_ENTRY * s->nparts);
    for (size_t k = 0; k < done; k++) {
        const sqz_seg_part_t *p     = &s->parts[k];
        const uint32_t        bytes = sqz_pu_load_u32(base + SQZ_SEG_HDR + SQZ_SEG_ENTRY * k + 8);
        if (SQZ_OK == s->c->decompress(s->st[p->cand], base + pos, bytes, a->residual + p->offset,
                                       p->n)) {
            for (size_t i = 0; i < p->n; i++) {
                a->residual[p->offset + i] -= a->in[p->offset + i];
            }
        }
        pos += sqz_seg_round8(bytes);
    }
}

static sqz_status_t sqz_seg_compress(void *state, sqz_compress_args_v1_t *a)
{
    sqz_seg_t *const s = state;
    if (a->n != s->n || a->capacity < sqz_seg_max_payload(s, a->n)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    unsigned char *base = a->payload;
    size_t         pos  = sqz_seg_round8(SQZ_SEG_HDR + SQZ_SEG_ENTRY * s->nparts);
    sqz_pu_store_u32(base, SQZ_SEG_MAGIC);
    sqz_pu_store_u32(base + 4, (uint32_t)s->nparts);
    a->norm2_in = 0, a->norm2_err = 0;
    for (size_t k = 0; k < s->nparts; k++) {
        const sqz_seg_part_t  *p   = &s->parts[k];
        const size_t           cap = s->c->max_payload(s->st[p->cand], p->n);
        sqz_compress_args_v1_t sub = {
            .size      = sizeof(sub),
            .in        = a->in + p->offset,
            .residual  = a->residual ? a->residual + p->offset : NULL,
            .n         = p->n,
            .seq       = a->seq,
            .stage     = a->stage,
            .payload   = base + pos,
            .capacity  = cap,
        };
        const sqz_status_t st = s->c->compress(s->st[p->cand], &sub);
        if (SQZ_OK != st) {
            if (a->residual) {
                sqz_seg_restore(s, a, k);
            }
            return st;
        }
        unsigned char *e = base + SQZ_SEG_HDR + SQZ_SEG_ENTRY * k;
        sqz_pu_store_u32(e, (uint32_t)p->cand);
        sqz_pu_store_u32(e + 4, (uint32_t)p->n);
        sqz_pu_store_u32(e + 8, (uint32_t)sub.payload_bytes);
        /* The padding is written too: payload bytes are never left undefined. */
        memset(base + pos + sub.payload_bytes, 0, sqz_seg_round8(sub.payload_bytes) - sub.payload_bytes);
        pos += sqz_seg_round8(sub.payload_bytes);
        a->norm2_in += sub.norm2_in;
        a->norm2_err += sub.norm2_err;
    }
    a->payload_bytes = pos;
    return SQZ_OK;
}

/* Decodes (out != NULL) or validates every segment; the caller validates first, then decodes. */
static sqz_status_t sqz_seg_walk(const sqz_seg_t *s, const unsigned char *base, size_t bytes,
                                 float *out, size_t n)
{
    if (bytes < SQZ_SEG_HDR || SQZ_SEG_MAGIC != sqz_pu_load_u32(base)) {
        return SQZ_ERR_CORRUPT;
    }
    const size_t nseg = sqz_pu_load_u32(base + 4);
    if (nseg > (bytes - SQZ_SEG_HDR) / SQZ_SEG_ENTRY) {
        return SQZ_ERR_CORRUPT;
    }
    size_t pos = sqz_seg_round8(SQZ_SEG_HDR + SQZ_SEG_ENTRY * nseg), at = 0;
    for (size_t k = 0; k < nseg; k++) {
        const unsigned char *e    = base + SQZ_SEG_HDR + SQZ_SEG_ENTRY * k;
        const size_t         cand = sqz_pu_load_u32(e), len = sqz_pu_load_u32(e + 4);
        const size_t         b    = sqz_pu_load_u32(e + 8);
        if (cand >= s->levels.ncand || len > n - at || pos > bytes || b > bytes - pos) {
            return SQZ_ERR_CORRUPT;
        }
        if (SQZ_OK != s->c->decompress(s->st[cand], base + pos, b, out ? out + at : NULL, len)) {
            return SQZ_ERR_CORRUPT;
        }
        at += len;
        pos += sqz_seg_round8(b);
    }
    return at == n ? SQZ_OK : SQZ_ERR_CORRUPT;
}

static sqz_status_t sqz_seg_decompress(void *state, const void *payload, size_t bytes, float *out,
                                       size_t n)
{
    const sqz_seg_t *s = state;
    SQZ_CHECK(sqz_seg_walk(s, payload, bytes, NULL, n)); /* all of it, before writing */
    return out ? sqz_seg_walk(s, payload, bytes, out, n) : SQZ_OK;
}

sqz_status_t sqz_seg_probe(sqz_seg_t *s, const float *in, const float *residual,
                           const sqz_layer_t *layers, size_t nlayers, uint64_t seq,
                           sqz_adapt_probe_t *pr)
{
    for (size_t l = 0; l < nlayers; l++) {
        const size_t len = layers[l].rows * layers[l].cols, off = layers[l].offset;
        if (!sqz_pu_grow((void **)&s->scratch, &s->scratchcap, (len + 1) * sizeof(float))) {
            return SQZ_ERR_NO_MEMORY;
        }
        double norm = 0;
        for (size_t i = 0; i < len; i++) {
            s->scratch[i] = in[off + i] + (residual ? residual[off + i] : 0.0f);
            norm += (double)s->scratch[i] * s->scratch[i];
        }
        for (size_t j = 0; j < pr->ncand; j++) {
            const size_t cap = s->c->max_payload(s->st[j], len);
            if (!sqz_pu_grow(&s->pay, &s->paycap, cap + 1)) {
                return SQZ_ERR_NO_MEMORY;
            }
            sqz_compress_args_v1_t a = {.size = sizeof(a), .in = s->scratch, .n = len, .seq = seq,
                                        .payload = s->pay, .capacity = cap};
            const sqz_status_t     st = s->c->compress(s->st[j], &a);
            /* A non-finite layer: its errors are NaN, which the solve refuses (uniform kept). */
            pr->err[l * pr->ncand + j]   = SQZ_OK == st ? a.norm2_err : NAN;
            pr->bytes[l * pr->ncand + j] = (double)(SQZ_OK == st ? a.payload_bytes : cap);
        }
        pr->norm[l] = norm;
    }
    return SQZ_OK;
}

const sqz_compressor_v1_t sqz_seg_compressor = {
    .abi         = SQZ_COMPRESSOR_ABI_V1,
    .size        = sizeof(sqz_compressor_v1_t),
    .name        = "lgreco_segments",
    .description = "layer-adaptive composite: each layer by the method at its own level",
    .exchange    = SQZ_EXCHANGE_ALLGATHER,
    .max_payload = sqz_seg_max_payload,
    .compress    = sqz_seg_compress,
    .decompress  = sqz_seg_decompress,
};
