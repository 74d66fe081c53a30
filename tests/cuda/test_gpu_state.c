/* The device engine's per-buffer state on one GPU (a one-rank NCCL communicator): buffers that
 * move at every call (cudaMalloc'd anew, at an offset) keep their residual by their place in the
 * call sequence, never fall back, and hold a bounded amount of device memory; a checkpoint taken
 * after some steps and loaded into a new communicator continues bit for bit.  The optimizer-side
 * collective (sqz_ef_allreduce on device memory): error feedback whatever SQZ_EF, SQZ_MIN_BYTES
 * and SQZ_WARMUP_STEPS say (the summed outputs stay a bounded distance from the summed inputs),
 * sqz_ef_forget (the next call is a fresh communicator's), bad arguments; damped error feedback
 * (SQZ_EF_DECAY) scales the residual carried to the next call.  Skips (77) without a
 * GPU or NCCL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_cuda_test.h"
#include "sqz_log.h"

#define NBUF  3
#define STEPS 60
#define CUT   30

static const size_t sizes[NBUF] = {1u << 20, 1u << 18, 1u << 18};
static void fill(float *h, size_t n, int step, int b)
{
    for (size_t i = 0; i < n; i++) {
        const unsigned u = (unsigned)(i * 2654435761u) ^ (unsigned)(b * 40503 + step * 7919);
        const int      v = (int)(u % 20001) - 10000; /* signed: values in [-1.4, 1.4] */
        h[i]             = (float)v * 1e-4f * (1.0f + 0.1f * (float)(step % 5));
    }
}

static const char *const quant2[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "2", NULL};

static sqz_comm_t *make_comm(void *nc, sqz_ctx_t **ctx, const char *const *kv)
{
    return sqz_cuda_make_comm(nc, ctx, NULL, kv);
}

/* Steps [from, to) of the job; results of steps >= CUT go to out (host); a checkpoint of the
 * state after step CUT - 1 goes to *ckpt when ckpt is not NULL. */
static void steps(sqz_comm_t *comm, int from, int to, float *out, unsigned char **ckpt,
                  size_t *len)
{
    float       *h   = malloc(sizes[0] * sizeof(float));
    size_t       off = 0;
    cudaStream_t s;
    CU(cudaStreamCreate(&s));
    for (int step = from; step < to; step++) {
        for (int b = 0; b < NBUF; b++) {
            /* A new allocation at a step- and buffer-dependent offset: no address repeats. */
            const size_t pad = 256 * (size_t)((step * 7 + b * 3) % 13);
            char        *blk = dalloc(sizes[b] * sizeof(float) + pad);
            float       *d   = (float *)(blk + pad);
            fill(h, sizes[b], step, b);
            CU(cudaMemcpy(d, h, sizes[b] * sizeof(float), cudaMemcpyHostToDevice));
            EXPECT(SQZ_OK == sqz_allreduce_async(comm, NULL, d, sizes[b], SQZ_DTYPE_FLOAT32,
                                                 SQZ_OP_SUM, 0, s),
                   "step %d buffer %d", step, b);
            CU(cudaStreamSynchronize(s));
            if (step >= CUT) {
                CU(cudaMemcpy(out + off, d, sizes[b] * sizeof(float), cudaMemcpyDeviceToHost));
                off += sizes[b];
            }
            CU(cudaFree(blk));
        }
        if (ckpt && step + 1 == CUT) {
            *len  = sqz_state_save(comm, NULL, 0);
            *ckpt = malloc(*len);
            EXPECT(*len > 0 && *len == sqz_state_save(comm, *ckpt, *len), "save");
        }
    }
    CU(cudaStreamDestroy(s));
    free(h);
}

/* One run of sqz_ef_allreduce over steps [from, to) of key 77 on a side stream (sign, with
 * settings that would turn the interposed path's error feedback, warm-up and compression off);
 * forget_at: sqz_ef_forget before that step.  Returns the max over steps of
 * |sum of outputs - sum of inputs| (one rank: the average is the input), the last output in
 * last (host). */
