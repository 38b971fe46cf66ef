/*
 * ctl.c - what libphos does when SIGTERM arrives (PHOS_CHECKPOINT=1):
 * ask phosd for a preemption checkpoint (doc/protocol.md, "Slurm flow").
 *
 *   SIGTERM ──> libphos thread: phos_on_sigterm()
 *     1. connect to $PHOS_SOCKET, send CHECKPOINT {PID, FLAGS=PREEMPT} and
 *        close at once (CRIU cannot dump a stream socket whose peer,
 *        phosd, is outside the tree; phosd takes the pid from SO_PEERCRED);
 *     2. wait for SIGRTMIN+PHOS_SIGNAL_OFFSET (signal.c's handler forwards
 *        it through the self-pipe, whichever thread the kernel picked):
 *          PHOS_SIGVAL_PROCEED  no checkpoint (scancel, time limit,
 *                               failure): the app's SIGTERM disposition,
 *                               as if libphos were not there;
 *          PHOS_SIGVAL_RESTORED we are the restored copy: carry on;
 *          PHOS_SIGVAL_HOLD     the checkpoint is safe and we are the old
 *                               copy: phosd queued it to every thread while
 *                               the tree was stopped, so a SIGCONT from
 *                               Slurm runs signal.c's handler, which never
 *                               returns, before any app code; we wait for
 *                               Slurm's SIGKILL (Slurm 22.05 requeues only
 *                               a job that did not end by itself).
 *        Meanwhile the application keeps running until phosd's CRIU
 *        freezes it; after a successful preemption checkpoint the tree
 *        stays stopped and Slurm's SIGKILL removes it.
 *     phosd unreachable: proceed at once.  No answer within
 *     PHOS_PREEMPT_TIMEOUT seconds (default 30): proceed, unless our pid
 *     namespace changed meanwhile, which means we are a restored copy
 *     (phos-restore restores into a fresh pid namespace) whose RESTORED
 *     signal has not arrived yet: carry on.
 *
 * A forked child without exec has no libphos thread: signal.c calls
 * phos_ctl_child_sigterm() from its SIGTERM handler, which does the same
 * with async-signal-safe calls only (a pre-encoded request, sigtimedwait)
 * and blocks that child inside the handler until the answer.
 *
 * libphos links no libphoscommon: the request is encoded here with the
 * byte helpers of common/le.h (the layout and constants of common/proto.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "phos_int.h"
#include "../common/le.h"
#include "../common/proto.h"

/* signal.c <-> ctl.c (kept here: phos_int.h belongs to the interposer's owner) */
int phos_sig_next(siginfo_t *si, int timeout_ms);
void phos_ctl_prepare(void);
int phos_ctl_child_sigterm(void);
void phos_ctl_hold(void) __attribute__((noreturn));
int phos_ctl_connect(void);

#define PREEMPT_TIMEOUT_DEFAULT_S 30


static struct sockaddr_un ctl_addr;
static socklen_t ctl_addrlen;
static int ctl_ready;			/* PHOS_SOCKET usable */
static long ctl_timeout_ms = PREEMPT_TIMEOUT_DEFAULT_S * 1000L;

/* Header + FLAGS + PID: 16 + 2 * (8 + 8) bytes.  The PID is patched in
 * at send time (a forked child sends its own). */
#define REQ_LEN (PHOS_HDR_LEN + 2 * 16)
static uint8_t req_tmpl[REQ_LEN];

static uint8_t *put_attr_u64(uint8_t *p, uint16_t tag, uint64_t v)
{
	phos_le_put16(p, tag);
	phos_le_put16(p + 2, 0);
	phos_le_put32(p + 4, 8);
	phos_le_put64(p + 8, v);
	return p + 16;
}

