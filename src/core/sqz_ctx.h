/* Internal definitions of the library context and of a communicator's engine. */
#ifndef SQZ_CTX_H
#define SQZ_CTX_H

#include <pthread.h>

#include <squeeze.h>

#include "sqz_moe.h"
#include "sqz_param.h"
#include "sqz_registry.h"
#include "sqz_state.h"

typedef enum {
    SQZ_EF_EF14 = 0,
    SQZ_EF_NONE = 1,
    SQZ_EF_EF21 = 2,
    SQZ_EF_ECONTROL = 3,
    SQZ_EF_AUTO = 4 /* SQZ_EF=auto: resolved per method into ctx->ef */
} sqz_ef_mode_t;
typedef enum { SQZ_IALLREDUCE_EAGER = 0, SQZ_IALLREDUCE_PASSTHROUGH = 1 } sqz_iallreduce_mode_t;
typedef enum { SQZ_EXCHANGE_MODEL_BYTES = 0, SQZ_EXCHANGE_MODEL_TIME = 1 } sqz_exchange_model_t;

/* SQZ_SPARSE_ALGO: the exchange of the sparsifiers (sqz_policy.c). */
typedef enum {
    SQZ_SPARSE_AUTO = 0,
    SQZ_SPARSE_ALLGATHER,
    SQZ_SPARSE_SPLIT,
    SQZ_SPARSE_SCATTER
} sqz_sparse_algo_t;
typedef enum { SQZ_HIER_AUTO = 0, SQZ_HIER_ON = 1, SQZ_HIER_OFF = 2 } sqz_hier_mode_t;

/** The core's typed parameters (table in sqz_ctx.c). */
typedef struct sqz_core_params {
    const char *method;
    int         ef;            /* sqz_ef_mode_t */
    size_t      min_bytes;
    int64_t     warmup_steps;
    const char *stats;         /* "", "summary", "json:PATH" */
    int         log;           /* sqz_log_level_t */
    const char *plugins;
    const char *config;
    int64_t     seed;
    int         iallreduce;    /* sqz_iallreduce_mode_t */
    int         check_settings;
    int         hier;          /* sqz_hier_mode_t */
    const char *host_id;       /* SQZ_HOST_ID: this rank's host, or "" (the hostname) */
    int64_t     threads;
    int64_t     p2p_window;    /* SQZ_P2P_WINDOW; 0: every send at once; -1: auto */
    int         pipeline;
    double      econtrol_eta;
    double      dgc_momentum;
    int         dgc_nesterov;
    int         dgc_masking;
    double      dgc_clip;
    int         ef_storage;    /* sqz_ef_storage_t */
    double      ef_decay;      /* SQZ_EF_DECAY; 0: auto */
    double      sparse_dense_switch;
    int         sparse_algo;   /* sqz_sparse_algo_t */
    int         entropy;       /* sqz_entropy_mode_t */
    double      link_gbps;
    int         exchange_model;  /* sqz_exchange_model_t */
    double      intra_gbps;
    double      link_latency_us;
    double      kernel_gbps;     /* 0: measured */
    const char *layout;        /* SQZ_LAYOUT: a layout file, or "" */
    size_t      layout_chunk;  /* pseudo-layer size */
    int         adapt;         /* 0 none, 1 lgreco */
    int64_t     adapt_period;
    double      adapt_bytes;   /* 0: fewest bytes within the error budget; > 0: least error */
    int         adapt_stat;    /* 0 error, 1 relative (SQZ_ADAPT_STAT) */
    int         moe;           /* sqz_moe_mode_t */
    const char *moe_cycle;
    int64_t     moe_dim;
    int64_t     lsh_hashes;
    int64_t     lsh_dim;
    int64_t     lsh_sample;
    size_t      state_max_bytes; /* 0: stale states only */
    double      agree_timeout;   /* seconds */
    const char *state_file;      /* SQZ_STATE_FILE, or "" */
    double      stall_seconds;   /* SQZ_STALL_SECONDS */
} sqz_core_params_t;