static double ef_run(void *nc, int from, int to, int forget_at, float *last)
{
    static const char *const kv[] = {"SQZ_METHOD", "sign", "SQZ_EF", "none", "SQZ_WARMUP_STEPS",
                                     "1000", "SQZ_MIN_BYTES", "1G", NULL};
    const size_t n = 300000;
    sqz_ctx_t   *ctx;
    sqz_comm_t  *comm = make_comm(nc, &ctx, kv);
    float       *h = malloc(n * sizeof(float)), *o = malloc(n * sizeof(float));
    double      *drift = calloc(n, sizeof(double)), worst = 0.0;
    float       *d = dalloc(n * sizeof(float));
    cudaStream_t s;
    CU(cudaStreamCreate(&s));
    for (int step = from; step < to; step++) {
        if (step == forget_at) {
            sqz_ef_forget(comm, 77);
        }
        fill(h, n, step, 9);
        CU(cudaMemcpyAsync(d, h, n * sizeof(float), cudaMemcpyHostToDevice, s));
        EXPECT(SQZ_OK == sqz_ef_allreduce(comm, d, n, SQZ_DTYPE_FLOAT32, SQZ_OP_AVG, 77, s),
               "sqz_ef_allreduce, step %d", step);
        CU(cudaMemcpyAsync(o, d, n * sizeof(float), cudaMemcpyDeviceToHost, s));
        CU(cudaStreamSynchronize(s));
        for (size_t i = 0; i < n; i++) {
            drift[i] += (double)o[i] - (double)h[i];
            worst = drift[i] > worst ? drift[i] : -drift[i] > worst ? -drift[i] : worst;
        }
    }
    sqz_stats_t st;
    sqz_stats_get(ctx, &st);
    EXPECT(st.calls_compressed == (uint64_t)(to - from), "%llu of %d calls compressed",
           (unsigned long long)st.calls_compressed, to - from);
    EXPECT(SQZ_ERR_INVALID_PARAM ==
               sqz_ef_allreduce(comm, d, n, SQZ_DTYPE_FLOAT32, SQZ_OP_AVG, 0, s), "key 0");
    memcpy(last, o, n * sizeof(float));
    CU(cudaStreamDestroy(s));
    CU(cudaFree(d));
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    free(h);
    free(o);
    free(drift);
    return worst;
}

static void test_ef_allreduce(void *nc)
{
    const size_t n = 300000;
    float       *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    const double few = ef_run(nc, 0, 10, -1, a), many = ef_run(nc, 0, 40, -1, a);
    printf("sqz_ef_allreduce on the device: drift of the summed outputs %.4f after 10 calls, "
           "%.4f after 40\n", few, many);
    EXPECT(many < 2.0 * few, "the drift grows: %.4f -> %.4f (no error feedback?)", few, many);
    (void)ef_run(nc, 0, 13, 12, a);
    (void)ef_run(nc, 12, 13, -1, b);
    EXPECT(0 == memcmp(a, b, n * sizeof(float)),
           "the call after sqz_ef_forget differs from a fresh communicator's");
    free(a);
    free(b);
}

/* Damped error feedback (SQZ_EF_DECAY) on device buffers, one rank: a call of x, then a call of
 * zeros, outputs C(e) undamped (e: the first call's residual) and C(decay e) damped.  quant's
 * max-min codes scale exactly with a power-of-two factor of their input, so at decay 0.5 the
 * second output is exactly half the undamped one. */
