/*
 * stage.h - phosd's staging pool: host memory that the GPU copy of a stop
 * or preempt checkpoint goes through, so that the GPU is free before
 * storage is written (doc/concurrent-checkpoint.md, "Preemption: the
 * staging pool").
 *
 *   stage_start(gib, pin)  make the pool and fill it, in a thread (phosd's
 *                      start); pin: phos-gpu, to make it of host memory
 *                      the NVIDIA driver pins (gpu_stage_pool_pinned)
 *   stage_take()       the pool for one checkpoint (a dup of its fd)
 *   stage_give()       done with it
 *
 * One checkpoint at a time has the pool; its processes' buffers take
 * consecutive pieces of it (stage_span() bytes each).  After a staged
 * checkpoint, stage_keep() remembers what the pool holds, and a restore of
 * that generation on this node borrows it (stage_lend(): doc/protocol.md,
 * "STAGE_GET").  A lent pool is not taken until every borrower is done.
 */
#ifndef PHOS_STAGE_H
#define PHOS_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>

#include "proto.h"

#define STAGE_ALIGN (2u << 20)	/* each buffer starts at a 2 MiB boundary */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23	/* Linux 5.14 */
#endif

/* The bytes a buffer of size takes in a pool: the layout phosd, phos-gpu
 * save and phos-gpu load agree on (doc/protocol.md, "STAGE_GET"). */
static inline uint64_t stage_align(uint64_t size)
{
	return (size + STAGE_ALIGN - 1) / STAGE_ALIGN * STAGE_ALIGN;
}

#define STAGE_CUDA_MAX 128	/* pieces of a driver-pinned pool */

/* A pool of host memory the NVIDIA driver pinned (phos-gpu pool-create,
 * doc/concurrent-checkpoint.md, "A pool pinned ahead"): n exported fds of
 * piece bytes each, laid end to end; the pool's memfd is then only a token
 * (its locks count the restores that read the pool). */
struct stage_cuda {
	const int *fd;		/* NULL: the memfd is the pool */
	unsigned n;
	uint64_t piece;
};

/* phos-gpu's --stage-cuda argument for c's pieces passed as fds first,
 * first + 1, ...: "FIRST:COUNT:PIECE_MIB" (phos-gpu parse_stage_cuda()) */
static inline void stage_cuda_arg(char *buf, size_t n, int first, const struct stage_cuda *c)
{
	snprintf(buf, n, "%d:%u:%llu", first, c->n, (unsigned long long)(c->piece >> 20));
}

struct stage_lease {
	struct stage_cuda cuda;
	int fd;			/* -1: none */
	uint64_t size;		/* the pool's bytes */
	uint64_t used;		/* handed out so far (the next piece starts here) */
};

/* Make a pool of gib GiB (0: none) and fill it in the background; with
 * pin (the phos-gpu helper) first try host memory the driver pins. */
void stage_start(unsigned gib, const char *pin);
/* 1: l has the pool; 0: not now, why says so (off, not filled yet, in use
 * by another checkpoint). */
int stage_take(struct stage_lease *l, char *why, size_t whysz);
/* The offset of a piece of span bytes in l's pool, or -1 (why says so:
 * not enough left). */
int64_t stage_piece(struct stage_lease *l, uint64_t span, char *why, size_t whysz);
void stage_give(struct stage_lease *l);
/* l's pool now holds the buffers of generation path: "TAG OFFSET" lines. */
void stage_keep(struct stage_lease *l, const char *path, const char *pieces);
/* For a restore of path: an fd of the pool (a description of its own,
 * with a shared lock), pieces ("TAG OFFSET" lines) and, for a driver-
 * pinned pool, its fds in cuda (phosd's: not to be closed), once; -1 with
 * why when the pool does not hold path. */
int stage_lend(const char *path, char *pieces, size_t n, struct stage_cuda *cuda, char *why,
	       size_t whysz);
/* One line for phosctl status (held: with what it holds). */
void stage_describe(char *buf, size_t n, bool held);
/* Bytes n buffers of these sizes take in a pool, laid out one after the
 * other (phos-gpu save and load place them the same way). */
static inline uint64_t stage_span(const struct phos_gpubuf *b, int n)
{
	uint64_t s = 0;

	for (int i = 0; i < n; i++)
		s += stage_align(b[i].size);
	return s;
}

#endif
