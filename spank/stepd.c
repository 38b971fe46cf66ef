/*
 * stepd.c - the plugin in slurmstepd (see stepd.h).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* For the SLURM_*_STEP/CONT/SCRIPT step ids; 24.11's slurm.h has a few
 * old-style declarations that -Wstrict-prototypes rejects. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <slurm/slurm.h>
#pragma GCC diagnostic pop
#include <slurm/spank.h>

#include "args.h"
#include "client.h"
#include "err.h"
#include "options.h"
#include "restore.h"
#include "stepd.h"
#include "util.h"

#define LD_PRELOAD_MAX 16384
#define NOTICE_MAX (2 * PHOS_ERR_MAX + 256)

/* What task_init does in a task of a checkpointed step. */
enum task_mode {
	TASK_FRESH,		/* registered with phosd: preload libphos */
	TASK_UNPROTECTED,	/* phosd refused or is missing: run as is */
	TASK_RESTORING,		/* restorer forked: hand over stdio, exec the waiter */
	TASK_BROKEN,		/* fail the task with fatal_msg */
	TASK_COMPLETED,		/* completed in an earlier run: exit with done_status */
};

struct stepd_state {
	const struct phos_args *args;
	bool active;		/* this step is checkpointed */
	bool job_end;		/* send JOB_END from slurm_spank_exit */
	uint32_t job_id;
	uint32_t step_id;
	uint32_t interval_s;	/* 0 = no periodic checkpoint */
	/* Per task: set in task_init_privileged, read in task_init (same
	 * process: each task is a fork of slurmstepd). */
	enum task_mode mode;
	uint32_t task_id;
	int ctl;		/* TASK_RESTORING: control socket to the restorer */
	char sock[PATH_MAX];	/* this node's phosd socket */
	char config[PATH_MAX];	/* config= for this node ("": none) */
	char notice[NOTICE_MAX];	/* "phos: " lines for the job's stderr */
	char fatal_msg[PHOS_ERR_MAX];
	int done_status;	/* TASK_COMPLETED: the earlier run's wait status */
};

static struct stepd_state st = { .ctl = -1 };

/* Steps that are not a user's srun: the batch script (a shell that starts
 * the steps, which would otherwise inherit LD_PRELOAD from it), the extern
 * step and salloc's interactive step. */
static bool step_is_special(uint32_t step_id)
{
	return step_id == SLURM_BATCH_SCRIPT || step_id == SLURM_EXTERN_CONT ||
	       step_id == SLURM_INTERACTIVE_STEP;
}

/* Is this a batch job?  sbatch's batch script has ENVIRONMENT=BATCH and
 * steps started from it inherit it (not with srun --export=NONE: such a
 * step then also sends JOB_END, which phosd ignores while the job runs). */
static bool job_is_batch(spank_t sp)
{
	char buf[16];

	return spank_getenv(sp, "ENVIRONMENT", buf, sizeof(buf)) == ESPANK_SUCCESS &&
	       strcmp(buf, "BATCH") == 0;
}

int phos_stepd_init(spank_t sp, const struct phos_args *args)
{
	st = (struct stepd_state){ .args = args, .ctl = -1 };
	return 0;
}

