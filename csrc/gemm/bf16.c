/* bf16.c — the bf16 GEMM frame: C(fp32) = alpha·op(A)·op(B) + beta·C (+ epilogue) with the
 * operands rounded to bf16 (round to nearest even) and fp32 accumulation.
 *
 * Paths (fd_bf16_path), chosen at run time:
 *   amx         AMX-BF16 tiles (tdpbf16ps), after the Linux permission request for tile
 *               data (arch_prctl ARCH_REQ_XCOMP_PERM); refused -> not supported
 *   avx512bf16  the vdpbf16ps micro-kernel (AVX512-BF16)
 *   portable    operands converted to bf16 values held in fp32, then the fp32 SGEMM of
 *               the current ISA path (exact products, fp32 FMA accumulation)
 * The first two pack each panel once, converting fp32 -> bf16 pairs while packing (or
 * copying operands that are already bf16, e.g. the weight copies the engine refreshes
 * once per optimizer step).  Threads own disjoint rectangles of C and K is never split:
 * results are bitwise identical for any thread count on a given path.  The C core never
 * aborts: allocation failure returns -1. */
#define _GNU_SOURCE 1 /* syscall() under -std=c11 */
#include "bf16.h"

#include "../fpenv.h"
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <cpuid.h>
#define FD_X86 1
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#define FD_LINUX_X86 1
#endif

void fd_bf16_cvt_ref(int64_t n, const float *src, uint16_t *dst)
{
    for (int64_t i = 0; i < n; i++) dst[i] = fd_bf16_from_f32(src[i]);
}

/* ---------------------------------------------------------------- detection */
static const char *path_names[FD_BF16_COUNT] = {"portable", "avx512bf16", "amx"};
static int path_cpu[FD_BF16_COUNT];
static int path_compiled[FD_BF16_COUNT];
static const char *amx_note = NULL; /* why AMX is off, if the CPU has it */
static int bf16_state = 0;          /* 0 not started, 1 running, 2 done */
static int chosen = FD_BF16_PORTABLE; /* __atomic */

#ifdef FD_X86
static uint64_t xgetbv0(void)
{
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

static void detect(void)
{
    path_cpu[FD_BF16_PORTABLE] = 1;
    path_compiled[FD_BF16_PORTABLE] = 1;
#ifdef FD_HAVE_AVX512BF16
    path_compiled[FD_BF16_AVX512BF16] = 1;
#endif
#ifdef FD_HAVE_AMX
    path_compiled[FD_BF16_AMX] = 1;
#endif
#ifdef FD_X86
    /* the fp32 AVX-512 path's checks (f, dq, bw, vl, OS ZMM state) come first */
    if (!fd_isa_cpu_supported(FD_ISA_AVX512)) return;
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    const int amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    const unsigned max7 = a;
    int avx512bf16 = 0;
    if (max7 >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        avx512bf16 = (a >> 5) & 1;
    }
    path_cpu[FD_BF16_AVX512BF16] = avx512bf16;
    if (amx_bf16 && amx_tile) {
#ifdef FD_LINUX_X86
        /* XFEATURE_XTILEDATA (18) must be permitted before the first tile instruction */
        const long ARCH_GET_XCOMP_PERM = 0x1022, ARCH_REQ_XCOMP_PERM = 0x1023;
        const int XTILEDATA = 18;
        if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XTILEDATA) != 0) {
            amx_note = "the kernel refused the AMX tile-data permission (arch_prctl)";
        } else {
            unsigned long bitmask = 0;
            if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &bitmask) != 0 ||
                !(bitmask & (1ul << XTILEDATA)))
                amx_note = "AMX tile-data permission not granted";
            else if ((xgetbv0() & 0x60000) != 0x60000)
                amx_note = "the OS does not enable AMX tile state (XCR0)";
            else
                path_cpu[FD_BF16_AMX] = avx512bf16; /* packing converts with vcvtne2ps2bf16 */
        }
#else
        amx_note = "AMX needs the Linux permission request; not available on this OS";
