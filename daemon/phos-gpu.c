/*
 * phos-gpu - phosd's hands on GPU memory (doc/protocol.md, "GPU memory").
 *
 * phosd itself never creates a CUDA context (it only drives the checkpoint
 * API); copying buffers needs one, so it runs this helper, which dies with
 * its context when the copy is done.
 *
 *   phos-gpu save TAG [--snapshot]
 *                          fds 3..3+N-1: exported buffers; stdin: N lines
 *                          "va size dev".  Writes gpumem-TAG-I.bin (raw
 *                          bytes) and gpumem-TAG.map ("va size dev file"
 *                          lines) into the current directory.  Says on
 *                          stdout, before copying to the host, how it
 *                          copies: "snapshot" (with --snapshot and room on
 *                          the GPU: every buffer was first copied on the
 *                          GPU, device to device, so the owner may write
 *                          its buffers again) or "direct".
 *   phos-gpu load TAG      reads gpumem-TAG.map from the current directory,
 *                          creates each buffer (exportable) on its device,
 *                          fills it, and sends the records (PHOS_A_GPUBUFS)
 *                          with the fds as one GPU_DETACH message on fd 3.
 *
 * Copies go through two pinned staging buffers of 64 MiB.  One progress
 * line per buffer on stderr; exit 0 on success, 1 with a message.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cuda.h>

#include "proto.h"
#include "util.h"

#define CHUNK (64u << 20)

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
	CUresult (*host_alloc)(void **, size_t);
	CUresult (*dtoh)(void *, CUdeviceptr, size_t);
	CUresult (*htod)(void *, const void *, size_t);	/* cuMemcpyHtoD_v2, dst first */
	CUresult (*err_name)(CUresult, const char **);
	CUresult (*mem_info)(size_t *, size_t *);
	CUresult (*alloc)(CUdeviceptr *, size_t);
	CUresult (*dtod)(CUdeviceptr, CUdeviceptr, size_t);
	CUresult (*ctx_sync)(void);
} cu;

static CUcontext ctx_of[64];
static void *stage;

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
	      S(export_fd, "cuMemExportToShareableHandle") && S(host_alloc, "cuMemAllocHost_v2") &&
	      S(dtoh, "cuMemcpyDtoH_v2") && S(htod, "cuMemcpyHtoD_v2") &&
	      S(err_name, "cuGetErrorName") && S(mem_info, "cuMemGetInfo_v2") &&
	      S(alloc, "cuMemAlloc_v2") && S(dtod, "cuMemcpyDtoD_v2") &&
	      S(ctx_sync, "cuCtxSynchronize")))
		return fail("the NVIDIA driver lacks an entry point phos-gpu needs");
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
	if (!stage && (r = cu.host_alloc(&stage, CHUNK)) != CUDA_SUCCESS)
		return fail("pinned staging buffer: %s", cu_err(r));
	return 0;
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

static int save(const char *tag, bool want_snapshot)
{
	static struct { uint64_t va, size; unsigned dev; CUdeviceptr src, snap; } b[PHOS_GPUBUF_MAX];
	char line[256], name[300];
	FILE *map;
	unsigned n = 0;
	uint64_t total = 0, t0 = phos_now_ms(), tsnap = 0;
	bool snapshot = false;

	/* import and map every buffer */
	while (fgets(line, sizeof(line), stdin)) {
		CUmemGenericAllocationHandle h;
		CUresult r;

		if (n == PHOS_GPUBUF_MAX)
			return fail("more than %d buffers", PHOS_GPUBUF_MAX);
		if (sscanf(line, "%" SCNx64 " %" SCNu64 " %u", &b[n].va, &b[n].size, &b[n].dev) != 3)
			return fail("bad input line: %s", line);
		if (use_dev(b[n].dev))
			return 1;
		r = cu.import_fd(&h, (void *)(intptr_t)(3 + n), CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
		if (r != CUDA_SUCCESS)
			return fail("importing buffer %u: %s", n, cu_err(r));
		if (map_new(h, b[n].size, b[n].dev, &b[n].src))
			return 1;
		total += b[n].size;
		n++;
	}
	/* a copy on the GPU of everything, if there is room for it (and a
	 * margin for the owner): then the owner may go on at once */
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
		if (snapshot && cu.ctx_sync() != CUDA_SUCCESS)
			snapshot = false;
		tsnap = phos_now_ms() - t0;
	}
	printf("%s\n", snapshot ? "snapshot" : "direct");
	fflush(stdout);
	fclose(stdout);

	snprintf(name, sizeof(name), "gpumem-%s.map", tag);
	map = fopen(name, "wex");
	if (!map)
		return fail("cannot create %s: %s", name, strerror(errno));
	for (unsigned i = 0; i < n; i++) {
		CUdeviceptr from = snapshot ? b[i].snap : b[i].src;
		CUresult r;
		int out;

		if (use_dev(b[i].dev))
			return 1;
		snprintf(name, sizeof(name), "gpumem-%s-%u.bin", tag, i);
		out = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (out < 0)
			return fail("cannot create %s: %s", name, strerror(errno));
		for (uint64_t off = 0; off < b[i].size; off += CHUNK) {
			size_t len = b[i].size - off < CHUNK ? (size_t)(b[i].size - off) : CHUNK;

			if ((r = cu.dtoh(stage, from + off, len)) != CUDA_SUCCESS)
				return fail("copying buffer %u: %s", i, cu_err(r));
			if (phos_write_full(out, stage, len) < 0)
				return fail("writing %s: %s", name, strerror(errno));
		}
		if (fsync(out) < 0 || close(out) < 0)
			return fail("writing %s: %s", name, strerror(errno));
		fprintf(map, "%#" PRIx64 " %" PRIu64 " %u %s\n", b[i].va, b[i].size, b[i].dev, name);
	}
	if (fflush(map) != 0 || fsync(fileno(map)) < 0 || fclose(map) != 0)
		return fail("writing gpumem-%s.map: %s", tag, strerror(errno));
	if (snapshot)
		fprintf(stderr, "phos-gpu: saved %u buffer(s), %" PRIu64 " bytes in %" PRIu64
			" ms (snapshot on the GPU in %" PRIu64 " ms)\n", n, total, phos_now_ms() - t0,
			tsnap);
	else
		fprintf(stderr, "phos-gpu: saved %u buffer(s), %" PRIu64 " bytes in %" PRIu64 " ms\n",
			n, total, phos_now_ms() - t0);
	return 0;
}

