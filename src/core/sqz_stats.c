#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapt/sqz_adapt.h"
#include "sqz_ctx.h"
#include "sqz_log.h"
#include "sqz_stats.h"

const char *const sqz_algo_names[SQZ_ALGO_COUNT] = {
    "allgather", "allgather_p2p", "reduce_scatter", "reduce_scatter_p2p", "dense_switch",
    "split_allgather", "nccl_allgather", "allreduce_summable",
};

void sqz_ctx_flush_gpu_stats(sqz_ctx_t *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    const size_t n = ctx->ngpu_comms;
    sqz_comm_t  *comms[64];
    const size_t m = n < 64 ? n : 64;
    if (m > 0) {
        memcpy(comms, ctx->gpu_comms, m * sizeof(*comms));
    }
    pthread_mutex_unlock(&ctx->lock);
    /* Outside the lock: a flush records into the stats, which takes it. */
    for (size_t i = 0; i < m; i++) {
        comms[i]->device->flush_stats(comms[i]);
    }
}

void sqz_stats_record(sqz_ctx_t *ctx, size_t index, int kind, size_t bytes_in,
                      const sqz_call_stats_t *cs)
{
    pthread_mutex_lock(&ctx->lock);
    sqz_method_stats_t *m = &ctx->stats[index];
    switch (kind) {
    case 'c':
        if (cs->algo >= 0 && cs->algo < SQZ_ALGO_COUNT) {
            m->algo_calls[cs->algo]++;
        }
        m->s.calls_compressed++;
        m->s.bytes_in += bytes_in;
        if (cs->predicted > 0) {
            m->calls_predicted++;
            m->seconds_predicted += cs->predicted;
            m->seconds_measured += cs->t_exchange;
        }
        m->s.bytes_wire += cs->bytes_wire;
        m->bytes_sent += cs->bytes_sent;
        if (cs->norm2_in > 0) {
            m->s.rel_error_sum += __builtin_sqrt(cs->norm2_err / cs->norm2_in);
        }
        break;
    case 'f':
        m->s.calls_fallback++;
        m->s.calls_nonfinite += cs && cs->nonfinite ? 1 : 0;
        break;
    default: m->s.calls_warmup++; break;
    }
    m->s.calls++;
    if (cs) {
        m->s.seconds_compress += cs->t_compress;
        m->s.seconds_comm += cs->t_comm;
    }
    pthread_mutex_unlock(&ctx->lock);
}

void sqz_stats_nonfinite_found(sqz_ctx_t *ctx, size_t index, uint64_t calls)
{
    pthread_mutex_lock(&ctx->lock);
    sqz_method_stats_t *m = &ctx->stats[index];
    const uint64_t      c = calls < m->s.calls_compressed ? calls : m->s.calls_compressed;
    m->s.calls_compressed -= c;
    m->s.calls_fallback += calls;
    m->s.calls_nonfinite += calls;
    pthread_mutex_unlock(&ctx->lock);
}

void sqz_comm_count_passthrough(sqz_comm_t *comm)
{
    __atomic_fetch_add(&comm->ctx->calls_passthrough, 1, __ATOMIC_RELAXED);
}

static void sqz_stats_add(sqz_stats_t *acc, const sqz_stats_t *s)
{
    acc->calls += s->calls;
    acc->calls_compressed += s->calls_compressed;
    acc->calls_fallback += s->calls_fallback;
    acc->calls_warmup += s->calls_warmup;
    acc->calls_nonfinite += s->calls_nonfinite;
    acc->bytes_in += s->bytes_in;
    acc->bytes_wire += s->bytes_wire;
    acc->seconds_compress += s->seconds_compress;
    acc->seconds_comm += s->seconds_comm;
    acc->rel_error_sum += s->rel_error_sum;
}

void sqz_stats_get(const sqz_ctx_t *ctx, sqz_stats_t *out)
{
    sqz_ctx_flush_gpu_stats((sqz_ctx_t *)ctx);
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock((pthread_mutex_t *)&ctx->lock);
    for (size_t j = 0; j < ctx->reg.n; j++) {
        sqz_stats_add(out, &ctx->stats[j].s);
    }
    out->calls += __atomic_load_n(&ctx->calls_passthrough, __ATOMIC_RELAXED);
    out->residuals_dropped = ctx->residuals_dropped;
    out->state_evictions   = ctx->state_evictions;
    out->state_bytes       = ctx->state_bytes > 0 ? (uint64_t)ctx->state_bytes : 0;
    pthread_mutex_unlock((pthread_mutex_t *)&ctx->lock);
}

