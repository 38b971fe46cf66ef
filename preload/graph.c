/*
 * graph.c - write sets of CUDA graphs and of TMA descriptors
 * (DESIGN.md §5).
 *
 * Graphs: when a graph is instantiated, libphos walks it (cuGraphGetNodes,
 * cuGraphNodeGetType, the node's parameters) and keeps, per CUgraphExec,
 * what each node may write:
 *
 *   kernel      every 8-byte-aligned word of its parameters that could be
 *               a pointer (the scan of wset.c), and the memory of the
 *               recorded TMA descriptors among its 128-byte parameters;
 *               a kernel without a known layout makes the exec unknown
 *   memset      its destination range
 *   memcpy      its destination range (arrays are not tracked)
 *   child graph walked, its nodes kept under the child node
 *   empty, host, event record/wait: nothing
 *   anything else (conditional, mem alloc/free, batch mem op, external
 *   semaphores, a type newer than this file): the exec is unknown.
 *
 * Words are kept, not the allocations they fell in at instantiation:
 * cuGraphLaunch looks each up in the allocation map as it is then, so an
 * allocation made (or moved) after instantiation is found all the same.
 * Words below 64 KiB or above 2^57 cannot be user addresses and are
 * dropped.  A launch marks each allocation once, however many words or
 * ranges fall in it.
 *
 * Exec updates: the cuGraphExec*NodeSetParams calls replace that node's
 * part (a child graph node: its whole subtree); cuGraphExecUpdate walks
 * the new graph again.  A node we do not have, or an update that fails
 * in a way we cannot follow, makes the exec unknown, never smaller.
 *
 * TMA: cuTensorMapEncode{Tiled,Im2col,Im2colWide} record the 128 opaque
 * bytes they produced with the range they address (computed from
 * globalDim/globalStrides/data type; the allocation containing
 * globalAddress when that cannot be computed).  A launch parameter of
 * 128 bytes equal to a recorded descriptor marks that range.  The table
 * is bounded; once full, an unmatched 128-byte parameter makes its launch
 * (or graph) unknown.
 *
 * Locking: one mutex over the exec table, held while a launch marks (it
 * takes the map's read lock inside); walks run outside it.  The TMA table
 * has its own rwlock, never held across a call into alloc.c.
 */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "phos_int.h"

/* cuda.h renames these to their newest versions; we define the old ones */
#undef cuGraphInstantiate
#undef cuGraphExecKernelNodeSetParams
#undef cuGraphExecUpdate

#define TMA_BYTES ((uint32_t)sizeof(CUtensorMap))
#define MAX_DEPTH 16		/* child graphs deeper than this: unknown */
#define PTR_MIN 0x10000ull	/* below mmap_min_addr: never an address */
#define PTR_MAX (1ull << 57)	/* above any user virtual address */

/* ---- the driver functions the walk calls (resolved once) ------------- */

