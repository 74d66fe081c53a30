/* Sparse all-gather all-reduce (DGC, top-k): every rank compresses its whole vector, the payloads
 * are all-gathered (sizes first: a sparse payload's size is known only to its sender), and every
 * rank sums all of them in rank order into a zeroed output. */
#include "config.h"

#include <string.h>

#include "sqz_coll.h"
#include "sqz_log.h"

sqz_status_t sqz_coll_allgather(sqz_coll_call_t *call)
{
    sqz_comm_t *const comm = call->comm;
    const int         P    = comm->nranks;
    const size_t      n    = call->n;
    const size_t      cap  = sqz_coll_round8(sizeof(sqz_frame_t) + call->c->max_payload(call->cstate, n));
    sqz_status_t      st   = SQZ_OK;
    size_t *const     sizes  = comm->scratch.counts;         /* P: payload slot of each rank */
    size_t *const     rbytes = comm->scratch.counts + P;     /* P */
    size_t *const     displs = comm->scratch.counts + 2 * P; /* P */
    uint64_t          mine;

    /* (the payloads' total is known after the sizes' all-gather: at most P slots) */
    const sqz_scratch_need_t need = {.send = cap, .recv = (size_t)P * cap,
                                     .chunk = sqz_coll_dense_scratch(call),
                                     .shared = sqz_coll_shared_scratch(call, 1, &n)};
    SQZ_CHECK(sqz_coll_reserve(comm, &need));
    const size_t zero = 0;
    SQZ_CHECK(sqz_coll_shared(call, 1, &zero, &n, comm->scratch.sharedptr));
    double t0 = sqz_time_now();
    double norms[2] = {0, 0};
    (void)sqz_coll_compress(call, 0, call->in, call->residual, n, 0, comm->scratch.sendbuf, cap,
                            norms, comm->scratch.sharedptr[0]);
    call->cs.norm2_in += norms[0];
    call->cs.norm2_err += norms[1];
    sqz_frame_t f;
    memcpy(&f, comm->scratch.sendbuf, sizeof(f));
    mine = sqz_coll_round8(sizeof(sqz_frame_t) + (size_t)f.bytes);
    double t1 = sqz_time_now();
    call->cs.t_compress += t1 - t0;

    /* Sizes, then payloads. */
    /* P u64, aliasing the 4th quarter */
    uint64_t *const all = (uint64_t *)(comm->scratch.counts + 3 * P);
    for (int r = 0; r < P; r++) {
        rbytes[r] = sizeof(uint64_t);
        displs[r] = (size_t)r * sizeof(uint64_t);
    }
    SQZ_TRANSPORT_CHECK_GOTO(comm->t.allgatherv(comm->t.self, &mine, sizeof(mine), all, rbytes, displs),
                             st, out);
    size_t total = 0;
    for (int r = 0; r < P; r++) {
        sizes[r] = (size_t)all[r];
        if (sizes[r] < sizeof(sqz_frame_t) || sizes[r] > cap) {
            /* Every rank sees the same sizes, so they all come to this conclusion together.  The
             * payloads must still be exchanged to keep the collective sequence aligned. */
            st = SQZ_ERR_CORRUPT;
            sizes[r] = sizes[r] < sizeof(sqz_frame_t) ? sizeof(sqz_frame_t) : cap;
        }
        displs[r] = total;
        total += sizes[r];
    }
    SQZ_CHECK(sqz_scratch_reserve((void **)&comm->scratch.recvbuf, &comm->scratch.recvcap, total));
    if (mine > sizes[comm->rank]) {
        mine = sizes[comm->rank];
    }
    SQZ_TRANSPORT_CHECK_GOTO(comm->t.allgatherv(comm->t.self, comm->scratch.sendbuf, (size_t)mine,
                                                comm->scratch.recvbuf, sizes, displs),
                             st, out);
    double t2 = sqz_time_now();
    call->cs.t_comm += t2 - t1;
    call->cs.bytes_wire = sizeof(sqz_frame_t) + (size_t)f.bytes; /* f: our own frame */
    call->cs.bytes_sent = (size_t)mine * (size_t)(P - 1);

    /* Decide together: frames and payload validity are the same bytes on every rank. */
    for (int r = 0; r < P; r++) {
        const unsigned char *fr = comm->scratch.recvbuf + displs[r];
        sqz_status_t         fs = sqz_coll_frame_check(call, fr, n, sizes[r]);
        if (SQZ_OK == fs) {
            memcpy(&f, fr, sizeof(f));
            fs = sqz_coll_decode(call, 0, fr, NULL, n);
        }
        st = sqz_coll_worse(st, fs);
    }
    if (SQZ_OK != st) {
        call->cs.nonfinite = (SQZ_ERR_NONFINITE == st);
        sqz_coll_restore(call, call->in, call->residual, n, comm->scratch.sendbuf);
        goto out;
    }
    /* The input is consumed: out may alias in from here on. */
    memset(call->out, 0, n * sizeof(float));
    for (int r = 0; r < P; r++) {
        const unsigned char *fr = comm->scratch.recvbuf + displs[r];
        memcpy(&f, fr, sizeof(f));
        st = sqz_coll_decode(call, 0, fr, call->out, n);
        if (SQZ_OK != st) {
            /* Validated above: a failure now is a plugin bug and the output is half written. */
            SQZ_ERROR("compressor '%s' rejected a payload it had validated", call->c->name);
            st = SQZ_ERR_INTERNAL;
            goto out;
        }
    }
    call->cs.t_compress += sqz_time_now() - t2;
out:
    return st;
}
