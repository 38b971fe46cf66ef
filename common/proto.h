/*
 * proto.h - the phosd wire protocol (see doc/protocol.md).
 *
 * A message is a 16-byte header followed by a payload of attributes:
 *
 *   header:  u32 magic 'PHOS'  u16 version  u16 type  u32 length  u32 seq
 *   attr:    u16 tag  u16 flags(0)  u32 len  u8 value[len]
 *
 * All integers are little-endian.  Integer attributes are 8 bytes.
 * String attributes carry no NUL on the wire and must contain none.
 * length <= PHOS_MSG_MAX.  A decoder never trusts a length it has not
 * checked against the bytes it holds.
 *
 * Ownership: struct phos_msg owns its buffer; phos_msg_free() releases it
 * (safe on NULL and twice).  Strings returned by phos_msg_get_str() point
 * into a copy owned by the message and live until it is freed.
 */
#ifndef PHOS_PROTO_H
#define PHOS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define PHOS_PROTO_MAGIC   0x534f4850u	/* "PHOS" little-endian */
#define PHOS_PROTO_VERSION 1
#define PHOS_HDR_LEN       16
#define PHOS_MSG_MAX       (256 * 1024)	/* payload bytes */
#define PHOS_MAX_FDS       250		/* fds passed with one message (SCM_MAX_FD is 253) */

enum phos_msg_type {
	PHOS_MSG_REPLY = 1,		/* final answer: ERRNO, MSG + per-request attrs */
	PHOS_MSG_PROGRESS = 2,		/* interim: TEXT, DONE, TOTAL */
	PHOS_MSG_STATUS = 10,		/* -> REPLY TEXT */
	PHOS_MSG_LIST = 11,		/* [JOB] -> REPLY TEXT */
	PHOS_MSG_REGISTER = 12,		/* PID JOB STEP TASK UID [FLAGS] */
	PHOS_MSG_UNREGISTER = 13,	/* PID | JOB [STEP TASK] */
	PHOS_MSG_CHECKPOINT = 14,	/* PID | JOB STEP TASK; FLAGS PREDUMP -> PATH GEN */
	PHOS_MSG_RESTORE = 15,		/* PATH | JOB STEP TASK; fds -> PID */
	PHOS_MSG_CANCEL = 16,		/* OPID | PID */
	PHOS_MSG_JOB_END = 17,		/* JOB [FLAGS] : job finished for good */
	PHOS_MSG_RESTORE_PREPARE = 18,	/* JOB STEP TASK UID -> PATH GEN | ENOENT */
	PHOS_MSG_RESTORE_DONE = 19,	/* JOB STEP TASK PID NSPID */
	PHOS_MSG_TASK_DONE = 20,	/* JOB STEP TASK UID STATUS (wait status) */
	PHOS_MSG_GPU_DETACH = 21,	/* libphos: GPUBUFS + fds | ERRNO MSG -> REPLY */
	PHOS_MSG_GPU_REATTACH = 22,	/* libphos: -> REPLY GPUBUFS + fds */
	PHOS_MSG_STAGE_GET = 23,	/* phos-restore: PATH -> REPLY TEXT + the
					 * staging pool's fd | ENOENT */
};

enum phos_attr_tag {
	PHOS_A_ERRNO = 1,	/* u64: 0 on success */
	PHOS_A_MSG = 2,		/* str: human message (errors, warnings) */
	PHOS_A_TEXT = 3,	/* str: human-readable block (status, list) */
	PHOS_A_PID = 4,		/* u64 */
	PHOS_A_JOB = 5,		/* u64 */
	PHOS_A_STEP = 6,	/* u64 (SLURM_BATCH_SCRIPT etc. as Slurm defines) */
	PHOS_A_TASK = 7,	/* u64 */
	PHOS_A_UID = 8,		/* u64 */
	PHOS_A_GID = 9,		/* u64 */
	PHOS_A_FLAGS = 10,	/* u64: PHOS_F_* */
	PHOS_A_PREDUMP = 11,	/* u64: pre-dump rounds */
	PHOS_A_PATH = 12,	/* str */
	PHOS_A_GEN = 13,	/* u64: generation number */
	PHOS_A_OPID = 14,	/* u64: operation id (status/cancel) */
	PHOS_A_DONE = 15,	/* u64: progress done */
	PHOS_A_TOTAL = 16,	/* u64: progress total (0 = unknown) */
	PHOS_A_NSPID = 17,	/* u64: pid as seen inside its pid namespace */
	PHOS_A_KEEP = 18,	/* u64: generations to keep */
	PHOS_A_FDMAP = 19,	/* str: "0,1,2" fd numbers the passed fds stand for */
	PHOS_A_HOST = 20,	/* str */
	PHOS_A_MUNGE = 21,	/* str: munge credential (remote requests) */
	PHOS_A_MS = 22,		/* u64: milliseconds (timings in replies) */
	PHOS_A_BYTES = 23,	/* u64 */
	PHOS_A_STATUS = 24,	/* u64: a wait(2) status */
	PHOS_A_GPUBUFS = 25,	/* blob: struct phos_gpubuf records, one per passed fd */
	PHOS_A_SAVETAB = 26,	/* u64: index of the passed fd that is a concurrent
				 * save's table (common/savetab.h), after the buffers */
};

enum phos_flags {
	PHOS_F_LEAVE_RUNNING = 1u << 0,	/* checkpoint: keep the process running */
	PHOS_F_PREEMPT = 1u << 1,	/* checkpoint: for preemption/requeue */
	PHOS_F_KEEP_IMAGES = 1u << 2,	/* job end: keep images */
	PHOS_F_WAIT = 1u << 3,		/* wait for the operation and stream progress */
	PHOS_F_GPU_IMPORTED = 1u << 4,	/* GPU_DETACH refused by a process that holds
					 * imported GPU memory: the driver checkpoint
					 * could not restore it, no stop-the-world */
};