#define REAL(var, type, name)								\
	static void *var##_slot[1];							\
	type var = (type)phos_real_get(var##_slot, 0, name)

typedef CUresult (*getnodes_fn)(CUgraph, CUgraphNode *, size_t *);
typedef CUresult (*gettype_fn)(CUgraphNode, CUgraphNodeType *);
typedef CUresult (*kparams_fn)(CUgraphNode, CUDA_KERNEL_NODE_PARAMS_v2 *);
typedef CUresult (*msparams_fn)(CUgraphNode, CUDA_MEMSET_NODE_PARAMS *);
typedef CUresult (*mcparams_fn)(CUgraphNode, CUDA_MEMCPY3D *);
typedef CUresult (*child_fn)(CUgraphNode, CUgraph *);

/* ---- write sets: words and ranges -------------------------------------- */

struct grange {
	uint64_t start, end;	/* [start, end) */
	bool word;		/* a parameter word: the allocation containing it */
};

struct rlist {
	bool unknown;
	size_t n, cap;
	struct grange *v;
};

static void rl_add(struct rlist *l, uint64_t start, uint64_t end, bool word)
{
	if (l->unknown || end <= start)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct grange *v = realloc(l->v, cap * sizeof(*v));

		if (!v) {
			l->unknown = true;	/* cannot list it: assume all */
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct grange){ start, end, word };
}

static void rl_word(struct rlist *l, uint64_t w)
{
	if (w >= PTR_MIN && w < PTR_MAX)
		rl_add(l, w, w + 1, true);
}

static void rl_range(struct rlist *l, uint64_t start, uint64_t len)
{
	uint64_t end = start + len;

	if (len == 0)
		return;
	if (end < start)
		end = UINT64_MAX;
	rl_add(l, start, end, false);
}

static void rl_free(struct rlist *l)
{
	free(l->v);
	*l = (struct rlist){ 0 };
}

static int gr_cmp(const void *a, const void *b)
{
	const struct grange *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return (int)x->word - (int)y->word;
}

/* Sort and drop duplicates. */
static void rl_sort(struct rlist *l)
{
	size_t i, k = 0;

	if (l->n < 2)
		return;
	qsort(l->v, l->n, sizeof(l->v[0]), gr_cmp);
	for (i = 1; i < l->n; i++)
		if (gr_cmp(&l->v[i], &l->v[k]) != 0)
			l->v[++k] = l->v[i];
	l->n = k + 1;
}

/*
 * Mark every allocation the sorted list names, each once: an allocation
 * ending at `done` or before has been marked already.
 */
static void mark_list(const struct rlist *l)
{
	uint64_t done = 0, b, sz;
	size_t i;

	for (i = 0; i < l->n; i++) {
		uint64_t s = l->v[i].start, e = l->v[i].end;

		if (e <= done)
			continue;
		if (s < done)
			s = done;
		if (l->v[i].word) {
			if (phos_alloc_query(s, &b, &sz, NULL, NULL) < 0)
				continue;
			phos_write_range(s, 1);
			done = b + sz;
			continue;
		}
		phos_write_range(s, e - s);
		done = e;
		if (phos_alloc_query(e - 1, &b, &sz, NULL, NULL) == 0 && b + sz > e)
			done = b + sz;
	}
}

/* ---- TMA descriptors ----------------------------------------------------- */

#define TMA_CAP 4096		/* power of two; filled to 3/4 at most */

struct tma {
	bool used;
	unsigned char key[128];
	uint64_t addr, len;	/* len 0: the allocation containing addr */
};

static struct tma *tma_tab;
static unsigned tma_n;
static bool tma_full;		/* a descriptor was not recorded */
static pthread_rwlock_t tma_lock = PTHREAD_RWLOCK_INITIALIZER;

_Static_assert(sizeof(CUtensorMap) == 128, "CUtensorMap is 128 bytes");

static size_t tma_hash(const unsigned char *k)
{
	uint64_t h = 0xcbf29ce484222325ull;
	unsigned i;

	for (i = 0; i < 128; i++)
		h = (h ^ k[i]) * 0x100000001b3ull;
	return (size_t)(h ^ (h >> 29)) & (TMA_CAP - 1);
}

/* The slot holding key, or the empty slot where it would go; NULL if the
 * table is absent.  Caller holds tma_lock. */
static struct tma *tma_slot(const unsigned char *key)
{
	size_t h, i;

	if (!tma_tab)
		return NULL;
	h = tma_hash(key);
	for (i = 0; i < TMA_CAP; i++) {
		struct tma *t = &tma_tab[(h + i) & (TMA_CAP - 1)];

		if (!t->used || memcmp(t->key, key, 128) == 0)
			return t;
	}
	return NULL;
}

static void tma_record(const CUtensorMap *m, uint64_t addr, uint64_t len)
{
	struct tma *t;

	pthread_rwlock_wrlock(&tma_lock);
	if (!tma_tab)
		tma_tab = calloc(TMA_CAP, sizeof(*tma_tab));
	t = tma_slot((const unsigned char *)m);
	if (t && !t->used && tma_n >= TMA_CAP / 4 * 3)
		t = NULL;
	if (!t) {
		__atomic_store_n(&tma_full, true, __ATOMIC_RELAXED);
		phos_dbg("TMA descriptor table full: unmatched 128-byte parameters are unknown");
	} else {
		if (!t->used) {
			memcpy(t->key, m, 128);
			t->used = true;
			__atomic_store_n(&tma_n, tma_n + 1, __ATOMIC_RELAXED);
		}
		t->addr = addr;
		t->len = len;
	}
	pthread_rwlock_unlock(&tma_lock);
}

/* 1: val is a recorded descriptor (*addr, *len filled); 0: not one;
 * -1: not one we know of, and the table has missed some. */
static int tma_find(const unsigned char *val, uint64_t *addr, uint64_t *len)
{
	struct tma *t;
	int r;

	pthread_rwlock_rdlock(&tma_lock);
	t = tma_slot(val);
	r = t && t->used;
	if (r) {
		*addr = t->addr;
		*len = t->len;
	} else if (__atomic_load_n(&tma_full, __ATOMIC_RELAXED)) {
		r = -1;
	}
	pthread_rwlock_unlock(&tma_lock);
	return r;
}

static bool tma_any(void)
{
	return __atomic_load_n(&tma_n, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&tma_full, __ATOMIC_RELAXED);
}

/* Bytes one row of globalDim[0] elements spans; 0 if unknown. */
static uint64_t tma_row_bytes(CUtensorMapDataType t, uint64_t n)
{
	switch ((int)t) {
	case CU_TENSOR_MAP_DATA_TYPE_UINT8:
		return n;
	case CU_TENSOR_MAP_DATA_TYPE_UINT16:
	case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
	case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16:
		return n * 2;
	case CU_TENSOR_MAP_DATA_TYPE_UINT32:
	case CU_TENSOR_MAP_DATA_TYPE_INT32:
	case CU_TENSOR_MAP_DATA_TYPE_FLOAT32:
	case CU_TENSOR_MAP_DATA_TYPE_FLOAT32_FTZ:
	case CU_TENSOR_MAP_DATA_TYPE_TFLOAT32:
	case CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ:
		return n * 4;
	case CU_TENSOR_MAP_DATA_TYPE_UINT64:
	case CU_TENSOR_MAP_DATA_TYPE_INT64:
	case CU_TENSOR_MAP_DATA_TYPE_FLOAT64:
		return n * 8;
	case CU_TENSOR_MAP_DATA_TYPE_16U4_ALIGN8B:	/* 16 x 4 bits in 8 bytes */
		return (n + 15) / 16 * 8;
	case CU_TENSOR_MAP_DATA_TYPE_16U4_ALIGN16B:	/* ... padded to 16 */
	case CU_TENSOR_MAP_DATA_TYPE_16U6_ALIGN16B:	/* 16 x 6 bits, padded to 16 */
		return (n + 15) / 16 * 16;
	default:
		return 0;
	}
}

/* The bytes a tensor spans from globalAddress: the last element's row
 * end, rows padded to 32 bytes (interleaved layouts); 0 if unknown. */
static uint64_t tma_span(CUtensorMapDataType t, cuuint32_t rank, const cuuint64_t *dim,
			 const cuuint64_t *strides)
{
	uint64_t span, row;
	cuuint32_t i;

	if (!dim || rank == 0 || rank > 5 || (rank > 1 && !strides))
		return 0;
	for (i = 0; i < rank; i++)
		if (dim[i] == 0 || dim[i] > (1ull << 40))
			return 0;
	row = tma_row_bytes(t, dim[0]);
	if (row == 0)
		return 0;
	span = (row + 31) & ~31ull;
	for (i = 1; i < rank; i++) {
		uint64_t d;

		if (__builtin_mul_overflow(dim[i] - 1, strides[i - 1], &d) ||
		    __builtin_add_overflow(span, d, &span))
			return 0;
	}
	return span;
}

static void tma_encoded(CUresult r, CUtensorMap *m, CUtensorMapDataType t, cuuint32_t rank,
			void *addr, const cuuint64_t *dim, const cuuint64_t *strides)
{
	if (r != CUDA_SUCCESS || !m)
		return;
	tma_record(m, (uint64_t)(uintptr_t)addr, tma_span(t, rank, dim, strides));
}

/* ---- a node's write set --------------------------------------------------- */

struct pscan {
	struct rlist *l;
	bool words;	/* also the word scan (a graph node; a direct launch
			 * has had it from phos_write_launch) */
};

static void scan_param(void *ctx, const unsigned char *val, uint32_t off, uint32_t size)
{
	struct pscan *c = ctx;
	uint32_t p;

	if (size == TMA_BYTES && tma_any()) {
		uint64_t a, len;
		int r = tma_find(val, &a, &len);

		if (r < 0) {
			c->l->unknown = true;
			return;
		}
		if (r > 0) {
			PHOS_COUNT(tma_marks, 1);
			if (len)
				rl_range(c->l, a, len);
			else
				rl_add(c->l, a, a + 1, true);	/* a TMA address may be low */
		}
	}
	/* the word scan of wset.c: words aligned in the parameter buffer */
	for (p = (off + 7u) & ~7u; c->words && p + 8u <= off + size; p += 8u) {
		uint64_t w;

		memcpy(&w, val + (p - off), sizeof(w));
		rl_word(c->l, w);
	}
}

static void kernel_part(struct rlist *l, CUfunction f, void **kp, void **extra)
{
	const struct phos_param *p;
	unsigned np = 0;
	struct pscan c = { l, true };

	p = phos_params_get(f, &np);
	if (!p || !phos_params_each(p, np, kp, extra, scan_param, &c))
		l->unknown = true;
}

static void memset_part(struct rlist *l, const CUDA_MEMSET_NODE_PARAMS *m)
{
	uint64_t row;

	if (!m) {
		l->unknown = true;
		return;
	}
	if (m->height == 0 || m->width == 0)
		return;
	row = (uint64_t)m->width * (m->elementSize ? m->elementSize : 4);
	rl_range(l, m->dst, m->height > 1 ? (uint64_t)(m->height - 1) * m->pitch + row : row);
}

/* the destination of a 3D copy, as launch.c computes it */
static void memcpy_part(struct rlist *l, const CUDA_MEMCPY3D *c)
{
	uint64_t dev, pitch, hgt, start, len;

	if (!c) {
		l->unknown = true;
		return;
	}
	if (c->dstMemoryType == CU_MEMORYTYPE_ARRAY || !c->WidthInBytes || !c->Height ||
	    !c->Depth)
		return;
	dev = c->dstMemoryType == CU_MEMORYTYPE_HOST ? (uint64_t)(uintptr_t)c->dstHost
						      : (uint64_t)c->dstDevice;
	pitch = c->dstPitch ? c->dstPitch : c->WidthInBytes;
	hgt = c->dstHeight ? c->dstHeight : c->Height;
	start = dev + c->dstXInBytes + (uint64_t)c->dstY * pitch + (uint64_t)c->dstZ * hgt * pitch;
	len = (uint64_t)(c->Depth - 1) * hgt * pitch + (uint64_t)(c->Height - 1) * pitch +
	      c->WidthInBytes;
	rl_range(l, start, len);
}

/* ---- execs ------------------------------------------------------------ */

struct gnode {
	CUgraphNode node;
	CUgraphNode parent;	/* the child graph node it lies in, or NULL */
	struct rlist w;
};

struct gexec {
	CUgraphExec key;
	struct gexec *next;
	bool unknown;		/* whatever the nodes say */
	size_t n, cap;
	struct gnode *nodes;	/* parents before their children */
	struct rlist all;	/* union of the nodes', sorted */
};

#define NBUCKETS 1024
static struct gexec *table[NBUCKETS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t bucket(CUgraphExec g)
{
	return (size_t)phos_ptr_mix(g) & (NBUCKETS - 1);
}

static void exec_free(struct gexec *e)
{
	size_t i;

	if (!e)
		return;
	for (i = 0; i < e->n; i++)
		rl_free(&e->nodes[i].w);
	free(e->nodes);
	rl_free(&e->all);
	free(e);
}

static struct gnode *exec_add_node(struct gexec *e, CUgraphNode node, CUgraphNode parent)
{
	if (e->n == e->cap) {
		size_t cap = e->cap ? 2 * e->cap : 16;
		struct gnode *v = realloc(e->nodes, cap * sizeof(*v));

		if (!v) {
			e->unknown = true;
			return NULL;
		}
		e->nodes = v;
		e->cap = cap;
	}
	e->nodes[e->n] = (struct gnode){ .node = node, .parent = parent };
	return &e->nodes[e->n++];
}

static struct gnode *exec_node(struct gexec *e, CUgraphNode node)
{
	size_t i;

	for (i = 0; i < e->n; i++)
		if (e->nodes[i].node == node)
			return &e->nodes[i];
	return NULL;
}

/* Recompute the union after a change. */
static void exec_union(struct gexec *e)
{
	size_t i, j;

	e->all.n = 0;
	e->all.unknown = false;
	for (i = 0; i < e->n && !e->unknown; i++) {
		if (e->nodes[i].w.unknown) {
			e->unknown = true;
			break;
		}
		for (j = 0; j < e->nodes[i].w.n; j++)
			rl_add(&e->all, e->nodes[i].w.v[j].start, e->nodes[i].w.v[j].end,
			       e->nodes[i].w.v[j].word);
	}
	if (e->all.unknown)
		e->unknown = true;
	if (e->unknown) {
		for (i = 0; i < e->n; i++)
			rl_free(&e->nodes[i].w);
		e->n = 0;
		rl_free(&e->all);
		return;
	}
	rl_sort(&e->all);
}

static void walk_graph(struct gexec *e, CUgraph g, CUgraphNode parent, int depth);

/* What node may write, by its type; child graphs are walked into e. */
static void walk_node(struct gexec *e, CUgraphNode node, CUgraphNode parent, int depth)
{
	REAL(gettype, gettype_fn, "cuGraphNodeGetType");
	REAL(kparams, kparams_fn, "cuGraphKernelNodeGetParams_v2");
	REAL(msparams, msparams_fn, "cuGraphMemsetNodeGetParams");
	REAL(mcparams, mcparams_fn, "cuGraphMemcpyNodeGetParams");
	REAL(child, child_fn, "cuGraphChildGraphNodeGetGraph");
	CUgraphNodeType type;
	struct gnode *gn = exec_add_node(e, node, parent);
	size_t at = e->n - 1;

	if (!gn)
		return;
	if (!gettype || gettype(node, &type) != CUDA_SUCCESS) {
		gn->w.unknown = true;
		return;
	}
	switch (type) {
	case CU_GRAPH_NODE_TYPE_KERNEL: {
		CUDA_KERNEL_NODE_PARAMS_v2 kp;

		memset(&kp, 0, sizeof(kp));
		if (!kparams || kparams(node, &kp) != CUDA_SUCCESS)
			gn->w.unknown = true;
		else
			kernel_part(&gn->w, kp.func ? kp.func : (CUfunction)kp.kern,
				    kp.kernelParams, kp.extra);
		break;
	}
	case CU_GRAPH_NODE_TYPE_MEMSET: {
		CUDA_MEMSET_NODE_PARAMS mp;

		if (!msparams || msparams(node, &mp) != CUDA_SUCCESS)
			gn->w.unknown = true;
		else
			memset_part(&gn->w, &mp);
		break;
	}
	case CU_GRAPH_NODE_TYPE_MEMCPY: {
		CUDA_MEMCPY3D cp;

		if (!mcparams || mcparams(node, &cp) != CUDA_SUCCESS)
			gn->w.unknown = true;
		else
			memcpy_part(&gn->w, &cp);
		break;
	}
	case CU_GRAPH_NODE_TYPE_GRAPH: {
		CUgraph cg = NULL;

		if (depth >= MAX_DEPTH || !child || child(node, &cg) != CUDA_SUCCESS || !cg)
			gn->w.unknown = true;
		else
			walk_graph(e, cg, node, depth + 1);	/* may move e->nodes */
		break;
	}
	case CU_GRAPH_NODE_TYPE_EMPTY:
	case CU_GRAPH_NODE_TYPE_HOST:
	case CU_GRAPH_NODE_TYPE_WAIT_EVENT:
	case CU_GRAPH_NODE_TYPE_EVENT_RECORD:
		break;
	default:
		gn->w.unknown = true;
		break;
	}
	if (e->nodes[at].w.unknown)
		e->unknown = true;
}

static void walk_graph(struct gexec *e, CUgraph g, CUgraphNode parent, int depth)
{
	REAL(getnodes, getnodes_fn, "cuGraphGetNodes");
	CUgraphNode *nodes;
	size_t n = 0, i;

	if (e->unknown)
		return;
	if (!getnodes || getnodes(g, NULL, &n) != CUDA_SUCCESS) {
		e->unknown = true;
		return;
	}
	if (n == 0)
		return;
	nodes = malloc(n * sizeof(*nodes));
	if (!nodes || getnodes(g, nodes, &n) != CUDA_SUCCESS) {
		free(nodes);
		e->unknown = true;
		return;
	}
	for (i = 0; i < n && !e->unknown; i++)
		walk_node(e, nodes[i], parent, depth);
	free(nodes);
}

/* Replace the table's entry for key with e (NULL: drop it). */
static void table_put(CUgraphExec key, struct gexec *e)
{
	struct gexec **pp, *old = NULL;

	pthread_mutex_lock(&table_lock);
	for (pp = &table[bucket(key)]; *pp; pp = &(*pp)->next)
		if ((*pp)->key == key) {
			old = *pp;
			*pp = old->next;
			break;
		}
	if (e) {
		e->key = key;
		e->next = table[bucket(key)];
		table[bucket(key)] = e;
	}
	pthread_mutex_unlock(&table_lock);
	exec_free(old);
}

/* The exec for key; caller holds table_lock. */
static struct gexec *table_get(CUgraphExec key)
{
	struct gexec *e;

	for (e = table[bucket(key)]; e; e = e->next)
		if (e->key == key)
			return e;
	return NULL;
}

/* A fresh entry for exec x, instantiated from (or updated to) graph g. */
static void exec_walk(CUgraphExec x, CUgraph g)
{
	struct gexec *e = calloc(1, sizeof(*e));

	if (!e) {
		table_put(x, NULL);
		return;
	}
	walk_graph(e, g, NULL, 0);
	exec_union(e);
	phos_dbg("graph exec %p: %s (%zu nodes, %zu words and ranges)", (void *)x,
		 e->unknown ? "unknown write set" : "walked", e->n, e->all.n);
	table_put(x, e);
}

static void exec_unknown(CUgraphExec x)
{
	struct gexec *e;

	pthread_mutex_lock(&table_lock);
	e = table_get(x);
	if (e) {
		e->unknown = true;
		exec_union(e);
	}
	pthread_mutex_unlock(&table_lock);
}

/*
 * Node `node` of exec x now has the write set `w` (a child graph node:
 * its subtree is dropped and `child`, if not NULL, walked in its place).
 * Takes w's storage.
 */
static void exec_set_node(CUgraphExec x, CUgraphNode node, struct rlist *w, CUgraph child)
{
	struct gexec *e, *sub = NULL;
	struct gnode *gn;
	size_t i, k;

	if (child) {
		/* walk the new child outside the lock, as its own tree */
		sub = calloc(1, sizeof(*sub));
		if (sub)
			walk_graph(sub, child, node, 1);
	}
	pthread_mutex_lock(&table_lock);
	e = table_get(x);
	if (!e || e->unknown)
		goto out;
	gn = exec_node(e, node);
	if (!gn || (child && !sub)) {
		e->unknown = true;
		goto out;
	}
	rl_free(&gn->w);
	gn->w = *w;
	*w = (struct rlist){ 0 };
	if (child) {
		/* drop the old subtree: parents come before their children */
		CUgraphNode *gone = malloc(e->n * sizeof(*gone));
		size_t ng = 0;

		if (!gone) {
			e->unknown = true;
			goto out;
		}
		gone[ng++] = node;
		for (i = 0, k = 0; i < e->n; i++) {
			size_t j;
			bool drop = false;

			for (j = 0; j < ng && !drop; j++)
				drop = e->nodes[i].parent == gone[j];
			if (drop) {
				gone[ng++] = e->nodes[i].node;
				rl_free(&e->nodes[i].w);
			} else {
				e->nodes[k++] = e->nodes[i];
			}
		}
		e->n = k;
		free(gone);
		if (sub->unknown)
			e->unknown = true;
		for (i = 0; i < sub->n && !e->unknown; i++) {
			struct gnode *to = exec_add_node(e, sub->nodes[i].node, sub->nodes[i].parent);

			if (to) {
				to->w = sub->nodes[i].w;
				sub->nodes[i].w = (struct rlist){ 0 };
			}
		}
	}
out:
	if (e)
		exec_union(e);
	pthread_mutex_unlock(&table_lock);
	rl_free(w);
	exec_free(sub);
}

/* ---- launches ------------------------------------------------------------- */

bool phos_graph_launch(CUgraphExec g, bool per_thread, CUstream s)
{
	struct gexec *e;

	if (!phos_wset_wanted())
		return false;	/* phos_write_launch counts it */
	if (phos_stream_capturing(s, per_thread))
		return false;	/* phos_write_launch counts it captured */
	pthread_mutex_lock(&table_lock);
	e = table_get(g);
	if (!e || e->unknown) {
		pthread_mutex_unlock(&table_lock);
		return false;
	}
	PHOS_COUNT(launches, 1);
	PHOS_COUNT(graph_launches, 1);
	PHOS_COUNT(graph_launches_known, 1);
	mark_list(&e->all);
	pthread_mutex_unlock(&table_lock);
	return true;
}

void phos_tma_launch(CUfunction f, bool per_thread, CUstream s, void **kernel_params,
		     void **extra)
{
	const struct phos_param *p;
	unsigned np = 0, i;
	struct rlist l = { 0 };
	struct pscan c = { &l, false };

	if (!phos_wset_wanted() || !tma_any())
		return;
	p = phos_params_get(f, &np);
	if (!p)
		return;		/* phos_write_launch counted it unknown */
	for (i = 0; i < np && p[i].size != TMA_BYTES; i++)
		;
	if (i == np || phos_stream_capturing(s, per_thread))
		return;
	if (!phos_params_each(p, np, kernel_params, extra, scan_param, &c))
		return;		/* phos_write_launch counted it unknown */
	if (l.unknown) {
		PHOS_COUNT(launches_unknown, 1);
		if (phos_cow_active())
			phos_cow_all("a kernel with a tensor map libphos cannot place");
	} else {
		rl_sort(&l);
		mark_list(&l);
	}
	rl_free(&l);
}

/* ---- the hooks --------------------------------------------------------- */

typedef CUresult (*inst_fn)(CUgraphExec *, CUgraph, unsigned long long);
static CUresult impl_inst(inst_fn real, int pt, CUgraphExec *x, CUgraph g, unsigned long long fl)
{
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, g, fl);
	if (r == CUDA_SUCCESS && x)
		exec_walk(*x, g);
	return r;
}
PHOS_DEFINE_HOOK(cuGraphInstantiateWithFlags, impl_inst, 0,
		 (CUgraphExec *x, CUgraph g, unsigned long long fl), (x, g, fl));

typedef CUresult (*instp_fn)(CUgraphExec *, CUgraph, CUDA_GRAPH_INSTANTIATE_PARAMS *);
static CUresult impl_instp(instp_fn real, int pt, CUgraphExec *x, CUgraph g,
			   CUDA_GRAPH_INSTANTIATE_PARAMS *ip)
{
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, g, ip);
	if (r == CUDA_SUCCESS && x && (!ip || ip->result_out == CUDA_GRAPH_INSTANTIATE_SUCCESS))
		exec_walk(*x, g);
	return r;
}
PHOS_DEFINE_HOOK(cuGraphInstantiateWithParams, impl_instp, 0,
		 (CUgraphExec *x, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *ip), (x, g, ip));
