/*
 * test_preload_graph.c - libphos.so's write sets of CUDA graphs and TMA
 * descriptors (preload/graph.c) over the fake driver (fakegraph.c).
 * Re-executes itself under LD_PRELOAD.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fakecuda.h"
#include "preload_test.h"
#include "preload_cuda.h"

#define D(field) (after.field - before.field)

static int setup(void **state)
{
	(void)state;
	preload_ctx();
	return 0;
}

static uint32_t word0(CUdeviceptr p)
{
	return *(const uint32_t *)(uintptr_t)p;
}

/* a kernel node running body_inc(out, n, in) */
static CUgraphNode add_inc(CUgraph g, CUfunction k, CUdeviceptr out, int n, CUdeviceptr in)
{
	void *kp[] = { &out, &n, &in };
	CUDA_KERNEL_NODE_PARAMS p;
	CUgraphNode node = NULL;

	memset(&p, 0, sizeof(p));
	p.func = k;
	p.gridDimX = p.gridDimY = p.gridDimZ = 1;
	p.blockDimX = p.blockDimY = p.blockDimZ = 1;
	p.kernelParams = kp;
	assert_int_equal(cuGraphAddKernelNode(&node, g, NULL, 0, &p), CUDA_SUCCESS);
	return node;
}

static void set_inc(CUgraphExec x, CUgraphNode node, CUfunction k, CUdeviceptr out, int n,
		    CUdeviceptr in)
{
	void *kp[] = { &out, &n, &in };
	CUDA_KERNEL_NODE_PARAMS p;

	memset(&p, 0, sizeof(p));
	p.func = k;
	p.gridDimX = p.gridDimY = p.gridDimZ = 1;
	p.blockDimX = p.blockDimY = p.blockDimZ = 1;
	p.kernelParams = kp;
	assert_int_equal(cuGraphExecKernelNodeSetParams(x, node, &p), CUDA_SUCCESS);
}

static CUDA_MEMSET_NODE_PARAMS memset_of(CUdeviceptr dst, size_t n)
{
	CUDA_MEMSET_NODE_PARAMS m;

	memset(&m, 0, sizeof(m));
	m.dst = dst;
	m.value = 7;
	m.elementSize = 1;
	m.width = n;
	m.height = 1;
	return m;
}

static CUgraphNode add_memset(CUgraph g, CUdeviceptr dst, size_t n)
{
	CUDA_MEMSET_NODE_PARAMS m = memset_of(dst, n);
	CUgraphNode node = NULL;

	assert_int_equal(cuGraphAddMemsetNode(&node, g, NULL, 0, &m, NULL), CUDA_SUCCESS);
	return node;
}

static void alloc3(CUdeviceptr *a, CUdeviceptr *b, CUdeviceptr *c)
{
	assert_int_equal(cuMemAlloc(a, 256), CUDA_SUCCESS);
	assert_int_equal(cuMemAlloc(b, 256), CUDA_SUCCESS);
	assert_int_equal(cuMemAlloc(c, 256), CUDA_SUCCESS);
}

static void free3(CUdeviceptr a, CUdeviceptr b, CUdeviceptr c)
{
	cuMemFree(a);
	cuMemFree(b);
	cuMemFree(c);
}

/* ---- the hooks are libphos's, by every route ------------------------------ */

static void test_hooked(void **state)
{
	static const char *const names[] = {
		"cuGraphInstantiateWithFlags", "cuGraphInstantiateWithParams",
		"cuGraphExecDestroy", "cuGraphExecKernelNodeSetParams",
		"cuGraphExecMemsetNodeSetParams", "cuGraphExecChildGraphNodeSetParams",
		"cuGraphExecUpdate", "cuTensorMapEncodeTiled",
	};
	size_t i;

	(void)state;
	assert_true(in_libphos((void *)cuGraphInstantiateWithFlags));
	assert_true(in_libphos((void *)cuGraphExecKernelNodeSetParams_v2));
	assert_true(in_libphos((void *)cuTensorMapEncodeTiled));
	assert_false(in_libphos((void *)cuGraphGetNodes));	/* not hooked */
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		CUdriverProcAddressQueryResult st = 99;
		void *fn = NULL;

		assert_int_equal(cuGetProcAddress_v2(names[i], &fn, 12080, 0, &st), CUDA_SUCCESS);
		assert_int_equal(st, CU_GET_PROC_ADDRESS_SUCCESS);
		if (!in_libphos(fn))
			fail_msg("cuGetProcAddress(%s) is not libphos's", names[i]);
	}
}

