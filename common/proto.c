/*
 * proto.c - encode, decode, send and receive phosd messages.
 * See proto.h and doc/protocol.md.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "le.h"
#include "proto.h"
#include "util.h"

#define ATTR_HDR 8

struct phos_msg *phos_msg_new(uint16_t type, uint32_t seq)
{
	struct phos_msg *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->type = type;
	m->seq = seq;
	for (int i = 0; i < PHOS_MAX_FDS; i++)
		m->fds[i] = -1;
	return m;
}

void phos_msg_free(struct phos_msg *m)
{
	int saved = errno;

	if (!m)
		return;
	for (int i = 0; i < m->nfds; i++)
		phos_closep(&m->fds[i]);
	for (size_t i = 0; i < m->nstrs; i++)
		free(m->strs[i]);
	free(m->strs);
	free(m->buf);
	free(m);
	errno = saved;
}

static int reserve(struct phos_msg *m, size_t more)
{
	size_t need = m->len + more;
	uint8_t *nb;
	size_t cap;

	if (need > PHOS_MSG_MAX) {
		errno = EMSGSIZE;
		return -1;
	}
	if (need <= m->cap)
		return 0;
	cap = m->cap ? m->cap : 256;
	while (cap < need)
		cap *= 2;
	nb = realloc(m->buf, cap);
	if (!nb)
		return -1;
	m->buf = nb;
	m->cap = cap;
	return 0;
}

int phos_msg_put_blob(struct phos_msg *m, uint16_t tag, const void *p, size_t n)
{
	if (tag == 0 || n > PHOS_MSG_MAX) {
		errno = tag == 0 ? EINVAL : EMSGSIZE;
		return -1;
	}
	if (reserve(m, ATTR_HDR + n) < 0)
		return -1;
	phos_le_put16(m->buf + m->len, tag);
	phos_le_put16(m->buf + m->len + 2, 0);
	phos_le_put32(m->buf + m->len + 4, (uint32_t)n);
	if (n)
		memcpy(m->buf + m->len + ATTR_HDR, p, n);
	m->len += ATTR_HDR + n;
	return 0;
}

int phos_msg_put_u64(struct phos_msg *m, uint16_t tag, uint64_t v)
{
	uint8_t b[8];

	phos_le_put64(b, v);
	return phos_msg_put_blob(m, tag, b, sizeof(b));
}

int phos_msg_put_str(struct phos_msg *m, uint16_t tag, const char *s)
{
	return phos_msg_put_blob(m, tag, s, strlen(s));
}

/* Find the first attr with tag; the payload was validated by decode. */
static const uint8_t *find(const struct phos_msg *m, uint16_t tag, uint32_t *len)
{
	size_t off = 0;

	while (off + ATTR_HDR <= m->len) {
		uint16_t t = phos_le_get16(m->buf + off);
		uint32_t l = phos_le_get32(m->buf + off + 4);

		if (l > m->len - off - ATTR_HDR)
			return NULL;
		if (t == tag) {
			*len = l;
			return m->buf + off + ATTR_HDR;
		}
		off += ATTR_HDR + l;
	}
	return NULL;
}

bool phos_msg_has(const struct phos_msg *m, uint16_t tag)
{
	uint32_t l;

	return find(m, tag, &l) != NULL;
}

int phos_msg_get_u64(const struct phos_msg *m, uint16_t tag, uint64_t *v)
{
	uint32_t l;
	const uint8_t *p = find(m, tag, &l);

	if (!p) {
		errno = ENOENT;
		return -1;
	}
	if (l != 8) {
		errno = EBADMSG;
		return -1;
	}
	*v = phos_le_get64(p);
	return 0;
}

int phos_msg_get_blob(const struct phos_msg *m, uint16_t tag, const void **p, size_t *n)
{
	uint32_t l;
	const uint8_t *a = find(m, tag, &l);

	if (!a) {
		errno = ENOENT;
		return -1;
	}
	*p = a;
	*n = l;
	return 0;
}

void phos_gpubuf_put(uint8_t *p, const struct phos_gpubuf *b)
{
	phos_le_put64(p, b->va);
	phos_le_put64(p + 8, b->size);
	phos_le_put32(p + 16, b->dev);
	phos_le_put32(p + 20, b->rank);
}

void phos_gpubuf_get(const uint8_t *p, struct phos_gpubuf *b)
{
	b->va = phos_le_get64(p);
	b->size = phos_le_get64(p + 8);
	b->dev = phos_le_get32(p + 16);
	b->rank = phos_le_get32(p + 20);
}

