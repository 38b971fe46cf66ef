// count_app.cu - tests/gpu/counts.sh: a CUDA C program that makes a known
// number of kernel launches and allocations, through every runtime path
// that libphos must see:
//   launches: <<<>>> on the legacy default stream and on a created stream,
//             cudaLaunchKernelEx, cudaLaunchCooperativeKernel
//   allocs:   cudaMalloc, cudaMallocPitch, cudaMallocHost, cudaHostAlloc,
//             cudaMallocAsync
// plus memsets and copies, which are not launches.  No graphs, no stream
// capture.  Prints "KNOWN launches N", "KNOWN allocs M", then DONE.
//   count_app [ITERS]
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	printf("CUDA error %s at line %d\n", cudaGetErrorString(e_), __LINE__); exit(2); } } while (0)

__global__ void inc(float *a, int n)
{
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		a[i] += 1.0f;
}

__global__ void axpy(float *y, const float *x, float s, int n)
{
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		y[i] += s * x[i];
}

int main(int argc, char **argv)
{
	int iters = argc > 1 ? atoi(argv[1]) : 100;
	const int n = 1 << 16;
	unsigned long long launches = 0, allocs = 0;
	float *a, *b, *c, *d, *p, *h1, *h2, *as1, *as2, host[4];
	size_t pitch;
	cudaStream_t s;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (iters < 1)
		iters = 1;
	CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
	CK(cudaMalloc(&a, n * sizeof(float))); allocs++;
	CK(cudaMalloc(&b, n * sizeof(float))); allocs++;
	CK(cudaMalloc(&c, n * sizeof(float))); allocs++;
	CK(cudaMalloc(&d, 64 << 20)); allocs++;
	CK(cudaMallocPitch(&p, &pitch, 1000, 64)); allocs++;
	CK(cudaMallocHost(&h1, 1 << 20)); allocs++;
	CK(cudaHostAlloc(&h2, 1 << 20, cudaHostAllocDefault)); allocs++;
	CK(cudaMallocAsync(&as1, n * sizeof(float), s)); allocs++;
	CK(cudaMallocAsync(&as2, 4 << 20, s)); allocs++;
	for (int i = 0; i < 4; i++)
		host[i] = (float)i;

	CK(cudaMemset(a, 0, n * sizeof(float)));
	CK(cudaMemsetAsync(b, 0, n * sizeof(float), s));
	CK(cudaMemsetAsync(as1, 0, n * sizeof(float), s));
	CK(cudaMemcpy(c, host, sizeof(host), cudaMemcpyHostToDevice));
	CK(cudaStreamSynchronize(s));

	cudaLaunchConfig_t cfg = {};
	cfg.gridDim = dim3((n + 255) / 256);
	cfg.blockDim = dim3(256);
	cfg.stream = s;
	for (int it = 0; it < iters; it++) {
		inc<<<(n + 255) / 256, 256>>>(a, n); launches++;
		axpy<<<(n + 255) / 256, 256, 0, s>>>(b, c, 0.5f, n); launches++;
		CK(cudaLaunchKernelEx(&cfg, axpy, as1, (const float *)b, 0.25f, n)); launches++;
		if (it % 10 == 0) {
			int nn = n;
			void *args[] = { &c, &nn };
			CK(cudaLaunchCooperativeKernel((const void *)inc, dim3(1), dim3(256), args, 0, s));
			launches++;
			CK(cudaMemcpyAsync(d, a, n * sizeof(float), cudaMemcpyDeviceToDevice, s));
		}
	}
	CK(cudaGetLastError());
	CK(cudaDeviceSynchronize());
	CK(cudaMemcpy(host, a, sizeof(host), cudaMemcpyDeviceToHost));
	CK(cudaFreeAsync(as1, s));
	CK(cudaFreeAsync(as2, s));
	CK(cudaStreamSynchronize(s));
	CK(cudaFree(a)); CK(cudaFree(b)); CK(cudaFree(c)); CK(cudaFree(d)); CK(cudaFree(p));
	CK(cudaFreeHost(h1)); CK(cudaFreeHost(h2));
	CK(cudaStreamDestroy(s));
	printf("check %g\n", (double)host[1]);
	printf("KNOWN launches %llu\nKNOWN allocs %llu\n", launches, allocs);
	printf("DONE\n");
	return 0;
}
