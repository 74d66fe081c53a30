/* Layer layouts of buffers (sqz_layout_register): what a flat gradient bucket holds, for the
 * methods that work per layer.  A communicator holds a handful of buckets, so a small array with a
 * linear search is enough; registration is rare (once per bucket and per DDP rebuild). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "sqz_ctx.h"
#include "sqz_layout_file.h"
#include "sqz_log.h"

typedef struct sqz_layout_entry {
    uint64_t     key;
    size_t       count;
    sqz_layer_t *layers;
    size_t       nlayers;
} sqz_layout_entry_t;

static sqz_layout_entry_t *sqz_layout_find(const sqz_comm_t *comm, uint64_t key, size_t count)
{
    for (size_t i = 0; i < comm->nlayouts; i++) {
        if (comm->layouts[i].key == key && comm->layouts[i].count == count) {
            return &comm->layouts[i];
        }
    }
    return NULL;
}

sqz_status_t sqz_layout_register(sqz_comm_t *comm, uint64_t key, size_t count,
                                 const sqz_layer_t *layers, size_t nlayers)
{
    if (NULL == comm || (NULL == layers && nlayers > 0)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    size_t end = 0;
    for (size_t i = 0; i < nlayers; i++) {
        const sqz_layer_t *l = &layers[i];
        if (l->rows == 0 || l->cols == 0 || l->rows > count || l->cols > count / l->rows ||
            l->offset < end || l->offset > count || l->rows * l->cols > count - l->offset) {
            SQZ_ERROR("layout of buffer %#llx (%zu elements): layer %zu (offset %zu, %zu x %zu) "
                      "%s",
                      (unsigned long long)key, count, i, l->offset, l->rows, l->cols,
                      l->rows == 0 || l->cols == 0 ? "is empty"
                      : l->offset < end            ? "overlaps the previous one or is out of order"
                                                   : "lies outside the buffer");
            return SQZ_ERR_INVALID_PARAM;
        }
        end = l->offset + l->rows * l->cols;
    }
    sqz_layer_t *copy = NULL;
    if (nlayers > 0) {
        copy = malloc(nlayers * sizeof(*copy));
        if (NULL == copy) {
            return SQZ_ERR_NO_MEMORY;
        }
        memcpy(copy, layers, nlayers * sizeof(*copy));
    }
    pthread_mutex_lock(&comm->lock);
    sqz_layout_entry_t *e = sqz_layout_find(comm, key, count);
    if (NULL == e) {
        sqz_layout_entry_t *grown =
            realloc(comm->layouts, (comm->nlayouts + 1) * sizeof(*comm->layouts));
        if (NULL == grown) {
            pthread_mutex_unlock(&comm->lock);
            free(copy);
            return SQZ_ERR_NO_MEMORY;
        }
        comm->layouts = grown;
        e             = &comm->layouts[comm->nlayouts++];
        e->key        = key;
        e->count      = count;
        e->layers     = NULL;
    }
    free(e->layers);
    e->layers  = copy;
    e->nlayers = nlayers;
    pthread_mutex_unlock(&comm->lock);
    return SQZ_OK;
}

size_t sqz_layout_get(const sqz_comm_t *comm, uint64_t key, size_t count, sqz_layer_t *layers,
                      size_t cap)
{
    if (NULL == comm) {
        return 0;
    }
    pthread_mutex_lock((pthread_mutex_t *)&comm->lock);
    const sqz_layout_entry_t *e = sqz_layout_find(comm, key, count);
    const size_t              n = e ? e->nlayers : 0;
    if (e && layers) {
        memcpy(layers, e->layers, (n < cap ? n : cap) * sizeof(*layers));
    }
    pthread_mutex_unlock((pthread_mutex_t *)&comm->lock);
    return n;
}

void sqz_layouts_fini(sqz_comm_t *comm)
{
    for (size_t i = 0; i < comm->nlayouts; i++) {
        free(comm->layouts[i].layers);
    }
    free(comm->layouts);
    comm->layouts  = NULL;
    comm->nlayouts = 0;
}

size_t sqz_layout_carry(const sqz_comm_t *comm, uint64_t key, size_t count, sqz_carry_fn fn,
                        void *arg)
{
    const sqz_layout_entry_t *dst = sqz_layout_find(comm, key, count);
    size_t                    moved = 0;
    for (size_t i = 0; dst && i < dst->nlayers; i++) {
        const sqz_layer_t *l = &dst->layers[i];
        if (0 == l->id) {
            continue;
        }
        /* The most recently registered other buffer that holds this parameter. */
        int found = 0;
        for (size_t e = comm->nlayouts; e-- > 0 && !found;) {
            const sqz_layout_entry_t *src = &comm->layouts[e];
            if (src == dst) {
                continue;
            }
            for (size_t j = 0; j < src->nlayers; j++) {
                const sqz_layer_t *s = &src->layers[j];
                if (s->id == l->id && s->rows * s->cols == l->rows * l->cols) {
                    fn(arg, src->key, src->count, s->offset, l->offset, l->rows * l->cols);
                    found = 1;
                    moved++;
                    break;
                }
            }
        }
    }
    return moved;
}

/* A digest of a layer list, so that per-buffer state tied to a layout is reset when it changes. */
static uint64_t sqz_layout_digest(const sqz_layer_t *l, size_t nl, size_t n)
{
    uint64_t h = sqz_hash64(n ^ ((uint64_t)nl << 40));
    for (size_t i = 0; i < nl; i++) {
        h = sqz_hash64(h ^ l[i].offset) ^ sqz_hash64(l[i].rows * 0x9e3779b97f4a7c15ull + l[i].cols);
    }
    return h;
}

const sqz_layer_t *sqz_layout_resolve(sqz_comm_t *comm, uint64_t key, size_t n, size_t *nlayers,
                                      uint64_t *digest)
{
    const sqz_layout_entry_t *e = sqz_layout_find(comm, key, n);
    const sqz_layer_t        *l = NULL;
    size_t                    nl = 0;
    if (e) {
        l = e->layers, nl = e->nlayers;
    } else if (NULL != (l = sqz_layout_file_find(comm->ctx->layout_file, n, &nl))) {
        /* the SQZ_LAYOUT file's */
    } else {
        /* Pseudo-layers: chunks of SQZ_LAYOUT_CHUNK elements, each seen as a near-square
         * floor(sqrt(c)) x (c / rows) matrix; the few elements left over in a chunk are summed
         * exactly. */
        const size_t chunk = comm->ctx->p.layout_chunk;
        const size_t want  = (n + chunk - 1) / chunk;
        if (SQZ_OK != sqz_scratch_reserve((void **)&comm->scratch.pseudo, &comm->scratch.pseudocap,
                                          (want ? want : 1) * sizeof(sqz_layer_t))) {
            *nlayers = 0;
            *digest  = 0;
            return NULL;
        }
        for (size_t off = 0; off < n; off += chunk) {
            const size_t c    = n - off < chunk ? n - off : chunk;
            size_t       rows = 1;
            while ((rows + 1) * (rows + 1) <= c) {
                rows++;
            }
            comm->scratch.pseudo[nl++] =
                (sqz_layer_t){.offset = off, .rows = rows, .cols = c / rows};
        }
        l = comm->scratch.pseudo;
    }
    *nlayers = nl;
    *digest  = sqz_layout_digest(l, nl, n);
    return l;
}

int sqz_layout_known(const sqz_comm_t *comm, uint64_t key, size_t n)
{
    size_t nl = 0;
    return NULL != sqz_layout_find(comm, key, n) ||
           NULL != sqz_layout_file_find(comm->ctx->layout_file, n, &nl);
}
