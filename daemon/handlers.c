/*
 * handlers.c - one function per request type.
 *
 * Authorization (doc/protocol.md): root and slurm_user (c->privileged)
 * act on everything; others on their own processes, tasks and images.
 * Requests from the SPANK plugin and phos-restore are root-only.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "gpu.h"
#include "handlers.h"
#include "image.h"
#include "log.h"
#include "ops.h"
#include "phosd.h"
#include "proc.h"
#include "registry.h"
#include "restore.h"
#include "slurmq.h"
#include "stage.h"
#include "util.h"

static void job_end_tick(void);

/* ---- replies ------------------------------------------------------------ */

struct text {
	char *buf;
	size_t len, cap;
};

static void text_add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		size_t room = t->cap - t->len;

		va_start(ap, fmt);
		n = vsnprintf(t->buf ? t->buf + t->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if ((size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 1024;
		while (cap < t->len + (size_t)n + 1)
			cap *= 2;
		char *nb = realloc(t->buf, cap);
		if (!nb)
			return;
		t->buf = nb;
		t->cap = cap;
	}
}

static void reply_text(struct client *c, uint32_t seq, struct text *t)
{
	struct phos_msg *m = phos_reply_new(seq, 0, NULL);

	if (m && phos_msg_put_str(m, PHOS_A_TEXT, t->buf ? t->buf : "") < 0) {
		phos_msg_free(m);
		m = phos_reply_new(seq, errno, "reply too large: %s", strerror(errno));
	}
	client_send(c, m);
	free(t->buf);
}

static bool require_root(struct client *c, struct phos_msg *req)
{
	if (c->uid == 0)
		return true;
	client_reply(c, req->seq, EPERM, "%s requests are for root (the SPANK plugin and "
		     "phos-restore) only", phos_msg_type_name(req->type));
	return false;
}

static uint64_t get_u64_or(struct phos_msg *m, uint16_t tag, uint64_t dflt)
{
	uint64_t v;

	return phos_msg_get_u64(m, tag, &v) == 0 ? v : dflt;
}

/* May c act on process pid?  Fills ids.  Replies and returns false if not. */
static bool pid_allowed(struct client *c, uint32_t seq, pid_t pid, struct proc_ids *ids)
{
	if (pid <= 1 || proc_ids(pid, ids) < 0) {
		client_reply(c, seq, ESRCH, "no process %d on this node", (int)pid);
		return false;
	}
	if (!c->privileged && ids->ruid != c->uid) {
		/* Same answer as for a missing process: do not leak pids. */
		client_reply(c, seq, ESRCH, "no process %d of yours on this node", (int)pid);
		return false;
	}
	/* A restore gives back every credential of the image: a process with
	 * a root saved uid, another group or a capability would come back
	 * with them, so only root may checkpoint such a process. */
	if (!c->privileged && !proc_plain_user(ids, c->uid)) {
		client_reply(c, seq, EPERM, "process %d holds privileges (set-id credentials or "
			     "capabilities): only root can checkpoint it", (int)pid);
		return false;
	}
	return true;
}

static int id_for_task(const struct task_reg *t, struct phos_image_id *id, struct phos_err *e)
{
	char user[PHOS_USER_MAX];

	proc_user_name(t->uid, user, sizeof(user));
	return phos_image_id_slurm(id, user, t->job, t->step, t->task, e);
}

/* ---- status, list ------------------------------------------------------- */

static void handle_status(struct client *c, struct phos_msg *req)
{
	struct text t = { 0 };
	struct phos_config cfg;
	struct task_reg *tasks = NULL;
	struct op *ops = NULL;
	unsigned nt = 0, no = 0, shown = 0;
	uint64_t now = phos_now_ms();

	pthread_mutex_lock(&phosd->lock);
	cfg = phosd->cfg;
	pthread_mutex_unlock(&phosd->lock);

	text_add(&t, "phosd %s on %s, up %" PRIu64 "s, pid %d\n", PACKAGE_VERSION, phosd->host,
		 (now - phosd->start_ms) / 1000, (int)getpid());
	text_add(&t, "config:          %s\n", phosd->config_path);
	text_add(&t, "socket:          %s\n", cfg.socket);
	text_add(&t, "checkpoint_dir:  %s\n", cfg.checkpoint_dir);
	text_add(&t, "keep:            %d generations\n", cfg.keep_generations);
	char pool[PATH_MAX + 128];
	stage_describe(pool, sizeof(pool), c->privileged);
	text_add(&t, "staging pool:    %s\n", pool);
	text_add(&t, "you:             uid %u%s\n", (unsigned)c->uid,
		 c->privileged ? " (privileged: all jobs)" : " (your own jobs only)");

	if (registry_snapshot(&tasks, &nt) == 0) {
		for (unsigned i = 0; i < nt; i++) {
			struct task_reg *r = &tasks[i];

			if (!c->privileged && r->uid != c->uid)
				continue;
			if (shown++ == 0)
				text_add(&t, "\nTASKS\n  %-8s %-6s %-6s %-8s %-8s %-10s %s\n", "JOB",
					 "STEP", "TASK", "PID", "UID", "INTERVAL", "STATE");
			char iv[32] = "-";
			if (r->interval_ms)
				snprintf(iv, sizeof(iv), "%" PRIu64 "s", r->interval_ms / 1000);
			text_add(&t, "  %-8u %-6u %-6u %-8d %-8u %-10s %s%s\n", r->job, r->step,
				 r->task, (int)r->pid, (unsigned)r->uid, iv,
				 r->busy ? "checkpointing" : "running",
				 r->restored ? " (restored)" : "");
		}
		free(tasks);
	}
	if (!shown)
		text_add(&t, "\nno registered tasks%s\n", c->privileged ? "" : " of yours");
	if (op_snapshot(c->uid, c->privileged, &ops, &no) == 0) {
		if (no)
			text_add(&t, "\nOPERATIONS\n  %-6s %-11s %-8s %s\n", "OPID", "KIND", "AGE",
				 "TARGET: PHASE");
		for (unsigned i = 0; i < no; i++) {
			struct op *o = &ops[i];
			char pct[32] = "", age[32];

			snprintf(age, sizeof(age), "%" PRIu64 "s", (now - o->started_ms) / 1000);
			if (o->total)
				snprintf(pct, sizeof(pct), " [%" PRIu64 "%%]", o->done * 100 / o->total);
			text_add(&t, "  %-6" PRIu64 " %-11s %-8s %s: %s%s\n", o->id, o->kind,
				 age, o->target, o->phase, pct);
		}
		free(ops);
	}
	reply_text(c, req->seq, &t);
}

static void handle_list(struct client *c, struct phos_msg *req)
{
	struct text t = { 0 };
	struct phos_image_task_info *tasks = NULL;
	struct phos_err e = { "" };
	char user[PHOS_USER_MAX], jobs[32];
	const char *ufilter = NULL, *jfilter = NULL;
	uint64_t job;
	size_t n = 0, rows = 0;

	if (!c->privileged) {
		proc_user_name(c->uid, user, sizeof(user));
		ufilter = user;
	}
	if (phos_msg_get_u64(req, PHOS_A_JOB, &job) == 0) {
		snprintf(jobs, sizeof(jobs), "%" PRIu64, job);
		jfilter = jobs;
	}
	if (phos_image_list_tasks(&phosd->store, ufilter, jfilter, &tasks, &n, &e) < 0) {
		client_reply(c, req->seq, errno, "cannot list images: %s", e.msg);
		return;
	}
	text_add(&t, "%-10s %-10s %-6s %-5s %-6s %-6s %-12s %-20s %-10s %s\n", "USER", "JOB", "STEP",
		 "TASK", "GEN", "VALID", "BYTES", "CREATED", "HOST", "PATH");
	for (size_t i = 0; i < n; i++) {
		struct phos_image_gen_info *g = NULL;
		size_t ng = 0;
		char jn[32], sn[32], path[4096];

		phos_image_job_format(&tasks[i].id, jn, sizeof(jn));
		phos_image_step_format(tasks[i].id.step, sn, sizeof(sn));
		if (phos_image_list_generations(&phosd->store, &tasks[i].id, PHOS_UID_ANY,
						PHOS_VERIFY_QUICK, &g, &ng, &e) < 0)
			continue;
		for (size_t k = 0; k < ng; k++) {
			char when[32] = "-";
			struct tm tm;

			if (g[k].created && localtime_r(&g[k].created, &tm))
				strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
			phos_image_gen_path(&phosd->store, &tasks[i].id, g[k].generation, path,
					    sizeof(path), NULL);
			rows++;
			text_add(&t, "%-10s %-10s %-6s %-5u %-6" PRIu64 " %-6s %-12" PRIu64
				 " %-20s %-10s %s\n", tasks[i].id.user, jn, sn, tasks[i].id.task,
				 g[k].generation, g[k].err ? "no" : "yes", g[k].bytes, when,
				 g[k].host[0] ? g[k].host : "-", path);
			if (g[k].err)
				text_add(&t, "    invalid: %s\n", g[k].reason);
		}
		free(g);
	}
	if (rows == 0)
		text_add(&t, "(no images%s)\n", c->privileged ? "" : " of yours");
	free(tasks);
	reply_text(c, req->seq, &t);
}

/* ---- registration (SPANK plugin) ---------------------------------------- */

static void handle_register(struct client *c, struct phos_msg *req)
{
	struct task_reg t = { 0 };
	uint64_t pid, job, step, task, uid;

	if (!require_root(c, req))
		return;
	if (phos_msg_get_u64(req, PHOS_A_PID, &pid) < 0 || phos_msg_get_u64(req, PHOS_A_JOB, &job) < 0 ||
	    phos_msg_get_u64(req, PHOS_A_STEP, &step) < 0 ||
	    phos_msg_get_u64(req, PHOS_A_TASK, &task) < 0 || phos_msg_get_u64(req, PHOS_A_UID, &uid) < 0) {
		client_reply(c, req->seq, EINVAL, "register needs PID, JOB, STEP, TASK and UID");
		return;
	}
	t.pid = (pid_t)pid;
	t.job = (uint32_t)job;
	t.step = (uint32_t)step;
	t.task = (uint32_t)task;
	t.uid = (uid_t)uid;
	t.gid = (gid_t)get_u64_or(req, PHOS_A_GID, proc_user_gid(t.uid));
	t.interval_ms = get_u64_or(req, PHOS_A_MS, 0);
	if (registry_add(&t) < 0) {
		client_reply(c, req->seq, errno, "cannot register: %s", strerror(errno));
		return;
	}
	log_info("registered job %u step %u task %u pid %d uid %u interval %" PRIu64 " ms", t.job,
		 t.step, t.task, (int)t.pid, (unsigned)t.uid, t.interval_ms);
	client_reply(c, req->seq, 0, NULL);
}

static void handle_unregister(struct client *c, struct phos_msg *req)
{
	uint64_t job;

	if (!require_root(c, req))
		return;
	if (phos_msg_get_u64(req, PHOS_A_JOB, &job) < 0) {
		client_reply(c, req->seq, EINVAL, "unregister needs JOB");
		return;
	}
	registry_remove_job((uint32_t)job);
	client_reply(c, req->seq, 0, NULL);
}

/* ---- checkpoint ---------------------------------------------------------- */

static void reply_ckpt(struct client *c, uint32_t seq, const struct ckpt_result *res)
{
	struct phos_msg *m = phos_reply_new(seq, 0, "checkpoint generation %" PRIu64 " written to %s "
					    "(%.1f MB; process frozen %" PRIu64 " ms, total %" PRIu64
					    " ms)", res->generation, res->path, res->bytes / 1e6,
					    res->stall_ms, res->total_ms);

	if (m && (phos_msg_put_str(m, PHOS_A_PATH, res->path) < 0 ||
		  phos_msg_put_u64(m, PHOS_A_GEN, res->generation) < 0 ||
		  phos_msg_put_u64(m, PHOS_A_MS, res->stall_ms) < 0 ||
		  phos_msg_put_u64(m, PHOS_A_BYTES, res->bytes) < 0)) {
		phos_msg_free(m);
		m = NULL;
	}
	client_send(c, m);
}

/* Send libphos's real-time signal to every process of the tree that has
 * libphos mapped: they run the app's SIGTERM disposition. */
static void tell_proceed(pid_t root)
{
	union sigval v = { .sival_int = PHOS_SIGVAL_PROCEED };
	pid_t *tree = NULL;
	size_t n = 0;

	if (proc_tree(root, &tree, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		if (proc_maps_has(tree[i], "libphos.so") &&
		    sigqueue(tree[i], SIGRTMIN + PHOS_SIGNAL_OFFSET, v) < 0)
			log_debug("cannot signal pid %d: %m", (int)tree[i]);
	free(tree);
}

/*
 * Say something to the user of a task: a line on the task's own stderr,
 * which Slurm puts in the job's output.  Errors of checkpoints the user
 * did not ask for by hand (preemption, periodic) must not stay in a log.
 */
static void tell_task(pid_t pid, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tell_task(pid_t pid, const char *fmt, ...)
{
	char path[64], line[1024];
	va_list ap;
	int fd, n;

	snprintf(path, sizeof(path), "/proc/%d/fd/2", (int)pid);
	fd = open(path, O_WRONLY | O_APPEND | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n > 0) {
		if ((size_t)n > sizeof(line) - 2)
			n = (int)sizeof(line) - 2;
		line[n++] = '\n';
		if (write(fd, line, (size_t)n) < 0)
			log_debug("cannot write to pid %d's stderr: %m", (int)pid);
	}
	close(fd);
}

/* SIGTERM reached a protected task: libphos asks for a checkpoint. */
static void handle_preempt(struct client *c, struct phos_msg *req)
{
	struct task_reg t;
	struct ckpt_req r = { 0 };
	struct ckpt_result res;
	struct phos_err e = { "" };
	enum job_fate fate;
	int claim;

	if (registry_find_pid(c->pid, &t) < 0 || (!c->privileged && t.uid != c->uid)) {
		log_warn("pid %d uid %u asked for a preemption checkpoint but is not a registered task",
			 (int)c->pid, (unsigned)c->uid);
		client_reply(c, req->seq, ENOENT, "pid %d is not a registered task", (int)c->pid);
		union sigval v = { .sival_int = PHOS_SIGVAL_PROCEED };
		sigqueue(c->pid, SIGRTMIN + PHOS_SIGNAL_OFFSET, v);
		return;
	}
	client_reply(c, req->seq, 0, NULL);	/* libphos has hung up already */
	fate = slurmq_job_fate(t.job, &e);
	/* `scontrol requeue` makes the job PENDING before its tasks get
	 * SIGTERM: a live task of a job pending again is being requeued. */
	if (fate != JOB_FATE_REQUEUE && fate != JOB_FATE_PENDING) {
		log_notice("job %u task %u: SIGTERM while the job is %s%s%s: no checkpoint, the "
			   "application handles SIGTERM itself", t.job, t.task,
			   slurmq_fate_name(fate), e.msg[0] ? ": " : "", e.msg);
		tell_proceed(t.pid);
		return;
	}
	/* Wait for a periodic checkpoint in flight; join a preemption in flight. */
	for (int i = 0; (claim = registry_claim_preempt(t.pid)) == 0; i++) {
		if (i > 100 * phosd->cfg.checkpoint_timeout)
			break;
		usleep(10000);
	}
	if (claim != 1)
		return;
	log_notice("job %u step %u task %u: job is %s: preemption checkpoint", t.job, t.step,
		   t.task, slurmq_fate_name(fate));
	r.pid = t.pid;
	r.uid = t.uid;
	r.gid = t.gid;
	r.check_uid = (uid_t)-1;	/* registered by the plugin, as root */
	r.flags = PHOS_F_PREEMPT;
	r.interval_ms = t.interval_ms;
	res.held = false;
	if (id_for_task(&t, &r.id, &e) < 0 || checkpoint_run(&r, &res, &e) < 0) {
		/* held: it failed after the dump, and the tree never runs again */
		const char *then = res.held ? "the task stays stopped where it was checkpointed "
					      "until Slurm ends it" : "the task gets its SIGTERM";

		log_err("job %u task %u: preemption checkpoint failed: %s; %s", t.job, t.task,
			e.msg, then);
		tell_task(t.pid, "phos: the checkpoint for the preemption of job %u failed: %s; %s; "
			  "a requeued job restarts from the newest periodic checkpoint if any", t.job,
			  e.msg, then);
		registry_release(t.pid, 0);
		if (!res.held)
			tell_proceed(t.pid);
		return;
	}
	/* The tree stays stopped: Slurm kills it at the end of the grace time
	 * (22.05 requeues only a job that did not exit by itself, §6). */
	/* HOLD was queued from CRIU's post-dump notification (checkpoint.c),
	 * while the tree was still seized. */
	registry_release(t.pid, res.generation);
}

static void handle_checkpoint(struct client *c, struct phos_msg *req)
{
	uint64_t flags = get_u64_or(req, PHOS_A_FLAGS, PHOS_F_WAIT), v;
	struct ckpt_req r = { 0 };
	struct ckpt_result res;
	struct phos_err e = { "" };
	struct proc_ids ids;
	struct task_reg t;
	bool registered = false;

	if (flags & PHOS_F_PREEMPT) {
		handle_preempt(c, req);
		return;
	}
	if (phos_msg_get_u64(req, PHOS_A_PID, &v) == 0) {
		if (!pid_allowed(c, req->seq, (pid_t)v, &ids))
			return;
		r.pid = (pid_t)v;
		registered = registry_find_pid(r.pid, &t) == 0 && t.pid == r.pid;
	} else if (phos_msg_get_u64(req, PHOS_A_JOB, &v) == 0) {
		uint32_t step = (uint32_t)get_u64_or(req, PHOS_A_STEP, UINT32_MAX);
		uint32_t task = (uint32_t)get_u64_or(req, PHOS_A_TASK, UINT32_MAX);

		if (registry_find((uint32_t)v, step, task, &t) < 0 ||
		    (!c->privileged && t.uid != c->uid)) {
			client_reply(c, req->seq, errno == EEXIST ? EEXIST : ENOENT, errno == EEXIST ?
				     "job %" PRIu64 " has several tasks on this node: give --step and --task" :
				     "no task of job %" PRIu64 " of yours is registered on this node", v);
			return;
		}
		registered = true;
		r.pid = t.pid;
		if (!pid_allowed(c, req->seq, r.pid, &ids))
			return;
	} else {
		client_reply(c, req->seq, EINVAL, "checkpoint needs a PID or a JOB");
		return;
	}
	if (registered) {
		if (id_for_task(&t, &r.id, &e) < 0) {
			client_reply(c, req->seq, EINVAL, "%s", e.msg);
			return;
		}
		if (!registry_claim(t.pid)) {
			client_reply(c, req->seq, EBUSY, "a checkpoint of job %u task %u is already "
				     "running (see 'phosctl status')", t.job, t.task);
			return;
		}
		r.uid = t.uid;
		r.gid = t.gid;
		r.interval_ms = t.interval_ms;
	} else {
		char user[PHOS_USER_MAX];

		proc_user_name(ids.ruid, user, sizeof(user));
		if (phos_image_id_pid(&r.id, user, r.pid, &e) < 0) {
			client_reply(c, req->seq, EINVAL, "%s", e.msg);
			return;
		}
		r.uid = ids.ruid;
		r.gid = ids.rgid;
	}
	r.flags = (unsigned)(flags & PHOS_F_LEAVE_RUNNING);
	r.check_uid = c->privileged ? (uid_t)-1 : c->uid;
	r.predump = (unsigned)get_u64_or(req, PHOS_A_PREDUMP, (uint64_t)phosd->cfg.predump_rounds);
	if (r.predump > 10) {
		if (registered)
			registry_release(t.pid, 0);
		client_reply(c, req->seq, EINVAL, "--pre-dump: at most 10 rounds");
		return;
	}
	r.seq = req->seq;
	r.client = c;
	int rc = checkpoint_run(&r, &res, &e);
	if (registered)
		registry_release(t.pid, rc == 0 ? res.generation : 0);
	if (rc < 0) {
		client_reply(c, req->seq, errno ? errno : EIO, "checkpoint failed: %s%s", e.msg,
			     (r.flags & PHOS_F_LEAVE_RUNNING) ? " (the process is still running)" : "");
		return;
	}
	reply_ckpt(c, req->seq, &res);
}

/* Periodic checkpoints, and once an hour the restore logs past their
 * age: called once a second by the timer thread. */
void periodic_tick(void)
{
	static uint64_t pruned;	/* phosd prunes at start too */
	struct task_reg due[16];
	unsigned n;

	if (!pruned)
		pruned = phos_now_ms();
	if (phos_now_ms() - pruned >= 3600 * 1000) {
		pruned = phos_now_ms();
		restore_prune_logs(phosd->cfg.state_dir);
	}
	registry_reap();
	job_end_tick();
	n = registry_due(phos_now_ms(), due, 16);
	for (unsigned i = 0; i < n; i++) {
		struct ckpt_req r = { 0 };
		struct ckpt_result res;
		struct phos_err e = { "" };

		if (!registry_claim(due[i].pid))
			continue;
		r.pid = due[i].pid;
		r.check_uid = (uid_t)-1;
		r.uid = due[i].uid;
		r.gid = due[i].gid;
		r.flags = PHOS_F_LEAVE_RUNNING;
		r.interval_ms = due[i].interval_ms;
		r.predump = (unsigned)phosd->cfg.predump_rounds;
		if (id_for_task(&due[i], &r.id, &e) < 0 || checkpoint_run(&r, &res, &e) < 0) {
			log_err("periodic checkpoint of job %u task %u failed: %s", due[i].job,
				due[i].task, e.msg);
			tell_task(due[i].pid, "phos: periodic checkpoint of job %u task %u failed: %s",
				  due[i].job, due[i].task, e.msg);
			registry_release(due[i].pid, 0);
			continue;
		}
		registry_release(due[i].pid, res.generation);
	}
}

/* ---- restore ------------------------------------------------------------- */

/* Start phos-restore for generation gen of id, whose manifest m passed
 * its check (begun at tv; verify: the manifest only).  *pid is set on
 * success, gpath to the generation's path. */
static int restore_gen(struct client *c, const struct phos_msg *req,
		       const struct phos_image_id *id, uint64_t gen, const struct phos_manifest *m,
		       uint64_t tv, const int stdio[3], bool verify, pid_t *pid, char *gpath,
		       size_t gsize, struct phos_err *e)
{
	if (phos_image_gen_path(&phosd->store, id, gen, gpath, gsize, e) < 0)
		return -1;
	/* The original may still run here (a copy of a leave-running
	 * checkpoint): same pids inside, same abstract socket names.  The copy
	 * gets its own network namespace then. */
	bool beside = strcmp(m->host, phosd->host) == 0 && m->root_pid > 1 &&
		      kill(m->root_pid, 0) == 0;

	log_info("restore of %s: %s in %" PRIu64 " ms", gpath, verify ? "manifest checked (the "
		 "files are checked while CRIU restores)" : "image verified", phos_now_ms() - tv);
	client_progress(c, req->seq, 0, 0, "restoring %s (%s)%s", gpath,
			verify ? "manifest checked" : "verified", beside ?
			"; its original still runs here: the copy gets its own network namespace "
			"(loopback only)" : "");
	return restore_spawn(gpath, m->uid, m->gid, stdio, beside, verify, pid, e);
}

static void handle_restore(struct client *c, struct phos_msg *req)
{
	struct phos_image_id id;
	struct phos_manifest m;
	struct phos_err e = { "" };
	uint64_t gen = 0, job;
	const char *path;
	char gpath[4096] = "";
	int stdio[3] = { -1, -1, -1 };
	pid_t pid = 0;
	uid_t allowed = c->privileged ? PHOS_UID_ANY : c->uid;

	phos_manifest_init(&m);
	if (phos_msg_get_str(req, PHOS_A_PATH, &path) == 0) {
		if (phos_image_parse_path(&phosd->store, path, &id, &gen, &e) < 0) {
			client_reply(c, req->seq, EINVAL, "%s", e.msg);
			return;
		}
	} else if (phos_msg_get_u64(req, PHOS_A_JOB, &job) == 0) {
		char user[PHOS_USER_MAX];

		proc_user_name(c->uid, user, sizeof(user));
		if (phos_image_id_slurm(&id, user, (uint32_t)job,
					(uint32_t)get_u64_or(req, PHOS_A_STEP, 0),
					(uint32_t)get_u64_or(req, PHOS_A_TASK, 0), &e) < 0) {
			client_reply(c, req->seq, EINVAL, "%s", e.msg);
			return;
		}
		gen = get_u64_or(req, PHOS_A_GEN, 0);
	} else {
		client_reply(c, req->seq, EINVAL, "restore needs an image PATH or a JOB");
		return;
	}
	/* The manifest is checked here (MAC, owner, every file there with its
	 * size); phos-restore hashes the files while CRIU restores, and no
	 * restored task runs before that passed (doc/concurrent-restore.md,
	 * "The image check beside CRIU"). */
	bool picked = gen == 0;	/* ours to pick: an older generation is the fallback */
	uint64_t tv = phos_now_ms(), bad;

	if (picked) {
		if (phos_image_select(&phosd->store, &id, allowed, PHOS_VERIFY_QUICK, &gen, &m, &e) < 0) {
			client_reply(c, req->seq, errno, "no usable image: %s", e.msg);
			return;
		}
	} else if (phos_image_verify(&phosd->store, &id, gen, allowed, PHOS_VERIFY_QUICK, &m, &e) < 0) {
		client_reply(c, req->seq, errno, "image refused: %s", e.msg);
		return;
	}
	if (req->nfds == 3)
		for (int i = 0; i < 3; i++)
			stdio[i] = req->fds[i];
	if (restore_gen(c, req, &id, gen, &m, tv, stdio, true, &pid, gpath, sizeof(gpath), &e) < 0 &&
	    picked) {
		struct phos_err ve = { "" };
		int err = errno;

		/* the check beside CRIU refused it, or something else failed */
		if (phos_image_verify(&phosd->store, &id, gen, allowed, 0, NULL, &ve) == 0) {
			errno = err;
		} else {
			bad = gen;
			log_warn("restore of %s: generation %" PRIu64 " failed its check (%s): trying "
				 "the older ones", gpath, bad, ve.msg);
			client_progress(c, req->seq, 0, 0, "generation %" PRIu64 " failed its check "
					"(%s); trying the older ones", bad, ve.msg);
			phos_manifest_free(&m);
			tv = phos_now_ms();
			if (phos_image_select_below(&phosd->store, &id, allowed, 0, bad, &gen, &m,
						    &e) < 0) {
				client_reply(c, req->seq, errno, "generation %" PRIu64 " failed its "
					     "check (%s), and no older one is usable: %s", bad, ve.msg,
					     e.msg);
				return;
			}
			restore_gen(c, req, &id, gen, &m, tv, stdio, false, &pid, gpath,
				    sizeof(gpath), &e);
		}
	}
	if (!pid) {
		int err = errno;

		log_warn("restore of %s failed: %s", gpath, e.msg);
		client_reply(c, req->seq, err, "%s", e.msg);
		phos_manifest_free(&m);
		return;
	}
	struct phos_msg *rep = phos_reply_new(req->seq, 0, "restored %s as pid %d", gpath, (int)pid);
	if (rep && phos_msg_put_u64(rep, PHOS_A_PID, (uint64_t)pid) < 0) {
		phos_msg_free(rep);
		rep = NULL;
	}
	client_send(c, rep);
	phos_manifest_free(&m);
}

static void handle_restore_prepare(struct client *c, struct phos_msg *req)
{
	uint64_t job, step, task, uid, gen;
	struct phos_image_id id;
	struct phos_err e = { "" };
	char user[PHOS_USER_MAX], path[4096];

	if (!require_root(c, req))
		return;
	if (phos_msg_get_u64(req, PHOS_A_JOB, &job) < 0 || phos_msg_get_u64(req, PHOS_A_STEP, &step) < 0 ||
	    phos_msg_get_u64(req, PHOS_A_TASK, &task) < 0 || phos_msg_get_u64(req, PHOS_A_UID, &uid) < 0) {
		client_reply(c, req->seq, EINVAL, "restore-prepare needs JOB, STEP, TASK and UID");
		return;
	}
	proc_user_name((uid_t)uid, user, sizeof(user));
	if (phos_image_id_slurm(&id, user, (uint32_t)job, (uint32_t)step, (uint32_t)task, &e) < 0) {
		client_reply(c, req->seq, EINVAL, "%s", e.msg);
		return;
	}
	struct phos_manifest m;
	const char *done;

	phos_manifest_init(&m);
	if (phos_image_select(&phosd->store, &id, (uid_t)uid, 0, &gen, &m, &e) < 0) {
		int err = errno;

		log_notice("job %" PRIu64 " task %" PRIu64 ": no usable image: %s", job, task, e.msg);
		client_reply(c, req->seq, err, "%s", e.msg);
		return;
	}
	done = phos_manifest_get_extra(&m, "phos.completed");
	if (done) {
		uint64_t st = 0;
		struct phos_msg *rep;

		phos_parse_u64(done, &st);
		phos_manifest_free(&m);
		log_info("job %" PRIu64 " step %" PRIu64 " task %" PRIu64 ": completed in an earlier "
			 "run (status 0x%" PRIx64 ")", job, step, task, st);
		rep = phos_reply_new(req->seq, ECHILD, "step %" PRIu64 " task %" PRIu64 " completed "
				     "(exit %d) before the job was requeued", step, task,
				     WEXITSTATUS((int)st));
		if (rep && phos_msg_put_u64(rep, PHOS_A_STATUS, st) < 0) {
			phos_msg_free(rep);
			rep = NULL;
		}
		client_send(c, rep);
		return;
	}
	phos_manifest_free(&m);
	if (phos_image_gen_path(&phosd->store, &id, gen, path, sizeof(path), &e) < 0) {
		client_reply(c, req->seq, errno, "%s", e.msg);
		return;
	}
	log_info("job %" PRIu64 " step %" PRIu64 " task %" PRIu64 ": restoring generation %" PRIu64
		 " from %s", job, step, task, gen, path);
	struct phos_msg *rep = phos_reply_new(req->seq, 0, NULL);
	if (rep && (phos_msg_put_str(rep, PHOS_A_PATH, path) < 0 ||
		    phos_msg_put_u64(rep, PHOS_A_GEN, gen) < 0)) {
		phos_msg_free(rep);
		rep = NULL;
	}
	client_send(c, rep);
}

/* STAGE_GET (doc/protocol.md): the staging pool, for a restore of the
 * generation it holds. */
static void handle_stage_get(struct client *c, struct phos_msg *req)
{
	const char *path;
	char pieces[1024], why[PATH_MAX + 64];
	struct stage_cuda cuda = { NULL, 0, 0 };
	struct phos_msg *r;
	int fd, fds[1 + STAGE_CUDA_MAX];

	if (!require_root(c, req))
		return;
	if (phos_msg_get_str(req, PHOS_A_PATH, &path) < 0) {
		client_reply(c, req->seq, EINVAL, "stage-get needs PATH");
		return;
	}
	if ((fd = stage_lend(path, pieces, sizeof(pieces), &cuda, why, sizeof(why))) < 0) {
		client_reply(c, req->seq, ENOENT, "%s", why);
		return;
	}
	/* a driver-pinned pool: its pieces' fds after the token, and their size */
	fds[0] = fd;
	for (unsigned i = 0; i < cuda.n; i++)
		fds[1 + i] = cuda.fd[i];
	r = phos_reply_new(req->seq, 0, NULL);
	if (!r || phos_msg_put_str(r, PHOS_A_TEXT, pieces) < 0 ||
	    (cuda.n && phos_msg_put_u64(r, PHOS_A_BYTES, cuda.piece) < 0) ||
	    phos_msg_send(c->fd, r, fds, 1 + (int)cuda.n) < 0)
		log_warn("stage-get: cannot answer pid %d: %m", (int)c->pid);
	else
		log_info("restore of %s: its GPU buffers load from the staging pool (pid %d)", path,
			 (int)c->pid);
	phos_msg_free(r);
	close(fd);
}

static void handle_restore_done(struct client *c, struct phos_msg *req)
{
	struct task_reg t = { 0 };
	struct proc_ids ids;
	uint64_t pid, job, step, task;
	const char *path = NULL, *what;
	struct phos_image_id id;
	struct phos_manifest m;
	uint64_t gen;
	struct phos_err e;

	if (!require_root(c, req))
		return;
	if (phos_msg_get_u64(req, PHOS_A_PID, &pid) < 0 || phos_msg_get_u64(req, PHOS_A_JOB, &job) < 0 ||
	    phos_msg_get_u64(req, PHOS_A_STEP, &step) < 0 ||
	    phos_msg_get_u64(req, PHOS_A_TASK, &task) < 0 || proc_ids((pid_t)pid, &ids) < 0) {
		client_reply(c, req->seq, EINVAL, "restore-done needs PID, JOB, STEP, TASK of a live process");
		return;
	}
	t.pid = (pid_t)pid;
	t.job = (uint32_t)job;
	t.step = (uint32_t)step;
	t.task = (uint32_t)task;
	t.uid = ids.ruid;
	t.gid = ids.rgid;
	t.restored = 1;
	/* The period of periodic checkpoints travels in the manifest. */
	phos_manifest_init(&m);
	if (phos_msg_get_str(req, PHOS_A_PATH, &path) == 0 &&
	    phos_image_parse_path(&phosd->store, path, &id, &gen, &e) == 0 &&
	    phos_image_verify(&phosd->store, &id, gen, PHOS_UID_ANY, PHOS_VERIFY_QUICK, &m, &e) == 0) {
		const char *iv = phos_manifest_get_extra(&m, "phos.interval_ms");
		uint64_t ms;

		if (iv && phos_parse_u64(iv, &ms) == 0)
			t.interval_ms = ms;
	}
	phos_manifest_free(&m);
	registry_add(&t);
	/* phos-restore says what the restore took (MSG, since 2026-12) */
	if (phos_msg_get_str(req, PHOS_A_MSG, &what) < 0)
		what = NULL;
	log_notice("job %u step %u task %u restored as pid %d%s%s%s", t.job, t.step, t.task,
		   (int)t.pid, what ? " (" : "", what ? what : "", what ? ")" : "");
	client_reply(c, req->seq, 0, NULL);
}

/* ---- cancel, job end ----------------------------------------------------- */

static void handle_cancel(struct client *c, struct phos_msg *req)
{
	uint64_t id;

	if (phos_msg_get_u64(req, PHOS_A_OPID, &id) < 0) {
		client_reply(c, req->seq, EINVAL, "cancel needs an OPID (see 'phosctl status')");
		return;
	}
	if (op_cancel(id, c->uid, c->privileged) < 0) {
		int err = errno;

		client_reply(c, req->seq, err, err == EBUSY ?
			     "operation %" PRIu64 " is past the point where it can stop safely; it "
			     "will finish shortly" : "no operation %" PRIu64 " of yours", id);
		return;
	}
	client_reply(c, req->seq, 0, "operation %" PRIu64 " will stop at its next safe point", id);
}

/*
 * Jobs that ended on this node, waiting for slurmctld to say whether they
 * are finished for good (their images go) or requeued (they stay).
 * slurm_spank_exit runs before the step's completion reaches slurmctld, so
 * the answer comes a little later: the timer asks every few seconds.
 */
struct job_end {
	uint32_t job;
	bool keep;
	uint64_t deadline_ms;
	uint64_t next_ms;
	struct job_end *next;
};

static struct job_end *job_ends;
static pthread_mutex_t job_ends_lock = PTHREAD_MUTEX_INITIALIZER;

#define JOB_END_POLL_MS 2000
#define JOB_END_GIVE_UP_MS (15 * 60 * 1000)

static void remove_job_images(uint32_t job)
{
	struct phos_image_task_info *tasks = NULL;
	struct phos_err e = { "" };
	char jobs[32];
	size_t n = 0;

	snprintf(jobs, sizeof(jobs), "%u", job);
	if (phos_image_list_tasks(&phosd->store, NULL, jobs, &tasks, &n, &e) < 0) {
		log_warn("job %u: cannot list images: %s", job, e.msg);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && strcmp(tasks[i].id.user, tasks[i - 1].id.user) == 0)
			continue;
		if (phos_image_remove_job(&phosd->store, &tasks[i].id, &e) < 0)
			log_warn("job %u: cannot remove images: %s", job, e.msg);
		else
			log_notice("job %u finished: removed its checkpoint images", job);
	}
	free(tasks);
}

/* Decide the jobs whose time has come; called by the timer. */
static void job_end_tick(void)
{
	uint64_t now = phos_now_ms();

	pthread_mutex_lock(&job_ends_lock);
	for (struct job_end **pp = &job_ends; *pp;) {
		struct job_end *j = *pp;
		struct phos_err e = { "" };
		enum job_fate fate;

		if (now < j->next_ms) {
			pp = &j->next;
			continue;
		}
		fate = slurmq_job_fate(j->job, &e);
		j->next_ms = now + JOB_END_POLL_MS;
		if (fate == JOB_FATE_RUNNING && now < j->deadline_ms) {
			pp = &j->next;
			continue;
		}
		if (fate == JOB_FATE_FINISHED) {
			registry_remove_job(j->job);
			if (j->keep)
				log_notice("job %u finished: images kept (keep_images_after_job)", j->job);
			else
				remove_job_images(j->job);
		} else {
			log_info("job %u ended here and is %s%s%s: keeping its images", j->job,
				 slurmq_fate_name(fate), e.msg[0] ? ": " : "", e.msg);
		}
		*pp = j->next;
		free(j);
	}
	pthread_mutex_unlock(&job_ends_lock);
}

static void handle_job_end(struct client *c, struct phos_msg *req)
{
	uint64_t job, flags = get_u64_or(req, PHOS_A_FLAGS, 0);
	struct job_end *j;

	if (!require_root(c, req))
		return;
	if (phos_msg_get_u64(req, PHOS_A_JOB, &job) < 0) {
		client_reply(c, req->seq, EINVAL, "job-end needs JOB");
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		client_reply(c, req->seq, ENOMEM, "out of memory");
		return;
	}
	j->job = (uint32_t)job;
	j->keep = phosd->cfg.keep_images_after_job || (flags & PHOS_F_KEEP_IMAGES);
	j->next_ms = phos_now_ms() + 500;
	j->deadline_ms = phos_now_ms() + JOB_END_GIVE_UP_MS;
	pthread_mutex_lock(&job_ends_lock);
	for (struct job_end *o = job_ends; o; o = o->next)
		if (o->job == j->job) {
			pthread_mutex_unlock(&job_ends_lock);
			free(j);
			client_reply(c, req->seq, 0, NULL);
			return;
		}
	j->next = job_ends;
	job_ends = j;
	pthread_mutex_unlock(&job_ends_lock);
	log_info("job %" PRIu64 " ended on this node: waiting for slurmctld's verdict on its images",
		 job);
	client_reply(c, req->seq, 0, NULL);
}

/*
 * A task ended.  If it exited by itself while its job goes on, it is
 * complete: a rerun of the batch script after a requeue must not restore
 * it from an older checkpoint nor run it again.  That is recorded as a
 * generation holding only a manifest with "phos.completed" = wait status.
 */
static void handle_task_done(struct client *c, struct phos_msg *req)
{
	uint64_t job, step, task, uid, status;
	struct phos_image_writer w;
	struct phos_image_id id;
	struct phos_err e = { "" };
	char user[PHOS_USER_MAX], st[32];
	enum job_fate fate;

	if (!require_root(c, req))
		return;
	if (phos_msg_get_u64(req, PHOS_A_JOB, &job) < 0 || phos_msg_get_u64(req, PHOS_A_STEP, &step) < 0 ||
	    phos_msg_get_u64(req, PHOS_A_TASK, &task) < 0 || phos_msg_get_u64(req, PHOS_A_UID, &uid) < 0 ||
	    phos_msg_get_u64(req, PHOS_A_STATUS, &status) < 0) {
		client_reply(c, req->seq, EINVAL, "task-done needs JOB, STEP, TASK, UID and STATUS");
		return;
	}
	client_reply(c, req->seq, 0, NULL);
	fate = slurmq_job_fate((uint32_t)job, &e);
	if (!WIFEXITED((int)status) || fate != JOB_FATE_RUNNING) {
		log_info("job %" PRIu64 " step %" PRIu64 " task %" PRIu64 " ended (status 0x%" PRIx64
			 ", job %s): its checkpoints stay usable", job, step, task, status,
			 slurmq_fate_name(fate));
		return;
	}
	proc_user_name((uid_t)uid, user, sizeof(user));
	phos_image_writer_init(&w);
	snprintf(st, sizeof(st), "%" PRIu64, status);
	if (phos_image_id_slurm(&id, user, (uint32_t)job, (uint32_t)step, (uint32_t)task, &e) < 0 ||
	    phos_image_begin(&phosd->store, &id, (uid_t)uid, proc_user_gid((uid_t)uid), &w, &e) < 0 ||
	    phos_image_set_extra(&w, "phos.completed", st, &e) < 0 ||
	    phos_image_publish(&w, &e) < 0) {
		log_warn("job %" PRIu64 " step %" PRIu64 " task %" PRIu64 ": cannot record its "
			 "completion: %s", job, step, task, e.msg);
	} else {
		log_info("job %" PRIu64 " step %" PRIu64 " task %" PRIu64 " completed (exit %d): a "
			 "rerun after a requeue will not run it again", job, step, task,
			 WEXITSTATUS((int)status));
		phos_image_retain(&phosd->store, &id, 1, PHOS_VERIFY_QUICK, &e);
	}
	phos_image_abort(&w);
}

void handle_request(struct client *c, struct phos_msg *req)
{
	switch (req->type) {
	case PHOS_MSG_STATUS: handle_status(c, req); return;
	case PHOS_MSG_LIST: handle_list(c, req); return;
	case PHOS_MSG_REGISTER: handle_register(c, req); return;
	case PHOS_MSG_UNREGISTER: handle_unregister(c, req); return;
	case PHOS_MSG_CHECKPOINT: handle_checkpoint(c, req); return;
	case PHOS_MSG_RESTORE: handle_restore(c, req); return;
	case PHOS_MSG_RESTORE_PREPARE: handle_restore_prepare(c, req); return;
	case PHOS_MSG_RESTORE_DONE: handle_restore_done(c, req); return;
	case PHOS_MSG_CANCEL: handle_cancel(c, req); return;
	case PHOS_MSG_JOB_END: handle_job_end(c, req); return;
	case PHOS_MSG_TASK_DONE: handle_task_done(c, req); return;
	case PHOS_MSG_GPU_DETACH: handle_gpu_detach(c, req); return;
	case PHOS_MSG_GPU_REATTACH: handle_gpu_reattach(c, req); return;
	case PHOS_MSG_STAGE_GET: handle_stage_get(c, req); return;
	default:
		client_reply(c, req->seq, EOPNOTSUPP, "request type %u (%s) is not supported by phosd %s",
			     req->type, phos_msg_type_name(req->type), PACKAGE_VERSION);
		return;
	}
}
