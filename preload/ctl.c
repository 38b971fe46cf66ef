/*
 * ctl.c - what libphos does when SIGTERM arrives (PHOS_CHECKPOINT=1).
 *
 * Runs on libphos's own thread, not in a signal handler: it may block,
 * allocate and talk to phosd.
 *
 * For now it only hands the signal back to the application, exactly as
 * if libphos were not there (signal.c, phos_sig_redeliver).  The lead
 * will replace this body with: ask phosd to checkpoint this task; phosd
 * answers with a real-time signal when the image is safe, and only then
 * is SIGTERM re-delivered (or the task held, on Slurm 22.05 preemption,
 * DESIGN.md §6).
 */
#include "config.h"

#include "phos_int.h"

void phos_on_sigterm(const siginfo_t *si)
{
	phos_dbg("SIGTERM from pid %ld", (long)si->si_pid);
	phos_sig_redeliver(si);
}
