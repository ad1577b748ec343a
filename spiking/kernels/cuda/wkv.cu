// Fused WKV (RWKV-4 time mixing, SpikeGPT's receptance-weighted key-value) for CUDA.
//
// The forward update and the backward derivation are documented, exactly as coded here, in
// spiking/kernels/wkv.py and spiking/kernels/cpu/wkv.py (running-max form: every exp argument
// is <= 0). Sources: Peng et al. 2023 (RWKV, eq. 14); Zhu et al. 2023 (SpikeGPT, eq. 5).
//
// Layout: k, v, y, sa, sb, sp, gy, gk, gv are [T, BC] (time-first, BC = B * C, contiguous);
// w, u are [C]; a0, b0, p0, af, bf, pf, gw, gu are [BC]. One thread per (batch, channel) j;
// neighbouring threads read neighbouring addresses at each t (coalesced). The loop over T
// keeps its state in registers: there is no compile-time sequence-length limit. The state and
// all arithmetic are double for float inputs too (A = double): in float the exponent p (up to
// |k|) would lose the small per-step decay w to rounding and drift over long sequences.
// Loaded with cupy.RawModule by spiking/kernels/cuda_wkv.py and launched on torch's current
// stream.

// exp in the template's precision (expf for float, exp for double)
__device__ __forceinline__ float ex(const float x) { return expf(x); }
__device__ __forceinline__ double ex(const double x) { return exp(x); }

template <typename F>
__device__ void wkv_forward_impl(const int n_t, const int n_bc, const int n_c,
                                 const F* __restrict__ w, const F* __restrict__ u,
                                 const F* __restrict__ k, const F* __restrict__ v,
                                 const F* __restrict__ a0, const F* __restrict__ b0,
                                 const F* __restrict__ p0, F* __restrict__ y,
                                 F* __restrict__ sa, F* __restrict__ sb, F* __restrict__ sp,
                                 F* __restrict__ af, F* __restrict__ bf, F* __restrict__ pf) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n_bc) return;
    typedef double A;
    const int c = j % n_c;
    const A wc = w[c];
    const A uc = u[c];
    A a = a0[j], b = b0[j], p = p0[j];
    for (int t = 0; t < n_t; ++t) {
        const long long i = (long long)t * n_bc + j;
        sa[i] = (F)a;
        sb[i] = (F)b;
        sp[i] = (F)p;
        const A kt = k[i];
        const A vt = v[i];
        A ww = uc + kt;
        A q = p > ww ? p : ww;
        A e1 = ex(p - q);
        A e2 = ex(ww - q);
        y[i] = (F)((e1 * a + e2 * vt) / (e1 * b + e2));
        ww = p - wc;
        q = ww > kt ? ww : kt;
        e1 = ex(ww - q);
        e2 = ex(kt - q);
        a = e1 * a + e2 * vt;
        b = e1 * b + e2;
        p = q;
    }
    af[j] = (F)a;
    bf[j] = (F)b;
    pf[j] = (F)p;
}

template <typename F>
__device__ void wkv_backward_impl(const int n_t, const int n_bc, const int n_c,
                                  const F* __restrict__ w, const F* __restrict__ u,
                                  const F* __restrict__ k, const F* __restrict__ v,
                                  const F* __restrict__ y, const F* __restrict__ sa,
                                  const F* __restrict__ sb, const F* __restrict__ sp,
                                  const F* __restrict__ gy, F* __restrict__ gk,
                                  F* __restrict__ gv, F* __restrict__ gw, F* __restrict__ gu) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n_bc) return;
    typedef double A;
    const int c = j % n_c;
    const A wc = w[c];
    const A uc = u[c];
    A al = 0, be = 0, q = -1e38;   // alpha = al * e^q, beta = be * e^q (dL/dA, dL/dB)
    A dw = 0, du = 0;
    for (int t = n_t - 1; t >= 0; --t) {
        const long long i = (long long)t * n_bc + j;
        const A kt = k[i], vt = v[i], yt = y[i], p = sp[i], sat = sa[i], sbt = sb[i];
        const A ww = uc + kt;
        const A big = p > ww ? p : ww;
        const A e1 = ex(p - big);
        const A e2 = ex(ww - big);
        const A r = gy[i] / (e1 * sbt + e2);
        const A ek = ex(kt + q);
        gv[i] = (F)(r * e2 + ek * al);
        gk[i] = (F)(r * e2 * (vt - yt) + ek * (vt * al + be));
        du += r * e2 * (vt - yt);
        dw -= ex(p + q - wc) * (sat * al + sbt * be);
        const A qa = q - wc;
        const A qn = qa > -big ? qa : -big;
        const A f1 = ex(qa - qn);
        const A f2 = ex(-big - qn);
        al = f1 * al + f2 * r;
        be = f1 * be - f2 * r * yt;
        q = qn;
    }
    gw[j] = (F)dw;
    gu[j] = (F)du;
}

extern "C" __global__ void wkv_forward_f32(
        const int n_t, const int n_bc, const int n_c, const float* w, const float* u,
        const float* k, const float* v, const float* a0, const float* b0, const float* p0,
        float* y, float* sa, float* sb, float* sp, float* af, float* bf, float* pf) {
    wkv_forward_impl<float>(n_t, n_bc, n_c, w, u, k, v, a0, b0, p0, y, sa, sb, sp, af, bf, pf);
}

extern "C" __global__ void wkv_forward_f64(
        const int n_t, const int n_bc, const int n_c, const double* w, const double* u,
        const double* k, const double* v, const double* a0, const double* b0, const double* p0,
        double* y, double* sa, double* sb, double* sp, double* af, double* bf, double* pf) {
    wkv_forward_impl<double>(n_t, n_bc, n_c, w, u, k, v, a0, b0, p0, y, sa, sb, sp, af, bf, pf);
}

extern "C" __global__ void wkv_backward_f32(
        const int n_t, const int n_bc, const int n_c, const float* w, const float* u,
        const float* k, const float* v, const float* y, const float* sa, const float* sb,
        const float* sp, const float* gy, float* gk, float* gv, float* gw, float* gu) {
    wkv_backward_impl<float>(n_t, n_bc, n_c, w, u, k, v, y, sa, sb, sp, gy, gk, gv, gw, gu);
}

extern "C" __global__ void wkv_backward_f64(
        const int n_t, const int n_bc, const int n_c, const double* w, const double* u,
        const double* k, const double* v, const double* y, const double* sa, const double* sb,
        const double* sp, const double* gy, double* gk, double* gv, double* gw, double* gu) {
    wkv_backward_impl<double>(n_t, n_bc, n_c, w, u, k, v, y, sa, sb, sp, gy, gk, gv, gw, gu);
}
