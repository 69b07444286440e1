/*
 * A small cache of big output buffers (blocks.c).
 *
 * Why: a new big array costs more than the softmax written into it. glibc serves allocations above 32 MiB (and, in
 * a process with several threads, also smaller ones in its per-thread arenas) with fresh mappings that it unmaps
 * again on free, so every call pays a page fault per page (the kernel zeroes the memory first) and, with threads,
 * TLB shootdowns. Measured on the 2-vCPU VM: 4-5 ms of a 10 ms (4096, 4096) float32 softmax, and two Python threads
 * calling softmax on 8 MiB arrays got no faster than one. Buffers freed by their arrays stay mapped here and are
 * handed out again for the same size, already faulted in.
 *
 * Bounded: at most CSM_BLOCKS_MAX buffers and `limit` bytes are kept (oldest released first); a buffer bigger than
 * the limit is never kept. The limit can be changed (0: keep nothing, release everything now).
 */
#ifndef CSOFTMAX_BLOCKS_H
#define CSOFTMAX_BLOCKS_H

#include <stddef.h>

#include "softmax.h"                 /* CSM_BLOCKS_MAX, CSM_BLOCKS_DEFAULT_LIMIT, CSM_HUGE_PAGES_MIN */

/* A page-aligned buffer of at least *size bytes (rounded up to whole pages, written back); NULL if out of memory. */
void *csm_block_get(size_t *size);
/* Gives a buffer from csm_block_get (with its rounded size) back: kept for reuse or released. */
void csm_block_put(void *block, size_t size);
size_t csm_block_limit(void);
void csm_block_set_limit(size_t bytes);
size_t csm_block_cached_bytes(void);

#endif
