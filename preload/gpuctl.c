/*
 * gpuctl.c - the GPU side of the control channel with phosd
 * (doc/protocol.md, "GPU memory: detach and reattach").
 *
 * phosd sends SIGRTMIN+PHOS_SIGNAL_OFFSET with PHOS_SIGVAL_DETACH or
 * PHOS_SIGVAL_REATTACH; signal.c forwards it to the libphos thread, which
 * runs phos_gpuctl().  Each exchange is one connection to phosd, closed
 * before the call returns: nothing of phosd is left in the process when
 * CRIU dumps it, and a restored process simply connects to the phosd of
 * its new node.
 *
 *   DETACH:   close the gate (new CUDA calls wait in the hooks, running
 *             ones drain) -> sync, export, unmap, release (vmm.c) ->
 *             GPU_DETACH {GPUBUFS} + fds -> REPLY.  ERRNO 0: phosd holds
 *             the memory; the gate stays closed until REATTACH.
 *             Anything else (or no phosd): map the buffers again from our
 *             own fds, open the gate: the process is as before, and phosd
 *             checkpoints it with its buffers attached (stop-the-world).
 *             A failure before the hand-over is reported in GPU_DETACH
 *             itself (ERRNO + MSG, no buffers).
 *   REATTACH: GPU_REATTACH -> REPLY {GPUBUFS} + fds -> import, map at the
 *             same addresses -> open the gate.  A process that cannot
 *             get its memory back must not run on: message on stderr,
 *             abort().
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "phos_int.h"
#include "../common/proto.h"
#include "../common/util.h"

int phos_ctl_connect(void);	/* ctl.c */

#define GATE_TIMEOUT_MS 10000
#define REPLY_TIMEOUT_MS 60000

static int bufs_put(struct phos_msg *m, const struct phos_gpubuf *b, int n)
{
	uint8_t *blob = malloc((size_t)(n ? n : 1) * PHOS_GPUBUF_LEN);
	int r;

	if (!blob)
		return -1;
	for (int i = 0; i < n; i++) {
		struct phos_gpubuf g = b[i];

		/* the order the process touched them in after the last
		 * checkpoint or restore: a restore loads them in that order */
		g.rank = phos_cow_rank(g.va);
		phos_gpubuf_put(blob + (size_t)i * PHOS_GPUBUF_LEN, &g);
	}
	r = phos_msg_put_blob(m, PHOS_A_GPUBUFS, blob, (size_t)n * PHOS_GPUBUF_LEN);
	free(blob);
	return r;
}

/* Send m (with fds) and read phosd's REPLY: its ERRNO (0 = success), or
 * -1 if there was no usable answer.  *reply is kept when asked for. */
static int exchange(struct phos_msg *m, const int *fds, int nfds, struct phos_msg **reply)
{
	struct phos_msg *r;
	uint64_t err = 0;
	int sk = phos_ctl_connect(), rc = -1;

	if (reply)
		*reply = NULL;
	if (sk < 0) {
		phos_dbg("gpu: cannot reach phosd: %s", strerror(errno));
		return -1;
	}
	if (phos_msg_send(sk, m, fds, nfds) < 0) {
		phos_dbg("gpu: sending %s: %s", phos_msg_type_name(m->type), strerror(errno));
		close(sk);
		return -1;
	}
	r = phos_msg_recv(sk, REPLY_TIMEOUT_MS);
	close(sk);
	if (!r || r->type != PHOS_MSG_REPLY || phos_msg_get_u64(r, PHOS_A_ERRNO, &err) < 0) {
		phos_dbg("gpu: no answer from phosd to %s", phos_msg_type_name(m->type));
		phos_msg_free(r);
		return -1;
	}
	rc = (int)err;
	if (rc) {
		const char *why = "";

		phos_msg_get_str(r, PHOS_A_MSG, &why);
		phos_dbg("gpu: phosd refused %s: %s", phos_msg_type_name(m->type), why);
	}
	if (reply)
		*reply = r;
	else
		phos_msg_free(r);
	return rc;
}

/* A GPU_DETACH that hands nothing over: err 0 (no buffers) or why not. */
static void report(int err, const char *msg)
{
	struct phos_msg *m = phos_msg_new(PHOS_MSG_GPU_DETACH, 1);

	if (!m)
		return;
	if (phos_msg_put_u64(m, PHOS_A_ERRNO, (uint64_t)err) == 0 &&
	    (!err || !phos_vmm_imported() ||
	     phos_msg_put_u64(m, PHOS_A_FLAGS, PHOS_F_GPU_IMPORTED) == 0) &&
	    (!msg || phos_msg_put_str(m, PHOS_A_MSG, msg) == 0) && bufs_put(m, NULL, 0) == 0)
		exchange(m, NULL, 0, NULL);
	phos_msg_free(m);
}

