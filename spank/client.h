/*
 * client.h - the plugin's requests to the node's phosd (doc/protocol.md).
 *
 * Every request is one short connection: connect, send, read PROGRESS
 * messages until the REPLY, close.  All requests here are root-only on the
 * phosd side (REGISTER, RESTORE_PREPARE, JOB_END), so they are sent from
 * root contexts only: task_init_privileged and slurmstepd's exit.
 *
 * No function here calls Slurm; errors come back as -1 with errno and a
 * sentence in the struct phos_err (without the "phos: " prefix: callers
 * put it in context).  The *_msg builders are separate so they can be
 * unit-tested without a daemon.
 */
#ifndef PHOS_SPANK_CLIENT_H
#define PHOS_SPANK_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "proto.h"

/* How long a request may wait for phosd's REPLY. */
#define PHOS_CLIENT_TIMEOUT_MS 30000

/* One task of a job step, as phosd knows it. */
struct phos_task_ref {
	uint32_t job;
	uint32_t step;
	uint32_t task;		/* global task id */
	uint32_t uid;
	uint32_t gid;
};

/* Request builders; NULL + errno (ENOMEM) on failure.  The caller frees. */
struct phos_msg *phos_client_register_msg(pid_t pid, const struct phos_task_ref *t,
					  uint32_t interval_s);
struct phos_msg *phos_client_prepare_msg(const struct phos_task_ref *t);
struct phos_msg *phos_client_job_end_msg(uint32_t job, uint64_t flags);
struct phos_msg *phos_client_task_done_msg(const struct phos_task_ref *t, int wstatus);

/*
 * Send req to the phosd listening on sock and return its REPLY (PROGRESS
 * messages are skipped).  The REPLY's ERRNO is not looked at here (see
 * phos_client_status).  NULL with errno and e filled: connect errors
 * (ENOENT, ECONNREFUSED: phosd is not running), ETIMEDOUT, ECONNRESET,
 * EPROTO, EBADMSG.
 */
struct phos_msg *phos_client_call(const char *sock, const struct phos_msg *req, int timeout_ms,
				  struct phos_err *e);

/*
 * 0 if reply's ERRNO is 0.  Else -1 with errno = ERRNO (EBADMSG when the
 * attribute is missing) and e = the reply's MSG, or strerror(ERRNO).
 */
int phos_client_status(struct phos_msg *reply, struct phos_err *e);

/* REGISTER pid (the task, which keeps its pid across exec).  interval_s 0:
 * no periodic checkpoints.  0 or -1 + errno, e. */
int phos_client_register(const char *sock, pid_t pid, const struct phos_task_ref *t,
			 uint32_t interval_s, struct phos_err *e);

/*
 * RESTORE_PREPARE: ask for the newest verified generation of t.  On
 * success 0, path[size] = the generation's directory, *gen its number.
 * -1 + errno and e otherwise: ENOENT with phosd's reason when there is no
 * usable image, ECHILD when the task completed in an earlier run of the job
 * (*wstatus, if wstatus is not NULL, = its wait status), ENAMETOOLONG when
 * PATH does not fit, or any error of phos_client_call.
 */
int phos_client_restore_prepare(const char *sock, const struct phos_task_ref *t, char *path,
				size_t size, uint64_t *gen, int *wstatus, struct phos_err *e);

/* TASK_DONE {JOB STEP TASK UID STATUS}: the task ended with wait status
 * wstatus (phosd decides whether that makes it complete).  0 or -1. */
int phos_client_task_done(const char *sock, const struct phos_task_ref *t, int wstatus,
			  struct phos_err *e);

/* JOB_END {JOB, FLAGS}.  0 or -1 + errno, e. */
int phos_client_job_end(const char *sock, uint32_t job, uint64_t flags, struct phos_err *e);

#endif
