// wsdscope kernels: RMSNorm over the last dim, y = x / sqrt(mean(x^2) + eps) * w, forward
// and backward, f32 and bf16 (statistics in f32). One block per row; dw is reduced in
// two deterministic stages (per row chunk, then over chunks) instead of atomics.
#include "common.cuh"

template <typename T>
__device__ void rms_norm_fwd(const T* x, const T* w, T* y, float* rstd, int h, float eps) {
    const size_t row = blockIdx.x;
    const T* xr = x + row * h;
    T* yr = y + row * h;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < h; j += blockDim.x) {
        const float v = to_f32(xr[j]);
        ss += v * v;
    }
    const float r = rsqrtf(block_sum(ss) / h + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    for (int j = threadIdx.x; j < h; j += blockDim.x)
        yr[j] = from_f32<T>(to_f32(xr[j]) * r * to_f32(w[j]));
}

// dx = r * (g - x * r^2 * <g, x> / h) with g = dy * w; r from the forward pass.
template <typename T>
__device__ void rms_norm_bwd_dx(const T* x, const T* w, const T* dy, const float* rstd, T* dx, int h) {
    const size_t row = blockIdx.x;
    const T* xr = x + row * h;
    const T* dyr = dy + row * h;
    const float r = rstd[row];
    float s = 0.0f;
    for (int j = threadIdx.x; j < h; j += blockDim.x) s += to_f32(dyr[j]) * to_f32(w[j]) * to_f32(xr[j]);
    const float c = r * r * block_sum(s) / h;
    for (int j = threadIdx.x; j < h; j += blockDim.x) {
        const float g = to_f32(dyr[j]) * to_f32(w[j]);
        dx[row * h + j] = from_f32<T>(r * (g - to_f32(xr[j]) * c));
    }
}

// partial[chunk][j] = sum over the chunk's rows of dy * x * r. Grid (ceil(h / blockDim.x), chunks).
template <typename T>
__device__ void rms_norm_bwd_dw_partial(const T* x, const T* dy, const float* rstd, float* partial, int n, int h, int rows_per_chunk) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= h) return;
    const int r0 = blockIdx.y * rows_per_chunk;
    const int r1 = min(n, r0 + rows_per_chunk);
    float acc = 0.0f;
    for (int r = r0; r < r1; ++r) acc += to_f32(dy[(size_t)r * h + j]) * to_f32(x[(size_t)r * h + j]) * rstd[r];
    partial[(size_t)blockIdx.y * h + j] = acc;
}

extern "C" __global__ void rms_norm_fwd_f32(const float* x, const float* w, float* y, float* rstd, int h, float eps) {
    rms_norm_fwd<float>(x, w, y, rstd, h, eps);
}
extern "C" __global__ void rms_norm_fwd_bf16(const bf16* x, const bf16* w, bf16* y, float* rstd, int h, float eps) {
    rms_norm_fwd<bf16>(x, w, y, rstd, h, eps);
}
extern "C" __global__ void rms_norm_bwd_dx_f32(const float* x, const float* w, const float* dy, const float* rstd, float* dx, int h) {
    rms_norm_bwd_dx<float>(x, w, dy, rstd, dx, h);
}
extern "C" __global__ void rms_norm_bwd_dx_bf16(const bf16* x, const bf16* w, const bf16* dy, const float* rstd, bf16* dx, int h) {
    rms_norm_bwd_dx<bf16>(x, w, dy, rstd, dx, h);
}
extern "C" __global__ void rms_norm_bwd_dw_partial_f32(const float* x, const float* dy, const float* rstd, float* partial, int n, int h, int rows_per_chunk) {
    rms_norm_bwd_dw_partial<float>(x, dy, rstd, partial, n, h, rows_per_chunk);
}
extern "C" __global__ void rms_norm_bwd_dw_partial_bf16(const bf16* x, const bf16* dy, const float* rstd, float* partial, int n, int h, int rows_per_chunk) {
    rms_norm_bwd_dw_partial<bf16>(x, dy, rstd, partial, n, h, rows_per_chunk);
}

// dw[j] = sum over chunks, in chunk order. One thread per column.
template <typename T>
__device__ void rms_norm_bwd_dw_finish(const float* partial, T* dw, int chunks, int h) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= h) return;
    float acc = 0.0f;
    for (int c = 0; c < chunks; ++c) acc += partial[(size_t)c * h + j];
    dw[j] = from_f32<T>(acc);
}
extern "C" __global__ void rms_norm_bwd_dw_finish_f32(const float* partial, float* dw, int chunks, int h) {
    rms_norm_bwd_dw_finish<float>(partial, dw, chunks, h);
}
extern "C" __global__ void rms_norm_bwd_dw_finish_bf16(const float* partial, bf16* dw, int chunks, int h) {
    rms_norm_bwd_dw_finish<bf16>(partial, dw, chunks, h);
}
