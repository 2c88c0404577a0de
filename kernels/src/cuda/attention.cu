// wsdscope kernels: causal grouped-query flash attention. q (B, H, T, D), k and v
// (B, Hkv, T, D), query head h reads KV head h / (H / Hkv); D <= 128. f32 and bf16
// inputs, f32 math; lse and delta (B, H, T) in f32.
//
// Forward: one warp per query row, ATT_WARPS rows per block; key tiles of ATT_BC rows are
// staged in shared memory (rows padded by one float, so lanes reading different rows hit
// different banks) and folded in with an online softmax; lane l scores key j0 + l. Only a
// ATT_WARPS x ATT_BC tile of the scores exists at a time; the per-row log-sum-exp is saved.
// Backward (FlashAttention-2 recurrence, no atomics, deterministic):
//   attn_bwd_delta: delta_i = <dO_i, O_i>;
//   attn_bwd_dq:    warp per query row, over key tiles: dq_i = scale * sum_j dS_ij k_j;
//   attn_bwd_dkdv:  warp per key row, over the group's query heads and query tiles:
//                   dv_j = sum_i P_ij dO_i, dk_j = scale * sum_i dS_ij q_i;
// with P_ij = exp(scale * q_i.k_j - lse_i), dS_ij = P_ij (dO_i.v_j - delta_i).
#include "common.cuh"

#define ATT_WARPS 4
#define ATT_BC 32
#define ATT_DMAX 128
#define ATT_PAD (ATT_DMAX + 1)
#define ATT_DPL (ATT_DMAX / 32)  // head dims per lane

struct AttnShape {
    int h, hkv, t, d;
    float scale;
};

// Rows [r0, r0 + ATT_BC) of a (T, D) head into a padded shared tile (zeros past T).
template <typename T>
__device__ __forceinline__ void load_tile(float (*tile)[ATT_PAD], const T* head, int r0, int t, int d) {
    for (int idx = threadIdx.x; idx < ATT_BC * d; idx += blockDim.x) {
        const int r = idx / d, c = idx % d;
        tile[r][c] = (r0 + r < t) ? to_f32(head[(size_t)(r0 + r) * d + c]) : 0.0f;
    }
}

// One (D) row into a shared vector (by one warp).
template <typename T>
__device__ __forceinline__ void load_row(float* dst, const T* src, int d, int lane) {
    for (int c = lane; c < d; c += 32) dst[c] = to_f32(src[c]);
}

__device__ __forceinline__ float dot_sh(const float* a, const float* b, int d) {
    float s = 0.0f;
    for (int c = 0; c < d; ++c) s += a[c] * b[c];
    return s;
}

template <typename T>
__device__ void attn_fwd(const T* q, const T* k, const T* v, T* out, float* lse, AttnShape s) {
    __shared__ float ks[ATT_BC][ATT_PAD];
    __shared__ float vs[ATT_BC][ATT_PAD];
    __shared__ float qs[ATT_WARPS][ATT_DMAX];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int bh = blockIdx.y, b = bh / s.h, hq = bh % s.h;
    const int g = hq / (s.h / s.hkv);
    const size_t head = (size_t)s.t * s.d;
    const T* qh = q + bh * head;
    const T* kh = k + ((size_t)b * s.hkv + g) * head;
    const T* vh = v + ((size_t)b * s.hkv + g) * head;
    const int i0 = blockIdx.x * ATT_WARPS, i = i0 + w;
    const bool row = i < s.t;
    if (row) load_row(qs[w], qh + (size_t)i * s.d, s.d, lane);
    float o[ATT_DPL];
    for (int c = 0; c < ATT_DPL; ++c) o[c] = 0.0f;
    float m = -WSD_INF, l = 0.0f;
    const int last = min(s.t - 1, i0 + ATT_WARPS - 1);  // last key any row of the block sees
    for (int j0 = 0; j0 <= last; j0 += ATT_BC) {
        __syncthreads();
        load_tile(ks, kh, j0, s.t, s.d);
        load_tile(vs, vh, j0, s.t, s.d);
        __syncthreads();
        if (!row || j0 > i) continue;
        const int j = j0 + lane;
        const bool vis = j <= i;
        const float sc = vis ? dot_sh(qs[w], ks[lane], s.d) * s.scale : -WSD_INF;
        const float m_new = fmaxf(m, warp_max(sc));
        const float p = vis ? expf(sc - m_new) : 0.0f;
        const float alpha = expf(m - m_new);  // 0 on the first tile (m = -inf)
        l = l * alpha + warp_sum(p);
        for (int c = 0; c < ATT_DPL; ++c) o[c] *= alpha;
        for (int jj = 0; jj < ATT_BC; ++jj) {
            const float pj = __shfl_sync(WSD_FULL_MASK, p, jj);
            for (int c = 0; c < ATT_DPL; ++c) {
                const int dd = lane + 32 * c;
                if (dd < s.d) o[c] += pj * vs[jj][dd];
            }
        }
        m = m_new;
    }
    if (!row) return;
    const float inv = 1.0f / l;
    for (int c = 0; c < ATT_DPL; ++c) {
        const int dd = lane + 32 * c;
        if (dd < s.d) out[bh * head + (size_t)i * s.d + dd] = from_f32<T>(o[c] * inv);
    }
    if (lane == 0) lse[(size_t)bh * s.t + i] = m + logf(l);
}

