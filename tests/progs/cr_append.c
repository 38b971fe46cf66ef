/*
 * cr_append.c - appends a counter to a file it keeps open, for
 * checkpoint/restore tests.
 *
 *   cr_append FILE INTERVAL_MS [MEGABYTES]
 *
 * Opens FILE (O_APPEND) once, touches MEGABYTES of memory (to make a dump
 * big and slow), then writes "0\n", "1\n"... to FILE, one line every
 * INTERVAL_MS, forever.  After a stop-mode checkpoint and a restore the
 * file must hold 0..N with no gap and no repeat.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Close what the test harness left open (its log files): CRIU would
 * restore them too and refuses a file whose size changed since. */
static void close_inherited(void)
{
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
}

int main(int argc, char **argv)
{
	unsigned long n = 0, mb;
	struct timespec ts;
	char line[64];
	long ms;
	int fd;

	close_inherited();

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: cr_append FILE INTERVAL_MS [MEGABYTES]\n");
		return 2;
	}
	ms = atol(argv[2]);
	mb = argc > 3 ? strtoul(argv[3], NULL, 10) : 0;
	if (mb) {
		unsigned char *p = malloc(mb << 20);

		if (!p) {
			perror("malloc");
			return 1;
		}
		/* Distinct bytes on every page: nothing CRIU could skip. */
		for (size_t i = 0; i < (mb << 20); i++)
			p[i] = (unsigned char)(i * 2654435761u >> 13);
	}
	fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	for (;;) {
		int len = snprintf(line, sizeof(line), "%lu\n", n++);

		if (write(fd, line, (size_t)len) != len)
			return 1;
		nanosleep(&ts, NULL);
	}
}
