/*
 * fakecuda.c - a fake CUDA driver (libcuda.so.1) for CI machines without
 * a GPU.  See fakecuda.h.  Only what libphos hooks and its tests need;
 * everything runs on the host, synchronously.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fakecuda.h"
#include "fakeint.h"
#include "../../common/savetab.h"

#undef cuGetProcAddress
#undef cuMemAlloc

/* ---- call counts ------------------------------------------------------ */

#define MAXCALLS 256
static struct {
	char name[64];
	unsigned long n;
} calls[MAXCALLS];
static pthread_mutex_t calls_lock = PTHREAD_MUTEX_INITIALIZER;

void hit(const char *name)
{
	int i;

	pthread_mutex_lock(&calls_lock);
	for (i = 0; i < MAXCALLS; i++) {
		if (!calls[i].name[0]) {
			strncpy(calls[i].name, name, sizeof(calls[i].name) - 1);
			calls[i].n = 1;
			break;
		}
		if (strcmp(calls[i].name, name) == 0) {
			calls[i].n++;
			break;
		}
	}
	pthread_mutex_unlock(&calls_lock);
}

EXPORT unsigned long fakecuda_calls(const char *name)
{
	unsigned long n = 0;
	int i;

	pthread_mutex_lock(&calls_lock);
	for (i = 0; i < MAXCALLS && calls[i].name[0]; i++)
		if (strcmp(calls[i].name, name) == 0)
			n = calls[i].n;
	pthread_mutex_unlock(&calls_lock);
	return n;
}

EXPORT void fakecuda_reset_calls(void)
{
	pthread_mutex_lock(&calls_lock);
	memset(calls, 0, sizeof(calls));
	pthread_mutex_unlock(&calls_lock);
}

static int capturing;
EXPORT void fakecuda_set_capturing(int on)
{
	__atomic_store_n(&capturing, on, __ATOMIC_SEQ_CST);
}

static int gpa_internal = -1;
EXPORT void fakecuda_set_gpa_internal(int n)
{
	gpa_internal = n;
}

/* ---- init, devices, contexts ------------------------------------------- */

static void *init_thread(void *arg)
{
	return arg;
}

/* The real cuInit starts threads of its own: where none can be created
 * (after unshare(CLONE_NEWPID), say) it fails, with this error */
FAKE(cuInit, (unsigned int flags))
{
	pthread_t t;

	(void)flags;
	hit("cuInit");
	if (pthread_create(&t, NULL, init_thread, NULL) != 0)
		return CUDA_ERROR_OPERATING_SYSTEM;
	pthread_join(t, NULL);
	return CUDA_SUCCESS;
}

/* FAKECUDA_DRIVER_VERSION=N: the driver says it supports CUDA N (13000
 * otherwise); under 12080 it has no checkpoint API for phosd */
FAKE(cuDriverGetVersion, (int *v))
{
	const char *n = getenv("FAKECUDA_DRIVER_VERSION");

	if (!v)
		return CUDA_ERROR_INVALID_VALUE;
	*v = n ? atoi(n) : 13000;
	return CUDA_SUCCESS;
}

FAKE(cuDeviceGetCount, (int *n))
{
	if (!n)
		return CUDA_ERROR_INVALID_VALUE;
	*n = 1;
	return CUDA_SUCCESS;
}

FAKE(cuDeviceGet, (CUdevice *d, int ordinal))
{
	if (!d || ordinal != 0)
		return CUDA_ERROR_INVALID_DEVICE;
	*d = 0;
	return CUDA_SUCCESS;
}

static int the_ctx;
static __thread CUcontext cur_ctx;	/* current on this thread, as in the driver */
FAKE(cuCtxCreate_v4, (CUcontext *ctx, CUctxCreateParams *p, unsigned int flags, CUdevice d))
{
	(void)p;
	(void)flags;
	if (!ctx || d != 0)
		return CUDA_ERROR_INVALID_VALUE;
	*ctx = (CUcontext)&the_ctx;
	cur_ctx = *ctx;
	hit("cuCtxCreate_v4");
	return CUDA_SUCCESS;
}

/* FAKECUDA_BUSY_ONCE=FILE: while FILE exists, the first process to ask
 * for a context is refused as in EXCLUSIVE_PROCESS mode (and removes it) */
FAKE(cuDevicePrimaryCtxRetain, (CUcontext *ctx, CUdevice d))
{
	const char *busy = getenv("FAKECUDA_BUSY_ONCE");

	if (!ctx || d != 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (busy && *busy && unlink(busy) == 0)
		return CUDA_ERROR_DEVICE_UNAVAILABLE;
	*ctx = (CUcontext)&the_ctx;
	hit("cuDevicePrimaryCtxRetain");
	return CUDA_SUCCESS;
}

FAKE(cuGetErrorName, (CUresult r, const char **s))
{
	static char buf[32];

	if (!s)
		return CUDA_ERROR_INVALID_VALUE;
	snprintf(buf, sizeof(buf), "CUDA_ERROR_%d", (int)r);
	*s = r == CUDA_SUCCESS ? "CUDA_SUCCESS" : buf;
	return CUDA_SUCCESS;
}

/* free memory: FAKECUDA_FREE_MB (default 4096) of a 8192 MiB device */
FAKE(cuMemGetInfo_v2, (size_t *free_b, size_t *total))
{
	const char *v = getenv("FAKECUDA_FREE_MB");

	if (!free_b || !total)
		return CUDA_ERROR_INVALID_VALUE;
	*free_b = (size_t)(v ? strtoul(v, NULL, 10) : 4096) << 20;
	*total = (size_t)8192 << 20;
	return CUDA_SUCCESS;
}

FAKE(cuCtxDestroy_v2, (CUcontext ctx))
{
	return ctx == (CUcontext)&the_ctx ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}

static CUresult sync_result = CUDA_SUCCESS;
EXPORT void fakecuda_set_sync_result(CUresult r)
{
	sync_result = r;
}

FAKE(cuCtxSynchronize, (void))
{
	hit("cuCtxSynchronize");
	return sync_result;
}

FAKE(cuCtxGetCurrent, (CUcontext *ctx))
{
	if (!ctx)
		return CUDA_ERROR_INVALID_VALUE;
	*ctx = cur_ctx;
	return CUDA_SUCCESS;
}

FAKE(cuCtxSetCurrent, (CUcontext ctx))
{
	if (ctx && ctx != (CUcontext)&the_ctx)
		return CUDA_ERROR_INVALID_CONTEXT;
	cur_ctx = ctx;
	return CUDA_SUCCESS;
}

FAKE(cuCtxGetDevice, (CUdevice *d))
{
	if (!d)
		return CUDA_ERROR_INVALID_VALUE;
	if (!cur_ctx)
		return CUDA_ERROR_INVALID_CONTEXT;
	*d = 0;
	return CUDA_SUCCESS;
}

/* ---- memory ----------------------------------------------------------- */

static CUresult host_alloc(void **p, size_t size)
{
	if (!p || size == 0)
		return CUDA_ERROR_INVALID_VALUE;
	*p = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);	/* page-aligned, as the driver's pinned memory */
	if (!*p)
		return CUDA_ERROR_OUT_OF_MEMORY;
	memset(*p, 0, size);
	return CUDA_SUCCESS;
}

/* the 32-bit API of CUDA < 3.2: only here so lookups can return it */
FAKE(cuMemAlloc, (unsigned int *dptr, unsigned int size))
{
	(void)dptr;
	(void)size;
	hit("cuMemAlloc");
	return CUDA_ERROR_NOT_SUPPORTED;
}

FAKE(cuMemAlloc_v2, (CUdeviceptr *dptr, size_t size))
{
	void *p = NULL;
	CUresult r;

	hit("cuMemAlloc_v2");
	if (!dptr)
		return CUDA_ERROR_INVALID_VALUE;
	r = host_alloc(&p, size);
	*dptr = (CUdeviceptr)(uintptr_t)p;
	return r;
}

