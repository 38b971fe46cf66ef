/*
 * hostpool_probe.c - can the staging pool be host memory the driver pins
 * once, held by phosd as file descriptors, with no process keeping a CUDA
 * context for it?  (doc/concurrent-checkpoint.md, "A pool pinned ahead",
 * way A.)  Issue [6]: the copy into memory pinned beforehand ran at 54-55
 * GB/s where pinning on the way gives 18-36.
 *
 * Steps, each printed as it passes or with the CUDA error that stopped it:
 *   1. the device's attributes: HOST_NUMA virtual memory management,
 *      POSIX fd handles, the host NUMA node next to it
 *   2. a creator process (its own context) makes GIB GiB of
 *      CU_MEM_LOCATION_TYPE_HOST_NUMA memory exportable as a POSIX fd,
 *      in 1 GiB pieces, exports the fds, passes them over a socket and
 *      exits: the time that takes is the pinning paid once (phosd's start)
 *   3. what the fds are (readlink of /proc/self/fd/N) and whether flock()
 *      works on them (phosd counts a pool's borrowers with flock); then
 *      this process, after the creator is gone, imports the fds, maps them
 *      with device and host (HOST_NUMA) access: the memory outlived its
 *      creator, as the app's GPU buffers outlive the app while phosd holds
 *      their fds
 *   4. the CPU writes and reads the mapping (phase 2 hashes and writes the
 *      chunks from it)
 *   5. GIB GiB of device buffers copied into it by THREADS threads, a
 *      stream each, 64 MiB pieces, nothing pinned on the way: GB/s, alone
 *      and with a second context copying device to pageable memory beside
 *      (the app's driver checkpoint); the bytes checked by the CPU
 *   6. back to the device (a restore from the pool on the same node)
 *   7. the CPU reads the pool after the last context is released (phos-gpu
 *      lets go of its contexts before it writes the pool to storage)
 *   8. what mapping the pool costs a process (phos-gpu maps it at every
 *      staged checkpoint, on the way to "GPU free"): import and map, device
 *      access and host access timed apart; the same by THREADS threads a
 *      piece each; a copy into a mapping with device access only, host
 *      access granted after it, the CPU reading what was copied
 *
 *   hostpool_probe [GIB [THREADS]]      (defaults 32 8)
 * Prints "HOSTPOOL step=... ok|FAIL ..." lines and DONE.  Needs GIB GiB
 * of free host memory.  Build: gcc -O2 -pthread -I$CUDA/include
 * bench/hostpool_probe.c -o hostpool_probe -L$CUDA/lib64/stubs -lcuda
 */
#define _GNU_SOURCE
#include <cuda.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "probe_busy.h"

#define GIB ((size_t)1 << 30)
#define PIECE ((size_t)64 << 20)
#define MAX_GIB 512
#define MAX_THREADS 64

static unsigned ngib, nthreads;
static CUcontext ctx;
static CUdeviceptr dev_buf[MAX_GIB];	/* the source: device buffers */
static CUdeviceptr pool;		/* the pool, mapped here */
static size_t next_piece;
static int copy_up;			/* 0: device -> pool, 1: pool -> device */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void ck(CUresult r, const char *step, const char *what)
{
	const char *s = NULL;

	if (r == CUDA_SUCCESS)
		return;
	cuGetErrorString(r, &s);
	printf("HOSTPOOL step=%s FAIL %s: %s (%d)\nDONE\n", step, what, s ? s : "?", (int)r);
	exit(1);
}

/* Send or receive n fds over a unix socket. */
static int send_fds(int sock, const int *fds, unsigned n)
{
	char c = 'f';
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	char cbuf[CMSG_SPACE(sizeof(int) * 64)];
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = CMSG_SPACE(sizeof(int) * n) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
	return sendmsg(sock, &mh, 0) == 1 ? 0 : -1;
}

static int recv_fds(int sock, int *fds, unsigned n)
{
	char c;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	char cbuf[CMSG_SPACE(sizeof(int) * 64)];
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = CMSG_SPACE(sizeof(int) * n) };
	struct cmsghdr *cm;

	if (recvmsg(sock, &mh, 0) != 1 || !(cm = CMSG_FIRSTHDR(&mh)) ||
	    cm->cmsg_len != CMSG_LEN(sizeof(int) * n))
		return -1;
	memcpy(fds, CMSG_DATA(cm), sizeof(int) * n);
	return 0;
}

