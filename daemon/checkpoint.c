/*
 * checkpoint.c - one checkpoint, from CRIU dump to published generation.
 *
 *   claim -> begin staging dir -> [pre-dump x N] -> dump -> manifest
 *         -> publish (fsync, MAC, rename) -> retention -> release
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "checkpoint.h"
#include "criu.h"
#include "cuda.h"
#include "gpu.h"
#include "image.h"
#include "log.h"
#include "ops.h"
#include "phosd.h"
#include "prefetch.h"
#include "proc.h"
#include "proto.h"
#include "server.h"
#include "stage.h"
#include "util.h"

struct ctx {
	const struct ckpt_req *r;
	uint64_t op;
	uint64_t frozen_ms;		/* when CRIU froze the tree */
	uint64_t thawed_ms;
	uint64_t sums_key;		/* the generation's, for phos-gpu save */
};

static void progress(struct ctx *c, uint64_t done, uint64_t total, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void progress(struct ctx *c, uint64_t done, uint64_t total, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	op_phase(c->op, false, done, total, "%s", buf);
	if (c->r->client)
		client_progress(c->r->client, c->r->seq, done, total, "%s", buf);
}

/* CRIU notifications: note when the tree is frozen and thawed. */
static int on_notify(void *arg, const char *script, pid_t pid)
{
	struct ctx *c = arg;

	(void)pid;
	if (strcmp(script, "pre-dump") == 0 || strcmp(script, "network-lock") == 0) {
		if (!c->frozen_ms)
			c->frozen_ms = phos_now_ms();
	} else if (strcmp(script, "post-dump") == 0) {
		c->thawed_ms = phos_now_ms();
		/* Preemption: the image is written and the tree still seized.
		 * Queue HOLD now, so that when Slurm's SIGCONT resumes the tree
		 * CRIU leaves stopped, libphos stops every thread before the
		 * app runs one more instruction past its checkpoint. */
		if (c->r->flags & PHOS_F_PREEMPT)
			log_debug("pid %d: hold queued to %d thread(s)", (int)c->r->pid,
				  proc_signal_libphos(c->r->pid, PHOS_SIGVAL_HOLD));
		/* The tree is frozen: what was checked at the request must still
		 * hold (a setuid exec in between would change it). */
		if (c->r->check_uid != (uid_t)-1) {
			struct proc_ids ids;

			if (proc_ids(c->r->pid, &ids) < 0 || !proc_plain_user(&ids, c->r->check_uid)) {
				log_warn("pid %d changed credentials during its checkpoint: refused",
					 (int)c->r->pid);
				return -1;
			}
		}
	}
	return 0;
}

/*
 * gpu_rank_ms: let every CUDA process of the set that runs libphos rank its
 * GPU buffers by first use for that long before they are detached, so that
 * a restore loads first what it touched last (doc/concurrent-restore.md,
 * "First-use order").  A process that is gone or cannot be signalled is
 * left to the detach, which says why.
 */
static void rank_gpu(struct ctx *c, const struct cuda_set *cuda, int rank_ms)
{
	unsigned asked = 0;

	if (rank_ms <= 0)
		return;
	for (size_t i = 0; i < cuda->n; i++)
		if (proc_maps_has(cuda->p[i].pid, "libphos.so") && gpu_rank(cuda->p[i].pid) == 0)
			asked++;
	if (!asked)
		return;
	progress(c, 0, 0, "%u process(es) ranking their GPU buffers for %d ms", asked, rank_ms);
	log_info("%u process(es) rank their GPU buffers by first use for %d ms (gpu_rank_ms) "
		 "before the detach", asked, rank_ms);
	struct timespec ts = { rank_ms / 1000, (long)(rank_ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * Ask every CUDA process of the set that runs libphos for its large GPU
 * buffers (gpu.h).  Fills *holds with those that handed theirs over; a
 * process that did not is checkpointed with its buffers attached, and the
 * log says why, unless its memory is imported (gpu.h): then -1, as when
 * out of memory.
 */
static int detach_gpu(struct ctx *c, const struct cuda_set *cuda, struct gpu_hold **holds,
		      size_t *n, unsigned timeout_s, int rank_ms, struct phos_err *e)
{
	unsigned tmo = timeout_s && timeout_s < 30 ? timeout_s * 1000u : 30000u;

	*holds = calloc(cuda->n, sizeof(**holds));
	if (!*holds)
		return phos_errnof(e, ENOMEM, "out of memory");
	rank_gpu(c, cuda, rank_ms);
	for (size_t i = 0; i < cuda->n; i++) {
		pid_t pid = cuda->p[i].pid;
		struct gpu_hold *h = &(*holds)[*n];
		struct phos_err ge = { 0 };
		uint64_t t0 = phos_now_ms();
		int r;

		if (!proc_maps_has(pid, "libphos.so"))
			continue;
		progress(c, 0, 0, "detaching the GPU buffers of pid %d", (int)pid);
		r = gpu_detach(pid, tmo, h, &ge);
		if (r < 0)
			return phos_errnof(e, EIO, "%s", ge.msg);
		if (r > 0) {
			struct proc_ids ids;

			/* the pid the image gives it: its name in the image */
			h->nspid = proc_ids(pid, &ids) == 0 ? ids.nspid : pid;
			log_info("pid %d: %d GPU buffer(s), %" PRIu64 " bytes detached in %" PRIu64
				 " ms", (int)pid, h->n, h->bytes, phos_now_ms() - t0);
			(*n)++;
		} else {
			log_notice("pid %d: GPU buffers stay attached (stop-the-world for them): %s",
				   (int)pid, ge.msg);
		}
	}
	return 0;
}

/* Hand h back to its process, once (h->n == 0 afterwards). */
static void give_back(struct gpu_hold *h, const char *target)
{
	struct phos_err ge = { 0 };

	if (h->n == 0)
		return;
	if (gpu_reattach(h, h->pid, 30000, &ge) < 0) {
		log_err("checkpoint %s: %s", target, ge.msg);
		return;
	}
	log_info("checkpoint %s: pid %d has its %d GPU buffer(s) back", target, (int)h->pid, h->n);
	gpu_hold_release(h);
}

/* Signal every process of a tree CRIU left stopped after its dump:
 * SIGKILL once the image is published, SIGCONT when the checkpoint
 * failed after the dump. */
static void signal_tree(pid_t root, int sig)
{
	pid_t *tree = NULL;
	size_t n = 0;

	if (proc_tree(root, &tree, &n) < 0) {
		kill(root, sig);
		return;
	}
	for (size_t i = 0; i < n; i++)
		kill(tree[i], sig);
	free(tree);
}

/* Is mount mnt in pid's mount namespace? */
static bool mount_visible(pid_t pid, unsigned mnt)
{
	char path[64], line[1024];
	bool found = false;
	unsigned id;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/mountinfo", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = sscanf(line, "%u", &id) == 1 && id == mnt;
	fclose(f);
	return found;
}

/*
 * How a restore re-attaches stdio fd of pid, as CRIU's inherit-fd key:
 * pipes and sockets by inode ("pipe:[123]"); files by their path without
 * the leading '/' (CRIU then takes the new fd as it is: the job's output
 * file may have grown); a file whose mount is not in the task's mount
 * namespace (stdio handed to a task restored in its own namespace) is
 * declared external, "file[MNT:INO]", so CRIU does not look for the mount.
 * Empty: CRIU handles the fd itself (terminals).
 */
static void stdio_key(pid_t pid, int fd, const char *link, char *key, size_t size, bool *external)
{
	char path[64], line[256];
	struct stat st;
	unsigned mnt = 0;
	FILE *f;

	key[0] = '\0';
	*external = false;
	if (strncmp(link, "pipe:[", 6) == 0 || strncmp(link, "socket:[", 8) == 0) {
		if (phos_strlcpy(key, link, size) < 0)
			key[0] = '\0';
		return;
	}
	if (link[0] != '/' || strncmp(link, "/dev/pts/", 9) == 0 || strncmp(link, "/dev/tty", 8) == 0 ||
	    strstr(link, " (deleted)"))
		return;
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
	if (stat(path, &st) < 0)
		return;
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)pid, fd);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "mnt_id: %u", &mnt) == 1)
			break;
	fclose(f);
	if (mnt && !mount_visible(pid, mnt)) {
		snprintf(key, size, "file[%x:%" PRIx64 "]", mnt, (uint64_t)st.st_ino);
		*external = true;
	} else if (phos_strlcpy(key, link + 1, size) < 0) {
		key[0] = '\0';
	}
}