/** The exchange a compressed call took (stats key "algorithms"). */
typedef enum {
    SQZ_ALGO_ALLGATHER = 0,     /* sparse all-gather over the transport's collectives */
    SQZ_ALGO_ALLGATHER_P2P,     /* the same, point-to-point */
    SQZ_ALGO_REDUCE_SCATTER,    /* scatter-reduce / all-gather over collectives */
    SQZ_ALGO_REDUCE_SCATTER_P2P,/* the same, pipelined point-to-point */
    SQZ_ALGO_DENSE_SWITCH,      /* the cost model found the dense all-reduce cheaper */
    SQZ_ALGO_SPLIT_ALLGATHER,   /* SparCML's split all-gather: sparse scatter-reduce, exact all-gather */
    SQZ_ALGO_NCCL_ALLGATHER,    /* GPU path: fixed-size payloads through ncclAllGather */
    SQZ_ALGO_SUMMABLE,          /* the compressor's messages through the native SUM all-reduce */
    SQZ_ALGO_COUNT
} sqz_algo_t;

extern const char *const sqz_algo_names[SQZ_ALGO_COUNT];

/** Per-method statistics row (one per registry entry). */
typedef struct sqz_method_stats {
    sqz_stats_t s;
    uint64_t    bytes_sent; /* bytes this rank sent to peers for compressed calls */
    uint64_t    algo_calls[SQZ_ALGO_COUNT];
    /* SQZ_EXCHANGE_MODEL=time: compressed calls with a prediction, the seconds predicted for
     * them and the seconds they took (the exchange, compression included) */
    uint64_t    calls_predicted;
    double      seconds_predicted, seconds_measured;
} sqz_method_stats_t;

struct sqz_ctx {
    sqz_core_params_t          p;
    sqz_config_t              *cfg;       /* private copy: STRING params point into it */
    sqz_registry_t             reg;
    void                     **configs;   /* one parsed config per registry entry */
    const sqz_compressor_v1_t *method;
    const sqz_device_ops_v2_t *method_device; /* a v2 plugin's device operations, or NULL */
    size_t                     method_index;
    /* The error feedback in force on host buffers (sqz_ef_mode_t, never AUTO), and whether it
     * came from SQZ_EF=auto (then powersgd drops it on pseudo-layers). */
    int                        ef;
    int                        ef_auto;
    /* The fraction of the ef14 residuals kept between calls (SQZ_EF_DECAY resolved: 1 but for
     * methods that ask for damping under SQZ_EF=auto). */
    float                      ef_decay;
    /* The method's descriptor says classic error feedback diverges with it (sqz_ef_allreduce,
     * which always keeps it, warns). */
    int                        ef14_diverges;
    pthread_mutex_t            lock;      /* guards the stats */
    uint64_t                   calls_passthrough;
    /* Device buffers: why the GPU path declines the method or an option (sqz_device_decline;
     * set by the GPU engine, NULL when it runs them), and the calls that went dense for it
     * (also counted as passthrough). */
    const char                *device_declined;
    uint64_t                   calls_declined;
    sqz_method_stats_t        *stats;     /* reg.n rows */
    /* GPU communicators whose device-side counters must be read before the stats are (see
     * sqz_ctx_flush_gpu_stats); guarded by lock.  Set only by the GPU engine. */
    struct sqz_comm          **gpu_comms;
    size_t                     ngpu_comms;
    struct sqz_layout_file    *layout_file; /* SQZ_LAYOUT, parsed at creation, or NULL */
    struct sqz_adapt_record   *adapt;       /* src/adapt: the latest choice per buffer size */
    size_t                     nadapt;
    /* MoE token all-to-alls: SQZ_MOE_CYCLE parsed, and one stats row per codec (guarded by lock) */
    signed char                moe_cycle[SQZ_MOE_CYCLE_MAX];
    int                        moe_ncycle;
    sqz_moe_stats_t            moe_stats[SQZ_MOE_NCODECS];
    uint64_t                   moe_passthrough;
    /* Per-buffer states (guarded by lock): residuals dropped because a call's identity was
     * uncertain, states freed before their communicator, and the memory all of them hold. */
    uint64_t                   residuals_dropped;
    uint64_t                   state_evictions;
    int64_t                    state_bytes, state_bytes_peak;
    /* Every rank's settings are known to be equal (the MPI interposer's start-up agreement):
     * communicators skip their own check. */
    int                        settings_agreed;
};

