/* Logging.  SQZ_LOG (error|warn|info|debug) sets the level; lines go to stderr as
 * "squeeze[rank R] LEVEL: message".  Messages given with SQZ_LOG_ONCE print at most once per
 * call site, for per-call conditions such as a fallback. */
#ifndef SQZ_LOG_H
#define SQZ_LOG_H

#include <squeeze.h>

typedef enum { SQZ_LOG_ERROR = 0, SQZ_LOG_WARN = 1, SQZ_LOG_INFO = 2, SQZ_LOG_DEBUG = 3 } sqz_log_level_t;

void sqz_log_set_level(int level);
int  sqz_log_get_level(void);
void sqz_log_set_rank(int rank);
void sqz_log_write(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define SQZ_LOG(level, ...)                                                          \
    do {                                                                             \
        if ((level) <= sqz_log_get_level()) {                                        \
            sqz_log_write((level), __FILE__, __LINE__, __VA_ARGS__);                 \
        }                                                                            \
    } while (0)
#define SQZ_ERROR(...) SQZ_LOG(SQZ_LOG_ERROR, __VA_ARGS__)
#define SQZ_WARN(...)  SQZ_LOG(SQZ_LOG_WARN, __VA_ARGS__)
#define SQZ_INFO(...)  SQZ_LOG(SQZ_LOG_INFO, __VA_ARGS__)
#define SQZ_DEBUG(...) SQZ_LOG(SQZ_LOG_DEBUG, __VA_ARGS__)

#define SQZ_LOG_ONCE(level, ...)                                                     \
    do {                                                                             \
        static int sqz_once_;                                                        \
        if (!__atomic_exchange_n(&sqz_once_, 1, __ATOMIC_RELAXED)) {                 \
            SQZ_LOG(level, __VA_ARGS__);                                             \
        }                                                                            \
    } while (0)

/* Check macros: log the failing expression at debug level and propagate. */
#define SQZ_CHECK(call)                                                              \
    do {                                                                             \
        const sqz_status_t sqz_st_ = (call);                                         \
        if (SQZ_OK != sqz_st_) {                                                     \
            SQZ_DEBUG("%s -> %s", #call, sqz_status_string(sqz_st_));                \
            return sqz_st_;                                                          \
        }                                                                            \
    } while (0)

#define SQZ_CHECK_GOTO(call, st, label)                                              \
    do {                                                                             \
        (st) = (call);                                                               \
        if (SQZ_OK != (st)) {                                                        \
            SQZ_DEBUG("%s -> %s", #call, sqz_status_string(st));                     \
            goto label;                                                              \
        }                                                                            \
    } while (0)

/* A transport call returns 0 on success. */
#define SQZ_TRANSPORT_CHECK_GOTO(call, st, label)                                    \
    do {                                                                             \
        if (0 != (call)) {                                                           \
            SQZ_DEBUG("%s -> transport error", #call);                               \
            (st) = SQZ_ERR_TRANSPORT;                                                \
            goto label;                                                              \
        }                                                                            \
    } while (0)

#endif