int phos_stepd_post_opt(spank_t sp)
{
	const struct phos_opts *o;
	struct phos_err e;
	spank_err_t rc;

	if (phos_opts_from_env(sp, &e) < 0) {
		slurm_error("%s", e.msg);
		return -1;
	}
	o = phos_opts_get();
	if (!o->checkpoint)
		return 0;

	if ((rc = spank_get_item(sp, S_JOB_ID, &st.job_id)) != ESPANK_SUCCESS ||
	    (rc = spank_get_item(sp, S_JOB_STEPID, &st.step_id)) != ESPANK_SUCCESS) {
		slurm_error("phos: cannot get the job or step id: %s", spank_strerror(rc));
		return -1;
	}
	/* The job's images go when its batch script (or, without one, a
	 * checkpointed step) ends; phosd checks it is not being requeued. */
	st.job_end = st.step_id == SLURM_BATCH_SCRIPT || st.step_id == SLURM_INTERACTIVE_STEP ||
		     (!step_is_special(st.step_id) && !job_is_batch(sp));
	if (step_is_special(st.step_id)) {
		slurm_debug("phos: job %" PRIu32 ": step 0x%" PRIx32 " is not a task step, not checkpointed",
			    st.job_id, st.step_id);
		return 0;
	}
	st.active = true;
	st.interval_s = o->interval_s;
	if (st.interval_s)
		slurm_verbose("phos: step %" PRIu32 ".%" PRIu32 ": checkpointing on, every %" PRIu32 " s",
			      st.job_id, st.step_id, st.interval_s);
	else
		slurm_verbose("phos: step %" PRIu32 ".%" PRIu32 ": checkpointing on",
			      st.job_id, st.step_id);
	return 0;
}

/* Is path one of the entries of the LD_PRELOAD list s (':' or ' ' separated)? */
static bool preload_has(const char *s, const char *path)
{
	size_t len = strlen(path);

	while (*s) {
		size_t n = strcspn(s, ": ");

		if (n == len && strncmp(s, path, len) == 0)
			return true;
		s += n;
		if (*s)
			s++;
	}
	return false;
}

static int set_preload(spank_t sp)
{
	static char old[LD_PRELOAD_MAX], val[LD_PRELOAD_MAX];
	const char *lib = st.args->libphos;
	spank_err_t rc;
	int n;

	rc = spank_getenv(sp, "LD_PRELOAD", old, sizeof(old));
	if (rc == ESPANK_ENV_NOEXIST || (rc == ESPANK_SUCCESS && old[0] == '\0'))
		n = snprintf(val, sizeof(val), "%s", lib);
	else if (rc == ESPANK_SUCCESS && preload_has(old, lib))
		return 0;
	else if (rc == ESPANK_SUCCESS)
		n = snprintf(val, sizeof(val), "%s:%s", lib, old);
	else
		n = -1;
	if (n < 0 || (size_t)n >= sizeof(val)) {
		slurm_error("phos: cannot prepend %s to LD_PRELOAD: %s", lib,
			    rc == ESPANK_SUCCESS ? "too long" : spank_strerror(rc));
		return -1;
	}
	if ((rc = spank_setenv(sp, "LD_PRELOAD", val, 1)) != ESPANK_SUCCESS) {
		slurm_error("phos: cannot set LD_PRELOAD: %s", spank_strerror(rc));
		return -1;
	}
	return 0;
}

/*
 * This node's name.  slurmstepd puts SLURMD_NODENAME (its slurmd's
 * NodeName, one per slurmd even with several on a host) in its own
 * environment at start; the task's copy is only set in exec_task, after
 * task_init_privileged, and before that may hold the batch host's name
 * inherited from the batch script.  Else the short host name.
 */
static int node_name(char *buf, size_t size)
{
	const char *n = getenv("SLURMD_NODENAME");
	char *dot;

	if (n && n[0])
		return phos_strlcpy(buf, n, size);
	if (gethostname(buf, size) < 0)
		return -1;
	buf[size - 1] = '\0';
	if ((dot = strchr(buf, '.')))
		*dot = '\0';
	return 0;
}

/* The plugstack path key=tmpl (%n: the node) for this node into
 * dst[size]; -1 + errno, e. */
static int node_path(char *dst, size_t size, const char *key, const char *tmpl,
		     struct phos_err *e)
{
	char node[256];

	if (node_name(node, sizeof(node)) < 0)
		return phos_errf(e, "phos: cannot get the node name: %s", strerror(errno));
	if (phos_socket_expand(dst, size, tmpl, node) < 0)
		return phos_errf(e, "phos: %s=%s: cannot expand for node %s: %s", key, tmpl, node,
				 strerror(errno));
	return 0;
}

/* This node's phosd socket into sock[size]; -1 + errno, e. */
static int phosd_socket(char *sock, size_t size, struct phos_err *e)
{
	return node_path(sock, size, "socket", st.args->socket, e);
}