PHOS_DEFINE_HOOK(cuGraphInstantiateWithParams_ptsz, impl_instp, 1,
		 (CUgraphExec *x, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *ip), (x, g, ip));

/* CUDA 10 and 11: (exec, graph, error node, log buffer, its size) */
typedef CUresult (*inst1_fn)(CUgraphExec *, CUgraph, CUgraphNode *, char *, size_t);
static CUresult impl_inst1(inst1_fn real, int pt, CUgraphExec *x, CUgraph g, CUgraphNode *err,
			   char *log, size_t size)
{
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, g, err, log, size);
	if (r == CUDA_SUCCESS && x)
		exec_walk(*x, g);
	return r;
}
#define INST1_P (CUgraphExec *x, CUgraph g, CUgraphNode *err, char *log, size_t size)
#define INST1_A (x, g, err, log, size)
PHOS_DEFINE_HOOK(cuGraphInstantiate, impl_inst1, 0, INST1_P, INST1_A);
PHOS_DEFINE_HOOK(cuGraphInstantiate_v2, impl_inst1, 0, INST1_P, INST1_A);

typedef CUresult (*destroy_fn)(CUgraphExec);
static CUresult impl_destroy(destroy_fn real, int pt, CUgraphExec x)
{
	PHOS_PROLOGUE();
	(void)pt;
	/* before the driver can hand the handle out again; should the
	 * destroy fail, the exec is merely unknown from now on */
	table_put(x, NULL);
	return real(x);
}
PHOS_DEFINE_HOOK(cuGraphExecDestroy, impl_destroy, 0, (CUgraphExec x), (x));