/* ---- a kernel writing A and a memset of B mark A and B, not C --------------- */

static void test_kernel_and_memset(void **state)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 3, INC_SIZES, body_inc);
	struct phos_stats before, after;
	CUdeviceptr a, b, c;
	CUgraph g;
	CUgraphExec x;
	uint64_t wa, wb, wc;

	(void)state;
	alloc3(&a, &b, &c);
	assert_int_equal(cuGraphCreate(&g, 0), CUDA_SUCCESS);
	add_inc(g, k, a, 1, a);		/* A named twice: marked once a launch */
	add_memset(g, b, 16);
	assert_int_equal(cuGraphInstantiate(&x, g, 0), CUDA_SUCCESS);
	wa = writes_of(a), wb = writes_of(b), wc = writes_of(c);
	before = preload_stats();
	assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
	assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(word0(a), 2);		/* the fake ran it twice */
	assert_int_equal(word0(b), 0x07070707u);
	assert_int_equal(writes_of(a) - wa, 2);
	assert_int_equal(writes_of(b) - wb, 2);
	assert_int_equal(writes_of(c) - wc, 0);
	assert_int_equal(D(launches), 2);
	assert_int_equal(D(graph_launches), 2);
	assert_int_equal(D(graph_launches_known), 2);
	assert_int_equal(D(launches_unknown), 0);
	assert_int_equal(D(wset_marks), 4);
	/* WithParams (and its _ptsz twin) walk the same way */
	{
		CUDA_GRAPH_INSTANTIATE_PARAMS ip;
		CUgraphExec y;

		memset(&ip, 0, sizeof(ip));
		assert_int_equal(cuGraphInstantiateWithParams(&y, g, &ip), CUDA_SUCCESS);
		before = preload_stats();
		assert_int_equal(cuGraphLaunch(y, NULL), CUDA_SUCCESS);
		after = preload_stats();
		assert_int_equal(D(graph_launches_known), 1);
		assert_int_equal(writes_of(a) - wa, 3);
		assert_int_equal(writes_of(c) - wc, 0);
		assert_int_equal(cuGraphExecDestroy(y), CUDA_SUCCESS);
	}
	assert_int_equal(cuGraphExecDestroy(x), CUDA_SUCCESS);
	cuGraphDestroy(g);
	free3(a, b, c);
}

/* ---- what the walker does not know makes the launch unknown --------------- */

static void test_unknown(void **state)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 3, INC_SIZES, body_inc);
	CUfunction opaque = fakecuda_kernel(FAKECUDA_OPAQUE, 0, NULL, NULL);
	struct phos_stats before, after;
	CUDA_MEM_ALLOC_NODE_PARAMS ap;
	CUdeviceptr a, b, c;
	CUgraph g, h, e;
	CUgraphExec x, y, z;
	CUgraphNode node;
	uint64_t wa;

	(void)state;
	alloc3(&a, &b, &c);
	/* a mem-alloc node */
	assert_int_equal(cuGraphCreate(&g, 0), CUDA_SUCCESS);
	add_inc(g, k, a, 1, a);
	memset(&ap, 0, sizeof(ap));
	ap.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
	ap.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	ap.bytesize = 64;
	assert_int_equal(cuGraphAddMemAllocNode(&node, g, NULL, 0, &ap), CUDA_SUCCESS);
	assert_int_equal(cuGraphInstantiate(&x, g, 0), CUDA_SUCCESS);
	/* a kernel of unknown layout */
	assert_int_equal(cuGraphCreate(&h, 0), CUDA_SUCCESS);
	add_memset(h, b, 8);
	{
		CUDA_KERNEL_NODE_PARAMS p;

		memset(&p, 0, sizeof(p));
		p.func = opaque;
		assert_int_equal(cuGraphAddKernelNode(&node, h, NULL, 0, &p), CUDA_SUCCESS);
	}
	assert_int_equal(cuGraphInstantiate(&y, h, 0), CUDA_SUCCESS);
	/* empty and host nodes write nothing: known, and empty */
	assert_int_equal(cuGraphCreate(&e, 0), CUDA_SUCCESS);
	assert_int_equal(cuGraphAddEmptyNode(&node, e, NULL, 0), CUDA_SUCCESS);
	assert_int_equal(cuGraphInstantiate(&z, e, 0), CUDA_SUCCESS);

	wa = writes_of(a);
	before = preload_stats();
	assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
	assert_int_equal(cuGraphLaunch(y, NULL), CUDA_SUCCESS);
	assert_int_equal(cuGraphLaunch(z, NULL), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(graph_launches), 3);
	assert_int_equal(D(launches_unknown), 2);
	assert_int_equal(D(graph_launches_known), 1);
	assert_int_equal(D(wset_marks), 0);
	assert_int_equal(writes_of(a), wa);	/* unknown: nothing listed */
	assert_int_equal(word0(a), 1);		/* yet it ran */
	cuGraphExecDestroy(x);
	cuGraphExecDestroy(y);
	cuGraphExecDestroy(z);
	cuGraphDestroy(g);
	cuGraphDestroy(h);
	cuGraphDestroy(e);
	free3(a, b, c);
}

