/* The library context: the core parameter table, parameter checking, plugin loading and method
 * selection. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapt/sqz_adapt.h"
#include "adapt/sqz_adapt_seg.h"
#include "sqz_ctx.h"
#include "sqz_layout_file.h"
#include "sqz_log.h"

#define CORE(field) offsetof(sqz_core_params_t, field)

/* The core parameters.  Compressors declare theirs in their own descriptor. */
static const sqz_param_def_v1_t sqz_core_param_defs[] = {
    {"METHOD", SQZ_PARAM_STRING, "none", 0, 0, NULL, CORE(method),
     "compressor applied to eligible all-reduces (see the compressor list); none passes them "
     "through exactly and only counts them"},
    {"EF", SQZ_PARAM_ENUM, "ef14", 0, 0, "ef14|none|ef21|econtrol", CORE(ef),
     "error feedback: ef14 keeps the compression residual of each buffer and adds it to the next "
     "call (classic EF-SGD); none drops it; ef21 sends the compressed change of each rank's "
     "gradient estimator and returns the shared estimator (EF21); econtrol is EF21 with a fed-back "
     "error term scaled by SQZ_ECONTROL_ETA (EControl).  ef21 and econtrol keep 2 and 3 "
     "estimators of the buffer's size per rank.  With powersgd, ef21 makes the estimator a "
     "running sum of low-rank updates (the dense start phase sets it exactly), which tracks the "
     "gradient far better than ef14 on short runs; it is the only transform the GPU path has"},
    {"EF_STORAGE", SQZ_PARAM_ENUM, "fp32", 0, 0, "fp32|bf16|int8", CORE(ef_storage),
     "how the ef14 residual is kept between calls: fp32, or bf16 (half the memory) or int8 with a "
     "scale per 256 elements (a quarter), whose rounding is lost from the error feedback"},
    {"ECONTROL_ETA", SQZ_PARAM_DOUBLE, "0.01", 0, 1, NULL, CORE(econtrol_eta),
     "EControl's feedback strength eta in [0, 1] (0: the EF21 estimator); keep it near the "
     "compressor's contraction (about the density for top-k): larger values diverge"},
    {"MIN_BYTES", SQZ_PARAM_SIZE, "64K", 0, 1099511627776.0, NULL, CORE(min_bytes),
     "all-reduces smaller than this pass through uncompressed"},
    {"WARMUP_STEPS", SQZ_PARAM_INT, "0", 0, 1e12, NULL, CORE(warmup_steps),
     "dense calls per buffer before compression starts"},
    {"STATS", SQZ_PARAM_STRING, "", 0, 0, NULL, CORE(stats),
     "statistics at finalize: 'summary' prints a table on rank 0, 'json:PATH' writes one JSON "
     "file per rank (%r in PATH is replaced by the rank)"},
    {"LOG", SQZ_PARAM_ENUM, "warn", 0, 0, "error|warn|info|debug", CORE(log),
     "log level (stderr)"},
    {"PLUGINS", SQZ_PARAM_STRING, "", 0, 0, NULL, CORE(plugins),
     "extra compressor plugins: shared objects exporting sqz_compressor_v1, separated by ':' or ','"},
    {"CONFIG", SQZ_PARAM_STRING, "", 0, 0, NULL, CORE(config),
     "a file of NAME = value lines read before the environment (environment variables win)"},
    {"SEED", SQZ_PARAM_INT, "42", 0, 9007199254740991.0, NULL, CORE(seed),
     "seed of every random choice (stochastic rounding, sampling); must agree across ranks"},
    {"IALLREDUCE", SQZ_PARAM_ENUM, "eager", 0, 0, "eager|passthrough", CORE(iallreduce),
     "MPI_Iallreduce: eager runs the compressed all-reduce at the call and returns a completed "
     "request; passthrough leaves non-blocking all-reduces dense"},
    {"CHECK_SETTINGS", SQZ_PARAM_BOOL, "1", 0, 0, NULL, CORE(check_settings),
     "compare the settings of all ranks at start-up and at the first compressed call of each "
     "communicator (a clear error on every rank when they differ)"},
    {"HIER", SQZ_PARAM_ENUM, "auto", 0, 0, "auto|on|off", CORE(hier),
     "hierarchical all-reduce: exact reduction inside each host, compressed exchange between "
     "hosts (one leader per host), exact broadcast back; auto turns it on when some host holds "
     "more than one rank of the communicator"},
    {"DGC_MOMENTUM", SQZ_PARAM_DOUBLE, "0", 0, 0.999, NULL, CORE(dgc_momentum),
     "DGC momentum correction (0: off): the compressor sends from residual + momentum; set the "
     "optimizer's own momentum to 0 when this is on (needs SQZ_EF=ef14)"},
    {"DGC_NESTEROV", SQZ_PARAM_BOOL, "0", 0, 0, NULL, CORE(dgc_nesterov),
     "Nesterov form of the DGC momentum correction"},
    {"DGC_MASKING", SQZ_PARAM_BOOL, "1", 0, 0, NULL, CORE(dgc_masking),
     "DGC momentum factor masking: clear the momentum of the entries the compressor sent"},
    {"DGC_CLIP", SQZ_PARAM_DOUBLE, "0", 0, 1e30, NULL, CORE(dgc_clip),
     "DGC local gradient clipping (0: off): each rank scales its buffer to an L2 norm of at most "
     "DGC_CLIP / sqrt(ranks) before compression"},
    {"SPARSE_DENSE_SWITCH", SQZ_PARAM_DOUBLE, "1", 0, 1e9, NULL, CORE(sparse_dense_switch),
     "cost model of the sparse all-gather (topk, fedzip): when the payloads every rank receives "
     "would exceed this factor times the bytes of a dense ring all-reduce, the call is sent dense "
     "(exactly, residual included); 0 never switches"},
    {"SPARSE_ALGO", SQZ_PARAM_ENUM, "auto", 0, 0, "auto|allgather|split", CORE(sparse_algo),
     "exchange of the sparsifiers (topk, fedzip): allgather sends every rank's payload to every "
     "rank; split is SparCML's split all-gather (each rank reduces one chunk from sparse pieces, "
     "then sends it exactly, sparse or dense, whichever is smaller; needs SQZ_PIPELINE); auto "
     "picks the cheaper by a cost model of ranks, size and density"},
    {"ENTROPY", SQZ_PARAM_ENUM, "none", 0, 0, "none|zstd|auto", CORE(entropy),
     "a zstd pass over every payload: zstd keeps it whenever it is smaller, auto when the bytes it "
     "saves on a SQZ_LINK_GBPS link outweigh its time; receivers read both forms"},
    {"LINK_GBPS", SQZ_PARAM_DOUBLE, "10", 0.001, 100000, NULL, CORE(link_gbps),
     "the link rate (Gbit/s) the SQZ_ENTROPY=auto decision assumes"},
    {"PIPELINE", SQZ_PARAM_BOOL, "1", 0, 0, NULL, CORE(pipeline),
     "pipeline the scatter-reduce exchange over point-to-point messages (send chunk i while "
     "compressing chunk i+1, decode while later chunks arrive) when the transport offers them "
     "and SQZ_THREADS is 1; 0 uses one all-to-all and one all-gather.  Also the MoE token "
     "all-to-alls: 1 sends them in one round of point-to-point messages, 0 sends the block sizes "
     "first"},
    {"THREADS", SQZ_PARAM_INT, "1", 1, 256, NULL, CORE(threads),
     "threads compressing and decoding the chunks of a scatter-reduce exchange (quant, sign); "
     "the extra threads are bound with hwloc to distinct cores of the rank's own cpuset"},
    {"LAYOUT", SQZ_PARAM_STRING, "", 0, 0, NULL, CORE(layout),
     "a layout file naming the layers (shapes) of buffers by element count, for the per-layer "
     "methods (powersgd, SQZ_ADAPT) under a shim; registered layouts win (format: docs/methods.md)"},
    {"LAYOUT_CHUNK", SQZ_PARAM_SIZE, "1M", 4, 1099511627776.0, NULL, CORE(layout_chunk),
     "elements per pseudo-layer of a buffer without a layout (each chunk is seen as a near-square "
     "matrix by powersgd)"},
    {"ADAPT", SQZ_PARAM_ENUM, "none", 0, 0, "none|lgreco", CORE(adapt),
     "layer-adaptive compression: lgreco picks each layer's level (powersgd: its rank) by dynamic "
     "programming, fewest bytes with a total error at most that of the uniform setting (L-GreCo)"},
    {"ADAPT_PERIOD", SQZ_PARAM_INT, "50", 1, 1e12, NULL, CORE(adapt_period),
     "SQZ_ADAPT: compressed calls of a buffer between two measurements and re-solves"},
    {"ADAPT_BYTES", SQZ_PARAM_DOUBLE, "0", 0, 64, NULL, CORE(adapt_bytes),
     "SQZ_ADAPT's objective: 0 is L-GreCo's (the fewest bytes whose error is at most the uniform "
     "setting's); a value x > 0 asks instead for the least error within x times the uniform "
     "setting's bytes (1: the same bytes, spent where they cut the most error)"},
    {"MOE", SQZ_PARAM_ENUM, "off", 0, 0, "off|dedup|lsh|cycle", CORE(moe),
     "MoE token all-to-alls under the interposers (MPI_Alltoall/MPI_Alltoallv of floats whose "
     "every per-peer count is a multiple of SQZ_MOE_DIM): off passes them through; dedup sends "
     "identical rows once (lossless, always safe); lsh sends one LSH centroid per bucket (lossy: "
     "only for jobs whose every such call is a dispatch); cycle codes the k-th token all-to-all "
     "of a communicator as entry k mod n of SQZ_MOE_CYCLE (the API's calls choose for themselves)"},
    {"MOE_CYCLE", SQZ_PARAM_STRING, "lsh,dedup", 0, 0, NULL, CORE(moe_cycle),
     "with SQZ_MOE=cycle: the codec of successive token all-to-alls, comma-separated lsh, dedup or "
     "none (passed through); lsh,dedup is a forward pass (dispatch, combine); a training step "
     "whose backward adds two all-to-alls is lsh,dedup,none,none"},
    {"MOE_DIM", SQZ_PARAM_INT, "0", 0, 16777216, NULL, CORE(moe_dim),
     "elements per token (d_model) of the interposed MoE all-to-alls; needed when SQZ_MOE is not "
     "off (the API passes its own)"},
    {"LSH_HASHES", SQZ_PARAM_INT, "6", 1, SQZ_LSH_MAX_HASHES, NULL, CORE(lsh_hashes),
     "cross-polytope hash functions combined (AND) into one LSH-MoE bucket id: more hashes, more "
     "buckets, a smaller error and a larger compression rate (the paper's default: 6)"},
    {"LSH_DIM", SQZ_PARAM_INT, "4", 1, SQZ_LSH_MAX_DIM, NULL, CORE(lsh_dim),
     "dimension each LSH hash function rotates a token into (2 * LSH_DIM codes per hash); "
     "LSH_HASHES * ceil(log2(2 * LSH_DIM)) must not exceed 64"},
    {"LSH_SAMPLE", SQZ_PARAM_INT, "64", 0, 16777216, NULL, CORE(lsh_sample),
     "coordinates of each token the LSH hash reads (a seeded random subset, the same on every "
     "rank; 0: all): keeps the hashing cost per token independent of d_model"},
    {"STATE_MAX_BYTES", SQZ_PARAM_SIZE, "0", 0, 1125899906842624.0, NULL, CORE(state_max_bytes),
     "bound on the memory of per-buffer states (residuals, estimators) per communicator: beyond it "
     "the least recently used states are freed (their residuals dropped, counted in "
     "state_evictions); 0 frees only stale states: those of buffers not seen for two periods of "
     "the job's repeating call pattern"},
};
#define SQZ_NCORE (sizeof(sqz_core_param_defs) / sizeof(sqz_core_param_defs[0]))

