/* activation and binary cross-entropy kernels, avx512 path (see act_impl.h) */
#define FD_SFX avx512
#include "act_impl.h"
