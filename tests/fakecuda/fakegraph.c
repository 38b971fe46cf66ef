/*
 * fakegraph.c - graphs and tensor maps of the fake driver (fakecuda.h).
 *
 * A graph is a list of nodes run in the order they were added (the
 * dependencies are accepted and ignored).  Kernel nodes copy their
 * parameter values when added, as the driver does; a child graph node
 * clones its graph.  Instantiation clones the whole graph into the exec,
 * each clone remembering the node it came from, so the exec's
 * set-params calls find their node by the graph's handle.  cuGraphLaunch
 * runs the exec's nodes: kernels' host bodies, memsets, memcpys, child
 * graphs, host functions; empty and mem-alloc nodes do nothing.
 *
 * Tensor maps: the 128 bytes hold a magic word, the global address XORed
 * with FAKE_TMA_KEY (so that no parameter word equals it: only a lookup
 * of the whole descriptor finds it) and the arguments; equal arguments
 * give equal bytes.  fakecuda_tma_address() decodes the address.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fakecuda.h"
#include "fakeint.h"

#undef cuGraphInstantiate
#undef cuGraphExecUpdate
#undef cuGraphExecKernelNodeSetParams
#undef cuGraphKernelNodeGetParams
#undef cuGraphAddKernelNode

#define GMAGIC 0x67726170u
#define NMAGIC 0x6e6f6465u
#define XMAGIC 0x65786563u
#define MAXNODES 256
#define MAXP 64

struct fgraph;

struct fnode {
	unsigned magic;
	CUgraphNodeType type;
	const struct fnode *orig;	/* in an exec: the node it was cloned from */
	/* kernel */
	CUfunction f;
	unsigned np;
	size_t off[MAXP], size[MAXP], bytes;
	unsigned char *buf;
	void *kp[MAXP];
	/* memset, memcpy, child graph, host */
	CUDA_MEMSET_NODE_PARAMS ms;
	CUDA_MEMCPY3D mc;
	struct fgraph *child;
	CUhostFn fn;
	void *ud;
};

struct fgraph {
	unsigned magic;
	size_t n;
	struct fnode *nodes[MAXNODES];
};

struct fexec {
	unsigned magic;
	struct fgraph *g;	/* a clone */
};

static struct fgraph *graph_of(CUgraph h)
{
	struct fgraph *g = (struct fgraph *)h;

	return g && g->magic == GMAGIC ? g : NULL;
}

static struct fnode *node_of(CUgraphNode h)
{
	struct fnode *n = (struct fnode *)h;

	return n && n->magic == NMAGIC ? n : NULL;
}

static struct fexec *exec_of(CUgraphExec h)
{
	struct fexec *x = (struct fexec *)h;

	return x && x->magic == XMAGIC ? x : NULL;
}

static void graph_free(struct fgraph *g);

static void node_free(struct fnode *n)
{
	if (!n)
		return;
	free(n->buf);
	graph_free(n->child);
	n->magic = 0;
	free(n);
}

static void graph_free(struct fgraph *g)
{
	size_t i;

	if (!g)
		return;
	for (i = 0; i < g->n; i++)
		node_free(g->nodes[i]);
	g->magic = 0;
	free(g);
}

/* A kernel node's layout and a copy of its parameter values. */
static CUresult kernel_set(struct fnode *n, CUfunction f, CUkernel k, void **kp, void **extra)
{
	unsigned i;
	size_t end = 0;
	CUresult r;

	if (!f)
		f = (CUfunction)k;
	if (!f)
		return CUDA_ERROR_INVALID_VALUE;
	for (i = 0; i < MAXP; i++) {
		r = cuKernelGetParamInfo((CUkernel)f, i, &n->off[i], &n->size[i]);
		if (r == CUDA_ERROR_INVALID_HANDLE)
			r = cuFuncGetParamInfo(f, i, &n->off[i], &n->size[i]);
		if (r != CUDA_SUCCESS)
			break;
		if (n->off[i] + n->size[i] > end)
			end = n->off[i] + n->size[i];
	}
	/* INVALID_VALUE: past the last; INVALID_HANDLE: an opaque kernel,
	 * kept without parameters (libphos cannot know its layout) */
	if (r != CUDA_SUCCESS && r != CUDA_ERROR_INVALID_VALUE && r != CUDA_ERROR_INVALID_HANDLE)
		return r;
	free(n->buf);
	n->buf = calloc(1, end ? end : 1);
	if (!n->buf)
		return CUDA_ERROR_OUT_OF_MEMORY;
	n->f = f;
	n->np = i;
	n->bytes = end;
	for (i = 0; i < n->np; i++) {
		if (kp)
			memcpy(n->buf + n->off[i], kp[i], n->size[i]);
		else if (extra && extra[0] == CU_LAUNCH_PARAM_BUFFER_POINTER)
			memcpy(n->buf + n->off[i], (char *)extra[1] + n->off[i], n->size[i]);
		else
			return CUDA_ERROR_INVALID_VALUE;
		n->kp[i] = n->buf + n->off[i];
	}
	return CUDA_SUCCESS;
}

