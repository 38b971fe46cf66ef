/*
 * params.c - parameter layouts per kernel, cached for the life of the
 * process (uncached lookups cost 1.5-2.4 us a launch, DESIGN.md §5).
 *
 * Launch handles are CUkernels in practice (cuFuncGetParamInfo fails on
 * them), so cuKernelGetParamInfo is asked first and cuFuncGetParamInfo
 * second.  Each says CUDA_ERROR_INVALID_HANDLE for the other kind of
 * handle and CUDA_ERROR_INVALID_VALUE for an index past the last
 * parameter (H100, driver 580), so INVALID_VALUE at index 0 means "no
 * parameters".  A handle neither answers is cached as unknown.
 *
 * The cache is an open-addressed table: lookups are lock-free (a key is
 * published after its value), inserts take a mutex.  Once it is full,
 * new kernels get an unknown write set (safe, never wrong).
 */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>

#include "phos_int.h"

#define CACHE_SIZE 8192		/* power of two */
#define MAX_PARAMS 4096

struct layout {
	unsigned np;
	bool unknown;
	struct phos_param p[];
};

struct slot {
	CUfunction key;		/* published last */
	struct layout *val;
};

static struct slot cache[CACHE_SIZE];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct layout unknown_layout = { .np = 0, .unknown = true };

typedef CUresult (*info_fn)(void *, size_t, size_t *, size_t *);

static size_t hash(CUfunction f)
{
	return (size_t)phos_ptr_mix(f) & (CACHE_SIZE - 1);
}

static struct layout *query(info_fn fn, CUfunction f, CUresult *first)
{
	struct layout *l;
	size_t off, size;
	unsigned n = 0, i;

	*first = fn ? fn(f, 0, &off, &size) : CUDA_ERROR_NOT_FOUND;
	if (*first == CUDA_ERROR_INVALID_VALUE) {
		/* the right kind of handle, and index 0 is out of range:
		 * a kernel without parameters (a wrong kind of handle is
		 * CUDA_ERROR_INVALID_HANDLE; seen on driver 580) */
		l = malloc(sizeof(*l));
		if (l) {
			l->np = 0;
			l->unknown = false;
		}
		return l;
	}
	if (*first != CUDA_SUCCESS)
		return NULL;
	for (n = 1; n < MAX_PARAMS; n++)
		if (fn(f, n, &off, &size) != CUDA_SUCCESS)
			break;
	if (n == MAX_PARAMS)
		return NULL;
	l = malloc(sizeof(*l) + n * sizeof(l->p[0]));
	if (!l)
		return NULL;
	l->np = n;
	l->unknown = false;
	for (i = 0; i < n; i++) {
		if (fn(f, i, &off, &size) != CUDA_SUCCESS || off > UINT32_MAX || size > UINT32_MAX) {
			free(l);
			return NULL;
		}
		l->p[i].offset = (uint32_t)off;
		l->p[i].size = (uint32_t)size;
	}
	return l;
}

const char *phos_kernel_name(CUfunction f)
{
	typedef CUresult (*name_fn)(const char **, void *);
	static void *kname[1], *fname[1];
	name_fn kn = (name_fn)phos_real_get(kname, 0, "cuKernelGetName");
	name_fn fn = (name_fn)phos_real_get(fname, 0, "cuFuncGetName");
	const char *name = NULL;

	if (!(kn && kn(&name, f) == CUDA_SUCCESS) && !(fn && fn(&name, f) == CUDA_SUCCESS))
		name = "?";
	return name;
}

static struct layout *compute(CUfunction f)
{
	static void *kfn[1], *ffn[1];
	CUresult rk, rf = CUDA_SUCCESS;
	struct layout *l;

	l = query((info_fn)phos_real_get(kfn, 0, "cuKernelGetParamInfo"), f, &rk);
	if (!l)
		l = query((info_fn)phos_real_get(ffn, 0, "cuFuncGetParamInfo"), f, &rf);
	if (phos_env.debug) {
		const char *name = phos_kernel_name(f);

		if (l)
			phos_dbg("kernel %p %s: %u parameters", (void *)f, name, l->np);
		else
			phos_dbg("kernel %p %s: no parameter layout (cuKernelGetParamInfo %d, "
				 "cuFuncGetParamInfo %d)", (void *)f, name, (int)rk, (int)rf);
	}
	return l ? l : &unknown_layout;
}

static const struct phos_param *answer(const struct layout *l, unsigned *np)
{
	*np = l->np;
	return l->unknown ? NULL : l->p;
}

const struct phos_param *phos_params_get(CUfunction f, unsigned *np)
{
	size_t h = hash(f), i;
	struct layout *l;

	*np = 0;
	if (!f)
		return NULL;
	for (i = 0; i < CACHE_SIZE; i++) {
		struct slot *s = &cache[(h + i) & (CACHE_SIZE - 1)];
		CUfunction k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);

		if (k == f)
			return answer(s->val, np);
		if (!k)
			break;
	}
	l = compute(f);
	pthread_mutex_lock(&cache_lock);
	for (i = 0; i < CACHE_SIZE; i++) {
		struct slot *s = &cache[(h + i) & (CACHE_SIZE - 1)];

		if (s->key == f) {	/* another thread was first */
			if (l != &unknown_layout)
				free(l);
			l = s->val;
			break;
		}
		if (!s->key) {
			s->val = l;
			__atomic_store_n(&s->key, f, __ATOMIC_RELEASE);
			break;
		}
	}
	pthread_mutex_unlock(&cache_lock);
	if (i == CACHE_SIZE && l != &unknown_layout) {
		/* table full: no place to keep it, so answer unknown (the
		 * safe answer) rather than leak a layout per launch */
		free(l);
		l = &unknown_layout;
	}
	return answer(l, np);
}
