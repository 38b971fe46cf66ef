/*
 * vmm.c - large device allocations are ours (DESIGN.md §4).
 *
 * A cuMemAlloc_v2 of at least phos_env.vmm_min bytes (2 MiB) is served as
 * cuMemCreate memory exportable as a POSIX fd, mapped read-write for the
 * allocating context's device at a VA we reserve.  What the app sees:
 * the same kind of pointer (device memory, granularity-aligned, which is
 * stricter than cuMemAlloc's), cuMemGetAddressRange and the range
 * pointer attributes give the size it asked for (alloc.c's hooks ask
 * phos_vmm_range), and errors are the driver's: any failure on our path
 * falls back to the driver's cuMemAlloc, which then answers.
 *
 * Detach (gate closed, libphos thread): every context is synchronised,
 * every buffer exported, unmapped and released; the reservations stay,
 * so reattach maps the memory phosd hands back at the same addresses.
 * Memory we got back that way is imported: the driver will not export it
 * again (CUDA_ERROR_INVALID_VALUE on an H100), so we keep the fd it came
 * with for the next detach, and the driver checkpoint cannot restore it
 * either: phosd never checkpoints such a process with it attached.
 *
 * Limits: peer access (cuCtxEnablePeerAccess) does not reach these
 * buffers (VMM access is per mapping); legacy CUDA IPC
 * (cuIpcGetMemHandle) refuses them.  PHOS_VMM=0 turns the path off.
 * An app's own cuMemCreate memory is made exportable but stays attached
 * (it rides the driver checkpoint).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "phos_int.h"
#include "../common/proto.h"

struct own {
	CUdeviceptr va;
	size_t size;		/* mapped (rounded up to the granularity) */
	size_t req;		/* what the app asked for */
	CUmemGenericAllocationHandle h;	/* 0 while detached */
	CUdevice dev;
	CUcontext ctx;
	int fd;			/* imported (reattached) memory: the fd it came
				 * with, -1 for memory we created: the driver
				 * does not export an imported handle again */
};

static struct {
	CUresult (*ctx_get_current)(CUcontext *);
	CUresult (*ctx_set_current)(CUcontext);
	CUresult (*ctx_get_device)(CUdevice *);
	CUresult (*ctx_sync)(void);
	CUresult (*granularity)(size_t *, const CUmemAllocationProp *,
				CUmemAllocationGranularity_flags);
	CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
	CUresult (*addr_free)(CUdeviceptr, size_t);
	CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
			   unsigned long long);
	CUresult (*release)(CUmemGenericAllocationHandle);
	CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
			unsigned long long);
	CUresult (*unmap)(CUdeviceptr, size_t);
	CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
	CUresult (*export_fd)(void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType,
			      unsigned long long);
	CUresult (*import_fd)(CUmemGenericAllocationHandle *, void *, CUmemAllocationHandleType);
} drv;
static pthread_once_t drv_once = PTHREAD_ONCE_INIT;
static bool drv_ok;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct own *owns;
static size_t nown, capown;

#define SYM(field, name) (*(void **)&drv.field = phos_cuda_sym(name)) != NULL

static void drv_resolve(void)
{
	drv_ok = SYM(ctx_get_current, "cuCtxGetCurrent") && SYM(ctx_set_current, "cuCtxSetCurrent") &&
		 SYM(ctx_get_device, "cuCtxGetDevice") && SYM(ctx_sync, "cuCtxSynchronize") &&
		 SYM(granularity, "cuMemGetAllocationGranularity") &&
		 SYM(reserve, "cuMemAddressReserve") && SYM(addr_free, "cuMemAddressFree") &&
		 SYM(create, "cuMemCreate") && SYM(release, "cuMemRelease") &&
		 SYM(map, "cuMemMap") && SYM(unmap, "cuMemUnmap") &&
		 SYM(set_access, "cuMemSetAccess") &&
		 SYM(export_fd, "cuMemExportToShareableHandle") &&
		 SYM(import_fd, "cuMemImportFromShareableHandle");
	if (!drv_ok)
		phos_dbg("the driver lacks a VMM entry point: large buffers stay native");
}

