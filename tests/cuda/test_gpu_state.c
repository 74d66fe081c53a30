/* The device engine's per-buffer state on one GPU (a one-rank NCCL communicator): buffers that
 * move at every call (cudaMalloc'd anew, at an offset) keep their residual by their place in the
 * call sequence, never fall back, and hold a bounded amount of device memory; a checkpoint taken
 * after some steps and loaded into a new communicator continues bit for bit.  Skips (77) without
 * a GPU or NCCL. */
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
static int          failures;

#define EXPECT(cond, ...)                                                                      \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            failures++;                                                                        \
            fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond);                         \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
        }                                                                                      \
    } while (0)

static void fill(float *h, size_t n, int step, int b)
{
    for (size_t i = 0; i < n; i++) {
        const unsigned u = (unsigned)(i * 2654435761u) ^ (unsigned)(b * 40503 + step * 7919);
        h[i]             = (float)((u % 20001) - 10000) * 1e-4f * (1.0f + 0.1f * (float)(step % 5));
    }
}

static sqz_comm_t *make_comm(void *nc, sqz_ctx_t **ctx)
{
    sqz_config_t *cfg;
    char          err[512];
    sqz_config_create(&cfg);
    sqz_config_set(cfg, "SQZ_METHOD", "quant");
    sqz_config_set(cfg, "SQZ_QUANT_BITS", "2");
    if (SQZ_OK != sqz_ctx_create(cfg, ctx, err, sizeof(err))) {
        fprintf(stderr, "context: %s\n", err);
        exit(1);
    }
    sqz_config_destroy(cfg);
    sqz_comm_t *comm = NULL;
    if (SQZ_OK != sqz_comm_create_nccl(*ctx, nc, &comm)) {
        fprintf(stderr, "sqz_comm_create_nccl failed\n");
        exit(1);
    }
    return comm;
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

int main(void)
{
    int ndev = 0;
    if (cudaSuccess != cudaGetDeviceCount(&ndev) || 0 == ndev || !sqz_gpu_built()) {
        printf("SKIP: no GPU\n");
        return 77;
    }
    sqz_log_set_level(SQZ_LOG_ERROR);
    unsigned char id[128];
    void         *nc = NULL;
    if (SQZ_OK != sqz_nccl_get_unique_id(id, sizeof(id)) ||
        SQZ_OK != sqz_nccl_comm_init(1, id, sizeof(id), 0, &nc)) {
        printf("SKIP: no NCCL\n");
        return 77;
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
    sqz_comm_t *comm = make_comm(nc, &ctx);
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

    comm = make_comm(nc, &ctx);
    EXPECT(SQZ_OK == sqz_state_load(comm, ckpt, len), "load");
    steps(comm, CUT, STEPS, resumed, NULL, NULL);
    EXPECT(0 == memcmp(whole, resumed, outn * sizeof(float)),
           "the resumed job differs from the uninterrupted one");
    printf("checkpoint of %zu bytes after %d steps: the resumed job %s\n", len, CUT,
           memcmp(whole, resumed, outn * sizeof(float)) ? "DIFFERS" : "is bit-identical");
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
    sqz_nccl_comm_destroy(nc);
    free(ckpt);
    free(whole);
    free(resumed);
    printf("test_gpu_state: %d failure(s)\n", failures);
    return failures ? 1 : 0;
}
