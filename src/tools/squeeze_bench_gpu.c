/* squeeze_bench --gpu: the GPU path, measured side by side in one run.
 *
 * Kernels (per rank, one GPU): compress with error feedback and decode of every method on one
 * buffer, in float32 and bfloat16, against the device-to-device copy bandwidth measured in the
 * same run.  Throughput counts the bytes each kernel touches (compress: read the input and the
 * residual, write the residual and the payload; decode: read the payload, write the output; copy:
 * read and write), timed with CUDA events over many launches.
 * All-reduce: for each size, the median per-call time (CUDA events, slowest rank) of the
 * compressed all-reduce against ncclAllReduce on the same communicator, with the payload bytes,
 * the relative error against the dense sum and a bit-identity check of the outputs across ranks.
 * One GPU per rank: device = local rank (local_rank) modulo the device count. */
#include "config.h"

#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools/squeeze_bench.h"

#ifndef SQZ_HAVE_GPU
int bench_gpu(const opts_t *o, FILE *js)
{
    (void)o, (void)js;
    if (0 == rank_) {
        fprintf(stderr, "squeeze_bench: built without CUDA/NCCL: no --gpu\n");
    }
    return 77;
}
#else
#include <cuda_runtime_api.h>

#include "cuda/sqz_gpu_engine.h"
#include "transport/sqz_nccl.h"

#define CK(call)                                                                                 \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "squeeze_bench: %s: %s\n", #call, cudaGetErrorString(e_));           \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                        \
        }                                                                                        \
    } while (0)

static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Gaussian-like gradient data on the device (filled on the host once). */
void bench_fill_device(void *d, size_t n, sqz_dtype_t dt, unsigned seed)
{
    float   *h = malloc(n * sizeof(float));
    uint64_t s = 0x9e3779b97f4a7c15ull * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        double acc = 0;
        for (int k = 0; k < 4; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            acc += (double)(s >> 11) * 0x1p-53;
        }
        h[i] = (float)((acc - 2.0) * 1e-3);
    }
    if (dt == SQZ_DTYPE_FLOAT32) {
        CK(cudaMemcpy(d, h, n * 4, cudaMemcpyHostToDevice));
    } else {
        uint16_t *b = (uint16_t *)h; /* bfloat16: the top half of each float, in place */
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &h[i], 4);
            b[i] = (uint16_t)(u >> 16);
        }
        CK(cudaMemcpy(d, b, n * 2, cudaMemcpyHostToDevice));
    }
    free(h);
}

static double copy_gbps(void *a, void *b, size_t bytes, cudaStream_t s)
{
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) {
        CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
    }
    const int it = 20;
    CK(cudaEventRecord(e0, s));
    for (int i = 0; i < it; i++) {
        CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
    }
    CK(cudaEventRecord(e1, s));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 2.0 * (double)bytes * it / (ms * 1e-3) / 1e9;
}

/* A v2 plugin's state for its device operations (a communicator would make it), or NULL for a
 * built-in or a plugin without them. */
static void *plugin_state(const sqz_ctx_t *ctx)
{
    void                         *state = NULL;
    const sqz_compressor_env_v1_t env   = {.size = sizeof(env), .rank = 0, .nranks = 1, .seed = 1};
    if (NULL == ctx || NULL == ctx->method_device ||
        SQZ_OK != ctx->method->create(ctx->configs[ctx->method_index], &env, &state)) {
        return NULL;
    }
    return state;
}

/* Whether a plugin's query takes device buffers of dtype (built-ins: every dtype here). */
static int plugin_takes(const sqz_ctx_t *ctx, void *state, size_t n, sqz_dtype_t dtype)
{
    const sqz_query_v1_t q = {.size = sizeof(q), .count = n, .nranks = 1, .dtype = (int)dtype,
                              .op = SQZ_OP_SUM, .memory = SQZ_MEMORY_DEVICE};
    return NULL == state || NULL == ctx->method->query || SQZ_OK == ctx->method->query(state, &q);
}

