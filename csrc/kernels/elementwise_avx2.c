/* elementwise kernels, avx2 path (see elementwise_impl.h) */
#define FD_SFX avx2
#include "elementwise_impl.h"
