/*
 * test_cpool_grant.c - access to a driver-pinned staging pool granted
 * behind the copies (daemon/cpool-grant.c), with a stand-in for
 * cuMemSetAccess that records which piece it was asked for: the first
 * piece is granted before start returns, the rest in the order given, a
 * piece a copy waits for jumps the queue, and a refusal reaches the copies
 * that wait with the piece and the driver's words.
 */
#include "config.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cpool-grant.h"

#define BASE ((CUdeviceptr)0x7f0000000000ull)
#define PIECE ((uint64_t)1 << 30)
#define N 8

static int granted[4 * N], ngranted;
static int refuse = -1;		/* this piece is refused */
static int hold = -1;		/* granting this piece waits for go */
static bool go, holding;
static size_t last_na;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static CUresult set_current(CUcontext c)
{
	(void)c;
	return CUDA_SUCCESS;
}

static CUresult set_access(CUdeviceptr p, size_t len, const CUmemAccessDesc *d, size_t na)
{
	int k = (int)((p - BASE) / PIECE);

	(void)d;
	assert_int_equal(len, PIECE);
	assert_int_equal((p - BASE) % PIECE, 0);
	pthread_mutex_lock(&lock);
	last_na = na;
	holding = k == hold;
	pthread_cond_broadcast(&cv);
	while (k == hold && !go)
		pthread_cond_wait(&cv, &lock);
	if (k != refuse)
		granted[ngranted++] = k;
	pthread_mutex_unlock(&lock);
	return k == refuse ? CUDA_ERROR_NOT_SUPPORTED : CUDA_SUCCESS;
}

static const char *err(CUresult r)
{
	return r == CUDA_ERROR_NOT_SUPPORTED ? "operation not supported" : "?";
}

static const struct cpool_grant_ops ops = { .set_current = set_current,
					    .set_access = set_access, .err = err };
static const CUmemAccessDesc acc[2];

static int setup(void **state)
{
	(void)state;
	ngranted = 0;
	refuse = hold = -1;
	go = holding = false;
	return 0;
}

/* until the granter has granted n pieces (it runs on alone) */
static void wait_granted(int n)
{
	for (int t = 0; t < 500; t++) {
		pthread_mutex_lock(&lock);
		int k = ngranted;

		pthread_mutex_unlock(&lock);
		if (k >= n)
			return;
		usleep(10 * 1000);
	}
}

/* order[] first (each piece once, those out of range ignored), then the
 * pieces it left out, in pool order */
static void test_order(void **state)
{
	static const unsigned order[] = { 5, 2, 5, 99, 0 };
	char why[200] = "";
	struct cpool_grant *g = cpool_grant_start(&ops, NULL, BASE, PIECE, N, acc, 2, order, 5, why,
						  sizeof(why));

	(void)state;
	assert_non_null(g);
	pthread_mutex_lock(&lock);
	int first = ngranted >= 1 ? granted[0] : -1;	/* before start returned */
	pthread_mutex_unlock(&lock);
	assert_int_equal(first, 5);
	wait_granted(N);
	assert_int_equal(cpool_grant_end(g, why, sizeof(why)), 0);
	static const int want[N] = { 5, 2, 0, 1, 3, 4, 6, 7 };
	assert_int_equal(ngranted, N);
	assert_memory_equal(granted, want, sizeof(want));
	assert_int_equal(last_na, 2);
}

struct waiter {
	struct cpool_grant *g;
	uintptr_t p;
	size_t len;
	int rc;
	char err[200];
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;

	w->rc = cpool_grant_wait(w->g, w->p, w->len, w->err, sizeof(w->err));
	return NULL;
}

/* a copy waiting for piece 6 has it granted as soon as the piece being
 * granted is done, ahead of 2..5 */
