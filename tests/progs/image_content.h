/*
 * image_content.h - the bytes progs/image_writer puts into its files and
 * chunks, which unit/test_image_crash recomputes to check them: one
 * definition for both.
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

/*
 * The GPU memory of generation gen: one buffer of IMAGE_GPU_SIZE bytes in
 * the task's chunk store (common/chunks.h), named by the index file
 * IMAGE_GPU_IDX, in pieces of IMAGE_GPU_CHUNK bytes (the last one
 * shorter).  Piece i holds the bytes of slot image_gpu_slot(i) at version
 * image_gpu_version(gen, slot), so consecutive generations share some
 * chunks and not others, and one generation names one chunk twice:
 *
 *   slot 0 (pieces 0 and 3)  changes every generation
 *   slot 1 (piece 1)         every second one; compressible (stored as
 *                            <sha256>.zst by phos_chunk_put_z())
 *   slot 2 (piece 2)         never
 *   slot 3 (piece 4, short)  every third one
 */
#define IMAGE_GPU_IDX		"gpumem-1-0.idx"
#define IMAGE_GPU_CHUNK		4096u
#define IMAGE_GPU_PIECES	5u
#define IMAGE_GPU_SIZE		(4 * IMAGE_GPU_CHUNK + 1000)
#define IMAGE_GPU_ZSLOT		1u	/* the compressible slot */

static inline unsigned image_gpu_slot(unsigned piece)
{
	static const unsigned slot[IMAGE_GPU_PIECES] = { 0, 1, 2, 0, 3 };

	return slot[piece];
}

static inline uint64_t image_gpu_version(uint64_t gen, unsigned slot)
{
	static const unsigned every[] = { 1, 2, 0, 3 };	/* 0: never */

	return every[slot] ? gen / every[slot] : 0;
}

static inline size_t image_gpu_len(unsigned piece)
{
	return piece + 1 < IMAGE_GPU_PIECES ? IMAGE_GPU_CHUNK :
	       IMAGE_GPU_SIZE - (IMAGE_GPU_PIECES - 1) * IMAGE_GPU_CHUNK;
}

/* The image_gpu_len(piece) bytes of piece of generation gen. */
static inline void image_gpu_piece(unsigned char *buf, uint64_t gen, unsigned piece)
{
	unsigned slot = image_gpu_slot(piece);
	uint64_t ver = image_gpu_version(gen, slot);
	size_t len = image_gpu_len(piece), i, b;

	if (slot != IMAGE_GPU_ZSLOT) {
		image_content(buf, len, ver, 0x80 + slot, 0);
		return;
	}
	/* a 64-bit word of the version, with a short period: compresses */
	for (i = 0; i < len; i += 8) {
		uint64_t w = image_mix64((ver << 8) ^ 0x81) ^ (i / 8 % 16);

		for (b = 0; b < 8 && i + b < len; b++)
			buf[i + b] = (unsigned char)(w >> (8 * b));
	}
}

#endif
