/*
 * test_preload_hooks.c - libphos.so over the fake driver: the three
 * routes to a hooked function, the counts, the allocation map and write
 * sets as a program sees them.  Re-executes itself under LD_PRELOAD.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "fakecuda.h"
#include "preload_test.h"
#include "preload_cuda.h"

#undef cuGetProcAddress
CUresult cuGetProcAddress(const char *, void **, int, cuuint64_t);

typedef CUresult (*gpa2_fn)(const char *, void **, int, cuuint64_t,
			    CUdriverProcAddressQueryResult *);
typedef CUresult (*gpa1_fn)(const char *, void **, int, cuuint64_t);
typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);
typedef CUresult (*memset_fn)(CUdeviceptr, unsigned char, size_t);
typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
			      unsigned, unsigned, CUstream, void **, void **);

#define PTDS CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
#define D(field) (after.field - before.field)

static void *gpa(const char *sym, int ver, cuuint64_t flags, CUdriverProcAddressQueryResult *st)
{
	CUdriverProcAddressQueryResult s = 99;
	void *fn = NULL;
	CUresult r = cuGetProcAddress_v2(sym, &fn, ver, flags, &s);

	if (st)
		*st = s;
	return r == CUDA_SUCCESS ? fn : NULL;
}

static int setup(void **state)
{
	(void)state;
	preload_ctx();
	return 0;
}

static CUresult launch_inc(CUfunction k, CUdeviceptr out, int n, CUdeviceptr in)
{
	void *kp[] = { &out, &n, &in };

	return cuLaunchKernel(k, 1, 1, 1, 1, 1, 1, 0, NULL, kp, NULL);
}

/* ---- libphos is there, and the exported symbols are its ------------- */

static void test_loaded(void **state)
{
	(void)state;
	assert_true(in_libphos((void *)cuMemAlloc_v2));
	assert_true(in_libphos((void *)cuLaunchKernel));
	assert_false(in_libphos((void *)cuInit));	/* not hooked */
	{
		CUdeviceptr p;

		/* the first hooked call initialises */
		assert_int_equal(cuMemAlloc(&p, 8), CUDA_SUCCESS);
		assert_int_equal(cuMemFree(p), CUDA_SUCCESS);
	}
	assert_int_equal(preload_stats().initialized, 1);
}

/* ---- route 1: exported symbols; counts equal what we did ------------- */

static void test_exported_counts(void **state)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 3, INC_SIZES, body_inc);
	static const size_t sizes[] = { 64, 4096, 1 << 20, 256, 100 };
	CUdeviceptr p[5];
	struct phos_stats before, after;
	unsigned long fake0 = fakecuda_calls("cuMemAlloc_v2");
	uint64_t bytes = 0;
	int i;

	(void)state;
	before = preload_stats();
	for (i = 0; i < 5; i++) {
		assert_int_equal(cuMemAlloc(&p[i], sizes[i]), CUDA_SUCCESS);
		bytes += sizes[i];
	}
	for (i = 0; i < 7; i++)
		assert_int_equal(launch_inc(k, p[1], 4, p[3]), CUDA_SUCCESS);
	for (i = 0; i < 3; i++)
		assert_int_equal(cuMemFree(p[i]), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(allocs), 5);
	assert_int_equal(D(bytes_allocated), bytes);
	assert_int_equal(D(frees), 3);
	assert_int_equal(D(bytes_freed), 64 + 4096 + (1 << 20));
	assert_int_equal(D(launches), 7);
	assert_int_equal(D(launches_unknown), 0);
	assert_int_equal(after.map_entries, before.map_entries + 2);
	assert_int_equal(fakecuda_calls("cuMemAlloc_v2") - fake0, 5);
	/* a failed call is not an allocation */
	assert_int_not_equal(cuMemAlloc(&p[0], 0), CUDA_SUCCESS);
	assert_int_equal(preload_stats().allocs, after.allocs);
	cuMemFree(p[3]);
	cuMemFree(p[4]);
}