static struct fgraph *graph_clone(const struct fgraph *g);

static struct fnode *node_clone(const struct fnode *n)
{
	struct fnode *c = malloc(sizeof(*c));
	unsigned i;

	if (!c)
		return NULL;
	*c = *n;
	c->orig = n;
	c->buf = NULL;
	c->child = NULL;
	if (n->type == CU_GRAPH_NODE_TYPE_KERNEL) {
		c->buf = malloc(n->bytes ? n->bytes : 1);
		if (!c->buf) {
			free(c);
			return NULL;
		}
		memcpy(c->buf, n->buf, n->bytes);
		for (i = 0; i < n->np; i++)
			c->kp[i] = c->buf + n->off[i];
	}
	if (n->child && !(c->child = graph_clone(n->child))) {
		node_free(c);
		return NULL;
	}
	return c;
}

static struct fgraph *graph_clone(const struct fgraph *g)
{
	struct fgraph *c = calloc(1, sizeof(*c));
	size_t i;

	if (!c)
		return NULL;
	c->magic = GMAGIC;
	for (i = 0; i < g->n; i++) {
		c->nodes[i] = node_clone(g->nodes[i]);
		if (!c->nodes[i]) {
			graph_free(c);
			return NULL;
		}
		c->n = i + 1;
	}
	return c;
}

/* The exec's clone of graph node h (searching child graphs too). */
static struct fnode *find_clone(struct fgraph *g, const struct fnode *h)
{
	size_t i;

	for (i = 0; i < g->n; i++) {
		struct fnode *r = g->nodes[i]->orig == h ? g->nodes[i] : NULL;

		if (!r && g->nodes[i]->child)
			r = find_clone(g->nodes[i]->child, h);
		if (r)
			return r;
	}
	return NULL;
}

/* ---- building graphs ------------------------------------------------------ */

FAKE(cuGraphCreate, (CUgraph *ph, unsigned int flags))
{
	struct fgraph *g;

	(void)flags;
	hit("cuGraphCreate");
	if (!ph)
		return CUDA_ERROR_INVALID_VALUE;
	g = calloc(1, sizeof(*g));
	if (!g)
		return CUDA_ERROR_OUT_OF_MEMORY;
	g->magic = GMAGIC;
	*ph = (CUgraph)g;
	return CUDA_SUCCESS;
}

FAKE(cuGraphDestroy, (CUgraph h))
{
	struct fgraph *g = graph_of(h);

	hit("cuGraphDestroy");
	if (!g)
		return CUDA_ERROR_INVALID_VALUE;
	graph_free(g);
	return CUDA_SUCCESS;
}

static CUresult add(CUgraphNode *ph, CUgraph hg, CUgraphNodeType type, struct fnode **out)
{
	struct fgraph *g = graph_of(hg);
	struct fnode *n;

	if (!ph || !g)
		return CUDA_ERROR_INVALID_VALUE;
	if (g->n == MAXNODES)
		return CUDA_ERROR_OUT_OF_MEMORY;
	n = calloc(1, sizeof(*n));
	if (!n)
		return CUDA_ERROR_OUT_OF_MEMORY;
	n->magic = NMAGIC;
	n->type = type;
	*out = n;
	return CUDA_SUCCESS;
}