/* kernel node set-params, both ABIs (v1 is v2's prefix) */
static void kernel_set(CUgraphExec x, CUgraphNode n, CUfunction f, void **kp, void **extra)
{
	struct rlist w = { 0 };

	kernel_part(&w, f, kp, extra);
	exec_set_node(x, n, &w, NULL);
}

typedef CUresult (*kset2_fn)(CUgraphExec, CUgraphNode, const CUDA_KERNEL_NODE_PARAMS_v2 *);
static CUresult impl_kset2(kset2_fn real, int pt, CUgraphExec x, CUgraphNode n,
			   const CUDA_KERNEL_NODE_PARAMS_v2 *p)
{
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, n, p);
	if (r == CUDA_SUCCESS)
		kernel_set(x, n, p ? (p->func ? p->func : (CUfunction)p->kern) : NULL,
			   p ? p->kernelParams : NULL, p ? p->extra : NULL);
	return r;
}
PHOS_DEFINE_HOOK(cuGraphExecKernelNodeSetParams_v2, impl_kset2, 0,
		 (CUgraphExec x, CUgraphNode n, const CUDA_KERNEL_NODE_PARAMS_v2 *p), (x, n, p));

typedef CUresult (*kset1_fn)(CUgraphExec, CUgraphNode, const CUDA_KERNEL_NODE_PARAMS_v1 *);
static CUresult impl_kset1(kset1_fn real, int pt, CUgraphExec x, CUgraphNode n,
			   const CUDA_KERNEL_NODE_PARAMS_v1 *p)
{
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, n, p);
	if (r == CUDA_SUCCESS)
		kernel_set(x, n, p ? p->func : NULL, p ? p->kernelParams : NULL,
			   p ? p->extra : NULL);
	return r;
}
PHOS_DEFINE_HOOK(cuGraphExecKernelNodeSetParams, impl_kset1, 0,
		 (CUgraphExec x, CUgraphNode n, const CUDA_KERNEL_NODE_PARAMS_v1 *p), (x, n, p));

