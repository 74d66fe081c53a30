/* The compressor registry: the built-in table and plugins loaded from SQZ_PLUGINS. */
#ifndef SQZ_REGISTRY_H
#define SQZ_REGISTRY_H

#include <stddef.h>

#include <squeeze.h>
#include <squeeze/compressor_v2.h>

/* Built-in compressors (plugins/<name>/sqz_<name>.c), listed once in sqz_registry.c. */
extern const sqz_compressor_v1_t sqz_compressor_none;
extern const sqz_compressor_v1_t sqz_compressor_topk;
extern const sqz_compressor_v1_t sqz_compressor_quant;
extern const sqz_compressor_v1_t sqz_compressor_sign;
extern const sqz_compressor_v1_t sqz_compressor_randk;
extern const sqz_compressor_v1_t sqz_compressor_lossless;
extern const sqz_compressor_v1_t sqz_compressor_qsgd;
extern const sqz_compressor_v1_t sqz_compressor_terngrad;
extern const sqz_compressor_v1_t sqz_compressor_fedzip;
extern const sqz_compressor_v1_t sqz_compressor_powersgd;

/** Whether a descriptor carries the appended shared-value hooks, and sets them. */
#define SQZ_HAS_SHARED(c)                                                                        \
    ((c)->size >= offsetof(sqz_compressor_v1_t, shared_fill) + sizeof(void (*)(void)) &&         \
     NULL != (c)->shared_len)

/** Whether a descriptor carries the appended whole-call hooks of SQZ_EXCHANGE_SUMMABLE. */
#define SQZ_HAS_REDUCE(c)                                                                        \
    ((c)->size >= offsetof(sqz_compressor_v1_t, level_bytes) + sizeof(void (*)(void)) &&         \
     NULL != (c)->reduce)

/** Whether a descriptor carries the appended per-stage payload bound, and sets it. */
#define SQZ_HAS_STAGE_PAYLOAD(c)                                                                 \
    ((c)->size >= offsetof(sqz_compressor_v1_t, stage_payload) + sizeof(void (*)(void)) &&       \
     NULL != (c)->stage_payload)

/** Whether a descriptor carries the appended flags and claims SQZ_COMPRESSOR_FIXED_PAYLOAD. */
#define SQZ_FIXED_PAYLOAD(c)                                                                     \
    ((c)->size >= offsetof(sqz_compressor_v1_t, flags) + sizeof(uint32_t) &&                     \
     0 != ((c)->flags & SQZ_COMPRESSOR_FIXED_PAYLOAD))

/* One compressor: the host table (a v1 descriptor, or a v2 descriptor's host table) and, for a
 * v2 plugin, its device operations.  Built-ins carry none: their kernels are the device codec's
 * own rows (src/cuda/sqz_cuda_methods.h). */
typedef struct sqz_registry_entry {
    const sqz_compressor_v1_t *c;
    const sqz_device_ops_v2_t *device; /* a v2 plugin's device operations, or NULL */
    char                      *origin; /* "built-in" or the plugin path */
    void                      *dl;     /* dlopen handle, or NULL */
} sqz_registry_entry_t;

typedef struct sqz_registry {
    sqz_registry_entry_t *e;
    size_t                n, cap;
} sqz_registry_t;

/** Fills the registry with the built-ins. */
sqz_status_t sqz_registry_init(sqz_registry_t *r);

/** Loads each plugin of a ':' or ',' separated list: a shared object exporting
 *  sqz_compressor_v2 (preferred) or sqz_compressor_v1 (adapted: no device operations).  A plugin
 *  that fails to load, lacks both symbols, has the wrong abi/size or a duplicate name is logged
 *  and skipped.  \return the number skipped. */
int sqz_registry_load_plugins(sqz_registry_t *r, const char *list);

/** Checks a descriptor: abi, size, name syntax, required callbacks, param table.
 *  \return SQZ_OK or SQZ_ERR_PLUGIN with a reason in err. */
sqz_status_t sqz_registry_check(const sqz_compressor_v1_t *c, char *err, size_t errlen);

/** Checks a v2 descriptor: its own abi and size, its host table (sqz_registry_check), and its
 *  device operations when present (size, every callback, a payload exchange).
 *  \return SQZ_OK or SQZ_ERR_PLUGIN with a reason in err. */
sqz_status_t sqz_registry_check_v2(const sqz_compressor_v2_t *d, char *err, size_t errlen);

/** \return the compressor called name, or NULL. */
const sqz_compressor_v1_t *sqz_registry_find(const sqz_registry_t *r, const char *name);

void sqz_registry_fini(sqz_registry_t *r);

#endif
