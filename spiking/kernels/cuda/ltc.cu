// Fused LTC unfold (liquid time-constant cell, Hasani et al., AAAI 2021, fused semi-implicit
// ODE solver): forward and backward over the whole time loop and its K unfolds in one kernel
// per direction. The update is exactly the spec of spiking/kernels/ltc.py; the backward is the
// derivation documented in spiking/kernels/cpu/ltc.py (recompute the K unfolds of step t from
// v[t-1], then back-propagate through them in reverse), plus the chain rule of c = cm / h.
// Compiled by NVRTC at run time (CuPy RawModule, spiking/kernels/cuda_ltc.py) with --fmad=false
// so that each product and sum rounds as in the elementwise torch reference.
//
// Grid: one block per batch element b (the recurrent synapse sum couples all units of a
// sample); units over threads (thread tid owns units tid, tid + nthreads, ...). The membrane
// state lives in shared memory (or, for large N, in the global workspace `ws`, one slice per
// block, same code): all threads read every v_j of the previous unfold, so each unfold ends
// with one __syncthreads (double buffer).
//
// Layout (C = float or double, the compute dtype; all row-major, contiguous):
//   v0 [B, N]; h [T, B] = elapsed time / K (s); ns, ds, traj, gtraj, gns, gds [T, B, N];
//   cm, gl, vl [N]; w, sig, mu, erev [N, N] indexed (j, i) = synapse j -> i (forward layout);
//   wT, sigT, muT, erevT [N, N] their transposes, (i, j) -> i * N + j (backward layout, so that
//   thread j reading synapse (j, i) for one i is coalesced over j);
//   gv0 [B, N]; gh [T, B]; gunit [B, 3, N] (cm, gleak, vleak), zero-initialised by the host;
//   gsyn [S, 4, N, N] (w, sigma, mu, erev) in the transposed (i, j) layout, zero-initialised,
//   block b adds into slice b % S (S == B: every entry has one writer, deterministic).
//
// Stored for backward per unit-step: traj (C, 4 B for float32) plus the inputs ns, ds (2 x C);
// the backward recomputes the K unfolds of one step from traj[t-1] into the workspace
// ((K + 1) + K values per unit: v_k and den + eps), never storing per-unfold values in memory.

#define LTC_FWD_ARGS(C) const C* __restrict__ v0, const C* __restrict__ h,                  \
    const C* __restrict__ ns, const C* __restrict__ ds, const C* __restrict__ cm,           \
    const C* __restrict__ w, const C* __restrict__ sig, const C* __restrict__ mu,           \
    const C* __restrict__ erev, const C* __restrict__ gl, const C* __restrict__ vl, C eps,   \
    int K, int T, int B, int N, C* __restrict__ traj, C* __restrict__ ws
#define LTC_FWD_NAMES v0, h, ns, ds, cm, w, sig, mu, erev, gl, vl, eps, K, T, B, N, traj, ws

#define LTC_BWD_ARGS(C) const C* __restrict__ v0, const C* __restrict__ h,                  \
    const C* __restrict__ ns, const C* __restrict__ ds, const C* __restrict__ cm,           \
    const C* __restrict__ w, const C* __restrict__ sig, const C* __restrict__ mu,           \
    const C* __restrict__ erev, const C* __restrict__ wT, const C* __restrict__ sigT,       \
    const C* __restrict__ muT, const C* __restrict__ erevT, const C* __restrict__ gl,       \
    const C* __restrict__ vl, C eps, int K, int T, int B, int N,                            \
    const C* __restrict__ traj, const C* __restrict__ gtraj, C* __restrict__ gv0,           \
    C* __restrict__ gh, C* __restrict__ gns, C* __restrict__ gds, C* __restrict__ gunit,    \
    C* __restrict__ gsyn, int S, C* __restrict__ ws
#define LTC_BWD_NAMES v0, h, ns, ds, cm, w, sig, mu, erev, wT, sigT, muT, erevT, gl, vl, eps, \
    K, T, B, N, traj, gtraj, gv0, gh, gns, gds, gunit, gsyn, S, ws

__device__ __forceinline__ float ex(float v) { return expf(v); }
__device__ __forceinline__ double ex(double v) { return exp(v); }

// Dynamic shared memory, aligned for double.
extern __shared__ __align__(16) unsigned char ltc_smem[];