typedef CUresult (*msset_fn)(CUgraphExec, CUgraphNode, const CUDA_MEMSET_NODE_PARAMS *, CUcontext);
static CUresult impl_msset(msset_fn real, int pt, CUgraphExec x, CUgraphNode n,
			   const CUDA_MEMSET_NODE_PARAMS *p, CUcontext ctx)
{
	struct rlist w = { 0 };
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, n, p, ctx);
	if (r == CUDA_SUCCESS) {
		memset_part(&w, p);
		exec_set_node(x, n, &w, NULL);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuGraphExecMemsetNodeSetParams, impl_msset, 0,
		 (CUgraphExec x, CUgraphNode n, const CUDA_MEMSET_NODE_PARAMS *p, CUcontext ctx),
		 (x, n, p, ctx));

typedef CUresult (*mcset_fn)(CUgraphExec, CUgraphNode, const CUDA_MEMCPY3D *, CUcontext);
static CUresult impl_mcset(mcset_fn real, int pt, CUgraphExec x, CUgraphNode n,
			   const CUDA_MEMCPY3D *p, CUcontext ctx)
{
	struct rlist w = { 0 };
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, n, p, ctx);
	if (r == CUDA_SUCCESS) {
		memcpy_part(&w, p);
		exec_set_node(x, n, &w, NULL);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuGraphExecMemcpyNodeSetParams, impl_mcset, 0,
		 (CUgraphExec x, CUgraphNode n, const CUDA_MEMCPY3D *p, CUcontext ctx),
		 (x, n, p, ctx));

