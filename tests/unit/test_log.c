/*
 * Unit tests: a helper's stderr read a line at a time (common/log.c):
 * empty lines skipped, a line longer than the buffer cut and marked, a
 * last line without a newline still read; phos_log_lines keeps the last.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

/* a pipe's read end holding text (the write end closed) */
static int pipe_of(const char *text)
{
	int p[2];

	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], text, strlen(text)), (ssize_t)strlen(text));
	close(p[1]);
	return p[0];
}

static char got[8][1100];
static bool got_cut[8];
static int ngot;

static void collect(void *arg, const char *line, bool cut)
{
	(void)arg;
	assert_true(ngot < 8);
	snprintf(got[ngot], sizeof(got[ngot]), "%s", line);
	got_cut[ngot++] = cut;
}

static char *text_with_long_line(void)
{
	static char t[2000];
	size_t n = 0;

	n += (size_t)snprintf(t, sizeof(t), "first\n\n\nsecond\n");
	memset(t + n, 'x', 1500);
	n += 1500;
	snprintf(t + n, sizeof(t) - n, "\nlast words");
	return t;
}

static void test_read_lines(void **state)
{
	int fd = pipe_of(text_with_long_line());

	ngot = 0;
	phos_read_lines(fd, collect, NULL);
	close(fd);
	assert_int_equal(ngot, 4);
	assert_string_equal(got[0], "first");
	assert_string_equal(got[1], "second");
	assert_false(got_cut[1]);
	assert_int_equal(strlen(got[2]), 1023);	/* cut at the buffer */
	assert_true(got_cut[2]);
	assert_string_equal(got[3], "last words");	/* no newline after it */
	assert_false(got_cut[3]);
	(void)state;
}

static void test_log_lines_last(void **state)
{
	char last[64];
	int fd = pipe_of(text_with_long_line());

	phos_log_lines(fd, "test", last, sizeof(last));
	close(fd);
	assert_string_equal(last, "last words");
	/* a last line longer than the caller's buffer is marked */
	fd = pipe_of("a fallback was taken\nthis last line is longer than the sixty-four bytes "
		     "the caller has for it\n");
	phos_log_lines(fd, "test", last, sizeof(last));
	close(fd);
	assert_int_equal(strlen(last), sizeof(last) - 1);
	assert_string_equal(last + sizeof(last) - 7, " [...]");
	/* nothing written: nothing said */
	fd = pipe_of("");
	phos_log_lines(fd, "test", last, sizeof(last));
	close(fd);
	assert_string_equal(last, "");
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_lines),
		cmocka_unit_test(test_log_lines_last),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
