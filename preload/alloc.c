/*
 * alloc.c - the allocation family of hooks and the process's allocation
 * map (amap.c under a rwlock).
 *
 * Entries: cuMemAlloc_v2 (DEVICE), cuMemAllocPitch_v2 (PITCH, pitch *
 * height bytes), cuMemAllocAsync / FromPoolAsync (ASYNC), cuMemMap
 * mappings (VMM: the mapped VA range, whatever handle backs it),
 * cuMemHostAlloc / cuMemAllocHost_v2 (HOST: pinned memory kernels can
 * write through UVA).  cuMemCreate/cuMemRelease are counted as
 * allocations and frees (their size kept by handle) but only mappings
 * have addresses.
 *
 * Stream-ordered frees: cuMemFreeAsync removes the entry when it is
 * enqueued, not when the stream reaches it.  That is exact for write
 * sets, which are computed when a launch is enqueued: work enqueued
 * before the free already had its write set, and nothing enqueued after
 * it may legally touch the memory.
 *
 * The large-allocations-as-exportable-VMM path of DESIGN.md §4 is not
 * here yet; these hooks only observe.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "phos_int.h"
#include "../common/util.h"

static struct phos_amap map = PHOS_AMAP_INIT;
static struct phos_amap handles = PHOS_AMAP_INIT;	/* [h, h+1), aux = size */
static pthread_rwlock_t map_lock = PTHREAD_RWLOCK_INITIALIZER;

void phos_map_add(uint64_t base, uint64_t size, int kind)
{
	int ev;

	pthread_rwlock_wrlock(&map_lock);
	ev = phos_amap_insert(&map, base, size, kind);
	__atomic_store_n(&phos_st.map_entries, map.n, __ATOMIC_RELAXED);
	pthread_rwlock_unlock(&map_lock);
	if (ev < 0)
		phos_dbg("cannot track [%#llx, +%llu): %s", (unsigned long long)base,
			 (unsigned long long)size, strerror(errno));
	else if (ev > 0)
		phos_dbg("[%#llx, +%llu) replaced %d stale entries", (unsigned long long)base,
			 (unsigned long long)size, ev);
}

int phos_map_take(uint64_t base, struct phos_alloc *out)
{
	int r;

	pthread_rwlock_wrlock(&map_lock);
	r = phos_amap_remove(&map, base, out);
	__atomic_store_n(&phos_st.map_entries, map.n, __ATOMIC_RELAXED);
	pthread_rwlock_unlock(&map_lock);
	return r;
}

void phos_map_restore(const struct phos_alloc *a)
{
	pthread_rwlock_wrlock(&map_lock);
	if (phos_amap_insert(&map, a->base, a->size, a->kind) >= 0)
		phos_amap_find(&map, a->base)->writes = a->writes;
	__atomic_store_n(&phos_st.map_entries, map.n, __ATOMIC_RELAXED);
	pthread_rwlock_unlock(&map_lock);
}

void phos_map_del_range(uint64_t base, uint64_t size)
{
	pthread_rwlock_wrlock(&map_lock);
	phos_amap_remove_range(&map, base, size);
	__atomic_store_n(&phos_st.map_entries, map.n, __ATOMIC_RELAXED);
	pthread_rwlock_unlock(&map_lock);
}

PHOS_EXPORT int phos_alloc_query(uint64_t addr, uint64_t *base, uint64_t *size, int *kind,
				 uint64_t *writes)
{
	struct phos_alloc *a;
	int r = -1;

	pthread_rwlock_rdlock(&map_lock);
	a = phos_amap_find(&map, addr);
	if (a) {
		if (base)
			*base = a->base;
		if (size)
			*size = a->size;
		if (kind)
			*kind = a->kind;
		if (writes)
			*writes = __atomic_load_n(&a->writes, __ATOMIC_RELAXED);
		r = 0;
	}
	pthread_rwlock_unlock(&map_lock);
	if (r < 0)
		errno = ENOENT;
	return r;
}

