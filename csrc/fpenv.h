/* fpenv.h — the floating-point environment inside fastdrop's kernels.
 *
 * Subnormal floats are 10-100x slower on x86; fastdrop flushes them inside its kernels
 * (flush-to-zero + denormals-are-zero, as TensorFlow does by default) on every thread
 * that runs kernel code, and restores the caller's state on exit:
 *
 *     unsigned fp = fd_fp_enter();     // at the start of a public entry point, and at
 *     ...                              // the start of every OpenMP parallel region body
 *     fd_fp_exit(fp);                  // before leaving it
 *
 * fd_set_flush_denormals(0) turns flushing off (fastdrop.set_flush_denormals(False)).
 * The same flag holds on every ISA path, so results stay bitwise identical across
 * thread counts and paths.  Non-x86 builds: no-ops. */
#ifndef FD_FPENV_H
#define FD_FPENV_H

#if defined(__SSE2__) || defined(_M_X64) || defined(__x86_64__)
#include <xmmintrin.h>
#define FD_HAVE_MXCSR 1
#endif

extern int fd_flush_denormals_flag;   /* cpu.c; 1 by default */

static inline unsigned fd_fp_enter(void) {
#ifdef FD_HAVE_MXCSR
    const unsigned old = _mm_getcsr();
    if (__atomic_load_n(&fd_flush_denormals_flag, __ATOMIC_RELAXED))
        _mm_setcsr(old | 0x8040u);   /* FTZ (bit 15) | DAZ (bit 6) */
    return old;
#else
    return 0;
#endif
}

/* The calling thread's FP control state, and running in another thread's (helper threads
 * take the caller's state for the chunks they run): returns the state to restore. */
static inline unsigned fd_fp_current(void) {
#ifdef FD_HAVE_MXCSR
    return _mm_getcsr();
#else
    return 0;
#endif
}

static inline unsigned fd_fp_adopt(unsigned csr) {
#ifdef FD_HAVE_MXCSR
    const unsigned old = _mm_getcsr();
    _mm_setcsr((csr & ~0x3Fu) | (old & 0x3Fu)); /* control bits only, not the flags */
    return old;
#else
    (void)csr;
    return 0;
#endif
}

static inline void fd_fp_exit(unsigned old) {
#ifdef FD_HAVE_MXCSR
    _mm_setcsr(old);
#else
    (void)old;
#endif
}

#endif
