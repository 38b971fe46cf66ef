/*
 * Unit tests: the order of a restore's read-ahead (daemon/prefetch.c).
 * criu's own files first, then the first pages of each file the process
 * maps (CRIU reads their ELF headers one after another as it opens them),
 * each file once however often the list names it, then the process's
 * ranges as recorded; lines the format does not carry are left out.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "prefetch.h"

static char got[16][80];
static size_t ngot;

static void each(void *arg, uint64_t off, uint64_t len, const char *path)
{
	(void)arg;
	assert_true(ngot < 16);
	snprintf(got[ngot++], sizeof(got[0]), "%llx %llx %s", (unsigned long long)off,
		 (unsigned long long)len, path);
}

static FILE *text(const char *s)
{
	FILE *f = fmemopen((void *)s, strlen(s), "r");

	assert_non_null(f);
	return f;
}

static void test_heads_first(void **state)
{
	static const char *want[] = {
		"0 2000 /usr/sbin/criu", "0 8000 /lib/libc.so.6",
		"0 10000 /lib/libtorch.so", "0 10000 /data/set.bin", "0 10000 /lib/libc.so.6",
		"1000 300000 /lib/libtorch.so", "400000 2000 /lib/libtorch.so",
		"0 1000 /data/set.bin", "0 3000 /lib/libc.so.6", "5000 1000 /lib/libtorch.so",
	};
	size_t n;

	(void)state;
	ngot = 0;
	n = prefetch_order(text("0 2000 /usr/sbin/criu\n0 8000 /lib/libc.so.6\n"),
			   text("1000 300000 /lib/libtorch.so\n400000 2000 /lib/libtorch.so\n"
				"0 1000 /data/set.bin\n"
				"not a line\n"
				"0 3000 /lib/libc.so.6\n"
				"10 relative/path\n"
				"5000 1000 /lib/libtorch.so\n"),
			   each, NULL);
	assert_int_equal(n, sizeof(want) / sizeof(want[0]));
	assert_int_equal(ngot, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(got[i], want[i]);
}

static void test_one_list(void **state)
{
	(void)state;
	ngot = 0;
	/* no criu list: the heads, then the ranges */
	assert_int_equal(prefetch_order(NULL, text("2000 1000 /a\n"), each, NULL), 2);
	assert_string_equal(got[0], "0 10000 /a");
	assert_string_equal(got[1], "2000 1000 /a");
	/* no process list (a generation without one): criu's alone */
	ngot = 0;
	assert_int_equal(prefetch_order(text("0 5 /usr/sbin/criu\n"), NULL, each, NULL), 1);
	assert_string_equal(got[0], "0 5 /usr/sbin/criu");
	assert_int_equal(prefetch_order(NULL, NULL, each, NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_heads_first),
		cmocka_unit_test(test_one_list),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