#endif
    }
#endif
}

static int usable(int p)
{
    return p >= 0 && p < FD_BF16_COUNT && path_cpu[p] && path_compiled[p];
}

static void init_once(void)
{
    detect();
    int best = FD_BF16_PORTABLE;
    if (usable(FD_BF16_AVX512BF16)) best = FD_BF16_AVX512BF16;
    if (usable(FD_BF16_AMX)) best = FD_BF16_AMX;
    /* FASTDROP_ISA forces a path (cpu.c forces the fp32 path and reports bad values) */
    const char *env = getenv("FASTDROP_ISA");
    if (env && *env) {
        if (strcmp(env, "amx") == 0 && usable(FD_BF16_AMX)) best = FD_BF16_AMX;
        else if (strcmp(env, "avx512bf16") == 0 && usable(FD_BF16_AVX512BF16))
            best = FD_BF16_AVX512BF16;
        else /* ref, avx2, avx512 (or an unusable bf16 name): the portable path */
            best = FD_BF16_PORTABLE;
    }
    __atomic_store_n(&chosen, best, __ATOMIC_RELAXED);
}

static void bf16_init(void)
{
    fd_init();
    if (__atomic_load_n(&bf16_state, __ATOMIC_ACQUIRE) == 2) return;
    int expect = 0;
    if (__atomic_compare_exchange_n(&bf16_state, &expect, 1, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        init_once();
        __atomic_store_n(&bf16_state, 2, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&bf16_state, __ATOMIC_ACQUIRE) != 2) {
    }
}

const char *fd_bf16_path_name(int p)
{
    return (p >= 0 && p < FD_BF16_COUNT) ? path_names[p] : "unknown";
}
int fd_bf16_path_compiled(int p) { bf16_init(); return p >= 0 && p < FD_BF16_COUNT && path_compiled[p]; }
int fd_bf16_path_cpu_supported(int p) { bf16_init(); return p >= 0 && p < FD_BF16_COUNT && path_cpu[p]; }
const char *fd_bf16_amx_note(void) { bf16_init(); return amx_note; }

/* The path a bf16 GEMM runs now: the chosen one, but the portable path whenever the fp32
 * path in use is below AVX-512 (FASTDROP_ISA=avx2 / ref, or set_isa at run time). */
int fd_bf16_path_get(void)
{
    bf16_init();
    const int p = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    return fd_isa_get() == FD_ISA_AVX512 ? p : FD_BF16_PORTABLE;
}

int fd_bf16_path_set(int p)
{
    bf16_init();
    if (!usable(p)) return -1;
    __atomic_store_n(&chosen, p, __ATOMIC_RELAXED);
    return 0;
}

static const fd_bf16_kernel *kernel_of(int p)
{
    switch (p) {
#ifdef FD_HAVE_AVX512BF16
    case FD_BF16_AVX512BF16: return &fd_bf16_kernel_avx512bf16;
#endif
#ifdef FD_HAVE_AMX
    case FD_BF16_AMX: return &fd_bf16_kernel_amx;
#endif
    default: return NULL;
    }
}

/* ---------------------------------------------------------------- conversion */
typedef struct {
    int64_t n;
    const float *src;
    uint16_t *dst;
    fd_bf16_cvt_fn cvt;
} fd_cvt_job;

static void cvt_range(void *vj, int64_t lo, int64_t hi)
{
    const fd_cvt_job *J = vj;
    J->cvt(hi - lo, J->src + lo, J->dst + lo);
}

static fd_bf16_cvt_fn best_cvt(void)
{
#ifdef FD_HAVE_AVX512BF16
    if (usable(FD_BF16_AVX512BF16)) return fd_bf16_cvt_avx512bf16;
#endif
    return fd_bf16_cvt_ref;
}

void fd_f32_to_bf16(int64_t n, const float *src, uint16_t *dst)
{
    if (n <= 0) return;
    bf16_init();
    const unsigned fp = fd_fp_enter();
    fd_cvt_job J = {n, src, dst, fd_bf16_path_get() == FD_BF16_PORTABLE ? fd_bf16_cvt_ref
                                                                         : best_cvt()};
    fd_parallel_range(n, 1 << 16, 16, cvt_range, &J);
    fd_fp_exit(fp);
}

void fd_bf16_to_f32(int64_t n, const uint16_t *src, float *dst)
{
    for (int64_t i = 0; i < n; i++) dst[i] = fd_f32_from_bf16(src[i]);
}

/* ---------------------------------------------------------------- operands */
/* n consecutive elements (stride 1) from element offset off, as bf16: in place for bf16
 * operands, else converted into dst. */
static inline const uint16_t *fetch16(const fd_opnd *X, int64_t off, int64_t n, uint16_t *dst,
                                      fd_bf16_cvt_fn cvt)
{
    if (X->is16) return (const uint16_t *)X->p + off;
    cvt(n, (const float *)X->p + off, dst);
    return dst;
}

static inline uint16_t elem16(const fd_opnd *X, int64_t off)
{
    return X->is16 ? ((const uint16_t *)X->p)[off] : fd_bf16_from_f32(((const float *)X->p)[off]);
}

/* Pairs layout of the block X(i0 + i, p0 + p), i < extent, p < kc; kcp (even) columns,
 * W-wide panels (panel q at dst + q*(kcp/2)*W words).  tmp: 2*(extent + kc) + 64 uint16. */
static void pack_pairs(const fd_opnd *X, int64_t i0, int64_t p0, int64_t extent, int64_t kc,
                       int64_t kcp, int W, uint32_t *dst, uint16_t *tmp, fd_bf16_cvt_fn cvt)
{
    const int64_t k2 = kcp / 2, panels = (extent + W - 1) / W, pw = k2 * W;
    if (X->cs == 1 && X->rs != 1) { /* X(i, p) contiguous along p: pairs are adjacent */
        for (int64_t i = 0; i < panels * W; i++) {
            uint32_t *d = dst + (i / W) * pw + (i % W);
            if (i >= extent) {
                for (int64_t q = 0; q < k2; q++) d[q * W] = 0;
                continue;
            }
            const uint16_t *t = fetch16(X, (i0 + i) * X->rs + p0, kc, tmp, cvt);
            const int64_t full = kc / 2;
            for (int64_t q = 0; q < full; q++)
                d[q * W] = (uint32_t)t[2 * q] | (uint32_t)t[2 * q + 1] << 16;
            if (kc & 1) d[full * W] = t[kc - 1];
            for (int64_t q = (kc + 1) / 2; q < k2; q++) d[q * W] = 0;
        }
        return;
    }
    /* X(i, p) contiguous along i (or strided): two source lines per pair row */
    uint16_t *b0 = tmp, *b1 = tmp + extent + 32;
    for (int64_t q = 0; q < k2; q++) {
        const int64_t pa = 2 * q, pb = 2 * q + 1;
        const uint16_t *t0 = b0, *t1 = b1;
        for (int r = 0; r < 2; r++) {
            const int64_t p = r ? pb : pa;
            uint16_t *t = r ? b1 : b0;
            const uint16_t **tp = r ? &t1 : &t0;
            if (p >= kc) memset(t, 0, (size_t)extent * 2);
            else if (X->rs == 1) *tp = fetch16(X, (p0 + p) * X->cs + i0, extent, t, cvt);
            else
                for (int64_t i = 0; i < extent; i++)
                    t[i] = elem16(X, (i0 + i) * X->rs + (p0 + p) * X->cs);
        }
        for (int64_t pn = 0; pn < panels; pn++) {
            uint32_t *d = dst + pn * pw + q * W;
            const int64_t base = pn * W, w = extent - base < W ? extent - base : W;
            for (int64_t i = 0; i < w; i++)
                d[i] = (uint32_t)t0[base + i] | (uint32_t)t1[base + i] << 16;
            for (int64_t i = w; i < W; i++) d[i] = 0;
        }
    }
}

/* The kernel's vector packing when it has one for this operand, else the generic one. */
static void pack_pairs_k(const fd_bf16_kernel *K, const fd_opnd *X, int64_t i0, int64_t p0,
                         int64_t extent, int64_t kc, int64_t kcp, int W, uint32_t *dst,
                         uint16_t *tmp)
{
    if (K->pack_pairs && K->pack_pairs(X, i0, p0, extent, kc, kcp, W, dst) == 0) return;
    pack_pairs(X, i0, p0, extent, kc, kcp, W, dst, tmp, K->cvt);
}

/* Rows layout: panel q at dst + q*W*kcp, dst[i*kcp + p] = bf16(X(i0+i, p0+p)). */
static void pack_rows(const fd_opnd *X, int64_t i0, int64_t p0, int64_t extent, int64_t kc,
                      int64_t kcp, int W, uint16_t *dst, uint16_t *tmp, fd_bf16_cvt_fn cvt)
{
    const int64_t panels = (extent + W - 1) / W;
    if (X->cs == 1 && X->rs != 1) {
        for (int64_t i = 0; i < panels * W; i++) {
            uint16_t *d = dst + i * kcp;
            if (i >= extent) {
                memset(d, 0, (size_t)kcp * 2);
                continue;
            }
            if (X->is16) memcpy(d, (const uint16_t *)X->p + (i0 + i) * X->rs + p0, (size_t)kc * 2);
            else cvt(kc, (const float *)X->p + (i0 + i) * X->rs + p0, d);
            if (kc < kcp) memset(d + kc, 0, (size_t)(kcp - kc) * 2);
        }
        return;
    }
    if (kcp % 4 == 0) { /* four source lines at a time: one 64-bit store per row */
        uint16_t *tb[4];
        const uint16_t *t[4];
        for (int r = 0; r < 4; r++) tb[r] = tmp + r * (extent + 32);
        for (int64_t p = 0; p < kcp; p += 4) {
            for (int r = 0; r < 4; r++) {
                const int64_t pr = p + r;
                t[r] = tb[r];
                if (pr >= kc) memset(tb[r], 0, (size_t)extent * 2);
                else if (X->rs == 1) t[r] = fetch16(X, (p0 + pr) * X->cs + i0, extent, tb[r], cvt);
                else
                    for (int64_t i = 0; i < extent; i++)
                        tb[r][i] = elem16(X, (i0 + i) * X->rs + (p0 + pr) * X->cs);
            }
            for (int64_t i = 0; i < extent; i++) {
                const uint64_t w = (uint64_t)t[0][i] | (uint64_t)t[1][i] << 16 |
                                   (uint64_t)t[2][i] << 32 | (uint64_t)t[3][i] << 48;
                memcpy(dst + i * kcp + p, &w, 8);
            }
            for (int64_t i = extent; i < panels * W; i++) memset(dst + i * kcp + p, 0, 8);
        }
        return;
    }
    for (int64_t p = 0; p < kcp; p++) {
        if (p >= kc) {
            for (int64_t i = 0; i < panels * W; i++) dst[i * kcp + p] = 0;
            continue;
        }
        const uint16_t *t = tmp;
        if (X->rs == 1) t = fetch16(X, (p0 + p) * X->cs + i0, extent, tmp, cvt);
        else
            for (int64_t i = 0; i < extent; i++)
                tmp[i] = elem16(X, (i0 + i) * X->rs + (p0 + p) * X->cs);
        for (int64_t i = 0; i < extent; i++) dst[i * kcp + p] = t[i];
        for (int64_t i = extent; i < panels * W; i++) dst[i * kcp + p] = 0;
    }
}

/* ---------------------------------------------------------------- the frame */
typedef struct {
    const fd_bf16_kernel *K;
    int64_t m, n, k;
    fd_opnd a, b; /* op(A) m×k, op(B) k×n (b viewed as its transpose: rows = columns of C) */
    float alpha, beta;
    float *c;
    int64_t ldc;
    const fd_epilogue *ep;
    int tm, tn;
    int err;
} fd_bf16_job;

static int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static int ep_active(const fd_epilogue *ep)
{
    return ep && (ep->bias || ep->relu || ep->mask || ep->scale || ep->shift);
}

/* One 64-byte-aligned packing buffer per thread, grown on demand, freed with the fp32
 * frame's (fd_release_thread_buffers calls fd_bf16_release_thread_buffer). */
static _Thread_local char *my_buf = NULL;
static _Thread_local size_t my_cap = 0;

static _Thread_local uint16_t *pre_buf = NULL; /* the caller's operand copies */
static _Thread_local size_t pre_cap = 0;

void fd_bf16_release_thread_buffer(void)
{
    free(my_buf);
    my_buf = NULL;
    my_cap = 0;
    free(pre_buf);
    pre_buf = NULL;
    pre_cap = 0;
}

static char *bf16_buffer(size_t bytes)
{
    if (my_cap < bytes) { /* (not pre_buf: it may hold this call's operand copies) */
        free(my_buf);
        my_buf = NULL;
        my_cap = 0;
        char *p = aligned_alloc(64, bytes);
        if (!p) return NULL;
        my_buf = p;
        my_cap = bytes;
    }
    return my_buf;
}

static int run_block(const fd_bf16_job *J, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    const fd_bf16_kernel *K = J->K;
    const int MR = K->mr, NR = K->nr;
    const int64_t nb = div_up(J->k, K->kc);
    const int64_t KC = min64(K->kc, (div_up(J->k, nb) + K->k_align - 1) / K->k_align * K->k_align);
    const int64_t MC = min64(K->mc, div_up(i1 - i0, MR) * MR);
    const int64_t NC = min64(K->nc, div_up(j1 - j0, NR) * NR);
    const size_t abytes = (size_t)MC * KC * 2 + 64, bbytes = (size_t)NC * KC * 2 + 64;
    const size_t tbytes = (size_t)(4 * (KC + (MC > NC ? MC : NC)) + 256) * 2;
    char *mem = bf16_buffer((abytes + bbytes + tbytes + 63) & ~(size_t)63);
    if (!mem) return -1;
    void *abuf = mem, *bbuf = mem + ((abytes + 63) & ~(size_t)63);
    uint16_t *tmp = (uint16_t *)(mem + ((abytes + 63) & ~(size_t)63) + ((bbytes + 63) & ~(size_t)63));
    if (K->thread_enter && K->thread_enter() != 0) return -1;
    const fd_opnd bt = {J->b.p, J->b.is16, J->b.cs, J->b.rs}; /* X(j, p) = op(B)(p, j) */
    for (int64_t jc = j0; jc < j1; jc += NC) {
        const int64_t nc = min64(NC, j1 - jc);
        for (int64_t pc = 0; pc < J->k; pc += KC) {
            const int64_t kc = min64(KC, J->k - pc);
            const int64_t kcp = (kc + K->k_align - 1) / K->k_align * K->k_align;
            const int first = pc == 0, last = pc + KC >= J->k;
            pack_pairs_k(K, &bt, jc, pc, nc, kc, kcp, NR, bbuf, tmp);
            for (int64_t ic = i0; ic < i1; ic += MC) {
                const int64_t mc = min64(MC, i1 - ic);
                if (K->a_rows) pack_rows(&J->a, ic, pc, mc, kc, kcp, MR, abuf, tmp, K->cvt);
                else pack_pairs_k(K, &J->a, ic, pc, mc, kc, kcp, MR, abuf, tmp);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    const int64_t nr = min64(NR, nc - jr);
                    const char *bp = (const char *)bbuf + (jr / NR) * kcp * NR * 2;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        const int64_t mr = min64(MR, mc - ir);
                        const char *ap = (const char *)abuf + (ir / MR) * kcp * MR * 2;
                        float *ct = J->c + (ic + ir) * J->ldc + jc + jr;
                        K->ukr(kcp, J->alpha, ap, bp, first ? J->beta : 1.0f, ct, J->ldc, mr, nr);
                        if (last && ep_active(J->ep))
                            fd_gemm_apply_epilogue(ct, J->ldc, ic + ir, jc + jr, mr, nr, J->n, J->ep);
                    }
                }
            }
        }
    }
    if (K->thread_exit) K->thread_exit();
    return 0;
}

