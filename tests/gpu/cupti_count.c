/*
 * cupti_count.c - ground truth for tests/gpu/counts.sh: a CUPTI injection
 * library that counts, with the activity API, the kernels a process ran
 * and the memory it allocated, and writes the counts at exit.
 *
 *   CUDA_INJECTION64_PATH=/path/cupti_count.so CUPTI_COUNT_FILE=out.%p app
 *
 * The driver loads it at cuInit and calls InitializeInjection().  Output:
 * one "key value" line each (the format of libphos's PHOS_STATS_FILE), "%p"
 * in the name becomes the pid.  Keys:
 *   cupti_ok        1 once the activity kinds we need were enabled
 *   kernels         CONCURRENT_KERNEL records (one per kernel executed)
 *   internal_launches INTERNAL_LAUNCH_API records: kernels the driver
 *                   launched outside any public API call
 *   memsets, memcpys MEMSET / MEMCPY records (not kernels)
 *   mem_alloc_device, mem_alloc_device_async, mem_alloc_pinned,
 *   mem_alloc_other, mem_release  MEMORY2 records (allocation by memory kind;
 *                   "other": managed, static, array, pageable, unknown)
 *   drv_launch      driver API records of cuLaunchKernel{,Ex,Cooperative}*
 *   drv_graph_launch driver API records of cuGraphLaunch*
 *   drv_alloc       driver API records of cuMemAlloc*, cuMemAllocPitch*,
 *                   cuMemAllocHost*, cuMemHostAlloc*, cuMemAllocAsync*,
 *                   cuMemAllocFromPoolAsync*
 *   drv_mem_create  driver API records of cuMemCreate (VMM)
 *   drv_mem_create_failed ... of which returned an error (no allocation:
 *                   PyTorch's expandable segments try a handle type the
 *                   machine may refuse, then another)
 *   drv_mem_map     driver API records of cuMemMap
 *   mem_create_overlap MEMORY2 allocation records that belong to a
 *                   successful cuMemCreate call (same correlation id)
 *   mem_map_overlap MEMORY2 allocation records that belong to a cuMemMap
 *                   call (CUPTI reports a VMM allocation at its map: on an
 *                   H100, 13 of PyTorch's 15, the other 2 with neither id)
 *   dropped         records CUPTI dropped (the counts are then too low)
 * Driver API records are kept only for the calls listed (cuptiActivity-
 * EnableDriverApi); whether CUPTI reports the driver calls that the CUDA
 * runtime makes on the app's behalf is a CUPTI detail, so those counts are
 * informational; kernels and MEMORY2 records are the ground truth.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cupti.h>

#define BUF_SIZE (8u << 20)

struct counts {
	uint64_t cupti_ok, kernels, internal_launches, memsets, memcpys;
	uint64_t mem_alloc_device, mem_alloc_device_async, mem_alloc_pinned, mem_alloc_other;
	uint64_t mem_release, drv_launch, drv_graph_launch, drv_alloc, drv_mem_create;
	uint64_t drv_mem_create_failed, drv_mem_map;
	uint64_t dropped, other_records;
};
static struct counts cnt;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* correlation ids of MEMORY2 allocations, of successful cuMemCreate calls
 * and of cuMemMap calls */
struct ids {
	uint32_t *v;
	size_t n, cap;
};
static struct ids alloc_ids, create_ids, map_ids;
static int initialized;

static void ids_add(struct ids *s, uint32_t id)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		uint32_t *v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = id;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* How many MEMORY2 allocation records share a correlation id with calls */
static uint64_t overlap(struct ids *calls)
{
	size_t i = 0, j = 0;
	uint64_t n = 0;

	qsort(alloc_ids.v, alloc_ids.n, sizeof(uint32_t), cmp_u32);
	qsort(calls->v, calls->n, sizeof(uint32_t), cmp_u32);
	while (i < alloc_ids.n && j < calls->n) {
		if (alloc_ids.v[i] < calls->v[j]) {
			i++;
		} else if (alloc_ids.v[i] > calls->v[j]) {
			j++;
		} else {
			n++;
			i++;
			j++;
		}
	}
	return n;
}

