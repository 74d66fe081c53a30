/* The start-up agreement of the MPI interposer, run in MPI_Init before any other collective.
 *
 * Every rank reports to rank 0, point to point on MPI_COMM_WORLD under reserved tags: a protocol
 * word (magic and library version), whether its configuration is valid, the hash of its settings
 * digest and its SQZ_CHECK_SETTINGS.  Rank 0 waits for the reports at most SQZ_AGREE_TIMEOUT
 * seconds (a rank without the interposer never reports), asks the ranks whose settings differ
 * for their digest, and answers every rank with a verdict: go on, go on with a warning (settings
 * differ and SQZ_CHECK_SETTINGS=0 on every rank), or stop, with a message that names the faulty
 * rank and the cause (the faulty rank itself says what differs, with rank 0's value beside its
 * own).  A rank that gets no verdict in time stops too, naming rank 0.  Point-to-point messages
 * with deadlines: a rank missing from the protocol cannot hang it, and one faulty rank ends the
 * whole job within seconds instead of leaving the others in a collective. */
#ifndef SQZ_MPI_AGREE_H
#define SQZ_MPI_AGREE_H

#include <stdint.h>

/** Runs the agreement (collective over MPI_COMM_WORLD; PMPI only).  digest and hash are this
 *  rank's settings (ignored when config_ok is 0).  Prints this rank's part of the verdict.
 *  \return 1 to go on; 0 when the job must stop by rank 0's verdict (rank 0 aborts it: the others
 *  may give it a moment); -1 when this rank stops alone (rank 0 never answered: abort now). */
int sqz_mpi_agree(int rank, int nranks, int config_ok, const char *digest, uint64_t hash,
                  int check, double timeout);

#endif
