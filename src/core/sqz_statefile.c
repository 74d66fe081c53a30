/* SQZ_STATE_FILE: checkpoints of the error-feedback state under an interposer (see
 * sqz_statefile.h).  File format: "SQZFILE1", the number of communicators, then for each its
 * creation index and the length and bytes of its sqz_state_save checkpoint. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_ctx.h"
#include "sqz_log.h"
#include "sqz_state_io.h"
#include "sqz_statefile.h"

#define SQZ_FILE_MAGIC "SQZFILE1"

typedef struct sqz_statefile {
    char          path[4096];
    sqz_comm_t  **comms; /* in creation order; NULL once destroyed */
    size_t        ncomms, cap;
    unsigned char *file; /* the file read at start, or NULL */
    size_t         len;
} sqz_statefile_t;

static sqz_statefile_t       sqz_sf;
static volatile sig_atomic_t sqz_sf_signalled;

static void sqz_statefile_signal(int sig)
{
    (void)sig;
    sqz_sf_signalled = 1;
}

/* The blob of communicator `index` in the file read at start, or NULL. */
static const unsigned char *sqz_statefile_blob(size_t index, size_t *len)
{
    sqz_rbuf_t r = {sqz_sf.file, sqz_sf.len, 0, 0};
    char       magic[8];
    uint64_t   n = 0;
    if (NULL == sqz_sf.file || !sqz_rbuf_get(&r, magic, 8) || 0 != memcmp(magic, SQZ_FILE_MAGIC, 8) ||
        !sqz_rbuf_get(&r, &n, sizeof(n))) {
        return NULL;
    }
    for (uint64_t k = 0; k < n; k++) {
        uint64_t idx = 0, l = 0;
        sqz_rbuf_get(&r, &idx, sizeof(idx));
        sqz_rbuf_get(&r, &l, sizeof(l));
        const unsigned char *b = sqz_rbuf_take(&r, (size_t)l);
        if (NULL == b) {
            return NULL;
        }
        if (idx == index) {
            *len = (size_t)l;
            return b;
        }
    }
    return NULL;
}

/* Reads the whole file at path into sqz_sf.file (none there: nothing to restore). */
static void sqz_statefile_read(void)
{
    FILE *f = fopen(sqz_sf.path, "rb");
    if (NULL == f) {
        return;
    }
    if (0 == fseek(f, 0, SEEK_END)) {
        const long n = ftell(f);
        rewind(f);
        sqz_sf.file = n > 0 ? malloc((size_t)n) : NULL;
        if (sqz_sf.file && (size_t)n == fread(sqz_sf.file, 1, (size_t)n, f)) {
            sqz_sf.len = (size_t)n;
            SQZ_INFO("SQZ_STATE_FILE=%s: restoring the error-feedback state", sqz_sf.path);
        } else {
            free(sqz_sf.file);
            sqz_sf.file = NULL;
        }
    }
    fclose(f);
}

void sqz_statefile_init(const char *pattern, int rank)
{
    if (NULL == pattern || '\0' == pattern[0]) {
        return;
    }
    size_t o = 0;
    for (const char *p = pattern; *p && o + 16 < sizeof(sqz_sf.path); p++) {
        if ('%' == p[0] && 'r' == p[1]) {
            o += (size_t)snprintf(sqz_sf.path + o, sizeof(sqz_sf.path) - o, "%d", rank);
            p++;
        } else {
            sqz_sf.path[o++] = *p;
        }
    }
    sqz_sf.path[o] = '\0';
    sqz_statefile_read();
    signal(SIGUSR1, sqz_statefile_signal);
}

int sqz_statefile_active(void) { return '\0' != sqz_sf.path[0]; }

sqz_status_t sqz_statefile_attach(sqz_comm_t *comm)
{
    if (!sqz_statefile_active() || NULL == comm) {
        return SQZ_OK;
    }
    if (sqz_sf.ncomms == sqz_sf.cap) {
        const size_t cap = sqz_sf.cap ? 2 * sqz_sf.cap : 8;
        sqz_comm_t **g   = realloc(sqz_sf.comms, cap * sizeof(*g));
        if (NULL == g) {
            return SQZ_ERR_NO_MEMORY;
        }
        sqz_sf.comms = g;
        sqz_sf.cap   = cap;
    }
    const size_t index          = sqz_sf.ncomms++;
    sqz_sf.comms[index]         = comm;
    size_t               len    = 0;
    const unsigned char *blob   = sqz_statefile_blob(index, &len);
    if (blob) {
        const sqz_status_t st = sqz_state_load(comm, blob, len);
        if (SQZ_OK != st) {
            SQZ_ERROR("SQZ_STATE_FILE=%s: communicator %zu cannot take its saved state (see "
                      "above)", sqz_sf.path, index);
            return st;
        }
    }
    return SQZ_OK;
}

void sqz_statefile_detach(sqz_comm_t *comm)
{
    for (size_t i = 0; i < sqz_sf.ncomms; i++) {
        if (sqz_sf.comms[i] == comm) {
            sqz_sf.comms[i] = NULL;
        }
    }
}

sqz_status_t sqz_statefile_save(void)
{
    if (!sqz_statefile_active()) {
        return SQZ_OK;
    }
    char tmp[sizeof(sqz_sf.path) + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", sqz_sf.path);
    FILE    *f = fopen(tmp, "wb");
    uint64_t n = 0;
    for (size_t i = 0; i < sqz_sf.ncomms; i++) {
        n += NULL != sqz_sf.comms[i];
    }
    int ok = f && 1 == fwrite(SQZ_FILE_MAGIC, 8, 1, f) && 1 == fwrite(&n, sizeof(n), 1, f);
    for (size_t i = 0; ok && i < sqz_sf.ncomms; i++) {
        if (NULL == sqz_sf.comms[i]) {
            continue;
        }
        const uint64_t idx = i, len = sqz_state_save(sqz_sf.comms[i], NULL, 0);
        unsigned char *buf = malloc(len ? (size_t)len : 1);
        ok = buf && len && len == sqz_state_save(sqz_sf.comms[i], buf, (size_t)len) &&
             1 == fwrite(&idx, sizeof(idx), 1, f) && 1 == fwrite(&len, sizeof(len), 1, f) &&
             1 == fwrite(buf, (size_t)len, 1, f);
        free(buf);
    }
    ok = f && 0 == fclose(f) && ok;
    /* Renamed into place only when complete: a crash mid-write leaves the last checkpoint. */
    if (!ok || 0 != rename(tmp, sqz_sf.path)) {
        SQZ_ERROR("SQZ_STATE_FILE=%s: cannot write the checkpoint", sqz_sf.path);
        return SQZ_ERR_IO;
    }
    SQZ_INFO("SQZ_STATE_FILE=%s: saved the state of %llu communicator(s)", sqz_sf.path,
             (unsigned long long)n);
    return SQZ_OK;
}

void sqz_statefile_poll(void)
{
    if (sqz_sf_signalled) {
        sqz_sf_signalled = 0;
        (void)sqz_statefile_save();
    }
}

void sqz_statefile_fini(void)
{
    free(sqz_sf.comms);
    free(sqz_sf.file);
    memset(&sqz_sf, 0, sizeof(sqz_sf));
}
