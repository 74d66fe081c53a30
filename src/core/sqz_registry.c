/* The compressor registry.  Built-ins are listed once in sqz_builtin_compressors[]; adding a
 * compressor means writing plugins/<name>/sqz_<name>.c and adding one line here.  External plugins
 * are shared objects exporting `sqz_compressor_v2` (include/squeeze/compressor_v2.h: host and
 * device operations) or `sqz_compressor_v1` (host operations only: adapted as a v2 descriptor
 * without device operations), loaded from SQZ_PLUGINS; a plugin that fails to load is logged and
 * skipped, never fatal. */
#include "config.h"

#include <ctype.h>
#include <stddef.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_log.h"
#include "sqz_registry.h"

static const sqz_compressor_v1_t *const sqz_builtin_compressors[] = {
    &sqz_compressor_none,
    &sqz_compressor_topk,
    &sqz_compressor_quant,
    &sqz_compressor_sign,
    &sqz_compressor_randk,
    &sqz_compressor_lossless,
    &sqz_compressor_qsgd,
    &sqz_compressor_terngrad,
    &sqz_compressor_fedzip,
    &sqz_compressor_powersgd,
};

static sqz_status_t sqz_registry_add(sqz_registry_t *r, const sqz_compressor_v1_t *c,
                                     const sqz_device_ops_v2_t *device, const char *origin,
                                     void *dl)
{
    if (r->n == r->cap) {
        const size_t          cap = r->cap ? 2 * r->cap : 8;
        sqz_registry_entry_t *e   = realloc(r->e, cap * sizeof(*e));
        if (NULL == e) {
            return SQZ_ERR_NO_MEMORY;
        }
        r->e   = e;
        r->cap = cap;
    }
    char *o = strdup(origin);
    if (NULL == o) {
        return SQZ_ERR_NO_MEMORY;
    }
    r->e[r->n++] = (sqz_registry_entry_t){.c = c, .device = device, .origin = o, .dl = dl};
    return SQZ_OK;
}

sqz_status_t sqz_registry_check(const sqz_compressor_v1_t *c, char *err, size_t errlen)
{
    if (NULL == c) {
        snprintf(err, errlen, "descriptor is NULL");
        return SQZ_ERR_PLUGIN;
    }
    if (SQZ_COMPRESSOR_ABI_V1 != c->abi) {
        snprintf(err, errlen, "ABI version %u, this library speaks %u", c->abi, SQZ_COMPRESSOR_ABI_V1);
        return SQZ_ERR_PLUGIN;
    }
    /* Fields after destroy were appended later: a plugin built before them is still valid. */
    if (c->size < offsetof(sqz_compressor_v1_t, shared_len)) {
        snprintf(err, errlen, "descriptor size %u smaller than %zu", c->size,
                 offsetof(sqz_compressor_v1_t, shared_len));
        return SQZ_ERR_PLUGIN;
    }
    if (SQZ_HAS_SHARED(c) && NULL == c->shared_fill) {
        snprintf(err, errlen, "'%s' has shared_len but no shared_fill", c->name ? c->name : "?");
        return SQZ_ERR_PLUGIN;
    }
    if (NULL == c->name || '\0' == c->name[0] || strlen(c->name) > 32) {
        snprintf(err, errlen, "missing or too long name");
        return SQZ_ERR_PLUGIN;
    }
    for (const char *p = c->name; *p; p++) {
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || '_' == *p)) {
            snprintf(err, errlen, "name '%s' is not [a-z0-9_]+", c->name);
            return SQZ_ERR_PLUGIN;
        }
    }
    /* A summable compressor runs its calls in reduce() and needs no payload codec. */
    const int summable = SQZ_EXCHANGE_SUMMABLE == c->exchange;
    if (NULL == c->create || NULL == c->destroy ||
        (!summable && (NULL == c->max_payload || NULL == c->compress || NULL == c->decompress)) ||
        (summable && (!SQZ_HAS_REDUCE(c) || NULL == c->bufstate_len))) {
        snprintf(err, errlen, "'%s' lacks a required callback", c->name);
        return SQZ_ERR_PLUGIN;
    }
    if (summable && c->size >= offsetof(sqz_compressor_v1_t, level_bytes) + sizeof(void (*)(void)) &&
        NULL != c->levels && NULL == c->level_bytes) {
        snprintf(err, errlen, "'%s' declares levels but no level_bytes", c->name);
        return SQZ_ERR_PLUGIN;
    }
    if (SQZ_EXCHANGE_ALLGATHER != c->exchange && SQZ_EXCHANGE_REDUCE_SCATTER != c->exchange &&
        !summable) {
        snprintf(err, errlen, "'%s' asks for exchange %d, which this library does not provide",
                 c->name, (int)c->exchange);
        return SQZ_ERR_PLUGIN;
    }
    if (c->nparams > 0 && NULL == c->params) {
        snprintf(err, errlen, "'%s' declares %zu params but no table", c->name, c->nparams);
        return SQZ_ERR_PLUGIN;
    }
    for (size_t i = 0; i < c->nparams; i++) {
        const sqz_param_def_v1_t *d = &c->params[i];
        if (NULL == d->name || NULL == d->default_value || NULL == d->help ||
            d->offset >= c->config_size ||
            (SQZ_PARAM_ENUM == d->type && NULL == d->choices)) {
            snprintf(err, errlen, "'%s' param %zu is malformed", c->name, i);
            return SQZ_ERR_PLUGIN;
        }
    }
    return SQZ_OK;
}

