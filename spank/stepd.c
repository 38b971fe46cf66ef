/*
 * stepd.c - the plugin in slurmstepd (see stepd.h).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* For the SLURM_*_STEP/CONT/SCRIPT step ids; 24.11's slurm.h has a few
 * old-style declarations that -Wstrict-prototypes rejects. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <slurm/slurm.h>
#pragma GCC diagnostic pop
#include <slurm/spank.h>

#include "args.h"
#include "err.h"
#include "options.h"
#include "stepd.h"

#define LD_PRELOAD_MAX 16384

struct stepd_state {
	const struct phos_args *args;
	bool active;		/* this step is checkpointed */
	uint32_t job_id;
	uint32_t step_id;
	uint32_t interval_s;	/* 0 = no periodic checkpoint */
};

static struct stepd_state st;

/* Steps that are not a user's srun: the batch script (a shell that starts
 * the steps, which would otherwise inherit LD_PRELOAD from it), the extern
 * step and salloc's interactive step. */
static bool step_is_special(uint32_t step_id)
{
	return step_id == SLURM_BATCH_SCRIPT || step_id == SLURM_EXTERN_CONT ||
	       step_id == SLURM_INTERACTIVE_STEP;
}

int phos_stepd_init(spank_t sp, const struct phos_args *args)
{
	st = (struct stepd_state){ .args = args };
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

/* SLURMD_NODENAME (set by slurmstepd before task_init, one per slurmd
 * even with several on a host), else the short host name. */
static int node_name(spank_t sp, char *buf, size_t size)
{
	char *dot;

	if (spank_getenv(sp, "SLURMD_NODENAME", buf, (int)size) == ESPANK_SUCCESS && buf[0])
		return 0;
	if (gethostname(buf, size) < 0)
		return -1;
	buf[size - 1] = '\0';
	if ((dot = strchr(buf, '.')))
		*dot = '\0';
	return 0;
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
static int check_libphos(void)
{
	struct stat sb;

	if (stat(st.args->libphos, &sb) < 0) {
		slurm_error("phos: libphos=%s: %s; the job asked for --phos-checkpoint but the interposer is missing (check libphos= in plugstack.conf)",
			    st.args->libphos, strerror(errno));
		return -1;
	}
	if (!S_ISREG(sb.st_mode)) {
		slurm_error("phos: libphos=%s: not a regular file (check libphos= in plugstack.conf)",
			    st.args->libphos);
		return -1;
	}
	return 0;
}

int phos_stepd_task_init(spank_t sp)
{
	char node[256], sock[PATH_MAX];
	uint32_t task_id;
	spank_err_t rc;

	if (!st.active)
		return 0;
	if ((rc = spank_get_item(sp, S_TASK_GLOBAL_ID, &task_id)) != ESPANK_SUCCESS) {
		slurm_error("phos: cannot get the task id: %s", spank_strerror(rc));
		return -1;
	}
	if (node_name(sp, node, sizeof(node)) < 0) {
		slurm_error("phos: cannot get the node name: %s", strerror(errno));
		return -1;
	}
	if (phos_socket_expand(sock, sizeof(sock), st.args->socket, node) < 0) {
		slurm_error("phos: socket=%s: cannot expand for node %s: %s", st.args->socket, node,
			    strerror(errno));
		return -1;
	}
	if (check_libphos() < 0 || set_preload(sp) < 0 ||
	    set_env(sp, PHOS_ENV_SOCKET, sock) < 0 ||
	    set_env_u32(sp, PHOS_ENV_JOB_ID, st.job_id) < 0 ||
	    set_env_u32(sp, PHOS_ENV_STEP_ID, st.step_id) < 0 ||
	    set_env_u32(sp, PHOS_ENV_TASK_ID, task_id) < 0 ||
	    set_env(sp, PHOS_ENV_CHECKPOINT, "1") < 0)
		return -1;
	if (st.interval_s && set_env_u32(sp, PHOS_ENV_INTERVAL, st.interval_s) < 0)
		return -1;
	slurm_debug("phos: task %" PRIu32 " of %" PRIu32 ".%" PRIu32 ": preloading %s, socket %s",
		    task_id, st.job_id, st.step_id, st.args->libphos, sock);
	return 0;
}

int phos_stepd_exit(spank_t sp)
{
	st = (struct stepd_state){ 0 };
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