/* ---- route 2: dlsym on a libcuda handle ------------------------------ */

static void test_dlsym_route(void **state)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	struct phos_stats before, after;
	alloc_fn f;
	CUdeviceptr p;

	(void)state;
	assert_non_null(h);
	before = preload_stats();
	f = (alloc_fn)dlsym(h, "cuMemAlloc_v2");
	assert_non_null(f);
	assert_ptr_not_equal((void *)f, fakecuda_sym("cuMemAlloc_v2"));
	assert_true(in_libphos((void *)f));
	assert_int_equal(f(&p, 128), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(dlsym_wrapped), 1);
	assert_int_equal(D(allocs), 1);
	assert_int_equal(cuMemFree(p), CUDA_SUCCESS);
	/* names we do not hook come back untouched; unknown ones NULL */
	assert_ptr_equal(dlsym(h, "cuInit"), fakecuda_sym("cuInit"));
	assert_ptr_equal(dlsym(h, "cuStreamIsCapturing"), fakecuda_sym("cuStreamIsCapturing"));
	assert_null(dlsym(h, "cuNoSuchFunction"));
	assert_null(dlsym(h, "not_a_cuda_name"));
	/* the global scope finds our export, which is only answered because
	 * the driver has the function */
	assert_ptr_equal(dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"), (void *)cuMemAlloc_v2);
	assert_ptr_equal(dlsym(h, "cuGetProcAddress_v2"), (void *)cuGetProcAddress_v2);
	dlclose(h);
}

/* dlsym(RTLD_NEXT) keeps its caller: from this executable the next
 * object is libphos itself (preloaded), whose sigaction comes first. */
static void test_rtld_next_semantics(void **state)
{
	void *next = dlsym(RTLD_NEXT, "sigaction");

	(void)state;
	assert_non_null(next);
	assert_true(in_libphos(next));
	assert_ptr_equal(dlsym(RTLD_DEFAULT, "getpid"), (void *)getpid);
	assert_ptr_equal(dlsym(RTLD_NEXT, "getpid"), (void *)getpid);
}

/* ---- route 3: cuGetProcAddress, keyed by (name, version, flags) ------ */

