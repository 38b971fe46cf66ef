/*
 * dlsym.c - route 2 of hooks.c: dlsym() on a libcuda handle.
 *
 * cuBLAS, cuDNN and Triton dlopen libcuda.so.1 and dlsym its entry
 * points; for a hooked name we hand back our wrapper.  The real dlsym
 * comes from dlvsym (phos_real_dlsym): dlsym is never called in here.
 *
 * glibc's dlsym looks at its caller's address for RTLD_NEXT (and for
 * RTLD_DEFAULT's scope), so every answer we do not change is a tail call
 * to the real dlsym: the caller it sees is the application's, not us.
 * gcc needs optimisation for a sibling call (hence the attribute; clang
 * gets musttail); test_preload_hooks checks that RTLD_NEXT still starts
 * after the caller.  The exception: a "cu*" name on RTLD_DEFAULT is
 * looked up in libphos's own (the global) scope, not the caller's; a
 * driver loaded RTLD_LOCAL is still found through our exports.
 * RTLD_NEXT lookups are never wrapped.
 */
#include "config.h"

#include <dlfcn.h>

#include "phos_int.h"

#if defined(__clang__)
#define PHOS_OPT
#define PHOS_TAILCALL __attribute__((musttail))
#else
#define PHOS_OPT __attribute__((optimize("O2")))
#define PHOS_TAILCALL
#endif

static void *dlsym_hooked(phos_dlsym_fn real, void *handle, const char *name)
{
	const struct phos_hook *h = phos_hook_by_name(name);
	void *r = real(handle, name);
	void *w;

	if (!h || !r)
		return r;
	if (r == h->wrappers[0]) {
		/* the global scope found our own export: answer it only if
		 * the driver has the function, as without libphos */
		if (!phos_real_get(h->real, 0, h->name))
			return NULL;
		phos_init();
		return r;
	}
	phos_init();
	w = phos_hook_wrap(h, r);
	if (w != r)
		PHOS_COUNT(dlsym_wrapped, 1);
	return w;
}

PHOS_EXPORT void *dlsym(void *handle, const char *name);
PHOS_EXPORT PHOS_OPT void *dlsym(void *handle, const char *name)
{
	phos_dlsym_fn real = phos_real_dlsym_fn();

	if (__builtin_expect(!real, 0))
		return NULL;
	if (handle != RTLD_NEXT && name[0] == 'c' && name[1] == 'u')
		return dlsym_hooked(real, handle, name);
	PHOS_TAILCALL return real(handle, name);
}
