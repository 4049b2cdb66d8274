// Fused multi-step LIF / IF neurons: one thread per neuron, the time loop inside the thread.
//
// The same source builds two ways:
//   * on the GPU with NVRTC through cupy.RawModule (sj_bwsnn/neuron/kernels/__init__.py);
//   * as host C++ with g++ -include host_shim.h -DSJB_HOST (sj_bwsnn/neuron/kernels/host.py), which
//     the CPU tests use to check the math against SpikingJelly's Torch reference.
//
// Configuration is fixed at compile time with -D defines (one compiled module per configuration):
//   SJB_LIF           1 = LIF, 0 = IF
//   SJB_DECAY_INPUT   LIF only: 1 = H = V + (X - (V - V_reset)) / tau, 0 = H = V - (V - V_reset) / tau + X
//   SJB_SOFT_RESET    1 = V = H - V_th * S (v_reset None; the charge then uses V_reset = 0),
//                     0 = V = H * (1 - S) + V_reset * S
//   SJB_DTYPE         storage dtype of x, spikes, grad_x and the saved H - V_th: 0 fp32, 1 fp16, 2 bf16
//   SJB_SURROGATE     SpikingJelly's surrogate ids: 0 Sigmoid, 1 ATan, 2 PiecewiseQuadratic,
//                     3 PiecewiseExp, 4 SoftSign, 5 SuperSpike, 6 Erf
//   SJB_DETACH_RESET  1 = no gradient through S in the reset
//   SJB_TEMPORAL_GRAD 0 = dL/dV[t-1] through H[t] is dropped (SLTT / OTTT gradient)
//
// Arithmetic is fp32 whatever the storage dtype; the membrane state v (v0, v_last, v_seq) is fp32.
// The forward saves M = H - V_th (not H) in the storage dtype: the backward needs only M, and the spike
// S = (M >= 0) is recovered exactly from M's sign bit even after rounding to fp16 / bf16 (a tiny
// negative M that underflows rounds to -0, whose sign bit still says "no spike").
// In fp16, |M| > 65504 is stored as +-65504 (sjb_pack_m), never as inf.
// Scalars arrive as double / long long so that plain Python floats / ints can be passed as kernel
// arguments; they are rounded to fp32 once, as torch does for a Python scalar with an fp32 tensor.

#ifndef SJB_LIF
#error "define SJB_LIF"
#endif

#if SJB_DTYPE == 0
typedef float sjb_t;
__device__ __forceinline__ float sjb_load(sjb_t v) { return v; }
__device__ __forceinline__ sjb_t sjb_pack(float f) { return f; }
__device__ __forceinline__ bool sjb_sign(sjb_t v) { return (__float_as_uint(v) >> 31) != 0; }
#else
typedef unsigned short sjb_t;  // raw fp16 / bf16 bits; no cuda_fp16.h needed (NVRTC or host)
__device__ __forceinline__ bool sjb_sign(sjb_t v) { return (v >> 15) != 0; }
#if SJB_DTYPE == 2
__device__ __forceinline__ float sjb_load(sjb_t v) {
    return __uint_as_float(((unsigned int)v) << 16);
}
__device__ __forceinline__ sjb_t sjb_pack(float f) {  // round to nearest even, as torch does
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (sjb_t)0x7fc0u;  // NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (sjb_t)(u >> 16);
}
#elif defined(SJB_HOST)
__device__ __forceinline__ float sjb_load(sjb_t v) { _Float16 h; memcpy(&h, &v, 2); return (float)h; }
__device__ __forceinline__ sjb_t sjb_pack(float f) { _Float16 h = (_Float16)f; sjb_t v; memcpy(&v, &h, 2); return v; }
#else
__device__ __forceinline__ float sjb_load(sjb_t v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
}
__device__ __forceinline__ sjb_t sjb_pack(float f) {
    sjb_t v;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(v) : "f"(f));
    return v;
}
#endif
#endif

// M = H - V_th as stored for backward. fp16 saturates at +-65504 instead of rounding to +-inf (NaN passes):
// an inf M would give h = inf and, in a hard reset that is not detached, dV/dH = (V_reset - h) * sg(M) =
// inf * 0 = NaN, where the limit is 0 for every surrogate (sg decays faster than 1/|M|). The saturated M
// keeps its sign (the spike), and sg and (V_reset - h) * sg at +-65504 are ~0 as at the true M.
__device__ __forceinline__ sjb_t sjb_pack_m(float m) {
#if SJB_DTYPE == 1
    m = m > 65504.0f ? 65504.0f : (m < -65504.0f ? -65504.0f : m);
#endif
    return sjb_pack(m);
}

// dS/dM of SpikingJelly's surrogates (same formulas as spikingjelly/_ops/surrogate.py).
__device__ __forceinline__ float sjb_surrogate_grad(float m, float alpha) {
#if SJB_SURROGATE == 0
    const float s = 1.0f / (1.0f + expf(-alpha * m));
    return (1.0f - s) * s * alpha;
#elif SJB_SURROGATE == 1
    const float z = m * (1.5707963267948966f * alpha);
    return (0.5f * alpha) / (1.0f + z * z);
#elif SJB_SURROGATE == 2
    return fmaxf(0.0f, alpha - alpha * alpha * fabsf(m));
#elif SJB_SURROGATE == 3
    return (0.5f * alpha) * expf(-alpha * fabsf(m));
#elif SJB_SURROGATE == 4
    const float z = 1.0f / alpha + fabsf(m);
    return 1.0f / (2.0f * alpha * z * z);
#elif SJB_SURROGATE == 5
    const float z = 1.0f + fabsf(m);
    return alpha / (z * z);
#elif SJB_SURROGATE == 6
    const float z = alpha * m;
    return (0.5641895835477563f * alpha) * expf(-z * z);
#else
#error "SJB_SURROGATE must be 0..6"
#endif
}

