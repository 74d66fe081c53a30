/*
 * Squeeze: compressed collectives for distributed training.  Public API.
 *
 * Lifecycle:
 *   sqz_config_create -> sqz_config_set / sqz_config_load_env -> sqz_ctx_create (parses and checks
 *   every parameter, loads plugins) -> sqz_comm_create (one per communicator, over a transport) ->
 *   sqz_allreduce ... -> sqz_comm_destroy -> sqz_ctx_destroy.
 *
 * The engine reads no environment variable by itself: only sqz_config_load_env() does, and the
 * interposers call it.  Every destroy function accepts NULL.
 */
#ifndef SQUEEZE_H
#define SQUEEZE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <squeeze/compressor_v1.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SQZ_API __attribute__((visibility("default")))
#else
#define SQZ_API
#endif

#define SQZ_VERSION_MAJOR 0
#define SQZ_VERSION_MINOR 1
#define SQZ_VERSION_PATCH 0
#define SQZ_VERSION_NUMBER (SQZ_VERSION_MAJOR * 10000 + SQZ_VERSION_MINOR * 100 + SQZ_VERSION_PATCH)

/** \return SQZ_VERSION_NUMBER of the library actually loaded. */
SQZ_API unsigned sqz_version_number(void);

/** \return a static, human-readable string for a status code (never NULL). */
SQZ_API const char *sqz_status_string(sqz_status_t status);

/* ------------------------------------------------------------------------------------------ */
/* Configuration                                                                              */
/* ------------------------------------------------------------------------------------------ */
typedef struct sqz_config sqz_config_t;

/** Creates an empty configuration (every parameter at its default). */
SQZ_API sqz_status_t sqz_config_create(sqz_config_t **cfg);

/** Sets a parameter by name ("TOPK_DENSITY" or "SQZ_TOPK_DENSITY").  The value is only checked
 *  by sqz_ctx_create(), so that errors name their source and bounds in one place. */
SQZ_API sqz_status_t sqz_config_set(sqz_config_t *cfg, const char *name, const char *value);

/** Reads the file named by SQZ_CONFIG (if set), then every SQZ_* environment variable (which win
 *  over the file).  Config file lines are `NAME = value` or `SQZ_NAME=value`; `#` starts a comment.
 *  \return SQZ_ERR_IO when SQZ_CONFIG names a file that cannot be read, SQZ_ERR_INVALID_PARAM on
 *  a malformed line. */
SQZ_API sqz_status_t sqz_config_load_env(sqz_config_t *cfg);

/** Reads one config file (format as above). */
SQZ_API sqz_status_t sqz_config_load_file(sqz_config_t *cfg, const char *path);

/** Frees a configuration.  Accepts NULL. */
SQZ_API void sqz_config_destroy(sqz_config_t *cfg);

/* ------------------------------------------------------------------------------------------ */
/* Library context: parsed parameters, compressor registry, statistics                       */
/* ------------------------------------------------------------------------------------------ */
typedef struct sqz_ctx sqz_ctx_t;

/** Parses and checks every parameter, loads the plugins named by SQZ_PLUGINS (a plugin that fails
 *  to load is logged and skipped) and selects SQZ_METHOD.  On a bad value it returns
 *  SQZ_ERR_INVALID_PARAM and, when errbuf is not NULL, writes a message naming the variable and
 *  its bounds there.  `cfg` may be destroyed afterwards. */
SQZ_API sqz_status_t sqz_ctx_create(const sqz_config_t *cfg, sqz_ctx_t **ctx, char *errbuf,
                                    size_t errlen);

/** Frees a context.  Every communicator created from it must be destroyed first.  Accepts NULL. */
SQZ_API void sqz_ctx_destroy(sqz_ctx_t *ctx);

/** Sets the rank used in log lines (the interposers call it after MPI_Init). */
SQZ_API void sqz_ctx_set_log_rank(sqz_ctx_t *ctx, int rank);

/** Writes the canonical form of every parameter that must agree across ranks ("NAME=value\n"
 *  lines, sorted) to buf, and returns a 64-bit hash of it in *hash.  Ranks compare hashes to
 *  detect mismatched settings. */
SQZ_API sqz_status_t sqz_ctx_settings_digest(const sqz_ctx_t *ctx, char *buf, size_t len,
                                             uint64_t *hash);