static CUresult added(CUgraphNode *ph, CUgraph hg, struct fnode *n, CUresult r)
{
	struct fgraph *g = graph_of(hg);

	if (r != CUDA_SUCCESS) {
		node_free(n);
		return r;
	}
	g->nodes[g->n++] = n;
	*ph = (CUgraphNode)n;
	return CUDA_SUCCESS;
}

FAKE(cuGraphAddKernelNode_v2, (CUgraphNode *ph, CUgraph g, const CUgraphNode *deps,
			       size_t ndeps, const CUDA_KERNEL_NODE_PARAMS_v2 *p))
{
	struct fnode *n;
	CUresult r;

	(void)deps, (void)ndeps;
	hit("cuGraphAddKernelNode_v2");
	if (!p)
		return CUDA_ERROR_INVALID_VALUE;
	r = add(ph, g, CU_GRAPH_NODE_TYPE_KERNEL, &n);
	if (r != CUDA_SUCCESS)
		return r;
	return added(ph, g, n, kernel_set(n, p->func, p->kern, p->kernelParams, p->extra));
}

FAKE(cuGraphAddMemsetNode, (CUgraphNode *ph, CUgraph g, const CUgraphNode *deps, size_t ndeps,
			    const CUDA_MEMSET_NODE_PARAMS *p, CUcontext ctx))
{
	struct fnode *n;
	CUresult r;

	(void)deps, (void)ndeps, (void)ctx;
	hit("cuGraphAddMemsetNode");
	if (!p || (p->elementSize != 1 && p->elementSize != 2 && p->elementSize != 4))
		return CUDA_ERROR_INVALID_VALUE;
	r = add(ph, g, CU_GRAPH_NODE_TYPE_MEMSET, &n);
	if (r != CUDA_SUCCESS)
		return r;
	n->ms = *p;
	return added(ph, g, n, CUDA_SUCCESS);
}

FAKE(cuGraphAddMemcpyNode, (CUgraphNode *ph, CUgraph g, const CUgraphNode *deps, size_t ndeps,
			    const CUDA_MEMCPY3D *p, CUcontext ctx))
{
	struct fnode *n;
	CUresult r;

	(void)deps, (void)ndeps, (void)ctx;
	hit("cuGraphAddMemcpyNode");
	if (!p)
		return CUDA_ERROR_INVALID_VALUE;
	r = add(ph, g, CU_GRAPH_NODE_TYPE_MEMCPY, &n);
	if (r != CUDA_SUCCESS)
		return r;
	n->mc = *p;
	return added(ph, g, n, CUDA_SUCCESS);
}

FAKE(cuGraphAddChildGraphNode, (CUgraphNode *ph, CUgraph g, const CUgraphNode *deps,
				size_t ndeps, CUgraph child))
{
	struct fgraph *c = graph_of(child);
	struct fnode *n;
	CUresult r;

	(void)deps, (void)ndeps;
	hit("cuGraphAddChildGraphNode");
	if (!c)
		return CUDA_ERROR_INVALID_VALUE;
	r = add(ph, g, CU_GRAPH_NODE_TYPE_GRAPH, &n);
	if (r != CUDA_SUCCESS)
		return r;
	n->child = graph_clone(c);	/* the driver clones it too */
	return added(ph, g, n, n->child ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY);
}

FAKE(cuGraphAddEmptyNode, (CUgraphNode *ph, CUgraph g, const CUgraphNode *deps, size_t ndeps))
{
	struct fnode *n;
	CUresult r;

	(void)deps, (void)ndeps;
	hit("cuGraphAddEmptyNode");
	r = add(ph, g, CU_GRAPH_NODE_TYPE_EMPTY, &n);
	return r != CUDA_SUCCESS ? r : added(ph, g, n, CUDA_SUCCESS);
}