// delta (B, H, T): one warp per row.
template <typename T>
__device__ void attn_bwd_delta(const T* out, const T* dout, float* delta, size_t rows, int d) {
    const int lane = threadIdx.x & 31;
    const size_t r = blockIdx.x * (size_t)(blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    float acc = 0.0f;
    for (int c = lane; c < d; c += 32) acc += to_f32(out[r * d + c]) * to_f32(dout[r * d + c]);
    acc = warp_sum(acc);
    if (lane == 0) delta[r] = acc;
}

template <typename T>
__device__ void attn_bwd_dq(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta, T* dq, AttnShape s) {
    __shared__ float ks[ATT_BC][ATT_PAD];
    __shared__ float vs[ATT_BC][ATT_PAD];
    __shared__ float qs[ATT_WARPS][ATT_DMAX];
    __shared__ float dos[ATT_WARPS][ATT_DMAX];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int bh = blockIdx.y, b = bh / s.h, hq = bh % s.h;
    const int g = hq / (s.h / s.hkv);
    const size_t head = (size_t)s.t * s.d;
    const T* kh = k + ((size_t)b * s.hkv + g) * head;
    const T* vh = v + ((size_t)b * s.hkv + g) * head;
    const int i0 = blockIdx.x * ATT_WARPS, i = i0 + w;
    const bool row = i < s.t;
    float li = 0.0f, di = 0.0f;
    if (row) {
        load_row(qs[w], q + bh * head + (size_t)i * s.d, s.d, lane);
        load_row(dos[w], dout + bh * head + (size_t)i * s.d, s.d, lane);
        li = lse[(size_t)bh * s.t + i];
        di = delta[(size_t)bh * s.t + i];
    }
    float acc[ATT_DPL];
    for (int c = 0; c < ATT_DPL; ++c) acc[c] = 0.0f;
    const int last = min(s.t - 1, i0 + ATT_WARPS - 1);
    for (int j0 = 0; j0 <= last; j0 += ATT_BC) {
        __syncthreads();
        load_tile(ks, kh, j0, s.t, s.d);
        load_tile(vs, vh, j0, s.t, s.d);
        __syncthreads();
        if (!row || j0 > i) continue;
        const bool vis = j0 + lane <= i;
        const float p = vis ? expf(dot_sh(qs[w], ks[lane], s.d) * s.scale - li) : 0.0f;
        const float dp = vis ? dot_sh(dos[w], vs[lane], s.d) : 0.0f;
        const float ds = p * (dp - di) * s.scale;
        for (int jj = 0; jj < ATT_BC; ++jj) {
            const float dsj = __shfl_sync(WSD_FULL_MASK, ds, jj);
            for (int c = 0; c < ATT_DPL; ++c) {
                const int dd = lane + 32 * c;
                if (dd < s.d) acc[c] += dsj * ks[jj][dd];
            }
        }
    }
    if (!row) return;
    for (int c = 0; c < ATT_DPL; ++c) {
        const int dd = lane + 32 * c;
        if (dd < s.d) dq[bh * head + (size_t)i * s.d + dd] = from_f32<T>(acc[c]);
    }
}

// Grid (ceil(T / ATT_WARPS), B * Hkv): warp w owns key row j = blockIdx.x * ATT_WARPS + w.
template <typename T>
__device__ void attn_bwd_dkdv(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta, T* dk, T* dv, AttnShape s) {
    __shared__ float qs[ATT_BC][ATT_PAD];
    __shared__ float dos[ATT_BC][ATT_PAD];
    __shared__ float ls[ATT_BC], des[ATT_BC];
    __shared__ float kr[ATT_WARPS][ATT_DMAX];
    __shared__ float vr[ATT_WARPS][ATT_DMAX];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int bg = blockIdx.y, b = bg / s.hkv, g = bg % s.hkv, rep = s.h / s.hkv;
    const size_t head = (size_t)s.t * s.d;
    const int j_first = blockIdx.x * ATT_WARPS, j = j_first + w;
    const bool row = j < s.t;
    if (row) {
        load_row(kr[w], k + bg * head + (size_t)j * s.d, s.d, lane);
        load_row(vr[w], v + bg * head + (size_t)j * s.d, s.d, lane);
    }
    float dka[ATT_DPL], dva[ATT_DPL];
    for (int c = 0; c < ATT_DPL; ++c) dka[c] = dva[c] = 0.0f;
    for (int r = 0; r < rep; ++r) {
        const size_t bh = (size_t)b * s.h + (size_t)g * rep + r;
        const T* qh = q + bh * head;
        const T* doh = dout + bh * head;
        // Query tiles from the block's first key row on (earlier queries cannot see it).
        for (int i0 = (j_first / ATT_BC) * ATT_BC; i0 < s.t; i0 += ATT_BC) {
            __syncthreads();
            load_tile(qs, qh, i0, s.t, s.d);
            load_tile(dos, doh, i0, s.t, s.d);
            for (int x = threadIdx.x; x < ATT_BC; x += blockDim.x) {
                const bool in = i0 + x < s.t;
                ls[x] = in ? lse[bh * s.t + i0 + x] : 0.0f;
                des[x] = in ? delta[bh * s.t + i0 + x] : 0.0f;
            }
            __syncthreads();
            if (!row) continue;
            const int i = i0 + lane;
            const bool vis = i >= j && i < s.t;
            const float p = vis ? expf(dot_sh(qs[lane], kr[w], s.d) * s.scale - ls[lane]) : 0.0f;
            const float dp = vis ? dot_sh(dos[lane], vr[w], s.d) : 0.0f;
            const float ds = p * (dp - des[lane]) * s.scale;
            for (int ii = 0; ii < ATT_BC; ++ii) {
                const float pi = __shfl_sync(WSD_FULL_MASK, p, ii);
                const float dsi = __shfl_sync(WSD_FULL_MASK, ds, ii);
                for (int c = 0; c < ATT_DPL; ++c) {
                    const int dd = lane + 32 * c;
                    if (dd < s.d) {
                        dva[c] += pi * dos[ii][dd];
                        dka[c] += dsi * qs[ii][dd];
                    }
                }
            }
        }
    }
    if (!row) return;
    for (int c = 0; c < ATT_DPL; ++c) {
        const int dd = lane + 32 * c;
        if (dd < s.d) {
            dk[bg * head + (size_t)j * s.d + dd] = from_f32<T>(dka[c]);
            dv[bg * head + (size_t)j * s.d + dd] = from_f32<T>(dva[c]);
        }
    }
}

extern "C" __global__ void attn_fwd_f32(const float* q, const float* k, const float* v, float* out, float* lse, AttnShape s) {
    attn_fwd<float>(q, k, v, out, lse, s);
}
extern "C" __global__ void attn_fwd_bf16(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, AttnShape s) {
    attn_fwd<bf16>(q, k, v, out, lse, s);
}
extern "C" __global__ void attn_bwd_delta_f32(const float* out, const float* dout, float* delta, size_t rows, int d) {
    attn_bwd_delta<float>(out, dout, delta, rows, d);
}
extern "C" __global__ void attn_bwd_delta_bf16(const bf16* out, const bf16* dout, float* delta, size_t rows, int d) {
    attn_bwd_delta<bf16>(out, dout, delta, rows, d);
}
extern "C" __global__ void attn_bwd_dq_f32(const float* q, const float* k, const float* v, const float* dout, const float* lse, const float* delta, float* dq, AttnShape s) {
    attn_bwd_dq<float>(q, k, v, dout, lse, delta, dq, s);
}
extern "C" __global__ void attn_bwd_dq_bf16(const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* delta, bf16* dq, AttnShape s) {
    attn_bwd_dq<bf16>(q, k, v, dout, lse, delta, dq, s);
}
extern "C" __global__ void attn_bwd_dkdv_f32(const float* q, const float* k, const float* v, const float* dout, const float* lse, const float* delta, float* dk, float* dv, AttnShape s) {
    attn_bwd_dkdv<float>(q, k, v, dout, lse, delta, dk, dv, s);
}
extern "C" __global__ void attn_bwd_dkdv_bf16(const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* delta, bf16* dk, bf16* dv, AttnShape s) {
    attn_bwd_dkdv<bf16>(q, k, v, dout, lse, delta, dk, dv, s);
}