static void sqz_json_row(FILE *f, const sqz_stats_t *s, uint64_t bytes_sent, const char *indent)
{
    fprintf(f,
            "%s\"calls\": %llu,\n%s\"calls_compressed\": %llu,\n%s\"calls_fallback\": %llu,\n"
            "%s\"calls_warmup\": %llu,\n%s\"calls_nonfinite\": %llu,\n%s\"bytes_in\": %llu,\n"
            "%s\"bytes_wire\": %llu,\n%s\"bytes_sent\": %llu,\n%s\"seconds_compress\": %.9f,\n"
            "%s\"seconds_comm\": %.9f,\n%s\"rel_error\": %.9g",
            indent, (unsigned long long)s->calls, indent, (unsigned long long)s->calls_compressed,
            indent, (unsigned long long)s->calls_fallback, indent,
            (unsigned long long)s->calls_warmup, indent, (unsigned long long)s->calls_nonfinite,
            indent, (unsigned long long)s->bytes_in, indent, (unsigned long long)s->bytes_wire,
            indent, (unsigned long long)bytes_sent, indent, s->seconds_compress, indent,
            s->seconds_comm, indent,
            s->calls_compressed ? s->rel_error_sum / (double)s->calls_compressed : 0.0);
}

/* Expands %r to the rank; %% to %. */
static void sqz_expand_path(const char *path, int rank, char *out, size_t len)
{
    size_t o = 0;
    for (const char *p = path; *p && o + 1 < len; p++) {
        if ('%' == p[0] && 'r' == p[1]) {
            o += (size_t)snprintf(out + o, len - o, "%d", rank);
            p++;
        } else if ('%' == p[0] && '%' == p[1]) {
            out[o++] = '%';
            p++;
        } else {
            out[o++] = *p;
        }
        if (o >= len) {
            o = len - 1;
        }
    }
    out[o] = '\0';
}

/* The "moe" object: token all-to-alls passed through, and a row per codec used.  The
 * compression rate is rows / tokens (centroids per token for lsh). */
static void sqz_moe_json(const sqz_ctx_t *ctx, FILE *f)
{
    pthread_mutex_lock((pthread_mutex_t *)&ctx->lock);
    fprintf(f, "  \"moe\": {\n    \"calls_passthrough\": %llu,\n    \"codecs\": {",
            (unsigned long long)ctx->moe_passthrough);
    int first = 1;
    for (int c = 0; c < SQZ_MOE_NCODECS; c++) {
        const sqz_moe_stats_t *m = &ctx->moe_stats[c];
        if (0 == m->calls) {
            continue;
        }
        fprintf(f,
                "%s\n      \"%s\": {\"calls\": %llu, \"tokens\": %llu, \"rows\": %llu, "
                "\"compression_rate\": %.6f, \"bytes_in\": %llu, \"bytes_wire\": %llu, "
                "\"seconds_compress\": %.9f, \"seconds_comm\": %.9f}",
                first ? "" : ",", sqz_moe_codec_names[c], (unsigned long long)m->calls,
                (unsigned long long)m->tokens, (unsigned long long)m->rows,
                m->tokens ? (double)m->rows / (double)m->tokens : 0.0,
                (unsigned long long)m->bytes_in, (unsigned long long)m->bytes_wire,
                m->seconds_compress, m->seconds_comm);
        first = 0;
    }
    fprintf(f, "%s}\n  }\n", first ? "" : "\n    ");
    pthread_mutex_unlock((pthread_mutex_t *)&ctx->lock);
}

