/*
 * test_gpu_io.c - phos-gpu's copy engine (daemon/gpu-io.c) with host memory
 * standing in for the device: every byte lands where it belongs whatever
 * the chunk size and worker count, the hashes equal the whole buffers',
 * done() runs once per buffer, a wanted buffer starts first, and the first
 * failure stops the copy with the buffer and offset named.  The staging
 * pool's two runs: GIO_STAGE copies into host memory with each piece
 * pinned for its copy only, and a save from host memory needs no context.
 * A direct load copies from host memory the devices may read, each chunk
 * once ready() allows it.  With streams, each worker copies on one of its
 * own, and a copy counts only once its stream has been waited for.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <cmocka.h>

#include "gpu-io.h"
#include "savetab.h"

#define NB 5
static const uint64_t sizes[NB] = { 1 << 20, 3 << 20, (3 << 20) + 4096, 4096, 8 << 20 };
static uint8_t *dev[NB];
static int fail_buf = -1;		/* dtoh/htod of this buffer fail */
static unsigned done_count[NB];
static int started[4 * NB], nstarted;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* as in the driver, a thread has no context until it makes one current,
 * and pinned memory and copies need one */
static int the_ctx;
static __thread CUcontext current;
static CUresult set_current(CUcontext c)
{
	current = c;
	return CUDA_SUCCESS;
}

static CUresult host_alloc(void **p, size_t n)
{
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	*p = aligned_alloc(4096, (n + 4095) & ~(size_t)4095);
	return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static CUresult host_free(void *p)
{
	free(p);
	return CUDA_SUCCESS;
}

/* which buffer a device address is in */
static int buf_of(CUdeviceptr p)
{
	for (int i = 0; i < NB; i++)
		if (p >= (CUdeviceptr)(uintptr_t)dev[i] && p < (CUdeviceptr)(uintptr_t)dev[i] + sizes[i])
			return i;
	return -1;
}

static CUresult dtoh(void *d, CUdeviceptr s, size_t n)
{
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (buf_of(s) == fail_buf)
		return CUDA_ERROR_ILLEGAL_ADDRESS;
	memcpy(d, (void *)(uintptr_t)s, n);
	return CUDA_SUCCESS;
}

static CUresult htod(void *d, const void *s, size_t n)
{
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (buf_of((CUdeviceptr)(uintptr_t)d) == fail_buf)
		return CUDA_ERROR_ILLEGAL_ADDRESS;
	memcpy(d, s, n);
	return CUDA_SUCCESS;
}

static const char *err(CUresult r)
{
	return r == CUDA_ERROR_ILLEGAL_ADDRESS ? "CUDA_ERROR_ILLEGAL_ADDRESS" : "error";
}

/* pinning: the ranges pinned now; a copy into host memory that is not
 * pinned is counted (GIO_STAGE must pin every piece it copies into) */
static struct { void *p; size_t n; } pins[64];
static unsigned npins, max_pins, unpinned_copies, fail_pin_after = ~0u, pin_calls;
static unsigned fail_pin_only = ~0u;	/* that call alone fails */

static bool is_pinned(const void *p, size_t n)
{
	bool yes = false;

	pthread_mutex_lock(&lock);
	for (unsigned k = 0; k < 64 && !yes; k++)
		yes = pins[k].p && (const uint8_t *)p >= (uint8_t *)pins[k].p &&
		      (const uint8_t *)p + n <= (uint8_t *)pins[k].p + pins[k].n;
	pthread_mutex_unlock(&lock);
	return yes;
}

static CUresult host_register(void *p, size_t n)
{
	CUresult r = CUDA_ERROR_OUT_OF_MEMORY;

	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	pthread_mutex_lock(&lock);
	if (pin_calls >= fail_pin_after || pin_calls == fail_pin_only)
		r = CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
	pin_calls++;
	for (unsigned k = 0; k < 64 && r == CUDA_ERROR_OUT_OF_MEMORY; k++) {
		if (pins[k].p)
			continue;
		pins[k].p = p;
		pins[k].n = n;
		if (++npins > max_pins)
			max_pins = npins;
		r = CUDA_SUCCESS;
	}
	pthread_mutex_unlock(&lock);
	return r;
}

static CUresult host_unregister(void *p)
{
	CUresult r = CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;

	pthread_mutex_lock(&lock);
	for (unsigned k = 0; k < 64 && r != CUDA_SUCCESS; k++)
		if (pins[k].p == p) {
			pins[k].p = NULL;
			npins--;
			r = CUDA_SUCCESS;
		}
	pthread_mutex_unlock(&lock);
	return r;
}

/* dtoh that also checks a copy into host memory outside the staging
 * buffers is pinned */
static uint8_t *pool_lo, *pool_hi;
static CUresult dtoh_checked(void *d, CUdeviceptr s, size_t n)
{
	if ((uint8_t *)d >= pool_lo && (uint8_t *)d < pool_hi && !is_pinned(d, n))
		__atomic_fetch_add(&unpinned_copies, 1, __ATOMIC_RELAXED);
	return dtoh(d, s, n);
}

static const struct gio_ops ops = { .set_current = set_current, .host_alloc = host_alloc,
				    .host_free = host_free, .dtoh = dtoh_checked, .htod = htod,
				    .host_register = host_register,
				    .host_unregister = host_unregister, .err = err };

static int done_cb(void *arg, unsigned i)
{
	(void)arg;
	__atomic_fetch_add(&done_count[i], 1, __ATOMIC_RELAXED);
	return 0;
}

static void start_cb(void *arg, unsigned i)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	assert_true(nstarted < 4 * NB);
	started[nstarted++] = (int)i;
	pthread_mutex_unlock(&lock);
}

