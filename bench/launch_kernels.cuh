// launch_kernels.cuh - the kernels launch_overhead.cu and launch_ab.cu
// time, and the blocker each batch is enqueued behind (bench/overhead.sh).
#ifndef PHOS_BENCH_LAUNCH_KERNELS_CUH
#define PHOS_BENCH_LAUNCH_KERNELS_CUH

#define BLOCK_TIMEOUT_NS 200000000ull	/* 200 ms: far above a batch's enqueue time */

__global__ void empty_kernel(void) {}

__global__ void ptr_kernel(float *a, const float *b, const float *c, int n)
{
	if (n < 0)
		a[0] = b[0] + c[0];
}

static __device__ __forceinline__ unsigned long long gtime(void)
{
	unsigned long long t;

	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}

// Spins until *release >= gen (the host sets it) or BLOCK_TIMEOUT_NS has
// passed; then writes gen to *timedout.
__global__ void blocker(const volatile unsigned int *release, volatile unsigned int *timedout,
			unsigned int gen)
{
	unsigned long long t0 = gtime();

	while (*release < gen) {
		if (gtime() - t0 > BLOCK_TIMEOUT_NS) {
			*timedout = gen;
			break;
		}
#if __CUDA_ARCH__ >= 700
		__nanosleep(500);
#endif
	}
}

#endif
