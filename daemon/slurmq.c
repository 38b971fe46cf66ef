/*
 * slurmq.c - job state queries through libslurm.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <slurm/slurm.h>
#include <slurm/slurm_errno.h>

#include "log.h"
#include "slurmq.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int slurm_ok;

static void init_slurm(void)
{
	const char *conf = getenv("SLURM_CONF");

	if (!conf || !*conf)
		conf = "/etc/slurm/slurm.conf";
	if (access(conf, R_OK) < 0) {
		log_notice("no Slurm configuration at %s: job states unknown "
			   "(set SLURM_CONF in phosd's environment)", conf);
		return;
	}
	slurm_init(NULL);
	slurm_ok = 1;
}

const char *slurmq_fate_name(enum job_fate f)
{
	switch (f) {
	case JOB_FATE_UNKNOWN: return "unknown";
	case JOB_FATE_RUNNING: return "running";
	case JOB_FATE_REQUEUE: return "being requeued";
	case JOB_FATE_PENDING: return "pending again";
	case JOB_FATE_FINISHED: return "finished";
	}
	return "?";
}

enum job_fate slurmq_job_fate(uint32_t job, struct phos_err *e)
{
	job_info_msg_t *msg = NULL;
	enum job_fate f = JOB_FATE_UNKNOWN;
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

	pthread_once(&init_once, init_slurm);
	if (!slurm_ok) {
		phos_errf(e, "no Slurm configuration on this node");
		return JOB_FATE_UNKNOWN;
	}
	pthread_mutex_lock(&lock);
	if (slurm_load_job(&msg, job, SHOW_ALL) != SLURM_SUCCESS) {
		int err = slurm_get_errno();

		if (err == ESLURM_INVALID_JOB_ID) {
			f = JOB_FATE_FINISHED;
		} else {
			phos_errf(e, "slurmctld: %s", slurm_strerror(err));
			f = JOB_FATE_UNKNOWN;
		}
		pthread_mutex_unlock(&lock);
		return f;
	}
	if (msg->record_count < 1) {
		f = JOB_FATE_FINISHED;
	} else {
		slurm_job_info_t *j = &msg->job_array[0];
		uint32_t base = j->job_state & JOB_STATE_BASE;

		if (j->job_state & (JOB_REQUEUE | JOB_REQUEUE_HOLD))
			f = JOB_FATE_REQUEUE;
		else if (base == JOB_PENDING)
			f = JOB_FATE_PENDING;
		else if (base == JOB_RUNNING || base == JOB_SUSPENDED)
			f = j->preempt_time ? JOB_FATE_REQUEUE : JOB_FATE_RUNNING;
		else
			f = JOB_FATE_FINISHED;
		log_debug("job %u: state 0x%x preempt_time %ld restarts %u -> %s", job,
			  j->job_state, (long)j->preempt_time, j->restart_cnt, slurmq_fate_name(f));
	}
	slurm_free_job_info_msg(msg);
	pthread_mutex_unlock(&lock);
	return f;
}