static bool want3(void *arg, unsigned i)
{
	(void)arg;
	return i == 3;
}

static void fill(uint8_t *p, uint64_t n, unsigned seed)
{
	uint32_t x = 2463534242u + seed;

	for (uint64_t k = 0; k < n; k++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[k] = (uint8_t)x;
	}
}

static int setup(void **state)
{
	(void)state;
	for (int i = 0; i < NB; i++) {
		dev[i] = aligned_alloc(4096, sizes[i]);
		assert_non_null(dev[i]);
		fill(dev[i], sizes[i], (unsigned)i);
	}
	fail_buf = -1;
	memset(done_count, 0, sizeof(done_count));
	nstarted = 0;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < NB; i++)
		free(dev[i]);
	return 0;
}

static void init(struct gio *g, struct gio_buf *b, enum gio_dir dir, unsigned threads, size_t chunk)
{
	memset(g, 0, sizeof(*g));
	for (int i = 0; i < NB; i++) {
		b[i] = (struct gio_buf){ .ctx = (CUcontext)&the_ctx,
					 .dptr = (CUdeviceptr)(uintptr_t)dev[i], .size = sizes[i],
					 .fd = memfd_create("test_gpu_io", MFD_CLOEXEC) };
		assert_true(b[i].fd >= 0);
	}
	g->dir = dir;
	g->b = b;
	g->n = NB;
	g->threads = threads;
	g->chunk = chunk;
	g->hash = true;
	g->ops = &ops;
	g->done = done_cb;
	g->start = start_cb;
}

static void check_hashes(const struct gio_buf *b)
{
	for (int i = 0; i < NB; i++) {
		uint64_t h[2] = { 0, 0 };

		phos_hash_add(h, (const uint32_t *)dev[i], 0, sizes[i] / 4, 0);
		assert_int_equal(b[i].h[0], h[0]);
		assert_int_equal(b[i].h[1], h[1]);
	}
}

/* save, then load into wiped buffers: the bytes come back, for several
 * worker counts and chunk sizes (buffers not a multiple of the chunk) */
static void test_roundtrip(void **state)
{
	static const unsigned threads[] = { 1, 3, 8 };
	static const size_t chunks[] = { 1 << 20, 4096 * 3, 8 << 20 };
	struct gio_buf b[NB];
	struct gio g;

	for (int t = 0; t < 3; t++) {
		uint8_t *copy[NB];

		setup(state);
		init(&g, b, GIO_SAVE, threads[t], chunks[t]);
		assert_int_equal(gio_run(&g), 0);
		check_hashes(b);
		for (int i = 0; i < NB; i++) {
			uint8_t *m = mmap(NULL, sizes[i], PROT_READ, MAP_SHARED, b[i].fd, 0);

			assert_int_equal(lseek(b[i].fd, 0, SEEK_END), (off_t)sizes[i]);
			assert_memory_equal(m, dev[i], sizes[i]);
			munmap(m, sizes[i]);
			assert_int_equal(done_count[i], 1);
			copy[i] = malloc(sizes[i]);
			memcpy(copy[i], dev[i], sizes[i]);
			memset(dev[i], 0, sizes[i]);
		}
		/* load the files back */
		memset(done_count, 0, sizeof(done_count));
		nstarted = 0;
		g.dir = GIO_LOAD;
		assert_int_equal(gio_run(&g), 0);
		for (int i = 0; i < NB; i++) {
			assert_memory_equal(dev[i], copy[i], sizes[i]);
			assert_int_equal(done_count[i], 1);
			free(copy[i]);
			close(b[i].fd);
		}
		check_hashes(b);
		teardown(state);
	}
}

