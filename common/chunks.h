/*
 * chunks.h - the content-addressed chunk store of a task's GPU memory
 * (doc/image-format.md, "Chunks"; doc/storage-engine.md).
 *
 * `<task>/chunks/<sha256>` holds bytes whose SHA-256 is the name: the
 * generations of a task share them, so a periodic checkpoint writes only
 * the chunks that changed.  A generation refers to its chunks through
 * index files (`*.idx`, listed and hashed in its manifest like every
 * other file):
 *
 *     phos-chunks 1 SIZE CHUNK
 *     <sha256 of bytes 0..CHUNK-1>
 *     <sha256 of bytes CHUNK..2*CHUNK-1>
 *     ...                              (the last one may be shorter)
 *
 * A chunk is written to a hidden temporary name, synced and renamed into
 * place, so a name is only ever seen with all of its bytes; a reader
 * checks the bytes against the name all the same.  Chunks not named by
 * any generation are removed by phos_chunks_sweep() under the store's
 * lock (image.c takes it).
 */
#ifndef PHOS_CHUNKS_H
#define PHOS_CHUNKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PHOS_CHUNKS_DIR		"chunks"
#define PHOS_CHUNKS_LOCK	".lock"
#define PHOS_CHUNK_TMP_PREFIX	".tmp-"
#define PHOS_CHUNK_HEX		64	/* characters of a chunk's name */
#define PHOS_IDX_SUFFIX		".idx"
#define PHOS_CHUNK_ZST		".zst"	/* a compressed chunk: <sha256>.zst */

struct phos_chunk_stats {
	uint64_t written, written_bytes;	/* new chunks, their bytes */
	uint64_t stored_bytes;			/* ... as stored (compressed) */
	uint64_t reused, reused_bytes;		/* already stored */
};

/* Store len bytes at data under their SHA-256 in the directory dir_fd
 * unless a chunk of that name is there already (*written says which); sha
 * gets the digest.  direct: try O_DIRECT (data and len 4096-aligned).  0,
 * or -1 with errno and a message in err. */
int phos_chunk_put(int dir_fd, const void *data, size_t len, bool direct, unsigned char sha[32],
		   bool *written, char *err, size_t errsz);

/* The same, and zstd > 0: compress at that level (1-19) and store
 * `<sha256>.zst` when that is smaller; *stored gets the bytes written to
 * the file (0: the chunk was there). */
int phos_chunk_put_z(int dir_fd, const void *data, size_t len, bool direct, int zstd,
		     unsigned char sha[32], size_t *stored, char *err, size_t errsz);

/* Read the chunk named sha (exactly len bytes, stored plain or
 * compressed) into buf and check its bytes against the name: -1 with errno
 * ENOENT (missing), EMSGSIZE (wrong size), EPERM (not root's or writable
 * by others), EILSEQ (bytes differ from the name, or do not decompress:
 * corrupt), or an I/O error; err says which chunk. */
int phos_chunk_get(int dir_fd, const unsigned char sha[32], void *buf, size_t len, bool direct,
		   char *err, size_t errsz);

/* phos_chunk_get without the SHA-256 of the bytes read (a size or
 * decompression error is still EMSGSIZE or EILSEQ): only for a reader that
 * checks the bytes another way before anything uses them (phos-gpu, each
 * buffer checked on its GPU by the map's keyed sums). */
int phos_chunk_get_unchecked(int dir_fd, const unsigned char sha[32], void *buf, size_t len,
			     bool direct, char *err, size_t errsz);

/* The chunk named sha exists in dir_fd as a safe regular file of len
 * bytes, or compressed (no content check). */
int phos_chunk_check(int dir_fd, const unsigned char sha[32], size_t len, char *err,
		     size_t errsz);

/* An index: the chunks of size bytes in pieces of chunk bytes. */
struct phos_idx {
	uint64_t size, chunk;
	uint64_t n;
	unsigned char (*sha)[32];
};

/* name is an index file's ("*.idx", top level of a generation). */
bool phos_idx_name(const char *name);
uint64_t phos_idx_count(uint64_t size, uint64_t chunk);
/* length of piece i */
size_t phos_idx_len(const struct phos_idx *x, uint64_t i);
/* Parse an index file's text; 0, or -1 with errno EBADMSG and err. */
int phos_idx_parse(struct phos_idx *x, const char *text, size_t len, char *err, size_t errsz);
/* Read and parse the index file name in dir_fd (at most 16 MiB). */
int phos_idx_read(struct phos_idx *x, int dir_fd, const char *name, char *err, size_t errsz);
/* Write x as file name (new, 0600) in dir_fd, synced. */
int phos_idx_write(const struct phos_idx *x, int dir_fd, const char *name, char *err,
		   size_t errsz);
void phos_idx_free(struct phos_idx *x);

void phos_chunk_hex(const unsigned char sha[32], char out[PHOS_CHUNK_HEX + 1]);
int phos_chunk_unhex(const char *s, unsigned char sha[32]);

/* Order of chunk digests (qsort, bsearch): memcmp of the 32 bytes. */
int phos_chunk_cmp(const void *a, const void *b);

/*
 * Remove from dir_fd every chunk not in keep (sorted by phos_chunk_cmp, n of them)
 * and every temporary left by a dead writer.  The caller holds the
 * store's lock exclusively.  Returns the number of files removed, or -1.
 */
int phos_chunks_sweep(int dir_fd, const unsigned char (*keep)[32], size_t n, uint64_t *bytes,
		      char *err, size_t errsz);

#endif
