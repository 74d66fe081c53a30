/* squeeze_bench --gpu --group N: the GPU engine with N ranks as threads on this process's GPU
 * (sqz_device_group), one MPI process.  What it measures is traffic, not network time: for each
 * method and size, as an all-reduce (ar) and as a reduce-scatter (rs), the bytes each rank sends
 * per compressed call (the engine's stats) against one payload of the whole buffer, next to what
 * the all-gather exchange sends (N-1 payloads) and the scatter-reduce's ideal (2(N-1)/N for an
 * all-reduce, (N-1)/N for a reduce-scatter), and against the input bytes; the exchange the engine
 * chose; whether every rank's all-reduce output is the same bits.  The median per-call time is printed too, but the "network" here is device
 * memory: it is no estimate of a cluster's. */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools/squeeze_bench.h"

#ifdef SQZ_HAVE_GPU
#include <cuda_runtime_api.h>

#include "cuda/sqz_gpu_engine.h"

#define GROUP_MAX 64

typedef struct group_run {
    const opts_t       *o;
    const method_t     *m;
    sqz_device_group_t *grp;
    int                 N, rs; /* rs: reduce-scatters (of n / N per rank), else all-reduces */
    size_t              n;
    pthread_barrier_t   bar;
    /* per rank */
    double             ms[GROUP_MAX];
    uint64_t           hash[GROUP_MAX];
    double             sent[GROUP_MAX]; /* bytes per compressed call */
    int                algo_rs[GROUP_MAX], ok[GROUP_MAX];
    size_t             payload;
} group_run_t;

static int cmp_f(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static sqz_status_t group_call(const group_run_t *g, sqz_comm_t *comm, const float *in,
                               float *out, cudaStream_t s)
{
    return g->rs ? sqz_reduce_scatter_async(comm, in, out, g->n / (size_t)g->N,
                                            SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 1, s)
                 : sqz_allreduce_async(comm, in, out, g->n, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 1, s);
}

/* Median milliseconds of o->iters compressed calls on stream s, every rank in step. */
static double group_time(group_run_t *g, sqz_comm_t *comm, const float *in, float *out,
                         cudaStream_t s)
{
    const int   iters = g->o->iters > 32 ? 32 : g->o->iters;
    cudaEvent_t ev[33];
    float       t[32];
    for (int i = 0; i <= iters; i++) {
        cudaEventCreate(&ev[i]);
    }
    for (int i = 0; i < g->o->warmup; i++) {
        group_call(g, comm, in, out, s);
    }
    cudaStreamSynchronize(s);
    pthread_barrier_wait(&g->bar);
    cudaEventRecord(ev[0], s);
    for (int i = 0; i < iters; i++) {
        group_call(g, comm, in, out, s);
        cudaEventRecord(ev[i + 1], s);
    }
    cudaEventSynchronize(ev[iters]);
    for (int i = 0; i < iters; i++) {
        cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]);
    }
    for (int i = 0; i <= iters; i++) {
        cudaEventDestroy(ev[i]);
    }
    qsort(t, (size_t)iters, sizeof(float), cmp_f);
    return t[iters / 2];
}