typedef CUresult (*cset_fn)(CUgraphExec, CUgraphNode, CUgraph);
static CUresult impl_cset(cset_fn real, int pt, CUgraphExec x, CUgraphNode n, CUgraph child)
{
	struct rlist w = { 0 };
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, n, child);
	if (r == CUDA_SUCCESS) {
		if (child)
			exec_set_node(x, n, &w, child);
		else
			exec_unknown(x);
	}
	return r;
}
PHOS_DEFINE_HOOK(cuGraphExecChildGraphNodeSetParams, impl_cset, 0,
		 (CUgraphExec x, CUgraphNode n, CUgraph child), (x, n, child));

/* the generic one (CUDA 12.2) */
typedef CUresult (*nset_fn)(CUgraphExec, CUgraphNode, CUgraphNodeParams *);
static CUresult impl_nset(nset_fn real, int pt, CUgraphExec x, CUgraphNode n, CUgraphNodeParams *p)
{
	struct rlist w = { 0 };
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, n, p);
	if (r != CUDA_SUCCESS)
		return r;
	switch (p ? p->type : (CUgraphNodeType)-1) {
	case CU_GRAPH_NODE_TYPE_KERNEL:
		kernel_set(x, n, p->kernel.func ? p->kernel.func : (CUfunction)p->kernel.kern,
			   p->kernel.kernelParams, p->kernel.extra);
		break;
	case CU_GRAPH_NODE_TYPE_MEMSET: {
		CUDA_MEMSET_NODE_PARAMS m = {
			.dst = p->memset.dst, .pitch = p->memset.pitch, .value = p->memset.value,
			.elementSize = p->memset.elementSize, .width = p->memset.width,
			.height = p->memset.height,
		};

		memset_part(&w, &m);
		exec_set_node(x, n, &w, NULL);
		break;
	}
	case CU_GRAPH_NODE_TYPE_MEMCPY:
		memcpy_part(&w, &p->memcpy.copyParams);
		exec_set_node(x, n, &w, NULL);
		break;
	case CU_GRAPH_NODE_TYPE_GRAPH:
		if (p->graph.graph)
			exec_set_node(x, n, &w, p->graph.graph);
		else
			exec_unknown(x);
		break;
	case CU_GRAPH_NODE_TYPE_EMPTY:
	case CU_GRAPH_NODE_TYPE_HOST:
	case CU_GRAPH_NODE_TYPE_WAIT_EVENT:
	case CU_GRAPH_NODE_TYPE_EVENT_RECORD:
		break;		/* writes nothing, as before */
	default:
		exec_unknown(x);
		break;
	}
	return r;
}
PHOS_DEFINE_HOOK(cuGraphExecNodeSetParams, impl_nset, 0,
		 (CUgraphExec x, CUgraphNode n, CUgraphNodeParams *p), (x, n, p));