static void cell_chunk(void *vj, int64_t cell)
{
    fd_bf16_job *J = vj;
    const int MR = J->K->mr, NR = J->K->nr;
    const int64_t mt = div_up(J->m, MR), ntl = div_up(J->n, NR);
    const int64_t ti = cell / J->tn, tj = cell % J->tn;
    const int64_t i0 = min64(J->m, mt * ti / J->tm * MR), i1 = min64(J->m, mt * (ti + 1) / J->tm * MR);
    const int64_t j0 = min64(J->n, ntl * tj / J->tn * NR), j1 = min64(J->n, ntl * (tj + 1) / J->tn * NR);
    if (i0 < i1 && j0 < j1 && run_block(J, i0, i1, j0, j1))
        __atomic_store_n(&J->err, 1, __ATOMIC_RELAXED);
}

#define FD_BF16_GRAIN (1 << 19) /* multiply-adds per thread before a 2nd thread helps */

/* fp32 operand X (stored rows × cols, row stride ld) -> contiguous bf16 rows in dst */
typedef struct {
    const float *src;
    int64_t cols, ld;
    uint16_t *dst;
    fd_bf16_cvt_fn cvt;
} fd_pre_job;

static void pre_rows(void *vj, int64_t lo, int64_t hi)
{
    const fd_pre_job *P = vj;
    for (int64_t r = lo; r < hi; r++) P->cvt(P->cols, P->src + r * P->ld, P->dst + r * P->cols);
}

