/* parallel.c — fd_parallel: chunks of work claimed by the calling thread and by helpers.
 *
 * Why not a plain `#pragma omp parallel`: its closing barrier waits for every thread of
 * the team.  When another thread pool (NumPy's OpenBLAS, PyTorch, the user's threads)
 * keeps the cores busy, a descheduled OpenMP worker holds the caller for a scheduler tick
 * (measured: a 0.17 ms GEMM took 4.3 ms after a NumPy matmul).  Here the work is cut into
 * chunks (fixed output tiles / ranges) that every participant claims from one atomic
 * counter, the caller included; the caller returns as soon as every chunk is DONE, so a
 * helper that wakes late finds nothing left and is not waited for.  Which thread runs a
 * chunk never changes its result (chunks are independent outputs).
 *
 * Linux builds with threads (OpenMP enabled at build time) use a small pool of our own
 * pthreads: a bounded spin after each job, then a futex sleep.  Elsewhere, or with
 * FASTDROP_POOL=0, the same chunks run inside an OpenMP parallel region (the portable
 * baseline; its end barrier remains).  No OpenMP at all: the caller runs every chunk.
 *
 * Job descriptor protocol (pool): `state` = generation << 32 | next chunk.  The caller
 * writes the descriptor, then publishes (gen, 0).  A helper reads state, then the
 * descriptor, and claims a chunk with a CAS on the state it read: the CAS succeeds only
 * if that job still has unclaimed chunks, so the caller is still inside fd_parallel and
 * has not rewritten the descriptor (it writes the next one only after all chunks are
 * done).  Helpers run every chunk in the caller's floating-point mode (its MXCSR, which
 * the entry point set to the kernels' mode, fpenv.h), so every thread computes alike. */
#define _GNU_SOURCE 1
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "fpenv.h"
#include <stdatomic.h>

static _Atomic(fd_thread_cleanup_fn) cleanup_hook = NULL;

void fd_pool_set_thread_cleanup(fd_thread_cleanup_fn fn)
{
    atomic_store(&cleanup_hook, fn);
}


#if defined(__linux__) && defined(_OPENMP)
#define FD_POOL 1
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FD_PAUSE() _mm_pause()
#else
#define FD_PAUSE() ((void)0)
#endif
#endif

static _Thread_local int in_chunk = 0; /* nested fd_parallel: run serially */

static void run_serial(int64_t nchunks, fd_chunk_fn fn, void *ctx)
{
    for (int64_t i = 0; i < nchunks; i++) fn(ctx, i);
}

#ifdef FD_POOL
#define FD_POOL_MAX 256
/* An idle helper spins this many pause rounds before it sleeps; $FASTDROP_SPIN overrides. */
#define FD_SPIN_ROUNDS 1000
static int spin_rounds = FD_SPIN_ROUNDS;