// H[t] from V[t-1] and X[t], operation for operation as SpikingJelly's reference (bit-identical fp32).
__device__ __forceinline__ float sjb_charge(float v, float x, float tau, float v_reset) {
#if SJB_LIF && SJB_DECAY_INPUT
    return v + (x - (v - v_reset)) / tau;
#elif SJB_LIF
    return v - (v - v_reset) / tau + x;
#else
    return v + x;
#endif
}

// x, spike, m: [T, M] in the storage dtype; v0, v_last: [M] fp32; v_seq: [T, M] fp32 or null.
// v0 null: every neuron starts from v_init (the state after reset_net; saves a fill kernel).
// m_seq null: nothing saved for backward (no gradient wanted, e.g. evaluation).
extern "C" __global__ void sjb_multistep_forward(
    const sjb_t* __restrict__ x, const float* __restrict__ v0, sjb_t* __restrict__ spike,
    sjb_t* __restrict__ m_seq, float* __restrict__ v_last, float* __restrict__ v_seq,
    long long M, long long T, double tau_d, double v_th_d, double v_reset_d, double v_init_d) {
    const float tau = (float)tau_d, v_th = (float)v_th_d, v_init = (float)v_init_d;
    const float v_reset = SJB_SOFT_RESET ? 0.0f : (float)v_reset_d;
    (void)tau, (void)v_reset;  // unused in some configurations
    for (long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x; n < M;
         n += (long long)blockDim.x * gridDim.x) {
        float v = v0 ? v0[n] : v_init;
        for (long long t = 0; t < T; ++t) {
            const long long i = t * M + n;
            const float h = sjb_charge(v, sjb_load(x[i]), tau, v_reset);
            const float m = (h - v_th) + 0.0f;  // + 0 turns -0 into +0: sign bit == (H < V_th)
            const float s = m >= 0.0f ? 1.0f : 0.0f;
#if SJB_SOFT_RESET
            v = h - s * v_th;
#else
            v = s * v_reset + (1.0f - s) * h;
#endif
            spike[i] = sjb_pack(s);
            if (m_seq) m_seq[i] = sjb_pack_m(m);
            if (v_seq) v_seq[i] = v;
        }
        v_last[n] = v;
    }
}

// grad_spike, m_seq, grad_x: [T, M] storage dtype; grad_v_seq: [T, M] fp32 or null;
// grad_v_last: [M] fp32 or null; grad_v0: [M] fp32 dL/dV[-1], or null when not wanted.
extern "C" __global__ void sjb_multistep_backward(
    const sjb_t* __restrict__ grad_spike, const float* __restrict__ grad_v_seq,
    const float* __restrict__ grad_v_last, const sjb_t* __restrict__ m_seq,
    sjb_t* __restrict__ grad_x, float* __restrict__ grad_v0, long long M, long long T,
    double tau_d, double v_th_d, double v_reset_d, double alpha_d) {
    const float tau = (float)tau_d, v_th = (float)v_th_d, alpha = (float)alpha_d;
    const float v_reset = (float)v_reset_d;
    (void)tau, (void)v_reset, (void)v_th;  // unused in some configurations
    for (long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x; n < M;
         n += (long long)blockDim.x * gridDim.x) {
        float grad_v = grad_v_last ? grad_v_last[n] : 0.0f;  // dL/dV[t], V[t] = state after step t
        for (long long t = T - 1; t >= 0; --t) {
            const long long i = t * M + n;
            const sjb_t m_raw = m_seq[i];
            const float m = sjb_load(m_raw);
            const float sg = sjb_surrogate_grad(m, alpha);
            if (grad_v_seq) grad_v += grad_v_seq[i];
#if SJB_SOFT_RESET
            const float dv_dh = SJB_DETACH_RESET ? 1.0f : 1.0f - v_th * sg;
#else
            const float s = sjb_sign(m_raw) ? 0.0f : 1.0f;
            const float h = m + v_th;
            const float dv_dh = SJB_DETACH_RESET ? 1.0f - s : (1.0f - s) + (v_reset - h) * sg;
#endif
            const float grad_h = sjb_load(grad_spike[i]) * sg + grad_v * dv_dh;
#if SJB_LIF && SJB_DECAY_INPUT
            grad_x[i] = sjb_pack(grad_h / tau);
#else
            grad_x[i] = sjb_pack(grad_h);
#endif
#if !SJB_TEMPORAL_GRAD
            grad_v = 0.0f;
#elif SJB_LIF
            grad_v = grad_h - grad_h / tau;
#else
            grad_v = grad_h;
#endif
        }
        if (grad_v0) grad_v0[n] = grad_v;
    }
}