/* a load's workers: PHOS_GPU_LOAD_NICE (default 10, 0..19, else the
 * default), as many as the CPUs (at least gio_threads()), and a run's
 * nice value is its workers' own, not the caller's */
static int nice_seen[NB];

static int nice_cb(void *arg, unsigned i)
{
	(void)arg;
	errno = 0;
	nice_seen[i] = getpriority(PRIO_PROCESS, (id_t)gettid());
	return errno ? -1 : 0;
}

/* the workers' fold (vectorized where the CPU can) gives phos_hash_add's
 * sums for every start and length, the vector loops' tails included, keyed
 * or not */
static void test_hash_words(void **state)
{
	static uint32_t w[4099];
	static const uint64_t keys[] = { 0, 1, 0x0123456789abcdefull, ~0ull };
	uint64_t x = 0x9e3779b97f4a7c15ull;

	(void)state;
	for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		w[i] = (uint32_t)x;
	}
	for (size_t q = 0; q < sizeof(keys) / sizeof(keys[0]); q++) {
		for (size_t n = 0; n <= 67; n++)
			for (uint64_t first = 0; first < 5; first++) {
				uint64_t want[2] = { 1, 2 }, got[2] = { 1, 2 };

				phos_hash_add(want, w + first, first * 1000003, n, keys[q]);
				gio_hash_words(got, w + first, first * 1000003, n, keys[q]);
				assert_int_equal(got[0], want[0]);
				assert_int_equal(got[1], want[1]);
			}
		uint64_t want[2] = { 0, 0 }, got[2] = { 0, 0 };

		phos_hash_add(want, w, 1ull << 33, 4099, keys[q]);
		gio_hash_words(got, w, 1ull << 33, 4099, keys[q]);
		assert_int_equal(got[0], want[0]);
		assert_int_equal(got[1], want[1]);
	}
	/* key 0: the weights 2i + 1 of maps before 2026-12-03 */
	for (uint64_t i = 0; i < 1000; i++)
		assert_int_equal(phos_hash_weight(0, i), 2 * i + 1);
	/* a key's weights are odd */
	for (uint64_t i = 0; i < 1000; i++)
		assert_int_equal(phos_hash_weight(keys[2], i) & 1, 1);

	/* unkeyed, the sums are a checksum: a buffer that begins x, x + 2
	 * and one that begins x + 3, x + 1 have the same two (weights 1 and
	 * 3).  Keyed, the same change moves them: why a load checked by
	 * keyed sums may leave out each chunk's SHA-256, and one checked by
	 * unkeyed sums may not */
	uint32_t a[3] = { 1000, 1002, 7 }, b[3] = { 1003, 1001, 7 };
	uint64_t ha[2] = { 0, 0 }, hb[2] = { 0, 0 };

	assert_memory_not_equal(a, b, sizeof(a));
	gio_hash_words(ha, a, 0, 3, 0);
	gio_hash_words(hb, b, 0, 3, 0);
	assert_int_equal(ha[0], hb[0]);
	assert_int_equal(ha[1], hb[1]);
	for (size_t q = 1; q < sizeof(keys) / sizeof(keys[0]); q++) {
		memset(ha, 0, sizeof(ha));
		memset(hb, 0, sizeof(hb));
		gio_hash_words(ha, a, 0, 3, keys[q]);
		gio_hash_words(hb, b, 0, 3, keys[q]);
		assert_true(ha[0] != hb[0] || ha[1] != hb[1]);
	}
}

