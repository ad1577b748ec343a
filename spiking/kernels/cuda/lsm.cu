// Fused LSM reservoir (event-driven LIF with refractoriness), the update of
// spiking/kernels/lsm.py. One block per sample; per step, one warp per neuron that spiked at
// t-1 adds its CSR fan-out row into rec (atomics; cost = spikes x fan-out), then the threads
// update their neurons. x, s_out, v_out [T, B, N]; CSR by presynaptic neuron (indptr [N+1],
// indices/weights [nnz]); parameters am, asyn, thr of length 1 or N (read as p[n % size]).
// scratch: [B, 2N] (rec, spikes of t-1). No gradient: the reservoir is fixed.

template <typename T>
__device__ void lsm_forward(int T_, int B, int N, const T* x, const long long* indptr,
                            const long long* indices, const T* weights, const T* am, int pa,
                            const T* asyn, int ps, const T* thr, int pt, const long long* nref,
                            T v_reset, const T* v0, const T* i0, const long long* r0,
                            const T* s0, T* s_out, T* v_out, T* v_fin, T* i_fin,
                            long long* r_fin, int record, T* scratch) {
    const int b = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = blockDim.x >> 5;
    T* rec = scratch + (size_t)b * 2 * N;
    T* sp = rec + N;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        rec[n] = T(0);
        sp[n] = s0[(size_t)b * N + n];
        v_fin[(size_t)b * N + n] = v0[(size_t)b * N + n];
        i_fin[(size_t)b * N + n] = i0[(size_t)b * N + n];
        r_fin[(size_t)b * N + n] = r0[(size_t)b * N + n];
    }
    __syncthreads();
    for (int t = 0; t < T_; ++t) {
        for (int j = warp; j < N; j += nwarp) {
            if (sp[j] == T(0)) continue;
            for (long long e = indptr[j] + lane; e < indptr[j + 1]; e += 32)
                atomicAdd(&rec[indices[e]], weights[e]);
        }
        __syncthreads();
        const size_t row = ((size_t)t * B + b) * N;
        for (int n = threadIdx.x; n < N; n += blockDim.x) {
            const size_t k = (size_t)b * N + n;
            const T c = asyn[n % ps] * i_fin[k] + x[row + n] + rec[n];
            rec[n] = T(0);
            i_fin[k] = c;
            T s = T(0);
            if (r_fin[k] == 0) {
                const T vv = am[n % pa] * v_fin[k] + c;
                if (vv - thr[n % pt] > T(0)) {
                    s = T(1);
                    v_fin[k] = v_reset;
                    r_fin[k] = nref[n];
                } else {
                    v_fin[k] = vv;
                }
            } else {
                v_fin[k] = v_reset;
                r_fin[k] -= 1;
            }
            s_out[row + n] = s;
            if (record) v_out[row + n] = v_fin[k];
        }
        __syncthreads();
        for (int n = threadIdx.x; n < N; n += blockDim.x) sp[n] = s_out[row + n];
        __syncthreads();
    }
}

#define LSM_ENTRY(SFX, T)                                                                       \
    extern "C" __global__ void lsm_forward_##SFX(                                              \
        int T_, int B, int N, const T* x, const long long* indptr, const long long* indices,   \
        const T* weights, const T* am, int pa, const T* asyn, int ps, const T* thr, int pt,    \
        const long long* nref, T v_reset, const T* v0, const T* i0, const long long* r0,       \
        const T* s0, T* s_out, T* v_out, T* v_fin, T* i_fin, long long* r_fin, int record,     \
        T* scratch) {                                                                           \
        lsm_forward<T>(T_, B, N, x, indptr, indices, weights, am, pa, asyn, ps, thr, pt, nref, \
                       v_reset, v0, i0, r0, s0, s_out, v_out, v_fin, i_fin, r_fin, record,     \
                       scratch);                                                                \
    }

LSM_ENTRY(f32, float)
LSM_ENTRY(f64, double)