void phos_write_range(uint64_t base, uint64_t size)
{
	struct phos_wset ws;

	if (size == 0 || !phos_wset_wanted())
		return;
	ws.unknown = false;
	ws.n = 0;
	if (phos_cow_active())
		phos_cow_range(base, size);
	pthread_rwlock_rdlock(&map_lock);
	phos_wset_range(&map, &ws, base, size);
	pthread_rwlock_unlock(&map_lock);
	PHOS_COUNT(wset_marks, ws.n);
}

void phos_write_launch(CUfunction f, bool per_thread, CUstream s, void **kernel_params,
		       void **extra, bool graph)
{
	const struct phos_param *p = NULL;
	struct phos_wset ws;	/* no initialiser: base[] is 512 bytes */
	unsigned np = 0;

	ws.unknown = false;
	ws.n = 0;
	PHOS_COUNT(launches, 1);
	if (phos_stream_capturing(s, per_thread)) {
		/* recorded into a graph, runs nothing now */
		PHOS_COUNT(launches_captured, 1);
		return;
	}
	if (graph)
		PHOS_COUNT(graph_launches, 1);
	if (!phos_wset_wanted())
		return;		/* nothing consumes a write set now */
	if (graph) {
		/* a graph libphos did not walk (graph.c) */
		PHOS_COUNT(launches_unknown, 1);
		if (phos_cow_active())
			phos_cow_all("a graph libphos could not walk");
		return;
	}
	p = phos_params_get(f, &np);
	if (!p) {
		PHOS_COUNT(launches_unknown, 1);
		if (phos_cow_active())
			phos_cow_all("a kernel without a parameter layout");
		return;
	}
	if (np == 0)
		return;		/* nothing to scan: no map lock */
	pthread_rwlock_rdlock(&map_lock);
	phos_wset_scan(&map, &ws, p, np, kernel_params, extra);
	pthread_rwlock_unlock(&map_lock);
	if (ws.unknown)
		PHOS_COUNT(launches_unknown, 1);
	if (ws.n)
		PHOS_COUNT(wset_marks, ws.n);
	if (phos_cow_active()) {
		if (ws.unknown) {
			phos_cow_all("a kernel whose parameters hide a pointer");
		} else if (ws.n) {
			/* PHOS_DEBUG, after a reattach: what a slow launch waited for */
			uint64_t t0 = __atomic_load_n(&phos_watch_left, __ATOMIC_RELAXED) > 0 ?
				      phos_now_ns() : 0;

			phos_cow_set(ws.base, ws.n);
			if (t0)
				phos_watch_launch(f, &ws, (phos_now_ns() - t0) / 1000);
		}
	}
}

/* ---- the hooks --------------------------------------------------------- */

/* kind: PHOS_ALLOC_* (phos.h); VMM = cuMemCreate */
static void count_alloc(uint64_t size, int kind)
{
	PHOS_COUNT(allocs, 1);
	PHOS_COUNT(bytes_allocated, size);
	switch (kind) {
	case PHOS_ALLOC_DEVICE:
	case PHOS_ALLOC_PITCH: PHOS_COUNT(allocs_device, 1); break;
	case PHOS_ALLOC_HOST: PHOS_COUNT(allocs_host, 1); break;
	case PHOS_ALLOC_ASYNC: PHOS_COUNT(allocs_async, 1); break;
	case PHOS_ALLOC_VMM: PHOS_COUNT(allocs_create, 1); break;
	default: break;
	}
}

static void count_free(uint64_t size)
{
	PHOS_COUNT(frees, 1);
	PHOS_COUNT(bytes_freed, size);
}

/*
 * Frees take the entry out of the map *before* the driver frees: once it
 * has, another thread may be given the same address, and removing after
 * would remove that thread's new entry.  A free that fails puts it back.
 */
static void p_taken(uint64_t p, struct phos_alloc *a)
{
	if (!p || phos_map_take(p, a) < 0)
		a->size = 0;
}

static CUresult free_common(uint64_t p, CUresult r, const struct phos_alloc *a)
{
	if (r == CUDA_SUCCESS && p)
		count_free(a->size);
	else if (a->size)
		phos_map_restore(a);
	return r;
}


typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);
static CUresult impl_alloc(alloc_fn real, int pt, CUdeviceptr *dptr, size_t size)
{
	CUresult r;

	PHOS_PROLOGUE();
	if (phos_env.vmm && dptr && size >= phos_env.vmm_min) {
		r = phos_vmm_alloc(dptr, size);
		if (r == CUDA_SUCCESS) {
			PHOS_COUNT(vmm_allocs, 1);
			count_alloc(size, PHOS_ALLOC_DEVICE);
			phos_map_add(*dptr, size, PHOS_ALLOC_DEVICE);
			return r;
		}
		PHOS_COUNT(vmm_fallbacks, 1);
		phos_dbg("cuMemAlloc(%zu) as VMM failed (CUDA error %d): the driver's instead", size,
			 (int)r);
	}
	r = real(dptr, size);
	if (r == CUDA_SUCCESS && dptr && size) {
		count_alloc(size, PHOS_ALLOC_DEVICE);
		phos_map_add(*dptr, size, PHOS_ALLOC_DEVICE);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuMemAlloc_v2, impl_alloc, 0, (CUdeviceptr *dptr, size_t size), (dptr, size));

typedef CUresult (*pitch_fn)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
static CUresult impl_pitch(pitch_fn real, int pt, CUdeviceptr *dptr, size_t *pitch, size_t w,
			   size_t h, unsigned int elsz)
{
	CUresult r;

	PHOS_PROLOGUE();
	r = real(dptr, pitch, w, h, elsz);
	if (r == CUDA_SUCCESS && dptr && pitch && *pitch && h) {
		count_alloc((uint64_t)*pitch * h, PHOS_ALLOC_PITCH);
		phos_map_add(*dptr, (uint64_t)*pitch * h, PHOS_ALLOC_PITCH);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuMemAllocPitch_v2, impl_pitch, 0,
		 (CUdeviceptr *dptr, size_t *pitch, size_t w, size_t h, unsigned int elsz),
		 (dptr, pitch, w, h, elsz));

typedef CUresult (*free_fn)(CUdeviceptr);
static CUresult impl_free(free_fn real, int pt, CUdeviceptr p)
{
	struct phos_alloc a;

	CUresult r;

	PHOS_PROLOGUE();
	p_taken(p, &a);
	if (phos_vmm_free(p, &r))
		return free_common(p, r, &a);
	return free_common(p, real(p), &a);
}
PHOS_DEFINE_HOOK(cuMemFree_v2, impl_free, 0, (CUdeviceptr p), (p));

typedef CUresult (*allochost_fn)(void **, size_t);
static CUresult impl_allochost(allochost_fn real, int pt, void **pp, size_t size)
{
	CUresult r;

	PHOS_PROLOGUE();
	r = real(pp, size);
	if (r == CUDA_SUCCESS && pp && size) {
		count_alloc(size, PHOS_ALLOC_HOST);
		phos_map_add((uint64_t)(uintptr_t)*pp, size, PHOS_ALLOC_HOST);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuMemAllocHost_v2, impl_allochost, 0, (void **pp, size_t size), (pp, size));

typedef CUresult (*hostalloc_fn)(void **, size_t, unsigned int);
static CUresult impl_hostalloc(hostalloc_fn real, int pt, void **pp, size_t size, unsigned int fl)
{
	CUresult r;

	PHOS_PROLOGUE();
	r = real(pp, size, fl);
	if (r == CUDA_SUCCESS && pp && size) {
		count_alloc(size, PHOS_ALLOC_HOST);
		phos_map_add((uint64_t)(uintptr_t)*pp, size, PHOS_ALLOC_HOST);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuMemHostAlloc, impl_hostalloc, 0, (void **pp, size_t size, unsigned int fl),
		 (pp, size, fl));

typedef CUresult (*freehost_fn)(void *);
static CUresult impl_freehost(freehost_fn real, int pt, void *p)
{
	struct phos_alloc a;

	PHOS_PROLOGUE();
	p_taken((uint64_t)(uintptr_t)p, &a);
	return free_common((uint64_t)(uintptr_t)p, real(p), &a);
}
PHOS_DEFINE_HOOK(cuMemFreeHost, impl_freehost, 0, (void *p), (p));

typedef CUresult (*allocasync_fn)(CUdeviceptr *, size_t, CUstream);
static CUresult impl_allocasync(allocasync_fn real, int pt, CUdeviceptr *dptr, size_t size,
				CUstream s)
{
	CUresult r;

	PHOS_PROLOGUE();
	r = real(dptr, size, s);
	if (r == CUDA_SUCCESS && dptr && size) {
		count_alloc(size, PHOS_ALLOC_ASYNC);
		phos_map_add(*dptr, size, PHOS_ALLOC_ASYNC);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuMemAllocAsync, impl_allocasync, 0,
		 (CUdeviceptr *dptr, size_t size, CUstream s), (dptr, size, s));
PHOS_DEFINE_HOOK(cuMemAllocAsync_ptsz, impl_allocasync, 1,
		 (CUdeviceptr *dptr, size_t size, CUstream s), (dptr, size, s));

typedef CUresult (*allocpool_fn)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
static CUresult impl_allocpool(allocpool_fn real, int pt, CUdeviceptr *dptr, size_t size,
			       CUmemoryPool pool, CUstream s)
{
	CUresult r;

	PHOS_PROLOGUE();
	r = real(dptr, size, pool, s);
	if (r == CUDA_SUCCESS && dptr && size) {
		count_alloc(size, PHOS_ALLOC_ASYNC);
		phos_map_add(*dptr, size, PHOS_ALLOC_ASYNC);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuMemAllocFromPoolAsync, impl_allocpool, 0,
		 (CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream s),
		 (dptr, size, pool, s));
PHOS_DEFINE_HOOK(cuMemAllocFromPoolAsync_ptsz, impl_allocpool, 1,
		 (CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream s),
		 (dptr, size, pool, s));

typedef CUresult (*freeasync_fn)(CUdeviceptr, CUstream);
static CUresult impl_freeasync(freeasync_fn real, int pt, CUdeviceptr p, CUstream s)
{
	struct phos_alloc a;

	PHOS_PROLOGUE();
	/* at enqueue time: see above */
	p_taken(p, &a);
	return free_common(p, real(p, s), &a);
}
PHOS_DEFINE_HOOK(cuMemFreeAsync, impl_freeasync, 0, (CUdeviceptr p, CUstream s), (p, s));
PHOS_DEFINE_HOOK(cuMemFreeAsync_ptsz, impl_freeasync, 1, (CUdeviceptr p, CUstream s), (p, s));

/* ---- VMM ------------------------------------------------------------- */

typedef CUresult (*create_fn)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
			      unsigned long long);
static CUresult impl_create(create_fn real, int pt, CUmemGenericAllocationHandle *h, size_t size,
			    const CUmemAllocationProp *prop, unsigned long long fl)
{
	CUresult r;

	CUmemAllocationProp tmp;
	const CUmemAllocationProp *xp;

	PHOS_PROLOGUE();
	/* exportable, so that it can be handed to phosd; as asked if the
	 * driver refuses that */
	xp = phos_env.vmm ? phos_vmm_exportable(prop, &tmp) : NULL;
	r = xp ? real(h, size, xp, fl) : CUDA_ERROR_NOT_SUPPORTED;
	if (xp && r == CUDA_SUCCESS)
		PHOS_COUNT(vmm_exportable, 1);
	else
		r = real(h, size, prop, fl);
	if (r == CUDA_SUCCESS && h && size) {
		count_alloc(size, PHOS_ALLOC_VMM);
		pthread_rwlock_wrlock(&map_lock);
		if (phos_amap_insert(&handles, *h, 1, PHOS_ALLOC_VMM) >= 0)
			phos_amap_find(&handles, *h)->aux = size;
		pthread_rwlock_unlock(&map_lock);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuMemCreate, impl_create, 0,
		 (CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop,
		  unsigned long long fl),
		 (h, size, prop, fl));

typedef CUresult (*release_fn)(CUmemGenericAllocationHandle);
static CUresult impl_release(release_fn real, int pt, CUmemGenericAllocationHandle h)
{
	struct phos_alloc a = { 0 };
	CUresult r;

	int had;

	PHOS_PROLOGUE();
	/* out before the driver may hand the same handle value out again */
	pthread_rwlock_wrlock(&map_lock);
	had = phos_amap_remove(&handles, h, &a) == 0;
	pthread_rwlock_unlock(&map_lock);
	r = real(h);
	if (r == CUDA_SUCCESS) {
		count_free(a.aux);
	} else if (had) {
		pthread_rwlock_wrlock(&map_lock);
		if (phos_amap_insert(&handles, a.base, 1, a.kind) >= 0)
			phos_amap_find(&handles, a.base)->aux = a.aux;
		pthread_rwlock_unlock(&map_lock);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuMemRelease, impl_release, 0, (CUmemGenericAllocationHandle h), (h));

typedef CUresult (*map_fn)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
			   unsigned long long);
static CUresult impl_map(map_fn real, int pt, CUdeviceptr p, size_t size, size_t off,
			 CUmemGenericAllocationHandle h, unsigned long long fl)
{
	CUresult r;

	PHOS_PROLOGUE();
	r = real(p, size, off, h, fl);
	if (r == CUDA_SUCCESS && size) {
		PHOS_COUNT(maps, 1);
		phos_map_add(p, size, PHOS_ALLOC_VMM);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuMemMap, impl_map, 0,
		 (CUdeviceptr p, size_t size, size_t off, CUmemGenericAllocationHandle h,
		  unsigned long long fl),
		 (p, size, off, h, fl));

typedef CUresult (*unmap_fn)(CUdeviceptr, size_t);
static CUresult impl_unmap(unmap_fn real, int pt, CUdeviceptr p, size_t size)
{
	CUresult r;

	PHOS_PROLOGUE();
	r = real(p, size);
	if (r == CUDA_SUCCESS && size) {
		PHOS_COUNT(unmaps, 1);
		phos_map_del_range(p, size);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuMemUnmap, impl_unmap, 0, (CUdeviceptr p, size_t size), (p, size));

/* Reservations are only passed through for now: the VMM path of
 * DESIGN.md §4 will own the VAs it reserves. */
typedef CUresult (*reserve_fn)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
static CUresult impl_reserve(reserve_fn real, int pt, CUdeviceptr *p, size_t size, size_t align,
			     CUdeviceptr addr, unsigned long long fl)
{
	PHOS_PROLOGUE();
	return real(p, size, align, addr, fl);
}
PHOS_DEFINE_HOOK(cuMemAddressReserve, impl_reserve, 0,
		 (CUdeviceptr *p, size_t size, size_t align, CUdeviceptr addr,
		  unsigned long long fl),
		 (p, size, align, addr, fl));

typedef CUresult (*addrfree_fn)(CUdeviceptr, size_t);
static CUresult impl_addrfree(addrfree_fn real, int pt, CUdeviceptr p, size_t size)
{
	PHOS_PROLOGUE();
	return real(p, size);
}
PHOS_DEFINE_HOOK(cuMemAddressFree, impl_addrfree, 0, (CUdeviceptr p, size_t size), (p, size));

/* ---- what the app sees of our buffers; reads that must wait at the gate */

typedef CUresult (*range_fn)(CUdeviceptr *, size_t *, CUdeviceptr);
static CUresult impl_range(range_fn real, int pt, CUdeviceptr *base, size_t *size, CUdeviceptr p)
{
	CUdeviceptr b;
	size_t n;

	PHOS_PROLOGUE();
	if (phos_vmm_range(p, &b, &n)) {
		if (base)
			*base = b;
		if (size)
			*size = n;
		return CUDA_SUCCESS;
	}
	return real(base, size, p);
}
PHOS_DEFINE_HOOK(cuMemGetAddressRange_v2, impl_range, 0,
		 (CUdeviceptr *base, size_t *size, CUdeviceptr p), (base, size, p));

typedef CUresult (*ptrattr_fn)(void *, CUpointer_attribute, CUdeviceptr);
static CUresult impl_ptrattr(ptrattr_fn real, int pt, void *data, CUpointer_attribute attr,
			     CUdeviceptr p)
{
	CUdeviceptr b;
	size_t n;
	CUresult r;

	PHOS_PROLOGUE();
	r = real(data, attr, p);
	if (r == CUDA_SUCCESS && data && phos_vmm_range(p, &b, &n)) {
		if (attr == CU_POINTER_ATTRIBUTE_RANGE_START_ADDR)
			*(CUdeviceptr *)data = b;
		else if (attr == CU_POINTER_ATTRIBUTE_RANGE_SIZE)
			*(size_t *)data = n;
	}
	return r;
}
PHOS_DEFINE_HOOK(cuPointerGetAttribute, impl_ptrattr, 0,
		 (void *data, CUpointer_attribute attr, CUdeviceptr p), (data, attr, p));

typedef CUresult (*ptrattrs_fn)(unsigned int, CUpointer_attribute *, void **, CUdeviceptr);
static CUresult impl_ptrattrs(ptrattrs_fn real, int pt, unsigned int n, CUpointer_attribute *attrs,
			      void **data, CUdeviceptr p)
{
	CUdeviceptr b;
	size_t sz;
	CUresult r;

	PHOS_PROLOGUE();
	r = real(n, attrs, data, p);
	if (r == CUDA_SUCCESS && attrs && data && phos_vmm_range(p, &b, &sz)) {
		for (unsigned int i = 0; i < n; i++) {
			if (!data[i])
				continue;
			if (attrs[i] == CU_POINTER_ATTRIBUTE_RANGE_START_ADDR)
				*(CUdeviceptr *)data[i] = b;
			else if (attrs[i] == CU_POINTER_ATTRIBUTE_RANGE_SIZE)
				*(size_t *)data[i] = sz;
		}
	}
	return r;
}
PHOS_DEFINE_HOOK(cuPointerGetAttributes, impl_ptrattrs, 0,
		 (unsigned int n, CUpointer_attribute *attrs, void **data, CUdeviceptr p),
		 (n, attrs, data, p));

typedef CUresult (*dtoh_fn)(void *, CUdeviceptr, size_t);
static CUresult impl_dtoh(dtoh_fn real, int pt, void *d, CUdeviceptr s, size_t n)
{
	PHOS_PROLOGUE();
	if (phos_cow_active())
		phos_cow_read(s, n);	/* a concurrent load: the data must be there */
	return real(d, s, n);
}
PHOS_DEFINE_HOOK(cuMemcpyDtoH_v2, impl_dtoh, 0, (void *d, CUdeviceptr s, size_t n), (d, s, n));
PHOS_DEFINE_HOOK(cuMemcpyDtoH_v2_ptds, impl_dtoh, 1, (void *d, CUdeviceptr s, size_t n),
		 (d, s, n));

typedef CUresult (*dtohasync_fn)(void *, CUdeviceptr, size_t, CUstream);
static CUresult impl_dtohasync(dtohasync_fn real, int pt, void *d, CUdeviceptr s, size_t n,
			       CUstream st)
{
	PHOS_PROLOGUE();
	if (phos_cow_active())
		phos_cow_read(s, n);
	return real(d, s, n, st);
}
PHOS_DEFINE_HOOK(cuMemcpyDtoHAsync_v2, impl_dtohasync, 0,
		 (void *d, CUdeviceptr s, size_t n, CUstream st), (d, s, n, st));
PHOS_DEFINE_HOOK(cuMemcpyDtoHAsync_v2_ptsz, impl_dtohasync, 1,
		 (void *d, CUdeviceptr s, size_t n, CUstream st), (d, s, n, st));
