/*
 * Squeeze compressor plugin ABI, version 1.
 *
 * A compressor is one `const sqz_compressor_v1_t` object.  Built-in compressors are listed in the
 * static table of src/core/sqz_registry.c; an external plugin is a shared object that exports
 *
 *     const sqz_compressor_v1_t sqz_compressor_v1;
 *
 * and is loaded at run time from SQZ_PLUGINS.  A plugin is written against this header only: it
 * does not link against libsqueeze, reads no environment variable and makes no MPI/NCCL call.  The
 * engine owns the exchange (src/coll) and calls the plugin to turn a float vector into a payload
 * and back.
 *
 * Threading: the engine never calls into one compressor state from two threads at once.
 * Memory: the plugin may keep scratch memory in its state; it must not allocate per call once its
 * scratch has grown to the largest n it has seen.
 */
#ifndef SQUEEZE_COMPRESSOR_V1_H
#define SQUEEZE_COMPRESSOR_V1_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SQZ_COMPRESSOR_ABI_V1 1u

/* Status values shared with squeeze.h (kept in sync by a static assertion in the core). */
#ifndef SQZ_STATUS_DEFINED
#define SQZ_STATUS_DEFINED
/** Status codes.  Values are stable once published. */
typedef enum {
    SQZ_OK                = 0,  /**< success */
    SQZ_ERR_NOT_SUPPORTED = -1, /**< not applicable here: the caller falls back to the dense path */
    SQZ_ERR_INVALID_PARAM = -2, /**< bad configuration or argument */
    SQZ_ERR_NO_MEMORY     = -3, /**< allocation failed */
    SQZ_ERR_CUDA          = -4, /**< a CUDA call failed */
    SQZ_ERR_MPI           = -5, /**< an MPI call failed */
    SQZ_ERR_NCCL          = -6, /**< an NCCL call failed */
    SQZ_ERR_NONFINITE     = -7, /**< the input holds NaN or Inf: this call goes dense */
    SQZ_ERR_CORRUPT       = -8, /**< a payload is malformed */
    SQZ_ERR_MISMATCH      = -9, /**< ranks run with different settings */
    SQZ_ERR_PLUGIN        = -10, /**< a plugin could not be loaded or is invalid */
    SQZ_ERR_TRANSPORT     = -11, /**< the transport failed */
    SQZ_ERR_INTERNAL      = -12, /**< a bug: please report */
    SQZ_ERR_IO            = -13  /**< a file could not be read or written */
} sqz_status_t;
#endif

/* ---------------------------------------------------------------------------------------------
 * Parameters.  Each compressor declares its parameters in a table; the core parses them from
 * SQZ_<NAME> environment variables, the SQZ_CONFIG file or the API, checks them against their
 * bounds and writes the typed value at `offset` inside a config struct of `config_size` bytes
 * that it hands to create().  Names are upper case without the SQZ_ prefix and should start with
 * the compressor's name (TOPK_DENSITY).
 * ------------------------------------------------------------------------------------------- */
typedef enum {
    SQZ_PARAM_INT = 1,    /**< int64_t, bounds [min, max] */
    SQZ_PARAM_DOUBLE = 2, /**< double, bounds [min, max] */
    SQZ_PARAM_SIZE = 3,   /**< size_t, accepts K/M/G (binary) suffixes, bounds [min, max] */
    SQZ_PARAM_BOOL = 4,   /**< int: 0/1, accepts 0/1/yes/no/true/false/on/off */
    SQZ_PARAM_ENUM = 5,   /**< int: index into `choices` ("a|b|c") */
    SQZ_PARAM_STRING = 6  /**< const char * owned by the core, valid for the config's lifetime */
} sqz_param_type_t;

typedef struct sqz_param_def_v1 {
    const char      *name;          /**< e.g. "TOPK_DENSITY" (env: SQZ_TOPK_DENSITY) */
    sqz_param_type_t type;
    const char      *default_value; /**< as a string, parsed like user input */
    double           min, max;      /**< inclusive bounds for INT, DOUBLE, SIZE */
    const char      *choices;       /**< ENUM only: "exact|sampled" */
    size_t           offset;        /**< where the typed value goes in the config struct */
    const char      *help;          /**< one sentence for squeeze_info and docs/params.md */
} sqz_param_def_v1_t;

