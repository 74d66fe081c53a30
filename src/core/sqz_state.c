#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "sqz_state.h"

uint64_t sqz_hash64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---------------------------------------------------------------------------------------------
 * Memory of one state
 * ------------------------------------------------------------------------------------------- */
void sqz_state_account(sqz_state_store_t *s, sqz_buf_state_t *b)
{
    /* A server residual is counted as count / ranks elements, rounded up, whatever this rank's
     * reduced chunk holds: the ranks' chunks differ in size, and the bytes must be the same on
     * every rank, so that eviction frees the same states everywhere (EF21's shared estimator
     * dropped on one rank only would make the replicas differ). */
    const size_t ranks  = s->nranks > 1 ? (size_t)s->nranks : 1;
    const size_t server = (b->count + ranks - 1) / ranks;
    size_t bytes = b->res_bytes + b->plugin_len * sizeof(float) + b->adapt.n * sizeof(int) +
                   b->ext_bytes;
    bytes += b->server_residual ? server * sizeof(float) : 0;
    const float *const full[] = {b->residual, b->ef_est, b->ef_err, b->ef_shared, b->dgc_momentum};
    for (size_t i = 0; i < sizeof(full) / sizeof(full[0]); i++) {
        bytes += full[i] ? b->count * sizeof(float) : 0;
    }
    s->bytes = s->bytes - b->bytes + bytes;
    b->bytes = bytes;
}

void sqz_state_set_ext(sqz_state_store_t *s, sqz_buf_state_t *b, void *ext, size_t bytes)
{
    b->ext       = ext;
    b->ext_bytes = ext ? bytes : 0;
    sqz_state_account(s, b);
}

int (*sqz_state_alloc_fails)(size_t n);

sqz_status_t sqz_state_alloc(sqz_state_store_t *s, sqz_buf_state_t *b, float **p, size_t n)
{
    if (NULL == *p) {
        *p = sqz_state_alloc_fails && sqz_state_alloc_fails(n) ? NULL
                                                               : calloc(n ? n : 1, sizeof(float));
        if (NULL == *p) {
            return SQZ_ERR_NO_MEMORY;
        }
        sqz_state_account(s, b);
    }
    return SQZ_OK;
}

static void sqz_state_free_arrays(const sqz_state_store_t *s, sqz_buf_state_t *b)
{
    if (b->ext && s->ext_ops) {
        s->ext_ops->free(s->ext_ops->arg, b->ext);
    }
    free(b->residual);
    free(b->server_residual);
    free(b->ef_est);
    free(b->ef_err);
    free(b->ef_shared);
    free(b->dgc_momentum);
    free(b->res_compact);
    free(b->res_scale);
    free(b->plugin_state);
    free(b->adapt.levels);
}

/* ---------------------------------------------------------------------------------------------
 * The recency list: newest first; a state moves to the front at every call.
 * ------------------------------------------------------------------------------------------- */
static void sqz_lru_unlink(sqz_state_store_t *s, sqz_buf_state_t *b)
{
    if (b->newer) {
        b->newer->older = b->older;
    } else {
        s->newest = b->older;
    }
    if (b->older) {
        b->older->newer = b->newer;
    } else {
        s->oldest = b->newer;
    }
    b->newer = b->older = NULL;
}

static void sqz_lru_push(sqz_state_store_t *s, sqz_buf_state_t *b)
{
    b->older = s->newest;
    b->newer = NULL;
    if (s->newest) {
        s->newest->newer = b;
    } else {
        s->oldest = b;
    }
    s->newest = b;
}

/* Unlinks b from its hash chain and the recency list and frees it. */
static void sqz_state_remove(sqz_state_store_t *s, sqz_buf_state_t *b)
{
    sqz_buf_state_t **link = &s->buckets[sqz_hash64(b->key) & (s->nbuckets - 1)];
    while (*link != b) {
        link = &(*link)->next;
    }
    *link = b->next;
    sqz_lru_unlink(s, b);
    s->bytes -= b->bytes;
    s->n--;
    s->nexplicit -= !b->automatic;
    sqz_state_free_arrays(s, b);
    free(b);
}

