/*
 * phos-gpu - phosd's hands on GPU memory (doc/protocol.md, "GPU memory").
 *
 * phosd itself never creates a CUDA context (it only drives the checkpoint
 * API); copying buffers needs one, so it runs this helper, which dies with
 * its context when the copy is done.
 *
 *   phos-gpu save TAG [--snapshot] [--table FD] [--zstd LEVEL]
 *                          fds 3..3+N-1: exported buffers; stdin: N lines
 *                          "va size dev".  Stores the buffers as chunks in
 *                          the task's chunk store, ../chunks (common/
 *                          chunks.h; --zstd: compressed where smaller), and
 *                          writes gpumem-TAG-I.idx (each buffer's chunks)
 *                          and gpumem-TAG.map ("va size dev file h0 h1
 *                          rank [k1]" lines, k1: sums keyed by the
 *                          generation's PHOS_GPU_SUMS_KEY from phosd) into
 *                          the current directory.  Says on
 *                          stdout, before copying to the host, how it
 *                          copies:
 *                          "snapshot" (with --snapshot and room on the
 *                          GPU: every buffer was first copied on the GPU,
 *                          device to device, so the owner may write its
 *                          buffers again; with --table, the table says
 *                          every buffer is saved and only collects the
 *                          owner's first-use ranks until the save ends);
 *                          "cow" (with --table, the save table FD of
 *                          common/savetab.h, and the hash kernel: every
 *                          buffer was hashed on the device; the owner may
 *                          run on, waiting on the table before it writes a
 *                          buffer not saved yet; each saved buffer's bytes
 *                          are hashed again on the host and must match, or
 *                          the save fails with exit status 3: a write the
 *                          owner did not announce);
 *                          or "direct" (the owner waits for the copy).
 *   phos-gpu load TAG [--concurrent]
 *                          reads gpumem-TAG.map from the current directory,
 *                          creates each buffer (exportable) on its device,
 *                          fills it (from its chunks, each checked against
 *                          its SHA-256 name unless the buffer is checked on
 *                          its GPU by keyed sums; or, in images from before
 *                          the chunk store, from gpumem-TAG-I.bin), and sends
 *                          the records (PHOS_A_GPUBUFS) with the fds as one
 *                          GPU_DETACH message on fd 3.
 *                          --concurrent: sends them, with a load table
 *                          (PHOS_A_SAVETAB), before filling them
 *                          (doc/concurrent-restore.md).  Each buffer whose
 *                          map line has its hash must match it.
 *
 * A concurrent save or load starts the buffers the process waits for
 * first, then the others by first-use rank (stdin's fourth column, the
 * map's seventh; PHOS_GPU_NO_RANKS=1: index order).
 * Copies run on gpu-io.c's workers (PHOS_GPU_IO_THREADS, default half the
 * CPUs, 4 to 16, and as many as the CPUs for a concurrent load, at nice
 * PHOS_GPU_LOAD_NICE; each with a pinned staging buffer of
 * PHOS_GPU_IO_CHUNK_MB, default 8 MiB; PHOS_GPU_DIRECT_IO=1: O_DIRECT
 * files where the file system takes it).  A load checks each buffer on
 * its GPU against the map's hash once its last chunk is in (the CPU folds
 * it where a GPU cannot, or with PHOS_GPU_LOAD_VIA_CPU=1).
 * The last line on stderr says what was done; exit 0 on success, 1 with
 * a message (3: a concurrent save's buffer changed, see above).
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cuda.h>

#include "chunks.h"
#include "cpool-grant.h"
#include "gpu-io.h"
#include "phos-hash-ptx.h"
#include "proto.h"
#include "savetab.h"
#include "stage.h"
#include "util.h"


static struct {
	CUresult (*init)(unsigned);
	CUresult (*dev_get)(CUdevice *, int);
	CUresult (*retain)(CUcontext *, CUdevice);
	CUresult (*set_current)(CUcontext);
	CUresult (*granularity)(size_t *, const CUmemAllocationProp *,
				CUmemAllocationGranularity_flags);
	CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
	CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
			   unsigned long long);
	CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
			unsigned long long);
	CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
	CUresult (*import_fd)(CUmemGenericAllocationHandle *, void *, CUmemAllocationHandleType);
	CUresult (*export_fd)(void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType,
			      unsigned long long);
	CUresult (*host_alloc)(void **, size_t, unsigned);
	CUresult (*host_free)(void *);
	CUresult (*dtoh)(void *, CUdeviceptr, size_t);
	CUresult (*htod)(void *, const void *, size_t);	/* cuMemcpyHtoD_v2, dst first */
	CUresult (*err_name)(CUresult, const char **);
	CUresult (*mem_info)(size_t *, size_t *);
	CUresult (*alloc)(CUdeviceptr *, size_t);
	CUresult (*dtod)(CUdeviceptr, CUdeviceptr, size_t);
	CUresult (*ctx_sync)(void);
	/* optional: the device hash of a concurrent save */
	CUresult (*mod_load)(CUmodule *, const void *);
	CUresult (*mod_func)(CUfunction *, CUmodule, const char *);
	CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
			   unsigned, CUstream, void **, void **);
	/* optional: a save through the staging pool */
	CUresult (*host_register)(void *, size_t, unsigned);
	CUresult (*host_unregister)(void *);
	CUresult (*unmap)(CUdeviceptr, size_t);
	CUresult (*addr_free)(CUdeviceptr, size_t);
	CUresult (*release)(CUmemGenericAllocationHandle);
	CUresult (*ctx_release)(CUdevice);
	/* optional: the copy engine's streams */
	CUresult (*stream_create)(CUstream *, unsigned);
	CUresult (*stream_destroy)(CUstream);
	CUresult (*stream_sync)(CUstream);
	CUresult (*dtoh_async)(void *, CUdeviceptr, size_t, CUstream);
	CUresult (*htod_async)(void *, const void *, size_t, CUstream);
	/* optional: pool-create's questions */
	CUresult (*dev_attr)(int *, CUdevice_attribute, CUdevice);
} cu;

/* --stage-cuda FIRST:COUNT:PIECE_MIB: a staging pool of host memory the
 * driver pinned (pool-create), COUNT fds from FIRST, PIECE bytes each */
static int cpool_first = -1;
static unsigned cpool_n;
static uint64_t cpool_piece;
/* its pieces mapped here (cpool_map), and the thread granting access to
 * them behind the copies (cpool_grant) */
static CUdeviceptr cpool_base;
static uint64_t cpool_len;
static struct cpool_grant *cgrant;

static CUcontext ctx_of[64];