/* ------------------------------------------------------------------------------------------ */
/* Transport: how the engine moves bytes.  libsqueeze_mpi provides one over PMPI; tests use one */
/* over threads; a framework may bring its own.  Every function is collective over the group  */
/* and returns 0 on success, anything else on failure.                                        */
/* ------------------------------------------------------------------------------------------ */
typedef struct sqz_transport {
    size_t size;   /**< sizeof(sqz_transport_t) */
    void  *self;   /**< passed back as the first argument */
    int    rank;
    int    nranks;
    /** Every rank contributes sendbytes (may differ by rank); recvbytes[r] bytes of rank r land
     *  at recvbuf + displs[r]. */
    int (*allgatherv)(void *self, const void *sendbuf, size_t sendbytes, void *recvbuf,
                      const size_t *recvbytes, const size_t *displs);
    /** Sends sendbytes[r] bytes at sendbuf + sdispls[r] to rank r, receives recvbytes[r] bytes from
     *  rank r at recvbuf + rdispls[r]. */
    int (*alltoallv)(void *self, const void *sendbuf, const size_t *sendbytes,
                     const size_t *sdispls, void *recvbuf, const size_t *recvbytes,
                     const size_t *rdispls);
    /** Dense float SUM all-reduce; in may equal out. */
    int (*allreduce_f32_sum)(void *self, const float *in, float *out, size_t n);

    /* Optional point-to-point operations (all four or none; NULL: the engine uses the collectives
     * above).  With them the engine pipelines its exchanges: it sends a chunk while it compresses
     * the next one, and decodes a chunk while later ones are still arriving.  Messages between two
     * ranks must not overtake each other (as in MPI), and must not match any traffic of the
     * application.  A request is an opaque pointer that test() and wait() release. */
    /** Starts sending `bytes` bytes to rank `peer`. */
    int (*isend)(void *self, const void *buf, size_t bytes, int peer, void **req);
    /** Starts receiving at most `bytes` bytes from rank `peer`; *got (when not NULL) receives the
     *  size actually received once the request completes. */
    int (*irecv)(void *self, void *buf, size_t bytes, int peer, size_t *got, void **req);
    /** Progresses the transport; *done = 1 (and the request released) when req has completed. */
    int (*test)(void *self, void *req, int *done);
    /** Waits for req and releases it. */
    int (*wait)(void *self, void *req);
} sqz_transport_t;

typedef struct sqz_comm sqz_comm_t;

/** Creates the per-communicator engine (buffer states, error-feedback residuals, scratch).  The
 *  transport struct is copied; its `self` must outlive the communicator. */
SQZ_API sqz_status_t sqz_comm_create(sqz_ctx_t *ctx, const sqz_transport_t *transport,
                                     sqz_comm_t **comm);

/** Creates a hierarchical communicator for jobs of several hosts (what SQZ_HIER does under the
 *  MPI interposer): `local` spans the ranks of this rank's host, `inter` the ranks with this
 *  rank's local index on every host, one per host in the same host order everywhere; every host
 *  holds the same number L of ranks.  sqz_allreduce on it (float32 SUM or AVG) runs a dense
 *  reduce-scatter over local, the all-reduce of this rank's shard (1/L of the buffer) compressed
 *  over inter, and a dense all-gather over local: the compressed traffic crosses hosts only,
 *  every rank compresses 1/L of the buffer, and every rank ends bit-identical.  A NaN or Inf in
 *  any input makes the call the exact dense sum, as on a flat communicator.  The settings are
 *  compared among the ranks of inter.  Collective over every rank of both transports, which are
 *  copied (their `self` must outlive the communicator).  sqz_reduce_scatter_block on it is
 *  hierarchical too: block b of the input belongs to host b / L (its rank in inter), local rank
 *  b % L; each rank gets its column of blocks (one per host) summed inside the host and
 *  compresses only that column between hosts (SQZ_ERR_NOT_SUPPORTED on every rank when a rank
 *  has no memory for the scratch: the caller's dense reduce-scatter then runs).
 *  sqz_ef_allreduce and the MoE calls return SQZ_ERR_NOT_SUPPORTED on it. */
SQZ_API sqz_status_t sqz_comm_create_hier(sqz_ctx_t *ctx, const sqz_transport_t *local,
                                          const sqz_transport_t *inter, sqz_comm_t **comm);

/** Frees a communicator's state.  Accepts NULL. */
SQZ_API void sqz_comm_destroy(sqz_comm_t *comm);

