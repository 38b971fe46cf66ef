/*
 * cpool-grant.h - access to a staging pool the driver pinned, granted
 * piece by piece behind the copies that need it.
 *
 * phos-gpu maps the pool's pieces (phos-gpu --stage-cuda) at every staged
 * checkpoint and every restore from the pool.  Importing and mapping cost
 * next to nothing; granting access is what costs, about 10 ms a GiB for a
 * GPU and 25 for the CPU on an H200 (bench/hostpool_probe.c, "mapcost";
 * doc/benchmarks.md, session 12), and the driver does it one call at a
 * time.  Granted all before the first copy, 64 GiB would wait 2 s; here a
 * thread of its own grants the pieces in the order the copies will want
 * them, the copies wait only for the pieces they touch, and a copy that
 * finds its piece not granted yet has it granted next.
 */
#ifndef PHOS_CPOOL_GRANT_H
#define PHOS_CPOOL_GRANT_H

#include <stddef.h>
#include <stdint.h>
#include <cuda.h>

struct cpool_grant_ops {
	CUresult (*set_current)(CUcontext);
	CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
	const char *(*err)(CUresult);
};

struct cpool_grant;

/*
 * Grant acc[0..na) on each of the n pieces of `piece` bytes mapped from
 * base, the norder pieces of order[] first (each once, those >= n
 * ignored), then the others in pool order.  The first of them is granted
 * before this returns: NULL with why if
 * that fails (nothing of the pool may be used), else the thread runs with
 * ctx current.  At most 64 access descriptors.
 */
struct cpool_grant *cpool_grant_start(const struct cpool_grant_ops *ops, CUcontext ctx,
				      CUdeviceptr base, uint64_t piece, unsigned n,
				      const CUmemAccessDesc *acc, size_t na, const unsigned *order,
				      unsigned norder, char *why, size_t whysz);
/* Wait until every piece that [p, p + len) touches is granted: 0, or -1
 * with the driver's refusal in err. */
int cpool_grant_wait(struct cpool_grant *g, uintptr_t p, size_t len, char *err, size_t errsz);
/* Stop the thread (pieces not granted yet stay so) and free g: 0 when
 * every piece was granted, else -1 with why.  NULL g: 0. */
int cpool_grant_end(struct cpool_grant *g, char *why, size_t whysz);

#endif