static const char *cu_err(CUresult r)
{
	const char *s = NULL;

	if (cu.err_name && cu.err_name(r, &s) == CUDA_SUCCESS && s)
		return s;
	return "unknown CUDA error";
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	fputs("phos-gpu: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int load_driver(void)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	CUresult r;

#define S(f, n) ((*(void **)&cu.f = dlsym(h, n)) != NULL)
	if (!h)
		return fail("cannot load the NVIDIA driver (libcuda.so.1): %s", dlerror());
	if (!(S(init, "cuInit") && S(dev_get, "cuDeviceGet") &&
	      S(retain, "cuDevicePrimaryCtxRetain") && S(set_current, "cuCtxSetCurrent") &&
	      S(granularity, "cuMemGetAllocationGranularity") && S(reserve, "cuMemAddressReserve") &&
	      S(create, "cuMemCreate") && S(map, "cuMemMap") && S(set_access, "cuMemSetAccess") &&
	      S(import_fd, "cuMemImportFromShareableHandle") &&
	      S(export_fd, "cuMemExportToShareableHandle") && S(host_alloc, "cuMemHostAlloc") &&
	      S(dtoh, "cuMemcpyDtoH_v2") && S(htod, "cuMemcpyHtoD_v2") &&
	      S(err_name, "cuGetErrorName") && S(mem_info, "cuMemGetInfo_v2") &&
	      S(alloc, "cuMemAlloc_v2") && S(dtod, "cuMemcpyDtoD_v2") &&
	      S(ctx_sync, "cuCtxSynchronize") && S(host_free, "cuMemFreeHost")))
		return fail("the NVIDIA driver lacks an entry point phos-gpu needs");
	if (!(S(mod_load, "cuModuleLoadData") && S(mod_func, "cuModuleGetFunction") &&
	      S(launch, "cuLaunchKernel")))
		cu.mod_load = NULL;
	if (!(S(host_register, "cuMemHostRegister_v2") && S(host_unregister, "cuMemHostUnregister") &&
	      S(unmap, "cuMemUnmap") && S(addr_free, "cuMemAddressFree") &&
	      S(release, "cuMemRelease") && S(ctx_release, "cuDevicePrimaryCtxRelease_v2")))
		cu.host_register = NULL;
	if (!(S(stream_create, "cuStreamCreate") && S(stream_destroy, "cuStreamDestroy_v2") &&
	      S(stream_sync, "cuStreamSynchronize") && S(dtoh_async, "cuMemcpyDtoHAsync_v2") &&
	      S(htod_async, "cuMemcpyHtoDAsync_v2")))
		cu.stream_create = NULL;
	if (!S(dev_attr, "cuDeviceGetAttribute"))
		cu.dev_attr = NULL;
#undef S
	if ((r = cu.init(0)) != CUDA_SUCCESS)
		return fail("cuInit: %s", cu_err(r));
	return 0;
}

/* Make dev's primary context current (and the staging buffer once). */
static int use_dev(unsigned dev)
{
	CUdevice d;
	CUresult r;

	if (dev >= 64)
		return fail("device %u out of range", dev);
	if (!ctx_of[dev]) {
		if ((r = cu.dev_get(&d, (int)dev)) != CUDA_SUCCESS ||
		    (r = cu.retain(&ctx_of[dev], d)) != CUDA_SUCCESS)
			return fail("GPU %u: %s", dev, cu_err(r));
	}
	if ((r = cu.set_current(ctx_of[dev])) != CUDA_SUCCESS)
		return fail("GPU %u: %s", dev, cu_err(r));
	return 0;
}

/* Wait for everything issued in every context made so far: the copy
 * engine's streams do not wait for work on the default streams (a
 * snapshot's device-to-device copies). */
static CUresult sync_all(void)
{
	CUresult r = CUDA_SUCCESS;

	for (unsigned d = 0; d < 64 && r == CUDA_SUCCESS; d++)
		if (ctx_of[d] && (r = cu.set_current(ctx_of[d])) == CUDA_SUCCESS)
			r = cu.ctx_sync();
	return r;
}

/* Pinned staging usable with every device's context (buffers of several
 * GPUs share the workers). */
static CUresult host_alloc_portable(void **p, size_t size)
{
	return cu.host_alloc(p, size, CU_MEMHOSTALLOC_PORTABLE);
}

/* A piece of the staging pool, pinned for every context. */
static CUresult host_register_portable(void *p, size_t size)
{
	return cu.host_register(p, size, CU_MEMHOSTREGISTER_PORTABLE);
}

/* A worker's stream: it must not wait for, nor be waited for by, the
 * context's default stream. */
static CUresult stream_nonblocking(CUstream *s)
{
	return cu.stream_create(s, CU_STREAM_NON_BLOCKING);
}

/* The engine's view of the driver. */
static const struct gio_ops *io_ops(void)
{
	static struct gio_ops o;

	if (cu.stream_create) {
		o.stream_create = stream_nonblocking;
		o.stream_destroy = cu.stream_destroy;
		o.stream_sync = cu.stream_sync;
		o.dtoh_async = cu.dtoh_async;
		o.htod_async = cu.htod_async;
	}

	o.set_current = cu.set_current;
	o.host_alloc = host_alloc_portable;
	o.host_free = cu.host_free;
	o.dtoh = cu.dtoh;
	o.htod = cu.htod;
	o.host_register = host_register_portable;
	o.host_unregister = cu.host_unregister;
	o.err = cu_err;
	return &o;
}

/* PHOS_GPU_DIRECT_IO=1: O_DIRECT where the file system takes it (the page
 * cache is bypassed). */
static bool direct_io(void)
{
	return phos_env_on("PHOS_GPU_DIRECT_IO");
}

/* Open a buffer file of an image written before the chunk store (read). */
static int open_file(const char *name)
{
	int fd = -1;

	if (direct_io())
		fd = open(name, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		fd = open(name, O_RDONLY | O_CLOEXEC);
	return fd;
}

/* Map handle h (size bytes) read-write for dev at a fresh VA. */
static int map_new(CUmemGenericAllocationHandle h, size_t size, unsigned dev, CUdeviceptr *va)
{
	CUmemAccessDesc acc = { .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = (int)dev },
				.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUresult r;

	if ((r = cu.reserve(va, size, 0, 0, 0)) != CUDA_SUCCESS ||
	    (r = cu.map(*va, size, 0, h, 0)) != CUDA_SUCCESS ||
	    (r = cu.set_access(*va, size, &acc, 1)) != CUDA_SUCCESS)
		return fail("mapping a %zu-byte buffer on GPU %u: %s", size, dev, cu_err(r));
	return 0;
}

static struct {
	uint64_t va, size;
	unsigned dev;
	unsigned rank;		/* first-use rank libphos reported (0: none) */
	CUmemGenericAllocationHandle handle;	/* imported */
	CUdeviceptr src, snap;
	uint64_t h[2];		/* device hash at the stop (cow) */
} b[PHOS_GPUBUF_MAX];
static struct gio_buf io[PHOS_GPUBUF_MAX];	/* the copy engine's view of them */

/*
 * The order a concurrent save or load starts buffers in when the process
 * waits for none: by first-use rank (the order the process touched them
 * in after the last checkpoint or restore, common/savetab.h), the
 * unranked after them smallest first.  A restored process resumes where
 * the saved one stood, so it touches its buffers in that order again.
 * Without ranks (a process never saved while it ran), smallest first: the
 * process waits for the buffers it touches one call at a time, so each
 * small buffer not in place costs it a round trip to the loader out of
 * all proportion to its bytes (a PyTorch step touches a few dozen small
 * segments; session 17, 64 GiB from storage in index order: the first
 * step waited 6.3 s for 25 buffers).  PHOS_GPU_NO_RANKS=1 (order_copy):
 * index order, to measure what both are worth.
 */
static unsigned order[PHOS_GPUBUF_MAX];
static unsigned order_rank[PHOS_GPUBUF_MAX];
static uint64_t order_size[PHOS_GPUBUF_MAX];

static int by_rank(const void *a, const void *b2)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b2;
	unsigned rx = order_rank[x] ? order_rank[x] : UINT32_MAX;
	unsigned ry = order_rank[y] ? order_rank[y] : UINT32_MAX;

	if (rx != ry)
		return rx < ry ? -1 : 1;
	if (order_size[x] != order_size[y])
		return order_size[x] < order_size[y] ? -1 : 1;
	return (x > y) - (x < y);
}

/* order[] from rank[0..n-1] and size[0..n-1] (NULL: the unranked in
 * index order); how many buffers have a rank */
static unsigned order_set(const unsigned *rank, const uint64_t *size, unsigned n)
{
	unsigned ranked = 0;

	for (unsigned i = 0; i < n; i++) {
		order[i] = i;
		order_rank[i] = rank[i];
		order_size[i] = size ? size[i] : 0;
		ranked += rank[i] != 0;
	}
	qsort(order, n, sizeof(*order), by_rank);
	return ranked;
}

/* order[] for a save's or load's copy: order_set(), or with
 * PHOS_GPU_NO_RANKS=1 in phosd's environment index order (then *by_index,
 * if asked for), to measure what the ranks and the sizes are worth; how
 * many buffers are ranked */
static unsigned order_copy(const unsigned *rank, const uint64_t *size, unsigned n, bool *by_index)
{
	static const unsigned none[PHOS_GPUBUF_MAX];
	bool bi = phos_env_on("PHOS_GPU_NO_RANKS");

	if (by_index)
		*by_index = bi;
	return order_set(bi ? none : rank, bi ? NULL : size, n);
}

/* The order the loader begins buffers in when nothing is asked for (the
 * first 24 of order[]; after them "..."). */
static void order_line(unsigned n, unsigned ranked, bool by_index)
{
	char line[24 * 6 + 8] = "";
	size_t len = 0;

	for (unsigned k = 0; k < n && k < 24; k++)
		len += (size_t)snprintf(line + len, sizeof(line) - len, " %u", order[k]);
	fprintf(stderr, "phos-gpu: load order (%s):%s%s\n",
		by_index ? "by index: PHOS_GPU_NO_RANKS=1" :
		ranked ? "by first-use rank, the unranked smallest first" : "smallest first, no ranks",
		line, n > 24 ? " ..." : "");
}

/*
 * The device hash (the kernel of phos-hash.cu, one module per device) of
 * size bytes at p on dev into h.  On the context's default stream (after
 * what the helper issued there), or, with own, on a stream of the device's
 * own that waits for nothing else: a load's workers call it, one at a time,
 * for buffers whose copies they have waited for.
 */
static const char *hash_err = "";	/* hash_on()'s last failure */

/*
 * The key of this generation's sums (common/savetab.h): phosd and
 * phos-restore derive it from the node key (phos_gpumem_key()) and pass it
 * in PHOS_GPU_SUMS_KEY, 16 hex digits; 0 without it: the unkeyed sums of
 * earlier maps.  A save with a key writes keyed sums (the map's eighth
 * field, "k1"); a load of such a map needs the key.
 */
static uint64_t sums_key;

static int hash_on(unsigned dev, CUdeviceptr p, uint64_t size, uint64_t h[2], bool own)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static CUfunction fn_of[64];
	static CUdeviceptr out_of[64];
	static CUstream s_of[64];
	static const uint64_t zero[2];
	unsigned long long nw = size / 4, first = 0;
	CUdeviceptr out;
	void *args[] = { &p, &nw, &first, &out, &sums_key };
	unsigned blocks = nw / 256 + 1 < 4096 ? (unsigned)(nw / 256 + 1) : 4096;
	CUmodule mod;
	CUstream s;
	CUresult r = CUDA_ERROR_NOT_SUPPORTED;
	int rc = -1;

	pthread_mutex_lock(&lock);
	if (use_dev(dev))
		goto out;
	if (!fn_of[dev] && (!cu.mod_load || !phos_hash_ptx[0] ||
			    (r = cu.mod_load(&mod, phos_hash_ptx)) != CUDA_SUCCESS ||
			    (r = cu.mod_func(&fn_of[dev], mod, "phos_hash")) != CUDA_SUCCESS ||
			    (r = cu.alloc(&out_of[dev], sizeof(zero))) != CUDA_SUCCESS)) {
		fprintf(stderr, "phos-gpu: no device hash on GPU %u (%s)\n", dev, cu_err(r));
		fn_of[dev] = NULL;
		goto out;
	}
	if (own && cu.stream_create && !s_of[dev] &&
	    (r = cu.stream_create(&s_of[dev], CU_STREAM_NON_BLOCKING)) != CUDA_SUCCESS) {
		fprintf(stderr, "phos-gpu: no stream for the device hash on GPU %u (%s)\n", dev,
			cu_err(r));
		goto out;
	}
	out = out_of[dev];
	s = own && cu.stream_create ? s_of[dev] : NULL;
	if (s ? (r = cu.htod_async((void *)(uintptr_t)out, zero, sizeof(zero), s)) != CUDA_SUCCESS ||
		(r = cu.launch(fn_of[dev], blocks, 1, 1, 256, 1, 1, 0, s, args, NULL)) != CUDA_SUCCESS ||
		(r = cu.dtoh_async(h, out, 2 * sizeof(*h), s)) != CUDA_SUCCESS ||
		(r = cu.stream_sync(s)) != CUDA_SUCCESS :
	      (r = cu.htod((void *)(uintptr_t)out, zero, sizeof(zero))) != CUDA_SUCCESS ||
		(r = cu.launch(fn_of[dev], blocks, 1, 1, 256, 1, 1, 0, NULL, args, NULL)) != CUDA_SUCCESS ||
		(r = cu.dtoh(h, out, 2 * sizeof(*h))) != CUDA_SUCCESS) {
		fprintf(stderr, "phos-gpu: hashing %" PRIu64 " bytes on GPU %u: %s\n", size, dev,
			cu_err(r));
		hash_err = cu_err(r);
		goto out;
	}
	rc = 0;
out:
	pthread_mutex_unlock(&lock);
	return rc;
}