/* ---- exec set-params move the write set ------------------------------------- */

static void test_exec_set_params(void **state)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 3, INC_SIZES, body_inc);
	struct phos_stats before, after;
	CUdeviceptr a, b, c;
	CUgraph g;
	CUgraphExec x;
	CUgraphNode kn, mn;
	uint64_t wa, wb, wc;

	(void)state;
	alloc3(&a, &b, &c);
	assert_int_equal(cuGraphCreate(&g, 0), CUDA_SUCCESS);
	kn = add_inc(g, k, a, 1, a);
	mn = add_memset(g, b, 8);
	assert_int_equal(cuGraphInstantiate(&x, g, 0), CUDA_SUCCESS);

	/* the kernel now writes C (reading B) */
	set_inc(x, kn, k, c, 1, b);
	wa = writes_of(a), wb = writes_of(b), wc = writes_of(c);
	assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
	assert_int_equal(word0(c), 1);		/* ran before the memset of B */
	assert_int_equal(writes_of(c) - wc, 1);
	assert_int_equal(writes_of(a) - wa, 0);		/* A is no longer named */
	assert_int_equal(writes_of(b) - wb, 1);		/* memset (and a read of it) */

	/* and the memset now sets A */
	{
		CUDA_MEMSET_NODE_PARAMS m = memset_of(a, 8);

		assert_int_equal(cuGraphExecMemsetNodeSetParams(x, mn, &m, NULL), CUDA_SUCCESS);
	}
	set_inc(x, kn, k, c, 1, c);
	wa = writes_of(a), wb = writes_of(b), wc = writes_of(c);
	before = preload_stats();
	assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(graph_launches_known), 1);
	assert_int_equal(writes_of(a) - wa, 1);
	assert_int_equal(writes_of(b) - wb, 0);
	assert_int_equal(writes_of(c) - wc, 1);

	/* the graph's own node params did not change: a new exec writes A, B */
	{
		CUgraphExec y;

		assert_int_equal(cuGraphInstantiate(&y, g, 0), CUDA_SUCCESS);
		wa = writes_of(a), wb = writes_of(b), wc = writes_of(c);
		assert_int_equal(cuGraphLaunch(y, NULL), CUDA_SUCCESS);
		assert_int_equal(writes_of(a) - wa, 1);
		assert_int_equal(writes_of(b) - wb, 1);
		assert_int_equal(writes_of(c) - wc, 0);
		cuGraphExecDestroy(y);
	}

	/* cuGraphExecUpdate to a graph of the same shape writing C and A */
	{
		CUgraph g2;

		assert_int_equal(cuGraphCreate(&g2, 0), CUDA_SUCCESS);
		add_inc(g2, k, c, 1, c);
		add_memset(g2, a, 4);
		assert_int_equal(cuGraphExecUpdate(x, g2, NULL), CUDA_SUCCESS);
		wa = writes_of(a), wb = writes_of(b), wc = writes_of(c);
		assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
		assert_int_equal(writes_of(a) - wa, 1);
		assert_int_equal(writes_of(b) - wb, 0);
		assert_int_equal(writes_of(c) - wc, 1);
		/* a failed update (other shape) leaves the exec unknown */
		add_memset(g2, b, 4);
		assert_int_not_equal(cuGraphExecUpdate(x, g2, NULL), CUDA_SUCCESS);
		before = preload_stats();
		assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
		after = preload_stats();
		assert_int_equal(D(launches_unknown), 1);
		assert_int_equal(D(graph_launches_known), 0);
		cuGraphDestroy(g2);
	}
	assert_int_equal(cuGraphExecDestroy(x), CUDA_SUCCESS);
	cuGraphDestroy(g);
	free3(a, b, c);
}