/** A group of nranks ranks inside one process, each driven by its own thread: the transports of
 *  a simulation (W workers on one machine, squeeze.LocalGroup in Python) and of the unit tests.
 *  Its collectives meet at a barrier: every rank of the group must make the same calls, from
 *  distinct threads, or the group waits forever.  Sums run in rank order, so every rank gets the
 *  same bits. */
typedef struct sqz_local_group sqz_local_group_t;

/** \return SQZ_OK; SQZ_ERR_INVALID_PARAM (nranks < 1 or > 4096); SQZ_ERR_NO_MEMORY. */
SQZ_API sqz_status_t sqz_local_group_create(int nranks, sqz_local_group_t **group);

/** Frees the group, after every communicator made on it.  Accepts NULL. */
SQZ_API void sqz_local_group_destroy(sqz_local_group_t *group);

/** Fills *t with the transport of `rank` (0 <= rank < nranks), for sqz_comm_create. */
SQZ_API sqz_status_t sqz_local_group_transport(sqz_local_group_t *group, int rank,
                                               sqz_transport_t *t);

typedef enum { SQZ_DTYPE_FLOAT32 = 1, SQZ_DTYPE_FLOAT16 = 2, SQZ_DTYPE_BFLOAT16 = 3 } sqz_dtype_t;
typedef enum { SQZ_OP_SUM = 1, SQZ_OP_AVG = 2 } sqz_op_t;

/** Compressed all-reduce.  sendbuf NULL means in place (data in recvbuf).  `key` names the
 *  logical buffer whose error-feedback state this call uses (0: derive it from recvbuf and count).
 *  Every rank ends with bit-identical output.  When the call is not eligible, when some rank's
 *  input is not finite, or on any internal failure, the engine runs the dense all-reduce of the
 *  transport instead (counted in the stats) and still returns SQZ_OK; it returns an error only when
 *  the dense path itself fails or the ranks' settings differ (SQZ_ERR_MISMATCH, on every rank). */
SQZ_API sqz_status_t sqz_allreduce(sqz_comm_t *comm, const void *sendbuf, void *recvbuf,
                                   size_t count, sqz_dtype_t dtype, sqz_op_t op, uint64_t key);

/** Compressed reduce-scatter with equal blocks: rank r receives elements
 *  [r * recvcount, (r + 1) * recvcount) of the reduction.  sendbuf NULL means in place (the input
 *  is recvbuf, nranks * recvcount elements, and the result lands in its first recvcount). */
SQZ_API sqz_status_t sqz_reduce_scatter_block(sqz_comm_t *comm, const void *sendbuf,
                                              void *recvbuf, size_t recvcount, sqz_dtype_t dtype,
                                              sqz_op_t op, uint64_t key);

/** \return 1 when a call with these arguments would be compressed (policy: method, dtype, op,
 *  SQZ_MIN_BYTES), 0 when it would pass through. */
SQZ_API int sqz_comm_eligible(const sqz_comm_t *comm, size_t count, sqz_dtype_t dtype, sqz_op_t op);

/** Counts a call that the interposer passed through without entering the engine. */
SQZ_API void sqz_comm_count_passthrough(sqz_comm_t *comm);

/* ------------------------------------------------------------------------------------------ */
/* The optimizer-side collective (1-bit Adam, 0/1 Adam: squeeze.optim)                         */
/* ------------------------------------------------------------------------------------------ */
/** Compressed all-reduce, in place, of a buffer that an optimizer owns (1-bit Adam's momentum, 0/1
 *  Adam's gradients and accumulated updates), with the context's method (a context with
 *  SQZ_METHOD=sign gives 1-bit Adam's exchange: the two-phase sign all-reduce) and two-level
 *  error feedback that this call always keeps, whatever SQZ_EF, SQZ_MIN_BYTES and
 *  SQZ_WARMUP_STEPS say (the optimizer decides when to compress): this rank's compression error,
 *  and the error of the chunk it reduces, are kept under `key` (not 0, the same on every rank)
 *  and added back at the next call with that key; sqz_state_save keeps them, sqz_ef_forget drops
 *  them.  stream NULL: host float32 buffers, through the communicator's transport (blocking);
 *  otherwise device buffers (float32, float16, bfloat16) of a sqz_comm_create_nccl communicator,
 *  enqueued on that CUDA stream.  Every rank ends with bit-identical results; a NaN or Inf on any
 *  rank gives the dense result (host) or NaN everywhere (device), with the residuals kept.
 *  Methods whose classic error feedback is known to diverge (topk, fedzip, and the unbiased
 *  randk, qsgd, terngrad: docs/methods.md) work but warn once: compress momentum with sign or
 *  quant.
 *  \return SQZ_OK; SQZ_ERR_INVALID_PARAM (key 0, another op); SQZ_ERR_NOT_SUPPORTED (a dtype or
 *  memory the communicator cannot take); a transport error. */