/* Record what the restore needs to re-attach: stdio, libphos waiters.
 * Fills the CRIU request's external files (keys[] keeps the strings). */
static int record_process(struct phos_image_writer *w, pid_t pid, struct phos_criu_req *cr,
			  char keys[3][512], struct phos_err *e)
{
	char key[32], link[512];
	pid_t *tree = NULL;
	size_t n = 0;
	char waiters[4096] = "";
	size_t used = 0;

	for (int fd = 0; fd < 3; fd++) {
		keys[fd][0] = '\0';
		if (proc_fd_link(pid, fd, link, sizeof(link)) < 0)
			continue;
		bool external;

		stdio_key(pid, fd, link, keys[fd], sizeof(keys[fd]), &external);
		snprintf(key, sizeof(key), "stdio.%d.path", fd);
		if (phos_image_set_extra(w, key, link, e) < 0)
			return -1;
		if (!keys[fd][0])
			continue;
		snprintf(key, sizeof(key), "stdio.%d", fd);
		if (phos_image_set_extra(w, key, keys[fd], e) < 0)
			return -1;
		if (external) {
			bool dup = false;

			for (int i = 0; i < cr->nexternal; i++)
				dup |= strcmp(cr->external[i], keys[fd]) == 0;
			if (!dup)
				cr->external[cr->nexternal++] = keys[fd];
		}
	}
	if (proc_tree(pid, &tree, &n) < 0)
		return phos_errf(e, "cannot list the processes of pid %d: %s", (int)pid, strerror(errno));
	/* the file pages a restore reads ahead (prefetch.h): a hint, taken
	 * while the tree still runs */
	uint64_t t0 = phos_now_ms(), bytes;
	size_t ranges;

	if (prefetch_record(w->dir_fd, tree, n, &ranges, &bytes) < 0)
		log_warn("checkpoint of pid %d: no %s (%m): its restore reads the files it maps "
			 "on demand", (int)pid, PHOS_PREFETCH_NAME);
	else
		log_debug("checkpoint of pid %d: %s: %zu range(s), %" PRIu64 " MiB of mapped files, "
			  "in %" PRIu64 " ms", (int)pid, PHOS_PREFETCH_NAME, ranges, bytes >> 20,
			  phos_now_ms() - t0);
	for (size_t i = 0; i < n; i++) {
		struct proc_ids ids;

		if (!proc_maps_has(tree[i], "libphos.so") || proc_ids(tree[i], &ids) < 0)
			continue;
		int k = snprintf(waiters + used, sizeof(waiters) - used, "%s%d", used ? "," : "",
				 (int)ids.nspid);
		if (k < 0 || (size_t)k >= sizeof(waiters) - used)
			break;
		used += (size_t)k;
	}
	snprintf(link, sizeof(link), "%zu", n);
	free(tree);
	if (phos_image_set_extra(w, "phos.processes", link, e) < 0)
		return -1;
	if (used && phos_image_set_extra(w, "phos.waiters", waiters, e) < 0)
		return -1;
	return 0;
}

