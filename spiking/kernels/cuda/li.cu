// Fused leaky-integrator (LI) kernels: forward and BPTT backward over the whole time loop,
// one thread per neuron, state in registers. The update is exactly the one of
// spiking/kernels/li.py (the spec), in the same operation order; the backward is the one
// documented in spiking/kernels/cpu/li.py. NVRTC options: --fmad=false (see lif.cu).
//
// Layout [T, M] time-first; parameter k read as p_k[j % n_k]. Storage S, compute C as in
// dtypes.cuh. Kept for backward (C): v only when S is not C (otherwise the output itself is
// the saved membrane; v_st then points to the output), i with a synapse.
#include "dtypes.cuh"

#define LI_PARAM_ARGS(C) const C* am, int n_am, const C* asy, int n_as, const C* g, int n_g, \
    const C* vl, int n_vl
#define LI_PARAM_NAMES am, n_am, asy, n_as, g, n_g, vl, n_vl

#define LI_FWD_ARGS(S, C) const S* __restrict__ x, const S* __restrict__ v0,                  \
    const S* __restrict__ i0, LI_PARAM_ARGS(C), int T, long long M, int syn, int record,      \
    S* __restrict__ out, S* __restrict__ vT, S* __restrict__ iT, C* __restrict__ v_st,        \
    C* __restrict__ i_st, S* __restrict__ i_tr
#define LI_FWD_NAMES x, v0, i0, LI_PARAM_NAMES, T, M, syn, record, out, vT, iT, v_st, i_st, i_tr

template <typename S, typename C>
__device__ __forceinline__ void li_fwd_impl(LI_FWD_ARGS(S, C)) {
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    const C one = C(1), zero = C(0);
    const C p_am = am[j % n_am], p_as = asy[j % n_as], p_g = g[j % n_g];
    const C c_leak = (one - p_am) * vl[j % n_vl];
    C v = load(v0 + j);
    C i = syn ? load(i0 + j) : zero;
    for (int t = 0; t < T; ++t) {
        const long long k = (long long)t * M + j;
        C drive = load(x + k);
        if (syn) {
            i = p_as * i + drive;
            i_st[k] = i;
            if (record) store(i_tr + k, i);
            drive = i;
        }
        v = p_am * v + c_leak + p_g * drive;
        store(out + k, v);
        if (v_st) v_st[k] = v;
    }
    store(vT + j, v);
    if (syn) store(iT + j, i);
}

#define LI_BWD_ARGS(S, C) const S* __restrict__ g_out, const S* __restrict__ g_vT,             \
    const S* __restrict__ g_iT, const S* __restrict__ g_itr, const S* __restrict__ v0,        \
    const S* __restrict__ i0, const C* __restrict__ v_st, const C* __restrict__ i_st,         \
    const S* __restrict__ x, LI_PARAM_ARGS(C), int T, long long M, int syn,                   \
    S* __restrict__ gx, S* __restrict__ gv0, S* __restrict__ gi0, C* __restrict__ gp
#define LI_BWD_NAMES g_out, g_vT, g_iT, g_itr, v0, i0, v_st, i_st, x, LI_PARAM_NAMES, T, M, \
    syn, gx, gv0, gi0, gp

template <typename S, typename C>
__device__ __forceinline__ void li_bwd_impl(LI_BWD_ARGS(S, C)) {
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    const C one = C(1), zero = C(0);
    const C p_am = am[j % n_am], p_as = asy[j % n_as], p_g = g[j % n_g], p_vl = vl[j % n_vl];
    C gv = g_vT ? load(g_vT + j) : zero;
    C gi = (syn && g_iT) ? load(g_iT + j) : zero;
    C d_am = zero, d_as = zero, d_g = zero, d_vl = zero;
    for (int t = T - 1; t >= 0; --t) {
        const long long k = (long long)t * M + j;
        if (g_out) gv += load(g_out + k);
        if (syn && g_itr) gi += load(g_itr + k);
        const C v_p = t > 0 ? v_st[k - M] : load(v0 + j);
        d_am += gv * (v_p - p_vl);
        d_vl += gv * (one - p_am);
        if (syn) d_g += gv * i_st[k];
        else if (x) d_g += gv * load(x + k);
        const C gdrive = p_g * gv;
        gv = p_am * gv;
        if (syn) {
            const C gtot = gi + gdrive;
            store(gx + k, gtot);
            d_as += gtot * (t > 0 ? i_st[k - M] : load(i0 + j));
            gi = p_as * gtot;
        } else {
            store(gx + k, gdrive);
        }
    }
    store(gv0 + j, gv);
    if (syn) store(gi0 + j, gi);
    gp[0 * M + j] = d_am;
    gp[1 * M + j] = d_as;
    gp[2 * M + j] = d_g;
    gp[3 * M + j] = d_vl;
}

#define LI_INSTANTIATE(SUF, S, C)                                                              \
    extern "C" __global__ void li_fwd_##SUF(LI_FWD_ARGS(S, C)) {                               \
        li_fwd_impl<S, C>(LI_FWD_NAMES);                                                       \
    }                                                                                          \
    extern "C" __global__ void li_bwd_##SUF(LI_BWD_ARGS(S, C)) {                               \
        li_bwd_impl<S, C>(LI_BWD_NAMES);                                                       \
    }

LI_INSTANTIATE(f32, float, float)
LI_INSTANTIATE(f64, double, double)
LI_INSTANTIATE(f16, f16_t, float)
LI_INSTANTIATE(bf16, bf16_t, float)
