// app_gemm.cu - GPU test (b): a cuBLAS SGEMM loop; after each GEMM the
// result is squashed back into A (x / (1 + |x|)) and summed on the host in a
// fixed order.  Prints the checksum of each iteration (hex of the double).
//   app_gemm N ITERS SLEEP_MS
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <vector>
#include <unistd.h>
#include <cuda_runtime.h>
#include <cublas_v2.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	printf("CUDA error %s at line %d\n", cudaGetErrorString(e_), __LINE__); exit(2); } } while (0)
#define CB(x) do { cublasStatus_t s_ = (x); if (s_ != CUBLAS_STATUS_SUCCESS) { \
	printf("cuBLAS error %d at line %d\n", (int)s_, __LINE__); exit(2); } } while (0)

__global__ void squash(float *a, const float *c, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		a[i] = c[i] / (1.0f + fabsf(c[i]));
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 2048;
	int iters = argc > 2 ? atoi(argv[2]) : 60;
	int sleep_ms = argc > 3 ? atoi(argv[3]) : 100;
	size_t nn = (size_t)n * n;
	std::vector<float> h(nn);
	float *A, *B, *C, one = 1.0f / 32, zero = 0;
	cublasHandle_t cb;

	setvbuf(stdout, NULL, _IOLBF, 0);
	uint32_t x = 12345;
	for (size_t i = 0; i < nn; i++) {
		x = x * 1664525u + 1013904223u;
		h[i] = (float)((x >> 8) & 0xffff) / 65536.0f - 0.5f;
	}
	CK(cudaMalloc(&A, nn * 4));
	CK(cudaMalloc(&B, nn * 4));
	CK(cudaMalloc(&C, nn * 4));
	CK(cudaMemcpy(A, h.data(), nn * 4, cudaMemcpyHostToDevice));
	for (size_t i = 0; i < nn; i++)
		h[i] = h[(i * 7919) % nn];
	CK(cudaMemcpy(B, h.data(), nn * 4, cudaMemcpyHostToDevice));
	CB(cublasCreate(&cb));
	printf("READY pid %d n %d\n", (int)getpid(), n);
	for (int it = 1; it <= iters; it++) {
		CB(cublasSgemm(cb, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, n, B, n, &zero, C, n));
		squash<<<264, 256>>>(A, C, nn);
		CK(cudaMemcpy(h.data(), C, nn * 4, cudaMemcpyDeviceToHost));
		double s = 0;
		for (size_t i = 0; i < nn; i++)
			s += h[i] * (double)(i % 97 + 1);
		uint64_t bits;
		memcpy(&bits, &s, 8);
		printf("iter %d checksum %016llx\n", it, (unsigned long long)bits);
		usleep(sleep_ms * 1000);
	}
	cublasDestroy(cb);
	printf("DONE\n");
	return 0;
}
