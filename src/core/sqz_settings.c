/* The settings check: every rank must run with the same JOB parameters (sqz_core_params.c) and
 * the same parameters of the selected method, since they decide eligibility, the exchange and
 * the bytes on the wire.  The digest is "SQZ_NAME=value" lines; ranks compare its hash, and on a
 * mismatch each rank says which of its lines differ from rank 0's, with both values (one line
 * per differing rank: the output grows with the ranks, not their square). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_ctx.h"
#include "sqz_log.h"
#include "sqz_identity.h"
#include "sqz_settings.h"

/* The value of `name` in a digest ("SQZ_NAME=value\n" lines), or NULL; *len its length. */
static const char *sqz_digest_value(const char *digest, const char *name, size_t nlen,
                                    size_t *len)
{
    for (const char *p = digest; p && *p;) {
        const char *nl = strchr(p, '\n');
        const char *eq = strchr(p, '=');
        if (eq && (NULL == nl || eq < nl) && (size_t)(eq - p) == nlen && 0 == strncmp(p, name, nlen)) {
            *len = nl ? (size_t)(nl - eq - 1) : strlen(eq + 1);
            return eq + 1;
        }
        p = nl ? nl + 1 : NULL;
    }
    return NULL;
}

size_t sqz_settings_diff(const char *mine, const char *ref, int ref_rank, char *out, size_t len)
{
    size_t o = 0, ndiff = 0;
    out[0]   = '\0';
    for (const char *p = mine; p && *p;) {
        const char  *nl   = strchr(p, '\n');
        const char  *eq   = strchr(p, '=');
        const size_t line = nl ? (size_t)(nl - p) : strlen(p);
        if (eq && (size_t)(eq - p) < line) {
            const size_t nlen = (size_t)(eq - p), vlen = line - nlen - 1;
            size_t       rlen = 0;
            const char  *rv   = sqz_digest_value(ref, p, nlen, &rlen);
            if (NULL == rv || rlen != vlen || 0 != strncmp(rv, eq + 1, vlen)) {
                const int w = snprintf(out + o, o < len ? len - o : 0, "%s%.*s=%.*s here, %.*s on rank %d",
                                       ndiff ? "; " : "", (int)nlen, p, (int)(vlen > 60 ? 60 : vlen),
                                       eq + 1, (int)(rlen > 60 ? 60 : rlen), rv ? rv : "(unset)",
                                       ref_rank);
                o += w > 0 ? (size_t)w : 0;
                ndiff++;
            }
        }
        p = nl ? nl + 1 : NULL;
    }
    return ndiff;
}

/* One rank's word in the check: its digest hash and whether it asks for the check. */
typedef struct sqz_settings_word {
    uint64_t hash;
    uint64_t check;
} sqz_settings_word_t;

/* Every rank gets rank 0's digest (an all-gather where only rank 0 contributes). */
static sqz_status_t sqz_settings_rank0(sqz_comm_t *comm, const char *mine, char *ref, size_t len)
{
    const int P  = comm->nranks;
    size_t   *rb = calloc(2 * (size_t)P, sizeof(size_t));
    if (NULL == rb) {
        return SQZ_ERR_NO_MEMORY;
    }
    rb[0] = len;
    const int rc = comm->t.allgatherv(comm->t.self, mine, 0 == comm->rank ? len : 0, ref, rb,
                                      rb + P);
    free(rb);
    return 0 == rc ? SQZ_OK : SQZ_ERR_TRANSPORT;
}

sqz_status_t sqz_comm_check_settings(sqz_comm_t *comm)
{
    if (comm->settings_checked) {
        return comm->settings_checked > 0 ? SQZ_OK : SQZ_ERR_MISMATCH;
    }
    const int P = comm->nranks;
    char      digest[SQZ_SETTINGS_DIGEST_MAX];
    uint64_t  h;
    SQZ_CHECK(sqz_ctx_settings_digest(comm->ctx, digest, sizeof(digest), &h));
    if (1 == P || comm->ctx->settings_agreed) {
        comm->settings_checked = 1;
        return SQZ_OK;
    }
    /* Every rank takes part whatever its SQZ_CHECK_SETTINGS (a rank that skipped would leave the
     * others waiting); the check is off only when it is off on every rank. */
    sqz_settings_word_t  mine = {h, (uint64_t)comm->ctx->p.check_settings};
    sqz_settings_word_t *all  = calloc((size_t)P, sizeof(*all));
    if (NULL == all) {
        return SQZ_ERR_NO_MEMORY;
    }
    const sqz_status_t st     = sqz_comm_allgather_fixed(comm, &mine, sizeof(mine), all);
    int                differ = 0, checked = 0;
    for (int r = 0; SQZ_OK == st && r < P; r++) {
        differ |= all[r].hash != all[0].hash;
        checked |= 0 != all[r].check;
    }
    free(all);
    SQZ_CHECK(st);
    comm->settings_checked = 1;
    if (!differ) {
        return SQZ_OK;
    }
    char ref[SQZ_SETTINGS_DIGEST_MAX] = "", diff[2048];
    SQZ_CHECK(sqz_settings_rank0(comm, digest, ref, sizeof(ref)));
    if (sqz_settings_diff(digest, ref, 0, diff, sizeof(diff))) {
        SQZ_LOG(checked ? SQZ_LOG_ERROR : SQZ_LOG_WARN, "settings differ from rank 0's: %s", diff);
    }
    if (!checked) {
        SQZ_LOG_ONCE(SQZ_LOG_WARN, "ranks run with different Squeeze settings and SQZ_CHECK_SETTINGS=0 "
                                   "on every rank: calls may hang or fail");
        return SQZ_OK;
    }
    SQZ_ERROR("ranks run with different Squeeze settings (SQZ_* variables or SQZ_CONFIG); set "
              "the same values on every rank");
    comm->settings_checked = -1;
    return SQZ_ERR_MISMATCH;
}
