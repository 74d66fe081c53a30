/* Layer-adaptive compression: probing schedule, error sums over ranks and the L-GreCo solve
 * (see sqz_adapt.h). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/sqz_log.h"
#include "sqz_adapt.h"
#include "sqz_lgreco.h"

/* Bins of the dynamic program's bytes axis: fine enough that rounding each layer's bytes up to
 * whole bins costs little (at most nlayers bins of `bins`), small enough to solve in about a
 * millisecond per hundred layers. */
static size_t sqz_adapt_bins(size_t nlayers)
{
    const size_t b = 64 * nlayers;
    return b < 4096 ? 4096 : (b > 65536 ? 65536 : b);
}

/* Candidates: the method's levels from 1/4 to 4 times the configured one (the probe runs a layer
 * at the largest, so the cap bounds what a probing call sends), up to 8 times when the objective
 * is the least error (SQZ_ADAPT_BYTES: a layer may need much more than the uniform level), plus
 * the configured level. */
void sqz_adapt_candidates(const sqz_ctx_t *ctx, sqz_adapt_probe_t *pr)
{
    const sqz_compressor_v1_t *c     = ctx->method;
    const double               scale = c->size >= offsetof(sqz_compressor_v1_t, level_scale) +
                                                  sizeof(double) && c->level_scale > 0
                                           ? c->level_scale
                                           : 1;
    /* An INT level parameter is the level; a DOUBLE one is scaled (topk: densities in ppm). */
    const double u = c->level_param ? sqz_ctx_param_num(ctx, c->level_param, 1) * scale : 1;
    pr->uniform    = u < 1 ? 1 : (u > 1e9 ? 1000000000 : (int)lround(u));
    pr->ncand = 0;
    int have  = 0;
    for (const char *p = c->levels; p && *p && pr->ncand < 15;) {
        char      *end;
        const long v = strtol(p, &end, 10);
        if (end == p) {
            break;
        }
        const long up = ctx->p.adapt_bytes > 0 ? 8 : 4;
        if (v >= 1 && 4 * v >= pr->uniform && v <= up * (long)pr->uniform) {
            if (!have && v > pr->uniform) {
                pr->cand[pr->ncand++] = pr->uniform;
            }
            have |= (v >= pr->uniform);
            pr->cand[pr->ncand++] = (int)v;
        }
        p = (',' == *end) ? end + 1 : end;
    }
    if (!have) {
        pr->cand[pr->ncand++] = pr->uniform;
    }
}

int sqz_adapt_begin(sqz_comm_t *comm, sqz_levels_t *lv, uint64_t seq, size_t nlayers,
                    sqz_adapt_probe_t *pr)
{
    const sqz_ctx_t *ctx = comm->ctx;
    if (!ctx->p.adapt || 0 == nlayers) {
        return 0;
    }
    if (lv->levels && lv->n != nlayers) {
        free(lv->levels); /* a new layout: start over from the uniform setting */
        lv->levels = NULL, lv->n = 0, lv->next_probe = 0;
    }
    if (lv->next_probe > seq) {
        return 0;
    }
    sqz_adapt_candidates(ctx, pr);
    /* err, norm, and room for bytes (a caller that measures them, sqz_adapt_seg.c) */
    const size_t need = nlayers * (2 * pr->ncand + 1) * sizeof(double);
    if (SQZ_OK != sqz_scratch_reserve((void **)&comm->scratch.adaptbuf, &comm->scratch.adaptcap,
                                      need)) {
        return SQZ_ERR_NO_MEMORY;
    }
    pr->err   = comm->scratch.adaptbuf;
    pr->norm  = comm->scratch.adaptbuf + nlayers * pr->ncand;
    pr->bytes = NULL;
    memset(comm->scratch.adaptbuf, 0, need);
    return 1;
}

static int sqz_adapt_sum(void *arg, float *buf, size_t n)
{
    sqz_comm_t *comm = arg;
    return comm->t.allreduce_f32_sum(comm->t.self, buf, buf, n);
}