sqz_status_t sqz_registry_init(sqz_registry_t *r)
{
    memset(r, 0, sizeof(*r));
    for (size_t i = 0; i < sizeof(sqz_builtin_compressors) / sizeof(sqz_builtin_compressors[0]); i++) {
        char err[256];
        SQZ_CHECK(sqz_registry_check(sqz_builtin_compressors[i], err, sizeof(err)));
        SQZ_CHECK(sqz_registry_add(r, sqz_builtin_compressors[i], NULL, "built-in", NULL));
    }
    return SQZ_OK;
}

const sqz_compressor_v1_t *sqz_registry_find(const sqz_registry_t *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++) {
        if (0 == strcmp(r->e[i].c->name, name)) {
            return r->e[i].c;
        }
    }
    return NULL;
}

/* The device operations' own checks: size, every callback, and an exchange that moves payloads
 * (a summable compressor runs its calls in reduce(), which has no device form). */
static sqz_status_t sqz_registry_check_device(const sqz_compressor_v1_t *host,
                                              const sqz_device_ops_v2_t *dev, char *err,
                                              size_t errlen)
{
    if (dev->size < sizeof(sqz_device_ops_v2_t)) {
        snprintf(err, errlen, "'%s': device ops size %u smaller than %zu", host->name, dev->size,
                 sizeof(sqz_device_ops_v2_t));
        return SQZ_ERR_PLUGIN;
    }
    if (NULL == dev->payload_bytes || NULL == dev->workspace_bytes || NULL == dev->compress ||
        NULL == dev->decode_sum || NULL == dev->restore) {
        snprintf(err, errlen, "'%s' lacks a required device callback", host->name);
        return SQZ_ERR_PLUGIN;
    }
    if (SQZ_EXCHANGE_SUMMABLE == host->exchange) {
        snprintf(err, errlen, "'%s': device ops need a payload exchange, not SUMMABLE",
                 host->name);
        return SQZ_ERR_PLUGIN;
    }
    return SQZ_OK;
}

