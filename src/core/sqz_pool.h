/* A small thread pool for CPU compression (SQZ_THREADS).  The calling thread takes part as worker
 * 0; workers 1..T-1 are bound with hwloc to distinct cores of the process's own cpuset (the cores
 * mpirun gave this rank), so that ranks sharing a host do not fight over cores. */
#ifndef SQZ_POOL_H
#define SQZ_POOL_H

#include <squeeze.h>

typedef struct sqz_pool sqz_pool_t;

/** Runs task(i, worker, arg) for i in [0, ntasks); `worker` in [0, nthreads) identifies the thread
 *  (to pick per-thread state).  Returns when every task is done. */
typedef void (*sqz_pool_task_fn)(size_t i, int worker, void *arg);

/** Creates a pool of nthreads (>= 1; 1 runs everything on the caller). */
sqz_status_t sqz_pool_create(int nthreads, sqz_pool_t **pool);
void         sqz_pool_run(sqz_pool_t *pool, size_t ntasks, sqz_pool_task_fn fn, void *arg);
int          sqz_pool_size(const sqz_pool_t *pool);
/** A test hook: when set and it returns nonzero, worker `worker` is not started (as when
 *  pthread_create fails: the pool runs with the workers before it). */
extern int (*sqz_pool_start_fails)(int worker);
/** Stops and joins the workers.  Accepts NULL. */
void         sqz_pool_destroy(sqz_pool_t *pool);

#endif
