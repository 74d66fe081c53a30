/* Helpers shared by the GPU tests (tests/cuda/test_*.c): CUDA calls that must succeed, device
 * allocation. */
#ifndef SQZ_CUDA_TEST_H
#define SQZ_CUDA_TEST_H

#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

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

#endif
