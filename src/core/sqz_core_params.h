/* The core parameter table (sqz_core_params.c). */
#ifndef SQZ_CORE_PARAMS_H
#define SQZ_CORE_PARAMS_H

#include "sqz_param.h"

struct sqz_core_params;

/** Whether a parameter must be equal on every rank (JOB: it changes what goes on the wire or
 *  which collective a rank enters) or may differ (RANK). */
typedef enum { SQZ_SCOPE_JOB = 0, SQZ_SCOPE_RANK = 1 } sqz_param_scope_t;

/** Rows of the table. */
size_t sqz_core_param_count(void);

/** Row i (NULL past the end); *scope (when not NULL) receives its scope. */
const sqz_param_def_v1_t *sqz_core_param(size_t i, sqz_param_scope_t *scope);

/** The row named `name` (without SQZ_), or NULL. */
const sqz_param_def_v1_t *sqz_core_param_find(const char *name);

/** Fills every core parameter of p from cfg (or its default).  \return SQZ_OK or
 *  SQZ_ERR_INVALID_PARAM with a message in err. */
sqz_status_t sqz_core_params_apply(const sqz_config_t *cfg, struct sqz_core_params *p, char *err,
                                   size_t errlen);

#endif
