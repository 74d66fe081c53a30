#include "config.h"

#include <string.h>

#include "sqz_device_support.h"

/* One row per built-in compressor.  A NULL reason: the GPU path runs it (tests/cuda checks
 * that each of those has a row in the device codec's method table, or is powersgd or none). */
static const struct {
    const char *name;
    const char *reason;
} sqz_device_rows[] = {
    {"none", NULL},
    {"topk", NULL},
    {"quant", NULL},
    {"sign", NULL},
    {"qsgd", NULL},
    {"powersgd", NULL},
    {"randk", NULL},
    {"terngrad", NULL}, /* (each rank's own scaler: plugins/terngrad/sqz_terngrad.cu) */
    {"fedzip", "variable-size payloads (zstd frames): the device exchanges move fixed-size "
               "payloads"},
    {"lossless", "variable-size payloads (zstd): the device exchanges move fixed-size payloads"},
};

const char *sqz_device_method_decline(const char *method, const sqz_device_ops_v2_t *device)
{
    for (size_t i = 0; i < sizeof(sqz_device_rows) / sizeof(sqz_device_rows[0]); i++) {
        if (0 == strcmp(sqz_device_rows[i].name, method)) {
            return sqz_device_rows[i].reason;
        }
    }
    return NULL != device ? NULL
                          : "a plugin with host operations only (a v1 descriptor, or a v2 "
                            "descriptor without device operations)";
}

const char *sqz_device_decline(const sqz_ctx_t *ctx)
{
    const char *reason = sqz_device_method_decline(ctx->method->name, ctx->method_device);
    if (NULL != reason) {
        return reason;
    }
    if (0 == strcmp(ctx->method->name, "randk") &&
        sqz_ctx_param_is(ctx, "RANDK_SCALE", "unbiased")) {
        return "RANDK_SCALE=unbiased has no device kernel (the device draws strata of n / k "
               "elements, and the scatter-reduce's second stage must not scale again)";
    }
    return NULL;
}