SQZ_API sqz_status_t sqz_ef_allreduce(sqz_comm_t *comm, void *buf, size_t count,
                                      sqz_dtype_t dtype, sqz_op_t op, uint64_t key, void *stream);

/** Drops the error-feedback state named key (0/1 Adam switches from compressing gradients to
 *  compressing accumulated updates: the residuals of one mean nothing to the other).  Every rank
 *  calls it at the same point.  Accepts a NULL comm. */
SQZ_API void sqz_ef_forget(sqz_comm_t *comm, uint64_t key);

/* ------------------------------------------------------------------------------------------ */
/* Checkpoints of the error-feedback state                                                    */
/* ------------------------------------------------------------------------------------------ */
/** Saves this rank's state of comm: every buffer's residuals, estimators (ef21, econtrol), DGC
 *  momentum, warm starts and layer-adaptive levels, their call counters, and the call-sequence
 *  state that names the buffers of intercepted calls; device communicators copy their buffers'
 *  state from the device (one synchronization).  Call it at the same point on every rank (between
 *  steps, with no call of comm in flight), next to the model's checkpoint: a run restarted from
 *  both continues bit for bit.  Writes into buf only when len is large enough.  \return the bytes
 *  the checkpoint takes (0 on error, logged).  The format is versioned. */
SQZ_API size_t sqz_state_save(sqz_comm_t *comm, void *buf, size_t len);

/** Restores a checkpoint of sqz_state_save into comm (same method, rank count, rank and
 *  settings), replacing its state.  \return SQZ_OK; SQZ_ERR_INVALID_PARAM (another format
 *  version, method, rank, or settings: logged, nothing changed), SQZ_ERR_CORRUPT (truncated or
 *  damaged: nothing changed), SQZ_ERR_NO_MEMORY. */
SQZ_API sqz_status_t sqz_state_load(sqz_comm_t *comm, const void *buf, size_t len);

/** sqz_state_save / sqz_state_load through a file (SQZ_ERR_IO when it cannot be written or
 *  read). */
SQZ_API sqz_status_t sqz_state_save_file(sqz_comm_t *comm, const char *path);
SQZ_API sqz_status_t sqz_state_load_file(sqz_comm_t *comm, const char *path);

/* ------------------------------------------------------------------------------------------ */
/* Layer layouts: what a flat buffer holds, for methods that work per layer (low-rank, L-GreCo) */
/* ------------------------------------------------------------------------------------------ */
/** One parameter inside a buffer: `rows * cols` elements from element `offset` (a 1-D or scalar
 *  tensor has rows = numel, cols = 1; a k-D tensor is seen as shape[0] x prod(shape[1:])). */
typedef struct sqz_layer {
    size_t   offset;
    size_t   rows;
    size_t   cols;
    uint64_t id;     /**< the parameter's identity, the same on every rank (e.g. its index in the
                          model + 1); 0: unknown.  When a buffer is first compressed, the
                          error-feedback residual of every layer whose id was last seen in another
                          registered buffer moves over (DDP rebuilds its buckets after the first
                          iteration: residuals survive it).  With SQZ_EF_STORAGE=fp32 (the
                          default) on the CPU path, and on the GPU path. */
} sqz_layer_t;

/** Records the layout of the buffer named `key` (the key of sqz_allreduce / sqz_allreduce_async)
 *  of `count` elements.  Layers must be sorted by offset, must not overlap, must lie inside
 *  [0, count), and have rows, cols >= 1; gaps are allowed (padding).  Registering again replaces
 *  the layout. \return SQZ_ERR_INVALID_PARAM (with a log line naming the bad layer) otherwise. */
SQZ_API sqz_status_t sqz_layout_register(sqz_comm_t *comm, uint64_t key, size_t count,
                                         const sqz_layer_t *layers, size_t nlayers);

/** \return the number of layers registered for (key, count), copying at most `cap` of them to
 *  `layers` (which may be NULL); 0 when none is registered. */
SQZ_API size_t sqz_layout_get(const sqz_comm_t *comm, uint64_t key, size_t count,
                              sqz_layer_t *layers, size_t cap);