static bool ready(void)
{
	pthread_once(&drv_once, drv_resolve);
	return drv_ok;
}

static void dev_prop(CUmemAllocationProp *p, CUdevice dev)
{
	memset(p, 0, sizeof(*p));
	p->type = CU_MEM_ALLOCATION_TYPE_PINNED;
	p->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	p->location.id = dev;
	p->requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
}

/* Map h at va for dev, read-write.  On failure nothing stays mapped. */
static CUresult map_rw(CUdeviceptr va, size_t size, CUmemGenericAllocationHandle h, CUdevice dev)
{
	CUmemAccessDesc acc = {
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev },
		.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
	};
	CUresult r = drv.map(va, size, 0, h, 0);

	if (r != CUDA_SUCCESS)
		return r;
	r = drv.set_access(va, size, &acc, 1);
	if (r != CUDA_SUCCESS)
		drv.unmap(va, size);
	return r;
}

static int own_add(const struct own *o)
{
	if (nown == capown) {
		size_t nc = capown ? capown * 2 : 64;
		struct own *n = realloc(owns, nc * sizeof(*n));

		if (!n)
			return -1;
		owns = n;
		capown = nc;
	}
	owns[nown++] = *o;
	__atomic_store_n(&phos_st.vmm_owned, nown, __ATOMIC_RELAXED);
	return 0;
}

static struct own *own_find(CUdeviceptr p)
{
	for (size_t i = 0; i < nown; i++)
		if (p >= owns[i].va && p < owns[i].va + owns[i].size)
			return &owns[i];
	return NULL;
}

CUresult phos_vmm_alloc(CUdeviceptr *dptr, size_t size)
{
	struct own o = { .req = size, .fd = -1 };
	CUmemAllocationProp prop;
	size_t gran = 0;
	CUresult r;

	if (!ready())
		return CUDA_ERROR_NOT_SUPPORTED;
	if ((r = drv.ctx_get_current(&o.ctx)) != CUDA_SUCCESS || !o.ctx ||
	    (r = drv.ctx_get_device(&o.dev)) != CUDA_SUCCESS)
		return r != CUDA_SUCCESS ? r : CUDA_ERROR_INVALID_CONTEXT;
	dev_prop(&prop, o.dev);
	if ((r = drv.granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM)) != CUDA_SUCCESS)
		return r;
	if (gran == 0 || size > SIZE_MAX - gran)
		return CUDA_ERROR_INVALID_VALUE;
	o.size = (size + gran - 1) / gran * gran;
	if ((r = drv.reserve(&o.va, o.size, gran, 0, 0)) != CUDA_SUCCESS)
		return r;
	if ((r = drv.create(&o.h, o.size, &prop, 0)) != CUDA_SUCCESS)
		goto unreserve;
	if ((r = map_rw(o.va, o.size, o.h, o.dev)) != CUDA_SUCCESS)
		goto release;
	pthread_mutex_lock(&lock);
	if (own_add(&o) < 0) {
		pthread_mutex_unlock(&lock);
		r = CUDA_ERROR_OUT_OF_MEMORY;
		drv.unmap(o.va, o.size);
		goto release;
	}
	pthread_mutex_unlock(&lock);
	*dptr = o.va;
	return CUDA_SUCCESS;
release:
	drv.release(o.h);
unreserve:
	drv.addr_free(o.va, o.size);
	return r;
}

