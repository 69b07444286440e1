/* The output buffer cache: see blocks.h. */
#include "os.h"                  /* first: it selects the system headers' feature set */
#include "blocks.h"


static struct {
    csm_mutex lock;
    struct { void *ptr; size_t size; } kept[CSM_BLOCKS_MAX];   /* oldest first */
    int n;
    size_t bytes, limit;
    int atfork_registered;
} cache = {CSM_MUTEX_INIT, {{0, 0}}, 0, 0, CSM_BLOCKS_DEFAULT_LIMIT, 0};

/* A forked child keeps the buffers (copy-on-write) but not the other threads: the lock may be held by one. */
static void reset_lock_in_child(void) { csm_mutex_init(&cache.lock); }

static size_t page_round(size_t size)
{
    size_t page = csm_page_size();
    return (size + page - 1) / page * page;
}

/* Removes entry i (lock held). */
static void take(int i)
{
    cache.bytes -= cache.kept[i].size;
    for (int j = i; j + 1 < cache.n; j++) cache.kept[j] = cache.kept[j + 1];
    cache.n--;
}

void *csm_block_get(size_t *size)
{
    *size = page_round(*size ? *size : 1);
    csm_mutex_lock(&cache.lock);
    if (!cache.atfork_registered) {
        csm_at_fork_child(reset_lock_in_child);
        cache.atfork_registered = 1;
    }
    for (int i = cache.n - 1; i >= 0; i--) {             /* the most recently kept first: warmest in cache */
        if (cache.kept[i].size == *size) {
            void *p = cache.kept[i].ptr;
            take(i);
            csm_mutex_unlock(&cache.lock);
            return p;
        }
    }
    csm_mutex_unlock(&cache.lock);
    return csm_pages_map(*size, *size >= CSM_HUGE_PAGES_MIN);
}

void csm_block_put(void *block, size_t size)
{
    void *release[CSM_BLOCKS_MAX + 1];
    size_t release_size[CSM_BLOCKS_MAX + 1];
    int n_release = 0;
    csm_mutex_lock(&cache.lock);
    if (size <= cache.limit) {
        while (cache.n == CSM_BLOCKS_MAX || cache.bytes + size > cache.limit) {
            release[n_release] = cache.kept[0].ptr;
            release_size[n_release++] = cache.kept[0].size;
            take(0);
        }
        cache.kept[cache.n].ptr = block;
        cache.kept[cache.n].size = size;
        cache.n++;
        cache.bytes += size;
    } else {
        release[n_release] = block;
        release_size[n_release++] = size;
    }
    csm_mutex_unlock(&cache.lock);
    for (int i = 0; i < n_release; i++) csm_pages_unmap(release[i], release_size[i]);
}

size_t csm_block_limit(void) { return cache.limit; }

size_t csm_block_cached_bytes(void)
{
    csm_mutex_lock(&cache.lock);
    size_t bytes = cache.bytes;
    csm_mutex_unlock(&cache.lock);
    return bytes;
}

void csm_block_set_limit(size_t bytes)
{
    void *release[CSM_BLOCKS_MAX];
    size_t release_size[CSM_BLOCKS_MAX];
    int n_release = 0;
    csm_mutex_lock(&cache.lock);
    cache.limit = bytes;
    while (cache.n > 0 && cache.bytes > cache.limit) {
        release[n_release] = cache.kept[0].ptr;
        release_size[n_release++] = cache.kept[0].size;
        take(0);
    }
    csm_mutex_unlock(&cache.lock);
    for (int i = 0; i < n_release; i++) csm_pages_unmap(release[i], release_size[i]);
}