/* ------------------------------------------------------------------------------------------ */
/* MoE token all-to-all (LSH-MoE, Nie et al. 2024)                                            */
/* ------------------------------------------------------------------------------------------ */
/* Counts and displacements below are in tokens (rows of `dim` elements), one entry per rank of
 * the communicator, as for MPI_Alltoallv: rank r's block goes to sendbuf + sdispls[r] * dim for
 * sendcounts[r] tokens, and rank r's tokens land at recvbuf + rdispls[r] * dim.  recvcounts[r]
 * must equal what rank r sends here.  Zero counts are allowed.  The block a rank sends itself is
 * copied exactly.  Calls on one communicator are serialized (thread-safe, one at a time); every
 * rank of the communicator must make the same sequence of calls. */

/** How the blocks of an all-to-all are coded. */
typedef enum {
    SQZ_MOE_EXACT = 0, /**< sent as they are */
    SQZ_MOE_DEDUP = 1, /**< identical rows sent once, with a row index per token: lossless,
                            bit-exact */
    SQZ_MOE_LSH   = 2  /**< tokens grouped by cross-polytope LSH bucket (SQZ_LSH_HASHES hash
                            functions into SQZ_LSH_DIM dimensions, from SQZ_SEED): one centroid
                            per bucket and a bucket index per token are sent; the receiver
                            rebuilds each token as its centroid.  Lossy; float32 only */
} sqz_moe_codec_t;

/** A token all-to-all-v of `dim`-element rows of dtype (float32, float16 or bfloat16 for EXACT
 *  and DEDUP; float32 for LSH), coded per destination block; a block is sent as it is whenever
 *  its coded form would not be smaller.  Payload sizes are exchanged first (one small
 *  all-to-all), then the payloads.  sendbuf and recvbuf must not overlap.
 *  \return SQZ_OK; SQZ_ERR_INVALID_PARAM (bad arguments, dim 0, LSH on a non-float32 dtype);
 *  SQZ_ERR_CORRUPT when a received block fails validation (the recv block of that peer is left
 *  untouched); SQZ_ERR_TRANSPORT. */
SQZ_API sqz_status_t sqz_moe_alltoallv(sqz_comm_t *comm, sqz_moe_codec_t codec,
                                       const void *sendbuf, const size_t *sendcounts,
                                       const size_t *sdispls, void *recvbuf,
                                       const size_t *recvcounts, const size_t *rdispls,
                                       size_t dim, sqz_dtype_t dtype);

/** The state a dispatch leaves for its combine and the backward passes: the layouts, each sent
 *  token's residual (x - centroid, float32, zero for tokens kept exact) and its centroid (the
 *  tokens of one centroid form a group), plus scratch of the sendbuf's size.  A handle is used by
 *  one thread at a time. */
typedef struct sqz_moe_handle sqz_moe_handle_t;

/** Dispatch: the all-to-all of float32 tokens (sendbuf, sendcounts, sdispls) to the experts'
 *  ranks (recvbuf, recvcounts, rdispls), coded with `codec`: SQZ_MOE_LSH for LSH-MoE (each
 *  received token is its centroid: the copies of one centroid are identical rows), DEDUP or EXACT
 *  to send the tokens as they are (residuals zero; the handle then makes every call below exact,
 *  e.g. to compare against an uncompressed MoE).  On SQZ_OK, *handle (owned by the caller, freed
 *  with sqz_moe_handle_free) keeps copies of the four count/displacement arrays and 4 n * dim
 *  floats (residuals, scratch), where n is the largest sdispls[r] + sendcounts[r]; the caller
 *  keeps ownership of every buffer.  Errors as sqz_moe_alltoallv (*handle NULL). */
SQZ_API sqz_status_t sqz_moe_dispatch(sqz_comm_t *comm, sqz_moe_codec_t codec,
                                      const float *sendbuf, const size_t *sendcounts,
                                      const size_t *sdispls, float *recvbuf,
                                      const size_t *recvcounts, const size_t *rdispls, size_t dim,
                                      sqz_moe_handle_t **handle);

/** Combine: sends the expert outputs (expert_out, laid out as the dispatch's recvbuf: recvcounts
 *  and rdispls, `dim` floats a token) back with exact de-duplication (the outputs of one
 *  centroid's copies are identical rows, so they travel once), and writes
 *      out[t] = E[t] + residual[t]          (Y = E(c) + (x - c), the paper's Eq. 5)
 *  laid out as the dispatch's sendbuf (sendcounts, sdispls).  The handle stays valid (combine may
 *  run again, e.g. for another output).  Errors as sqz_moe_alltoallv. */
