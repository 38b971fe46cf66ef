/*
 * gpu-io.c - phos-gpu's parallel copy engine (gpu-io.h).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "gpu-io.h"
#include "savetab.h"
#include "util.h"

#define MAX_THREADS 64
#define MAX_PINNERS 8

struct chunk {
	unsigned i;
	uint64_t off;
	size_t len;
};

struct run {
	struct gio *g;
	pthread_mutex_t lock;
	int cur;		/* buffer being handed out, -1: pick the next */
	unsigned seq;		/* next buffer in order when no pick() */
	uint64_t t0, total, moved;	/* for g->eighths */
	bool failed;
	/* GIO_STAGE with g->pinners: the pieces pinned ahead of the copies,
	 * in the order the workers take them (buffer by buffer) */
	struct {
		unsigned n;		/* pieces */
		unsigned *buf;		/* each piece's buffer and offset */
		uint64_t *off;
		uint8_t *st;		/* PIN_* */
		unsigned next;		/* the next piece to pin */
		unsigned left;		/* pinners still running */
		pthread_cond_t cv;	/* under lock: a piece's state changed */
	} pin;
};

enum { PIN_WAIT, PIN_DONE, PIN_SELF };	/* PIN_SELF: its worker pins it */

/* A worker's streams: one in each context it has copied in. */
#define MAX_STREAMS 8
struct streams {
	const struct gio_ops *ops;
	bool on;		/* the ops have streams, PHOS_GPU_SYNC_COPY is not 1 */
	unsigned n;
	CUcontext ctx[MAX_STREAMS];
	CUstream s[MAX_STREAMS];
};

static unsigned env_num(const char *name, unsigned def, unsigned lo, unsigned hi)
{
	const char *v = secure_getenv(name);
	char *end;
	unsigned long n;

	if (!v || !*v)
		return def;
	n = strtoul(v, &end, 10);
	return *end || n < lo || n > hi ? def : (unsigned)n;
}

/* CPUs / div, 4 to 16 (each worker hashes its chunks with SHA-256,
 * ~1.5-2 GB/s a core with SHA extensions), unless PHOS_GPU_IO_THREADS. */
static unsigned threads_of(long div)
{
	long c = sysconf(_SC_NPROCESSORS_ONLN) / div;
	unsigned def = c < 4 ? 4 : c > 16 ? 16 : (unsigned)c;

	return env_num("PHOS_GPU_IO_THREADS", def, 1, MAX_THREADS);
}

unsigned gio_threads(void)
{
	return threads_of(2);
}

unsigned gio_load_threads(void)
{
	return threads_of(1);
}

int gio_load_nice(void)
{
	return (int)env_num("PHOS_GPU_LOAD_NICE", 10, 0, 19);
}

size_t gio_chunk(void)
{
	return (size_t)env_num("PHOS_GPU_IO_CHUNK_MB", 8, 1, 1024) << 20;
}

bool gio_bounce(void)
{
	return env_num("PHOS_GPU_STAGE_BOUNCE", 0, 0, 1) == 1;
}

unsigned gio_pinners(void)
{
	return env_num("PHOS_GPU_STAGE_PINNERS", 0, 0, MAX_PINNERS);
}

