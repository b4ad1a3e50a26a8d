/*
 * dead-leader: a process whose main thread has exited (pthread_exit) while another thread runs on (zdtm
 * pthread02); /proc shows it as a zombie. --child 1 (the default): that process is a child of the root, which
 * only waits; --child 0: it is the root itself (then it cannot answer the harness: its pid looks gone).
 * Dump must refuse it by name (a thread group without its leader cannot be restored), not take it for a zombie.
 * Verify: the remaining thread answers (the root, with --child, collects its finding).
 */
#include "zdtm.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static struct zt z;
static int as_child;

static void *survivor(void *arg)
{
	(void)arg;
	while (!zt_signalled())
		zt_sleep_ns(1000000);
	exit(as_child ? zt_finish_part(&z, "child") : zt_finish(&z));
}

static void run_group(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, survivor, NULL))
		zt_setup_failed(&z, "pthread_create", "survivor");
}

int main(int argc, char **argv)
{
	struct zt_opt opts[] = { { "child", 1, 0, 1, "the thread group without leader is a child of the root" } };
	zt_setup(&z, argc, argv, opts, 1, SIGUSR2);
	as_child = (int)opts[0].value;
	if (!as_child) {
		run_group();
		pid_t self = getpid();
		zt_ready(&z, &self, 1);
		pthread_exit(NULL);
	}
	pid_t child = fork();
	if (child < 0)
		zt_setup_failed(&z, "fork", "child");
	if (child == 0) {
		/* Not in the ready list (a pid whose leader is a zombie looks gone): it ends with the root. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
			zt_setup_failed(&z, "prctl(PR_SET_PDEATHSIG)", "child");
		run_group();
		pthread_exit(NULL);
	}
	pid_t self = getpid();
	zt_info(&z, "child", "%d", (int)child);
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);
	kill(child, SIGUSR2);
	zt_collect_part(&z, "child", child);
	return zt_finish(&z);
}
