/* optimizer kernels, ref path (see optim_impl.h) */
#define FD_SFX ref
#include "optim_impl.h"
