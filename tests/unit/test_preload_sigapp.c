/*
 * test_preload_sigapp.c - not a test: the application that
 * test_preload_signal runs under libphos.  It says "ready" on stdout,
 * then waits for SIGTERM and reports what its own disposition saw.
 *
 *   handler    sigaction(SA_SIGINFO, sa_mask = {SIGUSR2}) handler
 *   signal     signal() handler
 *   resethand  SA_RESETHAND handler: handles one SIGTERM, the next kills
 *   dfl        default disposition
 *   ign        signal(SIGTERM, SIG_IGN); exits 0 once libphos saw SIGTERM
 *   kernel     prints whether the kernel's SIGTERM handler is the app's
 *   fork       handler, then fork(): the child (which has no libphos
 *              thread) says "child <pid>" and handles SIGTERM; the parent
 *              exits with the child's status
 *   forkdfl    the same with the default disposition
 */
#include "config.h"

#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "preload_test.h"

static volatile sig_atomic_t got, got_code, masked;
static volatile pid_t got_pid;

static void on_info(int sig, siginfo_t *si, void *uc)
{
	sigset_t cur;

	(void)uc;
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	masked = sigismember(&cur, SIGUSR2);
	got_pid = si->si_pid;
	got_code = si->si_code;
	got = sig;
}

static void on_plain(int sig)
{
	got = sig;
}

static void wait_got(void)
{
	sigset_t none;

	sigemptyset(&none);
	got = 0;
	while (!got)
		sigsuspend(&none);
}

/* The kernel's idea of the SIGTERM handler, bypassing every wrapper. */
static void *kernel_handler(void)
{
	struct {
		void *handler;
		unsigned long flags;
		void *restorer;
		uint64_t mask;
	} k;

	if (syscall(SYS_rt_sigaction, SIGTERM, NULL, &k, 8) != 0)
		return NULL;
	return k.handler;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	struct sigaction sa, cur;
	sigset_t term;

	setvbuf(stdout, NULL, _IONBF, 0);
	/* SIGTERM only arrives inside sigsuspend: no lost wake-ups */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, NULL);

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	if (strcmp(mode, "handler") == 0 || strcmp(mode, "resethand") == 0 ||
	    strcmp(mode, "kernel") == 0 || strcmp(mode, "fork") == 0) {
		sa.sa_sigaction = on_info;
		sa.sa_flags = SA_SIGINFO | (strcmp(mode, "resethand") == 0 ? SA_RESETHAND : 0);
		sigaddset(&sa.sa_mask, SIGUSR2);
		if (sigaction(SIGTERM, &sa, NULL) != 0)
			return 2;
	} else if (strcmp(mode, "signal") == 0) {
		if (signal(SIGTERM, on_plain) == SIG_ERR)
			return 2;
	} else if (strcmp(mode, "ign") == 0) {
		if (signal(SIGTERM, SIG_IGN) == SIG_ERR)
			return 2;
	} else if (strcmp(mode, "dfl") != 0 && strcmp(mode, "forkdfl") != 0) {
		return 2;
	}

	/* the app's view is what it installed */
	if (sigaction(SIGTERM, NULL, &cur) != 0)
		return 3;
	if (strcmp(mode, "signal") == 0 && cur.sa_handler != on_plain)
		return 4;
	if (strcmp(mode, "ign") == 0 && cur.sa_handler != SIG_IGN)
		return 4;
	if ((strcmp(mode, "dfl") == 0 || strcmp(mode, "forkdfl") == 0) && cur.sa_handler != SIG_DFL)
		return 4;
	if (sa.sa_flags & SA_SIGINFO && cur.sa_sigaction != on_info)
		return 4;

	if (strcmp(mode, "kernel") == 0) {
		printf("kernel_is_app=%d\n", kernel_handler() == (void *)on_info);
		return 0;
	}
	if (strncmp(mode, "fork", 4) == 0) {
		pid_t pid = fork();
		int st;

		if (pid < 0)
			return 8;
		if (pid > 0) {
			printf("child %ld\n", (long)pid);
			if (waitpid(pid, &st, 0) != pid)
				return 8;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
		}
		wait_got();
		printf("handled sig=%d pid=%ld code=%d masked=%d\n", (int)got, (long)got_pid,
		       (int)got_code, (int)masked);
		return 0;
	}
	printf("ready\n");

	if (strcmp(mode, "ign") == 0) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };

		sigprocmask(SIG_UNBLOCK, &term, NULL);
		while (preload_stats().sigterms < 1)
			nanosleep(&ts, NULL);
		printf("survived\n");
		return 0;
	}
	wait_got();
	if (sa.sa_flags & SA_SIGINFO)
		printf("handled sig=%d pid=%ld code=%d masked=%d\n", (int)got, (long)got_pid,
		       (int)got_code, (int)masked);
	else
		printf("handled sig=%d\n", (int)got);
	if (strcmp(mode, "resethand") == 0) {
		if (sigaction(SIGTERM, NULL, &cur) != 0 || cur.sa_handler != SIG_DFL)
			return 5;
		printf("reset\n");
		wait_got();	/* the second SIGTERM kills */
		return 6;
	}
	/* after handling, the app's view is unchanged */
	if (sigaction(SIGTERM, NULL, &cur) != 0)
		return 3;
	if ((sa.sa_flags & SA_SIGINFO) ? cur.sa_sigaction != on_info : cur.sa_handler != on_plain)
		return 7;
	return 0;
}
