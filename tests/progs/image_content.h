/*
 * image_content.h - the bytes progs/image_writer puts into its files, which
 * unit/test_image_crash recomputes to check them: one definition for both.
 */
#ifndef PHOS_TEST_IMAGE_CONTENT_H
#define PHOS_TEST_IMAGE_CONTENT_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t image_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Bytes off..off+len-1 of file k of generation gen (off a multiple of 8). */
static inline void image_content(unsigned char *buf, size_t len, uint64_t gen, unsigned k,
				 uint64_t off)
{
	uint64_t j = off / 8;
	size_t i = 0, b;

	for (; i < len; j++) {
		uint64_t w = image_mix64((gen << 40) ^ ((uint64_t)k << 32) ^ j);

		for (b = 0; b < 8 && i < len; b++, i++)
			buf[i] = (unsigned char)(w >> (8 * b));
	}
}

#endif
