/* One thread per logical rank (see sqz_thread_transport.h). */
#include <pthread.h>

#include "sqz_thread_transport.h"

typedef struct {
    void (*fn)(int, void *);
    void *arg;
    int   rank;
} sqz_tt_job_t;

static void *sqz_tt_main(void *p)
{
    sqz_tt_job_t *j = p;
    j->fn(j->rank, j->arg);
    return NULL;
}

void sqz_thread_run(int nranks, void (*fn)(int rank, void *arg), void *arg)
{
    pthread_t    th[64];
    sqz_tt_job_t jobs[64];
    if (nranks > 64) {
        fprintf(stderr, "sqz_thread_run: at most 64 ranks\n");
        exit(1);
    }
    for (int r = 0; r < nranks; r++) {
        jobs[r] = (sqz_tt_job_t){.fn = fn, .arg = arg, .rank = r};
        pthread_create(&th[r], NULL, sqz_tt_main, &jobs[r]);
    }
    for (int r = 0; r < nranks; r++) {
        pthread_join(th[r], NULL);
    }
}