static int load(const char *tag)
{
	static struct phos_gpubuf b[PHOS_GPUBUF_MAX];
	static int fds[PHOS_GPUBUF_MAX];
	static uint8_t blob[PHOS_GPUBUF_MAX * PHOS_GPUBUF_LEN];
	char line[512], name[300], file[300];
	struct phos_msg *m;
	uint64_t total = 0, t0 = phos_now_ms();
	int n = 0;
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
		int in;

		if (n == PHOS_GPUBUF_MAX)
			return fail("%s: more than %d buffers", name, PHOS_GPUBUF_MAX);
		if (sscanf(line, "%" SCNx64 " %" SCNu64 " %u %299s", &b[n].va, &b[n].size, &b[n].dev,
			   file) != 4 || strchr(file, '/'))
			return fail("%s: bad line: %s", name, line);
		if (use_dev(b[n].dev))
			return 1;
		in = open(file, O_RDONLY | O_CLOEXEC);
		if (in < 0 || fstat(in, &st) < 0 || (uint64_t)st.st_size != b[n].size)
			return fail("%s: missing or of the wrong size (%" PRIu64 " bytes expected)", file,
				    b[n].size);
		prop.location.id = (int)b[n].dev;
		if ((r = cu.create(&h, b[n].size, &prop, 0)) != CUDA_SUCCESS)
			return fail("allocating %" PRIu64 " bytes on GPU %u: %s", b[n].size, b[n].dev,
				    cu_err(r));
		if (map_new(h, b[n].size, b[n].dev, &dst))
			return 1;
		for (uint64_t off = 0; off < b[n].size; off += CHUNK) {
			size_t len = b[n].size - off < CHUNK ? (size_t)(b[n].size - off) : CHUNK;

			if (phos_read_full(in, stage, len) != (ssize_t)len)
				return fail("reading %s: %s", file, strerror(errno));
			if ((r = cu.htod((void *)(uintptr_t)(dst + off), stage, len)) != CUDA_SUCCESS)
				return fail("loading %s: %s", file, cu_err(r));
		}
		close(in);
		if ((r = cu.export_fd(&fds[n], h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0)) !=
		    CUDA_SUCCESS)
			return fail("exporting %s: %s", file, cu_err(r));
		phos_gpubuf_put(blob + (size_t)n * PHOS_GPUBUF_LEN, &b[n]);
		total += b[n].size;
		n++;
	}
	fclose(map);
	m = phos_msg_new(PHOS_MSG_GPU_DETACH, 1);
	if (!m || phos_msg_put_u64(m, PHOS_A_ERRNO, 0) < 0 ||
	    phos_msg_put_blob(m, PHOS_A_GPUBUFS, blob, (size_t)n * PHOS_GPUBUF_LEN) < 0 ||
	    phos_msg_send(3, m, fds, n) < 0)
		return fail("handing the buffers over: %s", strerror(errno));
	phos_msg_free(m);
	fprintf(stderr, "phos-gpu: loaded %d buffer(s), %" PRIu64 " bytes in %" PRIu64 " ms\n", n,
		total, phos_now_ms() - t0);
	return 0;
}

int main(int argc, char **argv)
{
	bool snap = argc == 4 && strcmp(argv[3], "--snapshot") == 0;

	if (argc < 3 || argc > 4 || (argc == 4 && !snap) ||
	    (strcmp(argv[1], "save") && strcmp(argv[1], "load")) || strchr(argv[2], '/')) {
		fprintf(stderr, "usage: phos-gpu save TAG [--snapshot] | load TAG (run by phosd)\n");
		return 2;
	}
	if (load_driver()) {
		printf("direct\n");	/* save: phosd reads this line first */
		return 1;
	}
	return strcmp(argv[1], "save") == 0 ? save(argv[2], snap) : load(argv[2]);
}
