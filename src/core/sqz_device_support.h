/*
 * What runs on device buffers (the GPU path), and why not: one table read by the GPU engine's
 * decision, squeeze_info and the stats, so that a method or option the device path declines is
 * declined with the same reason everywhere, never silently.
 */
#ifndef SQZ_DEVICE_SUPPORT_H
#define SQZ_DEVICE_SUPPORT_H

#include "sqz_ctx.h"

/** \return NULL when the compressor named `method` runs on device buffers (its kernels, or
 *  `none`), else one sentence saying why not.  A name the table does not know is an external
 *  plugin: it runs there when it brought device operations (`device`, compressor ABI v2), else
 *  it has host operations only. */
const char *sqz_device_method_decline(const char *method, const sqz_device_ops_v2_t *device);

/** \return NULL when ctx's method and options run on device buffers, else why not (the
 *  method's reason, or the option's).  Options the device path runs degraded (DGC's extras,
 *  residual storage other than fp32, per-layer adaptation of methods other than powersgd) are
 *  not declines: the GPU engine warns about those. */
const char *sqz_device_decline(const sqz_ctx_t *ctx);

#endif /* SQZ_DEVICE_SUPPORT_H */