/* Parameters that may differ between ranks: they change nothing on the wire. */
static int sqz_param_is_local(const char *name)
{
    return 0 == strcmp(name, "LOG") || 0 == strcmp(name, "STATS") || 0 == strcmp(name, "CONFIG") ||
           0 == strcmp(name, "PLUGINS") || 0 == strcmp(name, "THREADS") ||
           0 == strcmp(name, "ENTROPY") || 0 == strcmp(name, "LINK_GBPS");
}

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
    for (size_t i = 0; i < SQZ_NCORE; i++) {
        if (0 == strcmp(sqz_core_param_defs[i].name, name)) {
            if (config) {
                *config = &ctx->p;
            }
            return &sqz_core_param_defs[i];
        }
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

/* Combinations of the selected method with the core settings that cannot work together. */
static sqz_status_t sqz_ctx_check_method(const sqz_ctx_t *ctx, char *errbuf, size_t errlen)
{
    const sqz_compressor_v1_t *c        = ctx->method;
    const int                  summable = SQZ_EXCHANGE_SUMMABLE == c->exchange;
    /* ef21 works with a summable method as with any other (the engine's estimators, the
     * plugin's error-feedback contract); econtrol's eta is tuned for sparsifiers and the GPU path
     * has no econtrol. */
    if (summable && SQZ_EF_ECONTROL == ctx->p.ef) {
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
    SQZ_CHECK_GOTO(sqz_params_apply(sqz_core_param_defs, SQZ_NCORE, ctx->cfg, &ctx->p, errbuf, errlen),
                   st, fail);
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
            ctx->method       = ctx->reg.e[j].c;
            ctx->method_index = j;
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
    SQZ_CHECK_GOTO(sqz_ctx_check_method(ctx, errbuf, errlen), st, fail);
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
    for (size_t i = 0; i < SQZ_NCORE; i++) {
        const sqz_param_def_v1_t *d = &sqz_core_param_defs[i];
        if (sqz_param_is_local(d->name)) {
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
    *hash = sqz_fnv1a(buf, off);
    return SQZ_OK;
}

void sqz_ctx_visit_params(const sqz_ctx_t *ctx, sqz_param_visit_fn fn, void *arg)
{
    char value[256];
    for (size_t i = 0; i < SQZ_NCORE; i++) {
        const sqz_param_def_v1_t *d = &sqz_core_param_defs[i];
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