static void damp_run(void *nc, const char *decay, size_t n, float *second)
{
    const char *const kv[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "4", "SQZ_EF", "ef14",
                              "SQZ_EF_DECAY", decay, "SQZ_WARMUP_STEPS", "0", "SQZ_MIN_BYTES",
                              "0", NULL};
    sqz_ctx_t   *ctx;
    sqz_comm_t  *comm = make_comm(nc, &ctx, kv);
    float       *h = malloc(n * sizeof(float)), *d = dalloc(n * sizeof(float));
    cudaStream_t s;
    CU(cudaStreamCreate(&s));
    fill(h, n, 3, 5);
    CU(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
    EXPECT(SQZ_OK == sqz_allreduce_async(comm, NULL, d, n, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 5, s),
           "damped EF %s: first call", decay);
    CU(cudaMemsetAsync(d, 0, n * sizeof(float), s));
    EXPECT(SQZ_OK == sqz_allreduce_async(comm, NULL, d, n, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 5, s),
           "damped EF %s: second call", decay);
    CU(cudaMemcpyAsync(second, d, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CU(cudaStreamSynchronize(s));
    sqz_stats_t st;
    sqz_stats_get(ctx, &st);
    EXPECT(2 == st.calls_compressed, "damped EF %s: %llu of 2 calls compressed", decay,
           (unsigned long long)st.calls_compressed);
    CU(cudaStreamDestroy(s));
    CU(cudaFree(d));
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    free(h);
}

static void test_damping(void *nc)
{
    const size_t n    = 100000;
    float       *full = malloc(n * sizeof(float)), *half = malloc(n * sizeof(float));
    damp_run(nc, "1", n, full);
    damp_run(nc, "0.5", n, half);
    size_t nonzero = 0, off = n;
    for (size_t i = 0; i < n; i++) {
        nonzero += full[i] != 0.0f;
        off = off == n && half[i] != 0.5f * full[i] ? i : off;
    }
    EXPECT(nonzero > n / 2, "undamped: the second call carried %zu residuals of %zu", nonzero, n);
    EXPECT(off == n, "SQZ_EF_DECAY=0.5: element %zu is %g, not half of %g", off,
           off < n ? (double)half[off] : 0.0, off < n ? (double)full[off] : 0.0);
    printf("damped error feedback on device buffers: the residual carried at decay 0.5 is half "
           "the undamped one (%zu of %zu elements nonzero)\n", nonzero, n);
    free(full);
    free(half);
}

int main(void)
{
    sqz_log_set_level(SQZ_LOG_ERROR);
    void     *nc   = NULL;
    const int skip = sqz_cuda_one_rank_nccl(&nc);
    if (skip) {
        return skip;
    }
    size_t total = 0, live = 0;
    for (int b = 0; b < NBUF; b++) {
        total += sizes[b];
    }
    const size_t outn = total * (STEPS - CUT);
    float       *whole = malloc(outn * sizeof(float)), *resumed = malloc(outn * sizeof(float));
    unsigned char *ckpt = NULL;
    size_t         len  = 0;

    sqz_ctx_t  *ctx;
    sqz_comm_t *comm = make_comm(nc, &ctx, quant2);
    steps(comm, 0, STEPS, whole, &ckpt, &len);
    sqz_stats_t st;
    sqz_stats_get(ctx, &st);
    live = st.state_bytes;
    printf("moving buffers, %d calls: compressed %llu, fallback %llu, device state %llu bytes "
           "(residuals alone %zu), residuals dropped %llu\n",
           STEPS * NBUF, (unsigned long long)st.calls_compressed,
           (unsigned long long)st.calls_fallback, (unsigned long long)st.state_bytes,
           total * sizeof(float), (unsigned long long)st.residuals_dropped);
    EXPECT(0 == st.calls_fallback, "%llu calls fell back", (unsigned long long)st.calls_fallback);
    /* Per buffer: its residual, its payload and workspace; at most one state per buffer of a
     * step once learned (the learning phase's are freed): a bound of 2x the residuals' + 1 MiB
     * of workspace a buffer. */
    EXPECT(live < 2 * total * sizeof(float) + NBUF * (1u << 20), "device state %zu bytes", live);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);

    comm = make_comm(nc, &ctx, quant2);
    EXPECT(SQZ_OK == sqz_state_load(comm, ckpt, len), "load");
    steps(comm, CUT, STEPS, resumed, NULL, NULL);
    EXPECT(0 == memcmp(whole, resumed, outn * sizeof(float)),
           "the resumed job differs from the uninterrupted one");
    printf("checkpoint of %zu bytes after %d steps: the resumed job %s\n", len, CUT,
           memcmp(whole, resumed, outn * sizeof(float)) ? "DIFFERS" : "is bit-identical");
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    test_ef_allreduce(nc);
    test_damping(nc);
    sqz_nccl_comm_destroy(nc);
    free(ckpt);
    free(whole);
    free(resumed);
    printf("test_gpu_state: %d failure(s)\n", sqz_cuda_failures);
    return sqz_cuda_failures ? 1 : 0;
}
