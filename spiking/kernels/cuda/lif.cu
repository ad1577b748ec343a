// Fused LIF-family kernels (LIF, CubaLIF, ALIF): forward and BPTT backward over the whole
// time loop, one thread per neuron (flat index j over the M = B*N*... neurons of one step),
// state in registers. The update is exactly the one of spiking/kernels/lif.py (the spec), in
// the same operation order; the backward is the one documented in spiking/kernels/cpu/lif.py.
// Compiled by NVRTC at run time (CuPy RawModule) with --fmad=false so that every product and
// sum rounds as in the elementwise reference (no fused multiply-add contraction).
//
// Layout: x, out, trajectories, stores are [T, M] row-major (time-first). Parameter k is read
// as p_k[j % n_k] (period n_k: 1 for a scalar, N for per-neuron, M for per-element).
// Storage S in {float, double, f16_t, bf16_t}; compute C = double for double, else float.
// Kept for backward (C): h (pre-reset membrane) always, i with a synapse, a with adaptation.
#include "dtypes.cuh"

#define PARAM_ARGS(C) const C* am, int n_am, const C* th, int n_th, const C* asy, int n_as, \
    const C* aad, int n_aa, const C* aj, int n_aj, const C* g, int n_g, const C* vl, int n_vl, \
    const C* vr, int n_vr
#define PARAM_NAMES am, n_am, th, n_th, asy, n_as, aad, n_aa, aj, n_aj, g, n_g, vl, n_vl, vr, n_vr
#define LOAD_PARAMS                                                                         \
    const C p_am = am[j % n_am], p_th = th[j % n_th], p_as = asy[j % n_as];                 \
    const C p_aa = aad[j % n_aa], p_aj = aj[j % n_aj], p_g = g[j % n_g];                    \
    const C p_vl = vl[j % n_vl], p_vr = vr[j % n_vr];                                       \
    const C one = C(1), zero = C(0);

#define FWD_ARGS(S, C) const S* __restrict__ x, const S* __restrict__ v0,                     \
    const S* __restrict__ i0, const S* __restrict__ a0, PARAM_ARGS(C), int T, long long M,    \
    int syn, int ada, int reset, int delay, int cfirst, int record, S* __restrict__ out,      \
    S* __restrict__ vT, S* __restrict__ iT, S* __restrict__ aT, C* __restrict__ h_st,         \
    C* __restrict__ i_st, C* __restrict__ a_st, S* __restrict__ v_tr, S* __restrict__ i_tr,   \
    S* __restrict__ a_tr
#define FWD_NAMES x, v0, i0, a0, PARAM_NAMES, T, M, syn, ada, reset, delay, cfirst, record, \
    out, vT, iT, aT, h_st, i_st, a_st, v_tr, i_tr, a_tr

// reset: 0 subtract, 1 zero, 2 none (spiking.kernels.fused.RESET_IDS)
template <typename S, typename C>
__device__ __forceinline__ void lif_fwd_impl(FWD_ARGS(S, C)) {
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    LOAD_PARAMS
    (void)p_vl;
    const C c_leak = (one - p_am) * vl[j % n_vl];
    C v = load(v0 + j);
    C i = syn ? load(i0 + j) : zero;
    C a = ada ? load(a0 + j) : zero;
    for (int t = 0; t < T; ++t) {
        const long long k = (long long)t * M + j;
        const C xt = load(x + k);
        C drive = xt;
        if (syn) {
            const C i_new = p_as * i + xt;
            drive = cfirst ? i_new : i;
            i = i_new;
            i_st[k] = i;
        }
        C r = zero;
        if (delay && reset != 2) {
            r = (v - p_th > zero) ? one : zero;
            if (reset == 1) v = v * (one - r) + p_vr * r;
        }
        C h = p_am * v + c_leak + p_g * drive;
        if (delay && reset == 0) h = h - p_th * r;
        h_st[k] = h;
        C theta = p_th;
        if (ada) {
            a = p_aa * a;
            theta = p_th + a;
        }
        const C s = (h - theta > zero) ? one : zero;
        if (ada) {
            a = a + p_aj * s;
            a_st[k] = a;
        }
        if (delay || reset == 2) v = h;
        else if (reset == 0) v = h - theta * s;
        else v = h * (one - s) + p_vr * s;
        store(out + k, s);
        if (record) {
            store(v_tr + k, v);
            if (syn) store(i_tr + k, i);
            if (ada) store(a_tr + k, a);
        }
    }
    store(vT + j, v);
    if (syn) store(iT + j, i);
    if (ada) store(aT + j, a);
}

// Gradients that are absent (unused outputs) are null pointers. g_ts is the time stride of
// g_out in elements: M, or 0 when the gradient is one row broadcast over time (the gradient of
// a sum over steps, e.g. out.sum() or a spike-count loss), read for every step.
#define BWD_ARGS(S, C) const S* __restrict__ g_out, const S* __restrict__ g_vT,                \
    const S* __restrict__ g_iT, const S* __restrict__ g_aT, const S* __restrict__ g_vtr,      \
    const S* __restrict__ g_itr, const S* __restrict__ g_atr, const S* __restrict__ v0,       \
    const S* __restrict__ i0, const S* __restrict__ a0, const C* __restrict__ h_st,           \
    const C* __restrict__ i_st, const C* __restrict__ a_st, const S* __restrict__ x,          \
    PARAM_ARGS(C), int T, long long M, int syn, int ada, int reset, int delay, int cfirst,    \
    int sid, C k1, C k2, long long g_ts, S* __restrict__ gx, S* __restrict__ gv0,           \
    S* __restrict__ gi0, S* __restrict__ ga0, C* __restrict__ gp
