/* ce_fork.h — whether this thread may start an OpenMP team after a fork (ce_fork.c). */
#ifndef CE_FORK_H
#define CE_FORK_H

/* Registers the fork handler, once; called at import. */
void ce_fork_init(void);

/* 1 where a team started by this thread would wait forever on pool workers
 * that did not survive fork(): the kernels then run on this thread alone. */
int ce_fork_serial(void);

#endif
