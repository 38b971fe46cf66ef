/*
 * gpu.c - phosd holds a process's large GPU buffers across a checkpoint
 * (gpu.h, doc/protocol.md "GPU memory: detach and reattach").
 *
 * One pending request per pid in `slots`: a checkpoint thread adds it,
 * signals the process and waits on `cond`; the client thread serving the
 * process's GPU_DETACH / GPU_REATTACH finds it by SO_PEERCRED pid,
 * completes it and wakes the waiter.  A request the waiter gave up on is
 * gone from the table, so a late message is refused and libphos keeps
 * (or maps again) its own buffers.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gpu.h"
#include "log.h"
#include "manifest.h"
#include "proc.h"
#include "stage.h"
#include "savetab.h"
#include "server.h"
#include "util.h"

enum slot_state { WAIT_DETACH, DETACHED, REFUSED, OFFERED, TAKEN };

struct slot {
	pid_t pid;
	enum slot_state st;
	struct gpu_hold *h;
	bool imported;		/* REFUSED by a process holding imported memory */
	char msg[256];
	struct slot *next;
};

/* Processes phosd handed buffers to: their memory is imported, which the
 * driver checkpoint cannot restore, so they never go stop-the-world. */
#define GIVEN_MAX 1024
static pid_t given[GIVEN_MAX];

static void given_add(pid_t pid)
{
	size_t free_i = GIVEN_MAX;

	for (size_t i = 0; i < GIVEN_MAX; i++) {
		if (given[i] == pid)
			return;
		if (free_i == GIVEN_MAX && (given[i] == 0 || kill(given[i], 0) < 0))
			free_i = i;	/* empty, or its process is gone */
	}
	if (free_i < GIVEN_MAX)
		given[free_i] = pid;
}

