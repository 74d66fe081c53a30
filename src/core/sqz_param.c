/* Parameter parsing: typed values with bounds, and the string-valued configuration filled from
 * the environment, the SQZ_CONFIG file and the API.  Values are checked in one place
 * (sqz_param_parse) so that every error names the variable, the value, its source and its bounds. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sqz_log.h"
#include "sqz_param.h"

extern char **environ;

/* ---------------------------------------------------------------------------------------------
 * sqz_config_t: name -> (value, source)
 * ------------------------------------------------------------------------------------------- */
sqz_status_t sqz_config_create(sqz_config_t **cfg)
{
    *cfg = calloc(1, sizeof(**cfg));
    return *cfg ? SQZ_OK : SQZ_ERR_NO_MEMORY;
}

void sqz_config_destroy(sqz_config_t *cfg)
{
    if (NULL == cfg) {
        return;
    }
    for (size_t i = 0; i < cfg->n; i++) {
        free(cfg->entries[i].name);
        free(cfg->entries[i].value);
        free(cfg->entries[i].source);
    }
    free(cfg->entries);
    free(cfg);
}

/* Strips an optional SQZ_ prefix: both "SQZ_TOPK_DENSITY" and "TOPK_DENSITY" name one parameter. */
static const char *sqz_param_base_name(const char *name)
{
    return (0 == strncmp(name, "SQZ_", 4)) ? name + 4 : name;
}

const sqz_config_entry_t *sqz_config_find(const sqz_config_t *cfg, const char *name)
{
    if (NULL == cfg) {
        return NULL;
    }
    name = sqz_param_base_name(name);
    for (size_t i = 0; i < cfg->n; i++) {
        if (0 == strcmp(cfg->entries[i].name, name)) {
            return &cfg->entries[i];
        }
    }
    return NULL;
}

static sqz_status_t sqz_config_put(sqz_config_t *cfg, const char *name, const char *value,
                                   const char *source)
{
    name = sqz_param_base_name(name);
    if ('\0' == *name) {
        return SQZ_ERR_INVALID_PARAM;
    }
    char *v = strdup(value), *s = strdup(source);
    if (NULL == v || NULL == s) {
        free(v);
        free(s);
        return SQZ_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < cfg->n; i++) {
        if (0 == strcmp(cfg->entries[i].name, name)) {
            free(cfg->entries[i].value);
            free(cfg->entries[i].source);
            cfg->entries[i].value  = v;
            cfg->entries[i].source = s;
            return SQZ_OK;
        }
    }
    if (cfg->n == cfg->cap) {
        const size_t        cap = cfg->cap ? 2 * cfg->cap : 16;
        sqz_config_entry_t *e   = realloc(cfg->entries, cap * sizeof(*e));
        if (NULL == e) {
            free(v);
            free(s);
            return SQZ_ERR_NO_MEMORY;
        }
        cfg->entries = e;
        cfg->cap     = cap;
    }
    char *n = strdup(name);
    if (NULL == n) {
        free(v);
        free(s);
        return SQZ_ERR_NO_MEMORY;
    }
    for (char *p = n; *p; p++) {
        *p = (char)toupper((unsigned char)*p);
    }
    cfg->entries[cfg->n++] = (sqz_config_entry_t){.name = n, .value = v, .source = s};
    return SQZ_OK;
}

sqz_status_t sqz_config_set(sqz_config_t *cfg, const char *name, const char *value)
{
    if (NULL == cfg || NULL == name || NULL == value) {
        return SQZ_ERR_INVALID_PARAM;
    }
    return sqz_config_put(cfg, name, value, "api");
}

static char *sqz_trim(char *s)
{
    while (isspace((unsigned char)*s)) {
        s++;
    }
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) {
        *--end = '\0';
    }
    return s;
}

sqz_status_t sqz_config_load_file(sqz_config_t *cfg, const char *path)
{
    FILE       *f = fopen(path, "r");
    struct stat sb;
    if (NULL == f) {
        SQZ_ERROR("SQZ_CONFIG=%s: cannot open: %s", path, strerror(errno));
        return SQZ_ERR_IO;
    }
    if (0 != fstat(fileno(f), &sb) || !S_ISREG(sb.st_mode)) {
        SQZ_ERROR("SQZ_CONFIG=%s: not a regular file%s", path,
                  S_ISDIR(sb.st_mode) ? " (a directory): name the configuration file itself" : "");
        fclose(f);
        return SQZ_ERR_IO;
    }
    char         line[4096];
    unsigned     lineno = 0;
    sqz_status_t st     = SQZ_OK;
    while (SQZ_OK == st && fgets(line, sizeof(line), f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) {
            *hash = '\0';
        }
        char *s = sqz_trim(line);
        if ('\0' == *s) {
            continue;
        }
        char *eq = strchr(s, '=');
        if (NULL == eq) {
            SQZ_ERROR("%s:%u: expected NAME = value, got '%s'", path, lineno, s);
            st = SQZ_ERR_INVALID_PARAM;
            break;
        }
        *eq               = '\0';
        const char *name  = sqz_trim(s);
        const char *value = sqz_trim(eq + 1);
        char        source[512];
        snprintf(source, sizeof(source), "file %s:%u", path, lineno);
        st = sqz_config_put(cfg, name, value, source);
    }
    fclose(f);
    return st;
}

