/* The library context: the core parameter table, parameter checking, plugin loading and method
 * selection. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapt/sqz_adapt.h"
#include "adapt/sqz_adapt_seg.h"
#include "sqz_core_params.h"
#include "sqz_ctx.h"
#include "sqz_dgc.h"
#include "sqz_layout_file.h"
#include "sqz_log.h"

double sqz_time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

sqz_status_t sqz_scratch_reserve(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap) {
        return SQZ_OK;
    }
    /* Grow geometrically so that a sequence of slightly larger calls does not reallocate each time. */
    size_t newcap = *cap ? *cap : 4096;
    while (newcap < need) {
        newcap *= 2;
    }
    void *p = NULL;
    if (0 != posix_memalign(&p, 64, newcap)) {
        return SQZ_ERR_NO_MEMORY;
    }
    free(*buf);
    *buf = p;
    *cap = newcap;
    return SQZ_OK;
}

static sqz_status_t sqz_config_copy(const sqz_config_t *src, sqz_config_t **dst)
{
    SQZ_CHECK(sqz_config_create(dst));
    for (size_t i = 0; src && i < src->n; i++) {
        sqz_config_t *d = *dst;
        if (SQZ_OK != sqz_config_set(d, src->entries[i].name, src->entries[i].value)) {
            return SQZ_ERR_NO_MEMORY;
        }
        /* keep the original source for error messages */
        free(d->entries[d->n - 1].source);
        d->entries[d->n - 1].source = strdup(src->entries[i].source);
        if (NULL == d->entries[d->n - 1].source) {
            return SQZ_ERR_NO_MEMORY;
        }
    }
    return SQZ_OK;
}

const sqz_param_def_v1_t *sqz_ctx_find_param(const sqz_ctx_t *ctx, const char *name,
                                              const void **config)
{
    const sqz_param_def_v1_t *core = sqz_core_param_find(name);
    if (core) {
        if (config) {
            *config = &ctx->p;
        }
        return core;
    }
    for (size_t j = 0; j < ctx->reg.n; j++) {
        const sqz_compressor_v1_t *c = ctx->reg.e[j].c;
        for (size_t i = 0; i < c->nparams; i++) {
            if (0 == strcmp(c->params[i].name, name)) {
                if (config) {
                    *config = ctx->configs ? ctx->configs[j] : NULL;
                }
                return &c->params[i];
            }
        }
    }
    return NULL;
}

int sqz_ctx_param_is(const sqz_ctx_t *ctx, const char *name, const char *value)
{
    const void               *cfg = NULL;
    const sqz_param_def_v1_t *d   = sqz_ctx_find_param(ctx, name, &cfg);
    char                      v[64];
    if (NULL == d || NULL == cfg) {
        return 0;
    }
    sqz_param_format(d, cfg, v, sizeof(v));
    return 0 == strcmp(v, value);
}

double sqz_ctx_param_num(const sqz_ctx_t *ctx, const char *name, double dflt)
{
    const void               *cfg = NULL;
    const sqz_param_def_v1_t *d   = sqz_ctx_find_param(ctx, name, &cfg);
    if (NULL == d || NULL == cfg) {
        return dflt;
    }
    const char *slot = (const char *)cfg + d->offset;
    switch (d->type) {
    case SQZ_PARAM_INT: return (double)*(const int64_t *)slot;
    case SQZ_PARAM_DOUBLE: return *(const double *)slot;
    case SQZ_PARAM_SIZE: return (double)*(const size_t *)slot;
    case SQZ_PARAM_BOOL:
    case SQZ_PARAM_ENUM: return (double)*(const int *)slot;
    default: return dflt;
    }
}

/* The method's flags (0 for a descriptor too old to carry them). */
static uint32_t sqz_method_flags(const sqz_compressor_v1_t *c)
{
    return c->size >= offsetof(sqz_compressor_v1_t, flags) + sizeof(uint32_t) ? c->flags : 0;
}