static void test_gpa_versions_and_flags(void **state)
{
	CUdriverProcAddressQueryResult st;
	struct phos_stats before, after;
	launch_fn legacy, ptsz;
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 3, INC_SIZES, body_inc);
	CUdeviceptr a;
	unsigned long l0 = fakecuda_calls("cuLaunchKernel"), p0 = fakecuda_calls("cuLaunchKernel_ptsz");
	int n = 1;
	void *kp[3];

	(void)state;
	before = preload_stats();
	legacy = (launch_fn)gpa("cuLaunchKernel", 12000, 0, &st);
	assert_int_equal(st, CU_GET_PROC_ADDRESS_SUCCESS);
	ptsz = (launch_fn)gpa("cuLaunchKernel", 12000, PTDS, &st);
	assert_int_equal(st, CU_GET_PROC_ADDRESS_SUCCESS);
	assert_true(in_libphos((void *)legacy));
	assert_true(in_libphos((void *)ptsz));
	assert_ptr_not_equal((void *)legacy, (void *)ptsz);
	assert_ptr_equal((void *)legacy, (void *)cuLaunchKernel);
	/* the per-thread one calls the driver's per-thread one */
	assert_int_equal(cuMemAlloc(&a, 64), CUDA_SUCCESS);
	kp[0] = &a;
	kp[1] = &n;
	kp[2] = &a;
	assert_int_equal(ptsz(k, 1, 1, 1, 1, 1, 1, 0, NULL, kp, NULL), CUDA_SUCCESS);
	assert_int_equal(fakecuda_calls("cuLaunchKernel_ptsz") - p0, 1);
	assert_int_equal(fakecuda_calls("cuLaunchKernel") - l0, 0);
	assert_int_equal(legacy(k, 1, 1, 1, 1, 1, 1, 0, NULL, kp, NULL), CUDA_SUCCESS);
	assert_int_equal(fakecuda_calls("cuLaunchKernel") - l0, 1);
	after = preload_stats();
	assert_int_equal(D(launches), 2);
	assert_int_equal(D(gpa_lookups), 2);
	assert_int_equal(D(gpa_wrapped), 2);

	/* an older ABI of the same name is passed through unwrapped */
	assert_ptr_equal(gpa("cuMemAlloc", 2000, 0, NULL), fakecuda_sym("cuMemAlloc"));
	assert_ptr_equal(gpa("cuMemAlloc", 3020, 0, NULL), (void *)cuMemAlloc_v2);
	assert_ptr_equal(gpa("cuMemAlloc", 13000, PTDS, NULL), (void *)cuMemAlloc_v2);
	/* not hooked: the driver's own */
	assert_ptr_equal(gpa("cuInit", 12000, 0, NULL), fakecuda_sym("cuInit"));
	/* symbolStatus passes through */
	assert_null(gpa("cuNoSuchFunction", 12000, 0, &st));
	assert_int_equal(st, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
	assert_null(gpa("cuMemCreate", 9000, 0, &st));
	assert_int_equal(st, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
	/* the lookup functions themselves are hooked, both ABIs */
	assert_ptr_equal(gpa("cuGetProcAddress", 12000, 0, NULL), (void *)cuGetProcAddress_v2);
	{
		gpa1_fn v1 = (gpa1_fn)gpa("cuGetProcAddress", 11030, 0, NULL);
		void *fn = NULL;

		assert_true(in_libphos((void *)v1));
		assert_ptr_not_equal((void *)v1, (void *)cuGetProcAddress_v2);
		assert_int_equal(v1("cuMemFree", &fn, 12000, 0), CUDA_SUCCESS);
		assert_ptr_equal(fn, (void *)cuMemFree_v2);
	}
	assert_int_equal(cuMemFree(a), CUDA_SUCCESS);
}

/* A driver whose lookups return functions of their own: each distinct
 * real function gets its own wrapper (slots 1..3); a fourth is handed out
 * unwrapped and counted. */
static void test_gpa_slots(void **state)
{
	void *w[4];
	struct phos_stats before, after;
	CUdeviceptr a;
	int i;

	(void)state;
	assert_int_equal(cuMemAlloc(&a, 256), CUDA_SUCCESS);
	before = preload_stats();
	for (i = 0; i < 4; i++) {
		fakecuda_set_gpa_internal(i);
		w[i] = gpa("cuMemsetD8", 12000, 0, NULL);
		assert_non_null(w[i]);
	}
	fakecuda_set_gpa_internal(0);
	assert_ptr_equal(gpa("cuMemsetD8", 12020, 0, NULL), w[0]);	/* same real, same wrapper */
	fakecuda_set_gpa_internal(-1);
	for (i = 0; i < 3; i++) {
		char name[64];

		assert_true(in_libphos(w[i]));
		assert_ptr_not_equal(w[i], (void *)cuMemsetD8_v2);
		snprintf(name, sizeof(name), "cuMemsetD8_v2@internal%d", i);
		assert_int_equal(((memset_fn)w[i])(a, 1, 16), CUDA_SUCCESS);
		assert_int_equal(fakecuda_calls(name), 1);
	}
	assert_false(in_libphos(w[3]));
	after = preload_stats();
	assert_int_equal(D(slot_conflicts), 1);
	assert_int_equal(D(memsets), 3);
	assert_int_equal(writes_of(a), 3);
	assert_int_equal(cuMemFree(a), CUDA_SUCCESS);
}

/* A cuGetExportTable lookup does not initialise libphos; the next one does. */
static void test_export_table_does_not_init(void **state)
{
	pid_t pid;
	int status;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *argv[] = { "test_preload_hooks", "--export-table-child", NULL };

		execv("/proc/self/exe", argv);
		_exit(98);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static int export_table_child(void)
{
	void *fn = NULL;
	int before, after;

	cuGetProcAddress_v2("cuGetExportTable", &fn, 12000, 0, NULL);
	before = (int)preload_stats().initialized;
	cuGetProcAddress_v2("cuInit", &fn, 12000, 0, NULL);
	after = (int)preload_stats().initialized;
	return before == 0 && after == 1 ? 0 : 1;
}

/* ---- write sets -------------------------------------------------------- */

static void test_write_sets(void **state)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 3, INC_SIZES, body_inc);
	CUfunction f = fakecuda_kernel(FAKECUDA_FUNCTION, 3, INC_SIZES, body_inc);
	CUfunction o = fakecuda_kernel(FAKECUDA_OPAQUE, 3, INC_SIZES, body_inc);
	struct phos_stats before, after;
	CUdeviceptr out, in, other;
	uint32_t host[4] = { 10, 20, 30, 40 }, back[4];
	unsigned long q0;
	int i;

	(void)state;
	assert_int_equal(cuMemAlloc(&out, 64), CUDA_SUCCESS);
	assert_int_equal(cuMemAlloc(&in, 64), CUDA_SUCCESS);
	assert_int_equal(cuMemAlloc(&other, 64), CUDA_SUCCESS);
	before = preload_stats();
	assert_int_equal(cuMemcpyHtoD(in + 16, host, sizeof(host)), CUDA_SUCCESS);
	assert_int_equal(writes_of(in), 1);
	assert_int_equal(writes_of(out), 0);
	/* interior pointers name their allocations; the int does not */
	assert_int_equal(launch_inc(k, out + 4, 4, in + 16), CUDA_SUCCESS);
	assert_int_equal(cuMemcpyDtoH(back, out + 4, sizeof(back)), CUDA_SUCCESS);
	for (i = 0; i < 4; i++)
		assert_int_equal(back[i], host[i] + 1);	/* the kernel really ran */
	assert_int_equal(writes_of(out), 1);
	assert_int_equal(writes_of(in), 2);
	assert_int_equal(writes_of(other), 0);
	/* parameter layouts are cached per kernel */
	q0 = fakecuda_calls("cuKernelGetParamInfo");
	for (i = 0; i < 10; i++)
		assert_int_equal(launch_inc(k, out, 1, in), CUDA_SUCCESS);
	assert_int_equal(fakecuda_calls("cuKernelGetParamInfo"), q0);
	assert_int_equal(writes_of(out), 11);
	/* the same through a CU_LAUNCH_PARAM_BUFFER_POINTER buffer */
	{
		unsigned char buf[24] = { 0 };
		size_t bsize = sizeof(buf);
		int n = 1;
		void *extra[] = { CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE,
				  &bsize, CU_LAUNCH_PARAM_END };

		memcpy(buf + fakecuda_param_offset(k, 0), &other, 8);
		memcpy(buf + fakecuda_param_offset(k, 1), &n, 4);
		memcpy(buf + fakecuda_param_offset(k, 2), &in, 8);
		assert_int_equal(cuLaunchKernel(k, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, extra),
				 CUDA_SUCCESS);
		assert_int_equal(writes_of(other), 1);
	}
	/* a CUfunction: cuFuncGetParamInfo is the fallback */
	assert_int_equal(launch_inc(f, other, 1, in), CUDA_SUCCESS);
	assert_int_equal(writes_of(other), 2);
	assert_true(fakecuda_calls("cuFuncGetParamInfo") > 0);
	/* neither answers: unknown, nothing marked */
	assert_int_equal(launch_inc(o, other, 1, in), CUDA_SUCCESS);
	assert_int_equal(writes_of(other), 2);
	/* no parameters at all: a known, empty write set */
	{
		CUfunction z = fakecuda_kernel(FAKECUDA_KERNEL, 0, NULL, NULL);
		CUfunction zf = fakecuda_kernel(FAKECUDA_FUNCTION, 0, NULL, NULL);

		assert_int_equal(cuLaunchKernel(z, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL),
				 CUDA_SUCCESS);
		assert_int_equal(cuLaunchKernel(zf, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL),
				 CUDA_SUCCESS);
	}
	/* memset and 2D copy destinations */
	assert_int_equal(cuMemsetD8(other, 0, 64), CUDA_SUCCESS);
	assert_int_equal(writes_of(other), 3);
	{
		CUDA_MEMCPY2D c = {
			.srcMemoryType = CU_MEMORYTYPE_HOST, .srcHost = host, .srcPitch = 8,
			.dstMemoryType = CU_MEMORYTYPE_DEVICE, .dstDevice = out, .dstPitch = 16,
			.WidthInBytes = 8, .Height = 2,
		};

		assert_int_equal(cuMemcpy2D(&c), CUDA_SUCCESS);
		assert_int_equal(writes_of(out), 12);
	}
	after = preload_stats();
	assert_int_equal(D(launches), 16);
	assert_int_equal(D(launches_unknown), 1);
	assert_int_equal(D(copies), 2);
	assert_int_equal(D(memsets), 1);
	cuMemFree(out);
	cuMemFree(in);
	cuMemFree(other);
}

