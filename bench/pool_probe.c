/*
 * pool_probe.c - what separates phos-gpu's copy into the staging pool
 * (24-29 GB/s in a PyTorch stop checkpoint) from stage_probe.cu's hugetlb
 * row (41 GB/s, same 64 MiB pieces, same 8 threads)?  Issue [6]: the GPU
 * is free after a 64 GB preemption only as fast as this copy.
 *
 * GIB GiB of GPU memory in 1 GiB buffers is copied device to host by
 * THREADS threads, each on a stream of its own, in PIECE_MB pieces, each
 * piece registered (cuMemHostRegister, PORTABLE) just before its copy and
 * left pinned until the row ends, into 2 MiB hugetlb pages faulted in
 * beforehand (not timed), as phos-gpu does.  One thing changes at a time:
 *   source  malloc  cuMemAlloc buffers of this process (stage_probe's)
 *           vmm     cuMemCreate buffers exported as POSIX fds, imported and
 *                   mapped at a second address (phos-gpu's view of the
 *                   app's buffers, which libphos makes this way)
 *   layout  split   thread t copies buffers t, t+THREADS, ... into a
 *                   hugetlb mapping of its own (stage_probe's)
 *           pool    one hugetlb mapping for all; the pieces are handed out
 *                   in order from a shared counter, every thread working on
 *                   the same buffer (phos-gpu's gpu-io.c)
 *   bounce  no piece of the pool is pinned: each thread copies into one
 *           of two pinned buffers of its own (cuMemHostAlloc, 8 MiB, their
 *           allocation timed in the row) and memcpy()s the other into the
 *           pool meanwhile (phos-gpu's PHOS_GPU_STAGE_BOUNCE=1), with 8 and
 *           16 threads
 *   prepinned  the pool layout, but every piece registered before the
 *           row's clock starts (the pinning timed apart, pin_seconds): the
 *           copy a pool pinned ahead by a long-lived process would get
 *           (doc/concurrent-checkpoint.md, "A pool pinned ahead")
 *   busy    a second process with a context of its own copies 1 GiB
 *           device to pageable host memory over and over while the row
 *           runs (the app's context being checkpointed by the driver
 *           beside phos-gpu's copy)
 *
 *   pool_probe [GIB [THREADS [PIECE_MB]]]      (defaults 32 8 64)
 * Prints "POOL source=S layout=L busy=B piece_MiB=P GB/s=R seconds=T" rows,
 * then DONE.  Needs GIB + 1 GiB of 2 MiB pages (vm.nr_hugepages) and root
 * or a hugetlb group.  Build: gcc -O2 -pthread -I$CUDA/include
 * bench/pool_probe.c -o pool_probe -L$CUDA/lib64/stubs -lcuda
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
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "probe_busy.h"

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif

#define GIB ((size_t)1 << 30)
#define MAX_THREADS 64

static CUcontext ctx;
static unsigned nbuf, nthreads;
static size_t piece;
static CUdeviceptr *dptr;	/* the buffers as this process copies from them */

static void ck(CUresult r, const char *what)
{
	const char *s = "?";

	if (r == CUDA_SUCCESS)
		return;
	cuGetErrorString(r, &s);
	fprintf(stderr, "pool_probe: %s: %s\n", what, s);
	exit(2);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint8_t *hugetlb(size_t len)
{
	int fd = memfd_create("pool", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
	void *p;

	if (fd < 0 || ftruncate(fd, (off_t)len) < 0) {
		fprintf(stderr, "pool_probe: hugetlb memfd: %s\n", strerror(errno));
		exit(2);
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		fprintf(stderr, "pool_probe: %zu MiB of 2 MiB pages: %s (vm.nr_hugepages)\n",
			len >> 20, strerror(errno));
		exit(2);
	}
	/* MAP_POPULATE does not report a short pool: touch every page */
	if (madvise(p, len, MADV_POPULATE_WRITE) < 0 && errno != EINVAL) {
		fprintf(stderr, "pool_probe: %zu MiB of 2 MiB pages: %s (vm.nr_hugepages)\n",
			len >> 20, strerror(errno));
		exit(2);
	}
	return p;
}

/* nbuf buffers of 1 GiB, filled; vmm: exported, imported, mapped again */
static void make_buffers(int vmm, CUdevice dev)
{
	for (unsigned i = 0; i < nbuf; i++) {
		if (!vmm) {
			ck(cuMemAlloc(&dptr[i], GIB), "cuMemAlloc");
		} else {
			CUmemAllocationProp prop = {
				.type = CU_MEM_ALLOCATION_TYPE_PINNED,
				.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
				.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev },
			};
			CUmemAccessDesc acc = {
				.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev },
				.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
			};
			CUmemGenericAllocationHandle h, h2;
			int fd;

			ck(cuMemCreate(&h, GIB, &prop, 0), "cuMemCreate");
			ck(cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
							0), "export");
			ck(cuMemImportFromShareableHandle(&h2, (void *)(intptr_t)fd,
							  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
			   "import");
			close(fd);
			ck(cuMemAddressReserve(&dptr[i], GIB, 0, 0, 0), "reserve");
			ck(cuMemMap(dptr[i], GIB, 0, h2, 0), "map");
			ck(cuMemSetAccess(dptr[i], GIB, &acc, 1), "access");
			ck(cuMemRelease(h), "release");
			ck(cuMemRelease(h2), "release");
		}
		ck(cuMemsetD32(dptr[i], 0x01020304u + i, GIB / 4), "memset");
	}
	ck(cuCtxSynchronize(), "sync");
}