sqz_status_t sqz_config_load_env(sqz_config_t *cfg)
{
    const char *file = getenv("SQZ_CONFIG");
    if (file && *file) {
        SQZ_CHECK(sqz_config_load_file(cfg, file));
    }
    for (char **e = environ; e && *e; e++) {
        if (0 != strncmp(*e, "SQZ_", 4)) {
            continue;
        }
        const char *eq = strchr(*e, '=');
        if (NULL == eq) {
            continue;
        }
        char name[256];
        const size_t len = (size_t)(eq - *e);
        if (len >= sizeof(name)) {
            continue;
        }
        memcpy(name, *e, len);
        name[len] = '\0';
        SQZ_CHECK(sqz_config_put(cfg, name, eq + 1, "env"));
    }
    return SQZ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Typed parsing
 * ------------------------------------------------------------------------------------------- */
#define SQZ_PARAM_ERR(...) (snprintf(err, errlen, __VA_ARGS__), SQZ_ERR_INVALID_PARAM)

static bool sqz_parse_double(const char *s, double *out)
{
    char *end;
    errno          = 0;
    const double v = strtod(s, &end);
    if (end == s || 0 != errno || !isfinite(v)) {
        return false;
    }
    while (isspace((unsigned char)*end)) {
        end++;
    }
    *out = v;
    return '\0' == *end;
}

static bool sqz_parse_int(const char *s, double *out)
{
    char *end;
    errno             = 0;
    const long long v = strtoll(s, &end, 0);
    if (end == s || 0 != errno) {
        return false;
    }
    while (isspace((unsigned char)*end)) {
        end++;
    }
    *out = (double)v;
    return '\0' == *end;
}

/* Sizes take an optional binary suffix: 64K, 1M, 2G (also KiB, MB...). */
static bool sqz_parse_size(const char *s, double *out)
{
    char *end;
    errno                        = 0;
    const unsigned long long v   = strtoull(s, &end, 10);
    double                   mul = 1;
    if (end == s || 0 != errno || '-' == *s) {
        return false;
    }
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    default: break;
    }
    if (mul > 1 && ('i' == *end || 'I' == *end)) {
        end++;
    }
    if (mul > 1 && ('b' == *end || 'B' == *end)) {
        end++;
    }
    if ('\0' != *end) {
        return false;
    }
    *out = (double)v * mul;
    return true;
}

static int sqz_parse_bool(const char *s)
{
    static const char *const yes[] = {"1", "yes", "true", "on"};
    static const char *const no[]  = {"0", "no", "false", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (0 == strcasecmp(s, yes[i])) {
            return 1;
        }
        if (0 == strcasecmp(s, no[i])) {
            return 0;
        }
    }
    return -1;
}

/* \return the index of value among "a|b|c", or -1. */
static int sqz_enum_index(const char *choices, const char *value)
{
    const size_t vlen = strlen(value);
    int          idx  = 0;
    for (const char *p = choices; p && *p; idx++) {
        const char  *bar = strchr(p, '|');
        const size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vlen && 0 == strncasecmp(p, value, len)) {
            return idx;
        }
        p = bar ? bar + 1 : NULL;
    }
    return -1;
}

static void sqz_enum_name(const char *choices, int index, char *buf, size_t len)
{
    const char *p = choices;
    for (int i = 0; i < index && p; i++) {
        p = strchr(p, '|');
        p = p ? p + 1 : NULL;
    }
    if (NULL == p) {
        snprintf(buf, len, "?");
        return;
    }
    const char *bar = strchr(p, '|');
    snprintf(buf, len, "%.*s", (int)(bar ? (size_t)(bar - p) : strlen(p)), p);
}

/* A value as an error message shows it: at most 60 characters, so that a long one cannot push
 * the reason and the bounds out of the message. */
static const char *sqz_param_shown(const char *value, char *buf, size_t len)
{
    const size_t n = strlen(value);
    if (n <= 60) {
        return value;
    }
    snprintf(buf, len, "%.48s... (%zu characters)", value, n);
    return buf;
}

