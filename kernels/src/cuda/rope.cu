// wsdscope kernels: half-split rotary embedding for x (B, h, T, D) with cos/sin tables
// (T, D): y = x*cos + rotate_half(x)*sin, rotate_half(x) = [-x2, x1]. The backward pass
// applies the transpose, dx = dy*cos + [(dy*sin)2, -(dy*sin)1]. One thread per pair
// (j, j + D/2), f32 and bf16.
#include "common.cuh"

template <typename T>
__device__ void rope_apply(const T* x, const T* cos, const T* sin, T* y, size_t pairs, int t, int d, bool inverse) {
    const int half = d / 2;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < pairs; p += (size_t)gridDim.x * blockDim.x) {
        const size_t row = p / half;  // (b, h, t) row
        const int j = (int)(p % half);
        const int pos = (int)(row % t);
        const size_t i1 = row * d + j, i2 = i1 + half;
        const float x1 = to_f32(x[i1]), x2 = to_f32(x[i2]);
        const float c1 = to_f32(cos[pos * d + j]), c2 = to_f32(cos[pos * d + j + half]);
        const float s1 = to_f32(sin[pos * d + j]), s2 = to_f32(sin[pos * d + j + half]);
        if (inverse) {
            y[i1] = from_f32<T>(x1 * c1 + x2 * s2);
            y[i2] = from_f32<T>(x2 * c2 - x1 * s1);
        } else {
            y[i1] = from_f32<T>(x1 * c1 - x2 * s1);
            y[i2] = from_f32<T>(x2 * c2 + x1 * s2);
        }
    }
}

extern "C" __global__ void rope_fwd_f32(const float* x, const float* cos, const float* sin, float* y, size_t pairs, int t, int d) {
    rope_apply<float>(x, cos, sin, y, pairs, t, d, false);
}
extern "C" __global__ void rope_fwd_bf16(const bf16* x, const bf16* cos, const bf16* sin, bf16* y, size_t pairs, int t, int d) {
    rope_apply<bf16>(x, cos, sin, y, pairs, t, d, false);
}
extern "C" __global__ void rope_bwd_f32(const float* dy, const float* cos, const float* sin, float* dx, size_t pairs, int t, int d) {
    rope_apply<float>(dy, cos, sin, dx, pairs, t, d, true);
}
extern "C" __global__ void rope_bwd_bf16(const bf16* dy, const bf16* cos, const bf16* sin, bf16* dx, size_t pairs, int t, int d) {
    rope_apply<bf16>(dy, cos, sin, dx, pairs, t, d, true);
}