SQZ_API sqz_status_t sqz_moe_combine(sqz_comm_t *comm, const sqz_moe_handle_t *handle,
                                     const float *expert_out, float *out);

/** Backward of combine, given grad_out = dL/dY (laid out as the dispatch's sendbuf).  Sends to
 *  the experts, in grad_expert_out (laid out as the dispatch's recvbuf), for each copy of a
 *  centroid the mean of dL/dY over that centroid's tokens: identical rows, de-duplicated on the
 *  wire, so the gradient all-to-all carries as many rows as the dispatch.  This is exact for
 *  whatever sums over a centroid's copies: an expert applied row by row to identical inputs has
 *  identical Jacobians at them, so its weight gradients and the per-centroid sums of its input
 *  gradients equal those of the exact per-token gradients (only their split among the copies
 *  differs).  When grad_x is not NULL it receives the gradient through the residual x - c:
 *  grad_out - centroid_mean(grad_out) (sendbuf layout).  Errors as sqz_moe_alltoallv. */
SQZ_API sqz_status_t sqz_moe_combine_backward(sqz_comm_t *comm, sqz_moe_handle_t *handle,
                                              const float *grad_out, float *grad_expert_out,
                                              float *grad_x);

/** Backward of dispatch, given grad_expert_in = dL/d(expert input) (laid out as the dispatch's
 *  recvbuf).  Sends it back de-duplicated (the copies of a centroid carry identical rows when the
 *  expert and combine_backward made them so; other rows travel as they are, lossless) and writes
 *  grad_x (sendbuf layout; gaps between blocks 0): each token gets the mean over its centroid's
 *  tokens of what came back, because c = mean(x of its tokens) gives dL/dx_t = (1/n) sum over
 *  the copies.  dL/dx of the whole layer is this plus combine_backward's grad_x.  Errors as
 *  sqz_moe_alltoallv. */
SQZ_API sqz_status_t sqz_moe_dispatch_backward(sqz_comm_t *comm, sqz_moe_handle_t *handle,
                                               const float *grad_expert_in, float *grad_x);

/** out[t] = the mean of g over the tokens that shared token t's centroid (t itself for tokens
 *  sent exact), g and out laid out as the dispatch's sendbuf (may not alias the handle's
 *  scratch; g and out may alias).  The backward calls above are built on it. */
SQZ_API sqz_status_t sqz_moe_centroid_mean(sqz_moe_handle_t *handle, const float *g, float *out);

/** \return tokens sent to other ranks by the dispatch, and in *centroids (may be NULL) the rows
 *  sent for them: centroids / tokens is its compression rate. */
SQZ_API size_t sqz_moe_handle_tokens(const sqz_moe_handle_t *handle, size_t *centroids);

/** Frees a handle.  Accepts NULL. */
SQZ_API void sqz_moe_handle_free(sqz_moe_handle_t *handle);

/** Totals of one codec's token all-to-alls on this process (every communicator of ctx). */
typedef struct sqz_moe_stats {
    uint64_t calls;            /**< token all-to-alls coded with it */
    uint64_t tokens;           /**< tokens sent to other ranks */
    uint64_t rows;             /**< rows sent for them (centroids, distinct rows, or the tokens) */
    uint64_t bytes_in;         /**< bytes of those tokens */
    uint64_t bytes_wire;       /**< bytes of the blocks sent for them (headers included) */
    double   seconds_compress; /**< encode and decode */
    double   seconds_comm;     /**< the exchanges */
} sqz_moe_stats_t;

/** Copies the totals of `codec` (all zero for a NULL ctx or an unknown codec). */
SQZ_API void sqz_moe_stats_get(const sqz_ctx_t *ctx, sqz_moe_codec_t codec, sqz_moe_stats_t *out);

/* ------------------------------------------------------------------------------------------ */
/* GPU path: device buffers, NCCL, stream-ordered                                             */
/* ------------------------------------------------------------------------------------------ */
/** \return 1 when this library was built with CUDA and NCCL support, 0 otherwise.  (Whether a
 *  device is present is only known when a communicator is created.) */
SQZ_API int sqz_gpu_built(void);

