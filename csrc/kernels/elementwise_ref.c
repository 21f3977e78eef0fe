/* elementwise kernels, ref path (see elementwise_impl.h) */
#define FD_SFX ref
#include "elementwise_impl.h"