static int numa_id(CUdevice dev)
{
	int id = -1;

	if (cuDeviceGetAttribute(&id, CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID, dev) != CUDA_SUCCESS || id < 0)
		id = 0;
	return id;
}

/* Step 2, in a process of its own: make the pool, hand over its fds (up
 * to 64 per message), exit. */
static int creator(int sock)
{
	CUdevice dev;
	CUcontext c;
	double t0 = now();
	int fds[MAX_GIB];

	ck(cuInit(0), "create", "cuInit");
	ck(cuDeviceGet(&dev, 0), "create", "cuDeviceGet");
	ck(cuDevicePrimaryCtxRetain(&c, dev), "create", "cuDevicePrimaryCtxRetain");
	ck(cuCtxSetCurrent(c), "create", "cuCtxSetCurrent");
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
		.location = { .type = CU_MEM_LOCATION_TYPE_HOST_NUMA, .id = numa_id(dev) },
	};
	size_t gran = 0;

	ck(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM), "create",
	   "cuMemGetAllocationGranularity (HOST_NUMA, POSIX fd)");
	for (unsigned i = 0; i < ngib; i++) {
		CUmemGenericAllocationHandle h;

		ck(cuMemCreate(&h, GIB, &prop, 0), "create", "cuMemCreate (HOST_NUMA, POSIX fd)");
		ck(cuMemExportToShareableHandle(&fds[i], h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
		   "create", "cuMemExportToShareableHandle");
		ck(cuMemRelease(h), "create", "cuMemRelease");	/* the fd holds it now */
	}
	printf("HOSTPOOL step=create ok GiB=%u seconds=%.3f granularity_KiB=%zu numa=%d "
	       "(made, pinned and exported by a process that exits now)\n", ngib, now() - t0,
	       gran >> 10, prop.location.id);
	fflush(stdout);
	for (unsigned i = 0; i < ngib; i += 64) {
		unsigned k = ngib - i < 64 ? ngib - i : 64;

		if (send_fds(sock, fds + i, k) < 0) {
			printf("HOSTPOOL step=create FAIL sending the fds: %s\nDONE\n", strerror(errno));
			return 1;
		}
	}
	return 0;
}

static void *worker(void *arg)
{
	CUstream s;
	size_t per = GIB / PIECE;

	(void)arg;
	ck(cuCtxSetCurrent(ctx), "copy", "cuCtxSetCurrent");
	ck(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "copy", "cuStreamCreate");
	for (;;) {
		size_t k = __atomic_fetch_add(&next_piece, 1, __ATOMIC_RELAXED);
		size_t b = k / per, off = (k % per) * PIECE;

		if (b >= ngib)
			break;
		if (copy_up)
			ck(cuMemcpyAsync(dev_buf[b] + off, pool + b * GIB + off, PIECE, s), "copy",
			   "cuMemcpyAsync (pool to device)");
		else
			ck(cuMemcpyAsync(pool + b * GIB + off, dev_buf[b] + off, PIECE, s), "copy",
			   "cuMemcpyAsync (device to pool)");
		ck(cuStreamSynchronize(s), "copy", "cuStreamSynchronize");
	}
	ck(cuStreamDestroy(s), "copy", "cuStreamDestroy");
	return NULL;
}

/* fn on THREADS threads until each returns: the seconds that took */
static double run_threads(void *(*fn)(void *))
{
	pthread_t th[MAX_THREADS];
	double t0 = now();

	for (unsigned t = 0; t < nthreads; t++)
		if (pthread_create(&th[t], NULL, fn, NULL) != 0)
			exit(2);
	for (unsigned t = 0; t < nthreads; t++)
		pthread_join(th[t], NULL);
	return now() - t0;
}

static double copy_all(int up, int with_busy)
{
	pid_t bp = with_busy ? busy_start("hostpool_probe") : 0;
	double t0;

	if (bp < 0) {
		printf("HOSTPOOL step=busy FAIL the busy process did not start\nDONE\n");
		exit(2);
	}
	copy_up = up;
	next_piece = 0;
	t0 = run_threads(worker);
	if (bp) {
		kill(bp, SIGKILL);
		waitpid(bp, NULL, 0);
	}
	return (double)ngib * (double)GIB / 1e9 / t0;
}

