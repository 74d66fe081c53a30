/* The start-up agreement of the MPI interposer (see sqz_mpi_agree.h). */
#include "config.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <squeeze.h>

#include "interpose/mpi/sqz_mpi_agree.h"
#include "sqz_log.h"
#include "sqz_settings.h"

/* Reserved tags on MPI_COMM_WORLD, used only inside MPI_Init. */
enum { SQZ_TAG_REPORT = 29101, SQZ_TAG_VERDICT = 29102, SQZ_TAG_DIGEST = 29103, SQZ_TAG_ACK = 29104 };
#define SQZ_AGREE_MAGIC 0x52515a53u /* "SQZR" */

typedef struct sqz_report {
    uint32_t magic;
    uint32_t version;
    int32_t  config_ok;
    int32_t  check;
    uint64_t hash;
} sqz_report_t;

enum { SQZ_VERDICT_GO = 0, SQZ_VERDICT_STOP = 1, SQZ_VERDICT_DIGEST = 2, SQZ_VERDICT_WARN = 3 };

typedef struct sqz_verdict {
    int32_t code;
    int32_t from_root; /* rank 0 sent it (a leaf that heard nothing makes its own) */
    char    text[1016];
} sqz_verdict_t;

static double sqz_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Waits for the n requests until `deadline`, progressing MPI; done[i] says which completed.
 * \return how many did not complete (those are cancelled and freed). */