/** Creates an engine over an existing NCCL communicator (`nccl_comm` is an ncclComm_t).  NCCL is
 *  not linked: the library uses the libnccl.so.2 already loaded in the process (PyTorch's), or
 *  loads it.  Compares the ranks' settings (collective; synchronizes the device once): on a
 *  mismatch every rank gets SQZ_ERR_MISMATCH. \return SQZ_ERR_NOT_SUPPORTED when the library was
 *  built without CUDA/NCCL or no device is usable. */
SQZ_API sqz_status_t sqz_comm_create_nccl(sqz_ctx_t *ctx, void *nccl_comm, sqz_comm_t **comm);

/** N ranks as threads of this process on one GPU: the device counterpart of sqz_local_group, for
 *  tests and for simulating N workers on one device.  Each rank's thread creates its communicator
 *  with sqz_comm_create_device_group and calls the GPU path (sqz_allreduce_async, ...) with its own
 *  stream; data moves between the ranks' buffers by device copies ordered by events.  As with NCCL,
 *  every rank must make the same collective calls, each from its own thread; a call returns once
 *  its peers have posted theirs.  Needs a GPU build and a device, not NCCL. */
typedef struct sqz_device_group sqz_device_group_t;

/** \return SQZ_OK; SQZ_ERR_INVALID_PARAM (nranks < 1 or > 4096); SQZ_ERR_NOT_SUPPORTED (no such
 *  device, or a library built without CUDA); SQZ_ERR_NO_MEMORY. */
SQZ_API sqz_status_t sqz_device_group_create(int nranks, int device, sqz_device_group_t **group);

/** Frees the group, after every communicator made on it.  Accepts NULL. */
SQZ_API void sqz_device_group_destroy(sqz_device_group_t *group);

/** Rank `rank`'s engine on the group (collective over the group's ranks, as
 *  sqz_comm_create_nccl: the settings are compared, SQZ_ERR_MISMATCH on every rank when they
 *  differ). */
SQZ_API sqz_status_t sqz_comm_create_device_group(sqz_ctx_t *ctx, sqz_device_group_t *group,
                                                  int rank, sqz_comm_t **comm);

/** Compressed all-reduce of device buffers, enqueued on `stream` (a cudaStream_t; NULL is the
 *  legacy default stream), returning at once: no host synchronization on the steady-state path
 *  (the first call of a buffer allocates its workspace).  sendbuf NULL means in place.  Semantics
 *  as sqz_allreduce (bit-identical output on every rank, SUM or AVG as requested); calls that are
 *  not eligible run the dense ncclAllReduce on the same stream.  When some rank's input holds NaN
 *  or Inf, every rank's output is NaN (an AMP grad scaler then skips the step, as it would for the
 *  dense sum) and the residuals are restored.  Randomness (top-k's threshold sample, stochastic
 *  rounding) is drawn from (SQZ_SEED, key, call count): the same key sequence gives the same
 *  bits. */
SQZ_API sqz_status_t sqz_allreduce_async(sqz_comm_t *comm, const void *sendbuf, void *recvbuf,
                                         size_t count, sqz_dtype_t dtype, sqz_op_t op,
                                         uint64_t key, void *stream);

/** Compressed reduce-scatter of device buffers (rank r receives elements [r * recvcount,
 *  (r + 1) * recvcount) of the reduction of sendbuf's nranks * recvcount elements), enqueued on
 *  `stream`.  Compressed only when the payloads are smaller than the dense reduce-scatter's
 *  traffic; otherwise ncclReduceScatter runs on the same stream. */
SQZ_API sqz_status_t sqz_reduce_scatter_async(sqz_comm_t *comm, const void *sendbuf,
                                              void *recvbuf, size_t recvcount, sqz_dtype_t dtype,
                                              sqz_op_t op, uint64_t key, void *stream);

/** For bindings that make their own NCCL communicator: fills `id` (NCCL_UNIQUE_ID_BYTES = 128
 *  bytes) on one rank, to be broadcast to the others. */
SQZ_API sqz_status_t sqz_nccl_get_unique_id(void *id, size_t len);
/** ncclCommInitRank through the resolved NCCL (on the current CUDA device). */
SQZ_API sqz_status_t sqz_nccl_comm_init(int nranks, const void *id, size_t len, int rank,
                                        void **nccl_comm);
/** ncclCommDestroy through the resolved NCCL.  Accepts NULL. */
SQZ_API void sqz_nccl_comm_destroy(void *nccl_comm);

