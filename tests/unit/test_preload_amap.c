/*
 * test_preload_amap.c - the allocation interval map (preload/amap.c).
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "amap.h"

enum op { INS, DEL, DELR, FIND, COUNT };

struct step {
	enum op op;
	uint64_t a, b;		/* INS/DELR: base, size; DEL/FIND: address */
	long want;		/* INS/DELR: return; DEL: 0/-1; FIND: base or -1; COUNT: n */
	int err;		/* errno when want == -1 (not for FIND) */
};

#define K 0x1000ULL

static const struct {
	const char *name;
	struct step s[16];
	int n;
} cases[] = {
	{ "empty map finds nothing", {
		{ FIND, 0, 0, -1, 0 }, { FIND, K, 0, -1, 0 }, { FIND, UINT64_MAX, 0, -1, 0 },
		{ COUNT, 0, 0, 0, 0 } }, 4 },
	{ "one range: base, last byte, one past, one before", {
		{ INS, K, K, 0, 0 },
		{ FIND, K, 0, K, 0 }, { FIND, 2 * K - 1, 0, K, 0 },
		{ FIND, 2 * K, 0, -1, 0 }, { FIND, K - 1, 0, -1, 0 } }, 5 },
	{ "adjacent ranges split exactly at the boundary", {
		{ INS, 2 * K, K, 0, 0 }, { INS, K, K, 0, 0 },
		{ FIND, 2 * K - 1, 0, K, 0 }, { FIND, 2 * K, 0, 2 * K, 0 },
		{ FIND, 3 * K, 0, -1, 0 }, { COUNT, 0, 0, 2, 0 } }, 6 },
	{ "an insert over stale entries evicts them", {
		{ INS, K, K, 0, 0 }, { INS, 3 * K, K, 0, 0 }, { INS, 6 * K, K, 0, 0 },
		{ INS, K + 8, 3 * K, 2, 0 },
		{ FIND, K, 0, -1, 0 }, { FIND, 2 * K, 0, K + 8, 0 },
		{ FIND, 6 * K, 0, 6 * K, 0 }, { COUNT, 0, 0, 2, 0 } }, 8 },
	{ "bad ranges", {
		{ INS, K, 0, -1, EINVAL }, { INS, UINT64_MAX - 10, 100, -1, EINVAL },
		{ INS, 0 - K, K, -1, EINVAL }, { DELR, K, 0, -1, EINVAL },
		{ INS, 0 - 2 * K, K, 0, 0 }, { FIND, 0 - K - 1, 0, 0 - 2 * K, 0 },
		{ COUNT, 0, 0, 1, 0 } }, 7 },
	{ "remove needs the exact base", {
		{ INS, K, K, 0, 0 }, { DEL, K + 1, 0, -1, ENOENT }, { DEL, 0, 0, -1, ENOENT },
		{ DEL, K, 0, 0, 0 }, { DEL, K, 0, -1, ENOENT }, { FIND, K, 0, -1, 0 },
		{ COUNT, 0, 0, 0, 0 } }, 7 },
	{ "remove_range takes every overlap, partial ones too", {
		{ INS, K, K, 0, 0 }, { INS, 3 * K, K, 0, 0 }, { INS, 5 * K, K, 0, 0 },
		{ INS, 8 * K, K, 0, 0 },
		{ DELR, 2 * K - 1, 3 * K + 2, 3, 0 }, { FIND, 8 * K, 0, 8 * K, 0 },
		{ DELR, 9 * K, K, 0, 0 }, { COUNT, 0, 0, 1, 0 } }, 8 },
	{ "address 0 and a one-byte range", {
		{ INS, 0, 1, 0, 0 }, { FIND, 0, 0, 0, 0 }, { FIND, 1, 0, -1, 0 },
		{ DEL, 0, 0, 0, 0 }, { COUNT, 0, 0, 0, 0 } }, 5 },
};

static void test_table(void **state)
{
	size_t c;
	int i;

	(void)state;
	for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct phos_amap m = PHOS_AMAP_INIT;

		for (i = 0; i < cases[c].n; i++) {
			const struct step *s = &cases[c].s[i];
			struct phos_alloc *a;
			long got = 0;

			errno = 0;
			switch (s->op) {
			case INS:
				got = phos_amap_insert(&m, s->a, s->b, 1);
				break;
			case DELR:
				got = phos_amap_remove_range(&m, s->a, s->b);
				break;
			case DEL:
				got = phos_amap_remove(&m, s->a, NULL);
				break;
			case FIND:
				a = phos_amap_find(&m, s->a);
				got = a ? (long)a->base : -1;
				break;
			case COUNT:
				got = (long)m.n;
				break;
			}
			if (got != s->want || (s->want == -1 && s->op != FIND && errno != s->err))
				fail_msg("case \"%s\" step %d: got %ld (errno %d), want %ld (errno %d)",
					 cases[c].name, i, got, errno, s->want, s->err);
		}
		phos_amap_fini(&m);
	}
}

static void test_remove_returns_entry(void **state)
{
	struct phos_amap m = PHOS_AMAP_INIT;
	struct phos_alloc out = { 0 };

	(void)state;
	assert_int_equal(phos_amap_insert(&m, 0x5000, 0x300, 4), 0);
	phos_amap_find(&m, 0x5100)->writes = 7;
	assert_int_equal(phos_amap_remove(&m, 0x5000, &out), 0);
	assert_int_equal(out.base, 0x5000);
	assert_int_equal(out.size, 0x300);
	assert_int_equal(out.kind, 4);
	assert_int_equal(out.writes, 7);
	phos_amap_fini(&m);
	phos_amap_fini(&m);	/* twice is fine */
	phos_amap_fini(NULL);
}

/* Many ranges in random order: every base, last byte and gap answers
 * right, and the array stays sorted. */
static void test_random_many(void **state)
{
	enum { N = 20000 };
	struct phos_amap m = PHOS_AMAP_INIT;
	uint64_t *base = malloc(N * sizeof(*base));
	size_t *order = malloc(N * sizeof(*order));
	size_t i;

	(void)state;
	assert_non_null(base);
	assert_non_null(order);
	srand(42);
	for (i = 0; i < N; i++) {
		base[i] = 0x10000000ULL + i * 0x3000ULL;	/* size 0x2000, gap 0x1000 */
		order[i] = i;
	}
	for (i = N - 1; i > 0; i--) {
		size_t j = (size_t)rand() % (i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (i = 0; i < N; i++)
		assert_int_equal(phos_amap_insert(&m, base[order[i]], 0x2000, 1), 0);
	assert_int_equal(m.n, N);
	for (i = 1; i < m.n; i++)
		assert_true(m.v[i - 1].base + m.v[i - 1].size <= m.v[i].base);
	for (i = 0; i < N; i++) {
		assert_int_equal(phos_amap_find(&m, base[i])->base, base[i]);
		assert_int_equal(phos_amap_find(&m, base[i] + 0x1fff)->base, base[i]);
		assert_null(phos_amap_find(&m, base[i] + 0x2000));
		assert_null(phos_amap_find(&m, base[i] + 0x2fff));
	}
	for (i = 0; i < N; i += 2)
		assert_int_equal(phos_amap_remove(&m, base[i], NULL), 0);
	assert_int_equal(m.n, N / 2);
	for (i = 0; i < N; i++)
		assert_true((phos_amap_find(&m, base[i] + 5) != NULL) == (i % 2 == 1));
	phos_amap_fini(&m);
	free(base);
	free(order);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_remove_returns_entry),
		cmocka_unit_test(test_random_many),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