/* Sum of file sizes in the manifest. */
static uint64_t manifest_bytes(const struct phos_manifest *m)
{
	uint64_t b = 0;

	for (size_t i = 0; i < m->n_files; i++)
		b += m->files[i].size;
	return b;
}

/* Whether the file system holding the staging directory is (nearly) out
 * of space: under 1 MiB or 0.1% left.  CRIU's log lives on that same file
 * system, so its own "No space left" line is often the write that failed. */
static bool staging_full(int dir_fd)
{
	struct statvfs sv;
	uint64_t avail, floor;

	if (fstatvfs(dir_fd, &sv) < 0 || sv.f_blocks == 0)
		return false;
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	floor = (uint64_t)sv.f_blocks * sv.f_frsize / 1000;
	if (floor < (1u << 20))
		floor = 1u << 20;
	return avail < floor;
}

/* A dump that failed because checkpoint_dir is full says so, whatever
 * CRIU's last error was (it depends on where the write failed). */
static void explain_enospc(const struct phos_image_writer *w, const char *dir, pid_t pid,
			   struct phos_err *e)
{
	char line[1024], path[64];
	bool full = false;
	unsigned long rss_kb = 0;
	FILE *f;
	int fd;

	if (w->dir_fd < 0)
		return;
	if ((fd = openat(w->dir_fd, "dump.log", O_RDONLY | O_CLOEXEC)) >= 0) {
		f = fdopen(fd, "r");
		if (!f)
			close(fd);
		while (f && !full && fgets(line, sizeof(line), f))
			full = strstr(line, "No space left on device") ||
			       strstr(line, "Disk quota exceeded");
		if (f)
			fclose(f);
	}
	if (!full)
		full = staging_full(w->dir_fd);
	if (!full)
		return;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lu kB", &rss_kb) == 1)
			break;
	if (f)
		fclose(f);
	phos_errnof(e, ENOSPC, "checkpoint_dir %s is full (No space left on device): the image "
		    "needs about %lu MB", dir, rss_kb / 1024 + 1);
}