/* An fp32 operand that several cells would pack (and so convert) again is converted once,
 * in parallel, into one bf16 copy; packing then only rearranges.  0, or -1 (no memory). */
static int preconvert(fd_opnd *X, int trans, int64_t op_rows, int64_t op_cols, int64_t ld,
                      uint16_t *dst, fd_bf16_cvt_fn cvt)
{
    const int64_t rows = trans ? op_cols : op_rows, cols = trans ? op_rows : op_cols;
    fd_pre_job P = {(const float *)X->p, cols, ld, dst, cvt};
    fd_parallel_range(rows, div_up(1 << 15, cols), 1, pre_rows, &P);
    *X = trans ? (fd_opnd){dst, 1, 1, cols} : (fd_opnd){dst, 1, cols, 1};
    return 0;
}

static int run_kernel(fd_bf16_job *J, int trans_a, int64_t lda, int trans_b, int64_t ldb)
{
    const int MR = J->K->mr, NR = J->K->nr;
    const int64_t mt = div_up(J->m, MR), ntl = div_up(J->n, NR);
    int nt = fd_threads_for(J->m * J->n * J->k, FD_BF16_GRAIN);
    if (nt > mt * ntl) nt = (int)(mt * ntl);
    /* split the side with more tiles (the other operand is packed by every cell) */
    J->tm = 1;
    J->tn = 1;
    if (nt > 1) {
        if (ntl >= mt) J->tn = (int)min64(ntl, (int64_t)nt);
        else J->tm = (int)min64(mt, (int64_t)nt);
    }
    const int64_t a_packs = J->tn * div_up(div_up(ntl, J->tn) * NR, J->K->nc);
    const int64_t b_packs = J->tm * div_up(div_up(mt, J->tm) * MR, J->K->mc);
    const int pre_a = !J->a.is16 && a_packs > 1, pre_b = !J->b.is16 && b_packs > 1;
    if (pre_a || pre_b) {
        const size_t need = (pre_a ? (size_t)J->m * J->k : 0) + (pre_b ? (size_t)J->k * J->n : 0) + 32;
        if (pre_cap < need) {
            free(pre_buf);
            pre_cap = 0;
            pre_buf = aligned_alloc(64, (need * 2 + 63) & ~(size_t)63);
            if (!pre_buf) return -1;
            pre_cap = need;
        }
        uint16_t *p = pre_buf;
        if (pre_a) {
            preconvert(&J->a, trans_a, J->m, J->k, lda, p, J->K->cvt);
            p += (size_t)J->m * J->k + 16;
        }
        if (pre_b) preconvert(&J->b, trans_b, J->k, J->n, ldb, p, J->K->cvt);
    }
    if (J->tm * J->tn <= 1) return run_block(J, 0, J->m, 0, J->n);
    fd_parallel(nt, (int64_t)J->tm * J->tn, cell_chunk, J);
    return J->err ? -1 : 0;
}

