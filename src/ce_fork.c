/* ce_fork.c — a forked child never waits on threads that did not survive fork().
 *
 * GNU libgomp gives every thread that starts a team a pool of worker threads
 * and keeps them parked for the next team. fork() copies only the calling
 * thread: in the child, that thread's pool still lists the parent's workers,
 * and its next team waits for them forever (multiprocessing's fork Pool,
 * PyTorch DataLoader workers). A thread the child starts later gets a fresh
 * pool. LLVM's and Intel's runtimes reset themselves in the child, yet with
 * LLVM's libomp in libgomp's place a forked child still hung now and then in
 * our tests, so no runtime is trusted: the rule is the same for all.
 *
 * The child handler marks the thread that forked — thread-locally, since it
 * is the only one that can hold a stale pool — when the parent had more than
 * one thread at the fork: workers are threads of their own, so a
 * single-threaded parent had no pool (the forkserver's server, a fresh
 * interpreter). Calls on a marked thread run on that thread alone, with the
 * same results (they never depend on the thread count). The cost is one
 * thread-local read per call; the thread count is read once per fork, from
 * /proc/self/stat (anything else, or a failed read, counts as
 * multi-threaded). */
#include "ce_fork.h"

#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

static _Thread_local int stale_pool;
static int registered;
static int parent_threads;

/* The parent's thread count: field 20 of /proc/self/stat, which is the 18th
 * after the ")" that closes the command name. 0 when it cannot be read. */
static int thread_count(void) {
    char buf[1024];
    const int fd = open("/proc/self/stat", O_RDONLY);
    if (fd < 0) return 0;
    const ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    const char *p = NULL;
    for (const char *q = buf; *q; ++q)
        if (*q == ')') p = q;
    if (!p) return 0;
    for (int field = 2; field < 20 && *p; ++p)
        if (*p == ' ') ++field;
    int v = 0;
    while (*p >= '0' && *p <= '9') v = 10 * v + (*p++ - '0');
    return v;
}

static void before_fork(void) { parent_threads = thread_count(); }

static void in_child(void) {
    if (parent_threads != 1) stale_pool = 1;
}

void ce_fork_init(void) {
    if (registered) return;
    registered = 1;
    pthread_atfork(before_fork, NULL, in_child);
}

int ce_fork_serial(void) { return stale_pool; }

#else /* no OpenMP, or no fork(): nothing to guard */

void ce_fork_init(void) {}

int ce_fork_serial(void) { return 0; }

#endif
