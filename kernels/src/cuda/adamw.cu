// wsdscope kernels: one fused AdamW step over a tensor, updating the parameter and both
// moments in place in one pass (on the GPU nothing stops one kernel writing three
// buffers), in the trainer's arithmetic order:
//   g <- g*c; m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2;
//   theta <- theta*(1 - lr*wd) - (lr/bc1) * m / (sqrt(v)*(1/sqrt(bc2)) + eps)
// Each block also writes its partial statistics (sum (dtheta)^2, sum theta_new^2 in f64,
// max |dtheta|) to partial[3 * blockIdx.x ..]; adamw_stats_finish reduces them in block
// order. Moments are f32; the parameter and gradient f32 or bf16.
#include "common.cuh"

struct AdamWParams {
    float lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2_sqrt, grad_scale;
};

template <typename T>
__device__ void adamw_step(T* theta, const T* grad, float* m, float* v, size_t n, AdamWParams hp, double* partial) {
    const float decay = 1.0f - hp.lr * hp.weight_decay;
    const float inv_bc2 = 1.0f / hp.bias_correction2_sqrt;
    const float step = hp.lr / hp.bias_correction1;
    double upd_sq = 0.0, par_sq = 0.0;
    float max_abs = 0.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = to_f32(grad[i]);
        if (hp.grad_scale != 1.0f) g *= hp.grad_scale;
        const float mi = m[i] * hp.beta1 + g * (1.0f - hp.beta1);
        const float vi = v[i] * hp.beta2 + g * g * (1.0f - hp.beta2);
        m[i] = mi;
        v[i] = vi;
        const float old = to_f32(theta[i]);
        const float decayed = hp.weight_decay > 0.0f ? old * decay : old;
        const T stored = from_f32<T>(decayed - (mi / (sqrtf(vi) * inv_bc2 + hp.eps)) * step);
        theta[i] = stored;
        const float now = to_f32(stored);
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