/* The stats JSON of one rank into an open stream. */
static void sqz_stats_write_stream(const sqz_ctx_t *ctx, FILE *f, int rank)
{
    sqz_stats_t total;
    uint64_t    sent = 0;
    sqz_stats_get(ctx, &total);
    for (size_t j = 0; j < ctx->reg.n; j++) {
        sent += ctx->stats[j].bytes_sent;
    }
    fprintf(f, "{\n  \"rank\": %d,\n  \"method\": \"%s\",\n  \"calls_passthrough\": %llu,\n", rank,
            ctx->method->name, (unsigned long long)ctx->calls_passthrough);
    if (NULL != ctx->device_declined) {
        /* (the reasons are sentences of the table in sqz_device_support.c: no quote to escape) */
        fprintf(f, "  \"device_declined\": {\"calls\": %llu, \"reason\": \"%s\"},\n",
                (unsigned long long)__atomic_load_n(&ctx->calls_declined, __ATOMIC_RELAXED),
                ctx->device_declined);
    }
    fprintf(f, "  \"residuals_dropped\": %llu,\n  \"state_evictions\": %llu,\n"
               "  \"state_bytes\": %llu,\n  \"state_bytes_peak\": %lld,\n",
            (unsigned long long)total.residuals_dropped, (unsigned long long)total.state_evictions,
            (unsigned long long)total.state_bytes, (long long)ctx->state_bytes_peak);
    sqz_json_row(f, &total, sent, "  ");
    fprintf(f, ",\n  \"methods\": {");
    int first = 1;
    for (size_t j = 0; j < ctx->reg.n; j++) {
        if (0 == ctx->stats[j].s.calls) {
            continue;
        }
        fprintf(f, "%s\n    \"%s\": {\n", first ? "" : ",", ctx->reg.e[j].c->name);
        sqz_json_row(f, &ctx->stats[j].s, ctx->stats[j].bytes_sent, "      ");
        fprintf(f, ",\n      \"algorithms\": {");
        int a_first = 1;
        for (int a = 0; a < SQZ_ALGO_COUNT; a++) {
            if (ctx->stats[j].algo_calls[a]) {
                fprintf(f, "%s\"%s\": %llu", a_first ? "" : ", ", sqz_algo_names[a],
                        (unsigned long long)ctx->stats[j].algo_calls[a]);
                a_first = 0;
            }
        }
        fprintf(f, "}");
        if (ctx->stats[j].calls_predicted) {
            fprintf(f, ",\n      \"calls_predicted\": %llu, \"seconds_predicted\": %.9g, "
                       "\"seconds_measured\": %.9g",
                    (unsigned long long)ctx->stats[j].calls_predicted,
                    ctx->stats[j].seconds_predicted, ctx->stats[j].seconds_measured);
        }
        fprintf(f, "\n    }");
        first = 0;
    }
    fprintf(f, "%s}", first ? "" : "\n  ");
    sqz_adapt_write_json(ctx, f);
    fprintf(f, ",\n");
    sqz_moe_json(ctx, f);
    fprintf(f, "}\n");
}

sqz_status_t sqz_stats_write_json(const sqz_ctx_t *ctx, const char *path, int rank)
{
    char file[4096];
    sqz_expand_path(path, rank, file, sizeof(file));
    FILE *f = fopen(file, "w");
    if (NULL == f) {
        SQZ_ERROR("SQZ_STATS: cannot write '%s': %s", file, strerror(errno));
        return SQZ_ERR_IO;
    }
    sqz_stats_write_stream(ctx, f, rank);
    const int bad = ferror(f);
    if (0 != fclose(f) || bad) {
        SQZ_ERROR("SQZ_STATS: error writing '%s'", file);
        return SQZ_ERR_IO;
    }
    return SQZ_OK;
}

size_t sqz_stats_json(const sqz_ctx_t *ctx, int rank, char *buf, size_t len)
{
    if (NULL == ctx) {
        return 0;
    }
    char  *text = NULL;
    size_t n    = 0;
    FILE  *f    = open_memstream(&text, &n);
    if (NULL == f) {
        return 0;
    }
    sqz_stats_write_stream(ctx, f, rank);
    if (0 != fclose(f)) {
        free(text);
        return 0;
    }
    if (buf && len > 0) {
        const size_t k = n < len - 1 ? n : len - 1;
        memcpy(buf, text, k);
        buf[k] = '\0';
    }
    free(text);
    return n;
}

size_t sqz_stats_export_len(const sqz_ctx_t *ctx)
{
    return ctx->reg.n * SQZ_STATS_NFIELDS + 2 + SQZ_MOE_NCODECS * SQZ_MOE_NFIELDS + 1;
}

