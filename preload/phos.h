/*
 * phos.h - what libphos.so exports besides the hooked CUDA driver entry
 * points: read-only introspection for tests and the GPU scripts.
 *
 * Resolve these with dlsym(RTLD_DEFAULT, "phos_stats") from a program
 * that runs under LD_PRELOAD=libphos.so; never link against libphos.
 * Neither function initialises libphos or allocates.
 *
 * The same counters are written at exit, one "key value" line each, to
 * the file named by PHOS_STATS_FILE (a "%p" in the name becomes the pid)
 * when that variable is set and libphos was initialised.
 */
#ifndef PHOS_PRELOAD_H
#define PHOS_PRELOAD_H

#include <stddef.h>
#include <stdint.h>

/* Kinds of entries in the allocation map. */
enum phos_alloc_kind {
	PHOS_ALLOC_DEVICE = 1,	/* cuMemAlloc_v2 */
	PHOS_ALLOC_PITCH = 2,	/* cuMemAllocPitch_v2 */
	PHOS_ALLOC_VMM = 3,	/* a cuMemMap mapping */
	PHOS_ALLOC_ASYNC = 4,	/* cuMemAllocAsync, cuMemAllocFromPoolAsync */
	PHOS_ALLOC_HOST = 5,	/* cuMemHostAlloc, cuMemAllocHost_v2 (pinned) */
};

/* Per-process counters.  New fields are only ever appended. */
struct phos_stats {
	uint64_t initialized;		/* 1 once libphos initialised */
	uint64_t launches;		/* kernel + graph launches seen */
	uint64_t graph_launches;	/* cuGraphLaunch calls */
	uint64_t launches_captured;	/* launches while the stream captured */
	uint64_t launches_unknown;	/* launches whose write set is unknown */
	uint64_t allocs;		/* successful allocations, every kind;
					 * VMM: cuMemCreate (not cuMemMap) */
	uint64_t frees;			/* successful frees/releases */
	uint64_t bytes_allocated;	/* sum of allocation sizes */
	uint64_t bytes_freed;		/* sum of freed sizes (known ones) */
	uint64_t maps;			/* cuMemMap calls that succeeded */
	uint64_t unmaps;		/* cuMemUnmap calls that succeeded */
	uint64_t allocs_device;		/* ... of which cuMemAlloc/Pitch */
	uint64_t allocs_host;		/* ... pinned host */
	uint64_t allocs_async;		/* ... stream-ordered */
	uint64_t allocs_create;		/* ... cuMemCreate */
	uint64_t vmm_allocs;		/* cuMemAlloc served as exportable VMM (vmm.c) */
	uint64_t vmm_fallbacks;		/* ... that fell back to cuMemAlloc */
	uint64_t vmm_owned;		/* such buffers now */
	uint64_t vmm_exportable;	/* app cuMemCreate made exportable */
	uint64_t detaches;		/* GPU_DETACH done (buffers handed to phosd) */
	uint64_t reattaches;		/* GPU_REATTACH done */
	uint64_t copies;		/* memcpys that write device memory */
	uint64_t memsets;		/* memsets */
	uint64_t wset_marks;		/* allocations marked written */
	uint64_t map_entries;		/* entries in the allocation map now */
	uint64_t gpa_lookups;		/* cuGetProcAddress calls */
	uint64_t gpa_wrapped;		/* ... answered with a libphos wrapper */
	uint64_t dlsym_wrapped;		/* dlsym answers replaced by a wrapper */
	uint64_t slot_conflicts;	/* real functions we could not wrap */
	uint64_t sigterms;		/* SIGTERMs handled by phos_on_sigterm */
	uint64_t graph_launches_known;	/* cuGraphLaunch of a walked exec whose
					 * write set was marked (graph.c) */
	uint64_t tma_marks;		/* 128-byte parameters matched to a
					 * recorded TMA descriptor (launches,
					 * and kernel nodes when walked) */
	uint64_t cow_waits;		/* CUDA calls that waited for a buffer of
					 * a concurrent GPU save (cow.c) */
};

/* Copy min(size, sizeof(struct phos_stats)) bytes of the counters to st.
 * Returns 0; -1 + EINVAL if st is NULL. */
int phos_stats(struct phos_stats *st, size_t size);

/* Find the map entry containing addr.  Returns 0 and fills the non-NULL
 * outputs (writes: how many launches/copies/memsets marked it written,
 * exact for one thread; launches racing on several threads may count once);
 * -1 + ENOENT if no tracked allocation contains addr. */
int phos_alloc_query(uint64_t addr, uint64_t *base, uint64_t *size,
		     int *kind, uint64_t *writes);

#endif
