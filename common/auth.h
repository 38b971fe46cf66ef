/*
 * auth.h - munge-authenticated requests between nodes.
 *
 * A remote request is an ordinary message whose only attribute is
 * PHOS_A_MUNGE: a munge credential carrying the real payload.  munge signs
 * the payload with the requester's uid/gid and refuses replays, so the
 * receiving phosd learns who asks and that nothing was changed on the way.
 */
#ifndef PHOS_AUTH_H
#define PHOS_AUTH_H

#include <sys/types.h>

#include "err.h"
#include "proto.h"

/* Wrap m's payload into a new message of the same type/seq carrying only a
 * munge credential.  socket: munged's socket, NULL for libmunge's default.
 * NULL + errno and e on failure. */
struct phos_msg *phos_auth_wrap(const struct phos_msg *m, const char *socket, struct phos_err *e);

/* Unwrap a remote request: verify the credential, return the inner message
 * and the requester's uid/gid.  NULL + EPERM (bad, expired or replayed
 * credential: e says which) or EBADMSG (no credential / bad payload). */
struct phos_msg *phos_auth_unwrap(struct phos_msg *m, const char *socket, uid_t *uid, gid_t *gid,
				  struct phos_err *e);

#endif