static void test_capture_and_graphs(void **state)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 3, INC_SIZES, body_inc);
	struct phos_stats before, after;
	CUdeviceptr a;
	CUgraph g = NULL;

	(void)state;
	assert_int_equal(cuMemAlloc(&a, 64), CUDA_SUCCESS);
	before = preload_stats();
	assert_int_equal(cuStreamBeginCapture(NULL, CU_STREAM_CAPTURE_MODE_GLOBAL), CUDA_SUCCESS);
	assert_int_equal(launch_inc(k, a, 1, a), CUDA_SUCCESS);
	assert_int_equal(writes_of(a), 0);	/* recorded, not run */
	assert_int_equal(cuStreamEndCapture(NULL, &g), CUDA_SUCCESS);
	assert_non_null(g);
	assert_int_equal(launch_inc(k, a, 1, a), CUDA_SUCCESS);
	assert_int_equal(writes_of(a), 1);
	/* an end without a capture ends nothing */
	assert_int_not_equal(cuStreamEndCapture(NULL, &g), CUDA_SUCCESS);
	/* a capture libphos did not see begin: its launches look real, and
	 * their write sets are marked (conservative, never wrong) */
	fakecuda_set_capturing(1);
	assert_int_equal(launch_inc(k, a, 1, a), CUDA_SUCCESS);
	fakecuda_set_capturing(0);
	assert_int_equal(writes_of(a), 2);
	assert_int_equal(cuGraphLaunch(NULL, NULL), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(launches), 4);
	assert_int_equal(D(launches_captured), 1);
	assert_int_equal(D(graph_launches), 1);
	assert_int_equal(D(launches_unknown), 1);	/* graphs are not walked yet */
	cuMemFree(a);
}