/*
 * Real-time signal phosd (or phos-restore) sends to a process whose libphos
 * asked for a preemption checkpoint, with one of these values (sigqueue):
 * PROCEED - no checkpoint was taken (scancel, time limit, failure): run the
 *           app's own SIGTERM disposition;
 * RESTORED - the process was restored from the checkpoint: carry on.
 */
#define PHOS_SIGNAL_OFFSET	4	/* SIGRTMIN + 4 */
#define PHOS_SIGVAL_PROCEED	1
#define PHOS_SIGVAL_RESTORED	2
/* HOLD - a preemption checkpoint of this process is written: stop here
 *        until Slurm's SIGKILL (a SIGCONT must not let the app run on
 *        past its checkpoint).  Queued to every thread. */
#define PHOS_SIGVAL_HOLD	3
/* DETACH - hand the large GPU buffers to phosd (GPU_DETACH) and keep every
 *          CUDA call waiting at the hooks;
 * REATTACH - take them back (GPU_REATTACH), map them at their addresses,
 *          let the CUDA calls go on.  doc/protocol.md, "GPU memory". */
#define PHOS_SIGVAL_DETACH	4
#define PHOS_SIGVAL_REATTACH	5
/* RANK - a DETACH is coming (gpu_rank_ms away): rank the buffers by the
 *        order CUDA calls touch them in until then, and send those ranks
 *        with the GPU_DETACH, so that a restore loads first what the
 *        process touched last.  No answer. */
#define PHOS_SIGVAL_RANK	6

/* One large GPU buffer in GPU_DETACH/GPU_REATTACH (PHOS_A_GPUBUFS):
 * little-endian on the wire, PHOS_GPUBUF_LEN bytes each. */
struct phos_gpubuf {
	uint64_t va;		/* where the app maps it */
	uint64_t size;		/* mapped bytes (granularity-rounded) */
	uint32_t dev;		/* CUDA device ordinal of the app */
	uint32_t rank;		/* first-use rank (common/savetab.h's use):
				 * 1 = touched first after the last
				 * checkpoint or restore, 0 = not known */
};
#define PHOS_GPUBUF_LEN 24
#define PHOS_GPUBUF_MAX PHOS_MAX_FDS
void phos_gpubuf_put(uint8_t *p, const struct phos_gpubuf *b);
void phos_gpubuf_get(const uint8_t *p, struct phos_gpubuf *b);

struct phos_msg {
	uint16_t type;
	uint32_t seq;
	size_t len;		/* payload bytes used */
	size_t cap;
	uint8_t *buf;		/* payload */
	/* decoded string copies, freed with the message */
	char **strs;
	size_t nstrs;
	/* fds received with the message (owned: closed by phos_msg_free) */
	int fds[PHOS_MAX_FDS];
	int nfds;
};

/* Create an empty message of type; NULL + ENOMEM on failure. */
struct phos_msg *phos_msg_new(uint16_t type, uint32_t seq);
void phos_msg_free(struct phos_msg *m);

/* Append attributes.  -1 + EMSGSIZE when the payload would exceed
 * PHOS_MSG_MAX, EINVAL for a string containing NUL (cannot happen with a
 * C string) or a bad tag; ENOMEM. */
int phos_msg_put_u64(struct phos_msg *m, uint16_t tag, uint64_t v);
int phos_msg_put_str(struct phos_msg *m, uint16_t tag, const char *s);
int phos_msg_put_blob(struct phos_msg *m, uint16_t tag, const void *p, size_t n);

/* Look up the first attribute with tag.  0 on success; -1 + ENOENT if
 * absent, EBADMSG if present with the wrong size/contents. */
int phos_msg_get_u64(const struct phos_msg *m, uint16_t tag, uint64_t *v);
int phos_msg_get_str(struct phos_msg *m, uint16_t tag, const char **s);
bool phos_msg_has(const struct phos_msg *m, uint16_t tag);
/* A blob attribute: *p points into the message, *n its length. */
int phos_msg_get_blob(const struct phos_msg *m, uint16_t tag, const void **p, size_t *n);

/* Encode header+payload into buf (caller frees *out).  -1 + errno. */
int phos_msg_encode(const struct phos_msg *m, uint8_t **out, size_t *outlen);

/*
 * Decode one message from buf[0..n).  On success returns the message and
 * sets *used to the bytes consumed.  Returns NULL with errno:
 *   EAGAIN   - truncated: need more bytes (not an error on a stream)
 *   EPROTO   - bad magic or unsupported version
 *   EMSGSIZE - declared length > PHOS_MSG_MAX
 *   EBADMSG  - malformed attributes
 *   ENOMEM
 */
struct phos_msg *phos_msg_decode(const uint8_t *buf, size_t n, size_t *used);

/* Send m on a connected stream socket, with fds (may be NULL/0) as
 * SCM_RIGHTS.  Retries on EINTR and partial writes.  -1 + errno. */
int phos_msg_send(int sock, const struct phos_msg *m, const int *fds, int nfds);

/* Receive one message (blocking), with any fds passed along.  NULL +
 * errno; ECONNRESET on a clean EOF before a full message; timeout_ms < 0
 * waits forever, else ETIMEDOUT. */
struct phos_msg *phos_msg_recv(int sock, int timeout_ms);

/* Convenience: a REPLY with ERRNO=err and, if fmt, MSG. */
struct phos_msg *phos_reply_new(uint32_t seq, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

const char *phos_msg_type_name(uint16_t type);

#endif