static void sqz_adapt_record(sqz_ctx_t *ctx, size_t count, const int *levels, size_t nl,
                             double budget, double error, double bytes, double uniform)
{
    pthread_mutex_lock(&ctx->lock);
    sqz_adapt_record_t *r = NULL;
    for (size_t i = 0; i < ctx->nadapt; i++) {
        if (ctx->adapt[i].count == count) {
            r = &ctx->adapt[i];
        }
    }
    if (NULL == r) {
        sqz_adapt_record_t *g = realloc(ctx->adapt, (ctx->nadapt + 1) * sizeof(*g));
        if (NULL == g) {
            pthread_mutex_unlock(&ctx->lock);
            return;
        }
        ctx->adapt = g;
        r          = &ctx->adapt[ctx->nadapt++];
        memset(r, 0, sizeof(*r));
        r->count = count;
    }
    int *lv = malloc((nl ? nl : 1) * sizeof(int));
    if (lv) {
        memcpy(lv, levels, nl * sizeof(int));
        free(r->levels);
        r->levels  = lv;
        r->nlevels = nl;
    }
    r->solves++;
    r->budget        = budget;
    r->error         = error;
    r->bytes         = bytes;
    r->bytes_uniform = uniform;
    pthread_mutex_unlock(&ctx->lock);
}