/* ---- kinds of allocations ------------------------------------------------ */

static void test_vmm(void **state)
{
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 },
	};
	CUmemAccessDesc acc = { .location = prop.location,
				.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	const size_t sz = 2u << 20;
	struct phos_stats before, after;
	CUmemGenericAllocationHandle h;
	CUdeviceptr va;
	uint64_t base, size;
	int kind;

	(void)state;
	before = preload_stats();
	assert_int_equal(cuMemCreate(&h, sz, &prop, 0), CUDA_SUCCESS);
	assert_int_equal(cuMemAddressReserve(&va, 2 * sz, 0, 0, 0), CUDA_SUCCESS);
	assert_int_equal(cuMemMap(va + sz, sz, 0, h, 0), CUDA_SUCCESS);
	assert_int_equal(cuMemSetAccess(va + sz, sz, &acc, 1), CUDA_SUCCESS);
	assert_int_equal(preload_alloc_query(va + sz + 100, &base, &size, &kind, NULL), 0);
	assert_int_equal(base, va + sz);
	assert_int_equal(size, sz);
	assert_int_equal(kind, PHOS_ALLOC_VMM);
	assert_int_equal(preload_alloc_query(va, NULL, NULL, NULL, NULL), -1);	/* reserved only */
	assert_int_equal(cuMemsetD32(va + sz, 0xdeadbeef, 16), CUDA_SUCCESS);
	assert_int_equal(writes_of(va + sz), 1);
	assert_int_equal(cuMemUnmap(va + sz, sz), CUDA_SUCCESS);
	assert_int_equal(preload_alloc_query(va + sz + 100, NULL, NULL, NULL, NULL), -1);
	assert_int_equal(cuMemRelease(h), CUDA_SUCCESS);
	assert_int_equal(cuMemAddressFree(va, 2 * sz), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(allocs), 1);
	assert_int_equal(D(frees), 1);
	assert_int_equal(D(bytes_allocated), sz);
	assert_int_equal(D(bytes_freed), sz);
	assert_int_equal(D(maps), 1);
	assert_int_equal(D(unmaps), 1);
	assert_int_equal(after.map_entries, before.map_entries);
}

