/* The sparse all-gather exchange of sqz_coll_allgather.c over point-to-point messages: no size
 * round (every receive is posted for the compressor's bound and learns the real size on
 * completion), every link busy at once, and, when the output is not the input, each payload
 * decoded (in rank order) while later ones are still arriving.  In place, nothing is written to
 * the output before every frame has been seen, so that a fallback still has the input. */
#include "config.h"

#include <string.h>

#include "sqz_coll.h"
#include "sqz_log.h"

sqz_status_t sqz_coll_allgather_p2p(sqz_coll_call_t *call)
{
    sqz_comm_t *const      comm = call->comm;
    const int              P    = comm->nranks;
    const int              me   = comm->rank;
    const size_t           n    = call->n;
    const size_t           cap  = sqz_coll_round8(sizeof(sqz_frame_t) + call->c->max_payload(call->cstate, n));
    size_t *const          got  = comm->scratch.counts; /* P */
    sqz_status_t           st   = SQZ_OK;
    sqz_frame_t            f;
    sqz_round_t            rd;

    const sqz_scratch_need_t need = {.recv = (size_t)P * cap, .task = sqz_round_scratch(P, cap),
                                     .chunk = sqz_coll_dense_scratch(call),
                                     .shared = sqz_coll_shared_scratch(call, 1, &n)};
    SQZ_CHECK(sqz_coll_reserve(comm, &need));
    SQZ_CHECK(sqz_round_init(&rd, comm, cap));
    unsigned char *const mine = comm->scratch.recvbuf + (size_t)me * cap; /* compressed in place */

    const size_t zero = 0;
    SQZ_CHECK(sqz_coll_shared(call, 1, &zero, &n, comm->scratch.sharedptr));
    double t0 = sqz_time_now();
    for (int k = 1; k < P; k++) {
        const int s = (me + P - k) % P;
        SQZ_TRANSPORT_CHECK_GOTO(
            sqz_round_recv(&rd, s, comm->scratch.recvbuf + (size_t)s * cap, cap), st, fail);
    }
    double norms[2] = {0, 0};
    (void)sqz_coll_compress(call, 0, call->in, call->residual, n, 0, mine, cap, norms,
                            comm->scratch.sharedptr[0]);
    call->cs.norm2_in += norms[0];
    call->cs.norm2_err += norms[1];
    memcpy(&f, mine, sizeof(f));
    const size_t bytes = sizeof(f) + (size_t)f.bytes;
    got[me]            = bytes;
    double t1          = sqz_time_now();
    call->cs.t_compress += t1 - t0;
    for (int k = 1; k < P; k++) {
        const int r = (me + k) % P;
        SQZ_TRANSPORT_CHECK_GOTO(sqz_round_send(&rd, r, mine, bytes), st, fail);
    }
    call->cs.bytes_wire = bytes;
    call->cs.bytes_sent = bytes * (size_t)(P - 1);

    const int stream = !call->out_is_input;
    if (stream) {
        memset(call->out, 0, n * sizeof(float));
    }
    double tc = 0;
    for (int s = 0; s < P; s++) {
        if (s != me) {
            SQZ_TRANSPORT_CHECK_GOTO(sqz_round_wait(&rd, s, &got[s]), st, fail);
        }
        const double         ta = sqz_time_now();
        const unsigned char *fr = comm->scratch.recvbuf + (size_t)s * cap;
        sqz_status_t         fs = got[s] >= sizeof(f) ? sqz_coll_frame_check(call, fr, n, got[s]) : SQZ_ERR_CORRUPT;
        if (SQZ_OK == fs) {
            memcpy(&f, fr, sizeof(f));
            /* Decoding validates the whole payload before writing; in place it only validates. */
            fs = sqz_coll_decode(call, 0, fr, stream && SQZ_OK == st ? call->out : NULL, n);
            fs = SQZ_OK == fs ? SQZ_OK : SQZ_ERR_CORRUPT;
        }
        st = sqz_coll_worse(st, fs);
        tc += sqz_time_now() - ta;
    }
    SQZ_TRANSPORT_CHECK_GOTO(sqz_round_finish(&rd), st, fail);
    double t2 = sqz_time_now();
    call->cs.t_comm += t2 - t1 - tc;
    call->cs.t_compress += tc;
    /* Every rank saw the same frames and payloads: the verdict is common. */
    if (SQZ_OK != st) {
        call->cs.nonfinite = (SQZ_ERR_NONFINITE == st);
        sqz_coll_restore(call, call->in, call->residual, n, mine);
        return st;
    }
    if (!stream) {
        memset(call->out, 0, n * sizeof(float));
        for (int s = 0; s < P; s++) {
            const unsigned char *fr = comm->scratch.recvbuf + (size_t)s * cap;
            memcpy(&f, fr, sizeof(f));
            (void)sqz_coll_decode(call, 0, fr, call->out, n);
        }
        call->cs.t_compress += sqz_time_now() - t2;
    }
    return SQZ_OK;
fail:
    return SQZ_ERR_TRANSPORT;
}
