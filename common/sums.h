/*
 * sums.h - the weight of word i in a GPU buffer's sums (common/savetab.h
 * says what they are), for the host and, compiled by nvcc, for the device
 * (daemon/phos-hash.cu): one definition, so the two cannot disagree.
 *
 * key 0 (maps before 2026-12-03): 2i + 1.  Else splitmix64's finalizer
 * of key + i * golden, made odd.
 */
#ifndef PHOS_SUMS_H
#define PHOS_SUMS_H

#include <stdint.h>

#ifdef __CUDACC__
#define PHOS_SUMS_FN __host__ __device__ static inline
#else
#define PHOS_SUMS_FN static inline
#endif

PHOS_SUMS_FN uint64_t phos_hash_weight(uint64_t key, uint64_t i)
{
	uint64_t z;

	if (!key)
		return 2 * i + 1;
	z = key + i * 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (z ^ (z >> 31)) | 1;
}

#endif
