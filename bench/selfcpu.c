/* Runs a command and prints its own CPU time, user then system, in ms (all its
 * threads, none of its children: read from /proc/<pid>/stat while it is a
 * zombie), then its wall time in ms. Linux only. For the executor's share of
 * a batch, which a whole-tree /usr/bin/time mixes with the tasks':
 *
 *   cc -O2 -o selfcpu selfcpu.c
 *   ./selfcpu /path/to/manage_tasks -q execute --name noop --batch b.jsonl --parallel 2 --json
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s PROGRAM [ARGS...]\n", argv[0]); return 2; }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open("/dev/null", O_WRONLY); dup2(fd, 1); dup2(fd, 2);
    execv(argv[1], argv + 1); _exit(127);
  }
  siginfo_t si;
  waitid(P_PID, pid, &si, WEXITED | WNOWAIT);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r"); size_t n = fread(buf, 1, sizeof buf - 1, f); buf[n] = 0; fclose(f);
  char *p = strrchr(buf, ')') + 2; /* field 3 */
  unsigned long ut = 0, st = 0; int field = 3;
  for (char *tok = strtok(p, " "); tok; tok = strtok(NULL, " "), field++) {
    if (field == 14) ut = strtoul(tok, NULL, 10);
    if (field == 15) { st = strtoul(tok, NULL, 10); break; }
  }
  int status; waitpid(pid, &status, 0);
  long tck = sysconf(_SC_CLK_TCK);
  printf("%lu %lu %.1f\n", ut * 1000 / tck, st * 1000 / tck,
         (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
