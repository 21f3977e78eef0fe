/*
 * dropout.c — the public dropout entry points: threads over whole blocks, then the
 * chosen ISA's kernel (fd_kt).  RNG contract: csrc/rng.h and fastdrop.h.
 *
 * Threads take contiguous runs of whole FD_DROPOUT_BLOCK blocks, so a mask byte is
 * never written by two threads, and since every block seeds its own streams from
 * (seed, block), the result does not depend on the thread count or the ISA path.
 */
#include <string.h>

#include "internal.h"
#include "fpenv.h"

/* Smallest job worth a thread, in blocks (4096 elements, 16 KB of float32 each):
 * below this the OpenMP fork/join costs more than the second core saves. */
#define FD_DROPOUT_GRAIN_BLOCKS 8
#define FD_DROPOUT_APPLY_GRAIN_BLOCKS 16

uint32_t fd_dropout_threshold(double rate) {
    if (!(rate > 0.0)) return 0; /* 0, negative, NaN: keep everything */
    const double t = rate * 4294967296.0; /* exact: a power-of-two scale */
    if (t >= 4294967295.0) return UINT32_MAX;
    return (uint32_t)t; /* truncation == floor for t >= 0 */
}

/* Run the kernel on blocks [0, nb) in contiguous runs of whole blocks. */
typedef struct {
    const fd_kernel_table *kt;
    int64_t n;
    float *out;
    const float *x;
    uint64_t seed;
    uint32_t threshold;
    float scale;
    uint8_t *mask;
    const uint8_t *cmask;
} fd_drop_job;

static void blocks_range(void *j_, int64_t b0, int64_t b1) {
    const fd_drop_job *j = j_;
    j->kt->dropout_blocks(j->n, b0, b1, j->out, j->x, j->seed, j->threshold, j->scale, j->mask);
}

static void run_blocks(int64_t n, float *out, const float *x, uint64_t seed,
                       uint32_t threshold, float scale, uint8_t *mask) {
    const int64_t nb = (n + FD_DROPOUT_BLOCK - 1) / FD_DROPOUT_BLOCK;
    fd_drop_job j = {fd_kt, n, out, x, seed, threshold, scale, mask, NULL};
    fd_parallel_range(nb, FD_DROPOUT_GRAIN_BLOCKS, 1, blocks_range, &j);
}

void fd_dropout_mask(int64_t n, uint64_t seed, uint32_t threshold, uint8_t *mask) {
    fd_init();
    if (n <= 0) return;
    const unsigned fp = fd_fp_enter();
    run_blocks(n, NULL, NULL, seed, threshold, 1.0f, mask);
    fd_fp_exit(fp);
}

void fd_dropout_forward_f32(int64_t n, float *out, const float *x, uint64_t seed,
                            uint32_t threshold, float scale, uint8_t *mask) {
    fd_init();
    if (n <= 0) return;
    const unsigned fp = fd_fp_enter();
    run_blocks(n, out, x, seed, threshold, scale, mask);
    fd_fp_exit(fp);
}

static void apply_range(void *j_, int64_t b0, int64_t b1) {
    const fd_drop_job *j = j_;
    const int64_t e0 = b0 * FD_DROPOUT_BLOCK;
    int64_t e1 = b1 * FD_DROPOUT_BLOCK;
    if (e1 > j->n) e1 = j->n;
    if (e1 > e0) j->kt->dropout_apply(e1 - e0, j->out + e0, j->x + e0, j->cmask + e0 / 8, j->scale);
}

void fd_dropout_apply_f32(int64_t n, float *out, const float *x, const uint8_t *mask,
                          float scale) {
    fd_init();
    if (n <= 0) return;
    const unsigned fp = fd_fp_enter();
    const int64_t nb = (n + FD_DROPOUT_BLOCK - 1) / FD_DROPOUT_BLOCK;
    fd_drop_job j = {fd_kt, n, out, x, 0, 0, scale, NULL, mask};
    fd_parallel_range(nb, FD_DROPOUT_APPLY_GRAIN_BLOCKS, 1, apply_range, &j);
    fd_fp_exit(fp);
}

/* Copy n bits from src (starting at bit sbit) into dst (starting at bit dbit), little
 * bit order.  Bits of dst outside [dbit, dbit + n) are left unchanged. */
static void bitcopy(uint8_t *dst, int64_t dbit, const uint8_t *src, int64_t sbit, int64_t n) {
    if (((dbit | sbit) & 7) == 0) {
        memcpy(dst + dbit / 8, src + sbit / 8, (size_t)(n / 8));
        for (int64_t i = n & ~(int64_t)7; i < n; i++) {
            const int64_t s = sbit + i, d = dbit + i;
            const unsigned b = (src[s >> 3] >> (s & 7)) & 1u;
            dst[d >> 3] = (uint8_t)((dst[d >> 3] & ~(1u << (d & 7))) | (b << (d & 7)));
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t s = sbit + i, d = dbit + i;
        const unsigned b = (src[s >> 3] >> (s & 7)) & 1u;
        dst[d >> 3] = (uint8_t)((dst[d >> 3] & ~(1u << (d & 7))) | (b << (d & 7)));
    }
}

static void mask_range(int64_t start, int64_t n, uint64_t seed, uint32_t threshold,
                       uint8_t *dst, int64_t dst_bit);

void fd_dropout_mask_range(int64_t start, int64_t n, uint64_t seed, uint32_t threshold,
                           uint8_t *dst, int64_t dst_bit) {
    fd_init();
    if (n <= 0 || start < 0) return;
    if (start == 0 && (dst_bit & 7) == 0 && (n & 7) == 0) {
        fd_dropout_mask(n, seed, threshold, dst + dst_bit / 8);
        return;
    }
    const unsigned fp = fd_fp_enter();
    mask_range(start, n, seed, threshold, dst, dst_bit);
    fd_fp_exit(fp);
}

static void mask_range(int64_t start, int64_t n, uint64_t seed, uint32_t threshold,
                       uint8_t *dst, int64_t dst_bit) {
    const fd_kernel_table *kt = fd_kt;
    uint8_t tmp[FD_DROPOUT_BLOCK / 8];
    const int64_t b_first = start / FD_DROPOUT_BLOCK;
    const int64_t b_last = (start + n - 1) / FD_DROPOUT_BLOCK;
    for (int64_t b = b_first; b <= b_last; b++) {
        const int64_t off = b * FD_DROPOUT_BLOCK;
        /* the kernel writes block b's bits at mask + off/8: hand it a base that puts them
         * in tmp (the element count only bounds the block's length) */
        kt->dropout_blocks(off + FD_DROPOUT_BLOCK, b, b + 1, NULL, NULL, seed, threshold, 1.0f,
                           (uint8_t *)((uintptr_t)tmp - (uintptr_t)(off / 8)));
        const int64_t lo = start > off ? start : off;
        const int64_t hi = start + n < off + FD_DROPOUT_BLOCK ? start + n : off + FD_DROPOUT_BLOCK;
        bitcopy(dst, dst_bit + (lo - start), tmp, lo - off, hi - lo);
    }
}