/* Keep CRIU's log of a failed checkpoint (the staging directory goes). */
static void keep_log(const struct phos_image_writer *w, const char *state_dir,
		     const struct phos_image_id *id, struct phos_err *e)
{
	char dst[4200];
	int in, out;
	char buf[65536];
	ssize_t n;

	if (w->dir_fd < 0 || (in = openat(w->dir_fd, "dump.log", O_RDONLY | O_CLOEXEC)) < 0)
		return;
	/* One file per task, replaced by its next failure: a periodic
	 * checkpoint failing every few minutes must not fill state_dir. */
	if (id->kind == PHOS_JOB_PID)
		snprintf(dst, sizeof(dst), "%s/failed-checkpoint-pid-%u.log", state_dir, id->job);
	else
		snprintf(dst, sizeof(dst), "%s/failed-checkpoint-job-%u.%u.%u.log", state_dir, id->job,
			 id->step, id->task);
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0) {
		close(in);
		return;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (phos_write_full(out, buf, (size_t)n) < 0)
			break;
	close(in);
	close(out);
	if (e) {
		size_t l = strlen(e->msg);
		char *p = strstr(e->msg, "(full log: dump.log)");

		if (p)
			l = (size_t)(p - e->msg);
		snprintf(e->msg + l, sizeof(e->msg) - l, "%s(CRIU log: %s)", p ? "" : " ", dst);
	}
}

/* Start phos-gpu save for hold h: through piece off of the staging pool
 * when off >= 0.  0, or -1 + e. */
static int start_save(struct ctx *c, uint64_t step, struct gpu_hold *h, struct gpu_save *sv,
		      int dir_fd, unsigned how, const struct stage_lease *pool, int64_t off,
		      struct phos_err *e)
{
	progress(c, step, step, "saving %d GPU buffer(s) of pid %d", h->n, (int)h->pid);
	/* named by the pid the image gives the process (CRIU restores it) */
	return gpu_save_start(h, dir_fd, h->nspid, how, off >= 0 ? pool->fd : -1,
			      off >= 0 ? (uint64_t)off : 0, off >= 0 ? &pool->cuda : NULL,
			      c->sums_key, sv, e);
}

/* One attempt; cow: the GPU buffers may be saved while the process runs
 * on (leave-running); *mismatch: that save failed validation. */