struct sqz_gpu_comm;
struct sqz_layout_entry;
struct sqz_wbuf;

/** A communicator's engine. */
/* What the cost model (sqz_policy.c) knows of a communicator: the hosts the ranks span and the
 * most ranks on one (0: unknown, taken as one rank per host), how many such communicators share a
 * host's link (a hierarchy's exchanges between hosts, one per local rank), and the rates agreed at
 * the first compressed call (calibrated: 1 once they are). */
typedef struct sqz_comm_cost {
    int    hosts, per_host;
    int    link_share; /* exchanges running at once on each host's link (0: 1) */
    double compress_Bps, decode_Bps;
    double link_Bps, latency_s; /* measured (SQZ_LINK_GBPS=0); 0: from the settings */
    int    calibrated;
} sqz_comm_cost_t;

/* What a device communicator attaches (src/cuda/sqz_gpu_engine.c): its engine's entry points,
 * so that the core keeps no CUDA dependency. */
struct sqz_wbuf;
typedef struct sqz_device_ops {
    void (*destroy)(struct sqz_comm *comm);
    /* Checkpoints of the device engine's buffers (sqz_state_io.c): save into the sink (a sizing
     * pass when its base is NULL), load from the bytes a save wrote. */
    sqz_status_t (*state_save)(struct sqz_comm *comm, struct sqz_wbuf *w);
    sqz_status_t (*state_load)(struct sqz_comm *comm, const void *buf, size_t len);
    /* sqz_ef_allreduce / sqz_ef_forget on a device communicator */
    sqz_status_t (*ef_allreduce)(struct sqz_comm *comm, void *buf, size_t count,
                                 sqz_dtype_t dtype, sqz_op_t op, uint64_t key, void *stream);
    void (*ef_forget)(struct sqz_comm *comm, uint64_t key);
    /* the device-side counters into the context's stats */
    void (*flush_stats)(struct sqz_comm *comm);
} sqz_device_ops_t;

/* The agreement area a rank takes per rank of its communicator (sqz_scratch_t.agreebuf). */
#define SQZ_AGREE_BYTES (2 * sizeof(void *) + sizeof(size_t) + 1)

/* Bytes of the scratch buffers an exchange needs (sqz_coll_reserve). */
typedef struct sqz_scratch_need {
    size_t send, recv, chunk, task, shared;
} sqz_scratch_need_t;

/* A communicator's scratch, grown on demand and kept: no allocation on the steady-state path
 * (sqz_scratch_reserve); freed with the communicator. */
typedef struct sqz_scratch {
    unsigned char *sendbuf, *recvbuf;
    size_t         sendcap, recvcap;
    float         *chunkbuf;
    size_t         chunkcap;
    unsigned char *taskbuf;   /* per-chunk results of pool tasks */
    size_t         taskcap;
    size_t        *counts;    /* 7 * nranks size_t for the algorithms */
    unsigned char *agreebuf;  /* sqz_coll_reserve's agreement: 2 nranks requests, nranks sizes
                                 and nranks flags (SQZ_AGREE_BYTES each), made with the comm */
    const float  **sharedptr; /* nranks: each chunk's agreed shared values, or NULL */
    float         *sharedbuf; /* shared values of the compressors that need them */
    size_t         sharedcap;
    float         *resbuf;    /* the expanded compact residual of the current call */
    size_t         rescap;
    float         *efbuf;     /* ef21/econtrol: message and residual, 2 * n floats; DGC: message
                                 (and Nesterov's new momentum) */
    size_t         efcap;
    sqz_layer_t   *pseudo;    /* pseudo-layers of the current call */
    size_t         pseudocap;
    double        *adaptbuf;  /* SQZ_ADAPT: a probing call's errors */
    size_t         adaptcap;
    /* What every rank of the communicator has agreed it holds (sqz_coll_reserve): the same on
     * every rank, and at most what each one's buffers hold. */
    sqz_scratch_need_t agreed;
} sqz_scratch_t;

