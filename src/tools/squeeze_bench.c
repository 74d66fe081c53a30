/* squeeze_bench: what each method costs and buys, measured side by side in one run.
 *
 *   mpirun -np P squeeze_bench [options]
 *
 * Kernels (per rank, no communication): compress (error feedback included) and decode throughput
 * of every method on one large buffer, against the memcpy bandwidth measured in the same run.
 * All-reduce: for every size from --min to --max (powers of 4 by default), the median time of
 * each method's compressed all-reduce against the dense MPI_Allreduce, the bytes it put on the
 * wire, and its relative error against the dense result.  A table on stdout; --json FILE writes
 * the same figures.
 *
 * The benchmark links the engine directly (no LD_PRELOAD): MPI_Allreduce here is MPI's own. */
#include "config.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <squeeze.h>

#include "coll/sqz_coll_hier.h"
#include "sqz_ctx.h"
#include "sqz_param.h"
#include "sqz_policy.h"
#include "transport/sqz_mpi_hosts.h"
#include "transport/sqz_transport_mpi.h"

#include "tools/squeeze_bench.h"

int rank_, nranks_;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t parse_size(const char *s)
{
    char        *end;
    const double v = strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': return (size_t)(v * 1024);
    case 'm': case 'M': return (size_t)(v * 1024 * 1024);
    case 'g': case 'G': return (size_t)(v * 1024 * 1024 * 1024);
    default: return (size_t)v;
    }
}

static void add_method(opts_t *o, const char *spec)
{
    if (o->nm >= MAX_METHODS) {
        return;
    }
    method_t *m = &o->m[o->nm++];
    snprintf(m->spec, sizeof(m->spec), "%s", spec);
    const char *colon = strchr(spec, ':');
    const size_t nl   = colon ? (size_t)(colon - spec) : strlen(spec);
    snprintf(m->name, sizeof(m->name), "%.*s", (int)nl, spec);
    snprintf(m->label, sizeof(m->label), "%s", spec);
}

static void usage(void)
{
    if (0 == rank_) {
        printf("usage: mpirun -np P squeeze_bench [options]\n"
               "  --methods LIST   ';'-separated METHOD[:NAME=VALUE,...] (default: topk density 0.01\n"
               "                   exact and sampled, quant 4 and 8 bits, sign)\n"
               "  --min SIZE --max SIZE   all-reduce sizes in bytes (default 4K..256M, x4 steps)\n"
               "  --step N         size multiplier (default 4)\n"
               "  --iters N        timed iterations per size (default: 20, fewer above 16M)\n"
               "  --kernel-size SIZE  buffer of the kernel benchmark (default 64M)\n"
               "  --no-kernels | --no-allreduce\n"
               "  --gpu            benchmark the GPU path instead (device buffers, NCCL; one GPU\n"
               "                   per rank): kernels against the device copy bandwidth, and the\n"
               "                   compressed all-reduce against ncclAllReduce\n"
               "  --group N        with --gpu, one process: N ranks as threads on one GPU (the\n"
               "                   device thread transport): bytes per rank and call, exchange\n"
               "  --hosts H        with --group: H emulated hosts (SQZ_HOST_ID), SQZ_HIER\n"
               "  --json FILE      write the figures as JSON (rank 0)\n"
               "Host path: ranks on several hosts of the same number (> 1) of ranks (hostname, or\n"
               "SQZ_HOST_ID from the environment) run the sharded hierarchy (sqz_comm_create_hier)\n"
               "unless a method says HIER=off.\n");
    }
}

