"""Seeding for fastdrop models (like ``keras.utils.set_random_seed``).

Every stream of randomness in a model — weight initialisation, shuffling, dropout masks —
is derived from one 64-bit model seed by mixing in fixed integer keys (splitmix64 finaliser),
so a run with a given seed is reproducible and no two layers or steps share a stream.
"""
import os
import threading

_MASK64 = (1 << 64) - 1
_lock = threading.Lock()
_global_seed = None
_counter = 0

# Key spaces mixed into the model seed.
KEY_INIT = 1
KEY_SHUFFLE = 2
KEY_DROPOUT = 3
KEY_SPLIT = 4
KEY_MC = 5
KEY_DROPCONNECT = 6


def mix64(z):
    """splitmix64 finaliser: a bijective 64-bit mix."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive(seed, *keys):
    """A 64-bit seed derived from ``seed`` and integer keys (order matters)."""
    z = mix64(int(seed) & _MASK64)
    for k in keys:
        z = mix64(z ^ (int(k) & _MASK64))
    return z


def set_seed(seed):
    """Seed everything fastdrop draws: models built afterwards without an explicit seed
    take reproducible seeds from this one (the n-th model gets the n-th derived seed).
    Also seeds Python's ``random`` and NumPy's legacy global generator, as Keras does."""
    import random
    import numbers

    import numpy as np

    global _global_seed, _counter
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    with _lock:
        _global_seed = int(seed)
        _counter = 0
    random.seed(int(seed))
    np.random.seed(int(seed) % (2**32))


def next_seed():
    """A fresh model seed: derived from the global seed if set, else from the OS."""
    global _counter
    with _lock:
        if _global_seed is None:
            return int.from_bytes(os.urandom(8), "little")
        _counter += 1
        return derive(_global_seed, 0xC0FFEE, _counter)