// One semi-implicit sub-step for the units of this thread: vout[i] = num / (den + eps), with
// the gates at vin (spec loop of spiking/kernels/ltc.py, same operation order); q[i] receives
// den + eps when q is not null.
template <typename C>
__device__ __forceinline__ void unfold(const C* vin, C* vout, C* q, const C* cc,
                                       const C* nsb, const C* dsb, const C* w, const C* sig,
                                       const C* mu, const C* erev, const C* gl, const C* vl,
                                       C eps, int N) {
    const C one = C(1);
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        C sa = C(0), sae = C(0);
        for (int j = 0; j < N; ++j) {
            const int s = j * N + i;                       // synapse j -> i, coalesced over i
            const C sg = one / (one + ex(-(sig[s] * (vin[j] - mu[s]))));
            const C a = w[s] * sg;
            sae += a * erev[s];
            sa += a;
        }
        const C num = cc[i] * vin[i] + gl[i] * vl[i] + sae + nsb[i];
        const C den = cc[i] + gl[i] + sa + dsb[i];
        const C qi = den + eps;
        if (q) q[i] = qi;
        vout[i] = num / qi;
    }
}

template <typename C>
__device__ void ltc_fwd_impl(LTC_FWD_ARGS(C)) {
    const int b = blockIdx.x;
    C* buf = ws ? ws + (long long)b * 3 * N : reinterpret_cast<C*>(ltc_smem);
    C* va = buf;            // v_{k-1}
    C* vb = buf + N;        // v_k
    C* cc = buf + 2 * N;    // c = cm / h of this step
    for (int i = threadIdx.x; i < N; i += blockDim.x) va[i] = v0[(long long)b * N + i];
    for (int t = 0; t < T; ++t) {
        const C hh = h[(long long)t * B + b];
        const long long row = ((long long)t * B + b) * N;
        for (int i = threadIdx.x; i < N; i += blockDim.x) cc[i] = cm[i] / hh;
        __syncthreads();
        for (int k = 0; k < K; ++k) {
            unfold<C>(va, vb, (C*)0, cc, ns + row, ds + row, w, sig, mu, erev, gl, vl, eps, N);
            __syncthreads();
            C* tmp = va; va = vb; vb = tmp;
        }
        for (int i = threadIdx.x; i < N; i += blockDim.x) traj[row + i] = va[i];
    }
}