static int sqz_wait_until(MPI_Request *req, int n, int *done, double deadline)
{
    int left = 0;
    for (int i = 0; i < n; i++) {
        done[i] = MPI_REQUEST_NULL == req[i];
        left += !done[i];
    }
    while (left > 0 && sqz_now() < deadline) {
        for (int i = 0; i < n; i++) {
            int flag = 0;
            if (!done[i] && MPI_SUCCESS == PMPI_Test(&req[i], &flag, MPI_STATUS_IGNORE) && flag) {
                done[i] = 1;
                left--;
            }
        }
        if (left > 0) {
            const struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
    for (int i = 0; i < n; i++) {
        if (!done[i]) {
            PMPI_Cancel(&req[i]);
            PMPI_Request_free(&req[i]);
        }
    }
    return left;
}

/* Appends "r" to a list of ranks in text (", " separated; "..." once it is long). */
static void sqz_list_rank(char *text, size_t len, int r)
{
    const size_t o = strlen(text);
    if (o + 16 < len) {
        snprintf(text + o, len - o, "%s%d", o ? ", " : "", r);
    } else if (o + 4 < len && 0 != strcmp(text + o - 3, "...")) {
        snprintf(text + o, len - o, "...");
    }
}

/* "rank 3 has" or "ranks 1, 2 have", for a list made by sqz_list_rank. */
static const char *sqz_ranks_word(const char *list) { return strchr(list, ',') ? "ranks" : "rank"; }
static const char *sqz_has_word(const char *list) { return strchr(list, ',') ? "have" : "has"; }

/* ---------------------------------------------------------------------------------------------
 * Rank 0: collect, judge, answer
 * ------------------------------------------------------------------------------------------- */
typedef struct sqz_judge {
    int            P;
    sqz_report_t  *rep;     /* P reports (rank 0's own at 0) */
    int           *arrived; /* P */
    sqz_verdict_t *out;     /* P verdicts (rank 0's own at 0) */
    const char    *digest;  /* rank 0's, or NULL */
    double         timeout;
} sqz_judge_t;

/* A stop for every rank, with `text` for all but the ranks whose own message says it. */
static void sqz_judge_stop_all(sqz_judge_t *j, const char *text, const int *quiet)
{
    for (int r = 0; r < j->P; r++) {
        j->out[r].code = SQZ_VERDICT_STOP;
        snprintf(j->out[r].text, sizeof(j->out[r].text), "%s", quiet && quiet[r] ? "" : text);
    }
}

/* Missing ranks, bad configurations and foreign versions.  \return 1 when it stopped the job. */
static int sqz_judge_presence(sqz_judge_t *j)
{
    char missing[512] = "", badcfg[512] = "", foreign[512] = "", text[1016];
    int *quiet        = calloc((size_t)j->P, sizeof(int));
    for (int r = 0; r < j->P; r++) {
        if (!j->arrived[r]) {
            sqz_list_rank(missing, sizeof(missing), r);
        } else if (SQZ_AGREE_MAGIC != j->rep[r].magic || SQZ_VERSION_NUMBER != j->rep[r].version) {
            sqz_list_rank(foreign, sizeof(foreign), r);
        } else if (!j->rep[r].config_ok) {
            sqz_list_rank(badcfg, sizeof(badcfg), r);
            if (quiet) {
                quiet[r] = 1; /* it printed its own configuration error */
            }
        }
    }
    int stop = 1;
    if (missing[0]) {
        snprintf(text, sizeof(text), "%s %s did not report to Squeeze's start-up agreement "
                 "within %g s: it runs without libsqueeze_mpi.so (preload it on every rank: in an "
                 "MPMD launch, -x LD_PRELOAD=... in each app context)", sqz_ranks_word(missing),
                 missing, j->timeout);
    } else if (foreign[0]) {
        snprintf(text, sizeof(text), "%s %s %s another version of libsqueeze_mpi.so than rank 0 "
                 "(%d.%d.%d): use one build on every rank", sqz_ranks_word(foreign), foreign,
                 strchr(foreign, ',') ? "run" : "runs", SQZ_VERSION_MAJOR, SQZ_VERSION_MINOR,
                 SQZ_VERSION_PATCH);
    } else if (badcfg[0]) {
        snprintf(text, sizeof(text), "%s %s %s a configuration error (its message says which "
                 "variable): fix it on every rank", sqz_ranks_word(badcfg), badcfg,
                 sqz_has_word(badcfg));
    } else {
        stop = 0;
    }
    if (stop) {
        sqz_judge_stop_all(j, text, missing[0] ? NULL : quiet);
    }
    free(quiet);
    return stop;
}

/* Settings that differ from rank 0's: asks those ranks for their digest (deadline), and writes
 * each one's difference into its verdict (a stop when any rank checks, else a warning). */
static void sqz_judge_settings(sqz_judge_t *j)
{
    const int P = j->P;
    int       checked = 0, ndiff = 0;
    for (int r = 0; r < P; r++) {
        checked |= 0 != j->rep[r].check;
        ndiff += j->rep[r].hash != j->rep[0].hash;
    }
    if (0 == ndiff) {
        return;
    }
    char        *texts = calloc((size_t)P, SQZ_SETTINGS_DIGEST_MAX);
    MPI_Request *req   = calloc((size_t)P, sizeof(MPI_Request));
    int         *done  = calloc((size_t)P, sizeof(int));
    char         who[512] = "", text[1016];
    for (int r = 1; r < P && texts && req && done; r++) {
        req[r] = MPI_REQUEST_NULL;
        if (j->rep[r].hash != j->rep[0].hash) {
            const sqz_verdict_t ask = {.code = SQZ_VERDICT_DIGEST};
            PMPI_Send(&ask, sizeof(ask), MPI_BYTE, r, SQZ_TAG_VERDICT, MPI_COMM_WORLD);
            PMPI_Irecv(texts + (size_t)r * SQZ_SETTINGS_DIGEST_MAX, SQZ_SETTINGS_DIGEST_MAX,
                       MPI_BYTE, r, SQZ_TAG_DIGEST, MPI_COMM_WORLD, &req[r]);
            sqz_list_rank(who, sizeof(who), r);
        }
    }
    if (texts && req && done) {
        req[0] = MPI_REQUEST_NULL;
        sqz_wait_until(req, P, done, sqz_now() + j->timeout);
    }
    snprintf(text, sizeof(text), "%s %s %s with different Squeeze settings than rank 0 (its "
             "message says which)%s", sqz_ranks_word(who), who, strchr(who, ',') ? "run" : "runs",
             checked ? "" : "; SQZ_CHECK_SETTINGS=0 on every rank: going on");
    for (int r = 0; r < P; r++) {
        sqz_verdict_t *v = &j->out[r];
        v->code          = checked ? SQZ_VERDICT_STOP : SQZ_VERDICT_WARN;
        snprintf(v->text, sizeof(v->text), "%s", text);
        if (r > 0 && j->rep[r].hash != j->rep[0].hash && texts && done && done[r]) {
            char diff[sizeof(v->text) - 40];
            texts[((size_t)r + 1) * SQZ_SETTINGS_DIGEST_MAX - 1] = '\0';
            sqz_settings_diff(texts + (size_t)r * SQZ_SETTINGS_DIGEST_MAX, j->digest, 0, diff,
                              sizeof(diff));
            snprintf(v->text, sizeof(v->text), "settings differ from rank 0's: %s", diff);
        }
    }
    free(texts);
    free(req);
    free(done);
}

/* Rank 0 waits for the reports until the deadline and acknowledges each one as it arrives (a
 * rank that gets no acknowledgement in time knows that rank 0 runs without the interposer). */
static void sqz_collect_reports(MPI_Request *req, int P, int *arrived, double deadline)
{
    static const int32_t ack = 1;
    int                  left = P - 1;
    arrived[0]                = 1;
    for (int r = 1; r < P; r++) {
        arrived[r] = 0;
    }
    while (left > 0 && sqz_now() < deadline) {
        for (int r = 1; r < P; r++) {
            int flag = 0;
            if (!arrived[r] && MPI_SUCCESS == PMPI_Test(&req[r], &flag, MPI_STATUS_IGNORE) &&
                flag) {
                arrived[r] = 1;
                left--;
                MPI_Request a;
                PMPI_Isend(&ack, 1, MPI_INT32_T, r, SQZ_TAG_ACK, MPI_COMM_WORLD, &a);
                PMPI_Request_free(&a);
            }
        }
        if (left > 0) {
            const struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
    for (int r = 1; r < P; r++) {
        if (!arrived[r]) {
            PMPI_Cancel(&req[r]);
            PMPI_Request_free(&req[r]);
        }
    }
}

/* Rank 0's side.  \return its own verdict. */
static sqz_verdict_t sqz_agree_root(const sqz_report_t *mine, const char *digest, int P,
                                    double timeout)
{
    sqz_judge_t j = {.P = P, .digest = digest, .timeout = timeout};
    j.rep         = calloc((size_t)P, sizeof(*j.rep));
    j.arrived     = calloc((size_t)P, sizeof(int));
    j.out         = calloc((size_t)P, sizeof(*j.out));
    MPI_Request *req = calloc((size_t)P, sizeof(MPI_Request));
    sqz_verdict_t own = {.code = SQZ_VERDICT_STOP, .text = "out of memory at start-up"};
    if (NULL == j.rep || NULL == j.arrived || NULL == j.out || NULL == req) {
        goto out; /* (the others then stop at their deadline, naming rank 0) */
    }
    j.rep[0]     = *mine;
    j.arrived[0] = 1;
    req[0]       = MPI_REQUEST_NULL;
    for (int r = 1; r < P; r++) {
        PMPI_Irecv(&j.rep[r], sizeof(sqz_report_t), MPI_BYTE, r, SQZ_TAG_REPORT, MPI_COMM_WORLD,
                   &req[r]);
    }
    sqz_collect_reports(req, P, j.arrived, sqz_now() + timeout);
    if (!sqz_judge_presence(&j) && digest) {
        sqz_judge_settings(&j);
    }
    for (int r = 1; r < P; r++) {
        req[r]            = MPI_REQUEST_NULL;
        j.out[r].from_root = 1;
        if (j.arrived[r]) {
            PMPI_Isend(&j.out[r], sizeof(sqz_verdict_t), MPI_BYTE, r, SQZ_TAG_VERDICT,
                       MPI_COMM_WORLD, &req[r]);
        }
    }
    sqz_wait_until(req, P, j.arrived, sqz_now() + timeout);
    own = j.out[0];
out:
    free(j.rep);
    free(j.arrived);
    free(j.out);
    free(req);
    return own;
}

/* ---------------------------------------------------------------------------------------------
 * The other ranks: report, answer a request for the digest, take the verdict
 * ------------------------------------------------------------------------------------------- */
static sqz_verdict_t sqz_agree_leaf(const sqz_report_t *mine, const char *digest, double timeout)
{
    sqz_verdict_t v = {.code = SQZ_VERDICT_STOP};
    MPI_Request   req[2];
    int           done[2];
    int32_t       ack = 0;
    PMPI_Isend(mine, sizeof(*mine), MPI_BYTE, 0, SQZ_TAG_REPORT, MPI_COMM_WORLD, &req[0]);
    PMPI_Irecv(&ack, 1, MPI_INT32_T, 0, SQZ_TAG_ACK, MPI_COMM_WORLD, &req[1]);
    if (sqz_wait_until(req, 2, done, sqz_now() + timeout) > 0) {
        snprintf(v.text, sizeof(v.text), "rank 0 did not take part in Squeeze's start-up "
                 "agreement within %g s: it runs without libsqueeze_mpi.so (preload it on every "
                 "rank: in an MPMD launch, -x LD_PRELOAD=... in each app context)", timeout);
        return v;
    }
    /* Rank 0 may wait a whole timeout for others, and another for a digest. */
    const double deadline = sqz_now() + 2 * timeout + 1;
    PMPI_Irecv(&v, sizeof(v), MPI_BYTE, 0, SQZ_TAG_VERDICT, MPI_COMM_WORLD, &req[1]);
    if (sqz_wait_until(&req[1], 1, done, deadline) > 0) {
        snprintf(v.text, sizeof(v.text), "rank 0 stopped answering Squeeze's start-up agreement");
        v.code = SQZ_VERDICT_STOP;
        return v;
    }
    if (SQZ_VERDICT_DIGEST == v.code) {
        char text[SQZ_SETTINGS_DIGEST_MAX] = "";
        snprintf(text, sizeof(text), "%s", digest ? digest : "");
        PMPI_Isend(text, sizeof(text), MPI_BYTE, 0, SQZ_TAG_DIGEST, MPI_COMM_WORLD, &req[0]);
        PMPI_Irecv(&v, sizeof(v), MPI_BYTE, 0, SQZ_TAG_VERDICT, MPI_COMM_WORLD, &req[1]);
        if (sqz_wait_until(req, 2, done, deadline) > 0) {
            snprintf(v.text, sizeof(v.text), "rank 0 stopped answering Squeeze's start-up "
                     "agreement");
            v.code = SQZ_VERDICT_STOP;
        }
    }
    v.text[sizeof(v.text) - 1] = '\0';
    return v;
}

int sqz_mpi_agree(int rank, int nranks, int config_ok, const char *digest, uint64_t hash,
                  int check, double timeout)
{
    if (nranks < 2) {
        return config_ok;
    }
    const sqz_report_t mine = {.magic = SQZ_AGREE_MAGIC, .version = SQZ_VERSION_NUMBER,
                               .config_ok = config_ok, .check = check, .hash = hash};
    const sqz_verdict_t v = 0 == rank ? sqz_agree_root(&mine, config_ok ? digest : NULL, nranks,
                                                       timeout)
                                      : sqz_agree_leaf(&mine, config_ok ? digest : NULL, timeout);
    if (v.text[0]) {
        SQZ_LOG(SQZ_VERDICT_WARN == v.code ? SQZ_LOG_WARN : SQZ_LOG_ERROR, "%s%s", v.text,
                SQZ_VERDICT_STOP == v.code ? ": stopping the job" : "");
    }
    if (SQZ_VERDICT_STOP != v.code) {
        return 1;
    }
    return (0 == rank || v.from_root) ? 0 : -1;
}
