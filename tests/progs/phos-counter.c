/*
 * phos-counter - a task whose output proves continuity across checkpoint,
 * preemption and restore: it prints "count 1" .. "count N", one line every
 * DELAY_MS milliseconds, with write(2) (no stdio buffer to lose), then
 * "done N".  A restart from scratch shows as a second "count 1"; a lost or
 * repeated step as a gap or a duplicate.
 *
 *   phos-counter [--fork] N DELAY_MS
 *
 * --fork: the counting is done by a forked child (no exec); the task waits
 * for it and exits the way it exited (a task with a child process).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void say(const char *what, long v)
{
	char buf[96];
	int n = snprintf(buf, sizeof(buf), "%s %ld\n", what, v);
	size_t off = 0;

	while (n > 0 && off < (size_t)n) {
		ssize_t w = write(STDOUT_FILENO, buf + off, (size_t)n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			exit(3);
		off += (size_t)w;
	}
}

static void nap(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int count(long n, long delay)
{
	for (long i = 1; i <= n; i++) {
		say("count", i);
		nap(delay);
	}
	say("done", n);
	return 0;
}

int main(int argc, char **argv)
{
	int use_fork = 0, st;
	long n, delay;
	pid_t p;

	if (argc > 1 && strcmp(argv[1], "--fork") == 0) {
		use_fork = 1;
		argc--;
		argv++;
	}
	if (argc != 3 || (n = atol(argv[1])) <= 0 || (delay = atol(argv[2])) < 0) {
		fprintf(stderr, "usage: phos-counter [--fork] N DELAY_MS\n");
		return 2;
	}
	if (!use_fork)
		return count(n, delay);
	p = fork();
	if (p < 0) {
		perror("fork");
		return 1;
	}
	if (p == 0)
		_exit(count(n, delay));
	say("forked counter child", (long)p);
	while (waitpid(p, &st, 0) < 0)
		if (errno != EINTR) {
			perror("waitpid");
			return 1;
		}
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	fprintf(stderr, "phos-counter: child died of signal %d\n", WTERMSIG(st));
	return 128 + WTERMSIG(st);
}
