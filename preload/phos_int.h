/*
 * phos_int.h - internals of libphos.so shared by its files.
 *
 * Lifecycle:
 *
 *   load ──> constructor: resolve the real sigaction/signal/dlsym;
 *            if PHOS_CHECKPOINT=1: phos_init()
 *   first hooked call / first cuGetProcAddress / first dlsym of a
 *   hooked name ──> phos_init() (once): read PHOS_* from the
 *            environment (secure_getenv), start the SIGTERM thread if
 *            PHOS_CHECKPOINT=1
 *   exit ──> destructor: PHOS_STATS_FILE dump (only if initialised)
 *
 * Rules for everything here: no output unless PHOS_DEBUG is set, never
 * exit(), never call dlsym (use phos_real_dlsym), nothing but
 * async-signal-safe calls in signal.c's handler.
 */
#ifndef PHOS_INT_H
#define PHOS_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <cuda.h>

#include "phos.h"
#include "amap.h"

#define PHOS_EXPORT __attribute__((visibility("default")))

/* ---- init.c ---------------------------------------------------------- */
struct phos_env {
	bool debug;		/* PHOS_DEBUG set and not "0" */
	bool checkpoint;	/* PHOS_CHECKPOINT == "1" */
	const char *stats_file;	/* PHOS_STATS_FILE or NULL */
};
extern struct phos_env phos_env;

void phos_init(void);
bool phos_initialized(void);
void phos_dbg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The real dlsym (from dlvsym): the only way libphos looks symbols up. */
typedef void *(*phos_dlsym_fn)(void *, const char *);
phos_dlsym_fn phos_real_dlsym_fn(void);
void *phos_real_dlsym(void *handle, const char *name);
/* A symbol of the real driver: libcuda.so.1 if loaded (RTLD_NOLOAD, never
 * loads it), else RTLD_NEXT.  NULL if neither has it. */
void *phos_cuda_sym(const char *name);

/* ---- stats.c ---------------------------------------------------------- */
extern struct phos_stats phos_st;
#define PHOS_COUNT(field, n) __atomic_fetch_add(&phos_st.field, (n), __ATOMIC_RELAXED)

/* ---- hooks.c ---------------------------------------------------------- */
#define PHOS_NSLOTS 4	/* slot 0: the exported symbol; 1..3: other real
			 * functions handed out for the same ABI */

struct phos_hook {
	const char *name;	/* exported symbol (libcuda and ours) */
	const char *base;	/* name cuGetProcAddress is asked for */
	int min_ver, max_ver;	/* cudaVersion range served by this ABI */
	bool per_thread;	/* the _ptsz/_ptds variant */
	void *const *wrappers;	/* [PHOS_NSLOTS] */
	void **real;		/* [PHOS_NSLOTS], atomic */
};

/* The wrapper that calls `real`, claiming a slot if needed; real itself
 * (unwrapped, counted in slot_conflicts) when all slots hold others. */
void *phos_hook_wrap(const struct phos_hook *h, void *real);
const struct phos_hook *phos_hook_by_name(const char *name);
const struct phos_hook *phos_hook_by_base(const char *base, int ver, bool per_thread);
/* Slot k's real function; slot 0 is resolved lazily by name. */
void *phos_real_get(void **slots, int k, const char *name);

#define PHOS_UNPAREN(...) __VA_ARGS__
/*
 * Define the hooked entry point `name` (slot 0, exported) and its slot
 * 1..3 twins; each calls impl(real, pt, args...).
 */