sqz_status_t sqz_adapt_end(sqz_comm_t *comm, sqz_levels_t *lv, uint64_t seq, size_t count,
                           const sqz_layer_t *layers, size_t nlayers, sqz_adapt_probe_t *pr)
{
    sqz_ctx_t *const           ctx = comm->ctx;
    const sqz_compressor_v1_t *c   = ctx->method;
    const size_t               nc  = pr->ncand;
    lv->next_probe = seq + (uint64_t)ctx->p.adapt_period;
    /* The same numbers on every rank: sum the errors and the layers' norms (as floats: the
     * transport's sum). */
    float *sum = malloc(nlayers * (nc + 1) * sizeof(float) + sizeof(float));
    double *bytes = malloc(nlayers * nc * sizeof(double) + sizeof(double));
    int    *choice = malloc(nlayers * sizeof(int));
    if (NULL == sum || NULL == bytes || NULL == choice) {
        free(sum), free(bytes), free(choice);
        return SQZ_OK; /* keep the current levels; every rank probes again next period */
    }
    for (size_t i = 0; i < nlayers * nc; i++) {
        sum[i] = (float)pr->err[i];
    }
    for (size_t l = 0; l < nlayers; l++) {
        sum[nlayers * nc + l] = (float)pr->norm[l];
    }
    if (0 != sqz_adapt_sum(comm, sum, nlayers * (nc + 1))) {
        free(sum), free(bytes), free(choice);
        return SQZ_ERR_TRANSPORT;
    }
    size_t uidx = 0;
    for (size_t j = 0; j < nc; j++) {
        uidx = (pr->cand[j] == pr->uniform) ? j : uidx;
    }
    double budget = 0, uniform_bytes = 0;
    for (size_t l = 0; l < nlayers; l++) {
        const sqz_matrix_v1_t *m = (const sqz_matrix_v1_t *)&layers[l];
        /* SQZ_ADAPT_STAT=relative: each layer's error over its own squared norm (a layer whose
         * norm is 0 has no error either). */
        const double norm  = (double)sum[nlayers * nc + l];
        const double scale = (1 == ctx->p.adapt_stat) ? (norm > 0 ? 1.0 / norm : 0.0) : 1.0;
        for (size_t j = 0; j < nc; j++) {
            pr->err[l * nc + j]  = (double)sum[l * nc + j] * scale;
            bytes[l * nc + j]    = pr->bytes ? pr->bytes[l * nc + j]
                                             : (double)c->level_bytes(comm->cstate, m, pr->cand[j]);
        }
        budget += pr->err[l * nc + uidx];
        uniform_bytes += bytes[l * nc + uidx];
    }
    /* Elements outside every layer are sent exactly whatever the choice: count them too. */
    size_t covered = 0;
    for (size_t l = 0; l < nlayers; l++) {
        covered += layers[l].rows * layers[l].cols;
    }
    const double outside = (double)(count - covered) * sizeof(float);
    uniform_bytes += outside;
    double tb = 0, te = 0;
    /* L-GreCo: the fewest bytes within the uniform error; or the least error within
     * SQZ_ADAPT_BYTES times the uniform bytes (the layers' share: the rest is fixed). */
    const sqz_status_t st =
        ctx->p.adapt_bytes > 0
            ? sqz_lgreco_solve_bytes(nlayers, nc, bytes, pr->err,
                                     ctx->p.adapt_bytes * (uniform_bytes - outside),
                                     sqz_adapt_bins(nlayers), choice, &tb, &te)
            : sqz_lgreco_solve(nlayers, nc, bytes, pr->err, budget, sqz_adapt_bins(nlayers),
                               choice, &tb, &te);
    tb += outside;
    if (SQZ_OK != st) {
        /* The uniform setting always fits; only non-finite errors (a failed call) get here. */
        for (size_t l = 0; l < nlayers; l++) {
            choice[l] = (int)uidx;
        }
        tb = uniform_bytes, te = budget;
    }
    /* Never worse than uniform on the objective's own terms (bin rounding could make the
     * uniform setting itself just miss a budget of exactly its bytes). */
    if ((0 == ctx->p.adapt_bytes && tb > uniform_bytes) ||
        (ctx->p.adapt_bytes >= 1 && te > budget)) {
        for (size_t l = 0; l < nlayers; l++) {
            choice[l] = (int)uidx;
        }
        tb = uniform_bytes, te = budget;
    }
    int *levels = lv->levels && lv->n == nlayers ? lv->levels : malloc(nlayers * sizeof(int));
    if (levels) {
        for (size_t l = 0; l < nlayers; l++) {
            levels[l] = pr->cand[choice[l]];
        }
        lv->levels = levels;
        lv->n      = nlayers;
        sqz_adapt_record(ctx, count, levels, nlayers, budget, te, tb, uniform_bytes);
        SQZ_DEBUG("adapt: buffer of %zu elements, %zu layers: %.4g bytes (uniform %.4g), error "
                  "%.4g of budget %.4g", count, nlayers, tb, uniform_bytes, te, budget);
    }
    free(sum), free(bytes), free(choice);
    return SQZ_OK;
}

void sqz_adapt_write_json(const sqz_ctx_t *ctx, FILE *f)
{
    pthread_mutex_lock((pthread_mutex_t *)&ctx->lock);
    fprintf(f, ",\n  \"adapt\": [");
    for (size_t i = 0; i < ctx->nadapt; i++) {
        const sqz_adapt_record_t *r = &ctx->adapt[i];
        fprintf(f,
                "%s\n    {\"count\": %zu, \"solves\": %llu, \"budget\": %.9g, \"error\": %.9g, "
                "\"bytes\": %.0f, \"bytes_uniform\": %.0f, \"levels\": [",
                i ? "," : "", r->count, (unsigned long long)r->solves, r->budget, r->error,
                r->bytes, r->bytes_uniform);
        for (size_t l = 0; l < r->nlevels; l++) {
            fprintf(f, "%s%d", l ? ", " : "", r->levels[l]);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "%s]", ctx->nadapt ? "\n  " : "");
    pthread_mutex_unlock((pthread_mutex_t *)&ctx->lock);
}

void sqz_adapt_records_free(sqz_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->nadapt; i++) {
        free(ctx->adapt[i].levels);
    }
    free(ctx->adapt);
    ctx->adapt  = NULL;
    ctx->nadapt = 0;
}
