/*
 * test_preload_wset.c - write-set speculation (preload/wset.c): which
 * allocations a launch's parameters or a copy's destination name.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "phos_int.h"

/* allocations A [0x10000, +0x1000), B [0x20000, +0x100), C [0x30000, +0x10) */
#define A 0x10000ULL
#define B 0x20000ULL
#define C 0x30000ULL

static int setup(void **state)
{
	static struct phos_amap m;

	phos_amap_fini(&m);
	assert_int_equal(phos_amap_insert(&m, A, 0x1000, PHOS_ALLOC_DEVICE), 0);
	assert_int_equal(phos_amap_insert(&m, B, 0x100, PHOS_ALLOC_VMM), 0);
	assert_int_equal(phos_amap_insert(&m, C, 0x10, PHOS_ALLOC_HOST), 0);
	*state = &m;
	return 0;
}

static int teardown(void **state)
{
	phos_amap_fini(*state);
	return 0;
}

static bool has(const struct phos_wset *ws, uint64_t base)
{
	unsigned i;

	for (i = 0; i < ws->n; i++)
		if (ws->base[i] == base)
			return true;
	return false;
}

/* A parameter buffer: bytes at given offsets, and the same values as a
 * kernelParams array. */
struct pbuf {
	unsigned char buf[256];
	void *kp[16];
	struct phos_param p[16];
	unsigned np;
};

static void add(struct pbuf *b, uint32_t off, const void *val, uint32_t size)
{
	memcpy(b->buf + off, val, size);
	b->p[b->np] = (struct phos_param){ .offset = off, .size = size };
	b->kp[b->np] = b->buf + off;
	b->np++;
}

static void scan_both(struct phos_amap *m, struct pbuf *b, struct phos_wset *kp_ws,
		      struct phos_wset *ex_ws)
{
	size_t bsize = sizeof(b->buf);
	void *extra[] = { CU_LAUNCH_PARAM_BUFFER_POINTER, b->buf, CU_LAUNCH_PARAM_BUFFER_SIZE,
			  &bsize, CU_LAUNCH_PARAM_END };

	memset(kp_ws, 0, sizeof(*kp_ws));
	memset(ex_ws, 0, sizeof(*ex_ws));
	phos_wset_scan(m, kp_ws, b->p, b->np, b->kp, NULL);
	phos_wset_scan(m, ex_ws, b->p, b->np, NULL, extra);
}

static void test_pointer_params(void **state)
{
	struct phos_amap *m = *state;
	struct pbuf b = { 0 };
	struct phos_wset w1, w2;
	uint64_t inside = A + 0x800, past = B + 0x100, gap = 0x18000, lastbyte = C + 0xf;
	int scalar = 7;
	int i;

	add(&b, 0, &inside, 8);		/* interior pointer to A */
	add(&b, 8, &scalar, 4);		/* an int: never a pointer */
	add(&b, 16, &past, 8);		/* one past B: not B */
	add(&b, 24, &gap, 8);		/* between allocations */
	add(&b, 32, &lastbyte, 8);	/* last byte of C */
	scan_both(m, &b, &w1, &w2);
	for (i = 0; i < 2; i++) {
		struct phos_wset *w = i ? &w2 : &w1;

		assert_false(w->unknown);
		assert_int_equal(w->n, 2);
		assert_true(has(w, A));
		assert_true(has(w, C));
		assert_false(has(w, B));
	}
	/* two scans, each marked A once */
	assert_int_equal(phos_amap_find(m, A)->writes, 2);
}

static void test_words_are_aligned_in_the_buffer(void **state)
{
	struct phos_amap *m = *state;
	struct pbuf b = { 0 };
	struct phos_wset w1, w2;
	unsigned char st[20] = { 0 };
	uint64_t pb = B + 4, pa = A;
	int i;

	/* a 20-byte struct at offset 4: buffer words at 8 and 16 are its
	 * bytes 4..11 and 12..19; its bytes 0..7 are not an aligned word */
	memcpy(st + 0, &pa, 8);
	memcpy(st + 4, &pb, 8);
	add(&b, 4, st, sizeof(st));
	scan_both(m, &b, &w1, &w2);
	for (i = 0; i < 2; i++) {
		struct phos_wset *w = i ? &w2 : &w1;

		assert_int_equal(w->n, 1);
		assert_true(has(w, B));
	}
}