static int is_launch(CUpti_CallbackId id)
{
	switch (id) {
	case CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel:
	case CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel_ptsz:
	case CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx:
	case CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx_ptsz:
	case CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernel:
	case CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernel_ptsz:
		return 1;
	default:
		return 0;
	}
}

static int is_graph_launch(CUpti_CallbackId id)
{
	return id == CUPTI_DRIVER_TRACE_CBID_cuGraphLaunch ||
	       id == CUPTI_DRIVER_TRACE_CBID_cuGraphLaunch_ptsz;
}

static int is_alloc(CUpti_CallbackId id)
{
	switch (id) {
	case CUPTI_DRIVER_TRACE_CBID_cuMemAlloc_v2:
	case CUPTI_DRIVER_TRACE_CBID_cuMemAllocPitch_v2:
	case CUPTI_DRIVER_TRACE_CBID_cuMemAllocHost_v2:
	case CUPTI_DRIVER_TRACE_CBID_cuMemHostAlloc:
	case CUPTI_DRIVER_TRACE_CBID_cuMemAllocAsync:
	case CUPTI_DRIVER_TRACE_CBID_cuMemAllocAsync_ptsz:
	case CUPTI_DRIVER_TRACE_CBID_cuMemAllocFromPoolAsync:
	case CUPTI_DRIVER_TRACE_CBID_cuMemAllocFromPoolAsync_ptsz:
		return 1;
	default:
		return 0;
	}
}

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
	*buffer = aligned_alloc(8, BUF_SIZE);
	*size = *buffer ? BUF_SIZE : 0;
	*max_records = 0;
}

static void count_record(const CUpti_Activity *r)
{
	switch (r->kind) {
	case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
	case CUPTI_ACTIVITY_KIND_KERNEL:
		cnt.kernels++;
		break;
	case CUPTI_ACTIVITY_KIND_INTERNAL_LAUNCH_API:
		cnt.internal_launches++;
		break;
	case CUPTI_ACTIVITY_KIND_MEMSET:
		cnt.memsets++;
		break;
	case CUPTI_ACTIVITY_KIND_MEMCPY:
		cnt.memcpys++;
		break;
	case CUPTI_ACTIVITY_KIND_MEMORY2: {
		/* the leading fields are the same in every CUpti_ActivityMemory{2,3,4} */
		const CUpti_ActivityMemory4 *m = (const CUpti_ActivityMemory4 *)r;

		if (m->memoryOperationType == CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_RELEASE) {
			cnt.mem_release++;
			break;
		}
		if (m->memoryOperationType != CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION)
			break;
		if (m->memoryKind == CUPTI_ACTIVITY_MEMORY_KIND_DEVICE) {
			if (m->isAsync)
				cnt.mem_alloc_device_async++;
			else
				cnt.mem_alloc_device++;
			ids_add(&alloc_ids, m->correlationId);
		} else if (m->memoryKind == CUPTI_ACTIVITY_MEMORY_KIND_PINNED) {
			cnt.mem_alloc_pinned++;
			ids_add(&alloc_ids, m->correlationId);
		} else {
			cnt.mem_alloc_other++;
		}
		break;
	}
	case CUPTI_ACTIVITY_KIND_DRIVER: {
		const CUpti_ActivityAPI *a = (const CUpti_ActivityAPI *)r;

		if (is_launch(a->cbid)) {
			cnt.drv_launch++;
		} else if (is_graph_launch(a->cbid)) {
			cnt.drv_graph_launch++;
		} else if (is_alloc(a->cbid)) {
			cnt.drv_alloc++;
		} else if (a->cbid == CUPTI_DRIVER_TRACE_CBID_cuMemCreate) {
			cnt.drv_mem_create++;
			if (a->returnValue != CUDA_SUCCESS)
				cnt.drv_mem_create_failed++;
			else
				ids_add(&create_ids, a->correlationId);
		} else if (a->cbid == CUPTI_DRIVER_TRACE_CBID_cuMemMap) {
			cnt.drv_mem_map++;
			ids_add(&map_ids, a->correlationId);
		}
		break;
	}
	default:
		cnt.other_records++;
		break;
	}
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size,
				      size_t valid)
{
	CUpti_Activity *r = NULL;
	size_t dropped = 0;

	(void)size;
	pthread_mutex_lock(&lock);
	while (valid && cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS)
		count_record(r);
	if (cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped) == CUPTI_SUCCESS)
		cnt.dropped += dropped;
	pthread_mutex_unlock(&lock);
	free(buffer);
}

