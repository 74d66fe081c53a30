/* Statistics: per-method counters, the JSON file and the summary table. */
#ifndef SQZ_STATS_H
#define SQZ_STATS_H

/* Layout of sqz_stats_export(): SQZ_STATS_NFIELDS doubles per registry entry, then the count of
 * passthrough calls, then the count of those the device path declined (ctx->calls_declined). */
enum {
    SQZ_SF_CALLS_COMPRESSED = 0,
    SQZ_SF_CALLS_FALLBACK,
    SQZ_SF_CALLS_WARMUP,
    SQZ_SF_CALLS_NONFINITE,
    SQZ_SF_BYTES_IN,
    SQZ_SF_BYTES_WIRE,
    SQZ_SF_BYTES_SENT,
    SQZ_SF_SECONDS_COMPRESS,
    SQZ_SF_SECONDS_COMM,
    SQZ_SF_REL_ERROR_SUM,
    SQZ_STATS_NFIELDS
};

/* Then SQZ_MOE_NFIELDS doubles per MoE codec (sqz_moe_codec_t order), then the count of token
 * all-to-alls passed through. */
enum {
    SQZ_MF_CALLS = 0,
    SQZ_MF_TOKENS,
    SQZ_MF_ROWS,
    SQZ_MF_BYTES_IN,
    SQZ_MF_BYTES_WIRE,
    SQZ_MF_SECONDS_COMPRESS,
    SQZ_MF_SECONDS_COMM,
    SQZ_MOE_NFIELDS
};

#endif
