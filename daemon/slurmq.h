/*
 * slurmq.h - what slurmctld says about a job (libslurm).
 */
#ifndef PHOSD_SLURMQ_H
#define PHOSD_SLURMQ_H

#include <stdint.h>

#include "err.h"

enum job_fate {
	JOB_FATE_UNKNOWN,	/* no Slurm configuration, or slurmctld unreachable */
	JOB_FATE_RUNNING,	/* running, no requeue or preemption under way */
	JOB_FATE_REQUEUE,	/* being requeued or preempted: will run again */
	JOB_FATE_PENDING,	/* requeued and waiting to run again */
	JOB_FATE_FINISHED,	/* ended for good (or unknown to slurmctld) */
};

/* Ask slurmctld about job.  Never exits the process (libslurm's fatal()
 * on a missing slurm.conf is avoided by checking for it first). */
enum job_fate slurmq_job_fate(uint32_t job, struct phos_err *e);
const char *slurmq_fate_name(enum job_fate f);

#endif