/* Write the counts (called more than once: the last write wins). */
static void write_counts(void)
{
	const char *tmpl = getenv("CUPTI_COUNT_FILE");
	const char *p;
	char path[4096];
	FILE *f;
	int n;

	if (!tmpl || !*tmpl)
		return;
	p = strstr(tmpl, "%p");
	if (p)
		n = snprintf(path, sizeof(path), "%.*s%ld%s", (int)(p - tmpl), tmpl, (long)getpid(),
			     p + 2);
	else
		n = snprintf(path, sizeof(path), "%s", tmpl);
	if (n < 0 || (size_t)n >= sizeof(path))
		return;
	f = fopen(path, "w");
	if (!f)
		return;
	pthread_mutex_lock(&lock);
	fprintf(f, "cupti_ok %llu\n", (unsigned long long)cnt.cupti_ok);
	fprintf(f, "kernels %llu\n", (unsigned long long)cnt.kernels);
	fprintf(f, "internal_launches %llu\n", (unsigned long long)cnt.internal_launches);
	fprintf(f, "memsets %llu\n", (unsigned long long)cnt.memsets);
	fprintf(f, "memcpys %llu\n", (unsigned long long)cnt.memcpys);
	fprintf(f, "mem_alloc_device %llu\n", (unsigned long long)cnt.mem_alloc_device);
	fprintf(f, "mem_alloc_device_async %llu\n", (unsigned long long)cnt.mem_alloc_device_async);
	fprintf(f, "mem_alloc_pinned %llu\n", (unsigned long long)cnt.mem_alloc_pinned);
	fprintf(f, "mem_alloc_other %llu\n", (unsigned long long)cnt.mem_alloc_other);
	fprintf(f, "mem_release %llu\n", (unsigned long long)cnt.mem_release);
	fprintf(f, "drv_launch %llu\n", (unsigned long long)cnt.drv_launch);
	fprintf(f, "drv_graph_launch %llu\n", (unsigned long long)cnt.drv_graph_launch);
	fprintf(f, "drv_alloc %llu\n", (unsigned long long)cnt.drv_alloc);
	fprintf(f, "drv_mem_create %llu\n", (unsigned long long)cnt.drv_mem_create);
	fprintf(f, "drv_mem_create_failed %llu\n", (unsigned long long)cnt.drv_mem_create_failed);
	fprintf(f, "drv_mem_map %llu\n", (unsigned long long)cnt.drv_mem_map);
	fprintf(f, "mem_create_overlap %llu\n", (unsigned long long)overlap(&create_ids));
	fprintf(f, "mem_map_overlap %llu\n", (unsigned long long)overlap(&map_ids));
	fprintf(f, "dropped %llu\n", (unsigned long long)cnt.dropped);
	fprintf(f, "other_records %llu\n", (unsigned long long)cnt.other_records);
	pthread_mutex_unlock(&lock);
	fclose(f);
}

static void at_exit(void)
{
	cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
	write_counts();
}

