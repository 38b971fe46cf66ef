/*
 * handlers.h - one function per request type.
 */
#ifndef PHOSD_HANDLERS_H
#define PHOSD_HANDLERS_H

#include "proto.h"
#include "server.h"

/* Answer req (exactly one REPLY is sent to c). */
void handle_request(struct client *c, struct phos_msg *req);

/* Periodic checkpoints that are due; called about once a second. */
void periodic_tick(void);

#endif
