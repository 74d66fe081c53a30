/* The cost model of the exchanges (see sqz_cost.h). */
#include "config.h"

#include "sqz_cost.h"

double sqz_cost_seconds(const sqz_cost_net_t *net, const sqz_cost_rates_t *rates,
                        const sqz_cost_work_t *w)
{
    const double P = net->ranks, L = net->per_host < 1 ? 1 : net->per_host;
    if (P <= 1) {
        return 0.0;
    }
    /* A rank's peers are spread evenly: (P - L) of its P - 1 peers are on other hosts. */
    const double off   = net->hosts > 1 ? (P - L) / (P - 1) : 0.0;
    const double wire  = L * w->sent * off / net->link_Bps +
                         w->sent * (1.0 - off) / net->intra_Bps;
    const double lat   = w->rounds * (off > 0 ? net->latency_s : 0.0);
    double       cpu   = 0.0;
    /* (A rate of 0 is unknown: that work is left out.) */
    if (w->compress > 0 && rates->compress_Bps > 0) {
        cpu += w->compress / rates->compress_Bps;
    }
    if (w->decode > 0 && rates->decode_Bps > 0) {
        cpu += w->decode / rates->decode_Bps;
    }
    return lat + wire + cpu;
}

sqz_cost_work_t sqz_cost_dense_ring(const sqz_cost_net_t *net, double bytes)
{
    const double    P = net->ranks;
    sqz_cost_work_t w = {.rounds = 2 * (P - 1), .sent = 2 * (P - 1) / P * bytes};
    return w;
}

sqz_cost_work_t sqz_cost_allgather(const sqz_cost_net_t *net, double bytes, double payload)
{
    const double    P = net->ranks;
    sqz_cost_work_t w = {.rounds = 1, .sent = (P - 1) * payload, .compress = bytes,
                         .decode = P * bytes};
    return w;
}

sqz_cost_work_t sqz_cost_split(const sqz_cost_net_t *net, double bytes, double piece,
                               double exact)
{
    const double    P = net->ranks;
    sqz_cost_work_t w = {.rounds = 2, .sent = (P - 1) * (piece + exact), .compress = bytes,
                         .decode = 2 * bytes};
    return w;
}

sqz_cost_work_t sqz_cost_scatter_reduce(const sqz_cost_net_t *net, double bytes, double piece,
                                        double piece2)
{
    const double    P = net->ranks;
    sqz_cost_work_t w = {.rounds = 2, .sent = (P - 1) * (piece + piece2),
                         .compress = bytes * (1 + 1 / P), .decode = 2 * bytes};
    return w;
}

sqz_cost_work_t sqz_cost_reduce_scatter_block(const sqz_cost_net_t *net, double bytes,
                                              double piece)
{
    const double    P = net->ranks;
    sqz_cost_work_t w = {.rounds = 1, .sent = (P - 1) * piece, .compress = bytes,
                         .decode = bytes};
    return w;
}