static int parse(opts_t *o, int argc, char **argv)
{
    *o = (opts_t){.min_bytes = 4096, .max_bytes = 256u << 20, .kernel_bytes = 64u << 20,
                  .iters = 20, .warmup = 3, .step = 4, .kernels = 1, .allreduce = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (0 == strcmp(a, "--methods") && v) {
            char *copy = strdup(v), *save = NULL;
            for (char *t = strtok_r(copy, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
                add_method(o, t);
            }
            free(copy);
            i++;
        } else if (0 == strcmp(a, "--min") && v) {
            o->min_bytes = parse_size(v), i++;
        } else if (0 == strcmp(a, "--max") && v) {
            o->max_bytes = parse_size(v), i++;
        } else if (0 == strcmp(a, "--step") && v) {
            o->step = atoi(v), i++;
        } else if (0 == strcmp(a, "--iters") && v) {
            o->iters = atoi(v), i++;
        } else if (0 == strcmp(a, "--kernel-size") && v) {
            o->kernel_bytes = parse_size(v), i++;
        } else if (0 == strcmp(a, "--json") && v) {
            o->json = argv[++i];
        } else if (0 == strcmp(a, "--no-kernels")) {
            o->kernels = 0;
        } else if (0 == strcmp(a, "--gpu")) {
            o->gpu = 1;
        } else if (0 == strcmp(a, "--group") && v) {
            o->group = atoi(v), i++;
        } else if (0 == strcmp(a, "--hosts") && v) {
            o->hosts = atoi(v), i++;
        } else if (0 == strcmp(a, "--no-allreduce")) {
            o->allreduce = 0;
        } else {
            usage();
            return 0 == strcmp(a, "--help") ? 1 : 2;
        }
    }
    if (0 == o->nm) {
        add_method(o, "topk:TOPK_DENSITY=0.01");
        add_method(o, "topk:TOPK_DENSITY=0.01,TOPK_SELECT=sampled");
        add_method(o, "quant:QUANT_BITS=4");
        add_method(o, "quant:QUANT_BITS=8");
        add_method(o, "sign");
    }
    if (o->step < 2 || o->iters < 1 || o->min_bytes < 4 || o->max_bytes < o->min_bytes) {
        usage();
        return 2;
    }
    return 0;
}

/* A context for one method spec, with compression forced on for every size. */
sqz_ctx_t *make_ctx(const method_t *m)
{
    sqz_config_t *cfg;
    sqz_ctx_t    *ctx = NULL;
    char          err[512];
    sqz_config_create(&cfg);
    sqz_config_set(cfg, "METHOD", m->name);
    sqz_config_set(cfg, "MIN_BYTES", "0");
    const char *colon = strchr(m->spec, ':');
    if (colon) {
        char *copy = strdup(colon + 1), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            char *eq = strchr(t, '=');
            if (eq) {
                *eq = '\0';
                sqz_config_set(cfg, t, eq + 1);
            }
        }
        free(copy);
    }
    if (SQZ_OK != sqz_ctx_create(cfg, &ctx, err, sizeof(err))) {
        if (0 == rank_) {
            fprintf(stderr, "squeeze_bench: %s: %s\n", m->spec, err);
        }
        ctx = NULL;
    }
    sqz_config_destroy(cfg);
    return ctx;
}

/* Gradient-like data: Gaussian with a per-rank offset (deterministic). */
static void fill(float *x, size_t n, unsigned seed)
{
    uint64_t s = 0x9e3779b97f4a7c15ull * (seed + 1);
    for (size_t i = 0; i < n; i += 2) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const double u1 = ((double)(s >> 11) + 1.0) / 9007199254740993.0;
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const double u2 = (double)(s >> 11) / 9007199254740992.0;
        const double r  = sqrt(-2.0 * log(u1));
        x[i]            = (float)(r * cos(6.283185307179586 * u2));
        if (i + 1 < n) {
            x[i + 1] = (float)(r * sin(6.283185307179586 * u2));
        }
    }
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Best of a few memcpy passes of `bytes` (bytes copied per second). */
static double memcpy_gbps(size_t bytes)
{
    char  *a = malloc(bytes), *b = malloc(bytes);
    double best = 1e30;
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    for (int r = 0; r < 5; r++) {
        const double t0 = now();
        memcpy(b, a, bytes);
        const double t = now() - t0;
        best           = t < best ? t : best;
        a[r]           = b[bytes - 1 - (size_t)r]; /* keep the copies observable */
    }
    free(a);
    free(b);
    return (double)bytes / best / 1e9;
}

typedef struct {
    double compress_gbps, decode_gbps, combined_gbps, frac, memcpy;
    double bits_per_elem;
} kernel_result_t;

/* The identity "all-reduce" of one rank: the summable methods' compute alone. */
static int bench_local_sum(void *arg, float *buf, size_t n)
{
    (void)arg, (void)buf, (void)n;
    return 0;
}

/* A summable method (PowerSGD) has no payload codec: its kernel is reduce() on one rank, over
 * pseudo-layers of 1M elements (near-square, as the engine cuts a buffer without a layout), timed
 * as "compress" (there is no separate decode); bits per element count its messages. */