static void test_async_pitch_host(void **state)
{
	typedef CUresult (*aa_fn)(CUdeviceptr *, size_t, CUstream);
	typedef CUresult (*fa_fn)(CUdeviceptr, CUstream);
	aa_fn alloc_ptsz = (aa_fn)gpa("cuMemAllocAsync", 12000, PTDS, NULL);
	fa_fn free_ptsz = (fa_fn)gpa("cuMemFreeAsync", 12000, PTDS, NULL);
	struct phos_stats before, after;
	CUdeviceptr a, b, p;
	size_t pitch;
	void *h1, *h2;
	uint64_t size;
	int kind;

	(void)state;
	assert_true(in_libphos((void *)alloc_ptsz));
	before = preload_stats();
	assert_int_equal(cuMemAllocAsync(&a, 1000, NULL), CUDA_SUCCESS);
	assert_int_equal(alloc_ptsz(&b, 2000, NULL), CUDA_SUCCESS);
	assert_int_equal(fakecuda_calls("cuMemAllocAsync_ptsz"), 1);
	assert_int_equal(preload_alloc_query(b + 1999, NULL, &size, &kind, NULL), 0);
	assert_int_equal(kind, PHOS_ALLOC_ASYNC);
	/* stream-ordered free: gone from the map when enqueued */
	assert_int_equal(cuMemFreeAsync(a, NULL), CUDA_SUCCESS);
	assert_int_equal(preload_alloc_query(a, NULL, NULL, NULL, NULL), -1);
	assert_int_equal(free_ptsz(b, NULL), CUDA_SUCCESS);
	assert_int_equal(cuMemAllocPitch(&p, &pitch, 100, 3, 4), CUDA_SUCCESS);
	assert_int_equal(preload_alloc_query(p, NULL, &size, &kind, NULL), 0);
	assert_int_equal(kind, PHOS_ALLOC_PITCH);
	assert_int_equal(size, pitch * 3);
	assert_int_equal(cuMemHostAlloc(&h1, 300, 0), CUDA_SUCCESS);
	assert_int_equal(cuMemAllocHost(&h2, 400), CUDA_SUCCESS);
	assert_int_equal(preload_alloc_query((uint64_t)(uintptr_t)h2 + 5, NULL, NULL, &kind, NULL), 0);
	assert_int_equal(kind, PHOS_ALLOC_HOST);
	assert_int_equal(cuMemFreeHost(h1), CUDA_SUCCESS);
	assert_int_equal(cuMemFreeHost(h2), CUDA_SUCCESS);
	assert_int_equal(cuMemFree(p), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(allocs), 5);
	assert_int_equal(D(frees), 5);
	assert_int_equal(D(bytes_allocated), D(bytes_freed));
	assert_int_equal(after.map_entries, before.map_entries);
}

/* ---- threads: counts stay exact, the map consistent --------------------- */

enum { THREADS = 8, ITERS = 500 };

