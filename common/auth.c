/*
 * auth.c - munge credentials around message payloads.
 */
#include "config.h"

#include <errno.h>
#include <munge.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

static munge_ctx_t ctx_for(const char *socket, struct phos_err *e)
{
	munge_ctx_t ctx = munge_ctx_create();

	if (!ctx) {
		phos_errnof(e, ENOMEM, "cannot create a munge context");
		return NULL;
	}
	if (socket && *socket && munge_ctx_set(ctx, MUNGE_OPT_SOCKET, socket) != EMUNGE_SUCCESS) {
		phos_errnof(e, EINVAL, "munge socket %s: %s", socket, munge_ctx_strerror(ctx));
		munge_ctx_destroy(ctx);
		return NULL;
	}
	return ctx;
}

struct phos_msg *phos_auth_wrap(const struct phos_msg *m, const char *socket, struct phos_err *e)
{
	munge_ctx_t ctx = ctx_for(socket, e);
	struct phos_msg *w = NULL;
	char *cred = NULL;
	munge_err_t rc;

	if (!ctx)
		return NULL;
	rc = munge_encode(&cred, ctx, m->buf, (int)m->len);
	if (rc != EMUNGE_SUCCESS) {
		phos_errnof(e, EPERM, "munge: %s (is munged running%s%s?)", munge_strerror(rc),
			    socket ? " on " : "", socket ? socket : "");
		goto out;
	}
	w = phos_msg_new(m->type, m->seq);
	if (!w || phos_msg_put_str(w, PHOS_A_MUNGE, cred) < 0) {
		phos_errf(e, "cannot build the request: %s", strerror(errno));
		phos_msg_free(w);
		w = NULL;
	}
out:
	free(cred);
	munge_ctx_destroy(ctx);
	return w;
}

struct phos_msg *phos_auth_unwrap(struct phos_msg *m, const char *socket, uid_t *uid, gid_t *gid,
				  struct phos_err *e)
{
	munge_ctx_t ctx;
	const char *cred;
	void *payload = NULL;
	int len = 0;
	munge_err_t rc;
	struct phos_msg *inner = NULL;
	uint8_t *frame = NULL;
	size_t flen, used;

	if (phos_msg_get_str(m, PHOS_A_MUNGE, &cred) < 0) {
		phos_errnof(e, EBADMSG, "remote requests must carry a munge credential");
		return NULL;
	}
	ctx = ctx_for(socket, e);
	if (!ctx)
		return NULL;
	rc = munge_decode(cred, ctx, &payload, &len, uid, gid);
	munge_ctx_destroy(ctx);
	if (rc != EMUNGE_SUCCESS) {
		phos_errnof(e, EPERM, "munge credential refused: %s", munge_strerror(rc));
		free(payload);
		return NULL;
	}
	/* Re-frame the inner payload under the outer header and decode it:
	 * the same checks as any message. */
	struct phos_msg hdr = { .type = m->type, .seq = m->seq, .len = (size_t)len,
				.buf = payload };
	if (phos_msg_encode(&hdr, &frame, &flen) == 0)
		inner = phos_msg_decode(frame, flen, &used);
	if (!inner)
		phos_errnof(e, EBADMSG, "malformed request inside the munge credential");
	free(frame);
	free(payload);
	return inner;
}
