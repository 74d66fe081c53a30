/* Checkpoints of a communicator's per-buffer state: residuals, server residuals, ef21/econtrol
 * estimators, DGC momenta, compact residuals, summable compressors' warm starts, layer-adaptive
 * levels, call counters, and the call-sequence tracker that names the buffers (so that a restarted
 * run continues bit for bit: the same states under the same names with the same counters).
 *
 * Format (little-endian, this library's version):
 *   header   "SQZSTAT1", format version, method name, settings hash, nranks, rank, counts
 *   tracker  sqz_callseq_save's bytes
 *   records  per host state: its fixed fields, a bitmask of the arrays present, the arrays
 *   device   the device engine's part (sqz_comm_t.device->state_save), when it has one
 * The header is checked on load: another format version, method, rank count, rank or settings
 * hash is a clear error, and nothing is changed. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_callseq.h"
#include "sqz_ctx.h"
#include "sqz_log.h"
#include "sqz_settings.h"
#include "sqz_state_io.h"

#define SQZ_STATE_MAGIC   "SQZSTAT1"
#define SQZ_STATE_VERSION 1u

void sqz_wbuf_put(sqz_wbuf_t *w, const void *p, size_t n)
{
    if (w->base && w->off + n <= w->cap && n) {
        memcpy(w->base + w->off, p, n);
    }
    w->off += n;
}

int sqz_rbuf_get(sqz_rbuf_t *r, void *p, size_t n)
{
    const void *src = sqz_rbuf_take(r, n);
    if (NULL == src) {
        memset(p, 0, n);
        return 0;
    }
    if (n) {
        memcpy(p, src, n);
    }
    return 1;
}

const void *sqz_rbuf_take(sqz_rbuf_t *r, size_t n)
{
    if (r->bad || n > r->len - r->off) {
        r->bad = 1;
        return NULL;
    }
    const void *p = r->base + r->off;
    r->off += n;
    return p;
}

typedef struct sqz_state_header {
    char     magic[8];
    uint32_t version, nranks;
    int32_t  rank, pad;
    char     method[32];
    uint64_t settings_hash, nrecords, tick, seq_bytes, device_bytes;
} sqz_state_header_t;

/* One host state's fixed fields. */
typedef struct sqz_state_record {
    uint64_t key, count, calls, last_use, layout, server_count, res_bytes, plugin_len, adapt_n;
    uint64_t adapt_next;
    uint32_t automatic, present;
} sqz_state_record_t;

enum {
    SQZ_HAS_RESIDUAL = 1, SQZ_HAS_SERVER = 2, SQZ_HAS_EST = 4, SQZ_HAS_ERR = 8, SQZ_HAS_SHARED_EST = 16,
    SQZ_HAS_DGC = 32, SQZ_HAS_COMPACT = 64, SQZ_HAS_SCALE = 128, SQZ_HAS_PLUGIN = 256,
    SQZ_HAS_LEVELS = 512
};

/* ---------------------------------------------------------------------------------------------
 * Saving
 * ------------------------------------------------------------------------------------------- */
static void sqz_state_put_record(sqz_wbuf_t *w, const sqz_buf_state_t *b)
{
    const float *const arr[] = {b->residual, b->server_residual, b->ef_est, b->ef_err,
                                b->ef_shared, b->dgc_momentum};
    sqz_state_record_t r = {b->key, b->count, b->calls, b->last_use, b->layout, b->server_count,
                            b->res_bytes, b->plugin_len, b->adapt.n, b->adapt.next_probe,
                            (uint32_t)b->automatic, 0};
    for (unsigned k = 0; k < 6; k++) {
        r.present |= arr[k] ? 1u << k : 0;
    }
    r.present |= (b->res_compact ? SQZ_HAS_COMPACT : 0) | (b->res_scale ? SQZ_HAS_SCALE : 0) |
                 (b->plugin_state ? SQZ_HAS_PLUGIN : 0) | (b->adapt.levels ? SQZ_HAS_LEVELS : 0);
    sqz_wbuf_put(w, &r, sizeof(r));
    for (unsigned k = 0; k < 6; k++) {
        if (arr[k]) {
            sqz_wbuf_put(w, arr[k], (1 == k ? b->server_count : b->count) * sizeof(float));
        }
    }
    const size_t scales = b->res_scale ? ((b->count + 255) / 256) * sizeof(float) : 0;
    if (b->res_compact) {
        sqz_wbuf_put(w, b->res_compact, b->res_bytes - scales);
    }
    if (b->res_scale) {
        sqz_wbuf_put(w, b->res_scale, scales);
    }
    if (b->plugin_state) {
        sqz_wbuf_put(w, b->plugin_state, b->plugin_len * sizeof(float));
    }
    if (b->adapt.levels) {
        sqz_wbuf_put(w, b->adapt.levels, b->adapt.n * sizeof(int));
    }
}

