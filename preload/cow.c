/*
 * cow.c - the process runs on while phosd saves its GPU buffers
 * (doc/concurrent-checkpoint.md, common/savetab.h).
 *
 * After a leave-running checkpoint phosd may hand the buffers back before
 * they are saved, together with the save table.  From then until the save
 * is over, every CUDA call that may write device memory first waits for
 * the buffers it may write (alloc.c and graph.c compute that set) to be
 * saved, asking the helper to copy them next; a call whose write set is
 * unknown waits for all of them.  Nothing waits once the table says the
 * save is over, and the fast path of every hook is one relaxed load.
 *
 * What a waiter gives up on (the helper stalls for PHOS_COW_MAX_WAIT_S)
 * is not a wrong image: the helper compares every buffer's hash at the
 * stop with the hash of the bytes it wrote, and phosd checkpoints again,
 * stop-the-world, on any difference.
 *
 * The same table serves a concurrent load after a restore (its kind is
 * PHOS_SAVETAB_LOAD, doc/concurrent-restore.md): then reads wait too
 * (phos_cow_read*), and a buffer that could not be loaded stops the
 * process with a message.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "phos_int.h"
#include "../common/proto.h"
#include "../common/savetab.h"
#include "../common/util.h"

#define PHOS_COW_MAX_WAIT_S 600
/* a table of our own (PHOS_SIGVAL_RANK) ranks for this long at most, in
 * case the detach it was made for never comes */
#define PHOS_RANK_MAX_S 60

int phos_cow_on;

static struct phos_savetab *tab;
static size_t tab_size;
static struct {
	uint64_t va, end;
} range[PHOS_GPUBUF_MAX];
/* the use ranks of the last table, once it is gone (phos_cow_rank) */
static struct {
	uint64_t va;
	uint32_t use;
} last[PHOS_GPUBUF_MAX];
static unsigned nlast;
/* the reasons the debug log named during this table (phos_cow_all) */
static const char *said[8];
/* a table of our own: when it stops ranking (0: not ours) */
static uint64_t rank_until_ns;

/* Every buffer of the table is SAVED (for a load: loaded). */
static bool all_saved(void)
{
	for (uint32_t i = 0; i < tab->n; i++)
		if (__atomic_load_n(phos_savetab_state(tab, i), __ATOMIC_ACQUIRE) != PHOS_SAVE_SAVED)
			return false;
	return true;
}

/* The table says the copy is over: nothing to wait for from now on,
 * unless a load failed: then the guard stays on, and a call touching a
 * buffer that was not loaded stops the process (wait_one). */
static bool over(void)
{
	if (__atomic_load_n(&tab->active, __ATOMIC_ACQUIRE))
		return false;
	if (tab->kind == PHOS_SAVETAB_LOAD && !all_saved())
		return true;
	__atomic_store_n(&phos_cow_on, 0, __ATOMIC_RELAXED);
	return true;
}

static void wait_one(uint32_t i)
{
	uint32_t *st = phos_savetab_state(tab, i);
	uint64_t t0 = 0;
	uint32_t s, s0 = 0;

	while ((s = __atomic_load_n(st, __ATOMIC_ACQUIRE)) < PHOS_SAVE_SAVED) {
		if (over()) {
			s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
			break;
		}
		if (!t0) {
			t0 = phos_now_ns();
			s0 = s;
			__atomic_store_n(phos_savetab_want(tab, i), 1, __ATOMIC_RELEASE);
			PHOS_COUNT(cow_waits, 1);
		} else if (phos_now_ns() - t0 > PHOS_COW_MAX_WAIT_S * 1000000000ull) {
			phos_dbg("cow: buffer %u still not saved after %d s: going on (the save "
				 "will fail its check)", i, PHOS_COW_MAX_WAIT_S);
			return;
		}
		phos_futex_wait(st, s, 100);
	}
	if (t0 && __atomic_load_n(&phos_watch_left, __ATOMIC_RELAXED) > 0)
		phos_watch_wait(i, range[i].end - range[i].va, s0 != PHOS_SAVE_PENDING, t0,
				(phos_now_ns() - t0) / 1000);
	/* a buffer that could not be loaded: the process must not run on
	 * memory that does not hold its data */
	if (s == PHOS_SAVE_FAILED && tab->kind == PHOS_SAVETAB_LOAD) {
		fprintf(stderr, "libphos: GPU buffer %u (%#llx) could not be loaded from the image "
			"(phos-restore says why); stopping the restored process\n", i,
			(unsigned long long)range[i].va);
		abort();
	}
}

/* Rank and ask for the buffers [base, base + size) lies in; ask (want)
 * only for those not copied yet, and only when the caller will wait. */
static void mark(uint64_t base, uint64_t size, bool want)
{
	uint64_t end = base + (size ? size : 1);

	for (uint32_t i = 0; i < tab->n; i++) {
		if (base >= range[i].end || range[i].va >= end)
			continue;
		phos_savetab_touch(tab, i);
		if (want && __atomic_load_n(phos_savetab_state(tab, i), __ATOMIC_ACQUIRE) <
				    PHOS_SAVE_SAVED)
			__atomic_store_n(phos_savetab_want(tab, i), 1, __ATOMIC_RELEASE);
	}
}

static void wait_range(uint64_t base, uint64_t size)
{
	uint64_t end = base + (size ? size : 1);

	for (uint32_t i = 0; i < tab->n; i++)
		if (base < range[i].end && range[i].va < end)
			wait_one(i);
}