/* Records delivered after our atexit handler (a context destroyed later
 * at exit) are counted too: the destructor writes again without calling
 * CUPTI. */
__attribute__((destructor)) static void fini(void)
{
	if (initialized)
		write_counts();
}

static void report(const char *what, CUptiResult rc)
{
	const char *s = NULL;

	cuptiGetResultString(rc, &s);
	fprintf(stderr, "cupti_count: %s: %s (%d)\n", what, s ? s : "?", (int)rc);
}

static int enable(CUpti_ActivityKind kind, const char *name, int required)
{
	CUptiResult rc = cuptiActivityEnable(kind);

	if (rc == CUPTI_SUCCESS)
		return 0;
	if (required || getenv("CUPTI_COUNT_DEBUG"))
		report(name, rc);
	return -1;
}

static const CUpti_CallbackId traced[] = {
	CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel,
	CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel_ptsz,
	CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx,
	CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx_ptsz,
	CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernel,
	CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernel_ptsz,
	CUPTI_DRIVER_TRACE_CBID_cuGraphLaunch,
	CUPTI_DRIVER_TRACE_CBID_cuGraphLaunch_ptsz,
	CUPTI_DRIVER_TRACE_CBID_cuMemAlloc_v2,
	CUPTI_DRIVER_TRACE_CBID_cuMemAllocPitch_v2,
	CUPTI_DRIVER_TRACE_CBID_cuMemAllocHost_v2,
	CUPTI_DRIVER_TRACE_CBID_cuMemHostAlloc,
	CUPTI_DRIVER_TRACE_CBID_cuMemAllocAsync,
	CUPTI_DRIVER_TRACE_CBID_cuMemAllocAsync_ptsz,
	CUPTI_DRIVER_TRACE_CBID_cuMemAllocFromPoolAsync,
	CUPTI_DRIVER_TRACE_CBID_cuMemAllocFromPoolAsync_ptsz,
	CUPTI_DRIVER_TRACE_CBID_cuMemCreate,
	CUPTI_DRIVER_TRACE_CBID_cuMemMap,
};

static void enable_driver_records(void)
{
	typedef CUptiResult (*enable_api_fn)(CUpti_CallbackId, uint8_t);
	/* looked up, so that a libcupti without it still loads us */
	enable_api_fn fn = (enable_api_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "cuptiActivityEnableDriverApi");
	size_t i;

	if (fn) {
		for (i = 0; i < sizeof(traced) / sizeof(traced[0]); i++)
			if (fn(traced[i], 1) != CUPTI_SUCCESS)
				break;
		if (i == sizeof(traced) / sizeof(traced[0]))
			return;
	}
	enable(CUPTI_ACTIVITY_KIND_DRIVER, "DRIVER", 0);
}

__attribute__((visibility("default"))) int InitializeInjection(void);
int InitializeInjection(void)
{
	CUptiResult rc;

	if (initialized)
		return 1;
	initialized = 1;
	atexit(at_exit);
	rc = cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
	if (rc != CUPTI_SUCCESS) {
		report("cuptiActivityRegisterCallbacks", rc);
		write_counts();
		return 1;
	}
	if (enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, "CONCURRENT_KERNEL", 1) < 0 ||
	    enable(CUPTI_ACTIVITY_KIND_MEMORY2, "MEMORY2", 1) < 0) {
		write_counts();
		return 1;
	}
	enable(CUPTI_ACTIVITY_KIND_INTERNAL_LAUNCH_API, "INTERNAL_LAUNCH_API", 0);
	enable(CUPTI_ACTIVITY_KIND_MEMSET, "MEMSET", 0);
	enable(CUPTI_ACTIVITY_KIND_MEMCPY, "MEMCPY", 0);
	enable_driver_records();
	cnt.cupti_ok = 1;
	write_counts();	/* so that a crash still leaves cupti_ok 1 behind */
	return 1;
}
