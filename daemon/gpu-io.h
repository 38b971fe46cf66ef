/*
 * gpu-io.h - phos-gpu's parallel copy engine between GPU buffers and
 * files (doc/storage-engine.md).
 *
 * gio_run() moves every buffer of a set in chunks with `threads` workers,
 * each with its own pinned staging buffer: a save copies a chunk device to
 * host and pwrite()s it at its offset, a load pread()s it and copies it
 * host to device.  So the device copies of one worker overlap the file
 * I/O of the others.  Buffers are started in the order pick() gives (a
 * buffer the owner waits for first: wanted()), chunks of one buffer in
 * address order; done() runs once a buffer is complete, on the worker that
 * finished it.  The first failure stops every worker and is reported.
 *
 * The staging pool (doc/concurrent-checkpoint.md) splits a save in two
 * runs: GIO_STAGE copies each buffer device to host into b[i].host, a
 * chunk ("piece") at a time, each piece pinned for its copy (and, with
 * keep_pinned, left pinned: gio_unpin() lets go of them later); then
 * GIO_SAVE with from_host writes b[i].host out, with no device and no
 * context.  A load from a pool the driver pinned (direct) copies each
 * chunk from b[i].host straight to the device.
 */
#ifndef PHOS_GPU_IO_H
#define PHOS_GPU_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <cuda.h>

enum gio_dir { GIO_SAVE, GIO_LOAD, GIO_STAGE };

struct gio_buf {
	CUcontext ctx;		/* made current before its copies */
	CUdeviceptr dptr;
	uint64_t size;
	int fd;			/* the file: written (save) or read (load) at 0..;
				 * < 0: through put() / get() */
	uint64_t h[2];		/* save with hash: common/savetab.h's sums of
				 * what was written */
	uint8_t *host;		/* GIO_STAGE, from_host, direct: the buffer's
				 * bytes in host memory */
	/* the engine's */
	uint64_t next;		/* next offset to hand out */
	uint64_t left;		/* bytes not copied yet */
	bool started;
};

struct gio_ops {
	CUresult (*set_current)(CUcontext);
	CUresult (*host_alloc)(void **, size_t);
	CUresult (*host_free)(void *);
	CUresult (*dtoh)(void *, CUdeviceptr, size_t);
	CUresult (*htod)(void *, const void *, size_t);	/* cuMemcpyHtoD_v2, dst first */
	CUresult (*host_register)(void *, size_t);	/* GIO_STAGE: pin a piece */
	CUresult (*host_unregister)(void *);
	const char *(*err)(CUresult);
	/* optional (all or none): each worker copies on a stream of its own
	 * in each context, waiting for each copy, so that the workers' copies
	 * run side by side instead of one after another on the context's
	 * default stream (PHOS_GPU_SYNC_COPY=1: the default stream, for A/B) */
	CUresult (*stream_create)(CUstream *);
	CUresult (*stream_destroy)(CUstream);
	CUresult (*stream_sync)(CUstream);
	CUresult (*dtoh_async)(void *, CUdeviceptr, size_t, CUstream);
	CUresult (*htod_async)(void *, const void *, size_t, CUstream);	/* dst first */
};