/* ---------------------------------------------------------------------------------------------
 * Lookup
 * ------------------------------------------------------------------------------------------- */
static int sqz_state_grow(sqz_state_store_t *s)
{
    const size_t      nb = s->nbuckets ? 2 * s->nbuckets : 64;
    sqz_buf_state_t **bk = calloc(nb, sizeof(*bk));
    if (NULL == bk) {
        return -1;
    }
    for (size_t i = 0; i < s->nbuckets; i++) {
        sqz_buf_state_t *b = s->buckets[i];
        while (b) {
            sqz_buf_state_t *next = b->next;
            const size_t     h    = sqz_hash64(b->key) & (nb - 1);
            b->next               = bk[h];
            bk[h]                 = b;
            b                     = next;
        }
    }
    free(s->buckets);
    s->buckets  = bk;
    s->nbuckets = nb;
    return 0;
}

sqz_buf_state_t *sqz_state_find(const sqz_state_store_t *s, uint64_t key, size_t count)
{
    if (0 == s->nbuckets) {
        return NULL;
    }
    for (sqz_buf_state_t *b = s->buckets[sqz_hash64(key) & (s->nbuckets - 1)]; b; b = b->next) {
        if (b->key == key && b->count == count) {
            return b;
        }
    }
    return NULL;
}

sqz_buf_state_t *sqz_state_get(sqz_state_store_t *s, uint64_t key, size_t count, int automatic)
{
    /* (found before the table grows: an existing state is found whatever memory is left, so
     * that the ranks' stores stay alike) */
    for (sqz_buf_state_t *b = s->nbuckets ? s->buckets[sqz_hash64(key) & (s->nbuckets - 1)]
                                          : NULL;
         b; b = b->next) {
        if (b->key == key) {
            if (b->count == count) {
                b->last_use = s->tick;
                sqz_lru_unlink(s, b);
                sqz_lru_push(s, b);
                return b;
            }
            /* Same buffer, new size: the residual no longer matches the data. */
            sqz_state_remove(s, b);
            break;
        }
    }
    if (s->n >= s->nbuckets && 0 != sqz_state_grow(s)) {
        return NULL;
    }
    sqz_buf_state_t *b = calloc(1, sizeof(*b));
    if (NULL == b) {
        return NULL;
    }
    const size_t h = sqz_hash64(key) & (s->nbuckets - 1);
    b->key         = key;
    b->count       = count;
    b->automatic   = automatic;
    b->last_use    = s->tick;
    b->next        = s->buckets[h];
    s->buckets[h]  = b;
    sqz_lru_push(s, b);
    s->n++;
    s->nexplicit += !automatic;
    return b;
}