static int set_env(spank_t sp, const char *name, const char *val)
{
	spank_err_t rc = spank_setenv(sp, name, val, 1);

	if (rc != ESPANK_SUCCESS) {
		slurm_error("phos: cannot set %s: %s", name, spank_strerror(rc));
		return -1;
	}
	return 0;
}

static int set_env_u32(spank_t sp, const char *name, uint32_t v)
{
	char buf[16];

	snprintf(buf, sizeof(buf), "%" PRIu32, v);
	return set_env(sp, name, buf);
}

/*
 * Checked in each task rather than once in init_post_opt: a failing
 * init_post_opt makes the launch fail but srun 22.05 still exits 0, while a
 * failing task_init ends the task with status 1.
 */
static int check_libphos(struct phos_err *e)
{
	struct stat sb;

	if (stat(st.args->libphos, &sb) < 0)
		return phos_errf(e, "phos: libphos=%s: %s; the job asked for --phos-checkpoint but the interposer is missing (check libphos= in plugstack.conf)",
				 st.args->libphos, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return phos_errf(e, "phos: libphos=%s: not a regular file (check libphos= in plugstack.conf)",
				 st.args->libphos);
	return 0;
}

/* Add a line for the job's stderr (printed by task_init) and log it. */
static void __attribute__((format(printf, 1, 2))) notice(const char *fmt, ...)
{
	size_t used = strlen(st.notice);
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(st.notice + used, sizeof(st.notice) - used, fmt, ap);
	va_end(ap);
	if (n >= 0 && used + (size_t)n + 1 < sizeof(st.notice))
		strcat(st.notice, "\n");
	slurm_info("%s", st.notice + used);
}

static void broken(const struct phos_err *e)
{
	st.mode = TASK_BROKEN;
	phos_strlcpy(st.fatal_msg, e->msg, sizeof(st.fatal_msg));
}

/*
 * SLURM_RESTART_COUNT from the job's environment: set by slurmctld in a
 * requeued batch job and inherited by its steps (S_SLURM_RESTART_COUNT
 * reads 0 on 22.05 and 24.11).  0 when absent or malformed.
 */
static uint32_t restart_count(spank_t sp)
{
	char buf[32];
	uint32_t n;
	spank_err_t rc = spank_getenv(sp, "SLURM_RESTART_COUNT", buf, sizeof(buf));

	if (rc == ESPANK_ENV_NOEXIST)
		return 0;
	if (rc != ESPANK_SUCCESS || phos_restart_count_parse(buf, &n) < 0) {
		notice("phos: SLURM_RESTART_COUNT=%s is not a restart count; task %" PRIu32 " starts fresh",
		       rc == ESPANK_SUCCESS ? buf : "(too long)", st.task_id);
		return 0;
	}
	return n;
}

/* RESTORE_PREPARE and, with an image, start the restorer.  0 if restoring. */
static int try_restore(const struct phos_task_ref *ref)
{
	char image[PATH_MAX];
	struct phos_restore_args ra = {
		.helper = st.args->restore_helper, .image = image, .socket = st.sock,
		.config = st.config,
		.job = ref->job, .step = ref->step, .task = ref->task,
		.uid = ref->uid, .gid = ref->gid,
	};
	struct phos_err e;
	uint64_t gen;
	pid_t pid;
	int ws = 0;

	if (phos_client_restore_prepare(st.sock, ref, image, sizeof(image), &gen, &ws, &e) < 0) {
		if (errno == ECHILD) {
			st.mode = TASK_COMPLETED;
			st.done_status = ws;
			notice("phos: step %" PRIu32 " task %" PRIu32 " completed before the requeue "
			       "(exit %d): not running it again", st.step_id, st.task_id,
			       WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws));
			return 0;
		}
		notice("phos: no usable checkpoint for task %" PRIu32 " (%s); starting fresh",
		       st.task_id, e.msg);
		return -1;
	}
	if ((st.ctl = phos_restore_spawn(&ra, &pid, &e)) < 0) {
		notice("phos: cannot restore task %" PRIu32 " from %s (%s); starting fresh",
		       st.task_id, image, e.msg);
		return -1;
	}
	st.mode = TASK_RESTORING;
	notice("phos: restoring task %" PRIu32 " of job %" PRIu32 " from checkpoint generation %" PRIu64,
	       st.task_id, st.job_id, gen);
	slurm_debug("phos: task %" PRIu32 ": image %s, restore helper pid %d", st.task_id, image,
		    (int)pid);
	return 0;
}