static void bench_gpu_kernels(const opts_t *o, FILE *js)
{
    const size_t n  = o->kernel_bytes / sizeof(float);
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    void  *in, *out, *tmp;
    float *res;
    CK(cudaMalloc(&in, n * 4));
    CK(cudaMalloc(&out, n * 4));
    CK(cudaMalloc(&tmp, n * 4));
    CK(cudaMalloc((void **)&res, n * 4));
    const double cp = copy_gbps(in, tmp, n * 4, s);
    if (0 == rank_) {
        printf("# GPU kernels: %zu elements; device-to-device copy %.0f GB/s (read+write) in this "
               "run\n",
               n, cp);
        printf("%-40s %6s %11s %9s %11s %9s %8s\n", "method", "dtype", "comp GB/s", "x copy",
               "dec GB/s", "x copy", "bits/el");
        if (js) {
            fprintf(js, "  \"gpu_kernel_elements\": %zu,\n  \"gpu_copy_gbps\": %.2f,\n  "
                        "\"gpu_kernels\": [",
                    n, cp);
        }
    }
    int first = 1;
    for (int m = 0; m < o->nm; m++) {
        sqz_ctx_t       *ctx   = make_ctx(&o->m[m]);
        void            *state = plugin_state(ctx);
        sqz_gpu_params_t p;
        if (NULL == ctx || !sqz_gpu_params_from_ctx(ctx, state, &p)) {
            sqz_ctx_destroy(ctx);
            continue;
        }
        for (int d = 0; d < 2; d++) {
            const sqz_dtype_t dt  = d ? SQZ_DTYPE_BFLOAT16 : SQZ_DTYPE_FLOAT32;
            const size_t      esz = d ? 2 : 4;
            if (!plugin_takes(ctx, state, n, dt)) {
                continue;
            }
            const size_t      pb  = sqz_gpu_payload_bytes(&p, n);
            const size_t      wb  = sqz_gpu_workspace_bytes(&p, n, dt);
            void             *pay, *ws;
            CK(cudaMalloc(&pay, pb));
            CK(cudaMalloc(&ws, wb ? wb : 16));
            bench_fill_device(in, n, dt, 7u);
            CK(cudaMemsetAsync(res, 0, n * 4, s));
            cudaEvent_t e0, e1, e2;
            CK(cudaEventCreate(&e0));
            CK(cudaEventCreate(&e1));
            CK(cudaEventCreate(&e2));
            const int it = 20;
            for (int i = 0; i < 3; i++) {
                sqz_gpu_compress(&p, in, dt, res, n, (uint32_t)i, pay, ws, s);
                sqz_gpu_decode_sum(&p, pay, 1, n, 1.0f, out, dt, ws, s);
            }
            CK(cudaEventRecord(e0, s));
            for (int i = 0; i < it; i++) {
                sqz_gpu_compress(&p, in, dt, res, n, (uint32_t)i, pay, ws, s);
            }
            CK(cudaEventRecord(e1, s));
            for (int i = 0; i < it; i++) {
                sqz_gpu_decode_sum(&p, pay, 1, n, 1.0f, out, dt, ws, s);
            }
            CK(cudaEventRecord(e2, s));
            CK(cudaEventSynchronize(e2));
            CK(cudaGetLastError());
            float mc = 0, md = 0;
            CK(cudaEventElapsedTime(&mc, e0, e1));
            CK(cudaEventElapsedTime(&md, e1, e2));
            const double cbytes = (double)n * (double)(esz + 8) + (double)pb;
            const double dbytes = (double)pb + (double)n * (double)esz;
            const double cg = cbytes * it / (mc * 1e-3) / 1e9, dg = dbytes * it / (md * 1e-3) / 1e9;
            const double bits = 8.0 * (double)pb / (double)n;
            if (0 == rank_) {
                printf("%-40s %6s %11.0f %9.2f %11.0f %9.2f %8.3f\n", o->m[m].label,
                       d ? "bf16" : "fp32", cg, cg / cp, dg, dg / cp, bits);
                if (js) {
                    fprintf(js, "%s\n    {\"method\": \"%s\", \"dtype\": \"%s\", "
                                "\"compress_gbps\": %.2f, \"compress_x_copy\": %.4f, "
                                "\"decode_gbps\": %.2f, \"decode_x_copy\": %.4f, "
                                "\"bits_per_element\": %.4f}",
                            first ? "" : ",", o->m[m].label, d ? "bf16" : "fp32", cg, cg / cp,
                            dg, dg / cp, bits);
                }
                first = 0;
            }
            cudaEventDestroy(e0);
            cudaEventDestroy(e1);
            cudaEventDestroy(e2);
            cudaFree(pay);
            cudaFree(ws);
        }
        if (state) {
            ctx->method->destroy(state);
        }
        sqz_ctx_destroy(ctx);
    }
    if (0 == rank_ && js) {
        fprintf(js, "\n  ],\n");
    }
    cudaFree(in);
    cudaFree(out);
    cudaFree(tmp);
    cudaFree(res);
    cudaStreamDestroy(s);
}

