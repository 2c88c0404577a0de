// wsdscope kernels: one fused AdamW step over a tensor, updating the parameter and both
// moments in place in one pass (on the GPU nothing stops one kernel writing three
// buffers), in the trainer's arithmetic order:
//   g <- g*c; m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2;
//   theta <- theta*(1 - lr*wd) - (lr/bc1) * m / (sqrt(v)*(1/sqrt(bc2)) + eps)
// Each block also writes its partial statistics (sum (dtheta)^2, sum theta_new^2 in f64,
// max |dtheta|) to partial[3 * blockIdx.x ..]; adamw_stats_finish reduces them in block
// order. Moments are f32; the parameter and gradient f32 or bf16.
//
// adamw_check computes the same step without writing it and raises a flag if any new m, v
// or theta (as stored, rounded to T) is not finite, so the caller can refuse the whole step
// before any tensor is touched. Both kernels compute each element with adamw_elem.
#include "common.cuh"

struct AdamWParams {
    float lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2_sqrt, grad_scale;
};

// The per-thread constants of a step.
struct AdamWConsts {
    float decay, inv_bc2, step;
};

__device__ __forceinline__ AdamWConsts adamw_consts(const AdamWParams& hp) {
    AdamWConsts k;
    k.decay = 1.0f - hp.lr * hp.weight_decay;
    k.inv_bc2 = 1.0f / hp.bias_correction2_sqrt;
    k.step = hp.lr / hp.bias_correction1;
    return k;
}

// The new moments and the new parameter as stored, of one element.
template <typename T>
struct AdamWElem {
    float m, v;
    T theta;
};

template <typename T>
__device__ __forceinline__ AdamWElem<T> adamw_elem(float theta, float g, float m, float v, const AdamWParams& hp, const AdamWConsts& k) {
    if (hp.grad_scale != 1.0f) g *= hp.grad_scale;
    AdamWElem<T> e;
    e.m = m * hp.beta1 + g * (1.0f - hp.beta1);
    e.v = v * hp.beta2 + g * g * (1.0f - hp.beta2);
    const float decayed = hp.weight_decay > 0.0f ? theta * k.decay : theta;
    e.theta = from_f32<T>(decayed - (e.m / (sqrtf(e.v) * k.inv_bc2 + hp.eps)) * k.step);
    return e;
}

// Neither infinite nor NaN (NaN compares false).
__device__ __forceinline__ bool is_finite(float x) { return fabsf(x) < WSD_INF; }

template <typename T>
__device__ void adamw_step(T* theta, const T* grad, float* m, float* v, size_t n, AdamWParams hp, double* partial) {
    const AdamWConsts k = adamw_consts(hp);
    double upd_sq = 0.0, par_sq = 0.0;
    float max_abs = 0.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float old = to_f32(theta[i]);
        const AdamWElem<T> e = adamw_elem<T>(old, to_f32(grad[i]), m[i], v[i], hp, k);
        m[i] = e.m;
        v[i] = e.v;
        theta[i] = e.theta;
        const float now = to_f32(e.theta);
        const double delta = (double)(now - old);
        upd_sq += delta * delta;
        par_sq += (double)now * (double)now;
        max_abs = fmaxf(max_abs, fabsf(now - old));
    }
    upd_sq = block_sum_f64(upd_sq);
    par_sq = block_sum_f64(par_sq);
    max_abs = block_max(max_abs);
    if (threadIdx.x == 0) {
        partial[3 * blockIdx.x] = upd_sq;
        partial[3 * blockIdx.x + 1] = par_sq;
        partial[3 * blockIdx.x + 2] = (double)max_abs;
    }
}

extern "C" __global__ void adamw_step_f32(float* theta, const float* grad, float* m, float* v, size_t n, AdamWParams hp, double* partial) {
    adamw_step<float>(theta, grad, m, v, n, hp, partial);
}
extern "C" __global__ void adamw_step_bf16(bf16* theta, const bf16* grad, float* m, float* v, size_t n, AdamWParams hp, double* partial) {
    adamw_step<bf16>(theta, grad, m, v, n, hp, partial);
}

// Sets *nonfinite to 1 if any new m, v or theta of the step would not be finite; writes
// nothing else. The caller zeroes the flag once for any number of launches.
template <typename T>
__device__ void adamw_check(const T* theta, const T* grad, const float* m, const float* v, size_t n, AdamWParams hp, int* nonfinite) {
    const AdamWConsts k = adamw_consts(hp);
    bool finite = true;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const AdamWElem<T> e = adamw_elem<T>(to_f32(theta[i]), to_f32(grad[i]), m[i], v[i], hp, k);
        finite = finite && is_finite(e.m) && is_finite(e.v) && is_finite(to_f32(e.theta));
    }
    // Every writer stores the same value: no atomics needed.
    if (!finite) *nonfinite = 1;
}

extern "C" __global__ void adamw_check_f32(const float* theta, const float* grad, const float* m, const float* v, size_t n, AdamWParams hp, int* nonfinite) {
    adamw_check<float>(theta, grad, m, v, n, hp, nonfinite);
}
extern "C" __global__ void adamw_check_bf16(const bf16* theta, const bf16* grad, const float* m, const float* v, size_t n, AdamWParams hp, int* nonfinite) {
    adamw_check<bf16>(theta, grad, m, v, n, hp, nonfinite);
}

// stats[0..3] from `blocks` partials, summed in block order; launch with one thread.
extern "C" __global__ void adamw_stats_finish(const double* partial, int blocks, double* stats) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double a = 0.0, b = 0.0, c = 0.0;
    for (int i = 0; i < blocks; ++i) {
        a += partial[3 * i];
        b += partial[3 * i + 1];
        c = fmax(c, partial[3 * i + 2]);
    }
    stats[0] = a;
    stats[1] = b;
    stats[2] = c;
}