/* SQZ_EF=auto: what converges for the method (its flags); an explicit choice its flags say
 * diverges is kept, with a warning. */
static void sqz_ctx_resolve_ef(sqz_ctx_t *ctx)
{
    const uint32_t f = sqz_method_flags(ctx->method);
    ctx->ef_auto     = SQZ_EF_AUTO == ctx->p.ef;
    ctx->ef14_diverges = 0 != (f & SQZ_COMPRESSOR_EF14_DIVERGES);
    ctx->ef_decay    = ctx->p.ef_decay > 0.0 ? (float)ctx->p.ef_decay
                       : ctx->ef_auto && (f & SQZ_COMPRESSOR_EF14_DAMPED) ? 0.8f
                                                                         : 1.0f;
    if (ctx->ef_auto) {
        /* (DGC's momentum correction and clipping are defined over classic error feedback.) */
        ctx->ef = (f & SQZ_COMPRESSOR_EF_NONE)                   ? SQZ_EF_NONE
                  : ((f & SQZ_COMPRESSOR_EF21) && !sqz_dgc_active(&ctx->p)) ? SQZ_EF_EF21
                                                                            : SQZ_EF_EF14;
        return;
    }
    ctx->ef               = ctx->p.ef;
    const int diverges    = ((SQZ_EF_EF14 == ctx->ef || SQZ_EF_ECONTROL == ctx->ef) &&
                          (f & SQZ_COMPRESSOR_EF14_DIVERGES)) ||
                         (SQZ_EF_EF21 == ctx->ef && (f & SQZ_COMPRESSOR_EF21_DIVERGES));
    static const char *const names[] = {"ef14", "none", "ef21", "econtrol"};
    if (diverges) {
        SQZ_WARN("SQZ_EF=%s with SQZ_METHOD=%s is known to diverge at the step sizes dense SGD "
                 "takes (%s; docs/methods.md has the measurements): SQZ_EF=auto picks what "
                 "converges for it",
                 names[ctx->ef], ctx->method->name,
                 (f & SQZ_COMPRESSOR_UNBIASED) ? "error feedback feeds an unbiased compressor's "
                                                 "variance back"
                                               : "its residual releases many steps' gradient at once");
    }
}

/* Combinations of the selected method with the core settings that cannot work together. */
static sqz_status_t sqz_ctx_check_method(const sqz_ctx_t *ctx, char *errbuf, size_t errlen)
{
    const sqz_compressor_v1_t *c        = ctx->method;
    const int                  summable = SQZ_EXCHANGE_SUMMABLE == c->exchange;
    /* ef21 works with a summable method as with any other (the engine's estimators, the
     * plugin's error-feedback contract); econtrol's eta is tuned for sparsifiers, and PowerSGD's
     * GPU kernels have no econtrol. */
    if (summable && SQZ_EF_ECONTROL == ctx->ef) {
        snprintf(errbuf, errlen,
                 "SQZ_EF=econtrol: not available with SQZ_METHOD=%s (use ef14, ef21 or none)",
                 c->name);
        return SQZ_ERR_INVALID_PARAM;
    }
    if (summable && ctx->p.dgc_momentum > 0) {
        snprintf(errbuf, errlen, "SQZ_DGC_MOMENTUM: DGC's momentum correction is for the "
                                 "sparsifiers, not SQZ_METHOD=%s", c->name);
        return SQZ_ERR_INVALID_PARAM;
    }
    const int levels = (summable && c->size >= offsetof(sqz_compressor_v1_t, level_bytes) +
                                                    sizeof(void (*)(void)) &&
                        NULL != c->levels && NULL != c->level_bytes) ||
                       sqz_seg_supported(ctx);
    if (ctx->p.adapt && !levels) {
        snprintf(errbuf, errlen, "SQZ_ADAPT=lgreco: SQZ_METHOD=%s has no per-layer levels "
                                 "(methods that adapt: powersgd, topk)", c->name);
        return SQZ_ERR_INVALID_PARAM;
    }
    return SQZ_OK;
}