// Backward, per step t (reverse), with q = den + eps and v' = num / q of one unfold:
//   unit phase (thread owns unit i):
//     gn = gv / q;  gd = -gv * v' / q;  gc += gn * v + gd;  g_gleak += gn * vleak + gd;
//     g_vleak += gn * gleak;  g_ns += gn;  g_ds += gd
//   synapse phase (thread owns pre-synaptic unit j, loops over post-synaptic i; no conflicts):
//     sg = sigmoid(sigma (v_j - mu));  ga = gn_i erev + gd_i;  g_erev += gn_i (w sg);
//     g_w += ga sg;  gz = ga w sg (1 - sg);  g_sigma += gz (v_j - mu);  g_mu -= gz sigma;
//     gv_j = gn_j c_j + sum_i gz sigma            (direct path c * v_{k-1} plus the gates)
//   end of step (c = cm / h):  g_cm += gc / h;  g_h = -sum_i gc_i cm_i / (h h)
template <typename C>
__device__ void ltc_bwd_impl(LTC_BWD_ARGS(C)) {
    const int b = blockIdx.x;
    const int nt = blockDim.x, tid = threadIdx.x;
    int np2 = 1;
    while (np2 < nt) np2 <<= 1;
    const long long slots = (long long)(2 * K + 6) * N + np2;
    C* buf = ws ? ws + (long long)b * slots : reinterpret_cast<C*>(ltc_smem);
    C* vs = buf;                        // [K + 1, N]: v_0 .. v_K of this step
    C* qs = vs + (long long)(K + 1) * N;  // [K, N]: den + eps of each unfold
    C* cc = qs + (long long)K * N;      // [N]
    C* gv = cc + N;                     // [N] adjoint of v_k
    C* gn = gv + N;                     // [N] adjoint of num
    C* gd = gn + N;                     // [N] adjoint of den
    C* gcs = gd + N;                    // [N] adjoint of c, this step
    C* red = gcs + N;                   // [np2] block reduction
    const long long nn = (long long)N * N;
    C* gsw = gsyn + (long long)(b % S) * 4 * nn;
    C* gss = gsw + nn;
    C* gsm = gss + nn;
    C* gse = gsm + nn;
    C* gcm = gunit + (long long)b * 3 * N;
    C* ggl = gcm + N;
    C* gvl = ggl + N;
    const C one = C(1), zero = C(0);
    for (int i = tid; i < N; i += nt) gv[i] = zero;
    for (int t = T - 1; t >= 0; --t) {
        const C hh = h[(long long)t * B + b];
        const long long row = ((long long)t * B + b) * N;
        for (int i = tid; i < N; i += nt) {
            vs[i] = t == 0 ? v0[(long long)b * N + i] : traj[row - (long long)B * N + i];
            cc[i] = cm[i] / hh;
            gv[i] += gtraj[row + i];
            gcs[i] = zero;
            gns[row + i] = zero;
            gds[row + i] = zero;
        }
        __syncthreads();
        for (int k = 0; k < K; ++k) {   // recompute the forward unfolds of this step
            unfold<C>(vs + (long long)k * N, vs + (long long)(k + 1) * N, qs + (long long)k * N,
                      cc, ns + row, ds + row, w, sig, mu, erev, gl, vl, eps, N);
            __syncthreads();
        }
        for (int k = K - 1; k >= 0; --k) {
            const C* v = vs + (long long)k * N;
            const C* vn = v + N;
            const C* q = qs + (long long)k * N;
            for (int i = tid; i < N; i += nt) {      // unit phase
                const C gni = gv[i] / q[i];
                const C gdi = -gv[i] * vn[i] / q[i];
                gcs[i] += gni * v[i] + gdi;
                ggl[i] += gni * vl[i] + gdi;
                gvl[i] += gni * gl[i];
                gns[row + i] += gni;
                gds[row + i] += gdi;
                gn[i] = gni;
                gd[i] = gdi;
            }
            __syncthreads();
            for (int j = tid; j < N; j += nt) {      // synapse phase
                const C vj = v[j];
                C acc = gn[j] * cc[j];
                for (int i = 0; i < N; ++i) {
                    const long long s = (long long)i * N + j;  // (j -> i), coalesced over j
                    const C sgm = sigT[s];
                    const C d = vj - muT[s];
                    const C sg = one / (one + ex(-(sgm * d)));
                    const C ww = wT[s];
                    const C ga = gn[i] * erevT[s] + gd[i];
                    const C gz = ga * ww * sg * (one - sg);
                    atomicAdd(gsw + s, ga * sg);
                    atomicAdd(gss + s, gz * d);
                    atomicAdd(gsm + s, -(gz * sgm));
                    atomicAdd(gse + s, gn[i] * (ww * sg));
                    acc += gz * sgm;
                }
                gv[j] = acc;
            }
            __syncthreads();
        }
        // c = cm / h: g_cm += gc / h; g_h = sum_i -gc_i * cm_i / (h * h)
        C part = zero;
        for (int i = tid; i < N; i += nt) {
            gcm[i] += gcs[i] / hh;
            part += -gcs[i] * cm[i] / (hh * hh);
        }
        red[tid] = part;
        for (int r = nt + tid; r < np2; r += nt) red[r] = zero;
        __syncthreads();
        for (int s = np2 / 2; s > 0; s >>= 1) {
            if (tid < s) red[tid] += red[tid + s];
            __syncthreads();
        }
        if (tid == 0) gh[(long long)t * B + b] = red[0];
        __syncthreads();
    }
    for (int i = tid; i < N; i += nt) gv0[(long long)b * N + i] = gv[i];
}

extern "C" __global__ void ltc_fwd_f32(LTC_FWD_ARGS(float)) { ltc_fwd_impl<float>(LTC_FWD_NAMES); }
extern "C" __global__ void ltc_fwd_f64(LTC_FWD_ARGS(double)) {
    ltc_fwd_impl<double>(LTC_FWD_NAMES);
}
extern "C" __global__ void ltc_bwd_f32(LTC_BWD_ARGS(float)) { ltc_bwd_impl<float>(LTC_BWD_NAMES); }
extern "C" __global__ void ltc_bwd_f64(LTC_BWD_ARGS(double)) {
    ltc_bwd_impl<double>(LTC_BWD_NAMES);
}