/* cuGraphExecUpdate: walk the new graph; a failed update may have
 * changed some nodes already, so the exec becomes unknown */
static void updated(CUresult r, CUgraphExec x, CUgraph g)
{
	if (r == CUDA_SUCCESS)
		exec_walk(x, g);
	else
		exec_unknown(x);
}

typedef CUresult (*upd2_fn)(CUgraphExec, CUgraph, CUgraphExecUpdateResultInfo *);
static CUresult impl_upd2(upd2_fn real, int pt, CUgraphExec x, CUgraph g,
			  CUgraphExecUpdateResultInfo *info)
{
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, g, info);
	updated(r, x, g);
	return r;
}
PHOS_DEFINE_HOOK(cuGraphExecUpdate_v2, impl_upd2, 0,
		 (CUgraphExec x, CUgraph g, CUgraphExecUpdateResultInfo *info), (x, g, info));

typedef CUresult (*upd1_fn)(CUgraphExec, CUgraph, CUgraphNode *, CUgraphExecUpdateResult *);
static CUresult impl_upd1(upd1_fn real, int pt, CUgraphExec x, CUgraph g, CUgraphNode *err,
			  CUgraphExecUpdateResult *res)
{
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(x, g, err, res);
	updated(r, x, g);
	return r;
}
PHOS_DEFINE_HOOK(cuGraphExecUpdate, impl_upd1, 0,
		 (CUgraphExec x, CUgraph g, CUgraphNode *err, CUgraphExecUpdateResult *res),
		 (x, g, err, res));

/* ---- tensor maps --------------------------------------------------------- */

