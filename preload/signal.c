/*
 * signal.c - keep SIGTERM for libphos when PHOS_CHECKPOINT=1 while the
 * application believes it installed its own disposition.
 *
 *   kernel ──SIGTERM──> on_sigterm() (ours, always installed)
 *       │ async-signal-safe: copies the siginfo into a self-pipe
 *       v
 *   libphos thread (all signals blocked) ──> phos_on_sigterm() (ctl.c)
 *       └─> phos_sig_redeliver(): the app's disposition, as without us:
 *           SIG_IGN: nothing; SIG_DFL: restore SIG_DFL and re-send, the
 *           process dies of SIGTERM; a handler: re-send SIGTERM to the
 *           process with a "pass through" flag set, so that on_sigterm()
 *           runs the app's handler in signal context on an app thread,
 *           with the original siginfo and the app's sa_mask/SA_RESETHAND.
 *
 * sigaction(SIGTERM) and signal(SIGTERM) read and write the app's view
 * (app_act) only.  Without PHOS_CHECKPOINT=1 both pass straight through.
 * phosd's answer (SIGRTMIN+PHOS_SIGNAL_OFFSET) is caught by on_phos_rt()
 * on whatever thread and forwarded through the same pipe (phos_sig_next).
 * A forked child has no libphos thread: there on_sigterm() asks phosd
 * itself (phos_ctl_child_sigterm, async-signal-safe) and then applies the
 * app's disposition unless it was restored.
 *
 * Limits: sigset/bsd_signal/sysv_signal and raw rt_sigaction syscalls are
 * not wrapped; an app that blocks SIGTERM everywhere and sigwait()s for
 * it never reaches on_sigterm(); app_act is read without a lock (the
 * wrappers may be called from a signal handler, so none may lock).
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "phos_int.h"
#include "../common/proto.h"

/* signal.c <-> ctl.c (see ctl.c) */
int phos_sig_next(siginfo_t *si, int timeout_ms);
void phos_ctl_prepare(void);
int phos_ctl_child_sigterm(void);
void phos_ctl_hold(void) __attribute__((noreturn));

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
typedef sighandler_t (*signal_fn)(int, sighandler_t);

static sigaction_fn real_sigaction;
static signal_fn real_signal;

static struct sigaction app_act;	/* the app's view of SIGTERM */
static int active;			/* our handler owns SIGTERM */
static int passthrough;			/* next SIGTERM is for the app */
static siginfo_t pass_info;		/* ... with this siginfo */
static pid_t owner;			/* process that runs the thread */
static int sig_pipe[2] = { -1, -1 };

void phos_sig_resolve(void)
{
	if (!__atomic_load_n(&real_sigaction, __ATOMIC_ACQUIRE))
		__atomic_store_n(&real_sigaction,
				 (sigaction_fn)phos_real_dlsym(RTLD_NEXT, "sigaction"),
				 __ATOMIC_RELEASE);
	if (!__atomic_load_n(&real_signal, __ATOMIC_ACQUIRE))
		__atomic_store_n(&real_signal, (signal_fn)phos_real_dlsym(RTLD_NEXT, "signal"),
				 __ATOMIC_RELEASE);
}

static int do_real_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	sigaction_fn f = __atomic_load_n(&real_sigaction, __ATOMIC_ACQUIRE);

	if (!f) {
		phos_sig_resolve();	/* before our constructor ran */
		f = __atomic_load_n(&real_sigaction, __ATOMIC_ACQUIRE);
	}
	if (!f) {
		errno = ENOSYS;
		return -1;
	}
	return f(sig, act, old);
}

