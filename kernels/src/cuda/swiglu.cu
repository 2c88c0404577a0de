// wsdscope kernels: SwiGLU activation y = silu(gate) * up, forward and backward, f32 and
// bf16 (math in f32). Grid-stride elementwise loops.
#include "common.cuh"

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T>
__device__ void swiglu_fwd(const T* gate, const T* up, T* y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = to_f32(gate[i]);
        y[i] = from_f32<T>(g * sigmoid(g) * to_f32(up[i]));
    }
}

// dgate = dy * up * s * (1 + g * (1 - s)), dup = dy * g * s, s = sigmoid(g).
template <typename T>
__device__ void swiglu_bwd(const T* gate, const T* up, const T* dy, T* dgate, T* dup, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = to_f32(gate[i]), u = to_f32(up[i]), d = to_f32(dy[i]);
        const float s = sigmoid(g);
        dup[i] = from_f32<T>(d * g * s);
        dgate[i] = from_f32<T>(d * u * s * (1.0f + g * (1.0f - s)));
    }
}

extern "C" __global__ void swiglu_fwd_f32(const float* gate, const float* up, float* y, size_t n) {
    swiglu_fwd<float>(gate, up, y, n);
}
extern "C" __global__ void swiglu_fwd_bf16(const bf16* gate, const bf16* up, bf16* y, size_t n) {
    swiglu_fwd<bf16>(gate, up, y, n);
}
extern "C" __global__ void swiglu_bwd_f32(const float* gate, const float* up, const float* dy, float* dgate, float* dup, size_t n) {
    swiglu_bwd<float>(gate, up, dy, dgate, dup, n);
}
extern "C" __global__ void swiglu_bwd_bf16(const bf16* gate, const bf16* up, const bf16* dy, bf16* dgate, bf16* dup, size_t n) {
    swiglu_bwd<bf16>(gate, up, dy, dgate, dup, n);
}
