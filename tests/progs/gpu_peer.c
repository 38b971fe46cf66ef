/*
 * gpu_peer - plays libphos and phos-restore against a real phosd for the
 * GPU detach/reattach protocol (doc/protocol.md, "GPU memory"), with
 * memfds standing in for exported GPU buffers (no GPU needed):
 *
 *   gpu_peer detach SOCK        unsolicited GPU_DETACH with one buffer:
 *                               prints "errno N"
 *   gpu_peer reattach SOCK      unsolicited GPU_REATTACH: prints "errno N"
 *   gpu_peer wait SOCK          prints "pid P", waits (20 s at most) for
 *                               phosd's REATTACH signal, takes the buffers
 *                               with GPU_REATTACH and checks their bytes:
 *                               prints "reattached N ok" or why not
 *   gpu_peer offer SOCK PID N   as phos-restore: N memfd buffers for PID
 *                               (GPU_DETACH + PID); prints "errno N"
 *   gpu_peer badoffer SOCK PID  the same with 2 records and 1 fd
 *
 * Buffer i holds bytes (i * 31 + k) & 0xff at offset k, and sits at the
 * made-up address 0x7f0000000000 + i * 2 MiB.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto.h"
#include "util.h"

#define BUF_SIZE (2u << 20)
#define BUF_VA(i) (0x7f0000000000ull + (uint64_t)(i) * BUF_SIZE)

static volatile sig_atomic_t got;

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	got = si->si_value.sival_int;
}

/* Send m on a new connection to sock, with fds; print the answer's errno.
 * Returns the answer (kept when asked for). */
static struct phos_msg *ask(const char *sock, struct phos_msg *m, const int *fds, int n,
			    bool keep)
{
	struct phos_msg *r = NULL;
	uint64_t err = 9999;
	int fd = phos_unix_connect(sock);

	if (fd < 0 || phos_msg_send(fd, m, fds, n) < 0 || !(r = phos_msg_recv(fd, 90000))) {
		printf("errno -1 (%s)\n", strerror(errno));
		exit(1);
	}
	close(fd);
	phos_msg_get_u64(r, PHOS_A_ERRNO, &err);
	if (!keep) {
		const char *why = "";

		phos_msg_get_str(r, PHOS_A_MSG, &why);
		printf("errno %llu %s\n", (unsigned long long)err, why);
		phos_msg_free(r);
		return NULL;
	}
	return r;
}

static int make_bufs(struct phos_msg *m, int *fds, int n)
{
	uint8_t rec[PHOS_GPUBUF_MAX * PHOS_GPUBUF_LEN];

	for (int i = 0; i < n; i++) {
		struct phos_gpubuf b = { .va = BUF_VA(i), .size = BUF_SIZE, .dev = 0 };
		uint8_t *p;

		fds[i] = memfd_create("gpu_peer", MFD_CLOEXEC);
		if (fds[i] < 0 || ftruncate(fds[i], BUF_SIZE) < 0)
			return -1;
		p = mmap(NULL, BUF_SIZE, PROT_WRITE, MAP_SHARED, fds[i], 0);
		if (p == MAP_FAILED)
			return -1;
		for (size_t k = 0; k < BUF_SIZE; k++)
			p[k] = (uint8_t)((i * 31 + k) & 0xff);
		munmap(p, BUF_SIZE);
		phos_gpubuf_put(rec + (size_t)i * PHOS_GPUBUF_LEN, &b);
	}
	return phos_msg_put_u64(m, PHOS_A_ERRNO, 0) < 0 ||
	       phos_msg_put_blob(m, PHOS_A_GPUBUFS, rec, (size_t)n * PHOS_GPUBUF_LEN) < 0 ? -1 : 0;
}

static int wait_mode(const char *sock)
{
	struct sigaction sa = { .sa_sigaction = on_rt, .sa_flags = SA_SIGINFO };
	struct phos_msg *m, *r;
	const void *blob;
	size_t len;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGRTMIN + PHOS_SIGNAL_OFFSET, &sa, NULL);
	printf("pid %d\n", (int)getpid());
	fflush(stdout);
	for (int i = 0; i < 200 && got != PHOS_SIGVAL_REATTACH; i++)
		poll(NULL, 0, 100);
	if (got != PHOS_SIGVAL_REATTACH) {
		printf("no REATTACH signal\n");
		return 1;
	}
	m = phos_msg_new(PHOS_MSG_GPU_REATTACH, 1);
	r = ask(sock, m, NULL, 0, true);
	phos_msg_free(m);
	if (phos_msg_get_blob(r, PHOS_A_GPUBUFS, &blob, &len) < 0 ||
	    len != (size_t)r->nfds * PHOS_GPUBUF_LEN || r->nfds == 0) {
		printf("bad answer: %d fds, %zu record bytes\n", r->nfds, len);
		return 1;
	}
	for (int i = 0; i < r->nfds; i++) {
		struct phos_gpubuf b;
		const uint8_t *p;

		phos_gpubuf_get((const uint8_t *)blob + (size_t)i * PHOS_GPUBUF_LEN, &b);
		p = mmap(NULL, BUF_SIZE, PROT_READ, MAP_SHARED, r->fds[i], 0);
		if (b.va != BUF_VA(i) || b.size != BUF_SIZE || p == MAP_FAILED) {
			printf("buffer %d: wrong record or fd\n", i);
			return 1;
		}
		for (size_t k = 0; k < BUF_SIZE; k++)
			if (p[k] != (uint8_t)((i * 31 + k) & 0xff)) {
				printf("buffer %d: byte %zu differs\n", i, k);
				return 1;
			}
		munmap((void *)p, BUF_SIZE);
	}
	printf("reattached %d ok\n", r->nfds);
	phos_msg_free(r);
	return 0;
}

int main(int argc, char **argv)
{
	int fds[PHOS_GPUBUF_MAX], n = 1;
	struct phos_msg *m;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3) {
		fprintf(stderr, "usage: gpu_peer detach|reattach|wait SOCK | offer SOCK PID N | "
			"badoffer SOCK PID\n");
		return 2;
	}
	if (strcmp(argv[1], "wait") == 0)
		return wait_mode(argv[2]);
	if (strcmp(argv[1], "reattach") == 0) {
		m = phos_msg_new(PHOS_MSG_GPU_REATTACH, 1);
		ask(argv[2], m, NULL, 0, false);
		phos_msg_free(m);
		return 0;
	}
	m = phos_msg_new(PHOS_MSG_GPU_DETACH, 1);
	bool bad = strcmp(argv[1], "badoffer") == 0;
	if (strcmp(argv[1], "offer") == 0 || bad) {
		if (argc != (bad ? 4 : 5))
			return 2;
		n = bad ? 2 : atoi(argv[4]);
		if (n < 1 || n > 8 || phos_msg_put_u64(m, PHOS_A_PID, strtoull(argv[3], NULL, 10)) < 0)
			return 2;
	} else if (strcmp(argv[1], "detach") != 0) {
		return 2;
	}
	if (make_bufs(m, fds, n) < 0) {
		perror("gpu_peer: buffers");
		return 1;
	}
	ask(argv[2], m, fds, bad ? 1 : n, false);
	phos_msg_free(m);
	return 0;
}
