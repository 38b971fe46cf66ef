/*
 * gpu_feed - drive phos-gpu by itself, as phosd and phos-restore do, for
 * bench/storage.sh (on the fake driver: buffers are memfds).
 *
 *   gpu_feed save PHOS_GPU DIR NBUF MIB [CHANGED_PCT]
 *                              N buffers of random bytes handed to
 *                              "phos-gpu save" in DIR (into DIR/../chunks
 *                              if that exists); with CHANGED_PCT, the same
 *                              bytes but for that share of the chunks
 *   gpu_feed load PHOS_GPU DIR "phos-gpu load" of what is there
 *
 * GPU_FEED_ZSTD=LEVEL: save with phos-gpu's --zstd LEVEL; GPU_FEED_DATA=bf16:
 * bfloat16 weights instead of random bytes.
 * Prints "seconds S" (phos-gpu's whole run, fsync included) and relays
 * phos-gpu's last line; exit status is phos-gpu's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* GPU_FEED_DATA=bf16: four bfloat16 "model weights" about N(0, 0.02) (a
 * sum of uniforms) from one random word, instead of random bytes. */
static int bf16;

static uint64_t weights(uint64_t x)
{
	uint64_t out = 0;

	for (int j = 0; j < 4; j++) {
		uint32_t r = (uint32_t)(x >> (16 * j)) * 2654435761u;
		float g = ((float)(r & 0x3ff) + (float)((r >> 10) & 0x3ff) + (float)((r >> 20) & 0x3ff) -
			   1534.5f) / 886.0f * 0.02f;
		uint32_t f;

		memcpy(&f, &g, 4);
		out |= (uint64_t)(f >> 16) << (16 * j);
	}
	return out;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int run(char **argv, const int *fds, int nfds, const char *input, int sock, int mine)
{
	int in[2], st;
	double t0 = now();
	pid_t c;

	if (pipe(in) < 0)
		return 1;
	c = fork();
	if (c == 0) {
		int moved[256];

		for (int i = 0; i < nfds; i++)
			moved[i] = fcntl(fds[i], F_DUPFD, 300);
		dup2(in[0], 0);
		close(in[1]);
		for (int i = 0; i < nfds; i++)
			dup2(moved[i], 3 + i);
		if (sock >= 0)
			dup2(sock, 3);
		execv(argv[0], argv);
		perror(argv[0]);
		_exit(127);
	}
	close(in[0]);
	if (sock >= 0)
		close(sock);
	if (input && write(in[1], input, strlen(input)) < 0)
		perror("write");
	close(in[1]);
	if (mine >= 0) {
		char buf[65536];

		/* the GPU_DETACH message; its fds are dropped by read() */
		while (read(mine, buf, sizeof(buf)) > 0)
			;
	}
	waitpid(c, &st, 0);
	printf("seconds %.3f\n", now() - t0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

int main(int argc, char **argv)
{
	static int fds[256];
	static char input[256 * 64];
	size_t len = 0;

	if ((argc == 6 || argc == 7) && strcmp(argv[1], "save") == 0) {
		int n = atoi(argv[4]), pct = argc == 7 ? atoi(argv[6]) : 0;
		size_t sz = (size_t)atoi(argv[5]) << 20;
		const char *cm = getenv("PHOS_GPU_IO_CHUNK_MB");
		size_t chunk = (size_t)(cm && atoi(cm) > 0 ? atoi(cm) : 8) << 20;
		const char *zl = getenv("GPU_FEED_ZSTD");	/* phos-gpu --zstd LEVEL */
		char *args[] = { argv[2], "save", "1", zl ? "--zstd" : NULL, (char *)zl, NULL };
		uint64_t x = 88172645463325252ull;

		bf16 = getenv("GPU_FEED_DATA") && strcmp(getenv("GPU_FEED_DATA"), "bf16") == 0;

		if (n < 1 || n > 250 || sz == 0 || chdir(argv[3]) < 0) {
			perror("gpu_feed");
			return 2;
		}
		for (int i = 0; i < n; i++) {
			uint64_t *p;

			fds[i] = memfd_create("gpu_feed", MFD_CLOEXEC);
			if (fds[i] < 0 || ftruncate(fds[i], (off_t)sz) < 0 ||
			    (p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0)) ==
				    MAP_FAILED) {
				perror("memfd");
				return 1;
			}
			for (size_t k = 0; k < sz / 8; k++) {	/* xorshift: incompressible */
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				p[k] = x;
				if (bf16)
					p[k] = weights(x);
			}
			/* CHANGED_PCT: the same bytes as without it, but for one
			 * word in every (100 / CHANGED_PCT)-th chunk of phos-gpu's
			 * chunk size: what changed since the last checkpoint */
			for (size_t c = 0, per = (sz + chunk - 1) / chunk; pct > 0 && c < per; c++)
				if (((size_t)i * per + c) % (size_t)(100 / pct) == 0)
					p[c * chunk / 8] ^= 0x5a5a5a5a5a5a5a5aull;
			munmap(p, sz);
			len += (size_t)snprintf(input + len, sizeof(input) - len, "%#llx %zu 0\n",
						0x7f0000000000ull + (unsigned long long)i * sz, sz);
		}
		return run(args, fds, n, input, -1, -1);
	}
	if (argc == 4 && strcmp(argv[1], "load") == 0) {
		char *args[] = { argv[2], "load", "1", NULL };
		int sv[2];

		if (chdir(argv[3]) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
			perror("gpu_feed");
			return 2;
		}
		return run(args, NULL, 0, NULL, sv[1], sv[0]);
	}
	fprintf(stderr, "usage: gpu_feed save PHOS_GPU DIR NBUF MIB [CHANGED_PCT] | load PHOS_GPU "
		"DIR\n");
	return 2;
}