struct sqz_comm {
    sqz_ctx_t         *ctx;
    sqz_transport_t    t;
    int                rank, nranks;
    void              *cstate;           /* the method's compressor state (= cstates[0]) */
    void             **cstates;          /* one per pool thread: a state is never shared */
    struct sqz_pool   *pool;             /* SQZ_THREADS workers, or NULL */
    struct sqz_entropy **entropy;        /* one zstd stage per pool thread */
    sqz_state_store_t  store;
    struct sqz_callseq *seq;             /* identities of intercepted calls (sqz_callseq.h) */
    size_t             state_bytes_seen; /* store.bytes last added to ctx->state_bytes */
    pthread_mutex_t    lock;             /* one collective at a time per communicator */
    int                settings_checked;
    int                p2p;              /* the transport has isend/irecv/test/wait */
    sqz_scratch_t      scratch;
    /* layer layouts registered through sqz_layout_register (sqz_layout.c) */
    struct sqz_layout_entry *layouts;
    size_t             nlayouts;
    /* SQZ_ADAPT with an all-gather method: one segmented composite per pool thread
     * (src/adapt/sqz_adapt_seg.h), or NULL */
    struct sqz_seg   **segs;
    /* GPU path (sqz_comm_create_nccl): the engine over an NCCL communicator and its entry
     * points, or NULL */
    struct sqz_gpu_comm    *gpu;
    const sqz_device_ops_t *device;
    int                gpu_abandon;      /* destroy without touching the device (after abort) */
    sqz_moe_comm_t    *moe;              /* MoE token all-to-all state, or NULL (sqz_moe.c) */
    sqz_comm_cost_t    cost;
    struct sqz_hier   *hier;       /* sqz_comm_create_hier: the host's transport, or NULL */
};

/** Per-call accounting filled by the collective algorithms. */
typedef struct sqz_call_stats {
    size_t bytes_wire;   /* compressed bytes of this rank's contribution (stage 0) */
    size_t bytes_sent;   /* bytes sent to peers */
    double t_compress;   /* seconds in compress and decode */
    double t_comm;       /* seconds in the transport */
    double norm2_in, norm2_err;
    int    nonfinite;    /* some rank's input was not finite */
    int    algo;         /* sqz_algo_t */
    double predicted;    /* seconds the cost model predicted for the exchange (0: not asked) */
    double t_exchange;   /* seconds the exchange took (set by the engine with a prediction) */
    int    exact;        /* the call was sent exactly (a compressor's dense start): warm-up */
} sqz_call_stats_t;

double sqz_time_now(void);

/** \return the definition of the parameter `name` (without SQZ_: a core one or one of a registered
 *  compressor), or NULL; *config (when config is not NULL) receives the typed struct its value
 *  lives in (NULL while the context is being created). */
const sqz_param_def_v1_t *sqz_ctx_find_param(const sqz_ctx_t *ctx, const char *name,
                                              const void **config);

/** \return the current value of the numeric parameter `name` (INT, DOUBLE, SIZE; BOOL and ENUM
 *  as their index) of the core or of a compressor, or dflt when there is no such parameter. */
double sqz_ctx_param_num(const sqz_ctx_t *ctx, const char *name, double dflt);

/** \return 1 when the parameter `name` of the core or of a compressor is set to `value` (as
 *  squeeze_info writes it: an ENUM's choice, a number), 0 otherwise or when there is none. */
int sqz_ctx_param_is(const sqz_ctx_t *ctx, const char *name, const char *value);

/** Reads the device-side counters of every GPU communicator of ctx into its stats (synchronizes
 *  with the device; called by the stats readers, never on a collective's path). */
void sqz_ctx_flush_gpu_stats(sqz_ctx_t *ctx);

/** Re-counts `calls` calls of the method at `index`, recorded as compressed when they were
 *  enqueued, as non-finite fallbacks (the GPU path learns it from a device counter later). */
void sqz_stats_nonfinite_found(sqz_ctx_t *ctx, size_t index, uint64_t calls);

