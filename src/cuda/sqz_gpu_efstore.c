/* SQZ_EF_STORAGE on the device: see sqz_gpu_efstore.h. */
#include "config.h"

#include "sqz_cuda_codec.h"
#include "sqz_gpu_efstore.h"

cudaError_t sqz_gpu_efwork_reserve(sqz_gpu_efwork_t *w, size_t count)
{
    if (!w->event) {
        const cudaError_t ce = cudaEventCreateWithFlags(&w->done, cudaEventDisableTiming);
        if (ce != cudaSuccess) {
            return ce;
        }
        w->event = 1;
    }
    if (count <= w->cap) {
        return cudaSuccess;
    }
    cudaDeviceSynchronize(); /* (a call in flight may still read or write the old area) */
    cudaFree(w->work);
    w->work = NULL, w->cap = 0;
    const cudaError_t ce = cudaMalloc((void **)&w->work, count * sizeof(float));
    if (ce == cudaSuccess) {
        w->cap = count;
    } else {
        w->work = NULL;
    }
    return ce;
}

size_t sqz_gpu_efwork_bytes(const sqz_gpu_efwork_t *w) { return w->cap * sizeof(float); }

void sqz_gpu_efwork_free(sqz_gpu_efwork_t *w)
{
    cudaFree(w->work);
    if (w->event) {
        cudaEventDestroy(w->done);
    }
    *w = (sqz_gpu_efwork_t){0};
}

/* The working area for count floats on stream s, after the call that used it last (its event):
 * NULL when it is too small or the wait could not be ordered. */
static float *sqz_gpu_efwork_take(sqz_gpu_efwork_t *w, size_t count, cudaStream_t s)
{
    if (NULL == w->work || count > w->cap || cudaStreamWaitEvent(s, w->done, 0) != cudaSuccess) {
        return NULL;
    }
    return w->work;
}

float *sqz_gpu_efstore_open(sqz_gpu_efwork_t *w, int storage, const void *compact, size_t count,
                            cudaStream_t s)
{
    if (NULL == sqz_gpu_efwork_take(w, count, s) ||
        SQZ_OK != sqz_gpu_res_expand(storage, compact, w->work, count, s)) {
        return NULL;
    }
    return w->work;
}

sqz_status_t sqz_gpu_efstore_close(sqz_gpu_efwork_t *w, int storage, void *compact, size_t count,
                                   cudaStream_t s)
{
    const sqz_status_t st = sqz_gpu_res_compact(storage, w->work, compact, count, s);
    return SQZ_OK == st && cudaEventRecord(w->done, s) != cudaSuccess ? SQZ_ERR_CUDA : st;
}

sqz_status_t sqz_gpu_efstore_read(sqz_gpu_efwork_t *w, int storage, const void *compact,
                                  size_t count, float *host)
{
    float *r = sqz_gpu_efstore_open(w, storage, compact, count, 0);
    if (NULL == r || cudaMemcpy(host, r, count * sizeof(float), cudaMemcpyDeviceToHost) !=
                         cudaSuccess ||
        cudaEventRecord(w->done, 0) != cudaSuccess) {
        return SQZ_ERR_CUDA;
    }
    return SQZ_OK;
}

sqz_status_t sqz_gpu_efstore_write(sqz_gpu_efwork_t *w, int storage, void *compact, size_t count,
                                   const float *host, cudaStream_t s)
{
    if (NULL == sqz_gpu_efwork_take(w, count, s) ||
        cudaMemcpyAsync(w->work, host, count * sizeof(float), cudaMemcpyHostToDevice, s) !=
            cudaSuccess) {
        return SQZ_ERR_CUDA;
    }
    return sqz_gpu_efstore_close(w, storage, compact, count, s);
}
