/* cpu.c — CPU feature detection (cpuid + xgetbv), the kernel table, threads. */
#include "internal.h"
#include "fpenv.h"

#include <stdio.h>
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
            fd_adam_##isa, fd_xent_rows_##isa, fd_softmax_rows_##isa,             \
            fd_dense_backward_cols_##isa                                          \
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

/* ------------------------------------------------ microarchitecture and caches */
static char vendor[13] = "";
static int cpu_family = 0, cpu_model = 0;
static int64_t cache_l1d = 0, cache_l2 = 0, cache_l3 = 0; /* bytes, per instance */

#ifdef FD_X86
/* Deterministic cache parameters: leaf 4 (Intel) or 0x8000001D (AMD), same layout. */
static void detect_caches(unsigned leaf) {
    for (unsigned i = 0; i < 16; i++) {
        unsigned a, b, c, d;
        __cpuid_count(leaf, i, a, b, c, d);
        const unsigned type = a & 31, level = (a >> 5) & 7;
        if (type == 0) break;
        if (type == 2) continue; /* instruction cache */
        const int64_t size = (int64_t)(((b >> 22) & 0x3ff) + 1) * (((b >> 12) & 0x3ff) + 1) *
                             ((b & 0xfff) + 1) * ((int64_t)c + 1);
        if (level == 1) cache_l1d = size;
        else if (level == 2) cache_l2 = size;
        else if (level == 3) cache_l3 = size;
    }
}
#endif

static void detect_uarch(void) {
#ifdef FD_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    const unsigned max_leaf = a;
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    vendor[12] = 0;
    __get_cpuid(1, &a, &b, &c, &d);
    const int base_family = (a >> 8) & 15, base_model = (a >> 4) & 15;
    cpu_family = base_family == 15 ? base_family + (int)((a >> 20) & 255) : base_family;
    cpu_model = (base_family == 6 || base_family == 15) ? base_model + (int)(((a >> 16) & 15) << 4)
                                                        : base_model;
    unsigned ext_max = __get_cpuid_max(0x80000000u, NULL);
    if (strcmp(vendor, "AuthenticAMD") == 0 && ext_max >= 0x8000001Du) detect_caches(0x8000001Du);
    else if (max_leaf >= 4) detect_caches(4);
#endif
}

/* GEMM parameters per microarchitecture (as BLIS keys its contexts by architecture):
 * for the ISA path each entry is tuned for, the register block (the ISA's micro-kernel)
 * and the cache blocks.  An entry's blocks assume its l2 size; a CPU reporting another
 * L2 gets MC scaled to it (the MC×KC block of A lives in L2).  Other paths, unknown CPUs:
 * the ISA file's defaults ("generic-<isa>"). */
typedef struct {
    const char *name;
    const char *vendor;
    int family, model_lo, model_hi; /* model range, inclusive */
    int isa;
    int mc, kc, nc;
    int64_t l2; /* bytes the entry was tuned with */
} fd_gemm_tune;

static const fd_gemm_tune tunes[] = {
    /* AMD Zen 5 (family 26): full-width 512-bit FMAs, 48 KiB L1d, 1 MiB L2 */
    {"zen5", "AuthenticAMD", 0x1A, 0x00, 0xFF, FD_ISA_AVX512, 168, 384, 2048, 1 << 20},
    /* AMD Zen 4 (family 25, models 0x10-0x1F, 0x60-0x7F, 0xA0-0xAF): double-pumped
     * 512-bit, 32 KiB L1d, 1 MiB L2 — the blocks the AVX-512 kernel was tuned with */
    {"zen4", "AuthenticAMD", 0x19, 0x10, 0x1F, FD_ISA_AVX512, 168, 384, 2048, 1 << 20},
    {"zen4", "AuthenticAMD", 0x19, 0x60, 0x7F, FD_ISA_AVX512, 168, 384, 2048, 1 << 20},
    {"zen4", "AuthenticAMD", 0x19, 0xA0, 0xAF, FD_ISA_AVX512, 168, 384, 2048, 1 << 20},
    /* Zen 2 / Zen 3 (AVX2): 512 KiB L2 */
    {"zen2-zen3", "AuthenticAMD", 0x17, 0x00, 0xFF, FD_ISA_AVX2, 72, 256, 2048, 512 << 10},
    {"zen2-zen3", "AuthenticAMD", 0x19, 0x00, 0x0F, FD_ISA_AVX2, 72, 256, 2048, 512 << 10},
    {"zen2-zen3", "AuthenticAMD", 0x19, 0x20, 0x5F, FD_ISA_AVX2, 72, 256, 2048, 512 << 10},
    /* Intel server cores with two 512-bit FMA ports: Sapphire/Emerald/Granite Rapids
     * (2 MiB L2), Ice Lake server (1.25 MiB), Skylake/Cascade Lake server (1 MiB) */
    {"sapphire-rapids", "GenuineIntel", 6, 0x8F, 0x8F, FD_ISA_AVX512, 336, 384, 3072, 2 << 20},
    {"sapphire-rapids", "GenuineIntel", 6, 0xCF, 0xCF, FD_ISA_AVX512, 336, 384, 3072, 2 << 20},
    {"sapphire-rapids", "GenuineIntel", 6, 0xAD, 0xAE, FD_ISA_AVX512, 336, 384, 3072, 2 << 20},
    {"icelake-server", "GenuineIntel", 6, 0x6A, 0x6C, FD_ISA_AVX512, 210, 384, 3072, 1280 << 10},
    {"skylake-server", "GenuineIntel", 6, 0x55, 0x55, FD_ISA_AVX512, 168, 384, 2048, 1 << 20},
    /* Haswell-class AVX2 client/server cores (256 KiB - 1.25 MiB L2) */
    {"haswell", "GenuineIntel", 6, 0x00, 0xFF, FD_ISA_AVX2, 72, 256, 2048, 256 << 10},
};