sqz_status_t sqz_registry_check_v2(const sqz_compressor_v2_t *d, char *err, size_t errlen)
{
    if (NULL == d) {
        snprintf(err, errlen, "descriptor is NULL");
        return SQZ_ERR_PLUGIN;
    }
    if (SQZ_COMPRESSOR_ABI_V2 != d->abi) {
        snprintf(err, errlen, "sqz_compressor_v2 has ABI version %u, expected %u", d->abi,
                 SQZ_COMPRESSOR_ABI_V2);
        return SQZ_ERR_PLUGIN;
    }
    if (d->size < sizeof(sqz_compressor_v2_t) || NULL == d->host) {
        snprintf(err, errlen, "sqz_compressor_v2 of size %u (want %zu) or without a host table",
                 d->size, sizeof(sqz_compressor_v2_t));
        return SQZ_ERR_PLUGIN;
    }
    const sqz_status_t st = sqz_registry_check(d->host, err, errlen);
    if (SQZ_OK != st || NULL == d->device) {
        return st;
    }
    return sqz_registry_check_device(d->host, d->device, err, errlen);
}

/* The plugin's descriptor as v2: its sqz_compressor_v2, else its sqz_compressor_v1 adapted
 * (no device operations).  \return 0 when it has neither (err says so). */
static int sqz_registry_describe(void *dl, sqz_compressor_v2_t *d, char *err, size_t errlen)
{
    const sqz_compressor_v2_t *v2 = dlsym(dl, "sqz_compressor_v2");
    if (NULL != v2) {
        /* (copied field by field up to what it declares: a larger, newer descriptor's extra
         * fields are not ours to read) */
        *d = (sqz_compressor_v2_t){.abi = v2->abi, .size = v2->size};
        if (SQZ_COMPRESSOR_ABI_V2 == v2->abi && v2->size >= sizeof(*d)) {
            d->host   = v2->host;
            d->device = v2->device;
            d->size   = sizeof(*d);
        }
        return 1;
    }
    const sqz_compressor_v1_t *v1 = dlsym(dl, "sqz_compressor_v1");
    if (NULL == v1) {
        snprintf(err, errlen, "exports neither sqz_compressor_v2 nor sqz_compressor_v1");
        return 0;
    }
    *d = (sqz_compressor_v2_t){
        .abi = SQZ_COMPRESSOR_ABI_V2, .size = sizeof(*d), .host = v1, .device = NULL};
    return 1;
}

static int sqz_registry_load_one(sqz_registry_t *r, const char *path)
{
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (NULL == dl) {
        SQZ_WARN("SQZ_PLUGINS: cannot load '%s': %s; plugin skipped", path, dlerror());
        return 1;
    }
    sqz_compressor_v2_t d;
    char                err[256];
    if (!sqz_registry_describe(dl, &d, err, sizeof(err))) {
        SQZ_WARN("SQZ_PLUGINS: '%s' %s; plugin skipped", path, err);
    } else if (SQZ_OK != sqz_registry_check_v2(&d, err, sizeof(err))) {
        SQZ_WARN("SQZ_PLUGINS: '%s' is invalid: %s; plugin skipped", path, err);
    } else if (sqz_registry_find(r, d.host->name)) {
        SQZ_WARN("SQZ_PLUGINS: '%s' defines compressor '%s', which already exists; plugin skipped",
                 path, d.host->name);
    } else if (SQZ_OK != sqz_registry_add(r, d.host, d.device, path, dl)) {
        SQZ_WARN("SQZ_PLUGINS: out of memory registering '%s'; plugin skipped", path);
    } else {
        SQZ_INFO("loaded compressor '%s' from %s (%s)", d.host->name, path,
                 d.device ? "host and device operations" : "host operations");
        return 0;
    }
    dlclose(dl);
    return 1;
}

int sqz_registry_load_plugins(sqz_registry_t *r, const char *list)
{
    int skipped = 0;
    if (NULL == list) {
        return 0;
    }
    char *copy = strdup(list);
    if (NULL == copy) {
        return 1;
    }
    char *save = NULL;
    for (char *tok = strtok_r(copy, ":,", &save); tok; tok = strtok_r(NULL, ":,", &save)) {
        if ('\0' != *tok) {
            skipped += sqz_registry_load_one(r, tok);
        }
    }
    free(copy);
    return skipped;
}

void sqz_registry_fini(sqz_registry_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->e[i].dl) {
            dlclose(r->e[i].dl);
        }
        free(r->e[i].origin);
    }
    free(r->e);
    memset(r, 0, sizeof(*r));
}
