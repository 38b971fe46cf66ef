/*
 * test_preload_dlopen.c - the static-cudart route: a program that does
 * not link libcuda, dlopens it RTLD_LOCAL, takes cuGetProcAddress_v2
 * with dlsym and asks it for everything else.  libphos must see every
 * call, and must not make driver symbols appear before the driver is
 * loaded.  Re-executes itself under LD_PRELOAD.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cuda.h>

#include "preload_test.h"

typedef CUresult (*gpa2_fn)(const char *, void **, int, cuuint64_t,
			    CUdriverProcAddressQueryResult *);
typedef CUresult (*init_fn)(unsigned int);
typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);
typedef CUresult (*free_fn)(CUdeviceptr);
typedef unsigned long (*calls_fn)(const char *);

static void test_no_driver_no_symbols(void **state)
{
	(void)state;
	/* as without libphos: nothing answers for the driver's names */
	assert_null(dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"));
	assert_null(dlsym(RTLD_DEFAULT, "cuGetProcAddress_v2"));
	assert_null(dlsym(RTLD_DEFAULT, "cuInit"));
	assert_int_equal(preload_stats().initialized, 0);
}

static void test_static_cudart_route(void **state)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	struct phos_stats before, after;
	gpa2_fn gpa;
	init_fn init;
	alloc_fn alloc;
	free_fn mfree;
	calls_fn calls;
	CUdriverProcAddressQueryResult st;
	CUdeviceptr p[3];
	int i;

	(void)state;
	assert_non_null(h);
	calls = (calls_fn)dlsym(h, "fakecuda_calls");
	assert_non_null(calls);
	gpa = (gpa2_fn)dlsym(h, "cuGetProcAddress_v2");
	assert_true(in_libphos((void *)gpa));
	before = preload_stats();
	assert_int_equal(gpa("cuInit", (void **)&init, 12000, 0, &st), CUDA_SUCCESS);
	assert_false(in_libphos((void *)init));
	assert_int_equal(init(0), CUDA_SUCCESS);
	assert_int_equal(gpa("cuMemAlloc", (void **)&alloc, 12000, 0, &st), CUDA_SUCCESS);
	assert_int_equal(gpa("cuMemFree", (void **)&mfree, 12000, 0, &st), CUDA_SUCCESS);
	assert_true(in_libphos((void *)alloc));
	assert_true(in_libphos((void *)mfree));
	for (i = 0; i < 3; i++)
		assert_int_equal(alloc(&p[i], 100), CUDA_SUCCESS);
	for (i = 0; i < 3; i++)
		assert_int_equal(mfree(p[i]), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(after.initialized, 1);
	assert_int_equal(after.allocs - before.allocs, 3);
	assert_int_equal(after.frees - before.frees, 3);
	assert_int_equal(after.bytes_freed - before.bytes_freed, 300);
	assert_int_equal(after.gpa_lookups - before.gpa_lookups, 3);
	assert_int_equal(after.gpa_wrapped - before.gpa_wrapped, 2);
	assert_int_equal(calls("cuMemAlloc_v2"), 3);
	assert_int_equal(calls("cuMemFree_v2"), 3);
	/* the driver is local to its handle: still not in the global scope */
	assert_null(dlsym(RTLD_DEFAULT, "cuInit"));
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_driver_no_symbols),
		cmocka_unit_test(test_static_cudart_route),
	};

	(void)argc;
	preload_reexec(argv);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