int phos_msg_get_str(struct phos_msg *m, uint16_t tag, const char **s)
{
	uint32_t l;
	const uint8_t *p = find(m, tag, &l);
	char **strs, *copy;

	if (!p) {
		errno = ENOENT;
		return -1;
	}
	if (memchr(p, '\0', l)) {
		errno = EBADMSG;
		return -1;
	}
	copy = malloc((size_t)l + 1);
	if (!copy)
		return -1;
	memcpy(copy, p, l);
	copy[l] = '\0';
	strs = realloc(m->strs, (m->nstrs + 1) * sizeof(*strs));
	if (!strs) {
		free(copy);
		return -1;
	}
	m->strs = strs;
	m->strs[m->nstrs++] = copy;
	*s = copy;
	return 0;
}

int phos_msg_encode(const struct phos_msg *m, uint8_t **out, size_t *outlen)
{
	uint8_t *b;

	if (m->len > PHOS_MSG_MAX) {
		errno = EMSGSIZE;
		return -1;
	}
	b = malloc(PHOS_HDR_LEN + m->len);
	if (!b)
		return -1;
	phos_le_put32(b, PHOS_PROTO_MAGIC);
	phos_le_put16(b + 4, PHOS_PROTO_VERSION);
	phos_le_put16(b + 6, m->type);
	phos_le_put32(b + 8, (uint32_t)m->len);
	phos_le_put32(b + 12, m->seq);
	if (m->len)
		memcpy(b + PHOS_HDR_LEN, m->buf, m->len);
	*out = b;
	*outlen = PHOS_HDR_LEN + m->len;
	return 0;
}

/* Check the header in b[0..PHOS_HDR_LEN); returns the payload length. */
static int check_header(const uint8_t *b, uint32_t *len)
{
	if (phos_le_get32(b) != PHOS_PROTO_MAGIC || phos_le_get16(b + 4) != PHOS_PROTO_VERSION) {
		errno = EPROTO;
		return -1;
	}
	*len = phos_le_get32(b + 8);
	if (*len > PHOS_MSG_MAX) {
		errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

static int check_attrs(const uint8_t *p, size_t n)
{
	size_t off = 0;

	while (off < n) {
		uint32_t l;

		if (n - off < ATTR_HDR || phos_le_get16(p + off) == 0 || phos_le_get16(p + off + 2) != 0)
			goto bad;
		l = phos_le_get32(p + off + 4);
		if (l > n - off - ATTR_HDR)
			goto bad;
		off += ATTR_HDR + l;
	}
	return 0;
bad:
	errno = EBADMSG;
	return -1;
}

static struct phos_msg *build(const uint8_t *hdr, const uint8_t *payload, uint32_t len)
{
	struct phos_msg *m;

	if (check_attrs(payload, len) < 0)
		return NULL;
	m = phos_msg_new(phos_le_get16(hdr + 6), phos_le_get32(hdr + 12));
	if (!m)
		return NULL;
	if (len) {
		m->buf = malloc(len);
		if (!m->buf) {
			phos_msg_free(m);
			return NULL;
		}
		memcpy(m->buf, payload, len);
	}
	m->len = m->cap = len;
	return m;
}

struct phos_msg *phos_msg_decode(const uint8_t *buf, size_t n, size_t *used)
{
	uint32_t len;
	struct phos_msg *m;

	if (n < PHOS_HDR_LEN) {
		errno = EAGAIN;
		return NULL;
	}
	if (check_header(buf, &len) < 0)
		return NULL;
	if (n - PHOS_HDR_LEN < len) {
		errno = EAGAIN;
		return NULL;
	}
	m = build(buf, buf + PHOS_HDR_LEN, len);
	if (m && used)
		*used = PHOS_HDR_LEN + len;
	return m;
}

int phos_msg_send(int sock, const struct phos_msg *m, const int *fds, int nfds)
{
	uint8_t *b;
	size_t n, off = 0;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * PHOS_MAX_FDS)];
	} cm;

	if (nfds < 0 || nfds > PHOS_MAX_FDS) {
		errno = EINVAL;
		return -1;
	}
	if (phos_msg_encode(m, &b, &n) < 0)
		return -1;
	while (off < n) {
		struct iovec iov = { .iov_base = b + off, .iov_len = n - off };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t r;

		if (off == 0 && nfds > 0) {
			memset(&cm, 0, sizeof(cm));
			mh.msg_control = cm.buf;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
			memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
		}
		r = sendmsg(sock, &mh, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			free(b);
			return -1;
		}
		off += (size_t)r;
	}
	free(b);
	return 0;
}