int phos_stepd_task_init_privileged(spank_t sp)
{
	struct phos_task_ref ref = { .job = st.job_id, .step = st.step_id };
	struct phos_err e;
	spank_err_t rc;
	uid_t uid;
	gid_t gid;

	if (!st.active)
		return 0;
	st.mode = TASK_FRESH;
	st.notice[0] = '\0';
	if ((rc = spank_get_item(sp, S_TASK_GLOBAL_ID, &st.task_id)) != ESPANK_SUCCESS ||
	    (rc = spank_get_item(sp, S_JOB_UID, &uid)) != ESPANK_SUCCESS ||
	    (rc = spank_get_item(sp, S_JOB_GID, &gid)) != ESPANK_SUCCESS) {
		phos_errf(&e, "phos: cannot get the task id, uid or gid: %s", spank_strerror(rc));
		broken(&e);
		return 0;
	}
	ref.task = st.task_id;
	ref.uid = uid;
	ref.gid = gid;
	if (phosd_socket(st.sock, sizeof(st.sock), &e) < 0 ||
	    (st.args->config[0] &&
	     node_path(st.config, sizeof(st.config), "config", st.args->config, &e) < 0)) {
		broken(&e);
		return 0;
	}
	if (restart_count(sp) > 0 && try_restore(&ref) == 0)
		return 0;
	if (check_libphos(&e) < 0) {
		broken(&e);
		return 0;
	}
	if (phos_client_register(st.sock, getpid(), &ref, st.interval_s, &e) < 0) {
		st.mode = TASK_UNPROTECTED;
		notice("phos: checkpointing disabled for task %" PRIu32 ": %s", st.task_id, e.msg);
		return 0;
	}
	slurm_debug("phos: task %" PRIu32 " (pid %d) registered with %s", st.task_id, (int)getpid(),
		    st.sock);
	return 0;
}

static int task_init_fresh(spank_t sp)
{
	if (set_preload(sp) < 0 ||
	    set_env(sp, PHOS_ENV_SOCKET, st.sock) < 0 ||
	    set_env_u32(sp, PHOS_ENV_JOB_ID, st.job_id) < 0 ||
	    set_env_u32(sp, PHOS_ENV_STEP_ID, st.step_id) < 0 ||
	    set_env_u32(sp, PHOS_ENV_TASK_ID, st.task_id) < 0 ||
	    set_env(sp, PHOS_ENV_CHECKPOINT, "1") < 0)
		return -1;
	if (st.interval_s && set_env_u32(sp, PHOS_ENV_INTERVAL, st.interval_s) < 0)
		return -1;
	slurm_debug("phos: task %" PRIu32 " of %" PRIu32 ".%" PRIu32 ": preloading %s, socket %s",
		    st.task_id, st.job_id, st.step_id, st.args->libphos, st.sock);
	return 0;
}

/* Hand the stdio to the restorer and become the waiter; returns only on failure. */
static int task_init_restore(void)
{
	struct phos_err e;

	if (phos_restore_handover(st.ctl, &e) < 0 ||
	    phos_restore_exec_wait(st.args->restore_helper, st.ctl, &e) < 0) {
		slurm_error("phos: cannot restore task %" PRIu32 ": %s", st.task_id, e.msg);
		phos_closep(&st.ctl);
		return -1;
	}
	return 0;
}

/*
 * Runs with the task's stdio in place: what task_init_privileged had to
 * say goes to the task's stderr here (from task_init_privileged it would
 * land in task 0's stderr, or nowhere for a batch step).
 */