/* Hash buffer i (the process's, at the stop) on its device into b[i].h. */
static int device_hash(unsigned i)
{
	return hash_on(b[i].dev, b[i].src, b[i].size, b[i].h, false);
}

/* Next buffer to copy in a concurrent save or load: one the owner waits
 * for, else the first pending in order[]; -1 when none is left. */
static int next_buffer(struct phos_savetab *t)
{
	int first = -1;

	for (uint32_t k = 0; k < t->n; k++) {
		uint32_t i = order[k];

		if (__atomic_load_n(phos_savetab_state(t, i), __ATOMIC_ACQUIRE) != PHOS_SAVE_PENDING)
			continue;
		if (__atomic_load_n(phos_savetab_want(t, i), __ATOMIC_ACQUIRE))
			return (int)i;
		if (first < 0)
			first = (int)i;
	}
	return first;
}

/* The engine's callbacks for a concurrent save or load (the table's
 * kind): copy the buffers the process waits for first, mark each COPYING,
 * then SAVED (loaded) once its bytes match the hash they must have. */
struct copy_ctx {
	struct phos_savetab *tab;
	int bad;		/* the buffer that did not match, -1: none */
	uint64_t waited;	/* buffers started because the process wanted them */
	int unchecked;		/* a buffer the device could not hash, -1: none */
	bool on_dev;		/* a load: each buffer hashed on its GPU
				 * (devices_hash()), not by the CPU */
};

static int copy_pick(void *arg)
{
	return next_buffer(((struct copy_ctx *)arg)->tab);
}

static bool copy_wanted(void *arg, unsigned i)
{
	struct copy_ctx *cc = arg;

	return __atomic_load_n(phos_savetab_want(cc->tab, i), __ATOMIC_ACQUIRE) != 0;
}

/* For the buffers started because the process wanted them: when they
 * were started, and how long they took from there to loaded (ms). */
static uint64_t want_t0[PHOS_GPUBUF_MAX], want_ms[PHOS_GPUBUF_MAX];

static void copy_start(void *arg, unsigned i)
{
	struct copy_ctx *cc = arg;

	if (copy_wanted(arg, i)) {
		cc->waited++;	/* under the engine's lock */
		want_t0[i] = phos_now_ms();
	}
	phos_savetab_set(cc->tab, i, PHOS_SAVE_COPYING);
}

/* Buffer i is in place (the one worker that moved its last bytes). */
static void note_loaded(unsigned i)
{
	if (want_t0[i])
		want_ms[i] = phos_now_ms() - want_t0[i] + 1;	/* 0: not wanted */
}

static int cmp_u64(const void *a, const void *b2)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b2;

	return (x > y) - (x < y);
}

/* The buffers the process asked for, from their start to loaded: what a
 * restored process's waits are made of (its own side: libphos's
 * PHOS_DEBUG lines). */
static void wanted_line(unsigned n, uint64_t t0)
{
	uint64_t ms[PHOS_GPUBUF_MAX], mib = 0, first = UINT64_MAX;
	unsigned k = 0, worst = 0;

	for (unsigned i = 0; i < n; i++) {
		if (!want_ms[i])
			continue;
		ms[k++] = want_ms[i] - 1;
		mib += io[i].size >> 20;
		worst = want_ms[i] > want_ms[worst] ? i : worst;
		first = want_t0[i] < first ? want_t0[i] : first;
	}
	if (!k)
		return;
	qsort(ms, k, sizeof(*ms), cmp_u64);
	fprintf(stderr, "phos-gpu: the %u buffer(s) the process asked for (%" PRIu64 " MiB; the "
		"first begun %" PRIu64 " ms into the load) took from their start to loaded: "
		"median %" PRIu64 " ms, longest %" PRIu64 " ms (buffer %u, %" PRIu64 " MiB)\n", k, mib,
		first - t0, ms[k / 2], want_ms[worst] - 1, worst, io[worst].size >> 20);
}

/* Buffer i is copied: its hash h (what was written or read) must be want. */
static int copy_check(struct copy_ctx *cc, unsigned i, const uint64_t want[2])
{
	if (io[i].h[0] != want[0] || io[i].h[1] != want[1]) {
		cc->bad = (int)i;	/* one worker at most gets here first */
		return 1;
	}
	if (cc->tab)
		phos_savetab_set(cc->tab, i, PHOS_SAVE_SAVED);
	return 0;
}

static int save_done(void *arg, unsigned i)
{
	/* what was written against what the device held at the stop */
	return copy_check(arg, i, b[i].h);
}

/* The ranks to record for a save (rank[] holds libphos's): those of this
 * save's table first, then libphos's behind them, renumbered 1.. */
static void save_ranks(struct phos_savetab *tab, unsigned *rank, unsigned n)
{
	unsigned top = 0, next = 0, r[PHOS_GPUBUF_MAX];

	for (unsigned i = 0; i < n; i++) {
		r[i] = tab ? __atomic_load_n(phos_savetab_use(tab, i), __ATOMIC_RELAXED) : 0;
		top = r[i] > top ? r[i] : top;
	}
	for (unsigned i = 0; i < n; i++)
		if (!r[i] && rank[i] && rank[i] < UINT32_MAX - top)
			r[i] = top + rank[i];
	order_set(r, NULL, n);
	for (unsigned k = 0; k < n; k++)
		rank[order[k]] = r[order[k]] ? ++next : 0;
}

/* Map the save table at fd for n buffers, or NULL with a message. */
static struct phos_savetab *table_open(int fd, unsigned n)
{
	struct phos_savetab *t;
	struct stat st;

