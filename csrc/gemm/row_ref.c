/* one-row GEMM kernel, ref path (see row_impl.h) */
#define FD_SFX ref
#include "row_impl.h"