static kernel_result_t bench_kernel_summable(const sqz_compressor_v1_t *c, void *st, size_t n,
                                             double mc)
{
    kernel_result_t r     = {0};
    const size_t    chunk = (size_t)1 << 20;
    const size_t    nl    = (n + chunk - 1) / chunk;
    sqz_matrix_v1_t *layers = calloc(nl ? nl : 1, sizeof(*layers));
    for (size_t l = 0; l < nl; l++) {
        const size_t len  = n - l * chunk < chunk ? n - l * chunk : chunk;
        size_t       rows = 1;
        while ((rows + 1) * (rows + 1) <= len) {
            rows++;
        }
        layers[l] = (sqz_matrix_v1_t){.offset = l * chunk, .rows = rows, .cols = len / rows};
    }
    const size_t bl = c->bufstate_len(st, layers, nl, n);
    float *in = malloc(n * sizeof(float)), *res = calloc(n, sizeof(float)),
          *out = malloc(n * sizeof(float)), *bs = calloc(bl ? bl : 1, sizeof(float));
    fill(in, n, (unsigned)rank_);
    double tc    = 1e30;
    size_t bytes = 0;
    /* seq from 1000: past any dense start phase */
    for (int it = 0; it < 5; it++) {
        sqz_reduce_args_v1_t a = {.size = sizeof(a), .in = in, .residual = res, .out = out, .n = n,
                                  .seq = 1000 + (uint64_t)it, .layers = layers, .nlayers = nl,
                                  .bufstate = bs, .allreduce_sum = bench_local_sum};
        const double t0 = now();
        c->reduce(st, &a);
        const double t = now() - t0;
        tc             = t < tc ? t : tc;
        bytes          = a.bytes_wire;
    }
    const double b  = (double)n * sizeof(float);
    r.compress_gbps = b / tc / 1e9;
    r.combined_gbps = r.compress_gbps;
    r.memcpy        = mc;
    r.frac          = r.combined_gbps / mc;
    r.bits_per_elem = 8.0 * (double)bytes / (double)n;
    free(in), free(res), free(out), free(bs), free(layers);
    return r;
}

static kernel_result_t bench_kernel(sqz_ctx_t *ctx, size_t n, double mc)
{
    kernel_result_t                r   = {0};
    const sqz_compressor_v1_t     *c   = ctx->method;
    const sqz_compressor_env_v1_t env = {.size = sizeof(env), .rank = rank_, .nranks = nranks_, .seed = 1};
    void                          *st  = NULL;
    if (SQZ_OK != c->create(ctx->configs[ctx->method_index], &env, &st)) {
        return r;
    }
    if (SQZ_EXCHANGE_SUMMABLE == c->exchange) {
        r = bench_kernel_summable(c, st, n, mc);
        c->destroy(st);
        return r;
    }
    float *in = malloc(n * sizeof(float)), *res = calloc(n, sizeof(float)), *out = calloc(n, sizeof(float));
    const size_t cap = c->max_payload(st, n);
    void        *pl  = malloc(cap);
    fill(in, n, (unsigned)rank_);
    memset(out, 0, n * sizeof(float));
    double tc = 1e30, td = 1e30;
    size_t bytes = 0;
    for (int it = 0; it < 5; it++) {
        sqz_compress_args_v1_t a = {.size = sizeof(a), .in = in, .residual = res, .n = n,
                                    .seq = (uint64_t)it, .payload = pl, .capacity = cap};
        double t0 = now();
        c->compress(st, &a);
        double t1 = now();
        c->decompress(st, pl, a.payload_bytes, out, n);
        double t2 = now();
        tc    = (t1 - t0) < tc ? (t1 - t0) : tc;
        td    = (t2 - t1) < td ? (t2 - t1) : td;
        bytes = a.payload_bytes;
    }
    const double b    = (double)n * sizeof(float);
    r.compress_gbps   = b / tc / 1e9;
    r.decode_gbps     = b / td / 1e9;
    r.combined_gbps   = b / (tc + td) / 1e9;
    r.memcpy          = mc;
    r.frac            = r.combined_gbps / mc;
    r.bits_per_elem   = 8.0 * (double)bytes / (double)n;
    c->destroy(st);
    free(in);
    free(res);
    free(out);
    free(pl);
    return r;
}

typedef struct {
    size_t bytes;
    double t_dense, t_sqz, rel_error, wire_ratio, sent_ratio;
    /* SQZ_EXCHANGE_MODEL=time: the cost model's mean prediction per call (0: none), and the
     * compute measured in the calls (compress and decode seconds per call, the slowest rank's) */
    double model_s, compute_s;
} ar_result_t;