sqz_status_t sqz_state_reserve(sqz_state_store_t *s, sqz_buf_state_t *b, int worker,
                               size_t server_count)
{
    if (worker && SQZ_OK != sqz_state_alloc(s, b, &b->residual, b->count)) {
        return SQZ_ERR_NO_MEMORY;
    }
    if (server_count > 0 && (NULL == b->server_residual || b->server_count != server_count)) {
        free(b->server_residual);
        b->server_residual = NULL;
        b->server_count    = server_count;
        if (SQZ_OK != sqz_state_alloc(s, b, &b->server_residual, server_count)) {
            b->server_count = 0;
            sqz_state_account(s, b);
            return SQZ_ERR_NO_MEMORY;
        }
    }
    return SQZ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Eviction and identity repairs
 * ------------------------------------------------------------------------------------------- */
void sqz_state_discard(sqz_state_store_t *s, sqz_buf_state_t *b) { sqz_state_remove(s, b); }

void sqz_state_drop(sqz_state_store_t *s, uint64_t key)
{
    if (0 == s->nbuckets) {
        return;
    }
    sqz_buf_state_t *b = s->buckets[sqz_hash64(key) & (s->nbuckets - 1)];
    while (b) {
        sqz_buf_state_t *next = b->next;
        if (b->key == key) {
            sqz_state_remove(s, b);
        }
        b = next;
    }
}

size_t sqz_state_evict(sqz_state_store_t *s, size_t max_bytes, const sqz_buf_state_t *keep)
{
    const uint64_t horizon = 4 * (uint64_t)s->nexplicit > 256 ? 4 * (uint64_t)s->nexplicit : 256;
    size_t         freed   = 0;
    for (sqz_buf_state_t *b = s->oldest; b;) {
        sqz_buf_state_t *newer = b->newer;
        const int stale = !b->automatic && b->last_use + horizon < s->tick;
        const int over  = max_bytes > 0 && s->bytes > max_bytes;
        if (b != keep && (stale || over)) {
            sqz_state_remove(s, b);
            freed++;
        } else if (!over && b->last_use + horizon >= s->tick) {
            break; /* everything newer is recent and the store is within its bound */
        }
        b = newer;
    }
    return freed;
}

int sqz_state_inherit(sqz_state_store_t *s, sqz_buf_state_t *to, sqz_buf_state_t *from)
{
    if (to->count != from->count || to->residual || to->res_compact || to->dgc_momentum ||
        to->server_residual) {
        return 0;
    }
    int moved = NULL != from->residual || NULL != from->res_compact ||
                NULL != from->dgc_momentum || NULL != from->server_residual;
    if (to->ext && from->ext && s->ext_ops) {
        moved |= s->ext_ops->inherit(s->ext_ops->arg, to->ext, from->ext);
    }
    to->residual         = from->residual;
    to->res_compact      = from->res_compact;
    to->res_scale        = from->res_scale;
    to->res_bytes        = from->res_bytes;
    to->dgc_momentum     = from->dgc_momentum;
    to->server_residual  = from->server_residual;
    to->server_count     = from->server_count;
    from->residual = NULL, from->res_compact = NULL, from->res_scale = NULL;
    from->res_bytes = 0, from->dgc_momentum = NULL, from->server_residual = NULL;
    from->server_count = 0;
    sqz_state_account(s, from);
    sqz_state_account(s, to);
    return moved;
}

int sqz_state_forget_local(const sqz_state_store_t *s, sqz_buf_state_t *b)
{
    float *const full[] = {b->residual, b->dgc_momentum};
    int          had    = b->ext && s->ext_ops ? s->ext_ops->forget_local(s->ext_ops->arg, b->ext)
                                               : 0;
    for (size_t i = 0; i < 2; i++) {
        if (full[i]) {
            memset(full[i], 0, b->count * sizeof(float));
            had = 1;
        }
    }
    if (b->server_residual) {
        memset(b->server_residual, 0, b->server_count * sizeof(float));
        had = 1;
    }
    if (b->res_compact) {
        /* bf16: 2 bytes an element; int8: one byte an element (its scales may stay). */
        memset(b->res_compact, 0, b->res_scale ? b->count : 2 * b->count);
        had = 1;
    }
    return had;
}

void sqz_state_store_fini(sqz_state_store_t *s)
{
    while (s->oldest) {
        sqz_state_remove(s, s->oldest);
    }
    free(s->buckets);
    memset(s, 0, sizeof(*s));
}

void sqz_state_store_move_ext(sqz_state_store_t *to, sqz_state_store_t *from)
{
    for (sqz_buf_state_t *b = from->oldest; b; b = b->newer) {
        sqz_buf_state_t *t = b->ext ? sqz_state_find(to, b->key, b->count) : NULL;
        if (t && NULL == t->ext) {
            sqz_state_set_ext(to, t, b->ext, b->ext_bytes);
            sqz_state_set_ext(from, b, NULL, 0);
        }
    }
}