FAKE(cuMemAllocPitch_v2, (CUdeviceptr *dptr, size_t *pitch, size_t w, size_t h, unsigned int el))
{
	void *p = NULL;
	CUresult r;

	(void)el;
	hit("cuMemAllocPitch_v2");
	if (!dptr || !pitch || w == 0 || h == 0)
		return CUDA_ERROR_INVALID_VALUE;
	*pitch = (w + 511) & ~(size_t)511;
	r = host_alloc(&p, *pitch * h);
	*dptr = (CUdeviceptr)(uintptr_t)p;
	return r;
}

FAKE(cuMemFree_v2, (CUdeviceptr p))
{
	hit("cuMemFree_v2");
	free((void *)(uintptr_t)p);
	return CUDA_SUCCESS;
}

FAKE(cuMemAllocAsync, (CUdeviceptr *dptr, size_t size, CUstream s))
{
	(void)s;
	hit("cuMemAllocAsync");
	return host_alloc((void **)dptr, size);
}

FAKE(cuMemAllocAsync_ptsz, (CUdeviceptr *dptr, size_t size, CUstream s))
{
	(void)s;
	hit("cuMemAllocAsync_ptsz");
	return host_alloc((void **)dptr, size);
}

FAKE(cuMemAllocFromPoolAsync, (CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream s))
{
	(void)s;
	(void)pool;
	hit("cuMemAllocFromPoolAsync");
	return host_alloc((void **)dptr, size);
}

FAKE(cuMemFreeAsync, (CUdeviceptr p, CUstream s))
{
	(void)s;
	hit("cuMemFreeAsync");
	free((void *)(uintptr_t)p);
	return CUDA_SUCCESS;
}

FAKE(cuMemFreeAsync_ptsz, (CUdeviceptr p, CUstream s))
{
	(void)s;
	hit("cuMemFreeAsync_ptsz");
	free((void *)(uintptr_t)p);
	return CUDA_SUCCESS;
}

/* Pinned memory and synchronous copies need a context current on the
 * calling thread, as in the driver: a thread that forgot cuCtxSetCurrent
 * gets CUDA_ERROR_INVALID_CONTEXT here too. */
FAKE(cuMemHostAlloc, (void **pp, size_t size, unsigned int fl))
{
	(void)fl;
	hit("cuMemHostAlloc");
	if (!cur_ctx)
		return CUDA_ERROR_INVALID_CONTEXT;
	return host_alloc(pp, size);
}

FAKE(cuMemAllocHost_v2, (void **pp, size_t size))
{
	hit("cuMemAllocHost_v2");
	if (!cur_ctx)
		return CUDA_ERROR_INVALID_CONTEXT;
	return host_alloc(pp, size);
}

FAKE(cuMemFreeHost, (void *p))
{
	hit("cuMemFreeHost");
	free(p);
	return CUDA_SUCCESS;
}

/* pinning: mlock, so a range that is not mapped fails as in the driver;
 * registered ranges are remembered for the unregister */
#define MAXPINNED 256
/* The environment's NAME=N: true for every call after the Nth that asks
 * (*seen counts them); false without NAME. */
static bool fails_after(const char *name, unsigned long *seen)
{
	const char *v = getenv(name);

	return v && __atomic_add_fetch(seen, 1, __ATOMIC_RELAXED) > strtoul(v, NULL, 10);
}

static struct { void *p; size_t size; } pinned[MAXPINNED];
static pthread_mutex_t pinned_lock = PTHREAD_MUTEX_INITIALIZER;

/* FAKECUDA_REGISTER_FAIL_AFTER=N: the registrations after the Nth fail
 * with CUDA_ERROR_OUT_OF_MEMORY (a staged copy that breaks off) */
FAKE(cuMemHostRegister_v2, (void *p, size_t size, unsigned int fl))
{
	static unsigned long seen;
	CUresult r = CUDA_ERROR_OUT_OF_MEMORY;

	(void)fl;
	hit("cuMemHostRegister_v2");
	if (!cur_ctx)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (fails_after("FAKECUDA_REGISTER_FAIL_AFTER", &seen))
		return CUDA_ERROR_OUT_OF_MEMORY;
	if (!p || !size || ((uintptr_t)p & 4095))
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&pinned_lock);
	for (int i = 0; i < MAXPINNED; i++) {
		if (pinned[i].p)
			continue;
		if (mlock(p, size) < 0) {
			r = CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
			break;
		}
		pinned[i].p = p;
		pinned[i].size = size;
		r = CUDA_SUCCESS;
		break;
	}
	pthread_mutex_unlock(&pinned_lock);
	return r;
}

FAKE(cuMemHostUnregister, (void *p))
{
	CUresult r = CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;

	hit("cuMemHostUnregister");
	pthread_mutex_lock(&pinned_lock);
	for (int i = 0; p && i < MAXPINNED; i++) {
		if (pinned[i].p != p)
			continue;
		munlock(p, pinned[i].size);
		pinned[i].p = NULL;
		r = CUDA_SUCCESS;
		break;
	}
	pthread_mutex_unlock(&pinned_lock);
	return r;
}

