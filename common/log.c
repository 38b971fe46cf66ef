#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static const char *log_ident = "phos";
static enum phos_log_target log_target = PHOS_LOG_STDERR;
static int log_level = LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const struct {
	const char *name;
	int level;
} levels[] = {
	{ "error", LOG_ERR },
	{ "warning", LOG_WARNING },
	{ "notice", LOG_NOTICE },
	{ "info", LOG_INFO },
	{ "debug", LOG_DEBUG },
};

int phos_log_level_parse(const char *s)
{
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(s, levels[i].name) == 0)
			return levels[i].level;
	return -1;
}

const char *phos_log_level_name(int level)
{
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (levels[i].level == level)
			return levels[i].name;
	return level < LOG_ERR ? "error" : "debug";
}

void phos_log_open(const char *ident, enum phos_log_target target, int level)
{
	log_ident = ident;
	log_target = target;
	log_level = level;
	if (target == PHOS_LOG_SYSLOG)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void phos_log_set_level(int level)
{
	log_level = level;
}

int phos_log_get_level(void)
{
	return log_level;
}

void phos_log_close(void)
{
	if (log_target == PHOS_LOG_SYSLOG)
		closelog();
	log_target = PHOS_LOG_STDERR;
}

void phos_log(int prio, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	if (prio > log_level) {
		errno = saved;
		return;
	}
	va_start(ap, fmt);
	if (log_target == PHOS_LOG_SYSLOG) {
		vsyslog(prio, fmt, ap);
	} else {
		char buf[1024];
		struct timespec ts;
		struct tm tm;

		vsnprintf(buf, sizeof(buf), fmt, ap);
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		pthread_mutex_lock(&log_lock);
		fprintf(stderr, "%02d:%02d:%02d.%03ld %s[%s]: %s\n", tm.tm_hour,
			tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, log_ident,
			phos_log_level_name(prio), buf);
		pthread_mutex_unlock(&log_lock);
	}
	va_end(ap);
	errno = saved;
}

void phos_read_lines(int fd, void (*each)(void *arg, const char *line, bool cut), void *arg)
{
	char line[1024], tmp[512];
	size_t len = 0;
	bool cut = false;
	ssize_t r;

	while ((r = read(fd, tmp, sizeof(tmp))) > 0 || (r < 0 && errno == EINTR)) {
		for (ssize_t i = 0; i < r; i++) {
			if (tmp[i] != '\n') {
				if (len < sizeof(line) - 1)
					line[len++] = tmp[i];
				else
					cut = true;
				continue;
			}
			if (len) {
				line[len] = '\0';
				each(arg, line, cut);
			}
			len = 0;
			cut = false;
		}
	}
	if (len) {	/* no newline at the end */
		line[len] = '\0';
		each(arg, line, cut);
	}
}

struct last_line {
	const char *who;
	char *last;
	size_t n;
};

/* a line: the one before it is logged, this one kept as the last */
static void keep_last(void *arg, const char *line, bool cut)
{
	struct last_line *l = arg;

	if (l->last[0])
		log_info("%s: %s", l->who, l->last);
	if (phos_strlcpy(l->last, line, l->n) < 0 || cut)
		phos_strlcpy(l->last + (l->n > 7 ? l->n - 7 : 0), " [...]", 7);
}

void phos_log_lines(int fd, const char *who, char *last, size_t n)
{
	struct last_line l = { who, last, n };

	last[0] = '\0';
	phos_read_lines(fd, keep_last, &l);
}
