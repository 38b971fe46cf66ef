/*
 * gate.c - the gate every hook passes (phos_int.h, PHOS_PROLOGUE), and
 * the per-thread slots it is built on.
 *
 * Each thread that enters a hook gets a slot of its own (a cache line or
 * more): its "inside" flag and its counters (PHOS_COUNT).  Open, the gate
 * costs a thread two plain stores to its own slot and a load of `closed`:
 * no atomic read-modify-write and no cache line shared with other
 * threads, which is what kept a launch's added cost above 100 ns.
 *
 * The store of `inside` must be ordered before the load of `closed`
 * (Dekker).  Rather than fence on every entry, the closer, which runs once
 * per checkpoint, calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED):
 * every running thread of the process executes a full barrier, so after
 * it a thread either shows inside = 1 to the closer or sees closed = 1
 * (the scheme liburcu's membarrier flavour uses).  Where membarrier is
 * missing or refused (old kernel, seccomp), entries fence instead; after
 * a CRIU restore the registration is made again before it is used.
 *
 * Threads past PHOS_THREAD_SLOTS share one overflow slot: atomic adds, and
 * a shared in-flight count for the gate, as every thread did before.
 *
 * Closing sets `closed`, makes the stores visible, and waits until no slot
 * is inside; a thread that finds the gate closed steps out and sleeps on
 * the condition variable until phos_gate_open().  Nested entry (a hook
 * running inside a hook on the same thread, e.g. a driver callback) passes
 * without waiting: the outer entry already counts, and waiting there would
 * deadlock the close.
 */
#include "config.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "phos_int.h"
#include "../common/util.h"

struct phos_slot phos_slots[PHOS_THREAD_SLOTS];
struct phos_slot phos_slot_shared;	/* threads past the last slot */
static unsigned next_slot;
/* initial-exec: no __tls_get_addr call per hook (libphos is preloaded; a
 * dlopen()ed copy fits in glibc's static TLS surplus) */
__thread struct phos_slot *phos_self __attribute__((tls_model("initial-exec")));
static __thread int depth __attribute__((tls_model("initial-exec")));

static int closed;
static long shared_inflight;	/* overflow threads inside */
static bool entry_fence = true;	/* until membarrier is known to work */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;	/* both directions */

/* Async-signal-safe: no allocation, one atomic add. */
struct phos_slot *phos_slot_claim(void)
{
	unsigned i = __atomic_fetch_add(&next_slot, 1, __ATOMIC_RELAXED);

	if (i >= PHOS_THREAD_SLOTS) {
		__atomic_store_n(&next_slot, PHOS_THREAD_SLOTS, __ATOMIC_RELAXED);
		phos_self = &phos_slot_shared;
	} else {
		phos_self = &phos_slots[i];
	}
	return phos_self;
}

unsigned phos_slots_used(void)
{
	unsigned n = __atomic_load_n(&next_slot, __ATOMIC_RELAXED);

	return n < PHOS_THREAD_SLOTS ? n : PHOS_THREAD_SLOTS;
}

static int membarrier(int cmd)
{
	return (int)syscall(SYS_membarrier, cmd, 0, 0);
}

/* The closer's half of the Dekker pairing: every thread's earlier stores
 * visible, every thread's later loads after our store of `closed`. */
static void barrier_all(void)
{
	if (!__atomic_load_n(&entry_fence, __ATOMIC_RELAXED)) {
		if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
			return;
		/* registration lost (a CRIU restore does not keep it) */
		if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 &&
		    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
			return;
		/* Cannot happen once registered; if it does, entries fence
		 * from now on, and the gate is only trusted after they all
		 * have: a close that races this switch waits, then times out
		 * (the checkpoint fails, the app runs on). */
		__atomic_store_n(&entry_fence, true, __ATOMIC_SEQ_CST);
		phos_dbg("membarrier failed: %s; the gate fences on entry from now on",
			 strerror(errno));
	}
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void phos_gate_init(void)
{
	if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0)
		__atomic_store_n(&entry_fence, false, __ATOMIC_SEQ_CST);
	else
		phos_dbg("membarrier unavailable (%s): the gate fences on every entry",
			 strerror(errno));
}

