/*
 * capture.c - stream capture: a launch made while its stream captures
 * is recorded into a graph and runs nothing now (DESIGN.md §5).
 *
 * Asking cuStreamIsCapturing on every launch costs a driver call, so
 * libphos counts the captures it sees begin and end and asks only while
 * one may be open.  Both ways of getting the count wrong are safe: a
 * capture begun behind our back (the old cuStreamBeginCapture ABI, say)
 * makes its launches look real, so their write sets are marked, which
 * is conservative; a missed end only costs queries.
 */
#include "config.h"

#include "phos_int.h"

static long open_captures;

bool phos_capture_maybe(void)
{
	return __atomic_load_n(&open_captures, __ATOMIC_RELAXED) > 0;
}

typedef CUresult (*iscapt_fn)(CUstream, CUstreamCaptureStatus *);

bool phos_stream_capturing(CUstream s, bool per_thread)
{
	static void *legacy[1], *ptsz[1];
	CUstreamCaptureStatus cs = CU_STREAM_CAPTURE_STATUS_NONE;
	iscapt_fn f = NULL;

	if (!phos_capture_maybe())
		return false;
	if (per_thread)
		f = (iscapt_fn)phos_real_get(ptsz, 0, "cuStreamIsCapturing_ptsz");
	if (!f)
		f = (iscapt_fn)phos_real_get(legacy, 0, "cuStreamIsCapturing");
	return f && f(s, &cs) == CUDA_SUCCESS && cs != CU_STREAM_CAPTURE_STATUS_NONE;
}

static void capture_begun(void)
{
	__atomic_fetch_add(&open_captures, 1, __ATOMIC_RELAXED);
}

static void capture_ended(void)
{
	long n = __atomic_load_n(&open_captures, __ATOMIC_RELAXED);

	while (n > 0 && !__atomic_compare_exchange_n(&open_captures, &n, n - 1, false,
						     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}


typedef CUresult (*begin_fn)(CUstream, CUstreamCaptureMode);
static CUresult impl_begin(begin_fn real, int pt, CUstream s, CUstreamCaptureMode mode)
{
	CUresult r;

	PHOS_PROLOGUE();
	r = real(s, mode);
	if (r == CUDA_SUCCESS)
		capture_begun();
	return r;
}
PHOS_DEFINE_HOOK(cuStreamBeginCapture_v2, impl_begin, 0, (CUstream s, CUstreamCaptureMode mode),
		 (s, mode));
PHOS_DEFINE_HOOK(cuStreamBeginCapture_v2_ptsz, impl_begin, 1,
		 (CUstream s, CUstreamCaptureMode mode), (s, mode));

typedef CUresult (*begin_graph_fn)(CUstream, CUgraph, const CUgraphNode *, const CUgraphEdgeData *,
				   size_t, CUstreamCaptureMode);
static CUresult impl_begin_graph(begin_graph_fn real, int pt, CUstream s, CUgraph g,
				 const CUgraphNode *deps, const CUgraphEdgeData *data, size_t n,
				 CUstreamCaptureMode mode)
{
	CUresult r;

	PHOS_PROLOGUE();
	r = real(s, g, deps, data, n, mode);
	if (r == CUDA_SUCCESS)
		capture_begun();
	return r;
}
#define BG_PARAMS (CUstream s, CUgraph g, const CUgraphNode *deps, const CUgraphEdgeData *data, \
		   size_t n, CUstreamCaptureMode mode)
#define BG_ARGS (s, g, deps, data, n, mode)
PHOS_DEFINE_HOOK(cuStreamBeginCaptureToGraph, impl_begin_graph, 0, BG_PARAMS, BG_ARGS);
PHOS_DEFINE_HOOK(cuStreamBeginCaptureToGraph_ptsz, impl_begin_graph, 1, BG_PARAMS, BG_ARGS);

typedef CUresult (*end_fn)(CUstream, CUgraph *);
static CUresult impl_end(end_fn real, int pt, CUstream s, CUgraph *g)
{
	bool was;

	PHOS_PROLOGUE();
	/* the end call ends a capture even when it fails (invalidated);
	 * it ends none if the stream was not capturing */
	was = phos_stream_capturing(s, pt);
	if (was)
		capture_ended();
	return real(s, g);
}
PHOS_DEFINE_HOOK(cuStreamEndCapture, impl_end, 0, (CUstream s, CUgraph *g), (s, g));
PHOS_DEFINE_HOOK(cuStreamEndCapture_ptsz, impl_end, 1, (CUstream s, CUgraph *g), (s, g));