void sqz_stats_export(const sqz_ctx_t *ctx, double *out)
{
    sqz_ctx_flush_gpu_stats((sqz_ctx_t *)ctx);
    pthread_mutex_lock((pthread_mutex_t *)&ctx->lock);
    for (size_t j = 0; j < ctx->reg.n; j++) {
        const sqz_method_stats_t *m = &ctx->stats[j];
        double                   *o = out + j * SQZ_STATS_NFIELDS;
        o[SQZ_SF_CALLS_COMPRESSED]  = (double)m->s.calls_compressed;
        o[SQZ_SF_CALLS_FALLBACK]    = (double)m->s.calls_fallback;
        o[SQZ_SF_CALLS_WARMUP]      = (double)m->s.calls_warmup;
        o[SQZ_SF_CALLS_NONFINITE]   = (double)m->s.calls_nonfinite;
        o[SQZ_SF_BYTES_IN]          = (double)m->s.bytes_in;
        o[SQZ_SF_BYTES_WIRE]        = (double)m->s.bytes_wire;
        o[SQZ_SF_BYTES_SENT]        = (double)m->bytes_sent;
        o[SQZ_SF_SECONDS_COMPRESS]  = m->s.seconds_compress;
        o[SQZ_SF_SECONDS_COMM]      = m->s.seconds_comm;
        o[SQZ_SF_REL_ERROR_SUM]     = m->s.rel_error_sum;
    }
    out[ctx->reg.n * SQZ_STATS_NFIELDS]     = (double)ctx->calls_passthrough;
    out[ctx->reg.n * SQZ_STATS_NFIELDS + 1] = (double)ctx->calls_declined;
    double *const moe = out + ctx->reg.n * SQZ_STATS_NFIELDS + 2;
    for (int c = 0; c < SQZ_MOE_NCODECS; c++) {
        const sqz_moe_stats_t *m = &ctx->moe_stats[c];
        double *const          o = moe + c * SQZ_MOE_NFIELDS;
        o[SQZ_MF_CALLS]            = (double)m->calls;
        o[SQZ_MF_TOKENS]           = (double)m->tokens;
        o[SQZ_MF_ROWS]             = (double)m->rows;
        o[SQZ_MF_BYTES_IN]         = (double)m->bytes_in;
        o[SQZ_MF_BYTES_WIRE]       = (double)m->bytes_wire;
        o[SQZ_MF_SECONDS_COMPRESS] = m->seconds_compress;
        o[SQZ_MF_SECONDS_COMM]     = m->seconds_comm;
    }
    moe[SQZ_MOE_NCODECS * SQZ_MOE_NFIELDS] = (double)ctx->moe_passthrough;
    pthread_mutex_unlock((pthread_mutex_t *)&ctx->lock);
}

/* The MoE rows of the summary: per codec, sums over the ranks (times: the slowest rank). */
static void sqz_moe_print_summary(const sqz_ctx_t *ctx, FILE *out, const double *all, int nranks)
{
    const size_t stride = sqz_stats_export_len(ctx);
    const size_t base   = ctx->reg.n * SQZ_STATS_NFIELDS + 2;
    double       pass   = 0;
    int          header = 0;
    for (int r = 0; r < nranks; r++) {
        pass += all[(size_t)r * stride + base + SQZ_MOE_NCODECS * SQZ_MOE_NFIELDS];
    }
    for (int c = 0; c < SQZ_MOE_NCODECS; c++) {
        double sum[SQZ_MOE_NFIELDS] = {0}, tc = 0, tm = 0;
        for (int r = 0; r < nranks; r++) {
            const double *row = all + (size_t)r * stride + base + (size_t)c * SQZ_MOE_NFIELDS;
            for (int f = 0; f < SQZ_MOE_NFIELDS; f++) {
                sum[f] += row[f];
            }
            tc = row[SQZ_MF_SECONDS_COMPRESS] > tc ? row[SQZ_MF_SECONDS_COMPRESS] : tc;
            tm = row[SQZ_MF_SECONDS_COMM] > tm ? row[SQZ_MF_SECONDS_COMM] : tm;
        }
        if (0 == sum[SQZ_MF_CALLS]) {
            continue;
        }
        if (!header) {
            fprintf(out, "squeeze: MoE all-to-alls, %.0f token call(s) passed through\n", pass);
            fprintf(out, "%-10s %10s %12s %12s %9s %12s %12s %7s %10s %10s\n", "codec", "calls",
                    "tokens", "rows", "rate", "MB in", "MB wire", "ratio", "compr s", "comm s");
            header = 1;
        }
        fprintf(out, "%-10s %10.0f %12.0f %12.0f %9.4f %12.2f %12.2f %7.4f %10.3f %10.3f\n",
                sqz_moe_codec_names[c], sum[SQZ_MF_CALLS], sum[SQZ_MF_TOKENS], sum[SQZ_MF_ROWS],
                sum[SQZ_MF_TOKENS] > 0 ? sum[SQZ_MF_ROWS] / sum[SQZ_MF_TOKENS] : 0.0,
                sum[SQZ_MF_BYTES_IN] / 1e6, sum[SQZ_MF_BYTES_WIRE] / 1e6,
                sum[SQZ_MF_BYTES_IN] > 0 ? sum[SQZ_MF_BYTES_WIRE] / sum[SQZ_MF_BYTES_IN] : 0.0, tc,
                tm);
    }
}