/* The MoE parameters that bound each other. */
static sqz_status_t sqz_ctx_check_moe(sqz_ctx_t *ctx, char *errbuf, size_t errlen)
{
    const sqz_core_params_t *p = &ctx->p;
    if ((uint64_t)p->lsh_hashes * sqz_lsh_code_bits((int)p->lsh_dim) > 64) {
        snprintf(errbuf, errlen,
                 "SQZ_LSH_HASHES=%lld with SQZ_LSH_DIM=%lld: %lld bits of bucket id, at most 64 "
                 "(lower one of them)",
                 (long long)p->lsh_hashes, (long long)p->lsh_dim,
                 (long long)(p->lsh_hashes * sqz_lsh_code_bits((int)p->lsh_dim)));
        return SQZ_ERR_INVALID_PARAM;
    }
    ctx->moe_ncycle = sqz_moe_parse_cycle(p->moe_cycle, ctx->moe_cycle, SQZ_MOE_CYCLE_MAX);
    if (ctx->moe_ncycle < 1) {
        snprintf(errbuf, errlen,
                 "SQZ_MOE_CYCLE='%s': expected 1 to %d comma-separated entries among lsh, dedup, "
                 "none",
                 p->moe_cycle, SQZ_MOE_CYCLE_MAX);
        return SQZ_ERR_INVALID_PARAM;
    }
    if (SQZ_MOE_OFF != p->moe && 0 == p->moe_dim) {
        snprintf(errbuf, errlen, "SQZ_MOE is on but SQZ_MOE_DIM is 0: set it to the elements per "
                                 "token (d_model) of the MoE all-to-alls");
        return SQZ_ERR_INVALID_PARAM;
    }
    return SQZ_OK;
}

