/*
 * hooks.c - the table of hooked entry points and the three routes by
 * which an application reaches them (DESIGN.md §5):
 *
 *  1. exported symbols: our cuMemAlloc_v2 & co. come first in the
 *     global scope; each calls slot 0, the driver's symbol of that name;
 *  2. dlsym on a libcuda handle: dlsym.c swaps the answer for a wrapper;
 *  3. cuGetProcAddress(_v2): the real function is resolved with the
 *     caller's own (symbol, version, flags), then the hook for that
 *     (base name, version range, per-thread flag) is picked from
 *     hooks.def and the answer swapped for a wrapper.
 *
 * Slots: a wrapper cannot carry data, so each hook has PHOS_NSLOTS
 * twins, each calling its own real pointer.  A real function seen for
 * the first time claims a free slot; the same real function always gets
 * the same wrapper, so two lookups that resolve to different driver
 * functions (say the _ptsz and the legacy one, or two versions sharing
 * an ABI) never share a wrapper.  When all slots hold other functions
 * the real pointer is handed out unwrapped (counted in slot_conflicts).
 */
#include "config.h"

#include <limits.h>
#include <string.h>

#include "phos_int.h"

#undef cuGetProcAddress	/* cuda.h maps it to _v2; we define both */

static const struct phos_hook hooks[] = {
#define PHOS_HOOK(name, base, minv, maxv, pt) \
	{ #name, base, minv, maxv, pt, phos_wrappers_##name, phos_real_##name },
#include "hooks.def"
#undef PHOS_HOOK
};

void *phos_real_get(void **slots, int k, const char *name)
{
	void *p = __atomic_load_n(&slots[k], __ATOMIC_ACQUIRE);

	if (!p && k == 0 && name) {
		p = phos_cuda_sym(name);
		if (p)
			__atomic_store_n(&slots[0], p, __ATOMIC_RELEASE);
	}
	return p;
}

const struct phos_hook *phos_hook_by_name(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(hooks) / sizeof(hooks[0]); i++)
		if (strcmp(hooks[i].name, name) == 0)
			return &hooks[i];
	return NULL;
}

const struct phos_hook *phos_hook_by_base(const char *base, int ver, bool per_thread)
{
	size_t i;

	for (i = 0; i < sizeof(hooks) / sizeof(hooks[0]); i++)
		if (hooks[i].per_thread == per_thread && ver >= hooks[i].min_ver &&
		    ver <= hooks[i].max_ver && strcmp(hooks[i].base, base) == 0)
			return &hooks[i];
	/* no _ptsz/_ptds variant of this one: the legacy ABI serves both */
	return per_thread ? phos_hook_by_base(base, ver, false) : NULL;
}

void *phos_hook_wrap(const struct phos_hook *h, void *real)
{
	int k;

	if (!real)
		return NULL;
	for (k = 0; k < PHOS_NSLOTS; k++)
		if (real == h->wrappers[k])
			return real;
	phos_real_get(h->real, 0, h->name);
	for (k = 0; k < PHOS_NSLOTS; k++)
		if (__atomic_load_n(&h->real[k], __ATOMIC_ACQUIRE) == real)
			return h->wrappers[k];
	for (k = 1; k < PHOS_NSLOTS; k++) {
		void *expect = NULL;

		if (__atomic_compare_exchange_n(&h->real[k], &expect, real, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) ||
		    expect == real)
			return h->wrappers[k];
	}
	PHOS_COUNT(slot_conflicts, 1);
	phos_dbg("%s: no free slot, %p passed through unwrapped", h->name, real);
	return real;
}

/* ---- route 3: cuGetProcAddress ---------------------------------------- */

static void *gpa_wrap(const char *symbol, void *fn, int ver, cuuint64_t flags)
{
	const struct phos_hook *h;
	void *w;

	h = phos_hook_by_base(symbol, ver, (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0);
	if (!h)
		return fn;
	w = phos_hook_wrap(h, fn);
	if (w != fn)
		PHOS_COUNT(gpa_wrapped, 1);
	phos_dbg("cuGetProcAddress(%s, %d, %#llx): %s as %s", symbol, ver, (unsigned long long)flags,
		 w != fn ? "wrapped" : "passed through", h->name);
	return w;
}

static bool is_export_table(const char *symbol)
{
	return symbol && strcmp(symbol, "cuGetExportTable") == 0;
}

typedef CUresult (*gpa2_fn)(const char *, void **, int, cuuint64_t,
			    CUdriverProcAddressQueryResult *);
typedef CUresult (*gpa1_fn)(const char *, void **, int, cuuint64_t);

static CUresult impl_gpa_v2(gpa2_fn real, int pt, const char *symbol, void **pfn, int ver,
			    cuuint64_t flags, CUdriverProcAddressQueryResult *status)
{
	CUresult r;

	(void)pt;
	if (!real)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (is_export_table(symbol))	/* not a reason to initialise */
		return real(symbol, pfn, ver, flags, status);
	phos_init();
	PHOS_COUNT(gpa_lookups, 1);
	r = real(symbol, pfn, ver, flags, status);
	if (r == CUDA_SUCCESS && symbol && pfn && *pfn &&
	    (!status || *status == CU_GET_PROC_ADDRESS_SUCCESS))
		*pfn = gpa_wrap(symbol, *pfn, ver, flags);
	return r;
}

static CUresult impl_gpa_v1(gpa1_fn real, int pt, const char *symbol, void **pfn, int ver,
			    cuuint64_t flags)
{
	CUresult r;

	(void)pt;
	if (!real)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (is_export_table(symbol))
		return real(symbol, pfn, ver, flags);
	phos_init();
	PHOS_COUNT(gpa_lookups, 1);
	r = real(symbol, pfn, ver, flags);
	if (r == CUDA_SUCCESS && symbol && pfn && *pfn)
		*pfn = gpa_wrap(symbol, *pfn, ver, flags);
	return r;
}

PHOS_DEFINE_HOOK(cuGetProcAddress_v2, impl_gpa_v2, 0,
		 (const char *symbol, void **pfn, int ver, cuuint64_t flags,
		  CUdriverProcAddressQueryResult *status),
		 (symbol, pfn, ver, flags, status));
PHOS_DEFINE_HOOK(cuGetProcAddress, impl_gpa_v1, 0,
		 (const char *symbol, void **pfn, int ver, cuuint64_t flags),
		 (symbol, pfn, ver, flags));
