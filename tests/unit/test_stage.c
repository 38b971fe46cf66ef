/*
 * Unit tests: phosd's staging pool (daemon/stage.c), its states and
 * leases: one checkpoint at a time takes it, its buffers get consecutive
 * pieces, a generation it holds is lent to one restore, and a pool a
 * restore still reads from is not taken.  A real 1 GiB pool (shared
 * memory, or hugetlb pages where the machine has them reserved).
 */
#include "config.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"
#include "stage.h"

static char dir[PATH_MAX], gen[PATH_MAX + 8], other[PATH_MAX + 8];
static struct stage_cuda cu;

static void describe(char *buf, size_t n)
{
	stage_describe(buf, n, true);
}

static void test_off(void **state)
{
	struct stage_lease l;
	char why[128] = "", d[512];

	(void)state;
	assert_int_equal(stage_take(&l, why, sizeof(why)), 0);
	assert_int_equal(l.fd, -1);
	assert_non_null(strstr(why, "none (gpu_stage_pool_gib: 0"));
	describe(d, sizeof(d));
	assert_string_equal(d, "off");
	stage_give(&l);	/* nothing taken: nothing happens */
}

/* stage_start(1), then wait (10 s at most) until the pool is free. */
static void test_fill(void **state)
{
	char d[512] = "";

	(void)state;
	stage_start(1, NULL);
	for (int i = 0; i < 1000; i++) {
		describe(d, sizeof(d));
		if (strstr(d, ", free"))
			break;
		assert_null(strstr(d, "could not be made"));
		usleep(10000);
	}
	assert_non_null(strstr(d, "1 GiB of "));
	assert_non_null(strstr(d, ", free"));
}

static void test_take_pieces(void **state)
{
	struct stage_lease l, l2;
	char why[160] = "", d[512];

	(void)state;
	assert_int_equal(stage_take(&l, why, sizeof(why)), 1);
	assert_true(l.fd >= 0);
	assert_int_equal(l.size, 1u << 30);
	/* a second checkpoint meanwhile: refused, and says why */
	assert_int_equal(stage_take(&l2, why, sizeof(why)), 0);
	assert_int_equal(l2.fd, -1);
	assert_string_equal(why, "in use by another checkpoint");
	describe(d, sizeof(d));
	assert_non_null(strstr(d, "in use by a checkpoint"));
	/* pieces one after the other, and none past the end */
	assert_int_equal(stage_piece(&l, 256u << 20, why, sizeof(why)), 0);
	assert_int_equal(stage_piece(&l, 512u << 20, why, sizeof(why)), 256 << 20);
	assert_int_equal(stage_piece(&l, 512u << 20, why, sizeof(why)), -1);
	assert_string_equal(why, "512 MiB needed, 256 MiB left of 1024 MiB");
	assert_int_equal(stage_piece(&l, 256u << 20, why, sizeof(why)), 768 << 20);
	stage_keep(&l, gen, "100 0\n200 268435456\n");
	stage_give(&l);
	assert_int_equal(l.fd, -1);
	describe(d, sizeof(d));
	assert_non_null(strstr(d, ", free; holds "));
	assert_non_null(strstr(d, gen));
}

static void test_lend(void **state)
{
	struct stage_lease l;
	char pieces[256] = "", why[PATH_MAX + 64] = "", d[512];
	int fd, fd2;

	(void)state;
	/* not the generation it holds */
	assert_int_equal(stage_lend(other, pieces, sizeof(pieces), &cu, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "the staging pool does not hold"));
	fd = stage_lend(gen, pieces, sizeof(pieces), &cu, why, sizeof(why));
	assert_true(fd >= 0);
	assert_string_equal(pieces, "100 0\n200 268435456\n");
	assert_null(cu.fd);	/* the memfd is the pool */
	/* one restore: the next one of the same generation reads storage */
	fd2 = stage_lend(gen, pieces, sizeof(pieces), &cu, why, sizeof(why));
	assert_int_equal(fd2, -1);
	assert_non_null(strstr(why, "does not hold"));
	/* the borrower holds a shared lock: no checkpoint takes the pool */
	describe(d, sizeof(d));
	assert_non_null(strstr(d, "read by a restore"));
	assert_int_equal(stage_take(&l, why, sizeof(why)), 0);
	assert_string_equal(why, "in use by a restore that loads from it");
	close(fd);	/* the loader is done: its lock goes with its description */
	assert_int_equal(stage_take(&l, why, sizeof(why)), 1);
	describe(d, sizeof(d));
	assert_null(strstr(d, "holds"));	/* a new checkpoint overwrites it */
	stage_give(&l);
	assert_int_equal(stage_lend(gen, pieces, sizeof(pieces), &cu, why, sizeof(why)), -1);
}

/* a lease whose checkpoint used no piece keeps nothing */
static void test_keep_nothing(void **state)
{
	struct stage_lease l;
	char why[160] = "", pieces[64], d[512];

	(void)state;
	assert_int_equal(stage_take(&l, why, sizeof(why)), 1);
	stage_keep(&l, gen, "");
	stage_give(&l);
	describe(d, sizeof(d));
	assert_null(strstr(d, "holds"));
	assert_int_equal(stage_lend(gen, pieces, sizeof(pieces), &cu, why, sizeof(why)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_off),
		cmocka_unit_test(test_fill),
		cmocka_unit_test(test_take_pieces),
		cmocka_unit_test(test_lend),
		cmocka_unit_test(test_keep_nothing),
	};
	int rc;

	char tmpl[PATH_MAX];

	phos_log_set_level(LOG_ERR);
	snprintf(tmpl, sizeof(tmpl), "%s/phos-test-stage.XXXXXX", getenv("TMPDIR") ?
		 getenv("TMPDIR") : "/tmp");
	/* phosd compares real paths */
	if (!mkdtemp(tmpl) || !realpath(tmpl, dir))
		return 1;
	snprintf(gen, sizeof(gen), "%s/000002", dir);
	snprintf(other, sizeof(other), "%s/000001", dir);
	if (mkdir(gen, 0700) < 0 || mkdir(other, 0700) < 0)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	rmdir(gen);
	rmdir(other);
	rmdir(dir);
	return rc;
}