static sqz_status_t sqz_state_header_make(sqz_comm_t *comm, sqz_state_header_t *h)
{
    char digest[SQZ_SETTINGS_DIGEST_MAX];
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, SQZ_STATE_MAGIC, 8);
    h->version = SQZ_STATE_VERSION;
    h->nranks  = (uint32_t)comm->nranks;
    h->rank    = comm->rank;
    snprintf(h->method, sizeof(h->method), "%s", comm->ctx->method->name);
    h->nrecords = comm->store.n;
    h->tick     = comm->store.tick;
    return sqz_ctx_settings_digest(comm->ctx, digest, sizeof(digest), &h->settings_hash);
}

/* The whole checkpoint into w (a sizing pass when w->base is NULL). */
static sqz_status_t sqz_state_write(sqz_comm_t *comm, sqz_wbuf_t *w)
{
    sqz_state_header_t h;
    SQZ_CHECK(sqz_state_header_make(comm, &h));
    h.seq_bytes    = sqz_callseq_save(comm->seq, NULL, 0);
    sqz_wbuf_t dev = {0};
    if (comm->device) {
        SQZ_CHECK(comm->device->state_save(comm, &dev));
    }
    h.device_bytes = dev.off;
    sqz_wbuf_put(w, &h, sizeof(h));
    unsigned char *seq = malloc(h.seq_bytes ? h.seq_bytes : 1);
    if (NULL == seq) {
        return SQZ_ERR_NO_MEMORY;
    }
    sqz_callseq_save(comm->seq, seq, h.seq_bytes);
    sqz_wbuf_put(w, seq, h.seq_bytes);
    free(seq);
    /* Oldest first: a load that pushes each to the front rebuilds the recency order. */
    for (const sqz_buf_state_t *b = comm->store.oldest; b; b = b->newer) {
        sqz_state_put_record(w, b);
    }
    if (comm->device) {
        if (w->base && w->off + dev.off <= w->cap) {
            sqz_wbuf_t d = {w->base + w->off, dev.off, 0};
            SQZ_CHECK(comm->device->state_save(comm, &d));
        }
        w->off += dev.off;
    }
    return SQZ_OK;
}

size_t sqz_state_save(sqz_comm_t *comm, void *buf, size_t len)
{
    if (NULL == comm) {
        return 0;
    }
    pthread_mutex_lock(&comm->lock);
    sqz_wbuf_t   w  = {NULL, 0, 0};
    sqz_status_t st = sqz_state_write(comm, &w);
    const size_t need = w.off;
    if (SQZ_OK == st && buf && len >= need) {
        sqz_wbuf_t out = {buf, len, 0};
        st             = sqz_state_write(comm, &out);
    }
    pthread_mutex_unlock(&comm->lock);
    if (SQZ_OK != st) {
        SQZ_ERROR("sqz_state_save: %s", sqz_status_string(st));
        return 0;
    }
    return need;
}

/* ---------------------------------------------------------------------------------------------
 * Loading
 * ------------------------------------------------------------------------------------------- */
/* Reads one array of n elements of `size` bytes into a new allocation (*p); \return 0 when the
 * source is short or memory is out. */
static int sqz_state_get_array(sqz_rbuf_t *r, void **p, size_t n, size_t size)
{
    if (n > (r->len - r->off) / (size ? size : 1)) {
        r->bad = 1;
        return 0;
    }
    *p = malloc(n * size > 0 ? n * size : 1);
    return *p && sqz_rbuf_get(r, *p, n * size);
}

