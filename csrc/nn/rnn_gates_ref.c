/* recurrent gate kernels, portable path (see rnn_gates_impl.h) */
#define FD_SFX ref
#include "rnn_gates_impl.h"