sqz_status_t sqz_param_parse(const sqz_param_def_v1_t *def, const char *raw, const char *source,
                             void *config, char *err, size_t errlen)
{
    char *const slot = (char *)config + def->offset;
    double      v    = 0;
    char        shown[96];
    const char *value = SQZ_PARAM_STRING == def->type ? raw : sqz_param_shown(raw, shown, sizeof(shown));
    switch (def->type) {
    case SQZ_PARAM_INT:
        if (!sqz_parse_int(raw, &v)) {
            return SQZ_PARAM_ERR("SQZ_%s='%s' (%s): not an integer; expected an integer in [%.10g, %.10g]",
                                 def->name, value, source, def->min, def->max);
        }
        break;
    case SQZ_PARAM_DOUBLE:
        if (!sqz_parse_double(raw, &v)) {
            return SQZ_PARAM_ERR("SQZ_%s='%s' (%s): not a number; expected a number in [%.10g, %.10g]",
                                 def->name, value, source, def->min, def->max);
        }
        break;
    case SQZ_PARAM_SIZE:
        if (!sqz_parse_size(raw, &v)) {
            return SQZ_PARAM_ERR("SQZ_%s='%s' (%s): not a size; expected bytes (suffix K, M or G allowed) in [%.10g, %.10g]",
                                 def->name, value, source, def->min, def->max);
        }
        break;
    case SQZ_PARAM_BOOL: {
        const int b = sqz_parse_bool(raw);
        if (b < 0) {
            return SQZ_PARAM_ERR("SQZ_%s='%s' (%s): not a boolean; expected 0|1|yes|no|true|false|on|off",
                                 def->name, value, source);
        }
        *(int *)slot = b;
        return SQZ_OK;
    }
    case SQZ_PARAM_ENUM: {
        const int idx = sqz_enum_index(def->choices, raw);
        if (idx < 0) {
            return SQZ_PARAM_ERR("SQZ_%s='%s' (%s): unknown value; expected one of %s", def->name,
                                 value, source, def->choices);
        }
        *(int *)slot = idx;
        return SQZ_OK;
    }
    case SQZ_PARAM_STRING:
        *(const char **)slot = raw;
        return SQZ_OK;
    default:
        return SQZ_PARAM_ERR("SQZ_%s: parameter has an unknown type %d", def->name, (int)def->type);
    }
    if (v < def->min || v > def->max) {
        return SQZ_PARAM_ERR("SQZ_%s=%s (%s): out of range; expected a value in [%.10g, %.10g]",
                             def->name, value, source, def->min, def->max);
    }
    switch (def->type) {
    case SQZ_PARAM_INT: *(int64_t *)slot = (int64_t)v; break;
    case SQZ_PARAM_DOUBLE: *(double *)slot = v; break;
    case SQZ_PARAM_SIZE: *(size_t *)slot = (size_t)v; break;
    default: break;
    }
    return SQZ_OK;
}

sqz_status_t sqz_params_apply(const sqz_param_def_v1_t *defs, size_t n, const sqz_config_t *cfg,
                              void *config, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const sqz_config_entry_t *e = sqz_config_find(cfg, defs[i].name);
        const char *value = e ? e->value : defs[i].default_value;
        const char *src   = e ? e->source : "default";
        SQZ_CHECK(sqz_param_parse(&defs[i], value, src, config, err, errlen));
    }
    return SQZ_OK;
}

sqz_status_t sqz_plugin_config_make(const sqz_compressor_v1_t *c, const char *const *kv,
                                    void **config, char *err, size_t errlen)
{
    sqz_config_t *cfg = NULL;
    sqz_status_t  st;
    *config = calloc(1, c->config_size ? c->config_size : 1);
    if (NULL == *config) {
        return SQZ_ERR_NO_MEMORY;
    }
    SQZ_CHECK_GOTO(sqz_config_create(&cfg), st, out);
    for (size_t i = 0; kv && kv[i]; i++) {
        char        buf[512];
        const char *eq = strchr(kv[i], '=');
        if (NULL == eq || (size_t)(eq - kv[i]) >= sizeof(buf)) {
            st = SQZ_ERR_INVALID_PARAM;
            snprintf(err, errlen, "'%s': expected NAME=value", kv[i]);
            goto out;
        }
        memcpy(buf, kv[i], (size_t)(eq - kv[i]));
        buf[eq - kv[i]] = '\0';
        SQZ_CHECK_GOTO(sqz_config_put(cfg, buf, eq + 1, "api"), st, out);
    }
    /* STRING values would point into cfg, which dies here: plugin configs have none today. */
    st = sqz_params_apply(c->params, c->nparams, cfg, *config, err, errlen);
out:
    sqz_config_destroy(cfg);
    if (SQZ_OK != st) {
        free(*config);
        *config = NULL;
    }
    return st;
}

void sqz_param_format(const sqz_param_def_v1_t *def, const void *config, char *buf, size_t len)
{
    const char *const slot = (const char *)config + def->offset;
    switch (def->type) {
    case SQZ_PARAM_INT: snprintf(buf, len, "%lld", (long long)*(const int64_t *)slot); break;
    case SQZ_PARAM_DOUBLE: snprintf(buf, len, "%.17g", *(const double *)slot); break;
    case SQZ_PARAM_SIZE: snprintf(buf, len, "%zu", *(const size_t *)slot); break;
    case SQZ_PARAM_BOOL: snprintf(buf, len, "%d", *(const int *)slot); break;
    case SQZ_PARAM_ENUM: sqz_enum_name(def->choices, *(const int *)slot, buf, len); break;
    case SQZ_PARAM_STRING: {
        const char *s = *(const char *const *)slot;
        snprintf(buf, len, "%s", s ? s : "");
        break;
    }
    default: snprintf(buf, len, "?"); break;
    }
}