static bool given_has(pid_t pid)
{
	for (size_t i = 0; i < GIVEN_MAX; i++)
		if (given[i] == pid)
			return true;
	return false;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct slot *slots;

void gpu_hold_init(struct gpu_hold *h)
{
	memset(h, 0, sizeof(*h));
	for (int i = 0; i < PHOS_GPUBUF_MAX; i++)
		h->fds[i] = -1;
	h->tab_fd = -1;
}

void gpu_hold_release(struct gpu_hold *h)
{
	for (int i = 0; i < h->n; i++)
		phos_closep(&h->fds[i]);
	phos_closep(&h->tab_fd);
	h->n = 0;
	h->bytes = 0;
}

static struct slot *slot_find(pid_t pid, enum slot_state st)
{
	for (struct slot *s = slots; s; s = s->next)
		if (s->pid == pid && s->st == st)
			return s;
	return NULL;
}

static void slot_remove(struct slot *x)
{
	for (struct slot **p = &slots; *p; p = &(*p)->next)
		if (*p == x) {
			*p = x->next;
			return;
		}
}

/* Signal pid with value, wait (lock held) while s->st == from. */
static int post_and_wait(struct slot *s, int value, enum slot_state from, unsigned timeout_ms)
{
	union sigval v = { .sival_int = value };
	struct timespec end;
	int r = 0;

	if (sigqueue(s->pid, SIGRTMIN + PHOS_SIGNAL_OFFSET, v) < 0)
		return -1;
	/* a quarter second at a time: a process that dies meanwhile (killed
	 * by Slurm at a requeue) ends the wait, not the timeout */
	for (unsigned waited = 0; s->st == from && waited < timeout_ms; waited += 250) {
		phos_deadline(&end, timeout_ms - waited < 250 ? timeout_ms - waited : 250);
		while (s->st == from && r == 0)
			r = pthread_cond_timedwait(&cond, &lock, &end);
		r = 0;
		if (s->st == from && !proc_alive(s->pid)) {
			errno = ESRCH;
			return -1;
		}
	}
	if (s->st == from) {
		errno = ETIMEDOUT;
		return -1;
	}
	return 0;
}

/* The detach of a process holding imported memory failed: e says why;
 * the checkpoint must fail rather than publish an image the driver
 * could not restore. */
static int no_fallback(pid_t pid, struct phos_err *e)
{
	char why[sizeof(e->msg)];

	snprintf(why, sizeof(why), "%s", e->msg);
	return phos_errnof(e, EIO, "%s; its GPU memory was handed back by an earlier checkpoint or "
			   "restore, which the NVIDIA driver's checkpoint cannot save: no checkpoint "
			   "(pid %d keeps running)", why, (int)pid);
}

int gpu_rank(pid_t pid)
{
	union sigval v = { .sival_int = PHOS_SIGVAL_RANK };

	return sigqueue(pid, SIGRTMIN + PHOS_SIGNAL_OFFSET, v);
}

int gpu_detach(pid_t pid, unsigned timeout_ms, struct gpu_hold *h, struct phos_err *e)
{
	struct slot s = { .pid = pid, .st = WAIT_DETACH, .h = h };
	int rc;

	gpu_hold_init(h);
	h->pid = pid;
	pthread_mutex_lock(&lock);
	if (slot_find(pid, WAIT_DETACH) || slot_find(pid, OFFERED)) {
		pthread_mutex_unlock(&lock);
		return phos_errnof(e, EBUSY, "another GPU detach or reattach of pid %d is under way",
				   (int)pid) + 1;
	}
	s.next = slots;
	slots = &s;
	bool imported = given_has(pid);
	if (post_and_wait(&s, PHOS_SIGVAL_DETACH, WAIT_DETACH, timeout_ms) < 0) {
		int err = errno;

		slot_remove(&s);
		pthread_mutex_unlock(&lock);
		phos_errnof(e, err, "libphos of pid %d did not hand its GPU buffers over (%s)",
			    (int)pid, err == ETIMEDOUT ? "no answer" : strerror(err));
		return imported ? no_fallback(pid, e) : 0;
	}
	slot_remove(&s);
	pthread_mutex_unlock(&lock);
	if (s.st == REFUSED) {
		phos_errf(e, "libphos of pid %d: %s", (int)pid, s.msg);
		return imported || s.imported ? no_fallback(pid, e) : 0;
	}
	rc = h->n > 0;
	if (!rc)
		phos_errf(e, "pid %d has no large GPU buffers", (int)pid);
	return rc;
}

int gpu_reattach(struct gpu_hold *h, pid_t pid, unsigned timeout_ms, struct phos_err *e)
{
	struct slot s = { .pid = pid, .st = OFFERED, .h = h };
	int rc = 0;

	pthread_mutex_lock(&lock);
	s.next = slots;
	slots = &s;
	if (post_and_wait(&s, PHOS_SIGVAL_REATTACH, OFFERED, timeout_ms) < 0)
		rc = phos_errnof(e, errno, "pid %d did not take its GPU buffers back: %s", (int)pid,
				 errno == ETIMEDOUT ? "no answer" : strerror(errno));
	else if (s.st != TAKEN)
		rc = phos_errf(e, "pid %d could not take its GPU buffers back: %s", (int)pid, s.msg);
	slot_remove(&s);
	pthread_mutex_unlock(&lock);
	return rc;
}

/* The GPUBUFS records of m, checked against its fds; -1 with msg. */
/* The buffers of a GPU_DETACH into h; with_table: an offer may add a
 * concurrent load's table as one more fd (PHOS_A_SAVETAB: its index). */
static int parse_bufs(struct phos_msg *m, struct gpu_hold *h, bool with_table, char *msg,
		      size_t len)
{
	const void *blob;
	size_t n;
	uint64_t tab = UINT64_MAX;
	int nb = m->nfds;

	if (with_table && phos_msg_get_u64(m, PHOS_A_SAVETAB, &tab) == 0)
		nb--;
	if (phos_msg_get_blob(m, PHOS_A_GPUBUFS, &blob, &n) < 0 || n % PHOS_GPUBUF_LEN ||
	    n / PHOS_GPUBUF_LEN != (size_t)nb || nb < 0 ||
	    (tab != UINT64_MAX && tab != (uint64_t)nb)) {
		snprintf(msg, len, "malformed GPU_DETACH (%zu record bytes for %d fds)", n, m->nfds);
		return -1;
	}
	if (tab != UINT64_MAX) {
		h->tab_fd = m->fds[nb];	/* handed on with the buffers */
		m->fds[nb] = -1;
	}
	h->n = nb;
	h->bytes = 0;
	for (int i = 0; i < h->n; i++) {
		phos_gpubuf_get((const uint8_t *)blob + (size_t)i * PHOS_GPUBUF_LEN, &h->bufs[i]);
		h->fds[i] = m->fds[i];	/* ours now */
		m->fds[i] = -1;
		h->bytes += h->bufs[i].size;
	}
	m->nfds = 0;
	return 0;
}

/* phos-restore (root) offers buffers it loaded for the restored PID. */
static void offer(struct client *c, struct phos_msg *req, pid_t pid)
{
	struct phos_err e = { 0 };
	struct gpu_hold *h = malloc(sizeof(*h));
	char msg[256];

	if (!h) {
		client_reply(c, req->seq, ENOMEM, "out of memory");
		return;
	}
	gpu_hold_init(h);
	if (parse_bufs(req, h, true, msg, sizeof(msg)) < 0) {
		client_reply(c, req->seq, EBADMSG, "%s", msg);
	} else if (gpu_reattach(h, pid, 60000, &e) < 0) {
		log_err("GPU buffers for restored pid %d: %s", (int)pid, e.msg);
		client_reply(c, req->seq, EIO, "%s", e.msg);
	} else {
		log_info("restored pid %d took its %d GPU buffer(s) (%" PRIu64 " bytes)", (int)pid,
			 h->n, h->bytes);
		client_reply(c, req->seq, 0, NULL);
	}
	gpu_hold_release(h);
	free(h);
}

void handle_gpu_detach(struct client *c, struct phos_msg *req)
{
	uint64_t err = 0, v;
	struct slot *s;
	const char *why = NULL;
	bool answered = false;

	if (c->remote) {
		client_reply(c, req->seq, EPERM, "GPU buffers are handed over on the local socket only");
		return;
	}
	if (c->uid == 0 && phos_msg_get_u64(req, PHOS_A_PID, &v) == 0 && (pid_t)v != c->pid) {
		offer(c, req, (pid_t)v);
		return;
	}
	phos_msg_get_u64(req, PHOS_A_ERRNO, &err);
	pthread_mutex_lock(&lock);
	s = slot_find(c->pid, WAIT_DETACH);
	if (!s) {
		pthread_mutex_unlock(&lock);
		client_reply(c, req->seq, EAGAIN, "no GPU detach of pid %d is under way",
			     (int)c->pid);
		return;
	}
	if (err) {
		uint64_t fl = 0;

		phos_msg_get_str(req, PHOS_A_MSG, &why);
		phos_msg_get_u64(req, PHOS_A_FLAGS, &fl);
		snprintf(s->msg, sizeof(s->msg), "%s", why ? why : strerror((int)err));
		s->imported = (fl & PHOS_F_GPU_IMPORTED) != 0;
		s->st = REFUSED;
	} else if (parse_bufs(req, s->h, false, s->msg, sizeof(s->msg)) < 0) {
		s->st = REFUSED;
	} else {
		/* answered under the lock: the waiter must not run the driver
		 * checkpoint before libphos has its answer */
		answered = true;
		if (client_reply(c, req->seq, 0, NULL) == 0) {
			s->st = DETACHED;
		} else {
			/* libphos maps its own copies again: we must not keep ours */
			gpu_hold_release(s->h);
			snprintf(s->msg, sizeof(s->msg),
				 "the answer to its GPU_DETACH could not be sent");
			s->st = REFUSED;
		}
	}
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	if (!answered)
		client_reply(c, req->seq, 0, NULL);
}

void handle_gpu_reattach(struct client *c, struct phos_msg *req)
{
	static uint8_t blob[PHOS_GPUBUF_MAX * PHOS_GPUBUF_LEN];
	struct phos_msg *m;
	struct slot *s;
	int r = -1;

	pthread_mutex_lock(&lock);
	s = c->remote ? NULL : slot_find(c->pid, OFFERED);
	if (!s) {
		pthread_mutex_unlock(&lock);
		client_reply(c, req->seq, ENOENT, "phosd holds no GPU buffers for pid %d",
			     (int)c->pid);
		return;
	}
	static int fds[PHOS_GPUBUF_MAX + 1];
	int n = s->h->n;

	for (int i = 0; i < n; i++) {
		phos_gpubuf_put(blob + (size_t)i * PHOS_GPUBUF_LEN, &s->h->bufs[i]);
		fds[i] = s->h->fds[i];
	}
	/* a concurrent save under way: its table rides along as the last fd
	 * (gpu_save_start() leaves room for it) */
	bool tab = s->h->tab_fd >= 0 && n < PHOS_MAX_FDS;

	if (tab)
		fds[n] = s->h->tab_fd;
	m = phos_reply_new(req->seq, 0, NULL);
	if (m && phos_msg_put_blob(m, PHOS_A_GPUBUFS, blob, (size_t)n * PHOS_GPUBUF_LEN) == 0 &&
	    (!tab || phos_msg_put_u64(m, PHOS_A_SAVETAB, (uint64_t)n) == 0))
		r = phos_msg_send(c->fd, m, fds, n + tab);
	phos_msg_free(m);
	if (r == 0) {
		s->st = TAKEN;
		given_add(c->pid);
	} else {
		snprintf(s->msg, sizeof(s->msg), "sending the buffers failed: %s", strerror(errno));
		s->st = REFUSED;
	}
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
}

void gpu_save_init(struct gpu_save *sv)
{
	memset(sv, 0, sizeof(*sv));
	sv->pid = -1;
	sv->err_fd = -1;
	sv->tab_fd = -1;
	sv->out_fd = -1;
}

/* The save table of a concurrent save of n buffers; -1 + e. */
static int table_create(struct gpu_save *sv, uint32_t n, struct phos_err *e)
{
	sv->tab = phos_savetab_create(n, PHOS_SAVETAB_SAVE, &sv->tab_fd);
	return sv->tab ? 0 : phos_errf(e, "save table: %s", strerror(errno));
}

/* Whatever became of the helper, the save is over for the process: no
 * waiter may sleep on the table any longer. */
static void table_close(struct gpu_save *sv)
{
	if (sv->tab) {
		phos_savetab_end(sv->tab);
		munmap(sv->tab, phos_savetab_size(sv->tab->n));
		sv->tab = NULL;
	}
	phos_closep(&sv->tab_fd);
}

/* One line of the helper's stdout (without the newline), "" at EOF. */
static void read_line(int fd, char *line, size_t size)
{
	size_t n = 0;
	ssize_t r;

	while (n < size - 1 && ((r = read(fd, line + n, 1)) > 0 || (r < 0 && errno == EINTR))) {
		if (r > 0 && line[n++] == '\n') {
			n--;
			break;
		}
	}
	line[n] = '\0';
}

int gpu_save_start(struct gpu_hold *h, int dir_fd, pid_t tag, unsigned how, int stage_fd,
		   uint64_t stage_off, const struct stage_cuda *cuda, uint64_t sums_key,
		   struct gpu_save *sv, struct phos_err *e)
{
	char tagstr[32], line[64] = "", tabarg[16] = "", stagearg[48] = "", cudaarg[64] = "";
	char keyenv[PHOS_GPU_SUMS_KEY_ENV_LEN], **env = NULL;
	unsigned ncuda = stage_fd >= 0 && cuda && cuda->fd ? cuda->n : 0;
	int in[2] = { -1, -1 }, outp[2] = { -1, -1 }, errp[2] = { -1, -1 };
	pid_t c;

	gpu_save_init(sv);
	sv->h = h;
	sv->n = h->n;
	sv->bytes = h->bytes;
	sv->tag = tag;
	sv->t0 = phos_now_ms();
	snprintf(tagstr, sizeof(tagstr), "%d", (int)tag);
	bool concurrent = (how & 0xff) != 0;
	unsigned zstd = (how >> 8) & 0xff;
	char zarg[8];

	snprintf(zarg, sizeof(zarg), "%u", zstd);

	if ((how & GPU_SAVE_COW) && h->n < PHOS_GPUBUF_MAX) {
		if (table_create(sv, (uint32_t)h->n, e) < 0)
			goto fail;
		snprintf(tabarg, sizeof(tabarg), "%d", 3 + h->n);
	}
	/* the pool goes to the fd after the table's place */
	if (stage_fd >= 0)
		snprintf(stagearg, sizeof(stagearg), "%d:%" PRIu64, 4 + h->n, stage_off);
	/* a driver-pinned pool's pieces after it */
	if (ncuda)
		stage_cuda_arg(cudaarg, sizeof(cudaarg), 5 + h->n, cuda);
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		phos_errf(e, "pipe: %s", strerror(errno));
		goto fail;
	}
	/* the key in the helper's environment (root's only to read), not in
	 * its arguments (anyone's) */
	if (sums_key) {
		phos_gpumem_key_env(sums_key, keyenv);
		if (!(env = phos_env_with(keyenv))) {
			phos_errf(e, "out of memory");
			goto fail;
		}
	}
	c = fork();
	if (c < 0) {
		phos_errf(e, "fork: %s", strerror(errno));
		goto fail;
	}
	if (c == 0) {
		sigset_t none;
		int base = 8 + PHOS_GPUBUF_MAX + STAGE_CUDA_MAX;
		int moved[PHOS_GPUBUF_MAX], cmoved[STAGE_CUDA_MAX];

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* move everything out of 3..3+n first, then into place */
		int din = fcntl(in[0], F_DUPFD, base), dout = fcntl(outp[1], F_DUPFD, base),
		    derr = fcntl(errp[1], F_DUPFD, base), ddir = fcntl(dir_fd, F_DUPFD, base);

		int dtab = sv->tab_fd >= 0 ? fcntl(sv->tab_fd, F_DUPFD, base) : -1;
		int dstage = stage_fd >= 0 ? fcntl(stage_fd, F_DUPFD, base) : -1;

		for (int i = 0; i < h->n; i++)
			moved[i] = fcntl(h->fds[i], F_DUPFD, base);
		for (unsigned i = 0; i < ncuda; i++)
			cmoved[i] = fcntl(cuda->fd[i], F_DUPFD, base);
		if (din < 0 || dout < 0 || derr < 0 || ddir < 0 || dup2(din, 0) < 0 ||
		    dup2(dout, 1) < 0 || dup2(derr, 2) < 0 || fchdir(ddir) < 0 ||
		    (sv->tab_fd >= 0 && (dtab < 0 || dup2(dtab, 3 + h->n) < 0)) ||
		    (stage_fd >= 0 && (dstage < 0 || dup2(dstage, 4 + h->n) < 0)))
			_exit(127);
		for (int i = 0; i < h->n; i++)
			if (moved[i] < 0 || dup2(moved[i], 3 + i) < 0)
				_exit(127);
		for (unsigned i = 0; i < ncuda; i++)
			if (cmoved[i] < 0 || dup2(cmoved[i], 5 + h->n + (int)i) < 0)
				_exit(127);
		char *args[14];
		int k = 0;

		args[k++] = "phos-gpu";
		args[k++] = "save";
		args[k++] = tagstr;
		if (concurrent)
			args[k++] = "--snapshot";
		if (tabarg[0]) {
			args[k++] = "--table";
			args[k++] = tabarg;
		}
		if (zstd) {
			args[k++] = "--zstd";
			args[k++] = zarg;
		}
		if (stagearg[0]) {
			args[k++] = "--stage";
			args[k++] = stagearg;
		}
		if (cudaarg[0]) {
			args[k++] = "--stage-cuda";
			args[k++] = cudaarg;
		}
		args[k] = NULL;
		if (env)
			execve(gpu_helper(), args, env);
		else
			execv(gpu_helper(), args);
		dprintf(2, "cannot run %s: %s", gpu_helper(), strerror(errno));
		_exit(127);
	}
	free(env);
	env = NULL;
	explicit_bzero(keyenv, sizeof(keyenv));
	sv->pid = c;
	close(in[0]);
	close(outp[1]);
	close(errp[1]);
	for (int i = 0; i < h->n; i++)
		dprintf(in[1], "%#" PRIx64 " %" PRIu64 " %u %u\n", h->bufs[i].va, h->bufs[i].size,
			h->bufs[i].dev, h->bufs[i].rank);
	close(in[1]);
	sv->err_fd = errp[0];
	/* "snapshot": a copy of every buffer is on the GPU (the process may
	 * run on); "direct": the copy reads the process's memory itself;
	 * "staged": the same, through the pool, and "released" follows; EOF:
	 * the helper failed (gpu_save_finish says why) */
	read_line(outp[0], line, sizeof(line));
	sv->snapshot = strcmp(line, "snapshot") == 0;
	sv->cow = strcmp(line, "cow") == 0 && sv->tab;
	sv->staged = strcmp(line, "staged") == 0;
	sv->direct = strcmp(line, "direct") == 0;
	if (sv->staged)
		sv->out_fd = outp[0];
	else
		close(outp[0]);
	sv->how = how;
	/* cow: the process gets the table with its buffers (GPU_REATTACH);
	 * snapshot: too, every buffer SAVED, so that it ranks its buffers
	 * by first use while the save runs (doc/concurrent-restore.md) */
	if ((sv->cow || (sv->snapshot && sv->tab)) &&
	    (h->tab_fd = fcntl(sv->tab_fd, F_DUPFD_CLOEXEC, 3)) < 0) {
		phos_errf(e, "save table: %s", strerror(errno));
		return -1;	/* the caller's gpu_save_abort() ends it */
	}
	return 0;
fail:
	free(env);
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (outp[i] >= 0)
			close(outp[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
	table_close(sv);
	return -1;
}

int gpu_save_finish(struct gpu_save *sv, struct phos_err *e)
{
	char why[1024], who[24];
	int st = 0;

	if (sv->pid <= 0)
		return phos_errf(e, "no GPU save under way");
	snprintf(who, sizeof(who), "pid %d", (int)sv->tag);
	phos_log_lines(sv->err_fd, who, why, sizeof(why));
	phos_closep(&sv->err_fd);
	phos_closep(&sv->out_fd);
	while (waitpid(sv->pid, &st, 0) < 0 && errno == EINTR)
		;
	sv->pid = -1;
	table_close(sv);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 3 && sv->cow) {
		sv->mismatch = true;
		return phos_errnof(e, ESTALE, "saving the GPU buffers of pid %d while it ran "
				   "failed: %s", (int)sv->tag, why);
	}
	if (WIFSIGNALED(st))
		return phos_errf(e, "saving the GPU buffers of pid %d failed: phos-gpu was killed by "
				 "signal %d (%s)%s; its last line: %s", (int)sv->tag, WTERMSIG(st),
				 strsignal(WTERMSIG(st)),
				 WTERMSIG(st) == SIGKILL ? ": the kernel's OOM killer? (dmesg; images "
				 "in a tmpfs and the staging pool are memory)" : "",
				 why[0] ? why : "(none)");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return phos_errf(e, "saving the GPU buffers of pid %d failed: %s", (int)sv->tag,
				 why[0] ? why : "phos-gpu died");
	log_info("pid %d: %d GPU buffer(s), %" PRIu64 " bytes saved in %" PRIu64 " ms%s (%s)",
		 (int)sv->tag, sv->n, sv->bytes, phos_now_ms() - sv->t0,
		 sv->snapshot ? ", from a snapshot while it ran" :
		 sv->cow ? ", while it ran" :
		 (sv->how & GPU_SAVE_COW) ? ", directly while it waited (no room on the GPU for a "
					    "snapshot, no device hash for a concurrent copy)" :
		 sv->how ? ", directly while it waited (no room on the GPU for a snapshot)" : "",
		 why);
	return 0;
}

void gpu_save_abort(struct gpu_save *sv)
{
	int st;

	if (sv->pid > 0) {
		kill(sv->pid, SIGKILL);
		while (waitpid(sv->pid, &st, 0) < 0 && errno == EINTR)
			;
		sv->pid = -1;
	}
	phos_closep(&sv->err_fd);
	phos_closep(&sv->out_fd);
	table_close(sv);
}

bool gpu_save_released(struct gpu_save *sv, uint64_t *ms)
{
	char line[64];
	uint64_t v = 0;

	if (sv->out_fd < 0)
		return false;
	read_line(sv->out_fd, line, sizeof(line));
	phos_closep(&sv->out_fd);
	if (sscanf(line, "released %" SCNu64, &v) != 1)
		return false;
	if (ms)
		*ms = v;
	return true;
}
