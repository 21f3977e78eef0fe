/*
 * rng.h — fastdrop's random numbers: splitmix64 seeding, xoshiro256+ streams.
 *
 * The dropout contract (fastdrop.h, "dropout") in one place:
 *   key        = splitmix64_mix(seed)
 *   stream s   : w[i] = splitmix64_mix(key + (4*s + i + 1) * FD_GOLDEN), i = 0..3
 *                (the (4s+1)..(4s+4)-th outputs of a splitmix64 generator started at key)
 *   draw       : xoshiro256+ output = w0 + w3, then the state advances
 *   decision   : u = output >> 32 (never the low bits: they fail BigCrush rank tests);
 *                the element is dropped iff u < threshold (a full 32-bit threshold).
 * Block b of a tensor owns streams b*FD_DROPOUT_LANES .. b*FD_DROPOUT_LANES + LANES-1;
 * element j of the block is drawn by lane j % LANES at step j / LANES.
 *
 * Everything here is static inline: each ISA file compiles it with its own flags.
 * fastdrop/_reference_dropout.py is the NumPy mirror of this file; keep them in step.
 */
#ifndef FD_RNG_H
#define FD_RNG_H

#include <stdint.h>

#include "fastdrop.h"

#define FD_GOLDEN UINT64_C(0x9E3779B97F4A7C15)

typedef struct {
    uint64_t s[4];
} fd_rng_state;

/* The splitmix64 output function (Steele, Lea & Flood; constants of Vigna's splitmix64.c). */
static inline uint64_t fd_splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static inline uint64_t fd_rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* The per-tensor key: every stream of a dropout call derives from it. */
static inline uint64_t fd_rng_key(uint64_t seed) { return fd_splitmix64_mix(seed); }

/* State of stream `stream` under `key` (= fd_rng_key(seed)). */
static inline void fd_rng_seed_stream(fd_rng_state *st, uint64_t key, uint64_t stream) {
    for (int i = 0; i < 4; i++)
        st->s[i] = fd_splitmix64_mix(key + (4 * stream + (uint64_t)i + 1) * FD_GOLDEN);
}

/* xoshiro256+ (Blackman & Vigna): returns w0 + w3, then advances the state.
 * Use only the high bits of the result. */
static inline uint64_t fd_rng_next(fd_rng_state *st) {
    uint64_t *s = st->s;
    const uint64_t result = s[0] + s[3];
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = fd_rotl64(s[3], 45);
    return result;
}

/* The FD_DROPOUT_LANES stream states of dropout block `block`, word-major (structure of
 * arrays): w[i][lane] = word i of stream block*LANES + lane.  SIMD kernels load rows. */
static inline void fd_rng_seed_block(uint64_t w[4][FD_DROPOUT_LANES], uint64_t key,
                                     int64_t block) {
    const uint64_t s0 = (uint64_t)block * FD_DROPOUT_LANES;
    for (int i = 0; i < 4; i++)
        for (int lane = 0; lane < FD_DROPOUT_LANES; lane++)
            w[i][lane] = fd_splitmix64_mix(key + (4 * (s0 + (uint64_t)lane) + (uint64_t)i + 1) *
                                                     FD_GOLDEN);
}

#endif
