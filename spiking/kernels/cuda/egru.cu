// Fused EGRU forward and backward (Subramoney et al., ICLR 2023). The update is documented in
// spiking/kernels/egru.py and the backward (BPTT, sparse in the events and in the surrogate's
// support) in spiking/kernels/cpu/egru.py; these kernels are the same arithmetic.
//
// One block per sample b; the block's threads own the units i = tid, tid + blockDim, ...
// Per-sample vectors that every thread of the block reads (previous events, gates, adjoints)
// live in a global scratch row of the sample (visible block-wide after __syncthreads).
// Layouts: wx, dwx [T, B, 3H]; y, c, u, r, z, gy, gc [T, B, H]; rt = weight_hh^T [H, 3H] (row j
// = unit j's fan-out to the three gates); rw = weight_hh [3H, H]; drt [H, 3H] (atomics).
// Recurrent work reads only the rows of RT of units that fired at t-1 (forward) and, backward,
// rows of the units inside the surrogate's support (one warp per row, coalesced).

template <typename T> __device__ __forceinline__ T sigm(T x) { return T(1) / (T(1) + exp(-x)); }

// Built-in surrogates of spiking/surrogate.py by kernel_id; k1, k2 as in cpu/egru.py.
template <typename T>
__device__ __forceinline__ T sur(T z, int sid, T k1, T k2) {
    if (sid == 0) { T u = k2 * z; return k1 / (T(1) + u * u); }
    if (sid == 1) { T d = T(1) + k1 * fabs(z); return T(1) / (d * d); }
    if (sid == 2) { T s = T(1) / (T(1) + exp(-(k1 * z))); return k1 * s * (T(1) - s); }
    if (sid == 3) { T v = T(1) - k1 * fabs(z); return v > T(0) ? k1 * v : T(0); }
    return fabs(z) < k2 ? k1 : T(0);
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
__device__ void egru_forward(int T_, int B, int H, const T* wx, const T* rt, const T* thr,
                             const T* c0, const T* y0, T* y_out, T* c_out, T* u_out, T* r_out,
                             T* z_out, T* scratch) {
    const int b = blockIdx.x, H3 = 3 * H;
    T* ys = scratch + (size_t)b * 2 * H;  // events of step t-1
    T* rs = ys + H;                       // reset gate of step t
    for (int i = threadIdx.x; i < H; i += blockDim.x) ys[i] = y0[(size_t)b * H + i];
    __syncthreads();
    for (int t = 0; t < T_; ++t) {
        const size_t row = ((size_t)t * B + b);
        for (int i = threadIdx.x; i < H; i += blockDim.x) {
            T au = T(0), ar = T(0);
            for (int j = 0; j < H; ++j) {
                const T yj = ys[j];
                if (yj != T(0)) {
                    au += rt[(size_t)j * H3 + i] * yj;
                    ar += rt[(size_t)j * H3 + H + i] * yj;
                }
            }
            const T r = sigm(wx[row * H3 + H + i] + ar);
            rs[i] = r;
            r_out[row * H + i] = r;
            u_out[row * H + i] = sigm(wx[row * H3 + i] + au);
        }
        __syncthreads();
        for (int i = threadIdx.x; i < H; i += blockDim.x) {
            T az = T(0);
            for (int j = 0; j < H; ++j) {
                const T yj = ys[j];
                if (yj != T(0)) az += rt[(size_t)j * H3 + 2 * H + i] * (rs[j] * yj);
            }
            const T u = u_out[row * H + i];
            const T z = tanh(wx[row * H3 + 2 * H + i] + az);
            const T cp = t == 0 ? c0[(size_t)b * H + i] : c_out[(row - B) * H + i];
            const T c = u * z + (T(1) - u) * cp - ys[i];
            z_out[row * H + i] = z;
            c_out[row * H + i] = c;
            y_out[row * H + i] = (c - thr[i] > T(0)) ? c : T(0);
        }
        __syncthreads();
        for (int i = threadIdx.x; i < H; i += blockDim.x) ys[i] = y_out[row * H + i];
        __syncthreads();
    }
}

template <typename T>
__device__ void egru_backward(int T_, int B, int H, const T* gy, const T* gc, const T* rt,
                              const T* rw, const T* thr, const T* c0, const T* y0, const T* c_st,
                              const T* y_st, const T* u_st, const T* r_st, const T* z_st, int sid,
                              T k1, T k2, T damp, T* dwx, T* drt, T* dthr, T* dc0, T* dy0,
                              T* scratch) {
    const int b = blockIdx.x, H3 = 3 * H;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = blockDim.x >> 5;
    T* dau = scratch + (size_t)b * 10 * H;
    T* daz = dau + H;
    T* dar = daz + H;
    T* dc = dar + H;
    T* dcur = dc + H;
    T* grec = dcur + H;
    T* gr = grec + H;
    T* q = gr + H;
    T* ys = q + H;
    T* dth = ys + H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        dc[i] = T(0); grec[i] = T(0); dth[i] = T(0);
    }
    __syncthreads();
    for (int t = T_ - 1; t >= 0; --t) {
        const size_t row = (size_t)t * B + b;
        for (int i = threadIdx.x; i < H; i += blockDim.x) {
            const T c = c_st[row * H + i];
            const T d = c - thr[i];
            const T hp = damp * sur(d, sid, k1, k2);
            const T e = d > T(0) ? T(1) : T(0);
            const T g = gy[row * H + i] + grec[i];
            const T dci = dc[i] + gc[row * H + i] + g * (e + c * hp);
            dth[i] -= g * c * hp;
            const T u = u_st[row * H + i], z = z_st[row * H + i];
            const T cp = t == 0 ? c0[(size_t)b * H + i] : c_st[(row - B) * H + i];
            dau[i] = dci * (z - cp) * u * (T(1) - u);
            daz[i] = dci * u * (T(1) - z * z);
            dar[i] = T(0);
            dcur[i] = dci;
            dc[i] = dci * (T(1) - u);
            ys[i] = t == 0 ? y0[(size_t)b * H + i] : y_st[(row - B) * H + i];
        }
        __syncthreads();
        // q_j = (R_z^T da_z)_j and the reset-gate adjoint, on events only (warp per row)
        for (int j = warp; j < H; j += nwarp) {
            const T yj = ys[j];
            if (yj == T(0)) continue;
            T s = T(0);
            for (int i = lane; i < H; i += 32) s += rt[(size_t)j * H3 + 2 * H + i] * daz[i];
            s = warp_sum(s);
            if (lane == 0) {
                const T r = r_st[row * H + j];
                q[j] = s;
                dar[j] = s * yj * r * (T(1) - r);
            }
        }
        __syncthreads();
        // gr = R_r^T da_r over the events (rows of R_r, coalesced over k)
        for (int k = threadIdx.x; k < H; k += blockDim.x) {
            T s = T(0);
            for (int j = 0; j < H; ++j)
                if (ys[j] != T(0)) s += rw[(size_t)(H + j) * H + k] * dar[j];
            gr[k] = s;
        }
        __syncthreads();
        // dL/dy[t-1] on the backward support S[t-1] (every unit at t = 0), warp per row
        for (int k = warp; k < H; k += nwarp) {
            bool in_s = true;
            if (t > 0) {
                const T d = c_st[(row - B) * H + k] - thr[k];
                in_s = d > T(0) || sur(d, sid, k1, k2) != T(0);
            }
            if (!in_s) {
                if (lane == 0) grec[k] = T(0);
                continue;
            }
            const bool act = ys[k] != T(0);
            T s1 = T(0), s2 = T(0);
            for (int i = lane; i < H; i += 32) {
                s1 += rt[(size_t)k * H3 + i] * dau[i];
                if (!act) s2 += rt[(size_t)k * H3 + 2 * H + i] * daz[i];
            }
            s1 = warp_sum(s1);
            s2 = warp_sum(s2);
            if (lane == 0)
                grec[k] = s1 + r_st[row * H + k] * (act ? q[k] : s2) + gr[k] - dcur[k];
        }
        // weight gradients of the rows of the units that fired at t-1
        for (int j = 0; j < H; ++j) {
            const T yj = ys[j];
            if (yj == T(0)) continue;
            const T ryj = r_st[row * H + j] * yj;
            for (int i = threadIdx.x; i < H; i += blockDim.x) {
                atomicAdd(&drt[(size_t)j * H3 + i], dau[i] * yj);
                atomicAdd(&drt[(size_t)j * H3 + 2 * H + i], daz[i] * ryj);
                if (ys[i] != T(0)) atomicAdd(&drt[(size_t)j * H3 + H + i], dar[i] * yj);
            }
        }
        for (int i = threadIdx.x; i < H; i += blockDim.x) {
            dwx[row * H3 + i] = dau[i];
            dwx[row * H3 + H + i] = dar[i];
            dwx[row * H3 + 2 * H + i] = daz[i];
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        dc0[(size_t)b * H + i] = dc[i];
        dy0[(size_t)b * H + i] = grec[i];
        atomicAdd(&dthr[i], dth[i]);
    }
}

#define EGRU_ENTRY(SFX, T)                                                                      \
    extern "C" __global__ void egru_forward_##SFX(                                             \
        int T_, int B, int H, const T* wx, const T* rt, const T* thr, const T* c0, const T* y0, \
        T* y_out, T* c_out, T* u_out, T* r_out, T* z_out, T* scratch) {                         \
        egru_forward<T>(T_, B, H, wx, rt, thr, c0, y0, y_out, c_out, u_out, r_out, z_out,      \
                        scratch);                                                               \
    }                                                                                           \
    extern "C" __global__ void egru_backward_##SFX(                                            \
        int T_, int B, int H, const T* gy, const T* gc, const T* rt, const T* rw, const T* thr, \
        const T* c0, const T* y0, const T* c_st, const T* y_st, const T* u_st, const T* r_st,  \
        const T* z_st, int sid, T k1, T k2, T damp, T* dwx, T* drt, T* dthr, T* dc0, T* dy0,   \
        T* scratch) {                                                                           \
        egru_backward<T>(T_, B, H, gy, gc, rt, rw, thr, c0, y0, c_st, y_st, u_st, r_st, z_st,  \
                         sid, k1, k2, damp, dwx, drt, dthr, dc0, dy0, scratch);                 \
    }

EGRU_ENTRY(f32, float)
EGRU_ENTRY(f64, double)