static void test_load_workers(void **state)
{
	struct gio_buf b[NB];
	struct gio g;
	int before = getpriority(PRIO_PROCESS, (id_t)gettid());

	(void)state;
	unsetenv("PHOS_GPU_LOAD_NICE");
	unsetenv("PHOS_GPU_IO_THREADS");
	assert_int_equal(gio_load_nice(), 10);
	assert_true(gio_load_threads() >= gio_threads());
	assert_in_range(gio_load_threads(), 4, 16);
	setenv("PHOS_GPU_LOAD_NICE", "0", 1);
	assert_int_equal(gio_load_nice(), 0);
	setenv("PHOS_GPU_LOAD_NICE", "19", 1);
	assert_int_equal(gio_load_nice(), 19);
	setenv("PHOS_GPU_LOAD_NICE", "20", 1);
	assert_int_equal(gio_load_nice(), 10);
	setenv("PHOS_GPU_LOAD_NICE", "x", 1);
	assert_int_equal(gio_load_nice(), 10);
	unsetenv("PHOS_GPU_LOAD_NICE");
	setenv("PHOS_GPU_IO_THREADS", "3", 1);
	assert_int_equal(gio_load_threads(), 3);
	assert_int_equal(gio_threads(), 3);
	unsetenv("PHOS_GPU_IO_THREADS");

	setup(state);
	init(&g, b, GIO_SAVE, 2, 1 << 20);
	assert_int_equal(gio_run(&g), 0);
	g.dir = GIO_LOAD;
	g.nice = before + 5 > 19 ? 19 : before + 5;
	g.done = nice_cb;
	assert_int_equal(gio_run(&g), 0);
	for (int i = 0; i < NB; i++) {
		assert_int_equal(nice_seen[i], g.nice);
		close(b[i].fd);
	}
	assert_int_equal(getpriority(PRIO_PROCESS, (id_t)gettid()), before);
	teardown(state);
}

/* one worker: the wanted buffer starts before the ones in front of it */
static void test_wanted_first(void **state)
{
	struct gio_buf b[NB];
	struct gio g;

	init(&g, b, GIO_SAVE, 1, 1 << 20);
	g.wanted = want3;
	assert_int_equal(gio_run(&g), 0);
	assert_int_equal(nstarted, NB);
	assert_int_equal(started[0], 3);
	assert_int_equal(started[1], 0);
	for (int i = 0; i < NB; i++)
		close(b[i].fd);
	(void)state;
}

/* a device copy that fails stops the run, names the buffer, and that
 * buffer is never reported complete */
static void test_failure(void **state)
{
	struct gio_buf b[NB];
	struct gio g;

	fail_buf = 2;
	init(&g, b, GIO_SAVE, 4, 1 << 20);
	assert_int_equal(gio_run(&g), -1);
	assert_non_null(strstr(g.err, "buffer 2"));
	assert_non_null(strstr(g.err, "CUDA_ERROR_ILLEGAL_ADDRESS"));
	assert_int_equal(done_count[2], 0);
	fail_buf = -1;
	for (int i = 0; i < NB; i++)
		close(b[i].fd);
	(void)state;
}

/* a file shorter than its buffer fails the load */
static void test_short_file(void **state)
{
	struct gio_buf b[NB];
	struct gio g;

	init(&g, b, GIO_SAVE, 2, 1 << 20);
	assert_int_equal(gio_run(&g), 0);
	assert_int_equal(ftruncate(b[1].fd, 4096), 0);
	g.dir = GIO_LOAD;
	assert_int_equal(gio_run(&g), -1);
	assert_non_null(strstr(g.err, "buffer 1"));
	assert_non_null(strstr(g.err, "shorter than the buffer"));
	for (int i = 0; i < NB; i++)
		close(b[i].fd);
	(void)state;
}

/* a buffer's place in the pool: one after the other */
static uint8_t *pool_layout(struct gio_buf *b)
{
	size_t total = 0;

	for (int i = 0; i < NB; i++)
		total += (sizes[i] + 4095) & ~(size_t)4095;
	pool_lo = aligned_alloc(4096, total);
	assert_non_null(pool_lo);
	memset(pool_lo, 0xee, total);
	pool_hi = pool_lo + total;
	for (size_t i = 0, off = 0; i < NB; off += (sizes[i] + 4095) & ~(size_t)4095, i++)
		b[i].host = pool_lo + off;
	return pool_lo;
}

/* the end of a staged test: the files and the pool go */
static void pool_free(struct gio_buf *b)
{
	for (int i = 0; i < NB; i++)
		close(b[i].fd);
	free(pool_lo);
	pool_lo = pool_hi = NULL;
}

/* A GIO_STAGE run of every buffer into a pool, no hashes, the pin
 * counters at 0 */