size_t gio_piece(void)
{
	return (size_t)env_num("PHOS_GPU_STAGE_PIECE_MB", 64, 2, 1024) << 20;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void failf(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(struct run *r, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&r->lock);
	if (!r->failed) {
		r->failed = true;
		va_start(ap, fmt);
		vsnprintf(r->g->err, sizeof(r->g->err), fmt, ap);
		va_end(ap);
	}
	if (r->pin.st)	/* workers waiting for a piece: stop */
		pthread_cond_broadcast(&r->pin.cv);
	pthread_mutex_unlock(&r->lock);
}

/* Buffer i has bytes left to hand out. */
static bool open_buf(const struct gio *g, unsigned i)
{
	return g->b[i].next < g->b[i].size;
}

static void begin(struct run *r, unsigned i)
{
	struct gio *g = r->g;

	if (!g->b[i].started) {
		g->b[i].started = true;
		if (g->start)
			g->start(g->arg, i);
	}
}

/* The next chunk to copy (lock held): a wanted buffer's first, then the
 * current buffer's, then the next buffer's.  False when none is left. */
static bool next_chunk(struct run *r, struct chunk *c)
{
	struct gio *g = r->g;
	int i = -1;

	if (r->failed)
		return false;
	if (g->wanted)
		for (unsigned k = 0; k < g->n && i < 0; k++)
			if (open_buf(g, k) && g->wanted(g->arg, k))
				i = (int)k;
	if (i < 0 && r->cur >= 0 && open_buf(g, (unsigned)r->cur))
		i = r->cur;
	while (i < 0) {
		if (g->pick) {
			i = g->pick(g->arg);
			if (i >= 0 && ((unsigned)i >= g->n || !open_buf(g, (unsigned)i)))
				i = -1;	/* not one that needs copying: none left */
			if (i < 0)
				break;
		} else {
			while (r->seq < g->n && !open_buf(g, r->seq))
				r->seq++;
			if (r->seq == g->n)
				break;
			i = (int)r->seq;
		}
		r->cur = i;
	}
	if (i < 0) {
		/* pick() may have nothing new while started buffers remain */
		for (unsigned k = 0; k < g->n && i < 0; k++)
			if (open_buf(g, k))
				i = (int)k;
		if (i < 0)
			return false;
	}
	begin(r, (unsigned)i);
	c->i = (unsigned)i;
	c->off = g->b[i].next;
	c->len = g->b[i].size - c->off < g->chunk ? (size_t)(g->b[i].size - c->off) : g->chunk;
	g->b[i].next += c->len;
	return true;
}

/*
 * common/savetab.h's sums over n words, built once for each vector unit
 * (GCC's function multiversioning; the dynamic loader picks the widest the
 * CPU has).  The same arithmetic, mod 2^64 in any order: at -O2 the loop
 * is not vectorized, and every save folds each chunk beside its SHA-256
 * (this VM: 3.6 GB/s a core, 19.9 with the x86-64-v4 clone).
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
__attribute__((optimize("O3"), target_clones("arch=x86-64-v4", "avx2", "default")))
#endif
void gio_hash_words(uint64_t h[2], const uint32_t *w, uint64_t first, size_t n, uint64_t key)
{
	phos_hash_add(h, w, first, n, key);
}

/* Add a chunk's words to its buffer's hash (sums: any order, any thread). */
static void fold_hash(const struct gio *g, struct gio_buf *b, const void *stage,
		      const struct chunk *c)
{
	uint64_t h[2] = { 0, 0 };

	gio_hash_words(h, stage, c->off / 4, c->len / 4, g->hash_key);
	__atomic_fetch_add(&b->h[0], h[0], __ATOMIC_RELAXED);
	__atomic_fetch_add(&b->h[1], h[1], __ATOMIC_RELAXED);
}

/* The workers copy on streams of their own: the ops have streams and
 * PHOS_GPU_SYNC_COPY is not 1. */
static bool streams_on(const struct gio_ops *ops)
{
	return ops->stream_create && ops->stream_destroy && ops->stream_sync &&
	       ops->dtoh_async && ops->htod_async && !phos_env_on("PHOS_GPU_SYNC_COPY");
}

static void streams_init(struct streams *ss, const struct gio_ops *ops)
{
	memset(ss, 0, sizeof(*ss));
	ss->ops = ops;
	ss->on = streams_on(ops);
}

const char *gio_stream_note(const struct gio_ops *ops)
{
	return streams_on(ops) ? "" : " on the default stream";
}

/* The worker's stream in ctx (the current context), made on first use;
 * NULL: copy on the context's default stream (no stream ops, a context
 * too many, or the driver would not make one). */
static CUstream stream_of(struct streams *ss, CUcontext ctx)
{
	CUstream s;

	if (!ss->on)
		return NULL;
	for (unsigned k = 0; k < ss->n; k++)
		if (ss->ctx[k] == ctx)
			return ss->s[k];
	if (ss->n == MAX_STREAMS || ss->ops->stream_create(&s) != CUDA_SUCCESS)
		return NULL;
	ss->ctx[ss->n] = ctx;
	ss->s[ss->n++] = s;
	return s;
}

static void streams_free(struct streams *ss)
{
	for (unsigned k = 0; k < ss->n; k++)
		if (ss->ops->set_current(ss->ctx[k]) == CUDA_SUCCESS)
			ss->ops->stream_destroy(ss->s[k]);
	ss->n = 0;
}

/* Copies that are complete when they return. */
static CUresult copy_dtoh(struct streams *ss, CUcontext ctx, void *dst, CUdeviceptr src, size_t n)
{
	CUstream s = stream_of(ss, ctx);
	CUresult cr;

	if (!s)
		return ss->ops->dtoh(dst, src, n);
	cr = ss->ops->dtoh_async(dst, src, n, s);
	return cr != CUDA_SUCCESS ? cr : ss->ops->stream_sync(s);
}

static CUresult copy_htod(struct streams *ss, CUcontext ctx, CUdeviceptr dst, const void *src,
			  size_t n)
{
	CUstream s = stream_of(ss, ctx);
	CUresult cr;

	if (!s)
		return ss->ops->htod((void *)(uintptr_t)dst, src, n);
	cr = ss->ops->htod_async((void *)(uintptr_t)dst, src, n, s);
	return cr != CUDA_SUCCESS ? cr : ss->ops->stream_sync(s);
}

static int save_chunk(struct run *r, struct streams *ss, const struct chunk *c, void *stage)
{
	struct gio *g = r->g;
	struct gio_buf *b = &g->b[c->i];
	CUresult cr;
	size_t done = 0;

	if (g->from_host) {
		stage = b->host + c->off;
	} else if ((cr = copy_dtoh(ss, b->ctx, stage, b->dptr + c->off, c->len)) != CUDA_SUCCESS) {
		failf(r, "copying buffer %u at offset %llu: %s", c->i, (unsigned long long)c->off,
		      g->ops->err(cr));
		return -1;
	}
	if (g->hash)
		fold_hash(g, b, stage, c);
	if (b->fd < 0 && g->put) {
		char err[200] = "";

		if (g->put(g->arg, c->i, c->off, stage, c->len, err, sizeof(err)) < 0) {
			failf(r, "buffer %u at offset %llu: %s", c->i, (unsigned long long)c->off, err);
			return -1;
		}
		return 0;
	}
	while (done < c->len) {
		ssize_t w = pwrite(b->fd, (char *)stage + done, c->len - done,
				   (off_t)(c->off + done));

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			failf(r, "writing buffer %u at offset %llu: %s", c->i,
			      (unsigned long long)(c->off + done), w < 0 ? strerror(errno) : "no progress");
			return -1;
		}
		done += (size_t)w;
	}
	return 0;
}