#define PHOS_DEFINE_HOOK(name, impl, pt, params, args)				\
	typedef CUresult (*phos_fn_##name) params;					\
	void *phos_real_##name[PHOS_NSLOTS];						\
	PHOS_EXPORT CUresult CUDAAPI name params;					\
	PHOS_EXPORT CUresult CUDAAPI name params					\
	{ return impl((phos_fn_##name)phos_real_get(phos_real_##name, 0, #name),	\
		      pt, PHOS_UNPAREN args); }						\
	static CUresult CUDAAPI name##__s1 params					\
	{ return impl((phos_fn_##name)phos_real_get(phos_real_##name, 1, NULL),	\
		      pt, PHOS_UNPAREN args); }						\
	static CUresult CUDAAPI name##__s2 params					\
	{ return impl((phos_fn_##name)phos_real_get(phos_real_##name, 2, NULL),	\
		      pt, PHOS_UNPAREN args); }						\
	static CUresult CUDAAPI name##__s3 params					\
	{ return impl((phos_fn_##name)phos_real_get(phos_real_##name, 3, NULL),	\
		      pt, PHOS_UNPAREN args); }						\
	void *const phos_wrappers_##name[PHOS_NSLOTS] = {				\
		(void *)name, (void *)name##__s1, (void *)name##__s2, (void *)name##__s3 }

/* Declarations of every hook's slot arrays (hooks.def). */
#define PHOS_HOOK(name, base, minv, maxv, pt)				\
	extern void *phos_real_##name[PHOS_NSLOTS];			\
	extern void *const phos_wrappers_##name[PHOS_NSLOTS];
#include "hooks.def"
#undef PHOS_HOOK

/* ---- alloc.c: the process's allocation map ---------------------------- */
void phos_map_add(uint64_t base, uint64_t size, int kind);
/* Take the entry at base out of the map (-1 + ENOENT if untracked);
 * phos_map_restore puts a taken entry back. */
int phos_map_take(uint64_t base, struct phos_alloc *out);
void phos_map_restore(const struct phos_alloc *a);
void phos_map_del_range(uint64_t base, uint64_t size);

/* ---- capture.c ------------------------------------------------------- */
/* True when stream capture may be under way somewhere in the process
 * (a begin seen without its end): only then do launches pay for a
 * cuStreamIsCapturing query. */
bool phos_capture_maybe(void);
/* True if s is capturing (asks the driver only when phos_capture_maybe). */
bool phos_stream_capturing(CUstream s, bool per_thread);

/* ---- wset.c: write sets ------------------------------------------------ */
#define PHOS_WSET_MAX 64

struct phos_wset {
	bool unknown;		/* cannot tell: treat all memory as written */
	unsigned n;
	uint64_t base[PHOS_WSET_MAX];	/* allocations (map bases) written */
};

struct phos_param {
	uint32_t offset;	/* in the parameter buffer */
	uint32_t size;
};

/* Mark the allocations containing any 8-byte-aligned word of the
 * parameters; params given either as kernelParams (array of pointers to
 * each value) or as a CU_LAUNCH_PARAM_BUFFER_POINTER buffer in extra. */
void phos_wset_scan(const struct phos_amap *m, struct phos_wset *ws,
		    const struct phos_param *p, unsigned np,
		    void **kernel_params, void **extra);
/* Mark the allocations overlapping [base, base+size). */
void phos_wset_range(const struct phos_amap *m, struct phos_wset *ws,
		     uint64_t base, uint64_t size);

/* The process-level versions: take the map lock, update counters. */
void phos_write_range(uint64_t base, uint64_t size);
void phos_write_launch(CUfunction f, bool per_thread, CUstream s, void **kernel_params,
		       void **extra, bool graph);

/* ---- params.c: per-kernel parameter layout cache --------------------- */
/* Layout of f's parameters (CUkernel via cuKernelGetParamInfo, else
 * CUfunction via cuFuncGetParamInfo); *np = number of params.  Returns
 * NULL if the layout cannot be known.  The result is cached for the
 * life of the process. */
const struct phos_param *phos_params_get(CUfunction f, unsigned *np);

/* ---- signal.c / ctl.c ------------------------------------------------- */
int phos_sig_start(void);
void phos_sig_resolve(void);
/* Re-deliver SIGTERM to the application as if libphos were not there. */
void phos_sig_redeliver(const siginfo_t *si);
/* Called on libphos's own thread (not in a signal handler) for each SIGTERM. */
void phos_on_sigterm(const siginfo_t *si);

#endif