static sqz_status_t sqz_state_get_record(sqz_rbuf_t *r, sqz_state_store_t *s)
{
    sqz_state_record_t rec;
    if (!sqz_rbuf_get(r, &rec, sizeof(rec))) {
        return SQZ_ERR_CORRUPT;
    }
    sqz_buf_state_t *b = sqz_state_get(s, rec.key, (size_t)rec.count, (int)rec.automatic);
    if (NULL == b) {
        return SQZ_ERR_NO_MEMORY;
    }
    b->calls = rec.calls, b->last_use = rec.last_use, b->layout = rec.layout;
    b->adapt.next_probe = rec.adapt_next;
    float **const arr[] = {&b->residual, &b->server_residual, &b->ef_est, &b->ef_err,
                           &b->ef_shared, &b->dgc_momentum};
    int ok = 1;
    for (unsigned k = 0; ok && k < 6; k++) {
        if (rec.present & (1u << k)) {
            const size_t n = 1 == k ? (size_t)rec.server_count : b->count;
            ok             = sqz_state_get_array(r, (void **)arr[k], n, sizeof(float));
            b->server_count = 1 == k ? n : b->server_count;
        }
    }
    const size_t scales = (rec.present & SQZ_HAS_SCALE) ? ((b->count + 255) / 256) * sizeof(float) : 0;
    if (ok && (rec.present & SQZ_HAS_COMPACT)) {
        ok           = rec.res_bytes >= scales &&
             sqz_state_get_array(r, &b->res_compact, (size_t)rec.res_bytes - scales, 1);
        b->res_bytes = (size_t)rec.res_bytes;
    }
    if (ok && (rec.present & SQZ_HAS_SCALE)) {
        ok = sqz_state_get_array(r, (void **)&b->res_scale, scales / sizeof(float), sizeof(float));
    }
    if (ok && (rec.present & SQZ_HAS_PLUGIN)) {
        ok            = sqz_state_get_array(r, (void **)&b->plugin_state, (size_t)rec.plugin_len,
                                            sizeof(float));
        b->plugin_len = (size_t)rec.plugin_len;
    }
    if (ok && (rec.present & SQZ_HAS_LEVELS)) {
        ok         = sqz_state_get_array(r, (void **)&b->adapt.levels, (size_t)rec.adapt_n, sizeof(int));
        b->adapt.n = (size_t)rec.adapt_n;
    }
    sqz_state_account(s, b);
    return ok ? SQZ_OK : (r->bad ? SQZ_ERR_CORRUPT : SQZ_ERR_NO_MEMORY);
}

/* Checks a header against this communicator; logs what differs. */
static sqz_status_t sqz_state_header_check(sqz_comm_t *comm, const sqz_state_header_t *h)
{
    sqz_state_header_t mine;
    SQZ_CHECK(sqz_state_header_make(comm, &mine));
    if (0 != memcmp(h->magic, SQZ_STATE_MAGIC, 8)) {
        SQZ_ERROR("sqz_state_load: not a Squeeze state checkpoint");
        return SQZ_ERR_CORRUPT;
    }
    if (h->version != SQZ_STATE_VERSION) {
        SQZ_ERROR("sqz_state_load: checkpoint format version %u, this library reads %u",
                  h->version, SQZ_STATE_VERSION);
        return SQZ_ERR_INVALID_PARAM;
    }
    if (0 != strncmp(h->method, mine.method, sizeof(h->method))) {
        SQZ_ERROR("sqz_state_load: the checkpoint was saved with SQZ_METHOD=%.31s, this job runs "
                  "%s", h->method, mine.method);
        return SQZ_ERR_INVALID_PARAM;
    }
    if (h->nranks != mine.nranks || h->rank != mine.rank) {
        SQZ_ERROR("sqz_state_load: the checkpoint is rank %d of %u, this is rank %d of %u", h->rank,
                  h->nranks, mine.rank, mine.nranks);
        return SQZ_ERR_INVALID_PARAM;
    }
    if (h->settings_hash != mine.settings_hash) {
        SQZ_ERROR("sqz_state_load: the checkpoint was saved under other Squeeze settings (a "
                  "SQZ_* value that changes the exchange differs): restore with the same ones");
        return SQZ_ERR_INVALID_PARAM;
    }
    return SQZ_OK;
}

