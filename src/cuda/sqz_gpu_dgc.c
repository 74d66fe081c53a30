#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "cuda/sqz_cuda_codec.h"
#include "cuda/sqz_gpu_dgc.h"

/* One device allocation: the momentum, the message, Nesterov's new momentum, then the norm's
 * scratch (doubles) and the verdict word. */
struct sqz_gpu_dgc {
    size_t    count;
    float    *u;       /* momentum (count floats), or NULL without momentum */
    float    *msg;     /* the compressor's input (count floats) */
    float    *unew;    /* the new momentum: msg, or its own count floats under Nesterov */
    double   *scratch; /* sqz_gpu_dgc_scratch_bytes() */
    uint32_t *verdict;
    void     *mem;
};

/* Bytes of each part, each rounded up to 256. */
static size_t sqz_gpu_dgc_up(size_t b) { return (b + 255) / 256 * 256; }

size_t sqz_gpu_dgc_bytes(const sqz_core_params_t *p, size_t count)
{
    const size_t f     = sqz_gpu_dgc_up(count * sizeof(float));
    const int    mom   = p->dgc_momentum > 0;
    const int    nest  = mom && p->dgc_nesterov;
    return (size_t)(mom + 1 + nest) * f + sqz_gpu_dgc_up(sqz_gpu_dgc_scratch_bytes()) + 256;
}

sqz_status_t sqz_gpu_dgc_create(const sqz_core_params_t *p, size_t count, cudaStream_t s,
                                sqz_gpu_dgc_t **out)
{
    sqz_gpu_dgc_t *d = calloc(1, sizeof(*d));
    *out             = NULL;
    if (NULL == d) {
        return SQZ_ERR_NO_MEMORY;
    }
    const size_t f = sqz_gpu_dgc_up(count * sizeof(float));
    if (cudaMalloc(&d->mem, sqz_gpu_dgc_bytes(p, count)) != cudaSuccess) {
        cudaGetLastError();
        free(d);
        return SQZ_ERR_NO_MEMORY;
    }
    unsigned char *at = d->mem;
    d->count          = count;
    if (p->dgc_momentum > 0) {
        d->u = (float *)at, at += f;
        cudaMemsetAsync(d->u, 0, count * sizeof(float), s);
    }
    d->msg  = (float *)at, at += f;
    d->unew = d->msg;
    if (p->dgc_momentum > 0 && p->dgc_nesterov) {
        d->unew = (float *)at, at += f;
    }
    d->scratch = (double *)at, at += sqz_gpu_dgc_up(sqz_gpu_dgc_scratch_bytes());
    d->verdict = (uint32_t *)at;
    *out       = d;
    return SQZ_OK;
}

void sqz_gpu_dgc_free(sqz_gpu_dgc_t *d)
{
    if (d) {
        cudaFree(d->mem);
        free(d);
    }
}

void sqz_gpu_dgc_forget(sqz_gpu_dgc_t *d, cudaStream_t s)
{
    if (d && d->u) {
        cudaMemsetAsync(d->u, 0, d->count * sizeof(float), s);
    }
}

sqz_status_t sqz_gpu_dgc_begin(sqz_gpu_dgc_t *d, const sqz_core_params_t *p, int nranks,
                               const void *in, sqz_dtype_t dtype, cudaStream_t s,
                               const float **msg)
{
    /* (the host's clipping bound: each rank's part of a sum whose norm stays under clip) */
    const double limit = p->dgc_clip > 0 ? p->dgc_clip / sqrt((double)nranks) : 0.0;
    *msg               = d->msg;
    return sqz_gpu_dgc_input(in, dtype, d->u, d->msg, d->unew, d->count, (float)p->dgc_momentum,
                             p->dgc_nesterov, limit, d->scratch, s);
}

float *sqz_gpu_dgc_momentum(sqz_gpu_dgc_t *d)
{
    return d ? d->u : NULL;
}

uint32_t *sqz_gpu_dgc_verdict(sqz_gpu_dgc_t *d)
{
    return d->verdict;
}

sqz_status_t sqz_gpu_dgc_end(sqz_gpu_dgc_t *d, const sqz_core_params_t *p, const uint32_t *bad,
                             const float *residual, cudaStream_t s)
{
    if (NULL == d->u) {
        return SQZ_OK; /* clipping alone: nothing to commit */
    }
    return sqz_gpu_dgc_commit(bad, d->u, d->unew, residual, d->count,
                              p->dgc_masking && residual != NULL, s);
}
