/* ce_fork.h — whether this thread may start an OpenMP team after a fork (ce_fork.c). */
#ifndef CE_FORK_H
#define CE_FORK_H

/* Registers the fork handler, once; called at import. */
void ce_fork_init(void);

/* 1 where a team started by this thread would wait forever on pool workers
 * that did not survive fork(): the kernels then run on this thread alone. */
int ce_fork_serial(void);

/* 1 when the OpenMP runtime resets its thread pool in a forked child (LLVM's
 * and Intel's do; GNU libgomp does not), 0 otherwise or without OpenMP. */
int ce_fork_runtime_safe(void);

#endif