FAKE(cuGraphAddHostNode, (CUgraphNode *ph, CUgraph g, const CUgraphNode *deps, size_t ndeps,
			  const CUDA_HOST_NODE_PARAMS *p))
{
	struct fnode *n;
	CUresult r;

	(void)deps, (void)ndeps;
	hit("cuGraphAddHostNode");
	if (!p || !p->fn)
		return CUDA_ERROR_INVALID_VALUE;
	r = add(ph, g, CU_GRAPH_NODE_TYPE_HOST, &n);
	if (r != CUDA_SUCCESS)
		return r;
	n->fn = p->fn;
	n->ud = p->userData;
	return added(ph, g, n, CUDA_SUCCESS);
}

/* host memory that stays allocated (graph-owned memory is never freed
 * here) */
FAKE(cuGraphAddMemAllocNode, (CUgraphNode *ph, CUgraph g, const CUgraphNode *deps,
			      size_t ndeps, CUDA_MEM_ALLOC_NODE_PARAMS *p))
{
	struct fnode *n;
	CUresult r;
	void *mem;

	(void)deps, (void)ndeps;
	hit("cuGraphAddMemAllocNode");
	if (!p || !p->bytesize)
		return CUDA_ERROR_INVALID_VALUE;
	r = add(ph, g, CU_GRAPH_NODE_TYPE_MEM_ALLOC, &n);
	if (r != CUDA_SUCCESS)
		return r;
	mem = calloc(1, p->bytesize);
	p->dptr = (CUdeviceptr)(uintptr_t)mem;
	return added(ph, g, n, mem ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY);
}

/* ---- queries ---------------------------------------------------------------- */

FAKE(cuGraphGetNodes, (CUgraph h, CUgraphNode *nodes, size_t *num))
{
	struct fgraph *g = graph_of(h);
	size_t i;

	hit("cuGraphGetNodes");
	if (!g || !num)
		return CUDA_ERROR_INVALID_VALUE;
	if (nodes)
		for (i = 0; i < g->n && i < *num; i++)
			nodes[i] = (CUgraphNode)g->nodes[i];
	*num = g->n;
	return CUDA_SUCCESS;
}

FAKE(cuGraphNodeGetType, (CUgraphNode h, CUgraphNodeType *type))
{
	struct fnode *n = node_of(h);

	hit("cuGraphNodeGetType");
	if (!n || !type)
		return CUDA_ERROR_INVALID_VALUE;
	*type = n->type;
	return CUDA_SUCCESS;
}

FAKE(cuGraphKernelNodeGetParams_v2, (CUgraphNode h, CUDA_KERNEL_NODE_PARAMS_v2 *p))
{
	struct fnode *n = node_of(h);

	hit("cuGraphKernelNodeGetParams_v2");
	if (!n || !p || n->type != CU_GRAPH_NODE_TYPE_KERNEL)
		return CUDA_ERROR_INVALID_VALUE;
	memset(p, 0, sizeof(*p));
	p->func = n->f;
	p->gridDimX = p->gridDimY = p->gridDimZ = 1;
	p->blockDimX = p->blockDimY = p->blockDimZ = 1;
	p->kernelParams = n->kp;
	return CUDA_SUCCESS;
}

FAKE(cuGraphMemsetNodeGetParams, (CUgraphNode h, CUDA_MEMSET_NODE_PARAMS *p))
{
	struct fnode *n = node_of(h);

	hit("cuGraphMemsetNodeGetParams");
	if (!n || !p || n->type != CU_GRAPH_NODE_TYPE_MEMSET)
		return CUDA_ERROR_INVALID_VALUE;
	*p = n->ms;
	return CUDA_SUCCESS;
}

FAKE(cuGraphMemcpyNodeGetParams, (CUgraphNode h, CUDA_MEMCPY3D *p))
{
	struct fnode *n = node_of(h);

	hit("cuGraphMemcpyNodeGetParams");
	if (!n || !p || n->type != CU_GRAPH_NODE_TYPE_MEMCPY)
		return CUDA_ERROR_INVALID_VALUE;
	*p = n->mc;
	return CUDA_SUCCESS;
}

FAKE(cuGraphChildGraphNodeGetGraph, (CUgraphNode h, CUgraph *out))
{
	struct fnode *n = node_of(h);

	hit("cuGraphChildGraphNodeGetGraph");
	if (!n || !out || n->type != CU_GRAPH_NODE_TYPE_GRAPH)
		return CUDA_ERROR_INVALID_VALUE;
	*out = (CUgraph)n->child;
	return CUDA_SUCCESS;
}