static void *worker(void *arg)
{
	CUfunction k = arg;
	int i;

	for (i = 0; i < ITERS; i++) {
		CUdeviceptr a, b;

		if (cuMemAlloc(&a, 64) != CUDA_SUCCESS || cuMemAlloc(&b, 128) != CUDA_SUCCESS)
			return (void *)1;
		if (launch_inc(k, a, 1, b) != CUDA_SUCCESS || preload_alloc_query(a, NULL, NULL, NULL,
										  NULL) != 0)
			return (void *)1;
		if (cuMemFree(a) != CUDA_SUCCESS || cuMemFree(b) != CUDA_SUCCESS)
			return (void *)1;
	}
	return NULL;
}

static void test_threads(void **state)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 3, INC_SIZES, body_inc);
	struct phos_stats before, after;
	pthread_t t[THREADS];
	void *ret;
	int i;

	(void)state;
	before = preload_stats();
	for (i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker, k), 0);
	for (i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
	}
	after = preload_stats();
	assert_int_equal(D(allocs), 2 * THREADS * ITERS);
	assert_int_equal(D(frees), 2 * THREADS * ITERS);
	assert_int_equal(D(launches), THREADS * ITERS);
	assert_int_equal(D(wset_marks), 2 * THREADS * ITERS);
	assert_int_equal(D(bytes_allocated), D(bytes_freed));
	assert_int_equal(after.map_entries, before.map_entries);
}

/* Counts are kept per thread (libphos's slots, 1024 of them; threads past
 * those share an overflow slot): more short-lived threads than slots,
 * in waves running at once, and every launch and allocation is counted. */
enum { WAVES = 44, WAVE = 25 };	/* 1100 threads */

static void *one_launch(void *arg)
{
	CUfunction k = arg;
	CUdeviceptr a, b;

	if (cuMemAlloc(&a, 64) != CUDA_SUCCESS || cuMemAlloc(&b, 64) != CUDA_SUCCESS)
		return (void *)1;
	if (launch_inc(k, a, 1, b) != CUDA_SUCCESS)
		return (void *)1;
	if (cuMemFree(a) != CUDA_SUCCESS || cuMemFree(b) != CUDA_SUCCESS)
		return (void *)1;
	return NULL;
}

static void test_many_threads(void **state)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 3, INC_SIZES, body_inc);
	struct phos_stats before, after;
	pthread_t t[WAVE];
	void *ret;

	(void)state;
	before = preload_stats();
	for (int w = 0; w < WAVES; w++) {
		for (int i = 0; i < WAVE; i++)
			assert_int_equal(pthread_create(&t[i], NULL, one_launch, k), 0);
		for (int i = 0; i < WAVE; i++) {
			assert_int_equal(pthread_join(t[i], &ret), 0);
			assert_null(ret);
		}
	}
	after = preload_stats();
	assert_int_equal(D(launches), WAVES * WAVE);
	assert_int_equal(D(allocs), 2 * WAVES * WAVE);
	assert_int_equal(D(frees), 2 * WAVES * WAVE);
	assert_int_equal(D(wset_marks), 2 * WAVES * WAVE);
	assert_int_equal(after.map_entries, before.map_entries);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loaded),
		cmocka_unit_test(test_exported_counts),
		cmocka_unit_test(test_dlsym_route),
		cmocka_unit_test(test_rtld_next_semantics),
		cmocka_unit_test(test_gpa_versions_and_flags),
		cmocka_unit_test(test_gpa_slots),
		cmocka_unit_test(test_export_table_does_not_init),
		cmocka_unit_test(test_write_sets),
		cmocka_unit_test(test_capture_and_graphs),
		cmocka_unit_test(test_vmm),
		cmocka_unit_test(test_async_pitch_host),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_many_threads),
	};

	/* write sets of every launch, not only while a save or load needs
	 * them: these tests check the sets themselves */
	setenv("PHOS_WSET_ALWAYS", "1", 1);
	preload_reexec(argv);
	if (argc > 1 && strcmp(argv[1], "--export-table-child") == 0)
		return export_table_child();
	return cmocka_run_group_tests(tests, setup, NULL);
}
