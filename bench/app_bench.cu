// app_bench.cu - bench: holds GB gibibytes of GPU memory (1 GiB buffers of a
// known pattern) and runs a small kernel loop, printing "tick N MS" after
// each step (MS: the wall clock in ms); at the end checks every byte.
// /tmp/phos-bench-touch: change 10 % of its 8 MiB pieces, print TOUCHED,
// wait for /tmp/phos-bench-untouch, change them back, print UNTOUCHED.
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

// one word in every 10th 8 MiB piece of the memory (one thread a piece):
// what an incremental checkpoint finds changed (bench.sh)
__global__ void touch(uint64_t *b, size_t n, size_t first)
{
	size_t piece = (8u << 20) / 8, i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;

	if ((first + i) % 10 == 0 && i * piece < n)
		b[i * piece] ^= 0x5a5a5a5a5a5a5a5aull;
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
		if (unlink("/tmp/phos-bench-touch") == 0) {
			// the checker below expects the pattern: change, then undo
			for (int r = 0; r < 2; r++) {
				for (int i = 0; i < gb; i++)
					touch<<<1, 128>>>(buf[i], n, (size_t)i * 128);
				CK(cudaDeviceSynchronize());
				if (r == 0) {
					printf("TOUCHED\n");
					while (access("/tmp/phos-bench-untouch", F_OK) != 0)
						usleep(10000);
					unlink("/tmp/phos-bench-untouch");
				}
			}
			printf("UNTOUCHED\n");
		}
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