static double time_dense(float *in, float *out, size_t n, int iters, int warmup)
{
    double *t = malloc((size_t)iters * sizeof(double));
    for (int it = -warmup; it < iters; it++) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = now();
        MPI_Allreduce(in, out, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double dt = now() - t0;
        MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (it >= 0) {
            t[it] = dt;
        }
    }
    const double m = median(t, iters);
    free(t);
    return m;
}

static ar_result_t bench_allreduce(sqz_comm_t *comm, sqz_ctx_t *ctx, float *in, float *out,
                                   const float *dense, size_t n, int iters, int warmup)
{
    ar_result_t r = {.bytes = n * sizeof(float)};
    double     *t = malloc((size_t)iters * sizeof(double));
    sqz_stats_t s0, s1;
    double      sent0 = 0, sent1 = 0, pred0 = 0, pred1 = 0, npred0 = 0, npred1 = 0;
    sqz_stats_get(ctx, &s0);
    for (size_t j = 0; j < ctx->reg.n; j++) {
        sent0 += (double)ctx->stats[j].bytes_sent;
        pred0 += ctx->stats[j].seconds_predicted;
        npred0 += (double)ctx->stats[j].calls_predicted;
    }
    for (int it = -warmup; it < iters; it++) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = now();
        sqz_allreduce(comm, in, out, n, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 1 + n);
        double dt = now() - t0;
        MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (it >= 0) {
            t[it] = dt;
        }
        if (it == -warmup) {
            /* The first call's error (no accumulated residual yet) against the dense result. */
            double e = 0, x = 0;
            for (size_t i = 0; i < n; i++) {
                e += ((double)out[i] - dense[i]) * ((double)out[i] - dense[i]);
                x += (double)dense[i] * dense[i];
            }
            r.rel_error = x > 0 ? sqrt(e / x) : 0;
        }
    }
    sqz_stats_get(ctx, &s1);
    for (size_t j = 0; j < ctx->reg.n; j++) {
        sent1 += (double)ctx->stats[j].bytes_sent;
        pred1 += ctx->stats[j].seconds_predicted;
        npred1 += (double)ctx->stats[j].calls_predicted;
    }
    const double calls = (double)(s1.calls_compressed - s0.calls_compressed);
    if (calls > 0) {
        r.wire_ratio = (double)(s1.bytes_wire - s0.bytes_wire) / calls / (double)r.bytes;
        r.sent_ratio = (sent1 - sent0) / calls / (double)r.bytes;
        r.compute_s  = (s1.seconds_compress - s0.seconds_compress) / calls;
    }
    if (npred1 > npred0) {
        /* (a hierarchy's engine predicts its exchange between hosts; the dense stages inside
         * the host are added) */
        r.model_s = (pred1 - pred0) / (npred1 - npred0) +
                    (comm->hier ? sqz_hier_intra_seconds(comm, n) : 0.0);
    }
    MPI_Allreduce(MPI_IN_PLACE, &r.compute_s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    r.t_sqz = median(t, iters);
    free(t);
    return r;
}

/* The kernel table: every method's compress and decode bandwidth on one core per rank. */
static void run_kernels(const opts_t *o, FILE *js)
{
    const size_t n  = o->kernel_bytes / sizeof(float);
    const double mc = memcpy_gbps(o->kernel_bytes);
    if (0 == rank_) {
        printf("# kernels: %zu floats (%.0f MiB), one core per rank; memcpy %.2f GB/s in this run\n",
               n, (double)o->kernel_bytes / 1048576.0, mc);
        printf("%-44s %10s %10s %10s %9s %9s\n", "method", "comp GB/s", "dec GB/s",
               "both GB/s", "x memcpy", "bits/el");
        if (js) {
            fprintf(js, "  \"kernel_floats\": %zu,\n  \"memcpy_gbps\": %.4f,\n  \"kernels\": [", n, mc);
        }
    }
    for (int m = 0; m < o->nm; m++) {
        sqz_ctx_t *ctx = make_ctx(&o->m[m]);
        if (NULL == ctx) {
            continue;
        }
        const kernel_result_t r = bench_kernel(ctx, n, mc);
        if (0 == rank_) {
            printf("%-44s %10.2f %10.2f %10.2f %9.2f %9.3f\n", o->m[m].label, r.compress_gbps,
                   r.decode_gbps, r.combined_gbps, r.frac, r.bits_per_elem);
            if (js) {
                fprintf(js, "%s\n    {\"method\": \"%s\", \"compress_gbps\": %.4f, \"decode_gbps\": %.4f, "
                            "\"combined_gbps\": %.4f, \"fraction_of_memcpy\": %.4f, \"bits_per_element\": %.4f}",
                        m ? "," : "", o->m[m].label, r.compress_gbps, r.decode_gbps,
                        r.combined_gbps, r.frac, r.bits_per_elem);
            }
        }
        sqz_ctx_destroy(ctx);
    }
    if (js) {
        fprintf(js, "\n  ],\n");
    }
}

