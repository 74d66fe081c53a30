/* The declarative parameter table: definitions, parsing with bounds, and the string-valued
 * configuration (sqz_config_t) that env vars, the config file and the API fill. */
#ifndef SQZ_PARAM_H
#define SQZ_PARAM_H

#include <squeeze.h>

/** A parameter value as the user gave it, with where it came from. */
typedef struct sqz_config_entry {
    char *name;   /* upper case, without SQZ_ */
    char *value;
    char *source; /* "env", "file PATH:LINE", "api" */
} sqz_config_entry_t;

struct sqz_config {
    sqz_config_entry_t *entries;
    size_t              n, cap;
};

/** \return the entry for name (without SQZ_), or NULL. */
const sqz_config_entry_t *sqz_config_find(const sqz_config_t *cfg, const char *name);

/** Parses one value of `def` into the typed slot inside `config` (config + def->offset).
 *  `source` is quoted in the error ("SQZ_TOPK_DENSITY=2 (env): out of range [1e-06, 1]").
 *  STRING values are duplicated into *owned (caller frees) when owned is not NULL.
 *  \return SQZ_OK or SQZ_ERR_INVALID_PARAM with a message in err. */
sqz_status_t sqz_param_parse(const sqz_param_def_v1_t *def, const char *value, const char *source,
                             void *config, char *err, size_t errlen);

/** Fills `config` (all of it) from defs: the value in cfg when set there, else the default.
 *  cfg may be NULL (defaults only).  STRING values point into cfg or into the defs. */
sqz_status_t sqz_params_apply(const sqz_param_def_v1_t *defs, size_t n, const sqz_config_t *cfg,
                              void *config, char *err, size_t errlen);

/** Builds a plugin config from defaults plus "NAME=value" strings (NULL-terminated list; may be
 *  NULL).  For tests and tools.  *config is malloc'ed (free it). */
sqz_status_t sqz_plugin_config_make(const sqz_compressor_v1_t *c, const char *const *kv,
                                    void **config, char *err, size_t errlen);

/** Formats the typed value of def found in config as a string (for squeeze_info and digests). */
void sqz_param_format(const sqz_param_def_v1_t *def, const void *config, char *buf, size_t len);

#endif