int phos_stepd_task_init(spank_t sp)
{
	if (!st.active)
		return 0;
	if (st.notice[0])
		dprintf(STDERR_FILENO, "%s", st.notice);
	switch (st.mode) {
	case TASK_FRESH:
		return task_init_fresh(sp);
	case TASK_UNPROTECTED:
		return 0;
	case TASK_RESTORING:
		return task_init_restore();
	case TASK_COMPLETED:
		/* the task's own exit: slurmstepd reports this status */
		_exit(WIFEXITED(st.done_status) ? WEXITSTATUS(st.done_status) :
		      128 + WTERMSIG(st.done_status));
	case TASK_BROKEN:
	default:
		slurm_error("%s", st.fatal_msg);
		return -1;
	}
}

/*
 * slurmstepd (root), once per task that ended: TASK_DONE, so that phosd
 * can record a task that completed while its job goes on (a rerun after a
 * requeue must neither restore it from an older image nor run it again).
 */
int phos_stepd_task_exit(spank_t sp)
{
	struct phos_task_ref ref = { .job = st.job_id, .step = st.step_id };
	char sock[PATH_MAX];
	struct phos_err e;
	spank_err_t rc;
	uint32_t task;
	int status;
	uid_t uid;
	gid_t gid;

	if (!st.active)
		return 0;
	if ((rc = spank_get_item(sp, S_TASK_EXIT_STATUS, &status)) != ESPANK_SUCCESS ||
	    (rc = spank_get_item(sp, S_TASK_GLOBAL_ID, &task)) != ESPANK_SUCCESS ||
	    (rc = spank_get_item(sp, S_JOB_UID, &uid)) != ESPANK_SUCCESS ||
	    (rc = spank_get_item(sp, S_JOB_GID, &gid)) != ESPANK_SUCCESS) {
		slurm_error("phos: step %" PRIu32 ".%" PRIu32 ": cannot get the ended task's status: %s",
			    st.job_id, st.step_id, spank_strerror(rc));
		return 0;
	}
	ref.task = task;
	ref.uid = uid;
	ref.gid = gid;
	if (phosd_socket(sock, sizeof(sock), &e) < 0 ||
	    phos_client_task_done(sock, &ref, status, &e) < 0)
		slurm_info("phos: step %" PRIu32 ".%" PRIu32 " task %" PRIu32 ": cannot tell phosd that "
			   "it ended: %s", st.job_id, st.step_id, task, e.msg);
	else
		slurm_debug("phos: step %" PRIu32 ".%" PRIu32 " task %" PRIu32 " ended (status 0x%x): "
			    "TASK_DONE sent", st.job_id, st.step_id, task, (unsigned)status);
	return 0;
}

int phos_stepd_exit(spank_t sp)
{
	char sock[PATH_MAX];
	struct phos_err e;

	if (st.job_end) {
		if (phosd_socket(sock, sizeof(sock), &e) < 0)
			slurm_error("%s; the job's checkpoint images are not removed", e.msg);
		else if (phos_client_job_end(sock, st.job_id, 0, &e) < 0)
			slurm_error("phos: job %" PRIu32 ": cannot tell phosd that the job ended: %s; its checkpoint images may stay behind",
				    st.job_id, e.msg);
		else
			slurm_debug("phos: job %" PRIu32 ": JOB_END sent to %s", st.job_id, sock);
	}
	phos_closep(&st.ctl);
	st = (struct stepd_state){ .ctl = -1 };
	return 0;
}

int phos_stepd_prepend_argv(spank_t sp, int argc, const char *argv[])
{
#if HAVE_DECL_SPANK_PREPEND_TASK_ARGV
	spank_err_t rc = spank_prepend_task_argv(sp, argc, argv);

	if (rc != ESPANK_SUCCESS) {
		slurm_error("phos: cannot prepend to the task's command line: %s", spank_strerror(rc));
		errno = EINVAL;
		return -1;
	}
	return 0;
#else
	errno = ENOTSUP;
	return -1;
#endif
}