	if (fstat(fd, &st) < 0 || (size_t)st.st_size != phos_savetab_size(n)) {
		fail("the save table (fd %d) is not one of %u buffers", fd, n);
		return NULL;
	}
	t = mmap(NULL, phos_savetab_size(n), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (t == MAP_FAILED || t->magic != PHOS_SAVETAB_MAGIC || t->n != n) {
		fail("the save table (fd %d) is not one of %u buffers", fd, n);
		return NULL;
	}
	return t;
}

/* The task's chunk store (common/chunks.h), "../chunks" from the image
 * directory phos-gpu runs in; each buffer's chunk digests, in order. */
static int chunks_fd = -1;
static int zstd_level;		/* --zstd N: compress chunks (0: off) */
static struct phos_idx idx[PHOS_GPUBUF_MAX];
static struct phos_chunk_stats cstat;

static int open_chunks(void)
{
	chunks_fd = open("../" PHOS_CHUNKS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return chunks_fd;
}

static int chunk_put(void *arg, unsigned i, uint64_t off, const void *data, size_t len,
		     char *err, size_t errsz)
{
	size_t stored;

	(void)arg;
	if (phos_chunk_put_z(chunks_fd, data, len, direct_io(), zstd_level,
			     idx[i].sha[off / idx[i].chunk], &stored, err, errsz) < 0)
		return -1;
	__atomic_fetch_add(stored ? &cstat.written : &cstat.reused, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(stored ? &cstat.written_bytes : &cstat.reused_bytes, len,
			   __ATOMIC_RELAXED);
	__atomic_fetch_add(&cstat.stored_bytes, stored, __ATOMIC_RELAXED);
	return 0;
}

/* a load whose buffers are each checked on their GPU by keyed sums: its
 * chunks are read without their SHA-256 */
static bool chunks_unchecked;

static int chunk_get(void *arg, unsigned i, uint64_t off, void *data, size_t len, char *err,
		     size_t errsz)
{
	const unsigned char *sha = idx[i].sha[off / idx[i].chunk];

	(void)arg;
	return chunks_unchecked ?
	       phos_chunk_get_unchecked(chunks_fd, sha, data, len, direct_io(), err, errsz) :
	       phos_chunk_get(chunks_fd, sha, data, len, direct_io(), err, errsz);
}

/* A staged save: the GPU memory may go once it is in the pool.  Each
 * buffer's mapping and handle, its fd (phosd closes its own when told),
 * then the contexts (a GPU in EXCLUSIVE_PROCESS mode is free for the next
 * job).  What fails here only keeps memory longer: said, not fatal. */
static void release_buffers(unsigned n)
{
	CUresult r = CUDA_SUCCESS;

	for (unsigned i = 0; i < n; i++) {
		if (use_dev(b[i].dev) == 0 && ((r = cu.unmap(b[i].src, b[i].size)) != CUDA_SUCCESS ||
		    (r = cu.addr_free(b[i].src, b[i].size)) != CUDA_SUCCESS ||
		    (r = cu.release(b[i].handle)) != CUDA_SUCCESS))
			fprintf(stderr, "phos-gpu: letting go of buffer %u: %s\n", i, cu_err(r));
		close(3 + (int)i);
	}
}

static void release_contexts(void)
{
	CUresult r;

	cu.set_current(NULL);
	for (int d = 0; d < 64; d++) {
		CUdevice dev;

		if (!ctx_of[d])
			continue;
		if ((r = cu.dev_get(&dev, d)) != CUDA_SUCCESS || (r = cu.ctx_release(dev)) != CUDA_SUCCESS)
			fprintf(stderr, "phos-gpu: releasing the context of GPU %d: %s\n", d, cu_err(r));
		ctx_of[d] = NULL;
	}
}

/* The copy engine's n buffers at their places in the pool: one after the
 * other, each at a 2 MiB boundary (stage_span()). */
static void in_pool(uint8_t *pool, unsigned n)
{
	for (uint64_t i = 0, off = 0; i < n; off += stage_align(io[i].size), i++)
		io[i].host = pool + off;
}

/*
 * [off, off + span) of a driver-pinned pool (--stage-cuda): the pieces
 * that cover it, mapped one after the other in a reservation of their own
 * (cpool_base, cpool_len).  The memory is pinned already: nothing is
 * registered.  Nothing may touch it before cpool_grant() grants access.
 * NULL with why.
 */
static uint8_t *cpool_map(uint64_t off, uint64_t span, char *why, size_t whysz)
{
	uint64_t p = cpool_piece, first = off / p, last = (off + span - 1) / p, len;
	CUdeviceptr base;
	CUresult r;

	if (!span || last >= cpool_n) {
		snprintf(why, whysz, "%" PRIu64 " MiB at %" PRIu64 " MiB do not fit its %u "
			 "piece(s) of %" PRIu64 " MiB", span >> 20, off >> 20, cpool_n, p >> 20);
		return NULL;
	}
	len = (last - first + 1) * p;
	if ((r = cu.reserve(&base, len, 0, 0, 0)) != CUDA_SUCCESS)
		goto cuda;
	for (uint64_t k = first; k <= last; k++) {
		CUmemGenericAllocationHandle h;

		if ((r = cu.import_fd(&h, (void *)(intptr_t)(cpool_first + (int)k),
				      CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)) != CUDA_SUCCESS ||
		    (r = cu.map(base + (k - first) * p, p, 0, h, 0)) != CUDA_SUCCESS)
			goto cuda;
		if (cu.release)
			cu.release(h);	/* the mapping keeps it */
	}
	cpool_base = base;
	cpool_len = len;
	return (uint8_t *)(uintptr_t)(base + off % p);
cuda:
	snprintf(why, whysz, "%s", cu_err(r));
	return NULL;
}

/* The host NUMA node next to GPU d, where pool-create makes the pool (0
 * when the driver does not say). */
static int numa_of(CUdevice d)
{
	int numa = 0;

	if (!cu.dev_attr || cu.dev_attr(&numa, CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID, d) != CUDA_SUCCESS ||
	    numa < 0)
		return 0;
	return numa;
}

/* The CPU's access to a driver-pinned pool: the HOST_NUMA location it was
 * made on (GPU 0's node, pool_create()). */
static CUmemAccessDesc cpool_host_access(void)
{
	CUdevice d;

	return (CUmemAccessDesc){ .location = { .type = CU_MEM_LOCATION_TYPE_HOST_NUMA,
						.id = cu.dev_get(&d, 0) == CUDA_SUCCESS ?
						      numa_of(d) : 0 },
				  .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
}

/*
 * Start granting the mapped pool to every GPU with a context here (and to
 * the CPU with host) behind the copies (cpool-grant.h): the pieces in the
 * order the copies will want them, that of the n buffers first[] (NULL:
 * pool order), the first piece before this returns.  0, or -1 with why.
 */
static int cpool_grant(bool host, const unsigned *first, unsigned n, char *why, size_t whysz)
{
	static struct cpool_grant_ops o;
	unsigned pieces[STAGE_CUDA_MAX], np = 0;
	bool seen[STAGE_CUDA_MAX] = { false };
	CUmemAccessDesc acc[64];
	CUcontext ctx = NULL;
	size_t na = 0;

	o = (struct cpool_grant_ops){ .set_current = cu.set_current, .set_access = cu.set_access,
				      .err = cu_err };
	for (int d = 0; d < 64 && na < 63; d++)
		if (ctx_of[d]) {
			acc[na++] = (CUmemAccessDesc){
				.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = d },
				.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
			ctx = ctx ? ctx : ctx_of[d];
		}
	if (host)
		acc[na++] = cpool_host_access();
	/* the pieces each buffer lies in, the buffers in order[] */
	for (unsigned j = 0; first && j < n; j++) {
		const struct gio_buf *gb = &io[first[j]];
		uint64_t lo = ((uintptr_t)gb->host - cpool_base) / cpool_piece;
		uint64_t hi = ((uintptr_t)gb->host + gb->size - 1 - cpool_base) / cpool_piece;

		for (uint64_t k = lo; gb->size && k <= hi && k < STAGE_CUDA_MAX; k++)
			if (!seen[k]) {
				seen[k] = true;
				pieces[np++] = (unsigned)k;
			}
	}
	cgrant = cpool_grant_start(&o, ctx, cpool_base, cpool_piece,
				   (unsigned)(cpool_len / cpool_piece), acc, na, pieces, np, why,
				   whysz);
	return cgrant ? 0 : -1;
}

/*
 * After a staged save's copy into a driver-pinned pool, with the GPU
 * memory released: the CPU's access to the pool, for the writes to
 * storage.  Refused, the chunks are read from the pool through the GPU
 * (the copy engine reads the pool as it wrote it).
 */
static void cpool_cpu(unsigned n)
{
	CUmemAccessDesc acc = cpool_host_access();
	uint64_t t = phos_now_ms();
	CUresult r = cu.set_access(cpool_base, cpool_len, &acc, 1);

	if (r == CUDA_SUCCESS) {
		fprintf(stderr, "phos-gpu: the CPU's access to %" PRIu64 " MiB of the staging pool "
			"granted in %" PRIu64 " ms\n", cpool_len >> 20, phos_now_ms() - t);
		return;
	}
	fprintf(stderr, "phos-gpu: the CPU cannot read the staging pool the driver pinned (%s): "
		"it is written to storage through the GPU\n", cu_err(r));
	for (unsigned i = 0; i < n; i++) {
		io[i].dptr = (CUdeviceptr)(uintptr_t)io[i].host;
		io[i].host = NULL;
	}
}

/* gio's ready(): a copy into the pool (or, a direct load, out of it)
 * waits for its pieces' access. */
static int cpool_ready(void *arg, void *p, size_t len, char *err, size_t errsz)
{
	(void)arg;
	return cpool_grant_wait(cgrant, (uintptr_t)p, len, err, errsz);
}

/*
 * pool-create N PIECE_GIB: N pieces of host memory that the driver pins
 * as it makes them, next to GPU 0 (its NUMA node), exported as fds and
 * sent over fd 3 (phosd's socket); then exit.  The memory lives as long as
 * phosd holds one of the fds (doc/concurrent-checkpoint.md, "A pool pinned
 * ahead").  The last line on stderr says what was made, or why not.
 */
static int pool_create(unsigned n, unsigned piece_gib)
{
	uint64_t t0 = phos_now_ms(), piece = (uint64_t)piece_gib << 30;
	int numa, v = 1, fds[STAGE_CUDA_MAX];
	CUdevice d;
	CUresult r;

	if (use_dev(0))
		return 1;
	if ((r = cu.dev_get(&d, 0)) != CUDA_SUCCESS)
		return fail("GPU 0: %s", cu_err(r));
	if (cu.dev_attr &&
	    cu.dev_attr(&v, CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, d) ==
		    CUDA_SUCCESS && !v)
		return fail("this GPU and driver cannot make host memory through the virtual memory "
			    "API (HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED is 0)");
	numa = numa_of(d);
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
		.location = { .type = CU_MEM_LOCATION_TYPE_HOST_NUMA, .id = numa },
	};

	for (unsigned i = 0; i < n; i++) {
		CUmemGenericAllocationHandle h;

		if ((r = cu.create(&h, piece, &prop, 0)) != CUDA_SUCCESS)
			return fail("piece %u of %u (%u GiB of host memory next to NUMA node %d): %s",
				    i + 1, n, piece_gib, numa, cu_err(r));
		r = cu.export_fd(&fds[i], h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
		if (cu.release)
			cu.release(h);	/* the fd holds it */
		if (r != CUDA_SUCCESS)
			return fail("exporting piece %u of %u: %s", i + 1, n, cu_err(r));
	}
	/* one REPLY with every fd and a piece's size (STAGE_CUDA_MAX fds fit
	 * in one message) */
	struct phos_msg *m = phos_reply_new(0, 0, NULL);

	if (!m || phos_msg_put_u64(m, PHOS_A_BYTES, piece) < 0 ||
	    phos_msg_send(3, m, fds, (int)n) < 0)
		return fail("handing the pool to phosd: %s", strerror(errno));
	phos_msg_free(m);
	fprintf(stderr, "%" PRIu64 " GiB of host memory pinned by the NVIDIA driver (NUMA node %d, "
		"%u piece(s)) in %" PRIu64 " ms\n", (uint64_t)n * piece_gib, numa, n,
		phos_now_ms() - t0);
	return 0;
}

/* Where the rate of a copy changed (the staged copy runs beside the
 * driver's checkpoint and CRIU's dump of the process for its first part):
 * when each eighth of the bytes was in, and the rate of each eighth. */
static void log_eighths(const struct gio *g, uint64_t total, uint64_t began)
{
	char at[160] = "", rates[160] = "", pins[96];
	size_t a = 0, r = 0;

	if (g->prepinned)
		snprintf(pins, sizeof(pins), "the pool pinned by the driver beforehand");
	else if (g->bounce)
		snprintf(pins, sizeof(pins), "each chunk through a pinned buffer of its worker's");
	else if (g->pinners)
		snprintf(pins, sizeof(pins), "pieces pinned ahead by %u thread(s), all by %" PRIu64
			 " ms", g->pinners, g->pinned_ms);
	else
		snprintf(pins, sizeof(pins), "each piece pinned by its copy's worker");

	for (unsigned k = 0; k < 8; k++) {
		uint64_t dt = g->eighths[k] - (k ? g->eighths[k - 1] : 0);

		a += (size_t)snprintf(at + a, sizeof(at) - a, "%s%" PRIu64, k ? " " : "",
				      g->eighths[k]);
		r += (size_t)snprintf(rates + r, sizeof(rates) - r, "%s%.1f", k ? " " : "",
				      dt ? (double)total / 8 / 1e6 / (double)dt : 0.0);
		if (a >= sizeof(at) || r >= sizeof(rates))
			break;
	}
	fprintf(stderr, "phos-gpu: staged copy began %" PRIu64 " ms after the helper started; "
		"each eighth of the bytes in at %s ms after it began (GB/s: %s); %s\n", began, at,
		rates, pins);
}

static int save(const char *tag, bool want_snapshot, int tab_fd, int stage_fd, uint64_t stage_off)
{
	char line[256], name[300];
	FILE *map;
	unsigned n = 0;
	uint64_t total = 0, t0 = phos_now_ms(), tsnap = 0, waited = 0;
	bool snapshot = false, cow = false;
	struct phos_savetab *tab = NULL;

	/* import and map every buffer */
	while (fgets(line, sizeof(line), stdin)) {
		CUmemGenericAllocationHandle h;
		CUresult r;

		if (n == PHOS_GPUBUF_MAX)
			return fail("more than %d buffers", PHOS_GPUBUF_MAX);
		b[n].rank = 0;	/* "va size dev [rank]" */
		if (sscanf(line, "%" SCNx64 " %" SCNu64 " %u %u", &b[n].va, &b[n].size, &b[n].dev,
			   &b[n].rank) < 3)
			return fail("bad input line: %s", line);
		if (use_dev(b[n].dev))
			return 1;
		r = cu.import_fd(&h, (void *)(intptr_t)(3 + n), CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
		if (r != CUDA_SUCCESS)
			return fail("importing buffer %u: %s", n, cu_err(r));
		if (map_new(h, b[n].size, b[n].dev, &b[n].src))
			return 1;
		b[n].handle = h;
		total += b[n].size;
		n++;
	}
	/* a copy on the GPU of everything, if there is room for it (and a
	 * margin for the owner): then the owner may go on at once.
	 * PHOS_GPU_NO_SNAPSHOT=1 in phosd's environment: never (no GPU memory
	 * taken from the jobs; the concurrent copy instead, if it can) */
	if (phos_env_on("PHOS_GPU_NO_SNAPSHOT"))
		want_snapshot = false;
	if (want_snapshot && n) {
		size_t free_b = 0, total_b = 0;

		snapshot = cu.mem_info(&free_b, &total_b) == CUDA_SUCCESS &&
			   free_b > total + (512u << 20);
		for (unsigned i = 0; snapshot && i < n; i++) {
			CUresult r;

			if (use_dev(b[i].dev))
				return 1;
			if ((r = cu.alloc(&b[i].snap, b[i].size)) != CUDA_SUCCESS ||
			    (r = cu.dtod(b[i].snap, b[i].src, b[i].size)) != CUDA_SUCCESS) {
				fprintf(stderr, "phos-gpu: no snapshot (%s): direct copy\n", cu_err(r));
				snapshot = false;
			}
		}
		if (snapshot && sync_all() != CUDA_SUCCESS)
			snapshot = false;
		tsnap = phos_now_ms() - t0;
	}
	/* no room for a snapshot: hash every buffer as it is now, and let the
	 * owner run on against the save table */
	if (tab_fd >= 0 && n && !(tab = table_open(tab_fd, n)))
		return 1;
	if (!snapshot && tab && cu.mod_load && phos_hash_ptx[0]) {
		cow = true;
		for (unsigned i = 0; cow && i < n; i++)
			cow = device_hash(i) == 0;
		if (cow && sync_all() != CUDA_SUCCESS)
			cow = false;
		tsnap = phos_now_ms() - t0;
	}
	if (tab && snapshot) {
		/* the owner runs on against a snapshot: it waits for nothing,
		 * and the table only ranks its buffers by first use until
		 * the save is over (the map records the ranks) */
		for (unsigned i = 0; i < n; i++)
			phos_savetab_set(tab, i, PHOS_SAVE_SAVED);
	} else if (tab && !cow) {
		phos_savetab_end(tab);	/* unused: nobody waits on it */
	}
	/* stop/preempt (no table, the process is gone): through the staging
	 * pool phosd gave, if it may; the GPU is free after that copy */
	bool staged = stage_fd >= 0 && !snapshot && !tab && n;
	uint8_t *pool = MAP_FAILED;
	uint64_t span = 0;

	bool cpool = cpool_first >= 0;

	/* (the same entry points let go of the buffers after the copy) */
	if (staged && !cu.host_register) {
		fprintf(stderr, "phos-gpu: this driver cannot pin host memory for the staging pool: "
			"straight to storage\n");
		staged = false;
	}
	for (unsigned i = 0; staged && i < n; i++)
		span += stage_align(b[i].size);
	if (staged && cpool) {
		char why[200];
		uint8_t *p = cpool_map(stage_off, span, why, sizeof(why));

		/* the GPUs' access behind the copies; the CPU's once the GPU
		 * memory is released (it is not on the way there) */
		/* (PHOS_GPU_STAGE_GRANT_FIRST=1: the whole pool granted before
		 * the first copy, the A/B of session 12) */
		if (p && cpool_grant(false, NULL, 0, why, sizeof(why)) == 0 &&
		    (!phos_env_on("PHOS_GPU_STAGE_GRANT_FIRST") ||
		     cpool_grant_wait(cgrant, cpool_base, cpool_len, why, sizeof(why)) == 0)) {
			pool = p;
		} else {
			fprintf(stderr, "phos-gpu: cannot map the staging pool the driver pinned (%s): "
				"straight to storage\n", why);
			(void)cpool_grant_end(cgrant, why, sizeof(why));
			cgrant = NULL;
			staged = false;
		}
	} else if (staged && (pool = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_SHARED, stage_fd,
					  (off_t)stage_off)) == MAP_FAILED) {
		fprintf(stderr, "phos-gpu: cannot map %" PRIu64 " MiB of the staging pool at %" PRIu64
			" MiB (%s): straight to storage\n", span >> 20, stage_off >> 20,
			strerror(errno));
		staged = false;
	}
	printf("%s\n", snapshot ? "snapshot" : cow ? "cow" : staged ? "staged" : "direct");
	fflush(stdout);
	if (!staged)
		fclose(stdout);
	/* the pool's page tables in one go, now that phosd goes on (pinning
	 * piece by piece then finds the pages mapped) */
	if (staged && !cpool)
		(void)madvise(pool, span, MADV_POPULATE_WRITE);

	/* into the task's chunk store, which phosd made (chunks another
	 * generation stored already are not written again) */
	size_t chunk = gio_chunk();
	if (open_chunks() < 0) {
		fail("no chunk store ../%s beside the image directory (phosd makes it): %s",
		     PHOS_CHUNKS_DIR, strerror(errno));
		goto failed;
	}
	snprintf(name, sizeof(name), "gpumem-%s.map", tag);
	map = fopen(name, "wex");
	if (!map) {
		fail("cannot create %s: %s", name, strerror(errno));
		goto failed;
	}
	for (unsigned i = 0; i < n; i++) {
		io[i] = (struct gio_buf){ .ctx = ctx_of[b[i].dev], .size = b[i].size,
					  .dptr = snapshot ? b[i].snap : b[i].src, .fd = -1 };
		idx[i] = (struct phos_idx){ .size = b[i].size, .chunk = chunk,
					    .n = phos_idx_count(b[i].size, chunk) };
		if (!(idx[i].sha = calloc(idx[i].n, sizeof(*idx[i].sha)))) {
			fail("out of memory");
			goto failed;
		}
	}
	/* the buffers the process will touch first are saved first: fewer
	 * of its writes wait */
	unsigned rank[PHOS_GPUBUF_MAX];
	uint64_t bsize[PHOS_GPUBUF_MAX];

	for (unsigned i = 0; i < n; i++) {
		rank[i] = b[i].rank;
		bsize[i] = b[i].size;
	}
	order_copy(rank, bsize, n, NULL);
	/* staged: every buffer into the pool, then let go of the GPU */
	uint64_t tstage = 0, treleased = 0;
	bool bounce = gio_bounce() && !cpool;
	size_t piece = bounce ? gio_chunk() : gio_piece();

	if (staged) {
		/* each piece stays pinned until the GPU memory is released
		 * (unpinning costs about what pinning does: not on the way to
		 * "released"); PHOS_GPU_STAGE_UNPIN_EACH=1: unpinned after its
		 * copy, for A/B */
		struct gio sg = { .dir = GIO_STAGE, .b = io, .n = n, .ops = io_ops(), .chunk = piece,
				  .keep_pinned = !phos_env_on("PHOS_GPU_STAGE_UNPIN_EACH"),
				  .pinners = gio_pinners(), .bounce = bounce, .prepinned = cpool,
				  .ready = cpool ? cpool_ready : NULL };
		char why[200] = "";

		in_pool(pool, n);
		tstage = phos_now_ms();
		int src = gio_run(&sg), gend = cpool_grant_end(cgrant, why, sizeof(why));

		cgrant = NULL;
		if (src < 0 || gend < 0) {
			/* the GPU memory is still ours: the copy goes to
			 * storage from there (phosd reads no "released") */
			fprintf(stderr, "phos-gpu: copying into the staging pool failed (%s): straight "
				"to storage\n", src < 0 ? sg.err : why);
			if (sg.keep_pinned && !cpool)
				gio_unpin(&sg);
			for (unsigned i = 0; i < n; i++)
				io[i].host = NULL;
			staged = false;
			fclose(stdout);
			goto store;
		}
		uint64_t tbegan = tstage - t0;

		tstage = phos_now_ms() - tstage;
		release_buffers(n);
		treleased = phos_now_ms() - t0;
		printf("released %" PRIu64 "\n", tstage);
		fflush(stdout);
		fclose(stdout);
		log_eighths(&sg, total, tbegan);
		/* then the pins and the contexts (a GPU in EXCLUSIVE_PROCESS
		 * mode is free for the next job once they are gone) */
		if (sg.keep_pinned)
			gio_unpin(&sg);
		/* a pool the driver pinned stays mapped through this
		 * process's contexts: they go when it exits */
		if (!cpool)
			release_contexts();
		else
			cpool_cpu(n);
	}
store:;
	struct copy_ctx sc = { .tab = tab, .bad = -1, .unchecked = -1 };
	uint64_t tcopy = phos_now_ms();
	char rate[224] = "";
	struct gio g = { .dir = GIO_SAVE, .b = io, .n = n, .hash = true, .hash_key = sums_key,
			 .from_host = staged && io[0].host,
			 .ops = io_ops(),
			 .chunk = chunk, .pick = cow ? copy_pick : NULL,
			 .wanted = cow ? copy_wanted : NULL, .start = cow ? copy_start : NULL,
			 .done = cow ? save_done : NULL, .put = chunk_put, .arg = &sc };
	if (gio_run(&g) < 0) {
		if (sc.bad >= 0) {
			unsigned i = (unsigned)sc.bad;

			phos_savetab_end(tab);
			fprintf(stderr, "phos-gpu: buffer %u (%#" PRIx64 ", %" PRIu64 " bytes) changed "
				"before it was saved: the process wrote it in a way libphos did not "
				"see (e.g. through a pointer kept in device memory); this copy is not "
				"used\n", i, b[i].va, b[i].size);
			return 3;
		}
		fail("%s", g.err);
		goto failed;
	}
	waited = sc.waited;
	tcopy = phos_now_ms() - tcopy;
	snprintf(rate, sizeof(rate), "; copy %.2f GB/s with %u threads%s, %zu MiB chunks",
		 tcopy ? (double)total / 1e6 / (double)tcopy : 0.0, g.threads,
		 gio_stream_note(g.ops), g.chunk >> 20);
	size_t k = strlen(rate);

	snprintf(rate + k, sizeof(rate) - k, "; %" PRIu64 " chunk(s) written (%" PRIu64 " MB), %"
		 PRIu64 " already stored (%" PRIu64 " MB)", cstat.written,
		 cstat.written_bytes / 1000000, cstat.reused, cstat.reused_bytes / 1000000);
	k = strlen(rate);
	if (zstd_level)
		snprintf(rate + k, sizeof(rate) - k, "; zstd level %d: %" PRIu64 " MB stored",
			 zstd_level, cstat.stored_bytes / 1000000);
	if (fsync(chunks_fd) < 0) {	/* the renames of the new chunks */
		fail("syncing the chunk store: %s", strerror(errno));
		goto failed;
	}
	for (unsigned i = 0; i < n; i++) {
		char err[256];

		snprintf(name, sizeof(name), "gpumem-%s-%u.idx", tag, i);
		if (phos_idx_write(&idx[i], AT_FDCWD, name, err, sizeof(err)) < 0) {
			fail("%s", err);
			goto failed;
		}
	}
	/* the map lists the buffers in their order, whatever order they were
	 * copied in, each with the hash of its bytes (a concurrent restore
	 * checks each buffer against it before the process may use it) and
	 * its first-use rank: the order the process touched them in while
	 * this save ran (the restored process resumes from here), else the
	 * one libphos reported from its last checkpoint or restore; "k1"
	 * when the sums are keyed */
	save_ranks(tab, rank, n);
	for (unsigned i = 0; i < n; i++)
		fprintf(map, "%#" PRIx64 " %" PRIu64 " %u gpumem-%s-%u.idx %016" PRIx64 " %016"
			PRIx64 " %u%s\n", b[i].va, b[i].size, b[i].dev, tag, i, io[i].h[0], io[i].h[1],
			rank[i], sums_key ? " k1" : "");
	if (tab)
		phos_savetab_end(tab);
	if (fflush(map) != 0 || fsync(fileno(map)) < 0 || fclose(map) != 0)
		return fail("writing gpumem-%s.map: %s", tag, strerror(errno));
	if (snapshot)
		fprintf(stderr, "phos-gpu: saved %u buffer(s), %" PRIu64 " bytes in %" PRIu64
			" ms (snapshot on the GPU in %" PRIu64 " ms%s)\n", n, total,
			phos_now_ms() - t0, tsnap, rate);
	else if (cow)
		fprintf(stderr, "phos-gpu: saved %u buffer(s), %" PRIu64 " bytes in %" PRIu64
			" ms while the process ran (hashed on the GPU in %" PRIu64 " ms; %" PRIu64
			" copied first because the process was about to write them; every hash "
			"matched%s)\n", n, total, phos_now_ms() - t0, tsnap, waited, rate);
	else if (staged)
		fprintf(stderr, "phos-gpu: saved %u buffer(s), %" PRIu64 " bytes in %" PRIu64
			" ms (staged: GPU to host memory in %" PRIu64 " ms, %.2f GB/s with %zu MiB "
			"%s%s; GPU released after %" PRIu64 " ms; then to storage%s)\n", n, total,
			phos_now_ms() - t0, tstage,
			tstage ? (double)total / 1e6 / (double)tstage : 0.0, piece >> 20,
			bounce ? "chunks through pinned buffers" : cpool ? "pieces, the pool pinned "
			"by the driver" : "pieces", gio_stream_note(io_ops()), treleased, rate);
	else
		fprintf(stderr, "phos-gpu: saved %u buffer(s), %" PRIu64 " bytes in %" PRIu64
			" ms (%s)\n", n, total, phos_now_ms() - t0, rate + 2);
	if (pool != MAP_FAILED && !cpool)
		munmap(pool, span);
	return 0;
failed:
	if (tab)
		phos_savetab_end(tab);
	return 1;
}

/* The hashes the map records (images of this version on), by buffer. */
static struct {
	uint64_t h[2];
	bool known;
} want_hash[PHOS_GPUBUF_MAX];
static struct phos_gpubuf lb[PHOS_GPUBUF_MAX];	/* a load's buffers, as the map says */

/* A load checks each buffer against the map's hash, when it has one: on
 * its GPU (on_dev), where its bytes landed, after its last copy; else the
 * CPU's fold of the chunks it read. */
static int load_done(void *arg, unsigned i)
{
	struct copy_ctx *cc = arg;

	note_loaded(i);
	if (!want_hash[i].known) {
		if (cc->tab)
			phos_savetab_set(cc->tab, i, PHOS_SAVE_SAVED);
		return 0;
	}
	if (cc->on_dev && hash_on(lb[i].dev, io[i].dptr, io[i].size, io[i].h, true) < 0) {
		cc->unchecked = (int)i;	/* the first failure stops the load */
		return 1;
	}
	return copy_check(cc, i, want_hash[i].h);
}

static char cpu_why[200];	/* why devices_hash() said no, for the load's line */

/*
 * Whether every device of a load's n buffers can hash what lands on it:
 * the hash kernel loads, runs, and sums a test pattern as the host does
 * (with the load's key).  Then each buffer is checked there, after its
 * last copy, which also covers the copy itself; else the CPU folds each
 * chunk as it is read, and cpu_why says why.  PHOS_GPU_LOAD_VIA_CPU=1
 * takes the CPU way, and a pool the driver pinned through host memory
 * (the A/B of session 13).
 */
static bool devices_hash(unsigned n)
{
	bool tried[64] = { false };
	uint32_t pat[64];
	uint64_t h[2];

	if (phos_env_on("PHOS_GPU_LOAD_VIA_CPU"))
		return false;
	/* a pattern whose sums the host computes: the kernel must agree on
	 * it (its first bytes of the buffer, which the load overwrites) */
	for (unsigned k = 0; k < 64; k++)
		pat[k] = 0x9e3779b9u * (k + 1) ^ (k << 20);
	for (unsigned i = 0; i < n; i++) {
		size_t len = io[i].size < sizeof(pat) ? (size_t)io[i].size & ~(size_t)3 : sizeof(pat);
		uint64_t w[2] = { 0, 0 };

		if (tried[lb[i].dev % 64])
			continue;
		tried[lb[i].dev % 64] = true;
		phos_hash_add(w, pat, 0, len / 4, sums_key);
		if (use_dev(lb[i].dev) || cu.htod((void *)(uintptr_t)io[i].dptr, pat, len) !=
		    CUDA_SUCCESS || hash_on(lb[i].dev, io[i].dptr, len, h, false) < 0) {
			snprintf(cpu_why, sizeof(cpu_why), ": GPU %u cannot check what is copied to "
				 "it", lb[i].dev);
			fprintf(stderr, "phos-gpu: the load is checked by the CPU (and a staging "
				"pool read through host memory)%s\n", cpu_why);
			return false;
		}
		if (h[0] != w[0] || h[1] != w[1]) {
			snprintf(cpu_why, sizeof(cpu_why), ": GPU %u's hash kernel does not agree "
				 "with the host on a test pattern (%016" PRIx64 " %016" PRIx64
				 " against %016" PRIx64 " %016" PRIx64 "%s)", lb[i].dev, h[0], h[1],
				 w[0], w[1], sums_key ? ", keyed" : "");
			fprintf(stderr, "phos-gpu: the load is checked by the CPU (and a staging "
				"pool read through host memory)%s\n", cpu_why);
			return false;
		}
	}
	return true;
}

/* A load from the staging pool: the chunk is in host memory already;
 * the others come from the chunk store. */
static int load_get(void *arg, unsigned i, uint64_t off, void *data, size_t len, char *err,
		    size_t errsz)
{
	if (io[i].host) {
		if (cgrant && cpool_grant_wait(cgrant, (uintptr_t)io[i].host + off, len, err,
					       errsz) < 0)
			return -1;
		memcpy(data, io[i].host + off, len);
		return 0;
	}
	return chunk_get(arg, i, off, data, len, err, errsz);
}

/* Send the buffers (and the load table, if any) to phos-restore on fd 3. */
static int hand_over(const uint8_t *blob, const int *fds, int n, int tab_fd)
{
	static int all[PHOS_GPUBUF_MAX + 1];
	struct phos_msg *m = phos_msg_new(PHOS_MSG_GPU_DETACH, 1);
	int rc = -1;

	memcpy(all, fds, (size_t)n * sizeof(*fds));
	if (tab_fd >= 0)
		all[n] = tab_fd;
	if (m && phos_msg_put_u64(m, PHOS_A_ERRNO, 0) == 0 &&
	    phos_msg_put_blob(m, PHOS_A_GPUBUFS, blob, (size_t)n * PHOS_GPUBUF_LEN) == 0 &&
	    (tab_fd < 0 || phos_msg_put_u64(m, PHOS_A_SAVETAB, (uint64_t)n) == 0) &&
	    phos_msg_send(3, m, all, n + (tab_fd >= 0)) == 0)
		rc = 0;
	phos_msg_free(m);
	return rc < 0 ? fail("handing the buffers over: %s", strerror(errno)) : 0;
}

/*
 * Load TAG's buffers.  Concurrent: create them all, hand them over with a
 * load table at once, then fill them (the ones the process waits for
 * first), each checked against the map's hash before it counts as loaded;
 * any failure marks the table over with the buffers not loaded FAILED
 * (the process stops at its next use of one) and exits 1.
 */
static int load(const char *tag, bool concurrent, int stage_fd, uint64_t stage_off)
{
	static int fds[PHOS_GPUBUF_MAX];
	static uint8_t blob[PHOS_GPUBUF_MAX * PHOS_GPUBUF_LEN];
	static unsigned lrank[PHOS_GPUBUF_MAX];
	char line[512], name[300], file[300];
	struct copy_ctx lc = { .bad = -1, .unchecked = -1 };
	uint64_t total = 0, t0 = phos_now_ms(), tcopy;
	int n = 0, tab_fd = -1;
	unsigned ranked;
	size_t chunk = 0;	/* of the chunked buffers (all alike) */
	bool map_keyed = false;
	FILE *map;

	snprintf(name, sizeof(name), "gpumem-%s.map", tag);
	map = fopen(name, "re");
	if (!map)
		return fail("cannot open %s: %s", name, strerror(errno));
	while (fgets(line, sizeof(line), map)) {
		CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
					     .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE },
					     .requestedHandleTypes =
						     CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR };
		CUmemGenericAllocationHandle h;
		CUdeviceptr dst;
		struct stat st;
		CUresult r;
		int in, k;

		if (n == PHOS_GPUBUF_MAX)
			return fail("%s: more than %d buffers", name, PHOS_GPUBUF_MAX);
		/* va size dev file [h0 h1 [rank [k1]]]: the hashes since
		 * 2026-11, the first-use rank since 2026-12, keyed sums
		 * (k1) since 2026-12-03 */
		char keyed[8] = "";

		lrank[n] = 0;
		k = sscanf(line, "%" SCNx64 " %" SCNu64 " %u %299s %" SCNx64 " %" SCNx64 " %u %7s",
			   &lb[n].va, &lb[n].size, &lb[n].dev, file, &want_hash[n].h[0],
			   &want_hash[n].h[1], &lrank[n], keyed);
		if ((k != 4 && k != 6 && k != 7 && k != 8) || (k == 8 && strcmp(keyed, "k1")) ||
		    strchr(file, '/') || lb[n].size == 0)
			return fail("%s: bad line: %s", name, line);
		if (n && (k == 8) != map_keyed)
			return fail("%s: some lines keyed (k1), some not: %s", name, line);
		map_keyed = k == 8;
		want_hash[n].known = k >= 6;
		lb[n].rank = lrank[n];
		if (use_dev(lb[n].dev))
			return 1;
		if (phos_idx_name(file)) {
			char err[256];

			/* in chunks: each checked against its name as it is read */
			if (chunks_fd < 0 && open_chunks() < 0)
				return fail("%s names chunks, but ../%s cannot be opened: %s", file,
					    PHOS_CHUNKS_DIR, strerror(errno));
			if (phos_idx_read(&idx[n], AT_FDCWD, file, err, sizeof(err)) < 0)
				return fail("%s", err);
			if (idx[n].size != lb[n].size)
				return fail("%s describes %" PRIu64 " bytes, the buffer has %" PRIu64,
					    file, idx[n].size, lb[n].size);
			if (chunk && idx[n].chunk != chunk)
				return fail("%s: chunks of %" PRIu64 " bytes, others of %zu", file,
					    idx[n].chunk, chunk);
			chunk = idx[n].chunk;
			in = -1;
		} else {
			in = open_file(file);
			if (in < 0 || fstat(in, &st) < 0 || (uint64_t)st.st_size != lb[n].size)
				return fail("%s: missing or of the wrong size (%" PRIu64 " bytes "
					    "expected)", file, lb[n].size);
		}
		prop.location.id = (int)lb[n].dev;
		if ((r = cu.create(&h, lb[n].size, &prop, 0)) != CUDA_SUCCESS)
			return fail("allocating %" PRIu64 " bytes on GPU %u: %s", lb[n].size, lb[n].dev,
				    cu_err(r));
		if (map_new(h, lb[n].size, lb[n].dev, &dst))
			return 1;
		io[n] = (struct gio_buf){ .ctx = ctx_of[lb[n].dev], .dptr = dst, .size = lb[n].size,
					  .fd = in };
		if ((r = cu.export_fd(&fds[n], h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0)) !=
		    CUDA_SUCCESS)
			return fail("exporting %s: %s", file, cu_err(r));
		phos_gpubuf_put(blob + (size_t)n * PHOS_GPUBUF_LEN, &lb[n]);
		total += lb[n].size;
		n++;
	}
	fclose(map);
	/* keyed sums need this generation's key; unkeyed ones are summed
	 * the old way whatever key came */
	if (map_keyed && !sums_key)
		return fail("%s holds keyed sums (k1), and phos-gpu got no key to check them "
			    "(PHOS_GPU_SUMS_KEY, from the node key): restore it through phosd or "
			    "phos-restore on a node with this cluster's key_file", name);
	if (!map_keyed)
		sums_key = 0;
	/* from phosd's staging pool (doc/protocol.md, "STAGE_GET"): the
	 * buffers lie there in map order, each at a 2 MiB boundary; each is
	 * checked against the map's hash as it would be from storage, so
	 * only maps that have the hashes use it */
	uint8_t *pool = MAP_FAILED;
	uint64_t span = 0;
	bool hashed = n > 0;
	struct stat pst;

	for (int i = 0; i < n; i++)
		hashed &= want_hash[i].known;
	span = stage_span(lb, n);
	static uint64_t lsize[PHOS_GPUBUF_MAX];
	bool by_index;

	for (int i = 0; i < n; i++)
		lsize[i] = lb[i].size;
	ranked = order_copy(lrank, lsize, (unsigned)n, &by_index);
	char cwhy[200] = "", pnote[280] = "";
	uint8_t *cp = stage_fd >= 0 && hashed && cpool_first >= 0 ?
		      cpool_map(stage_off, span, cwhy, sizeof(cwhy)) : NULL;

	/* each buffer checked where it lands when its devices can; a pool
	 * the driver pinned is then copied straight to them */
	bool direct = false;

	lc.on_dev = hashed && devices_hash((unsigned)n);
	if (cp) {
		/* access behind the loads, the pieces in the order the buffers
		 * are loaded: the GPUs' (straight to them), or the GPUs' and
		 * the CPU's (through host memory) */
		in_pool(cp, (unsigned)n);
		direct = lc.on_dev;
		if (cpool_grant(!direct, order, (unsigned)n, cwhy, sizeof(cwhy)) < 0) {
			direct = false;
			for (int i = 0; i < n; i++)
				io[i].host = NULL;
			cp = NULL;
		}
	}
	if (cp) {
		pool = cp;
		for (int i = 0; i < n; i++)
			phos_closep(&io[i].fd);
	} else if (cwhy[0]) {
		/* (a detached restore's stderr is /dev/null: the last line
		 * says it again) */
		fprintf(stderr, "phos-gpu: cannot map the staging pool the driver pinned (%s): loading "
			"from storage\n", cwhy);
		snprintf(pnote, sizeof(pnote), " from storage (the staging pool the driver pinned "
			 "could not be mapped: %s)", cwhy);
	} else if (stage_fd >= 0 && hashed && cpool_first < 0 && fstat(stage_fd, &pst) == 0 &&
	    (uint64_t)pst.st_size >= stage_off + span &&
	    (pool = mmap(NULL, span, PROT_READ, MAP_SHARED, stage_fd, (off_t)stage_off)) != MAP_FAILED) {
		in_pool(pool, (unsigned)n);
		for (int i = 0; i < n; i++)
			phos_closep(&io[i].fd);
	} else if (stage_fd >= 0) {
		fprintf(stderr, "phos-gpu: the staging pool cannot serve gpumem-%s (%s): loading "
			"from storage\n", tag, !hashed ? "the map has no hashes" : strerror(errno));
		snprintf(pnote, sizeof(pnote), " from storage (the staging pool could not serve "
			 "them)");
	}
	/* every chunk read from the chunk store: each checked by its SHA-256
	 * unless chunks_unchecked (below), so that a buffer that then fails
	 * its check on the device failed on the way */
	bool from_store = pool == MAP_FAILED;

	for (int i = 0; i < n && from_store; i++)
		from_store = io[i].fd < 0;
	/* keyed sums checked on the GPU against the map the manifest covers
	 * prove what each chunk's SHA-256 would, and cover the copy: the
	 * CPU's SHA-256 (what bounds a load from storage) is left out, unless
	 * PHOS_GPU_LOAD_SHA=1 (it names a damaged chunk) */
	chunks_unchecked = from_store && lc.on_dev && sums_key && !phos_env_on("PHOS_GPU_LOAD_SHA");
	/* concurrent: the process may run from here on, waiting on the table
	 * for what it touches */
	if (concurrent && n) {
		lc.tab = phos_savetab_create((uint32_t)n, PHOS_SAVETAB_LOAD, &tab_fd);
		if (!lc.tab)
			return fail("load table: %s", strerror(errno));
		if (hand_over(blob, fds, n, tab_fd))
			return 1;
	}
	struct gio g = { .dir = GIO_LOAD, .b = io, .n = (unsigned)n, .hash = !lc.on_dev,
			 .hash_key = sums_key,
			 .direct = direct, .threads = lc.tab ? gio_load_threads() : 0,
			 .nice = lc.tab ? gio_load_nice() : 0, .ops = io_ops(), .chunk = chunk,
			 .pick = lc.tab ? copy_pick : NULL, .wanted = lc.tab ? copy_wanted : NULL,
			 .start = lc.tab ? copy_start : NULL,
			 .done = load_done, .get = load_get,
			 .ready = direct ? cpool_ready : NULL, .arg = &lc };

	char nicenote[32];

	snprintf(nicenote, sizeof(nicenote), " at nice %d", g.nice);
	if (lc.tab)
		order_line((unsigned)n, ranked, by_index);
	tcopy = phos_now_ms();
	uint64_t tload = tcopy;
	int grc = gio_run(&g);
	char gwhy[200];

	(void)cpool_grant_end(cgrant, gwhy, sizeof(gwhy));	/* each load waited for its piece */
	cgrant = NULL;
	if (grc < 0) {
		if (lc.tab)
			phos_savetab_end(lc.tab);	/* what is not loaded is FAILED */
		if (lc.bad >= 0 && pool != MAP_FAILED)
			return fail("buffer %d of gpumem-%s.map: the staging pool does not hold what "
				    "was saved (its bytes do not match the hash in the map); the image "
				    "is untouched: restore again, from storage", lc.bad, tag);
		if (lc.unchecked >= 0)
			return fail("buffer %d of gpumem-%s.map could not be checked on GPU %u (%s): "
				    "the load stopped; the image is unchanged: restore again, with "
				    "PHOS_GPU_LOAD_VIA_CPU=1 in phosd's environment (the CPU checks "
				    "the load) if it fails the same way", lc.unchecked, tag,
				    lb[lc.unchecked].dev, hash_err);
		if (lc.bad >= 0 && chunks_unchecked)
			return fail("buffer %d of gpumem-%s.map: what landed on GPU %u does not match "
				    "the keyed sums in the map (they check its chunks, not each "
				    "chunk's SHA-256): a chunk in the store is damaged or was changed, "
				    "or a copy to the GPU went wrong; the image is unchanged: restore "
				    "again, with PHOS_GPU_LOAD_SHA=1 in phosd's environment to name a "
				    "damaged chunk", lc.bad, tag, lb[lc.bad].dev);
		if (lc.bad >= 0 && lc.on_dev && from_store)
			return fail("buffer %d of gpumem-%s.map: what landed on GPU %u does not match "
				    "the hash in the map, though each chunk matched its SHA-256 as it "
				    "was read: a copy to the GPU went wrong, or the image's chunk index "
				    "disagrees with its map; the image is unchanged: restore again, and "
				    "if it fails the same way the image is damaged", lc.bad, tag,
				    lb[lc.bad].dev);
		if (lc.bad >= 0)
			return fail("buffer %d of gpumem-%s.map does not hold what was saved (its "
				    "bytes do not match the hash in the map): the image is damaged",
				    lc.bad, tag);
		return fail("gpumem-%s: %s%s", tag, g.err, strstr(g.err, "corrupt") ||
			    strstr(g.err, "bytes, not") ? ": the image is damaged" : "");
	}
	tcopy = phos_now_ms() - tcopy;
	for (int i = 0; i < n; i++)
		if (io[i].fd >= 0)
			close(io[i].fd);
	if (lc.tab)
		phos_savetab_end(lc.tab);
	else if (hand_over(blob, fds, n, -1))
		return 1;
	wanted_line((unsigned)n, tload);	/* before the line phosd's log quotes: the last */
	fprintf(stderr, "phos-gpu: loaded %d buffer(s), %" PRIu64 " bytes in %" PRIu64 " ms%s%s%s%s (%"
		PRIu64 " loaded first because the process was about to use them, %u in first-use "
		"order; copy %.2f GB/s with %u threads%s%s, %zu MiB chunks)\n", n, total,
		phos_now_ms() - t0, direct ? " straight from the staging pool (checked on the GPU)" :
		pool != MAP_FAILED ? " from the staging pool" : pnote,
		lc.tab ? " while the process ran" : "", direct || !hashed ? "" : chunks_unchecked ?
		", each buffer checked on its GPU by keyed sums, the chunks not by SHA" :
		lc.on_dev ? ", each buffer checked on its GPU" : ", each buffer checked by the CPU",
		direct || !hashed || lc.on_dev ? "" : cpu_why, lc.waited, ranked,
		tcopy ? (double)total / 1e6 / (double)tcopy : 0.0, g.threads,
		g.nice ? nicenote : "", gio_stream_note(g.ops), g.chunk >> 20);
	if (pool != MAP_FAILED && !cp)
		munmap(pool, span);
	return 0;
}

/* --stage-cuda FIRST:COUNT:PIECE_MIB (a pool the driver pinned) */
static bool parse_stage_cuda(const char *arg)
{
	unsigned long long mib;
	int first, used = 0;
	unsigned n;

	if (sscanf(arg, "%d:%u:%llu%n", &first, &n, &mib, &used) != 3 || arg[used] || first < 3 ||
	    !n || n > STAGE_CUDA_MAX || !mib || mib % 1024)
		return false;
	cpool_first = first;
	cpool_n = n;
	cpool_piece = (uint64_t)mib << 20;
	return true;
}

/* --stage FD:OFFSET: the staging pool's fd and a 2 MiB-aligned offset. */
static bool parse_stage(const char *arg, int *fd, uint64_t *off)
{
	char *end;

	*fd = (int)strtol(arg, &end, 10);
	return *end == ':' && *fd > 2 && phos_parse_u64(end + 1, off) == 0 &&
	       *off % STAGE_ALIGN == 0;
}

int main(int argc, char **argv)
{
	bool snap = false, ok = argc >= 3 && strchr(argv[2], '/') == NULL;
	unsigned pc_n = 0, pc_gib = 0;
	int tab_fd = -1, stage_fd = -1;
	uint64_t stage_off = 0;

	bool concurrent = false;

	if (ok && strcmp(argv[1], "load") == 0) {
		for (int i = 3; ok && i < argc; i++) {
			if (strcmp(argv[i], "--concurrent") == 0)
				concurrent = true;
			else if (strcmp(argv[i], "--stage") == 0 && i + 1 < argc)
				ok = parse_stage(argv[++i], &stage_fd, &stage_off);
			else if (strcmp(argv[i], "--stage-cuda") == 0 && i + 1 < argc)
				ok = parse_stage_cuda(argv[++i]);
			else
				ok = false;
		}
	} else if (ok && strcmp(argv[1], "save") == 0) {
		for (int i = 3; ok && i < argc; i++) {
			char *end;

			if (strcmp(argv[i], "--snapshot") == 0)
				snap = true;
			else if (strcmp(argv[i], "--table") == 0 && i + 1 < argc) {
				tab_fd = (int)strtol(argv[++i], &end, 10);
				ok = *end == '\0' && tab_fd > 2;
			} else if (strcmp(argv[i], "--stage") == 0 && i + 1 < argc) {
				ok = parse_stage(argv[++i], &stage_fd, &stage_off);
			} else if (strcmp(argv[i], "--stage-cuda") == 0 && i + 1 < argc) {
				ok = parse_stage_cuda(argv[++i]);
			} else if (strcmp(argv[i], "--zstd") == 0 && i + 1 < argc) {
				zstd_level = (int)strtol(argv[++i], &end, 10);
				ok = *end == '\0' && zstd_level >= 0 && zstd_level <= 19;
			} else
				ok = false;
		}
	} else if (argc == 4 && strcmp(argv[1], "pool-create") == 0) {
		char *e1, *e2;

		pc_n = (unsigned)strtoul(argv[2], &e1, 10);
		pc_gib = (unsigned)strtoul(argv[3], &e2, 10);
		ok = !*e1 && !*e2 && pc_n && pc_n <= STAGE_CUDA_MAX && pc_gib && pc_gib <= 1024;
	} else
		ok = false;
	if (!ok) {
		fprintf(stderr, "usage: phos-gpu save TAG [--snapshot] [--table FD] [--zstd LEVEL] "
			"[--stage FD:OFFSET [--stage-cuda FIRST:COUNT:PIECE_MIB]] | "
			"load TAG [--concurrent] [--stage FD:OFFSET [--stage-cuda ...]] | "
			"pool-create COUNT PIECE_GIB (run by phosd and phos-restore)\n");
		return 2;
	}
	if (pc_n)
		return load_driver() ? 1 : pool_create(pc_n, pc_gib);
	const char *kh = getenv("PHOS_GPU_SUMS_KEY");

	if (kh && *kh) {
		/* exactly 16 hex digits: strtoull alone takes a sign, spaces
		 * and 0x */
		if (strspn(kh, "0123456789abcdefABCDEF") != 16 || kh[16] ||
		    !(sums_key = strtoull(kh, NULL, 16))) {
			fprintf(stderr, "phos-gpu: PHOS_GPU_SUMS_KEY is not 16 hex digits (not 0)\n");
			return 2;
		}
	}
	if (load_driver()) {
		printf("direct\n");	/* save: phosd reads this line first */
		return 1;
	}
	return strcmp(argv[1], "save") == 0 ? save(argv[2], snap, tab_fd, stage_fd, stage_off) :
					       load(argv[2], concurrent, stage_fd, stage_off);
}