typedef CUresult (*tiled_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
			     const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
			     const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
			     CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static CUresult impl_tiled(tiled_fn real, int pt, CUtensorMap *m, CUtensorMapDataType t,
			   cuuint32_t rank, void *addr, const cuuint64_t *dim,
			   const cuuint64_t *strides, const cuuint32_t *box, const cuuint32_t *es,
			   CUtensorMapInterleave il, CUtensorMapSwizzle sw, CUtensorMapL2promotion l2,
			   CUtensorMapFloatOOBfill oob)
{
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(m, t, rank, addr, dim, strides, box, es, il, sw, l2, oob);
	tma_encoded(r, m, t, rank, addr, dim, strides);
	return r;
}
PHOS_DEFINE_HOOK(cuTensorMapEncodeTiled, impl_tiled, 0,
		 (CUtensorMap *m, CUtensorMapDataType t, cuuint32_t rank, void *addr,
		  const cuuint64_t *dim, const cuuint64_t *strides, const cuuint32_t *box,
		  const cuuint32_t *es, CUtensorMapInterleave il, CUtensorMapSwizzle sw,
		  CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob),
		 (m, t, rank, addr, dim, strides, box, es, il, sw, l2, oob));

typedef CUresult (*im2col_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
			      const cuuint64_t *, const cuuint64_t *, const int *, const int *,
			      cuuint32_t, cuuint32_t, const cuuint32_t *, CUtensorMapInterleave,
			      CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static CUresult impl_im2col(im2col_fn real, int pt, CUtensorMap *m, CUtensorMapDataType t,
			    cuuint32_t rank, void *addr, const cuuint64_t *dim,
			    const cuuint64_t *strides, const int *lo, const int *hi, cuuint32_t cpp,
			    cuuint32_t ppc, const cuuint32_t *es, CUtensorMapInterleave il,
			    CUtensorMapSwizzle sw, CUtensorMapL2promotion l2,
			    CUtensorMapFloatOOBfill oob)
{
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(m, t, rank, addr, dim, strides, lo, hi, cpp, ppc, es, il, sw, l2, oob);
	tma_encoded(r, m, t, rank, addr, dim, strides);
	return r;
}
PHOS_DEFINE_HOOK(cuTensorMapEncodeIm2col, impl_im2col, 0,
		 (CUtensorMap *m, CUtensorMapDataType t, cuuint32_t rank, void *addr,
		  const cuuint64_t *dim, const cuuint64_t *strides, const int *lo, const int *hi,
		  cuuint32_t cpp, cuuint32_t ppc, const cuuint32_t *es, CUtensorMapInterleave il,
		  CUtensorMapSwizzle sw, CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob),
		 (m, t, rank, addr, dim, strides, lo, hi, cpp, ppc, es, il, sw, l2, oob));

typedef CUresult (*wide_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
			    const cuuint64_t *, const cuuint64_t *, int, int, cuuint32_t,
			    cuuint32_t, const cuuint32_t *, CUtensorMapInterleave,
			    CUtensorMapIm2ColWideMode, CUtensorMapSwizzle, CUtensorMapL2promotion,
			    CUtensorMapFloatOOBfill);
static CUresult impl_wide(wide_fn real, int pt, CUtensorMap *m, CUtensorMapDataType t,
			  cuuint32_t rank, void *addr, const cuuint64_t *dim,
			  const cuuint64_t *strides, int lo, int hi, cuuint32_t cpp, cuuint32_t ppc,
			  const cuuint32_t *es, CUtensorMapInterleave il,
			  CUtensorMapIm2ColWideMode mode, CUtensorMapSwizzle sw,
			  CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob)
{
	CUresult r;

	PHOS_PROLOGUE();
	(void)pt;
	r = real(m, t, rank, addr, dim, strides, lo, hi, cpp, ppc, es, il, mode, sw, l2, oob);
	tma_encoded(r, m, t, rank, addr, dim, strides);
	return r;
}
PHOS_DEFINE_HOOK(cuTensorMapEncodeIm2colWide, impl_wide, 0,
		 (CUtensorMap *m, CUtensorMapDataType t, cuuint32_t rank, void *addr,
		  const cuuint64_t *dim, const cuuint64_t *strides, int lo, int hi, cuuint32_t cpp,
		  cuuint32_t ppc, const cuuint32_t *es, CUtensorMapInterleave il,
		  CUtensorMapIm2ColWideMode mode, CUtensorMapSwizzle sw, CUtensorMapL2promotion l2,
		  CUtensorMapFloatOOBfill oob),
		 (m, t, rank, addr, dim, strides, lo, hi, cpp, ppc, es, il, mode, sw, l2, oob));

/* the same tensor at another address: same span if we knew the old one */
typedef CUresult (*repl_fn)(CUtensorMap *, void *);
static CUresult impl_repl(repl_fn real, int pt, CUtensorMap *m, void *addr)
{
	uint64_t old_addr = 0, len = 0;
	CUresult r;
	int known;

	PHOS_PROLOGUE();
	(void)pt;
	known = m ? tma_find((const unsigned char *)m, &old_addr, &len) : 0;
	r = real(m, addr);
	if (r == CUDA_SUCCESS && m)
		tma_record(m, (uint64_t)(uintptr_t)addr, known > 0 ? len : 0);
	return r;
}
PHOS_DEFINE_HOOK(cuTensorMapReplaceAddress, impl_repl, 0, (CUtensorMap *m, void *addr), (m, addr));
