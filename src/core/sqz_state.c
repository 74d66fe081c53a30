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

static void sqz_state_free(sqz_state_store_t *s, sqz_buf_state_t *b)
{
    if (b->residual) {
        s->bytes -= b->count * sizeof(float);
    }
    if (b->server_residual) {
        s->bytes -= b->server_count * sizeof(float);
    }
    for (float **p = (float *[]){b->ef_est, b->ef_err, b->ef_shared, b->dgc_momentum}, **end = p + 4; p < end; p++) {
        if (*p) {
            s->bytes -= b->count * sizeof(float);
        }
    }
    free(b->residual);
    free(b->server_residual);
    free(b->ef_est);
    free(b->ef_err);
    free(b->ef_shared);
    free(b->dgc_momentum);
    s->bytes -= b->res_bytes;
    free(b->res_compact);
    free(b->res_scale);
    free(b->plugin_state);
    free(b->adapt.levels);
    free(b);
}

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

sqz_buf_state_t *sqz_state_get(sqz_state_store_t *s, uint64_t key, size_t count)
{
    if (s->n >= s->nbuckets && 0 != sqz_state_grow(s)) {
        return NULL;
    }
    const size_t      h    = sqz_hash64(key) & (s->nbuckets - 1);
    sqz_buf_state_t **link = &s->buckets[h];
    for (sqz_buf_state_t *b = *link; b; link = &b->next, b = b->next) {
        if (b->key == key) {
            if (b->count == count) {
                return b;
            }
            /* Same buffer, new size: the residual no longer matches the data. */
            *link = b->next;
            sqz_state_free(s, b);
            s->n--;
            break;
        }
    }
    sqz_buf_state_t *b = calloc(1, sizeof(*b));
    if (NULL == b) {
        return NULL;
    }
    b->key              = key;
    b->count            = count;
    b->next             = s->buckets[h];
    s->buckets[h]       = b;
    s->n++;
    return b;
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

sqz_status_t sqz_state_reserve(sqz_state_store_t *s, sqz_buf_state_t *b, int worker,
                               size_t server_count)
{
    if (worker && NULL == b->residual) {
        b->residual = calloc(b->count ? b->count : 1, sizeof(float));
        if (NULL == b->residual) {
            return SQZ_ERR_NO_MEMORY;
        }
        s->bytes += b->count * sizeof(float);
    }
    if (server_count > 0 && (NULL == b->server_residual || b->server_count != server_count)) {
        if (b->server_residual) {
            s->bytes -= b->server_count * sizeof(float);
        }
        free(b->server_residual);
        b->server_residual = calloc(server_count, sizeof(float));
        b->server_count    = b->server_residual ? server_count : 0;
        if (NULL == b->server_residual) {
            return SQZ_ERR_NO_MEMORY;
        }
        s->bytes += server_count * sizeof(float);
    }
    return SQZ_OK;
}

void sqz_state_store_fini(sqz_state_store_t *s)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        sqz_buf_state_t *b = s->buckets[i];
        while (b) {
            sqz_buf_state_t *next = b->next;
            sqz_state_free(s, b);
            b = next;
        }
    }
    free(s->buckets);
    memset(s, 0, sizeof(*s));
}