/* ---- execs ------------------------------------------------------------------- */

static CUresult instantiate(CUgraphExec *px, CUgraph h)
{
	struct fgraph *g = graph_of(h);
	struct fexec *x;

	if (!px || !g)
		return CUDA_ERROR_INVALID_VALUE;
	x = calloc(1, sizeof(*x));
	if (!x)
		return CUDA_ERROR_OUT_OF_MEMORY;
	x->magic = XMAGIC;
	x->g = graph_clone(g);
	if (!x->g) {
		free(x);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	*px = (CUgraphExec)x;
	return CUDA_SUCCESS;
}

FAKE(cuGraphInstantiateWithFlags, (CUgraphExec *px, CUgraph g, unsigned long long flags))
{
	(void)flags;
	hit("cuGraphInstantiateWithFlags");
	return instantiate(px, g);
}

FAKE(cuGraphInstantiate_v2, (CUgraphExec *px, CUgraph g, CUgraphNode *err, char *log,
			     size_t size))
{
	(void)err, (void)log, (void)size;
	hit("cuGraphInstantiate_v2");
	return instantiate(px, g);
}

FAKE(cuGraphInstantiateWithParams, (CUgraphExec *px, CUgraph g,
				    CUDA_GRAPH_INSTANTIATE_PARAMS *p))
{
	CUresult r;

	hit("cuGraphInstantiateWithParams");
	r = instantiate(px, g);
	if (p)
		p->result_out = r == CUDA_SUCCESS ? CUDA_GRAPH_INSTANTIATE_SUCCESS
						  : CUDA_GRAPH_INSTANTIATE_ERROR;
	return r;
}

FAKE(cuGraphInstantiateWithParams_ptsz, (CUgraphExec *px, CUgraph g,
					 CUDA_GRAPH_INSTANTIATE_PARAMS *p))
{
	hit("cuGraphInstantiateWithParams_ptsz");
	return cuGraphInstantiateWithParams(px, g, p);
}

FAKE(cuGraphExecDestroy, (CUgraphExec h))
{
	struct fexec *x = exec_of(h);

	hit("cuGraphExecDestroy");
	if (!x)
		return CUDA_ERROR_INVALID_VALUE;
	graph_free(x->g);
	x->magic = 0;
	free(x);
	return CUDA_SUCCESS;
}

/* the exec's clone of node h, of the given type */
static struct fnode *exec_node(CUgraphExec hx, CUgraphNode h, CUgraphNodeType type)
{
	struct fexec *x = exec_of(hx);
	struct fnode *n = x ? find_clone(x->g, node_of(h)) : NULL;

	return n && n->type == type ? n : NULL;
}

FAKE(cuGraphExecKernelNodeSetParams_v2, (CUgraphExec x, CUgraphNode h,
					 const CUDA_KERNEL_NODE_PARAMS_v2 *p))
{
	struct fnode *n = exec_node(x, h, CU_GRAPH_NODE_TYPE_KERNEL);

	hit("cuGraphExecKernelNodeSetParams_v2");
	if (!n || !p)
		return CUDA_ERROR_INVALID_VALUE;
	return kernel_set(n, p->func, p->kern, p->kernelParams, p->extra);
}

FAKE(cuGraphExecMemsetNodeSetParams, (CUgraphExec x, CUgraphNode h,
				      const CUDA_MEMSET_NODE_PARAMS *p, CUcontext ctx))
{
	struct fnode *n = exec_node(x, h, CU_GRAPH_NODE_TYPE_MEMSET);

	(void)ctx;
	hit("cuGraphExecMemsetNodeSetParams");
	if (!n || !p)
		return CUDA_ERROR_INVALID_VALUE;
	n->ms = *p;
	return CUDA_SUCCESS;
}

FAKE(cuGraphExecMemcpyNodeSetParams, (CUgraphExec x, CUgraphNode h, const CUDA_MEMCPY3D *p,
				      CUcontext ctx))
{
	struct fnode *n = exec_node(x, h, CU_GRAPH_NODE_TYPE_MEMCPY);

	(void)ctx;
	hit("cuGraphExecMemcpyNodeSetParams");
	if (!n || !p)
		return CUDA_ERROR_INVALID_VALUE;
	n->mc = *p;
	return CUDA_SUCCESS;
}

FAKE(cuGraphExecChildGraphNodeSetParams, (CUgraphExec x, CUgraphNode h, CUgraph child))
{
	struct fnode *n = exec_node(x, h, CU_GRAPH_NODE_TYPE_GRAPH);
	struct fgraph *c = graph_of(child), *clone;

	hit("cuGraphExecChildGraphNodeSetParams");
	if (!n || !c)
		return CUDA_ERROR_INVALID_VALUE;
	clone = graph_clone(c);
	if (!clone)
		return CUDA_ERROR_OUT_OF_MEMORY;
	graph_free(n->child);
	n->child = clone;
	return CUDA_SUCCESS;
}

/* same number and types of nodes, or CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED */
static int same_shape(const struct fgraph *a, const struct fgraph *b)
{
	size_t i;

	if (a->n != b->n)
		return 0;
	for (i = 0; i < a->n; i++)
		if (a->nodes[i]->type != b->nodes[i]->type)
			return 0;
	return 1;
}

FAKE(cuGraphExecUpdate_v2, (CUgraphExec hx, CUgraph hg, CUgraphExecUpdateResultInfo *info))
{
	struct fexec *x = exec_of(hx);
	struct fgraph *g = graph_of(hg), *clone;

	hit("cuGraphExecUpdate_v2");
	if (info)
		memset(info, 0, sizeof(*info));
	if (!x || !g)
		return CUDA_ERROR_INVALID_VALUE;
	if (!same_shape(x->g, g)) {
		if (info)
			info->result = CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED;
		return CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE;
	}
	clone = graph_clone(g);
	if (!clone)
		return CUDA_ERROR_OUT_OF_MEMORY;
	graph_free(x->g);
	x->g = clone;
	if (info)
		info->result = CU_GRAPH_EXEC_UPDATE_SUCCESS;
	return CUDA_SUCCESS;
}

/* ---- running an exec ----------------------------------------------------------- */

static void run_memset(const CUDA_MEMSET_NODE_PARAMS *m)
{
	size_t y, i;

	for (y = 0; y < m->height; y++) {
		char *row = (char *)(uintptr_t)m->dst + y * m->pitch;

		for (i = 0; i < m->width; i++)
			memcpy(row + i * m->elementSize, &m->value, m->elementSize);
	}
}

static void run_memcpy(const CUDA_MEMCPY3D *c)
{
	char *dst = c->dstMemoryType == CU_MEMORYTYPE_HOST ? c->dstHost
							    : (char *)(uintptr_t)c->dstDevice;
	const char *src = c->srcMemoryType == CU_MEMORYTYPE_HOST
				  ? c->srcHost
				  : (const char *)(uintptr_t)c->srcDevice;
	size_t dp = c->dstPitch ? c->dstPitch : c->WidthInBytes;
	size_t sp = c->srcPitch ? c->srcPitch : c->WidthInBytes;
	size_t dh = c->dstHeight ? c->dstHeight : c->Height;
	size_t sh = c->srcHeight ? c->srcHeight : c->Height;
	size_t y, z;

	for (z = 0; z < c->Depth; z++)
		for (y = 0; y < c->Height; y++)
			memcpy(dst + c->dstXInBytes + (c->dstY + y) * dp + (c->dstZ + z) * dh * dp,
			       src + c->srcXInBytes + (c->srcY + y) * sp + (c->srcZ + z) * sh * sp,
			       c->WidthInBytes);
}

static CUresult run_graph(const struct fgraph *g)
{
	size_t i;
	CUresult r = CUDA_SUCCESS;

	for (i = 0; i < g->n && r == CUDA_SUCCESS; i++) {
		const struct fnode *n = g->nodes[i];

		switch (n->type) {
		case CU_GRAPH_NODE_TYPE_KERNEL:
			r = fakecuda_run(n->f, (void **)n->kp, NULL);
			break;
		case CU_GRAPH_NODE_TYPE_MEMSET:
			run_memset(&n->ms);
			break;
		case CU_GRAPH_NODE_TYPE_MEMCPY:
			run_memcpy(&n->mc);
			break;
		case CU_GRAPH_NODE_TYPE_GRAPH:
			r = run_graph(n->child);
			break;
		case CU_GRAPH_NODE_TYPE_HOST:
			n->fn(n->ud);
			break;
		default:
			break;
		}
	}
	return r;
}

/* cuGraphLaunch (fakecuda.c): NULL or a handle that is no exec runs
 * nothing and succeeds, as the fake always did */
CUresult fakegraph_launch(CUgraphExec h, CUstream s)
{
	struct fexec *x = exec_of(h);

	(void)s;
	return x ? run_graph(x->g) : CUDA_SUCCESS;
}

/* ---- tensor maps ------------------------------------------------------------ */

#define TMA_MAGIC_TILED 0x544d4154494c4544ull
#define TMA_MAGIC_IM2COL 0x544d41494d32434full
#define TMA_MAGIC_WIDE 0x544d41574944452eull
#define FAKE_TMA_KEY 0xa5a5a5a5a5a5a5a5ull

static CUresult tma_fill(CUtensorMap *m, uint64_t magic, CUtensorMapDataType t, cuuint32_t rank,
			 void *addr, const cuuint64_t *dim, const cuuint64_t *strides)
{
	cuuint32_t i;

	if (!m || !addr || !dim || rank == 0 || rank > 5 || ((uintptr_t)addr & 15) ||
	    (rank > 1 && !strides))
		return CUDA_ERROR_INVALID_VALUE;
	memset(m, 0, sizeof(*m));
	m->opaque[0] = magic;
	m->opaque[1] = (uint64_t)(uintptr_t)addr ^ FAKE_TMA_KEY;
	m->opaque[2] = (uint64_t)t | (uint64_t)rank << 8;
	for (i = 0; i < rank; i++)
		m->opaque[3 + i] = dim[i];
	for (i = 0; i + 1 < rank; i++)
		m->opaque[8 + i] = strides[i];
	return CUDA_SUCCESS;
}

EXPORT void *fakecuda_tma_address(const CUtensorMap *m)
{
	return (void *)(uintptr_t)(m->opaque[1] ^ FAKE_TMA_KEY);
}

FAKE(cuTensorMapEncodeTiled, (CUtensorMap *m, CUtensorMapDataType t, cuuint32_t rank, void *addr,
			      const cuuint64_t *dim, const cuuint64_t *strides,
			      const cuuint32_t *box, const cuuint32_t *es, CUtensorMapInterleave il,
			      CUtensorMapSwizzle sw, CUtensorMapL2promotion l2,
			      CUtensorMapFloatOOBfill oob))
{
	(void)box, (void)es, (void)il, (void)sw, (void)l2, (void)oob;
	hit("cuTensorMapEncodeTiled");
	return tma_fill(m, TMA_MAGIC_TILED, t, rank, addr, dim, strides);
}

FAKE(cuTensorMapEncodeIm2col, (CUtensorMap *m, CUtensorMapDataType t, cuuint32_t rank,
			       void *addr, const cuuint64_t *dim, const cuuint64_t *strides,
			       const int *lo, const int *hi, cuuint32_t cpp, cuuint32_t ppc,
			       const cuuint32_t *es, CUtensorMapInterleave il, CUtensorMapSwizzle sw,
			       CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob))
{
	(void)lo, (void)hi, (void)cpp, (void)ppc, (void)es, (void)il, (void)sw, (void)l2,
		(void)oob;
	hit("cuTensorMapEncodeIm2col");
	return tma_fill(m, TMA_MAGIC_IM2COL, t, rank, addr, dim, strides);
}

FAKE(cuTensorMapEncodeIm2colWide, (CUtensorMap *m, CUtensorMapDataType t, cuuint32_t rank,
				   void *addr, const cuuint64_t *dim, const cuuint64_t *strides,
				   int lo, int hi, cuuint32_t cpp, cuuint32_t ppc,
				   const cuuint32_t *es, CUtensorMapInterleave il,
				   CUtensorMapIm2ColWideMode mode, CUtensorMapSwizzle sw,
				   CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob))
{
	(void)lo, (void)hi, (void)cpp, (void)ppc, (void)es, (void)il, (void)mode, (void)sw,
		(void)l2, (void)oob;
	hit("cuTensorMapEncodeIm2colWide");
	return tma_fill(m, TMA_MAGIC_WIDE, t, rank, addr, dim, strides);
}

FAKE(cuTensorMapReplaceAddress, (CUtensorMap *m, void *addr))
{
	hit("cuTensorMapReplaceAddress");
	if (!m || !addr || ((uintptr_t)addr & 15))
		return CUDA_ERROR_INVALID_VALUE;
	m->opaque[1] = (uint64_t)(uintptr_t)addr ^ FAKE_TMA_KEY;
	return CUDA_SUCCESS;
}

/* ---- the fake's own addresses (fakecuda_sym) ------------------------------- */

void *fakegraph_sym(const char *name)
{
	static const struct {
		const char *name;
		void *fn;
	} syms[] = {
		{ "cuGraphCreate", (void *)cuGraphCreate },
		{ "cuGraphDestroy", (void *)cuGraphDestroy },
		{ "cuGraphAddKernelNode_v2", (void *)cuGraphAddKernelNode_v2 },
		{ "cuGraphAddMemsetNode", (void *)cuGraphAddMemsetNode },
		{ "cuGraphAddMemcpyNode", (void *)cuGraphAddMemcpyNode },
		{ "cuGraphAddChildGraphNode", (void *)cuGraphAddChildGraphNode },
		{ "cuGraphAddEmptyNode", (void *)cuGraphAddEmptyNode },
		{ "cuGraphAddHostNode", (void *)cuGraphAddHostNode },
		{ "cuGraphAddMemAllocNode", (void *)cuGraphAddMemAllocNode },
		{ "cuGraphGetNodes", (void *)cuGraphGetNodes },
		{ "cuGraphNodeGetType", (void *)cuGraphNodeGetType },
		{ "cuGraphKernelNodeGetParams_v2", (void *)cuGraphKernelNodeGetParams_v2 },
		{ "cuGraphMemsetNodeGetParams", (void *)cuGraphMemsetNodeGetParams },
		{ "cuGraphMemcpyNodeGetParams", (void *)cuGraphMemcpyNodeGetParams },
		{ "cuGraphChildGraphNodeGetGraph", (void *)cuGraphChildGraphNodeGetGraph },
		{ "cuGraphInstantiateWithFlags", (void *)cuGraphInstantiateWithFlags },
		{ "cuGraphInstantiate_v2", (void *)cuGraphInstantiate_v2 },
		{ "cuGraphInstantiateWithParams", (void *)cuGraphInstantiateWithParams },
		{ "cuGraphInstantiateWithParams_ptsz", (void *)cuGraphInstantiateWithParams_ptsz },
		{ "cuGraphExecDestroy", (void *)cuGraphExecDestroy },
		{ "cuGraphExecKernelNodeSetParams_v2", (void *)cuGraphExecKernelNodeSetParams_v2 },
		{ "cuGraphExecMemsetNodeSetParams", (void *)cuGraphExecMemsetNodeSetParams },
		{ "cuGraphExecMemcpyNodeSetParams", (void *)cuGraphExecMemcpyNodeSetParams },
		{ "cuGraphExecChildGraphNodeSetParams",
		  (void *)cuGraphExecChildGraphNodeSetParams },
		{ "cuGraphExecUpdate_v2", (void *)cuGraphExecUpdate_v2 },
		{ "cuTensorMapEncodeTiled", (void *)cuTensorMapEncodeTiled },
		{ "cuTensorMapEncodeIm2col", (void *)cuTensorMapEncodeIm2col },
		{ "cuTensorMapEncodeIm2colWide", (void *)cuTensorMapEncodeIm2colWide },
		{ "cuTensorMapReplaceAddress", (void *)cuTensorMapReplaceAddress },
	};
	size_t i;

	for (i = 0; i < sizeof(syms) / sizeof(syms[0]); i++)
		if (strcmp(syms[i].name, name) == 0)
			return syms[i].fn;
	return NULL;
}
