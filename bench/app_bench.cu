// app_bench.cu - bench: holds GB gibibytes of GPU memory (1 GiB buffers of a
// known pattern) and runs a small kernel loop, printing "tick N MS" after
// each step (MS: the wall clock in ms); at the end checks every byte.
//   app_bench GB ITERS SLEEP_MS [SPIN_MS]
// SPIN_MS > 0: each iteration runs a kernel that spins that long (to make a
// checkpoint's lock wait on running GPU work).
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <time.h>
#include <unistd.h>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	printf("CUDA error %s at line %d\n", cudaGetErrorString(e_), __LINE__); exit(2); } } while (0)

__global__ void fill(uint64_t *b, size_t n, uint64_t seed)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		b[i] = (i + seed) * 0x9e3779b97f4a7c15ull;
}

__global__ void check(const uint64_t *b, size_t n, uint64_t seed, unsigned long long *bad)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		if (b[i] != (i + seed) * 0x9e3779b97f4a7c15ull)
			atomicAdd(bad, 1ull);
}

__global__ void tick(unsigned long long *c, long long spin)
{
	long long t0 = clock64();
	while (spin && clock64() - t0 < spin)
		;
	c[0]++;
}

int main(int argc, char **argv)
{
	int gb = argc > 1 ? atoi(argv[1]) : 1;
	int iters = argc > 2 ? atoi(argv[2]) : 1000000;
	int sleep_ms = argc > 3 ? atoi(argv[3]) : 50;
	int spin_ms = argc > 4 ? atoi(argv[4]) : 0;
	int khz = 0;
	size_t n = (1ull << 30) / 8;
	std::vector<uint64_t *> buf(gb);
	unsigned long long *cnt, *bad, h;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0; i < gb; i++) {
		CK(cudaMalloc(&buf[i], n * 8));
		fill<<<264, 512>>>(buf[i], n, (uint64_t)i << 40);
	}
	CK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
	CK(cudaMalloc(&cnt, 8));
	CK(cudaMalloc(&bad, 8));
	CK(cudaMemset(cnt, 0, 8));
	CK(cudaDeviceSynchronize());
	printf("READY pid %d gb %d\n", (int)getpid(), gb);
	for (int it = 1; it <= iters; it++) {
		tick<<<1, 1>>>(cnt, (long long)spin_ms * khz);
		CK(cudaMemcpy(&h, cnt, 8, cudaMemcpyDeviceToHost));
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);	// when this step finished (bench.sh)
		printf("tick %d %lld\n", it, ts.tv_sec * 1000LL + ts.tv_nsec / 1000000);
		if (access("/tmp/phos-bench-stop", F_OK) == 0)
			break;
		usleep(sleep_ms * 1000);
	}
	CK(cudaMemset(bad, 0, 8));
	for (int i = 0; i < gb; i++)
		check<<<264, 512>>>(buf[i], n, (uint64_t)i << 40, bad);
	CK(cudaMemcpy(&h, bad, 8, cudaMemcpyDeviceToHost));
	printf("VERIFY %s (%llu bad words)\n", h ? "FAILED" : "ok", h);
	printf("DONE\n");
	return h ? 1 : 0;
}
