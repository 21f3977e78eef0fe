/* activation and binary cross-entropy kernels, avx2 path (see act_impl.h) */
#define FD_SFX avx2
#include "act_impl.h"
