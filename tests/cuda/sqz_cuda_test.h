/* Helpers shared by the GPU tests (tests/cuda/test_*.c): CUDA calls that must succeed, device
 * allocation, soft checks (EXPECT), and a Squeeze communicator over a one-rank NCCL one. */
#ifndef SQZ_CUDA_TEST_H
#define SQZ_CUDA_TEST_H

#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include <squeeze.h>

/* A CUDA call that must succeed: the test stops with file:line and the error otherwise. */
#define CU(call)                                                                               \
    do {                                                                                       \
        const cudaError_t e_ = (call);                                                         \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                    \
                    cudaGetErrorString(e_));                                                   \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

/* Device memory (16 bytes for a request of 0). */
static inline void *dalloc(size_t bytes)
{
    void *p = NULL;
    CU(cudaMalloc(&p, bytes ? bytes : 16));
    return p;
}

/* A check that counts a failure (sqz_cuda_failures) and goes on, with a message. */
static int sqz_cuda_failures __attribute__((unused));
#define EXPECT(cond, ...)                                                                      \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            sqz_cuda_failures++;                                                               \
            fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond);                         \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
        }                                                                                      \
    } while (0)

/* The start of a GPU test: a one-rank NCCL communicator in *nc.  \return 0, or 77 (skip: no GPU,
 * no GPU build, or no NCCL) after saying why. */
static inline int sqz_cuda_one_rank_nccl(void **nc)
{
    int ndev = 0;
    if (cudaSuccess != cudaGetDeviceCount(&ndev) || 0 == ndev || !sqz_gpu_built()) {
        printf("SKIP: no GPU\n");
        return 77;
    }
    unsigned char id[128];
    *nc = NULL;
    if (SQZ_OK != sqz_nccl_get_unique_id(id, sizeof(id)) ||
        SQZ_OK != sqz_nccl_comm_init(1, id, sizeof(id), 0, nc)) {
        printf("SKIP: no NCCL\n");
        return 77;
    }
    return 0;
}

/* A context with the settings of base then kv (NULL-terminated NAME, value lists; base may be
 * NULL); the test stops if it cannot be made. */
static inline sqz_ctx_t *sqz_cuda_make_ctx(const char *const *base, const char *const *kv)
{
    sqz_config_t *cfg;
    sqz_ctx_t    *ctx = NULL;
    char          err[512];
    sqz_config_create(&cfg);
    for (size_t i = 0; base && base[i]; i += 2) {
        sqz_config_set(cfg, base[i], base[i + 1]);
    }
    for (size_t i = 0; kv && kv[i]; i += 2) {
        sqz_config_set(cfg, kv[i], kv[i + 1]);
    }
    if (SQZ_OK != sqz_ctx_create(cfg, &ctx, err, sizeof(err))) {
        fprintf(stderr, "context: %s\n", err);
        exit(1);
    }
    sqz_config_destroy(cfg);
    return ctx;
}

/* sqz_cuda_make_ctx, and a communicator over the NCCL communicator nc; the test stops if either
 * fails. */
static inline sqz_comm_t *sqz_cuda_make_comm(void *nc, sqz_ctx_t **ctx, const char *const *base,
                                             const char *const *kv)
{
    *ctx             = sqz_cuda_make_ctx(base, kv);
    sqz_comm_t *comm = NULL;
    if (SQZ_OK != sqz_comm_create_nccl(*ctx, nc, &comm)) {
        fprintf(stderr, "sqz_comm_create_nccl failed\n");
        exit(1);
    }
    return comm;
}

#endif
