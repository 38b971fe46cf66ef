// app_state.cu - GPU test (a): several buffers, streams and kernels with an
// exact, deterministic evolution.  Prints one line per iteration with a
// checksum of every buffer (integer arithmetic: bit-exact), then DONE.
//   app_state NBUF MB_PER_BUF ITERS SLEEP_MS [indirect]
// With "indirect", every kernel finds its buffer (and the key it reads)
// through pointer arrays kept in device memory (same arithmetic, same
// output): writes libphos cannot see, so nothing makes them wait for a
// concurrent save, which the save's hash check must catch (run-all.sh i).
// The sums read through them too: a sum naming its buffer would have the
// save copy that buffer first, and a checkpoint that froze the process
// between the steps and the sums then saw every buffer copied before the
// next hidden write (session 15: no mismatch, nothing for the check to
// catch).
// All buffers, so that some are written before phos-gpu saves them
// whatever order it saves them in.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <string>
#include <vector>
#include <unistd.h>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
	fflush(stdout); exit(2); } } while (0)

__global__ void init(uint32_t *b, size_t n, uint32_t seed)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		b[i] = (uint32_t)(i * 2654435761u) ^ seed;
}

// x = x * A + B + key (mod 2^32): depends on the whole history; key is a
// buffer written once (reading another buffer that a kernel on another
// stream writes would race)
__global__ void step(uint32_t *b, const uint32_t *other, size_t n, uint32_t a, uint32_t c)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		b[i] = b[i] * a + c + (other[(i * 7) % n] >> 3);
}

__global__ void step_ind(uint32_t *const *pb, uint32_t *const *pk, size_t n, uint32_t a, uint32_t c)
{
	uint32_t *b = pb[0];
	const uint32_t *other = pk[0];
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		b[i] = b[i] * a + c + (other[(i * 7) % n] >> 3);
}

// per-block partial sums in a fixed order: deterministic
__device__ void sum_of(const uint32_t *b, size_t n, unsigned long long *out)
{
	__shared__ unsigned long long s[256];
	unsigned long long acc = 0;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		acc += b[i] * (i % 251 + 1);
	s[threadIdx.x] = acc;
	__syncthreads();
	for (int k = blockDim.x / 2; k > 0; k /= 2) {
		if (threadIdx.x < k)
			s[threadIdx.x] += s[threadIdx.x + k];
		__syncthreads();
	}
	if (threadIdx.x == 0)
		out[blockIdx.x] = s[0];
}

__global__ void sum(const uint32_t *b, size_t n, unsigned long long *out)
{
	sum_of(b, n, out);
}

__global__ void sum_ind(uint32_t *const *pb, size_t n, unsigned long long *out)
{
	sum_of(pb[0], n, out);
}

int main(int argc, char **argv)
{
	int nbuf = argc > 1 ? atoi(argv[1]) : 6;
	size_t mb = argc > 2 ? strtoull(argv[2], 0, 10) : 64;
	int iters = argc > 3 ? atoi(argv[3]) : 60;
	int sleep_ms = argc > 4 ? atoi(argv[4]) : 100;
	bool indirect = argc > 5 && std::string(argv[5]) == "indirect";
	uint32_t **pb = NULL, **pk = NULL;	// indirect: where each buffer and key is
	size_t n = mb * (1 << 20) / 4;
	const int nstream = 3, grid = 264, block = 256;
	std::vector<uint32_t *> buf(nbuf), key(nbuf);
	std::vector<cudaStream_t> st(nstream);
	unsigned long long *part, *hpart;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int s = 0; s < nstream; s++)
		CK(cudaStreamCreateWithFlags(&st[s], cudaStreamNonBlocking));
	for (int i = 0; i < nbuf; i++) {
		CK(cudaMalloc(&buf[i], n * 4));
		CK(cudaMalloc(&key[i], n * 4));
		init<<<grid, block, 0, st[i % nstream]>>>(buf[i], n, 0x9e3779b9u * (i + 1));
		init<<<grid, block, 0, st[i % nstream]>>>(key[i], n, 0x7f4a7c15u * (i + 3));
	}
	CK(cudaMalloc(&pb, nbuf * sizeof(*pb)));
	CK(cudaMemcpy(pb, buf.data(), nbuf * sizeof(*pb), cudaMemcpyHostToDevice));
	CK(cudaMalloc(&pk, nbuf * sizeof(*pk)));
	CK(cudaMemcpy(pk, key.data(), nbuf * sizeof(*pk), cudaMemcpyHostToDevice));
	CK(cudaMalloc(&part, grid * sizeof(*part)));
	CK(cudaMallocHost(&hpart, grid * sizeof(*hpart)));
	CK(cudaDeviceSynchronize());
	printf("READY pid %d nbuf %d mb %zu\n", (int)getpid(), nbuf, mb);
	for (int it = 1; it <= iters; it++) {
		for (int i = 0; i < nbuf; i++) {
			if (indirect)
				step_ind<<<grid, block, 0, st[i % nstream]>>>(pb + i, pk + i, n,
									      1664525u + 2 * it,
									      1013904223u + i);
			else
				step<<<grid, block, 0, st[i % nstream]>>>(buf[i], key[i], n,
									   1664525u + 2 * it, 1013904223u + i);
		}
		CK(cudaDeviceSynchronize());
		unsigned long long total = 0;
		for (int i = 0; i < nbuf; i++) {
			if (indirect)
				sum_ind<<<grid, block, 0, st[0]>>>(pb + i, n, part);
			else
				sum<<<grid, block, 0, st[0]>>>(buf[i], n, part);
			CK(cudaMemcpyAsync(hpart, part, grid * sizeof(*part), cudaMemcpyDeviceToHost, st[0]));
			CK(cudaStreamSynchronize(st[0]));
			for (int g = 0; g < grid; g++)
				total = total * 31 + hpart[g];
		}
		printf("iter %d checksum %016llx\n", it, total);
		usleep(sleep_ms * 1000);
	}
	printf("DONE\n");
	return 0;
}