/* ---------------------------------------------------------------------------------------------
 * How the engine moves payloads for this compressor (src/coll).
 * ------------------------------------------------------------------------------------------- */
typedef enum {
    /** Every rank compresses its whole vector; payloads are all-gathered and every rank decodes
     *  all of them, in rank order, into a zeroed output.  For sparse, non-summable payloads. */
    SQZ_EXCHANGE_ALLGATHER = 1,
    /** The vector is cut into one chunk per rank.  Chunk j is compressed and sent to rank j, which
     *  decodes and sums what it receives (its own chunk from its compressed form too), compresses
     *  the sum again (server error feedback) and all-gathers it; every rank decodes every chunk.
     *  For dense quantizers (max-min b-bit, scaled sign). */
    SQZ_EXCHANGE_REDUCE_SCATTER = 2,
    /** The compressor's messages are summable (PowerSGD's factors): it runs the call itself in
     *  reduce(), through rounds of native SUM all-reduces of float vectors that the engine
     *  provides (MPI or NCCL).  compress/decompress may be NULL. */
    SQZ_EXCHANGE_SUMMABLE = 3
} sqz_exchange_t;

/** What the engine tells a compressor when it creates it. */
typedef struct sqz_compressor_env_v1 {
    uint32_t    size;   /**< sizeof(sqz_compressor_env_v1_t) */
    int         rank;   /**< this rank in the communicator */
    int         nranks; /**< ranks in the communicator */
    uint64_t    seed;   /**< the same on every rank (SQZ_SEED) */
} sqz_compressor_env_v1_t;

/** Where a call's buffers live (sqz_query_v1_t.memory). */
typedef enum { SQZ_MEMORY_HOST = 1, SQZ_MEMORY_DEVICE = 2 } sqz_memory_t;

/** A collective call the engine asks a compressor to take or decline. */
typedef struct sqz_query_v1 {
    uint32_t size;      /**< sizeof(sqz_query_v1_t) of the engine that fills it */
    size_t   count;     /**< elements in the whole call */
    int      nranks;
    /* Appended fields: read them only when size covers them (SQZ_QUERY_HAS), an older engine
     * does not fill them. */
    int      dtype;          /**< the caller's elements: 1 float32, 2 float16, 3 bfloat16 (the
                                  SQZ_DTYPE_* of squeeze.h) */
    int      op;             /**< 1 sum, 2 average (SQZ_OP_*) */
    int      memory;         /**< SQZ_MEMORY_HOST or SQZ_MEMORY_DEVICE (the GPU path) */
    int      reduce_scatter; /**< 1: a reduce-scatter (each rank keeps count / nranks), 0: an
                                  all-reduce */
} sqz_query_v1_t;

/** Whether the engine filled `field` of the query q (an appended field). */
#define SQZ_QUERY_HAS(q, field)                                                                  \
    ((q)->size >= offsetof(sqz_query_v1_t, field) + sizeof((q)->field))

/** One compress call.  The compressor reads `a[i] = in[i] + residual[i]` (residual may be NULL:
 *  no error feedback) and writes a payload of at most max_payload(n) bytes.
 *
 *  Error-feedback contract: when residual is not NULL, on success it is updated in place so that
 *      decode(payload)[i] + residual_new[i] == in[i] + residual_old[i]      (up to float rounding)
 *
 *  Finiteness contract: when some a[i] is NaN or Inf the compressor returns SQZ_ERR_NONFINITE and
 *  the residual holds its old values up to float rounding (a few ulps relative to max |a| over
 *  the finite a[i]).  A compressor may establish finiteness in a first pass before it writes
 *  (the residual is then untouched), or process the vector in one pass, bucket by bucket, and
 *  before returning restore the buckets it already updated: residual = residual_new + decoded -
 *  in, computed from the payload it has already written.  The engine relies on this to send such
 *  a call dense without losing the accumulated error. */
