/* recurrent gate kernels, avx2 path (see rnn_gates_impl.h) */
#ifdef FD_HAVE_AVX2
#define FD_SFX avx2
#include "rnn_gates_impl.h"
#endif