/* Whether calls wait now (a load that is over may have failed: its
 * buffers are checked). */
static bool guarding(void)
{
	/* our own ranking table, past its time: over (not unmapped here:
	 * another thread may be in mark(); the next table or the detach
	 * does that, and phos_cow_rank still reads its ranks) */
	if (rank_until_ns && phos_now_ns() > rank_until_ns) {
		rank_until_ns = 0;
		__atomic_store_n(&tab->active, 0, __ATOMIC_RELEASE);
	}
	return !over() || tab->kind == PHOS_SAVETAB_LOAD;
}

void phos_cow_range(uint64_t base, uint64_t size)
{
	if (!guarding())
		return;
	mark(base, size, true);
	wait_range(base, size);
}

void phos_cow_set(const uint64_t *base, unsigned n)
{
	if (!guarding())
		return;
	/* every buffer asked for first: the helper copies them side by side */
	for (unsigned k = 0; k < n; k++)
		mark(base[k], 1, true);
	for (unsigned k = 0; k < n; k++)
		wait_range(base[k], 1);
}

void phos_cow_all(const char *why)
{
	if (!guarding())
		return;
	if (phos_env.debug && tab->kind == PHOS_SAVETAB_LOAD && !all_saved()) {
		/* once per reason: what makes a restored process wait for the
		 * whole load (bench/torch_size.sh reads these lines) */
		unsigned k = 0;

		while (k < 8 && said[k] && said[k] != why)
			k++;
		if (k < 8 && !said[k]) {
			said[k] = why;
			phos_dbg("load: %s waits for every buffer", why);
		}
	}
	for (uint32_t i = 0; i < tab->n; i++)
		wait_one(i);
}

bool phos_cow_loading(void)
{
	/* by the states: the helper may not have ended the table yet */
	return phos_cow_active() && tab->kind == PHOS_SAVETAB_LOAD && !all_saved();
}

/* Reads matter during a load only: before it, the buffer holds nothing.
 * During a save they only rank the buffers. */
void phos_cow_read(uint64_t base, uint64_t size)
{
	if (tab->kind == PHOS_SAVETAB_LOAD)
		phos_cow_range(base, size);
	else if (!over())
		mark(base, size, false);
}

void phos_cow_read_all(const char *why)
{
	if (tab->kind == PHOS_SAVETAB_LOAD)
		phos_cow_all(why);
}

int phos_cow_buffer(uint64_t va, uint64_t *size)
{
	if (!tab)
		return -1;
	for (uint32_t i = 0; i < tab->n; i++)
		if (va >= range[i].va && va < range[i].end) {
			*size = range[i].end - range[i].va;
			return (int)i;
		}
	return -1;
}

uint32_t phos_cow_rank(uint64_t va)
{
	if (tab) {
		for (uint32_t i = 0; i < tab->n; i++)
			if (range[i].va == va)
				return __atomic_load_n(phos_savetab_use(tab, i), __ATOMIC_RELAXED);
		return 0;
	}
	for (unsigned i = 0; i < nlast; i++)
		if (last[i].va == va)
			return last[i].use;
	return 0;
}

int phos_cow_rank_begin(void)
{
	static struct phos_gpubuf bufs[PHOS_GPUBUF_MAX];
	struct phos_savetab *t;
	int n, fd, rc;

	if (phos_cow_active())
		return -1;	/* a save or load table ranks already */
	n = phos_vmm_list(bufs, PHOS_GPUBUF_MAX);
	if (n <= 0 || !(t = phos_savetab_create((uint32_t)n, PHOS_SAVETAB_SAVE, &fd)))
		return -1;
	for (int i = 0; i < n; i++)	/* nothing to wait for */
		__atomic_store_n(phos_savetab_state(t, (uint32_t)i), PHOS_SAVE_SAVED,
				 __ATOMIC_RELAXED);
	munmap(t, phos_savetab_size((uint32_t)n));
	rc = phos_cow_begin(fd, bufs, n);
	close(fd);
	if (rc == 0)
		rank_until_ns = phos_now_ns() + PHOS_RANK_MAX_S * 1000000000ull;
	return rc;
}

int phos_cow_begin(int fd, const struct phos_gpubuf *bufs, int n)
{
	struct stat st;
	void *p;

	phos_cow_end();
	if (n <= 0 || n > PHOS_GPUBUF_MAX || fstat(fd, &st) < 0 ||
	    (size_t)st.st_size != phos_savetab_size((uint32_t)n))
		return -1;
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -1;
	tab = p;
	tab_size = (size_t)st.st_size;
	memset(said, 0, sizeof(said));
	if (tab->magic != PHOS_SAVETAB_MAGIC || tab->n != (uint32_t)n) {
		phos_cow_end();
		return -1;
	}
	for (int i = 0; i < n; i++) {
		range[i].va = bufs[i].va;
		range[i].end = bufs[i].va + bufs[i].size;
	}
	__atomic_store_n(&phos_cow_on, 1, __ATOMIC_RELEASE);
	return 0;
}

void phos_cow_end(void)
{
	__atomic_store_n(&phos_cow_on, 0, __ATOMIC_RELEASE);
	rank_until_ns = 0;
	if (tab) {
		for (nlast = 0; nlast < tab->n; nlast++) {
			last[nlast].va = range[nlast].va;
			last[nlast].use = __atomic_load_n(phos_savetab_use(tab, nlast),
							  __ATOMIC_RELAXED);
		}
		munmap(tab, tab_size);
	}
	tab = NULL;
}
