/*
 * cr_tick.c - a counter driven by its input, for checkpoint/restore tests.
 *
 * For every byte read on stdin it writes "count N\n" on stdout, N = 0, 1,
 * 2...; it exits 0 at EOF.  Its whole state is N, so after a restore the
 * next byte must give exactly the number after the last one printed before
 * the checkpoint: the test can check continuity without any timing.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Close what the test harness left open (its log files): CRIU would
 * restore them too and refuses a file whose size changed since. */
static void close_inherited(void)
{
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
}

int main(void)
{
	unsigned long n = 0;
	char c, line[64];

	close_inherited();

	for (;;) {
		ssize_t r = read(0, &c, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0;
		int len = snprintf(line, sizeof(line), "count %lu\n", n++);
		if (write(1, line, (size_t)len) != len)
			return 2;
	}
}
