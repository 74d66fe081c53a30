/*
 * SQZ_EF_STORAGE on the device, as on the host (src/core/sqz_residual.h): a buffer's classic
 * error-feedback residual is kept compact between calls (bf16: half the memory of fp32; int8: a
 * quarter, plus a scale per 256 elements), expanded into one fp32 working area of the
 * communicator for the call and compacted again after it.  The rounding of the compact form is
 * lost from the residual: an approximation of error feedback, traded for memory.
 *
 * The working area is shared by every buffer of the communicator, whose calls may run on
 * different streams: each close records an event that the next open waits for, so the calls
 * that use it follow each other on the device.  (Calls under CUDA graph capture pass through
 * uncompressed before they get here.)
 */
#ifndef SQZ_GPU_EFSTORE_H
#define SQZ_GPU_EFSTORE_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#include <squeeze.h>

typedef struct sqz_gpu_efwork {
    float      *work;  /* the fp32 residual of the call in progress */
    size_t      cap;   /* floats */
    cudaEvent_t done;  /* recorded by the last close (or write/read) */
    int         event; /* whether done exists */
} sqz_gpu_efwork_t;

/** Grows the working area to count floats (the device is synchronized first when it grows: a
 *  call in flight may still use it).  \return cudaSuccess or the CUDA error. */
cudaError_t sqz_gpu_efwork_reserve(sqz_gpu_efwork_t *w, size_t count);

/** Device bytes of the working area. */
size_t sqz_gpu_efwork_bytes(const sqz_gpu_efwork_t *w);

void sqz_gpu_efwork_free(sqz_gpu_efwork_t *w);

/** For a call on stream s: the buffer's compact residual (count floats, storage
 *  SQZ_GPU_RES_*) expanded into the working area, after the previous user is done with it.
 *  \return the working residual, or NULL when a launch failed. */
float *sqz_gpu_efstore_open(sqz_gpu_efwork_t *w, int storage, const void *compact, size_t count,
                            cudaStream_t s);

/** After the call: the working residual compacted back, the working area released at this point
 *  of s. */
sqz_status_t sqz_gpu_efstore_close(sqz_gpu_efwork_t *w, int storage, void *compact, size_t count,
                                   cudaStream_t s);

/** Checkpoints: the compact residual as count host floats (synchronous), and back from them
 *  (on stream s; host must stay valid until s gets there). */
sqz_status_t sqz_gpu_efstore_read(sqz_gpu_efwork_t *w, int storage, const void *compact,
                                  size_t count, float *host);
sqz_status_t sqz_gpu_efstore_write(sqz_gpu_efwork_t *w, int storage, void *compact, size_t count,
                                   const float *host, cudaStream_t s);

#endif /* SQZ_GPU_EFSTORE_H */
