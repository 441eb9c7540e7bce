/*
 * Runs several commands in turn, one run of each per round, and prints the
 * median wall time of each with its interquartile range. Interleaving is what
 * makes the comparison fair on a shared VM: a noisy neighbour slows every
 * command of a round alike, where back-to-back blocks of runs can catch one
 * command alone. Used by bench/run.sh.
 *
 *   alternate ROUNDS STDIN_FILE 'CMD ARG...' 'VAR=x CMD ARG...' ...
 *
 * Each command is split on spaces (no quoting); leading VAR=value words are
 * added to its environment. Every run gets STDIN_FILE as stdin and /dev/null
 * as stdout; a run that fails stops everything. Ten warm-up rounds first.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

enum { MAX_COMMANDS = 32, MAX_WORDS = 64, WARMUP = 10 };

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s ROUNDS STDIN_FILE CMD...\n", argv[0]);
    return 2;
  }
  int rounds = atoi(argv[1]);
  const char *input = argv[2];
  int n = argc - 3;
  if (rounds < 1 || n > MAX_COMMANDS) {
    fprintf(stderr, "alternate: need ROUNDS >= 1 and at most %d commands\n", MAX_COMMANDS);
    return 2;
  }
  int inherited = 0;
  while (environ[inherited]) inherited++;

  char **args[MAX_COMMANDS], **envs[MAX_COMMANDS];
  for (int i = 0; i < n; i++) {
    char *words = strdup(argv[3 + i]);
    args[i] = calloc(MAX_WORDS + 1, sizeof(char *));
    envs[i] = calloc(inherited + MAX_WORDS + 1, sizeof(char *));
    int a = 0, e = 0;
    for (char *w = strtok(words, " "); w && a < MAX_WORDS; w = strtok(NULL, " ")) {
      if (a == 0 && strchr(w, '=') && w[0] != '/' && w[0] != '.') envs[i][e++] = w;
      else args[i][a++] = w;
    }
    for (int k = 0; k < inherited; k++) envs[i][e++] = environ[k];
  }

  double *times = calloc((size_t)rounds * n, sizeof(double));
  int devnull = open("/dev/null", O_WRONLY);
  for (int r = 0; r < rounds + WARMUP; r++) {
    for (int i = 0; i < n; i++) {
      posix_spawn_file_actions_t actions;
      posix_spawn_file_actions_init(&actions);
      posix_spawn_file_actions_addopen(&actions, 0, input, O_RDONLY, 0);
      posix_spawn_file_actions_adddup2(&actions, devnull, 1);
      double start = now_us();
      pid_t pid;
      int err = posix_spawn(&pid, args[i][0], &actions, NULL, args[i], envs[i]);
      if (err) {
        fprintf(stderr, "alternate: cannot start %s: %s\n", args[i][0], strerror(err));
        return 1;
      }
      int status;
      waitpid(pid, &status, 0);
      double took = now_us() - start;
      posix_spawn_file_actions_destroy(&actions);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "alternate: `%s` failed\n", argv[3 + i]);
        return 1;
      }
      if (r >= WARMUP) times[(size_t)i * rounds + (r - WARMUP)] = took;
    }
  }
  for (int i = 0; i < n; i++) {
    double *t = times + (size_t)i * rounds;
    qsort(t, rounds, sizeof(double), by_value);
    printf("%.1f %.1f %.1f\n", t[rounds / 2], t[rounds / 4], t[(3 * rounds) / 4]);
  }
  return 0;
}
