/* Unit tests: wire protocol (common/proto.c). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "proto.h"

static struct phos_msg *sample(void)
{
	struct phos_msg *m = phos_msg_new(PHOS_MSG_CHECKPOINT, 42);

	assert_non_null(m);
	assert_int_equal(phos_msg_put_u64(m, PHOS_A_PID, 1234), 0);
	assert_int_equal(phos_msg_put_u64(m, PHOS_A_JOB, UINT64_MAX), 0);
	assert_int_equal(phos_msg_put_str(m, PHOS_A_PATH, "/nfs/phos/alice/7/0/0"), 0);
	assert_int_equal(phos_msg_put_str(m, PHOS_A_MSG, ""), 0);
	return m;
}

static void test_roundtrip(void **state)
{
	struct phos_msg *m = sample(), *d;
	uint8_t *buf;
	size_t n, used = 0;
	uint64_t v;
	const char *s;

	(void)state;
	assert_int_equal(phos_msg_encode(m, &buf, &n), 0);
	d = phos_msg_decode(buf, n, &used);
	assert_non_null(d);
	assert_int_equal(used, n);
	assert_int_equal(d->type, PHOS_MSG_CHECKPOINT);
	assert_int_equal(d->seq, 42);
	assert_int_equal(phos_msg_get_u64(d, PHOS_A_PID, &v), 0);
	assert_int_equal(v, 1234);
	assert_int_equal(phos_msg_get_u64(d, PHOS_A_JOB, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(phos_msg_get_str(d, PHOS_A_PATH, &s), 0);
	assert_string_equal(s, "/nfs/phos/alice/7/0/0");
	assert_int_equal(phos_msg_get_str(d, PHOS_A_MSG, &s), 0);
	assert_string_equal(s, "");
	/* absent tag, wrong size */
	assert_int_equal(phos_msg_get_u64(d, PHOS_A_UID, &v), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(phos_msg_get_u64(d, PHOS_A_PATH, &v), -1);
	assert_int_equal(errno, EBADMSG);
	assert_false(phos_msg_has(d, PHOS_A_UID));
	assert_true(phos_msg_has(d, PHOS_A_PID));
	phos_msg_free(d);
	phos_msg_free(NULL);
	phos_msg_free(m);
	free(buf);
}

/* Every strict prefix of a valid message is "need more bytes". */
static void test_truncated(void **state)
{
	struct phos_msg *m = sample();
	uint8_t *buf;
	size_t n;

	(void)state;
	assert_int_equal(phos_msg_encode(m, &buf, &n), 0);
	for (size_t k = 0; k < n; k++) {
		errno = 0;
		assert_null(phos_msg_decode(buf, k, NULL));
		assert_int_equal(errno, EAGAIN);
	}
	phos_msg_free(m);
	free(buf);
}

static void test_bad_header(void **state)
{
	struct phos_msg *m = sample();
	uint8_t *buf;
	size_t n;

	(void)state;
	assert_int_equal(phos_msg_encode(m, &buf, &n), 0);
	buf[0] ^= 0xff;				/* magic */
	assert_null(phos_msg_decode(buf, n, NULL));
	assert_int_equal(errno, EPROTO);
	buf[0] ^= 0xff;
	buf[4] = 2;				/* version */
	assert_null(phos_msg_decode(buf, n, NULL));
	assert_int_equal(errno, EPROTO);
	buf[4] = 1;
	/* declared length over the maximum: refused before reading it */
	buf[8] = 0xff; buf[9] = 0xff; buf[10] = 0xff; buf[11] = 0x7f;
	assert_null(phos_msg_decode(buf, n, NULL));
	assert_int_equal(errno, EMSGSIZE);
	phos_msg_free(m);
	free(buf);
}