/* Median per-call milliseconds of `iters` calls (events around each), slowest rank. */
typedef sqz_status_t (*call_fn)(void *arg, cudaStream_t s);

static double time_calls(call_fn fn, void *arg, cudaStream_t s, int iters, int warmup)
{
    cudaEvent_t ev[65];
    iters = iters > 64 ? 64 : iters;
    for (int i = 0; i <= iters; i++) {
        CK(cudaEventCreate(&ev[i]));
    }
    for (int i = 0; i < warmup; i++) {
        fn(arg, s);
    }
    CK(cudaStreamSynchronize(s));
    MPI_Barrier(MPI_COMM_WORLD);
    CK(cudaEventRecord(ev[0], s));
    for (int i = 0; i < iters; i++) {
        fn(arg, s);
        CK(cudaEventRecord(ev[i + 1], s));
    }
    CK(cudaEventSynchronize(ev[iters]));
    float t[64];
    for (int i = 0; i < iters; i++) {
        CK(cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]));
    }
    for (int i = 0; i <= iters; i++) {
        cudaEventDestroy(ev[i]);
    }
    qsort(t, (size_t)iters, sizeof(float), cmp_float);
    double med = t[iters / 2], worst = 0;
    MPI_Allreduce(&med, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return worst;
}

typedef struct {
    const sqz_nccl_api_t *api;
    ncclComm_t            nc;
    sqz_comm_t           *comm;
    const void           *in;
    void                 *out;
    size_t                n;
} ar_arg_t;

static sqz_status_t dense_call(void *arg, cudaStream_t s)
{
    ar_arg_t *a = arg;
    return a->api->AllReduce(a->in, a->out, a->n, ncclFloat32, ncclSum, a->nc, s) == ncclSuccess
               ? SQZ_OK
               : SQZ_ERR_NCCL;
}

static sqz_status_t sqz_call(void *arg, cudaStream_t s)
{
    ar_arg_t *a = arg;
    return sqz_allreduce_async(a->comm, a->in, a->out, a->n, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 1, s);
}

