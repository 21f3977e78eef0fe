/* ukr_amx_32x32.c — the AMX-BF16 bf16 GEMM micro-kernel (tdpbf16ps): a 32 × 32 block of C
 * in four 16 × 16 fp32 tiles, two A tiles (16 rows × 32 k, the rows layout) and two B
 * tiles (16 k pairs × 16 columns, the pairs/VNNI layout) per 32-wide step of k.
 * Compiled with -mamx-tile -mamx-bf16 on top of the AVX512-BF16 flags; used only after
 * bf16.c obtained the Linux tile-data permission. */
#include "bf16.h"

#ifdef FD_HAVE_AMX /* setup.py defines it when it compiles this file with its flags */

#include <immintrin.h>

#define MR 32
#define NR 32

typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} fd_tilecfg;

/* Every tile 16 rows × 64 bytes (palette 1).  A static object: GCC 12 does not see
 * ldtilecfg read a local struct and drops its stores (a garbage config faults). */
static const fd_tilecfg tile_cfg __attribute__((aligned(64))) = {
    1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

static int enter(void)
{
    _tile_loadconfig(&tile_cfg);
    return 0;
}

static void leave(void) { _tile_release(); }

static void ukr_32x32(int64_t kcp, float alpha, const void *ap_, const void *bp_, float beta,
                      float *c, int64_t rs_c, int64_t mr, int64_t nr)
{
    const uint16_t *ap = ap_;
    const uint32_t *bp = bp_;
    const int64_t sa = kcp * 2; /* bytes between A rows */
    /* a whole tile with alpha 1 and beta 0 or 1 (every Dense GEMM): C itself is the
     * accumulator, loaded into the tiles (beta 1) and stored from them */
    const int direct = mr == MR && nr == NR && alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
    const int64_t sc = rs_c * 4;
    if (direct && beta == 1.0f) {
        _tile_loadd(0, c, sc);
        _tile_loadd(1, c + 16, sc);
        _tile_loadd(2, c + 16 * rs_c, sc);
        _tile_loadd(3, c + 16 * rs_c + 16, sc);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int64_t kb = 0; kb < kcp / 32; kb++) {
        _tile_loadd(4, ap + kb * 32, sa);
        _tile_loadd(5, ap + 16 * kcp + kb * 32, sa);
        _tile_loadd(6, bp + kb * 16 * NR, NR * 4);
        _tile_loadd(7, bp + kb * 16 * NR + 16, NR * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    if (direct) {
        _tile_stored(0, c, sc);
        _tile_stored(1, c + 16, sc);
        _tile_stored(2, c + 16 * rs_c, sc);
        _tile_stored(3, c + 16 * rs_c + 16, sc);
        return;
    }
    float t[MR * NR] __attribute__((aligned(64)));
    _tile_stored(0, t, NR * 4);
    _tile_stored(1, t + 16, NR * 4);
    _tile_stored(2, t + 16 * NR, NR * 4);
    _tile_stored(3, t + 16 * NR + 16, NR * 4);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1u);
    for (int64_t i = 0; i < mr; i++) {
        float *ci = c + i * rs_c;
        __m512 z0 = _mm512_mul_ps(va, _mm512_load_ps(t + i * NR));
        __m512 z1 = _mm512_mul_ps(va, _mm512_load_ps(t + i * NR + 16));
        if (beta != 0.0f) {
            z0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), z0);
            z1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), z1);
        }
        _mm512_mask_storeu_ps(ci, m0, z0);
        _mm512_mask_storeu_ps(ci + 16, m1, z1);
    }
}

const fd_bf16_kernel fd_bf16_kernel_amx = {
    "amx", MR, NR, 32, 1, 320, 512, 1024, ukr_32x32, fd_bf16_cvt_avx512bf16, enter, leave};

#endif /* FD_HAVE_AMX */