/* Step 8: the pool mapped again from its fds, in a reservation of its own;
 * the seconds of each part added to t[0] (import, map), t[1] (device
 * access), t[2] (host access, when host). */
static int *map_fds;
static CUdeviceptr map_base;
static size_t next_map;
static CUdevice map_dev;

static void map_one(unsigned i, double *t, int host)
{
	CUmemGenericAllocationHandle h;
	CUmemAccessDesc dacc = { .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = map_dev },
				 .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUmemAccessDesc hacc = { .location = { .type = CU_MEM_LOCATION_TYPE_HOST_NUMA,
					       .id = numa_id(map_dev) },
				 .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	double t0 = now();

	ck(cuMemImportFromShareableHandle(&h, (void *)(intptr_t)map_fds[i],
					  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR), "mapcost",
	   "cuMemImportFromShareableHandle");
	ck(cuMemMap(map_base + i * GIB, GIB, 0, h, 0), "mapcost", "cuMemMap");
	ck(cuMemRelease(h), "mapcost", "cuMemRelease");
	double t1 = now();

	ck(cuMemSetAccess(map_base + i * GIB, GIB, &dacc, 1), "mapcost", "cuMemSetAccess (device)");
	double t2 = now();

	if (host)
		ck(cuMemSetAccess(map_base + i * GIB, GIB, &hacc, 1), "mapcost",
		   "cuMemSetAccess (host)");
	t[0] += t1 - t0;
	t[1] += t2 - t1;
	t[2] += now() - t2;
}

static void *mapper(void *arg)
{
	double t[3] = { 0, 0, 0 };

	(void)arg;
	ck(cuCtxSetCurrent(ctx), "mapcost", "cuCtxSetCurrent");
	for (size_t i; (i = __atomic_fetch_add(&next_map, 1, __ATOMIC_RELAXED)) < ngib;)
		map_one((unsigned)i, t, 0);
	return NULL;
}

static void unmap_pool(CUdeviceptr base)
{
	ck(cuMemUnmap(base, ngib * GIB), "mapcost", "cuMemUnmap");
	ck(cuMemAddressFree(base, ngib * GIB), "mapcost", "cuMemAddressFree");
}

static void map_costs(int *fds, CUdevice dev)
{
	double t[3] = { 0, 0, 0 }, t0;

	map_fds = fds;
	map_dev = dev;
	/* one thread, piece by piece, host access too */
	ck(cuMemAddressReserve(&map_base, ngib * GIB, 0, 0, 0), "mapcost", "cuMemAddressReserve");
	t0 = now();
	for (unsigned i = 0; i < ngib; i++)
		map_one(i, t, 1);
	printf("HOSTPOOL step=mapcost ok seconds=%.3f import_map=%.3f device_access=%.3f "
	       "host_access=%.3f GiB=%u threads=1\n", now() - t0, t[0], t[1], t[2], ngib);
	unmap_pool(map_base);
	/* THREADS threads, device access only */
	ck(cuMemAddressReserve(&map_base, ngib * GIB, 0, 0, 0), "mapcost", "cuMemAddressReserve");
	next_map = 0;
	printf("HOSTPOOL step=mapcost ok seconds=%.3f device access only, GiB=%u threads=%u\n",
	       run_threads(mapper), ngib, nthreads);
	/* a copy into that mapping (no host access yet), then host access:
	 * does the CPU see what the device wrote? */
	CUdeviceptr keep = pool;
	CUmemAccessDesc hacc = { .location = { .type = CU_MEM_LOCATION_TYPE_HOST_NUMA,
					       .id = numa_id(dev) },
				 .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };

	pool = map_base;
	double gbs = copy_all(0, 0);

	t0 = now();
	CUresult hr = cuMemSetAccess(map_base, ngib * GIB, &hacc, 1);
	double th_s = now() - t0;
	int good = hr == CUDA_SUCCESS;
	const volatile uint32_t *w = (const volatile uint32_t *)(uintptr_t)map_base;

	for (unsigned i = 0; i < ngib && good; i++)
		good = w[i * (GIB / 4)] == 0x01020304u + i &&
		       w[i * (GIB / 4) + GIB / 4 - 1] == 0x01020304u + i;
	printf("HOSTPOOL step=device-only %s copy GB/s=%.2f with device access only; host access "
	       "after it in %.3f s (%s); the CPU reads what the device wrote\n", good ? "ok" : "FAIL",
	       gbs, th_s, hr == CUDA_SUCCESS ? "granted" : "refused");
	pool = keep;
	unmap_pool(map_base);
}

int main(int argc, char **argv)
{
	int sv[2], fds[MAX_GIB], st = 0, v141 = -1, v103 = -1;
	CUdevice dev;
	pid_t cp;

	if (argc == 3 && strcmp(argv[1], "--busy") == 0)
		return busy_main("hostpool_probe", atoi(argv[2]));
	ngib = argc > 1 ? (unsigned)atoi(argv[1]) : 32;
	nthreads = argc > 2 ? (unsigned)atoi(argv[2]) : 8;
	if (!ngib || ngib > MAX_GIB || !nthreads || nthreads > MAX_THREADS) {
		fprintf(stderr, "usage: hostpool_probe [GIB (1-%d) [THREADS (1-%d)]]\n", MAX_GIB,
			MAX_THREADS);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* the creator first: CUDA must not be initialized in a process that
	 * forks a CUDA user */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 || (cp = fork()) < 0)
		return 2;
	if (cp == 0) {
		close(sv[0]);
		_exit(creator(sv[1]));
	}
	close(sv[1]);
	for (unsigned i = 0; i < ngib; i += 64) {
		unsigned k = ngib - i < 64 ? ngib - i : 64;

		if (recv_fds(sv[0], fds + i, k) < 0) {
			waitpid(cp, &st, 0);
			printf("HOSTPOOL step=create FAIL no fds from the creator (it exited with %d)\n"
			       "DONE\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
			return 1;
		}
	}
	waitpid(cp, &st, 0);
	printf("HOSTPOOL step=creator-gone ok (exit %d): the pool is held by %u fds only\n",
	       WIFEXITED(st) ? WEXITSTATUS(st) : -1, ngib);

	char self[64], what[256] = "";
	ssize_t wl;

	snprintf(self, sizeof(self), "/proc/self/fd/%d", fds[0]);
	wl = readlink(self, what, sizeof(what) - 1);
	what[wl > 0 ? wl : 0] = '\0';
	int fl = flock(fds[0], LOCK_SH | LOCK_NB);

	printf("HOSTPOOL step=fd ok it is '%s'; flock: %s\n", what,
	       fl == 0 ? "works" : strerror(errno));
	if (fl == 0)
		flock(fds[0], LOCK_UN);

	ck(cuInit(0), "import", "cuInit");
	ck(cuDeviceGet(&dev, 0), "import", "cuDeviceGet");
	cuDeviceGetAttribute(&v141, CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
			     dev);
	cuDeviceGetAttribute(&v103, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
			     dev);
	printf("HOSTPOOL step=attributes ok host_numa_vmm=%d posix_fd=%d numa=%d\n", v141, v103,
	       numa_id(dev));
	ck(cuDevicePrimaryCtxRetain(&ctx, dev), "import", "cuDevicePrimaryCtxRetain");
	ck(cuCtxSetCurrent(ctx), "import", "cuCtxSetCurrent");

	/* step 3: import and map, device and host access */
	double t0 = now();
	CUmemAccessDesc acc[2] = {
		{ .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev },
		  .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE },
		{ .location = { .type = CU_MEM_LOCATION_TYPE_HOST_NUMA, .id = numa_id(dev) },
		  .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE },
	};

	ck(cuMemAddressReserve(&pool, ngib * GIB, 0, 0, 0), "import", "cuMemAddressReserve");
	for (unsigned i = 0; i < ngib; i++) {
		CUmemGenericAllocationHandle h;

		ck(cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fds[i],
						  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
		   "import", "cuMemImportFromShareableHandle");
		ck(cuMemMap(pool + i * GIB, GIB, 0, h, 0), "import", "cuMemMap");
		ck(cuMemRelease(h), "import", "cuMemRelease");
	}
	ck(cuMemSetAccess(pool, ngib * GIB, &acc[0], 1), "import", "cuMemSetAccess (device)");
	CUresult hr = cuMemSetAccess(pool, ngib * GIB, &acc[1], 1);
	printf("HOSTPOOL step=import ok seconds=%.3f; host access: %s\n", now() - t0,
	       hr == CUDA_SUCCESS ? "granted" : "refused (the CPU cannot use the mapping)");

	/* step 4: the CPU writes and reads it */
	int cpu = hr == CUDA_SUCCESS;
	if (cpu) {
		volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)pool;

		t0 = now();
		memset((void *)(uintptr_t)pool, 0xa5, ngib * GIB);
		double w = now() - t0;

		cpu = p[0] == 0xa5 && p[ngib * GIB - 1] == 0xa5;
		printf("HOSTPOOL step=cpu %s memset GB/s=%.2f\n", cpu ? "ok" : "FAIL", (double)ngib *
		       (double)GIB / 1e9 / w);
	}

	/* step 5: device to pool */
	for (unsigned i = 0; i < ngib; i++) {
		ck(cuMemAlloc(&dev_buf[i], GIB), "copy", "cuMemAlloc");
		ck(cuMemsetD32(dev_buf[i], 0x01020304u + i, GIB / 4), "copy", "cuMemsetD32");
	}
	ck(cuCtxSynchronize(), "copy", "cuCtxSynchronize");
	copy_all(0, 0);	/* warm-up, not read */
	printf("HOSTPOOL step=dtoh ok GB/s=%.2f threads=%u piece_MiB=%zu busy=no\n", copy_all(0, 0),
	       nthreads, PIECE >> 20);
	printf("HOSTPOOL step=dtoh ok GB/s=%.2f threads=%u piece_MiB=%zu busy=yes\n", copy_all(0, 1),
	       nthreads, PIECE >> 20);
	if (cpu) {
		const uint32_t *w = (const uint32_t *)(uintptr_t)pool;
		int good = 1;

		for (unsigned i = 0; i < ngib && good; i++)
			good = w[i * (GIB / 4)] == 0x01020304u + i &&
			       w[i * (GIB / 4) + GIB / 4 - 1] == 0x01020304u + i;
		printf("HOSTPOOL step=check %s the CPU reads what the device wrote\n",
		       good ? "ok" : "FAIL");
	}
	/* step 6: back */
	for (unsigned i = 0; i < ngib; i++)
		ck(cuMemsetD32(dev_buf[i], 0, GIB / 4), "htod", "cuMemsetD32");
	ck(cuCtxSynchronize(), "htod", "cuCtxSynchronize");
	printf("HOSTPOOL step=htod ok GB/s=%.2f threads=%u\n", copy_all(1, 0), nthreads);
	uint32_t probe = 0;

	ck(cuMemcpyDtoH(&probe, dev_buf[ngib - 1] + GIB - 4, 4), "htod", "cuMemcpyDtoH");
	printf("HOSTPOOL step=htod-check %s\n", probe == 0x01020304u + ngib - 1 ? "ok" : "FAIL");
	/* step 8 (the device buffers hold 0x01020304 + i again) */
	map_costs(fds, dev);
	/* step 7: phos-gpu lets go of its contexts once the GPU memory is
	 * released (EXCLUSIVE_PROCESS), then writes the pool to storage: is
	 * the mapping still the CPU's then? */
	if (cpu) {
		for (unsigned i = 0; i < ngib; i++)
			ck(cuMemFree(dev_buf[i]), "release", "cuMemFree");
		ck(cuCtxSetCurrent(NULL), "release", "cuCtxSetCurrent");
		ck(cuDevicePrimaryCtxRelease(dev), "release", "cuDevicePrimaryCtxRelease");
		const volatile uint32_t *w = (const volatile uint32_t *)(uintptr_t)pool;

		printf("HOSTPOOL step=after-release %s the CPU reads the pool with no context left\n",
		       w[0] == 0x01020304u && w[(ngib - 1) * (GIB / 4)] == 0x01020304u + ngib - 1 ?
		       "ok" : "FAIL");
	}
	printf("DONE\n");
	return 0;
}
