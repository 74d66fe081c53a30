#include "config.h"

#include <hwloc.h>
#include <pthread.h>
#include <stdlib.h>

#include "sqz_log.h"
#include "sqz_pool.h"

struct sqz_pool {
    int              n;
    pthread_t       *threads;
    pthread_mutex_t  lock;
    pthread_cond_t   wake, done;
    uint64_t         generation; /* bumped per run: workers wait for a new one */
    int              stop;
    /* the current run */
    sqz_pool_task_fn fn;
    void            *arg;
    size_t           ntasks, next; /* next task to hand out (under lock) */
    int              busy;         /* workers still inside the current run */
    hwloc_topology_t topo;
    hwloc_cpuset_t   own;          /* the process's cpuset at creation */
};

typedef struct {
    sqz_pool_t *pool;
    int         id;
} sqz_worker_t;

static size_t sqz_pool_take(sqz_pool_t *p)
{
    pthread_mutex_lock(&p->lock);
    const size_t i = p->next < p->ntasks ? p->next++ : p->ntasks;
    pthread_mutex_unlock(&p->lock);
    return i;
}

static void sqz_pool_work(sqz_pool_t *p, int id)
{
    for (size_t i = sqz_pool_take(p); i < p->ntasks; i = sqz_pool_take(p)) {
        p->fn(i, id, p->arg);
    }
}

/* Binds the calling worker to the id-th core of the process's cpuset (round robin). */
static void sqz_pool_bind(sqz_pool_t *p, int id)
{
    if (NULL == p->topo || NULL == p->own) {
        return;
    }
    const int ncores = hwloc_get_nbobjs_inside_cpuset_by_type(p->topo, p->own, HWLOC_OBJ_CORE);
    if (ncores <= 1) {
        return; /* one core for this rank: nothing to spread over */
    }
    hwloc_obj_t core = hwloc_get_obj_inside_cpuset_by_type(p->topo, p->own, HWLOC_OBJ_CORE, id % ncores);
    if (core && 0 != hwloc_set_cpubind(p->topo, core->cpuset, HWLOC_CPUBIND_THREAD)) {
        SQZ_DEBUG("SQZ_THREADS: could not bind worker %d", id);
    }
}

static void *sqz_pool_main(void *argp)
{
    sqz_worker_t *w    = argp;
    sqz_pool_t   *p    = w->pool;
    const int     id   = w->id;
    uint64_t      seen = 0;
    free(w);
    sqz_pool_bind(p, id);
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (!p->stop && p->generation == seen) {
            pthread_cond_wait(&p->wake, &p->lock);
        }
        if (p->stop) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);
        sqz_pool_work(p, id);
        pthread_mutex_lock(&p->lock);
        if (0 == --p->busy) {
            pthread_cond_signal(&p->done);
        }
        pthread_mutex_unlock(&p->lock);
    }
}

sqz_status_t sqz_pool_create(int nthreads, sqz_pool_t **out)
{
    sqz_pool_t *p = calloc(1, sizeof(*p));
    if (NULL == p) {
        return SQZ_ERR_NO_MEMORY;
    }
    p->n = nthreads < 1 ? 1 : nthreads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (p->n > 1 && 0 == hwloc_topology_init(&p->topo) && 0 == hwloc_topology_load(p->topo)) {
        p->own = hwloc_bitmap_alloc();
        if (p->own && 0 != hwloc_get_cpubind(p->topo, p->own, HWLOC_CPUBIND_PROCESS)) {
            hwloc_bitmap_free(p->own);
            p->own = NULL;
        }
    }
    p->threads = calloc((size_t)p->n, sizeof(pthread_t));
    if (NULL == p->threads) {
        sqz_pool_destroy(p);
        return SQZ_ERR_NO_MEMORY;
    }
    for (int i = 1; i < p->n; i++) {
        sqz_worker_t *w = malloc(sizeof(*w));
        if (NULL == w) {
            p->n = i;
            break;
        }
        *w = (sqz_worker_t){.pool = p, .id = i};
        if ((sqz_pool_start_fails && sqz_pool_start_fails(i)) ||
            0 != pthread_create(&p->threads[i], NULL, sqz_pool_main, w)) {
            free(w);
            p->n = i; /* run with the workers we got */
            break;
        }
    }
    /* The calling thread (worker 0) is the application's: its binding is left alone. */
    *out = p;
    return SQZ_OK;
}

int (*sqz_pool_start_fails)(int worker);

int sqz_pool_size(const sqz_pool_t *pool) { return pool ? pool->n : 1; }

void sqz_pool_run(sqz_pool_t *p, size_t ntasks, sqz_pool_task_fn fn, void *arg)
{
    if (NULL == p || p->n <= 1 || ntasks <= 1) {
        for (size_t i = 0; i < ntasks; i++) {
            fn(i, 0, arg);
        }
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->fn     = fn;
    p->arg    = arg;
    p->ntasks = ntasks;
    p->next   = 0;
    p->busy   = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    sqz_pool_work(p, 0);
    pthread_mutex_lock(&p->lock);
    while (p->busy > 0) {
        pthread_cond_wait(&p->done, &p->lock);
    }
    pthread_mutex_unlock(&p->lock);
}

void sqz_pool_destroy(sqz_pool_t *p)
{
    if (NULL == p) {
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; p->threads && i < p->n; i++) {
        pthread_join(p->threads[i], NULL);
    }
    free(p->threads);
    if (p->own) {
        hwloc_bitmap_free(p->own);
    }
    if (p->topo) {
        hwloc_topology_destroy(p->topo);
    }
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
