/* The settings check (sqz_settings.c); sqz_comm_check_settings is declared in sqz_ctx.h. */
#ifndef SQZ_SETTINGS_H
#define SQZ_SETTINGS_H

#include <stddef.h>

/** Room for a settings digest (sqz_ctx_settings_digest). */
#define SQZ_SETTINGS_DIGEST_MAX 4096

/** Writes to out (len bytes) the lines of digest `mine` whose value differs from digest `ref`
 *  (rank ref_rank's), as "SQZ_X=a here, b on rank R" separated by "; ", each value cut at 60
 *  characters.  \return how many lines differ. */
size_t sqz_settings_diff(const char *mine, const char *ref, int ref_rank, char *out, size_t len);

#endif
