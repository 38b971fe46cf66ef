/*
 * gate.c - the gate every hook passes (phos_int.h, PHOS_PROLOGUE).
 *
 * Open (the normal case) it costs two relaxed-contention atomics per hook:
 * the in-flight count up, a load of `closed`, the count down.  Closing
 * sets `closed` and waits until the count drains to zero; a thread that
 * finds the gate closed undoes its increment and sleeps on the condition
 * variable until phos_gate_open().
 *
 * Nested entry (a hook running inside a hook on the same thread, e.g. a
 * driver callback) passes without waiting: the outer entry already
 * counts, and waiting there would deadlock the close.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "phos_int.h"
#include "../common/util.h"

static int closed;
static long inflight;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;	/* both directions */
/* initial-exec: no __tls_get_addr call per hook (libphos is preloaded; a
 * dlopen()ed copy fits in glibc's static TLS surplus) */
static __thread int depth __attribute__((tls_model("initial-exec")));

int phos_gate_enter(void)
{
	if (depth++ > 0)
		return 1;
	for (;;) {
		__atomic_fetch_add(&inflight, 1, __ATOMIC_SEQ_CST);
		if (!__atomic_load_n(&closed, __ATOMIC_SEQ_CST))
			return 1;
		/* closed: step back out and wait for the reopening */
		pthread_mutex_lock(&lock);
		__atomic_fetch_sub(&inflight, 1, __ATOMIC_SEQ_CST);
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
	if (__atomic_sub_fetch(&inflight, 1, __ATOMIC_SEQ_CST) == 0 &&
	    __atomic_load_n(&closed, __ATOMIC_SEQ_CST)) {
		pthread_mutex_lock(&lock);
		pthread_cond_broadcast(&cond);
		pthread_mutex_unlock(&lock);
	}
}

int phos_gate_close(int timeout_ms)
{
	struct timespec end;
	int r = 0;

	phos_deadline(&end, (unsigned)timeout_ms);
	pthread_mutex_lock(&lock);
	__atomic_store_n(&closed, 1, __ATOMIC_SEQ_CST);
	while (r == 0 && __atomic_load_n(&inflight, __ATOMIC_SEQ_CST) > 0)
		r = pthread_cond_timedwait(&cond, &lock, &end);
	if (__atomic_load_n(&inflight, __ATOMIC_SEQ_CST) > 0) {
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