static int wait_readable(int sock, int timeout_ms, uint64_t deadline)
{
	struct pollfd p = { .fd = sock, .events = POLLIN };
	int left, r;

	if (timeout_ms < 0)
		return 0;
	for (;;) {
		uint64_t now = phos_now_ms();

		left = now >= deadline ? 0 : (int)(deadline - now);
		r = poll(&p, 1, left);
		if (r > 0)
			return 0;
		if (r == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (errno != EINTR)
			return -1;
	}
}

/* Read exactly n bytes, collecting any SCM_RIGHTS fds into m_fds. */
static int recv_exact(int sock, uint8_t *b, size_t n, int *fds, int *nfds,
		      int timeout_ms, uint64_t deadline)
{
	size_t off = 0;

	while (off < n) {
		struct iovec iov = { .iov_base = b + off, .iov_len = n - off };
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int) * PHOS_MAX_FDS)];
		} cm;
		struct msghdr mh = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = cm.buf, .msg_controllen = sizeof(cm.buf),
		};
		ssize_t r;

		if (wait_readable(sock, timeout_ms, deadline) < 0)
			return -1;
		r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			int *in = (int *)(void *)CMSG_DATA(c);

			for (int i = 0; i < k; i++) {
				if (*nfds < PHOS_MAX_FDS)
					fds[(*nfds)++] = in[i];
				else
					close(in[i]);
			}
		}
		if (mh.msg_flags & MSG_CTRUNC) {
			errno = EMSGSIZE;
			return -1;
		}
		if (r == 0) {
			errno = ECONNRESET;
			return -1;
		}
		off += (size_t)r;
	}
	return 0;
}

struct phos_msg *phos_msg_recv(int sock, int timeout_ms)
{
	uint8_t hdr[PHOS_HDR_LEN];
	uint8_t *payload = NULL;
	int fds[PHOS_MAX_FDS], nfds = 0;
	uint64_t deadline = timeout_ms < 0 ? 0 : phos_now_ms() + (uint64_t)timeout_ms;
	struct phos_msg *m = NULL;
	uint32_t len;

	if (recv_exact(sock, hdr, sizeof(hdr), fds, &nfds, timeout_ms, deadline) < 0)
		goto fail;
	if (check_header(hdr, &len) < 0)
		goto fail;
	if (len) {
		payload = malloc(len);
		if (!payload)
			goto fail;
		if (recv_exact(sock, payload, len, fds, &nfds, timeout_ms, deadline) < 0)
			goto fail;
	}
	m = build(hdr, payload, len);
	if (!m)
		goto fail;
	free(payload);
	memcpy(m->fds, fds, sizeof(int) * (size_t)nfds);
	m->nfds = nfds;
	return m;
fail:
	free(payload);
	for (int i = 0; i < nfds; i++)
		phos_closep(&fds[i]);
	return NULL;
}

struct phos_msg *phos_reply_new(uint32_t seq, int err, const char *fmt, ...)
{
	struct phos_msg *m = phos_msg_new(PHOS_MSG_REPLY, seq);
	char buf[1024];
	va_list ap;

	if (!m)
		return NULL;
	if (phos_msg_put_u64(m, PHOS_A_ERRNO, (uint64_t)err) < 0)
		goto fail;
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);
		if (phos_msg_put_str(m, PHOS_A_MSG, buf) < 0)
			goto fail;
	}
	return m;
fail:
	phos_msg_free(m);
	return NULL;
}

const char *phos_msg_type_name(uint16_t type)
{
	switch (type) {
	case PHOS_MSG_REPLY: return "reply";
	case PHOS_MSG_PROGRESS: return "progress";
	case PHOS_MSG_STATUS: return "status";
	case PHOS_MSG_LIST: return "list";
	case PHOS_MSG_REGISTER: return "register";
	case PHOS_MSG_UNREGISTER: return "unregister";
	case PHOS_MSG_CHECKPOINT: return "checkpoint";
	case PHOS_MSG_RESTORE: return "restore";
	case PHOS_MSG_CANCEL: return "cancel";
	case PHOS_MSG_JOB_END: return "job-end";
	case PHOS_MSG_RESTORE_PREPARE: return "restore-prepare";
	case PHOS_MSG_RESTORE_DONE: return "restore-done";
	case PHOS_MSG_TASK_DONE: return "task-done";
	case PHOS_MSG_GPU_DETACH: return "gpu-detach";
	case PHOS_MSG_GPU_REATTACH: return "gpu-reattach";
	case PHOS_MSG_STAGE_GET: return "stage-get";
	default: return "unknown";
	}
}
