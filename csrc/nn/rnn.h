/* rnn.h — recurrent layers (SimpleRNN, LSTM, GRU) and Embedding: forward and backward
 * through time, the whole time loop in C.
 *
 * Layout (Keras): x (m, T, F) batch-major; kernel W (F, G·u), recurrent kernel U (u, G·u),
 * gates in Keras order (LSTM i, f, c, o: G = 4; GRU z, r, h: G = 3; SimpleRNN G = 1);
 * bias (G·u,) — GRU reset_after: (2, 3u) = input bias, recurrent bias.
 *
 * Workspace (fd_rnn_workspace_floats) is time-major: step t's rows are [t·m, (t+1)·m).
 *   - the time loop runs per chunk of rows (chunks depend on m only), chunks in parallel
 *     (a sample's recurrence never touches another sample);
 *   - per step and gate one pass of the GEMM micro-kernel: [x_t | 1 | h̃_{t-1}] times the
 *     packed [W_g; b_g; U_g] (packed once per call) gives the gate pre-activations: the
 *     input projection is fused into the recurrent product.  (A separate projection GEMM
 *     over all T·m rows was measured first: with K = F = 28 it is bound by writing and
 *     re-reading the T·m × 4u result, ~70 GFLOP/s, a quarter of the forward time.)
 *     Then one fused per-ISA gate kernel (sigmoid, tanh, cell update, output);
 *   - backward through time with the gate values cached by forward; per step dh_{t-1}
 *     = dz_t·Uᵀ (micro-kernel, Uᵀ packed once; LSTM/SimpleRNN without recurrent masks in
 *     one K = G·u pass).  LSTM/SimpleRNN: the same step adds [x̃_t | 1 | h̃_{t-1}]ᵀ·dz_t
 *     to the chunk's [dW; db; dU] (operands packed from rows still in cache; one product
 *     per gate with masks per gate), the chunks' sums added in chunk order after the loop
 *     (dz is never re-read from memory).  GRU: dz_t stays in the workspace, and after the
 *     loop dW = Xᵀ·DZ and dU = H̃ᵀ·DZ are single GEMMs over all T·m rows (threads split
 *     the output, never the sum), db their column sums.  dx = DZ·Wᵀ.  Every order of
 *     summation depends on m only: bitwise identical for any thread count.
 * Dropout masks are bit-packed (numpy.packbits little order), one (m × F) mask per input
 * part and one (m × u) per recurrent part, reused at every step (variational dropout).
 * seq: (m, T) uint8, 1 = real step, 0 = masked (state and output carry over), or NULL. */
#ifndef FD_NN_RNN_H
#define FD_NN_RNN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { FD_RNN_SIMPLE = 0, FD_RNN_LSTM = 1, FD_RNN_GRU = 2 };
enum { FD_RNN_ACT_LINEAR = 0, FD_RNN_ACT_TANH = 1, FD_RNN_ACT_SIGMOID = 2, FD_RNN_ACT_RELU = 3,
       FD_RNN_ACT_HARD_SIGMOID = 4,
       /* FD_RNN_ACT_FAMILY + an FD_ACT_* code (kernels/act.h) whose backward reads the
        * output y (or nothing): any such activation through the activation kernels, with
        * Keras's default parameters (leaky_relu 0.2, elu / celu alpha 1). */
       FD_RNN_ACT_FAMILY = 16 };

typedef struct {
    int cell;             /* FD_RNN_*                                                   */
    int act, rec_act;     /* activation, recurrent_activation (FD_RNN_ACT_*)            */
    int reset_after;      /* GRU                                                        */
    int go_backwards;
    int return_sequences;
    int64_t m, T, F, u;
    int n_in_masks;       /* 0 (no input dropout), 1 (shared by all gates) or G         */
    int n_rec_masks;      /* 0 or G (Keras 3: per gate when recurrent_dropout > 0)      */
    float in_scale, rec_scale;       /* 1/(1-rate)                                     */
    const uint8_t *in_mask;          /* n_in_masks masks, mask k at in_mask + k*in_mask_stride */
    int64_t in_mask_stride;          /* bytes                                          */
    const uint8_t *rec_mask;
    int64_t rec_mask_stride;
    const uint8_t *seq;              /* (m, T) or NULL                                 */
} fd_rnn_desc;

/* floats of workspace the call needs (monotonic in m) */
int64_t fd_rnn_workspace_floats(const fd_rnn_desc *d);

/* y: (m, T, u) if return_sequences else (m, u).  bias may be NULL (use_bias=False).
 * Returns 0 (it never allocates beyond GEMM's packing buffers). */
int fd_rnn_forward(const fd_rnn_desc *d, const float *x, const float *W, const float *U,
                   const float *bias, float *y, float *ws);

/* After fd_rnn_forward with the same desc and ws.  dy like y.  Overwrites dW, dU, db
 * (db may be NULL); dx (m, T, F) may be NULL (not needed).  ws is consumed. */
int fd_rnn_backward(const fd_rnn_desc *d, const float *W, const float *U, const float *dy,
                    float *dx, float *dW, float *dU, float *db, float *ws);

/* Embedding: out[i] = E[ids[i]] (ids given as floats, validated integral in [0, V)). */
void fd_embedding_forward(int64_t n, int64_t dim, const float *ids, const float *E,
                          float *out);
/* dE (V × dim) = scatter-add of dy rows at ids, in row order (deterministic). */
void fd_embedding_backward(int64_t n, int64_t dim, int64_t V, const float *ids,
                           const float *dy, float *dE);

/* The per-ISA row kernels (rnn_gates_impl.h), exposed for tests of the gate math.
 * act_rows: y = act(x) over n floats. */
void fd_rnn_act(int kind, int64_t n, float *y, const float *x);

#ifdef __cplusplus
}
#endif
#endif
