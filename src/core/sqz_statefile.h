/* SQZ_STATE_FILE: the error-feedback state of an interposed job, saved and restored without a
 * change to the job.  The interposer names the file at start (%r: the rank) and restores what it
 * holds into each communicator as it creates it, in creation order (the same on every rank: the
 * first eligible call of each communicator); it saves every live communicator's state at
 * MPI_Finalize, and at the next intercepted call after a SIGUSR1 (each rank at its own next
 * call: send the signal between steps, or checkpoint through the API for a consistent cut).  A
 * file saved under other settings is a clear error at the start.  One process, one interposer:
 * the registry is process-wide. */
#ifndef SQZ_STATEFILE_H
#define SQZ_STATEFILE_H

#include <squeeze.h>

/** Names the file (pattern with %r) and reads it when it exists; installs the SIGUSR1 handler.
 *  A NULL or empty pattern: the feature stays off. */
void sqz_statefile_init(const char *pattern, int rank);

/** Whether SQZ_STATE_FILE is in use. */
int sqz_statefile_active(void);

/** Registers a new communicator (the next creation index) and restores its saved state, if the
 *  file has one.  \return SQZ_OK, or the error of sqz_state_load (logged: the job should stop). */
sqz_status_t sqz_statefile_attach(sqz_comm_t *comm);

/** Forgets a communicator being destroyed. */
void sqz_statefile_detach(sqz_comm_t *comm);

/** Writes every registered communicator's state (atomically: a temporary file renamed). */
sqz_status_t sqz_statefile_save(void);

/** Saves now if a SIGUSR1 came since the last call (one flag test otherwise). */
void sqz_statefile_poll(void);

void sqz_statefile_fini(void);

#endif
