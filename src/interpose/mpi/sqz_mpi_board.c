/* Where each rank is (see sqz_mpi_board.h). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "interpose/mpi/sqz_mpi_board.h"
#include "sqz_log.h"

/* One 64-byte line per rank: MPICH 4's shared-memory windows read a 24-byte record of rank 1 at
 * the wrong place (8 bytes early: its count came back as rank 0's last field), a padded one
 * right; a line of its own also keeps the owner's stores off its neighbours' cache lines. */
typedef struct sqz_board {
    uint64_t count;    /* elements of the call */
    int32_t  what;     /* sqz_board_what_t */
    int32_t  comm_size;
    uint64_t calls;    /* candidate calls entered so far */
    uint64_t unused[5];
} sqz_board_t;
_Static_assert(64 == sizeof(sqz_board_t), "one board record per 64-byte line");

static MPI_Win      sqz_board_win = MPI_WIN_NULL;
static sqz_board_t *sqz_board_mine;

void sqz_board_init(void)
{
    /* Not every MPI can make a window (Open MPI 4 over TCP between hosts has no one-sided
     * component without MPI_THREAD_MULTIPLE): errors return here instead of ending the job, and
     * the diagnosis is then off (the window's creation is collective: off on every rank). */
    MPI_Errhandler saved;
    PMPI_Comm_get_errhandler(MPI_COMM_WORLD, &saved);
    PMPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    const int rc = PMPI_Win_allocate((MPI_Aint)sizeof(sqz_board_t), 1, MPI_INFO_NULL,
                                     MPI_COMM_WORLD, &sqz_board_mine, &sqz_board_win);
    PMPI_Comm_set_errhandler(MPI_COMM_WORLD, saved);
    PMPI_Errhandler_free(&saved);
    if (MPI_SUCCESS != rc) {
        sqz_board_win  = MPI_WIN_NULL;
        sqz_board_mine = NULL;
        SQZ_INFO("this MPI makes no RMA window: a rank stuck in another collective is not "
                 "diagnosed (the job waits, as without Squeeze)");
        return;
    }
    PMPI_Win_set_errhandler(sqz_board_win, MPI_ERRORS_RETURN);
    memset(sqz_board_mine, 0, sizeof(*sqz_board_mine));
}

void sqz_board_fini(void)
{
    if (MPI_WIN_NULL != sqz_board_win) {
        PMPI_Win_free(&sqz_board_win);
    }
    sqz_board_mine = NULL;
}

void sqz_board_enter(sqz_board_what_t what, uint64_t count, int comm_size)
{
    sqz_board_t *b = sqz_board_mine;
    if (b) {
        b->count     = count;
        b->comm_size = comm_size;
        b->calls++;
        __atomic_store_n(&b->what, (int32_t)what, __ATOMIC_RELEASE);
    }
}

void sqz_board_leave(void)
{
    if (sqz_board_mine) {
        __atomic_store_n(&sqz_board_mine->what, (int32_t)SQZ_BOARD_IDLE, __ATOMIC_RELEASE);
    }
}

/* The record of world rank `wr` (a passive-target read; it completes once that rank makes MPI
 * progress).  \return 0 on success. */
static int sqz_board_read(int wr, sqz_board_t *out)
{
    if (MPI_SUCCESS != PMPI_Win_lock(MPI_LOCK_SHARED, wr, 0, sqz_board_win)) {
        return -1;
    }
    const int rc = PMPI_Get(out, sizeof(*out), MPI_BYTE, wr, 0, sizeof(*out), MPI_BYTE,
                            sqz_board_win);
    return (MPI_SUCCESS == PMPI_Win_unlock(wr, sqz_board_win) && MPI_SUCCESS == rc) ? 0 : -1;
}

void sqz_board_stalled(MPI_Comm comm, int peer, double waited)
{
    if (NULL == sqz_board_mine) {
        return;
    }
    MPI_Group g, world;
    int       wr = MPI_UNDEFINED, me = 0;
    PMPI_Comm_group(comm, &g);
    PMPI_Comm_group(MPI_COMM_WORLD, &world);
    PMPI_Group_translate_ranks(g, 1, &peer, world, &wr);
    PMPI_Group_free(&g);
    PMPI_Group_free(&world);
    PMPI_Comm_rank(MPI_COMM_WORLD, &me);
    sqz_board_t them;
    if (MPI_UNDEFINED == wr || 0 != sqz_board_read(wr, &them)) {
        return;
    }
    const sqz_board_t mine = *sqz_board_mine;
    if (SQZ_BOARD_IDLE == them.what ||
        (SQZ_BOARD_COMPRESSED == them.what && them.count == mine.count)) {
        SQZ_INFO("the compressed exchange has waited %.0f s for rank %d, which is %s", waited, wr,
                 SQZ_BOARD_IDLE == them.what ? "outside MPI (computing?)" : "on its way");
        return;
    }
    SQZ_ERROR("rank %d (world) waits in a compressed all-reduce of %llu elements, while rank %d "
              "is in %s of %llu elements: the ranks called the collective with different counts "
              "(which also puts them on different sides of SQZ_MIN_BYTES); stopping the job",
              me, (unsigned long long)mine.count, wr,
              SQZ_BOARD_PASSTHROUGH == them.what ? "an uncompressed (passthrough) float all-reduce"
                                                 : "a compressed all-reduce",
              (unsigned long long)them.count);
    PMPI_Abort(MPI_COMM_WORLD, 1);
}
