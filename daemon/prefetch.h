/*
 * prefetch.h - the page cache a restored process will want
 * (doc/concurrent-restore.md, "The restored process's files").
 *
 * A process resumed on a cold page cache faults in the code and data of
 * every library it runs from disk, one page fault at a time: 0.6 s of a
 * PyTorch process's first step on the H200.  At checkpoint time phosd
 * records which pages of which mapped files the tree had in memory
 * (prefetch.list in the generation); phos-restore reads them ahead while
 * CRIU restores, in a process of its own, as the image's owner.
 */
#ifndef PHOSD_PREFETCH_H
#define PHOSD_PREFETCH_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define PHOS_PREFETCH_NAME "prefetch.list"
/* in phosd's state_dir: the files criu maps (its executable, the loader,
 * its libraries), written when phosd starts, read ahead first: criu
 * starts from them while the process's files are read */
#define PHOS_PREFETCH_CRIU "criu.prefetch"

/*
 * Write PHOS_PREFETCH_NAME into dir_fd: for every regular file mapped by
 * the processes in tree[0..n), the byte ranges whose pages were present,
 * one "OFFSET LENGTH PATH" line each (hex, coalesced).  A hint only: 0
 * with the number of ranges and bytes in *ranges and *bytes, -1 + errno
 * when nothing could be written (the checkpoint goes on without it).
 */
int prefetch_record(int dir_fd, const pid_t *tree, size_t n, size_t *ranges, uint64_t *bytes);

/*
 * Read PHOS_PREFETCH_NAME of the generation at dir_fd into the page cache
 * in a detached process (uid/gid: the image's owner; it opens only what
 * they may read, regular files only) and return at once; state_dir's
 * PHOS_PREFETCH_CRIU first, where there is one (NULL: none).  Nothing
 * happens without either file or with PHOS_NO_PREFETCH=1 in the
 * environment.
 */
void prefetch_start(int dir_fd, const char *state_dir, uid_t uid, gid_t gid);

/*
 * The order prefetch_start reads in (for tests): each range of the list
 * first (criu's; NULL: none), then the first 64 KiB of each file of the
 * list in (the process's; NULL: none), each file once, in the order in
 * first names them, then in's ranges.  Calls each() for every read and
 * returns their number; closes both files.
 */
size_t prefetch_order(FILE *first, FILE *in,
		      void (*each)(void *arg, uint64_t off, uint64_t len, const char *path),
		      void *arg);

#endif
