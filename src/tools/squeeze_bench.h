/* squeeze_bench: what the host and GPU halves share. */
#ifndef SQUEEZE_BENCH_H
#define SQUEEZE_BENCH_H

#include <stdio.h>

#include <squeeze.h>

#define MAX_METHODS 16

typedef struct {
    char spec[256];   /* "quant:QUANT_BITS=4" */
    char name[64];    /* "quant" */
    char label[128];  /* "quant bits=4" */
} method_t;

typedef struct {
    size_t   min_bytes, max_bytes, kernel_bytes;
    int      iters, warmup, step;
    int      kernels, allreduce, gpu;
    int      group; /* --gpu --group N: N ranks as threads on one GPU */
    int      hosts; /* --hosts H: of them, H emulated hosts (SQZ_HOST_ID) */
    char    *json;
    method_t m[MAX_METHODS];
    int      nm;
} opts_t;

extern int rank_, nranks_;

/** A context for one method spec, with compression forced on for every size (NULL on error). */
sqz_ctx_t *make_ctx(const method_t *m);

/** The GPU benchmark (--gpu): kernels against the device copy bandwidth, and the compressed
 *  all-reduce against ncclAllReduce.  Writes its JSON members to js (rank 0, may be NULL).
 *  \return 0, or 77 when no GPU path or device is available. */
int bench_gpu(const opts_t *o, FILE *js);

/** --gpu --group N: the GPU engine on N thread ranks of one GPU (squeeze_bench_gpu_group.c):
 *  bytes per rank and call against one payload.  \return 0, 2 (bad N), 77 (no GPU path). */
int bench_gpu_group(const opts_t *o, FILE *js);

/** Gradient-like data of dtype on the device (squeeze_bench_gpu.c; GPU builds only). */
void bench_fill_device(void *d, size_t n, sqz_dtype_t dt, unsigned seed);

#endif
