/* The cost model of the exchanges: the predicted seconds of one call from the job's shape (ranks,
 * hosts, ranks per host), its links (rate and per-message latency between hosts and inside one),
 * the bytes each exchange sends and the kernel rates measured on this communicator.
 *
 * A call's time is the sum of three terms, each for the slowest rank:
 *   latency  rounds x the link latency (an exchange whose messages all go out at once is one
 *            round; a ring of P ranks is 2 (P - 1));
 *   wire     the bytes that cross the busiest link at its rate: between hosts, a host's L ranks
 *            share its link, so a flat exchange puts L x (bytes a rank sends to other hosts) on
 *            it; inside a host, the rest at SQZ_INTRA_GBPS;
 *   compute  the input bytes compressed at the measured compress rate and the payloads decoded at
 *            the measured decode rate (both measured with every rank running, so a machine whose
 *            ranks share cores is accounted for).
 * No overlap is credited: the pipelined exchanges overlap part of wire and compute, so the model
 * is an upper bound for them (docs/performance.md compares it with measurements).
 *
 * Every input is the same on every rank (settings, sizes, and rates agreed at calibration), so
 * every rank predicts the same times and makes the same choice. */
#ifndef SQZ_COST_H
#define SQZ_COST_H

#include <stddef.h>

typedef struct sqz_cost_net {
    double ranks;      /* P */
    double hosts;      /* H: hosts the ranks span (P when unknown: every link is a network link) */
    double per_host;   /* L: most ranks on one host */
    double link_Bps;   /* a host's link to the others, bytes per second each way */
    double intra_Bps;  /* between two ranks of one host */
    double latency_s;  /* one message between hosts */
} sqz_cost_net_t;

typedef struct sqz_cost_rates {
    double compress_Bps; /* input bytes compressed per second by one rank, every rank running */
    double decode_Bps;   /* input bytes a full-size payload describes, decoded per second */
} sqz_cost_rates_t;

/* What one rank does in one exchange. */
typedef struct sqz_cost_work {
    double rounds;   /* message rounds one after the other */
    double sent;     /* bytes this rank sends (to all peers together) */
    double compress; /* input bytes compressed */
    double decode;   /* input bytes the decoded payloads describe */
} sqz_cost_work_t;

/** The predicted seconds of `w` on `net` with `rates`. */
double sqz_cost_seconds(const sqz_cost_net_t *net, const sqz_cost_rates_t *rates,
                        const sqz_cost_work_t *w);

/* The work of each exchange of an all-reduce of `bytes` input bytes on `net` (P ranks):
 *   dense ring:      2 (P - 1) rounds, 2 (P - 1) / P x bytes sent, nothing compressed;
 *   all-gather:      one round, P - 1 copies of the payload (`payload` bytes) sent, the input
 *                    compressed, P payloads decoded;
 *   split:           SparCML's split all-gather: P - 1 pieces (`piece` bytes each, a chunk's
 *                    payload) then P - 1 copies of the reduced chunk sent exactly (`exact`
 *                    bytes), the input compressed, every chunk decoded twice;
 *   scatter-reduce:  P - 1 chunk payloads (`piece` bytes) to their owners, then the reduced chunk
 *                    compressed again (`piece2` bytes) and sent to every peer: 2 rounds,
 *                    P - 1 pieces of each, the input and one chunk compressed, every chunk
 *                    decoded twice;
 *   reduce-scatter:  its first phase alone (a reduce-scatter's, for every family): one round,
 *                    P - 1 pieces, the input compressed, the own chunk's P payloads decoded. */
sqz_cost_work_t sqz_cost_dense_ring(const sqz_cost_net_t *net, double bytes);
sqz_cost_work_t sqz_cost_allgather(const sqz_cost_net_t *net, double bytes, double payload);
sqz_cost_work_t sqz_cost_split(const sqz_cost_net_t *net, double bytes, double piece,
                               double exact);
sqz_cost_work_t sqz_cost_scatter_reduce(const sqz_cost_net_t *net, double bytes, double piece,
                                        double piece2);
sqz_cost_work_t sqz_cost_reduce_scatter_block(const sqz_cost_net_t *net, double bytes,
                                              double piece);

#endif
