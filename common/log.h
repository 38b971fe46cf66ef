/*
 * log.h - logging for phosd and the tools.
 *
 * One sink per process: stderr (foreground, tools, tests) or syslog
 * (daemon).  Priorities are syslog's.  Messages below the configured
 * level are dropped before formatting.  Safe to call from any thread;
 * not async-signal-safe.
 */
#ifndef PHOS_LOG_H
#define PHOS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

enum phos_log_target {
	PHOS_LOG_STDERR,
	PHOS_LOG_SYSLOG,
};

/* ident: program name used as prefix/syslog ident (not copied: keep it alive). */
void phos_log_open(const char *ident, enum phos_log_target target, int level);
void phos_log_set_level(int level);
int phos_log_get_level(void);
void phos_log_close(void);

/* Parse "error", "warning", "notice", "info", "debug"; -1 if unknown. */
int phos_log_level_parse(const char *s);
const char *phos_log_level_name(int level);

void phos_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Read fd, a helper's stderr, to EOF (a chatty helper must not block on a
 * full pipe).  Its last line says what happened and is returned in last;
 * every line before it (a fallback taken, where the time went) is logged
 * at info as "WHO: line" as it comes.  Lines are cut at the buffer's size
 * (marked " [...]").
 */
void phos_log_lines(int fd, const char *who, char *last, size_t n);

/* Read fd to EOF a line at a time: each(arg, line, cut) for every line that
 * is not empty (without its newline; cut: it was longer than 1023 bytes
 * and is cut there), the last one also without a newline. */
void phos_read_lines(int fd, void (*each)(void *arg, const char *line, bool cut), void *arg);

#define log_err(...)     phos_log(LOG_ERR, __VA_ARGS__)
#define log_warn(...)    phos_log(LOG_WARNING, __VA_ARGS__)
#define log_notice(...)  phos_log(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)    phos_log(LOG_INFO, __VA_ARGS__)
#define log_debug(...)   phos_log(LOG_DEBUG, __VA_ARGS__)

#endif
