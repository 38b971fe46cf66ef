/*
 * cr_pair.c - a parent and a child talking over two pipes, for
 * checkpoint/restore tests.
 *
 *   cr_pair FILE INTERVAL_MS
 *
 * The parent sends N to the child, the child checks it is the number it
 * expects, logs "C N" and answers N+1; the parent checks the answer, logs
 * "P N+1" and sends N+2 after INTERVAL_MS.  Both log to FILE through one
 * shared O_APPEND descriptor.  Each side keeps its own count, so after a
 * restore a lost or repeated message shows as an "ERROR" line (and the
 * process exits 3) or as a gap in the log.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int logfd;

static void logf_line(const char *who, unsigned long n)
{
	char line[64];
	int len = snprintf(line, sizeof(line), "%s %lu\n", who, n);

	if (write(logfd, line, (size_t)len) != len)
		_exit(1);
}

static int xread(int fd, unsigned long *v)
{
	size_t got = 0;

	while (got < sizeof(*v)) {
		ssize_t r = read(fd, (char *)v + got, sizeof(*v) - got);

		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static void xwrite(int fd, unsigned long v)
{
	if (write(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		_exit(1);
}

/* Close what the test harness left open (its log files): CRIU would
 * restore them too and refuses a file whose size changed since. */
static void close_inherited(void)
{
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
}

int main(int argc, char **argv)
{
	int p2c[2], c2p[2];
	unsigned long n = 0, v;
	struct timespec ts;
	long ms;
	pid_t child;

	close_inherited();

	if (argc != 3) {
		fprintf(stderr, "usage: cr_pair FILE INTERVAL_MS\n");
		return 2;
	}
	ms = atol(argv[2]);
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	logfd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (logfd < 0 || pipe(p2c) < 0 || pipe(c2p) < 0) {
		perror("cr_pair");
		return 1;
	}
	child = fork();
	if (child < 0) {
		perror("fork");
		return 1;
	}
	if (child == 0) {
		close(p2c[1]);
		close(c2p[0]);
		for (;;) {
			if (xread(p2c[0], &v) < 0)
				_exit(0);
			if (v != n) {
				logf_line("ERROR child expected", n);
				_exit(3);
			}
			logf_line("C", v);
			n = v + 2;
			xwrite(c2p[1], v + 1);
		}
	}
	close(p2c[0]);
	close(c2p[1]);
	for (;;) {
		xwrite(p2c[1], n);
		if (xread(c2p[0], &v) < 0) {
			logf_line("ERROR child gone at", n);
			kill(child, SIGKILL);
			return 3;
		}
		if (v != n + 1) {
			logf_line("ERROR parent expected", n + 1);
			kill(child, SIGKILL);
			return 3;
		}
		logf_line("P", v);
		n = v + 1;
		nanosleep(&ts, NULL);
	}
}