/* ------------------------------------------------------------------------------------------ */
/* Statistics                                                                                 */
/* ------------------------------------------------------------------------------------------ */
typedef struct sqz_stats {
    uint64_t calls;             /**< calls seen (compressed, fallback and passthrough) */
    uint64_t calls_compressed;  /**< calls that went through a compressor */
    uint64_t calls_fallback;    /**< eligible calls that went dense (warm-up excluded) */
    uint64_t calls_warmup;      /**< eligible calls sent dense during warm-up */
    uint64_t calls_nonfinite;   /**< fallbacks because some rank's input was not finite */
    uint64_t bytes_in;          /**< input bytes of compressed calls */
    uint64_t bytes_wire;        /**< payload bytes this rank sent for them */
    double   seconds_compress;  /**< time in compress and decode */
    double   seconds_comm;      /**< time in the transport */
    double   rel_error_sum;     /**< sum over compressed calls of ||x - x_hat|| / ||x|| */
    /* Per-buffer states (residuals, estimators), over every communicator: */
    uint64_t residuals_dropped; /**< calls whose buffer's residual was dropped because its
                                     identity was uncertain (a call sequence being learned again,
                                     a buffer whose address moved where several share a size) */
    uint64_t state_evictions;   /**< states freed before their communicator: stale ones (buffers
                                     not seen for two periods of the call pattern) and those over
                                     SQZ_STATE_MAX_BYTES */
    uint64_t state_bytes;       /**< memory the states hold now, as every rank counts it (a
                                     server residual as count / ranks elements, whatever this
                                     rank's reduced chunk holds: SQZ_STATE_MAX_BYTES compares it) */
} sqz_stats_t;

/** Copies the context-wide totals (all communicators, all methods). */
SQZ_API void sqz_stats_get(const sqz_ctx_t *ctx, sqz_stats_t *out);

/** Writes the stats of this process as JSON (keys: rank, method, calls, calls_compressed,
 *  calls_fallback, calls_warmup, calls_nonfinite, bytes_in, bytes_wire, seconds_compress,
 *  seconds_comm, rel_error, methods{name: {...}}).  In `path`, "%r" is replaced by `rank`. */
SQZ_API sqz_status_t sqz_stats_write_json(const sqz_ctx_t *ctx, const char *path, int rank);

/** The same JSON as text: writes at most len - 1 characters and a NUL into buf (when buf is not
 *  NULL and len > 0).  Under SQZ_ADAPT it holds "adapt": the latest per-layer levels of each
 *  buffer size, with the error budget and the bytes against the uniform setting.
 *  \return the full length of the text (call with buf = NULL to size the buffer), 0 on error. */
SQZ_API size_t sqz_stats_json(const sqz_ctx_t *ctx, int rank, char *buf, size_t len);

/** Prints a summary table.  `per_rank` holds nranks consecutive sqz_stats_t per method row as
 *  returned by sqz_stats_export(); rank 0 of an interposed job calls it at finalize. */
SQZ_API void sqz_stats_print_summary(const sqz_ctx_t *ctx, FILE *out, const double *all_ranks,
                                     int nranks);

/** Flattens the stats into `out` (sqz_stats_export_len() doubles), so that an interposer can
 *  gather them from every rank with one collective. */
SQZ_API size_t sqz_stats_export_len(const sqz_ctx_t *ctx);
SQZ_API void   sqz_stats_export(const sqz_ctx_t *ctx, double *out);

/* ------------------------------------------------------------------------------------------ */
/* Introspection (squeeze_info)                                                               */
/* ------------------------------------------------------------------------------------------ */
/** Calls fn once per parameter known to the context (core and every loaded compressor), in
 *  table order.  `current` is the value in force; `source` is "default", "env", "file" or "api". */
typedef void (*sqz_param_visit_fn)(void *arg, const char *owner, const sqz_param_def_v1_t *def,
                                   const char *current, const char *source);
SQZ_API void sqz_ctx_visit_params(const sqz_ctx_t *ctx, sqz_param_visit_fn fn, void *arg);

/** Calls fn once per registered compressor. `origin` is "built-in" or the plugin's path. */
typedef void (*sqz_compressor_visit_fn)(void *arg, const sqz_compressor_v1_t *c,
                                        const char *origin);
SQZ_API void sqz_ctx_visit_compressors(const sqz_ctx_t *ctx, sqz_compressor_visit_fn fn, void *arg);

/** \return the name of the selected method (SQZ_METHOD). */
SQZ_API const char *sqz_ctx_method(const sqz_ctx_t *ctx);

#ifdef __cplusplus
}
#endif
#endif /* SQUEEZE_H */
