// wsdscope kernels: helpers shared by every CUDA source in this directory (element
// conversion for f32/bf16, warp and block reductions). Included by name; the Rust side
// hands it to NVRTC as an in-memory header.
//
// Self-contained: no CUDA headers, so NVRTC compiles the kernels on any machine with just
// the NVRTC library (no toolkit include directory needed at run time).
#pragma once

#define WSD_FULL_MASK 0xffffffffu
// NVRTC has no <math.h> INFINITY / NAN.
#define WSD_INF __int_as_float(0x7f800000)
#define WSD_NAN __int_as_float(0x7fc00000)

typedef unsigned int u32;

// bfloat16 as stored by candle (and the `half` crate): the high 16 bits of an f32. Only
// conversions are needed: all arithmetic is in f32.
struct __align__(2) bf16 {
    unsigned short bits;
};

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __uint_as_float(((u32)x.bits) << 16); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
// Round to nearest, ties to even (as `half::bf16::from_f32`); NaN stays a quiet NaN.
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) {
    u32 u = __float_as_uint(x);
    bf16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.bits = (unsigned short)((u >> 16) | 0x40u);
        return r;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    r.bits = (unsigned short)(u >> 16);
    return r;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(WSD_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(WSD_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(WSD_FULL_MASK, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float s[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) s[wid] = v;
    __syncthreads();
    v = (threadIdx.x < nw) ? s[threadIdx.x] : 0.0f;
    if (wid == 0) v = warp_sum(v);
    if (threadIdx.x == 0) s[0] = v;
    __syncthreads();
    const float r = s[0];
    __syncthreads();  // s is reused by the next call
    return r;
}

__device__ __forceinline__ double block_sum_f64(double v) {
    __shared__ double s[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_f64(v);
    if (lane == 0) s[wid] = v;
    __syncthreads();
    v = (threadIdx.x < nw) ? s[threadIdx.x] : 0.0;
    if (wid == 0) v = warp_sum_f64(v);
    if (threadIdx.x == 0) s[0] = v;
    __syncthreads();
    const double r = s[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ float block_max(float v) {
    __shared__ float s[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) s[wid] = v;
    __syncthreads();
    v = (threadIdx.x < nw) ? s[threadIdx.x] : -WSD_INF;
    if (wid == 0) v = warp_max(v);
    if (threadIdx.x == 0) s[0] = v;
    __syncthreads();
    const float r = s[0];
    __syncthreads();
    return r;
}
