/*
 * client.c - requests to phosd (see client.h).
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "err.h"
#include "proto.h"
#include "util.h"

#define SEQ 1

static struct phos_msg *put_task(struct phos_msg *m, const struct phos_task_ref *t)
{
	if (phos_msg_put_u64(m, PHOS_A_JOB, t->job) < 0 ||
	    phos_msg_put_u64(m, PHOS_A_STEP, t->step) < 0 ||
	    phos_msg_put_u64(m, PHOS_A_TASK, t->task) < 0 ||
	    phos_msg_put_u64(m, PHOS_A_UID, t->uid) < 0) {
		phos_msg_free(m);
		return NULL;
	}
	return m;
}

struct phos_msg *phos_client_register_msg(pid_t pid, const struct phos_task_ref *t,
					  uint32_t interval_s)
{
	struct phos_msg *m = phos_msg_new(PHOS_MSG_REGISTER, SEQ);

	if (!m)
		return NULL;
	if (phos_msg_put_u64(m, PHOS_A_PID, (uint64_t)pid) < 0 || !put_task(m, t))
		goto fail;
	if (phos_msg_put_u64(m, PHOS_A_GID, t->gid) < 0 ||
	    phos_msg_put_u64(m, PHOS_A_MS, (uint64_t)interval_s * 1000) < 0)
		goto fail;
	return m;
fail:
	phos_msg_free(m);
	return NULL;
}

struct phos_msg *phos_client_prepare_msg(const struct phos_task_ref *t)
{
	struct phos_msg *m = phos_msg_new(PHOS_MSG_RESTORE_PREPARE, SEQ);

	return m ? put_task(m, t) : NULL;
}

struct phos_msg *phos_client_job_end_msg(uint32_t job, uint64_t flags)
{
	struct phos_msg *m = phos_msg_new(PHOS_MSG_JOB_END, SEQ);

	if (!m)
		return NULL;
	if (phos_msg_put_u64(m, PHOS_A_JOB, job) < 0 ||
	    phos_msg_put_u64(m, PHOS_A_FLAGS, flags) < 0) {
		phos_msg_free(m);
		return NULL;
	}
	return m;
}

struct phos_msg *phos_client_call(const char *sock, const struct phos_msg *req, int timeout_ms,
				  struct phos_err *e)
{
	uint64_t deadline = phos_now_ms() + (uint64_t)timeout_ms;
	struct phos_msg *r = NULL;
	int fd;

	if ((fd = phos_unix_connect(sock)) < 0) {
		phos_errf(e, "cannot reach phosd at %s: %s (is phosd running on this node?)", sock,
			  strerror(errno));
		return NULL;
	}
	if (phos_msg_send(fd, req, NULL, 0) < 0) {
		phos_errf(e, "cannot send %s to phosd at %s: %s", phos_msg_type_name(req->type),
			  sock, strerror(errno));
		goto out;
	}
	for (;;) {
		uint64_t now = phos_now_ms();
		int left = now >= deadline ? 0 : (int)(deadline - now);

		if (!(r = phos_msg_recv(fd, left))) {
			if (errno == ETIMEDOUT)
				phos_errf(e, "phosd at %s did not answer %s within %d s", sock,
					  phos_msg_type_name(req->type), timeout_ms / 1000);
			else
				phos_errf(e, "no answer from phosd at %s to %s: %s", sock,
					  phos_msg_type_name(req->type), strerror(errno));
			goto out;
		}
		if (r->type == PHOS_MSG_REPLY && r->seq == req->seq)
			break;
		if (r->type != PHOS_MSG_PROGRESS) {
			phos_errnof(e, EPROTO, "phosd at %s sent a %s message where a REPLY was expected",
				    sock, phos_msg_type_name(r->type));
			phos_msg_free(r);
			r = NULL;
			goto out;
		}
		phos_msg_free(r);
		r = NULL;
	}
out:
	phos_closep(&fd);
	return r;
}

int phos_client_status(struct phos_msg *reply, struct phos_err *e)
{
	const char *msg;
	uint64_t err;

	if (phos_msg_get_u64(reply, PHOS_A_ERRNO, &err) < 0)
		return phos_errnof(e, EBADMSG, "phosd sent a REPLY without ERRNO");
	if (err == 0)
		return 0;
	if (err > 4095)		/* not an errno; keep errno meaningful */
		err = EIO;
	if (phos_msg_get_str(reply, PHOS_A_MSG, &msg) == 0 && msg[0])
		return phos_errnof(e, (int)err, "%s", msg);
	return phos_errnof(e, (int)err, "%s", strerror((int)err));
}