static void detach(void)
{
	static struct phos_gpubuf bufs[PHOS_GPUBUF_MAX];
	static int fds[PHOS_GPUBUF_MAX];
	struct phos_msg *m;
	char msg[256] = "";
	int n;

	if (phos_vmm_detached()) {
		report(EALREADY, "the GPU buffers are already detached");
		return;
	}
	/* a concurrent load still filling the buffers (a checkpoint right
	 * after a restore): what would be handed over must be complete */
	if (phos_cow_active())
		phos_cow_all("a checkpoint's detach");
	if (phos_cow_loading()) {
		report(EBUSY, "the GPU buffers are still being loaded after the restore");
		return;
	}
	if (phos_gate_close(GATE_TIMEOUT_MS) < 0) {
		report(ETIMEDOUT, "CUDA calls did not drain within 10 s");
		return;
	}
	phos_cow_end();		/* an earlier save's table: over by now */
	n = phos_vmm_detach(bufs, fds, PHOS_GPUBUF_MAX, msg, sizeof(msg));
	if (n <= 0) {
		phos_gate_open();
		report(n < 0 ? errno : 0, n < 0 ? msg : NULL);
		return;
	}
	m = phos_msg_new(PHOS_MSG_GPU_DETACH, 1);
	if (m && phos_msg_put_u64(m, PHOS_A_ERRNO, 0) == 0 && bufs_put(m, bufs, n) == 0 &&
	    exchange(m, fds, n, NULL) == 0) {
		PHOS_COUNT(detaches, 1);
		phos_dbg("gpu: %d buffer(s) detached; CUDA calls wait for REATTACH", n);
	} else if (phos_vmm_reattach(bufs, fds, n, msg, sizeof(msg)) == 0) {
		phos_dbg("gpu: phosd did not take the buffers: mapped again, running on");
		phos_gate_open();
	} else {
		fprintf(stderr, "libphos: the GPU memory handed to phosd could not be mapped "
			"again: %s; aborting\n", msg);
		abort();
	}
	phos_msg_free(m);
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/*
 * PHOS_DEBUG: where a restored process's first step goes.  The first
 * PHOS_WATCH_LAUNCHES kernel launches after a reattach are timed; the
 * first one is reported at once, the whole window (the time inside the
 * launch calls, and what of it waited for buffers still loading: cow.c)
 * once it is over.  bench/torch_size.sh reads both lines.
 */
#define PHOS_WATCH_LAUNCHES 256

int phos_watch_left;
uint64_t phos_watch_waited_us;
unsigned phos_watch_waits;
static uint64_t reattached_ns;
static uint64_t watch_in_us, watch_max_us;
static unsigned watch_slow;
/* the window's longest waits for one buffer, longest first */
#define PHOS_WATCH_TOP 6
static struct watch_wait {
	uint64_t us, from_ns, size;
	uint32_t buf;
	bool started;	/* the loader had begun it when the wait began */
} watch_top[PHOS_WATCH_TOP];
static unsigned watch_ntop;
static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;

void phos_watch_wait(uint32_t buf, uint64_t size, bool started, uint64_t from_ns, uint64_t us)
{
	struct watch_wait w = { us, from_ns, size, buf, started };
	unsigned k;

	__atomic_add_fetch(&phos_watch_waited_us, us, __ATOMIC_RELAXED);
	__atomic_add_fetch(&phos_watch_waits, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&watch_lock);
	for (k = watch_ntop; k > 0 && watch_top[k - 1].us < us; k--)
		if (k < PHOS_WATCH_TOP)
			watch_top[k] = watch_top[k - 1];
	if (k < PHOS_WATCH_TOP) {
		watch_top[k] = w;
		if (watch_ntop < PHOS_WATCH_TOP)
			watch_ntop++;
	}
	pthread_mutex_unlock(&watch_lock);
}

/* PHOS_DEBUG: the first launches of the window that waited 50 ms or more
 * name the words of their parameters that pointed into the table's
 * buffers: a word libphos takes for a pointer may be a stale one the
 * program left in a structure, and then the launch waits for a buffer it
 * does not read */
#define PHOS_WATCH_LAUNCHES_SAID 8
static unsigned watch_said;

void phos_watch_launch(CUfunction f, const struct phos_wset *ws, uint64_t us)
{
	char line[512] = "";
	size_t len = 0;
	unsigned shown = 0;

	if (us < 50000 ||
	    __atomic_fetch_add(&watch_said, 1, __ATOMIC_RELAXED) >= PHOS_WATCH_LAUNCHES_SAID)
		return;
	for (unsigned k = 0; k < ws->n && len < sizeof(line) - 64; k++) {
		uint64_t size;
		int i = phos_cow_buffer(ws->base[k], &size);
		int r;

		if (i < 0)
			continue;
		if (shown++ == 12) {
			snprintf(line + len, sizeof(line) - len, "; ...");
			break;
		}
		r = ws->at[k] == UINT32_MAX ?
		    snprintf(line + len, sizeof(line) - len, "%sbuffer %d (%llu MiB) by a range",
			     len ? "; " : "", i, (unsigned long long)(size >> 20)) :
		    snprintf(line + len, sizeof(line) - len, "%sbuffer %d (%llu MiB) by the word at "
			     "+%u", len ? "; " : "", i, (unsigned long long)(size >> 20), ws->at[k]);
		if (r < 0)
			break;
		len += (size_t)r;
	}
	phos_dbg("gpu: a launch of %.160s waited %llu ms for buffers still loading; its parameters "
		 "name %u of the table's buffers: %s", phos_kernel_name(f),
		 (unsigned long long)(us / 1000), shown, line);
}

/* "buffer 77 (1024 MiB, not begun) 1446 ms from +12 ms; ..." */
static void watch_top_line(void)
{
	char line[PHOS_WATCH_TOP * 80] = "";
	size_t len = 0;

	pthread_mutex_lock(&watch_lock);
	for (unsigned k = 0; k < watch_ntop && len < sizeof(line); k++) {
		const struct watch_wait *w = &watch_top[k];
		int r = snprintf(line + len, sizeof(line) - len,
				 "%sbuffer %u (%llu MiB, %s) %llu ms from +%llu ms", k ? "; " : "",
				 w->buf, (unsigned long long)(w->size >> 20),
				 w->started ? "begun" : "not begun", (unsigned long long)(w->us / 1000),
				 (unsigned long long)((w->from_ns - reattached_ns) / 1000000));

		if (r < 0)
			break;
		len += (size_t)r;
	}
	pthread_mutex_unlock(&watch_lock);
	if (watch_ntop)
		phos_dbg("gpu: the longest waits for one buffer (after the reattach, the loader's "
			 "state when the wait began): %s", line);
}

uint64_t phos_watch_begin(void)
{
	uint64_t now = phos_now_ns();

	return now ? now : 1;
}

void phos_watch_end(uint64_t t0)
{
	uint64_t now = phos_now_ns(), us = (now - t0) / 1000;
	int left = __atomic_sub_fetch(&phos_watch_left, 1, __ATOMIC_ACQ_REL);

	if (left < 0)
		return;		/* another thread took the last one */
	__atomic_add_fetch(&watch_in_us, us, __ATOMIC_RELAXED);
	if (us >= 1000)
		__atomic_add_fetch(&watch_slow, 1, __ATOMIC_RELAXED);
	for (uint64_t m = __atomic_load_n(&watch_max_us, __ATOMIC_RELAXED); us > m &&
	     !__atomic_compare_exchange_n(&watch_max_us, &m, us, false, __ATOMIC_RELAXED,
					  __ATOMIC_RELAXED);)
		;
	if (left == PHOS_WATCH_LAUNCHES - 1)
		phos_dbg("gpu: first kernel launch %llu ms after the reattach; the call took %llu ms "
			 "(waits for buffers included)",
			 (unsigned long long)((t0 - reattached_ns) / 1000000),
			 (unsigned long long)(us / 1000));
	if (left == 0)
		phos_dbg("gpu: the first %d kernel launches after the reattach: the last %llu ms "
			 "after it; %llu ms inside the launch calls (%u took 1 ms or more, the "
			 "longest %llu ms); CUDA calls waited %llu ms for %u buffer(s) still loading",
			 PHOS_WATCH_LAUNCHES, (unsigned long long)((now - reattached_ns) / 1000000),
			 (unsigned long long)(__atomic_load_n(&watch_in_us, __ATOMIC_RELAXED) / 1000),
			 __atomic_load_n(&watch_slow, __ATOMIC_RELAXED),
			 (unsigned long long)(__atomic_load_n(&watch_max_us, __ATOMIC_RELAXED) / 1000),
			 (unsigned long long)(__atomic_load_n(&phos_watch_waited_us, __ATOMIC_RELAXED) / 1000),
			 __atomic_load_n(&phos_watch_waits, __ATOMIC_RELAXED));
	if (left == 0)
		watch_top_line();
}

static void reattach(void)
{
	static struct phos_gpubuf bufs[PHOS_GPUBUF_MAX];
	struct phos_msg *m, *r = NULL;
	const void *blob = NULL;
	size_t len = 0;
	uint64_t tab = UINT64_MAX;
	char msg[256] = "no answer from phosd";
	int n = -1;

	if (!phos_vmm_detached()) {
		phos_dbg("gpu: REATTACH without a detach: ignored");
		return;
	}
	m = phos_msg_new(PHOS_MSG_GPU_REATTACH, 1);
	/* the buffers, one fd each, and with a concurrent save under way its
	 * table as one more fd (PHOS_A_SAVETAB: its index) */
	if (m && exchange(m, NULL, 0, &r) == 0 &&
	    phos_msg_get_blob(r, PHOS_A_GPUBUFS, &blob, &len) == 0 &&
	    len % PHOS_GPUBUF_LEN == 0 &&
	    (phos_msg_get_u64(r, PHOS_A_SAVETAB, &tab) < 0 || tab == len / PHOS_GPUBUF_LEN) &&
	    (int)(len / PHOS_GPUBUF_LEN) + (tab != UINT64_MAX) == r->nfds) {
		n = (int)(len / PHOS_GPUBUF_LEN);
		for (int i = 0; i < n; i++)
			phos_gpubuf_get((const uint8_t *)blob + (size_t)i * PHOS_GPUBUF_LEN, &bufs[i]);
		if (phos_vmm_reattach(bufs, r->fds, n, msg, sizeof(msg)) < 0) {
			n = -1;
		} else if (tab != UINT64_MAX && phos_cow_begin(r->fds[n], bufs, n) < 0) {
			/* a write may then reach a buffer before it is saved:
			 * the helper's hash check finds it and phosd takes
			 * the checkpoint again, stop-the-world */
			phos_dbg("gpu: the save table phosd sent is unusable: running on "
				 "without it");
		}
	} else if (r) {
		const char *why;

		if (phos_msg_get_str(r, PHOS_A_MSG, &why) == 0)
			snprintf(msg, sizeof(msg), "%s", why);
		else
			snprintf(msg, sizeof(msg), "malformed answer from phosd");
	}
	phos_msg_free(m);
	phos_msg_free(r);	/* closes the received fds: the mappings hold the memory */
	if (n < 0) {
		fprintf(stderr, "libphos: cannot get the GPU memory back from phosd: %s; aborting\n",
			msg);
		abort();
	}
	PHOS_COUNT(reattaches, 1);
	phos_dbg("gpu: %d buffer(s) reattached%s; CUDA calls go on", n,
		 phos_cow_active() ? " while phosd saves them" : "");
	if (phos_env.debug) {
		reattached_ns = phos_now_ns();
		watch_in_us = watch_max_us = phos_watch_waited_us = 0;
		watch_slow = phos_watch_waits = 0;
		pthread_mutex_lock(&watch_lock);
		watch_ntop = 0;
		pthread_mutex_unlock(&watch_lock);
		__atomic_store_n(&watch_said, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&phos_watch_left, PHOS_WATCH_LAUNCHES, __ATOMIC_RELEASE);
	}
	phos_gate_open();
}

/* A detach is coming: rank the buffers by first use until then. */
static void rank(void)
{
	if (phos_vmm_detached())
		return;
	if (phos_cow_rank_begin() == 0)
		phos_dbg("gpu: ranking the GPU buffers by first use until the detach");
	else
		phos_dbg("gpu: no ranking before the detach (a save or load under way, or no "
			 "buffers)");
}

void phos_gpuctl(int sigval)
{
	int saved = errno;

	if (sigval == PHOS_SIGVAL_DETACH)
		detach();
	else if (sigval == PHOS_SIGVAL_REATTACH)
		reattach();
	else if (sigval == PHOS_SIGVAL_RANK)
		rank();
	errno = saved;
}