struct gio {
	enum gio_dir dir;
	struct gio_buf *b;
	unsigned n;
	unsigned threads;	/* 0: gio_threads() */
	int nice;		/* the workers' nice value (0: left as is): a
				 * concurrent load's, gio_load_nice() */
	size_t chunk;		/* bytes, a multiple of 4096; 0: gio_chunk() */
	bool hash;		/* sum what is written (save) or read (load)
				 * into b[i].h */
	uint64_t hash_key;	/* the sums' key (common/savetab.h; 0: none) */
	bool from_host;		/* GIO_SAVE: the bytes are at b[i].host */
	bool direct;		/* GIO_LOAD: the bytes are at b[i].host, in host
				 * memory the devices may read (a pool the driver
				 * pinned): each chunk is copied from there to the
				 * device, after ready(), through no staging
				 * buffer and not hashed here (done() checks what
				 * the device holds) */
	bool keep_pinned;	/* GIO_STAGE: do not unpin each piece after its
				 * copy (gio_unpin) */
	bool prepinned;		/* GIO_STAGE: the host memory is pinned already
				 * (a pool the driver pinned): nothing is
				 * registered, nothing to unpin, no pinners */
	bool bounce;		/* GIO_STAGE: each chunk through one of its
				 * worker's two pinned buffers (host_alloc), then
				 * memcpy()ed into b[i].host while the next chunk's
				 * device copy runs: nothing of b[i].host is
				 * pinned */
	unsigned pinners;	/* GIO_STAGE with keep_pinned: threads that pin
				 * the pieces ahead of the workers' copies (0:
				 * each worker pins its piece); out: how many ran.
				 * After a failed run some pieces may be pinned. */
	const struct gio_ops *ops;
	/* optional: the next buffer to start (-1: none left; NULL: in order),
	 * whether buffer i is wanted now (started before the others), and
	 * buffer i is complete (called once, without the engine's lock) */
	int (*pick)(void *arg);
	bool (*wanted)(void *arg, unsigned i);
	void (*start)(void *arg, unsigned i);
	int (*done)(void *arg, unsigned i);	/* != 0: stop, failed */
	/* optional, for buffers with fd < 0: store (save) or fetch (load) the
	 * chunk at off of buffer i instead of writing or reading the file;
	 * -1 with a message in err (errsz bytes) */
	int (*put)(void *arg, unsigned i, uint64_t off, const void *data, size_t len, char *err,
		   size_t errsz);
	int (*get)(void *arg, unsigned i, uint64_t off, void *data, size_t len, char *err,
		   size_t errsz);
	/* optional, GIO_STAGE and direct GIO_LOAD: wait until the host bytes
	 * [p, p + len) may be copied into or from (a pool whose access is
	 * granted behind the copies, cpool-grant.h); -1 with a message in err */
	int (*ready)(void *arg, void *p, size_t len, char *err, size_t errsz);
	void *arg;
	char err[256];		/* why gio_run() failed */
	/* out: ms after gio_run() began at which 1/8, 2/8 ... of the bytes
	 * had been moved (where the rate changed, for the logs) */
	uint64_t eighths[8];
	uint64_t pinned_ms;	/* out: when the pinners were done */
};

/* Workers and chunk size: PHOS_GPU_IO_THREADS (default half the CPUs, 4
 * to 16; at most 64) and PHOS_GPU_IO_CHUNK_MB (default 8, 1..1024). */
unsigned gio_threads(void);
size_t gio_chunk(void);
/* A concurrent load's workers run beside CRIU, the driver's restore and
 * the restored process, all on the way to its first step: as many as the
 * CPUs (4 to 16, or PHOS_GPU_IO_THREADS), at a nice value that leaves the
 * CPUs to those first (PHOS_GPU_LOAD_NICE, 0..19, default 10;
 * doc/benchmarks.md, session 18). */
unsigned gio_load_threads(void);
int gio_load_nice(void);
/* GIO_STAGE's piece: PHOS_GPU_STAGE_PIECE_MB (default 64, 2..1024; each is
 * pinned for its copy, and pinning costs less per byte in larger pieces,
 * doc/benchmarks.md) */
size_t gio_piece(void);
/* GIO_STAGE's pinners: PHOS_GPU_STAGE_PINNERS (0..8, default 0: each
 * worker pins its own piece just before its copy; pinning ahead held the
 * copies back on an H200, doc/benchmarks.md session 10) */
unsigned gio_pinners(void);
/* GIO_STAGE through pinned buffers: PHOS_GPU_STAGE_BOUNCE=1 (an A/B of
 * session 10: pinning the pool piece by piece is what costs the rate) */
bool gio_bounce(void);
/* "" when the workers copy on streams of their own with these ops, else
 * " on the default stream" (for the logs of an A/B run) */
const char *gio_stream_note(const struct gio_ops *ops);

/* common/savetab.h's phos_hash_add (the same sums), vectorized where the
 * CPU can: what the workers fold each chunk with */
void gio_hash_words(uint64_t h[2], const uint32_t *w, uint64_t first, size_t n, uint64_t key);

/* 0, or -1 with g->err. */
int gio_run(struct gio *g);
/* After a GIO_STAGE run with keep_pinned: unpin every piece (errors are
 * not fatal: the memory stays pinned until the context goes). */
void gio_unpin(struct gio *g);

#endif
