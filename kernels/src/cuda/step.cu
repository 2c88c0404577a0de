// wsdscope kernels: the glue of the training step between the fused ops and the GEMMs, f32
// and bf16 (math in f32): the embedding lookup and its scatter-add backward, heads split out
// of and merged into token rows, SwiGLU on rows that hold [gate | up] side by side, the
// residual stream's element-wise ops and dtype conversions. Grid-stride loops over the
// elements each thread writes; every element is written by exactly one thread, and sums run
// in a fixed order (no atomics), so results do not depend on the grid.
#include "common.cuh"

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

// ---------------------------------------------------------------------------------------
// Embedding
// ---------------------------------------------------------------------------------------

// h (N, H) = emb[ids] * scale; an id >= V makes its row NaN instead of reading past emb.
template <typename T>
__device__ void embed_fwd(const T* emb, const u32* ids, T* h, float scale, size_t n, int hd, int v) {
    GRID_STRIDE(i, n) {
        const size_t row = i / hd;
        const int j = (int)(i % hd);
        const u32 id = ids[row];
        h[i] = from_f32<T>(id < (u32)v ? to_f32(emb[(size_t)id * hd + j]) * scale : WSD_NAN);
    }
}

extern "C" __global__ void embed_fwd_f32(const float* emb, const u32* ids, float* h, float scale, size_t n, int hd, int v) {
    embed_fwd<float>(emb, ids, h, scale, n, hd, v);
}
extern "C" __global__ void embed_fwd_bf16(const bf16* emb, const u32* ids, bf16* h, float scale, size_t n, int hd, int v) {
    embed_fwd<bf16>(emb, ids, h, scale, n, hd, v);
}

// demb[uniq[u]] += scale * dh[t] for the tokens t whose id is uniq[u], in token order:
// order[starts[u] .. starts[u + 1]) lists them (the host sorts the ids stably). One thread
// per (u, column); demb is f32 (the gradient of the f32 master embedding).
template <typename T>
__device__ void embed_bwd(const T* dh, const u32* uniq, const u32* starts, const u32* order, float* demb, float scale, size_t n, int hd) {
    GRID_STRIDE(i, n) {
        const size_t u = i / hd;
        const int j = (int)(i % hd);
        float* d = demb + (size_t)uniq[u] * hd + j;
        float acc = *d;
        for (u32 k = starts[u]; k < starts[u + 1]; ++k) acc += to_f32(dh[(size_t)order[k] * hd + j]) * scale;
        *d = acc;
    }
}

extern "C" __global__ void embed_bwd_f32(const float* dh, const u32* uniq, const u32* starts, const u32* order, float* demb, float scale, size_t n, int hd) {
    embed_bwd<float>(dh, uniq, starts, order, demb, scale, n, hd);
}
extern "C" __global__ void embed_bwd_bf16(const bf16* dh, const u32* uniq, const u32* starts, const u32* order, float* demb, float scale, size_t n, int hd) {
    embed_bwd<bf16>(dh, uniq, starts, order, demb, scale, n, hd);
}

// ---------------------------------------------------------------------------------------
// Heads
// ---------------------------------------------------------------------------------------

// Heads of `d` columns in token rows (B·T, width): `nh` heads from column col0 on; the heads
// layout is (B, nh, T, d).
struct HeadCols {
    int t, width, col0, nh, d;
};

// The token-row index of element i of the heads layout.
__device__ __forceinline__ size_t head_to_row(size_t i, const HeadCols& c) {
    const int dd = (int)(i % c.d);
    size_t r = i / c.d;
    const int tt = (int)(r % c.t);
    r /= c.t;
    const int h = (int)(r % c.nh);
    const size_t b = r / c.nh;
    return (b * c.t + tt) * (size_t)c.width + c.col0 + (size_t)h * c.d + dd;
}

// y (B, nh, T, d) = columns col0 .. col0 + nh*d of x (B·T, width).
template <typename T>
__device__ void split_heads(const T* x, T* y, size_t n, HeadCols c) {
    GRID_STRIDE(i, n) y[i] = x[head_to_row(i, c)];
}

// Columns col0 .. col0 + nh*d of y (B·T, width) = x (B, nh, T, d); other columns untouched.
template <typename T>
__device__ void merge_heads(const T* x, T* y, size_t n, HeadCols c) {
    GRID_STRIDE(i, n) y[head_to_row(i, c)] = x[i];
}

#define HEADS_ARGS size_t n, int t, int width, int col0, int nh, int d
#define HEADS_COLS {t, width, col0, nh, d}
extern "C" __global__ void split_heads_f32(const float* x, float* y, HEADS_ARGS) { split_heads<float>(x, y, n, HEADS_COLS); }
extern "C" __global__ void split_heads_bf16(const bf16* x, bf16* y, HEADS_ARGS) { split_heads<bf16>(x, y, n, HEADS_COLS); }
extern "C" __global__ void merge_heads_f32(const float* x, float* y, HEADS_ARGS) { merge_heads<float>(x, y, n, HEADS_COLS); }
extern "C" __global__ void merge_heads_bf16(const bf16* x, bf16* y, HEADS_ARGS) { merge_heads<bf16>(x, y, n, HEADS_COLS); }

