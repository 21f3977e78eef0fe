/* optimizer kernels, avx512 path (see optim_impl.h) */
#define FD_SFX avx512
#include "optim_impl.h"
