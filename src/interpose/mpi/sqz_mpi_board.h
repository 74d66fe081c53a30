/* Where each rank is: a diagnosis for ranks that entered different collectives.
 *
 * Every rank decides alone whether a float SUM all-reduce is compressed (its count against
 * SQZ_MIN_BYTES).  The ranks of a correct program pass the same count and decide alike; when they
 * do not (an erroneous program, which plain MPI would stop with a truncation error), some ranks
 * wait in the compressed exchange while the others wait in MPI's own all-reduce, forever.  A
 * check of eligibility folded into the exchange cannot help (the passthrough ranks never enter
 * it), and a time limit cannot tell a stuck rank from a slow one.  So every rank writes, with
 * plain stores into a small RMA window made at MPI_Init, which collective it is in (a passthrough
 * or a compressed float all-reduce, and its count); a compressed exchange that has waited
 * SQZ_STALL_SECONDS for a peer reads that peer's record (passive target: it completes once the
 * peer makes MPI progress, which a rank waiting in a collective does) and, when the peer is in a
 * different collective, stops the job with a message naming both ranks and both counts.  A peer
 * that is computing, or on its way into the same exchange, is waited for as before. */
#ifndef SQZ_MPI_BOARD_H
#define SQZ_MPI_BOARD_H

#include <mpi.h>
#include <stdint.h>

typedef enum { SQZ_BOARD_IDLE = 0, SQZ_BOARD_PASSTHROUGH = 1, SQZ_BOARD_COMPRESSED = 2 } sqz_board_what_t;

/** Makes the window (collective over MPI_COMM_WORLD; without it nothing is diagnosed). */
void sqz_board_init(void);

/** Frees it (collective: MPI_Finalize). */
void sqz_board_fini(void);

/** Records that this rank enters a candidate all-reduce of `count` elements (plain stores). */
void sqz_board_enter(sqz_board_what_t what, uint64_t count, int comm_size);

/** Records that it left. */
void sqz_board_leave(void);

/** A compressed exchange on comm has waited `waited` seconds for `peer` (a rank of comm): reads
 *  the peer's record and stops the job when it is in another collective. */
void sqz_board_stalled(MPI_Comm comm, int peer, double waited);

#endif