static void stage_init(struct gio *g, struct gio_buf *b, unsigned threads, size_t chunk)
{
	init(g, b, GIO_STAGE, threads, chunk);
	pool_layout(b);
	unpinned_copies = max_pins = npins = pin_calls = 0;
	g->hash = false;
}

/* GIO_STAGE puts every byte in its place in the pool, each piece pinned
 * for its copy and let go after it; then a save from host memory, on
 * threads that never have a context, writes the files and the hashes */
static void test_staged(void **state)
{
	struct gio_buf b[NB];
	struct gio g;

	stage_init(&g, b, 3, 1 << 20);
	assert_int_equal(gio_run(&g), 0);
	for (int i = 0; i < NB; i++) {
		assert_memory_equal(b[i].host, dev[i], sizes[i]);
		assert_int_equal(done_count[i], 1);
	}
	assert_int_equal(unpinned_copies, 0);
	assert_int_equal(npins, 0);		/* every piece let go */
	assert_true(max_pins >= 1 && max_pins <= 3);	/* at most one a worker */
	assert_int_equal(pin_calls, 1 + 3 + 4 + 1 + 8);	/* 1 MiB pieces */
	/* the device is gone: the files come from the pool */
	memset(done_count, 0, sizeof(done_count));
	for (int i = 0; i < NB; i++)
		dev[i][0] ^= 0xff;	/* (would show if the device were read) */
	g.dir = GIO_SAVE;
	g.from_host = true;
	g.hash = true;
	for (int i = 0; i < NB; i++)
		b[i].ctx = NULL;	/* no context: set_current is never needed */
	assert_int_equal(gio_run(&g), 0);
	for (int i = 0; i < NB; i++) {
		uint8_t *m = mmap(NULL, sizes[i], PROT_READ, MAP_SHARED, b[i].fd, 0);
		uint64_t h[2] = { 0, 0 };

		dev[i][0] ^= 0xff;
		assert_memory_equal(m, dev[i], sizes[i]);
		munmap(m, sizes[i]);
		phos_hash_add(h, (const uint32_t *)dev[i], 0, sizes[i] / 4, 0);
		assert_int_equal(b[i].h[0], h[0]);
		assert_int_equal(b[i].h[1], h[1]);
	}
	pool_free(b);
	(void)state;
}

/* keep_pinned: every piece stays pinned after the run, gio_unpin() lets
 * go of each */
static void test_staged_keep_pinned(void **state)
{
	struct gio_buf b[NB];
	struct gio g;

	stage_init(&g, b, 3, 2 << 20);
	g.keep_pinned = true;
	assert_int_equal(gio_run(&g), 0);
	for (int i = 0; i < NB; i++)
		assert_memory_equal(b[i].host, dev[i], sizes[i]);
	assert_int_equal(unpinned_copies, 0);
	assert_int_equal(npins, 1 + 2 + 2 + 1 + 4);	/* 2 MiB pieces */
	gio_unpin(&g);
	assert_int_equal(npins, 0);
	pool_free(b);
	(void)state;
}

/* pinners: every piece pinned once, ahead of its copy, and left pinned;
 * a piece a pinner could not pin is pinned by its worker */
static void test_staged_pinners(void **state)
{
	for (unsigned fail = 0; fail < 2; fail++) {
		struct gio_buf b[NB];
		struct gio g;

		stage_init(&g, b, 3, 2 << 20);
		fail_pin_only = fail ? 3 : ~0u;
		g.keep_pinned = true;
		g.pinners = 2;
		assert_int_equal(gio_run(&g), 0);
		assert_int_equal(g.pinners, 2);
		for (int i = 0; i < NB; i++) {
			assert_memory_equal(b[i].host, dev[i], sizes[i]);
			assert_int_equal(done_count[i], 1);
		}
		assert_int_equal(unpinned_copies, 0);
		assert_int_equal(npins, 1 + 2 + 2 + 1 + 4);	/* 2 MiB pieces */
		assert_int_equal(pin_calls, 10 + fail);		/* once each, one again */
		gio_unpin(&g);
		assert_int_equal(npins, 0);
		fail_pin_only = ~0u;
		memset(done_count, 0, sizeof(done_count));
		pool_free(b);
	}
	(void)state;
}

/* bounce: every byte in its place, through the workers' pinned buffers;
 * nothing of the pool pinned, and gio_unpin() has nothing to let go */
