// launch_overhead.cu - bench/overhead.sh: host-side cost of a kernel launch.
// Launches in batches of BATCH (under the driver's queue depth, so launches
// never wait for the GPU), timing only the enqueueing; the stream is synced
// between batches, outside the timed region.  Two kernels: one without
// parameters, one with three device pointers (libphos computes a write set
// from its parameters).  One stream, async.
//   launch_overhead [WARMUP [LAUNCHES [BATCH]]]
// Prints "RESULT kernel=NAME ns_per_launch=X" per kernel, then DONE.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	printf("CUDA error %s at line %d\n", cudaGetErrorString(e_), __LINE__); exit(2); } } while (0)

__global__ void empty_kernel(void) {}

__global__ void ptr_kernel(float *a, const float *b, const float *c, int n)
{
	if (n < 0)
		a[0] = b[0] + c[0];
}

template <typename F>
static double time_launches(F launch, cudaStream_t s, long warmup, long total, int batch)
{
	double ns = 0;
	for (long i = 0; i < warmup; i++)
		launch();
	CK(cudaStreamSynchronize(s));
	for (long done = 0; done < total; done += batch) {
		auto t0 = std::chrono::steady_clock::now();
		for (int i = 0; i < batch; i++)
			launch();
		auto t1 = std::chrono::steady_clock::now();
		ns += std::chrono::duration<double, std::nano>(t1 - t0).count();
		CK(cudaStreamSynchronize(s));
	}
	CK(cudaGetLastError());
	return ns / (double)((total + batch - 1) / batch * batch);
}

int main(int argc, char **argv)
{
	long warmup = argc > 1 ? atol(argv[1]) : 10000;
	long total = argc > 2 ? atol(argv[2]) : 200000;
	int batch = argc > 3 ? atoi(argv[3]) : 256;
	float *a, *b, *c;
	cudaStream_t s;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (batch < 1)
		batch = 1;
	CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
	CK(cudaMalloc(&a, 1 << 20));
	CK(cudaMalloc(&b, 1 << 20));
	CK(cudaMalloc(&c, 1 << 20));
	double e = time_launches([&] { empty_kernel<<<1, 32, 0, s>>>(); }, s, warmup, total, batch);
	printf("RESULT kernel=empty ns_per_launch=%.1f\n", e);
	double p = time_launches([&] { ptr_kernel<<<1, 32, 0, s>>>(a, b, c, 1); }, s, warmup, total, batch);
	printf("RESULT kernel=ptr3 ns_per_launch=%.1f\n", p);
	CK(cudaFree(a));
	CK(cudaFree(b));
	CK(cudaFree(c));
	CK(cudaStreamDestroy(s));
	printf("DONE\n");
	return 0;
}