static const char *gemm_table_name[FD_ISA_COUNT] = {"generic-ref", "generic-avx2",
                                                    "generic-avx512"};

/* FASTDROP_GEMM_BLOCKS=mc,kc,nc overrides the cache blocks of every path (tuning). */
static void tune_gemm(fd_kernel_table *t) {
    fd_gemm_params *P = &t->gemm;
    for (size_t i = 0; i < sizeof tunes / sizeof tunes[0]; i++) {
        const fd_gemm_tune *e = &tunes[i];
        if (e->isa != t->isa || strcmp(e->vendor, vendor) != 0 || e->family != cpu_family ||
            cpu_model < e->model_lo || cpu_model > e->model_hi)
            continue;
        int mc = e->mc;
        if (cache_l2 > 0 && cache_l2 != e->l2) { /* keep the A block in the same L2 share */
            const double f = (double)cache_l2 / (double)e->l2;
            mc = (int)(mc * f);
            if (mc > 4 * e->mc) mc = 4 * e->mc;
        }
        mc = mc / P->mr * P->mr;
        if (mc < P->mr) mc = P->mr;
        P->mc = mc;
        P->kc = e->kc;
        P->nc = e->nc / P->nr * P->nr;
        gemm_table_name[t->isa] = e->name;
        break;
    }
    const char *o = getenv("FASTDROP_GEMM_BLOCKS");
    int mc, kc, nc;
    if (o && sscanf(o, "%d,%d,%d", &mc, &kc, &nc) == 3 && mc >= P->mr && kc >= 8 && nc >= P->nr) {
        P->mc = mc / P->mr * P->mr;
        P->kc = (kc + 7) / 8 * 8;
        P->nc = nc / P->nr * P->nr;
        gemm_table_name[t->isa] = "override";
    }
}

const char *fd_gemm_table(int64_t blocks[5]) {
    fd_init();
    const fd_gemm_params *P = &fd_kt->gemm;
    if (blocks) {
        blocks[0] = P->mr;
        blocks[1] = P->nr;
        blocks[2] = P->mc;
        blocks[3] = P->kc;
        blocks[4] = P->nc;
    }
    return gemm_table_name[fd_kt->isa];
}

void fd_cpu_describe(char vendor_out[13], int *family, int *model, int64_t caches[3]) {
    fd_init();
    memcpy(vendor_out, vendor, 13);
    *family = cpu_family;
    *model = cpu_model;
    caches[0] = cache_l1d;
    caches[1] = cache_l2;
    caches[2] = cache_l3;
}

static void detect(void) {
    cpu_ok[FD_ISA_REF] = 1;
    detect_uarch();
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
    tune_gemm(&tables[FD_ISA_REF]);
    table_ok[FD_ISA_REF] = 1;
#ifdef FD_HAVE_AVX2
    static const fd_kernel_table t_avx2 = FD_TABLE(avx2);
    tables[FD_ISA_AVX2] = t_avx2;
    tables[FD_ISA_AVX2].gemm = fd_gemm_params_avx2;
    tune_gemm(&tables[FD_ISA_AVX2]);
    table_ok[FD_ISA_AVX2] = 1;
#endif
#ifdef FD_HAVE_AVX512
    static const fd_kernel_table t_avx512 = FD_TABLE(avx512);
    tables[FD_ISA_AVX512] = t_avx512;
    tables[FD_ISA_AVX512].gemm = fd_gemm_params_avx512;
    tune_gemm(&tables[FD_ISA_AVX512]);
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
        /* the bf16 paths (gemm/bf16.c) run beside the fp32 AVX-512 kernels */
        if (strcmp(env, "avx512bf16") == 0 || strcmp(env, "amx") == 0) want = FD_ISA_AVX512;
        if (want < 0)
            env_error = "FASTDROP_ISA must be one of ref, avx2, avx512, avx512bf16, amx";
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
