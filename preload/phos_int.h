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

/* A handle or pointer mixed into a hash-table index (murmur3's finaliser
 * step): params.c's kernel cache, graph.c's exec table. */
static inline uint64_t phos_ptr_mix(const void *p)
{
	uint64_t x = (uint64_t)(uintptr_t)p;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

/* ---- init.c ---------------------------------------------------------- */
struct phos_env {
	bool debug;		/* PHOS_DEBUG set and not "0" */
	bool checkpoint;	/* PHOS_CHECKPOINT == "1" */
	const char *stats_file;	/* PHOS_STATS_FILE or NULL */
	bool vmm;		/* serve large cuMemAlloc as exportable VMM (vmm.c) */
	size_t vmm_min;		/* ... from this size (PHOS_VMM_MIN, default 2 MiB) */
	bool wset_always;	/* PHOS_WSET_ALWAYS=1: every launch's write set,
				 * not only while a save or load needs them */
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
/* Gauges (initialized, map_entries, vmm_owned) live in phos_st; counts
 * are kept per thread (gate.c's slots) and summed by phos_stats(). */
extern struct phos_stats phos_st;

/* ---- gate.c: per-thread slots ---------------------------------------- */
#define PHOS_THREAD_SLOTS 1024

struct phos_slot {
	int inside;			/* in a hook (the gate) */
	struct phos_stats n;		/* this thread's counts */
} __attribute__((aligned(64)));

extern struct phos_slot phos_slots[PHOS_THREAD_SLOTS];
extern struct phos_slot phos_slot_shared;	/* threads past the last slot */
extern __thread struct phos_slot *phos_self __attribute__((tls_model("initial-exec")));
/* This thread's slot, claimed now (async-signal-safe). */
struct phos_slot *phos_slot_claim(void);
unsigned phos_slots_used(void);

/* Count n on this thread's slot: a plain add on its own cache line (only
 * the owner writes it; phos_stats() reads it with relaxed loads), an
 * atomic one on the shared overflow slot. */
#define PHOS_COUNT(field, k)							\
	do {									\
		struct phos_slot *s_ = phos_self ? phos_self : phos_slot_claim();	\
		uint64_t k_ = (uint64_t)(k);					\
		if (s_ == &phos_slot_shared)					\
			__atomic_fetch_add(&s_->n.field, k_, __ATOMIC_RELAXED);	\
		else								\
			__atomic_store_n(&s_->n.field, s_->n.field + k_,	\
					 __ATOMIC_RELAXED);			\
	} while (0)

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

/* ---- gate.c: quiescing the process's CUDA calls ------------------------ */
/*
 * Every hook enters the gate before it calls the driver and leaves it
 * after.  While the gate is closed (gpuctl.c detaching the large buffers),
 * callers wait at the entry; phos_gate_close() returns once no thread is
 * inside.  A thread already inside a hook passes again (nested entry).
 */
/* Register for membarrier (init.c, once): the open gate then needs no fence. */
void phos_gate_init(void);
void phos_gate_atfork_child(void);
int phos_gate_enter(void);
void phos_gate_leave(int *token);
/* Close the gate and wait up to timeout_ms for the hooks to drain:
 * 0, or -1 + ETIMEDOUT (the gate is open again). */
int phos_gate_close(int timeout_ms);
void phos_gate_open(void);

/* First statement of every hook: initialise, refuse without a real
 * function, hold the gate until the hook returns. */
#define PHOS_PROLOGUE()								\
	phos_init();								\
	if (!real)								\
		return CUDA_ERROR_NOT_INITIALIZED;				\
	int phos_gate_token_ __attribute__((cleanup(phos_gate_leave), unused)) =	\
		phos_gate_enter()

/* ---- alloc.c: the process's allocation map ---------------------------- */
void phos_map_add(uint64_t base, uint64_t size, int kind);
/* Take the entry at base out of the map (-1 + ENOENT if untracked);
 * phos_map_restore puts a taken entry back. */
int phos_map_take(uint64_t base, struct phos_alloc *out);
void phos_map_restore(const struct phos_alloc *a);
void phos_map_del_range(uint64_t base, uint64_t size);

/* ---- vmm.c: large allocations served as exportable VMM memory --------- */
/* cuMemAlloc_v2 of size bytes as a POSIX-fd-exportable cuMemCreate mapped
 * at a VA we reserve; an error means "not served": the caller falls back
 * to the driver's cuMemAlloc. */
CUresult phos_vmm_alloc(CUdeviceptr *dptr, size_t size);
/* 1 if p is one of ours (freed, *r = the result), 0 if not. */
int phos_vmm_free(CUdeviceptr p, CUresult *r);
/* The range the app allocated around p if p is in one of ours: 1, else 0. */
int phos_vmm_range(CUdeviceptr p, CUdeviceptr *base, size_t *size);
/* App cuMemCreate: prop with POSIX fd export added, in *tmp; NULL if
 * nothing to add. */
const CUmemAllocationProp *phos_vmm_exportable(const CUmemAllocationProp *prop,
					       CUmemAllocationProp *tmp);
/* With the gate closed (gpuctl.c): sync, export every buffer (fds[i]
 * for bufs[i]), unmap and release them; the VAs stay reserved.  Returns
 * the count (0..max), -1 + errno and a message on failure (nothing
 * detached then). */
struct phos_gpubuf;
int phos_vmm_detach(struct phos_gpubuf *bufs, int *fds, int max, char *msg, size_t msglen);
/* The attached buffers, at most max, without their handles. */
int phos_vmm_list(struct phos_gpubuf *bufs, int max);
/* Import fds[i] and map it at bufs[i].va.  0, or -1 with a message
 * (buffers not matching one of ours, driver errors). */
int phos_vmm_reattach(const struct phos_gpubuf *bufs, const int *fds, int n, char *msg,
		      size_t msglen);
bool phos_vmm_detached(void);
/* Some buffer is imported memory (handed back by phosd): the driver
 * checkpoint cannot restore the process with it attached. */
bool phos_vmm_imported(void);

/* ---- cow.c: running on while phosd saves the GPU buffers --------------- */
extern int phos_cow_on;
/* Whether a concurrent save is under way (one load: the hooks' fast path). */
static inline bool phos_cow_active(void)
{
	return __atomic_load_n(&phos_cow_on, __ATOMIC_ACQUIRE) != 0;
}
/* Before a write of [base, base+size) / of unknown memory: wait until the
 * buffers it may touch are saved (only while phos_cow_active()).  Each
 * buffer touched gets its first-use rank (common/savetab.h).  _set: the
 * buffers of n pointers, all asked for before any is waited for. */
void phos_cow_range(uint64_t base, uint64_t size);
void phos_cow_set(const uint64_t *base, unsigned n);
/* Whether write sets are computed now: only while a concurrent save or
 * load consumes them (or PHOS_WSET_ALWAYS=1).  Both switch on with the
 * gate closed (REATTACH), so no launch that needs one goes without. */
static inline bool phos_wset_wanted(void)
{
	return phos_cow_active() || phos_env.wset_always;
}
/* why: what the call is, for the debug log of a load ("a kernel without
 * a parameter layout") */
void phos_cow_all(const char *why);
/* Before a read of [base, base+size) / of unknown device memory: waits
 * during a concurrent load only. */
void phos_cow_read(uint64_t base, uint64_t size);
void phos_cow_read_all(const char *why);
/* PHOS_SIGVAL_RANK: a table of our own, every buffer SAVED (no call
 * waits), that ranks the buffers by first use until the detach, or for
 * PHOS_RANK_MAX_S at most; 0, or -1 when a table is there already or
 * there is nothing to rank */
int phos_cow_rank_begin(void);
/* the table's buffer va lies in (its size in *size), or -1 */
int phos_cow_buffer(uint64_t va, uint64_t *size);
/* The first-use rank of the buffer mapped at va in the last table (0: not
 * touched, or none), for GPU_DETACH. */
uint32_t phos_cow_rank(uint64_t va);
/* A concurrent load is still filling the buffers (a detach must wait). */
bool phos_cow_loading(void);
/* REATTACH with a save table (fd; bufs as handed back): 0, or -1 if the
 * table is not one of n buffers (the caller must not run on).  End: with
 * the gate closed, forget the table. */
int phos_cow_begin(int fd, const struct phos_gpubuf *bufs, int n);
void phos_cow_end(void);

/* ---- gpuctl.c: DETACH/REATTACH with phosd -------------------------------- */
/* Handle phosd's DETACH or REATTACH signal (libphos thread). */
void phos_gpuctl(int sigval);
/* PHOS_DEBUG: the kernel launches right after a reattach are timed, and
 * what they waited for buffers still loading (where the first step of a
 * restored process goes: gpuctl.c, bench/torch_size.sh) */
extern int phos_watch_left;	/* launches after a reattach still timed */
extern uint64_t phos_watch_waited_us;	/* of which waiting for buffers (cow.c) */
extern unsigned phos_watch_waits;
uint64_t phos_watch_begin(void);	/* a timed launch's start */
void phos_watch_end(uint64_t t0);
struct phos_wset;
/* a launch of f, in the window, that waited us microseconds for buffers
 * still loading: which words of its parameters named them (ws) */
void phos_watch_launch(CUfunction f, const struct phos_wset *ws, uint64_t us);
/* a wait of us microseconds, from from_ns, for buffer buf of size bytes;
 * started: the loader had begun it */
void phos_watch_wait(uint32_t buf, uint64_t size, bool started, uint64_t from_ns, uint64_t us);

/* ---- capture.c ------------------------------------------------------- */
/* True when stream capture may be under way somewhere in the process
 * (a begin seen without its end): only then do launches pay for a
 * cuStreamIsCapturing query. */
bool phos_capture_maybe(void);
/* True if s is capturing (asks the driver only when phos_capture_maybe). */
bool phos_stream_capturing(CUstream s, bool per_thread);

/* ---- wset.c: write sets ------------------------------------------------ */
#define PHOS_WSET_MAX 256

struct phos_wset {
	bool unknown;		/* cannot tell: treat all memory as written */
	unsigned n;
	uint64_t base[PHOS_WSET_MAX];	/* allocations (map bases) written */
	uint32_t at[PHOS_WSET_MAX];	/* the parameter-buffer offset of the word
					 * that named each (UINT32_MAX: a range) */
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
/* the kernel's name as the driver gives it, or "?" */
const char *phos_kernel_name(CUfunction f);

/* ---- signal.c / ctl.c ------------------------------------------------- */
int phos_sig_start(void);
void phos_sig_resolve(void);
/* Re-deliver SIGTERM to the application as if libphos were not there. */
void phos_sig_redeliver(const siginfo_t *si);
/* Called on libphos's own thread (not in a signal handler) for each SIGTERM. */
void phos_on_sigterm(const siginfo_t *si);

/* ---- graph.c ---------------------------------------------------------- */
/* Visit each parameter's value (fn(ctx, value, offset, size)), given
 * either as kernelParams or as an extra buffer (wset.c).  False if they
 * cannot be read (a NULL value, an extra option we do not know, a buffer
 * too short, no parameters given for a kernel that has some). */
typedef void (*phos_param_fn)(void *ctx, const unsigned char *val, uint32_t off, uint32_t size);
bool phos_params_each(const struct phos_param *p, unsigned np, void **kernel_params, void **extra,
		      phos_param_fn fn, void *ctx);
/* cuGraphLaunch: mark the exec's write set and count the launch when
 * libphos walked it and knows it; false (nothing counted) otherwise, and
 * for a stream that captures: the caller falls back to phos_write_launch. */
bool phos_graph_launch(CUgraphExec g, bool per_thread, CUstream s);
/* A kernel launch: mark what the recorded TMA descriptors among its
 * 128-byte parameters address (nothing while s captures). */
void phos_tma_launch(CUfunction f, bool per_thread, CUstream s, void **kernel_params,
		     void **extra);

#endif