static void test_staged_bounce(void **state)
{
	struct gio_buf b[NB];
	struct gio g;

	stage_init(&g, b, 3, 1 << 20);
	g.bounce = true;
	g.keep_pinned = true;
	g.pinners = 2;		/* no pinners with bounce */
	assert_int_equal(gio_run(&g), 0);
	assert_int_equal(g.pinners, 0);
	for (int i = 0; i < NB; i++) {
		assert_memory_equal(b[i].host, dev[i], sizes[i]);
		assert_int_equal(done_count[i], 1);
	}
	assert_int_equal(unpinned_copies, 0);	/* no device copy into the pool itself */
	assert_int_equal(pin_calls, 0);
	gio_unpin(&g);
	assert_int_equal(pin_calls, 0);
	assert_int_equal(npins, 0);
	pool_free(b);
	(void)state;
}

/* prepinned (a pool the driver pinned): the copies go straight into the
 * pool, which the engine neither pins nor unpins; here the test pins it
 * beforehand, standing in for the driver */
static void test_staged_prepinned(void **state)
{
	for (unsigned keep = 0; keep < 2; keep++) {
		struct gio_buf b[NB];
		struct gio g;

		stage_init(&g, b, 3, 1 << 20);
		set_current(b[0].ctx);
		for (int i = 0; i < NB; i++)
			assert_int_equal(host_register(b[i].host, sizes[i]), CUDA_SUCCESS);
		pin_calls = 0;
		g.prepinned = true;
		g.keep_pinned = keep;	/* false: would unpin each piece after its copy */
		g.pinners = 2;		/* true: would pin ahead */
		assert_int_equal(gio_run(&g), 0);
		assert_int_equal(g.pinners, 0);
		for (int i = 0; i < NB; i++) {
			assert_memory_equal(b[i].host, dev[i], sizes[i]);
			assert_int_equal(done_count[i], 1);
		}
		assert_int_equal(unpinned_copies, 0);	/* every copy into pinned memory */
		assert_int_equal(pin_calls, 0);		/* none pinned on the way */
		assert_int_equal(npins, NB);		/* and none let go */
		gio_unpin(&g);
		assert_int_equal(npins, NB);
		for (int i = 0; i < NB; i++)
			assert_int_equal(host_unregister(b[i].host), CUDA_SUCCESS);
		set_current(NULL);
		memset(done_count, 0, sizeof(done_count));
		pool_free(b);
	}
	(void)state;
}

/* a direct load's ready(): each chunk's host range must lie in the pool;
 * chunks from refuse_at on are refused */
static unsigned readies, host_allocs_seen;
static uint8_t *refuse_at;
static int ready_cb(void *arg, void *p, size_t len, char *e, size_t esz)
{
	(void)arg;
	assert_true((uint8_t *)p >= pool_lo && (uint8_t *)p + len <= pool_hi);
	__atomic_fetch_add(&readies, 1, __ATOMIC_RELAXED);
	if (refuse_at && (uint8_t *)p >= refuse_at) {
		snprintf(e, esz, "piece refused");
		return -1;
	}
	return 0;
}

static CUresult host_alloc_counted(void **p, size_t n)
{
	__atomic_fetch_add(&host_allocs_seen, 1, __ATOMIC_RELAXED);
	return host_alloc(p, n);
}

/* direct (a load from a pool the driver pinned): every chunk is copied
 * from the pool to its buffer once ready() allowed it, through no staging
 * buffer, and not hashed on the host; a refused chunk stops the load,
 * named, its buffer never complete */
static void test_load_direct(void **state)
{
	struct gio_ops dops = ops;
	struct gio_buf b[NB];
	struct gio g;

	dops.host_alloc = host_alloc_counted;
	init(&g, b, GIO_LOAD, 3, 1 << 20);
	g.ops = &dops;
	pool_layout(b);
	for (int i = 0; i < NB; i++) {
		fill(b[i].host, sizes[i], 100 + (unsigned)i);
		memset(dev[i], 0, sizes[i]);
	}
	g.direct = true;
	g.ready = ready_cb;
	readies = host_allocs_seen = 0;
	assert_int_equal(gio_run(&g), 0);
	unsigned chunks = 0;

	for (int i = 0; i < NB; i++) {
		assert_memory_equal(dev[i], b[i].host, sizes[i]);
		assert_int_equal(done_count[i], 1);
		assert_int_equal(b[i].h[0], 0);	/* done() checks the device */
		chunks += (unsigned)((sizes[i] + (1 << 20) - 1) >> 20);
	}
	assert_int_equal(readies, chunks);
	assert_int_equal(host_allocs_seen, 0);
	/* the last buffer's chunks refused */
	memset(done_count, 0, sizeof(done_count));
	refuse_at = b[NB - 1].host;
	assert_int_equal(gio_run(&g), -1);
	assert_non_null(strstr(g.err, "buffer 4 at offset"));
	assert_non_null(strstr(g.err, "piece refused"));
	assert_int_equal(done_count[NB - 1], 0);
	refuse_at = NULL;
	pool_free(b);
	(void)state;
}

