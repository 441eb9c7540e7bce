#define _GNU_SOURCE
/* The machine's limit for running a task: P threads, each spawning the task
 * with posix_spawn, feeding it the envelope on stdin and draining its stdout,
 * N runs in all. No validation, no parsing: the floor any executor sits on.
 *
 *   cc -O2 -pthread -o spawn_baseline spawn_baseline.c
 *   ./spawn_baseline RUNS PARALLEL STDIN_FILE PROGRAM [ARGS...]
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char **prog_argv;
static char input[65536];
static size_t input_len;
static int runs_per_thread;
static int failures;

static int run_once(void) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  pid_t pid;
  int rc = posix_spawn(&pid, prog_argv[0], &fa, NULL, prog_argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  if (rc) { close(in[1]); close(out[0]); return -1; }
  size_t off = 0;
  while (off < input_len) {
    ssize_t n = write(in[1], input + off, input_len - off);
    if (n <= 0) break;
    off += (size_t)n;
  }
  close(in[1]);
  char buf[65536];
  while (read(out[0], buf, sizeof buf) > 0) {}
  close(out[0]);
  int status;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void *worker(void *arg) {
  (void)arg;
  for (int i = 0; i < runs_per_thread; i++)
    if (run_once()) __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s RUNS PARALLEL STDIN_FILE PROGRAM [ARGS...]\n", argv[0]);
    return 2;
  }
  int runs = atoi(argv[1]), parallel = atoi(argv[2]);
  FILE *f = fopen(argv[3], "rb");
  if (!f) { perror(argv[3]); return 2; }
  input_len = fread(input, 1, sizeof input, f);
  fclose(f);
  prog_argv = argv + 4;
  runs_per_thread = runs / parallel;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pthread_t th[64];
  for (int i = 0; i < parallel; i++) pthread_create(&th[i], NULL, worker, NULL);
  for (int i = 0; i < parallel; i++) pthread_join(th[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  int total = runs_per_thread * parallel;
  printf("%d runs in %.3fs: %.0f runs/s (%d failed)\n", total, secs, total / secs, failures);
  return failures ? 1 : 0;
}