/* The piece a chunk of a GIO_STAGE run is (pieces are numbered buffer by
 * buffer, g->chunk bytes each, the last of a buffer shorter). */
static unsigned piece_of(const struct run *r, const struct chunk *c)
{
	unsigned lo = 0, hi = r->pin.n;

	while (hi - lo > 1) {	/* the last piece of buffer <= c->i at offset <= c->off */
		unsigned mid = lo + (hi - lo) / 2;

		if (r->pin.buf[mid] < c->i || (r->pin.buf[mid] == c->i && r->pin.off[mid] <= c->off))
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* A pinner: pins the pieces in the workers' order, ahead of them, so that
 * a copy does not wait for its pinning.  Off by default: on an H200
 * (session 10, 64 GiB) two pinners took 2.8 s for the pool, and the
 * copies hardly ran meanwhile (2.9 GB/s; 55 GB/s once all was pinned), so
 * the GPU was free later than with each worker pinning its own piece.  A
 * piece a pinner cannot pin is left to its worker, which pins it and
 * reports the error if that fails too. */
static void *pinner(void *arg)
{
	struct run *r = arg;
	struct gio *g = r->g;
	bool ok = g->ops->set_current(g->b[0].ctx) == CUDA_SUCCESS;

	for (;;) {
		unsigned k = __atomic_fetch_add(&r->pin.next, 1, __ATOMIC_RELAXED);

		if (k >= r->pin.n || __atomic_load_n(&r->failed, __ATOMIC_RELAXED))
			break;
		struct gio_buf *b = &g->b[r->pin.buf[k]];
		uint64_t len = b->size - r->pin.off[k] < g->chunk ? b->size - r->pin.off[k] : g->chunk;
		uint8_t st = ok && g->ops->host_register(b->host + r->pin.off[k], len) == CUDA_SUCCESS ?
			     PIN_DONE : PIN_SELF;

		pthread_mutex_lock(&r->lock);
		r->pin.st[k] = st;
		pthread_cond_broadcast(&r->pin.cv);
		pthread_mutex_unlock(&r->lock);
	}
	/* the last one out hands whatever no pinner took to the workers */
	pthread_mutex_lock(&r->lock);
	if (--r->pin.left == 0) {
		for (unsigned k = 0; k < r->pin.n; k++)
			if (r->pin.st[k] == PIN_WAIT)
				r->pin.st[k] = PIN_SELF;
		g->pinned_ms = now_ms() - r->t0;
		pthread_cond_broadcast(&r->pin.cv);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* Number the pieces of a GIO_STAGE run for its pinners; false when there
 * is no memory for that (the workers then pin their own). */
static bool pins_init(struct run *r)
{
	struct gio *g = r->g;
	size_t n = 0;

	for (unsigned i = 0; i < g->n; i++)
		n += (g->b[i].size + g->chunk - 1) / g->chunk;
	r->pin.buf = calloc(n ? n : 1, sizeof(*r->pin.buf));
	r->pin.off = calloc(n ? n : 1, sizeof(*r->pin.off));
	r->pin.st = calloc(n ? n : 1, sizeof(*r->pin.st));
	if (!r->pin.buf || !r->pin.off || !r->pin.st || n > UINT32_MAX) {
		free(r->pin.buf);
		free(r->pin.off);
		free(r->pin.st);
		r->pin.st = NULL;
		return false;
	}
	n = 0;
	for (unsigned i = 0; i < g->n; i++)
		for (uint64_t off = 0; off < g->b[i].size; off += g->chunk, n++) {
			r->pin.buf[n] = i;
			r->pin.off[n] = off;
		}
	r->pin.n = (unsigned)n;
	pthread_cond_init(&r->pin.cv, NULL);
	return true;
}

/* a chunk may be copied into or from host memory at p once ready() says so */
static int chunk_ready(struct run *r, const struct chunk *c, void *p)
{
	char err[200] = "";

	if (!r->g->ready || r->g->ready(r->g->arg, p, c->len, err, sizeof(err)) == 0)
		return 0;
	failf(r, "buffer %u at offset %llu: %s", c->i, (unsigned long long)c->off, err);
	return -1;
}

/* A piece device to host memory, pinned for the copy (and, with
 * keep_pinned, after it). */
static int stage_chunk(struct run *r, struct streams *ss, const struct chunk *c)
{
	struct gio *g = r->g;
	struct gio_buf *b = &g->b[c->i];
	void *dst = b->host + c->off;
	CUresult cr = CUDA_SUCCESS, ur;

	if (g->prepinned)
		goto pinned;
	if (r->pin.st) {
		unsigned k = piece_of(r, c);

		pthread_mutex_lock(&r->lock);
		while (r->pin.st[k] == PIN_WAIT && !r->failed)
			pthread_cond_wait(&r->pin.cv, &r->lock);
		bool self = r->pin.st[k] != PIN_DONE;
		pthread_mutex_unlock(&r->lock);
		if (!self)
			goto pinned;
	}
	if ((cr = g->ops->host_register(dst, c->len)) != CUDA_SUCCESS) {
		failf(r, "pinning %zu MiB of the staging pool for buffer %u: %s", c->len >> 20, c->i,
		      g->ops->err(cr));
		return -1;
	}
pinned:
	if (chunk_ready(r, c, dst) < 0)
		return -1;
	cr = copy_dtoh(ss, b->ctx, dst, b->dptr + c->off, c->len);
	ur = g->keep_pinned || g->prepinned ? CUDA_SUCCESS : g->ops->host_unregister(dst);
	if (cr != CUDA_SUCCESS || ur != CUDA_SUCCESS) {
		failf(r, "copying buffer %u at offset %llu into the staging pool: %s", c->i,
		      (unsigned long long)c->off, g->ops->err(cr != CUDA_SUCCESS ? cr : ur));
		return -1;
	}
	return 0;
}

static int load_chunk(struct run *r, struct streams *ss, const struct chunk *c, void *stage)
{
	struct gio *g = r->g;
	struct gio_buf *b = &g->b[c->i];
	CUresult cr;
	size_t done = 0;

	if (g->direct) {
		stage = b->host + c->off;
		done = c->len;
		if (chunk_ready(r, c, stage) < 0)
			return -1;
	} else if (b->fd < 0 && g->get) {
		char err[200] = "";

		if (g->get(g->arg, c->i, c->off, stage, c->len, err, sizeof(err)) < 0) {
			failf(r, "buffer %u at offset %llu: %s", c->i, (unsigned long long)c->off, err);
			return -1;
		}
		done = c->len;
	}
	while (done < c->len) {
		ssize_t n = pread(b->fd, (char *)stage + done, c->len - done,
				  (off_t)(c->off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			failf(r, "reading buffer %u at offset %llu: %s", c->i,
			      (unsigned long long)(c->off + done), n < 0 ? strerror(errno) :
			      "the file is shorter than the buffer");
			return -1;
		}
		done += (size_t)n;
	}
	if (g->hash && !g->direct)
		fold_hash(g, b, stage, c);
	if ((cr = copy_htod(ss, b->ctx, b->dptr + c->off, stage, c->len)) != CUDA_SUCCESS) {
		failf(r, "loading buffer %u at offset %llu: %s", c->i, (unsigned long long)c->off,
		      g->ops->err(cr));
		return -1;
	}
	return 0;
}

/* Record when each eighth of the bytes was reached. */
static void note_moved(struct run *r, size_t len)
{
	uint64_t after = __atomic_add_fetch(&r->moved, len, __ATOMIC_RELAXED), before = after - len;
	uint64_t t = now_ms() - r->t0;

	for (unsigned k = 0; k < 8; k++) {
		uint64_t mark = r->total / 8 * (k + 1);

		if (before < mark && after >= mark)
			r->g->eighths[k] = t;	/* one worker crosses each mark */
	}
}

/* A chunk is in place: counted, and its buffer completed if it was the
 * last.  -1 when done() failed (reported). */
static int chunk_moved(struct run *r, const struct chunk *c)
{
	struct gio *g = r->g;

	note_moved(r, c->len);
	/* the worker that moves a buffer's last bytes completes it */
	if (__atomic_sub_fetch(&g->b[c->i].left, c->len, __ATOMIC_ACQ_REL) == 0 && g->done &&
	    g->done(g->arg, c->i) != 0) {
		failf(r, "buffer %u: %s", c->i, g->err[0] ? g->err : "failed");
		return -1;
	}
	return 0;
}

/*
 * GIO_STAGE with bounce: each chunk is copied device to host into one of
 * the worker's two pinned buffers, and while that copy runs (on the
 * worker's stream) the CPU copies the chunk before it from the other
 * buffer into the pool.  Without streams each copy is waited for.
 */
static void bounce_loop(struct run *r, struct streams *ss, CUcontext ctx, void *buf[2])
{
	struct gio *g = r->g;
	struct chunk c, pend;
	CUstream inflight = NULL;
	bool have = false;
	unsigned cur = 0;
	CUresult cr;

	for (;;) {
		pthread_mutex_lock(&r->lock);
		bool got = next_chunk(r, &c);
		pthread_mutex_unlock(&r->lock);
		if (got) {
			struct gio_buf *b = &g->b[c.i];

			if (b->ctx != ctx && (cr = g->ops->set_current(ctx = b->ctx)) != CUDA_SUCCESS) {
				failf(r, "buffer %u: %s", c.i, g->ops->err(cr));
				break;
			}
			CUstream s = stream_of(ss, ctx);

			cr = s ? g->ops->dtoh_async(buf[cur], b->dptr + c.off, c.len, s) :
				 g->ops->dtoh(buf[cur], b->dptr + c.off, c.len);
			if (cr != CUDA_SUCCESS) {
				failf(r, "copying buffer %u at offset %llu: %s", c.i,
				      (unsigned long long)c.off, g->ops->err(cr));
				break;
			}
			inflight = s;
		}
		if (have) {
			memcpy(g->b[pend.i].host + pend.off, buf[cur ^ 1], pend.len);
			have = false;
			if (chunk_moved(r, &pend) < 0)
				break;
		}
		if (!got)
			break;
		if (inflight) {
			cr = g->ops->stream_sync(inflight);
			inflight = NULL;
			if (cr != CUDA_SUCCESS) {
				failf(r, "copying buffer %u at offset %llu: %s", c.i,
				      (unsigned long long)c.off, g->ops->err(cr));
				break;
			}
		}
		pend = c;
		have = true;
		cur ^= 1;
	}
	if (inflight)	/* a failure with a copy under way: not into freed memory */
		g->ops->stream_sync(inflight);
}

static void *worker(void *arg)
{
	struct run *r = arg;
	struct gio *g = r->g;
	CUcontext ctx = NULL;
	void *stage = NULL;
	struct streams ss;
	struct chunk c;
	CUresult cr;

	bool device = !(g->dir == GIO_SAVE && g->from_host);

	streams_init(&ss, g->ops);
	/* this thread's alone (Linux: nice is per thread); a hint, so a
	 * failure is not one */
	if (g->nice)
		(void)setpriority(PRIO_PROCESS, (id_t)gettid(), g->nice);

	/* a new thread has no current context, and pinned memory needs one:
	 * the first buffer's (its copies switch to each buffer's own) */
	if (device && g->n && (cr = g->ops->set_current(ctx = g->b[0].ctx)) != CUDA_SUCCESS) {
		failf(r, "buffer 0: %s", g->ops->err(cr));
		return NULL;
	}
	if (device && (g->dir == GIO_SAVE || (g->dir == GIO_LOAD && !g->direct) || g->bounce) &&
	    (cr = g->ops->host_alloc(&stage, g->chunk)) != CUDA_SUCCESS) {
		failf(r, "pinned staging buffer of %zu MiB: %s", g->chunk >> 20, g->ops->err(cr));
		return NULL;
	}
	if (g->dir == GIO_STAGE && g->bounce) {
		void *buf[2] = { stage, NULL };

		if ((cr = g->ops->host_alloc(&buf[1], g->chunk)) != CUDA_SUCCESS)
			failf(r, "pinned staging buffer of %zu MiB: %s", g->chunk >> 20,
			      g->ops->err(cr));
		else
			bounce_loop(r, &ss, ctx, buf);
		if (buf[1] && g->ops->host_free)
			g->ops->host_free(buf[1]);
		goto out;
	}
	for (;;) {
		pthread_mutex_lock(&r->lock);
		bool got = next_chunk(r, &c);
		pthread_mutex_unlock(&r->lock);
		if (!got)
			break;
		if (device && g->b[c.i].ctx != ctx) {
			ctx = g->b[c.i].ctx;
			if ((cr = g->ops->set_current(ctx)) != CUDA_SUCCESS) {
				failf(r, "buffer %u: %s", c.i, g->ops->err(cr));
				break;
			}
		}
		if ((g->dir == GIO_SAVE ? save_chunk(r, &ss, &c, stage) :
		     g->dir == GIO_STAGE ? stage_chunk(r, &ss, &c) :
		     load_chunk(r, &ss, &c, stage)) < 0)
			break;
		if (chunk_moved(r, &c) < 0)
			break;
	}
out:
	streams_free(&ss);
	if (stage && g->ops->host_free)
		g->ops->host_free(stage);
	return NULL;
}

void gio_unpin(struct gio *g)
{
	if (g->bounce || g->prepinned)
		return;	/* nothing of the pool was pinned here */
	for (unsigned i = 0; i < g->n; i++)
		for (uint64_t off = 0; off < g->b[i].size; off += g->chunk)
			g->ops->host_unregister(g->b[i].host + off);
}

int gio_run(struct gio *g)
{
	pthread_t t[MAX_THREADS], pt[MAX_PINNERS];
	struct run r = { .g = g, .cur = -1 };
	unsigned nt = 0, np = 0;

	g->err[0] = '\0';
	memset(g->eighths, 0, sizeof(g->eighths));
	r.t0 = now_ms();
	if (!g->threads)
		g->threads = gio_threads();
	if (g->threads > MAX_THREADS)
		g->threads = MAX_THREADS;
	if (!g->chunk)
		g->chunk = gio_chunk();
	for (unsigned i = 0; i < g->n; i++) {
		g->b[i].next = 0;
		g->b[i].left = g->b[i].size;
		g->b[i].started = false;
		g->b[i].h[0] = g->b[i].h[1] = 0;
		r.total += g->b[i].size;
	}
	pthread_mutex_init(&r.lock, NULL);
	g->pinned_ms = 0;
	if (g->pinners > MAX_PINNERS)
		g->pinners = MAX_PINNERS;
	if (g->dir == GIO_STAGE && !g->bounce && !g->prepinned && g->keep_pinned && g->pinners &&
	    g->n && pins_init(&r)) {
		r.pin.left = g->pinners;
		for (; np < g->pinners; np++)
			if (pthread_create(&pt[np], NULL, pinner, &r) != 0)
				break;
		if (np < g->pinners) {	/* as if the missing ones had finished */
			pthread_mutex_lock(&r.lock);
			r.pin.left -= g->pinners - np;
			if (np == 0) {	/* none: the workers pin their own */
				free(r.pin.buf);
				free(r.pin.off);
				free(r.pin.st);
				r.pin.st = NULL;
				pthread_cond_destroy(&r.pin.cv);
			}
			pthread_mutex_unlock(&r.lock);
			g->pinners = np;
		}
	} else {
		g->pinners = 0;
	}
	for (; nt < g->threads; nt++) {
		int e = pthread_create(&t[nt], NULL, worker, &r);

		if (e) {	/* fewer workers are fine; none is not */
			if (nt == 0)
				failf(&r, "cannot start a copy thread: %s", strerror(e));
			break;
		}
	}
	for (unsigned i = 0; i < nt; i++)
		pthread_join(t[i], NULL);
	if (nt == 0)
		failf(&r, "no copy thread");	/* lets the pinners stop */
	for (unsigned i = 0; i < np; i++)
		pthread_join(pt[i], NULL);
	if (r.pin.st) {
		pthread_cond_destroy(&r.pin.cv);
		free(r.pin.buf);
		free(r.pin.off);
		free(r.pin.st);
	}
	pthread_mutex_destroy(&r.lock);
	/* every byte must have been moved */
	for (unsigned i = 0; !r.failed && i < g->n; i++)
		if (g->b[i].left)
			failf(&r, "buffer %u was not copied completely", i);
	return r.failed ? -1 : 0;
}