/* Send req (consumed) and check the REPLY's ERRNO; the reply goes to *out if wanted. */
static int call_checked(const char *sock, struct phos_msg *req, struct phos_msg **out,
			struct phos_err *e)
{
	struct phos_msg *r;
	int rc;

	if (!req)
		return phos_errf(e, "cannot build the request: %s", strerror(errno));
	r = phos_client_call(sock, req, PHOS_CLIENT_TIMEOUT_MS, e);
	phos_msg_free(req);
	if (!r)
		return -1;
	if ((rc = phos_client_status(r, e)) < 0 || !out)
		phos_msg_free(r);
	else
		*out = r;
	return rc;
}

int phos_client_register(const char *sock, pid_t pid, const struct phos_task_ref *t,
			 uint32_t interval_s, struct phos_err *e)
{
	return call_checked(sock, phos_client_register_msg(pid, t, interval_s), NULL, e);
}

int phos_client_restore_prepare(const char *sock, const struct phos_task_ref *t, char *path,
				size_t size, uint64_t *gen, int *wstatus, struct phos_err *e)
{
	struct phos_msg *req = phos_client_prepare_msg(t), *r;
	const char *p;
	uint64_t v;
	int rc = -1;

	if (!req)
		return phos_errf(e, "cannot build the request: %s", strerror(errno));
	r = phos_client_call(sock, req, PHOS_CLIENT_TIMEOUT_MS, e);
	phos_msg_free(req);
	if (!r)
		return -1;
	if (phos_client_status(r, e) < 0) {
		int err = errno;

		/* ECHILD: the task completed in an earlier run; STATUS says how */
		if (err == ECHILD && wstatus) {
			if (phos_msg_get_u64(r, PHOS_A_STATUS, &v) == 0)
				*wstatus = (int)v;
			else
				err = EBADMSG;
		}
		phos_msg_free(r);
		errno = err;
		return -1;
	}
	if (phos_msg_get_str(r, PHOS_A_PATH, &p) < 0 || p[0] != '/') {
		phos_errnof(e, EBADMSG, "phosd's answer to RESTORE_PREPARE has no image path");
		goto out;
	}
	if (phos_msg_get_u64(r, PHOS_A_GEN, gen) < 0) {
		phos_errnof(e, EBADMSG, "phosd's answer to RESTORE_PREPARE has no generation");
		goto out;
	}
	if (phos_strlcpy(path, p, size) < 0) {
		phos_errf(e, "image path from phosd is too long: %s", p);
		goto out;
	}
	rc = 0;
out:
	phos_msg_free(r);
	return rc;
}

struct phos_msg *phos_client_task_done_msg(const struct phos_task_ref *t, int wstatus)
{
	struct phos_msg *m = phos_msg_new(PHOS_MSG_TASK_DONE, SEQ);

	if (!m || !(m = put_task(m, t)))
		return NULL;
	if (phos_msg_put_u64(m, PHOS_A_STATUS, (uint64_t)(unsigned)wstatus) < 0) {
		phos_msg_free(m);
		return NULL;
	}
	return m;
}

int phos_client_task_done(const char *sock, const struct phos_task_ref *t, int wstatus,
			  struct phos_err *e)
{
	return call_checked(sock, phos_client_task_done_msg(t, wstatus), NULL, e);
}

int phos_client_job_end(const char *sock, uint32_t job, uint64_t flags, struct phos_err *e)
{
	return call_checked(sock, phos_client_job_end_msg(job, flags), NULL, e);
}
