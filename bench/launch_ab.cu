// launch_ab.cu - bench/overhead.sh (a2): what libphos adds to one launch,
// measured in one process, batch against batch.
//
// launch_overhead.cu compares separate processes; their medians differ by
// a few hundred ns from run to run (memory layout, clocks), more than the
// 100 ns being measured.  Here the program is linked against the driver
// and also dlopen()s libphos.so (RTLD_LOCAL: nothing of it interposes),
// so it holds both cuLaunchKernel entry points: the driver's, and
// libphos's hook, which computes the launch's write set and then calls the
// driver's.  Batches of BATCH launches through each alternate (which one
// goes first alternates too), each batch enqueued behind a blocker kernel
// as in launch_overhead.cu, so only the host's enqueue cost is timed.  The
// figure is the median over pairs of (hook batch - driver batch) / BATCH.
//
// The three pointer arguments point into buffers allocated through
// libphos's cuMemAlloc_v2, next to NALLOC other allocations, so the hook
// looks them up in a map about the size of a PyTorch process's.
//   launch_ab LIBPHOS [WARMUP [PAIRS [BATCH [NALLOC]]]]
// Prints "RESULT kernel=NAME added_ns=MEDIAN q25=X q75=Y driver_ns=D
// hook_ns=H pairs=N timeouts=T" per kernel, then DONE.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <dlfcn.h>
#include <cuda.h>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	printf("CUDA error %s at line %d\n", cudaGetErrorString(e_), __LINE__); exit(2); } } while (0)
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { \
	printf("driver error %d at line %d\n", (int)r_, __LINE__); exit(2); } } while (0)

typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
			      unsigned, unsigned, CUstream, void **, void **);
typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);

#include "launch_kernels.cuh"

struct bench {
	cudaStream_t s;
	volatile unsigned int *rel_h, *to_h;
	unsigned int *rel_d, *to_d;
	unsigned int gen;
	int batch;
};

// ns per launch of one batch through fn, or -1 if its blocker timed out
static double one_batch(bench &b, launch_fn fn, CUfunction f, void **kp)
{
	b.gen++;
	blocker<<<1, 1, 0, b.s>>>(b.rel_d, b.to_d, b.gen);
	auto t0 = std::chrono::steady_clock::now();
	for (int i = 0; i < b.batch; i++)
		fn(f, 1, 1, 1, 32, 1, 1, 0, (CUstream)b.s, kp, NULL);
	auto t1 = std::chrono::steady_clock::now();
	__atomic_store_n((unsigned int *)b.rel_h, b.gen, __ATOMIC_RELEASE);
	CK(cudaStreamSynchronize(b.s));
	if (*b.to_h == b.gen)
		return -1;
	return std::chrono::duration<double, std::nano>(t1 - t0).count() / b.batch;
}

static double q(std::vector<double> &v, double f)
{
	std::sort(v.begin(), v.end());
	return v[(size_t)(f * (double)(v.size() - 1) + 0.5)];
}

static void run(const char *name, bench &b, launch_fn drv, launch_fn hook, CUfunction f,
		void **kp, long warmup, long pairs)
{
	std::vector<double> diff, dv, hv;
	long timeouts = 0;

	for (long p = 0; p < warmup + pairs; p++) {
		bool hook_first = p & 1;
		double x = one_batch(b, hook_first ? hook : drv, f, kp);
		double y = one_batch(b, hook_first ? drv : hook, f, kp);
		double d = hook_first ? y : x, h = hook_first ? x : y;

		if (p < warmup)
			continue;
		if (d < 0 || h < 0) {
			timeouts++;
			continue;
		}
		diff.push_back(h - d);
		dv.push_back(d);
		hv.push_back(h);
	}
	CK(cudaGetLastError());
	if (diff.empty()) {
		printf("RESULT kernel=%s pairs=0 timeouts=%ld\n", name, timeouts);
		return;
	}
	printf("RESULT kernel=%s added_ns=%.1f q25=%.1f q75=%.1f driver_ns=%.1f hook_ns=%.1f "
	       "pairs=%zu timeouts=%ld\n", name, q(diff, 0.5), q(diff, 0.25), q(diff, 0.75),
	       q(dv, 0.5), q(hv, 0.5), diff.size(), timeouts);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: launch_ab LIBPHOS [WARMUP [PAIRS [BATCH [NALLOC]]]]\n");
		return 2;
	}
	long warmup = argc > 2 ? atol(argv[2]) : 100;
	long pairs = argc > 3 ? atol(argv[3]) : 2000;
	int batch = argc > 4 ? atoi(argv[4]) : 128;
	int nalloc = argc > 5 ? atoi(argv[5]) : 64;
	unsigned int *flags_h, *flags_d;
	bench b;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (warmup < 0)
		warmup = 0;
	if (pairs < 1)
		pairs = 1;
	b.batch = batch < 1 ? 1 : batch;
	CK(cudaFree(0));	// the primary context, current

	void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		printf("cannot load %s: %s\n", argv[1], dlerror());
		return 2;
	}
	launch_fn hook = (launch_fn)dlsym(h, "cuLaunchKernel");
	alloc_fn halloc = (alloc_fn)dlsym(h, "cuMemAlloc_v2");
	launch_fn drv = (launch_fn)cuLaunchKernel;	// the program's own: the driver's
	if (!hook || !halloc || (void *)hook == (void *)drv) {
		printf("%s has no cuLaunchKernel/cuMemAlloc_v2 hook of its own\n", argv[1]);
		return 2;
	}

	CK(cudaStreamCreateWithFlags(&b.s, cudaStreamNonBlocking));
	CK(cudaHostAlloc(&flags_h, 2 * sizeof(unsigned int), cudaHostAllocMapped));
	flags_h[0] = flags_h[1] = 0;
	CK(cudaHostGetDevicePointer((void **)&flags_d, flags_h, 0));
	b.rel_h = flags_h, b.to_h = flags_h + 1, b.rel_d = flags_d, b.to_d = flags_d + 1;
	b.gen = 0;

	// a map of nalloc + 3 entries, the three named ones among them
	CUdeviceptr a, bb, c, x;
	for (int i = 0; i < nalloc; i++) {
		CU(halloc(&x, (size_t)(i % 7 + 1) << 16));
		if (i == nalloc / 4)
			CU(halloc(&a, 16 << 20));
		if (i == nalloc / 2)
			CU(halloc(&bb, 16 << 20));
		if (i == 3 * nalloc / 4)
			CU(halloc(&c, 16 << 20));
	}
	if (nalloc == 0) {
		CU(halloc(&a, 16 << 20));
		CU(halloc(&bb, 16 << 20));
		CU(halloc(&c, 16 << 20));
	}

	cudaFunction_t fe, fp;
	CK(cudaGetFuncBySymbol(&fe, (const void *)empty_kernel));
	CK(cudaGetFuncBySymbol(&fp, (const void *)ptr_kernel));
	int n = 1;
	void *kp[4] = { &a, &bb, &c, &n };

	run("empty", b, drv, hook, (CUfunction)fe, NULL, warmup, pairs);
	run("ptr3", b, drv, hook, (CUfunction)fp, kp, warmup, pairs);
	CK(cudaFreeHost(flags_h));
	CK(cudaStreamDestroy(b.s));
	printf("DONE\n");
	return 0;
}
