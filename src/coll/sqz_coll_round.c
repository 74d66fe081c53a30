/* A point-to-point round of the pipelined exchanges, in segments under a credit window (see
 * sqz_coll.h, sqz_round_t). */
#include "config.h"

#include <string.h>

#include "sqz_coll.h"
#include "sqz_log.h"

/* Segments of a message of at most maxcap bytes (at least one: an empty message still goes). */
static size_t sqz_round_segments(size_t maxcap)
{
    return maxcap ? (maxcap + SQZ_ROUND_SEG - 1) / SQZ_ROUND_SEG : 1;
}

size_t sqz_round_scratch(int P, size_t maxcap)
{
    return (size_t)P * sqz_round_segments(maxcap) * (2 * sizeof(void *) + sizeof(size_t));
}

sqz_status_t sqz_round_init(sqz_round_t *r, sqz_comm_t *comm, size_t maxcap)
{
    const int64_t w = comm->ctx->p.p2p_window;
    *r = (sqz_round_t){.t = &comm->t, .P = comm->nranks, .me = comm->rank};
    /* The segmentation never depends on the window, so that ranks with other windows still cut
     * messages alike. */
    r->seg    = SQZ_ROUND_SEG;
    r->maxseg = sqz_round_segments(maxcap);
    /* SQZ_P2P_WINDOW in segments; auto: 4 when a rank sends at most SQZ_ROUND_WINDOWED
     * segments in the round, else all at once.  Each window's worth of segments waits for a
     * receive, and on shared cores a receive waits for its sender to be scheduled: a round of
     * many segments (top-k's all-gather at 16 hosts: 15 x 7) loses more to that chain than
     * incast costs it (docs/performance.md). */
    const size_t segs = (size_t)(r->P - 1) * r->maxseg;
    r->window = w >= 0 ? (size_t)w : (segs <= SQZ_ROUND_WINDOWED ? 4 : 0);
    const size_t n = (size_t)r->P * r->maxseg;
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->scratch.taskbuf, &comm->scratch.taskcap,
                                  sqz_round_scratch(r->P, maxcap)));
    r->rreq = (void **)comm->scratch.taskbuf;
    r->sreq = r->rreq + n;
    r->got  = (size_t *)(r->sreq + n);
    memset(comm->scratch.taskbuf, 0, sqz_round_scratch(r->P, maxcap));
    return SQZ_OK;
}

/* Segment i of a message of len bytes: where it starts and its length (0 past the end). */
static size_t sqz_round_seglen(const sqz_round_t *r, size_t len, size_t i)
{
    const size_t at = i * r->seg;
    return at >= len ? 0 : (len - at < r->seg ? len - at : r->seg);
}

int sqz_round_recv(sqz_round_t *r, int peer, void *buf, size_t cap)
{
    for (size_t i = 0; i < r->maxseg; i++) {
        const size_t k = (size_t)peer * r->maxseg + i;
        if (0 != r->t->irecv(r->t->self, (unsigned char *)buf + i * r->seg,
                             sqz_round_seglen(r, cap, i), peer, &r->got[k], &r->rreq[k])) {
            return -1;
        }
    }
    return 0;
}

/* Completes request *q (a send or a receive) if it is pending.  \return 0 or -1. */
static int sqz_round_complete(const sqz_round_t *r, void **q)
{
    if (NULL == *q) {
        return 0;
    }
    const int rc = r->t->wait(r->t->self, *q);
    *q           = NULL;
    return rc ? -1 : 0;
}

int sqz_round_send(sqz_round_t *r, int peer, const void *buf, size_t len)
{
    const size_t c    = r->maxseg;
    const size_t step = (size_t)((peer - r->me + r->P) % r->P); /* 1 .. P-1 */
    for (size_t i = 0; i < c; i++) {
        /* Send number j of this rank waits for receive number j - window, which its sender
         * posted as its own send number j - window: an earlier one.  So every send is posted
         * eventually, by induction on j, whatever else the ranks wait for. */
        const size_t j = (step - 1) * c + i;
        if (r->window && j >= r->window) {
            const size_t m   = j - r->window;
            const int    src = (int)(((size_t)r->me + (size_t)r->P - (m / c + 1) % (size_t)r->P) %
                                     (size_t)r->P);
            if (0 != sqz_round_complete(r, &r->rreq[(size_t)src * c + m % c])) {
                return -1;
            }
        }
        const size_t k = (size_t)peer * c + i;
        if (0 != r->t->isend(r->t->self, (const unsigned char *)buf + i * r->seg,
                             sqz_round_seglen(r, len, i), peer, &r->sreq[k])) {
            return -1;
        }
    }
    return 0;
}

int sqz_round_poll(sqz_round_t *r)
{
    const size_t n = (size_t)r->P * r->maxseg;
    for (size_t k = 0; k < n; k++) {
        void **q[2] = {&r->sreq[k], &r->rreq[k]};
        for (int a = 0; a < 2; a++) {
            int done = 0;
            if (*q[a] && 0 != r->t->test(r->t->self, *q[a], &done)) {
                return -1;
            }
            *q[a] = done ? NULL : *q[a];
        }
    }
    return 0;
}

int sqz_round_wait(sqz_round_t *r, int peer, size_t *bytes)
{
    size_t sum = 0;
    int    hole = 0;
    for (size_t i = 0; i < r->maxseg; i++) {
        const size_t k = (size_t)peer * r->maxseg + i;
        if (0 != sqz_round_complete(r, &r->rreq[k])) {
            return -1;
        }
        /* The sender fills segments in order: a short one may only be followed by empty ones. */
        hole |= sum != i * r->seg && r->got[k] > 0;
        sum += r->got[k];
    }
    *bytes = hole ? 0 : sum;
    return 0;
}

int sqz_round_finish(sqz_round_t *r)
{
    const size_t n  = (size_t)r->P * r->maxseg;
    int          rc = 0;
    for (size_t k = 0; k < n; k++) {
        rc |= sqz_round_complete(r, &r->sreq[k]);
        rc |= sqz_round_complete(r, &r->rreq[k]);
    }
    return rc ? -1 : 0;
}
