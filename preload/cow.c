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

int phos_cow_on;

static struct phos_savetab *tab;
static size_t tab_size;
static struct {
	uint64_t va, end;
} range[PHOS_GPUBUF_MAX];

/* The table says the save is over: nothing to wait for from now on. */
static bool over(void)
{
	if (__atomic_load_n(&tab->active, __ATOMIC_ACQUIRE))
		return false;
	__atomic_store_n(&phos_cow_on, 0, __ATOMIC_RELAXED);
	return true;
}

static void wait_one(uint32_t i)
{
	uint32_t *st = phos_savetab_state(tab, i);
	uint64_t t0 = 0;
	uint32_t s;

	while ((s = __atomic_load_n(st, __ATOMIC_ACQUIRE)) < PHOS_SAVE_SAVED && !over()) {
		if (!t0) {
			t0 = phos_now_ms();
			__atomic_store_n(phos_savetab_want(tab, i), 1, __ATOMIC_RELEASE);
			PHOS_COUNT(cow_waits, 1);
		} else if (phos_now_ms() - t0 > PHOS_COW_MAX_WAIT_S * 1000ull) {
			phos_dbg("cow: buffer %u still not saved after %d s: going on (the save "
				 "will fail its check)", i, PHOS_COW_MAX_WAIT_S);
			return;
		}
		phos_futex_wait(st, s, 100);
	}
}

void phos_cow_range(uint64_t base, uint64_t size)
{
	uint64_t end = base + (size ? size : 1);

	if (over())
		return;
	for (uint32_t i = 0; i < tab->n; i++)
		if (base < range[i].end && range[i].va < end)
			wait_one(i);
}

void phos_cow_all(void)
{
	if (over())
		return;
	for (uint32_t i = 0; i < tab->n; i++)
		wait_one(i);
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
	if (tab)
		munmap(tab, tab_size);
	tab = NULL;
}