/** Moves residuals across a bucket rebuild: for each layer of the buffer (key, count) that has an
 *  id, finds the most recently registered other buffer holding the same id (and size) and calls
 *  fn(arg, src_key, src_count, src_offset, dst_offset, len), which moves that slice of the
 *  source's residual into the new buffer's and zeroes it at the source.  Called with comm->lock
 *  held, when the buffer's residual is first created.  \return the number of layers moved. */
typedef void (*sqz_carry_fn)(void *arg, uint64_t src_key, size_t src_count, size_t src_offset,
                             size_t dst_offset, size_t len);
size_t sqz_layout_carry(const sqz_comm_t *comm, uint64_t key, size_t count, sqz_carry_fn fn,
                        void *arg);

/** The layers of buffer (key, n) for the per-layer methods: its registered layout, else the
 *  SQZ_LAYOUT file's for n elements, else pseudo-layers (chunks of SQZ_LAYOUT_CHUNK elements,
 *  each a near-square matrix).  *digest identifies the layout.  Valid until the next call, with
 *  comm->lock held.  \return NULL (and *nlayers 0) only when out of memory. */
const sqz_layer_t *sqz_layout_resolve(sqz_comm_t *comm, uint64_t key, size_t n, size_t *nlayers,
                                      uint64_t *digest);

/** Whether buffer (key, n) has a real layout (registered, or in the SQZ_LAYOUT file), not
 *  pseudo-layers.  Same answer on every rank when the layouts were registered alike. */
int sqz_layout_known(const sqz_comm_t *comm, uint64_t key, size_t n);

/** Frees the layouts of a communicator (sqz_layout.c). */
void sqz_layouts_fini(sqz_comm_t *comm);

/** Compares the settings digest of every rank (collective, once per communicator; later calls
 *  return the first answer).  \return SQZ_OK, or SQZ_ERR_MISMATCH on every rank after each rank
 *  has logged which settings differ from rank 0's. */
sqz_status_t sqz_comm_check_settings(sqz_comm_t *comm);

/** The SUM all-reduce of a hierarchy's shard over comm (src/coll/sqz_coll_hier.h; out may equal
 *  in, and with key 0 the input's address names the buffer's state, as the caller's buffer), or
 *  with block > 0 its reduce-scatter (n = block x comm's ranks; out is this rank's block and
 *  names the state): compressed when `eligible` (the whole call's eligibility), else dense and
 *  counted as passed through (a reduce-scatter then returns SQZ_ERR_NOT_SUPPORTED: its caller
 *  does not get here); `dense` (some shard of the call holds NaN or Inf, which comm's other
 *  ranks may not see) sends fallback frames, so that every rank of comm goes dense together and
 *  keeps its residual.  The call takes its place in the buffer's call sequence either way. */
sqz_status_t sqz_engine_shard(sqz_comm_t *comm, const float *in, float *out, size_t n,
                              size_t block, uint64_t key, int eligible, int dense);

/** Brings the context's total of per-buffer state memory (stats state_bytes, state_bytes_peak) up
 *  to date with this communicator's: `bytes` is what it holds now (0 when it goes away). */
void sqz_comm_account_state(sqz_comm_t *comm, size_t bytes);

/** Grows a scratch buffer to at least `need` bytes (kept across calls). */
sqz_status_t sqz_scratch_reserve(void **buf, size_t *cap, size_t need);

/** Whether the method's query takes a call of count elements (dtype, op, where its buffers are:
 *  SQZ_MEMORY_HOST or SQZ_MEMORY_DEVICE, and whether it is a reduce-scatter); 0 past 2^32
 *  elements (payload indices are 32-bit).  The size threshold is the caller's. */
int sqz_comm_method_takes(const sqz_comm_t *comm, size_t count, sqz_dtype_t dtype, sqz_op_t op,
                          int memory, int reduce_scatter);

/** Records one call of the method at `index` in the stats. kind: 'c' compressed, 'f' fallback,
 *  'w' warm-up. */
void sqz_stats_record(sqz_ctx_t *ctx, size_t index, int kind, size_t bytes_in,
                      const sqz_call_stats_t *cs);

#endif
