/* activation and binary cross-entropy kernels, ref path (see act_impl.h) */
#define FD_SFX ref
#include "act_impl.h"