FAKE(cuDevicePrimaryCtxRelease_v2, (CUdevice d))
{
	hit("cuDevicePrimaryCtxRelease_v2");
	return d == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

/* ---- VMM: handles are memfds, reservations PROT_NONE mappings --------- */

struct vmm {
	int fd;
	size_t size;
	int imported;	/* as on an H100: an imported handle is not exported again */
};

static int last_handle_types;
EXPORT int fakecuda_last_handle_types(void)
{
	return __atomic_load_n(&last_handle_types, __ATOMIC_SEQ_CST);
}

/* What bench/hostpool_probe.c asks (for running it on the fake): the
 * device is next to NUMA node 0 and offers HOST_NUMA memory with POSIX fd
 * handles (the fake's VMM memory is a memfd wherever it "lives"); any
 * other attribute reads 0. */
FAKE(cuDeviceGetAttribute, (int *v, CUdevice_attribute a, CUdevice d))
{
	(void)d;
	if (!v)
		return CUDA_ERROR_INVALID_VALUE;
	*v = a == CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED ||
	     a == CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED;
	return CUDA_SUCCESS;
}

FAKE(cuGetErrorString, (CUresult r, const char **s))
{
	if (!s)
		return CUDA_ERROR_INVALID_VALUE;
	*s = r == CUDA_SUCCESS ? "no error" : "an error of the fake driver";
	return CUDA_SUCCESS;
}

FAKE(cuMemGetAllocationGranularity, (size_t *g, const CUmemAllocationProp *prop,
				     CUmemAllocationGranularity_flags opt))
{
	(void)prop;
	(void)opt;
	if (!g)
		return CUDA_ERROR_INVALID_VALUE;
	*g = 2u << 20;
	return CUDA_SUCCESS;
}

FAKE(cuMemCreate, (CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop,
		   unsigned long long fl))
{
	struct vmm *v;

	(void)fl;
	hit("cuMemCreate");
	if (!h || !prop || size == 0)
		return CUDA_ERROR_INVALID_VALUE;
	__atomic_store_n(&last_handle_types, (int)prop->requestedHandleTypes, __ATOMIC_SEQ_CST);
	v = calloc(1, sizeof(*v));
	if (!v)
		return CUDA_ERROR_OUT_OF_MEMORY;
	v->fd = memfd_create("fakecuda-vmm", MFD_CLOEXEC);
	if (v->fd < 0 || ftruncate(v->fd, (off_t)size) < 0) {
		if (v->fd >= 0)
			close(v->fd);
		free(v);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	v->size = size;
	*h = (CUmemGenericAllocationHandle)(uintptr_t)v;
	return CUDA_SUCCESS;
}

FAKE(cuMemRelease, (CUmemGenericAllocationHandle h))
{
	struct vmm *v = (struct vmm *)(uintptr_t)h;

	hit("cuMemRelease");
	if (!v)
		return CUDA_ERROR_INVALID_VALUE;
	close(v->fd);	/* live mappings keep the memory */
	free(v);
	return CUDA_SUCCESS;
}

FAKE(cuMemExportToShareableHandle, (void *out, CUmemGenericAllocationHandle h,
				    CUmemAllocationHandleType type, unsigned long long fl))
{
	struct vmm *v = (struct vmm *)(uintptr_t)h;
	int fd;

	(void)fl;
	if (!v || !out || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR || v->imported)
		return CUDA_ERROR_INVALID_VALUE;
	fd = fcntl(v->fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return CUDA_ERROR_OPERATING_SYSTEM;
	*(int *)out = fd;
	return CUDA_SUCCESS;
}

FAKE(cuMemImportFromShareableHandle, (CUmemGenericAllocationHandle *h, void *os,
				      CUmemAllocationHandleType type))
{
	struct stat st;
	struct vmm *v;
	int fd = (int)(intptr_t)os;

	if (!h || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR || fstat(fd, &st) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	v = malloc(sizeof(*v));
	if (!v)
		return CUDA_ERROR_OUT_OF_MEMORY;
	v->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	v->size = (size_t)st.st_size;
	v->imported = 1;
	*h = (CUmemGenericAllocationHandle)(uintptr_t)v;
	return CUDA_SUCCESS;
}

FAKE(cuMemAddressReserve, (CUdeviceptr *p, size_t size, size_t align, CUdeviceptr addr,
			   unsigned long long fl))
{
	void *m;

	(void)align;
	(void)fl;
	hit("cuMemAddressReserve");
	if (!p || size == 0)
		return CUDA_ERROR_INVALID_VALUE;
	m = mmap((void *)(uintptr_t)addr, size, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*p = (CUdeviceptr)(uintptr_t)m;
	return CUDA_SUCCESS;
}

FAKE(cuMemAddressFree, (CUdeviceptr p, size_t size))
{
	hit("cuMemAddressFree");
	return munmap((void *)(uintptr_t)p, size) == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

FAKE(cuMemMap, (CUdeviceptr p, size_t size, size_t off, CUmemGenericAllocationHandle h,
		unsigned long long fl))
{
	struct vmm *v = (struct vmm *)(uintptr_t)h;

	(void)fl;
	hit("cuMemMap");
	if (!v || off + size > v->size)
		return CUDA_ERROR_INVALID_VALUE;
	/* populated: a real device has its memory; page faults here would
	 * only measure the fake (bench/storage.sh) */
	if (mmap((void *)(uintptr_t)p, size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED | MAP_POPULATE, v->fd, (off_t)off) == MAP_FAILED)
		return CUDA_ERROR_INVALID_VALUE;
	return CUDA_SUCCESS;
}

/* FAKECUDA_ACCESS_REFUSE=host (or device): access for the CPU (a GPU)
 * is refused with CUDA_ERROR_NOT_SUPPORTED */
FAKE(cuMemSetAccess, (CUdeviceptr p, size_t size, const CUmemAccessDesc *d, size_t n))
{
	const char *v = getenv("FAKECUDA_ACCESS_REFUSE");

	(void)p;
	(void)size;
	for (size_t i = 0; v && i < n; i++)
		if (strcmp(v, d[i].location.type == CU_MEM_LOCATION_TYPE_DEVICE ? "device" :
			   "host") == 0)
			return CUDA_ERROR_NOT_SUPPORTED;
	return CUDA_SUCCESS;
}

FAKE(cuMemUnmap, (CUdeviceptr p, size_t size))
{
	hit("cuMemUnmap");
	/* back to a reservation */
	if (mmap((void *)(uintptr_t)p, size, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED)
		return CUDA_ERROR_INVALID_VALUE;
	return CUDA_SUCCESS;
}

/* ---- copies and memsets -------------------------------------------------- */

#define P(x) ((void *)(uintptr_t)(x))

/* Copies of 64 KiB or more (phos-gpu's chunks) can be slowed down and
 * made to fail, from the environment (phos-gpu inherits phosd's):
 * FAKECUDA_<DIR>_DELAY_MS, FAKECUDA_<DIR>_FAIL_AFTER=N (the copies after
 * the Nth fail with CUDA_ERROR_ILLEGAL_ADDRESS), DIR = DTOH or HTOD. */
static CUresult chunk_fault(const char *dir, size_t n)
{
	static unsigned long seen[2];
	char name[64];
	const char *v;
	int k = dir[0] == 'H';

	if (n < 65536)
		return CUDA_SUCCESS;
	snprintf(name, sizeof(name), "FAKECUDA_%s_DELAY_MS", dir);
	if ((v = getenv(name)))
		usleep((useconds_t)strtoul(v, NULL, 10) * 1000);
	snprintf(name, sizeof(name), "FAKECUDA_%s_FAIL_AFTER", dir);
	if (fails_after(name, &seen[k]))
		return CUDA_ERROR_ILLEGAL_ADDRESS;
	return CUDA_SUCCESS;
}

/* FAKECUDA_HTOD_FLIP=N: the Nth copy of 64 KiB or more to the device
 * lands with its first byte flipped (a copy gone wrong after the CPU read
 * its source: only a check on the device sees it). */
static bool flip_due(size_t n)
{
	static unsigned long seen;
	const char *v = getenv("FAKECUDA_HTOD_FLIP");

	return n >= 65536 && v && *v &&
	       __atomic_add_fetch(&seen, 1, __ATOMIC_RELAXED) == strtoul(v, NULL, 10);
}

static void copy_in(void *d, const void *s, size_t n, bool flip)
{
	memcpy(d, s, n);
	if (flip)
		*(unsigned char *)d ^= 0xff;
}

FAKE(cuMemcpyHtoD_v2, (CUdeviceptr d, const void *s, size_t n))
{
	CUresult r = cur_ctx ? chunk_fault("HTOD", n) : CUDA_ERROR_INVALID_CONTEXT;

	hit("cuMemcpyHtoD_v2");
	if (r == CUDA_SUCCESS)
		copy_in(P(d), s, n, flip_due(n));
	return r;
}

FAKE(cuMemcpyHtoD_v2_ptds, (CUdeviceptr d, const void *s, size_t n))
{
	hit("cuMemcpyHtoD_v2_ptds");
	memcpy(P(d), s, n);
	return CUDA_SUCCESS;
}

/*
 * Streams (phos-gpu's copy engine makes one per worker and context): a
 * copy queued on one happens only at cuStreamSynchronize (or its
 * destruction), so a caller that reads or hands on the data before it
 * waits sees it missing.  A stream belongs to the context current when it
 * was made; copying on it from another is refused.  Streams the fake did
 * not make (an app's literals) keep the copy immediate.
 */
struct fake_copy {
	void *d;
	const void *s;
	size_t n;
	bool flip;	/* flip_due() */
};
struct fake_stream {
	CUcontext ctx;
	unsigned n;
	struct fake_copy q[16];
};
#define FAKE_STREAMS 256
static struct fake_stream *streams[FAKE_STREAMS];
static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;

static struct fake_stream *fake_stream(CUstream st)
{
	struct fake_stream *fs = NULL;

	if (!st)
		return NULL;
	pthread_mutex_lock(&streams_lock);
	for (unsigned k = 0; k < FAKE_STREAMS && !fs; k++)
		if (streams[k] == (struct fake_stream *)st)
			fs = streams[k];
	pthread_mutex_unlock(&streams_lock);
	return fs;
}

static void stream_run(struct fake_stream *fs)
{
	for (unsigned k = 0; k < fs->n; k++)
		copy_in(fs->q[k].d, fs->q[k].s, fs->q[k].n, fs->q[k].flip);
	fs->n = 0;
}

/* Queue a copy on a stream the fake made; CUDA_SUCCESS and *queued false
 * for any other stream (the caller copies now). */
static CUresult stream_queue(CUstream st, void *d, const void *s, size_t n, const char *dir,
			     bool *queued)
{
	struct fake_stream *fs = fake_stream(st);
	CUresult r;

	*queued = false;
	if (!fs)
		return CUDA_SUCCESS;
	if (!cur_ctx)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (fs->ctx != cur_ctx)
		return CUDA_ERROR_INVALID_HANDLE;
	if ((r = chunk_fault(dir, n)) != CUDA_SUCCESS)
		return r;
	if (fs->n == sizeof(fs->q) / sizeof(fs->q[0]))
		stream_run(fs);
	fs->q[fs->n++] = (struct fake_copy){ d, s, n, dir[0] == 'H' && flip_due(n) };
	*queued = true;
	return CUDA_SUCCESS;
}

FAKE(cuStreamCreate, (CUstream *st, unsigned flags))
{
	struct fake_stream *fs;
	CUresult r = CUDA_ERROR_OUT_OF_MEMORY;

	(void)flags;
	hit("cuStreamCreate");
	if (!st)
		return CUDA_ERROR_INVALID_VALUE;
	if (!cur_ctx)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (!(fs = calloc(1, sizeof(*fs))))
		return r;
	fs->ctx = cur_ctx;
	pthread_mutex_lock(&streams_lock);
	for (unsigned k = 0; k < FAKE_STREAMS && r != CUDA_SUCCESS; k++)
		if (!streams[k]) {
			streams[k] = fs;
			r = CUDA_SUCCESS;
		}
	pthread_mutex_unlock(&streams_lock);
	if (r != CUDA_SUCCESS)
		free(fs);
	else
		*st = (CUstream)fs;
	return r;
}

FAKE(cuStreamSynchronize, (CUstream st))
{
	struct fake_stream *fs = fake_stream(st);

	hit("cuStreamSynchronize");
	if (fs)
		stream_run(fs);
	return st && !fs ? CUDA_ERROR_INVALID_HANDLE : sync_result;
}

FAKE(cuStreamDestroy_v2, (CUstream st))
{
	struct fake_stream *fs = fake_stream(st);

	hit("cuStreamDestroy_v2");
	if (!fs)
		return CUDA_ERROR_INVALID_HANDLE;
	stream_run(fs);
	pthread_mutex_lock(&streams_lock);
	for (unsigned k = 0; k < FAKE_STREAMS; k++)
		if (streams[k] == fs)
			streams[k] = NULL;
	pthread_mutex_unlock(&streams_lock);
	free(fs);
	return CUDA_SUCCESS;
}

FAKE(cuMemcpyHtoDAsync_v2, (CUdeviceptr d, const void *s, size_t n, CUstream st))
{
	bool queued;
	CUresult r = stream_queue(st, P(d), s, n, "HTOD", &queued);

	hit("cuMemcpyHtoDAsync_v2");
	if (r == CUDA_SUCCESS && !queued)
		copy_in(P(d), s, n, flip_due(n));
	return r;
}

FAKE(cuMemcpyDtoH_v2, (void *d, CUdeviceptr s, size_t n))
{
	/* not phos-gpu's 16-byte hash results */
	CUresult r = cur_ctx ? chunk_fault("DTOH", n) : CUDA_ERROR_INVALID_CONTEXT;

	hit("cuMemcpyDtoH_v2");
	if (r != CUDA_SUCCESS)
		return r;
	memcpy(d, P(s), n);
	return CUDA_SUCCESS;
}

FAKE(cuMemcpyDtoHAsync_v2, (void *d, CUdeviceptr s, size_t n, CUstream st))
{
	bool queued;
	CUresult r = stream_queue(st, d, P(s), n, "DTOH", &queued);

	hit("cuMemcpyDtoHAsync_v2");
	if (r == CUDA_SUCCESS && !queued)
		memcpy(d, P(s), n);
	return r;
}

/* The fake keeps no ranges: any pointer is its own one-byte range (so a
 * test sees whether libphos answered instead). */
FAKE(cuMemGetAddressRange_v2, (CUdeviceptr *base, size_t *size, CUdeviceptr p))
{
	hit("cuMemGetAddressRange_v2");
	if (base)
		*base = p;
	if (size)
		*size = 1;
	return CUDA_SUCCESS;
}

FAKE(cuPointerGetAttribute, (void *data, CUpointer_attribute attr, CUdeviceptr p))
{
	hit("cuPointerGetAttribute");
	if (!data)
		return CUDA_ERROR_INVALID_VALUE;
	switch (attr) {
	case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
		*(CUdeviceptr *)data = p;
		return CUDA_SUCCESS;
	case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
		*(size_t *)data = 1;
		return CUDA_SUCCESS;
	case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
		*(unsigned int *)data = CU_MEMORYTYPE_DEVICE;
		return CUDA_SUCCESS;
	default:
		return CUDA_ERROR_INVALID_VALUE;
	}
}

FAKE(cuPointerGetAttributes, (unsigned int n, CUpointer_attribute *attrs, void **data,
			      CUdeviceptr p))
{
	hit("cuPointerGetAttributes");
	if (!attrs || !data)
		return CUDA_ERROR_INVALID_VALUE;
	for (unsigned int i = 0; i < n; i++) {
		if (!data[i])
			continue;
		if (attrs[i] == CU_POINTER_ATTRIBUTE_RANGE_START_ADDR)
			*(CUdeviceptr *)data[i] = p;
		else if (attrs[i] == CU_POINTER_ATTRIBUTE_RANGE_SIZE)
			*(size_t *)data[i] = 1;
		else if (attrs[i] == CU_POINTER_ATTRIBUTE_MEMORY_TYPE)
			*(unsigned int *)data[i] = CU_MEMORYTYPE_DEVICE;
	}
	return CUDA_SUCCESS;
}

FAKE(cuMemcpyDtoD_v2, (CUdeviceptr d, CUdeviceptr s, size_t n))
{
	hit("cuMemcpyDtoD_v2");
	memmove(P(d), P(s), n);
	return CUDA_SUCCESS;
}

FAKE(cuMemcpy, (CUdeviceptr d, CUdeviceptr s, size_t n))
{
	hit("cuMemcpy");
	memmove(P(d), P(s), n);
	return CUDA_SUCCESS;
}

FAKE(cuMemcpyAsync, (CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st))
{
	(void)st;
	hit("cuMemcpyAsync");
	memmove(P(d), P(s), n);
	return CUDA_SUCCESS;
}

FAKE(cuMemcpy2D_v2, (const CUDA_MEMCPY2D *c))
{
	size_t y;

	hit("cuMemcpy2D_v2");
	if (!c || c->srcMemoryType != CU_MEMORYTYPE_HOST || c->dstMemoryType != CU_MEMORYTYPE_DEVICE)
		return CUDA_ERROR_NOT_SUPPORTED;
	for (y = 0; y < c->Height; y++)
		memcpy((char *)P(c->dstDevice) + c->dstXInBytes + (c->dstY + y) * c->dstPitch,
		       (const char *)c->srcHost + c->srcXInBytes + (c->srcY + y) * c->srcPitch,
		       c->WidthInBytes);
	return CUDA_SUCCESS;
}

FAKE(cuMemsetD8_v2, (CUdeviceptr d, unsigned char v, size_t n))
{
	hit("cuMemsetD8_v2");
	memset(P(d), v, n);
	return CUDA_SUCCESS;
}

FAKE(cuMemsetD8Async, (CUdeviceptr d, unsigned char v, size_t n, CUstream st))
{
	(void)st;
	hit("cuMemsetD8Async");
	memset(P(d), v, n);
	return CUDA_SUCCESS;
}

FAKE(cuMemsetD32_v2, (CUdeviceptr d, unsigned int v, size_t n))
{
	size_t i;

	hit("cuMemsetD32_v2");
	for (i = 0; i < n; i++)
		memcpy((char *)P(d) + 4 * i, &v, 4);
	return CUDA_SUCCESS;
}

FAKE(cuMemsetD2D8_v2, (CUdeviceptr d, size_t pitch, unsigned char v, size_t w, size_t h))
{
	size_t y;

	hit("cuMemsetD2D8_v2");
	for (y = 0; y < h; y++)
		memset((char *)P(d) + y * pitch, v, w);
	return CUDA_SUCCESS;
}

/* cuMemsetD8 as a driver lookup may answer: functions of its own */
#define INTERNAL(n) \
	static CUresult memsetd8_internal##n(CUdeviceptr d, unsigned char v, size_t sz) \
	{ hit("cuMemsetD8_v2@internal" #n); memset(P(d), v, sz); return CUDA_SUCCESS; }
INTERNAL(0) INTERNAL(1) INTERNAL(2) INTERNAL(3) INTERNAL(4) INTERNAL(5) INTERNAL(6) INTERNAL(7)
static void *const memsetd8_internal[8] = {
	(void *)memsetd8_internal0, (void *)memsetd8_internal1, (void *)memsetd8_internal2,
	(void *)memsetd8_internal3, (void *)memsetd8_internal4, (void *)memsetd8_internal5,
	(void *)memsetd8_internal6, (void *)memsetd8_internal7,
};

/* ---- kernels ---------------------------------------------------------------- */

#define KMAGIC 0x6b65726eu

struct kern {
	unsigned magic;
	enum fakecuda_kind kind;
	unsigned np;
	fakecuda_body body;
	size_t off[64];
	size_t size[64];
};

EXPORT CUfunction fakecuda_kernel(enum fakecuda_kind kind, unsigned np, const size_t *sizes,
				  fakecuda_body body)
{
	struct kern *k;
	size_t off = 0;
	unsigned i;

	if (np > 64)
		return NULL;
	k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->magic = KMAGIC;
	k->kind = kind;
	k->np = np;
	k->body = body;
	for (i = 0; i < np; i++) {
		size_t a = sizes[i] >= 8 ? 8 : sizes[i] >= 4 ? 4 : sizes[i] >= 2 ? 2 : 1;

		off = (off + a - 1) & ~(a - 1);
		k->off[i] = off;
		k->size[i] = sizes[i];
		off += sizes[i];
	}
	return (CUfunction)k;
}

EXPORT size_t fakecuda_param_offset(CUfunction f, unsigned i)
{
	return ((struct kern *)f)->off[i];
}

static struct kern *kern_of(const void *h)
{
	struct kern *k = (struct kern *)h;

	return k && k->magic == KMAGIC ? k : NULL;
}

/* Both entry points answer alike; each takes only its own kind of handle. */
static CUresult param_info(const void *h, enum fakecuda_kind kind, size_t i, size_t *off, size_t *size)
{
	struct kern *k = kern_of(h);

	if (!k || k->kind != kind)
		return CUDA_ERROR_INVALID_HANDLE;
	if (i >= k->np)
		return CUDA_ERROR_INVALID_VALUE;
	if (off)
		*off = k->off[i];
	if (size)
		*size = k->size[i];
	return CUDA_SUCCESS;
}

/* ---- modules: only phos-gpu's hash kernel (daemon/phos-hash.cu) ---------- */
/* The PTX is not read: cuModuleGetFunction(mod, "phos_hash") answers a host
 * body computing the same sums (common/savetab.h) over host memory. */
static void body_phos_hash(void **p)
{
	const uint32_t *w = *(const uint32_t **)p[0];
	uint64_t n = *(uint64_t *)p[1], first = *(uint64_t *)p[2];
	uint64_t *out = *(uint64_t **)p[3], key = *(uint64_t *)p[4];
	const char *wrong = getenv("FAKECUDA_HASH_WRONG");

	phos_hash_add(out, w, first, n, key);
	/* FAKECUDA_HASH_WRONG=1: a kernel that sums wrongly (one that does not
	 * agree with the host's phos_hash_add, as a miscompiled one would) */
	if (wrong && strcmp(wrong, "1") == 0)
		out[0] += 1;
}

static CUfunction the_hash;	/* phos_hash's, once asked for */

static int the_module;
FAKE(cuModuleLoadData, (CUmodule *mod, const void *image))
{
	hit("cuModuleLoadData");
	if (!mod || !image)
		return CUDA_ERROR_INVALID_VALUE;
	*mod = (CUmodule)&the_module;
	return CUDA_SUCCESS;
}

FAKE(cuModuleGetFunction, (CUfunction *f, CUmodule mod, const char *name))
{
	static const size_t sizes[] = { 8, 8, 8, 8, 8 };

	if (!f || mod != (CUmodule)&the_module || !name)
		return CUDA_ERROR_INVALID_VALUE;
	if (strcmp(name, "phos_hash"))
		return CUDA_ERROR_NOT_FOUND;
	if (!the_hash)
		the_hash = fakecuda_kernel(FAKECUDA_KERNEL, 5, sizes, body_phos_hash);
	*f = the_hash;
	return the_hash ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

FAKE(cuKernelGetParamInfo, (CUkernel kernel, size_t i, size_t *off, size_t *size))
{
	hit("cuKernelGetParamInfo");
	return param_info(kernel, FAKECUDA_KERNEL, i, off, size);
}

FAKE(cuFuncGetParamInfo, (CUfunction f, size_t i, size_t *off, size_t *size))
{
	hit("cuFuncGetParamInfo");
	return param_info(f, FAKECUDA_FUNCTION, i, off, size);
}

static CUresult run(CUfunction f, void **kp, void **extra)
{
	struct kern *k = kern_of(f);
	void *ptrs[64];
	unsigned i;

	if (!k)
		return CUDA_ERROR_INVALID_HANDLE;
	if (__atomic_load_n(&capturing, __ATOMIC_SEQ_CST))
		return CUDA_SUCCESS;	/* recorded, not run */
	if (!kp && extra) {
		char *buf = NULL;

		for (i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2)
			if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER)
				buf = extra[i + 1];
		if (!buf)
			return CUDA_ERROR_INVALID_VALUE;
		for (i = 0; i < k->np; i++)
			ptrs[i] = buf + k->off[i];
		kp = ptrs;
	}
	if (k->body)
		k->body(kp);
	return CUDA_SUCCESS;
}

CUresult fakecuda_run(CUfunction f, void **kp, void **extra)
{
	return run(f, kp, extra);
}

/* A kernel runs when it is launched: on a stream the fake made, after the
 * copies queued there before it (a stream's order). */
static CUresult run_on(CUstream s, CUfunction f, void **kp, void **extra)
{
	struct fake_stream *fs = fake_stream(s);

	if (fs)
		stream_run(fs);
	return run(f, kp, extra);
}

#define LAUNCH_P (CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, \
		  unsigned bz, unsigned shm, CUstream s, void **kp, void **extra)
/* FAKECUDA_HASH_FAIL_AFTER=N: phos_hash's launches after the Nth fail
 * with CUDA_ERROR_LAUNCH_FAILED (a GPU that cannot check a load) */
FAKE(cuLaunchKernel, LAUNCH_P)
{
	static unsigned long hashes;

	(void)gx, (void)gy, (void)gz, (void)bx, (void)by, (void)bz, (void)shm;
	hit("cuLaunchKernel");
	if (f && f == the_hash && fails_after("FAKECUDA_HASH_FAIL_AFTER", &hashes))
		return CUDA_ERROR_LAUNCH_FAILED;
	return run_on(s, f, kp, extra);
}

FAKE(cuLaunchKernel_ptsz, LAUNCH_P)
{
	(void)gx, (void)gy, (void)gz, (void)bx, (void)by, (void)bz, (void)shm;
	hit("cuLaunchKernel_ptsz");
	return run_on(s, f, kp, extra);
}

FAKE(cuLaunchKernelEx, (const CUlaunchConfig *c, CUfunction f, void **kp, void **extra))
{
	hit("cuLaunchKernelEx");
	return run_on(c ? c->hStream : NULL, f, kp, extra);
}

FAKE(cuLaunchCooperativeKernel, (CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
				 unsigned by, unsigned bz, unsigned shm, CUstream s, void **kp))
{
	(void)gx, (void)gy, (void)gz, (void)bx, (void)by, (void)bz, (void)shm, (void)s;
	hit("cuLaunchCooperativeKernel");
	return run(f, kp, NULL);
}

FAKE(cuGraphLaunch, (CUgraphExec g, CUstream s))
{
	hit("cuGraphLaunch");
	return fakegraph_launch(g, s);	/* fakegraph.c */
}

FAKE(cuStreamIsCapturing, (CUstream s, CUstreamCaptureStatus *st))
{
	(void)s;
	hit("cuStreamIsCapturing");
	if (!st)
		return CUDA_ERROR_INVALID_VALUE;
	*st = __atomic_load_n(&capturing, __ATOMIC_SEQ_CST) ? CU_STREAM_CAPTURE_STATUS_ACTIVE
							     : CU_STREAM_CAPTURE_STATUS_NONE;
	return CUDA_SUCCESS;
}

FAKE(cuStreamIsCapturing_ptsz, (CUstream s, CUstreamCaptureStatus *st))
{
	hit("cuStreamIsCapturing_ptsz");
	return cuStreamIsCapturing(s, st);
}

static int the_graph;
FAKE(cuStreamBeginCapture_v2, (CUstream s, CUstreamCaptureMode mode))
{
	(void)s;
	(void)mode;
	hit("cuStreamBeginCapture_v2");
	if (__atomic_exchange_n(&capturing, 1, __ATOMIC_SEQ_CST))
		return CUDA_ERROR_ILLEGAL_STATE;
	return CUDA_SUCCESS;
}

FAKE(cuStreamEndCapture, (CUstream s, CUgraph *g))
{
	(void)s;
	hit("cuStreamEndCapture");
	if (!__atomic_exchange_n(&capturing, 0, __ATOMIC_SEQ_CST))
		return CUDA_ERROR_ILLEGAL_STATE;
	if (g)
		*g = (CUgraph)&the_graph;
	return CUDA_SUCCESS;
}

FAKE(cuGetExportTable, (const void **table, const CUuuid *id))
{
	(void)table;
	(void)id;
	hit("cuGetExportTable");
	return CUDA_ERROR_NOT_FOUND;
}

/* ---- cuGetProcAddress ------------------------------------------------------ */

static const struct {
	const char *base;
	int ver;	/* version that introduced this variant */
	int pt;		/* per-thread-stream variant */
	const char *sym;
} procs[] = {
	{ "cuInit", 2000, 0, "cuInit" },
	{ "cuDriverGetVersion", 2020, 0, "cuDriverGetVersion" },
	{ "cuDeviceGet", 2000, 0, "cuDeviceGet" },
	{ "cuCtxCreate", 13000, 0, "cuCtxCreate_v4" },
	{ "cuMemAlloc", 2000, 0, "cuMemAlloc" },
	{ "cuMemAlloc", 3020, 0, "cuMemAlloc_v2" },
	{ "cuMemAllocPitch", 3020, 0, "cuMemAllocPitch_v2" },
	{ "cuMemFree", 3020, 0, "cuMemFree_v2" },
	{ "cuMemAllocAsync", 11020, 0, "cuMemAllocAsync" },
	{ "cuMemAllocAsync", 11020, 1, "cuMemAllocAsync_ptsz" },
	{ "cuMemFreeAsync", 11020, 0, "cuMemFreeAsync" },
	{ "cuMemFreeAsync", 11020, 1, "cuMemFreeAsync_ptsz" },
	{ "cuMemCreate", 10020, 0, "cuMemCreate" },
	{ "cuMemRelease", 10020, 0, "cuMemRelease" },
	{ "cuMemMap", 10020, 0, "cuMemMap" },
	{ "cuMemUnmap", 10020, 0, "cuMemUnmap" },
	{ "cuMemcpyHtoD", 3020, 0, "cuMemcpyHtoD_v2" },
	{ "cuMemcpyHtoD", 7000, 1, "cuMemcpyHtoD_v2_ptds" },
	{ "cuMemcpyDtoH", 3020, 0, "cuMemcpyDtoH_v2" },
	{ "cuMemsetD8", 3020, 0, "cuMemsetD8_v2" },
	{ "cuLaunchKernel", 4000, 0, "cuLaunchKernel" },
	{ "cuLaunchKernel", 7000, 1, "cuLaunchKernel_ptsz" },
	{ "cuLaunchKernelEx", 11060, 0, "cuLaunchKernelEx" },
	{ "cuKernelGetParamInfo", 12040, 0, "cuKernelGetParamInfo" },
	{ "cuStreamIsCapturing", 10000, 0, "cuStreamIsCapturing" },
	{ "cuStreamIsCapturing", 10000, 1, "cuStreamIsCapturing_ptsz" },
	{ "cuGetProcAddress", 11030, 0, "cuGetProcAddress" },
	{ "cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2" },
	{ "cuGetExportTable", 3000, 0, "cuGetExportTable" },
	/* fakegraph.c */
	{ "cuGraphLaunch", 10000, 0, "cuGraphLaunch" },
	{ "cuGraphInstantiate", 11000, 0, "cuGraphInstantiate_v2" },
	{ "cuGraphInstantiateWithFlags", 11040, 0, "cuGraphInstantiateWithFlags" },
	{ "cuGraphInstantiateWithParams", 12000, 0, "cuGraphInstantiateWithParams" },
	{ "cuGraphInstantiateWithParams", 12000, 1, "cuGraphInstantiateWithParams_ptsz" },
	{ "cuGraphExecDestroy", 10000, 0, "cuGraphExecDestroy" },
	{ "cuGraphExecKernelNodeSetParams", 12000, 0, "cuGraphExecKernelNodeSetParams_v2" },
	{ "cuGraphExecMemsetNodeSetParams", 10020, 0, "cuGraphExecMemsetNodeSetParams" },
	{ "cuGraphExecChildGraphNodeSetParams", 11010, 0, "cuGraphExecChildGraphNodeSetParams" },
	{ "cuGraphExecUpdate", 12000, 0, "cuGraphExecUpdate_v2" },
	{ "cuTensorMapEncodeTiled", 12000, 0, "cuTensorMapEncodeTiled" },
};

/* the fake's own entry points by name: dlsym here would be libphos's */
static const struct {
	const char *name;
	void *fn;
} syms[] = {
	{ "cuInit", (void *)cuInit },
	{ "cuDriverGetVersion", (void *)cuDriverGetVersion },
	{ "cuDeviceGetCount", (void *)cuDeviceGetCount },
	{ "cuDeviceGet", (void *)cuDeviceGet },
	{ "cuCtxCreate_v4", (void *)cuCtxCreate_v4 },
	{ "cuDevicePrimaryCtxRetain", (void *)cuDevicePrimaryCtxRetain },
	{ "cuGetErrorName", (void *)cuGetErrorName },
	{ "cuMemGetInfo_v2", (void *)cuMemGetInfo_v2 },
	{ "cuModuleLoadData", (void *)cuModuleLoadData },
	{ "cuModuleGetFunction", (void *)cuModuleGetFunction },
	{ "cuCtxDestroy_v2", (void *)cuCtxDestroy_v2 },
	{ "cuCtxSynchronize", (void *)cuCtxSynchronize },
	{ "cuMemAlloc", (void *)cuMemAlloc },
	{ "cuMemAlloc_v2", (void *)cuMemAlloc_v2 },
	{ "cuMemAllocPitch_v2", (void *)cuMemAllocPitch_v2 },
	{ "cuMemFree_v2", (void *)cuMemFree_v2 },
	{ "cuMemAllocAsync", (void *)cuMemAllocAsync },
	{ "cuMemAllocAsync_ptsz", (void *)cuMemAllocAsync_ptsz },
	{ "cuMemAllocFromPoolAsync", (void *)cuMemAllocFromPoolAsync },
	{ "cuMemFreeAsync", (void *)cuMemFreeAsync },
	{ "cuMemFreeAsync_ptsz", (void *)cuMemFreeAsync_ptsz },
	{ "cuMemHostAlloc", (void *)cuMemHostAlloc },
	{ "cuMemAllocHost_v2", (void *)cuMemAllocHost_v2 },
	{ "cuMemFreeHost", (void *)cuMemFreeHost },
	{ "cuMemGetAllocationGranularity", (void *)cuMemGetAllocationGranularity },
	{ "cuMemCreate", (void *)cuMemCreate },
	{ "cuMemRelease", (void *)cuMemRelease },
	{ "cuMemExportToShareableHandle", (void *)cuMemExportToShareableHandle },
	{ "cuMemImportFromShareableHandle", (void *)cuMemImportFromShareableHandle },
	{ "cuMemAddressReserve", (void *)cuMemAddressReserve },
	{ "cuMemAddressFree", (void *)cuMemAddressFree },
	{ "cuMemMap", (void *)cuMemMap },
	{ "cuMemSetAccess", (void *)cuMemSetAccess },
	{ "cuMemUnmap", (void *)cuMemUnmap },
	{ "cuMemcpyHtoD_v2", (void *)cuMemcpyHtoD_v2 },
	{ "cuMemcpyHtoD_v2_ptds", (void *)cuMemcpyHtoD_v2_ptds },
	{ "cuMemcpyHtoDAsync_v2", (void *)cuMemcpyHtoDAsync_v2 },
	{ "cuMemcpyDtoH_v2", (void *)cuMemcpyDtoH_v2 },
	{ "cuMemcpyDtoHAsync_v2", (void *)cuMemcpyDtoHAsync_v2 },
	{ "cuStreamCreate", (void *)cuStreamCreate },
	{ "cuStreamSynchronize", (void *)cuStreamSynchronize },
	{ "cuStreamDestroy_v2", (void *)cuStreamDestroy_v2 },
	{ "cuMemcpyDtoD_v2", (void *)cuMemcpyDtoD_v2 },
	{ "cuMemcpy", (void *)cuMemcpy },
	{ "cuMemcpyAsync", (void *)cuMemcpyAsync },
	{ "cuMemcpy2D_v2", (void *)cuMemcpy2D_v2 },
	{ "cuMemsetD8_v2", (void *)cuMemsetD8_v2 },
	{ "cuMemsetD8Async", (void *)cuMemsetD8Async },
	{ "cuMemsetD32_v2", (void *)cuMemsetD32_v2 },
	{ "cuMemsetD2D8_v2", (void *)cuMemsetD2D8_v2 },
	{ "cuKernelGetParamInfo", (void *)cuKernelGetParamInfo },
	{ "cuFuncGetParamInfo", (void *)cuFuncGetParamInfo },
	{ "cuLaunchKernel", (void *)cuLaunchKernel },
	{ "cuLaunchKernel_ptsz", (void *)cuLaunchKernel_ptsz },
	{ "cuLaunchKernelEx", (void *)cuLaunchKernelEx },
	{ "cuLaunchCooperativeKernel", (void *)cuLaunchCooperativeKernel },
	{ "cuGraphLaunch", (void *)cuGraphLaunch },
	{ "cuStreamIsCapturing", (void *)cuStreamIsCapturing },
	{ "cuStreamIsCapturing_ptsz", (void *)cuStreamIsCapturing_ptsz },
	{ "cuGetExportTable", (void *)cuGetExportTable },
};

EXPORT CUresult cuGetProcAddress_v2(const char *, void **, int, cuuint64_t,
				    CUdriverProcAddressQueryResult *);
EXPORT CUresult cuGetProcAddress(const char *, void **, int, cuuint64_t);

EXPORT void *fakecuda_sym(const char *name)
{
	size_t i;

	if (strcmp(name, "cuGetProcAddress_v2") == 0)
		return (void *)cuGetProcAddress_v2;
	if (strcmp(name, "cuGetProcAddress") == 0)
		return (void *)cuGetProcAddress;
	for (i = 0; i < sizeof(syms) / sizeof(syms[0]); i++)
		if (strcmp(syms[i].name, name) == 0)
			return syms[i].fn;
	return fakegraph_sym(name);
}

static CUresult lookup(const char *sym, void **pfn, int ver, cuuint64_t flags,
		       CUdriverProcAddressQueryResult *status)
{
	int pt = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
	int best = -1, known = 0, pass;
	size_t i;

	if (!sym || !pfn)
		return CUDA_ERROR_INVALID_VALUE;
	*pfn = NULL;
	for (pass = pt; pass >= 0 && best < 0; pass--) {
		for (i = 0; i < sizeof(procs) / sizeof(procs[0]); i++) {
			if (strcmp(procs[i].base, sym) != 0 || procs[i].pt != pass)
				continue;
			known = 1;
			if (procs[i].ver <= ver && (best < 0 || procs[best].ver < procs[i].ver))
				best = (int)i;
		}
	}
	if (best < 0) {
		if (status)
			*status = known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
					: CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
		return CUDA_ERROR_NOT_FOUND;
	}
	if (strcmp(sym, "cuMemsetD8") == 0 && ver >= 12000 && gpa_internal >= 0 && gpa_internal < 8)
		*pfn = memsetd8_internal[gpa_internal];
	else
		*pfn = fakecuda_sym(procs[best].sym);
	if (status)
		*status = CU_GET_PROC_ADDRESS_SUCCESS;
	return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

FAKE(cuGetProcAddress_v2, (const char *sym, void **pfn, int ver, cuuint64_t flags,
			   CUdriverProcAddressQueryResult *status))
{
	hit("cuGetProcAddress_v2");
	return lookup(sym, pfn, ver, flags, status);
}

FAKE(cuGetProcAddress, (const char *sym, void **pfn, int ver, cuuint64_t flags))
{
	hit("cuGetProcAddress");
	return lookup(sym, pfn, ver, flags, NULL);
}

/* ---- checkpoint API (cuCheckpointProcess*) ------------------------------ */
/* A per-pid state machine as the driver documents it: RUNNING -lock->
 * LOCKED -checkpoint-> CHECKPOINTED -restore-> LOCKED -unlock-> RUNNING.
 * Pids are unknown (CUDA_ERROR_INVALID_VALUE) until a test sets a state. */

#define FK_MAX 64
static struct {
	int pid;
	int state;
} fk[FK_MAX];
static CUresult fk_fail_lock, fk_fail_ckpt, fk_fail_restore, fk_fail_unlock;
static char fk_log[4096];
static unsigned fk_timeout;
static pthread_mutex_t fk_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * With FAKECUDA_CKPT_REMOTE set (phosd and phos-restore of the fake-driver
 * integration tests), a pid the table does not know keeps its state in its
 * own copy of this library, in fakecuda_proc_state, read and written with
 * process_vm_readv/writev: like the real driver's, the state then travels
 * inside the process, through a CRIU dump and restore.  0 is RUNNING.
 */
EXPORT volatile int fakecuda_proc_state;

/* Base address of the mapping of dev:inode at file offset 0 in pid's maps. */
static uintptr_t map_base(const char *pid, const char *devino)
{
	char path[64], line[512];
	uintptr_t base = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%s/maps", pid);
	if (!(f = fopen(path, "re")))
		return 0;
	while (!base && fgets(line, sizeof(line), f)) {
		unsigned long start, off, ino;
		char dev[32], key[64];

		if (sscanf(line, "%lx-%*x %*s %lx %31s %lu", &start, &off, dev, &ino) != 4 ||
		    off != 0)
			continue;
		snprintf(key, sizeof(key), "%s %lu", dev, ino);
		if (strcmp(key, devino) == 0)
			base = start;
	}
	fclose(f);
	return base;
}

/* Where pid's fakecuda_proc_state is; 0 if pid does not map this library. */
static uintptr_t remote_state_addr(int pid)
{
	static char devino[64];
	static uintptr_t off;
	char spid[16];
	uintptr_t base;

	if (!getenv("FAKECUDA_CKPT_REMOTE"))
		return 0;
	if (!devino[0]) {
		uintptr_t me = (uintptr_t)&fakecuda_proc_state;
		char line[512];
		FILE *f = fopen("/proc/self/maps", "re");

		while (f && fgets(line, sizeof(line), f)) {
			unsigned long start, end;
			char dev[32];
			unsigned long ino;

			if (sscanf(line, "%lx-%lx %*s %*x %31s %lu", &start, &end, dev, &ino) == 4 &&
			    me >= start && me < end) {
				snprintf(devino, sizeof(devino), "%s %lu", dev, ino);
				break;
			}
		}
		if (f)
			fclose(f);
		if (!devino[0] || !(base = map_base("self", devino)))
			return 0;
		off = me - base;
	}
	snprintf(spid, sizeof(spid), "%d", pid);
	base = map_base(spid, devino);
	return base ? base + off : 0;
}

static int remote_state(int pid, int *state, int set)
{
	uintptr_t a = remote_state_addr(pid);
	struct iovec l = { state, sizeof(*state) }, r = { (void *)a, sizeof(*state) };

	if (!a)
		return -1;
	if (set)
		return process_vm_writev(pid, &l, 1, &r, 1, 0) == sizeof(*state) ? 0 : -1;
	return process_vm_readv(pid, &l, 1, &r, 1, 0) == sizeof(*state) ? 0 : -1;
}

static int *fk_slot(int pid, int create)
{
	for (int i = 0; i < FK_MAX; i++)
		if (fk[i].pid == pid)
			return &fk[i].state;
	if (!create)
		return NULL;
	for (int i = 0; i < FK_MAX; i++)
		if (!fk[i].pid) {
			fk[i].pid = pid;
			return &fk[i].state;
		}
	return NULL;
}

/* append "name:pid" or "name:pid(arg)" (arg != ~0u) to the log */
static void fk_note(const char *name, int pid, unsigned arg)
{
	size_t l = strlen(fk_log);
	char one[96];

	if (arg != ~0u)
		snprintf(one, sizeof(one), "%s:%d(%u)", name, pid, arg);
	else
		snprintf(one, sizeof(one), "%s:%d", name, pid);
	if (l + strlen(one) + 2 < sizeof(fk_log))
		snprintf(fk_log + l, sizeof(fk_log) - l, "%s%s", l ? " " : "", one);
}

EXPORT void fakecuda_ckpt_reset(void)
{
	pthread_mutex_lock(&fk_lock);
	memset(fk, 0, sizeof(fk));
	fk_fail_lock = fk_fail_ckpt = fk_fail_restore = fk_fail_unlock = CUDA_SUCCESS;
	fk_log[0] = '\0';
	fk_timeout = 0;
	pthread_mutex_unlock(&fk_lock);
}

EXPORT void fakecuda_ckpt_fail(const char *op, CUresult r)
{
	pthread_mutex_lock(&fk_lock);
	if (strcmp(op, "lock") == 0)
		fk_fail_lock = r;
	else if (strcmp(op, "checkpoint") == 0)
		fk_fail_ckpt = r;
	else if (strcmp(op, "restore") == 0)
		fk_fail_restore = r;
	else if (strcmp(op, "unlock") == 0)
		fk_fail_unlock = r;
	pthread_mutex_unlock(&fk_lock);
}

EXPORT void fakecuda_ckpt_set_state(int pid, int state)
{
	pthread_mutex_lock(&fk_lock);
	int *s = fk_slot(pid, 1);
	if (s)
		*s = state;
	pthread_mutex_unlock(&fk_lock);
}

EXPORT int fakecuda_ckpt_state(int pid)
{
	pthread_mutex_lock(&fk_lock);
	int *s = fk_slot(pid, 0), r = s ? *s : -1;
	pthread_mutex_unlock(&fk_lock);
	if (!s && remote_state(pid, &r, 0) < 0)
		r = -1;
	return r;
}

EXPORT void fakecuda_ckpt_log(char *buf, size_t size)
{
	pthread_mutex_lock(&fk_lock);
	snprintf(buf, size, "%s", fk_log);
	pthread_mutex_unlock(&fk_lock);
}

EXPORT unsigned fakecuda_ckpt_lock_timeout(void)
{
	return fk_timeout;
}

/* one transition: from -> to unless failing (then `stay`) */
static CUresult fk_step(int pid, const char *name, unsigned arg, int from, int to, CUresult fail)
{
	CUresult r = CUDA_SUCCESS;
	int *s;

	int remote;

	pthread_mutex_lock(&fk_lock);
	s = fk_slot(pid, 0);
	if (!s && remote_state(pid, &remote, 0) == 0)
		s = &remote;
	if (!s)
		r = CUDA_ERROR_INVALID_VALUE;
	else if (*s != from)
		r = CUDA_ERROR_ILLEGAL_STATE;
	else if (fail != CUDA_SUCCESS)
		r = fail;
	else if ((*s = to, s == &remote) && remote_state(pid, &remote, 1) < 0)
		r = CUDA_ERROR_INVALID_VALUE;
	fk_note(r == CUDA_SUCCESS ? name : "fail", pid, r == CUDA_SUCCESS ? arg : ~0u);
	pthread_mutex_unlock(&fk_lock);
	return r;
}

FAKE(cuCheckpointProcessGetState, (int pid, CUprocessState *state))
{
	int s = fakecuda_ckpt_state(pid);

	hit("cuCheckpointProcessGetState");
	if (!state || s < 0)
		return CUDA_ERROR_INVALID_VALUE;
	*state = (CUprocessState)s;
	return CUDA_SUCCESS;
}

FAKE(cuCheckpointProcessGetRestoreThreadId, (int pid, int *tid))
{
	if (!tid || fakecuda_ckpt_state(pid) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	*tid = pid;
	return CUDA_SUCCESS;
}

FAKE(cuCheckpointProcessLock, (int pid, CUcheckpointLockArgs *args))
{
	hit("cuCheckpointProcessLock");
	fk_timeout = args ? args->timeoutMs : 0;
	/* CUDA_ERROR_NOT_READY models a lock that timed out: left RUNNING */
	return fk_step(pid, "lock", fk_timeout, CU_PROCESS_STATE_RUNNING, CU_PROCESS_STATE_LOCKED,
		       fk_fail_lock);
}

FAKE(cuCheckpointProcessCheckpoint, (int pid, CUcheckpointCheckpointArgs *args))
{
	(void)args;
	hit("cuCheckpointProcessCheckpoint");
	return fk_step(pid, "checkpoint", ~0u, CU_PROCESS_STATE_LOCKED,
		       CU_PROCESS_STATE_CHECKPOINTED, fk_fail_ckpt);
}

FAKE(cuCheckpointProcessRestore, (int pid, CUcheckpointRestoreArgs *args))
{
	hit("cuCheckpointProcessRestore");
	return fk_step(pid, "restore", args ? args->gpuPairsCount : 0,
		       CU_PROCESS_STATE_CHECKPOINTED, CU_PROCESS_STATE_LOCKED, fk_fail_restore);
}

FAKE(cuCheckpointProcessUnlock, (int pid, CUcheckpointUnlockArgs *args))
{
	(void)args;
	hit("cuCheckpointProcessUnlock");
	return fk_step(pid, "unlock", ~0u, CU_PROCESS_STATE_LOCKED, CU_PROCESS_STATE_RUNNING,
		       fk_fail_unlock);
}
