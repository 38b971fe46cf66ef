/*
 * fake_gpu_app - a CUDA driver-API program for the fake-driver tests of
 * the GPU fast path (integration/0160-gpu-fake.t): run under libphos.so
 * with tests/fakecuda's libcuda.so.1 first in LD_LIBRARY_PATH.
 *
 *   fake_gpu_app OUT NBUF MIB [indirect|static|shrinking]
 *
 * Allocates NBUF buffers of MIB MiB (libphos serves them as exportable VMM
 * memory) and one of 64 KiB (stays native), fills buffer i with the 32-bit
 * word i * 1000, then forever: checks that every word of every large
 * buffer i is i * 1000 + iter (the small one keeps NBUF * 1000 after its
 * first 8 bytes, which hold the last large buffer's address), launches
 * out[k] = in[k] + 1 over each large buffer (the last first), and
 * appends "iter N" to OUT.  A word that is not what it should be (a buffer
 * lost or mangled by a checkpoint or restore) appends "CORRUPT ..." and
 * exits 3.  The driver is reached through dlopen/dlsym, which libphos
 * interposes like the linked entry points.
 *
 * With "indirect", the last large buffer is incremented by a kernel that
 * finds it through a pointer stored in the small buffer: a write libphos
 * cannot see (its parameters point only into the small buffer), which a
 * concurrent GPU save must catch by its hash check.
 *
 * With "static", only the first large buffer changes (the others keep
 * i * 1000 and are checked for it): what a periodic checkpoint stores again
 * is the first one's chunks alone.
 *
 * With "shrinking", large buffer i is (NBUF - i) * MIB MiB: the first the
 * largest, so that index order and smallest first differ.
 */
#include "config.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cuda.h>

#include "fakecuda.h"

#define SMALL (64u << 10)

static struct {
	CUresult (*init)(unsigned);
	CUresult (*dev_get)(CUdevice *, int);
	CUresult (*ctx_create)(CUcontext *, CUctxCreateParams *, unsigned, CUdevice);
	CUresult (*alloc)(CUdeviceptr *, size_t);
	CUresult (*memset32)(CUdeviceptr, unsigned, size_t);
	CUresult (*dtoh)(void *, CUdeviceptr, size_t);
	CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
			   unsigned, CUstream, void **, void **);
	CUfunction (*kernel)(enum fakecuda_kind, unsigned, const size_t *, fakecuda_body);
} cu;

/* out[k] += 1 for k < n, out read from the first word of *p[0] (params:
 * holder, n) */
static void inc_indirect(void **p)
{
	uint32_t *out = **(uint32_t ***)p[0];
	int n = *(int *)p[1];

	for (int k = 0; k < n; k++)
		out[k]++;
}

static void die(const char *what, int r)
{
	fprintf(stderr, "fake_gpu_app: %s failed (%d)\n", what, r);
	exit(1);
}

/* out[k] = in[k] + 1 for k < n  (params: out, n, in) */
static void inc(void **p)
{
	uint32_t *out = *(uint32_t **)p[0];
	int n = *(int *)p[1];
	const uint32_t *in = *(const uint32_t **)p[2];

	for (int k = 0; k < n; k++)
		out[k] = in[k] + 1;
}

int main(int argc, char **argv)
{
	static const size_t sizes[] = { 8, 4, 8 }, isizes[] = { 8, 4 };
	CUdeviceptr *buf;
	CUcontext ctx;
	CUdevice dev;
	CUfunction k, ki;
	bool indirect, fixed, shrink;
	uint32_t *host;
	size_t *len;
	FILE *out;
	void *h;
	int n, r;

	indirect = argc == 5 && strcmp(argv[4], "indirect") == 0;
	fixed = argc == 5 && strcmp(argv[4], "static") == 0;
	shrink = argc == 5 && strcmp(argv[4], "shrinking") == 0;
	if ((argc != 4 && !indirect && !fixed && !shrink) || (n = atoi(argv[2])) < 1 ||
	    atoi(argv[3]) < 1) {
		fprintf(stderr, "usage: fake_gpu_app OUT NBUF MIB [indirect|static|shrinking]\n");
		return 2;
	}
	if (!(out = fopen(argv[1], "a")) || !(h = dlopen("libcuda.so.1", RTLD_NOW)))
		die("fopen/dlopen", 0);
#define S(f, name) ((*(void **)&cu.f = dlsym(h, name)) != NULL)
	if (!(S(init, "cuInit") && S(dev_get, "cuDeviceGet") && S(ctx_create, "cuCtxCreate_v4") &&
	      S(alloc, "cuMemAlloc_v2") && S(memset32, "cuMemsetD32_v2") &&
	      S(dtoh, "cuMemcpyDtoH_v2") && S(launch, "cuLaunchKernel") &&
	      S(kernel, "fakecuda_kernel")))
		die("dlsym (is the fake driver first in LD_LIBRARY_PATH?)", 0);
#undef S
	if ((r = cu.init(0)) || (r = cu.dev_get(&dev, 0)) || (r = cu.ctx_create(&ctx, NULL, 0, dev)))
		die("context", r);
	k = cu.kernel(FAKECUDA_KERNEL, 3, sizes, inc);
	ki = cu.kernel(FAKECUDA_KERNEL, 2, isizes, inc_indirect);
	buf = calloc((size_t)n + 1, sizeof(*buf));
	len = calloc((size_t)n + 1, sizeof(*len));
	host = malloc(((size_t)atoi(argv[3]) << 20) * (shrink ? (size_t)n : 1));
	if (!buf || !len || !host)
		die("malloc", 0);
	for (int i = 0; i <= n; i++) {
		len[i] = i < n ? ((size_t)atoi(argv[3]) << 20) * (shrink ? (size_t)(n - i) : 1) : SMALL;
		if ((r = cu.alloc(&buf[i], len[i])) ||
		    (r = cu.memset32(buf[i], (unsigned)i * 1000, len[i] / 4)))
			die("allocation", r);
	}
	/* the small buffer's first word: where the last large one is */
	*(uint64_t *)(uintptr_t)buf[n] = buf[n - 1];
	for (uint32_t iter = 0;; iter++) {
		for (int i = n; i >= 0; i--) {	/* last first: not the order phos-gpu saves in */
			int words = (int)(len[i] / 4);
			void *p[] = { &buf[i], &words, &buf[i] };
			void *pi[] = { &buf[n], &words };
			bool hidden = indirect && i == n - 1;

			if ((r = cu.dtoh(host, buf[i], len[i])))
				die("cuMemcpyDtoH", r);
			/* the small one is not incremented: it holds the pointer */
			uint32_t want = i == n ? (uint32_t)n * 1000 :
					(uint32_t)i * 1000 + (fixed && i > 0 ? 0 : iter);

			for (int w = i == n ? 2 : 0; w < words; w++)
				if (host[w] != want) {
					fprintf(out, "CORRUPT iter %" PRIu32 " buffer %d (%#llx) word %d: "
						"%" PRIu32 ", not %" PRIu32 "\n", iter, i,
						(unsigned long long)buf[i], w, host[w],
						want);
					fclose(out);
					return 3;
				}
			if (i == n || (fixed && i > 0))
				continue;
			if ((r = cu.launch(hidden ? ki : k, 1, 1, 1, 1, 1, 1, 0, NULL, hidden ? pi : p,
					   NULL)))
				die("cuLaunchKernel", r);
		}
		fprintf(out, "iter %" PRIu32 "\n", iter);
		fflush(out);
		usleep(20000);
	}
}