/* a piece that cannot be pinned stops the staging, named (also when the
 * pinners gave it to its worker) */
static void test_staged_pin_fails(void **state)
{
	struct gio_buf b[NB];
	struct gio g;

	stage_init(&g, b, 2, 1 << 20);
	fail_pin_after = 4;
	assert_int_equal(gio_run(&g), -1);
	assert_non_null(strstr(g.err, "pinning 1 MiB of the staging pool for buffer"));
	assert_int_equal(npins, 0);
	/* with pinners: pieces 4.. fail for them and for their workers */
	npins = pin_calls = 0;
	g.keep_pinned = true;
	g.pinners = 3;
	assert_int_equal(gio_run(&g), -1);
	assert_non_null(strstr(g.err, "pinning 1 MiB of the staging pool for buffer"));
	assert_int_equal(npins, 4);	/* pinned ahead: let go by the caller (or its exit) */
	gio_unpin(&g);
	assert_int_equal(npins, 0);
	fail_pin_after = ~0u;
	pool_free(b);
	(void)state;
}

/* ---- streams: a queued copy happens at the stream's synchronize ------- */

struct tstream {
	CUcontext ctx;
	unsigned n;
	struct { void *d; const void *s; size_t len; } q[4];
};
static unsigned live_streams, made_streams;
static const uint8_t *expect[NB];	/* what buffer i must hold when done */
static uint8_t *const *expect_at;	/* where (dev[] or the pool's b[].host) */
static unsigned early_done;		/* done() before its bytes were there */

static void tstream_run(struct tstream *t)
{
	for (unsigned k = 0; k < t->n; k++)
		memcpy(t->q[k].d, t->q[k].s, t->q[k].len);
	t->n = 0;
}

static CUresult stream_create(CUstream *s)
{
	struct tstream *t;

	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->ctx = current;
	pthread_mutex_lock(&lock);
	live_streams++;
	made_streams++;
	pthread_mutex_unlock(&lock);
	*s = (CUstream)t;
	return CUDA_SUCCESS;
}

static CUresult stream_destroy(CUstream s)
{
	tstream_run((struct tstream *)s);
	free(s);
	pthread_mutex_lock(&lock);
	live_streams--;
	pthread_mutex_unlock(&lock);
	return CUDA_SUCCESS;
}

static CUresult stream_sync(CUstream s)
{
	tstream_run((struct tstream *)s);
	return CUDA_SUCCESS;
}

static CUresult queue(CUstream s, void *d, const void *src, size_t n, int buf)
{
	struct tstream *t = (struct tstream *)s;

	if (!current || t->ctx != current)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (buf == fail_buf)
		return CUDA_ERROR_ILLEGAL_ADDRESS;
	if (t->n == 4)
		tstream_run(t);
	t->q[t->n].d = d;
	t->q[t->n].s = src;
	t->q[t->n++].len = n;
	return CUDA_SUCCESS;
}

static CUresult dtoh_async(void *d, CUdeviceptr s, size_t n, CUstream st)
{
	return queue(st, d, (const void *)(uintptr_t)s, n, buf_of(s));
}

static CUresult htod_async(void *d, const void *s, size_t n, CUstream st)
{
	return queue(st, d, s, n, buf_of((CUdeviceptr)(uintptr_t)d));
}

static const struct gio_ops sops = { .set_current = set_current, .host_alloc = host_alloc,
				     .host_free = host_free, .dtoh = dtoh_checked, .htod = htod,
				     .host_register = host_register,
				     .host_unregister = host_unregister, .err = err,
				     .stream_create = stream_create,
				     .stream_destroy = stream_destroy, .stream_sync = stream_sync,
				     .dtoh_async = dtoh_async, .htod_async = htod_async };

static int done_check(void *arg, unsigned i)
{
	(void)arg;
	if (memcmp(expect_at[i], expect[i], sizes[i]) != 0)
		__atomic_fetch_add(&early_done, 1, __ATOMIC_RELAXED);
	return done_cb(arg, i);
}