sqz_status_t sqz_ctx_create(const sqz_config_t *cfg, sqz_ctx_t **out, char *errbuf, size_t errlen)
{
    char         localerr[512];
    sqz_status_t st;
    if (NULL == errbuf || 0 == errlen) {
        errbuf = localerr;
        errlen = sizeof(localerr);
    }
    errbuf[0]      = '\0';
    *out           = NULL;
    sqz_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (NULL == ctx) {
        return SQZ_ERR_NO_MEMORY;
    }
    pthread_mutex_init(&ctx->lock, NULL);
    SQZ_CHECK_GOTO(sqz_config_copy(cfg, &ctx->cfg), st, fail);
    SQZ_CHECK_GOTO(sqz_core_params_apply(ctx->cfg, &ctx->p, errbuf, errlen), st, fail);
    sqz_log_set_level(ctx->p.log);
    if (ctx->p.stats[0] && 0 != strcmp(ctx->p.stats, "summary") &&
        !(0 == strncmp(ctx->p.stats, "json:", 5) && ctx->p.stats[5])) {
        snprintf(errbuf, errlen, "SQZ_STATS='%s': expected 'summary' or 'json:PATH'", ctx->p.stats);
        st = SQZ_ERR_INVALID_PARAM;
        goto fail;
    }
    if (ctx->p.layout[0]) {
        SQZ_CHECK_GOTO(sqz_layout_file_load(ctx->p.layout, &ctx->layout_file, errbuf, errlen), st,
                       fail);
    }
    SQZ_CHECK_GOTO(sqz_ctx_check_moe(ctx, errbuf, errlen), st, fail);
    SQZ_CHECK_GOTO(sqz_registry_init(&ctx->reg), st, fail);
    sqz_registry_load_plugins(&ctx->reg, ctx->p.plugins);

    ctx->configs = calloc(ctx->reg.n, sizeof(void *));
    ctx->stats   = calloc(ctx->reg.n, sizeof(*ctx->stats));
    if (NULL == ctx->configs || NULL == ctx->stats) {
        st = SQZ_ERR_NO_MEMORY;
        goto fail;
    }
    for (size_t j = 0; j < ctx->reg.n; j++) {
        const sqz_compressor_v1_t *c = ctx->reg.e[j].c;
        ctx->configs[j]              = calloc(1, c->config_size ? c->config_size : 1);
        if (NULL == ctx->configs[j]) {
            st = SQZ_ERR_NO_MEMORY;
            goto fail;
        }
        SQZ_CHECK_GOTO(sqz_params_apply(c->params, c->nparams, ctx->cfg, ctx->configs[j], errbuf, errlen),
                       st, fail);
    }
    ctx->method = NULL;
    for (size_t j = 0; j < ctx->reg.n; j++) {
        if (0 == strcmp(ctx->reg.e[j].c->name, ctx->p.method)) {
            ctx->method        = ctx->reg.e[j].c;
            ctx->method_device = ctx->reg.e[j].device;
            ctx->method_index  = j;
        }
    }
    if (NULL == ctx->method) {
        int off = snprintf(errbuf, errlen, "SQZ_METHOD='%s': unknown method; known methods:", ctx->p.method);
        for (size_t j = 0; j < ctx->reg.n && off > 0 && (size_t)off < errlen; j++) {
            off += snprintf(errbuf + off, errlen - (size_t)off, " %s", ctx->reg.e[j].c->name);
        }
        st = SQZ_ERR_INVALID_PARAM;
        goto fail;
    }
    sqz_ctx_resolve_ef(ctx);
    SQZ_CHECK_GOTO(sqz_ctx_check_method(ctx, errbuf, errlen), st, fail);
    if (ctx->layout_file && SQZ_EXCHANGE_SUMMABLE != ctx->method->exchange && !ctx->p.adapt) {
        SQZ_WARN("SQZ_LAYOUT is set, but SQZ_METHOD=%s without SQZ_ADAPT reads no layout: it has "
                 "no effect", ctx->method->name);
    }
    for (size_t i = 0; i < ctx->cfg->n; i++) {
        if (NULL == sqz_ctx_find_param(ctx, ctx->cfg->entries[i].name, NULL)) {
            SQZ_WARN("SQZ_%s (%s) is not a Squeeze parameter; setting it has no effect "
                     "(squeeze_info lists them)",
                     ctx->cfg->entries[i].name, ctx->cfg->entries[i].source);
        }
    }
    *out = ctx;
    return SQZ_OK;
fail:
    if ('\0' == errbuf[0]) {
        snprintf(errbuf, errlen, "%s", sqz_status_string(st));
    }
    sqz_ctx_destroy(ctx);
    return st;
}

/* SQZ_LAYOUT entries that no call used: a layout written for sizes the job never reduces (a
 * different bucket size, a typo) would otherwise be ignored without a word. */
static void sqz_ctx_report_unused_layouts(const sqz_ctx_t *ctx)
{
    if (NULL == ctx->layout_file || NULL == ctx->method ||
        (SQZ_EXCHANGE_SUMMABLE != ctx->method->exchange && !ctx->p.adapt)) {
        return; /* (the method reads no layout: said at creation) */
    }
    size_t       line[8], count[8];
    const size_t n = sqz_layout_file_unused(ctx->layout_file, line, count, 8);
    for (size_t i = 0; i < n && i < 8; i++) {
        SQZ_WARN("SQZ_LAYOUT=%s:%zu: no eligible call had %zu elements: that layout was never "
                 "used (layouts match buffers by their element count)",
                 ctx->p.layout, line[i], count[i]);
    }
    if (n > 8) {
        SQZ_WARN("SQZ_LAYOUT=%s: %zu more unused layouts", ctx->p.layout, n - 8);
    }
}