/* ---------------------------------------------------------------- portable path */
/* Operands rounded to bf16 (held as fp32), then the fp32 SGEMM: products of bf16 values
 * are exact in fp32, the sums are fp32 FMAs. */
static float *rounded_copy(const void *p, int is16, int64_t rows, int64_t cols, int64_t ld)
{
    if (rows <= 0 || cols <= 0) return malloc(4);
    if ((uint64_t)rows * (uint64_t)cols > (SIZE_MAX / 8)) return NULL;
    float *d = malloc((size_t)rows * (size_t)cols * sizeof(float));
    if (!d) return NULL;
    for (int64_t r = 0; r < rows; r++) {
        float *dr = d + r * cols;
        if (is16) {
            const uint16_t *s = (const uint16_t *)p + r * ld;
            for (int64_t j = 0; j < cols; j++) dr[j] = fd_f32_from_bf16(s[j]);
        } else {
            const float *s = (const float *)p + r * ld;
            for (int64_t j = 0; j < cols; j++) dr[j] = fd_f32_from_bf16(fd_bf16_from_f32(s[j]));
        }
    }
    return d;
}

static int portable(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const void *a, int a16, int64_t lda, const void *b, int b16, int64_t ldb,
                    float beta, float *c, int64_t ldc, const fd_epilogue *ep)
{
    const int64_t ar = trans_a ? k : m, ac = trans_a ? m : k;
    const int64_t br = trans_b ? n : k, bc = trans_b ? k : n;
    float *fa = rounded_copy(a, a16, ar, ac, lda);
    float *fb = rounded_copy(b, b16, br, bc, ldb);
    int rc = -1;
    if (fa && fb)
        rc = fd_sgemm(trans_a, trans_b, m, n, k, alpha, fa, ac, fb, bc, beta, c, ldc, ep);
    free(fa);
    free(fb);
    return rc;
}

