/*
 * fake_gpu_app - a CUDA driver-API program for the fake-driver tests of
 * the GPU fast path (integration/0160-gpu-fake.t): run under libphos.so
 * with tests/fakecuda's libcuda.so.1 first in LD_LIBRARY_PATH.
 *
 *   fake_gpu_app OUT NBUF MIB
 *
 * Allocates NBUF buffers of MIB MiB (libphos serves them as exportable VMM
 * memory) and one of 64 KiB (stays native), fills buffer i with the 32-bit
 * word i * 1000, then forever: checks that every word of every buffer is
 * i * 1000 + iter, launches out[k] = in[k] + 1 over each buffer, and
 * appends "iter N" to OUT.  A word that is not what it should be (a buffer
 * lost or mangled by a checkpoint or restore) appends "CORRUPT ..." and
 * exits 3.  The driver is reached through dlopen/dlsym, which libphos
 * interposes like the linked entry points.
 */
#include "config.h"

#include <dlfcn.h>
#include <inttypes.h>
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
	static const size_t sizes[] = { 8, 4, 8 };
	CUdeviceptr *buf;
	CUcontext ctx;
	CUdevice dev;
	CUfunction k;
	uint32_t *host;
	size_t *len;
	FILE *out;
	void *h;
	int n, r;

	if (argc != 4 || (n = atoi(argv[2])) < 1 || atoi(argv[3]) < 1) {
		fprintf(stderr, "usage: fake_gpu_app OUT NBUF MIB\n");
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
	buf = calloc((size_t)n + 1, sizeof(*buf));
	len = calloc((size_t)n + 1, sizeof(*len));
	host = malloc((size_t)atoi(argv[3]) << 20);
	if (!buf || !len || !host)
		die("malloc", 0);
	for (int i = 0; i <= n; i++) {
		len[i] = i < n ? (size_t)atoi(argv[3]) << 20 : SMALL;
		if ((r = cu.alloc(&buf[i], len[i])) ||
		    (r = cu.memset32(buf[i], (unsigned)i * 1000, len[i] / 4)))
			die("allocation", r);
	}
	for (uint32_t iter = 0;; iter++) {
		for (int i = 0; i <= n; i++) {
			int words = (int)(len[i] / 4);
			void *p[] = { &buf[i], &words, &buf[i] };

			if ((r = cu.dtoh(host, buf[i], len[i])))
				die("cuMemcpyDtoH", r);
			for (int w = 0; w < words; w++)
				if (host[w] != (uint32_t)i * 1000 + iter) {
					fprintf(out, "CORRUPT iter %" PRIu32 " buffer %d (%#llx) word %d: "
						"%" PRIu32 ", not %" PRIu32 "\n", iter, i,
						(unsigned long long)buf[i], w, host[w],
						(uint32_t)i * 1000 + iter);
					fclose(out);
					return 3;
				}
			if ((r = cu.launch(k, 1, 1, 1, 1, 1, 1, 0, NULL, p, NULL)))
				die("cuLaunchKernel", r);
		}
		fprintf(out, "iter %" PRIu32 "\n", iter);
		fflush(out);
		usleep(20000);
	}
}