/* ---- child graphs are walked, and replaced ----------------------------------- */

static void test_child_graph(void **state)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 3, INC_SIZES, body_inc);
	struct phos_stats before, after;
	CUdeviceptr a, b, c;
	CUgraph g, child, inner, child2;
	CUgraphExec x;
	CUgraphNode cn;
	uint64_t wa, wb, wc;

	(void)state;
	alloc3(&a, &b, &c);
	/* g: kernel(A); child { memset(B); inner { kernel(B) } } */
	assert_int_equal(cuGraphCreate(&inner, 0), CUDA_SUCCESS);
	add_inc(inner, k, b, 1, b);
	assert_int_equal(cuGraphCreate(&child, 0), CUDA_SUCCESS);
	add_memset(child, b, 4);
	assert_int_equal(cuGraphAddChildGraphNode(&cn, child, NULL, 0, inner), CUDA_SUCCESS);
	assert_int_equal(cuGraphCreate(&g, 0), CUDA_SUCCESS);
	add_inc(g, k, a, 1, a);
	assert_int_equal(cuGraphAddChildGraphNode(&cn, g, NULL, 0, child), CUDA_SUCCESS);
	assert_int_equal(cuGraphInstantiate(&x, g, 0), CUDA_SUCCESS);

	wa = writes_of(a), wb = writes_of(b), wc = writes_of(c);
	before = preload_stats();
	assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(graph_launches_known), 1);
	assert_int_equal(word0(b), 0x07070707u + 1);	/* the inner kernel ran */
	assert_int_equal(writes_of(a) - wa, 1);
	assert_int_equal(writes_of(b) - wb, 1);
	assert_int_equal(writes_of(c) - wc, 0);

	/* the child node now runs a graph that sets C */
	assert_int_equal(cuGraphCreate(&child2, 0), CUDA_SUCCESS);
	add_memset(child2, c, 4);
	assert_int_equal(cuGraphExecChildGraphNodeSetParams(x, cn, child2), CUDA_SUCCESS);
	wa = writes_of(a), wb = writes_of(b), wc = writes_of(c);
	before = preload_stats();
	assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
	after = preload_stats();
	assert_int_equal(D(graph_launches_known), 1);
	assert_int_equal(writes_of(a) - wa, 1);
	assert_int_equal(writes_of(b) - wb, 0);		/* the old subtree is gone */
	assert_int_equal(writes_of(c) - wc, 1);

	/* a child with an unknown node makes the whole exec unknown */
	{
		CUDA_MEM_ALLOC_NODE_PARAMS ap;
		CUgraphNode node;
		CUgraph bad;

		assert_int_equal(cuGraphCreate(&bad, 0), CUDA_SUCCESS);
		memset(&ap, 0, sizeof(ap));
		ap.bytesize = 64;
		assert_int_equal(cuGraphAddMemAllocNode(&node, bad, NULL, 0, &ap), CUDA_SUCCESS);
		assert_int_equal(cuGraphExecChildGraphNodeSetParams(x, cn, bad), CUDA_SUCCESS);
		before = preload_stats();
		assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
		after = preload_stats();
		assert_int_equal(D(graph_launches_known), 0);
		assert_int_equal(D(launches_unknown), 1);
		cuGraphDestroy(bad);
	}
	cuGraphExecDestroy(x);
	cuGraphDestroy(g);
	cuGraphDestroy(child);
	cuGraphDestroy(child2);
	cuGraphDestroy(inner);
	free3(a, b, c);
}

/* ---- TMA descriptors --------------------------------------------------------- */

/* params: a 128-byte CUtensorMap, int v: stores v at the tensor's address */
static void body_tma(void **p)
{
	const CUtensorMap *m = p[0];

	*(uint32_t *)fakecuda_tma_address(m) = (uint32_t)*(int *)p[1];
}

static const size_t tma_sizes[] = { sizeof(CUtensorMap), 4 };