static void bench_gpu_allreduce(const opts_t *o, FILE *js, const sqz_nccl_api_t *api,
                                ncclComm_t nc)
{
    const size_t maxn = o->max_bytes / sizeof(float);
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    void *in, *out, *dense;
    CK(cudaMalloc(&in, maxn * 4));
    CK(cudaMalloc(&out, maxn * 4));
    CK(cudaMalloc(&dense, maxn * 4));
    bench_fill_device(in, maxn, SQZ_DTYPE_FLOAT32, 1000u + (unsigned)rank_);
    float *h_out = malloc(maxn * 4), *h_dense = malloc(maxn * 4);
    if (0 == rank_) {
        printf("\n# GPU all-reduce on %d ranks (NCCL): median per call of %d, slowest rank\n",
               nranks_, o->iters);
        printf("%-40s %11s %10s %10s %8s %8s %9s %6s\n", "method", "bytes", "nccl ms",
               "method ms", "speedup", "wire/in", "rel err", "ident");
        if (js) {
            fprintf(js, "  \"gpu_allreduce\": [");
        }
    }
    int first = 1;
    for (int m = 0; m < o->nm; m++) {
        sqz_ctx_t  *ctx  = make_ctx(&o->m[m]);
        sqz_comm_t *comm = NULL;
        if (NULL == ctx || SQZ_OK != sqz_comm_create_nccl(ctx, nc, &comm)) {
            sqz_ctx_destroy(ctx);
            continue;
        }
        for (size_t bytes = o->min_bytes; bytes <= o->max_bytes; bytes *= (size_t)o->step) {
            const size_t n     = bytes / 4;
            ar_arg_t     a     = {api, nc, comm, in, dense, n};
            const double td    = time_calls(dense_call, &a, s, o->iters, o->warmup);
            a.out              = out;
            sqz_stats_t before = {0}, after = {0};
            sqz_stats_get(ctx, &before);
            const double ts = time_calls(sqz_call, &a, s, o->iters, o->warmup);
            sqz_stats_get(ctx, &after);
            CK(cudaStreamSynchronize(s));
            CK(cudaMemcpy(h_out, out, n * 4, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(h_dense, dense, n * 4, cudaMemcpyDeviceToHost));
            double e2 = 0, d2 = 0;
            uint64_t h = 1469598103934665603ull;
            for (size_t i = 0; i < n; i++) {
                const double d = (double)h_out[i] - (double)h_dense[i];
                e2 += d * d;
                d2 += (double)h_dense[i] * h_dense[i];
                uint32_t u;
                memcpy(&u, &h_out[i], 4);
                h = (h ^ u) * 1099511628211ull;
            }
            uint64_t h0 = h;
            MPI_Bcast(&h0, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
            int same = h0 == h, all_same = 0;
            MPI_Allreduce(&same, &all_same, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
            const uint64_t calls = after.calls_compressed - before.calls_compressed;
            const double   wire  = calls ? (double)(after.bytes_wire - before.bytes_wire) /
                                             (double)calls / (double)bytes
                                         : 1.0;
            const double rel = d2 > 0 ? sqrt(e2 / d2) : 0.0;
            if (0 == rank_) {
                printf("%-40s %11zu %10.3f %10.3f %8.2f %8.4f %9.4f %6s\n", o->m[m].label, bytes,
                       td, ts, td / ts, wire, rel, all_same ? "yes" : "NO");
                if (js) {
                    fprintf(js, "%s\n    {\"method\": \"%s\", \"bytes\": %zu, \"nccl_ms\": %.5f, "
                                "\"method_ms\": %.5f, \"speedup\": %.4f, \"wire_ratio\": %.6f, "
                                "\"rel_error\": %.6f, \"identical\": %s}",
                            first ? "" : ",", o->m[m].label, bytes, td, ts, td / ts, wire, rel,
                            all_same ? "true" : "false");
                }
                first = 0;
            }
            if (bytes > o->max_bytes / (size_t)o->step) {
                break;
            }
        }
        sqz_comm_destroy(comm);
        sqz_ctx_destroy(ctx);
    }
    if (0 == rank_ && js) {
        fprintf(js, "\n  ],\n");
    }
    free(h_out);
    free(h_dense);
    cudaFree(in);
    cudaFree(out);
    cudaFree(dense);
    cudaStreamDestroy(s);
}

/* The rank's index among the ranks of its host, as the launcher tells it: Open MPI
 * (OMPI_COMM_WORLD_LOCAL_RANK), MPICH's hydra (MPI_LOCALRANKID, PMI_LOCAL_RANK) or Slurm
 * (SLURM_LOCALID); the world rank when none is set. */
static int local_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                       "PMI_LOCAL_RANK", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) {
            return atoi(v);
        }
    }
    return rank_;
}

int bench_gpu(const opts_t *o, FILE *js)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        if (0 == rank_) {
            fprintf(stderr, "squeeze_bench --gpu: no CUDA device\n");
        }
        return 77;
    }
    CK(cudaSetDevice(local_rank() % ndev));
    if (o->kernels) {
        bench_gpu_kernels(o, js);
    }
    if (!o->allreduce) {
        return 0;
    }
    const sqz_nccl_api_t *api = sqz_nccl_resolve(1);
    if (NULL == api) {
        return 77;
    }
    ncclUniqueId id;
    if (0 == rank_ && SQZ_OK != sqz_nccl_get_unique_id(&id, sizeof(id))) {
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Bcast(&id, (int)sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
    void *nc = NULL;
    if (SQZ_OK != sqz_nccl_comm_init(nranks_, &id, sizeof(id), rank_, &nc)) {
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    bench_gpu_allreduce(o, js, api, (ncclComm_t)nc);
    sqz_nccl_comm_destroy(nc);
    return 0;
}
#endif