/* Called once from phos_sig_start (normal context). */
void phos_ctl_prepare(void)
{
	const char *s = secure_getenv("PHOS_SOCKET");
	const char *t = secure_getenv("PHOS_PREEMPT_TIMEOUT");
	uint8_t *p = req_tmpl;

	if (t && *t) {
		char *end;
		double v = strtod(t, &end);

		if (end != t && *end == '\0' && v >= 0 && v < 86400)
			ctl_timeout_ms = (long)(v * 1000);
		else
			phos_dbg("PHOS_PREEMPT_TIMEOUT=%s: not a number of seconds, using %d", t,
				 PREEMPT_TIMEOUT_DEFAULT_S);
	}
	if (!s || !*s || strlen(s) >= sizeof(ctl_addr.sun_path)) {
		phos_dbg("no usable PHOS_SOCKET: SIGTERM goes to the application");
		return;
	}
	ctl_addr.sun_family = AF_UNIX;
	memcpy(ctl_addr.sun_path, s, strlen(s) + 1);
	ctl_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(s) + 1);

	phos_le_put32(p, PHOS_PROTO_MAGIC);
	phos_le_put16(p + 4, PHOS_PROTO_VERSION);
	phos_le_put16(p + 6, PHOS_MSG_CHECKPOINT);
	phos_le_put32(p + 8, REQ_LEN - PHOS_HDR_LEN);
	phos_le_put32(p + 12, 1);
	p = put_attr_u64(p + PHOS_HDR_LEN, PHOS_A_FLAGS, PHOS_F_PREEMPT);
	put_attr_u64(p, PHOS_A_PID, 0);
	ctl_ready = 1;
}

/*
 * A restored process may run on another node than the one whose phosd its
 * PHOS_SOCKET names (with per-node socket paths, as on a test cluster of
 * several slurmd on one host).  phos-restore restores into a fresh pid
 * namespace whose init (pid 1) it is, and its command line names this
 * node's phosd: "--socket PATH".  Use that when present.  Async-signal-safe.
 */
static int restorer_socket(struct sockaddr_un *a, socklen_t *len)
{
	static const char opt[] = "--socket";
	char buf[8192];
	ssize_t n = 0, r;
	int fd = open("/proc/1/cmdline", O_RDONLY | O_CLOEXEC);
	const char *p, *end, *base;

	if (fd < 0)
		return -1;
	while (n < (ssize_t)sizeof(buf) - 1 &&
	       ((r = read(fd, buf + n, sizeof(buf) - 1 - (size_t)n)) > 0 || (r < 0 && errno == EINTR)))
		if (r > 0)
			n += r;
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	end = buf + n;
	for (base = p = buf; *p; p++)	/* argv[0]'s basename */
		if (*p == '/')
			base = p + 1;
	if (strcmp(base, "phos-restore") != 0)
		return -1;
	for (p = buf + strlen(buf) + 1; p < end; p += strlen(p) + 1) {
		if (strcmp(p, opt) != 0)
			continue;
		p += strlen(p) + 1;
		if (p >= end || !*p || strlen(p) >= sizeof(a->sun_path))
			return -1;
		memset(a, 0, sizeof(*a));
		a->sun_family = AF_UNIX;
		memcpy(a->sun_path, p, strlen(p) + 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(p) + 1);
		return 0;
	}
	return -1;
}

/*
 * Send the preemption request and hang up.  Async-signal-safe.  0 if phosd
 * took it, -1 + errno.
 */