static int checkpoint_once(const struct ckpt_req *r, struct ckpt_result *res, bool cow,
			   bool *mismatch, struct phos_err *e)
{
	struct ctx c = { .r = r };
	struct phos_image_writer w;
	struct phos_criu_req cr;
	struct phos_config cfg;
	struct proc_ids ids;
	struct cuda_set cuda;		/* CUDA processes of the tree (cuda.h) */
	struct gpu_hold *holds = NULL;	/* their detached GPU buffers (gpu.h) */
	struct gpu_save *saves = NULL;	/* ... being saved */
	struct stage_lease pool = { .fd = -1 };	/* ... through the staging pool */
	int64_t *pieces = NULL;		/* ... at these offsets of it (-1: not) */
	size_t nholds = 0;
	uint64_t gpu_bytes = 0;	/* of the GPU buffers saved */
	char target[128], num[32];
	bool other_ns = false, kill_after = false, dumped_stopped = false;
	int pidns = -1, mntns = -1, rc = -1;
	char link[4200] = "";
	char stdio_keys[3][512];
	uint64_t t0 = phos_now_ms();
	const char *mode = r->flags & PHOS_F_PREEMPT ? "preempt" :
			   r->flags & PHOS_F_LEAVE_RUNNING ? "leave-running" : "stop";

	memset(res, 0, sizeof(*res));
	cuda_set_init(&cuda);
	phos_image_writer_init(&w);
	pthread_mutex_lock(&phosd->lock);
	cfg = phosd->cfg;
	pthread_mutex_unlock(&phosd->lock);

	if (r->id.kind == PHOS_JOB_SLURM)
		snprintf(target, sizeof(target), "job %u step %u task %u (pid %d)", r->id.job,
			 r->id.step, r->id.task, (int)r->pid);
	else
		snprintf(target, sizeof(target), "pid %d", (int)r->pid);
	c.op = op_start("checkpoint", target, r->uid);

	if (proc_ids(r->pid, &ids) < 0) {
		phos_errf(e, "process %d does not exist", (int)r->pid);
		goto out;
	}
	if (proc_other_pidns(r->pid, &other_ns) < 0) {
		phos_errf(e, "cannot read the pid namespace of %d: %s", (int)r->pid, strerror(errno));
		goto out;
	}
	if (other_ns) {
		char p[64];

		snprintf(p, sizeof(p), "/proc/%d/ns/pid", (int)r->pid);
		pidns = open(p, O_RDONLY | O_CLOEXEC);
		snprintf(p, sizeof(p), "/proc/%d/ns/mnt", (int)r->pid);
		mntns = open(p, O_RDONLY | O_CLOEXEC);
		if (pidns < 0 || mntns < 0) {
			phos_errf(e, "cannot open the namespaces of %d: %s", (int)r->pid, strerror(errno));
			goto out;
		}
	}
	if (phos_image_begin(&phosd->store, &r->id, r->uid, r->gid, &w, e) < 0)
		goto out;
	/* the key of the GPU buffers' sums (common/savetab.h): this
	 * generation's, from the node key */
	if (phos_gpumem_key(&phosd->key, &w.manifest.id, w.generation, &c.sums_key, e) < 0)
		goto out;
	w.manifest.root_pid = r->pid;
	w.manifest.root_nspid = ids.nspid;
	snprintf(num, sizeof(num), "%" PRIu64, r->interval_ms);
	if (phos_image_set_extra(&w, "phos.interval_ms", num, e) < 0 ||
	    phos_image_set_extra(&w, "phos.mode", mode, e) < 0 ||
	    phos_image_set_extra(&w, "phos.version", PACKAGE_VERSION, e) < 0)
		goto out;
	log_info("checkpoint %s (%s) into %s", target, mode, w.path);

	phos_criu_req_init(&cr);
	if (record_process(&w, r->pid, &cr, stdio_keys, e) < 0)
		goto out;
	cr.criu_path = cfg.criu_path;
	cr.images_fd = w.dir_fd;
	cr.pid = other_ns ? ids.nspid : r->pid;
	cr.pidns_fd = pidns;
	cr.mntns_fd = mntns;
	/* CRIU readlink()s the images path it is given (it expects
	 * /proc/PID/fd/N): hand it a symlink to the staging directory. */
	if (pidns >= 0) {
		snprintf(link, sizeof(link), "%s/criu-images-%d-%" PRIu64, cfg.state_dir, (int)getpid(),
			 c.op);
		unlink(link);
		if (symlink(w.path, link) < 0) {
			phos_errf(e, "cannot create %s: %s", link, strerror(errno));
			goto out;
		}
		cr.images_path = link;
	}
	cr.timeout = (unsigned)cfg.checkpoint_timeout;
	cr.notify = on_notify;
	cr.notify_arg = &c;

	/* Pre-dump rounds: memory copied while the tree runs, so the final
	 * dump writes only what changed since. */
	char parent[32] = "";
	unsigned predump = r->predump;
	/* GPU: find the CUDA processes; refused here (the job keeps running)
	 * if their GPU state cannot be saved on this node.  CRIU cannot
	 * pre-dump a process that still maps the GPU, and the driver
	 * checkpoint must come right before the final dump: no pre-dumps. */
	if (cuda_find(r->pid, &cuda, e) < 0)
		goto out;
	/* GPU fast path: processes whose libphos serves their large buffers
	 * hand them to us; the driver checkpoint and CRIU then see only the
	 * rest.  Anything short of a clean hand-over: stop-the-world. */
	if (cuda.n && detach_gpu(&c, &cuda, &holds, &nholds, cfg.checkpoint_timeout, cfg.gpu_rank_ms, e) < 0)
		goto out;
	bool lr = (r->flags & PHOS_F_LEAVE_RUNNING) != 0;
	if (nholds && (!(saves = calloc(nholds, sizeof(*saves))) ||
		       !(pieces = calloc(nholds, sizeof(*pieces))))) {
		phos_errnof(e, ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nholds; i++) {
		gpu_save_init(&saves[i]);	/* the out path aborts every one */
		pieces[i] = -1;
	}
	/* the buffers go into the task's chunk store (doc/storage-engine.md) */
	if (nholds && phos_image_chunks_open(&w, e) < 0)
		goto out;
	/* Stop/preempt with a staging pool: the buffers are out of the
	 * process and nothing writes them any more, so phos-gpu copies them
	 * into the pool now, while the driver and CRIU checkpoint the rest;
	 * phosd lets go of them once the dump is good (doc/concurrent-
	 * checkpoint.md).  A helper that cannot start now (no context
	 * beside the process's: EXCLUSIVE_PROCESS) starts after the dump. */
	char why[160] = "";
	if (nholds && !lr && cfg.gpu_stage_pool_gib && !stage_take(&pool, why, sizeof(why)))
		log_info("checkpoint %s: staging pool %s: GPU memory goes straight to storage",
			 target, why);
	for (size_t i = 0; pool.fd >= 0 && i < nholds; i++) {
		struct phos_err se;

		if (holds[i].n &&
		    (pieces[i] = stage_piece(&pool, stage_span(holds[i].bufs, holds[i].n), why,
					     sizeof(why))) < 0)
			log_info("checkpoint %s: staging pool too small for pid %d (%s): its GPU "
				 "memory goes straight to storage", target, (int)holds[i].pid, why);
		if (pieces[i] < 0)
			continue;
		int src = start_save(&c, 0, &holds[i], &saves[i], w.dir_fd,
				    GPU_SAVE_ZSTD(cfg.gpu_compress_level), &pool, pieces[i], &se);

		if (src == 0 && saves[i].staged) {
			log_info("checkpoint %s: the %d GPU buffer(s) of pid %d go to the staging "
				 "pool while the rest is checkpointed", target, holds[i].n,
				 (int)holds[i].pid);
		} else if (src == 0 && saves[i].direct) {
			/* it could not use the pool (it said why): a direct
			 * copy, as valid beside the dump as after it */
			log_info("checkpoint %s: the %d GPU buffer(s) of pid %d go straight to storage "
				 "while the rest is checkpointed", target, holds[i].n,
				 (int)holds[i].pid);
		} else {
			/* it failed before copying anything: again after the dump */
			if (saves[i].pid > 0 && gpu_save_finish(&saves[i], &se) == 0)
				phos_errf(&se, "it stopped early");
			log_info("checkpoint %s: pid %d's GPU buffers could not go to the staging "
				 "pool before the dump (%s): they are saved after it", target,
				 (int)holds[i].pid, se.msg);
			gpu_save_init(&saves[i]);
		}
	}
	if (cuda.n && predump) {
		log_info("checkpoint %s: CUDA processes: no pre-dump rounds", target);
		predump = 0;
	}
	if (predump && !phosd->mem_track) {
		log_info("checkpoint %s: %u pre-dump round(s) asked for, but this kernel cannot track "
			 "dirty memory: one full dump instead", target, predump);
		if (r->client)
			client_progress(r->client, r->seq, 0, 0, "pre-dump unavailable on this node "
					"(no soft-dirty memory tracking): doing one full dump");
		predump = 0;
	}
	for (unsigned i = 1; i <= predump; i++) {
		char dir[32];
		int dfd;

		if (op_cancelled(c.op)) {
			phos_errnof(e, ECANCELED, "checkpoint of %s cancelled", target);
			goto out;
		}
		op_phase(c.op, true, i - 1, predump + 1, "pre-dump %u/%u", i, predump);
		if (r->client)
			client_progress(r->client, r->seq, i - 1, predump + 1, "pre-dump %u/%u",
					i, predump);
		snprintf(dir, sizeof(dir), "predump-%u", i);
		if (mkdirat(w.dir_fd, dir, 0700) < 0 ||
		    (dfd = openat(w.dir_fd, dir, O_DIRECTORY | O_CLOEXEC)) < 0) {
			phos_errf(e, "cannot create %s/%s: %s", w.path, dir, strerror(errno));
			goto out;
		}
		struct phos_criu_req pr = cr;
		char pp[40];

		pr.images_fd = dfd;
		char plink[4300];
		if (link[0]) {
			snprintf(plink, sizeof(plink), "%s-%s", link, dir);
			char ptarget[4200];
			snprintf(ptarget, sizeof(ptarget), "%s/%s", w.path, dir);
			unlink(plink);
			if (symlink(ptarget, plink) < 0) {
				phos_errf(e, "cannot create %s: %s", plink, strerror(errno));
				close(dfd);
				goto out;
			}
			pr.images_path = plink;
		}
		pr.log_name = "predump.log";
		pr.track_mem = true;
		pr.notify = NULL;
		if (parent[0]) {
			snprintf(pp, sizeof(pp), "../%s", parent);
			pr.parent_img = pp;
		}
		int prc = phos_criu_run(PHOS_CRIU_PRE_DUMP, &pr, NULL, e);
		close(dfd);
		if (link[0])
			unlink(plink);
		if (prc < 0)
			goto out;
		snprintf(parent, sizeof(parent), "%s", dir);
	}
	if (op_cancelled(c.op)) {
		phos_errnof(e, ECANCELED, "checkpoint of %s cancelled", target);
		goto out;
	}
	progress(&c, predump, predump + 1, "dumping %s", target);
	cr.log_name = "dump.log";
	cr.leave_running = (r->flags & (PHOS_F_LEAVE_RUNNING | PHOS_F_PREEMPT)) != 0;
	cr.leave_stopped = (r->flags & PHOS_F_PREEMPT) != 0;
	/* Stop mode: CRIU leaves the tree stopped and phosd kills it once the
	 * image is published, when
	 *  - the tree is in another pid namespace: CRIU runs inside it, and
	 *    once it kills the tree the namespace's init (phos-restore) may
	 *    exit, which kills CRIU before it answers;
	 *  - GPU buffers are still to be saved after the dump: should that
	 *    fail (phos-gpu killed, storage full), the process goes on with
	 *    them, where CRIU's kill would have left neither process nor
	 *    image. */
	bool gpu_after = false;

	for (size_t i = 0; i < nholds; i++)
		gpu_after |= holds[i].n > 0;
	if ((other_ns || gpu_after) && !cr.leave_running) {
		cr.leave_running = cr.leave_stopped = true;
		kill_after = true;
	}
	if (parent[0]) {
		cr.track_mem = true;
		cr.parent_img = parent;
	}
	uint64_t td = phos_now_ms();
	/* GPU: lock + driver checkpoint (the stall starts here); after it the
	 * processes hold no /dev/nvidia* and CRIU dumps the GPU memory the
	 * driver moved into their host memory.  Any failure from here on: the
	 * `out` path's cuda_set_free() restores + unlocks them. */
	if (cuda.n) {
		progress(&c, predump, predump + 1, "checkpointing the CUDA state of %zu process(es)",
			 cuda.n);
		c.frozen_ms = td;
		if (cuda_checkpoint(&cuda, (unsigned)cfg.checkpoint_timeout * 1000u, e) < 0 ||
		    cuda_record(&cuda, &w.manifest, e) < 0)
			goto out;
	}
	if (phos_criu_run(PHOS_CRIU_DUMP, &cr, NULL, e) < 0)
		goto out;
	dumped_stopped = cr.leave_stopped;
	/* GPU: leave-running resumes the app's GPU state; stop and preempt
	 * leave it checkpointed (CRIU killed or stopped the tree: the GPU is
	 * free since cuda_checkpoint()). */
	if (cuda.n && cr.leave_running && !cr.leave_stopped) {
		struct phos_err ge;

		if (cuda_resume(&cuda, &ge) < 0)
			log_err("checkpoint %s: %s", target, ge.msg);
	}
	cuda.done = true;
	/* GPU fast path: the buffers go into the image.  Leave-running: the
	 * helper first takes a copy on the GPU when there is room, and the
	 * process gets its buffers back as soon as it has; otherwise after
	 * the copy. */
	for (size_t i = 0; i < nholds; i++) {
		if (saves[i].pid > 0)
			continue;	/* staging since the detach */
		if (start_save(&c, predump + 1, &holds[i], &saves[i], w.dir_fd,
			       (lr ? GPU_SAVE_SNAPSHOT | (cow ? GPU_SAVE_COW : 0) : 0) |
			       GPU_SAVE_ZSTD(cfg.gpu_compress_level), &pool, pieces[i], e) < 0)
			goto out;
		if (lr && !saves[i].snapshot && !saves[i].cow && gpu_save_finish(&saves[i], e) < 0)
			goto out;
	}
	for (size_t i = 0; lr && i < nholds; i++)
		give_back(&holds[i], target);
	uint64_t tdone = phos_now_ms();
	res->stall_ms = (c.frozen_ms ? tdone - c.frozen_ms : tdone - td);
	for (size_t i = 0; i < nholds; i++) {
		uint64_t staged_ms = 0;

		/* staged: the GPU memory goes once it is in the pool */
		if (saves[i].staged && gpu_save_released(&saves[i], &staged_ms)) {
			log_info("checkpoint %s: the %d GPU buffer(s) of pid %d (%" PRIu64 " bytes) "
				 "released %" PRIu64 " ms after the checkpoint began (in the staging "
				 "pool in %" PRIu64 " ms; written to storage from there now)", target,
				 holds[i].n, (int)holds[i].pid, holds[i].bytes, phos_now_ms() - t0,
				 staged_ms);
			gpu_bytes += holds[i].bytes;
			gpu_hold_release(&holds[i]);
		} else {
			pieces[i] = -1;	/* not (all) in the pool */
		}
		if (saves[i].pid > 0 && gpu_save_finish(&saves[i], e) < 0) {
			*mismatch = saves[i].mismatch;
			goto out;
		}
		gpu_bytes += holds[i].bytes;
		/* stop/preempt: the process is gone and its buffers are on
		 * storage (synced): the GPU memory is free from here on, not
		 * only after the publish (the measure of a preemption's cost
		 * to the GPU) */
		if (!lr && holds[i].n) {
			log_info("checkpoint %s: the %d GPU buffer(s) of pid %d (%" PRIu64 " bytes) "
				 "released %" PRIu64 " ms after the checkpoint began", target,
				 holds[i].n, (int)holds[i].pid, holds[i].bytes, phos_now_ms() - t0);
			gpu_hold_release(&holds[i]);
		}
	}
	progress(&c, predump + 1, predump + 1, "publishing (hashing and syncing the image)");
	/* CRIU chains pre-dumps with "parent" symlinks; the store takes no
	 * symlinks, so the chain becomes nested directories first. */
	if (phos_image_inline_parents(&w, e) < 0 || phos_image_publish(&w, e) < 0)
		goto out;
	res->generation = w.generation;
	/* the files plus the GPU memory (in chunks, some shared with other
	 * generations) */
	res->bytes = manifest_bytes(&w.manifest) + gpu_bytes;
	if (phos_image_gen_path(&phosd->store, &r->id, w.generation, res->path,
				sizeof(res->path), e) < 0)
		goto out;
	struct phos_err re;
	if (phos_image_retain(&phosd->store, &r->id, (unsigned)cfg.keep_generations,
			      PHOS_VERIFY_QUICK, &re) < 0)
		log_warn("retention for %s: %s", target, re.msg);
	/* what went through the pool stays there for a restore of this
	 * generation on this node (doc/protocol.md, "STAGE_GET") */
	if (pool.fd >= 0) {
		char kept[1024] = "";
		size_t k = 0;

		for (size_t i = 0; i < nholds && k < sizeof(kept) - 48; i++)
			if (pieces[i] >= 0)
				k += (size_t)snprintf(kept + k, sizeof(kept) - k, "%d %" PRId64 "\n",
						      (int)holds[i].nspid, pieces[i]);
		stage_keep(&pool, res->path, kept);
	}
	if (kill_after)
		signal_tree(r->pid, SIGKILL);
	rc = 0;
out:
	res->total_ms = phos_now_ms() - t0;
	if (rc == 0)
		log_notice("checkpoint %s: generation %" PRIu64 " (%" PRIu64 " bytes) in %" PRIu64
			   " ms, frozen %" PRIu64 " ms", target, res->generation, res->bytes,
			   res->total_ms, res->stall_ms);
	else if (!*mismatch) {	/* a GPU copy that changed is no CRIU matter */
		explain_enospc(&w, cfg.checkpoint_dir, r->pid, e);
		keep_log(&w, cfg.state_dir, &r->id, e);
	}
	if (rc < 0)
		log_err("checkpoint %s failed: %s", target, e ? e->msg : "");
	phos_image_abort(&w);
	/* Failed after a dump that left the tree stopped.  Stopped by phosd's
	 * choice (kill_after): it goes on, its CUDA state restored and
	 * unlocked below (the driver's restore needs its threads running), its
	 * buffers given back after that.  A preemption's: libphos's HOLD was
	 * queued at the dump (on_notify) and stops every thread for good once
	 * it runs; the tree stays as it is for Slurm to end, its buffers are
	 * let go. */
	if (rc < 0 && dumped_stopped && kill_after) {
		signal_tree(r->pid, SIGCONT);
		cuda.done = false;
		log_notice("checkpoint %s: nothing was published; the process tree goes on", target);
	} else if (rc < 0 && dumped_stopped) {
		res->held = true;
		log_notice("checkpoint %s: nothing was published; the tree stays stopped at its "
			   "checkpoint until Slurm ends it", target);
	}
	cuda_set_free(&cuda);	/* failure after the lock: restore + unlock */
	/* The buffers go back unless the process is gone for good (a stop or
	 * preempt checkpoint that succeeded). */
	for (size_t i = 0; i < nholds; i++) {
		if (saves)
			gpu_save_abort(&saves[i]);
		/* (a stop checkpoint that succeeded let go of them once saved) */
		if ((rc < 0 && !res->held) || (r->flags & PHOS_F_LEAVE_RUNNING))
			give_back(&holds[i], target);
		gpu_hold_release(&holds[i]);
	}
	stage_give(&pool);	/* (no helper is left to write into it) */
	free(pieces);
	free(saves);
	free(holds);
	if (link[0])
		unlink(link);
	phos_closep(&pidns);
	phos_closep(&mntns);
	op_end(c.op);
	return rc;
}

int checkpoint_run(const struct ckpt_req *r, struct ckpt_result *res, struct phos_err *e)
{
	bool mismatch = false;
	int rc = checkpoint_once(r, res, true, &mismatch, e);

	if (rc < 0 && mismatch) {
		/* A write libphos did not see changed a buffer before it was
		 * saved (doc/concurrent-checkpoint.md): that copy is gone;
		 * take the checkpoint again with the process waiting for the
		 * copy of its GPU buffers. */
		log_warn("checkpoint of pid %d: the concurrent GPU save failed validation; "
			 "checkpointing again with the process stopped for the GPU copy",
			 (int)r->pid);
		if (r->client)
			client_progress(r->client, r->seq, 0, 0, "GPU buffers changed during the "
					"concurrent save: checkpointing again, stop-the-world");
		mismatch = false;
		rc = checkpoint_once(r, res, false, &mismatch, e);
	}
	return rc;
}