/* One method's communicator, as the MPI interposer makes it: flat over MPI_COMM_WORLD (told the
 * hosts and ranks per host, for the cost model), or - SQZ_HIER not off, several hosts of the
 * same number (> 1) of ranks, hosts by SQZ_HOST_ID or hostname - sqz_comm_create_hier over this
 * host's ranks and the ranks of this local index (the sharded hierarchy). */
typedef struct bench_comm {
    sqz_comm_t     *comm;
    sqz_transport_t t, lt;
    MPI_Comm        local, inter;
} bench_comm_t;

static void bench_comm_destroy(bench_comm_t *b)
{
    sqz_comm_destroy(b->comm);
    sqz_transport_mpi_destroy(&b->t);
    sqz_transport_mpi_destroy(&b->lt);
    if (MPI_COMM_NULL != b->local) {
        MPI_Comm_free(&b->local);
        MPI_Comm_free(&b->inter);
    }
    b->comm = NULL;
}

static void bench_comm_create(sqz_ctx_t *ctx, bench_comm_t *b)
{
    memset(b, 0, sizeof(*b));
    b->local = b->inter = MPI_COMM_NULL;
    /* (the methods' settings leave the environment out: SQZ_HOST_ID is read from it here) */
    const char       *id = ctx->p.host_id && ctx->p.host_id[0] ? ctx->p.host_id
                                                                : getenv("SQZ_HOST_ID");
    sqz_host_layout_t lay;
    if (0 != sqz_mpi_hosts(MPI_COMM_WORLD, id, &lay)) {
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    sqz_status_t st;
    if (SQZ_HIER_OFF != ctx->p.hier && lay.uniform && lay.hosts > 1 && lay.local_size > 1) {
        MPI_Comm_split(MPI_COMM_WORLD, lay.host, rank_, &b->local);
        MPI_Comm_split(MPI_COMM_WORLD, lay.local_rank, lay.host, &b->inter);
        st = sqz_transport_mpi_create(b->local, &b->lt);
        if (SQZ_OK == st) {
            st = sqz_transport_mpi_create(b->inter, &b->t);
        }
        if (SQZ_OK == st) {
            st = sqz_comm_create_hier(ctx, &b->lt, &b->t, &b->comm);
        }
    } else {
        st = sqz_transport_mpi_create(MPI_COMM_WORLD, &b->t);
        if (SQZ_OK == st) {
            st = sqz_comm_create(ctx, &b->t, &b->comm);
        }
        if (SQZ_OK == st) {
            b->comm->cost.hosts = lay.hosts, b->comm->cost.per_host = lay.most;
        }
    }
    if (SQZ_OK != st) {
        bench_comm_destroy(b);
    }
}

/* The all-reduce table: every method against the dense all-reduce, size after size. */
static void run_allreduce(const opts_t *o, FILE *js)
{
    const size_t maxn  = o->max_bytes / sizeof(float);
    float       *in    = malloc(maxn * sizeof(float));
    float       *out   = malloc(maxn * sizeof(float));
    float       *dense = malloc(maxn * sizeof(float));
    fill(in, maxn, 1000u + (unsigned)rank_);
    sqz_ctx_t   *ctxs[MAX_METHODS]  = {0};
    sqz_comm_t  *comms[MAX_METHODS] = {0};
    bench_comm_t bc[MAX_METHODS]    = {0};
    for (int m = 0; m < o->nm; m++) {
        ctxs[m] = make_ctx(&o->m[m]);
        if (ctxs[m]) {
            bench_comm_create(ctxs[m], &bc[m]);
            comms[m] = bc[m].comm;
        }
    }
    if (0 == rank_) {
        printf("\n# all-reduce on %d ranks: median of %d (after %d warm-up); time is the slowest rank's\n",
               nranks_, o->iters, o->warmup);
        printf("%-44s %10s %11s %11s %8s %8s %8s %9s\n", "method", "bytes", "dense ms",
               "method ms", "speedup", "wire/in", "sent/in", "rel err");
        if (js) {
            fprintf(js, "  \"allreduce\": [");
        }
    }
    int first = 1;
    for (size_t bytes = o->min_bytes; bytes <= o->max_bytes; bytes *= (size_t)o->step) {
        const size_t n     = bytes / sizeof(float);
        const int    iters = bytes > (16u << 20) ? (o->iters > 5 ? 5 : o->iters) : o->iters;
        MPI_Allreduce(in, dense, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        const double td = time_dense(in, out, n, iters, o->warmup);
        for (int m = 0; m < o->nm; m++) {
            if (NULL == comms[m]) {
                continue;
            }
            const ar_result_t r = bench_allreduce(comms[m], ctxs[m], in, out, dense, n, iters,
                                                  o->warmup);
            /* The ideal: this rank's sent bytes at the link rate plus the compute measured in
             * the same calls (SQZ_LINK_GBPS says the rate). */
            const double link = comms[m]->cost.link_Bps > 0 ? comms[m]->cost.link_Bps
                                                        : ctxs[m]->p.link_gbps * 1e9 / 8;
            const double ideal = r.sent_ratio * (double)bytes / link + r.compute_s;
            if (0 == rank_) {
                printf("%-44s %10zu %11.3f %11.3f %8.2f %8.4f %8.4f %9.4f", o->m[m].label,
                       bytes, td * 1e3, r.t_sqz * 1e3, td / r.t_sqz, r.wire_ratio,
                       r.sent_ratio, r.rel_error);
                if (r.model_s > 0) {
                    printf("  model %.1f ms (x%.2f) ideal %.1f ms (x%.2f) dense model %.1f ms",
                           r.model_s * 1e3, r.t_sqz / r.model_s, ideal * 1e3, r.t_sqz / ideal,
                           sqz_policy_dense_seconds(comms[m], n) * 1e3);
                }
                printf("\n");
                if (js) {
                    fprintf(js, "%s\n    {\"method\": \"%s\", \"bytes\": %zu, \"dense_s\": %.9f, "
                                "\"method_s\": %.9f, \"speedup\": %.4f, \"wire_ratio\": %.6f, "
                                "\"sent_ratio\": %.6f, \"rel_error\": %.6f, \"model_s\": %.9f, "
                                "\"compute_s\": %.9f, \"ideal_s\": %.9f, \"dense_model_s\": %.9f, "
                                "\"link_gbps\": %.6g, \"compress_gbps\": %.4f, \"decode_gbps\": %.4f}",
                            first ? "" : ",", o->m[m].label, bytes, td, r.t_sqz, td / r.t_sqz,
                            r.wire_ratio, r.sent_ratio, r.rel_error, r.model_s, r.compute_s,
                            ideal, sqz_policy_dense_seconds(comms[m], n), link * 8e-9,
                            comms[m]->cost.compress_Bps * 1e-9, comms[m]->cost.decode_Bps * 1e-9);
                    first = 0;
                }
            }
        }
        if (bytes > o->max_bytes / (size_t)o->step) {
            break;
        }
    }
    if (js) {
        fprintf(js, "\n  ],\n");
    }
    for (int m = 0; m < o->nm; m++) {
        if (comms[m]) {
            bench_comm_destroy(&bc[m]);
        }
        sqz_ctx_destroy(ctxs[m]);
    }
    free(in);
    free(out);
    free(dense);
}

/* Closes the JSON record (rank 0, when one was asked for). */
static void finish_json(FILE *js)
{
    if (js) {
        fprintf(js, "  \"version\": \"%d.%d.%d\"\n}\n", SQZ_VERSION_MAJOR, SQZ_VERSION_MINOR,
                SQZ_VERSION_PATCH);
        fclose(js);
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    opts_t o;
    const int prc = parse(&o, argc, argv);
    if (prc) {
        MPI_Finalize();
        return prc == 1 ? 0 : prc;
    }
    FILE *js = NULL;
    if (0 == rank_ && o.json) {
        js = fopen(o.json, "w");
        if (NULL == js) {
            fprintf(stderr, "squeeze_bench: cannot write %s\n", o.json);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        fprintf(js, "{\n  \"ranks\": %d,\n", nranks_);
    }
    int rc = 0;
    if (o.gpu && o.group) {
        rc = bench_gpu_group(&o, js);
    } else if (o.gpu) {
        rc = bench_gpu(&o, js);
    } else {
        if (o.kernels) {
            run_kernels(&o, js);
        }
        if (o.allreduce) {
            run_allreduce(&o, js);
        }
    }
    finish_json(js);
    MPI_Finalize();
    return rc;
}