void sqz_ctx_destroy(sqz_ctx_t *ctx)
{
    if (NULL == ctx) {
        return;
    }
    for (size_t j = 0; ctx->configs && j < ctx->reg.n; j++) {
        free(ctx->configs[j]);
    }
    free(ctx->configs);
    free(ctx->stats);
    sqz_ctx_report_unused_layouts(ctx);
    sqz_layout_file_free(ctx->layout_file);
    sqz_adapt_records_free(ctx);
    sqz_registry_fini(&ctx->reg);
    sqz_config_destroy(ctx->cfg);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

void sqz_ctx_set_log_rank(sqz_ctx_t *ctx, int rank)
{
    (void)ctx;
    sqz_log_set_rank(rank);
}

const char *sqz_ctx_method(const sqz_ctx_t *ctx) { return ctx->method->name; }

/* FNV-1a: stable across builds and machines, which a digest compared between ranks needs. */
static uint64_t sqz_fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

sqz_status_t sqz_ctx_settings_digest(const sqz_ctx_t *ctx, char *buf, size_t len, uint64_t *hash)
{
    size_t off = 0;
    char   value[256];
    buf[0]     = '\0';
    /* Core parameters, then those of the selected method: what decides eligibility and the bytes
     * on the wire.  Other compressors' parameters do not matter to this job. */
    for (size_t i = 0; i < sqz_core_param_count(); i++) {
        sqz_param_scope_t         scope;
        const sqz_param_def_v1_t *d = sqz_core_param(i, &scope);
        if (SQZ_SCOPE_RANK == scope) {
            continue;
        }
        sqz_param_format(d, &ctx->p, value, sizeof(value));
        const int w = snprintf(buf + off, len - off, "SQZ_%s=%s\n", d->name, value);
        if (w < 0 || (size_t)w >= len - off) {
            return SQZ_ERR_NO_MEMORY;
        }
        off += (size_t)w;
    }
    const sqz_compressor_v1_t *c = ctx->method;
    for (size_t i = 0; i < c->nparams; i++) {
        sqz_param_format(&c->params[i], ctx->configs[ctx->method_index], value, sizeof(value));
        const int w = snprintf(buf + off, len - off, "SQZ_%s=%s\n", c->params[i].name, value);
        if (w < 0 || (size_t)w >= len - off) {
            return SQZ_ERR_NO_MEMORY;
        }
        off += (size_t)w;
    }
    /* A plugin decides by its device operations whether device buffers are compressed at all:
     * ranks that loaded different builds of it must not meet in one call (built-ins add no
     * line, so their digests stay what they were). */
    if (NULL != ctx->reg.e[ctx->method_index].dl) {
        const int w = snprintf(buf + off, len - off, "SQZ_PLUGIN_DEVICE_OPS=%s\n",
                               ctx->method_device ? "yes" : "no");
        if (w < 0 || (size_t)w >= len - off) {
            return SQZ_ERR_NO_MEMORY;
        }
        off += (size_t)w;
    }
    *hash = sqz_fnv1a(buf, off);
    return SQZ_OK;
}

void sqz_ctx_visit_params(const sqz_ctx_t *ctx, sqz_param_visit_fn fn, void *arg)
{
    char value[256];
    for (size_t i = 0; i < sqz_core_param_count(); i++) {
        const sqz_param_def_v1_t *d = sqz_core_param(i, NULL);
        const sqz_config_entry_t *e = sqz_config_find(ctx->cfg, d->name);
        sqz_param_format(d, &ctx->p, value, sizeof(value));
        fn(arg, "core", d, value, e ? e->source : "default");
    }
    for (size_t j = 0; j < ctx->reg.n; j++) {
        const sqz_compressor_v1_t *c = ctx->reg.e[j].c;
        for (size_t i = 0; i < c->nparams; i++) {
            const sqz_config_entry_t *e = sqz_config_find(ctx->cfg, c->params[i].name);
            sqz_param_format(&c->params[i], ctx->configs[j], value, sizeof(value));
            fn(arg, c->name, &c->params[i], value, e ? e->source : "default");
        }
    }
}

void sqz_ctx_visit_compressors(const sqz_ctx_t *ctx, sqz_compressor_visit_fn fn, void *arg)
{
    for (size_t j = 0; j < ctx->reg.n; j++) {
        fn(arg, ctx->reg.e[j].c, ctx->reg.e[j].origin);
    }
}