typedef struct sqz_compress_args_v1 {
    uint32_t     size;          /**< sizeof(sqz_compress_args_v1_t) */
    const float *in;
    float       *residual;      /**< error-feedback residual, updated in place; may be NULL */
    size_t       n;
    uint64_t     seq;           /**< per-buffer call counter: seeds deterministic randomness */
    int          stage;         /**< 0: worker (a rank's own data), 1: server (a reduced chunk) */
    void        *payload;
    size_t       capacity;      /**< bytes available at payload, >= max_payload(n) */
    /* outputs */
    size_t       payload_bytes; /**< bytes written */
    double       norm2_in;      /**< sum of a[i]^2 */
    double       norm2_err;     /**< sum of (a[i] - decoded[i])^2 */
    /* Appended fields (present when size covers them). */
    /** Stage 0 only, for a compressor with shared_len: the element-wise MAX over all ranks of the
     *  values its shared_fill produced for this same chunk (shared_len(n) floats); NULL
     *  otherwise (stage 1: the compressor decides alone). */
    const float *shared;
} sqz_compress_args_v1_t;

/** One matrix of a buffer (a layer): rows x cols floats, row-major, starting at element offset.
 *  Same layout as sqz_layer_t of squeeze.h. */
typedef struct sqz_matrix_v1 {
    size_t   offset;
    size_t   rows, cols;
    uint64_t id; /**< the parameter's id across bucket rebuilds (0: none); informational */
} sqz_matrix_v1_t;

/** The engine's native all-reduce for SQZ_EXCHANGE_SUMMABLE compressors: sums buf (n floats)
 *  over every rank, in place, with the same result on every rank.  Collective: every rank makes
 *  the same sequence of calls with the same n.  \return 0 on success. */
typedef int (*sqz_allreduce_sum_fn_v1)(void *arg, float *buf, size_t n);

/** One reduce() call: the whole all-reduce of one buffer, run by a SQZ_EXCHANGE_SUMMABLE
 *  compressor.
 *
 *  Result: out (n floats, may equal in) receives the SUM over ranks of each rank's
 *  approximation of a = in + residual, bit-identical on every rank; elements outside every
 *  layer are summed exactly.
 *  Error feedback: when residual is not NULL it is updated so that, per rank,
 *      approximation_i + residual_new == in + residual_old   (up to float rounding).
 *  Finiteness: a NaN or Inf on any rank makes reduce() return SQZ_ERR_NONFINITE on every rank
 *  (it shows in the summed messages, identical everywhere) with the residual restored (up to
 *  float rounding) and out unspecified; the engine then sends the call dense. */
typedef struct sqz_reduce_args_v1 {
    uint32_t     size;      /**< sizeof(sqz_reduce_args_v1_t) */
    const float *in;
    float       *residual;  /**< n floats or NULL (no error feedback) */
    float       *out;
    size_t       n;
    uint64_t     seq;       /**< per-buffer call counter (the same on every rank) */
    /** The buffer's layers: sorted by offset, non-overlapping, inside [0, n). */
    const sqz_matrix_v1_t *layers;
    size_t       nlayers;
    /** Persistent per-buffer memory: bufstate_len() floats, zeroed when the engine creates it
     *  (a new buffer or a new layout), kept across calls (warm starts). */
    float       *bufstate;
    /** Per layer: the level to use (for powersgd, the rank); NULL: the configured one for all.
     *  The same on every rank. */
    const int   *levels;
    /** When probe_err is not NULL: also measure, for each layer l and each of the nprobe levels
     *  probe[j] (ascending), this rank's squared error ||a_l - C_probe[j](a_l)||^2 into
     *  probe_err[l * nprobe + j], and ||a_l||^2 into probe_norm[l].  A layer the compressor
     *  sends exactly gets 0 errors.  Layer-adaptive selection (src/adapt) reads these. */
    const int   *probe;
    size_t       nprobe;
    double      *probe_err;
    double      *probe_norm;
    int          probed;    /**< output: 1 when probe_err was filled (0 in a dense start phase) */
    int          exact;     /**< output: 1 when the call was sent exactly (a dense start phase) */
    sqz_allreduce_sum_fn_v1 allreduce_sum;
    void        *allreduce_arg;
    /* outputs */
    size_t       bytes_wire; /**< bytes of this rank's messages (floats summed, times 4) */
    double       norm2_in;   /**< sum of a[i]^2 */
    double       norm2_err;  /**< sum of (a[i] - this rank's approximation[i])^2 */
} sqz_reduce_args_v1_t;

