/* cpu.c — CPU feature detection (cpuid + xgetbv), the kernel table, threads. */
#include "internal.h"
#include "fpenv.h"

#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <cpuid.h>
#define FD_X86 1
#endif

#define FD_TABLE(isa)                                                             \
    {                                                                             \
        FD_ISA_##isa##_ID, {0}, fd_dropout_blocks_##isa, fd_dropout_apply_##isa,  \
            fd_relu_##isa, fd_relu_backward_##isa, fd_relu_dropout_backward_##isa, \
            fd_adam_##isa, fd_xent_rows_##isa, fd_softmax_rows_##isa              \
    }
#define FD_ISA_ref_ID FD_ISA_REF
#define FD_ISA_avx2_ID FD_ISA_AVX2
#define FD_ISA_avx512_ID FD_ISA_AVX512

static fd_kernel_table tables[FD_ISA_COUNT];
static int table_ok[FD_ISA_COUNT];
static int cpu_ok[FD_ISA_COUNT];
static int init_state = 0; /* 0 not started, 1 running, 2 done (__atomic) */
static const char *env_error = NULL;
const fd_kernel_table *_Atomic fd_kt = NULL;

static const char *names[FD_ISA_COUNT] = {"ref", "avx2", "avx512"};

const char *fd_isa_name(int isa) {
    return (isa >= 0 && isa < FD_ISA_COUNT) ? names[isa] : "unknown";
}

#ifdef FD_X86
static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

static void detect(void) {
    cpu_ok[FD_ISA_REF] = 1;
#ifdef FD_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx) return;
    uint64_t xcr0 = xgetbv0();
    int os_ymm = (xcr0 & 0x6) == 0x6;          /* SSE + AVX state   */
    int os_zmm = (xcr0 & 0xe6) == 0xe6;        /* + opmask, ZMM hi  */
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
        avx512vl = (b >> 31) & 1;
    cpu_ok[FD_ISA_AVX2] = os_ymm && avx2 && fma;
    cpu_ok[FD_ISA_AVX512] = cpu_ok[FD_ISA_AVX2] && os_zmm && avx512f && avx512dq &&
                            avx512bw && avx512vl;
#endif
}

static void init_once(void);

/* Thread-safe and idempotent: the first caller fills the tables, concurrent callers wait
 * for it (a few microseconds, once per process). */
void fd_init(void) {
    if (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2) return;
    int expect = 0;
    if (__atomic_compare_exchange_n(&init_state, &expect, 1, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        init_once();
        __atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2) {
    }
}

static void init_once(void) {
    detect();
    static const fd_kernel_table t_ref = FD_TABLE(ref);
    tables[FD_ISA_REF] = t_ref;
    tables[FD_ISA_REF].gemm = fd_gemm_params_ref;
    table_ok[FD_ISA_REF] = 1;
#ifdef FD_HAVE_AVX2
    static const fd_kernel_table t_avx2 = FD_TABLE(avx2);
    tables[FD_ISA_AVX2] = t_avx2;
    tables[FD_ISA_AVX2].gemm = fd_gemm_params_avx2;
    table_ok[FD_ISA_AVX2] = 1;
#endif
#ifdef FD_HAVE_AVX512
    static const fd_kernel_table t_avx512 = FD_TABLE(avx512);
    tables[FD_ISA_AVX512] = t_avx512;
    tables[FD_ISA_AVX512].gemm = fd_gemm_params_avx512;
    table_ok[FD_ISA_AVX512] = 1;
#endif
    int best = FD_ISA_REF;
    for (int i = 0; i < FD_ISA_COUNT; i++)
        if (table_ok[i] && cpu_ok[i]) best = i;
    const fd_kernel_table *chosen = &tables[best];
    const char *env = getenv("FASTDROP_ISA");
    if (env && *env) {
        int want = -1;
        for (int i = 0; i < FD_ISA_COUNT; i++)
            if (strcmp(env, names[i]) == 0) want = i;
        if (want < 0)
            env_error = "FASTDROP_ISA must be one of ref, avx2, avx512";
        else if (!table_ok[want])
            env_error = "FASTDROP_ISA names a path that was not compiled into this build";
        else if (!cpu_ok[want])
            env_error = "FASTDROP_ISA names a path this CPU or OS does not support";
        else
            chosen = &tables[want];
    }
    fd_kt = chosen;
}

const char *fd_isa_env_error(void) { return env_error; }
int fd_isa_compiled(int isa) { fd_init(); return isa >= 0 && isa < FD_ISA_COUNT && table_ok[isa]; }
int fd_isa_cpu_supported(int isa) { fd_init(); return isa >= 0 && isa < FD_ISA_COUNT && cpu_ok[isa]; }
int fd_isa_get(void) { fd_init(); return fd_kt->isa; }
int fd_isa_set(int isa) {
    fd_init();
    if (isa < 0 || isa >= FD_ISA_COUNT || !table_ok[isa] || !cpu_ok[isa]) return -1;
    fd_kt = &tables[isa];
    return 0;
}

/* ------------------------------------------------------------------ threads */
static int user_threads = 0; /* __atomic */

int fd_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void fd_set_num_threads(int n) { __atomic_store_n(&user_threads, n > 0 ? n : 0, __ATOMIC_RELAXED); }

int fd_get_num_threads(void) {
#ifdef _OPENMP
    const int u = __atomic_load_n(&user_threads, __ATOMIC_RELAXED);
    if (u > 0) return u;
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int fd_threads_for(int64_t work, int64_t grain) {
    int t = fd_get_num_threads();
    if (grain < 1) grain = 1;
    int64_t chunks = work / grain;
    if (chunks < 1) chunks = 1;
    if ((int64_t)t > chunks) t = (int)chunks;
    return t < 1 ? 1 : t;
}

/* Flush subnormals inside kernels (fpenv.h); fastdrop.set_flush_denormals. */
int fd_flush_denormals_flag = 1;

void fd_set_flush_denormals(int on) {
    __atomic_store_n(&fd_flush_denormals_flag, on ? 1 : 0, __ATOMIC_RELAXED);
}

int fd_get_flush_denormals(void) {
    return __atomic_load_n(&fd_flush_denormals_flag, __ATOMIC_RELAXED);
}

long fd_get_mxcsr(void) {
#ifdef FD_HAVE_MXCSR
    return (long)_mm_getcsr();
#else
    return -1;
#endif
}

void fd_set_mxcsr(unsigned value) {
#ifdef FD_HAVE_MXCSR
    _mm_setcsr(value);
#else
    (void)value;
#endif
}
