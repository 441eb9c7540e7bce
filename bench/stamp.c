/*
 * A protocol v1 task that says when it started: the first thing main does is
 * read CLOCK_REALTIME, then it appends that time (ns since the epoch) as one
 * line to the FIFO named by $WAKE_FIFO, reads its envelope and reports
 * success. Used by bench/postgres.sh to measure the wake-up latency of a
 * worker: the submitter takes the same clock just before it queues a run.
 *
 *   cc -O2 -o stamp bench/stamp.c
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  if (argc > 1 && strcmp(argv[1], "schema") == 0) {
    puts("{\"name\":\"stamp\",\"description\":\"Says when it started\",\"inputs\":{\"type\":\"object\"}}");
    return 0;
  }
  const char *fifo = getenv("WAKE_FIFO");
  if (fifo == NULL) {
    fputs("stamp: WAKE_FIFO is not set\n", stderr);
    return 2;
  }
  int fd = open(fifo, O_WRONLY | O_APPEND);
  if (fd < 0) {
    perror("stamp: open $WAKE_FIFO");
    return 2;
  }
  char line[32];
  int n = snprintf(line, sizeof line, "%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
  /* One write of less than PIPE_BUF bytes: atomic, never interleaved. */
  if (write(fd, line, (size_t)n) != n) {
    perror("stamp: write $WAKE_FIFO");
    return 2;
  }
  close(fd);
  char envelope[4096];
  while (fgets(envelope, sizeof envelope, stdin) != NULL && strchr(envelope, '\n') == NULL) {
  }
  puts("{\"status\":1,\"reason\":\"ok\",\"payload\":null}");
  return 0;
}