/* FNV-1a of the output, to compare the ranks' bits. */
static uint64_t group_hash(const float *dev, size_t n)
{
    uint32_t *h = malloc(n * sizeof(float));
    uint64_t  x = 1469598103934665603ull;
    if (h && cudaMemcpy(h, dev, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess) {
        for (size_t i = 0; i < n; i++) {
            x = (x ^ h[i]) * 1099511628211ull;
        }
    }
    free(h);
    return x;
}

static void group_rank(group_run_t *g, int rank)
{
    cudaSetDevice(0);
    method_t m = *g->m; /* (--hosts: this rank's emulated host, SQZ_HOST_ID) */
    if (g->o->hosts > 1) {
        const size_t len = strlen(m.spec);
        snprintf(m.spec + len, sizeof(m.spec) - len, "%sHOST_ID=h%d",
                 strchr(m.spec, ':') ? "," : ":", rank / (g->N / g->o->hosts));
    }
    sqz_ctx_t  *ctx  = make_ctx(&m);
    sqz_comm_t *comm = NULL;
    g->ok[rank]      = ctx && SQZ_OK == sqz_comm_create_device_group(ctx, g->grp, rank, &comm);
    if (!g->ok[rank]) {
        sqz_ctx_destroy(ctx);
        return;
    }
    cudaStream_t s;
    float       *in = NULL, *out = NULL;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaMalloc((void **)&in, g->n * sizeof(float));
    cudaMalloc((void **)&out, g->n * sizeof(float));
    bench_fill_device(in, g->n, SQZ_DTYPE_FLOAT32, 1000u + (unsigned)rank);
    g->ms[rank] = group_time(g, comm, in, out, s);
    cudaStreamSynchronize(s);
    sqz_stats_t st = {0};
    sqz_stats_get(ctx, &st);
    char js[8192];
    sqz_stats_json(ctx, rank, js, sizeof(js));
    const char *at   = strstr(js, "\"bytes_sent\": "); /* (every call since the start) */
    g->sent[rank]    = at && st.calls_compressed
                           ? strtod(at + 14, NULL) / (double)st.calls_compressed
                           : 0;
    g->algo_rs[rank] = NULL != strstr(js, "\"reduce_scatter\": ");
    g->hash[rank]    = g->rs ? 0 : group_hash(out, g->n);
    sqz_gpu_params_t gp;
    if (0 == rank && sqz_gpu_params_from_ctx(ctx, comm->cstate, &gp)) {
        g->payload = sqz_gpu_payload_bytes(&gp, g->n);
    }
    cudaFree(in), cudaFree(out);
    cudaStreamDestroy(s);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

typedef struct {
    group_run_t *g;
    int          rank;
} group_arg_t;

static void *group_main(void *p)
{
    group_arg_t *a = p;
    group_rank(a->g, a->rank);
    return NULL;
}

/* One method at one size on N thread ranks; prints a line (and a JSON row). */
static void group_case(group_run_t *g, FILE *js, int *first)
{
    pthread_t   th[GROUP_MAX];
    group_arg_t args[GROUP_MAX];
    pthread_barrier_init(&g->bar, NULL, (unsigned)g->N);
    for (int r = 0; r < g->N; r++) {
        args[r] = (group_arg_t){g, r};
        pthread_create(&th[r], NULL, group_main, &args[r]);
    }
    for (int r = 0; r < g->N; r++) {
        pthread_join(th[r], NULL);
    }
    pthread_barrier_destroy(&g->bar);
    int    ok = 1, same = 1;
    double ms = 0, sent = 0;
    for (int r = 0; r < g->N; r++) {
        ok &= g->ok[r];
        same &= g->hash[r] == g->hash[0];
        ms   = g->ms[r] > ms ? g->ms[r] : ms;
        sent = g->sent[r] > sent ? g->sent[r] : sent;
    }
    if (!ok) {
        printf("%-32s %11zu  (could not run)\n", g->m->label, g->n * 4);
        return;
    }
    const double pl = g->payload ? (double)g->payload : 1.0;
    const double ideal = (g->rs ? 1.0 : 2.0) * (g->N - 1) / g->N, in = (double)g->n * 4;
    printf("%-32s %2s %11zu %14s %9.3f %9.3f %9.3f %8.4f %10.3f %6s\n", g->m->label,
           g->rs ? "rs" : "ar", g->n * 4, g->algo_rs[0] ? "reduce_scatter" : "allgather",
           sent / pl, (double)(g->N - 1), ideal, sent / in, ms,
           g->rs ? "-" : same ? "yes" : "NO");
    if (js) {
        fprintf(js, "%s\n    {\"method\": \"%s\", \"op\": \"%s\", \"bytes\": %zu, "
                    "\"ranks\": %d, \"exchange\": \"%s\", \"payload_bytes\": %zu, "
                    "\"sent_per_call\": %.1f, \"payloads_per_call\": %.5f, "
                    "\"sent_per_input\": %.6f, \"ms\": %.5f, \"identical\": %s}",
                *first ? "" : ",", g->m->label, g->rs ? "reduce_scatter" : "allreduce",
                g->n * 4, g->N, g->algo_rs[0] ? "reduce_scatter" : "allgather", g->payload, sent,
                sent / pl, sent / in, ms, g->rs || same ? "true" : "false");
    }
    *first = 0;
}

int bench_gpu_group(const opts_t *o, FILE *js)
{
    if (o->group < 2 || o->group > GROUP_MAX) {
        fprintf(stderr, "squeeze_bench: --group takes 2 to %d ranks\n", GROUP_MAX);
        return 2;
    }
    if (o->hosts < 0 || (o->hosts > 1 && o->group % o->hosts)) {
        fprintf(stderr, "squeeze_bench: --hosts must divide --group\n");
        return 2;
    }
    sqz_device_group_t *grp = NULL;
    if (SQZ_OK != sqz_device_group_create(o->group, 0, &grp)) {
        return 77;
    }
    printf("\n# GPU engine, %d ranks as threads on one GPU%s: bytes sent per rank and call, in "
           "payloads of the whole buffer\n", o->group,
           o->hosts > 1 ? " on emulated hosts (SQZ_HIER: bytes between hosts)" : "");
    printf("%-32s %2s %11s %14s %9s %9s %9s %8s %10s %6s\n", "method", "op", "bytes",
           "exchange", "payloads", "allgather", "ideal", "sent/in", "ms (1 GPU)", "ident");
    if (js) {
        fprintf(js, "  \"gpu_group\": [");
    }
    int first = 1;
    for (int m = 0; m < o->nm; m++) {
        for (size_t bytes = o->min_bytes; bytes <= o->max_bytes; bytes *= (size_t)o->step) {
            for (int rs = 0; rs < 2; rs++) {
                const size_t n = bytes / 4 / (size_t)o->group * (size_t)o->group;
                group_run_t  g = {.o = o, .m = &o->m[m], .grp = grp, .N = o->group, .rs = rs,
                                  .n = n};
                if (rs && o->hosts > 1) {
                    continue; /* (reduce-scatters stay flat) */
                }
                group_case(&g, js, &first);
            }
            if (bytes > o->max_bytes / (size_t)o->step) {
                break;
            }
        }
    }
    if (js) {
        fprintf(js, "\n  ],\n");
    }
    sqz_device_group_destroy(grp);
    return 0;
}
#else
int bench_gpu_group(const opts_t *o, FILE *js)
{
    (void)o, (void)js;
    fprintf(stderr, "squeeze_bench: built without CUDA: no --group\n");
    return 77;
}
#endif