/* ---------------------------------------------------------------- entry */
int fd_gemm_bf16(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const void *a, int a_bf16, int64_t lda, const void *b, int b_bf16,
                 int64_t ldb, float beta, float *c, int64_t ldc, const fd_epilogue *ep)
{
    if (m <= 0 || n <= 0) return 0;
    bf16_init();
    const int path = fd_bf16_path_get();
    const fd_bf16_kernel *K = kernel_of(path);
    if (!K || k <= 0 || alpha == 0.0f)
        return portable(trans_a, trans_b, m, n, k, alpha, a, a_bf16, lda, b, b_bf16, ldb, beta,
                        c, ldc, ep);
    const unsigned fp = fd_fp_enter();
    fd_bf16_job J;
    memset(&J, 0, sizeof J);
    J.K = K;
    J.m = m;
    J.n = n;
    J.k = k;
    J.a = trans_a ? (fd_opnd){a, a_bf16, 1, lda} : (fd_opnd){a, a_bf16, lda, 1};
    J.b = trans_b ? (fd_opnd){b, b_bf16, 1, ldb} : (fd_opnd){b, b_bf16, ldb, 1};
    J.alpha = alpha;
    J.beta = beta;
    J.c = c;
    J.ldc = ldc;
    J.ep = ep;
    const int rc = run_kernel(&J, trans_a, lda, trans_b, ldb);
    fd_fp_exit(fp);
    return rc;
}
