/* recurrent gate kernels, avx512 path (see rnn_gates_impl.h) */
#ifdef FD_HAVE_AVX512
#define FD_SFX avx512
#include "rnn_gates_impl.h"
#endif
