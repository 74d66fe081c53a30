/*
 * PowerSGD's per-call plan, shared by the CPU plugin (sqz_powersgd.c) and the GPU path
 * (sqz_powersgd.cu via src/cuda/sqz_gpu_powersgd.c): which layers are compressed at which rank,
 * where each layer's warm-start Q lives, and which elements are summed exactly.  Both paths must
 * agree on it, so it is written once.  Header-only, written against compressor_v1.h.
 */
#ifndef SQZ_POWERSGD_PLAN_H
#define SQZ_POWERSGD_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include <squeeze/compressor_v1.h>

/** The largest rank (POWERSGD_RANK's bound; the device kernels handle any rank up to it). */
#define SQZ_PSGD_QMAX 128

static inline size_t sqz_psgd_min(size_t a, size_t b) { return a < b ? a : b; }
static inline size_t sqz_psgd_max(size_t a, size_t b) { return a > b ? a : b; }

/** Columns of warm-start memory per layer for a configured rank: room for the largest adaptive
 *  level (candidates go up to 4 and 8 times the rank), at least 32 (what every rank up to 32 has
 *  always kept, so states and checkpoints of those keep their layout), at most SQZ_PSGD_QMAX. */
static inline size_t sqz_psgd_qcap(int64_t rank)
{
    size_t cap = 32;
    while (cap < SQZ_PSGD_QMAX && (int64_t)cap < rank) {
        cap *= 2;
    }
    return cap;
}

/** Columns of warm-start memory of a layer (0: the layer is never compressed). */
static inline size_t sqz_psgd_qslot(const sqz_matrix_v1_t *l, size_t qcap)
{
    return (l->rows > 1 && l->cols > 1) ? sqz_psgd_min(qcap, sqz_psgd_min(l->rows, l->cols)) : 0;
}

/** The rank layer l is compressed at for `level`, or 0 when it is summed exactly: PyTorch's
 *  rule, compress only when rows * cols > (rows + cols) * r * min_rate. */
static inline size_t sqz_psgd_layer_rank(const sqz_matrix_v1_t *l, int level, double min_rate,
                                         size_t qcap)
{
    const size_t r = sqz_psgd_min(level > 0 ? (size_t)level : 1, sqz_psgd_qslot(l, qcap));
    if (0 == r) {
        return 0;
    }
    const double dense = (double)l->rows * (double)l->cols;
    return ((double)(l->rows + l->cols) * (double)r * min_rate < dense) ? r : 0;
}

/** Floats of per-buffer warm-start memory: one flag, then each layer's Q slot. */
static inline size_t sqz_psgd_bufstate_len(const sqz_matrix_v1_t *layers, size_t nlayers,
                                           size_t qcap)
{
    size_t len = 1;
    for (size_t i = 0; i < nlayers; i++) {
        len += layers[i].cols * sqz_psgd_qslot(&layers[i], qcap);
    }
    return len;
}

/** Visits the elements outside the compressed layers (plan[l] == 0 marks an exact layer) as
 *  ascending spans [lo, hi) placed at `pos` in the packed exact part.  \return its length. */
typedef void (*sqz_psgd_span_fn)(void *arg, size_t lo, size_t hi, size_t pos);

static inline size_t sqz_psgd_dense_spans(const sqz_matrix_v1_t *layers, size_t nlayers, size_t n,
                                          const int *plan, sqz_psgd_span_fn fn, void *arg)
{
    size_t pos = 0, at = 0;
    for (size_t l = 0; l <= nlayers; l++) {
        const size_t start = l < nlayers ? layers[l].offset : n;
        if (l < nlayers && 0 == plan[l]) {
            continue; /* an exact layer: part of the next span */
        }
        if (start > at) {
            if (fn) {
                fn(arg, at, start, pos);
            }
            pos += start - at;
        }
        if (l < nlayers) {
            at = start + layers[l].rows * layers[l].cols;
        }
    }
    return pos;
}

/** The first Q of a layer: uniform [-1, 1) from (seed, layer index), the same on every rank
 *  (murmur3 finalizer of key + j * golden ratio, 24 bits). */
static inline uint32_t sqz_psgd_init_key(uint64_t seed, size_t layer)
{
    return (uint32_t)(seed ^ (seed >> 32)) ^ (uint32_t)(layer * 0x9e3779b1u);
}

#endif