static void free_buffers(int vmm)
{
	for (unsigned i = 0; i < nbuf; i++) {
		if (!vmm) {
			ck(cuMemFree(dptr[i]), "cuMemFree");
		} else {
			ck(cuMemUnmap(dptr[i], GIB), "unmap");
			ck(cuMemAddressFree(dptr[i], GIB), "address free");
		}
	}
}

struct row {
	int pool;
	int bounce;
	int prepinned;
	uint8_t *shared;		/* pool: nbuf GiB */
	uint8_t *own[MAX_THREADS];	/* split: each thread's */
	size_t next;			/* pool: next piece, atomically */
	double t0;
};

static void copy_piece(CUstream s, uint8_t *dst, CUdeviceptr src, size_t len, int pinned)
{
	if (!pinned)
		ck(cuMemHostRegister(dst, len, CU_MEMHOSTREGISTER_PORTABLE), "cuMemHostRegister");
	ck(cuMemcpyDtoHAsync(dst, src, len, s), "cuMemcpyDtoHAsync");
	ck(cuStreamSynchronize(s), "cuStreamSynchronize");
}

struct worker {
	struct row *r;
	unsigned t;
};

static void *worker(void *arg)
{
	struct worker *w = arg;
	struct row *r = w->r;
	size_t per = GIB / piece;
	void *bb[2] = { NULL, NULL };
	CUstream s;

	ck(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
	ck(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
	if (r->bounce) {
		/* two buffers: the CPU copies one chunk while the next one's
		 * device copy runs (phos-gpu's gpu-io.c, bounce_loop) */
		size_t pend = 0;
		unsigned cur = 0;
		int have = 0;

		ck(cuMemHostAlloc(&bb[0], piece, CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc");
		ck(cuMemHostAlloc(&bb[1], piece, CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc");
		for (;;) {
			size_t k = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
			size_t b = k / per, off = (k % per) * piece;

			if (b < nbuf)
				ck(cuMemcpyDtoHAsync(bb[cur], dptr[b] + off, piece, s),
				   "cuMemcpyDtoHAsync");
			if (have)
				memcpy(r->shared + pend / per * GIB + pend % per * piece, bb[cur ^ 1],
				       piece);
			if (b >= nbuf)
				break;
			ck(cuStreamSynchronize(s), "cuStreamSynchronize");
			pend = k;
			have = 1;
			cur ^= 1;
		}
		ck(cuMemFreeHost(bb[0]), "cuMemFreeHost");
		ck(cuMemFreeHost(bb[1]), "cuMemFreeHost");
	} else if (r->pool) {
		for (;;) {
			size_t k = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
			size_t b = k / per, off = (k % per) * piece;

			if (b >= nbuf)
				break;
			copy_piece(s, r->shared + b * GIB + off, dptr[b] + off, piece, r->prepinned);
		}
	} else {
		size_t at = 0;

		for (unsigned b = w->t; b < nbuf; b += nthreads)
			for (size_t off = 0; off < GIB; off += piece, at += piece)
				copy_piece(s, r->own[w->t] + at, dptr[b] + off, piece, 0);
	}
	ck(cuStreamDestroy(s), "cuStreamDestroy");
	return NULL;
}

static void row(int vmm, int pool, int busy, int bounce, int prepinned, CUdevice dev)
{
	struct row r = { .pool = pool || bounce || prepinned, .bounce = bounce,
			 .prepinned = prepinned };
	struct worker w[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	size_t own_len = ((nbuf + nthreads - 1) / nthreads) * GIB;
	pid_t bp = 0;
	double secs, t_unpin, t_pin = 0;

	if (r.pool)
		r.shared = hugetlb(nbuf * GIB);
	else
		for (unsigned t = 0; t < nthreads; t++)
			r.own[t] = hugetlb(own_len);
	make_buffers(vmm, dev);
	if (prepinned) {
		t_pin = now();
		for (size_t off = 0; off < nbuf * GIB; off += piece)
			ck(cuMemHostRegister(r.shared + off, piece, CU_MEMHOSTREGISTER_PORTABLE),
			   "cuMemHostRegister");
		t_pin = now() - t_pin;
	}
	if (busy && (bp = busy_start("pool_probe")) < 0) {
		fprintf(stderr, "pool_probe: the busy process did not start\n");
		exit(2);
	}
	r.t0 = now();
	for (unsigned t = 0; t < nthreads; t++) {
		w[t] = (struct worker){ .r = &r, .t = t };
		if (pthread_create(&th[t], NULL, worker, &w[t]) != 0) {
			fprintf(stderr, "pool_probe: pthread_create failed\n");
			exit(2);
		}
	}
	for (unsigned t = 0; t < nthreads; t++)
		pthread_join(th[t], NULL);
	secs = now() - r.t0;
	if (bp) {
		kill(bp, SIGKILL);
		waitpid(bp, NULL, 0);
	}
	/* every piece was left pinned: undo (phos-gpu does it after the
	 * GPU memory is released) */
	t_unpin = now();
	if (bounce) {
		munmap(r.shared, nbuf * GIB);
	} else if (r.pool) {
		for (size_t off = 0; off < nbuf * GIB; off += piece)
			ck(cuMemHostUnregister(r.shared + off), "cuMemHostUnregister");
		munmap(r.shared, nbuf * GIB);
	} else {
		for (unsigned t = 0; t < nthreads; t++) {
			size_t at = 0;

			for (unsigned b = t; b < nbuf; b += nthreads)
				for (size_t off = 0; off < GIB; off += piece, at += piece)
					ck(cuMemHostUnregister(r.own[t] + at), "cuMemHostUnregister");
			munmap(r.own[t], own_len);
		}
	}
	t_unpin = now() - t_unpin;
	free_buffers(vmm);
	printf("POOL source=%s layout=%s busy=%s piece_MiB=%zu GB/s=%.2f seconds=%.3f "
	       "unpin_seconds=%.3f pin_seconds=%.3f GiB=%u threads=%u\n", vmm ? "vmm" : "malloc",
	       bounce ? "bounce" : prepinned ? "prepinned" : pool ? "pool" : "split",
	       busy ? "yes" : "no", piece >> 20, (double)nbuf * (double)GIB / 1e9 / secs, secs,
	       t_unpin, t_pin, nbuf, nthreads);
}

int main(int argc, char **argv)
{
	CUdevice dev;
	size_t base;

	if (argc == 3 && strcmp(argv[1], "--busy") == 0)
		return busy_main("pool_probe", atoi(argv[2]));
	nbuf = argc > 1 ? (unsigned)atoi(argv[1]) : 32;
	nthreads = argc > 2 ? (unsigned)atoi(argv[2]) : 8;
	base = (size_t)(argc > 3 ? atoi(argv[3]) : 64) << 20;
	if (!nbuf || !nthreads || nthreads > MAX_THREADS || base < (2u << 20) || GIB % base) {
		fprintf(stderr, "usage: pool_probe [GIB [THREADS (1-64) [PIECE_MB (2-1024, "
			"dividing 1024)]]]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	dptr = calloc(nbuf, sizeof(*dptr));
	if (!dptr)
		return 2;
	ck(cuInit(0), "cuInit");
	ck(cuDeviceGet(&dev, 0), "cuDeviceGet");
	ck(cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
	ck(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
	piece = base;
	row(0, 0, 0, 0, 0, dev);	/* a first row, for the GPU to warm up (not read) */
	row(0, 0, 0, 0, 0, dev);	/* stage_probe's hugetlb row */
	row(0, 1, 0, 0, 0, dev);
	row(1, 0, 0, 0, 0, dev);
	row(1, 1, 0, 0, 0, dev);	/* phos-gpu's */
	row(1, 1, 1, 0, 0, dev);	/* ... beside a busy context */
	row(1, 1, 0, 0, 1, dev);	/* the pool pinned before the clock starts */
	row(1, 1, 1, 0, 1, dev);
	if (base * 4 <= GIB) {
		piece = base * 4;
		row(1, 1, 0, 0, 0, dev);
	}
	/* through pinned buffers of 8 MiB, 8 and 16 threads, alone and busy */
	piece = (size_t)8 << 20;
	row(1, 0, 0, 1, 0, dev);
	row(1, 0, 1, 1, 0, dev);
	if (nthreads * 2 <= MAX_THREADS) {
		nthreads *= 2;
		row(1, 0, 0, 1, 0, dev);
		row(1, 0, 1, 1, 0, dev);
		nthreads /= 2;
	}
	printf("DONE\n");
	return 0;
}
