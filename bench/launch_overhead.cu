// launch_overhead.cu - bench/overhead.sh: host-side cost of a kernel launch.
//
// An empty kernel takes a few us on the device, about as long as a launch
// takes on the host, so timing launches into an idle GPU measures the GPU's
// launch throughput as much as the host's enqueue cost.  Here each batch
// first launches a blocker kernel that spins until the host releases it
// (a flag in mapped pinned host memory; it gives up after BLOCK_TIMEOUT_NS
// so it can never hang), then times only the loop of BATCH launches
// enqueued behind it (BATCH well under the driver's queue depth, so no
// launch waits for the GPU and none finds the queue drained), then releases
// the blocker and syncs the stream, outside the timed region.  A batch
// whose blocker timed out is not counted.  Two kernels, launched with
// <<<>>> (through cuLaunchKernel): one without parameters, one with three
// pointers into a 64 MiB cudaMalloc buffer (libphos computes a write set
// from its parameters).  One stream, async.
//   launch_overhead [WARMUP_BATCHES [BATCHES [BATCH]]]
// Prints "RESULT kernel=NAME ns_per_launch=MEDIAN p10=X p90=Y batches=N
// timeouts=T" per kernel (statistics over batches of the batch's ns per
// launch), then DONE.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	printf("CUDA error %s at line %d\n", cudaGetErrorString(e_), __LINE__); exit(2); } } while (0)

#include "launch_kernels.cuh"

struct stats {
	double p10, med, p90;
	long n, timeouts;
};

template <typename F>
static stats time_launches(F launch, cudaStream_t s, volatile unsigned int *rel_h,
			   unsigned int *rel_d, volatile unsigned int *to_h, unsigned int *to_d,
			   unsigned int &gen, long warmup, long batches, int batch)
{
	std::vector<double> v;
	stats r = {0, 0, 0, 0, 0};

	v.reserve(batches);
	for (long b = 0; b < warmup + batches; b++) {
		gen++;
		blocker<<<1, 1, 0, s>>>(rel_d, to_d, gen);
		auto t0 = std::chrono::steady_clock::now();
		for (int i = 0; i < batch; i++)
			launch();
		auto t1 = std::chrono::steady_clock::now();
		__atomic_store_n((unsigned int *)rel_h, gen, __ATOMIC_RELEASE);
		CK(cudaStreamSynchronize(s));
		if (b < warmup)
			continue;
		if (*to_h == gen) {
			r.timeouts++;
			continue;
		}
		v.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / batch);
	}
	CK(cudaGetLastError());
	r.n = (long)v.size();
	if (v.empty())
		return r;
	std::sort(v.begin(), v.end());
	auto q = [&](double f) { return v[(size_t)(f * (double)(v.size() - 1) + 0.5)]; };
	r.p10 = q(0.10);
	r.med = q(0.50);
	r.p90 = q(0.90);
	return r;
}

static void print(const char *name, const stats &r)
{
	printf("RESULT kernel=%s ns_per_launch=%.1f p10=%.1f p90=%.1f batches=%ld timeouts=%ld\n",
	       name, r.med, r.p10, r.p90, r.n, r.timeouts);
}

int main(int argc, char **argv)
{
	long warmup = argc > 1 ? atol(argv[1]) : 100;
	long batches = argc > 2 ? atol(argv[2]) : 2000;
	int batch = argc > 3 ? atoi(argv[3]) : 128;
	unsigned int *flags_h, *flags_d, gen = 0;
	char *buf;
	cudaStream_t s;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (warmup < 0)
		warmup = 0;
	if (batches < 1)
		batches = 1;
	if (batch < 1)
		batch = 1;
	CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
	CK(cudaHostAlloc(&flags_h, 2 * sizeof(unsigned int), cudaHostAllocMapped));
	flags_h[0] = flags_h[1] = 0;
	CK(cudaHostGetDevicePointer((void **)&flags_d, flags_h, 0));
	CK(cudaMalloc(&buf, 64 << 20));
	float *a = (float *)buf, *b = (float *)(buf + (16 << 20)), *c = (float *)(buf + (32 << 20));
	volatile unsigned int *rel_h = flags_h, *to_h = flags_h + 1;

	stats e = time_launches([&] { empty_kernel<<<1, 32, 0, s>>>(); }, s, rel_h, flags_d,
				to_h, flags_d + 1, gen, warmup, batches, batch);
	print("empty", e);
	stats p = time_launches([&] { ptr_kernel<<<1, 32, 0, s>>>(a, b, c, 1); }, s, rel_h, flags_d,
				to_h, flags_d + 1, gen, warmup, batches, batch);
	print("ptr3", p);
	CK(cudaFree(buf));
	CK(cudaFreeHost(flags_h));
	CK(cudaStreamDestroy(s));
	printf("DONE\n");
	return 0;
}
