/*
 * preload_cuda.h - what the tests of libphos's CUDA hooks share
 * (test_preload_hooks, _graph, _vmm): a context on the fake driver, the
 * out[i] = in[i] + 1 kernel body and the write count of an allocation.
 * Include after <cmocka.h> and preload_test.h.
 */
#ifndef PRELOAD_CUDA_H
#define PRELOAD_CUDA_H

#include <cuda.h>

/* cuInit + a context on device 0, current on this thread. */
static inline void preload_ctx(void)
{
	CUcontext ctx;
	CUdevice dev;

	assert_int_equal(cuInit(0), CUDA_SUCCESS);
	assert_int_equal(cuDeviceGet(&dev, 0), CUDA_SUCCESS);
	assert_int_equal(cuCtxCreate(&ctx, NULL, 0, dev), CUDA_SUCCESS);
}

/* kernel body: out[i] = in[i] + 1 for i < n  (params: out, n, in) */
static inline void body_inc(void **p)
{
	uint32_t *out = *(uint32_t **)p[0];
	int n = *(int *)p[1];
	const uint32_t *in = *(const uint32_t **)p[2];
	int i;

	for (i = 0; i < n; i++)
		out[i] = in[i] + 1;
}

/* the parameter sizes of body_inc's kernel */
#define INC_SIZES ((const size_t[]){ 8, 4, 8 })

/* How many launches, copies and memsets marked the allocation at p. */
static inline uint64_t writes_of(CUdeviceptr p)
{
	uint64_t w = 0;

	assert_int_equal(preload_alloc_query(p, NULL, NULL, NULL, &w), 0);
	return w;
}

#endif