static void test_duplicates_once(void **state)
{
	struct phos_amap *m = *state;
	struct pbuf b = { 0 };
	struct phos_wset w1, w2;
	uint64_t p1 = A, p2 = A + 8, p3 = A + 0xfff;

	add(&b, 0, &p1, 8);
	add(&b, 8, &p2, 8);
	add(&b, 16, &p3, 8);
	scan_both(m, &b, &w1, &w2);
	assert_int_equal(w1.n, 1);
	assert_int_equal(w2.n, 1);
}

static void test_unknown(void **state)
{
	struct phos_amap *m = *state;
	struct phos_param p[2] = { { 0, 8 }, { 8, 8 } };
	uint64_t v = A;
	void *kp[2] = { &v, NULL };
	unsigned char buf[16] = { 0 };
	size_t small = 8;
	void *no_size[] = { CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_END };
	void *too_small[] = { CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE,
			      &small, CU_LAUNCH_PARAM_END };
	void *odd[] = { (void *)0x7, buf, CU_LAUNCH_PARAM_END };
	struct phos_wset ws;

	memset(&ws, 0, sizeof(ws));
	phos_wset_scan(m, &ws, p, 2, kp, NULL);		/* NULL value pointer */
	assert_true(ws.unknown);
	memset(&ws, 0, sizeof(ws));
	phos_wset_scan(m, &ws, p, 2, NULL, no_size);	/* no buffer size */
	assert_true(ws.unknown);
	memset(&ws, 0, sizeof(ws));
	phos_wset_scan(m, &ws, p, 2, NULL, too_small);	/* params past its end */
	assert_true(ws.unknown);
	memset(&ws, 0, sizeof(ws));
	phos_wset_scan(m, &ws, p, 2, NULL, odd);	/* an option we do not know */
	assert_true(ws.unknown);
	memset(&ws, 0, sizeof(ws));
	phos_wset_scan(m, &ws, p, 2, NULL, NULL);	/* params not given */
	assert_true(ws.unknown);
	memset(&ws, 0, sizeof(ws));
	phos_wset_scan(m, &ws, p, 0, NULL, NULL);	/* no params at all: known, empty */
	assert_false(ws.unknown);
	assert_int_equal(ws.n, 0);
}

static void test_overflow_is_unknown(void **state)
{
	struct phos_amap m = PHOS_AMAP_INIT;
	struct phos_wset ws;
	unsigned i;

	(void)state;
	for (i = 0; i < PHOS_WSET_MAX + 1; i++)
		assert_int_equal(phos_amap_insert(&m, 0x100000 + i * 0x100, 0x100, 1), 0);
	memset(&ws, 0, sizeof(ws));
	phos_wset_range(&m, &ws, 0x100000, (PHOS_WSET_MAX + 1) * 0x100);
	assert_true(ws.unknown);
	assert_int_equal(ws.n, PHOS_WSET_MAX);
	memset(&ws, 0, sizeof(ws));
	phos_wset_range(&m, &ws, 0x100000, PHOS_WSET_MAX * 0x100);
	assert_false(ws.unknown);
	assert_int_equal(ws.n, PHOS_WSET_MAX);
	phos_amap_fini(&m);
}

static const struct {
	uint64_t base, size;
	unsigned n;
	uint64_t first;
} ranges[] = {
	{ A, 1, 1, A },			/* first byte */
	{ A + 0xfff, 1, 1, A },		/* last byte */
	{ A + 0x1000, 0x1000, 0, 0 },	/* the gap after A */
	{ A + 0xff0, B - A, 2, A },	/* tail of A, head of B */
	{ 0, UINT64_MAX, 3, A },	/* everything */
	{ C + 8, UINT64_MAX, 1, C },	/* wraps: clamped to the top */
	{ B, 0, 0, 0 },			/* empty copy */
};

static void test_ranges(void **state)
{
	struct phos_amap *m = *state;
	size_t i;

	for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		struct phos_wset ws;

		memset(&ws, 0, sizeof(ws));
		phos_wset_range(m, &ws, ranges[i].base, ranges[i].size);
		if (ws.n != ranges[i].n || (ws.n && ws.base[0] != ranges[i].first) || ws.unknown)
			fail_msg("range %zu: n %u, want %u", i, ws.n, ranges[i].n);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pointer_params, setup, teardown),
		cmocka_unit_test_setup_teardown(test_words_are_aligned_in_the_buffer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicates_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown, setup, teardown),
		cmocka_unit_test(test_overflow_is_unknown),
		cmocka_unit_test_setup_teardown(test_ranges, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
