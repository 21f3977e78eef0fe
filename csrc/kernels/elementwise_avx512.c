/* elementwise kernels, avx512 path (see elementwise_impl.h) */
#define FD_SFX avx512
#include "elementwise_impl.h"
