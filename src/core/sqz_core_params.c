/* The core parameters: one declarative table (name, type, default, bounds, choices, where the
 * value goes, help), with a scope column: JOB parameters change what goes on the wire or which
 * collective a rank enters, and must be equal on every rank (the settings check compares them);
 * RANK parameters (logging, statistics, where the configuration came from) may differ.
 * Compressors declare theirs in their own descriptor: all of the selected method's are JOB. */
#include "config.h"

#include <stddef.h>
#include <string.h>

#include "sqz_core_params.h"
#include "sqz_ctx.h"

#define CORE(field) offsetof(sqz_core_params_t, field)
#define JOB(...)    {SQZ_SCOPE_JOB, {__VA_ARGS__}}
#define RANK(...)   {SQZ_SCOPE_RANK, {__VA_ARGS__}}

typedef struct sqz_core_param {
    sqz_param_scope_t  scope;
    sqz_param_def_v1_t def;
} sqz_core_param_t;

static const sqz_core_param_t sqz_core_params[] = {
    JOB("METHOD", SQZ_PARAM_STRING, "none", 0, 0, NULL, CORE(method),
         "compressor applied to eligible all-reduces (see the compressor list); none passes them "
         "through exactly and only counts them"),
    JOB("EF", SQZ_PARAM_ENUM, "auto", 0, 0, "ef14|none|ef21|econtrol|auto", CORE(ef),
         "error feedback: ef14 keeps the compression residual of each buffer and adds it to the next "
         "call (classic EF-SGD); none drops it; ef21 sends the compressed change of each rank's "
         "gradient estimator and returns the shared estimator (EF21); econtrol is EF21 with a fed-back "
         "error term scaled by SQZ_ECONTROL_ETA (EControl).  auto gives each method what converges "
         "for it at the step sizes dense SGD takes (docs/methods.md): none for the unbiased "
         "quantizers (qsgd, terngrad), rand-k and the exact methods, ef21 for the sparsifiers that "
         "keep a small fraction (topk, fedzip), ef14 for quant and sign (damped: SQZ_EF_DECAY), and for powersgd ef14 on buffers "
         "with a layout and none on pseudo-layers.  ef21 and econtrol keep 2 and 3 estimators of "
         "the buffer's size per rank"),
    JOB("EF_STORAGE", SQZ_PARAM_ENUM, "fp32", 0, 0, "fp32|bf16|int8", CORE(ef_storage),
         "how the ef14 residual is kept between calls: fp32, or bf16 (half the memory) or int8 with a "
         "scale per 256 elements (a quarter), whose rounding is lost from the error feedback"),
    JOB("EF_DECAY", SQZ_PARAM_DOUBLE, "0", 0, 1, NULL, CORE(ef_decay),
         "the fraction of the ef14 residuals (worker and server) kept from one call to the next: 1 "
         "keeps them whole (classic error feedback), less damps them; 0 (auto): 0.8 for the methods "
         "whose classic error feedback oscillates at the largest steps dense SGD takes (sign, under "
         "SQZ_EF=auto), 1 for the others.  Host and device buffers; sqz_ef_allreduce keeps them whole"),
    JOB("ECONTROL_ETA", SQZ_PARAM_DOUBLE, "0.01", 0, 1, NULL, CORE(econtrol_eta),
         "EControl's feedback strength eta in [0, 1] (0: the EF21 estimator); keep it near the "
         "compressor's contraction (about the density for top-k): larger values diverge"),
    JOB("MIN_BYTES", SQZ_PARAM_SIZE, "64K", 0, 1099511627776.0, NULL, CORE(min_bytes),
         "all-reduces smaller than this pass through uncompressed"),
    JOB("WARMUP_STEPS", SQZ_PARAM_INT, "0", 0, 1e12, NULL, CORE(warmup_steps),
         "dense calls per buffer before compression starts"),
    RANK("STATS", SQZ_PARAM_STRING, "", 0, 0, NULL, CORE(stats),
         "statistics at finalize: 'summary' prints a table on rank 0, 'json:PATH' writes one JSON "
         "file per rank (%r in PATH is replaced by the rank)"),
    RANK("LOG", SQZ_PARAM_ENUM, "warn", 0, 0, "error|warn|info|debug", CORE(log),
         "log level (stderr)"),
    RANK("PLUGINS", SQZ_PARAM_STRING, "", 0, 0, NULL, CORE(plugins),
         "extra compressor plugins: shared objects exporting sqz_compressor_v2 (or v1), separated by ':' or ','"),
    RANK("CONFIG", SQZ_PARAM_STRING, "", 0, 0, NULL, CORE(config),
         "a file of NAME = value lines read before the environment (environment variables win)"),
    RANK("STALL_SECONDS", SQZ_PARAM_DOUBLE, "5", 0.1, 86400, NULL, CORE(stall_seconds),
         "under the MPI interposer: seconds a compressed exchange waits for a peer before it looks "
         "where that peer is (an RMA read); a peer in another collective (a float all-reduce of "
         "another count, which its count kept uncompressed) stops the job with a message naming "
         "both ranks, a peer still computing is waited for"),
    RANK("STATE_FILE", SQZ_PARAM_STRING, "", 0, 0, NULL, CORE(state_file),
         "under the MPI interposer: a file (%r is replaced by the rank) that holds the "
         "error-feedback state (residuals, estimators, warm starts, call counters) of every "
         "communicator; read at start when it exists, written at MPI_Finalize and at the next "
         "compressed call after a SIGUSR1, so that a job restarted from its checkpoint continues "
         "as it would have"),
    RANK("AGREE_TIMEOUT", SQZ_PARAM_DOUBLE, "6", 0.1, 86400, NULL, CORE(agree_timeout),
         "seconds the ranks wait for each other at Squeeze's start-up agreement (under the MPI "
         "interposer: every rank reports whether its configuration is valid and what its settings "
         "are); a rank that does not report in time runs without the interposer, and the job stops "
         "with a message naming it"),
    JOB("SEED", SQZ_PARAM_INT, "42", 0, 9007199254740991.0, NULL, CORE(seed),
         "seed of every random choice (stochastic rounding, sampling); must agree across ranks"),
    JOB("IALLREDUCE", SQZ_PARAM_ENUM, "eager", 0, 0, "eager|passthrough", CORE(iallreduce),
         "MPI_Iallreduce: eager runs the compressed all-reduce at the call and returns a completed "
         "request; passthrough leaves non-blocking all-reduces dense"),
    JOB("CHECK_SETTINGS", SQZ_PARAM_BOOL, "1", 0, 0, NULL, CORE(check_settings),
         "compare the settings of all ranks (at MPI_Init under the MPI interposer, at the creation "
         "of each communicator elsewhere): any difference in a setting that changes the exchange "
         "stops the job, every rank saying what differs; 0 on every rank turns that into a "
         "warning (the ranks still take part in the comparison)"),
    JOB("HIER", SQZ_PARAM_ENUM, "auto", 0, 0, "auto|on|off", CORE(hier),
         "hierarchical all-reduce: exact reduction inside each host, compressed exchange between "
         "hosts, exact copy back; auto turns it on when the communicator spans several hosts and "
         "some host holds more than one of its ranks.  Hosts of the same number of ranks (MPI and "
         "GPU): a dense reduce-scatter inside the host, each local shard compressed among the "
         "ranks with its local index on the other hosts, a dense all-gather.  Hosts of different "
         "sizes (MPI only): a dense reduce to each host's first rank, the compressed exchange "
         "among them, a broadcast back"),
    RANK("HOST_ID", SQZ_PARAM_STRING, "", 0, 0, NULL, CORE(host_id),
         "this rank's host for SQZ_HIER (ranks with the same value share a host; empty: the "
         "hostname): emulates several hosts on one machine"),
    JOB("DGC_MOMENTUM", SQZ_PARAM_DOUBLE, "0", 0, 0.999, NULL, CORE(dgc_momentum),
         "DGC momentum correction (0: off): the compressor sends from residual + momentum; set the "
         "optimizer's own momentum to 0 when this is on (needs SQZ_EF=ef14)"),
    JOB("DGC_NESTEROV", SQZ_PARAM_BOOL, "0", 0, 0, NULL, CORE(dgc_nesterov),
         "Nesterov form of the DGC momentum correction"),
    JOB("DGC_MASKING", SQZ_PARAM_BOOL, "1", 0, 0, NULL, CORE(dgc_masking),
         "DGC momentum factor masking: clear the momentum of the entries the compressor sent"),
    JOB("DGC_CLIP", SQZ_PARAM_DOUBLE, "0", 0, 1e30, NULL, CORE(dgc_clip),
         "DGC local gradient clipping (0: off): each rank scales its buffer to an L2 norm of at most "
         "DGC_CLIP / sqrt(ranks) before compression"),
    JOB("SPARSE_DENSE_SWITCH", SQZ_PARAM_DOUBLE, "1", 0, 1e9, NULL, CORE(sparse_dense_switch),
         "cost model of the sparse exchanges (topk, fedzip: all-gather, split or scatter): when the "
         "payloads every rank receives would exceed this factor times the bytes of a dense ring "
         "all-reduce, the call is sent dense "
         "(exactly, residual included); 0 never switches.  The GPU path applies it to every "
         "exchange (all-reduce and reduce-scatter), keeping the residual for the next call"),
    JOB("SPARSE_ALGO", SQZ_PARAM_ENUM, "auto", 0, 0, "auto|allgather|split|scatter",
         CORE(sparse_algo),
         "exchange of the sparsifiers (topk, fedzip): allgather sends every rank's payload to every "
         "rank; split is SparCML's split all-gather (each rank reduces one chunk from sparse pieces, "
         "then sends it exactly, sparse or dense, whichever is smaller; needs SQZ_PIPELINE); scatter "
         "is the scatter-reduce with re-sparsification (each rank reduces one chunk and sends its "
         "top entries again, its server residual keeping the rest: 2 (P-1) pieces a rank at any "
         "overlap, Ok-Topk's shape; a call applies k entries instead of up to P k, so it needs a "
         "higher density for the same accuracy: only when asked); auto picks the cheaper of "
         "allgather and split by a cost model of ranks, size and density"),
    JOB("ENTROPY", SQZ_PARAM_ENUM, "none", 0, 0, "none|zstd|auto", CORE(entropy),
         "a zstd pass over every payload: zstd keeps it whenever it is smaller, auto when the bytes it "
         "saves on a SQZ_LINK_GBPS link outweigh its time; receivers read both forms"),
    JOB("LINK_GBPS", SQZ_PARAM_DOUBLE, "10", 0, 100000, NULL, CORE(link_gbps),
         "the rate (Gbit/s, each way) of a host's link to the other hosts that the SQZ_ENTROPY=auto "
         "decision and SQZ_EXCHANGE_MODEL=time assume; 0 measures it under SQZ_EXCHANGE_MODEL=time "
         "(every rank sending to every other at once at a communicator's first compressed call: "
         "the rate and the per-message latency one rank gets, congestion included) and assumes "
         "10 elsewhere"),
    JOB("EXCHANGE_MODEL", SQZ_PARAM_ENUM, "bytes", 0, 0, "bytes|time", CORE(exchange_model),
         "how the host engine picks a call's exchange: bytes takes the one that sends the fewest "
         "bytes (the choice of a slow network, where compute is free; dense only past "
         "SQZ_SPARSE_DENSE_SWITCH); time predicts every exchange's seconds from the ranks and hosts, "
         "SQZ_LINK_GBPS, SQZ_INTRA_GBPS, SQZ_LINK_LATENCY_US and the kernel rates (measured at a "
         "communicator's first compressed call, or SQZ_KERNEL_GBPS) and takes the fastest, the dense "
         "all-reduce included (src/core/sqz_cost.h)"),
    JOB("INTRA_GBPS", SQZ_PARAM_DOUBLE, "200", 0, 100000, NULL, CORE(intra_gbps),
         "SQZ_EXCHANGE_MODEL=time: the rate (Gbit/s) between two ranks of one host; 0: a "
         "hierarchy times its dense stages inside the host once (at a call whose scratch holds "
         "64K-element pieces) and predicts them from that, and 200 is assumed elsewhere"),
    JOB("LINK_LATENCY_US", SQZ_PARAM_DOUBLE, "20", 0, 1e7, NULL, CORE(link_latency_us),
         "SQZ_EXCHANGE_MODEL=time: the time (microseconds) one message between hosts costs beyond "
         "its bytes: the network's latency plus the software's per-message overhead"),
    JOB("KERNEL_GBPS", SQZ_PARAM_DOUBLE, "0", 0, 1e6, NULL, CORE(kernel_gbps),
         "SQZ_EXCHANGE_MODEL=time: the compress and decode rates (GB/s of input per rank) the model "
         "assumes; 0 measures them at a communicator's first compressed call (every rank at once, "
         "the slowest rank's rates kept), so that ranks sharing cores are accounted for"),
    JOB("PIPELINE", SQZ_PARAM_BOOL, "1", 0, 0, NULL, CORE(pipeline),
         "pipeline the scatter-reduce exchange over point-to-point messages (send chunk i while "
         "compressing chunk i+1, decode while later chunks arrive) when the transport offers them "
         "and SQZ_THREADS is 1; 0 uses one all-to-all and one all-gather.  Also the MoE token "
         "all-to-alls: 1 sends them in one round of point-to-point messages, 0 sends the block sizes "
         "first"),
    RANK("P2P_WINDOW", SQZ_PARAM_INT, "-1", -1, 1000000, NULL, CORE(p2p_window),
         "the point-to-point exchanges (SQZ_PIPELINE) send every message in 48 KiB segments to the "
         "peers in turn, and a rank's n-th segment waits until its (n - this)-th has arrived, so "
         "that about this many segments reach a rank at once instead of a message from every peer "
         "(incast: queues overflow, and short TCP flows wait out a retransmission timeout); 0 sends "
         "every segment at once; -1 (auto): 4 when a rank sends at most 64 segments in the round "
         "(a longer chain of waits costs more than incast), else 0"),
    JOB("THREADS", SQZ_PARAM_INT, "1", 1, 256, NULL, CORE(threads),
         "threads compressing and decoding the chunks of a scatter-reduce exchange (quant, sign); "
         "the extra threads are bound with hwloc to distinct cores of the rank's own cpuset"),
    JOB("LAYOUT", SQZ_PARAM_STRING, "", 0, 0, NULL, CORE(layout),
         "a layout file naming the layers (shapes) of buffers by element count, for the per-layer "
         "methods (powersgd, SQZ_ADAPT) under a shim; registered layouts win (format: docs/methods.md)"),
    JOB("LAYOUT_CHUNK", SQZ_PARAM_SIZE, "1M", 4, 1099511627776.0, NULL, CORE(layout_chunk),
         "elements per pseudo-layer of a buffer without a layout (each chunk is seen as a near-square "
         "matrix by powersgd)"),
    JOB("ADAPT", SQZ_PARAM_ENUM, "none", 0, 0, "none|lgreco", CORE(adapt),
         "layer-adaptive compression: lgreco picks each layer's level (powersgd: its rank) by dynamic "
         "programming, fewest bytes with a total error at most that of the uniform setting (L-GreCo)"),
    JOB("ADAPT_PERIOD", SQZ_PARAM_INT, "50", 1, 1e12, NULL, CORE(adapt_period),
         "SQZ_ADAPT: compressed calls of a buffer between two measurements and re-solves"),
    JOB("ADAPT_BYTES", SQZ_PARAM_DOUBLE, "0", 0, 64, NULL, CORE(adapt_bytes),
         "SQZ_ADAPT's objective: 0 is L-GreCo's (the fewest bytes whose error is at most the uniform "
         "setting's); a value x > 0 asks instead for the least error within x times the uniform "
         "setting's bytes (1: the same bytes, spent where they cut the most error)"),
    JOB("ADAPT_STAT", SQZ_PARAM_ENUM, "error", 0, 0, "error|relative", CORE(adapt_stat),
         "SQZ_ADAPT's per-layer statistic, summed over layers by the solver: error (||x - C(x)||^2 "
         "summed over ranks, L-GreCo's) or relative (that error over the layer's ||x||^2)"),
    JOB("MOE", SQZ_PARAM_ENUM, "off", 0, 0, "off|dedup|lsh|cycle", CORE(moe),
         "MoE token all-to-alls under the interposers (MPI_Alltoall/MPI_Alltoallv of floats whose "
         "every per-peer count is a multiple of SQZ_MOE_DIM): off passes them through; dedup sends "
         "identical rows once (lossless, always safe); lsh sends one LSH centroid per bucket (lossy: "
         "only for jobs whose every such call is a dispatch); cycle codes the k-th token all-to-all "
         "of a communicator as entry k mod n of SQZ_MOE_CYCLE (the API's calls choose for themselves)"),
    JOB("MOE_CYCLE", SQZ_PARAM_STRING, "lsh,dedup", 0, 0, NULL, CORE(moe_cycle),
         "with SQZ_MOE=cycle: the codec of successive token all-to-alls, comma-separated lsh, dedup or "
         "none (passed through); lsh,dedup is a forward pass (dispatch, combine); a training step "
         "whose backward adds two all-to-alls is lsh,dedup,none,none"),
    JOB("MOE_DIM", SQZ_PARAM_INT, "0", 0, 16777216, NULL, CORE(moe_dim),
         "elements per token (d_model) of the interposed MoE all-to-alls; needed when SQZ_MOE is not "
         "off (the API passes its own)"),
    JOB("LSH_HASHES", SQZ_PARAM_INT, "6", 1, SQZ_LSH_MAX_HASHES, NULL, CORE(lsh_hashes),
         "cross-polytope hash functions combined (AND) into one LSH-MoE bucket id: more hashes, more "
         "buckets, a smaller error and a larger compression rate (the paper's default: 6)"),
    JOB("LSH_DIM", SQZ_PARAM_INT, "4", 1, SQZ_LSH_MAX_DIM, NULL, CORE(lsh_dim),
         "dimension each LSH hash function rotates a token into (2 * LSH_DIM codes per hash); "
         "LSH_HASHES * ceil(log2(2 * LSH_DIM)) must not exceed 64"),
    JOB("LSH_SAMPLE", SQZ_PARAM_INT, "64", 0, 16777216, NULL, CORE(lsh_sample),
         "coordinates of each token the LSH hash reads (a seeded random subset, the same on every "
         "rank; 0: all): keeps the hashing cost per token independent of d_model"),
    JOB("STATE_MAX_BYTES", SQZ_PARAM_SIZE, "0", 0, 1125899906842624.0, NULL, CORE(state_max_bytes),
         "bound on the memory of per-buffer states (residuals, estimators) per communicator: beyond it "
         "the least recently used states are freed (their residuals dropped, counted in "
         "state_evictions); 0 frees only stale states: those of buffers not seen for two periods of "
         "the job's repeating call pattern"),
};
#define SQZ_NCORE (sizeof(sqz_core_params) / sizeof(sqz_core_params[0]))

size_t sqz_core_param_count(void) { return SQZ_NCORE; }

const sqz_param_def_v1_t *sqz_core_param(size_t i, sqz_param_scope_t *scope)
{
    if (i >= SQZ_NCORE) {
        return NULL;
    }
    if (scope) {
        *scope = sqz_core_params[i].scope;
    }
    return &sqz_core_params[i].def;
}

const sqz_param_def_v1_t *sqz_core_param_find(const char *name)
{
    for (size_t i = 0; i < SQZ_NCORE; i++) {
        if (0 == strcmp(sqz_core_params[i].def.name, name)) {
            return &sqz_core_params[i].def;
        }
    }
    return NULL;
}

sqz_status_t sqz_core_params_apply(const sqz_config_t *cfg, sqz_core_params_t *p, char *err,
                                   size_t errlen)
{
    for (size_t i = 0; i < SQZ_NCORE; i++) {
        const sqz_status_t st = sqz_params_apply(&sqz_core_params[i].def, 1, cfg, p, err, errlen);
        if (SQZ_OK != st) {
            return st;
        }
    }
    return SQZ_OK;
}
