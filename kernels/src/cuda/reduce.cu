// wsdscope kernels: sums of squares, dot products and <g, a - b> accumulated in f64, one
// pass per tensor: each block writes a partial (fixed grid, so the sum order is fixed) and
// reduce_finish adds the partials in block order. Inputs f32 or bf16.
#include "common.cuh"

template <typename T>
__device__ void sum_sq(const T* x, size_t n, double* partial) {
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const double v = (double)to_f32(x[i]);
        acc += v * v;
    }
    acc = block_sum_f64(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <typename T>
__device__ void dot(const T* a, const T* b, size_t n, double* partial) {
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        acc += (double)to_f32(a[i]) * (double)to_f32(b[i]);
    acc = block_sum_f64(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// <g, a - b> with each difference formed in f64 (a small update between two large
// parameter copies loses nothing).
template <typename T>
__device__ void dot_diff(const T* g, const T* a, const T* b, size_t n, double* partial) {
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        acc += (double)to_f32(g[i]) * ((double)to_f32(a[i]) - (double)to_f32(b[i]));
    acc = block_sum_f64(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

extern "C" __global__ void sum_sq_f32(const float* x, size_t n, double* partial) { sum_sq<float>(x, n, partial); }
extern "C" __global__ void sum_sq_bf16(const bf16* x, size_t n, double* partial) { sum_sq<bf16>(x, n, partial); }
extern "C" __global__ void dot_f32(const float* a, const float* b, size_t n, double* partial) { dot<float>(a, b, n, partial); }
extern "C" __global__ void dot_bf16(const bf16* a, const bf16* b, size_t n, double* partial) { dot<bf16>(a, b, n, partial); }
extern "C" __global__ void dot_diff_f32(const float* g, const float* a, const float* b, size_t n, double* partial) { dot_diff<float>(g, a, b, n, partial); }
extern "C" __global__ void dot_diff_bf16(const bf16* g, const bf16* a, const bf16* b, size_t n, double* partial) { dot_diff<bf16>(g, a, b, n, partial); }

// out[0] = sum of `blocks` partials in block order; launch with one thread.
extern "C" __global__ void reduce_finish(const double* partial, int blocks, double* out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double acc = 0.0;
    for (int i = 0; i < blocks; ++i) acc += partial[i];
    out[0] = acc;
}