/* Reads a whole checkpoint into a fresh store and tracker; swaps them in only when all is well. */
static sqz_status_t sqz_state_read(sqz_comm_t *comm, sqz_rbuf_t *r)
{
    sqz_state_header_t h;
    if (!sqz_rbuf_get(r, &h, sizeof(h))) {
        SQZ_ERROR("sqz_state_load: %zu bytes: not a Squeeze state checkpoint", r->len);
        return SQZ_ERR_CORRUPT;
    }
    SQZ_CHECK(sqz_state_header_check(comm, &h));
    sqz_callseq_t    *seq = NULL;
    /* (the communicator's rank count and backend hooks, for the bytes the records count) */
    sqz_state_store_t store = {.nranks = comm->store.nranks, .ext_ops = comm->store.ext_ops};
    const void       *sb  = sqz_rbuf_take(r, (size_t)h.seq_bytes);
    sqz_status_t      st  = sb ? sqz_callseq_load(sb, (size_t)h.seq_bytes, &seq) : SQZ_ERR_CORRUPT;
    for (uint64_t i = 0; SQZ_OK == st && i < h.nrecords; i++) {
        st = sqz_state_get_record(r, &store);
    }
    const void *dev = SQZ_OK == st ? sqz_rbuf_take(r, (size_t)h.device_bytes) : NULL;
    if (SQZ_OK == st && (NULL == dev || r->off != r->len)) {
        st = SQZ_ERR_CORRUPT;
    }
    if (SQZ_OK == st && h.device_bytes && NULL == comm->device) {
        SQZ_ERROR("sqz_state_load: the checkpoint holds device buffers' state: load it into a "
                  "device communicator");
        st = SQZ_ERR_INVALID_PARAM;
    }
    if (SQZ_OK == st && comm->device) {
        st = comm->device->state_load(comm, dev, (size_t)h.device_bytes);
    }
    if (SQZ_OK != st) {
        sqz_state_store_fini(&store);
        sqz_callseq_destroy(seq);
        return st;
    }
    store.tick = h.tick;
    sqz_state_store_move_ext(&store, &comm->store);
    sqz_state_store_fini(&comm->store);
    comm->store = store;
    sqz_callseq_destroy(comm->seq);
    comm->seq = seq;
    return SQZ_OK;
}

sqz_status_t sqz_state_load(sqz_comm_t *comm, const void *buf, size_t len)
{
    if (NULL == comm || (NULL == buf && len > 0)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    sqz_rbuf_t r = {buf, len, 0, 0};
    pthread_mutex_lock(&comm->lock);
    const sqz_status_t st = sqz_state_read(comm, &r);
    pthread_mutex_unlock(&comm->lock);
    if (SQZ_ERR_CORRUPT == st) {
        SQZ_ERROR("sqz_state_load: the checkpoint is truncated or damaged (%zu bytes)", len);
    }
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------------------------- */
sqz_status_t sqz_state_save_file(sqz_comm_t *comm, const char *path)
{
    const size_t   n   = sqz_state_save(comm, NULL, 0);
    unsigned char *buf = n ? malloc(n) : NULL;
    if (NULL == buf || n != sqz_state_save(comm, buf, n)) {
        free(buf);
        return n ? SQZ_ERR_NO_MEMORY : SQZ_ERR_INVALID_PARAM;
    }
    FILE *f = fopen(path, "wb");
    int   ok = f && n == fwrite(buf, 1, n, f);
    ok &= f && 0 == fclose(f);
    free(buf);
    if (!ok) {
        SQZ_ERROR("sqz_state_save_file: cannot write '%s': %s", path, strerror(errno));
        return SQZ_ERR_IO;
    }
    return SQZ_OK;
}

sqz_status_t sqz_state_load_file(sqz_comm_t *comm, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (NULL == f) {
        SQZ_ERROR("sqz_state_load_file: cannot open '%s': %s", path, strerror(errno));
        return SQZ_ERR_IO;
    }
    unsigned char *buf = NULL;
    size_t         len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap              = cap ? 2 * cap : 1 << 16;
            unsigned char *g = realloc(buf, cap);
            if (NULL == g) {
                free(buf);
                fclose(f);
                return SQZ_ERR_NO_MEMORY;
            }
            buf = g;
        }
        const size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (0 == got) {
            break;
        }
    }
    const int bad = ferror(f);
    fclose(f);
    const sqz_status_t st = bad ? SQZ_ERR_IO : sqz_state_load(comm, buf, len);
    free(buf);
    return st;
}