int phos_vmm_free(CUdeviceptr p, CUresult *r)
{
	struct own o;
	size_t i;

	if (!p || !__atomic_load_n(&phos_st.vmm_owned, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&lock);
	for (i = 0; i < nown && owns[i].va != p; i++)
		;
	if (i == nown) {
		pthread_mutex_unlock(&lock);
		return 0;	/* not ours, or not the start of one (the driver says) */
	}
	o = owns[i];
	owns[i] = owns[--nown];
	__atomic_store_n(&phos_st.vmm_owned, nown, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&lock);
	/* cuMemFree waits for the work that may use the memory: so do we */
	*r = drv.ctx_sync();
	if (*r == CUDA_SUCCESS && (*r = drv.unmap(o.va, o.size)) == CUDA_SUCCESS) {
		drv.release(o.h);
		drv.addr_free(o.va, o.size);
		if (o.fd >= 0)
			close(o.fd);
		return 1;
	}
	pthread_mutex_lock(&lock);
	own_add(&o);	/* still ours: the app may retry */
	pthread_mutex_unlock(&lock);
	return 1;
}

int phos_vmm_range(CUdeviceptr p, CUdeviceptr *base, size_t *size)
{
	struct own *o;
	int found = 0;

	if (!__atomic_load_n(&phos_st.vmm_owned, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&lock);
	o = own_find(p);
	if (o && p < o->va + o->req) {
		*base = o->va;
		*size = o->req;
		found = 1;
	}
	pthread_mutex_unlock(&lock);
	return found;
}

const CUmemAllocationProp *phos_vmm_exportable(const CUmemAllocationProp *prop,
					       CUmemAllocationProp *tmp)
{
	if (!prop || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
	    prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
	    (prop->requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR))
		return NULL;
	*tmp = *prop;
	tmp->requestedHandleTypes =
		(CUmemAllocationHandleType)(tmp->requestedHandleTypes |
					    CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	return tmp;
}

bool phos_vmm_imported(void)
{
	bool any = false;

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nown && !any; i++)
		any = owns[i].fd >= 0;
	pthread_mutex_unlock(&lock);
	return any;
}

/* Detached: phosd has the memory, we only have the reservation. */
bool phos_vmm_detached(void)
{
	bool any = false;

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nown && !any; i++)
		any = owns[i].h == 0;
	pthread_mutex_unlock(&lock);
	return any;
}

/* Synchronise every context that owns a buffer (from this thread). */
static CUresult sync_all(void)
{
	CUcontext done[8], cur = NULL;
	size_t nd = 0;
	CUresult r = CUDA_SUCCESS;

	drv.ctx_get_current(&cur);
	for (size_t i = 0; i < nown && r == CUDA_SUCCESS; i++) {
		size_t k;

		for (k = 0; k < nd && done[k] != owns[i].ctx; k++)
			;
		if (k < nd)
			continue;
		if ((r = drv.ctx_set_current(owns[i].ctx)) == CUDA_SUCCESS)
			r = drv.ctx_sync();
		if (nd < 8)
			done[nd++] = owns[i].ctx;
	}
	drv.ctx_set_current(cur);
	return r;
}

int phos_vmm_list(struct phos_gpubuf *bufs, int max)
{
	int n = 0;

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nown && n < max; i++)
		if (owns[i].h)	/* attached */
			bufs[n++] = (struct phos_gpubuf){ .va = owns[i].va, .size = owns[i].size,
							  .dev = (uint32_t)owns[i].dev };
	pthread_mutex_unlock(&lock);
	return n;
}

