/*
 * phos-hash.cu - phos-gpu's buffer hash on the device (common/savetab.h
 * defines it and computes the same on the host): over 32-bit words w_i,
 * out[0] += sum w_i * m_i, out[1] += sum w_i^2 * m_i, mod 2^64, for words
 * [first, first + n) of a buffer, with the weights m_i of common/sums.h
 * (the host's, compiled for the device).  Sums commute, so
 * the grid's order does not matter.  Built to PTX (daemon/Makefile.am) and
 * loaded by phos-gpu with cuModuleLoadData; launch with whole warps.
 */
#include "sums.h"

extern "C" __global__ void phos_hash(const unsigned int *w, unsigned long long n,
				     unsigned long long first, unsigned long long *out,
				     unsigned long long key)
{
	unsigned long long a = 0, b = 0;
	unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;

	for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
	     k < n; k += stride) {
		unsigned long long m = phos_hash_weight(key, first + k), v = w[k];

		a += v * m;
		b += v * v * m;
	}
	for (int o = 16; o > 0; o >>= 1) {
		a += __shfl_down_sync(0xffffffffu, a, o);
		b += __shfl_down_sync(0xffffffffu, b, o);
	}
	if ((threadIdx.x & 31) == 0) {
		atomicAdd(&out[0], a);
		atomicAdd(&out[1], b);
	}
}