/* save, load and stage with streams: every buffer is whole when done()
 * reports it, a failure names its buffer, and every stream is destroyed */
static void test_streams(void **state)
{
	struct gio_buf b[NB];
	uint8_t *copy[NB];
	struct gio g;

	live_streams = made_streams = early_done = 0;
	/* save: the files are whole once the run is over */
	init(&g, b, GIO_SAVE, 3, 1 << 20);
	g.ops = &sops;
	g.start = NULL;		/* (start_cb keeps one run's order) */
	assert_int_equal(gio_run(&g), 0);
	check_hashes(b);
	assert_true(made_streams >= 1 && made_streams <= 3);
	assert_int_equal(live_streams, 0);
	/* load into wiped buffers: each is whole when done() says so */
	for (int i = 0; i < NB; i++) {
		copy[i] = malloc(sizes[i]);
		memcpy(copy[i], dev[i], sizes[i]);
		memset(dev[i], 0, sizes[i]);
		expect[i] = copy[i];
	}
	expect_at = dev;
	memset(done_count, 0, sizeof(done_count));
	g.dir = GIO_LOAD;
	g.done = done_check;
	assert_int_equal(gio_run(&g), 0);
	assert_int_equal(early_done, 0);
	for (int i = 0; i < NB; i++) {
		assert_memory_equal(dev[i], copy[i], sizes[i]);
		assert_int_equal(done_count[i], 1);
	}
	assert_int_equal(live_streams, 0);
	/* stage into the pool: the same */
	uint8_t *host[NB];

	pool_layout(b);
	for (int i = 0; i < NB; i++)
		host[i] = b[i].host;
	expect_at = host;
	for (int i = 0; i < NB; i++)
		expect[i] = dev[i];
	memset(done_count, 0, sizeof(done_count));
	unpinned_copies = npins = 0;
	g.dir = GIO_STAGE;
	g.hash = false;
	assert_int_equal(gio_run(&g), 0);
	assert_int_equal(early_done, 0);
	for (int i = 0; i < NB; i++)
		assert_memory_equal(b[i].host, dev[i], sizes[i]);
	assert_int_equal(live_streams, 0);
	/* and through the workers' two pinned buffers each (bounce): a
	 * chunk reaches the pool only after its device copy completed */
	for (int i = 0; i < NB; i++)
		memset(b[i].host, 0, sizes[i]);
	memset(done_count, 0, sizeof(done_count));
	g.bounce = true;
	assert_int_equal(gio_run(&g), 0);
	assert_int_equal(early_done, 0);
	for (int i = 0; i < NB; i++) {
		assert_memory_equal(b[i].host, dev[i], sizes[i]);
		assert_int_equal(done_count[i], 1);
	}
	assert_int_equal(live_streams, 0);
	g.bounce = false;
	/* a copy that fails on its stream stops the run and names the buffer */
	fail_buf = 4;
	memset(done_count, 0, sizeof(done_count));
	g.dir = GIO_LOAD;
	g.hash = true;
	assert_int_equal(gio_run(&g), -1);
	assert_non_null(strstr(g.err, "buffer 4"));
	assert_int_equal(done_count[4], 0);
	assert_int_equal(live_streams, 0);
	fail_buf = -1;
	/* PHOS_GPU_SYNC_COPY=1: the default stream, no stream made, and the
	 * logs say so */
	assert_string_equal(gio_stream_note(&sops), "");
	assert_string_equal(gio_stream_note(&ops), " on the default stream");
	made_streams = 0;
	setenv("PHOS_GPU_SYNC_COPY", "1", 1);
	assert_string_equal(gio_stream_note(&sops), " on the default stream");
	g.dir = GIO_STAGE;
	g.hash = false;
	assert_int_equal(gio_run(&g), 0);
	unsetenv("PHOS_GPU_SYNC_COPY");
	assert_int_equal(made_streams, 0);
	for (int i = 0; i < NB; i++)
		free(copy[i]);
	pool_free(b);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_hash_words),
		cmocka_unit_test(test_load_workers),
		cmocka_unit_test_setup_teardown(test_wanted_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_short_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_staged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_staged_keep_pinned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_staged_pinners, setup, teardown),
		cmocka_unit_test_setup_teardown(test_staged_bounce, setup, teardown),
		cmocka_unit_test_setup_teardown(test_staged_prepinned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_staged_pin_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_direct, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streams, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