typedef struct {
    _Atomic uint64_t state;         /* gen << 32 | next unclaimed chunk           */
    _Atomic(fd_chunk_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t nchunks;
    _Atomic int want;               /* helpers 0..want-1 may join this job        */
    _Atomic unsigned csr;           /* the caller's MXCSR: helpers run chunks in it */
    _Atomic int64_t done;           /* chunks finished                            */
    _Atomic uint32_t wake;          /* futex word: bumped on every publication    */
    _Atomic int sleepers;
    _Atomic int busy;               /* a caller owns the pool                     */
    _Atomic int nhelpers;           /* helper threads started                     */
    _Atomic uint32_t release_gen;   /* fd_pool_kick: helpers free their buffers   */
    pthread_mutex_t grow;
} fd_pool;

static fd_pool P = {.grow = PTHREAD_MUTEX_INITIALIZER};
static int pool_mode = -1; /* -1 unknown, 0 OpenMP, 1 pool */

static long futex(_Atomic uint32_t *addr, int op, uint32_t val)
{
    return syscall(SYS_futex, (uint32_t *)addr, op, val, NULL, NULL, 0);
}

static void helper_loop(int idx)
{
    uint32_t my_gen = (uint32_t)(atomic_load(&P.state) >> 32);
    uint32_t my_release = atomic_load(&P.release_gen);
    for (;;) {
        uint64_t s = atomic_load_explicit(&P.state, memory_order_acquire);
        uint32_t gen = (uint32_t)(s >> 32);
        if (gen == my_gen) {
            int spun = 0;
            while (spun < spin_rounds &&
                   (uint32_t)(atomic_load_explicit(&P.state, memory_order_relaxed) >> 32) == my_gen) {
                FD_PAUSE();
                spun++;
            }
            if (spun < spin_rounds) continue;
            /* sleep: announce, re-check, then wait on the futex word read before */
            const uint32_t w = atomic_load(&P.wake);
            atomic_fetch_add(&P.sleepers, 1);
            if ((uint32_t)(atomic_load(&P.state) >> 32) == my_gen)
                futex(&P.wake, FUTEX_WAIT_PRIVATE, w);
            atomic_fetch_sub(&P.sleepers, 1);
            const uint32_t rg = atomic_load(&P.release_gen);
            if (rg != my_release) {
                my_release = rg;
                const fd_thread_cleanup_fn hook = atomic_load(&cleanup_hook);
                if (hook) hook();
            }
            continue;
        }
        /* a newer job: read its descriptor, validate by claiming */
        const fd_chunk_fn fn = atomic_load_explicit(&P.fn, memory_order_relaxed);
        void *const ctx = atomic_load_explicit(&P.ctx, memory_order_relaxed);
        const int64_t nchunks = atomic_load_explicit(&P.nchunks, memory_order_relaxed);
        const int want = atomic_load_explicit(&P.want, memory_order_relaxed);
        const unsigned csr = atomic_load_explicit(&P.csr, memory_order_relaxed);
        const uint32_t next = (uint32_t)s;
        if (idx >= want || (int64_t)next >= nchunks) {
            my_gen = gen; /* not ours, or nothing left (a stale descriptor means the job
                           * of `gen` is complete anyway) */
            continue;
        }
        if (!atomic_compare_exchange_weak_explicit(&P.state, &s, s + 1, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        const unsigned fp = fd_fp_adopt(csr);
        in_chunk = 1;
        fn(ctx, (int64_t)next);
        in_chunk = 0;
        fd_fp_exit(fp);
        atomic_fetch_add_explicit(&P.done, 1, memory_order_release);
    }
}

static void *helper_main(void *arg)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    helper_loop((int)(intptr_t)arg);
    return NULL;
}

static void after_fork_child(void)
{
    /* the helpers do not exist in a forked child: start over */
    atomic_store(&P.nhelpers, 0);
    atomic_store(&P.busy, 0);
    atomic_store(&P.sleepers, 0);
    pthread_mutex_init(&P.grow, NULL);
}

static int pool_enabled(void)
{
    int m = __atomic_load_n(&pool_mode, __ATOMIC_ACQUIRE);
    if (m >= 0) return m;
    const char *e = getenv("FASTDROP_POOL");
    m = !(e && (strcmp(e, "0") == 0 || strcmp(e, "openmp") == 0));
    const char *sp = getenv("FASTDROP_SPIN");
    if (sp && *sp) spin_rounds = atoi(sp) < 0 ? 0 : atoi(sp);
    __atomic_store_n(&pool_mode, m, __ATOMIC_RELEASE);
    return m;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void) { pthread_atfork(NULL, NULL, after_fork_child); }

/* Make sure `want` helpers exist (fewer if threads cannot be created). */
static int ensure_helpers(int want)
{
    if (want > FD_POOL_MAX) want = FD_POOL_MAX;
    int have = atomic_load(&P.nhelpers);
    if (have >= want) return want;
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&P.grow);
    have = atomic_load(&P.nhelpers);
    while (have < want) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 1 << 20);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&t, &attr, helper_main, (void *)(intptr_t)have);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        have++;
        atomic_store(&P.nhelpers, have);
    }
    pthread_mutex_unlock(&P.grow);
    return have < want ? have : want;
}