/* Run the app's disposition for a SIGTERM in signal context. */
static void call_app(int sig, siginfo_t *si, void *uc)
{
	struct sigaction act = app_act;
	sigset_t old;

	if (!(act.sa_flags & SA_SIGINFO) && act.sa_handler == SIG_IGN)
		return;
	if (!(act.sa_flags & SA_SIGINFO) && act.sa_handler == SIG_DFL) {
		struct sigaction dfl = { .sa_handler = SIG_DFL };

		__atomic_store_n(&active, 0, __ATOMIC_SEQ_CST);
		do_real_sigaction(sig, &dfl, NULL);
		/* pending until this handler returns and unblocks it */
		kill(getpid(), sig);
		return;
	}
	if (act.sa_flags & SA_RESETHAND) {
		app_act.sa_handler = SIG_DFL;
		app_act.sa_flags &= ~SA_SIGINFO;
	}
	pthread_sigmask(SIG_BLOCK, &act.sa_mask, &old);
	if (act.sa_flags & SA_SIGINFO)
		act.sa_sigaction(sig, si, uc);
	else
		act.sa_handler(sig);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void on_sigterm(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;

	if (__atomic_exchange_n(&passthrough, 0, __ATOMIC_SEQ_CST)) {
		siginfo_t info = pass_info;

		call_app(sig, &info, uc);
	} else if (getpid() != owner) {
		/* a forked child (no thread): ask phosd from here */
		if (phos_ctl_child_sigterm())
			call_app(sig, si, uc);
	} else if (write(sig_pipe[1], si, sizeof(*si)) != (ssize_t)sizeof(*si)) {
		/* a full pipe: as without us */
		call_app(sig, si, uc);
	}
	errno = saved;
}

/*
 * phosd's (or phos-restore's) answer, SIGRTMIN+PHOS_SIGNAL_OFFSET: to the
 * libphos thread through the pipe, whichever thread the kernel chose.  In
 * a forked child it is consumed by sigtimedwait in phos_ctl_child_sigterm;
 * one arriving at any other time (a restore from a periodic checkpoint
 * wakes every libphos process) is dropped.
 */
static void on_phos_rt(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;

	(void)sig;
	(void)uc;
	if (getpid() == owner)
		(void)!write(sig_pipe[1], si, sizeof(*si));
	/* HOLD: this thread of the checkpointed old copy runs no more app code */
	if (si->si_code == SI_QUEUE && si->si_value.sival_int == PHOS_SIGVAL_HOLD)
		phos_ctl_hold();
	errno = saved;
}

/* phosd's GPU RANK/DETACH/REATTACH: handled on the libphos thread wherever
 * it reads the pipe (gpuctl.c).  True if si was one. */
static bool gpu_signal(const siginfo_t *si)
{
	if (si->si_signo != SIGRTMIN + PHOS_SIGNAL_OFFSET || si->si_code != SI_QUEUE ||
	    (si->si_value.sival_int != PHOS_SIGVAL_DETACH &&
	     si->si_value.sival_int != PHOS_SIGVAL_REATTACH &&
	     si->si_value.sival_int != PHOS_SIGVAL_RANK))
		return false;
	phos_gpuctl(si->si_value.sival_int);
	return true;
}

/* Next signal forwarded to the libphos thread: 1, 0 on timeout, -1 + errno.
 * GPU requests met meanwhile are handled, not returned. */
int phos_sig_next(siginfo_t *si, int timeout_ms)
{
	struct pollfd p = { .fd = sig_pipe[0], .events = POLLIN };

	for (;;) {
		int r = poll(&p, 1, timeout_ms);
		ssize_t n;

		if (r <= 0)
			return r;
		n = read(sig_pipe[0], si, sizeof(*si));
		if (n != (ssize_t)sizeof(*si)) {
			if (n >= 0)
				errno = EPIPE;
			return -1;
		}
		if (!gpu_signal(si))
			return 1;
	}
}

void phos_sig_redeliver(const siginfo_t *si)
{
	struct sigaction act = app_act;

	if (!(act.sa_flags & SA_SIGINFO) && act.sa_handler == SIG_IGN)
		return;
	if (!(act.sa_flags & SA_SIGINFO) && act.sa_handler == SIG_DFL) {
		struct sigaction dfl = { .sa_handler = SIG_DFL };

		__atomic_store_n(&active, 0, __ATOMIC_SEQ_CST);
		do_real_sigaction(SIGTERM, &dfl, NULL);
		kill(getpid(), SIGTERM);
		return;
	}
	pass_info = *si;
	__atomic_store_n(&passthrough, 1, __ATOMIC_SEQ_CST);
	kill(getpid(), SIGTERM);
}

static void *sig_thread(void *arg)
{
	siginfo_t si;

	(void)arg;
	for (;;) {
		ssize_t n = read(sig_pipe[0], &si, sizeof(si));

		if (n == (ssize_t)sizeof(si) && si.si_signo == SIGTERM) {
			phos_on_sigterm(&si);
			PHOS_COUNT(sigterms, 1);
		} else if (n == (ssize_t)sizeof(si)) {
			gpu_signal(&si);
		} else if (n == 0 || (n < 0 && errno != EINTR)) {
			break;
		}
	}
	return NULL;
}

int phos_sig_start(void)
{
	struct sigaction ours = { .sa_sigaction = on_sigterm, .sa_flags = SA_SIGINFO | SA_RESTART };
	struct sigaction rt = { .sa_sigaction = on_phos_rt, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigset_t all, old;
	pthread_attr_t attr;
	pthread_t tid;
	int r;

	if (pipe2(sig_pipe, O_CLOEXEC) < 0)
		return -1;
	if (fcntl(sig_pipe[1], F_SETFL, O_NONBLOCK) < 0)
		goto fail;
	owner = getpid();
	phos_ctl_prepare();
	sigemptyset(&ours.sa_mask);
	sigemptyset(&rt.sa_mask);
	if (do_real_sigaction(SIGTERM, NULL, &app_act) < 0)
		goto fail;
	/* the thread blocks every signal: SIGTERM goes to app threads */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	r = pthread_create(&tid, &attr, sig_thread, NULL);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		errno = r;
		goto fail;
	}
	/* before SIGTERM is ours: phosd's answer must never kill us */
	if (do_real_sigaction(SIGRTMIN + PHOS_SIGNAL_OFFSET, &rt, NULL) < 0)
		return -1;	/* the thread stays, idle */
	__atomic_store_n(&active, 1, __ATOMIC_SEQ_CST);
	if (do_real_sigaction(SIGTERM, &ours, NULL) < 0) {
		__atomic_store_n(&active, 0, __ATOMIC_SEQ_CST);
		return -1;	/* the thread stays, idle */
	}
	phos_dbg("SIGTERM caught for checkpointing");
	return 0;
fail:
	r = errno;
	close(sig_pipe[0]);
	close(sig_pipe[1]);
	sig_pipe[0] = sig_pipe[1] = -1;
	errno = r;
	return -1;
}

PHOS_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	if (sig == SIGTERM && __atomic_load_n(&active, __ATOMIC_SEQ_CST)) {
		if (old)
			*old = app_act;
		if (act)
			app_act = *act;
		return 0;
	}
	return do_real_sigaction(sig, act, old);
}

PHOS_EXPORT sighandler_t signal(int sig, sighandler_t handler)
{
	signal_fn f;

	if (sig == SIGTERM && __atomic_load_n(&active, __ATOMIC_SEQ_CST)) {
		/* glibc's signal(): BSD semantics */
		struct sigaction act = { .sa_handler = handler, .sa_flags = SA_RESTART };
		struct sigaction old;

		if (handler == SIG_ERR) {
			errno = EINVAL;
			return SIG_ERR;
		}
		sigemptyset(&act.sa_mask);
		sigaddset(&act.sa_mask, sig);
		old = app_act;
		app_act = act;
		return (old.sa_flags & SA_SIGINFO) ? (sighandler_t)(void *)old.sa_sigaction
						    : old.sa_handler;
	}
	f = __atomic_load_n(&real_signal, __ATOMIC_ACQUIRE);
	if (!f) {
		phos_sig_resolve();
		f = __atomic_load_n(&real_signal, __ATOMIC_ACQUIRE);
	}
	if (!f) {
		errno = ENOSYS;
		return SIG_ERR;
	}
	return f(sig, handler);
}