/** The descriptor of one compressor.  Fields are never reordered; new ones go at the end and
 *  `size` tells the core which are present. */
typedef struct sqz_compressor_v1 {
    uint32_t    abi;            /**< SQZ_COMPRESSOR_ABI_V1 */
    uint32_t    size;           /**< sizeof(sqz_compressor_v1_t) */
    const char *name;           /**< the value of SQZ_METHOD that selects it: [a-z0-9_]+ */
    const char *description;    /**< one line for squeeze_info */
    sqz_exchange_t exchange;

    const sqz_param_def_v1_t *params; /**< may be NULL when nparams == 0 */
    size_t      nparams;
    size_t      config_size;    /**< bytes of the config struct the params are written into */

    /** Creates a state.  `config` points to config_size bytes filled from `params`.
     *  \return SQZ_OK, or an error (bad config combination, no memory) that disables the method. */
    sqz_status_t (*create)(const void *config, const sqz_compressor_env_v1_t *env, void **state);

    /** May decline a call (too small, unsupported, not on device buffers).  \return SQZ_OK to
     *  take it, SQZ_ERR_NOT_SUPPORTED to let it pass through dense.  Must give the same answer on
     *  every rank for the same query.  May be NULL: take every call.  The GPU path asks it too
     *  (memory SQZ_MEMORY_DEVICE), for the methods it has device kernels for. */
    sqz_status_t (*query)(void *state, const sqz_query_v1_t *q);

    /** Upper bound on the payload bytes of compress() for n elements. */
    size_t (*max_payload)(void *state, size_t n);

    /** Compresses, see sqz_compress_args_v1_t. */
    sqz_status_t (*compress)(void *state, sqz_compress_args_v1_t *args);

    /** Decodes a payload of `bytes` bytes describing n elements and adds it into out
     *  (out[i] += decoded[i]).  When out is NULL it only validates.  It validates the whole payload
     *  before writing anything: on a malformed payload it returns SQZ_ERR_CORRUPT and leaves out
     *  untouched.  It never reads outside [payload, payload + bytes) nor writes outside out[0, n). */
    sqz_status_t (*decompress)(void *state, const void *payload, size_t bytes, float *out, size_t n);

    /** Frees the state.  Accepts NULL. */
    void (*destroy)(void *state);

    /* Appended fields (present when size covers them; NULL: unused). */

    /** A compressor whose encoding needs a value agreed by all ranks before compressing (TernGrad's
     *  scaler, the largest |a| of a bucket over every rank) declares how many floats it needs for n
     *  elements.  The engine then calls shared_fill on every rank for every chunk it compresses at
     *  stage 0, takes the element-wise MAX over the ranks with one small all-gather, and passes
     *  the result to compress() in args->shared. */
    size_t (*shared_len)(void *state, size_t n);
    /** Fills vals (shared_len(n) floats) from a = in + residual (residual may be NULL).  Must not
     *  modify anything; NaN/Inf in a may produce anything (compress reports them). */
    void (*shared_fill)(void *state, const float *in, const float *residual, size_t n, float *vals);

    /* SQZ_EXCHANGE_SUMMABLE compressors (appended; NULL for the others). */

    /** Floats of persistent per-buffer memory that reduce() needs for this layout. */
    size_t (*bufstate_len)(void *state, const sqz_matrix_v1_t *layers, size_t nlayers, size_t n);
    /** Runs one all-reduce, see sqz_reduce_args_v1_t. */
    sqz_status_t (*reduce)(void *state, sqz_reduce_args_v1_t *args);
    /** Layer-adaptive selection: the candidate levels, ascending, as "1,2,4,8" (NULL: the
     *  compressor cannot adapt per layer), the parameter that holds the uniform level (for
     *  powersgd the INT "POWERSGD_RANK"; see level_scale for a DOUBLE one), and the wire bytes of
     *  one layer at one level (required for SQZ_EXCHANGE_SUMMABLE). */
    const char *levels;
    const char *level_param;
    size_t (*level_bytes)(void *state, const sqz_matrix_v1_t *layer, int level);

    /** SQZ_COMPRESSOR_* properties (0: none claimed). */
    uint32_t    flags;

    /** Layer-adaptive selection of a compressor whose level parameter is a DOUBLE (topk's
     *  TOPK_DENSITY): level = value x level_scale, rounded (0: the parameter is an INT level).
     *  A compressor with levels but no level_bytes (an all-gather one) is adapted segment by
     *  segment by the engine (src/adapt/sqz_adapt_seg.c), which measures the bytes itself. */
    double      level_scale;

    /** The payload bound of one stage (0: a rank's own data; 1: a reduced chunk that its owner
     *  compresses again, in the scatter-reduce exchange), for a compressor whose two stages keep
     *  different amounts (topk's TOPK_RESELECT).  At most max_payload(n), which still sizes every
     *  transfer; the cost models read this one for the bytes each phase sends.  NULL (or absent
     *  from an older descriptor): max_payload(n) at both stages. */
    size_t (*stage_payload)(void *state, size_t n, int stage);
} sqz_compressor_v1_t;