int phos_vmm_detach(struct phos_gpubuf *bufs, int *fds, int max, char *msg, size_t msglen)
{
	size_t i, n;
	CUresult r;

	if (!ready()) {
		snprintf(msg, msglen, "the driver has no VMM entry points");
		errno = ENOTSUP;
		return -1;
	}
	pthread_mutex_lock(&lock);
	n = nown;
	if (n > (size_t)max) {
		pthread_mutex_unlock(&lock);
		snprintf(msg, msglen, "%zu large GPU buffers, more than the %d one detach hands over",
			 n, max);
		errno = E2BIG;
		return -1;
	}
	if ((r = sync_all()) != CUDA_SUCCESS) {
		pthread_mutex_unlock(&lock);
		snprintf(msg, msglen, "synchronising the GPU failed: CUDA error %d", (int)r);
		errno = EIO;
		return -1;
	}
	for (i = 0; i < n; i++) {
		fds[i] = -1;
		drv.ctx_set_current(owns[i].ctx);
		if (owns[i].fd >= 0)
			r = (fds[i] = fcntl(owns[i].fd, F_DUPFD_CLOEXEC, 3)) >= 0 ?
			    CUDA_SUCCESS : CUDA_ERROR_OPERATING_SYSTEM;
		else
			r = drv.export_fd(&fds[i], owns[i].h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
					  0);
		if (r != CUDA_SUCCESS) {
			snprintf(msg, msglen, "exporting the buffer at %#llx failed: CUDA error %d",
				 (unsigned long long)owns[i].va, (int)r);
			goto undo;
		}
		bufs[i] = (struct phos_gpubuf){ .va = owns[i].va, .size = owns[i].size,
						.dev = (uint32_t)owns[i].dev };
	}
	/* the exported fds keep the memory: unmap and release ours */
	for (i = 0; i < n; i++) {
		r = drv.unmap(owns[i].va, owns[i].size);
		if (r != CUDA_SUCCESS) {
			snprintf(msg, msglen, "unmapping the buffer at %#llx failed: CUDA error %d",
				 (unsigned long long)owns[i].va, (int)r);
			/* remap what was unmapped; the handles are still ours */
			while (i-- > 0)
				map_rw(owns[i].va, owns[i].size, owns[i].h, owns[i].dev);
			i = n;
			goto undo;
		}
	}
	for (i = 0; i < n; i++) {
		drv.release(owns[i].h);
		owns[i].h = 0;
		if (owns[i].fd >= 0) {	/* phosd has a copy now; none may stay
					 * open here through the dump */
			close(owns[i].fd);
			owns[i].fd = -1;
		}
	}
	pthread_mutex_unlock(&lock);
	return (int)n;
undo:
	while (i-- > 0)
		close(fds[i]);
	pthread_mutex_unlock(&lock);
	errno = EIO;
	return -1;
}

int phos_vmm_reattach(const struct phos_gpubuf *bufs, const int *fds, int n, char *msg,
		      size_t msglen)
{
	int rc = 0;

	if (!ready()) {
		snprintf(msg, msglen, "the driver has no VMM entry points");
		return -1;
	}
	pthread_mutex_lock(&lock);
	if ((size_t)n != nown) {
		snprintf(msg, msglen, "%d buffers handed back for the %zu detached", n, nown);
		rc = -1;
	}
	for (int i = 0; i < n && rc == 0; i++) {
		struct own *o = own_find(bufs[i].va);
		CUresult r;

		if (!o || o->va != bufs[i].va || o->size != bufs[i].size || o->h) {
			snprintf(msg, msglen, "buffer %#llx (%llu bytes) is not one detached here",
				 (unsigned long long)bufs[i].va, (unsigned long long)bufs[i].size);
			rc = -1;
			break;
		}
		drv.ctx_set_current(o->ctx);
		r = drv.import_fd(&o->h, (void *)(intptr_t)fds[i],
				  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
		if (r == CUDA_SUCCESS && (r = map_rw(o->va, o->size, o->h, o->dev)) != CUDA_SUCCESS) {
			drv.release(o->h);
			o->h = 0;
		}
		if (r != CUDA_SUCCESS) {
			snprintf(msg, msglen, "mapping the buffer at %#llx again failed: CUDA error %d",
				 (unsigned long long)o->va, (int)r);
			rc = -1;
		} else {
			o->fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);	/* for the next detach */
		}
	}
	pthread_mutex_unlock(&lock);
	return rc;
}