int phos_ctl_connect(void)
{
	struct sockaddr_un addr = ctl_addr;
	socklen_t addrlen = ctl_addrlen;
	int fd, err;

	if (!ctl_ready) {
		errno = ENOENT;
		return -1;
	}
	restorer_socket(&addr, &addrlen);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)&addr, addrlen) < 0) {
		err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

static int send_preempt(void)
{
	uint8_t req[REQ_LEN];
	size_t off = 0;
	int fd, err;

	memcpy(req, req_tmpl, sizeof(req));
	phos_le_put64(req + PHOS_HDR_LEN + 16 + 8, (uint64_t)getpid());
	fd = phos_ctl_connect();
	if (fd < 0)
		return -1;
	while (off < sizeof(req)) {
		ssize_t n = send(fd, req + off, sizeof(req) - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		off += (size_t)n;
	}
	/* No reply is read: phosd's REPLY finds the socket closed, and
	 * nothing of phosd is left in our tree when CRIU freezes it. */
	close(fd);
	return 0;
fail:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

/* Identity of our pid namespace; 0 on success.  Async-signal-safe. */
static int pidns_id(struct stat *sb)
{
	return stat("/proc/self/ns/pid", sb);
}

static int pidns_changed(const struct stat *before)
{
	struct stat now;

	return pidns_id(&now) == 0 && (now.st_ino != before->st_ino || now.st_dev != before->st_dev);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Never return (async-signal-safe): the old copy of a checkpointed
 * process waits for its SIGKILL. */
void phos_ctl_hold(void)
{
	for (;;)
		pause();
}

enum verdict { PROCEED, RESTORED };

/* libphos thread: ask, then wait for phosd's verdict. */
static enum verdict ask_phosd(const siginfo_t *term)
{
	struct stat ns;
	int have_ns = pidns_id(&ns) == 0;
	int64_t deadline;

	if (send_preempt() < 0) {
		phos_dbg("SIGTERM from pid %ld: cannot reach phosd at %s (%s): the application "
			 "gets its SIGTERM", (long)term->si_pid,
			 ctl_ready ? ctl_addr.sun_path : "(no PHOS_SOCKET)", strerror(errno));
		return PROCEED;
	}
	phos_dbg("SIGTERM from pid %ld: preemption checkpoint requested", (long)term->si_pid);
	deadline = now_ms() + ctl_timeout_ms;
	for (;;) {
		int64_t left = deadline - now_ms();
		siginfo_t si;
		int r = phos_sig_next(&si, left > 0 ? (left > INT32_MAX ? INT32_MAX : (int)left) : 0);

		if (r > 0 && si.si_signo == SIGRTMIN + PHOS_SIGNAL_OFFSET) {
			if (si.si_value.sival_int == PHOS_SIGVAL_RESTORED) {
				phos_dbg("restored from the preemption checkpoint: carrying on");
				return RESTORED;
			}
			if (si.si_value.sival_int == PHOS_SIGVAL_PROCEED) {
				phos_dbg("phosd: no checkpoint: the application gets its SIGTERM");
				return PROCEED;
			}
			if (si.si_value.sival_int == PHOS_SIGVAL_HOLD) {
				phos_dbg("checkpointed for preemption: holding until Slurm kills us");
				phos_ctl_hold();
			}
			continue;	/* not ours */
		}
		if (r > 0)
			continue;	/* another SIGTERM while we wait: the same request */
		if (r < 0 && errno != EINTR && errno != EAGAIN) {
			phos_dbg("waiting for phosd: %s: the application gets its SIGTERM",
				 strerror(errno));
			return PROCEED;
		}
		/* a timeout or an interruption (as after a restore) */
		if (have_ns && pidns_changed(&ns)) {
			phos_dbg("running in a new pid namespace: restored, carrying on");
			return RESTORED;
		}
		if (r == 0 && now_ms() >= deadline) {
			phos_dbg("no answer from phosd in %ld ms (PHOS_PREEMPT_TIMEOUT): the "
				 "application gets its SIGTERM", ctl_timeout_ms);
			return PROCEED;
		}
	}
}

void phos_on_sigterm(const siginfo_t *si)
{
	if (ask_phosd(si) == PROCEED)
		phos_sig_redeliver(si);
}

/*
 * A forked child's SIGTERM handler (no libphos thread there): 1 if the app
 * should get the SIGTERM, 0 if we were restored.  Only async-signal-safe
 * calls; blocks the calling thread until phosd answers.
 */
int phos_ctl_child_sigterm(void)
{
	int sig = SIGRTMIN + PHOS_SIGNAL_OFFSET;
	sigset_t set, old;
	struct stat ns;
	int have_ns = pidns_id(&ns) == 0, verdict = 1;
	int64_t deadline;

	if (send_preempt() < 0)
		return 1;
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_BLOCK, &set, &old);
	deadline = now_ms() + ctl_timeout_ms;
	for (;;) {
		int64_t left = deadline - now_ms();
		struct timespec ts;
		siginfo_t si;
		int r;

		if (left < 0)
			left = 0;
		ts.tv_sec = (time_t)(left / 1000);
		ts.tv_nsec = (long)(left % 1000) * 1000000;
		r = sigtimedwait(&set, &si, &ts);
		if (r == sig) {
			if (si.si_value.sival_int == PHOS_SIGVAL_RESTORED) {
				verdict = 0;
				break;
			}
			if (si.si_value.sival_int == PHOS_SIGVAL_PROCEED)
				break;
			if (si.si_value.sival_int == PHOS_SIGVAL_HOLD)
				phos_ctl_hold();
			continue;
		}
		if (have_ns && pidns_changed(&ns)) {
			verdict = 0;
			break;
		}
		if (r < 0 && errno == EAGAIN && now_ms() >= deadline)
			break;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return verdict;
}