static void pool_run(int nt, int64_t nchunks, fd_chunk_fn fn, void *ctx)
{
    const int helpers = ensure_helpers(nt - 1);
    if (helpers <= 0) {
        atomic_store(&P.busy, 0);
        run_serial(nchunks, fn, ctx);
        return;
    }
    atomic_store_explicit(&P.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&P.ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&P.nchunks, nchunks, memory_order_relaxed);
    atomic_store_explicit(&P.want, helpers, memory_order_relaxed);
    atomic_store_explicit(&P.csr, fd_fp_current(), memory_order_relaxed);
    atomic_store_explicit(&P.done, 0, memory_order_relaxed);
    const uint64_t gen = (atomic_load_explicit(&P.state, memory_order_relaxed) >> 32) + 1;
    atomic_store(&P.state, (gen & 0xffffffffu) << 32); /* seq_cst: publication */
    atomic_fetch_add(&P.wake, 1);
    if (atomic_load(&P.sleepers) > 0) futex(&P.wake, FUTEX_WAKE_PRIVATE, (uint32_t)helpers);
    /* claim chunks ourselves */
    int64_t mine = 0;
    for (;;) {
        uint64_t s = atomic_load_explicit(&P.state, memory_order_relaxed);
        if ((int64_t)(uint32_t)s >= nchunks) break;
        if (!atomic_compare_exchange_weak_explicit(&P.state, &s, s + 1, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        in_chunk = 1;
        fn(ctx, (int64_t)(uint32_t)s);
        in_chunk = 0;
        mine++;
    }
    if (mine) atomic_fetch_add_explicit(&P.done, mine, memory_order_release);
    /* wait for chunks a helper claimed and is still running */
    for (int spins = 0; atomic_load_explicit(&P.done, memory_order_acquire) < nchunks; spins++) {
        if (spins < 4096) FD_PAUSE();
        else sched_yield();
    }
    atomic_store_explicit(&P.busy, 0, memory_order_release);
}

void fd_pool_kick(void)
{
    atomic_fetch_add(&P.release_gen, 1);
    atomic_fetch_add(&P.wake, 1);
    if (atomic_load(&P.sleepers) > 0) futex(&P.wake, FUTEX_WAKE_PRIVATE, FD_POOL_MAX);
}
#else
void fd_pool_kick(void) {}
#endif

int fd_pool_active(void)
{
#ifdef FD_POOL
    return pool_enabled();
#else
    return 0;
#endif
}

void fd_parallel(int nt, int64_t nchunks, fd_chunk_fn fn, void *ctx)
{
    if (nchunks <= 0) return;
    if (nt > nchunks) nt = (int)nchunks;
    if (nt <= 1 || in_chunk) {
        run_serial(nchunks, fn, ctx);
        return;
    }
#ifdef _OPENMP
    if (omp_in_parallel()) { /* called from someone's OpenMP region */
        run_serial(nchunks, fn, ctx);
        return;
    }
#endif
#ifdef FD_POOL
    if (pool_enabled()) {
        int expect = 0;
        if (!atomic_compare_exchange_strong(&P.busy, &expect, 1)) {
            run_serial(nchunks, fn, ctx); /* another thread's call holds the pool */
            return;
        }
        pool_run(nt, nchunks, fn, ctx);
        return;
    }
#endif
#ifdef _OPENMP
    int64_t next = 0; /* OpenMP baseline: the same chunks, claimed atomically */
    const unsigned csr = fd_fp_current();
#pragma omp parallel num_threads(nt)
    {
        const unsigned fp = fd_fp_adopt(csr);
        in_chunk = 1;
        for (;;) {
            const int64_t i = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
            if (i >= nchunks) break;
            fn(ctx, i);
        }
        in_chunk = 0;
        fd_fp_exit(fp);
    }
#else
    run_serial(nchunks, fn, ctx);
#endif
}

/* ------------------------------------------------------------ ranges */
typedef struct {
    fd_range_fn fn;
    void *ctx;
    int64_t n, chunk;
} range_job;

static void range_chunk(void *vj, int64_t i)
{
    const range_job *j = vj;
    const int64_t lo = i * j->chunk, hi = lo + j->chunk < j->n ? lo + j->chunk : j->n;
    if (lo < hi) j->fn(j->ctx, lo, hi);
}

void fd_parallel_range(int64_t n, int64_t grain, int64_t align, fd_range_fn fn, void *ctx)
{
    if (n <= 0) return;
    const int nt = fd_threads_for(n, grain);
    if (nt <= 1) {
        fn(ctx, 0, n);
        return;
    }
    if (align < 1) align = 1;
    /* a few chunks per thread: a late helper costs at most one chunk of waiting */
    int64_t chunks = 4 * (int64_t)nt;
    const int64_t min_chunk = grain / 4 > align ? grain / 4 : align;
    if (n / chunks < min_chunk) chunks = n / min_chunk > nt ? n / min_chunk : nt;
    int64_t chunk = (n + chunks - 1) / chunks;
    chunk = (chunk + align - 1) / align * align;
    range_job j = {fn, ctx, n, chunk};
    fd_parallel(nt, (n + chunk - 1) / chunk, range_chunk, &j);
}