// ---------------------------------------------------------------------------------------
// SwiGLU on paired rows
// ---------------------------------------------------------------------------------------

__device__ __forceinline__ float step_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// y (N, F) = silu(gate) * up for rows gu (N, 2F) = [gate | up]; as swiglu.cu.
template <typename T>
__device__ void swiglu_paired_fwd(const T* gu, T* y, size_t n, int f) {
    GRID_STRIDE(i, n) {
        const size_t row = i / f;
        const int j = (int)(i % f);
        const float g = to_f32(gu[row * 2 * f + j]), u = to_f32(gu[row * 2 * f + f + j]);
        y[i] = from_f32<T>(g * step_sigmoid(g) * u);
    }
}

// dgu (N, 2F) = [dgate | dup] of swiglu_paired_fwd for upstream dy (N, F); as swiglu.cu.
template <typename T>
__device__ void swiglu_paired_bwd(const T* gu, const T* dy, T* dgu, size_t n, int f) {
    GRID_STRIDE(i, n) {
        const size_t row = i / f;
        const int j = (int)(i % f);
        const size_t ig = row * 2 * f + j, iu = ig + f;
        const float g = to_f32(gu[ig]), u = to_f32(gu[iu]), d = to_f32(dy[i]);
        const float s = step_sigmoid(g);
        dgu[iu] = from_f32<T>(d * g * s);
        dgu[ig] = from_f32<T>(d * u * s * (1.0f + g * (1.0f - s)));
    }
}

extern "C" __global__ void swiglu_paired_fwd_f32(const float* gu, float* y, size_t n, int f) { swiglu_paired_fwd<float>(gu, y, n, f); }
extern "C" __global__ void swiglu_paired_fwd_bf16(const bf16* gu, bf16* y, size_t n, int f) { swiglu_paired_fwd<bf16>(gu, y, n, f); }
extern "C" __global__ void swiglu_paired_bwd_f32(const float* gu, const float* dy, float* dgu, size_t n, int f) {
    swiglu_paired_bwd<float>(gu, dy, dgu, n, f);
}
extern "C" __global__ void swiglu_paired_bwd_bf16(const bf16* gu, const bf16* dy, bf16* dgu, size_t n, int f) {
    swiglu_paired_bwd<bf16>(gu, dy, dgu, n, f);
}

// ---------------------------------------------------------------------------------------
// Element-wise (y may be a or x: each element is read before it is written)
// ---------------------------------------------------------------------------------------

// y = a + s * b.
template <typename T>
__device__ void add_scaled(const T* a, const T* b, float s, T* y, size_t n) {
    GRID_STRIDE(i, n) y[i] = from_f32<T>(to_f32(a[i]) + s * to_f32(b[i]));
}

// y = s * x.
template <typename T>
__device__ void scale(const T* x, float s, T* y, size_t n) {
    GRID_STRIDE(i, n) y[i] = from_f32<T>(s * to_f32(x[i]));
}

extern "C" __global__ void add_scaled_f32(const float* a, const float* b, float s, float* y, size_t n) { add_scaled<float>(a, b, s, y, n); }
extern "C" __global__ void add_scaled_bf16(const bf16* a, const bf16* b, float s, bf16* y, size_t n) { add_scaled<bf16>(a, b, s, y, n); }
extern "C" __global__ void scale_f32(const float* x, float s, float* y, size_t n) { scale<float>(x, s, y, n); }
extern "C" __global__ void scale_bf16(const bf16* x, float s, bf16* y, size_t n) { scale<bf16>(x, s, y, n); }

// ---------------------------------------------------------------------------------------
// Conversions: y = x as the destination type (f32 -> bf16 rounds to nearest even)
// ---------------------------------------------------------------------------------------

template <typename S, typename D>
__device__ void convert(const S* x, D* y, size_t n) {
    GRID_STRIDE(i, n) y[i] = from_f32<D>(to_f32(x[i]));
}

extern "C" __global__ void convert_f32_f32(const float* x, float* y, size_t n) { convert<float, float>(x, y, n); }
extern "C" __global__ void convert_f32_bf16(const float* x, bf16* y, size_t n) { convert<float, bf16>(x, y, n); }
extern "C" __global__ void convert_bf16_f32(const bf16* x, float* y, size_t n) { convert<bf16, float>(x, y, n); }
extern "C" __global__ void convert_bf16_bf16(const bf16* x, bf16* y, size_t n) { convert<bf16, bf16>(x, y, n); }