static void test_asked_first(void **state)
{
	char why[200] = "";
	pthread_t th;

	(void)state;
	hold = 1;
	struct cpool_grant *g = cpool_grant_start(&ops, NULL, BASE, PIECE, N, acc, 1, NULL, 0, why,
						  sizeof(why));
	assert_non_null(g);
	struct waiter w = { .g = g, .p = BASE + 6 * PIECE + 4096, .len = 8 << 20 };

	pthread_mutex_lock(&lock);	/* the granter is in piece 1 */
	while (!holding)
		pthread_cond_wait(&cv, &lock);
	pthread_mutex_unlock(&lock);
	assert_int_equal(pthread_create(&th, NULL, wait_thread, &w), 0);
	usleep(200 * 1000);	/* the waiter has asked by now */
	pthread_mutex_lock(&lock);
	int before = ngranted;	/* piece 1 is held */
	go = true;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&lock);
	pthread_join(th, NULL);
	assert_int_equal(before, 1);
	assert_int_equal(w.rc, 0);
	assert_int_equal(cpool_grant_wait(g, BASE, N * PIECE, why, sizeof(why)), 0);
	assert_int_equal(cpool_grant_end(g, why, sizeof(why)), 0);
	assert_int_equal(granted[0], 0);
	assert_int_equal(granted[1], 1);
	assert_int_equal(granted[2], 6);
}

/* a refused piece: the copies waiting for it, and for any piece not
 * granted by then, hear why; the ones granted before stay usable; end
 * reports it */
static void test_refused(void **state)
{
	char why[200] = "", e[200] = "";

	(void)state;
	refuse = 3;
	struct cpool_grant *g = cpool_grant_start(&ops, NULL, BASE, PIECE, N, acc, 1, NULL, 0, why,
						  sizeof(why));
	assert_non_null(g);
	assert_int_equal(cpool_grant_wait(g, BASE + PIECE, PIECE, e, sizeof(e)), 0);
	assert_int_equal(cpool_grant_wait(g, BASE + 3 * PIECE + 4096, 4096, e, sizeof(e)), -1);
	assert_non_null(strstr(e, "piece 4 of 8 of the staging pool: operation not supported"));
	e[0] = '\0';	/* and the granting stopped there */
	assert_int_equal(cpool_grant_wait(g, BASE + 7 * PIECE, 4096, e, sizeof(e)), -1);
	assert_non_null(strstr(e, "piece 4 of 8"));
	assert_int_equal(cpool_grant_end(g, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "piece 4 of 8"));
}

/* the first piece refused: nothing starts, and start says why */
static void test_first_refused(void **state)
{
	char why[200] = "";

	(void)state;
	refuse = 0;
	assert_null(cpool_grant_start(&ops, NULL, BASE, PIECE, N, acc, 1, NULL, 0, why, sizeof(why)));
	assert_non_null(strstr(why, "piece 1 of 8 of the staging pool: operation not supported"));
	assert_int_equal(ngranted, 0);
	assert_null(cpool_grant_start(&ops, NULL, BASE, PIECE, N, acc, 0, NULL, 0, why, sizeof(why)));
	assert_non_null(strstr(why, "no pieces or no access"));
}

/* bytes outside the mapping are refused, not waited for */
static void test_outside(void **state)
{
	char why[200] = "", e[200] = "";

	(void)state;
	struct cpool_grant *g = cpool_grant_start(&ops, NULL, BASE, PIECE, N, acc, 1, NULL, 0, why,
						  sizeof(why));
	assert_non_null(g);
	assert_int_equal(cpool_grant_wait(g, BASE + N * PIECE - 4096, 8192, e, sizeof(e)), -1);
	assert_non_null(strstr(e, "outside the staging pool's mapping"));
	assert_int_equal(cpool_grant_wait(g, BASE - 4096, 4096, e, sizeof(e)), -1);
	assert_int_equal(cpool_grant_wait(g, BASE, 0, e, sizeof(e)), 0);
	wait_granted(N);
	assert_int_equal(cpool_grant_end(g, why, sizeof(why)), 0);
	assert_int_equal(cpool_grant_end(NULL, why, sizeof(why)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_order, setup),
		cmocka_unit_test_setup(test_asked_first, setup),
		cmocka_unit_test_setup(test_refused, setup),
		cmocka_unit_test_setup(test_first_refused, setup),
		cmocka_unit_test_setup(test_outside, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