#define BWD_NAMES g_out, g_vT, g_iT, g_aT, g_vtr, g_itr, g_atr, v0, i0, a0, h_st, i_st, a_st, \
    x, PARAM_NAMES, T, M, syn, ada, reset, delay, cfirst, sid, k1, k2, g_ts, gx, gv0, gi0, ga0, gp

template <typename S, typename C>
__device__ __forceinline__ void lif_bwd_impl(BWD_ARGS(S, C)) {
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    LOAD_PARAMS
    C gv = g_vT ? load(g_vT + j) : zero;
    C gi = (syn && g_iT) ? load(g_iT + j) : zero;
    C ga = (ada && g_aT) ? load(g_aT + j) : zero;
    C d_am = zero, d_th = zero, d_as = zero, d_aa = zero;
    C d_aj = zero, d_g = zero, d_vl = zero, d_vr = zero;
    for (int t = T - 1; t >= 0; --t) {
        const long long k = (long long)t * M + j;
        if (g_vtr) gv += load(g_vtr + k);
        if (syn && g_itr) gi += load(g_itr + k);
        if (ada && g_atr) ga += load(g_atr + k);
        // recompute this step's forward quantities (same arithmetic as the forward)
        const C h = h_st[k];
        C a_p = zero, theta = p_th;
        if (ada) {
            a_p = t > 0 ? a_st[k - M] : load(a0 + j);
            theta = p_th + p_aa * a_p;
        }
        const C z = h - theta;
        const C s = z > zero ? one : zero;
        C v_p;
        if (t == 0) {
            v_p = load(v0 + j);
        } else {
            const C hp = h_st[k - M];
            if (delay || reset == 2) {
                v_p = hp;
            } else {
                C theta_p = p_th;
                if (ada) theta_p = p_th + p_aa * (t > 1 ? a_st[k - 2 * M] : load(a0 + j));
                const C s_p = hp - theta_p > zero ? one : zero;
                v_p = reset == 0 ? hp - theta_p * s_p : hp * (one - s_p) + p_vr * s_p;
            }
        }
        C r = zero, v_in = v_p;
        if (delay && reset != 2) {
            r = v_p - p_th > zero ? one : zero;
            if (reset == 1) v_in = v_p * (one - r) + p_vr * r;
        }
        // adjoints
        C g_theta = zero, gh;
        if (delay || reset == 2) {
            gh = gv;
        } else if (reset == 0) {
            gh = gv;
            g_theta = -(s * gv);
        } else {
            gh = gv * (one - s);
            d_vr += gv * s;
        }
        C gs = g_out ? load(g_out + (long long)t * g_ts + j) : zero;
        C ga_dec = zero;
        if (ada) {
            gs += p_aj * ga;
            d_aj += ga * s;
            ga_dec = ga;
        }
        const C gz = gs * surrogate_grad<C>(z, sid, k1, k2);
        gh += gz;
        g_theta -= gz;
        d_th += g_theta;
        if (ada) {
            ga_dec += g_theta;
            d_aa += ga_dec * a_p;
            ga = p_aa * ga_dec;
        }
        d_am += gh * (v_in - p_vl);
        d_vl += gh * (one - p_am);
        C i_p = zero;
        if (syn) {
            i_p = t > 0 ? i_st[k - M] : load(i0 + j);
            d_g += gh * (cfirst ? i_st[k] : i_p);
        } else if (x) {
            d_g += gh * load(x + k);
        }
        const C gdrive = p_g * gh;
        const C gv_in = p_am * gh;
        if (delay && reset == 0) d_th -= gh * r;
        if (delay && reset == 1) {
            gv = gv_in * (one - r);
            d_vr += gv_in * r;
        } else {
            gv = gv_in;
        }
        if (syn) {
            const C gtot = cfirst ? gi + gdrive : gi;
            store(gx + k, gtot);
            d_as += gtot * i_p;
            gi = cfirst ? p_as * gtot : p_as * gtot + gdrive;
        } else {
            store(gx + k, gdrive);
        }
    }
    store(gv0 + j, gv);
    if (syn) store(gi0 + j, gi);
    if (ada) store(ga0 + j, ga);
    gp[0 * M + j] = d_am;
    gp[1 * M + j] = d_th;
    gp[2 * M + j] = d_as;
    gp[3 * M + j] = d_aa;
    gp[4 * M + j] = d_aj;
    gp[5 * M + j] = d_g;
    gp[6 * M + j] = d_vl;
    gp[7 * M + j] = d_vr;
}

// One extern "C" pair per storage dtype: lif_fwd_<suffix>, lif_bwd_<suffix>.
#define LIF_INSTANTIATE(SUF, S, C)                                                          \
    extern "C" __global__ void lif_fwd_##SUF(FWD_ARGS(S, C)) { lif_fwd_impl<S, C>(FWD_NAMES); } \
    extern "C" __global__ void lif_bwd_##SUF(BWD_ARGS(S, C)) { lif_bwd_impl<S, C>(BWD_NAMES); }

LIF_INSTANTIATE(f32, float, float)
LIF_INSTANTIATE(f64, double, double)
LIF_INSTANTIATE(f16, f16_t, float)
LIF_INSTANTIATE(bf16, bf16_t, float)