/* Mark this thread inside (shared: counted); the caller then loads `closed`. */
static void step_in(struct phos_slot *s)
{
	if (s == &phos_slot_shared) {
		__atomic_fetch_add(&shared_inflight, 1, __ATOMIC_SEQ_CST);
		return;
	}
	__atomic_store_n(&s->inside, 1, __ATOMIC_RELAXED);
	if (__atomic_load_n(&entry_fence, __ATOMIC_RELAXED))
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	else
		__atomic_signal_fence(__ATOMIC_SEQ_CST);	/* membarrier pairs with it */
}

/* Mark this thread outside; true if a closer may be waiting for it. */
static bool step_out(struct phos_slot *s)
{
	if (s == &phos_slot_shared)
		__atomic_fetch_sub(&shared_inflight, 1, __ATOMIC_SEQ_CST);
	else {
		__atomic_store_n(&s->inside, 0, __ATOMIC_RELEASE);
		if (__atomic_load_n(&entry_fence, __ATOMIC_RELAXED))
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
		else
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
	}
	return __atomic_load_n(&closed, __ATOMIC_RELAXED) != 0;
}

static void wake_closer(void)
{
	pthread_mutex_lock(&lock);
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
}

int phos_gate_enter(void)
{
	struct phos_slot *s;

	if (depth++ > 0)
		return 1;
	s = phos_self ? phos_self : phos_slot_claim();
	for (;;) {
		step_in(s);
		if (!__atomic_load_n(&closed, __ATOMIC_ACQUIRE))
			return 1;
		/* closed: step back out and wait for the reopening */
		step_out(s);
		pthread_mutex_lock(&lock);
		pthread_cond_broadcast(&cond);
		while (__atomic_load_n(&closed, __ATOMIC_SEQ_CST))
			pthread_cond_wait(&cond, &lock);
		pthread_mutex_unlock(&lock);
	}
}

void phos_gate_leave(int *token)
{
	(void)token;
	if (--depth > 0)
		return;
	if (step_out(phos_self))
		wake_closer();
}

static bool ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Some thread is inside (the caller holds `lock`). */
static bool anyone_inside(void)
{
	unsigned i, n = phos_slots_used();

	if (__atomic_load_n(&shared_inflight, __ATOMIC_SEQ_CST) > 0)
		return true;
	for (i = 0; i < n; i++)
		if (__atomic_load_n(&phos_slots[i].inside, __ATOMIC_ACQUIRE))
			return true;
	return false;
}

int phos_gate_close(int timeout_ms)
{
	struct timespec end;
	int r = 0;

	phos_deadline(&end, (unsigned)timeout_ms);
	pthread_mutex_lock(&lock);
	__atomic_store_n(&closed, 1, __ATOMIC_SEQ_CST);
	barrier_all();
	while (r != ETIMEDOUT && anyone_inside()) {
		/* a leaver wakes us; the slice is only a safety net */
		struct timespec slice;

		phos_deadline(&slice, 20);
		if (ts_before(&end, &slice))
			slice = end;
		r = pthread_cond_timedwait(&cond, &lock, &slice);
		if (r == ETIMEDOUT && ts_before(&slice, &end))
			r = 0;
	}
	if (anyone_inside()) {
		__atomic_store_n(&closed, 0, __ATOMIC_SEQ_CST);
		pthread_cond_broadcast(&cond);
		pthread_mutex_unlock(&lock);
		errno = ETIMEDOUT;
		return -1;
	}
	pthread_mutex_unlock(&lock);
	return 0;
}

void phos_gate_open(void)
{
	pthread_mutex_lock(&lock);
	__atomic_store_n(&closed, 0, __ATOMIC_SEQ_CST);
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
}

/* A forked child has only the forking thread: the others' slots must
 * not keep it closed out, and the forker's own slot stays its own. */
void phos_gate_atfork_child(void)
{
	unsigned i, n = phos_slots_used();

	for (i = 0; i < n; i++)
		if (&phos_slots[i] != phos_self)
			phos_slots[i].inside = 0;
	shared_inflight = (phos_self == &phos_slot_shared && depth > 0) ? 1 : 0;
	pthread_mutex_init(&lock, NULL);
	pthread_cond_init(&cond, NULL);
	/* the registration belongs to the parent's mm */
	if (!entry_fence && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0)
		entry_fence = true;
}