static void test_bad_attrs(void **state)
{
	struct phos_msg *m = sample();
	uint8_t *buf;
	size_t n;

	(void)state;
	assert_int_equal(phos_msg_encode(m, &buf, &n), 0);
	/* first attr's length runs past the payload */
	buf[16 + 4] = 0xff; buf[16 + 5] = 0xff;
	assert_null(phos_msg_decode(buf, n, NULL));
	assert_int_equal(errno, EBADMSG);
	free(buf);
	assert_int_equal(phos_msg_encode(m, &buf, &n), 0);
	buf[16 + 2] = 1;			/* non-zero flags */
	assert_null(phos_msg_decode(buf, n, NULL));
	assert_int_equal(errno, EBADMSG);
	free(buf);
	assert_int_equal(phos_msg_encode(m, &buf, &n), 0);
	buf[16] = 0; buf[17] = 0;		/* tag 0 */
	assert_null(phos_msg_decode(buf, n, NULL));
	assert_int_equal(errno, EBADMSG);
	free(buf);
	phos_msg_free(m);

	/* a string with a NUL inside is refused by get_str */
	m = phos_msg_new(PHOS_MSG_REPLY, 1);
	assert_int_equal(phos_msg_put_blob(m, PHOS_A_MSG, "a\0b", 3), 0);
	const char *s;
	assert_int_equal(phos_msg_get_str(m, PHOS_A_MSG, &s), -1);
	assert_int_equal(errno, EBADMSG);
	phos_msg_free(m);
}

static void test_oversized(void **state)
{
	struct phos_msg *m = phos_msg_new(PHOS_MSG_STATUS, 1);
	char *big = malloc(PHOS_MSG_MAX);

	(void)state;
	memset(big, 'x', PHOS_MSG_MAX - 1);
	big[PHOS_MSG_MAX - 1] = '\0';
	/* an attribute that cannot fit in the payload */
	assert_int_equal(phos_msg_put_str(m, PHOS_A_TEXT, big), -1);
	assert_int_equal(errno, EMSGSIZE);
	assert_int_equal(m->len, 0);
	/* fill up to the limit exactly, then one more byte fails */
	big[PHOS_MSG_MAX - 8 - 1] = '\0';
	assert_int_equal(phos_msg_put_str(m, PHOS_A_TEXT, big), 0);
	assert_int_equal(m->len, PHOS_MSG_MAX - 1);
	assert_int_equal(phos_msg_put_u64(m, PHOS_A_PID, 1), -1);
	assert_int_equal(errno, EMSGSIZE);
	free(big);
	phos_msg_free(m);
}

/* Real socket: send with fds, receive in pieces, EOF, timeout. */
static void test_socket(void **state)
{
	int sv[2], fds[2];
	struct phos_msg *m = sample(), *r;
	struct stat a, b;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(phos_msg_send(sv[0], m, fds, 2), 0);
	r = phos_msg_recv(sv[1], 1000);
	assert_non_null(r);
	assert_int_equal(r->nfds, 2);
	assert_int_equal(fstat(fds[0], &a), 0);
	assert_int_equal(fstat(r->fds[0], &b), 0);
	assert_true(a.st_ino == b.st_ino);
	assert_true(fcntl(r->fds[0], F_GETFD) & FD_CLOEXEC);
	phos_msg_free(r);

	/* timeout with nothing sent */
	assert_null(phos_msg_recv(sv[1], 50));
	assert_int_equal(errno, ETIMEDOUT);

	/* a header split across writes, then EOF mid-payload */
	uint8_t *buf;
	size_t n;
	assert_int_equal(phos_msg_encode(m, &buf, &n), 0);
	assert_int_equal(write(sv[0], buf, 10), 10);
	assert_int_equal(write(sv[0], buf + 10, n - 15), (ssize_t)(n - 15));
	shutdown(sv[0], SHUT_WR);
	assert_null(phos_msg_recv(sv[1], 1000));
	assert_int_equal(errno, ECONNRESET);
	free(buf);
	close(sv[0]);
	close(sv[1]);
	close(fds[0]);
	close(fds[1]);
	phos_msg_free(m);
}

static void test_reply(void **state)
{
	struct phos_msg *m = phos_reply_new(7, ENOENT, "no image for job %d", 12);
	uint64_t v;
	const char *s;

	(void)state;
	assert_non_null(m);
	assert_int_equal(m->type, PHOS_MSG_REPLY);
	assert_int_equal(phos_msg_get_u64(m, PHOS_A_ERRNO, &v), 0);
	assert_int_equal(v, ENOENT);
	assert_int_equal(phos_msg_get_str(m, PHOS_A_MSG, &s), 0);
	assert_string_equal(s, "no image for job 12");
	phos_msg_free(m);
	m = phos_msg_new(PHOS_MSG_STATUS, 1);
	assert_int_equal(phos_msg_send(-1, m, NULL, PHOS_MAX_FDS + 1), -1);
	assert_int_equal(errno, EINVAL);
	phos_msg_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_bad_header),
		cmocka_unit_test(test_bad_attrs),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_socket),
		cmocka_unit_test(test_reply),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
