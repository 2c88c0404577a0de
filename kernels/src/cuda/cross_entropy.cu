// wsdscope kernels: mean cross-entropy of logits (N, V) against u32 targets (N). Forward
// keeps only the per-row log-sum-exp (N floats); backward recomputes each row's softmax.
// One block per row; the mean is a single-block f64 sum in row order (deterministic).
// Logits f32 or bf16; loss, lse and the upstream gradient in f32.
#include "common.cuh"

template <typename T>
__device__ void ce_fwd_rows(const T* logits, const u32* targets, float* lse, float* row_loss, int v) {
    const size_t row = blockIdx.x;
    const T* x = logits + row * v;
    float m = -WSD_INF;
    for (int j = threadIdx.x; j < v; j += blockDim.x) m = fmaxf(m, to_f32(x[j]));
    m = block_max(m);
    float s = 0.0f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) s += expf(to_f32(x[j]) - m);
    s = block_sum(s);
    if (threadIdx.x == 0) {
        const float l = m + logf(s);
        const u32 t = targets[row];
        lse[row] = l;
        // A target out of range makes the loss NaN instead of reading past the row.
        row_loss[row] = t < (u32)v ? l - to_f32(x[t]) : WSD_NAN;
    }
}

extern "C" __global__ void ce_fwd_rows_f32(const float* logits, const u32* targets, float* lse, float* row_loss, int v) {
    ce_fwd_rows<float>(logits, targets, lse, row_loss, v);
}
extern "C" __global__ void ce_fwd_rows_bf16(const bf16* logits, const u32* targets, float* lse, float* row_loss, int v) {
    ce_fwd_rows<bf16>(logits, targets, lse, row_loss, v);
}

// loss = mean(row_loss); launch with one block.
extern "C" __global__ void ce_mean(const float* row_loss, float* loss, int n) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += (double)row_loss[i];
    acc = block_sum_f64(acc);
    if (threadIdx.x == 0) *loss = (float)(acc / n);
}

// dlogits = (softmax - onehot) * g / N, g = *upstream (read on device: no host sync).
template <typename T>
__device__ void ce_bwd(const T* logits, const u32* targets, const float* lse, const float* upstream, T* dlogits, int n, int v) {
    const size_t row = blockIdx.x;
    const float coef = *upstream / n;
    const float l = lse[row];
    const u32 t = targets[row];
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        const float p = expf(to_f32(logits[row * v + j]) - l);
        dlogits[row * v + j] = from_f32<T>((p - (j == (int)t ? 1.0f : 0.0f)) * coef);
    }
}

extern "C" __global__ void ce_bwd_f32(const float* logits, const u32* targets, const float* lse, const float* upstream, float* dlogits, int n, int v) {
    ce_bwd<float>(logits, targets, lse, upstream, dlogits, n, v);
}
extern "C" __global__ void ce_bwd_bf16(const bf16* logits, const u32* targets, const float* lse, const float* upstream, bf16* dlogits, int n, int v) {
    ce_bwd<bf16>(logits, targets, lse, upstream, dlogits, n, v);
}
