/*
 * savetab.h - the table of a concurrent GPU save or load (doc/concurrent-
 * checkpoint.md, doc/concurrent-restore.md): one small memfd shared by
 * phosd, the phos-gpu helper copying the buffers into the image (or back),
 * and libphos in the process that runs meanwhile.  All three map it
 * MAP_SHARED; the words are futexes.
 *
 *   header: magic, n (buffers, in GPU_DETACH/GPU_REATTACH order), active
 *   state[n]: PENDING -> COPYING -> SAVED, or FAILED (written by phos-gpu,
 *             or by phosd when the helper died)
 *   want[n]:  set by libphos when a CUDA call may write buffer i before it
 *             is saved: phos-gpu copies the wanted buffers first
 *   use[n]:   set by libphos: the order in which the process first touched
 *             each buffer while the table was active (1, 2, ...; 0: not
 *             touched).  A save writes it into the image's map, and the
 *             loader of a concurrent restore loads in that order: the
 *             restored process resumes where the one that was saved stood,
 *             so it touches its buffers in the same order.
 *
 * libphos waits (futex) on state[i] until it is SAVED or FAILED, or until
 * active drops to 0 (the save is over, whatever its outcome).  Writers of
 * a state word store it with release order and wake every waiter.
 */
#ifndef PHOS_SAVETAB_H
#define PHOS_SAVETAB_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <linux/futex.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sums.h"

#define PHOS_SAVETAB_MAGIC 0x50485354u	/* "PHST" */

enum phos_save_state {
	PHOS_SAVE_PENDING = 0,
	PHOS_SAVE_COPYING = 1,
	PHOS_SAVE_SAVED = 2,
	PHOS_SAVE_FAILED = 3,
};

enum phos_savetab_kind {
	PHOS_SAVETAB_SAVE = 0,	/* a concurrent save: writes wait */
	PHOS_SAVETAB_LOAD = 1,	/* a concurrent load (restore): reads and writes
				 * wait; SAVED means loaded, FAILED is fatal */
};

struct phos_savetab {
	uint32_t magic;
	uint32_t n;
	uint32_t active;	/* 1 while the helper copies */
	uint32_t kind;		/* enum phos_savetab_kind */
	uint32_t next_use;	/* libphos: the last use rank handed out */
	uint32_t word[];	/* state[0..n-1], want[0..n-1], use[0..n-1] */
};

static inline size_t phos_savetab_size(uint32_t n)
{
	return sizeof(struct phos_savetab) + 3 * (size_t)n * sizeof(uint32_t);
}

static inline uint32_t *phos_savetab_state(struct phos_savetab *t, uint32_t i)
{
	return &t->word[i];
}

static inline uint32_t *phos_savetab_want(struct phos_savetab *t, uint32_t i)
{
	return &t->word[t->n + i];
}

static inline uint32_t *phos_savetab_use(struct phos_savetab *t, uint32_t i)
{
	return &t->word[2 * t->n + i];
}

/* Buffer i is touched: give it the next use rank unless it has one. */
static inline void phos_savetab_touch(struct phos_savetab *t, uint32_t i)
{
	uint32_t *u = phos_savetab_use(t, i), zero = 0, r;

	if (__atomic_load_n(u, __ATOMIC_RELAXED))
		return;
	r = __atomic_add_fetch(&t->next_use, 1, __ATOMIC_RELAXED);
	/* a racing thread may rank it first: then r is simply unused */
	__atomic_compare_exchange_n(u, &zero, r, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

static inline void phos_futex_wake(uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Sleep while *w == val, at most ms milliseconds (any wake-up returns). */
static inline void phos_futex_wait(uint32_t *w, uint32_t val, unsigned ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	syscall(SYS_futex, w, FUTEX_WAIT, val, &ts, NULL, 0);
}

/* A new table of n buffers, all PENDING, active: a sealed-size memfd in
 * *fd, mapped; NULL + errno. */
static inline struct phos_savetab *phos_savetab_create(uint32_t n, uint32_t kind, int *fd)
{
	size_t sz = phos_savetab_size(n);
	struct phos_savetab *t;
	int e;

	*fd = memfd_create("phos-savetab", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (*fd < 0)
		return NULL;
	if (ftruncate(*fd, (off_t)sz) < 0 ||
	    fcntl(*fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0 ||
	    (t = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0)) == MAP_FAILED) {
		e = errno;
		close(*fd);
		*fd = -1;
		errno = e;
		return NULL;
	}
	t->magic = PHOS_SAVETAB_MAGIC;
	t->n = n;
	t->kind = kind;
	t->active = 1;
	return t;
}

/* Store a state word and wake its waiters. */
static inline void phos_savetab_set(struct phos_savetab *t, uint32_t i, uint32_t st)
{
	uint32_t *w = phos_savetab_state(t, i);

	__atomic_store_n(w, st, __ATOMIC_RELEASE);
	phos_futex_wake(w);
}

/* The save is over: every buffer not SAVED is FAILED, active is 0, every
 * waiter wakes. */
static inline void phos_savetab_end(struct phos_savetab *t)
{
	for (uint32_t i = 0; i < t->n; i++)
		if (__atomic_load_n(phos_savetab_state(t, i), __ATOMIC_ACQUIRE) != PHOS_SAVE_SAVED)
			phos_savetab_set(t, i, PHOS_SAVE_FAILED);
	__atomic_store_n(&t->active, 0, __ATOMIC_RELEASE);
	phos_futex_wake(&t->active);
	for (uint32_t i = 0; i < t->n; i++)
		phos_futex_wake(phos_savetab_state(t, i));
}

/*
 * The buffer hash phos-gpu computes on the device at the stop and on the
 * host over what it wrote, to prove the two are the same bytes, and that a
 * load compares with the map: over the 32-bit words w_i of a buffer,
 * h0 = sum w_i * m_i and h1 = sum w_i^2 * m_i, mod 2^64, with odd weights
 * m_i.  A change of a single word always changes h0 (an odd factor times a
 * non-zero difference below 2^32).  With key 0 (maps from before
 * 2026-12-03) m_i = 2i + 1: a checksum, which two changed words can keep
 * (x, x + 2 and x + 3, x + 1 weigh the same).  With a key (the
 * generation's, derived from the node key: phos_gpumem_key() in
 * common/manifest.h) m_i = mix(key + i * golden) | 1, splitmix64's
 * finalizer: weights nobody without the node key can see, so that keeping
 * the sums means guessing them.  phos_hash_add() folds in words
 * [first, first + n) of a buffer; daemon/phos-hash.cu is the same on the
 * device, with the same phos_hash_weight() (common/sums.h).
 */
static inline void phos_hash_add(uint64_t h[2], const uint32_t *w, uint64_t first, size_t n,
				 uint64_t key)
{
	uint64_t a = 0, b = 0;

	for (size_t k = 0; k < n; k++) {
		uint64_t m = phos_hash_weight(key, first + k), v = w[k];

		a += v * m;
		b += v * v * m;
	}
	h[0] += a;
	h[1] += b;
}

#endif