static void test_tma(void **state)
{
	CUfunction k = fakecuda_kernel(FAKECUDA_KERNEL, 2, tma_sizes, body_tma);
	struct phos_stats before, after;
	CUtensorMap m, other;
	cuuint64_t dim[2] = { 16, 8 }, strides[1] = { 64 };
	cuuint32_t box[2] = { 16, 8 }, es[2] = { 1, 1 };
	CUdeviceptr t, u;
	uint64_t wt, wu;
	int v = 42;
	size_t i;

	(void)state;
	assert_int_equal(cuMemAlloc(&t, 4096), CUDA_SUCCESS);
	assert_int_equal(cuMemAlloc(&u, 4096), CUDA_SUCCESS);
	assert_int_equal(cuTensorMapEncodeTiled(&m, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2,
						(void *)(uintptr_t)t, dim, strides, box, es,
						CU_TENSOR_MAP_INTERLEAVE_NONE,
						CU_TENSOR_MAP_SWIZZLE_NONE,
						CU_TENSOR_MAP_L2_PROMOTION_NONE,
						CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
			 CUDA_SUCCESS);
	/* the word scan alone cannot see it: no word of m lies in T */
	for (i = 0; i < 16; i++)
		assert_true(m.opaque[i] < t || m.opaque[i] >= t + 4096);

	wt = writes_of(t), wu = writes_of(u);
	before = preload_stats();
	{
		void *kp[] = { &m, &v };

		assert_int_equal(cuLaunchKernel(k, 1, 1, 1, 1, 1, 1, 0, NULL, kp, NULL),
				 CUDA_SUCCESS);
	}
	after = preload_stats();
	assert_int_equal(word0(t), 42);
	assert_int_equal(writes_of(t) - wt, 1);
	assert_int_equal(writes_of(u) - wu, 0);
	assert_int_equal(D(tma_marks), 1);
	assert_int_equal(D(launches_unknown), 0);

	/* 128 bytes that are no recorded descriptor mark nothing */
	other = m;
	other.opaque[15] ^= 1;
	before = preload_stats();
	{
		void *kp[] = { &other, &v };

		assert_int_equal(cuLaunchKernel(k, 1, 1, 1, 1, 1, 1, 0, NULL, kp, NULL),
				 CUDA_SUCCESS);
	}
	after = preload_stats();
	assert_int_equal(D(tma_marks), 0);
	assert_int_equal(writes_of(t) - wt, 1);

	/* cuTensorMapReplaceAddress moves it to U */
	other = m;
	assert_int_equal(cuTensorMapReplaceAddress(&other, (void *)(uintptr_t)u), CUDA_SUCCESS);
	wt = writes_of(t), wu = writes_of(u);
	{
		void *kp[] = { &other, &v };

		assert_int_equal(cuLaunchKernel(k, 1, 1, 1, 1, 1, 1, 0, NULL, kp, NULL),
				 CUDA_SUCCESS);
	}
	assert_int_equal(writes_of(u) - wu, 1);
	assert_int_equal(writes_of(t) - wt, 0);

	/* a kernel node with the descriptor: the graph marks T */
	{
		CUDA_KERNEL_NODE_PARAMS p;
		void *kp[] = { &m, &v };
		CUgraphNode node;
		CUgraphExec x;
		CUgraph g;

		memset(&p, 0, sizeof(p));
		p.func = k;
		p.kernelParams = kp;
		assert_int_equal(cuGraphCreate(&g, 0), CUDA_SUCCESS);
		assert_int_equal(cuGraphAddKernelNode(&node, g, NULL, 0, &p), CUDA_SUCCESS);
		assert_int_equal(cuGraphInstantiate(&x, g, 0), CUDA_SUCCESS);
		wt = writes_of(t), wu = writes_of(u);
		before = preload_stats();
		assert_int_equal(cuGraphLaunch(x, NULL), CUDA_SUCCESS);
		after = preload_stats();
		assert_int_equal(D(graph_launches_known), 1);
		assert_int_equal(writes_of(t) - wt, 1);
		assert_int_equal(writes_of(u) - wu, 0);
		cuGraphExecDestroy(x);
		cuGraphDestroy(g);
	}
	cuMemFree(t);
	cuMemFree(u);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hooked),
		cmocka_unit_test(test_kernel_and_memset),
		cmocka_unit_test(test_unknown),
		cmocka_unit_test(test_exec_set_params),
		cmocka_unit_test(test_child_graph),
		cmocka_unit_test(test_tma),
	};

	(void)argc;
	/* write sets of every launch, not only while a save or load needs
	 * them: these tests check the sets themselves */
	setenv("PHOS_WSET_ALWAYS", "1", 1);
	preload_reexec(argv);
	return cmocka_run_group_tests(tests, setup, NULL);
}