void sqz_stats_print_summary(const sqz_ctx_t *ctx, FILE *out, const double *all, int nranks)
{
    const size_t stride = sqz_stats_export_len(ctx);
    double       pass = 0, declined = 0;
    for (int r = 0; r < nranks; r++) {
        pass += all[(size_t)r * stride + ctx->reg.n * SQZ_STATS_NFIELDS];
        declined += all[(size_t)r * stride + ctx->reg.n * SQZ_STATS_NFIELDS + 1];
    }
    fprintf(out, "squeeze: summary over %d rank(s), method %s, %.0f passthrough call(s)\n", nranks,
            ctx->method->name, pass);
    if (declined > 0 && NULL != ctx->device_declined) {
        fprintf(out, "squeeze: %.0f of them on device buffers, declined: %s\n", declined,
                ctx->device_declined);
    }
    fprintf(out, "%-10s %10s %10s %9s %8s %12s %12s %7s %10s %10s %9s\n", "method", "calls",
            "compressed", "fallback", "warmup", "MB in", "MB wire", "ratio", "compr s", "comm s",
            "rel err");
    for (size_t j = 0; j < ctx->reg.n; j++) {
        double sum[SQZ_STATS_NFIELDS] = {0};
        double tmax_c = 0, tmax_m = 0;
        for (int r = 0; r < nranks; r++) {
            const double *row = all + (size_t)r * stride + j * SQZ_STATS_NFIELDS;
            for (int f = 0; f < SQZ_STATS_NFIELDS; f++) {
                sum[f] += row[f];
            }
            tmax_c = row[SQZ_SF_SECONDS_COMPRESS] > tmax_c ? row[SQZ_SF_SECONDS_COMPRESS] : tmax_c;
            tmax_m = row[SQZ_SF_SECONDS_COMM] > tmax_m ? row[SQZ_SF_SECONDS_COMM] : tmax_m;
        }
        const double calls = sum[SQZ_SF_CALLS_COMPRESSED] + sum[SQZ_SF_CALLS_FALLBACK] +
                             sum[SQZ_SF_CALLS_WARMUP];
        if (0 == calls) {
            continue;
        }
        fprintf(out, "%-10s %10.0f %10.0f %9.0f %8.0f %12.2f %12.2f %7.4f %10.3f %10.3f %9.4f\n",
                ctx->reg.e[j].c->name, calls, sum[SQZ_SF_CALLS_COMPRESSED],
                sum[SQZ_SF_CALLS_FALLBACK], sum[SQZ_SF_CALLS_WARMUP], sum[SQZ_SF_BYTES_IN] / 1e6,
                sum[SQZ_SF_BYTES_WIRE] / 1e6,
                sum[SQZ_SF_BYTES_IN] > 0 ? sum[SQZ_SF_BYTES_WIRE] / sum[SQZ_SF_BYTES_IN] : 0.0,
                tmax_c, tmax_m,
                sum[SQZ_SF_CALLS_COMPRESSED] > 0
                    ? sum[SQZ_SF_REL_ERROR_SUM] / sum[SQZ_SF_CALLS_COMPRESSED]
                    : 0.0);
    }
    sqz_moe_print_summary(ctx, out, all, nranks);
    fflush(out);
}
