/*
 * probe_busy.h - the "busy" rows of bench/pool_probe.c and
 * bench/hostpool_probe.c: a second process with a CUDA context of its own
 * copies 1 GiB device to pageable host memory over and over until killed
 * (the app's context being checkpointed by the driver beside phos-gpu's
 * copy).  It is the probe run again as "PROG --busy FD", since a fork of
 * a process with CUDA in it cannot use CUDA.  Included by each probe, so
 * that each still builds with one gcc line.
 */
#ifndef PHOS_PROBE_BUSY_H
#define PHOS_PROBE_BUSY_H

#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static void busy_ck(CUresult r, const char *prog, const char *what)
{
	const char *s = "?";

	if (r == CUDA_SUCCESS)
		return;
	cuGetErrorString(r, &s);
	fprintf(stderr, "%s: %s (busy): %s\n", prog, what, s);
	exit(2);
}

/* The busy process: "r" on fd once it copies, then copies until killed. */
static int busy_main(const char *prog, int fd)
{
	const size_t gib = (size_t)1 << 30;
	CUcontext c;
	CUdevice dev;
	CUdeviceptr d;
	void *h = malloc(gib);

	busy_ck(cuInit(0), prog, "cuInit");
	busy_ck(cuDeviceGet(&dev, 0), prog, "cuDeviceGet");
	busy_ck(cuDevicePrimaryCtxRetain(&c, dev), prog, "cuDevicePrimaryCtxRetain");
	busy_ck(cuCtxSetCurrent(c), prog, "cuCtxSetCurrent");
	busy_ck(cuMemAlloc(&d, gib), prog, "cuMemAlloc");
	if (!h)
		return 2;
	memset(h, 0, gib);
	if (write(fd, "r", 1) != 1)
		return 2;
	close(fd);
	for (;;)
		busy_ck(cuMemcpyDtoH(h, d, gib), prog, "cuMemcpyDtoH");
}

/* Start it (this program again, as prog) and wait until it copies: its
 * pid, or -1 when it could not be started or did not get that far. */
static pid_t busy_start(const char *prog)
{
	char arg[16], c;
	int p[2];
	pid_t pid;

	if (pipe(p) < 0)
		return -1;
	if ((pid = fork()) < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		close(p[0]);
		snprintf(arg, sizeof(arg), "%d", p[1]);
		execl("/proc/self/exe", prog, "--busy", arg, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	if (read(p[0], &c, 1) != 1)
		pid = -1;
	close(p[0]);
	return pid;
}

#endif
