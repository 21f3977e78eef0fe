/* optimizer kernels, avx2 path (see optim_impl.h) */
#define FD_SFX avx2
#include "optim_impl.h"