/** flags: compress() always writes exactly max_payload(state, n) bytes on success.  An exchange
 *  can then size its transfers in advance, with no size exchange (a promise, checked by the
 *  tests: a compressor that writes less still works, it only wastes the difference). */
#define SQZ_COMPRESSOR_FIXED_PAYLOAD 0x1u

/* What a compressor is, for error feedback.  With SQZ_EF=auto (the default) the engine gives a
 * method the error feedback its flags ask for: none with SQZ_COMPRESSOR_EF_NONE, ef21 with
 * SQZ_COMPRESSOR_EF21, else ef14 (a descriptor without flags: ef14, as before).  A user's explicit
 * SQZ_EF that the flags say diverges is taken, with one warning. */
/** flags: contractive, E||C(x) - x||^2 <= (1 - delta) ||x||^2 for some delta > 0 (top-k, scaled
 *  sign, max-min quantization): error feedback corrects its bias. */
#define SQZ_COMPRESSOR_CONTRACTIVE 0x2u
/** flags: unbiased, E[C(x)] = x, and not contractive (QSGD, TernGrad): error feedback feeds its
 *  variance back and diverges; it converges without. */
#define SQZ_COMPRESSOR_UNBIASED 0x4u
/** flags: its default error feedback is none (unbiased, exact, or a sum that is exact where it
 *  is sent, as rand-k with positions shared by all ranks). */
#define SQZ_COMPRESSOR_EF_NONE 0x8u
/** flags: its default error feedback is ef21: it keeps a small fraction of the vector, and
 *  classic error feedback then needs a step size of about that fraction of a stable one (its
 *  residual releases bursts of many steps' gradient), while EF21 converges at the steps dense
 *  SGD takes. */
#define SQZ_COMPRESSOR_EF21 0x10u
/** flags: an explicit SQZ_EF=ef14 (and econtrol), or ef21, is known to diverge with it at step
 *  sizes dense SGD handles (docs/methods.md has the measurements). */
#define SQZ_COMPRESSOR_EF14_DIVERGES 0x20u
#define SQZ_COMPRESSOR_EF21_DIVERGES 0x40u
/** flags: classic error feedback (its default) needs damping at the largest steps dense SGD takes:
 *  its residual is one step late, and near lr x L = 2 that delay oscillates (scaled sign).  With
 *  SQZ_EF=auto and SQZ_EF_DECAY=0 (auto) the host engine keeps 0.8 of the residuals between
 *  calls. */
#define SQZ_COMPRESSOR_EF14_DAMPED 0x80u

#ifdef __cplusplus
}
#endif
#endif /* SQUEEZE_COMPRESSOR_V1_H */
